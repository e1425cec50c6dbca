//! The one door to the disk of the stub (and of nxs-backup's state
//! directory work): a directory held open as a file
//! descriptor, and every name below it opened relative to that descriptor.
//!
//! The stub usually runs as root, on a machine it does not trust, often in
//! a directory others can write to (`/tmp`, a mounted stick). Whatever it
//! finds at a name it uses may have been planted: a symbolic link to
//! `/etc`, a FIFO that blocks the first `open`, a device, a hard link to a
//! file it does not own. So every directory here is opened once with
//! `O_DIRECTORY | O_NOFOLLOW`, checked to be owned by the running user and
//! not writable by others, and every file below it is looked at with
//! `fstatat(AT_SYMLINK_NOFOLLOW)` before it is opened, opened with
//! `O_NOFOLLOW | O_NONBLOCK`, and checked again with `fstat`: it must be the
//! regular file that was looked at. Anything else is a refusal (exit 5)
//! that names the path and what was found there.
//!
//! Paths deeper than one name (the install record inside a root) are opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has
//! it (Linux 5.6+), and by a walk of `O_NOFOLLOW` opens, one component at a
//! time, where it does not (`ENOSYS`).
//!
//! # Security
//! Nothing here follows a symbolic link, blocks on a special file, or
//! reads or writes a file that is not a regular file. Names are single
//! components (no `/`), except for [`Dir::open_beneath`].

// `stat`'s fields are not the same types on every platform the stub runs
// on: the casts that are no-ops here are not everywhere.
#![allow(clippy::unnecessary_cast)]

use crate::error::{Class, Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod beneath;

/// A directory held open; every operation is relative to it.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How [`Dir::open_file`] opens a regular file. Every kind refuses a file
/// another user owns; the ones marked below also refuse a file with more
/// than one link (a hard link planted to a file elsewhere).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read a file whose bytes go somewhere else (a diagnostic dump): one
    /// link only.
    ReadOwn,
    /// Append, creating the file (0600) if it is missing; one link only.
    Append,
    /// Read and write, creating the file (0600) if it is missing, never
    /// truncating it.
    ReadWrite,
    /// As `ReadWrite`, but the file may be another user's: the state
    /// directory's lock as nxs-backup takes it (root backing up a user's
    /// state). It holds only a PID and is never followed.
    Shared,
}

/// Runs `op`, retrying up to 3 times with exponential backoff (50, 100,
/// 200 ms) while it fails with a transient error (EBUSY, EAGAIN, ...).
/// Each retry is said on stderr and as a `retry` event.
fn with_retry<T>(what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delay = std::time::Duration::from_millis(50);
    for attempt in 1..=3 {
        match op() {
            Err(e) if e.transient => {
                eprintln!("  {what}: {}; retry {attempt} of 3 in {} ms", e.msg, delay.as_millis());
                crate::events::retry(what, attempt, 3, delay, &e.msg);
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
    op()
}

/// A fault-injection point of the crash tests, as an error of ours.
#[inline(always)]
fn effect(name: &str) -> Result<()> {
    crate::fault::effect(name).map_err(|e| Error::io("fault: injected failure at", Path::new(name), e))
}

fn cstr(name: &str, at: &Path) -> Result<CString> {
    CString::new(name).map_err(|_| Error::new(Class::Io, format!("{}: a name with a NUL byte", at.display())))
}

fn last_os(what: &str, path: &Path) -> Error {
    Error::io(what, path, std::io::Error::last_os_error())
}

/// The refusal for what `st` describes, found at `path` where the stub
/// expected its own file or directory.
pub fn refuse(path: &Path, st: &libc::stat, expected: &str) -> Error {
    Error::new(Class::Io, nxs_format::state::planted(path, st.st_mode as u32, expected))
        .hint(nxs_format::state::PLANTED_HINT)
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a directory owned by another user, or one that others may
/// write to: whoever can write there can swap the names below it.
fn check_owner(path: &Path, st: &libc::stat) -> Result<()> {
    if st.st_uid != euid() {
        return Err(Error::new(
            Class::Io,
            format!("{} is owned by uid {}, not by the user running nxs (uid {})", path.display(), st.st_uid, euid()),
        )
        .hint("choose a directory of your own, or fix its owner (chown) if it is yours"));
    }
    if st.st_mode & 0o002 != 0 {
        return Err(Error::new(
            Class::Io,
            format!("{} is writable by every user (mode {:o})", path.display(), st.st_mode & 0o7777),
        )
        .hint("anyone could plant files there; choose a private directory, or `chmod o-w` it"));
    }
    Ok(())
}

fn fstat(fd: i32, path: &Path) -> Result<libc::stat> {
    // SAFETY: fstat fills a caller-owned struct for an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last_os("cannot inspect", path));
    }
    Ok(st)
}

const DIR_FLAGS: i32 = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Opens the directory at `path`, which must not itself be a link (the
    /// components above it may be: `/opt` on many systems is one).
    pub fn open(path: &Path) -> Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::new(Class::Usage, format!("{}: a path with a NUL byte", path.display())))?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), DIR_FLAGS) };
        if fd < 0 {
            return Err(Self::open_error(path, std::io::Error::last_os_error(), None));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: path.to_path_buf() })
    }

    /// Opens the directory at `path`, following links on the way and at
    /// the end: for the operator's own path to a root's parent.
    pub fn open_following(path: &Path) -> Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::new(Class::Usage, format!("{}: a path with a NUL byte", path.display())))?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(last_os("cannot open the directory", path));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: path.to_path_buf() })
    }

    /// Explains a failed directory open: a link or a non-directory is a
    /// refusal that says what is there.
    fn open_error(path: &Path, e: std::io::Error, parent: Option<(&Dir, &str)>) -> Error {
        if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
            let st = match parent {
                Some((d, name)) => d.lstat(name).ok().flatten(),
                None => lstat_path(path),
            };
            if let Some(st) = st {
                return refuse(path, &st, "directory");
            }
        }
        Error::io("cannot open the directory", path, e)
    }

    /// Opens `path` as a private directory of the running user: created
    /// with `mode` if missing (its parents too), else it must be a real
    /// directory, owned by this user and not writable by others.
    pub fn open_private(path: &Path, mode: u32) -> Result<Dir> {
        match lstat_path(path) {
            None => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
                }
                use std::os::unix::fs::DirBuilderExt;
                match std::fs::DirBuilder::new().mode(mode).create(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("cannot create", path, e)),
                }
            }
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return Err(refuse(path, &st, "directory")),
            Some(_) => {}
        }
        let d = Dir::open(path)?;
        check_owner(path, &d.stat()?)?;
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, for messages and for children that take a path.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The directory's own `stat`.
    pub fn stat(&self) -> Result<libc::stat> {
        fstat(self.fd(), &self.path)
    }

    /// `(device, inode)`: the identity of this directory.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let st = self.stat()?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// What is at `name`, without following a link; `None` if nothing.
    pub fn lstat(&self, name: &str) -> Result<Option<libc::stat>> {
        let c = cstr(name, &self.path)?;
        // SAFETY: fstatat fills a caller-owned struct; the name is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatat(self.fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
            return Ok(Some(st));
        }
        match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            e => Err(Error::io("cannot inspect", &self.join(name), e)),
        }
    }

    /// Refuses anything at `name` but a regular file (or nothing).
    pub fn expect_file(&self, name: &str) -> Result<Option<libc::stat>> {
        match self.lstat(name)? {
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => {
                Err(refuse(&self.join(name), &st, "regular file"))
            }
            other => Ok(other),
        }
    }

    /// Refuses anything at `name` but a directory (or nothing).
    pub fn expect_dir(&self, name: &str) -> Result<Option<libc::stat>> {
        match self.lstat(name)? {
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => Err(refuse(&self.join(name), &st, "directory")),
            other => Ok(other),
        }
    }

    /// Opens the directory `name` below this one; with `create`, makes it
    /// (mode 0700) if missing. It must be a real directory of this user's.
    pub fn subdir(&self, name: &str, create: bool) -> Result<Option<Dir>> {
        let d = self.subdir_of_anyone(name, create)?;
        if let Some(d) = &d {
            check_owner(&d.path, &d.stat()?)?;
        }
        Ok(d)
    }

    /// As [`Dir::subdir`], without the owner check: for a directory whose
    /// owner says nothing about trust, as on a stick whose every file is
    /// checked against signed sums (a FAT32 stick mounted for one user and
    /// read by root). Still never a link.
    pub fn subdir_of_anyone(&self, name: &str, create: bool) -> Result<Option<Dir>> {
        let c = cstr(name, &self.path)?;
        if self.expect_dir(name)?.is_none() {
            if !create {
                return Ok(None);
            }
            // SAFETY: mkdirat with a valid name, relative to our descriptor.
            if unsafe { libc::mkdirat(self.fd(), c.as_ptr(), 0o700) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(Error::io("cannot create", &self.join(name), e));
                }
            }
        }
        // SAFETY: openat relative to our descriptor; owned below.
        let fd = unsafe { libc::openat(self.fd(), c.as_ptr(), DIR_FLAGS) };
        let path = self.join(name);
        if fd < 0 {
            return Err(Self::open_error(&path, std::io::Error::last_os_error(), Some((self, name))));
        }
        // SAFETY: a fresh descriptor.
        Ok(Some(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path }))
    }

    /// Opens the regular file `name`. `None` if it is missing and `access`
    /// does not create. A link, FIFO, socket, device or directory there is
    /// a refusal, found before any `open` that could block or follow it.
    pub fn open_file(&self, name: &str, access: Access) -> Result<Option<File>> {
        self.open_file_once(name, access, true)
    }

    fn open_file_once(&self, name: &str, access: Access, retry: bool) -> Result<Option<File>> {
        let path = self.join(name);
        let before = self.expect_file(name)?;
        let reading = matches!(access, Access::Read | Access::ReadOwn);
        if before.is_none() && reading {
            return Ok(None);
        }
        let c = cstr(name, &self.path)?;
        let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        flags |= match access {
            Access::Read | Access::ReadOwn => libc::O_RDONLY,
            Access::Append => libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
            Access::ReadWrite | Access::Shared => libc::O_RDWR | libc::O_CREAT,
        };
        if before.is_none() {
            // It was missing: it must be ours now, not something planted
            // in between.
            flags |= libc::O_EXCL;
        }
        // SAFETY: openat relative to our descriptor; owned below.
        let fd = unsafe { libc::openat(self.fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match (e.raw_os_error(), self.lstat(name).ok().flatten()) {
                (Some(libc::ELOOP | libc::ENXIO | libc::EEXIST), Some(st))
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG =>
                {
                    Err(refuse(&path, &st, "regular file"))
                }
                // Created by someone else in between: look again, once.
                (Some(libc::EEXIST), _) if retry => self.open_file_once(name, access, false),
                _ => Err(Error::io("cannot open", &path, e)),
            };
        }
        // SAFETY: a fresh descriptor.
        let f = unsafe { File::from_raw_fd(fd) };
        let st = fstat(fd, &path)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(refuse(&path, &st, "regular file"));
        }
        if st.st_uid != euid() && access != Access::Shared {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is owned by uid {}, not by the user running nxs: refusing to use it",
                    path.display(),
                    st.st_uid
                ),
            )
            .hint("nxs did not write it; look at what it is, move it away, and run again"));
        }
        if matches!(access, Access::ReadOwn | Access::Append) && st.st_nlink != 1 {
            return Err(Error::new(
                Class::Io,
                format!("{} has {} hard links: refusing to use it", path.display(), st.st_nlink),
            )
            .hint("a file nxs writes has one link; another may lead to a file outside the state directory. Move it away and run again"));
        }
        if let Some(b) = before {
            if (b.st_dev, b.st_ino) != (st.st_dev, st.st_ino) {
                return Err(Error::new(Class::Io, format!("{} changed while nxs opened it", path.display()))
                    .hint("something else is writing to this directory; stop it and run again"));
            }
        }
        // Blocking reads and writes from here on: it is a regular file.
        // SAFETY: fcntl on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags & libc::O_APPEND) };
        Ok(Some(f))
    }

    /// Reads the regular file `name` whole, at most `cap` bytes.
    pub fn read(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        match self.open_file(name, Access::Read)? {
            Some(f) => read_capped(f, cap, &self.join(name)).map(Some),
            None => Ok(None),
        }
    }

    /// The atomic write, relative to this directory: a new temp file
    /// (`O_EXCL`, never through a link), fsync, rename over `name`, fsync
    /// of the directory. What is at `name` must be a regular file or
    /// nothing: a rename would silently replace a planted link or FIFO,
    /// and the operator should hear about it instead.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        with_retry("write", || self.write_atomic_once(name, bytes, mode))
    }

    fn write_atomic_once(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        effect(&format!("write:{name}"))?;
        self.expect_file(name)?;
        let tmp = format!(".{name}.tmp-{}", std::process::id());
        let ctmp = cstr(&tmp, &self.path)?;
        // A temp file of an earlier run with our PID: remove it (unlink
        // never follows a link).
        // SAFETY: unlinkat relative to our descriptor.
        unsafe { libc::unlinkat(self.fd(), ctmp.as_ptr(), 0) };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: openat relative to our descriptor; owned below.
        let fd = unsafe { libc::openat(self.fd(), ctmp.as_ptr(), flags, mode as libc::c_uint) };
        let tmp_path = self.join(&tmp);
        if fd < 0 {
            return Err(last_os("cannot write", &tmp_path));
        }
        // SAFETY: a fresh descriptor.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let mut write = || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            // SAFETY: as above.
            unsafe { libc::unlinkat(self.fd(), ctmp.as_ptr(), 0) };
            return Err(Error::io("cannot write", &tmp_path, e));
        }
        effect("write-rename")?;
        let cname = cstr(name, &self.path)?;
        // SAFETY: renameat within our descriptor; neither name is followed.
        if unsafe { libc::renameat(self.fd(), ctmp.as_ptr(), self.fd(), cname.as_ptr()) } != 0 {
            let e = last_os("cannot rename into", &self.join(name));
            unsafe { libc::unlinkat(self.fd(), ctmp.as_ptr(), 0) };
            return Err(e);
        }
        self.sync()
    }

    /// Removes the file or link `name` (never what a link points at).
    /// `false` if there was nothing.
    pub fn remove_file(&self, name: &str) -> Result<bool> {
        let c = cstr(name, &self.path)?;
        // SAFETY: unlinkat relative to our descriptor.
        if unsafe { libc::unlinkat(self.fd(), c.as_ptr(), 0) } == 0 {
            return Ok(true);
        }
        match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            e => Err(Error::io("cannot remove", &self.join(name), e)),
        }
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> Result<()> {
        let c = cstr(name, &self.path)?;
        // SAFETY: unlinkat relative to our descriptor.
        if unsafe { libc::unlinkat(self.fd(), c.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
            return Err(last_os("cannot remove", &self.join(name)));
        }
        Ok(())
    }

    /// Renames `from` to `to`, both in this directory; neither is followed.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (cstr(from, &self.path)?, cstr(to, &self.path)?);
        // SAFETY: renameat within our descriptor.
        if unsafe { libc::renameat(self.fd(), a.as_ptr(), self.fd(), b.as_ptr()) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(&format!("cannot rename {} to", self.join(from).display()), &self.join(to), e));
        }
        Ok(())
    }

    /// Swaps `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`): at no
    /// instant is either name missing. Filesystems without it answer EINVAL.
    pub fn exchange(&self, a: &str, b: &str) -> std::io::Result<()> {
        let (ca, cb) = (CString::new(a)?, CString::new(b)?);
        const RENAME_EXCHANGE: libc::c_uint = 2;
        // SAFETY: two valid names relative to our descriptor.
        let r = unsafe {
            libc::syscall(libc::SYS_renameat2, self.fd(), ca.as_ptr(), self.fd(), cb.as_ptr(), RENAME_EXCHANGE)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Makes this directory's entries durable.
    pub fn sync(&self) -> Result<()> {
        // SAFETY: fsync on our descriptor.
        if unsafe { libc::fsync(self.fd()) } != 0 {
            return Err(last_os("cannot fsync directory", &self.path));
        }
        Ok(())
    }

    /// The names in this directory, sorted (`.` and `..` left out).
    pub fn names(&self) -> Result<Vec<String>> {
        // fdopendir takes the descriptor over: give it a duplicate.
        // SAFETY: dup of our own descriptor, then readdir on the stream
        // fdopendir returns, closed at the end.
        let dup = unsafe { libc::fcntl(self.fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(last_os("cannot read", &self.path));
        }
        let dir = unsafe { libc::fdopendir(dup) };
        if dir.is_null() {
            unsafe { libc::close(dup) };
            return Err(last_os("cannot read", &self.path));
        }
        unsafe { libc::rewinddir(dir) };
        let mut names = Vec::new();
        loop {
            let ent = unsafe { libc::readdir(dir) };
            if ent.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let name = String::from_utf8_lossy(name.to_bytes()).into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        unsafe { libc::closedir(dir) };
        names.sort();
        Ok(names)
    }
}

/// Reads `f` whole; more than `cap` bytes is a refusal: no file nxs
/// writes is that large.
fn read_capped(f: File, cap: u64, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes).map_err(|e| Error::io("cannot read", path, e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::new(Class::Io, format!("{} is larger than {cap} bytes", path.display()))
            .hint("it is not a file nxs wrote; move it away and run again"));
    }
    Ok(bytes)
}

/// `lstat` of a path; `None` if nothing is there (or it cannot be seen).
pub fn lstat_path(path: &Path) -> Option<libc::stat> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: lstat fills a caller-owned struct from a valid path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::lstat(c.as_ptr(), &mut st) } == 0).then_some(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(dir: &Path) -> Dir {
        Dir::open_private(dir, 0o700).unwrap()
    }

    #[test]
    fn links_and_special_files_are_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let d = private(&t.path().join("s"));
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"decoy").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("link")).unwrap();
        let fifo = CString::new(d.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for (name, found) in [("link", "symbolic link"), ("fifo", "FIFO")] {
            for access in [Access::Read, Access::Append, Access::ReadWrite] {
                let e = d.open_file(name, access).expect_err("refused");
                assert_eq!(e.class, Class::Io);
                assert!(e.msg.contains(found) && e.msg.contains(name), "{}", e.msg);
            }
            assert!(d.write_atomic(name, b"x", 0o600).is_err());
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"decoy");
        // A link where a directory should be.
        std::os::unix::fs::symlink(t.path(), d.join("sub")).unwrap();
        assert!(d.subdir("sub", true).err().unwrap().msg.contains("symbolic link"));
        assert!(Dir::open_private(&d.join("sub"), 0o700).is_err());
    }

    #[test]
    fn a_temp_name_planted_as_a_link_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let d = private(&t.path().join("s"));
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"decoy").unwrap();
        std::os::unix::fs::symlink(&outside, d.join(&format!(".f.tmp-{}", std::process::id()))).unwrap();
        d.write_atomic("f", b"ours", 0o600).unwrap();
        assert_eq!(std::fs::read(d.join("f")).unwrap(), b"ours");
        assert_eq!(std::fs::read(&outside).unwrap(), b"decoy");
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("open");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Dir::open_private(&p, 0o700).err().unwrap().msg.contains("writable by every user"));
    }

    #[test]
    fn beneath_refuses_links_on_the_way() {
        let t = tempfile::tempdir().unwrap();
        let d = private(&t.path().join("r"));
        std::fs::create_dir(d.join("a")).unwrap();
        std::fs::write(d.join("a/f"), b"ok").unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::fs::write(t.path().join("elsewhere/f"), b"decoy").unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), d.join("b")).unwrap();
        let mut s = String::new();
        d.open_beneath("a/f").unwrap().unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "ok");
        assert!(d.open_beneath("b/f").is_err());
        assert!(d.walk_beneath("b/f").is_err());
        assert!(d.open_beneath("a/missing").unwrap().is_none());
        let mut s = String::new();
        d.walk_beneath("a/f").unwrap().unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "ok");
    }
}

//! The path-level helpers every durable write of the stub and nxs-backup
//! goes through. Each opens what it works on without following a link at
//! the last component; the finer, descriptor-relative work is
//! [`crate::door`]'s.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The one atomic write, for a path: its directory is opened (the path to
/// it may pass through links, as the operator's paths may) and the write
/// goes through [`crate::door::Dir::write_atomic`]: a new temp file that is
/// never a link, fsync, rename, fsync of the directory. Readers see the old
/// content or the new, whole.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    crate::door::Dir::open_following(parent(path))?.write_atomic(&name, bytes, mode)
}

/// Makes a directory's entries durable. The path is the operator's (a
/// root's parent, a backup directory) and may pass through links; an
/// fsync changes nothing, so following one is harmless.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .and_then(|d: File| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes `path` absolute without touching the filesystem.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))
}

/// True if `dir` is missing or an empty directory.
pub fn is_missing_or_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("cannot read", dir, e)),
    }
}

/// Removes a tree of ours if present, read-only directories included; a
/// symlink is removed, never followed.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot inspect", path, e)),
        Ok(m) if m.is_dir() => {
            make_writable(path);
            fs::remove_dir_all(path).map_err(|e| Error::io("cannot remove", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io("cannot remove", path, e)),
    }
}

/// Makes a tree of ours writable, one directory at a time, each opened
/// without following a link and changed through its descriptor: a
/// directory swapped for a link is skipped, never followed.
fn make_writable(dir: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(d) = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(dir) else {
        return;
    };
    // SAFETY: fchmod on a descriptor we just opened.
    unsafe { libc::fchmod(d.as_raw_fd(), 0o700) };
    if let Ok(it) = fs::read_dir(dir) {
        for e in it.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_writable(&e.path());
            }
        }
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::usage(format!("{} has a NUL byte", p.display())))
}

/// The hint for a failed `renameat2(RENAME_EXCHANGE)`.
pub const EXCHANGE_HINT: &str =
    "the atomic swap needs renameat2(RENAME_EXCHANGE): Linux 3.15 or newer, on ext4, xfs, btrfs or tmpfs";

/// Swaps two paths in one step (`renameat2(RENAME_EXCHANGE)`): at no
/// instant is either missing. Neither is followed if it is a link.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    let (ca, cb) = (cpath(a)?, cpath(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    let hint = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS));
    let err = Error::io(&format!("cannot swap {} with", a.display()), b, e);
    Err(if hint { err.hint(EXCHANGE_HINT) } else { err })
}

/// The filesystem `p` is on, as `statvfs(3)` sees it.
pub fn statvfs(p: &Path) -> Result<libc::statvfs> {
    let c = cpath(p)?;
    // SAFETY: statvfs fills a caller-owned struct from a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io("cannot inspect the filesystem of", p, std::io::Error::last_os_error()));
    }
    Ok(st)
}

/// Bytes an unprivileged writer may still use on `p`'s filesystem.
pub fn free_bytes(p: &Path) -> Result<u64> {
    let st = statvfs(p)?;
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The state directory every command uses: `--state-dir`, else
/// `$NXS_HOME`, else `~/.nxs`; made absolute, never looked at here.
pub fn state_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    state_dir_from(flag, std::env::var_os("NXS_HOME"), std::env::var_os("HOME"))
}

fn state_dir_from(
    flag: Option<PathBuf>,
    nxs_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf> {
    if let Some(d) = flag {
        return absolute(&d);
    }
    if let Some(h) = nxs_home.filter(|h| !h.is_empty()) {
        return absolute(Path::new(&h));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => absolute(&PathBuf::from(home).join(".nxs")),
        None => Err(Error::usage("no state directory: set NXS_HOME or HOME, or pass --state-dir DIR")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_comes_from_the_flag_then_nxs_home_then_home() {
        let cwd = std::env::current_dir().unwrap();
        #[allow(clippy::type_complexity)]
        let cases: &[(Option<&str>, Option<&str>, Option<&str>, Option<PathBuf>)] = &[
            (Some("/a"), Some("/b"), Some("/h"), Some("/a".into())),
            (Some("rel"), None, None, Some(cwd.join("rel"))),
            (None, Some("/b"), Some("/h"), Some("/b".into())),
            (None, Some(""), Some("/h"), Some("/h/.nxs".into())),
            (None, None, Some("/h"), Some("/h/.nxs".into())),
            (None, None, Some(""), None),
            (None, None, None, None),
        ];
        for (flag, nxs, home, want) in cases {
            let got = state_dir_from(flag.map(PathBuf::from), nxs.map(Into::into), home.map(Into::into));
            match want {
                Some(w) => assert_eq!(&got.unwrap(), w, "{flag:?} {nxs:?} {home:?}"),
                None => assert_eq!(got.unwrap_err().class, crate::error::Class::Usage),
            }
        }
    }

    #[test]
    fn remove_tree_removes_read_only_trees_and_never_follows_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let keep = t.path().join("keep");
        fs::create_dir(&keep).unwrap();
        fs::write(keep.join("f"), b"x").unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("ro/deep")).unwrap();
        std::os::unix::fs::symlink(&keep, tree.join("ro/link")).unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(keep.join("f").exists());
        remove_tree(&tree).unwrap();
    }

    #[test]
    fn exchange_swaps_two_names() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::write(&a, b"A").unwrap();
        fs::create_dir(&b).unwrap();
        exchange(&a, &b).unwrap();
        assert!(a.is_dir());
        assert_eq!(fs::read(&b).unwrap(), b"A");
        let e = exchange(&a, &t.path().join("none")).unwrap_err();
        assert!(e.msg.contains("cannot swap"), "{}", e.msg);
    }
}

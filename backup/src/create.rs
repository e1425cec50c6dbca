//! `backup`: the state directory, under its lock, into one age file.
//!
//! One read of each file. A walk of the state directory `lstat`s
//! everything (no file is read) into the manifest, which leads the archive
//! with every size; then each file is opened, `fstat`ed, streamed into
//! tar, zstd and age and hashed on the way, and `fstat`ed again. A file
//! whose size, mtime, ctime or inode differs between the walk, the open and
//! the end of its read (a writer that ignores the lock) fails the backup
//! instead of storing a mix. The hashes follow the files, in `NXS-SUMS`,
//! the archive's last member (backup format 2). Then fsync, rename to the
//! final name, fsync the directory, write the `.sha256` beside it, and
//! prune by the retention policy.

use crate::error::{Class, Error, Result};
use crate::manifest::{self, Entry, Kind, Manifest};
use crate::{clock, fault, keys::Encrypt, lock, naming, rotate};
use nxs_format::hex;
use nxs_sys::events::Progress;
use nxs_sys::fs::fsync_dir;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct BackupOptions {
    pub state_dir: PathBuf,
    pub to: PathBuf,
    pub encrypt: Encrypt,
    pub keep: rotate::Keep,
    pub lock_wait: Duration,
    pub now: i64,
}

#[derive(Debug)]
pub struct Created {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub files: usize,
    pub bytes: u64,
    pub source_version: String,
    pub skipped: Vec<String>,
    pub pruned: Vec<PathBuf>,
    pub kept: usize,
}

/// The version recorded in the state directory's checkpoint, if any.
/// Read without following a link or blocking on a FIFO, regular files only.
pub fn source_version(state_dir: &Path) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read = || -> std::io::Result<Vec<u8>> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(state_dir.join(nxs_format::state::CHECKPOINT))?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut b = Vec::new();
        f.take(1 << 20).read_to_end(&mut b)?;
        Ok(b)
    };
    read()
        .ok()
        .and_then(|b| nxs_format::checkpoint::Checkpoint::parse(&b).ok())
        .map(|c| c.version)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// What `stat` says of a file, as far as a change to it shows: the same
/// inode, size, mtime and ctime (to the nanosecond) means nobody wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One thing the walk found: its manifest entry, its mtime for the tar
/// header, and for a file its stamp.
struct Found {
    entry: Entry,
    mtime: i64,
    stamp: Option<Stamp>,
}

/// The walk: what the state directory holds, from `lstat` alone. Sockets,
/// FIFOs and devices are skipped and named.
fn scan(state_dir: &Path, skipped: &mut Vec<String>) -> Result<BTreeMap<String, Found>> {
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(state_dir).min_depth(1).follow_links(false).sort_by_file_name();
    let walk = walk
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || !nxs_format::state::is_bootstrap_owned(&e.file_name().to_string_lossy()));
    for item in walk {
        let item = item.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| state_dir.to_path_buf());
            Error::io("cannot read", &path, e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk failed")))
        })?;
        let rel = item.path().strip_prefix(state_dir).unwrap_or(item.path());
        let rel = rel.to_str().ok_or_else(|| {
            Error::new(Class::Io, format!("{}: the name is not UTF-8", item.path().display()))
                .hint("rename it; backups carry UTF-8 names only")
        })?;
        if let Some(why) = manifest::path_problem(rel) {
            return Err(Error::new(Class::Io, format!("{}: the name {why}", item.path().display()))
                .hint("rename it; a backup cannot carry it"));
        }
        let meta = item.metadata().map_err(|e| {
            Error::io("cannot stat", item.path(), e.into_io_error().unwrap_or_else(|| std::io::Error::other("stat")))
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let mut stamp = None;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            stamp = Some(Stamp::of(&meta));
            Kind::File { size: meta.len(), sha256: None }
        } else if ft.is_symlink() {
            let target = fs::read_link(item.path()).map_err(|e| Error::io("cannot read the link", item.path(), e))?;
            let target = target
                .to_str()
                .filter(|t| !t.is_empty() && !t.contains(manifest::LINK_ARROW) && !t.contains(['\n', '\0']));
            let target = target.ok_or_else(|| {
                Error::new(
                    Class::Io,
                    format!("{}: the link's target is not UTF-8 or holds a newline or ` -> `", item.path().display()),
                )
                .hint("re-make the link with a plainer target; a backup cannot carry it")
            })?;
            Kind::Link { target: target.to_string() }
        } else {
            skipped.push(rel.to_string());
            continue;
        };
        out.insert(rel.to_string(), Found { entry: Entry { mode, kind }, mtime: meta.mtime(), stamp });
    }
    Ok(out)
}

/// Opens a file the walk found regular, as the walk found it: never
/// through a link, never blocking on a FIFO swapped in since, and with the
/// same stamp, or it is "changed".
fn open_unchanged(path: &Path, walked: Stamp) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    match f.metadata() {
        Ok(m) if m.is_file() && Stamp::of(&m) == walked => Ok(f),
        _ => Err(changed(path)),
    }
}

fn changed(path: &Path) -> Error {
    Error::new(Class::Io, format!("{} changed while it was being backed up", path.display())).hint(
        "something writes the state without taking its lock; stop NXS (or make it take <state>/lock) and run the backup again",
    )
}

/// Reads a file for the archive, hashing as it goes: its one read.
struct Checked<'a> {
    file: File,
    hash: Sha256,
    left: u64,
    progress: &'a mut Progress,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.left as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shrank"));
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The archive, written into `out`: the manifest, the state directory, and
/// the sums of what was read.
fn write_tar<W: Write>(state_dir: &Path, m: &Manifest, found: &BTreeMap<String, Found>, out: W) -> Result<W> {
    let io = |e: std::io::Error| Error::new(Class::Io, format!("cannot write the archive: {e}"));
    let mut tar = tar::Builder::new(out);
    let mut progress = Progress::start("backup", m.files().map(|(_, s)| s).sum());
    let text = m.to_text();
    let mut h = header(tar::EntryType::Regular, 0o600, text.len() as u64, 0);
    tar.append_data(&mut h, manifest::NAME, text.as_bytes()).map_err(io)?;
    let mut h = header(tar::EntryType::Directory, m.root_mode, 0, 0);
    tar.append_data(&mut h, format!("{}/", manifest::ROOT), std::io::empty()).map_err(io)?;
    let mut sums: Vec<(&str, [u8; 32])> = Vec::new();
    for (rel, e) in &m.entries {
        let name = format!("{}/{rel}", manifest::ROOT);
        let mtime = found.get(rel).map(|f| f.mtime).unwrap_or(0);
        match &e.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, e.mode, 0, mtime);
                tar.append_data(&mut h, format!("{name}/"), std::io::empty()).map_err(io)?;
            }
            Kind::Link { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut h, &name, target).map_err(io)?;
            }
            Kind::File { size, .. } => {
                let path = state_dir.join(rel);
                let walked = found.get(rel).and_then(|f| f.stamp).ok_or_else(|| changed(&path))?;
                let file = open_unchanged(&path, walked)?;
                fault::effect("backup:read-file")?;
                let mut r = Checked { file, hash: Sha256::new(), left: *size, progress: &mut progress };
                let mut h = header(tar::EntryType::Regular, e.mode, *size, mtime);
                tar.append_data(&mut h, &name, &mut r).map_err(|err| {
                    if err.kind() == std::io::ErrorKind::UnexpectedEof {
                        changed(&path)
                    } else {
                        Error::io("cannot read", &path, err)
                    }
                })?;
                let mut extra = [0u8; 1];
                let grew = r.file.read(&mut extra).map(|n| n > 0).unwrap_or(true);
                // Written to while it was read: the bytes stored may be a mix.
                let after = r.file.metadata().map(|m| Stamp::of(&m)).ok();
                if grew || after != Some(walked) {
                    return Err(changed(&path));
                }
                sums.push((rel, r.hash.finalize().into()));
            }
        }
        fault::effect("backup:archive-entry")?;
    }
    let text = Manifest::sums_text(&sums);
    let mut h = header(tar::EntryType::Regular, 0o600, text.len() as u64, 0);
    tar.append_data(&mut h, manifest::SUMS, text.as_bytes()).map_err(io)?;
    progress.end();
    tar.into_inner().map_err(io)
}

/// Backups left half-written by a process that is gone.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = naming::temporary_pid(&name) else { continue };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && pid != std::process::id() as i32 {
            eprintln!("  removing {name}: a backup left half-written by process {pid}");
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A path with its deepest existing ancestor resolved (links followed),
/// whether or not the rest exists yet.
fn resolve(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = fs::canonicalize(base) {
            return rest.iter().rev().fold(c, |acc, r| acc.join(r));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return abs,
        }
    }
}

pub fn backup(o: &BackupOptions) -> Result<Created> {
    let meta = fs::metadata(&o.state_dir).map_err(|e| Error::io("cannot read the state directory", &o.state_dir, e))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("{} is not a directory", o.state_dir.display())));
    }
    // Refused before anything is created: a backup inside what it backs up.
    let state_abs = fs::canonicalize(&o.state_dir).map_err(|e| Error::io("cannot resolve", &o.state_dir, e))?;
    if resolve(&o.to).starts_with(&state_abs) {
        return Err(Error::usage(format!("--to {} lies inside the state directory", o.to.display()))
            .hint("keep backups outside what they back up: on the stick, or beside the state directory"));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&o.to)
        .map_err(|e| Error::io("cannot create the backup directory", &o.to, e))?;
    let _lock = lock::take(&o.state_dir, o.lock_wait, None)?;
    eprintln!("  locked {}; scanning", o.state_dir.join(nxs_format::state::LOCK).display());
    let mut skipped = Vec::new();
    let scanned = scan(&o.state_dir, &mut skipped)?;
    for s in &skipped {
        eprintln!("  skipped {s}: not a file, directory or link (a socket or FIFO is not data)");
    }
    let source_version = source_version(&o.state_dir);
    let m = Manifest {
        format: manifest::FORMAT,
        created: clock::rfc3339(o.now),
        source_version: source_version.clone(),
        root_mode: meta.permissions().mode() & 0o7777,
        entries: scanned.iter().map(|(p, f)| (p.clone(), f.entry.clone())).collect(),
    };
    let files = m.files().count();
    let bytes: u64 = m.files().map(|(_, s)| s).sum();
    eprintln!("  {files} files, {bytes} bytes, {} entries in all", m.entries.len());

    remove_stale_temporaries(&o.to);
    let stamp = clock::stamp(o.now);
    let tmp = o.to.join(naming::temporary(&stamp, std::process::id()));
    fault::effect("backup:create-temporary")?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("cannot create", &tmp, e))?;
    let written = write_encrypted(&o.state_dir, &m, &scanned, &o.encrypt, file, &tmp);
    let (file, sha256) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    fault::effect("backup:fsync")?;
    file.sync_all().map_err(|e| Error::io("cannot fsync", &tmp, e))?;
    drop(file);
    let final_path = naming::free_name(&o.to, &stamp);
    fault::effect("backup:rename")?;
    fs::rename(&tmp, &final_path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", &final_path, e)
    })?;
    fsync_dir(&o.to)?;
    fault::effect("backup:checksum")?;
    write_sidecar(&final_path, &sha256)?;
    eprintln!("  wrote {} ({size} bytes)", final_path.display());
    let (pruned, kept) = rotate::prune(&o.to, &o.keep, &final_path)?;
    Ok(Created { path: final_path, size, sha256, files, bytes, source_version, skipped, pruned, kept })
}

/// Writes `<backup>.sha256`, as `sha256sum` writes and checks it.
fn write_sidecar(backup: &Path, sha256: &[u8; 32]) -> Result<()> {
    let name = backup.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!("{}  {name}\n", hex::encode(sha256));
    nxs_sys::fs::write_atomic(&naming::sidecar(backup), text.as_bytes(), 0o644)
}

/// Hashes what passes through to the file, for the `.sha256`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// tar | zstd (libzstd, one worker per core) | age | the file, the last
/// two on a thread of their own.
fn write_encrypted(
    state_dir: &Path,
    m: &Manifest,
    found: &BTreeMap<String, Found>,
    encrypt: &Encrypt,
    file: File,
    tmp: &Path,
) -> Result<(File, [u8; 32])> {
    let encryptor = match encrypt {
        Encrypt::Recipients(list) => age::Encryptor::with_recipients(list.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::usage(format!("cannot encrypt to these recipients: {e}")))?,
        Encrypt::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
    };
    let io = |e: std::io::Error| Error::io("cannot write", tmp, e);
    let out = Hashing { inner: std::io::BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() };
    let aged = encryptor.wrap_output(out).map_err(io)?;
    // age, the file's hash and the writes on a thread of their own, while
    // this one reads and hashes the state and zstd's workers compress.
    let piped = crate::pipe::writer(aged, |aged| aged.finish());
    let mut zstd = zstd::stream::write::Encoder::new(piped, LEVEL).map_err(io)?;
    let workers = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    if workers > 1 {
        zstd.multithread(workers).map_err(io)?;
    }
    let zstd = write_tar(state_dir, m, found, zstd)?;
    let out = zstd.finish().map_err(io)?.finish().map_err(io)?;
    let sha256: [u8; 32] = out.hash.finalize().into();
    let file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
    Ok((file, sha256))
}

/// zstd's default level: about as fast as the disk on a small machine.
const LEVEL: i32 = 3;

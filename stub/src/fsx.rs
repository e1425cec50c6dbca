//! The filesystem helpers every durable write goes through.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Runs `op`, retrying up to 3 times with exponential backoff (50, 100,
/// 200 ms) while it fails with a transient error (EBUSY, EAGAIN, ...).
pub fn with_retry<T>(what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
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

/// The one atomic write, for a path: its directory is opened (the path to
/// it may pass through links, as the operator's paths may) and the write
/// goes through [`crate::door::Dir::write_atomic`]: a new temp file that is
/// never a link, fsync, rename, fsync of the directory. Readers see the old
/// content or the new, whole.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    crate::door::Dir::open_following(parent(path))?.write_atomic(&name, bytes, mode)
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .and_then(|d: File| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

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

/// Removes a tree of ours if present; a symlink is removed, never followed.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot inspect", path, e)),
        Ok(m) if m.is_dir() => {
            // Directories we staged may be read-only; make them writable first.
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

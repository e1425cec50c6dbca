//! The state directory's lock: the same `flock` on `<state>/lock` that the
//! stub's install takes. A backup holds it while it reads, so a writer that
//! takes it too (the install, a restore, NXS itself) never interleaves with
//! it; a restore holds it from the first check to the last rename.

use crate::error::{Class, Error, Result};
use nxs_format::state::LOCK;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Lock {
    pub file: File,
}

/// Takes the lock, waiting up to `wait` for its holder. `inherited` is the
/// descriptor of the same lock already held by a parent (`install
/// --restore-from`): it is checked to be that file and used as is.
pub fn take(state_dir: &Path, wait: Duration, inherited: Option<i32>) -> Result<Lock> {
    let path = state_dir.join(LOCK);
    if let Some(fd) = inherited {
        // SAFETY: the descriptor was handed to us by our parent; we own it now.
        let file = unsafe { File::from_raw_fd(fd) };
        let (held, named) = (file.metadata(), std::fs::metadata(&path));
        return match (held, named) {
            (Ok(h), Ok(n)) if h.dev() == n.dev() && h.ino() == n.ino() => Ok(Lock { file }),
            _ => Err(Error::usage(format!("--lock-fd {fd} is not the lock {}", path.display()))),
        };
    }
    let file = open_lock(state_dir, &path)?;
    let until = Instant::now() + wait;
    let mut told = false;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            use std::os::unix::fs::FileExt;
            let pid = format!("{}\n", std::process::id());
            let _ = file.write_all_at(pid.as_bytes(), 0);
            let _ = file.set_len(pid.len() as u64);
            return Ok(Lock { file });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io("cannot lock", &path, e));
        }
        if Instant::now() >= until {
            // From the file already open: the name is not looked up again.
            let mut holder = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&file, 64), &mut holder);
            let holder = holder.trim();
            return Err(Error::new(
                Class::Locked,
                format!(
                    "{} is locked by {}",
                    path.display(),
                    if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") }
                ),
            )
            .hint("an install, a restore or NXS itself is writing the state; wait, or raise --lock-timeout"));
        }
        if !told {
            eprintln!("  waiting for the lock {} (another writer holds it)", path.display());
            told = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens the lock file as the stub does (`nxs_stub::statedir`): the state
/// directory must be a real directory, not a link, and the lock a regular
/// file or nothing. A link, FIFO, socket or device at either name is a
/// refusal (exit 5) that names it, before any `open` could follow it or
/// block on it; the lock is written only once it is known to be a regular
/// file.
fn open_lock(state_dir: &Path, path: &Path) -> Result<File> {
    let refuse = |p: &Path, m: &std::fs::Metadata, want: &str| {
        Error::new(Class::Io, nxs_format::state::planted(p, m.mode(), want)).hint(nxs_format::state::PLANTED_HINT)
    };
    if let Ok(m) = std::fs::symlink_metadata(state_dir) {
        if !m.is_dir() {
            return Err(refuse(state_dir, &m, "directory"));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => return Err(refuse(path, &m, "regular file")),
        _ => {}
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match std::fs::symlink_metadata(path) {
            Ok(m) if !m.is_file() => refuse(path, &m, "regular file"),
            _ => Error::io("cannot open the lock", path, e),
        })?;
    let m = file.metadata().map_err(|e| Error::io("cannot inspect the lock", path, e))?;
    if !m.is_file() {
        return Err(refuse(path, &m, "regular file"));
    }
    Ok(file)
}

//! The state directory's lock: an exclusive `flock` on `<state>/lock`,
//! taken by the install, by nxs-backup's backup and restore, and by NXS
//! itself, so that no two writers of the state ever interleave. The kernel
//! releases it when its holder dies, even by SIGKILL. The holder's PID is
//! written into the file, for the message a waiting writer prints.

use crate::door::{Access, Dir};
use crate::error::{Class, Error, Result};
use nxs_format::state::LOCK;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::FromRawFd;
use std::time::{Duration, Instant};

/// An exclusive lock on a state directory, held until dropped.
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock of the state directory `dir`, waiting up to `wait`
    /// for its holder (saying so once on stderr). The lock file is opened
    /// through the door with `access` (created 0600 if missing; anything
    /// but a regular file there is a refusal), then written with our PID.
    /// A lock still held after `wait` is exit 6, naming the holder, with
    /// `busy_hint`.
    pub fn take(dir: &Dir, access: Access, wait: Duration, busy_hint: &str) -> Result<Lock> {
        let path = dir.join(LOCK);
        let mut file = dir.open_file(LOCK, access)?.expect("the lock is created if missing");
        let until = Instant::now() + wait;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    // Overwrite in place, then trim: a reader never sees an
                    // empty file where a PID was.
                    use std::os::unix::fs::FileExt;
                    let pid = format!("{}\n", std::process::id());
                    let _ = file.write_all_at(pid.as_bytes(), 0);
                    let _ = file.set_len(pid.len() as u64);
                    return Ok(Lock { file });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    if !told {
                        eprintln!("  waiting for the lock {} (another writer holds it)", path.display());
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = match holder_pid(&mut file) {
                        Some(pid) => format!("process {pid}"),
                        None => "another process".to_string(),
                    };
                    return Err(
                        Error::new(Class::Locked, format!("{} is locked by {holder}", path.display())).hint(busy_hint)
                    );
                }
            }
        }
    }

    /// The lock already held by our parent (`install --restore-from` hands
    /// it to nxs-backup as `--lock-fd`): checked to be this directory's
    /// lock file, then owned by us.
    pub fn inherit(dir: &Dir, fd: i32) -> Result<Lock> {
        // SAFETY: the descriptor was handed to us by our parent; we own it now.
        let file = unsafe { File::from_raw_fd(fd) };
        let named = dir.lstat(LOCK)?;
        match (file.metadata(), named) {
            #[allow(clippy::unnecessary_cast)] // not the same type on every platform
            (Ok(h), Some(n)) if h.dev() == n.st_dev as u64 && h.ino() == n.st_ino as u64 => Ok(Lock { file }),
            _ => Err(Error::usage(format!("--lock-fd {fd} is not the lock {}", dir.join(LOCK).display()))),
        }
    }

    /// The descriptor, for a child that inherits the lock.
    pub fn fd(&self) -> i32 {
        std::os::unix::io::AsRawFd::as_raw_fd(&self.file)
    }
}

/// The PID the holder wrote. It writes it just after it takes the lock,
/// so a holder seen a moment too early is given 200 ms to say who it is.
fn holder_pid(file: &mut File) -> Option<String> {
    let mut pid = String::new();
    for _ in 0..20 {
        pid.clear();
        use std::io::Seek;
        let _ = file.rewind();
        let _ = (&mut *file).take(64).read_to_string(&mut pid);
        if !pid.trim().is_empty() {
            return Some(pid.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_an_inherited_one_must_be_the_same_file() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        let l = Lock::take(&d, Access::ReadWrite, Duration::ZERO, "wait").unwrap();
        let e = Lock::take(&d, Access::Shared, Duration::from_millis(120), "wait").err().unwrap();
        assert_eq!(e.class, Class::Locked);
        assert!(e.msg.contains(&format!("process {}", std::process::id())), "{}", e.msg);
        assert_eq!(e.hint.as_deref(), Some("wait"));
        let dup = unsafe { libc::dup(l.fd()) };
        assert!(Lock::inherit(&d, dup).is_ok());
        let other = File::open(t.path()).unwrap();
        let fd = std::os::unix::io::IntoRawFd::into_raw_fd(other);
        assert_eq!(Lock::inherit(&d, fd).err().unwrap().class, Class::Usage);
        drop(l);
        assert!(Lock::take(&d, Access::ReadWrite, Duration::ZERO, "wait").is_ok());
    }
}

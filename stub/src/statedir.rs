//! `StateDir`: the only door to the state directory (`--state-dir`,
//! `$NXS_HOME`, `~/.nxs`). It is opened once, as a directory descriptor
//! that is not a link, owned by the running user and not writable by
//! others; every lock, checkpoint, guard, log, dump and tailnet file is then
//! opened relative to it, through [`crate::door::Dir`].
//!
//! Opening it also looks at every name the bootstrap owns there (see
//! `nxs_format::state`) before anything is locked or written: a link, FIFO,
//! socket or device at any of them is a refusal (exit 5) that names the
//! path and what is there, at once, rather than a hang on a FIFO or a write
//! through a link halfway through an install.
//!
//! # Security
//! The state directory may sit where others can write its parent (`/tmp`,
//! a home directory, a stick), and whatever is in it may have been planted.
//! Nothing here follows a link, opens a special file, or trusts a directory
//! another user owns or can write.

use crate::door::{Access, Dir};
use crate::error::{Class, Error, Result};
use nxs_format::checkpoint::{Checkpoint, CheckpointError};
use nxs_format::state::{CHECKPOINT, HIGHEST, HIGHEST_ROOT};
pub use nxs_sys::lock::Lock;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The largest checkpoint read: the writer keeps 64 history records.
const MAX_CHECKPOINT: u64 = 1 << 20;

/// The names the bootstrap owns under `logs/` and `tailnet/`: the state
/// directory's layout, checked when it is opened. The modules that write
/// them (`hooks`, `tailnet`) take their names from here.
pub mod names {
    /// The daemon's log and the client's, under `logs/`.
    pub const DAEMON_LOG: &str = "tailscaled.log";
    pub const CLIENT_LOG: &str = "tailscale.log";
    /// Under `tailnet/`: the stashed auth key, the supervisor's PID file,
    /// its script, the systemd unit, and the daemon's own state.
    pub const AUTHKEY: &str = "authkey";
    pub const DAEMON_PID: &str = "tailscaled.pid";
    pub const SUPERVISOR: &str = "run-tailscaled";
    pub const UNIT_FILE: &str = "nxs-tailscaled.service";
    pub const DAEMON_STATE: &str = "tailscaled.state";
    /// The regular files under `tailnet/` (the daemon's socket is the one
    /// other name there).
    pub const TAILNET_FILES: &[&str] = &[AUTHKEY, DAEMON_PID, SUPERVISOR, UNIT_FILE, DAEMON_STATE];

    /// The log of a hook stage, under `logs/`.
    pub fn stage_log(stage: nxs_format::HookStage) -> String {
        format!("hook-{}.log", stage.as_str())
    }
}

/// The logs the stub writes, under `logs/`.
pub fn log_names() -> Vec<String> {
    let mut v: Vec<String> = [
        nxs_format::HookStage::Configure,
        nxs_format::HookStage::ConfigureFallback,
        nxs_format::HookStage::Validate,
        nxs_format::HookStage::Run,
    ]
    .into_iter()
    .map(names::stage_log)
    .collect();
    v.push(names::DAEMON_LOG.into());
    v.push(names::CLIENT_LOG.into());
    v
}

/// The state directory, held open.
pub struct StateDir {
    dir: Dir,
}

impl StateDir {
    /// Opens the state directory, creating it (0700) if it is missing.
    pub fn open(path: &Path) -> Result<StateDir> {
        let s = StateDir { dir: Dir::open_private(path, 0o700)? };
        s.check_names()?;
        Ok(s)
    }

    /// Opens an existing state directory; `None` if there is none. For
    /// readers (`status`), which never create one.
    pub fn open_existing(path: &Path) -> Result<Option<StateDir>> {
        if crate::door::lstat_path(path).is_none() {
            return Ok(None);
        }
        Ok(Some(StateDir::open(path)?))
    }

    /// Every name the bootstrap owns is its kind or absent.
    fn check_names(&self) -> Result<()> {
        for f in nxs_format::state::BOOTSTRAP_FILES {
            self.dir.expect_file(f)?;
        }
        for d in nxs_format::state::BOOTSTRAP_DIRS {
            let Some(sub) = self.dir.subdir(d, false)? else { continue };
            let names: Vec<String> = match *d {
                "logs" => log_names(),
                "tailnet" => names::TAILNET_FILES.iter().map(|s| s.to_string()).collect(),
                _ => continue,
            };
            for n in &names {
                sub.expect_file(n)?;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the state directory's lock. The lock file is created (0600) or
    /// must already be a regular file of this directory; only then is it
    /// written (the holder's PID).
    pub fn lock(&self) -> Result<Lock> {
        Lock::take(
            &self.dir,
            Access::ReadWrite,
            std::time::Duration::ZERO,
            "another install is running; wait for it to finish, or stop it",
        )
    }

    /// The checkpoint, if there is one; a damaged one is `Some(Err)`.
    pub fn read_checkpoint(&self) -> Result<Option<std::result::Result<Checkpoint, CheckpointError>>> {
        Ok(self.checkpoint_bytes()?.map(|b| Checkpoint::parse(&b)))
    }

    /// The checkpoint's bytes as they are, for a diagnostic dump.
    pub fn checkpoint_bytes(&self) -> Result<Option<Vec<u8>>> {
        self.dir.read(CHECKPOINT, MAX_CHECKPOINT)
    }

    pub fn write_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        self.dir.write_atomic(CHECKPOINT, cp.to_text().as_bytes(), 0o600)
    }

    /// Puts back the checkpoint a run found (its bytes as they were), or
    /// none: what a run that must leave nothing behind does last.
    pub fn restore_checkpoint(&self, bytes: Option<&[u8]>) -> Result<()> {
        match bytes {
            Some(b) => self.dir.write_atomic(CHECKPOINT, b, 0o600),
            None => self.dir.remove_file(CHECKPOINT).map(|_| ()),
        }
    }

    /// The highest version ever installed with this state directory.
    pub fn highest(&self) -> Result<Option<nxs_format::Version>> {
        Ok(self
            .dir
            .read(HIGHEST, 4096)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| nxs_format::Version::parse(s.trim())))
    }

    pub fn set_highest(&self, v: &nxs_format::Version) -> Result<()> {
        self.dir.write_atomic(HIGHEST, format!("{v}\n").as_bytes(), 0o600)
    }

    /// The highest root version accepted here, and its text's sha256. A
    /// file that does not read as one is refused, not ignored: it guards
    /// against a rollback of trust.
    pub fn highest_root(&self) -> Result<Option<(u64, [u8; 32])>> {
        let Some(bytes) = self.dir.read(HIGHEST_ROOT, 4096)? else { return Ok(None) };
        let parsed = std::str::from_utf8(&bytes).ok().and_then(|s| {
            let (v, h) = s.strip_suffix('\n')?.split_once(' ')?;
            Some((v.parse().ok().filter(|v| *v > 0)?, nxs_format::hex::decode_sha256(h)?))
        });
        parsed.map(Some).ok_or_else(|| {
            Error::new(Class::Verify, format!("{}: not `<root version> <sha256>`", self.dir.path().join(HIGHEST_ROOT).display()))
                .hint("nxs writes this file itself; restore it from a backup, or remove it to trust this bundle's chain afresh")
        })
    }

    pub fn set_highest_root(&self, version: u64, sha256: &[u8; 32]) -> Result<()> {
        let text = format!("{version} {}\n", nxs_format::hex::encode(sha256));
        self.dir.write_atomic(HIGHEST_ROOT, text.as_bytes(), 0o600)
    }

    /// A bootstrap subdirectory (`logs`, `diag`, `tailnet`), made 0700 if
    /// missing.
    pub fn sub(&self, name: &str) -> Result<Dir> {
        Ok(self.dir.subdir(name, true)?.expect("created"))
    }

    /// A bootstrap subdirectory if it exists.
    pub fn sub_existing(&self, name: &str) -> Result<Option<Dir>> {
        self.dir.subdir(name, false)
    }

    /// Opens `logs/<name>` for appending.
    pub fn log(&self, name: &str) -> Result<(File, PathBuf)> {
        let logs = self.sub("logs")?;
        let f = logs.open_file(name, Access::Append)?.expect("created");
        Ok((f, logs.join(name)))
    }

    /// The names at the top of the state directory.
    pub fn names(&self) -> Result<Vec<String>> {
        self.dir.names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn every_fixed_name_is_checked_when_opened() {
        let t = tempfile::tempdir().unwrap();
        let mut names: Vec<String> = nxs_format::state::BOOTSTRAP_FILES.iter().map(|s| s.to_string()).collect();
        names.extend(log_names().iter().map(|n| format!("logs/{n}")));
        names.extend(names::TAILNET_FILES.iter().map(|n| format!("tailnet/{n}")));
        for (i, n) in names.iter().enumerate() {
            let d = t.path().join(format!("s{i}"));
            std::fs::create_dir_all(d.join("logs")).unwrap();
            std::fs::create_dir_all(d.join("tailnet")).unwrap();
            mkfifo(&d.join(n));
            let started = std::time::Instant::now();
            let e = StateDir::open(&d).err().unwrap_or_else(|| panic!("{n}: a FIFO must be refused"));
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
            assert_eq!(e.class, Class::Io);
            assert!(e.msg.contains("FIFO") && e.msg.contains(n.as_str()), "{}", e.msg);
        }
    }

    #[test]
    fn a_symlinked_state_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
        let e = StateDir::open(&t.path().join("link")).err().unwrap();
        assert!(e.msg.contains("symbolic link"), "{}", e.msg);
        assert!(StateDir::open_existing(&t.path().join("link")).is_err());
        assert!(StateDir::open_existing(&t.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn lock_and_checkpoint_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("s")).unwrap();
        let l = s.lock().unwrap();
        assert_eq!(s.lock().err().unwrap().class, Class::Locked);
        drop(l);
        assert!(s.read_checkpoint().unwrap().is_none());
        s.set_highest(&nxs_format::Version::parse("1.2.3").unwrap()).unwrap();
        assert_eq!(s.highest().unwrap().unwrap().as_str(), "1.2.3");
    }
}

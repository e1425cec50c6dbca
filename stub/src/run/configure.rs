//! CONFIGURING: the restore from a backup (`--restore-from`), the
//! configure hook (or its declared fallback), and the tailnet join.

use super::Run;
use crate::error::{Class, Error, Result};
use crate::machine::Event;
use crate::statedir::StateDir;
use nxs_format::HookStage;

impl Run<'_> {
    pub(super) fn configure(&mut self) -> Result<Event> {
        self.restore()?;
        match self.hook(HookStage::Configure, &[]) {
            Err(e)
                if e.class == Class::HookFailed
                    && self.bundle().manifest.hooks.iter().any(|h| h.stage == HookStage::ConfigureFallback) =>
            {
                eprintln!("  configure failed ({}); running the declared fallback", e.msg);
                self.hook(HookStage::ConfigureFallback, &[])?
            }
            other => other?,
        }
        self.join()?;
        Ok(Event::Configured)
    }

    /// `--restore-from`: the installed nxs-backup restores the state
    /// directory, under this run's lock. Only where the state directory
    /// holds no NXS data yet, or a restore was interrupted: a rerun never
    /// restores twice, and an install never restores over live data.
    fn restore(&mut self) -> Result<()> {
        let Some(r) = &self.opts.restore else { return Ok(()) };
        let dir = &self.opts.state_dir;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Only a work directory of ours counts: a real directory, this
        // user's, not writable by group or others.
        let work = dir.with_file_name(format!(".{name}.nxs-restore"));
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        let interrupted = crate::door::lstat_path(&work)
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_uid == me && st.st_mode & 0o022 == 0);
        let has_data = self.sd.names()?.iter().any(|n| !nxs_format::state::is_bootstrap_owned(n));
        if has_data && !interrupted {
            eprintln!("  note: {} already holds NXS data: not restoring over it (`restore` does that)", dir.display());
            return Ok(());
        }
        crate::fault::effect("restore")?;
        eprintln!("  restoring {} from {}", dir.display(), r.from.display());
        // The installed copy, checked against the verified manifest and run
        // from memory: the bytes checked are the bytes run.
        let tool = self.layout.root.join(crate::tool::TOOL);
        let bytes = crate::tool::installed(&self.layout.root, &self.bundle().manifest)?;
        let (_memfd, mut cmd) = crate::tool::command(&bytes)?;
        if crate::events::json_mode() {
            // stdout holds this run's events only.
            cmd.stdout(std::io::stderr());
        }
        let key_flag = if r.passphrase { "--passphrase-file" } else { "--identity" };
        // The child takes this run's lock as its own: the descriptor must
        // survive the exec, for that call only.
        // SAFETY: fcntl on a descriptor this run owns.
        unsafe { libc::fcntl(self.lock_fd, libc::F_SETFD, 0) };
        let st = cmd
            .args(["restore", "--from"])
            .arg(&r.from)
            .arg(key_flag)
            .arg(&r.key)
            .arg("--state-dir")
            .arg(dir)
            .arg(format!("--lock-fd={}", self.lock_fd))
            .status();
        // SAFETY: as above.
        unsafe { libc::fcntl(self.lock_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let code = st.map_err(|e| Error::io("cannot run", &tool, e))?.code().unwrap_or(5);
        let class = match code {
            0 => {
                // The state directory was swapped: the one this run holds
                // open is the old one now. Open the new one (the lock's
                // inode was linked into it, so the lock is still ours).
                self.sd = StateDir::open(&self.opts.state_dir)?;
                return Ok(());
            }
            2 => Class::Usage,
            3 => Class::Verify,
            4 => Class::Incompatible,
            6 => Class::Locked,
            _ => Class::Io,
        };
        Err(Error::new(class, format!("restoring the state directory from {} failed (exit {code})", r.from.display()))
            .hint(
                "nxs-backup's own message above says where the state directory stands; fix the cause and run install again: it resumes here",
            ))
    }
}

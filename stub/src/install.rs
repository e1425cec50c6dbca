//! The effects layer of the bootstrap machine: locking, checkpoints,
//! staging, the atomic switch into the root, and hooks.
//!
//! Architecture invariant: the stub writes only inside the root, the root's
//! staging siblings (`.<root-name>.nxs-staging`, `.<root-name>.nxs-previous`)
//! and the state directory.

use crate::bundle::{Bundle, Trust};
use crate::door::Dir;
use crate::error::{Class, Error, Result};
use crate::extract::{self, Progress, Sink};
use crate::fsx;
use crate::machine::{step, Action, Event, State};
use crate::statedir::StateDir;
use nxs_format::checkpoint::{Checkpoint, HistoryRecord, Staging};
use nxs_format::{hex, HookStage, Manifest, RECORD_DIR};
use std::fs;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = nxs_format::state::CHECKPOINT;
/// Runs of one bundle that may fail in a row before install gives up.
pub const MAX_FAILED_RUNS: usize = 5;

/// Failed runs since the last good one, as the checkpoint's history tells.
fn failed_runs(c: &Checkpoint) -> usize {
    c.history
        .iter()
        .rev()
        .take_while(|h| !matches!(h.state, State::Running | State::SafeMode))
        .filter(|h| h.state == State::Failed)
        .count()
}

/// The root and its two siblings, on the same filesystem, so that the
/// switch into place is a rename. Every operation on them goes through
/// their parent directory, held open ([`Layout::parent_dir`]): they are
/// looked at without following links, and renamed relative to it.
pub struct Layout {
    pub root: PathBuf,
    pub staging: PathBuf,
    pub previous: PathBuf,
    root_name: String,
    staging_name: String,
    previous_name: String,
}

/// The file that named a staging directory's payload before format 3 of
/// the checkpoint recorded it; removed when found.
fn old_staging_id(root_name: &str) -> String {
    format!(".{root_name}.nxs-staging.id")
}

impl Layout {
    pub fn new(root: &Path) -> Result<Layout> {
        let root = fsx::absolute(root)?;
        let name = root
            .file_name()
            .ok_or_else(|| Error::usage(format!("{} cannot be an install root", root.display())))?
            .to_str()
            .ok_or_else(|| Error::usage(format!("{}: the root's name is not UTF-8", root.display())))?
            .to_string();
        let parent = fsx::parent(&root).to_path_buf();
        let (staging_name, previous_name) = (format!(".{name}.nxs-staging"), format!(".{name}.nxs-previous"));
        Ok(Layout {
            staging: parent.join(&staging_name),
            previous: parent.join(&previous_name),
            root,
            root_name: name,
            staging_name,
            previous_name,
        })
    }

    fn parent(&self) -> &Path {
        fsx::parent(&self.root)
    }

    /// Opens the root's parent (made if missing, with `create`). The path
    /// to it is the operator's and may pass through links (`/opt` often is
    /// one); the parent itself must not let others swap the names in it:
    /// owned by root or by this user, and not writable by others unless
    /// sticky (as `/tmp` is, where others cannot rename what is ours).
    pub fn parent_dir(&self, create: bool) -> Result<Dir> {
        let parent = self.parent();
        if create {
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        let d = Dir::open_following(parent)?;
        let st = d.stat()?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if st.st_uid != 0 && st.st_uid != me {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is owned by uid {}: whoever owns it could swap the install under nxs",
                    parent.display(),
                    st.st_uid
                ),
            )
            .hint("install into a directory owned by root or by you"));
        }
        if st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 == 0 {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is writable by every user and not sticky (mode {:o})",
                    parent.display(),
                    st.st_mode & 0o7777
                ),
            )
            .hint("anyone could swap the install under nxs; choose another place for --root"));
        }
        // A group that may write there could swap the staging directory
        // for a link between two renames; root's group is root's.
        if st.st_mode & 0o020 != 0 && st.st_mode & 0o1000 == 0 && st.st_gid != 0 {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is writable by group {} and not sticky (mode {:o})",
                    parent.display(),
                    st.st_gid,
                    st.st_mode & 0o7777
                ),
            )
            .hint("its members could swap the install under nxs; `chmod g-w` it, or choose another place for --root"));
        }
        Ok(d)
    }

    /// Refuses a root, staging or previous directory that is a link,
    /// not a directory, or not this user's, before anything reads it.
    pub fn check(&self, parent: &Dir) -> Result<()> {
        for name in [&self.root_name, &self.staging_name, &self.previous_name] {
            if let Some(st) = parent.lstat(name)? {
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    let e = crate::door::refuse(&parent.join(name), &st, "directory");
                    return Err(if name == &self.root_name { e.hint("choose another --root") } else { e });
                }
                // Opening checks the owner and the mode.
                parent.subdir(name, false)?;
            }
        }
        // An earlier stub's staging id: removed when staging starts, and
        // only if it is a regular file.
        parent.expect_file(&old_staging_id(&self.root_name))?;
        Ok(())
    }

    /// The install record of the root, staging or previous directory.
    fn record(&self, parent: &Dir, name: &str) -> Result<Option<Manifest>> {
        match parent.subdir(name, false)? {
            Some(d) => installed_manifest_in(&d),
            None => Ok(None),
        }
    }

    /// [`check`](Self::check), where the parent exists at all.
    pub fn check_if_present(&self) -> Result<()> {
        if crate::door::lstat_path(self.parent()).is_none() {
            return Ok(());
        }
        self.check(&self.parent_dir(false)?)
    }

    /// Whether `previous` holds an install (an interrupted upgrade's).
    pub fn has_previous(&self) -> Result<bool> {
        Ok(self.record(&self.parent_dir(false)?, &self.previous_name)?.is_some())
    }

    fn exists(&self, parent: &Dir, name: &str) -> Result<bool> {
        Ok(parent.lstat(name)?.is_some())
    }

    fn remove(&self, parent: &Dir, name: &str) -> Result<()> {
        if self.exists(parent, name)? {
            fsx::remove_tree(&parent.join(name))?;
        }
        Ok(())
    }
}

/// Extracts the verified bundle into a fresh staging directory, with the
/// install record, ready to be switched in.
///
/// The staging directory is made here, 0700, and its identity (device and
/// inode) handed to `created` before a file is written, so the caller can
/// record it; `created` hears again, about once a second, how many frames
/// are done (format 3). With `resume`, the staging directory of an
/// interrupted run of the same payload is kept, if and only if it is still that very
/// directory (the identity recorded then); its files are kept only if each
/// is a regular file with one link, of this user, whose bytes match.
///
/// # Security
/// Nothing found in staging is trusted: a directory that is not the one
/// recorded is removed and made afresh, and a resumed one keeps only what
/// `extract` re-verifies.
pub fn stage(
    b: &Bundle,
    layout: &Layout,
    record: bool,
    progress: bool,
    resume: Option<&Staging>,
    created: &mut dyn FnMut(Staging) -> Result<()>,
) -> Result<()> {
    let parent = layout.parent_dir(true)?;
    layout.check(&parent)?;
    crate::fault::effect("stage")?;
    let id = hex::encode(&b.manifest.payload.sha256);
    let old_id = old_staging_id(&layout.root_name);
    if parent.expect_file(&old_id)?.is_some() {
        parent.remove_file(&old_id)?;
    }
    let resuming = match resume {
        Some(s) if s.payload_sha256 == id => match parent.subdir(&layout.staging_name, false)? {
            Some(d) => d.identity()? == (s.dev, s.ino),
            None => false,
        },
        _ => false,
    };
    let mut staging = match resume {
        Some(s) if resuming => s.clone(),
        _ => {
            // Anything else there is not provably ours: start afresh.
            layout.remove(&parent, &layout.staging_name)?;
            parent.sync()?;
            let d = parent.subdir(&layout.staging_name, true)?.expect("created");
            let (dev, ino) = d.identity()?;
            let st = Staging { payload_sha256: id, dev, ino, frames_done: 0 };
            created(st.clone())?;
            st
        }
    };
    let m = &b.manifest;
    // A rerun reads the bundle only from the first frame staging does not
    // hold intact (format 3); before, it reads it all again.
    let (start, kept) = match resuming && m.format >= 3 {
        true => extract::resume_point(m, &layout.staging, staging.frames_done as usize, progress)?,
        false => (extract::Start::default(), 0),
    };
    if start.frame > 0 {
        let skipped: u64 = m.frames[..start.frame].iter().map(|f| f.compressed).sum();
        eprintln!(
            "  resuming at payload frame {} of {}: {kept} file(s) staged before it are intact; {skipped} bytes of the bundle not read again",
            start.frame,
            m.frames.len(),
        );
    }
    let mut p = Progress::start_if(progress, "extract", m.files_total());
    let mut done = |frames: usize| {
        staging.frames_done = frames as u64;
        created(staging.clone())
    };
    let sink = Sink::Dir { root: &layout.staging, resume: resuming };
    let reused = match extract::run_from(b, &sink, &mut p, start, &mut done) {
        Ok(n) => {
            p.end();
            n + kept
        }
        Err(e) => {
            // Nothing of a bundle that failed verification stays behind.
            let _ = layout.remove(&parent, &layout.staging_name);
            return Err(e);
        }
    };
    if resuming {
        eprintln!("  resumed: {reused} file(s) already staged and verified were kept");
    }
    let staging = parent.subdir(&layout.staging_name, false)?.ok_or_else(|| {
        Error::new(Class::Io, format!("{} disappeared while nxs filled it", layout.staging.display()))
    })?;
    if record {
        let dir = layout.staging.join(RECORD_DIR);
        fsx::remove_tree(&dir)?;
        let rec = staging.subdir(RECORD_DIR, true)?.expect("created");
        rec.write_atomic("manifest", &b.manifest_bytes, 0o644)?;
        rec.write_atomic("manifest.minisig", b.signature.as_bytes(), 0o644)?;
        // SAFETY: fchmod on the descriptor just opened.
        unsafe { libc::fchmod(rec.fd(), 0o755) };
    }
    staging.sync()
}

/// Switches the staged tree into the root. An existing install is swapped
/// out atomically (`RENAME_EXCHANGE`) and kept as `previous`; the parent
/// directory is fsynced after each rename. Every rename is relative to the
/// parent, held open.
pub fn commit(layout: &Layout) -> Result<()> {
    let parent = layout.parent_dir(false)?;
    layout.check(&parent)?;
    let (root, staging, previous) = (&layout.root_name, &layout.staging_name, &layout.previous_name);
    crate::fault::effect("commit")?;
    // Staging stays 0700 while it is filled and until now, so nothing can
    // be planted in it; the root it becomes is readable as an ordinary
    // install is.
    let staged = parent.subdir(staging, false)?.ok_or_else(|| {
        Error::new(Class::Io, format!("{} is missing: nothing to switch in", layout.staging.display()))
    })?;
    // SAFETY: fchmod on an open descriptor of the staging directory.
    if unsafe { libc::fchmod(staged.fd(), 0o755) } != 0 {
        return Err(Error::io("cannot set the mode of", &layout.staging, std::io::Error::last_os_error()));
    }
    let root_is_empty = match parent.subdir(root, false)? {
        Some(d) => Some(d.names()?.is_empty()),
        None => None,
    };
    match root_is_empty {
        Some(true) => {
            parent.remove_dir(root)?;
        }
        Some(false) => {
            layout.remove(&parent, previous)?;
            crate::fault::effect("commit-exchange")?;
            match parent.exchange(staging, root) {
                Ok(()) => {
                    parent.sync()?;
                    crate::fault::effect("commit-previous")?;
                    parent.rename(staging, previous)?;
                    return parent.sync();
                }
                // No RENAME_EXCHANGE on this filesystem: two renames. A crash
                // between them leaves no root and a complete `previous`,
                // which `repair` puts back on the next run.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                    parent.rename(root, previous)?;
                    parent.sync()?;
                    crate::fault::effect("commit-second-rename")?;
                }
                Err(e) => return Err(Error::io("cannot switch in the new install at", &layout.root, e)),
            }
        }
        None => {}
    }
    parent.rename(staging, root)?;
    parent.sync()
}

/// Puts `previous` back in place of the root, atomically. With `keep`, the
/// version rolled back from becomes `previous` (so a second rollback rolls
/// forward); without, it is removed. Idempotent: safe to run again after a
/// crash at any point.
pub fn roll_back(layout: &Layout, failed_payload: Option<&[u8; 32]>, keep: bool) -> Result<()> {
    let parent = layout.parent_dir(false)?;
    layout.check(&parent)?;
    let root_payload = layout.record(&parent, &layout.root_name)?.map(|m| m.payload.sha256);
    let already_back = match (failed_payload, root_payload) {
        (Some(f), Some(r)) => &r != f,
        _ => false,
    };
    if !already_back {
        if layout.record(&parent, &layout.previous_name)?.is_none() {
            return Err(Error::new(
                Class::Io,
                format!("there is no previous install at {} to roll back to", layout.previous.display()),
            )
            .hint("rollback needs an earlier install of this root"));
        }
        crate::fault::effect("rollback-exchange")?;
        parent
            .exchange(&layout.previous_name, &layout.root_name)
            .map_err(|e| Error::io("cannot swap the previous install back into", &layout.root, e))?;
        parent.sync()?;
    }
    if !keep {
        crate::fault::effect("rollback-cleanup")?;
        layout.remove(&parent, &layout.previous_name)?;
        parent.sync()?;
    }
    Ok(())
}

/// Repairs what an interrupted run can leave beside the root: a root moved
/// aside but not yet replaced, or the old install swapped out into staging
/// but not yet renamed to `previous`.
pub fn repair(layout: &Layout, payload: &[u8; 32]) -> Result<()> {
    let Ok(parent) = layout.parent_dir(false) else { return Ok(()) };
    layout.check(&parent)?;
    if !layout.exists(&parent, &layout.root_name)? && layout.record(&parent, &layout.previous_name)?.is_some() {
        eprintln!("  note: restoring {} from an interrupted switch", layout.root.display());
        parent.rename(&layout.previous_name, &layout.root_name)?;
        parent.sync()?;
    }
    if let Some(m) = layout.record(&parent, &layout.staging_name)? {
        if &m.payload.sha256 != payload && layout.record(&parent, &layout.root_name)?.is_some() {
            // A complete other install in staging is the one swapped out.
            layout.remove(&parent, &layout.previous_name)?;
            parent.rename(&layout.staging_name, &layout.previous_name)?;
            parent.sync()?;
        }
    }
    Ok(())
}

/// The install record in a root, if any: the manifest it was installed from.
pub fn installed_manifest(layout: &Layout) -> Result<Option<Manifest>> {
    match layout.parent_dir(false) {
        Ok(parent) => layout.record(&parent, &layout.root_name),
        Err(_) if crate::door::lstat_path(layout.parent()).is_none() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The install record inside an open root: read beneath it, through no
/// link, regular file only.
fn installed_manifest_in(root: &Dir) -> Result<Option<Manifest>> {
    let Some(bytes) = crate::bundle::read_record(root, "manifest")? else { return Ok(None) };
    Manifest::parse(&bytes).map(Some).map_err(|e| {
        let p = root.join(&format!("{RECORD_DIR}/manifest"));
        Error::new(Class::Io, format!("{}: damaged install record: {e}", p.display()))
    })
}

/// `install --restore-from`: a backup to restore on a fresh machine.
pub struct RestoreFrom {
    pub from: PathBuf,
    /// An age identity file, or with `passphrase` a passphrase file.
    pub key: PathBuf,
    pub passphrase: bool,
}

pub struct InstallOptions {
    pub restore: Option<RestoreFrom>,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub allow_downgrade: bool,
    pub progress: bool,
    /// Start attempts before safe mode.
    pub max_start_attempts: u32,
    /// Try again even after [`MAX_FAILED_RUNS`] failed runs in a row.
    pub retry_failed: bool,
    /// Where the Headscale auth key comes from, if given.
    pub key: crate::tailnet::KeyInput,
    /// `tailscale up` attempts in this run, with backoff between them.
    pub join_attempts: u32,
    /// Bound on each probe of the login server.
    pub probe_timeout: std::time::Duration,
    /// How long each `tailscale up` may wait for the node to run.
    pub up_timeout: std::time::Duration,
}

/// The outcome of an install run.
pub struct Outcome {
    pub state: State,
    pub already: bool,
}

struct Run<'a> {
    opts: &'a InstallOptions,
    /// The state directory, held open: the only way this run reaches it.
    sd: StateDir,
    layout: Layout,
    checkpoint: Checkpoint,
    bundle: Option<Bundle>,
    /// Verified before the run took the lock or wrote anything.
    preverified: Option<Bundle>,
    /// The checkpoint as this run found it.
    found: Option<Checkpoint>,
    /// An install was there before this run.
    upgrading: bool,
    /// The error behind a rollback, reported when it is done.
    pending: Option<Error>,
    /// The auth key read from the operator's sources, until stashed.
    key: Option<crate::secret::Secret>,
    /// What DETECTING's probe of the login server found.
    reachable: Option<std::result::Result<(), String>>,
    /// `tailscale up` succeeded in this run: VALIDATING checks the node.
    joined_now: bool,
    /// The state directory's lock, lent to `nxs-backup restore`.
    lock_fd: i32,
}

impl Run<'_> {
    fn save(&mut self, state: State, error: Option<&Error>) -> Result<()> {
        crate::events::state(self.checkpoint.state.as_str(), state.as_str());
        self.checkpoint.state = state;
        self.checkpoint.history.push(HistoryRecord { at: crate::unix_now(), state });
        if let Some(e) = error {
            self.checkpoint.last_error = Some(e.msg.clone());
        }
        if let Some(b) = &self.bundle {
            self.checkpoint.bundle_id = b.manifest.bundle_id();
            self.checkpoint.version = b.manifest.version.to_string();
            self.checkpoint.payload_sha256 = hex::encode(&b.manifest.payload.sha256);
        }
        self.save_quiet()
    }

    /// Writes the diagnostic dump, names it in the error, and offers the
    /// emergency shell on an interactive terminal.
    fn after_failure(&self, mut e: Error) -> Error {
        match crate::diag::dump(&self.sd, &self.layout.root, &e) {
            Ok(path) => e.msg.push_str(&format!("\n  diagnostic dump: {}", path.display())),
            Err(d) => e.msg.push_str(&format!("\n  (no diagnostic dump: {})", d.msg)),
        }
        crate::diag::offer_shell(&self.sd);
        e
    }

    /// Rewrites the checkpoint without a new history record.
    fn save_quiet(&mut self) -> Result<()> {
        self.sd.write_checkpoint(&self.checkpoint)
    }

    /// Refuses to go below the highest version installed here, or below
    /// the version in the root, unless asked to.
    fn check_downgrade(&self, installed: Option<&nxs_format::Version>) -> Result<()> {
        let new = &self.bundle().manifest.version;
        let highest = self.sd.highest()?;
        let top = match (installed, highest.as_ref()) {
            (Some(a), Some(b)) => Some(if a > b { a } else { b }),
            (a, b) => a.or(b),
        };
        match top {
            Some(top) if top > new && !self.opts.allow_downgrade => Err(Error::new(
                Class::Incompatible,
                format!("version {top} has been installed here, newer than this bundle's {new}: refusing a downgrade"),
            )
            .hint("pass --allow-downgrade to install an older version on purpose")),
            _ => Ok(()),
        }
    }

    fn bundle(&self) -> &Bundle {
        self.bundle.as_ref().expect("verified before use")
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

    fn hook(&self, stage: HookStage, env: &[(&str, &str)]) -> Result<()> {
        let b = self.bundle();
        for h in b.manifest.hooks.iter().filter(|h| h.stage == stage) {
            crate::fault::effect(&format!("hook:{}", stage.as_str()))?;
            crate::hooks::run(h, &self.layout.root, &self.sd, b.manifest.version.as_str(), env)?;
        }
        Ok(())
    }

    fn perform(&mut self, action: Action) -> Result<Event> {
        match action {
            Action::Verify => {
                self.bundle = Some(match self.preverified.take() {
                    Some(b) => b,
                    None => Bundle::open_verified(&self.opts.bundle, &Trust::Embedded)?,
                });
                Ok(Event::Verified)
            }
            Action::Detect => {
                let machine = crate::detect::this_machine();
                crate::detect::check(&machine, crate::detect::MACHINES, crate::detect::MIN_KERNEL).map_err(
                    |report| {
                        Error::new(Class::Incompatible, report)
                            .hint("a bundle runs only on the platform it was built for")
                    },
                )?;
                self.probe_login_server();
                let b = self.bundle();
                match installed_manifest(&self.layout)? {
                    Some(old) => {
                        let running_here = self.found.as_ref().is_some_and(|c| {
                            c.state == State::Running && c.root == self.layout.root.display().to_string()
                        });
                        // The same signed manifest, not just the same payload: the
                        // record in the root must be this bundle's.
                        if old == b.manifest {
                            if running_here {
                                return Ok(Event::SameInstallRunning);
                            }
                            // Resume past the switch, but only over a tree
                            // that still matches, byte for byte.
                            let problems = crate::extract::check_tree(&self.layout.root, &b.manifest);
                            if problems.is_empty() {
                                eprintln!(
                                    "  {} already holds this bundle, intact: resuming at CONFIGURING",
                                    self.layout.root.display()
                                );
                                // An interrupted upgrade left its previous tree: a failed
                                // validation still rolls back to it.
                                self.upgrading = self.layout.has_previous()?;
                                return Ok(Event::SameInstallPresent);
                            }
                            eprintln!(
                                "  {} holds this bundle with {} problem(s): installing it again",
                                self.layout.root.display(),
                                problems.len()
                            );
                        }
                        if old.target != b.manifest.target {
                            return Err(Error::new(
                                Class::Incompatible,
                                format!(
                                    "{} holds an install for {}, this bundle is for {}",
                                    self.layout.root.display(),
                                    old.target,
                                    b.manifest.target
                                ),
                            )
                            .hint("use the bundle built for the installed platform"));
                        }
                        self.check_downgrade(Some(&old.version))?;
                        self.upgrading = true;
                        Ok(Event::InstallFound)
                    }
                    None if fsx::is_missing_or_empty(&self.layout.root)? => {
                        self.check_downgrade(None)?;
                        Ok(Event::NoInstall)
                    }
                    None => Err(Error::new(
                        Class::Io,
                        format!("{} is not empty and holds no nxs install", self.layout.root.display()),
                    )
                    .hint("choose an empty or new directory for --root")),
                }
            }
            Action::InstallFresh | Action::InstallUpgrade => {
                eprintln!("  extracting into {}", self.layout.staging.display());
                let b = self.bundle.take().expect("verified before use");
                let resume = self.checkpoint.staging.clone();
                let (sd, checkpoint) = (&self.sd, &mut self.checkpoint);
                let mut created = |st: Staging| {
                    checkpoint.staging = Some(st);
                    sd.write_checkpoint(checkpoint)
                };
                let mut r = stage(&b, &self.layout, true, self.opts.progress, resume.as_ref(), &mut created);
                if let Err(e) = r {
                    // An I/O failure while staging: once more, in a fresh
                    // staging directory. A verification failure is final.
                    if e.class != Class::Io {
                        return Err(e);
                    }
                    eprintln!("  staging failed ({}); retrying once in a fresh staging directory", e.msg);
                    crate::events::retry("staging", 1, 1, std::time::Duration::ZERO, &e.msg);
                    r = stage(&b, &self.layout, true, self.opts.progress, None, &mut created);
                }
                self.bundle = Some(b);
                r?;
                commit(&self.layout)?;
                self.checkpoint.staging = None;
                eprintln!("  installed into {}", self.layout.root.display());
                Ok(Event::Staged)
            }
            Action::Configure => {
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
            Action::Validate => match self.hook(HookStage::Validate, &[]) {
                Ok(()) => match self.validate_join()? {
                    None => Ok(Event::Validated),
                    Some(e) => {
                        self.pending = Some(e);
                        Ok(Event::ValidatedDegraded)
                    }
                },
                Err(mut e) if e.class == Class::Degraded => {
                    if let Some(j) = self.validate_join()? {
                        e.msg.push_str(&format!("; and {}", j.msg));
                    }
                    self.pending = Some(e);
                    Ok(Event::ValidatedDegraded)
                }
                Err(e) => {
                    let upgrade = self.upgrading;
                    self.pending = Some(e);
                    Ok(Event::ValidationFailed { upgrade })
                }
            },
            Action::Rollback => {
                let failed =
                    self.bundle.as_ref().map(|b| b.manifest.payload.sha256).or_else(|| {
                        self.found.as_ref().and_then(|c| nxs_format::hex::decode_sha256(&c.payload_sha256))
                    });
                eprintln!("  rolling back {} to the previous install", self.layout.root.display());
                roll_back(&self.layout, failed.as_ref(), false)?;
                Ok(Event::RolledBack)
            }
            Action::Run => {
                let attempts = self.opts.max_start_attempts.max(1);
                for attempt in 1..=attempts {
                    match self.hook(HookStage::Run, &[]) {
                        Ok(()) => return Ok(Event::Started),
                        Err(e) if e.class == Class::HookFailed => {
                            eprintln!("  start attempt {attempt} of {attempts} failed: {}", e.msg);
                            self.pending = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Event::StartFailed)
            }
            Action::StartSafe => {
                eprintln!(
                    "  the service failed to start {} times: starting it in safe mode (NXS_SAFE_MODE=1)",
                    self.opts.max_start_attempts.max(1)
                );
                self.hook(HookStage::Run, &[("NXS_SAFE_MODE", "1")]).map(|_| Event::Started)
            }
            Action::Finish
            | Action::Abort
            | Action::ReportRolledBack
            | Action::ReportSafeMode
            | Action::ReportDegraded => {
                unreachable!("terminal actions are handled by the loop")
            }
        }
    }
}

/// The tailnet join: CONFIGURING starts the client and joins, VALIDATING
/// checks the node. A join that cannot happen yet never fails the install:
/// it leaves it DEGRADED with the join pending, for a later run.
impl Run<'_> {
    fn client(&self) -> Option<(nxs_format::Headscale, nxs_format::TailscaleClient)> {
        let hs = self.bundle.as_ref()?.manifest.headscale.clone()?;
        let client = hs.client.clone()?;
        Some((hs, client))
    }

    fn probe_login_server(&mut self) {
        let Some((hs, _)) = self.client() else { return };
        let r = crate::tailnet::probe(&hs.login_server, self.opts.probe_timeout);
        match &r {
            Ok(()) => eprintln!("  login server {}: reachable", hs.login_server),
            Err(why) => eprintln!("  login server {}: not reachable ({why}); the join will wait", hs.login_server),
        }
        self.reachable = Some(r);
    }

    fn join_record(&self) -> nxs_format::checkpoint::Join {
        self.checkpoint.join.clone().unwrap_or(nxs_format::checkpoint::Join {
            joined: false,
            attempts: 0,
            reason: None,
        })
    }

    fn set_join(&mut self, j: nxs_format::checkpoint::Join) -> Result<()> {
        self.checkpoint.join = Some(j);
        self.save_quiet()
    }

    fn join(&mut self) -> Result<()> {
        use crate::tailnet::{self, JoinFailure, Paths};
        let Some((hs, client)) = self.client() else { return Ok(()) };
        let p = Paths::new(&self.sd)?;
        let mut j = self.join_record();
        if let Some(k) = self.key.take() {
            tailnet::stash_key(&p, &k)?;
            eprintln!("  auth key kept in {} (0600) until the join succeeds", p.key.display());
        } else if !p.key_present()? && !j.joined && matches!(self.reachable, Some(Ok(()))) {
            if let Some(k) = tailnet::prompt_key()? {
                tailnet::stash_key(&p, &k)?;
            }
        }
        crate::fault::effect("tailnet-daemon")?;
        if let Err(e) = tailnet::ensure_daemon(&p, &hs, &client, &self.layout.root) {
            eprintln!("  tailscaled: {}", e.msg);
            j.reason = Some(format!("tailscaled is not running: {}", e.msg));
            return self.set_join(j);
        }
        // A run killed after `tailscale up` succeeded, but before it could
        // say so, left the daemon logged in (it keeps its state): ask it
        // before spending the key again.
        // A node logged in to another login server is not joined: `up`
        // must re-authenticate it to ours.
        // A join recorded by an earlier run counts only while the daemon
        // still runs on our server: one that lost its state, or moved, joins
        // again, with the key given now.
        let mut elsewhere = false;
        if let Ok(s) = tailnet::settled_status(&p, &client, &self.layout.root) {
            if s.backend_state == "Running" {
                match tailnet::control_url(&p, &client, &self.layout.root) {
                    Ok(url) if tailnet::same_server(&url, &hs.login_server) => {
                        if !j.joined {
                            eprintln!("  tailscaled is already logged in: the join went through in an earlier run");
                        }
                        // VALIDATING drops a key left behind: spent by that
                        // join, or given for nothing.
                        self.joined_now = true;
                        j.reason = None;
                        return self.set_join(j);
                    }
                    Ok(url) => {
                        eprintln!("  tailscaled is logged in to {url}, not to {}: joining again", hs.login_server);
                        elsewhere = true;
                    }
                    Err(why) => eprintln!("  tailscaled's login server is unknown ({why}): joining again"),
                }
            }
        }
        if j.joined {
            eprintln!("  the node was joined, but tailscaled is not running on {}: joining again", hs.login_server);
            j.joined = false;
        }
        if !p.key_present()? {
            j.reason = Some(format!(
                "no auth key was given; pass --authkey-file FILE, set {}, or --authkey-age FILE",
                tailnet::KEY_FILE_ENV
            ));
            return self.set_join(j);
        }
        let attempts = self.opts.join_attempts.max(1);
        let mut delay = std::time::Duration::from_secs(1);
        for attempt in 1..=attempts {
            if attempt > 1 {
                eprintln!("  join attempt {attempt} of {attempts} in {} s", delay.as_secs());
                std::thread::sleep(delay);
                delay *= 2;
                self.reachable = None;
            }
            if self.reachable.is_none() {
                self.probe_login_server();
            }
            if let Some(Err(why)) = &self.reachable {
                j.reason = Some(JoinFailure::Unreachable(why.clone()).reason());
                continue;
            }
            j.attempts = j.attempts.saturating_add(1);
            crate::fault::effect("tailnet-up")?;
            eprintln!("  joining {} as {}", hs.login_server, tailnet::hostname(&hs.hostname));
            let failure = match tailnet::up(&p, &hs, &client, &self.layout.root, self.opts.up_timeout, elsewhere)? {
                Ok(()) => {
                    self.joined_now = true;
                    j.reason = None;
                    return self.set_join(j);
                }
                // `up` only says it waited: the client's health knows why.
                Err(JoinFailure::Timeout(said)) => match tailnet::status(&p, &client, &self.layout.root) {
                    Ok(st) => match st.last_login_error() {
                        Some(m) => tailnet::classify_server(m),
                        None if st.health.is_empty() => JoinFailure::Timeout(said),
                        None => JoinFailure::Timeout(format!("{said}; health: {}", st.health.join("; "))),
                    },
                    Err(_) => JoinFailure::Timeout(said),
                },
                Err(f) => f,
            };
            match failure {
                f @ JoinFailure::KeyRejected(_) => {
                    // The same key will not work again: drop it and say how
                    // to make another.
                    tailnet::forget_key(&p)?;
                    j.reason = Some(format!("{}; {}", f.reason(), new_key_hint(&hs.tags)));
                    return self.set_join(j);
                }
                f @ (JoinFailure::Refused(_) | JoinFailure::VersionWindow(_)) => {
                    // The operator must act; the key was not spent.
                    eprintln!("  {}", f.reason());
                    j.reason = Some(f.reason());
                    return self.set_join(j);
                }
                f => {
                    eprintln!("  {}", f.reason());
                    j.reason = Some(f.reason());
                    self.reachable = None;
                }
            }
        }
        self.set_join(j)
    }

    /// `None` if the node is on the tailnet (or the bundle has no client);
    /// else the DEGRADED error that says why the join is pending.
    fn validate_join(&mut self) -> Result<Option<Error>> {
        use crate::tailnet::{self, Paths};
        let Some((hs, client)) = self.client() else { return Ok(None) };
        let p = Paths::new(&self.sd)?;
        let mut j = self.join_record();
        if self.joined_now || j.joined {
            // Running and online, and on our login server: a node on
            // another one is not joined to ours.
            let server = |s: &tailnet::NodeStatus| match s.backend_state == "Running" && s.online {
                true => Some(tailnet::control_url(&p, &client, &self.layout.root)),
                false => None,
            };
            match tailnet::settled_status(&p, &client, &self.layout.root) {
                Ok(s) => match server(&s) {
                    Some(Ok(url)) if tailnet::same_server(&url, &hs.login_server) => {
                        eprintln!(
                            "  tailnet: joined {} as {} (BackendState Running, online; tailscale {})",
                            hs.login_server,
                            if s.ips.is_empty() { "(no address yet)".to_string() } else { s.ips.join(", ") },
                            s.version
                        );
                        // Registered: the key is spent, whatever the relay says.
                        j.joined = true;
                        j.reason = None;
                        let relay = tailnet::relay_check(&p, &hs, &client, &self.layout.root);
                        if let Err(why) = &relay {
                            j.reason = Some(why.clone());
                        }
                        self.set_join(j)?;
                        crate::fault::effect("tailnet-forget-key")?;
                        tailnet::forget_key(&p)?;
                        return Ok(relay.err().map(|why| {
                            Error::new(Class::Degraded, format!("installed and on the tailnet, but {why}")).hint(
                                "peers are reachable only directly; an air-gapped Headscale must serve its embedded DERP relay (derp.server.enabled: true, with an https server_url and a stun_listen_addr; see docs/HEADSCALE.md). Run install again once it does: it checks the relay again without extracting",
                            )
                        }));
                    }
                    Some(Ok(url)) => {
                        j.joined = false;
                        j.reason = Some(format!("the node runs on the login server {url}, not on {}", hs.login_server))
                    }
                    Some(Err(why)) => {
                        j.joined = false;
                        j.reason = Some(format!("the node's login server is unknown: {why}"))
                    }
                    None => {
                        j.joined = false;
                        j.reason = Some(format!(
                            "tailscale status says BackendState {}, {}",
                            if s.backend_state.is_empty() { "(none)" } else { &s.backend_state },
                            if s.online { "online" } else { "offline" }
                        ))
                    }
                },
                Err(why) => {
                    j.joined = false;
                    j.reason = Some(why)
                }
            }
        }
        let reason = j.reason.clone().unwrap_or_else(|| "the join has not happened yet".into());
        self.set_join(j)?;
        Ok(Some(
            Error::new(Class::Degraded, format!("installed, but the tailnet join is pending: {reason}")).hint(
                "the instance works locally; run install again when the login server is reachable and you have a key: it resumes the join without extracting again",
            ),
        ))
    }
}

/// How to make a key Headscale 0.26 to 0.29 accepts for this bundle: tagged
/// (the tags travel with the key, never with `up`), single-use, not
/// ephemeral, with an expiry that fits the deployment window. `--user`
/// takes a numeric ID since 0.26 and is optional since 0.28.
fn new_key_hint(tags: &[String]) -> String {
    let tags = if tags.is_empty() { "tag:nxs".to_string() } else { tags.join(",") };
    format!(
        "make a new key on the Headscale server (headscale preauthkeys create --tags {tags} --expiration 24h; on Headscale 0.26 or 0.27 add --user ID, the user's numeric ID; not --reusable, not --ephemeral) and run install again with --authkey-file FILE"
    )
}

/// Remembers the installed version if it is the highest so far.
fn record_highest(run: &Run) -> Result<()> {
    if let Some(b) = &run.bundle {
        let v = &b.manifest.version;
        if run.sd.highest()?.is_none_or(|h| v > &h) {
            run.sd.set_highest(v)?;
        }
    }
    Ok(())
}

/// Runs the install state machine to its end.
pub fn install(opts: &InstallOptions) -> Result<Outcome> {
    // Verify before the first byte is written anywhere, state dir included:
    // a bundle that fails here leaves the machine exactly as it was.
    eprintln!("  verifying {}", opts.bundle.display());
    let preverified = Bundle::open_verified(&opts.bundle, &Trust::Embedded)?;
    // A key given but unreadable (or a wrong passphrase) is refused before
    // anything is written.
    let key = match preverified.manifest.headscale.as_ref().and_then(|h| h.client.as_ref()) {
        Some(_) => opts.key.read()?,
        None => {
            if opts.key.given() {
                eprintln!("  note: this bundle carries no Tailscale client; the auth key is not used");
            }
            None
        }
    };
    // --restore-from needs the bundle's nxs-backup: refused now (exit 4),
    // not after extracting.
    if opts.restore.is_some() {
        crate::tool::expected(&preverified.manifest)?;
    }
    let layout = Layout::new(&opts.root)?;
    // Links, foreign owners and special files are refused before anything
    // is written or locked.
    layout.check_if_present()?;
    crate::preflight::check(&preverified.manifest, &layout.root)?;
    // A bundle whose payload fails verification (format 3 finds out while
    // staging) leaves nothing behind: a state directory this run made goes
    // again, and one that was there gets back the checkpoint it had.
    let made_state_dir = crate::door::lstat_path(&opts.state_dir).is_none();
    let sd = StateDir::open(&opts.state_dir)?;
    let _lock = sd.lock()?;
    let found_bytes = sd.checkpoint_bytes()?;
    let previous = match sd.read_checkpoint()? {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            // A damaged checkpoint is not fatal: everything is verified again.
            eprintln!("  note: {e}; starting again from VERIFYING");
            None
        }
        None => None,
    };
    if let Some(c) = &previous {
        let n = failed_runs(c);
        if n >= MAX_FAILED_RUNS && c.bundle_id == preverified.manifest.bundle_id() && !opts.retry_failed {
            return Err(Error::new(
                Class::GaveUp,
                format!("{} failed {n} runs in a row, the last at: {}", c.bundle_id, c.last_error.as_deref().unwrap_or("unknown")),
            )
            .hint("see the diagnostic dumps in the state directory's diag/; fix the cause, then run install with --retry-failed"));
        }
    }
    let found = previous.clone();
    let checkpoint = previous.unwrap_or_else(|| Checkpoint {
        bundle_id: String::new(),
        version: String::new(),
        payload_sha256: String::new(),
        root: layout.root.display().to_string(),
        state: State::Start,
        history: Vec::new(),
        last_error: None,
        join: None,
        staging: None,
    });
    let mut run = Run {
        opts,
        sd,
        layout,
        checkpoint,
        bundle: None,
        preverified: Some(preverified),
        found,
        upgrading: false,
        pending: None,
        key,
        reachable: None,
        joined_now: false,
        lock_fd: _lock.fd(),
    };
    // A checkpoint found here may name another root; from now on it is this one.
    run.checkpoint.root = run.layout.root.display().to_string();
    let mut state = State::Start;
    let mut event = match &run.found {
        Some(c) if c.state == State::RollingBack => Event::ResumeRollback,
        _ => Event::Begin,
    };
    if event == Event::Begin {
        repair(&run.layout, &run.preverified.as_ref().expect("verified above").manifest.payload.sha256)?;
    }
    loop {
        let tr = step(state, &event);
        match tr.action {
            Action::ReportDegraded => {
                let mut e = run.pending.take().unwrap_or_else(|| Error::new(Class::Degraded, "degraded"));
                run.save(tr.next, Some(&e))?;
                record_highest(&run)?;
                // A dump, for whoever looks later; no shell: the install works.
                if let Ok(path) = crate::diag::dump(&run.sd, &run.layout.root, &e) {
                    e.msg.push_str(&format!("\n  diagnostic dump: {}", path.display()));
                }
                return Err(e);
            }
            Action::ReportSafeMode => {
                let cause = run.pending.take().map(|e| e.msg).unwrap_or_default();
                let e = Error::new(
                    Class::SafeMode,
                    format!("the service would not start ({cause}); it runs in safe mode, with its minimal config"),
                )
                .hint(
                    "look at the run hook's log in the state directory's logs/, fix the cause, then run install again",
                );
                run.save(tr.next, Some(&e))?;
                return Err(run.after_failure(e));
            }
            Action::ReportRolledBack => {
                let cause = run.pending.take().map(|e| e.msg).unwrap_or_else(|| "an interrupted rollback".into());
                let e = Error::new(
                    Class::RolledBack,
                    format!(
                        "the new version failed ({cause}); the previous install is back in {}",
                        run.layout.root.display()
                    ),
                )
                .hint("the previous version runs as before; fix the cause, then install again");
                run.save(tr.next, Some(&e))?;
                return Err(run.after_failure(e));
            }
            Action::Finish => {
                run.checkpoint.last_error = None;
                record_highest(&run)?;
                if tr.next != state {
                    run.save(tr.next, None)?;
                } else {
                    run.save_quiet()?;
                }
                return Ok(Outcome { state: tr.next, already: event == Event::SameInstallRunning });
            }
            // A failure the machine decided on (a failed validation of a
            // fresh install): the error is the one that caused it.
            Action::Abort => {
                let e = run
                    .pending
                    .take()
                    .unwrap_or_else(|| Error::new(Class::Io, format!("unexpected event {event:?} in state {state}")));
                run.save(tr.next, Some(&e))?;
                return Err(run.after_failure(e));
            }
            _ => {}
        }
        if tr.next != state {
            run.save(tr.next, None)?;
        }
        state = tr.next;
        event = match run.perform(tr.action) {
            Ok(ev) => ev,
            Err(e)
                if e.class == Class::Verify && matches!(tr.action, Action::InstallFresh | Action::InstallUpgrade) =>
            {
                // Staging is gone already (`stage`); so goes every trace.
                let undo = match made_state_dir {
                    true => fsx::remove_tree(run.sd.path()),
                    false => run.sd.restore_checkpoint(found_bytes.as_deref()),
                };
                if let Err(u) = undo {
                    eprintln!("  note: could not undo the run's checkpoint: {}", u.msg);
                }
                return Err(e);
            }
            Err(e) => {
                let _ = run.save(step(state, &Event::Failed).next, Some(&e));
                return Err(run.after_failure(e));
            }
        };
    }
}

/// `rollback`: swaps the previous install back into the root recorded in
/// the checkpoint, keeping the current one as `previous`.
pub fn rollback_command(state_dir: &Path) -> Result<()> {
    let sd = StateDir::open_existing(state_dir)?.ok_or_else(|| {
        Error::new(Class::Io, format!("no install recorded in {}", state_dir.display()))
            .hint("pass the --state-dir the install used")
    })?;
    let _lock = sd.lock()?;
    let mut cp = match sd.read_checkpoint()? {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(Error::new(Class::Io, format!("{}: {e}", sd.join(CHECKPOINT_FILE).display()))),
        None => {
            return Err(Error::new(Class::Io, format!("no install recorded in {}", state_dir.display()))
                .hint("pass the --state-dir the install used"))
        }
    };
    let layout = Layout::new(Path::new(&cp.root))?;
    let from = installed_manifest(&layout)?.map(|m| m.version.to_string()).unwrap_or_default();
    roll_back(&layout, None, true)?;
    let now_in = installed_manifest(&layout)?
        .ok_or_else(|| Error::new(Class::Io, "the rolled-back root has no install record"))?;
    cp.bundle_id = now_in.bundle_id();
    cp.version = now_in.version.to_string();
    cp.payload_sha256 = hex::encode(&now_in.payload.sha256);
    cp.state = State::Running;
    cp.last_error = None;
    cp.history.push(HistoryRecord { at: crate::unix_now(), state: State::RollingBack });
    cp.history.push(HistoryRecord { at: crate::unix_now(), state: State::Running });
    sd.write_checkpoint(&cp)?;
    println!("rolled back {} from version {from} to {}", layout.root.display(), now_in.version);
    Ok(())
}

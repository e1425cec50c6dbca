//! The effects layer of the bootstrap machine: locking, checkpoints,
//! staging, the atomic switch into the root, and hooks.
//!
//! Architecture invariant: the stub writes only inside the root, the root's
//! staging siblings (`.<root-name>.nxs-staging`, `.<root-name>.nxs-previous`)
//! and the state directory.

use crate::bundle::{Bundle, Trust};
use crate::error::{Class, Error, Result};
use crate::extract::{self, Progress, Sink};
use crate::fsx;
use crate::machine::{step, Action, Event, State};
use nxs_format::checkpoint::{Checkpoint, HistoryRecord};
use nxs_format::{hex, HookStage, Manifest, RECORD_DIR};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "bootstrap.state";
pub const LOCK_FILE: &str = "lock";

/// The state directory: `--state-dir`, else `$NXS_HOME`, else `~/.nxs`.
pub fn state_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return fsx::absolute(&d);
    }
    if let Some(h) = std::env::var_os("NXS_HOME").filter(|h| !h.is_empty()) {
        return fsx::absolute(Path::new(&h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".nxs")),
        None => Err(Error::usage("no state directory: set NXS_HOME or HOME, or pass --state-dir DIR")),
    }
}

/// An exclusive lock on the state directory, held until dropped. The kernel
/// releases it when the holder dies, even by SIGKILL.
pub struct Lock {
    _file: File,
}

pub fn lock(state_dir: &Path) -> Result<Lock> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| Error::io("cannot create the state directory", state_dir, e))?;
    let path = state_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("cannot open the lock", &path, e))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Lock { _file: file })
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() { "another process".to_string() } else { format!("process {pid}") };
            Err(Error::new(Class::Locked, format!("{} is locked by {holder}", path.display()))
                .hint("another install is running; wait for it to finish, or stop it"))
        }
        Err(fs::TryLockError::Error(e)) => Err(Error::io("cannot lock", &path, e)),
    }
}

pub fn read_checkpoint(
    state_dir: &Path,
) -> Result<Option<std::result::Result<Checkpoint, nxs_format::checkpoint::CheckpointError>>> {
    let path = state_dir.join(CHECKPOINT_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(Checkpoint::parse(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read the checkpoint", &path, e)),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Paths next to the root, on the same filesystem, so that the switch into
/// place is a rename.
pub struct Layout {
    pub root: PathBuf,
    pub staging: PathBuf,
    pub previous: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Result<Layout> {
        let root = fsx::absolute(root)?;
        let name = root
            .file_name()
            .ok_or_else(|| Error::usage(format!("{} cannot be an install root", root.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = fsx::parent(&root).to_path_buf();
        Ok(Layout {
            staging: parent.join(format!(".{name}.nxs-staging")),
            previous: parent.join(format!(".{name}.nxs-previous")),
            root,
        })
    }

    fn parent(&self) -> &Path {
        fsx::parent(&self.root)
    }
}

/// Extracts the verified bundle into a fresh staging directory, with the
/// install record, ready to be switched in.
pub fn stage(b: &Bundle, layout: &Layout, record: bool, progress: bool) -> Result<()> {
    let parent = layout.parent();
    fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    // A staging directory left by an interrupted run is ours; start afresh.
    crate::fault::effect("stage")?;
    fsx::remove_tree(&layout.staging)?;
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&layout.staging)
        .map_err(|e| Error::io("cannot create the staging directory", &layout.staging, e))?;
    let mut p = Progress::new(progress, b.manifest.files_total());
    if let Err(e) = extract::run(b, &Sink::Dir(&layout.staging), &mut p) {
        let _ = fsx::remove_tree(&layout.staging);
        return Err(e);
    }
    if record {
        let dir = layout.staging.join(RECORD_DIR);
        fs::DirBuilder::new().mode(0o755).create(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        fsx::write_atomic(&dir.join("manifest"), &b.manifest_bytes, 0o644)?;
        fsx::write_atomic(&dir.join("manifest.minisig"), b.signature.as_bytes(), 0o644)?;
    }
    fsx::fsync_dir(&layout.staging)
}

/// Switches the staged tree into the root. An existing install is moved to
/// `previous` first; the parent directory is fsynced after the renames.
pub fn commit(layout: &Layout) -> Result<()> {
    let parent = layout.parent();
    crate::fault::effect("commit")?;
    match fs::symlink_metadata(&layout.root) {
        Ok(m) if m.is_dir() && fsx::is_missing_or_empty(&layout.root)? => {
            fs::remove_dir(&layout.root).map_err(|e| Error::io("cannot replace the empty root", &layout.root, e))?
        }
        Ok(m) if m.is_dir() => {
            fsx::remove_tree(&layout.previous)?;
            fs::rename(&layout.root, &layout.previous)
                .map_err(|e| Error::io("cannot move the previous install aside to", &layout.previous, e))?;
        }
        Ok(_) => {
            return Err(Error::new(Class::Io, format!("{} exists and is not a directory", layout.root.display()))
                .hint("choose another --root"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot inspect", &layout.root, e)),
    }
    fs::rename(&layout.staging, &layout.root)
        .map_err(|e| Error::io("cannot move the staged install into", &layout.root, e))?;
    fsx::fsync_dir(parent)
}

/// The install record in a root, if any: the manifest it was installed from.
pub fn installed_manifest(root: &Path) -> Result<Option<Manifest>> {
    let p = root.join(RECORD_DIR).join("manifest");
    match fs::read(&p) {
        Ok(bytes) => Manifest::parse(&bytes)
            .map(Some)
            .map_err(|e| Error::new(Class::Io, format!("{}: damaged install record: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read the install record", &p, e)),
    }
}

pub struct InstallOptions {
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub allow_downgrade: bool,
    pub progress: bool,
}

/// The outcome of an install run.
pub struct Outcome {
    pub state: State,
    pub already: bool,
}

struct Run<'a> {
    opts: &'a InstallOptions,
    layout: Layout,
    checkpoint: Checkpoint,
    bundle: Option<Bundle>,
    /// Verified before the run took the lock or wrote anything.
    preverified: Option<Bundle>,
    /// The checkpoint as this run found it.
    found: Option<Checkpoint>,
}

impl Run<'_> {
    fn save(&mut self, state: State, error: Option<&Error>) -> Result<()> {
        self.checkpoint.state = state;
        self.checkpoint.history.push(HistoryRecord { at: now(), state });
        if let Some(e) = error {
            self.checkpoint.last_error = Some(e.msg.clone());
        }
        if let Some(b) = &self.bundle {
            self.checkpoint.bundle_id = b.manifest.bundle_id();
            self.checkpoint.version = b.manifest.version.to_string();
            self.checkpoint.payload_sha256 = hex::encode(&b.manifest.payload.sha256);
        }
        fsx::write_atomic(&self.opts.state_dir.join(CHECKPOINT_FILE), self.checkpoint.to_text().as_bytes(), 0o600)
    }

    /// Rewrites the checkpoint without a new history record.
    fn save_quiet(&mut self) -> Result<()> {
        fsx::write_atomic(&self.opts.state_dir.join(CHECKPOINT_FILE), self.checkpoint.to_text().as_bytes(), 0o600)
    }

    fn bundle(&self) -> &Bundle {
        self.bundle.as_ref().expect("verified before use")
    }

    fn hook(&self, stage: HookStage) -> Result<()> {
        let b = self.bundle();
        for h in b.manifest.hooks.iter().filter(|h| h.stage == stage) {
            crate::fault::effect(&format!("hook:{}", stage.as_str()))?;
            crate::hooks::run(h, &self.layout.root, &self.opts.state_dir, b.manifest.version.as_str())?;
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
                let b = self.bundle();
                let machine = crate::detect::this_machine();
                crate::detect::check(&machine, crate::detect::MACHINES, crate::detect::MIN_KERNEL).map_err(
                    |report| {
                        Error::new(Class::Incompatible, report)
                            .hint("a bundle runs only on the platform it was built for")
                    },
                )?;
                match installed_manifest(&self.layout.root)? {
                    Some(old) => {
                        let running_here = self.found.as_ref().is_some_and(|c| {
                            c.state == State::Running && c.root == self.layout.root.display().to_string()
                        });
                        if old.payload.sha256 == b.manifest.payload.sha256 && running_here {
                            return Ok(Event::SameInstallRunning);
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
                        if old.version > b.manifest.version && !self.opts.allow_downgrade {
                            return Err(Error::new(
                                Class::Incompatible,
                                format!(
                                    "{} holds version {}, newer than this bundle's {}: refusing a downgrade",
                                    self.layout.root.display(),
                                    old.version,
                                    b.manifest.version
                                ),
                            )
                            .hint("pass --allow-downgrade to install an older version on purpose"));
                        }
                        Ok(Event::InstallFound)
                    }
                    None if fsx::is_missing_or_empty(&self.layout.root)? => Ok(Event::NoInstall),
                    None => Err(Error::new(
                        Class::Io,
                        format!("{} is not empty and holds no nxs install", self.layout.root.display()),
                    )
                    .hint("choose an empty or new directory for --root")),
                }
            }
            Action::InstallFresh | Action::InstallUpgrade => {
                eprintln!("  extracting into {}", self.layout.staging.display());
                stage(self.bundle(), &self.layout, true, self.opts.progress)?;
                commit(&self.layout)?;
                eprintln!("  installed into {}", self.layout.root.display());
                Ok(Event::Staged)
            }
            Action::Configure => self.hook(HookStage::Configure).map(|_| Event::Configured),
            Action::Validate => self.hook(HookStage::Validate).map(|_| Event::Validated),
            Action::Run => self.hook(HookStage::Run).map(|_| Event::Started),
            Action::Finish | Action::Abort => {
                unreachable!("terminal actions are handled by the loop")
            }
        }
    }
}

/// Runs the install state machine to its end.
pub fn install(opts: &InstallOptions) -> Result<Outcome> {
    // Verify before the first byte is written anywhere, state dir included:
    // a bundle that fails here leaves the machine exactly as it was.
    eprintln!("  verifying {}", opts.bundle.display());
    let preverified = Bundle::open_verified(&opts.bundle, &Trust::Embedded)?;
    let _lock = lock(&opts.state_dir)?;
    let layout = Layout::new(&opts.root)?;
    let previous = match read_checkpoint(&opts.state_dir)? {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            // A damaged checkpoint is not fatal: everything is verified again.
            eprintln!("  note: {e}; starting again from VERIFYING");
            None
        }
        None => None,
    };
    let found = previous.clone();
    let checkpoint = previous.unwrap_or_else(|| Checkpoint {
        bundle_id: String::new(),
        version: String::new(),
        payload_sha256: String::new(),
        root: layout.root.display().to_string(),
        state: State::Start,
        history: Vec::new(),
        last_error: None,
    });
    let mut run = Run { opts, layout, checkpoint, bundle: None, preverified: Some(preverified), found };
    let mut state = State::Start;
    let mut event = Event::Begin;
    loop {
        let tr = step(state, &event);
        match tr.action {
            Action::Finish => {
                run.checkpoint.last_error = None;
                if tr.next != state {
                    run.save(tr.next, None)?;
                } else {
                    run.save_quiet()?;
                }
                return Ok(Outcome { state: tr.next, already: event == Event::SameInstallRunning });
            }
            Action::Abort => unreachable!("failures return through the error path"),
            _ => {}
        }
        if tr.next != state || state == State::Start {
            run.checkpoint.root = run.layout.root.display().to_string();
            run.save(tr.next, None)?;
        }
        state = tr.next;
        event = match run.perform(tr.action) {
            Ok(ev) => ev,
            Err(e) => {
                let _ = run.save(step(state, &Event::Failed).next, Some(&e));
                return Err(e);
            }
        };
    }
}

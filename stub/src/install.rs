//! `install`: what comes before the run loop, and `rollback`. Before the
//! first byte is written anywhere, the bundle is verified, the key read,
//! the target checked and the state directory opened and locked; then
//! [`crate::run::Run`] drives the machine.
//!
//! Architecture invariant: the stub writes only inside the root, the root's
//! staging siblings (`.<root-name>.nxs-staging`, `.<root-name>.nxs-previous`)
//! and the state directory.

use crate::bundle::{Bundle, Trust};
use crate::error::{Class, Error, Result};
use crate::machine::State;
use crate::root::{installed_manifest, roll_back, Layout};
use crate::run::{Run, Undo};
use crate::statedir::StateDir;
use nxs_format::checkpoint::HistoryRecord;
use nxs_format::{hex, Manifest};
use std::path::Path;

pub const CHECKPOINT_FILE: &str = nxs_format::state::CHECKPOINT;

pub use crate::run::{InstallOptions, Outcome, RestoreFrom};

/// Runs the install state machine to its end.
pub fn install(opts: &InstallOptions) -> Result<Outcome> {
    // Verify before the first byte is written anywhere, state dir included:
    // a bundle that fails here leaves the machine exactly as it was.
    eprintln!("  verifying {}", opts.bundle.display());
    let mut preverified = Bundle::open_verified(&opts.bundle, &Trust::Embedded)?;
    preverified.choose_tier(opts.tier.as_deref())?;
    if preverified.manifest.tiers.is_some() {
        eprintln!("  tier {}", preverified.selection.tier);
    }
    let key = read_key(opts, &preverified.manifest)?;
    // --restore-from needs the bundle's nxs-backup: refused now (exit 4),
    // not after extracting.
    if opts.restore.is_some() {
        crate::tool::expected(&preverified.manifest)?;
    }
    let layout = Layout::new(&opts.root)?;
    // Links, foreign owners and special files are refused before anything
    // is written or locked.
    layout.check_if_present()?;
    crate::preflight::check(&preverified.view, &layout.root)?;
    // A bundle whose payload fails verification (format 3 finds out while
    // staging) leaves nothing behind: a state directory this run made goes
    // again, and one that was there gets back the checkpoint it had.
    let made_state_dir = crate::door::lstat_path(&opts.state_dir).is_none();
    let sd = StateDir::open(&opts.state_dir)?;
    let lock = sd.lock()?;
    let undo = Undo { made_state_dir, found_bytes: sd.checkpoint_bytes()? };
    let found = match sd.read_checkpoint()? {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            // A damaged checkpoint is not fatal: everything is verified again.
            eprintln!("  note: {e}; starting again from VERIFYING");
            None
        }
        None => None,
    };
    if let Some(c) = &found {
        crate::policy::give_up(c, &preverified.view.bundle_id(), opts.retry_failed)?;
    }
    Run::new(opts, sd, layout, found, preverified, key, lock.fd()).drive(undo)
}

/// The auth key, if the bundle carries a client to use it. A key given but
/// unreadable (or a wrong passphrase) is refused before anything is
/// written.
fn read_key(opts: &InstallOptions, m: &Manifest) -> Result<Option<crate::secret::Secret>> {
    match m.headscale.as_ref().and_then(|h| h.client.as_ref()) {
        Some(_) => opts.key.read(),
        None => {
            if opts.key.given() {
                eprintln!("  note: this bundle carries no Tailscale client; the auth key is not used");
            }
            Ok(None)
        }
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
    let from = installed_manifest(&layout)?.map(|r| r.manifest.version.to_string()).unwrap_or_default();
    roll_back(&layout, None, true)?;
    let now_in = installed_manifest(&layout)?
        .ok_or_else(|| Error::new(Class::Io, "the rolled-back root has no install record"))?
        .manifest;
    cp.bundle_id = now_in.bundle_id();
    cp.version = now_in.version.to_string();
    cp.payload_sha256 = hex::encode(&crate::bundle::payload_id(&now_in));
    cp.state = State::Running;
    cp.last_error = None;
    cp.history.push(HistoryRecord { at: crate::unix_now(), state: State::RollingBack });
    cp.history.push(HistoryRecord { at: crate::unix_now(), state: State::Running });
    sd.write_checkpoint(&cp)?;
    println!("rolled back {} from version {from} to {}", layout.root.display(), now_in.version);
    Ok(())
}

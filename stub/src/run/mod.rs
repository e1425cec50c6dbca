//! The run loop: the effects layer of the bootstrap machine. It feeds the
//! pure [`crate::machine`] the events it observes, carries out each action
//! the machine asks for, keeps the checkpoint, and reports how the run
//! ended. The decisions are [`crate::policy`]'s and [`crate::join`]'s; the
//! root switch is [`crate::root`]'s.
//!
//! - `mod.rs`: the loop, the checkpoint, and the terminal reports;
//! - `actions.rs`: VERIFYING, DETECTING, staging, VALIDATING, the start
//!   attempts and the rollback;
//! - `configure.rs`: CONFIGURING's restore from a backup and its hooks;
//! - `join.rs`: the tailnet join's effects, driven by [`crate::join`].

mod actions;
mod configure;
mod join;

use crate::bundle::Bundle;
use crate::error::{Class, Error, Result};
use crate::machine::{step, Action, Event, State, Transition};
use crate::root::Layout;
use crate::statedir::StateDir;
use nxs_format::checkpoint::{Checkpoint, HistoryRecord};
use nxs_format::{hex, HookStage};
use std::path::PathBuf;

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
    /// Of a multi-tier bundle, the tier to install (else its default).
    pub tier: Option<String>,
    pub state_dir: PathBuf,
    pub allow_downgrade: bool,
    /// Install a bundle whose root chain ends below the highest root
    /// accepted here ([`crate::policy::root_rollback`]).
    pub allow_root_rollback: bool,
    pub progress: bool,
    /// Start attempts before safe mode.
    pub max_start_attempts: u32,
    /// Try again even after [`crate::policy::MAX_FAILED_RUNS`] failed runs in a row.
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

pub struct Run<'a> {
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

/// What a run that must leave nothing behind puts back: the state
/// directory it made goes again, one that was there gets back the
/// checkpoint it had (its bytes as they were).
pub struct Undo {
    pub made_state_dir: bool,
    pub found_bytes: Option<Vec<u8>>,
}

impl<'a> Run<'a> {
    pub fn new(
        opts: &'a InstallOptions,
        sd: StateDir,
        layout: Layout,
        found: Option<Checkpoint>,
        preverified: Bundle,
        key: Option<crate::secret::Secret>,
        lock_fd: i32,
    ) -> Run<'a> {
        let mut checkpoint = found.clone().unwrap_or_else(|| Checkpoint {
            bundle_id: String::new(),
            version: String::new(),
            payload_sha256: String::new(),
            root: String::new(),
            state: State::Start,
            history: Vec::new(),
            last_error: None,
            join: None,
            staging: None,
        });
        // A checkpoint found here may name another root; from now on it is this one.
        checkpoint.root = layout.root.display().to_string();
        Run {
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
            lock_fd,
        }
    }

    /// Runs the machine from START to its end.
    pub fn drive(mut self, undo: Undo) -> Result<Outcome> {
        let mut state = State::Start;
        let mut event = match &self.found {
            Some(c) if c.state == State::RollingBack => Event::ResumeRollback,
            _ => Event::Begin,
        };
        if event == Event::Begin {
            let payload =
                crate::bundle::payload_id(&self.preverified.as_ref().expect("verified before the run").manifest);
            crate::root::repair(&self.layout, &payload)?;
        }
        loop {
            let tr = step(state, &event);
            if let Some(outcome) = self.terminal(tr, state, &event)? {
                return Ok(outcome);
            }
            if tr.next != state {
                self.save(tr.next, None)?;
            }
            state = tr.next;
            event = match self.perform(tr.action) {
                Ok(ev) => ev,
                Err(e)
                    if e.class == Class::Verify
                        && matches!(tr.action, Action::InstallFresh | Action::InstallUpgrade) =>
                {
                    // Staging is gone already (`root::stage`); so goes every trace.
                    let undone = match undo.made_state_dir {
                        true => crate::fsx::remove_tree(self.sd.path()),
                        false => self.sd.restore_checkpoint(undo.found_bytes.as_deref()),
                    };
                    if let Err(u) = undone {
                        eprintln!("  note: could not undo the run's checkpoint: {}", u.msg);
                    }
                    return Err(e);
                }
                Err(e) => {
                    let _ = self.save(step(state, &Event::Failed).next, Some(&e));
                    return Err(self.after_failure(e));
                }
            };
        }
    }

    /// The run's end, if `tr` is one: `Ok(Some)` for a success, `Err` for
    /// every other end, reported with the error behind it.
    fn terminal(&mut self, tr: Transition, state: State, event: &Event) -> Result<Option<Outcome>> {
        let e = match tr.action {
            Action::Finish => {
                self.checkpoint.last_error = None;
                self.record_highest()?;
                if tr.next != state {
                    self.save(tr.next, None)?;
                } else {
                    self.save_quiet()?;
                }
                return Ok(Some(Outcome { state: tr.next, already: *event == Event::SameInstallRunning }));
            }
            Action::ReportDegraded => {
                let mut e = self.pending.take().unwrap_or_else(|| Error::new(Class::Degraded, "degraded"));
                self.save(tr.next, Some(&e))?;
                self.record_highest()?;
                // A dump, for whoever looks later; no shell: the install works.
                if let Ok(path) = crate::diag::dump(&self.sd, &self.layout.root, &e) {
                    e.msg.push_str(&format!("\n  diagnostic dump: {}", path.display()));
                }
                return Err(e);
            }
            Action::ReportSafeMode => {
                let cause = self.pending.take().map(|e| e.msg).unwrap_or_default();
                Error::new(
                    Class::SafeMode,
                    format!("the service would not start ({cause}); it runs in safe mode, with its minimal config"),
                )
                .hint(
                    "look at the run hook's log in the state directory's logs/, fix the cause, then run install again",
                )
            }
            Action::ReportRolledBack => {
                let cause = self.pending.take().map(|e| e.msg).unwrap_or_else(|| "an interrupted rollback".into());
                Error::new(
                    Class::RolledBack,
                    format!(
                        "the new version failed ({cause}); the previous install is back in {}",
                        self.layout.root.display()
                    ),
                )
                .hint("the previous version runs as before; fix the cause, then install again")
            }
            // A failure the machine decided on (a failed validation of a
            // fresh install): the error is the one that caused it.
            Action::Abort => self
                .pending
                .take()
                .unwrap_or_else(|| Error::new(Class::Io, format!("unexpected event {event:?} in state {state}"))),
            _ => return Ok(None),
        };
        self.save(tr.next, Some(&e))?;
        Err(self.after_failure(e))
    }

    fn save(&mut self, state: State, error: Option<&Error>) -> Result<()> {
        crate::events::state(self.checkpoint.state.as_str(), state.as_str());
        self.checkpoint.state = state;
        self.checkpoint.history.push(HistoryRecord { at: crate::unix_now(), state });
        if let Some(e) = error {
            self.checkpoint.last_error = Some(e.msg.clone());
        }
        if let Some(b) = &self.bundle {
            self.checkpoint.bundle_id = b.view.bundle_id();
            self.checkpoint.version = b.manifest.version.to_string();
            self.checkpoint.payload_sha256 = hex::encode(&crate::bundle::payload_id(&b.manifest));
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

    fn bundle(&self) -> &Bundle {
        self.bundle.as_ref().expect("verified before use")
    }

    /// Remembers the installed version if it is the highest so far, and
    /// the root its chain ended at likewise.
    fn record_highest(&self) -> Result<()> {
        if let Some(b) = &self.bundle {
            let v = &b.manifest.version;
            if self.sd.highest()?.is_none_or(|h| v > &h) {
                self.sd.set_highest(v)?;
            }
            let t = &b.trusted;
            if self.sd.highest_root()?.is_none_or(|(h, _)| t.root_version > h) {
                self.sd.set_highest_root(t.root_version, &t.root_sha256)?;
            }
        }
        Ok(())
    }

    fn hook(&self, stage: HookStage, env: &[(&str, &str)]) -> Result<()> {
        let b = self.bundle();
        for h in b.manifest.hooks.iter().filter(|h| h.stage == stage) {
            crate::fault::effect(&format!("hook:{}", stage.as_str()))?;
            crate::hooks::run(h, &self.layout.root, &self.sd, b.manifest.version.as_str(), env)?;
        }
        Ok(())
    }
}

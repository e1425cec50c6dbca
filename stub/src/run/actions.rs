//! The actions of VERIFYING, DETECTING, FRESH and UPGRADE (staging and
//! the switch), VALIDATING, RUNNING and ROLLING-BACK.

use super::Run;
use crate::bundle::{Bundle, Trust};
use crate::error::{Class, Error, Result};
use crate::machine::{Action, Event, State};
use crate::policy::{self, Survey};
use crate::root;
use nxs_format::checkpoint::Staging;
use nxs_format::HookStage;

impl Run<'_> {
    /// Carries out one action of the machine; the event says how it went.
    pub(super) fn perform(&mut self, action: Action) -> Result<Event> {
        match action {
            Action::Verify => self.verify(),
            Action::Detect => self.detect(),
            Action::InstallFresh | Action::InstallUpgrade => self.stage_and_switch(),
            Action::Configure => self.configure(),
            Action::Validate => self.validate(),
            Action::Rollback => self.rollback(),
            Action::Run => self.start(),
            Action::StartSafe => self.start_safe(),
            Action::Finish
            | Action::Abort
            | Action::ReportRolledBack
            | Action::ReportSafeMode
            | Action::ReportDegraded => {
                unreachable!("terminal actions are handled by the loop")
            }
        }
    }

    fn verify(&mut self) -> Result<Event> {
        self.bundle = Some(match self.preverified.take() {
            Some(b) => b,
            None => {
                let mut b = Bundle::open_verified(&self.opts.bundle, &Trust::Embedded)?;
                b.choose_tier(self.opts.tier.as_deref())?;
                b
            }
        });
        Ok(Event::Verified)
    }

    /// Surveys the machine and the root; [`policy::detect`] decides.
    fn detect(&mut self) -> Result<Event> {
        let machine = crate::detect::this_machine();
        crate::detect::check(&machine, crate::detect::MACHINES, crate::detect::MIN_KERNEL).map_err(|report| {
            Error::new(Class::Incompatible, report).hint("a bundle runs only on the platform it was built for")
        })?;
        self.probe_login_server();
        let installed = root::installed_manifest(&self.layout)?.map(|r| r.manifest);
        let b = &self.bundle().view;
        let root = self.layout.root.display().to_string();
        let running_here = self.found.as_ref().is_some_and(|c| c.state == State::Running && c.root == root);
        let tree_problems = match Survey::needs_tree_check(b, installed.as_ref(), running_here) {
            true => {
                let problems = crate::extract::check_tree(&self.layout.root, b).len();
                if problems > 0 {
                    eprintln!("  {root} holds this bundle with {problems} problem(s): installing it again");
                }
                Some(problems)
            }
            false => None,
        };
        let root_empty = installed.is_none() && crate::fsx::is_missing_or_empty(&self.layout.root)?;
        let highest = self.sd.highest()?;
        let t = &self.bundle().trusted;
        policy::root_rollback(
            (t.root_version, &t.root_sha256),
            self.sd.highest_root()?,
            self.opts.allow_root_rollback,
        )?;
        let event = policy::detect(&Survey {
            bundle: b,
            installed: installed.as_ref(),
            running_here,
            root_empty,
            tree_problems,
            highest: highest.as_ref(),
            allow_downgrade: self.opts.allow_downgrade,
            root: &root,
        })?;
        match event {
            Event::SameInstallPresent => {
                eprintln!("  {root} already holds this bundle, intact: resuming at CONFIGURING");
                // An interrupted upgrade left its previous tree: a failed
                // validation still rolls back to it.
                self.upgrading = self.layout.has_previous()?;
            }
            Event::InstallFound => self.upgrading = true,
            _ => {}
        }
        Ok(event)
    }

    /// Stages the bundle beside the root (resuming what an earlier run
    /// staged), then switches it in.
    fn stage_and_switch(&mut self) -> Result<Event> {
        eprintln!("  extracting into {}", self.layout.staging.display());
        let b = self.bundle.take().expect("verified before use");
        let resume = self.checkpoint.staging.clone();
        let (sd, checkpoint) = (&self.sd, &mut self.checkpoint);
        let mut created = |st: Staging| {
            checkpoint.staging = Some(st);
            sd.write_checkpoint(checkpoint)
        };
        let mut r = root::stage(&b, &self.layout, true, self.opts.progress, resume.as_ref(), &mut created);
        if let Err(e) = r {
            // An I/O failure while staging: once more, in a fresh staging
            // directory. A verification failure is final.
            if e.class != Class::Io {
                return Err(e);
            }
            eprintln!("  staging failed ({}); retrying once in a fresh staging directory", e.msg);
            crate::events::retry("staging", 1, 1, std::time::Duration::ZERO, &e.msg);
            r = root::stage(&b, &self.layout, true, self.opts.progress, None, &mut created);
        }
        self.bundle = Some(b);
        r?;
        root::commit(&self.layout)?;
        self.checkpoint.staging = None;
        eprintln!("  installed into {}", self.layout.root.display());
        Ok(Event::Staged)
    }

    fn validate(&mut self) -> Result<Event> {
        match self.hook(HookStage::Validate, &[]) {
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
        }
    }

    fn rollback(&mut self) -> Result<Event> {
        let failed = self
            .bundle
            .as_ref()
            .map(|b| crate::bundle::payload_id(&b.manifest))
            .or_else(|| self.found.as_ref().and_then(|c| nxs_format::hex::decode_sha256(&c.payload_sha256)));
        eprintln!("  rolling back {} to the previous install", self.layout.root.display());
        root::roll_back(&self.layout, failed.as_ref(), false)?;
        Ok(Event::RolledBack)
    }

    /// The run hook, up to `--max-start-attempts` times.
    fn start(&mut self) -> Result<Event> {
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

    fn start_safe(&mut self) -> Result<Event> {
        eprintln!(
            "  the service failed to start {} times: starting it in safe mode (NXS_SAFE_MODE=1)",
            self.opts.max_start_attempts.max(1)
        );
        self.hook(HookStage::Run, &[("NXS_SAFE_MODE", "1")]).map(|_| Event::Started)
    }
}

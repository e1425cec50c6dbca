//! The bootstrap state machine, as a pure function: no I/O, no clock, no
//! randomness. `run/` carries out the actions and feeds back events; the decisions
//! beside it are `policy.rs` and `join.rs`.
//!
//! Architecture invariant: this module does no I/O. Every path through the
//! recovery matrix is a sequence of `step` calls that a unit test can drive.

pub use nxs_format::checkpoint::State;

/// What happened while carrying out the last action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Begin,
    Verified,
    NoInstall,
    InstallFound,
    SameInstallRunning,
    /// The root already holds this exact payload, intact (an earlier run
    /// got past the switch): go on from CONFIGURING without extracting.
    SameInstallPresent,
    Staged,
    Configured,
    Validated,
    /// Validation found a partial failure (exit 69): carry on with less.
    ValidatedDegraded,
    /// The validate hook failed; `upgrade` says a previous install exists.
    ValidationFailed {
        upgrade: bool,
    },
    /// The checkpoint says a rollback was under way: finish it.
    ResumeRollback,
    RolledBack,
    Started,
    /// The run hook failed every attempt: the service will not start.
    StartFailed,
    Failed,
}

/// What the effects layer must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Verify,
    Detect,
    InstallFresh,
    InstallUpgrade,
    Configure,
    Validate,
    Run,
    /// Put the previous install back.
    Rollback,
    /// Stop: the new version failed and the previous one is back (exit 7).
    ReportRolledBack,
    /// Start the service once more, with its minimal (safe-mode) config.
    StartSafe,
    /// Stop: the service runs in safe mode; the operator must step in.
    ReportSafeMode,
    /// Stop: installed and running, but degraded (exit 8).
    ReportDegraded,
    /// Stop: the run is over, successfully.
    Finish,
    /// Stop: the run failed; the error is reported as it is.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub next: State,
    pub action: Action,
}

const fn t(next: State, action: Action) -> Transition {
    Transition { next, action }
}

/// The transition function of the straight path. Any event that does not
/// belong to the state it arrives in is a failure, never a guess.
pub fn step(state: State, event: &Event) -> Transition {
    use Event as E;
    use State as S;
    match (state, event) {
        (_, E::Failed) => t(S::Failed, Action::Abort),
        (S::Start, E::Begin) => t(S::Verifying, Action::Verify),
        (S::Start, E::ResumeRollback) => t(S::RollingBack, Action::Rollback),
        (S::Verifying, E::Verified) => t(S::Detecting, Action::Detect),
        (S::Detecting, E::NoInstall) => t(S::Fresh, Action::InstallFresh),
        (S::Detecting, E::InstallFound) => t(S::Upgrade, Action::InstallUpgrade),
        (S::Detecting, E::SameInstallRunning) => t(S::Running, Action::Finish),
        (S::Detecting, E::SameInstallPresent) => t(S::Configuring, Action::Configure),
        (S::Fresh | S::Upgrade, E::Staged) => t(S::Configuring, Action::Configure),
        (S::Configuring, E::Configured) => t(S::Validating, Action::Validate),
        (S::Validating, E::Validated) => t(S::Running, Action::Run),
        (S::Validating, E::ValidatedDegraded) => t(S::Degraded, Action::Run),
        (S::Degraded, E::Started) => t(S::Degraded, Action::ReportDegraded),
        (S::Degraded, E::StartFailed) => t(S::SafeMode, Action::StartSafe),
        (S::Validating, E::ValidationFailed { upgrade: true }) => t(S::RollingBack, Action::Rollback),
        (S::Validating, E::ValidationFailed { upgrade: false }) => t(S::Failed, Action::Abort),
        (S::RollingBack, E::RolledBack) => t(S::Failed, Action::ReportRolledBack),
        (S::Running, E::Started) => t(S::Running, Action::Finish),
        (S::Running, E::StartFailed) => t(S::SafeMode, Action::StartSafe),
        (S::SafeMode, E::Started) => t(S::SafeMode, Action::ReportSafeMode),
        (
            S::Start
            | S::Verifying
            | S::Detecting
            | S::Upgrade
            | S::Fresh
            | S::Configuring
            | S::Validating
            | S::Running
            | S::Failed
            | S::RollingBack
            | S::SafeMode
            | S::Degraded,
            _,
        ) => t(S::Failed, Action::Abort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the machine from START with `events`, returning the states.
    fn drive(events: &[Event]) -> Vec<State> {
        let mut s = State::Start;
        let mut seen = Vec::new();
        for e in events {
            let tr = step(s, e);
            s = tr.next;
            seen.push(s);
        }
        seen
    }

    #[test]
    fn straight_fresh_path() {
        use Event::*;
        use State::*;
        assert_eq!(
            drive(&[Begin, Verified, NoInstall, Staged, Configured, Validated, Started]),
            vec![Verifying, Detecting, Fresh, Configuring, Validating, Running, Running]
        );
        assert_eq!(step(Running, &Started).action, Action::Finish);
    }

    #[test]
    fn upgrade_and_already_installed() {
        use Event::*;
        assert_eq!(drive(&[Begin, Verified, InstallFound])[2], State::Upgrade);
        assert_eq!(step(State::Detecting, &SameInstallRunning), t(State::Running, Action::Finish));
    }

    #[test]
    fn a_failed_upgrade_rolls_back_and_a_failed_fresh_install_stops() {
        use Event::*;
        let states =
            drive(&[Begin, Verified, InstallFound, Staged, Configured, ValidationFailed { upgrade: true }, RolledBack]);
        assert_eq!(states[5..], [State::RollingBack, State::Failed]);
        assert_eq!(step(State::RollingBack, &RolledBack).action, Action::ReportRolledBack);
        assert_eq!(step(State::Validating, &ValidationFailed { upgrade: false }), t(State::Failed, Action::Abort));
        assert_eq!(step(State::Start, &ResumeRollback), t(State::RollingBack, Action::Rollback));
    }

    #[test]
    fn a_partial_failure_carries_on_degraded() {
        use Event::*;
        let states = drive(&[Begin, Verified, NoInstall, Staged, Configured, ValidatedDegraded, Started]);
        assert_eq!(states[5..], [State::Degraded, State::Degraded]);
        assert_eq!(step(State::Degraded, &Started).action, Action::ReportDegraded);
    }

    #[test]
    fn repeated_start_failures_lead_to_safe_mode() {
        assert_eq!(step(State::Running, &Event::StartFailed), t(State::SafeMode, Action::StartSafe));
        assert_eq!(step(State::SafeMode, &Event::Started), t(State::SafeMode, Action::ReportSafeMode));
        assert_eq!(step(State::SafeMode, &Event::Failed), t(State::Failed, Action::Abort));
    }

    #[test]
    fn failures_and_stray_events_abort() {
        for s in State::ALL {
            assert_eq!(step(s, &Event::Failed), t(State::Failed, Action::Abort));
        }
        assert_eq!(step(State::Start, &Event::Validated).next, State::Failed);
        assert_eq!(step(State::Fresh, &Event::Verified).next, State::Failed);
    }
}

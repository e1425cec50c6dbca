//! The tailnet join as a pure machine, beside [`crate::machine`]: no I/O,
//! no clock, no randomness. CONFIGURING drives it ([`crate::run`] carries
//! out each action and feeds back what it observed); it decides when to
//! ask the daemon, when to spend the key, how long to back off between
//! attempts, when a key is dropped and when the join is left pending.
//!
//! The rules it holds:
//! - a node the daemon already runs on our login server is joined, and no
//!   key is spent on it (a run killed after `tailscale up` succeeded);
//! - a node on another login server is re-authenticated to ours;
//! - a join recorded by an earlier run counts only while the daemon still
//!   runs on our server;
//! - with no key, nothing is tried: the join is pending;
//! - each attempt after the first waits twice as long as the one before
//!   (1 s, 2 s, 4 s, ...), and probes the login server again first;
//! - a key the server rejects is dropped, with how to make another; a
//!   registration refused for another reason (tags, the client's version)
//!   keeps the key and stops: the operator must act;
//! - anything else (unreachable, a timeout, a client error) is tried again
//!   until the attempts run out.
//!
//! A join that cannot happen never fails the install: `Done` leaves the
//! reason in the record, and VALIDATING reports DEGRADED.

use crate::tailnet::JoinFailure;
use nxs_format::checkpoint::Join as Record;
use std::time::Duration;

/// Where the daemon's login stands, once it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Running, on our login server.
    Ours,
    /// Running, on another login server (its URL).
    Elsewhere(String),
    /// Running, but its login server could not be asked.
    Unknown(String),
    /// Not running (not logged in, or no answer).
    NotRunning,
}

/// What the effects layer saw when it carried out the last action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Begin,
    /// The daemon could not be started (why).
    DaemonDown(String),
    Login(Login),
    /// Whether an auth key is stashed.
    Key(bool),
    /// What the probe of the login server found.
    Reachable(Result<(), String>),
    /// What `tailscale up` gave.
    Up(Result<(), JoinFailure>),
}

/// What the effects layer must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start tailscaled (or find it running), then ask it whether it is
    /// logged in, and where: `DaemonDown` or `Login`.
    StartDaemon,
    /// Look whether a key is stashed.
    AskKey,
    /// Wait `after`, then probe the login server. `attempt` of `of`.
    Probe { after: Duration, attempt: u32, of: u32 },
    /// Run `tailscale up`; `reauth` forces a new login.
    Up { reauth: bool },
    /// Forget the stashed key, then stop as `Done` does.
    DropKey,
    /// Save the record and stop.
    Done,
}

/// The join's state between two steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinState {
    /// What the checkpoint keeps of the join.
    pub record: Record,
    /// `tailscale up` succeeded, or found done, in this run.
    pub joined_now: bool,
    /// The key's tags, for the hint on how to make another.
    tags: Vec<String>,
    attempt: u32,
    attempts: u32,
    delay: Duration,
    reauth: bool,
    /// What DETECTING's probe found, used by the first attempt.
    reachable: Option<Result<(), String>>,
}

/// The first attempt's wait; each later one doubles it.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

impl JoinState {
    pub fn new(record: Record, attempts: u32, reachable: Option<Result<(), String>>, tags: &[String]) -> JoinState {
        JoinState {
            record,
            joined_now: false,
            tags: tags.to_vec(),
            attempt: 0,
            attempts: attempts.max(1),
            delay: FIRST_DELAY,
            reauth: false,
            reachable,
        }
    }
}

/// One step: what was observed, to what to do next.
pub fn step(s: &mut JoinState, obs: Observation) -> Action {
    match obs {
        Observation::Begin => Action::StartDaemon,
        Observation::DaemonDown(why) => {
            s.record.reason = Some(format!("tailscaled is not running: {why}"));
            Action::Done
        }
        Observation::Login(Login::Ours) => {
            s.joined_now = true;
            s.record.reason = None;
            Action::Done
        }
        Observation::Login(other) => {
            s.reauth = matches!(other, Login::Elsewhere(_));
            s.record.joined = false;
            Action::AskKey
        }
        Observation::Key(false) => {
            s.record.reason = Some(format!(
                "no auth key was given; pass --authkey-file FILE, set {}, or --authkey-age FILE",
                crate::tailnet::KEY_FILE_ENV
            ));
            Action::Done
        }
        Observation::Key(true) => next_attempt(s),
        Observation::Reachable(Err(why)) => {
            s.record.reason = Some(JoinFailure::Unreachable(why).reason());
            next_attempt(s)
        }
        Observation::Reachable(Ok(())) => {
            s.record.attempts = s.record.attempts.saturating_add(1);
            Action::Up { reauth: s.reauth }
        }
        Observation::Up(Ok(())) => {
            s.joined_now = true;
            s.record.reason = None;
            Action::Done
        }
        Observation::Up(Err(f @ JoinFailure::KeyRejected(_))) => {
            s.record.reason = Some(format!("{}; {}", f.reason(), new_key_hint(&s.tags)));
            Action::DropKey
        }
        Observation::Up(Err(f @ (JoinFailure::Refused(_) | JoinFailure::VersionWindow(_)))) => {
            s.record.reason = Some(f.reason());
            Action::Done
        }
        Observation::Up(Err(f)) => {
            s.record.reason = Some(f.reason());
            next_attempt(s)
        }
    }
}

/// The next attempt, or `Done` when they have run out. The first uses
/// DETECTING's probe if there was one; each later one waits, doubling
/// the wait, and probes again.
fn next_attempt(s: &mut JoinState) -> Action {
    if s.attempt >= s.attempts {
        return Action::Done;
    }
    s.attempt += 1;
    let after = if s.attempt == 1 {
        if let Some(r) = s.reachable.take() {
            return step(s, Observation::Reachable(r));
        }
        Duration::ZERO
    } else {
        let d = s.delay;
        s.delay *= 2;
        d
    };
    s.reachable = None;
    Action::Probe { after, attempt: s.attempt, of: s.attempts }
}

/// How to make a key Headscale 0.26 to 0.29 accepts for this bundle: tagged
/// (the tags travel with the key, never with `up`), single-use, not
/// ephemeral, with an expiry that fits the deployment window. `--user`
/// takes a numeric ID since 0.26 and is optional since 0.28.
pub fn new_key_hint(tags: &[String]) -> String {
    let tags = if tags.is_empty() { "tag:nxs".to_string() } else { tags.join(",") };
    format!(
        "make a new key on the Headscale server (headscale preauthkeys create --tags {tags} --expiration 24h; on Headscale 0.26 or 0.27 add --user ID, the user's numeric ID; not --reusable, not --ephemeral) and run install again with --authkey-file FILE"
    )
}

/// Whether to ask the operator for a key on the terminal: none was given
/// or stashed, the node is not joined, and the login server answers (a key
/// typed for a server that cannot be reached would wait in vain).
pub fn should_prompt(key_present: bool, joined: bool, reachable: Option<&Result<(), String>>) -> bool {
    !key_present && !joined && matches!(reachable, Some(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Observation as O;

    fn record(joined: bool) -> Record {
        Record { joined, attempts: 0, reason: None }
    }

    /// Feeds `observations` in turn, from Begin; returns the actions and
    /// the state at the end.
    fn drive(mut s: JoinState, observations: Vec<Observation>) -> (Vec<Action>, JoinState) {
        let mut actions = vec![step(&mut s, O::Begin)];
        for o in observations {
            actions.push(step(&mut s, o));
        }
        (actions, s)
    }

    fn probe(after: u64, attempt: u32, of: u32) -> Action {
        A::Probe { after: Duration::from_secs(after), attempt, of }
    }

    fn unreachable() -> Observation {
        O::Reachable(Err("connection refused".into()))
    }

    #[test]
    fn the_join_follows_its_rules() {
        let up = A::Up { reauth: false };
        let timeout = || O::Up(Err(JoinFailure::Timeout("30s".into())));
        // (what the record and DETECTING say, the observations, the actions
        // after Begin, joined in this run, attempts spent, reason contains)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, JoinState, Vec<Observation>, Vec<Action>, bool, u32, &str)> = vec![
            (
                "fresh, reachable at DETECTING: one up, joined",
                JoinState::new(record(false), 3, Some(Ok(())), &[]),
                vec![O::Login(Login::NotRunning), O::Key(true), O::Up(Ok(()))],
                vec![A::AskKey, up, A::Done],
                true,
                1,
                "",
            ),
            (
                "already logged in to our server: no key spent",
                JoinState::new(record(false), 3, None, &[]),
                vec![O::Login(Login::Ours)],
                vec![A::Done],
                true,
                0,
                "",
            ),
            (
                "on another server: re-authenticated",
                JoinState::new(record(true), 1, Some(Ok(())), &[]),
                vec![O::Login(Login::Elsewhere("https://other".into())), O::Key(true), O::Up(Ok(()))],
                vec![A::AskKey, A::Up { reauth: true }, A::Done],
                true,
                1,
                "",
            ),
            (
                "no key: pending, nothing tried",
                JoinState::new(record(false), 3, Some(Ok(())), &[]),
                vec![O::Login(Login::Unknown("no answer".into())), O::Key(false)],
                vec![A::AskKey, A::Done],
                false,
                0,
                "no auth key was given",
            ),
            (
                "the daemon will not start: pending",
                JoinState::new(record(false), 3, None, &[]),
                vec![O::DaemonDown("no tun".into())],
                vec![A::Done],
                false,
                0,
                "tailscaled is not running: no tun",
            ),
            (
                "unreachable three times: backs off 1 s, 2 s, then gives up",
                JoinState::new(record(false), 3, Some(Err("down".into())), &[]),
                vec![O::Login(Login::NotRunning), O::Key(true), unreachable(), unreachable()],
                vec![A::AskKey, probe(1, 2, 3), probe(2, 3, 3), A::Done],
                false,
                0,
                "login server unreachable: connection refused",
            ),
            (
                "a timeout is tried again after a probe",
                JoinState::new(record(false), 2, None, &[]),
                vec![
                    O::Login(Login::NotRunning),
                    O::Key(true),
                    O::Reachable(Ok(())),
                    timeout(),
                    O::Reachable(Ok(())),
                    O::Up(Ok(())),
                ],
                vec![A::AskKey, probe(0, 1, 2), up, probe(1, 2, 2), up, A::Done],
                true,
                2,
                "",
            ),
            (
                "a rejected key is dropped, with how to make another",
                JoinState::new(record(false), 5, Some(Ok(())), &["tag:a".into(), "tag:b".into()]),
                vec![
                    O::Login(Login::NotRunning),
                    O::Key(true),
                    O::Up(Err(JoinFailure::KeyRejected("authkey expired".into()))),
                ],
                vec![A::AskKey, up, A::DropKey],
                false,
                1,
                "--tags tag:a,tag:b",
            ),
            (
                "a refused registration keeps the key and stops",
                JoinState::new(record(false), 5, Some(Ok(())), &[]),
                vec![O::Login(Login::NotRunning), O::Key(true), O::Up(Err(JoinFailure::Refused("tags".into())))],
                vec![A::AskKey, up, A::Done],
                false,
                1,
                "refused the registration",
            ),
            (
                "a client outside the server's window stops",
                JoinState::new(record(false), 5, Some(Ok(())), &[]),
                vec![O::Login(Login::NotRunning), O::Key(true), O::Up(Err(JoinFailure::VersionWindow("1.60".into())))],
                vec![A::AskKey, up, A::Done],
                false,
                1,
                "this client's version",
            ),
            (
                "a join recorded earlier, but the daemon lost it: joined again",
                JoinState::new(record(true), 1, Some(Ok(())), &[]),
                vec![O::Login(Login::NotRunning), O::Key(true), O::Up(Err(JoinFailure::Client("boom".into())))],
                vec![A::AskKey, up, A::Done],
                false,
                1,
                "tailscale up failed: boom",
            ),
        ];
        for (name, s, obs, want, joined_now, attempts, reason) in cases {
            let (mut got, end) = drive(s, obs);
            assert_eq!(got.remove(0), A::StartDaemon, "{name}");
            assert_eq!(got, want, "{name}");
            assert_eq!(end.joined_now, joined_now, "{name}");
            assert_eq!(end.record.attempts, attempts, "{name}");
            let r = end.record.reason.clone().unwrap_or_default();
            assert!(if reason.is_empty() { r.is_empty() } else { r.contains(reason) }, "{name}: {r}");
            if !joined_now {
                assert!(!end.record.joined, "{name}: a pending join is not recorded as joined");
            }
        }
    }

    #[test]
    fn the_prompt_is_only_for_a_reachable_server_and_a_node_without_key_or_join() {
        let ok = Ok(());
        let down = Err("down".to_string());
        let cases = [
            (false, false, Some(&ok), true),
            (true, false, Some(&ok), false),
            (false, true, Some(&ok), false),
            (false, false, Some(&down), false),
            (false, false, None, false),
        ];
        for (key, joined, reach, want) in cases {
            assert_eq!(should_prompt(key, joined, reach), want, "{key} {joined} {reach:?}");
        }
    }
}

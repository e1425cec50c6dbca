//! The bootstrap checkpoint, `<state-dir>/bootstrap.state`: where an install
//! run stands, so that the next run resumes it. Written only through an
//! atomic write by the stub; read defensively, since a crash, a full disk
//! or a stranger may have left anything there.
//!
//! Text, one line a record, fields percent-encoded as in the manifest.

use crate::manifest::{decode_field, encode_field};
use std::fmt;

/// The schema version of the checkpoint text.
pub const CHECKPOINT_SCHEMA: u32 = 1;
/// Most history records kept; older ones are dropped first.
pub const MAX_HISTORY: usize = 64;

/// The states of the bootstrap machine, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Start,
    Verifying,
    Detecting,
    Upgrade,
    Fresh,
    Configuring,
    Validating,
    Running,
    Failed,
    RollingBack,
    SafeMode,
    Degraded,
}

impl State {
    pub const ALL: [State; 12] = [
        State::Start,
        State::Verifying,
        State::Detecting,
        State::Upgrade,
        State::Fresh,
        State::Configuring,
        State::Validating,
        State::Running,
        State::Failed,
        State::RollingBack,
        State::SafeMode,
        State::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Start => "START",
            State::Verifying => "VERIFYING",
            State::Detecting => "DETECTING",
            State::Upgrade => "UPGRADE",
            State::Fresh => "FRESH",
            State::Configuring => "CONFIGURING",
            State::Validating => "VALIDATING",
            State::Running => "RUNNING",
            State::Failed => "FAILED",
            State::RollingBack => "ROLLING_BACK",
            State::SafeMode => "SAFE_MODE",
            State::Degraded => "DEGRADED",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.iter().copied().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transition, with its time in seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub at: u64,
    pub state: State,
}

/// Where the tailnet join stands. Only a status and a reason: never a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub joined: bool,
    /// Join attempts made so far, across runs.
    pub attempts: u32,
    /// Why the join is still pending (unreachable server, no key, ...).
    pub reason: Option<String>,
}

/// The staging directory an install made and is filling: the payload it
/// holds and its identity on disk. A resumed run keeps staged files only
/// from this very directory (same device and inode); anything else there
/// is not provably the stub's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub payload_sha256: String,
    pub dev: u64,
    pub ino: u64,
    /// Leading payload frames (format 3) whose entries were all written
    /// into it: where a rerun may start reading the bundle, once it has
    /// checked what staging holds of them. A hint; 0 when unknown.
    pub frames_done: u64,
}

/// A checkpoint. It never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub bundle_id: String,
    pub version: String,
    pub payload_sha256: String,
    pub root: String,
    pub state: State,
    pub history: Vec<HistoryRecord>,
    pub last_error: Option<String>,
    /// Absent when the bundle has no Headscale client, or before CONFIGURING.
    pub join: Option<Join>,
    /// Absent when no staging directory is being filled.
    pub staging: Option<Staging>,
}

/// Why a checkpoint could not be read. Every case has a defined answer in
/// the stub: start again from VERIFYING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    Empty,
    Garbage(String),
    FutureSchema(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Empty => write!(f, "checkpoint is empty"),
            CheckpointError::Garbage(m) => write!(f, "checkpoint is damaged: {m}"),
            CheckpointError::FutureSchema(v) => {
                write!(f, "checkpoint schema {v} is newer than this stub's ({CHECKPOINT_SCHEMA})")
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

impl Checkpoint {
    pub fn to_text(&self) -> String {
        let mut s = format!("nxs-bootstrap-state {CHECKPOINT_SCHEMA}\n");
        let mut kv = |k: &str, v: &str| {
            s.push_str(k);
            s.push(' ');
            s.push_str(&encode_field(v));
            s.push('\n');
        };
        kv("bundle", &self.bundle_id);
        kv("version", &self.version);
        kv("payload-sha256", &self.payload_sha256);
        kv("root", &self.root);
        kv("state", self.state.as_str());
        if let Some(e) = &self.last_error {
            kv("error", e);
        }
        if let Some(j) = &self.join {
            s.push_str(&format!("join {} {}\n", if j.joined { "joined" } else { "pending" }, j.attempts));
            if let Some(r) = &j.reason {
                s.push_str(&format!("join-reason {}\n", encode_field(r)));
            }
        }
        if let Some(st) = &self.staging {
            s.push_str(&format!("staging {} {} {}\n", encode_field(&st.payload_sha256), st.dev, st.ino));
            if st.frames_done > 0 {
                s.push_str(&format!("staging-frames-done {}\n", st.frames_done));
            }
        }
        let start = self.history.len().saturating_sub(MAX_HISTORY);
        for h in &self.history[start..] {
            s.push_str(&format!("history {} {}\n", h.at, h.state.as_str()));
        }
        s.push_str("end\n");
        s
    }

    /// Parses checkpoint bytes. Never panics, whatever the input.
    pub fn parse(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        if bytes.is_empty() {
            return Err(CheckpointError::Empty);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| garbage("not UTF-8"))?;
        if !text.ends_with('\n') {
            return Err(garbage("truncated (no final newline)"));
        }
        let mut lines = text.lines();
        match lines.next().unwrap_or("").strip_prefix("nxs-bootstrap-state ") {
            Some(v) if v == CHECKPOINT_SCHEMA.to_string() => {}
            Some(v) if v.parse::<u32>().map(|n| n > CHECKPOINT_SCHEMA).unwrap_or(false) => {
                return Err(CheckpointError::FutureSchema(v.to_string()))
            }
            _ => return Err(garbage("not a checkpoint (foreign file?)")),
        }
        let mut p = Lines::default();
        let mut ended = false;
        for line in lines {
            if ended {
                return Err(garbage("text after `end`"));
            }
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "end" if v.is_empty() => ended = true,
                "history" => p.history.push(history_line(v)?),
                "staging" => once(&mut p.staging, staging_line(v)?, k)?,
                "staging-frames-done" => {
                    once(&mut p.frames_done, v.parse().map_err(|_| garbage("bad staging-frames-done line"))?, k)?
                }
                "join" => once(&mut p.join, join_line(v)?, k)?,
                _ => {
                    let v = decode_field(v).ok_or_else(|| garbage("badly encoded field"))?;
                    let slot = match k {
                        "bundle" => &mut p.bundle,
                        "version" => &mut p.version,
                        "payload-sha256" => &mut p.payload,
                        "root" => &mut p.root,
                        "state" => &mut p.state,
                        "error" => &mut p.error,
                        "join-reason" => &mut p.join_reason,
                        _ => return Err(garbage(&format!("unknown line `{k}`"))),
                    };
                    once(slot, v, k)?;
                }
            }
        }
        if !ended {
            return Err(garbage("truncated (no `end`)"));
        }
        p.finish()
    }
}

fn garbage(m: &str) -> CheckpointError {
    CheckpointError::Garbage(m.to_string())
}

/// Fills a line's slot; a line given twice is a refusal.
fn once<T>(slot: &mut Option<T>, v: T, key: &str) -> Result<(), CheckpointError> {
    match slot.replace(v) {
        Some(_) => Err(garbage(&format!("`{key}` appears twice"))),
        None => Ok(()),
    }
}

/// `history AT STATE`.
fn history_line(v: &str) -> Result<HistoryRecord, CheckpointError> {
    let (at, st) = v.split_once(' ').ok_or_else(|| garbage("bad history line"))?;
    let at = at.parse().map_err(|_| garbage("bad history time"))?;
    let state = State::parse(st).ok_or_else(|| garbage("unknown state in history"))?;
    Ok(HistoryRecord { at, state })
}

/// `staging PAYLOAD-SHA256 DEV INO`.
fn staging_line(v: &str) -> Result<Staging, CheckpointError> {
    let mut f = v.split(' ');
    let (Some(id), Some(dev), Some(ino), None) = (f.next(), f.next(), f.next(), f.next()) else {
        return Err(garbage("bad staging line"));
    };
    Ok(Staging {
        payload_sha256: decode_field(id).ok_or_else(|| garbage("badly encoded field"))?,
        dev: dev.parse().map_err(|_| garbage("bad staging device"))?,
        ino: ino.parse().map_err(|_| garbage("bad staging inode"))?,
        frames_done: 0,
    })
}

/// `join joined|pending ATTEMPTS`.
fn join_line(v: &str) -> Result<(bool, u32), CheckpointError> {
    let (st, n) = v.split_once(' ').ok_or_else(|| garbage("bad join line"))?;
    let joined = match st {
        "joined" => true,
        "pending" => false,
        _ => return Err(garbage("bad join status")),
    };
    Ok((joined, n.parse().map_err(|_| garbage("bad join attempts"))?))
}

/// The lines of a checkpoint, each at most once (history aside), before
/// they are checked as a whole.
#[derive(Default)]
struct Lines {
    bundle: Option<String>,
    version: Option<String>,
    payload: Option<String>,
    root: Option<String>,
    state: Option<String>,
    error: Option<String>,
    join_reason: Option<String>,
    history: Vec<HistoryRecord>,
    join: Option<(bool, u32)>,
    staging: Option<Staging>,
    frames_done: Option<u64>,
}

impl Lines {
    fn finish(mut self) -> Result<Checkpoint, CheckpointError> {
        // Only the newest records are kept, as the writer keeps them.
        let extra = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..extra);
        let missing = |k: &str| garbage(&format!("`{k}` is missing"));
        let state = self.state.ok_or_else(|| missing("state"))?;
        Ok(Checkpoint {
            bundle_id: self.bundle.ok_or_else(|| missing("bundle"))?,
            version: self.version.ok_or_else(|| missing("version"))?,
            payload_sha256: self.payload.ok_or_else(|| missing("payload-sha256"))?,
            root: self.root.ok_or_else(|| missing("root"))?,
            state: State::parse(&state).ok_or_else(|| garbage("unknown state"))?,
            history: self.history,
            last_error: self.error,
            join: match (self.join, self.join_reason) {
                (Some((joined, attempts)), reason) => Some(Join { joined, attempts, reason }),
                (None, None) => None,
                (None, Some(_)) => return Err(garbage("`join-reason` without `join`")),
            },
            staging: match (self.staging, self.frames_done) {
                (Some(st), n) => Some(Staging { frames_done: n.unwrap_or(0), ..st }),
                (None, None) => None,
                (None, Some(_)) => return Err(garbage("`staging-frames-done` without `staging`")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            bundle_id: "nxs-survival-1.4.0-standard-x86_64-unknown-linux-musl".into(),
            version: "1.4.0".into(),
            payload_sha256: "ab".repeat(32),
            root: "/opt/my nxs".into(),
            state: State::Configuring,
            history: vec![
                HistoryRecord { at: 1, state: State::Start },
                HistoryRecord { at: 2, state: State::Verifying },
            ],
            last_error: Some("line one\nline two".into()),
            join: Some(Join { joined: false, attempts: 2, reason: Some("login server unreachable".into()) }),
            staging: Some(Staging { payload_sha256: "cd".repeat(32), dev: 2049, ino: 1234567, frames_done: 17 }),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(Checkpoint::parse(c.to_text().as_bytes()), Ok(c));
    }

    #[test]
    fn a_long_history_keeps_the_newest_records_and_round_trips() {
        let mut c = sample();
        c.history = (0..100).map(|at| HistoryRecord { at, state: State::Fresh }).collect();
        let mut text = c.to_text();
        // A hand-made file may hold more records than the writer keeps.
        text = text.replace("end\n", &"history 7 FRESH\n".repeat(50)) + "end\n";
        let parsed = Checkpoint::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.history.len(), MAX_HISTORY);
        assert_eq!(Checkpoint::parse(parsed.to_text().as_bytes()), Ok(parsed));
    }

    #[test]
    fn a_checkpoint_without_staging_still_reads() {
        // Written by stubs before the staging line existed.
        let mut c = sample();
        c.staging = None;
        let text = c.to_text();
        assert!(!text.contains("staging"));
        assert_eq!(Checkpoint::parse(text.as_bytes()).as_ref(), Ok(&c));
        let bad = sample().to_text().replace(" 1234567\n", " x\n");
        assert!(matches!(Checkpoint::parse(bad.as_bytes()), Err(CheckpointError::Garbage(_))));
        // Nor the frames done, written since format 3's bundles: 0 then.
        let older = sample().to_text().replace("staging-frames-done 17\n", "");
        assert_eq!(Checkpoint::parse(older.as_bytes()).unwrap().staging.unwrap().frames_done, 0);
        let stray = c.to_text().replace("end\n", "staging-frames-done 3\nend\n");
        assert!(matches!(Checkpoint::parse(stray.as_bytes()), Err(CheckpointError::Garbage(_))));
    }

    #[test]
    fn damaged_checkpoints_have_defined_answers() {
        let text = sample().to_text();
        assert_eq!(Checkpoint::parse(b""), Err(CheckpointError::Empty));
        assert!(matches!(Checkpoint::parse(b"nxs-bootstrap-state 9\nend\n"), Err(CheckpointError::FutureSchema(_))));
        assert!(matches!(Checkpoint::parse(b"{\"json\": true}"), Err(CheckpointError::Garbage(_))));
        assert!(matches!(Checkpoint::parse(&[0xff, 0xfe]), Err(CheckpointError::Garbage(_))));
        // Every truncation is refused or parses, and none panics.
        for cut in 0..text.len() {
            let r = Checkpoint::parse(&text.as_bytes()[..cut]);
            assert!(r.is_err(), "truncated at {cut} must be refused");
        }
    }
}

//! The names inside a state directory that belong to the bootstrap itself.
//!
//! A state directory (`--state-dir`, `$NXS_HOME`, `~/.nxs`) holds NXS's own
//! data (sessions, keys, config) beside the bootstrap's bookkeeping: the
//! lock, the checkpoint, the downgrade guard, the logs, the diagnostic dumps
//! and the tailnet daemon's files. A backup carries NXS's data only; a
//! restore keeps the bookkeeping of the machine it runs on. This list is the
//! line between the two, shared by the stub and `nxs-backup`.

/// The lock every writer of the state directory takes (flock, exclusive).
pub const LOCK: &str = "lock";
/// The state machine's checkpoint.
pub const CHECKPOINT: &str = "bootstrap.state";
/// The highest version ever installed (the downgrade guard).
pub const HIGHEST: &str = "highest-version";

/// Top-level files the bootstrap owns.
pub const BOOTSTRAP_FILES: &[&str] = &[LOCK, CHECKPOINT, HIGHEST];
/// Top-level directories the bootstrap owns.
pub const BOOTSTRAP_DIRS: &[&str] = &["logs", "diag", "tailnet"];

/// Whether a top-level name of a state directory is the bootstrap's own:
/// one of the lists above, or the temporary file of an atomic write of one
/// (`.NAME.tmp-PID`).
pub fn is_bootstrap_owned(top: &str) -> bool {
    if BOOTSTRAP_FILES.contains(&top) || BOOTSTRAP_DIRS.contains(&top) {
        return true;
    }
    match top.strip_prefix('.').and_then(|t| t.split_once(".tmp-")) {
        Some((name, _)) => BOOTSTRAP_FILES.contains(&name),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_and_their_temporaries() {
        for n in ["lock", "bootstrap.state", "highest-version", "logs", "diag", "tailnet", ".bootstrap.state.tmp-42"] {
            assert!(is_bootstrap_owned(n), "{n}");
        }
        for n in ["sessions", "config.toml", ".lock", "locks", ".sessions.tmp-42", "bootstrap.state.bak"] {
            assert!(!is_bootstrap_owned(n), "{n}");
        }
    }
}

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
/// The highest root version whose chain an install here accepted, and the
/// sha256 of that root's text: `<version> <sha256 hex>` (the freeze and
/// rollback guard of the root chain, docs/TRUST.md).
pub const HIGHEST_ROOT: &str = "highest-root";

/// What a file's type bits (`st_mode`) name, for the refusal of a file
/// found where the stub or nxs-backup expected one of its own.
pub fn file_kind(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o100000 => "regular file",
        0o040000 => "directory",
        0o120000 => "symbolic link",
        0o010000 => "FIFO",
        0o140000 => "socket",
        0o020000 => "character device",
        0o060000 => "block device",
        _ => "special file",
    }
}

/// The refusal of such a file: `<path> is a <kind>, not a <expected>`.
pub fn planted(path: &std::path::Path, mode: u32, expected: &str) -> String {
    format!("{} is a {}, not a {expected}: refusing to use it", path.display(), file_kind(mode))
}

/// The hint that goes with [`planted`].
pub const PLANTED_HINT: &str = "nxs did not put it there, and never follows a link or opens a special file it did not make; look at what it is, move it away, and run again";

/// Top-level files the bootstrap owns.
pub const BOOTSTRAP_FILES: &[&str] = &[LOCK, CHECKPOINT, HIGHEST, HIGHEST_ROOT];
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
    fn file_kinds_are_named() {
        for (mode, kind) in [(0o100644, "regular file"), (0o040755, "directory"), (0o120777, "symbolic link")] {
            assert_eq!(file_kind(mode), kind);
        }
        for (mode, kind) in [(0o010600, "FIFO"), (0o140755, "socket"), (0o020600, "character device")] {
            assert_eq!(file_kind(mode), kind);
        }
        assert_eq!(file_kind(0o060600), "block device");
    }

    #[test]
    fn owned_names_and_their_temporaries() {
        for n in [
            "lock",
            "bootstrap.state",
            "highest-version",
            "highest-root",
            "logs",
            "diag",
            "tailnet",
            ".bootstrap.state.tmp-42",
        ] {
            assert!(is_bootstrap_owned(n), "{n}");
        }
        for n in ["sessions", "config.toml", ".lock", "locks", ".sessions.tmp-42", "bootstrap.state.bak"] {
            assert!(!is_bootstrap_owned(n), "{n}");
        }
    }
}

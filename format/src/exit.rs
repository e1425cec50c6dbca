//! Exit codes: the contract of README.md (and MISSION.md section 2) that
//! scripts rely on, shared by the stub and nxs-backup so that one code
//! always means one thing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Usage = 2,
    /// Verification failed: signature, hash, MAC, corruption, truncation,
    /// a wrong key.
    Verify = 3,
    /// Incompatible: platform, format version (of a bundle or a backup),
    /// or a downgrade.
    Incompatible = 4,
    /// I/O or resources: disk full, permission, read-only.
    Io = 5,
    Locked = 6,
    /// Failed and rolled back: an upgrade, or a restore after its swap.
    RolledBack = 7,
    Degraded = 8,
    /// A hook failed and the install was left in place, not rolled back.
    HookFailed = 9,
    /// The service would not start and runs in safe mode; the operator must step in.
    SafeMode = 10,
    /// The same bundle failed too many runs in a row; not tried again
    /// without `--retry-failed`.
    GaveUp = 11,
}

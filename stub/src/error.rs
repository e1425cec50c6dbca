//! The stub's errors are `nxs_sys::error`'s, shared with nxs-backup: a
//! class that maps to a documented exit code, a message that names the
//! region, path or file, and a hint. What is the stub's own is the hint a
//! damaged bundle gets.

pub use nxs_sys::error::{Class, Error, Result};

/// A bundle, or something it carries, that failed verification (exit 3).
pub fn tampered(msg: impl Into<String>) -> Error {
    Error::verify(msg).hint(
        "the bundle is damaged or was tampered with; do not run it. Copy it again from a good source and check it with `minisign -V` against the published key",
    )
}

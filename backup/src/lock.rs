//! The state directory's lock: `nxs_sys::lock`, the same `flock` on
//! `<state>/lock` that the stub's install takes. A backup holds it while it
//! reads, so a writer that takes it too (the install, a restore, NXS
//! itself) never interleaves with it; a restore holds it from the first
//! check to the last rename.

use crate::error::Result;
use nxs_sys::door::{Access, Dir};
pub use nxs_sys::lock::Lock;
use std::path::Path;
use std::time::Duration;

/// Takes the lock, waiting up to `wait` for its holder. `inherited` is the
/// descriptor of the same lock already held by a parent (`install
/// --restore-from`): it is checked to be that file and used as is. The
/// state directory must be a real directory, not a link, and the lock a
/// regular file or nothing: anything else is a refusal (exit 5) that names
/// it, before any `open` could follow it or block on it.
pub fn take(state_dir: &Path, wait: Duration, inherited: Option<i32>) -> Result<Lock> {
    let dir = Dir::open(state_dir)?;
    match inherited {
        Some(fd) => Lock::inherit(&dir, fd),
        None => Lock::take(
            &dir,
            Access::Shared,
            wait,
            "an install, a restore or NXS itself is writing the state; wait, or raise --lock-timeout",
        ),
    }
}

//! What the stub and nxs-backup share on the I/O side, so that the two
//! programs a user meets on a stick behave and report the same way.
//! `nxs-format` stays free of I/O; this crate is its I/O twin, and carries
//! only what both programs use:
//!
//! - [`error`]: the one error type and its exit-code classes;
//! - [`door`]: a directory held open, every name below it opened relative
//!   to it, nothing followed;
//! - [`fs`]: path-level atomic writes, fsync, tree removal, the swap, free
//!   space, the state directory's resolution;
//! - [`lock`]: the state directory's lock;
//! - [`events`]: progress lines and the JSON events of docs/EVENTS.md;
//! - [`fault`]: the crash tests' fault injection (a no-op in releases).

pub mod door;
pub mod error;
pub mod events;
pub mod fault;
pub mod fs;
pub mod lock;

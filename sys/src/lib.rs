//! What the stub and nxs-backup share on the I/O side, so that the two
//! programs a user meets on a stick report the same way. `nxs-format`
//! stays free of I/O; this crate is its I/O twin, and carries only what
//! both programs use: the progress lines and the JSON events of
//! docs/EVENTS.md, and the crash tests' fault injection.

pub mod events;
pub mod fault;

//! The stub's modules, as a library: the `nxs-stub` binary (`main.rs`) is
//! their command line, and the fuzz targets under `fuzz/` drive the parsers
//! and the extraction walk directly. Link-time optimisation leaves in the
//! binary only what `main.rs` reaches.

pub mod bundle;
pub mod detect;
pub mod diag;
pub mod error;
pub mod extract;
pub mod fault;
pub mod fsx;
pub mod hooks;
pub mod install;
pub mod machine;
pub mod payload;
pub mod preflight;

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

//! The stub's modules, as a library: the `nxs-stub` binary (`main.rs`) is
//! their command line, and the fuzz targets under `fuzz/` drive the parsers
//! and the extraction walk directly. Link-time optimisation leaves in the
//! binary only what `main.rs` reaches.

pub mod age;
pub mod bundle;
pub mod child;
pub mod cli;
pub mod detect;
pub mod diag;
pub use nxs_sys::door;
pub mod error;
pub use nxs_sys::events;
pub mod extract;
pub mod fault;
pub use nxs_sys::fs as fsx;
pub mod hooks;
pub mod install;
pub mod join;
pub mod machine;
pub mod payload;
pub mod policy;
pub mod preflight;
pub mod root;
pub mod run;
pub mod secret;
pub mod shared;
pub mod statedir;
pub mod stick;
pub mod stick_frames;
pub mod tailnet;
pub mod tarwalk;
pub mod tool;

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A bare manifest for unit tests: no stub, no hooks, the given frames,
/// payload region and entries.
#[cfg(test)]
pub(crate) fn test_manifest(
    frames: Vec<nxs_format::Frame>,
    payload: nxs_format::Region,
    entries: Vec<nxs_format::Entry>,
) -> nxs_format::Manifest {
    nxs_format::Manifest {
        format: 2,
        product: "p".into(),
        version: nxs_format::Version::parse("1").unwrap(),
        tier: "t".into(),
        target: "x".into(),
        mtime: 0,
        dev: false,
        stub: nxs_format::Region { len: 0, sha256: [0; 32] },
        payload,
        frames,
        headscale: None,
        hooks: vec![],
        entries,
        tiers: None,
        shared: None,
    }
}

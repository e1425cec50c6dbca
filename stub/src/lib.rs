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
pub mod json;
pub mod machine;
pub mod payload;
pub mod preflight;

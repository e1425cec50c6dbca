//! The tasks of `cargo xtask` that are more than a call into one library
//! module, one module a task; `main.rs` parses the flags and dispatches.

pub mod big;
pub mod bundle;
pub mod demo;
pub mod fuzz;
pub mod publish;
pub mod soak;
pub mod stick;
pub mod suite;

pub use bundle::{bundle, BundleArgs};
pub use soak::corpus_bundle;
pub use suite::ensure_tools;

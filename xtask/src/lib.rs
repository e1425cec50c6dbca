//! The project's build tasks, as a library so that the end-to-end tests
//! build stubs exactly the way `cargo xtask bundle` does.
//!
//! [`platform`] reads `platforms/*.toml`, [`stub`] builds the static stub
//! for one of them, [`tool`] builds nxs-backup the same way, [`devkey`]
//! makes the development key, [`tailscale`] fetches the real Tailscale
//! client, [`double`] runs the TEST DOUBLE of the Headscale server in a
//! network namespace, [`corpus`] makes seeded corpora, [`bench`] is the
//! benchmark and [`house`] checks the house rules (file and function
//! lengths, import cycles). [`task`] holds the larger tasks, one module
//! each (bundle, demo, the test suite, soak, fuzz, big).

pub mod bench;
pub mod corpus;
pub mod devkey;
pub mod double;
pub mod house;
pub mod platform;
pub mod stub;
pub mod tailscale;
pub mod task;
pub mod tool;

use std::path::PathBuf;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The `cargo` that runs us, or the one on PATH.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// True if `tool` is an executable file on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

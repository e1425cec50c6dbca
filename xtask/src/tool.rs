//! Building `nxs-backup`, the backup and restore program a bundle carries
//! in its payload (`bin/nxs-backup`), for every platform the stub runs on,
//! the same way: static, std from source, linked by rust-lld or zig.
//!
//! It has its own profile (`tool`: speed over size, since scrypt and zstd
//! run in it) and its own target directory per feature set under
//! `target/tools/`.

use crate::platform::Platform;
use crate::stub::{cross_build, CrossBuild};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The spec component that `cargo xtask bundle` feeds with this build.
pub const COMPONENT: &str = "backup";

fn target_dir(root: &Path, features: &[&str]) -> PathBuf {
    let name = if features.is_empty() { "release".to_string() } else { features.join("-") };
    root.join("target").join("tools").join(name)
}

/// Builds `nxs-backup` for `platform`; tests ask for `fault-injection`.
pub fn build_backup(root: &Path, platform: &Platform, features: &[&str], quiet: bool) -> Result<PathBuf> {
    let job = CrossBuild {
        package: "nxs-backup",
        bin: "nxs-backup",
        profile: "tool",
        target_dir: target_dir(root, features),
        env: crate::stub::c_toolchain(root, platform)?,
        build_std_features: "",
        rustflags: &[],
        features,
    };
    cross_build(root, platform, &job, quiet)
}

/// Where [`build_backup`] leaves the binary, with `{target}` for the
/// triple, as `--source backup=PATH` takes it.
pub fn backup_source(root: &Path) -> PathBuf {
    target_dir(root, &[]).join("{target}").join("tool").join("nxs-backup")
}

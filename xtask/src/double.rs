//! The TEST DOUBLE of the Tailscale client (`tests/tailscale-double`), laid
//! out as a component source: a directory holding `tailscale` and
//! `tailscaled`. Only the tests and `cargo xtask demo` use it; a release
//! build takes the real client (see manifests/tailscale/README.md).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the double for the host and returns the directory holding it
/// under both names. Safe to call from several processes at once.
pub fn tailscale_dir(root: &Path) -> Result<PathBuf> {
    let status = Command::new(crate::cargo())
        .current_dir(root)
        // Its own target directory: a `cargo test` that calls this holds
        // the lock on the main one.
        .args(["build", "--quiet", "--release", "-p", "nxs-tailscale-double", "--target-dir"])
        .arg(root.join("target/doubles"))
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the tailscale test double failed");
    }
    let built = root.join("target/doubles/release/tailscale-double");
    let dir = root.join("target/tailscale-double");
    std::fs::create_dir_all(&dir)?;
    for name in ["tailscale", "tailscaled"] {
        // Copy, then rename: a concurrent reader sees a whole file.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(&built, &tmp).with_context(|| format!("cannot copy {}", built.display()))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(dir)
}

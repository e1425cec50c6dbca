//! `cargo xtask fuzz`: each cargo-fuzz target for a bounded time, from the
//! committed seed corpus.

use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;

/// The fuzz targets, in fuzz/Cargo.toml.
const FUZZ_TARGETS: &[&str] =
    &["trailer", "manifest", "checkpoint", "extract", "status_json", "tar_walk", "state_dir", "trust", "parity"];

/// Runs each fuzz target for `seconds`, starting from the committed seeds;
/// new inputs go to target/fuzz-corpus/, so the committed corpus stays as
/// it is. A crash fails the task and leaves its input under fuzz/artifacts/.
pub fn fuzz(root: &Path, seconds: u32, only: &[String]) -> Result<()> {
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        eprintln!("installing cargo-fuzz from crates.io");
        if !Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]).status()?.success() {
            bail!("`cargo install cargo-fuzz` failed");
        }
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    for t in FUZZ_TARGETS.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == *t)) {
        let scratch = root.join("target").join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let mut cmd = Command::new("cargo");
        if nightly {
            cmd.arg("+nightly");
        } else {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd.current_dir(root)
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", t])
            .arg(&scratch)
            .arg(root.join("fuzz").join("corpus").join(t));
        cmd.args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]);
        eprintln!("fuzzing {t} for {seconds} s");
        if !cmd.status()?.success() {
            bail!("fuzz target {t} found a failure; the input is under fuzz/artifacts/{t}/");
        }
    }
    Ok(())
}

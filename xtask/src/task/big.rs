//! `cargo xtask big`: a bundle whose payload passes 4 GiB, so that no
//! 32-bit offset can hide anywhere.

use super::*;
use anyhow::{bail, Result};
use std::path::Path;
use std::process::Command;

/// Builds, verifies, corrupts past 4 GiB, and installs a bundle of `size`
/// of incompressible data, so the payload itself passes 4 GiB.
pub fn big(root: &Path, size: &str) -> Result<()> {
    let dir = root.join("target").join("big");
    let bytes = crate::corpus::parse_size(size)?;
    eprintln!("generating {size} of incompressible data");
    crate::corpus::generate_with(&dir.join("corpus"), bytes, 3, 100)?;
    let b = &corpus_bundle(root, &dir, "nxs-big", false)?;
    let payload_end = b.manifest.stub.len + b.manifest.payload.len;
    if payload_end <= 4 << 30 {
        bail!("the payload ends at byte {payload_end}, not past 4 GiB: pass a larger --size");
    }
    let run = b.path.clone();
    let verify = |file: &Path, what: &str| -> Result<std::process::Output> {
        let t = std::time::Instant::now();
        let o = Command::new(file).arg("verify").output()?;
        eprintln!("verify ({what}): exit {:?} in {:.1}s", o.status.code(), t.elapsed().as_secs_f64());
        Ok(o)
    };
    if !verify(&run, "intact")?.status.success() {
        bail!("the intact big bundle does not verify");
    }
    // A copy with one byte flipped past 4 GiB, inside the payload.
    let at = (4u64 << 30) + 12345;
    if at >= payload_end {
        bail!("byte {at} is past the payload");
    }
    let damaged = dir.join("damaged.run");
    std::fs::copy(&run, &damaged)?;
    flip(&damaged, at)?;
    let o = verify(&damaged, &format!("byte {at} flipped"))?;
    std::fs::remove_file(&damaged)?;
    let err = String::from_utf8_lossy(&o.stderr);
    // Format 3 names the frame that holds the byte, with its 64-bit range.
    let mut start = b.manifest.stub.len;
    let (i, f) = b
        .manifest
        .frames
        .iter()
        .enumerate()
        .find(|(_, f)| {
            start += f.compressed;
            at < start
        })
        .expect("the byte lies in the payload");
    let range = format!(
        "payload frame {i} of {} (bytes {}..{start} of the bundle)",
        b.manifest.frames.len(),
        start - f.compressed
    );
    if o.status.code() != Some(3) || !err.contains(&range) {
        bail!("a flipped byte past 4 GiB was not refused as damage to {range}: {err}");
    }
    let work = dir.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let t = std::time::Instant::now();
    let st = Command::new(&run)
        .args(["install", "--quiet", "--root"])
        .arg(work.join("root"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .status()?;
    if !st.success() {
        bail!("installing the big bundle failed ({st})");
    }
    println!(
        "big: payload {} bytes ending at byte {payload_end} (past 4 GiB): verified, a flip at byte {at} refused (exit 3), installed in {:.1}s",
        b.manifest.payload.len,
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Flips one bit of the byte at `at`, in place.
fn flip(file: &Path, at: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file)?;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at)?;
    byte[0] ^= 0x20;
    f.write_all_at(&byte, at)?;
    Ok(f.sync_all()?)
}

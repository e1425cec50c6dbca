//! `cargo xtask soak`: kill -9 an install at random moments, then check
//! that every rerun converges.

use super::*;
use crate::platform::Platform;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Writes a spec for the corpus in `dir/corpus` (the stub as the tool, the
/// corpus as data, one tier) and builds its bundle for the host with the
/// development key. With `validate`, the tool re-hashes the install as the
/// validate hook.
pub fn corpus_bundle(root: &Path, dir: &Path, name: &str, validate: bool) -> Result<nxs_bundler::Packed> {
    let host = Platform::host(root)?;
    let hook = if validate {
        "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \".\"]\ntimeout = 600\n"
    } else {
        ""
    };
    let spec = format!(
        "platforms = [{:?}]\n[product]\nname = \"{name}\"\nversion = \"1.0.0\"\n[trust]\nkeys = []\n{hook}\
         [[component]]\nname = \"tool\"\nfrom = \"stub\"\ninstall = \"bin/nxs-survival\"\nmode = 0o755\n\
         [[component]]\nname = \"data\"\nsource = \"corpus\"\ninstall = \"data\"\n\
         [[tier]]\nname = \"all\"\ncomponents = [\"tool\", \"data\"]\n",
        host.triple
    );
    std::fs::write(dir.join("spec.toml"), spec)?;
    let args = BundleArgs {
        manifest: dir.join("spec.toml"),
        platforms: vec![host.triple],
        tiers: vec![],
        multi_tier: false,
        out: dir.join("out"),
        key: Vec::new(),
        password_file: None,
        sources: vec![],
        dry_run: false,
    };
    let mut report = bundle(root, &args)?.expect("not a dry run");
    Ok(report.bundles.remove(0))
}

/// The soak: one bundle of a generated corpus, installed `iterations`
/// times, each run killed with SIGKILL at a random moment and then run
/// again. After every kill the checkpoint must parse and the root must be
/// absent or complete; after every rerun the install must be RUNNING and
/// match its record.
pub fn soak(root: &Path, iterations: u32, size: &str, seed: u64) -> Result<()> {
    let dir = root.join("target").join("soak");
    let bytes = crate::corpus::parse_size(size)?;
    eprintln!("generating a {size} corpus (seed {seed})");
    let (files, _) = crate::corpus::generate(&dir.join("corpus"), bytes, seed)?;
    let run = corpus_bundle(root, &dir, "nxs-soak", true)?.path;
    let work = dir.join("work");
    let (troot, state) = (work.join("root"), work.join("state"));
    let install = |quiet: bool| {
        let mut c = Command::new(&run);
        c.args(["install", "--root"]).arg(&troot).arg("--state-dir").arg(&state).arg("--quiet");
        c.stdout(std::process::Stdio::null());
        if quiet {
            c.stderr(std::process::Stdio::null());
        }
        c
    };
    let reset = || -> Result<()> {
        if work.exists() {
            Command::new("chmod").args(["-R", "u+w"]).arg(&work).status()?;
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        Ok(())
    };
    reset()?;
    let started = std::time::Instant::now();
    let st = install(false).status()?;
    let full = started.elapsed();
    if !st.success() {
        bail!("a clean install of the soak bundle failed");
    }
    eprintln!("clean install of {files} files: {:.2}s; now {iterations} kills at random moments", full.as_secs_f64());
    let mut rng = crate::corpus::Rng::new(seed ^ 0x5eed);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for i in 1..=iterations {
        reset()?;
        let delay = std::time::Duration::from_micros(rng.below(full.as_micros() as u64 * 11 / 10 + 1));
        let mut child = install(true).spawn()?;
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait()?;
        let status = Command::new(&run).arg("status").arg("--state-dir").arg(&state).arg("--json").output()?;
        if !status.status.success() {
            bail!(
                "iteration {i}: after a kill at {:?}, status fails: {}",
                delay,
                String::from_utf8_lossy(&status.stderr)
            );
        }
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        let at = text.split('"').nth(3).filter(|_| !text.starts_with("{\"state\":null")).unwrap_or("none").to_string();
        *seen.entry(at.clone()).or_default() += 1;
        if troot.join(nxs_format::RECORD_DIR).exists() {
            let c = Command::new(troot.join("bin/nxs-survival")).arg("check").arg("--root").arg(&troot).output()?;
            if !c.status.success() {
                bail!("iteration {i}: killed in {at}, the root is incomplete: {}", String::from_utf8_lossy(&c.stdout));
            }
        }
        let out = install(true).stderr(std::process::Stdio::piped()).output()?;
        if !out.status.success() {
            bail!(
                "iteration {i}: the rerun after a kill in {at} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let c = Command::new(troot.join("bin/nxs-survival")).arg("check").arg("--root").arg(&troot).output()?;
        if !c.status.success() {
            bail!("iteration {i}: after the rerun the install does not match: {}", String::from_utf8_lossy(&c.stdout));
        }
    }
    let summary: Vec<String> = seen.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "soak: {iterations} kills on a {size} bundle ({files} files), all converged; killed with the checkpoint at: {}",
        summary.join(", ")
    );
    reset()?;
    Ok(())
}

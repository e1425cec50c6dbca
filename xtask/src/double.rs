//! The TEST DOUBLE of a Headscale server (`tests/headscale-double`) and the
//! network namespace it and the real Tailscale client share. Only the tests
//! and `cargo xtask demo` use them; a release never carries either.
//!
//! Everything runs in a namespace of its own (`ip netns add`): loopback up,
//! and a veth pair on TEST-NET-1 (192.0.2.0/24, RFC 5737) with no route out,
//! because the real tailscaled takes a machine with only a loopback for one
//! whose network is down and pauses its control client (tailscale v1.96.4
//! `net/netmon/state.go` 449-454, 522-532; `ipn/ipnlocal/local.go` 968-978).
//! Nothing in the namespace can reach this machine's network, or any other.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Builds the double and returns its program. Safe to call from several
/// processes at once.
pub fn headscale_bin(root: &Path) -> Result<PathBuf> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new(crate::cargo())
        .current_dir(root)
        // Its own target directory: a `cargo test` that calls this holds
        // the lock on the main one.
        .args(["build", "--quiet", "--release", "-p", "nxs-headscale-double", "--target-dir"])
        .arg(root.join("target/doubles"))
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the headscale test double failed");
    }
    Ok(root.join("target/doubles/release/headscale-double"))
}

/// A loopback port nothing listens on (for now). A namespace has ports of
/// its own, so one free here is free in a new namespace too.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Stops the tailscaled supervisor an install started for `state_dir` (the
/// process group named by its pid file), and waits until it is gone, as an
/// operator stopping the service would.
pub fn stop_tailscaled(state_dir: &Path) {
    let Ok(pid) = std::fs::read_to_string(state_dir.join("tailnet/tailscaled.pid")) else { return };
    let group = format!("-{}", pid.trim());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    for _ in 0..100 {
        let alive = Command::new("kill").args(["-0", "--", &group]).output();
        if !alive.is_ok_and(|o| o.status.success()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace, removed (with every process in it) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Result<NetNs> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("nxs-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ip = |args: &[&str]| -> Result<()> {
            let o = Command::new("ip").args(args).output().context("cannot run `ip` (apt-get install iproute2)")?;
            if !o.status.success() {
                bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
            }
            Ok(())
        };
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "add", "nxs0", "type", "veth", "peer", "name", "nxs1"])?;
        ip(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "nxs0"])?;
        ip(&["-n", n, "link", "set", "nxs0", "up"])?;
        ip(&["-n", n, "link", "set", "nxs1", "up"])?;
        Ok(ns)
    }

    /// `program` run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The Headscale double, serving in a namespace; stopped on drop.
pub struct Headscale {
    pub bin: PathBuf,
    pub db: PathBuf,
    /// Its login server URL, `https://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    child: Option<Child>,
}

impl Headscale {
    /// Starts `headscale-double serve` in `ns` on loopback `port` with its
    /// database in `db`, and waits until it listens.
    pub fn start(bin: &Path, ns: &NetNs, db: &Path, port: u16, extra: &[&str]) -> Result<Headscale> {
        std::fs::create_dir_all(db)?;
        let ready = db.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(db.join("server.log"))?;
        let child = ns
            .cmd(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start the headscale double")?;
        let mut h = Headscale {
            bin: bin.to_path_buf(),
            db: db.to_path_buf(),
            url: format!("https://127.0.0.1:{port}"),
            port,
            child: Some(child),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if let Some(Ok(Some(st))) = h.child.as_mut().map(|c| c.try_wait()) {
                bail!("the headscale double exited ({st}): {}", h.log());
            }
            if Instant::now() > until {
                bail!("the headscale double did not start within 20 s: {}", h.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(h)
    }

    /// The CA certificate its TLS certificate chains to (made before the
    /// server starts, so that a bundle can carry it).
    pub fn ca(bin: &Path, db: &Path) -> Result<PathBuf> {
        let o = Command::new(bin).arg("ca").arg("--db").arg(db).output()?;
        if !o.status.success() {
            bail!("headscale-double ca: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    }

    /// `preauthkeys create` in the database `db`: a new single-use key with
    /// these tags and expiration, as `headscale preauthkeys create` makes.
    pub fn key_in(bin: &Path, db: &Path, tags: &str, expiration: &str) -> String {
        let o = Command::new(bin)
            .args(["preauthkeys", "create", "--db"])
            .arg(db)
            .args(["--tags", tags, "--expiration", expiration])
            .output()
            .expect("headscale-double runs");
        assert!(o.status.success(), "preauthkeys create: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `preauthkeys list` or `nodes list`, as JSON text.
    pub fn list(&self, what: &str) -> Result<String> {
        Headscale::list_in(&self.bin, &self.db, what)
    }

    /// `preauthkeys list` or `nodes list` of the database `db`, served or not.
    pub fn list_in(bin: &Path, db: &Path, what: &str) -> Result<String> {
        let o = Command::new(bin).args([what, "list", "--db"]).arg(db).output()?;
        if !o.status.success() {
            bail!("{what} list: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// What it logged (every line labelled as the double's).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.db.join("server.log")).unwrap_or_default()
    }

    /// Its event log, one JSON object a line.
    pub fn events(&self) -> String {
        std::fs::read_to_string(self.db.join("events.jsonl")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the double: this pid is the double.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Headscale {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The example spec (`manifests/survival.toml`) pointed at another login
/// server: written into `dir` with every path made absolute, its login
/// server replaced by `login_server`, and a copy of its `config` component
/// whose Headscale CA is `ca`. Returns the spec and the config copy, to be
/// passed as `--source config=DIR`. The demo joins the double with it; the
/// example spec itself is untouched.
pub fn example_spec_for(root: &Path, dir: &Path, login_server: &str, ca: &Path) -> Result<(PathBuf, PathBuf)> {
    let manifests = root.join("manifests");
    let text = std::fs::read_to_string(manifests.join("survival.toml"))?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("login_server = "))
        .context("manifests/survival.toml has no login_server")?;
    let mut out = text.replace(line, &format!("login_server = \"{login_server}\""));
    out = out.replace("source = \"", &format!("source = \"{}/", manifests.display()));
    out = out.replace("\"../keys/", &format!("\"{}/", root.join("keys").display()));
    std::fs::create_dir_all(dir)?;
    let spec = dir.join("survival.toml");
    std::fs::write(&spec, out)?;
    // The config component, with the double's CA in the CA's place.
    let config = dir.join("config");
    let _ = std::fs::remove_dir_all(&config);
    copy_tree(&manifests.join("survival/etc"), &config)?;
    std::fs::copy(ca, config.join("headscale-ca.pem"))?;
    Ok((spec, config))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

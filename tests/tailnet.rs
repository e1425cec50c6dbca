//! The Headscale join, end to end: the real stub drives the TEST DOUBLE of
//! tailscale/tailscaled (tests/tailscale-double) against a TEST DOUBLE of
//! Headscale's HTTP side (common::headscale). The double stands in for the
//! real client here only because a join needs a server that speaks
//! Tailscale's control protocol, which no double of ours does yet (#13);
//! what the real client can show offline is in tests/real_client.rs.

use nxs_tests::headscale::{free_port, Daemon, Key, Server};
use nxs_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Fields drop in order: the daemon is stopped before its directory goes.
struct Case {
    _daemon: Daemon,
    _p: Project,
    bundle: PathBuf,
    tmp: tempfile::TempDir,
}

impl Case {
    fn new(login_server: &str) -> Case {
        let p = Project::with_tailnet(login_server);
        let report = p.build(&p.path().join("out"));
        let bundle = bundle_of(&report, "minimal").to_path_buf();
        let tmp = tempfile::tempdir().unwrap();
        let daemon = Daemon(tmp.path().join("state"));
        Case { _daemon: daemon, _p: p, bundle, tmp }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn key_file(&self, key: &str) -> PathBuf {
        let f = self.tmp.path().join("authkey.txt");
        write(&f, format!("{key}\n").as_bytes(), 0o644);
        f
    }
    fn install(&self, extra: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(&self.bundle);
        cmd.args(["install", "--root", self.root().to_str().unwrap(), "--state-dir", self.state().to_str().unwrap()])
            .args(["--join-attempts", "1", "--probe-timeout", "2"])
            .args(extra)
            .env_remove("NXS_AUTHKEY_FILE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd).unwrap()
    }
    fn status(&self) -> String {
        let o = run(&self.bundle, &["status", "--state-dir", self.state().to_str().unwrap(), "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stdout(&o)
    }
    /// The double's records: (file name, bytes).
    fn records(&self) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for dir in [self.state().join("tailnet/double-record"), self.state().join("hook-record")] {
            if let Ok(it) = std::fs::read_dir(&dir) {
                for e in it.flatten() {
                    v.push((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        v.sort();
        v
    }
    fn up_records(&self) -> Vec<(String, String)> {
        let all = self.records();
        let mut out = Vec::new();
        for (name, bytes) in &all {
            if name.starts_with("tailscale-up-") && name.ends_with(".info") {
                let stem = name.trim_end_matches(".info");
                let argv = all.iter().find(|(n, _)| n == &format!("{stem}.cmdline")).map(|(_, b)| b.clone()).unwrap();
                out.push((
                    String::from_utf8_lossy(bytes).into_owned(),
                    String::from_utf8_lossy(&argv).replace('\0', " "),
                ));
            }
        }
        out
    }
}

fn a_key(tag: &str) -> String {
    format!("hskey-auth-{tag}-{:x}", (std::process::id() as u64 * 0x9e37_79b9) ^ nxs_stub_now())
}

fn nxs_stub_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn online_join_reaches_running_and_removes_the_key() {
    let key = a_key("online");
    let server = Server::start(free_port(), &[(&key, Key::Valid)]);
    let c = Case::new(&server.url);
    let f = c.key_file(&key);
    let o = c.install(&["--authkey-file", f.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("RUNNING"), "{}", stdout(&o));
    assert!(stderr(&o).contains("login server http://127.0.0.1"), "{}", stderr(&o));

    // The double saw the login server and the key by file, 0600.
    let ups = c.up_records();
    assert_eq!(ups.len(), 1, "{ups:?}");
    let (info, argv) = &ups[0];
    assert!(info.contains("key=file\nkey_mode=600\n"), "{info}");
    assert!(info.contains(&format!("key_len={}\n", key.len())), "{info}");
    assert!(argv.contains(&format!("--login-server={}", server.url)), "{argv}");
    let key_path = c.state().join("tailnet/authkey");
    assert!(argv.contains(&format!("--auth-key=file:{}", key_path.display())), "{argv}");
    // No tags asked for: Headscale 0.28+ refuses them with a pre-auth key;
    // the node has the key's tags.
    assert!(!argv.contains("--advertise-tags") && argv.contains("--accept-dns=false"), "{argv}");
    assert_eq!(*server.keys.lock().unwrap().get(&key).unwrap(), Key::Used, "the server registered this very key");
    // tailscaled ran with userspace networking and the bundle's CA.
    let daemon_argv =
        c.records().into_iter().find(|(n, _)| n.starts_with("tailscaled-") && n.ends_with(".cmdline")).unwrap().1;
    assert!(String::from_utf8_lossy(&daemon_argv).contains("--tun=userspace-networking"));
    assert!(String::from_utf8_lossy(&daemon_argv).contains("--no-logs-no-support"), "no log upload");
    let daemon_env =
        c.records().into_iter().find(|(n, _)| n.starts_with("tailscaled-") && n.ends_with(".environ")).unwrap().1;
    assert!(String::from_utf8_lossy(&daemon_env)
        .contains(&format!("SSL_CERT_FILE={}", c.root().join("etc/ca.pem").display())));

    // The key is gone; status says joined.
    assert!(!key_path.exists(), "the key file must be removed after the join");
    let st = c.status();
    assert!(st.contains("\"state\":\"RUNNING\"") && st.contains("\"tailnet\":{\"joined\":true"), "{st}");

    // A second install finds it running and does nothing.
    let o = c.install(&[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
}

/// Offline first (nothing listens on the login server's port): DEGRADED with
/// the join pending. Then the server comes up: the next install joins and
/// reaches RUNNING without extracting again. A canary key goes through it
/// all and must show up nowhere but in its own 0600 file.
#[test]
fn offline_then_online_resumes_the_join_and_the_key_never_leaks() {
    let canary = a_key("canary");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let c = Case::new(&url);
    let f = c.key_file(&canary);

    let o1 = c.install(&[], &[("NXS_AUTHKEY_FILE", &f)]);
    assert_eq!(code(&o1), 8, "{}{}", stdout(&o1), stderr(&o1));
    assert!(stderr(&o1).contains("the tailnet join is pending: login server unreachable"), "{}", stderr(&o1));
    let st = c.status();
    assert!(st.contains("\"state\":\"DEGRADED\""), "{st}");
    assert!(st.contains("\"pending\":true") && st.contains("unreachable"), "{st}");
    let key_path = c.state().join("tailnet/authkey");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the stashed key is 0600");
    assert_eq!(std::fs::metadata(c.state().join("tailnet")).unwrap().permissions().mode() & 0o777, 0o700);
    let probe = c.root().join("etc/nxs.toml");
    let ino = std::fs::metadata(&probe).unwrap().ino();

    let server = Server::start(port, &[(&canary, Key::Valid)]);
    // No key given this time: the stashed one is used.
    let o2 = c.install(&[], &[]);
    assert_eq!(code(&o2), 0, "{}{}", stdout(&o2), stderr(&o2));
    assert!(stderr(&o2).contains("resuming at CONFIGURING"), "{}", stderr(&o2));
    assert!(!stderr(&o2).contains("extracting"), "no re-extraction: {}", stderr(&o2));
    assert_eq!(std::fs::metadata(&probe).unwrap().ino(), ino, "installed files were not written again");
    assert!(!key_path.exists());
    let st = c.status();
    assert!(st.contains("\"state\":\"RUNNING\"") && st.contains("\"joined\":true"), "{st}");
    assert_eq!(*server.keys.lock().unwrap().get(&canary).unwrap(), Key::Used);

    // The canary: nowhere in argv or environments (the double's and the
    // hook's own records, the stub's as its hook saw it, and every process
    // running now), logs, the checkpoint, status, the dump, or our output.
    let mut places: Vec<(String, Vec<u8>)> = c.records();
    assert!(places.iter().any(|(n, _)| n.starts_with("stub.")), "the hook recorded the stub's argv and environment");
    assert!(places.iter().any(|(n, _)| n.starts_with("tailscale-up-")), "the double recorded `up`");
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        for what in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(proc_dir.path().join(what)) {
                places.push((format!("{}/{what}", proc_dir.path().display()), b));
            }
        }
    }
    let mut files = vec![c.state().join("bootstrap.state")];
    for sub in ["logs", "diag"] {
        files.extend(std::fs::read_dir(c.state().join(sub)).unwrap().flatten().map(|e| e.path()));
    }
    assert!(
        files.iter().any(|p| p.extension().is_some_and(|e| e == "tar")),
        "the DEGRADED run wrote a dump: {files:?}"
    );
    for p in files {
        places.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    }
    for o in [&o1, &o2] {
        places.push(("stub stdout".into(), o.stdout.clone()));
        places.push(("stub stderr".into(), o.stderr.clone()));
    }
    places.push(("status --json".into(), c.status().into_bytes()));
    let text = run(&c.bundle, &["status", "--state-dir", c.state().to_str().unwrap()]);
    places.push(("status".into(), text.stdout));
    // This test process holds the canary in its own memory and argv-free
    // environment; /proc/self is ours, so skip our own pid.
    let me = format!("/proc/{}/", std::process::id());
    for (name, bytes) in &places {
        if name.starts_with(&me) {
            continue;
        }
        assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "the auth key leaked into {name}");
    }
    assert!(places.len() > 20, "the scan looked at {} places", places.len());
}

#[test]
fn a_rejected_key_says_how_to_make_a_new_one() {
    let key = a_key("expired");
    let server = Server::start(free_port(), &[(&key, Key::Expired)]);
    let c = Case::new(&server.url);
    let f = c.key_file(&key);
    let o = c.install(&["--authkey-file", f.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 8, "{}{}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("rejected the auth key") && e.contains("expired"), "{e}");
    // A hint Headscale 0.26 to 0.29 accepts: no user name (a numeric ID,
    // optional since 0.28), the tags on the key.
    assert!(e.contains("headscale preauthkeys create --tags tag:nxs,tag:test --expiration 24h"), "{e}");
    assert!(!e.contains("--user USER"), "{e}");
    assert!(!c.state().join("tailnet/authkey").exists(), "a rejected key is not kept");
    assert!(c.status().contains("rejected the auth key"));

    // A used key is refused the same way.
    let used = a_key("used");
    server.keys.lock().unwrap().insert(used.clone(), Key::Used);
    let f = c.key_file(&used);
    let o = c.install(&["--authkey-file", f.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("rejected the auth key: authkey already used"), "{}", stderr(&o));
    assert!(!c.state().join("tailnet/authkey").exists(), "a used key is not kept");

    // An unknown key too, in 0.29's words.
    let unknown = a_key("unknown");
    let f = c.key_file(&unknown);
    let o = c.install(&["--authkey-file", f.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("rejected the auth key: invalid pre auth key"), "{}", stderr(&o));
}

/// Encrypts `plain` with the stock `age -p`, typing the passphrase (twice)
/// into its terminal through `script`.
fn age_encrypt(plain: &Path, out: &Path, passphrase: &str, armor: bool) {
    require_tool("age");
    require_tool("script");
    let cmd = format!("age -p {}-o '{}' '{}'", if armor { "-a " } else { "" }, out.display(), plain.display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        stdin.write_all(format!("{passphrase}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "age -p failed");
    let head: &[u8] =
        if armor { b"-----BEGIN AGE ENCRYPTED FILE-----\n" } else { b"age-encryption.org/v1\n-> scrypt " };
    assert!(std::fs::read(out).unwrap().starts_with(head));
}

#[test]
fn an_age_encrypted_key_from_the_stock_cli_is_accepted() {
    age_key_case(false);
}

#[test]
fn an_armored_age_key_is_accepted_too() {
    age_key_case(true);
}

fn age_key_case(armor: bool) {
    let key = a_key("age");
    let server = Server::start(free_port(), &[(&key, Key::Valid)]);
    let c = Case::new(&server.url);
    let plain = c.key_file(&key);
    let sealed = c.tmp.path().join("authkey.age");
    age_encrypt(&plain, &sealed, "correct horse battery", armor);
    std::fs::remove_file(&plain).unwrap();
    let pw = c.tmp.path().join("pass.txt");

    // A wrong passphrase is refused before anything is written.
    write(&pw, b"wrong horse\n", 0o600);
    let o = c.install(&["--authkey-age", sealed.to_str().unwrap(), "--passphrase-file", pw.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("the passphrase does not decrypt it"), "{}", stderr(&o));
    assert!(!c.state().exists() && !c.root().exists(), "nothing written on a wrong passphrase");

    write(&pw, b"correct horse battery\n", 0o600);
    // A stale NXS_AUTHKEY_FILE in the environment does not override the flag.
    let stale = c.tmp.path().join("stale-key-file");
    let o = c.install(
        &["--authkey-age", sealed.to_str().unwrap(), "--passphrase-file", pw.to_str().unwrap()],
        &[("NXS_AUTHKEY_FILE", &stale)],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(*server.keys.lock().unwrap().get(&key).unwrap(), Key::Used, "the decrypted key is the one registered");
    assert!(!c.state().join("tailnet/authkey").exists());
}

#[test]
fn key_sources_are_checked_before_anything_is_written() {
    let c = Case::new("http://127.0.0.1:9");
    let missing = c.tmp.path().join("no-such-key");
    let o = c.install(&["--authkey-file", missing.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-key"), "{}", stderr(&o));
    let bad = c.tmp.path().join("two-lines");
    write(&bad, b"hskey one\nsecond line\n", 0o600);
    let o = c.install(&["--authkey-file", bad.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not look like an auth key") && !stderr(&o).contains("second line"),
        "{}",
        stderr(&o)
    );
    assert!(!c.state().exists() && !c.root().exists());
}

/// Killed at every effect of an install that joins (the `fault-injection`
/// stub kills itself), then run again: it ends RUNNING and joined, the key
/// is gone, and a key is never spent twice (a run killed after `up` finds
/// the daemon already logged in).
#[test]
fn sigkill_at_every_effect_of_a_join_then_rerun_joins() {
    use std::collections::BTreeMap;
    use std::os::unix::process::ExitStatusExt;
    let server = Server::start(free_port(), &[]);
    let p = Project::with_tailnet(&server.url);
    let stubs = BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let report = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let bundle = bundle_of(&report, "minimal");
    let install = |t: &Path, key: Option<&Path>, env: &[(&str, String)]| {
        let mut cmd = Command::new(bundle);
        cmd.args([
            "install",
            "--root",
            t.join("root").to_str().unwrap(),
            "--state-dir",
            t.join("state").to_str().unwrap(),
        ])
        .args(["--join-attempts", "1"]);
        if let Some(k) = key {
            cmd.arg("--authkey-file").arg(k);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        output(&mut cmd).unwrap()
    };
    let new_key = |t: &Path, n: usize| {
        let key = a_key(&format!("crash{n}"));
        server.keys.lock().unwrap().insert(key.clone(), Key::Valid);
        let f = t.join("key.txt");
        write(&f, key.as_bytes(), 0o600);
        (key, f)
    };

    let t = tempfile::tempdir().unwrap();
    let _d = Daemon(t.path().join("state"));
    let (_, f) = new_key(t.path(), 0);
    let o = install(t.path(), Some(&f), &[("NXS_FAULT_TRACE", "1".into())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let trace: Vec<String> = stderr(&o).lines().filter(|l| l.starts_with("fault: effect ")).map(String::from).collect();
    for e in ["tailnet-daemon", "tailnet-up", "tailnet-forget-key"] {
        assert!(trace.iter().any(|l| l.ends_with(e)), "{e} is an effect: {trace:?}");
    }

    for n in 1..=trace.len() {
        let t = tempfile::tempdir().unwrap();
        let _d = Daemon(t.path().join("state"));
        let (key, f) = new_key(t.path(), n);
        let o = install(t.path(), Some(&f), &[("NXS_FAULT_CRASH_AT", n.to_string())]);
        assert_eq!(o.status.signal(), Some(9), "run {n} is killed at {}: {}", trace[n - 1], stderr(&o));
        // The operator runs the same command again. A key already spent by
        // the killed run must not be spent again: the server refuses reuse.
        let o = install(t.path(), Some(&f), &[]);
        assert_eq!(code(&o), 0, "rerun after a crash at {}: {}", trace[n - 1], stderr(&o));
        let s = run(bundle, &["status", "--state-dir", t.path().join("state").to_str().unwrap(), "--json"]);
        assert!(
            stdout(&s).starts_with("{\"state\":\"RUNNING\"") && stdout(&s).contains("\"joined\":true"),
            "{}",
            stdout(&s)
        );
        assert!(!t.path().join("state/tailnet/authkey").exists(), "after a crash at {}, the key is gone", trace[n - 1]);
        assert_eq!(server.keys.lock().unwrap().get(&key), Some(&Key::Used));
    }
    eprintln!("a joining install crashed and recovered at each of {} effects", trace.len());
}

/// On a terminal, with the server reachable and no key given, install asks
/// for the key with echo off: what it typed never shows on the terminal.
#[test]
fn the_key_can_be_typed_at_a_prompt_without_echo() {
    require_tool("script");
    let key = a_key("typed");
    let server = Server::start(free_port(), &[(&key, Key::Valid)]);
    let c = Case::new(&server.url);
    let cmd = format!(
        "'{}' install --root '{}' --state-dir '{}' --join-attempts 1",
        c.bundle.display(),
        c.root().display(),
        c.state().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("NXS_AUTHKEY_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Wait for the prompt: the state machine reaches CONFIGURING first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !c.root().join(".nxs-bundle").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    use std::io::Write;
    stdin.write_all(format!("{key}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(terminal.contains("Headscale pre-auth key (input hidden"), "{terminal}");
    assert!(terminal.contains("RUNNING"), "{terminal}");
    assert!(!terminal.contains(&key), "the typed key was echoed: {terminal}");
    assert_eq!(*server.keys.lock().unwrap().get(&key).unwrap(), Key::Used);
}

/// A daemon already Running on another login server (an earlier bundle's,
/// say) is not taken as joined: the stub reads its `ControlURL`, joins
/// again with `--force-reauth`, and ends joined to the signed server.
#[test]
fn a_node_running_on_another_login_server_is_joined_again() {
    let key = a_key("elsewhere");
    let server = Server::start(free_port(), &[(&key, Key::Valid)]);
    let c = Case::new(&server.url);
    // The double's node: logged in, to another server.
    write(&c.state().join("tailnet/double-node"), b"http://127.0.0.1:9\nold-node\n\n", 0o600);
    let f = c.key_file(&key);
    let o = c.install(&["--authkey-file", f.to_str().unwrap()], &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("tailscaled is logged in to http://127.0.0.1:9, not to {}", server.url)),
        "{}",
        stderr(&o)
    );
    let ups = c.up_records();
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert!(ups[0].1.contains("--force-reauth"), "{}", ups[0].1);
    assert_eq!(*server.keys.lock().unwrap().get(&key).unwrap(), Key::Used);
    assert!(c.status().contains("\"tailnet\":{\"joined\":true"), "{}", c.status());
}

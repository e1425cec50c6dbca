//! TEST DOUBLE of Tailscale's `tailscale` CLI and `tailscaled` daemon.
//!
//! The real client cannot be installed from any registry this project
//! reaches, so the tests (and `cargo xtask demo`) pack this program under
//! both names instead, at the same process boundary: the stub starts
//! "tailscaled" and runs "tailscale up" / "tailscale status --json" exactly
//! as it would the real ones. It is never shipped in a release bundle.
//!
//! What it does, by the name it is called by:
//!
//! * `tailscaled --socket=S --state=F --statedir=D [--tun=...]` listens on
//!   the unix socket S until killed.
//! * `tailscale --socket=S up --login-server=URL --auth-key=file:PATH ...`
//!   needs the daemon's socket, reads the key file, and registers it with
//!   the login server through `POST /nxs-double/register` (a route that only
//!   the tests' stand-in for Headscale answers; the real protocol is
//!   Tailscale's Noise-based control protocol, which this does not speak).
//!   Failure messages follow the real CLI's wording.
//! * `tailscale --socket=S status --json` prints a document shaped like
//!   `ipnstate.Status` (BackendState, Self.Online, TailscaleIPs, ...).
//!
//! Every invocation records, under `<dir of S>/double-record/`, its own
//! `/proc/self/cmdline` and `/proc/self/environ`, and for `up`, the mode and
//! length of the key file it was given (never the key): the tests read
//! these to check what the stub handed over.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = Path::new(&args[0]).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let code = if name.contains("tailscaled") { daemon(&args[1..]) } else { cli(&args[1..]) };
    std::process::exit(code);
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// Writes this process's argv and environment, as the kernel shows them.
fn record(socket: &Path, what: &str, extra: &str) {
    let dir = socket.parent().unwrap_or(Path::new(".")).join("double-record");
    let _ = std::fs::create_dir_all(&dir);
    let stem = dir.join(format!("{what}-{}-{}", std::process::id(), unique()));
    let _ = std::fs::copy("/proc/self/cmdline", stem.with_extension("cmdline"));
    let _ = std::fs::copy("/proc/self/environ", stem.with_extension("environ"));
    let _ = std::fs::write(stem.with_extension("info"), extra);
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn daemon(args: &[String]) -> i32 {
    let Some(socket) = flag(args, "socket").map(PathBuf::from) else {
        eprintln!("tailscaled (double): --socket is required here");
        return 2;
    };
    record(&socket, "tailscaled", "");
    let _ = std::fs::remove_file(&socket);
    let listener = match std::os::unix::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tailscaled (double): listen {}: {e}", socket.display());
            return 1;
        }
    };
    eprintln!("tailscaled (double): listening on {}", socket.display());
    for s in listener.incoming().flatten() {
        let mut s = s;
        let _ = s.write_all(b"tailscaled-double\n");
    }
    0
}

fn node_file(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new(".")).join("double-node")
}

fn cli(args: &[String]) -> i32 {
    let socket = PathBuf::from(flag(args, "socket").unwrap_or("/var/run/tailscale/tailscaled.sock"));
    let sub = args.iter().find(|a| !a.starts_with("--")).map(String::as_str).unwrap_or("");
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        record(&socket, &format!("tailscale-{sub}"), "daemon=down\n");
        eprintln!("failed to connect to local tailscaled; it doesn't appear to be running");
        return 1;
    }
    match sub {
        "up" => up(&socket, args),
        "status" => status(&socket),
        // `debug prefs`: the daemon's prefs as JSON; the stub reads its
        // `ControlURL`, the login server the node is set to.
        "debug" if args.iter().any(|a| a == "prefs") => {
            record(&socket, "tailscale-debug-prefs", "");
            let node = std::fs::read_to_string(node_file(&socket)).unwrap_or_default();
            let server = node.lines().next().unwrap_or("");
            println!("{{\n\t\"ControlURL\": \"{server}\",\n\t\"WantRunning\": true\n}}");
            0
        }
        other => {
            eprintln!("tailscale (double): unsupported subcommand `{other}`");
            2
        }
    }
}

fn up(socket: &Path, args: &[String]) -> i32 {
    let server = flag(args, "login-server").unwrap_or("");
    let Some(key_arg) = flag(args, "auth-key") else {
        record(socket, "tailscale-up", "key=none\n");
        eprintln!("To authenticate, visit: (interactive login is not possible here)");
        return 1;
    };
    let Some(path) = key_arg.strip_prefix("file:") else {
        record(socket, "tailscale-up", "key=argv\n");
        eprintln!("tailscale (double): the auth key was passed in argv");
        return 3;
    };
    let (mode, key) =
        match std::fs::metadata(path).and_then(|m| Ok((m.permissions().mode() & 0o7777, std::fs::read(path)?))) {
            Ok(x) => x,
            Err(e) => {
                record(socket, "tailscale-up", &format!("key=unreadable {e}\n"));
                eprintln!("reading auth key file {path:?}: {e}");
                return 1;
            }
        };
    let key = String::from_utf8_lossy(&key).trim().to_string();
    record(
        socket,
        "tailscale-up",
        &format!("key=file\nkey_mode={mode:o}\nkey_len={}\nlogin_server={server}\n", key.len()),
    );
    let timeout = flag(args, "timeout").and_then(|t| t.trim_end_matches('s').parse().ok()).unwrap_or(30);
    // The key and the tags asked for, as the real client's RegisterRequest
    // carries them (Hostinfo.RequestTags).
    let tags = flag(args, "advertise-tags").unwrap_or("");
    let body = format!("{key}\n{tags}");
    match http(server, "POST", "/nxs-double/register", &body, Duration::from_secs(timeout)) {
        Err(e) => {
            eprintln!("backend error: Post \"{server}/machine/register\": {e}");
            1
        }
        Ok((200, key_tags)) => {
            // The node's tags are the key's, as Headscale applies them.
            let hostname = flag(args, "hostname").unwrap_or("node");
            let _ = std::fs::write(node_file(socket), format!("{server}\n{hostname}\n{}\n", key_tags.trim()));
            0
        }
        // A refusal reaches the real CLI as a vizerror, which `up` prints
        // as `backend error: <message>` and exits 1 (tailscale v1.102.3
        // cmd/tailscale/cli/up.go 733-736).
        Ok((_, body)) => {
            eprintln!("backend error: {}", body.trim());
            1
        }
    }
}

/// One HTTP/1.1 request to an `http://` URL; (status, body).
fn http(url: &str, method: &str, path: &str, body: &str, timeout: Duration) -> Result<(u16, String), String> {
    use std::net::ToSocketAddrs;
    let authority =
        url.strip_prefix("http://").ok_or("the double speaks plain http only")?.split('/').next().unwrap_or("");
    let addr =
        authority.to_socket_addrs().map_err(|e| format!("dial tcp {authority}: {e}"))?.next().ok_or("no address")?;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let code = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or("malformed answer")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

fn status(socket: &Path) -> i32 {
    record(socket, "tailscale-status", "");
    let node = std::fs::read_to_string(node_file(socket)).ok();
    let (state, server, host, tags) = match &node {
        Some(n) => {
            let mut l = n.lines();
            let server = l.next().unwrap_or("").to_string();
            let host = l.next().unwrap_or("").to_string();
            let tags: Vec<String> =
                l.next().unwrap_or("").split(',').filter(|t| !t.is_empty()).map(|t| format!("{t:?}")).collect();
            ("Running", server, host, tags)
        }
        None => ("NeedsLogin", String::new(), String::new(), vec![]),
    };
    // Online: this node's control connection works, as the real client
    // reports it; here, the login server answers /health.
    let online = node.is_some() && matches!(http(&server, "GET", "/health", "", Duration::from_secs(3)), Ok((200, _)));
    let ips = if node.is_some() { r#"["100.64.0.7","fd7a:115c:a1e0::7"]"# } else { "[]" };
    println!(
        r#"{{
  "Version": "1.76.6-double",
  "TUN": false,
  "BackendState": "{state}",
  "HaveNodeKey": {have},
  "AuthURL": "",
  "TailscaleIPs": {ips},
  "Self": {{
    "ID": "nDoubleCNTRL",
    "PublicKey": "nodekey:0000000000000000000000000000000000000000000000000000000000000000",
    "HostName": "{host}",
    "DNSName": "{host}.nxs.example.",
    "OS": "linux",
    "UserID": 1,
    "TailscaleIPs": {ips},
    "Tags": [{tags}],
    "Online": {online},
    "Active": false,
    "InNetworkMap": {have},
    "InMagicSock": false,
    "InEngine": false
  }},
  "Health": [],
  "MagicDNSSuffix": "nxs.example",
  "CurrentTailnet": {{ "Name": "nxs", "MagicDNSSuffix": "nxs.example", "MagicDNSEnabled": false }},
  "Peer": {{}},
  "User": {{}},
  "ClientVersion": null
}}"#,
        have = node.is_some(),
        tags = tags.join(", "),
    );
    0
}

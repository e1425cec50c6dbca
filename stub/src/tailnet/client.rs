//! The client: `tailscale up`, `status`, the login server it is on, the
//! relay check, and what its failures mean.

use super::*;

/// Why a join did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinFailure {
    /// The login server could not be reached: try again later.
    Unreachable(String),
    /// The server refused the key; the same key will not work again.
    KeyRejected(String),
    /// The server refused the registration for another reason (tags the
    /// key may not carry, a client version outside its window): the key is
    /// kept, the operator must act.
    Refused(String),
    /// The server does not take this client's version: Headscale closes
    /// the connection of a client below its window instead of answering the
    /// Noise handshake. The key is kept; the bundle needs another client.
    VersionWindow(String),
    /// `tailscale up` gave up waiting (`--timeout`); the cause, if any, is in
    /// `tailscale status --json`'s `Health`.
    Timeout(String),
    /// Anything else the client reported.
    Client(String),
}

impl JoinFailure {
    pub fn reason(&self) -> String {
        match self {
            JoinFailure::Unreachable(m) => format!("login server unreachable: {m}"),
            JoinFailure::KeyRejected(m) => format!("the login server rejected the auth key: {m}"),
            JoinFailure::Refused(m) => format!("the login server refused the registration: {m}"),
            JoinFailure::VersionWindow(m) => format!("the login server does not accept this client's version: {m}"),
            JoinFailure::Timeout(m) => format!("tailscale up timed out: {m}"),
            JoinFailure::Client(m) => format!("tailscale up failed: {m}"),
        }
    }
}

/// What Headscale says of a pre-auth key it will never accept: v0.29
/// (`authkey expired`, `authkey already used`, `invalid pre auth key`),
/// v0.28 (`auth-key not found`), v0.26 and v0.27 (`AuthKey not found`,
/// `AuthKey expired`, `AuthKey has already been used`); juanfont/headscale
/// `hscontrol/types/preauth_key.go` and `hscontrol/auth.go`. Matched on the
/// server's message only, never on the client's whole output, which names
/// the key file's path.
const KEY_REFUSALS: &[&str] = &[
    "authkey expired",
    "authkey already used",
    "authkey has already been used",
    "invalid pre auth key",
    "authkey not found",
    "auth-key not found",
    // v0.28+: a key Headscale cannot read, one whose secret does not match
    // (db/preauth_keys.go 213-276), or none at all (types/preauth_key.go 121).
    "failed to parse auth-key",
    "invalid auth key",
    "invalid authkey",
];

/// Classifies a failed `tailscale up` from its exit status and output.
/// A refusal by the server comes as `backend error: <message>` and exit 1
/// (tailscale v1.102.3 `cmd/tailscale/cli/up.go` 733-736); a flag the
/// client does not take is exit 2 with usage text; everything else the
/// client only reports as a timeout, with the cause in `Health`.
pub fn classify_up(status: i32, output: &str) -> JoinFailure {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(msg) = lines.iter().find_map(|l| l.strip_prefix("backend error: ")) {
        return classify_server(msg);
    }
    if status == 2 {
        let first = lines.first().copied().unwrap_or("usage error");
        return JoinFailure::Client(format!(
            "the client refused its command line (exit 2): {}",
            first.chars().filter(|c| !c.is_control()).take(200).collect::<String>()
        ));
    }
    if lines.iter().any(|l| l.starts_with("timeout waiting for Tailscale service")) {
        return JoinFailure::Timeout(gist(output.as_bytes()));
    }
    let said = gist(output.as_bytes());
    JoinFailure::Client(if said.is_empty() { format!("exit status {status}") } else { said })
}

/// Classifies a message from the login server (after `backend error: `,
/// or in `Health` as the last login error).
pub fn classify_server(msg: &str) -> JoinFailure {
    let msg: String = msg.chars().filter(|c| !c.is_control()).take(300).collect();
    let lower = msg.to_ascii_lowercase();
    if KEY_REFUSALS.iter().any(|k| lower.contains(k)) {
        JoinFailure::KeyRejected(msg)
    } else if lower.contains("requested tags") {
        // Headscale 0.28+ (state.go 1825-1829): no tags may be requested
        // with a pre-auth key. The stub never asks for any; an older stub,
        // or a spec flag that does, gets here.
        JoinFailure::Refused(format!(
            "{msg}; the node's tags come from the pre-auth key (headscale preauthkeys create --tags ...)"
        ))
    } else if lower.contains("unsupported client version") {
        // On /machine/register Headscale says so in words (headscale v0.29.2
        // hscontrol/noise.go 783-785).
        JoinFailure::VersionWindow(format!(
            "{msg}; Headscale 0.29 takes tailscale 1.80 or newer, and each release drops the oldest minor versions: build the bundle with a newer Tailscale client"
        ))
    } else if lower.contains("reading response header: eof") {
        // Headscale refuses a client below its window in the early write
        // after the handshake, before the handshake's answer is sent: the
        // client reads the 101 and then the end of the stream (noise.go
        // 224-234; tailscale v1.96.4 controlhttpserver.go 81-109). Any other
        // failure after the upgrade looks the same, so this is a likely
        // cause, not a certain one.
        JoinFailure::VersionWindow(format!(
            "{msg}; the login server closed the connection without answering the Noise handshake. Headscale does this to a client outside its version window (Headscale 0.29 takes tailscale 1.80 or newer), so the bundle probably needs a newer Tailscale client; a failed handshake, or a proxy that cuts upgraded connections, looks the same"
        ))
    } else if ["connection refused", "no such host", "i/o timeout", "network is unreachable", "no route to host"]
        .iter()
        .any(|w| lower.contains(w))
    {
        JoinFailure::Unreachable(msg)
    } else {
        JoinFailure::Refused(msg)
    }
}

fn client_cmd(p: &Paths, client: &TailscaleClient, root: &Path) -> Command {
    let mut cmd = Command::new(root.join(client.tailscale.as_str()));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir(&p.dir)
        .arg(format!("--socket={}", p.socket.display()));
    cmd
}

/// The last lines of a client's output, for a message: control bytes out.
fn gist(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(2)..].join("; ");
    tail.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// `tailscale up`, with the key passed by file only.
pub fn up(
    p: &Paths,
    hs: &Headscale,
    client: &TailscaleClient,
    root: &Path,
    timeout: Duration,
    force_reauth: bool,
) -> Result<std::result::Result<(), JoinFailure>> {
    let mut cmd = client_cmd(p, client, root);
    cmd.arg("up")
        .arg(format!("--login-server={}", hs.login_server))
        .arg(format!("--auth-key=file:{}", p.key.display()))
        .arg(format!("--hostname={}", hostname(&hs.hostname)))
        .arg(format!("--timeout={}s", timeout.as_secs()))
        .arg("--reset");
    // No --advertise-tags: Headscale 0.28 and later refuse a pre-auth key
    // registration that asks for tags; a tagged key carries them.
    if force_reauth {
        // The daemon is logged in to another login server; `up` refuses
        // to change it without this (cmd/tailscale/cli/up.go).
        cmd.arg("--force-reauth");
    }
    cmd.args(&hs.up_flags);
    let done = crate::child::run_logged(
        &mut cmd,
        "tailscale up",
        p.log(CLIENT_LOG)?,
        timeout + Duration::from_secs(5),
        false,
        true,
    )?;
    if done.status == 0 {
        return Ok(Ok(()));
    }
    Ok(Err(classify_up(done.status, &String::from_utf8_lossy(&done.output))))
}

/// What `tailscale status --json` says of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub backend_state: String,
    pub online: bool,
    /// The node's tailnet addresses (`Self.TailscaleIPs`).
    pub ips: Vec<String>,
    /// The daemon's own version (`Version`).
    pub version: String,
    /// The client's health warnings; the last login error is among them
    /// ("... The last login error was: <message>").
    pub health: Vec<String>,
}

impl NodeStatus {
    /// The last login error the client reports, if any.
    pub fn last_login_error(&self) -> Option<&str> {
        self.health.iter().find_map(|h| h.split_once("last login error was: ").map(|(_, m)| m.trim_end_matches('.')))
    }
}

/// The login server the daemon is set to: `ControlURL` in `tailscale debug
/// prefs` (`status --json` does not say; tailscale v1.102.3 `ipn/prefs.go`).
pub fn control_url(p: &Paths, client: &TailscaleClient, root: &Path) -> std::result::Result<String, String> {
    let v = client_json(p, client, root, &["debug", "prefs"])?;
    Ok(v.get("ControlURL").and_then(json::Value::as_str).unwrap_or("").to_string())
}

/// Runs `tailscale ARGS` (logged to `logs/tailscale.log`) and parses the
/// JSON document it prints. The exit status is not the answer: `status`
/// exits non-zero when the backend is not running, and still prints it.
fn client_json(
    p: &Paths,
    client: &TailscaleClient,
    root: &Path,
    args: &[&str],
) -> std::result::Result<json::Value, String> {
    let what = format!("tailscale {}", args.join(" "));
    let (text, status) = client_output(p, client, root, args, &[])?;
    let start = text.find('{').ok_or_else(|| format!("{what} printed no JSON (exit {status})"))?;
    json::parse(&text[start..]).ok_or_else(|| format!("{what} printed malformed JSON"))
}

/// Runs `tailscale ARGS` with `env` added, logged to `logs/tailscale.log`,
/// and returns what it printed and its exit status.
fn client_output(
    p: &Paths,
    client: &TailscaleClient,
    root: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> std::result::Result<(String, i32), String> {
    let mut cmd = client_cmd(p, client, root);
    cmd.envs(env.iter().cloned()).args(args);
    let log = p.log(CLIENT_LOG).map_err(|e| e.msg)?;
    let what = format!("tailscale {}", args.join(" "));
    let done =
        crate::child::run_logged(&mut cmd, &what, log, Duration::from_secs(30), false, true).map_err(|e| e.msg)?;
    Ok((String::from_utf8_lossy(&done.output).into_owned(), done.status))
}

/// Whether two login server URLs name the same server (a trailing `/`
/// aside).
pub fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Reads `tailscale status --json`.
pub fn status(p: &Paths, client: &TailscaleClient, root: &Path) -> std::result::Result<NodeStatus, String> {
    let v = client_json(p, client, root, &["status", "--json"])?;
    let backend_state = v.get("BackendState").and_then(json::Value::as_str).unwrap_or("").to_string();
    let online = v.get("Self").and_then(|s| s.get("Online")).and_then(json::Value::as_bool).unwrap_or(false);
    let strings = |v: Option<&json::Value>| match v {
        Some(json::Value::Arr(items)) => items.iter().filter_map(|h| h.as_str()).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let health = strings(v.get("Health"));
    let ips = strings(v.get("Self").and_then(|s| s.get("TailscaleIPs")));
    let version = v.get("Version").and_then(json::Value::as_str).unwrap_or("").to_string();
    Ok(NodeStatus { backend_state, online, ips, version, health })
}

/// How long VALIDATING waits for a node to settle.
const SETTLE: Duration = Duration::from_secs(15);

/// `tailscale status --json`, asked again for a while when the node is on
/// its way: `Starting`, or `Running` while its map stream reconnects (the
/// real client's `Self.Online` is whether a map stream is up, tailscale
/// v1.96.4 `ipn/ipnlocal/local.go` 1336, and an `up` restarts it).
pub fn settled_status(p: &Paths, client: &TailscaleClient, root: &Path) -> std::result::Result<NodeStatus, String> {
    let until = Instant::now() + SETTLE;
    loop {
        let s = status(p, client, root)?;
        // NoState (or none yet) is a daemon that has just started.
        let on_the_way = matches!(s.backend_state.as_str(), "" | "NoState" | "Starting")
            || (s.backend_state == "Running" && !s.online);
        if !on_the_way || Instant::now() >= until {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether a DERP relay answers this node. A node is `Running` as soon as
/// it has picked a home relay, before it has reached it (tailscale v1.96.4
/// `ipn/ipnlocal/local.go` 5878-5883 counts `LiveDERPs`, which
/// `wgengine/magicsock/derp.go` 410 adds before dialing), and the client
/// names an unreachable relay in `Health` only after 10 s. So the stub asks
/// `tailscale netcheck`, which probes the relays of the node's DERP map by
/// STUN, and by HTTPS when no STUN answer comes (net/netcheck/netcheck.go
/// 961-1019): a `PreferredDERP` of 0 means none answered. A relay whose
/// STUN answers and whose DERP does not passes. `Err` says why no relay
/// answers.
///
/// netcheck fetches Tailscale's public DERP map when the daemon has none
/// (cmd/tailscale/cli/netcheck.go 121-135): the stub asks the daemon for
/// its map first, and never runs netcheck without one, so an air-gapped
/// machine never reaches out.
pub fn relay_check(
    p: &Paths,
    hs: &Headscale,
    client: &TailscaleClient,
    root: &Path,
) -> std::result::Result<(), String> {
    let map = client_json(p, client, root, &["debug", "derp-map"])?;
    match map.get("Regions") {
        Some(json::Value::Obj(regions)) if !regions.is_empty() => {}
        _ => return Err("the login server sent no DERP map, so no relay can carry this node's traffic".into()),
    }
    // netcheck's HTTPS probe checks the relay against the login server's CA.
    let (text, status_code) =
        client_output(p, client, root, &["netcheck", "--format=json-line"], &daemon_env(hs, root))?;
    // The report is one line of JSON; the portmapper may log lines of its
    // own around it.
    let report = text.lines().rev().filter(|l| l.starts_with('{')).find_map(json::parse);
    let Some(report) = report else {
        return Err(format!("tailscale netcheck gave no report (exit {status_code}): the relay is unchecked"));
    };
    match report.get("PreferredDERP") {
        Some(json::Value::Num(n)) if n != "0" => Ok(()),
        _ => {
            // The client's own word, once it has one: `no-derp-home` or
            // `no-derp-connection` (health/warnings.go 139-173).
            let said: Vec<String> = status(p, client, root)
                .map(|s| s.health.into_iter().filter(|h| h.contains("relay server")).collect())
                .unwrap_or_default();
            let mut why = "no DERP relay answers (tailscale netcheck found none in the DERP map the login server sent)"
                .to_string();
            if !said.is_empty() {
                why.push_str(&format!("; the client says: {}", said.join("; ")));
            }
            Err(why)
        }
    }
}

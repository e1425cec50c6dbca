//! The Tailscale client in the bundle, joined to the operator's Headscale:
//! the auth key's short life on disk, the reachability probe, the service
//! that keeps `tailscaled` running, `tailscale up` and `tailscale status`.
//!
//! Architecture invariant: the auth key exists in three places only: in
//! memory as a [`Secret`], in `<state-dir>/tailnet/authkey` (0600, in a
//! 0700 directory) until the join is validated, and in the file the client
//! reads through `--auth-key=file:PATH`. It is never in an argv, an
//! environment, a log, the checkpoint, `status` or a diagnostic dump.

use crate::door::Dir;
use crate::error::{Class, Error, Result};
use crate::secret::Secret;
use crate::statedir::StateDir;
use nxs_format::{json, Headscale, ServerUrl, TailscaleClient, Userspace};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The environment variable that may name the auth key file.
pub const KEY_FILE_ENV: &str = "NXS_AUTHKEY_FILE";
/// Longest auth key accepted; Headscale's are under 100 bytes.
const MAX_KEY: usize = 512;
/// How long `tailscale up` may take by default (`install --up-timeout`).
pub const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `tailscaled` may take to open its socket.
const DAEMON_START: Duration = Duration::from_secs(15);

/// The client's log and the daemon's, under `<state-dir>/logs/`.
pub const DAEMON_LOG: &str = "tailscaled.log";
pub const CLIENT_LOG: &str = "tailscale.log";
const KEY: &str = "authkey";
const PID: &str = "tailscaled.pid";
const SCRIPT: &str = "run-tailscaled";
const UNIT_FILE: &str = "nxs-tailscaled.service";
/// The regular files under `<state-dir>/tailnet/` (the daemon's socket is
/// the one other name there).
pub const FILES: &[&str] = &[KEY, PID, SCRIPT, UNIT_FILE, "tailscaled.state"];

/// Where the client's files live, all under `<state-dir>/tailnet/`, which
/// is held open: the stub's own files there are opened relative to it
/// (`crate::door`); the paths are for the client's argv and for messages.
pub struct Paths {
    tailnet: Dir,
    logs: Dir,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub pid: PathBuf,
    pub script: PathBuf,
    pub unit: PathBuf,
    pub daemon_log: PathBuf,
    pub client_log: PathBuf,
}

impl Paths {
    /// Opens (or makes) `<state-dir>/tailnet/`, 0700.
    pub fn new(sd: &StateDir) -> Result<Paths> {
        let tailnet = sd.sub("tailnet")?;
        // An existing directory may have been made looser by hand.
        // SAFETY: fchmod on the descriptor just opened.
        if unsafe { libc::fchmod(tailnet.fd(), 0o700) } != 0 {
            return Err(Error::io("cannot restrict", tailnet.path(), std::io::Error::last_os_error()));
        }
        let dir = tailnet.path().to_path_buf();
        let logs = sd.join("logs");
        Ok(Paths {
            key: dir.join(KEY),
            socket: dir.join("tailscaled.sock"),
            state: dir.join("tailscaled.state"),
            pid: dir.join(PID),
            script: dir.join(SCRIPT),
            unit: dir.join(UNIT_FILE),
            daemon_log: logs.join(DAEMON_LOG),
            client_log: logs.join(CLIENT_LOG),
            dir,
            tailnet,
            logs: sd.sub("logs")?,
        })
    }

    /// Opens `logs/<name>` for appending.
    fn log(&self, name: &str) -> Result<std::fs::File> {
        Ok(self.logs.open_file(name, crate::door::Access::Append)?.expect("created"))
    }

    /// Whether a stashed key waits for the join.
    pub fn key_present(&self) -> Result<bool> {
        Ok(self.tailnet.expect_file(KEY)?.is_some())
    }

    fn read_small(&self, name: &str) -> Option<String> {
        self.tailnet.read(name, 1 << 16).ok().flatten().and_then(|b| String::from_utf8(b).ok())
    }
}

const UNIT: &str = "nxs-tailscaled";

/// Where the operator said the key is, read before anything is written.
#[derive(Default)]
pub struct KeyInput {
    pub file: Option<PathBuf>,
    pub age: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
}

impl KeyInput {
    pub fn given(&self) -> bool {
        self.file.is_some() || self.age.is_some()
    }

    /// Reads the key from the given sources: `--authkey-file` (or
    /// `NXS_AUTHKEY_FILE`), or `--authkey-age` opened with the passphrase
    /// from `--passphrase-file` or a prompt. `None` if none was given.
    pub fn read(&self) -> Result<Option<Secret>> {
        let refuse = |path: &Path, msg: String| {
            Error::new(Class::Usage, format!("{}: {msg}", path.display()))
                .hint("the auth key file holds one Headscale pre-auth key on one line; see docs/HEADSCALE.md")
        };
        if let Some(f) = &self.file {
            let bytes = read_small(f)?;
            return check_key(Secret::new(bytes)).map(Some).map_err(|m| refuse(f, m));
        }
        let Some(f) = &self.age else { return Ok(None) };
        let bytes = read_small(f)?;
        let passphrase = match &self.passphrase_file {
            Some(p) => {
                let mut pw = Secret::new(read_small(p)?);
                // The first line, without its newline.
                let end = pw.bytes().iter().position(|&b| b == b'\n').unwrap_or(pw.len());
                let line = pw.bytes()[..end].strip_suffix(b"\r").unwrap_or(&pw.bytes()[..end]).to_vec();
                pw.bytes_mut().fill(0);
                Secret::new(line)
            }
            None => match prompt(&format!("Passphrase for {}: ", f.display()))? {
                Some(p) => p,
                None => {
                    return Err(Error::usage(format!("{} is encrypted and no passphrase was given", f.display()))
                        .hint("pass --passphrase-file FILE, or run on a terminal to be asked"))
                }
            },
        };
        let plain = crate::age::decrypt(&bytes, passphrase.bytes()).map_err(|e| {
            let hint = match e {
                crate::age::AgeError::NotPassphrase(_) => {
                    "encrypt the key file with a passphrase: age -p -o authkey.age authkey.txt"
                }
                crate::age::AgeError::WrongPassphrase => "check the passphrase, or the passphrase file's first line",
                _ => "copy the encrypted key file again; see docs/HEADSCALE.md",
            };
            Error::new(Class::Usage, format!("{}: {e}", f.display())).hint(hint)
        })?;
        check_key(plain).map(Some).map_err(|m| refuse(f, format!("decrypted, but {m}")))
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut buf = Vec::new();
    (&mut f)
        .take(crate::age::MAX_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", path, e))?;
    if buf.len() > crate::age::MAX_FILE {
        return Err(Error::new(Class::Usage, format!("{}: too large for a key file", path.display())));
    }
    Ok(buf)
}

/// Trims the line end; a key is one line of printable ASCII. The message
/// never quotes the content.
fn check_key(mut raw: Secret) -> std::result::Result<Secret, String> {
    let bytes = raw.bytes();
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| i + 1).unwrap_or(0);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(end);
    let key = &bytes[start..end];
    let problem = if key.is_empty() {
        Some("is empty".to_string())
    } else if key.len() > MAX_KEY {
        Some(format!("holds {} bytes, more than an auth key's {MAX_KEY}", key.len()))
    } else if !key.iter().all(|b| (0x21..0x7f).contains(b)) {
        Some("does not look like an auth key (one line of printable text expected)".to_string())
    } else {
        None
    };
    let out = Secret::new(key.to_vec());
    raw.bytes_mut().fill(0);
    match problem {
        Some(p) => Err(p),
        None => Ok(out),
    }
}

/// Asks on the terminal with echo off. `None` when there is no terminal.
pub fn prompt(question: &str) -> Result<Option<Secret>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut tty = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty") {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: termios calls on an open terminal, with a caller-owned struct.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let _ = tty.write_all(question.as_bytes());
    let mut line = Secret::new(Vec::with_capacity(MAX_KEY + 2));
    let mut byte = [0u8; 1];
    while line.len() <= MAX_KEY {
        match tty.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.extend(&byte),
            _ => break,
        }
    }
    if have_termios {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    Ok(Some(line))
}

/// Prompts for the auth key on a terminal.
pub fn prompt_key() -> Result<Option<Secret>> {
    match prompt("Headscale pre-auth key (input hidden; empty to join later): ")? {
        Some(k) if !k.bytes().iter().all(u8::is_ascii_whitespace) => {
            check_key(k).map(Some).map_err(|m| Error::usage(format!("the key typed {m}")))
        }
        _ => Ok(None),
    }
}

/// Keeps the key for the join, 0600 in a 0700 directory.
pub fn stash_key(p: &Paths, key: &Secret) -> Result<()> {
    let mut bytes = Secret::new(Vec::with_capacity(key.len() + 1));
    bytes.extend(key.bytes());
    bytes.extend(b"\n");
    p.tailnet.write_atomic(KEY, bytes.bytes(), 0o600)
}

/// Removes the stashed key, durably.
pub fn forget_key(p: &Paths) -> Result<()> {
    if p.tailnet.remove_file(KEY)? {
        p.tailnet.sync()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reaching the login server.

/// Probes the login server within `timeout`: a TCP connection, then, for
/// plain `http://`, Headscale's `GET /health`. `Err` says why not.
pub fn probe(url: &str, timeout: Duration) -> std::result::Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let u = ServerUrl::parse(url)?;
    let deadline = Instant::now() + timeout;
    // Name resolution has no timeout of its own: run it aside and wait
    // no longer than the deadline (a thread still resolving is left behind).
    let (host, port) = (u.host.clone(), u.port);
    let lookup = std::thread::spawn(move || (host.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    while !lookup.is_finished() {
        if Instant::now() >= deadline {
            return Err(format!("resolving {} took longer than {} s", u.host, timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let addrs = match lookup.join() {
        Ok(Ok(a)) if !a.is_empty() => a,
        Ok(Ok(_)) => return Err(format!("{} has no address", u.host)),
        Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", u.host)),
        Err(_) => return Err(format!("resolving {} failed", u.host)),
    };
    let mut last = String::new();
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) if u.https => {
                drop(s);
                return Ok(());
            }
            Ok(s) => return health(s, &u, deadline),
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(if last.is_empty() { format!("no answer from {} within {} s", u.host, timeout.as_secs()) } else { last })
}

/// Headscale answers `GET /health` with 200 when it and its database work.
fn health(mut s: std::net::TcpStream, u: &ServerUrl, deadline: Instant) -> std::result::Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
    let req =
        format!("GET /health HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\nUser-Agent: nxs-stub\r\n\r\n", u.port);
    s.write_all(req.as_bytes()).map_err(|e| format!("GET /health: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("GET /health: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(b""))
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ if status_line.is_empty() => Err("GET /health: no answer".into()),
        _ => Err(format!("GET /health answered `{status_line}`")),
    }
}

// ---------------------------------------------------------------------------
// The daemon and the client.

/// The machine's hostname put into the spec's template, as a DNS label.
pub fn hostname(template: &str) -> String {
    let node = crate::detect::nodename();
    let raw = template.replace("{hostname}", &node).to_ascii_lowercase();
    let mut label: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    label.truncate(63);
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "nxs".into()
    } else {
        label
    }
}

/// True if the kernel offers a TUN device we may open.
fn have_tun() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").is_ok()
}

/// `tailscaled`'s `--tun`, from the spec's choice and whether this machine
/// offers `/dev/net/tun`. An open `/dev/net/tun` does not mean a TUN device
/// can be made (that needs CAP_NET_ADMIN, which containers lack), so
/// `auto` gives the real daemon its own fallback list: it tries each name
/// in turn (tailscale v1.102.3 `cmd/tailscaled/tailscaled.go`, `createEngine`,
/// 752-767; since v1.6.0).
fn tun_flag(choice: Userspace, have_tun: bool) -> Option<&'static str> {
    match (choice, have_tun) {
        (Userspace::Always, _) | (Userspace::Auto, false) => Some("--tun=userspace-networking"),
        (Userspace::Auto, true) => Some("--tun=tailscale0,userspace-networking"),
        (Userspace::Never, _) => None,
    }
}

/// `tailscaled`'s argv.
fn daemon_argv(p: &Paths, hs: &Headscale, client: &TailscaleClient, root: &Path) -> Vec<String> {
    let mut argv = vec![
        root.join(client.tailscaled.as_str()).display().to_string(),
        format!("--state={}", p.state.display()),
        format!("--statedir={}", p.dir.display()),
        format!("--socket={}", p.socket.display()),
        // No log upload to Tailscale's servers: an air-gapped site has no
        // route there, and a self-hosted one wants none.
        "--no-logs-no-support".into(),
    ];
    if let Some(tun) = tun_flag(hs.userspace, have_tun()) {
        argv.push(tun.into());
    }
    argv
}

/// The environment `tailscaled` runs with: a CA for the login server, if
/// the bundle carries one, and nothing of ours.
fn daemon_env(hs: &Headscale, root: &Path) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), "/usr/sbin:/usr/bin:/sbin:/bin".to_string())];
    if let Some(ca) = &hs.ca_cert {
        env.push(("SSL_CERT_FILE".into(), root.join(ca.as_str()).display().to_string()));
    }
    env
}

/// Single-quotes for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn supervisor_script(argv: &[String], env: &[(String, String)], pid_file: &Path) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Written by nxs-survival: keeps tailscaled running, restarting it if it exits.\nexec </dev/null\n",
    );
    // The supervisor names itself, so that it can be stopped even if the
    // run that started it was killed before it could write this.
    let pid = sh_quote(&pid_file.display().to_string());
    s.push_str(&format!("echo $$ > {pid}.tmp && mv -f {pid}.tmp {pid}\n"));
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    let cmd: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    s.push_str(&format!(
        "while :; do\n  {}\n  echo \"nxs: tailscaled exited with status $?; restarting in 2 s\" >&2\n  sleep 2\ndone\n",
        cmd.join(" ")
    ));
    s
}

fn systemd_unit(argv: &[String], env: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Written by nxs-survival.\n[Unit]\nDescription=Tailscale node agent for nxs-survival (Headscale)\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\n",
    );
    for (k, v) in env {
        s.push_str(&format!("Environment=\"{k}={}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")));
    }
    let cmd: Vec<String> =
        argv.iter().map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    s.push_str(&format!(
        "ExecStart={}\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
        cmd.join(" ")
    ));
    s
}

/// How `tailscaled` is kept running: systemd where it runs the machine,
/// else a supervising shell loop. `NXS_INIT=systemd|script` overrides.
fn use_systemd() -> bool {
    match std::env::var("NXS_INIT").as_deref() {
        Ok("systemd") => true,
        Ok("script") => false,
        _ => Path::new("/run/systemd/system").is_dir(),
    }
}

fn daemon_answers(p: &Paths) -> bool {
    std::os::unix::net::UnixStream::connect(&p.socket).is_ok()
}

/// Writes the service definition and makes sure `tailscaled` runs with it:
/// started if not running, restarted if its definition changed.
pub fn ensure_daemon(p: &Paths, hs: &Headscale, client: &TailscaleClient, root: &Path) -> Result<()> {
    let argv = daemon_argv(p, hs, client, root);
    let env = daemon_env(hs, root);
    if use_systemd() {
        let unit = systemd_unit(&argv, &env);
        let changed = p.read_small(UNIT_FILE).is_none_or(|old| old != unit);
        p.tailnet.write_atomic(UNIT_FILE, unit.as_bytes(), 0o644)?;
        let name = format!("{UNIT}.service");
        let unit_path = p.unit.display().to_string();
        let verb = if changed || !daemon_answers(p) { "restart" } else { "start" };
        for args in [vec!["link", "--force", unit_path.as_str()], vec!["enable", &name], vec![verb, &name]] {
            let done = crate::hooks::run_logged(
                Command::new("systemctl").args(&args).env_clear().envs(env.iter().take(1).cloned()),
                "systemctl",
                p.log(DAEMON_LOG)?,
                Duration::from_secs(60),
                false,
                false,
            )?;
            if done.status != 0 {
                return Err(Error::new(Class::Io, format!("systemctl {} exited {}", args.join(" "), done.status))
                    .hint(format!("see {} and `journalctl -u {name}`", p.daemon_log.display())));
            }
        }
    } else {
        let script = supervisor_script(&argv, &env, &p.pid);
        let changed = p.read_small(SCRIPT).is_none_or(|old| old != script);
        if !changed && daemon_answers(p) {
            return Ok(());
        }
        stop_supervisor(p);
        p.tailnet.write_atomic(SCRIPT, script.as_bytes(), 0o700)?;
        let log = p.log(DAEMON_LOG)?;
        let err = log.try_clone().map_err(|e| Error::io("cannot open", &p.daemon_log, e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(&p.script)
            .env_clear()
            .envs(env.iter().take(1).cloned())
            .current_dir(&p.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; the supervisor leaves our
        // session so that it outlives this run.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        let child = cmd.spawn().map_err(|e| Error::io("cannot start the tailscaled supervisor", &p.script, e))?;
        p.tailnet.write_atomic(PID, format!("{}\n", child.id()).as_bytes(), 0o600)?;
        eprintln!("  started tailscaled under a supervisor (pid {}), log in {}", child.id(), p.daemon_log.display());
        // The supervisor is reaped by init once we exit.
        std::mem::forget(child);
    }
    let until = Instant::now() + DAEMON_START;
    while !daemon_answers(p) {
        if Instant::now() >= until {
            return Err(Error::new(
                Class::Io,
                format!("tailscaled did not open {} within {} s", p.socket.display(), DAEMON_START.as_secs()),
            )
            .hint(format!("see {}", p.daemon_log.display())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops a supervisor this state directory started, and its tailscaled.
pub fn stop_supervisor(p: &Paths) {
    let Some(pid) = p.read_small(PID).and_then(|s| s.trim().parse::<i32>().ok()) else { return };
    if pid > 1 {
        // SAFETY: signals the process group the supervisor leads.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while unsafe { libc::kill(-pid, 0) } == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = p.tailnet.remove_file(PID);
}

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
    let done = crate::hooks::run_logged(
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
        crate::hooks::run_logged(&mut cmd, &what, log, Duration::from_secs(30), false, true).map_err(|e| e.msg)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's and the server's own words (tailscale v1.102.3
    /// `cmd/tailscale/cli/up.go`, headscale v0.26 to v0.29), each with the
    /// class it must get. Only a refused key is dropped.
    #[test]
    fn up_failures_are_classified_by_what_the_real_client_prints() {
        let key = |f: &JoinFailure| matches!(f, JoinFailure::KeyRejected(_));
        for (status, out) in [
            (1, "backend error: authkey expired\n"),
            (1, "backend error: authkey already used\n"),
            (1, "backend error: invalid pre auth key\n"),
            (1, "backend error: handling register with auth key: auth-key not found\n"),
            (1, "backend error: handling register with auth key: AuthKey not found\n"),
        ] {
            assert!(key(&classify_up(status, out)), "{out}");
        }
        let tags = classify_up(
            1,
            "backend error: handling register with auth key: creating new node: requested tags [tag:a] are invalid or not permitted\n",
        );
        assert!(matches!(&tags, JoinFailure::Refused(m) if m.contains("come from the pre-auth key")), "{tags:?}");
        let old = classify_server("unsupported client version: v1.78 (109)");
        assert!(matches!(&old, JoinFailure::VersionWindow(m) if m.contains("newer Tailscale client")), "{old:?}");
        // What the real 1.96.4 client's Health says when Headscale closes the
        // connection of a client below its window.
        let eof = classify_server("register request: Post \"https://hs.example/machine/register\": all connection attempts failed (HTTP: TLS forced: no port 80 dialed, HTTPS: reading response header: EOF)");
        assert!(matches!(&eof, JoinFailure::VersionWindow(_)), "{eof:?}");
        let usage = classify_up(2, "invalid value \"x\" for flag -accept-dns: flag provided multiple times\nUSAGE\n  tailscale up [flags]\n      --timeout duration ...\n");
        assert!(
            matches!(&usage, JoinFailure::Client(m) if m.contains("exit 2") && m.contains("provided multiple times")),
            "{usage:?}"
        );
        let t = classify_up(
            1,
            "timeout waiting for Tailscale service to enter a Running state; check health with \"tailscale status\"\n",
        );
        assert!(matches!(t, JoinFailure::Timeout(_)), "{t:?}");
        // The key file's own path names `authkey`: not a refusal.
        let local = classify_up(1, "reading auth key file \"/var/lib/nxs/tailnet/authkey\": permission denied\n");
        assert!(matches!(local, JoinFailure::Client(_)), "{local:?}");
        let st = NodeStatus {
            backend_state: "NeedsLogin".into(),
            online: false,
            ips: vec![],
            version: "1.96.4".into(),
            health: vec!["You are logged out. The last login error was: authkey expired".into()],
        };
        assert_eq!(st.last_login_error(), Some("authkey expired"));
        assert!(key(&classify_server(st.last_login_error().unwrap())));
    }

    #[test]
    fn login_servers_compare_without_a_trailing_slash() {
        assert!(same_server("https://hs.example", "https://hs.example/"));
        assert!(!same_server("https://hs.example", "https://other.example"));
        assert!(!same_server("https://hs.example", "http://hs.example"));
    }

    #[test]
    fn the_tun_choice_leaves_the_fallback_to_the_daemon() {
        assert_eq!(tun_flag(Userspace::Always, true), Some("--tun=userspace-networking"));
        assert_eq!(tun_flag(Userspace::Auto, false), Some("--tun=userspace-networking"));
        assert_eq!(tun_flag(Userspace::Auto, true), Some("--tun=tailscale0,userspace-networking"));
        assert_eq!(tun_flag(Userspace::Never, false), None);
    }

    #[test]
    fn keys_are_one_printable_line() {
        let ok = |s: &str| check_key(Secret::new(s.as_bytes().to_vec())).map(|k| k.bytes().to_vec());
        assert_eq!(ok("  hskey-abc123\n").unwrap(), b"hskey-abc123");
        assert_eq!(ok("hskey\r\n").unwrap(), b"hskey");
        assert!(ok("").is_err());
        assert!(ok("\n\n").is_err());
        assert!(ok("two words").is_err());
        assert!(ok("line\nline").is_err());
        let long = "k".repeat(MAX_KEY + 1);
        let e = ok(&long).unwrap_err();
        assert!(!e.contains("kkkk"), "a refusal never quotes the key: {e}");
    }

    #[test]
    fn hostnames_are_dns_labels() {
        assert_eq!(hostname("nxs-static"), "nxs-static");
        assert!(hostname("nxs-{hostname}").starts_with("nxs-"));
        assert_eq!(hostname("A_b.C"), "a-b-c");
        assert_eq!(hostname("___"), "nxs");
        assert_eq!(hostname(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn service_definitions_quote_their_paths() {
        let argv = vec!["/opt/it's here/bin/tailscaled".to_string(), "--socket=/s".to_string()];
        let env = vec![("SSL_CERT_FILE".to_string(), "/opt/a \"b\"/ca.pem".to_string())];
        let s = supervisor_script(&argv, &env, Path::new("/s/tailscaled.pid"));
        assert!(s.contains(r"'/opt/it'\''s here/bin/tailscaled' '--socket=/s'"), "{s}");
        let u = systemd_unit(&argv, &env);
        assert!(u.contains(r#"Environment="SSL_CERT_FILE=/opt/a \"b\"/ca.pem""#), "{u}");
        assert!(u.contains(r#"ExecStart="/opt/it's here/bin/tailscaled" "--socket=/s""#), "{u}");
    }

    #[test]
    fn an_unreachable_server_is_reported_within_the_timeout() {
        // A port nothing listens on, on loopback: refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Instant::now();
        let e = probe(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn health_must_answer_200() {
        for (answer, ok) in
            [("HTTP/1.1 200 OK\r\n\r\n{\"status\":\"pass\"}", true), ("HTTP/1.1 503 Unavailable\r\n\r\n", false)]
        {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"GET /health HTTP/1.1\r\n"));
                s.write_all(answer.as_bytes()).unwrap();
            });
            let r = probe(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
            server.join().unwrap();
            assert_eq!(r.is_ok(), ok, "{r:?}");
        }
    }
}

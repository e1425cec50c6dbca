//! TEST DOUBLE of a Headscale control server, for the tests and the demo
//! only. Never shipped, never pointed at a network: it binds to loopback
//! and nothing else.
//!
//! No package registry we reach ships Headscale, so the real Tailscale
//! client (`tailscale`/`tailscaled` 1.96.4) joins this instead. It speaks
//! Tailscale's real protocol, written here from the sources and not copied
//! (tailscale v1.96.4 and headscale v0.29.2, cited file by file):
//! - `GET /key?v=N`, `GET /health`;
//! - `POST /ts2021`: the upgrade, the Noise IK handshake, Noise records, and
//!   HTTP/2 inside them ([`noise`], [`tunnel`]);
//! - `POST /machine/register` and the streaming `POST /machine/map`
//!   ([`control`]), with Headscale 0.29's rules for pre-auth keys, tags and
//!   the client-version window;
//! - `GET /derp`: a DERP relay, as Headscale's embedded one ([`derp`]).
//!
//! One port serves plain HTTP and TLS (told apart by the first byte), as
//! Headscale does with `tls_cert_path` set; the TLS certificate comes from
//! a CA made on first start, whose certificate the tests carry into the
//! bundle as the login server's `ca_cert`.
//!
//! ```text
//! headscale-double serve --listen 127.0.0.1:PORT --db DIR [--min-capver N]
//!                        [--derp embedded|unreachable|none] [--server-url URL]
//! headscale-double preauthkeys create --db DIR --tags tag:a,tag:b
//!                        [--expiration 1h] [--reusable] [--ephemeral]
//! headscale-double preauthkeys list --db DIR      (JSON; never the keys)
//! headscale-double nodes list --db DIR            (JSON)
//! headscale-double ca --db DIR                    (the CA certificate's path)
//! ```
//!
//! Every line it logs starts with `headscale-double (TEST DOUBLE):`, and
//! `DIR/events.jsonl` records each registration, map stream and DERP
//! connection for the tests. No auth key is ever logged: a key is named by
//! its prefix, as Headscale names it.

mod control;
mod db;
mod derp;
mod http1;
mod noise;
mod stun;
mod tls;
mod tunnel;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every log line starts with.
pub const LABEL: &str = "headscale-double (TEST DOUBLE)";

/// Headscale v0.29's oldest supported client: capability version 113,
/// tailscale 1.80 (hscontrol/capver/capver_generated.go 84-89).
const MIN_CAPVER: u16 = 113;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
/// A client connection, plain or TLS.
pub type Io = Box<dyn Stream>;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The event log (`DIR/events.jsonl`) and the labelled stderr lines.
#[derive(Clone)]
pub struct Log {
    path: PathBuf,
}

impl Log {
    pub fn event(&self, what: &str, fields: &[(&str, String)]) {
        let mut m = serde_json::Map::new();
        m.insert("event".into(), what.into());
        m.insert("time".into(), db::now().into());
        for (k, v) in fields {
            m.insert((*k).into(), v.clone().into());
        }
        let line = serde_json::Value::Object(m).to_string();
        eprintln!("{LABEL}: {line}");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Bytes already read, then the stream.
pub struct Prefixed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { head, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How the DERP map is served.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Derp {
    /// The embedded relay on this port (`derp.server.enabled: true`).
    Embedded,
    /// A map whose one relay nobody serves: an air-gapped Headscale left
    /// with a DERP map of relays it cannot reach.
    Unreachable,
}

pub struct Server {
    pub db: db::Db,
    pub log: Log,
    pub noise_key: x25519_dalek::StaticSecret,
    pub relay: Arc<derp::Relay>,
    pub derp: Derp,
    pub min_capver: u16,
    /// `server_url`: its host and port name the embedded relay (headscale
    /// `hscontrol/derp/server/derp_server.go` 73-148).
    pub server_url: String,
    pub tls: Arc<rustls::ServerConfig>,
    /// A port refused to every connection, for [`Derp::Unreachable`]: bound
    /// and never listened on, and held so that nothing else takes it.
    pub dead_port: u16,
    _dead: std::os::fd::OwnedFd,
}

/// A TCP socket bound to a free port of `ip` and never listened on: a
/// connection to it is refused.
fn refusing_port(ip: std::net::IpAddr) -> Result<(std::os::fd::OwnedFd, u16), String> {
    use std::os::fd::FromRawFd;
    let std::net::IpAddr::V4(v4) = ip else { return Err("--listen: the refusing port needs IPv4".into()) };
    // SAFETY: plain socket calls on a descriptor we own from here on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(v4).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        if libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut glen) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok((owned, u16::from_be(got.sin_port)))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: headscale-double serve --listen 127.0.0.1:PORT --db DIR [--min-capver N] [--derp embedded|unreachable|none] [--server-url URL]\n       headscale-double preauthkeys create --db DIR --tags T[,T] [--expiration D] [--reusable] [--ephemeral]\n       headscale-double preauthkeys list --db DIR\n       headscale-double nodes list --db DIR\n       headscale-double ca --db DIR"
    );
    std::process::exit(2)
}

struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|a| a == name)?;
        match self.0.get(i + 1) {
            Some(v) => Some(v.clone()),
            None => usage(),
        }
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
    fn db(&self) -> db::Db {
        let dir = self.value("--db").unwrap_or_else(|| usage());
        db::Db::open(Path::new(&dir)).unwrap_or_else(|e| fail(&e))
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("{LABEL}: {msg}");
    std::process::exit(1)
}

/// `1h`, `30m`, `90s`, `2d`, or bare seconds.
fn duration(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, r)) => (c.as_str(), Args(r.to_vec())),
        None => usage(),
    };
    match (cmd, rest.0.first().map(String::as_str)) {
        ("preauthkeys", Some("create")) => {
            let tags: Vec<String> = rest
                .value("--tags")
                .map(|t| t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            // Headscale's default expiration is one hour.
            let exp = rest.value("--expiration").unwrap_or_else(|| "1h".into());
            let secs = duration(&exp).unwrap_or_else(|| fail(&format!("--expiration {exp}: not a duration")));
            let key = rest
                .db()
                .create_key(&tags, Some(secs), rest.flag("--reusable"), rest.flag("--ephemeral"))
                .unwrap_or_else(|e| fail(&e));
            println!("{key}");
        }
        ("preauthkeys", Some("list")) => {
            let keys = rest.db().with(|d| (false, d.keys.clone())).unwrap_or_else(|e| fail(&e));
            let v: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| {
                    serde_json::json!({"id": k.id, "prefix": format!("{}{}", db::KEY_PREFIX, k.prefix),
                        "tags": k.tags, "reusable": k.reusable, "ephemeral": k.ephemeral, "used": k.used,
                        "expiration": k.expiration, "registrations": k.registrations})
                })
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        ("nodes", Some("list")) => {
            let nodes = rest.db().with(|d| (false, d.nodes.clone())).unwrap_or_else(|e| fail(&e));
            println!("{}", serde_json::to_string(&nodes).expect("plain data"));
        }
        ("ca", _) => {
            let db = rest.db();
            tls::load_or_make(db.dir()).unwrap_or_else(|e| fail(&e));
            println!("{}", tls::ca_path(db.dir()).display());
        }
        ("serve", _) => serve(rest),
        _ => usage(),
    }
}

fn serve(args: Args) {
    let listen = args.value("--listen").unwrap_or_else(|| usage());
    let addr: std::net::SocketAddr =
        listen.parse().unwrap_or_else(|_| fail(&format!("--listen {listen}: not ADDR:PORT")));
    // Loopback only: this is a double, never a server on a network.
    if !addr.ip().is_loopback() {
        fail(&format!("--listen {addr}: a test double listens on loopback only"));
    }
    let derp = match args.value("--derp").as_deref() {
        None | Some("embedded") => Derp::Embedded,
        Some("unreachable") => Derp::Unreachable,
        // hscontrol/app.go 642-654: no DERP source at all, and Headscale
        // will not start.
        Some("none") => fail("initial DERPMap is empty, Headscale requires at least one entry"),
        Some(other) => fail(&format!("--derp {other}: embedded, unreachable or none")),
    };
    let min_capver = args
        .value("--min-capver")
        .map(|v| v.parse().unwrap_or_else(|_| fail(&format!("--min-capver {v}: not a number"))))
        .unwrap_or(MIN_CAPVER);
    let db = args.db();
    let server_url = args.value("--server-url").unwrap_or_else(|| format!("https://{addr}"));
    let (certs, key) = tls::load_or_make(db.dir()).unwrap_or_else(|e| fail(&e));
    let tls = tls::server_config(certs, key).unwrap_or_else(|e| fail(&e));
    let noise_key = control::load_or_make_key(db.dir()).unwrap_or_else(|e| fail(&e));
    let log = Log { path: db.dir().join("events.jsonl") };
    let (dead, dead_port) = refusing_port(addr.ip()).unwrap_or_else(|e| fail(&e));
    let server = Arc::new(Server {
        db,
        log,
        noise_key,
        relay: derp::Relay::new(),
        derp,
        min_capver,
        server_url,
        tls,
        dead_port,
        _dead: dead,
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
        server.log.event(
            "listening",
            &[
                ("addr", addr.to_string()),
                ("server_url", server.server_url.clone()),
                ("derp", format!("{:?}", server.derp)),
                ("min_capver", server.min_capver.to_string()),
            ],
        );
        if server.derp == Derp::Embedded {
            // derp.server.stun_listen_addr: the embedded relay's STUN, on
            // the same port number over UDP.
            let udp = tokio::net::UdpSocket::bind(addr).await.unwrap_or_else(|e| fail(&format!("{addr}/udp: {e}")));
            tokio::spawn(stun::serve(udp));
        }
        let _ = std::fs::write(server.db.dir().join("ready"), addr.to_string());
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { continue };
            let s = server.clone();
            tokio::spawn(async move {
                match connection(s.clone(), tcp).await {
                    // A probe that hangs up without a TLS close is no error.
                    Err(e) if e.contains("close_notify") => {}
                    Err(e) => s.log.event("connection-error", &[("peer", peer.to_string()), ("error", e)]),
                    Ok(()) => {}
                }
            });
        }
    });
}

/// One client connection: TLS if it opens with a handshake record, then
/// HTTP/1.1 requests until one upgrades or the client closes.
async fn connection(s: Arc<Server>, tcp: tokio::net::TcpStream) -> Result<(), String> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await.map_err(|e| e.to_string())?;
    let mut io: Io = if n == 1 && first[0] == 0x16 {
        let acceptor = tokio_rustls::TlsAcceptor::from(s.tls.clone());
        Box::new(acceptor.accept(tcp).await.map_err(|e| format!("TLS: {e}"))?)
    } else {
        Box::new(tcp)
    };
    let mut carry = Vec::new();
    loop {
        let req = {
            let mut r = Prefixed::new(std::mem::take(&mut carry), &mut io);
            match http1::read_request(&mut r).await? {
                Some(req) => req,
                None => return Ok(()),
            }
        };
        match (req.method.as_str(), req.path()) {
            // hscontrol/handlers.go 222-255.
            ("GET", "/health") => {
                http1::respond(&mut io, 200, "application/health+json; charset=utf-8", b"{\"status\":\"pass\"}\n")
                    .await
                    .map_err(|e| e.to_string())?
            }
            ("GET", "/key") => {
                let (code, body) = control::key_response(&s, req.query("v"));
                http1::respond(&mut io, code, "application/json", body.as_bytes()).await.map_err(|e| e.to_string())?
            }
            ("GET" | "POST", "/ts2021") => {
                if !req.upgrade_to("tailscale-control-protocol") {
                    // noise.go 101-111 answers 500 without an Upgrade header;
                    // controlhttpserver.go 50-53 400 for another protocol.
                    let (code, msg) = if req.header("Upgrade").is_none() {
                        (500, "Internal error\n")
                    } else {
                        (400, "unknown next protocol\n")
                    };
                    http1::respond(&mut io, code, "text/plain; charset=utf-8", msg.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                let Some(init) = req.header("X-Tailscale-Handshake").map(str::to_string) else {
                    http1::respond(&mut io, 400, "text/plain; charset=utf-8", b"missing Tailscale handshake header\n")
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                };
                return control::serve_noise(s, io, req.rest, &init).await;
            }
            ("GET" | "HEAD", "/derp/probe" | "/derp/latency-check") if s.derp == Derp::Embedded => {
                http1::respond(&mut io, 200, "text/plain", b"").await.map_err(|e| e.to_string())?
            }
            ("GET", "/derp") if s.derp == Derp::Embedded => {
                if !req.upgrade_to("DERP") {
                    http1::respond(&mut io, 426, "text/plain", b"DERP requires connection upgrade")
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                return derp::serve(s.relay.clone(), io, req.rest, s.log.clone()).await;
            }
            _ => http1::respond(&mut io, 404, "text/plain; charset=utf-8", b"404 page not found\n")
                .await
                .map_err(|e| e.to_string())?,
        }
        carry = req.rest;
    }
}

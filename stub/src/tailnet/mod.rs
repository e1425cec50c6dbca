//! The Tailscale client in the bundle, joined to the operator's Headscale:
//! the auth key's short life on disk ([`key`]), the reachability probe
//! ([`probe`]), the service that keeps `tailscaled` running ([`service`]),
//! and `tailscale up` and `tailscale status` ([`client`]). This module holds
//! what they share: the client's files under `<state-dir>/tailnet/`.
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

pub use crate::secret::KEY_FILE_ENV;
/// Longest auth key accepted; Headscale's are under 100 bytes.
const MAX_KEY: usize = 512;
/// How long `tailscale up` may take by default (`install --up-timeout`).
pub const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `tailscaled` may take to open its socket.
const DAEMON_START: Duration = Duration::from_secs(15);

use crate::statedir::names::{AUTHKEY as KEY, DAEMON_PID as PID, SUPERVISOR as SCRIPT, UNIT_FILE};
pub use crate::statedir::names::{CLIENT_LOG, DAEMON_LOG, TAILNET_FILES as FILES};

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

mod client;
mod key;
mod probe;
mod service;

pub use client::*;
pub use key::*;
pub use probe::*;
pub use service::*;

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

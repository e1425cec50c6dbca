//! Reaching the login server: a bounded probe, before any key is spent.

use super::*;

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

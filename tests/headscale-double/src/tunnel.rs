//! The upgraded connection: `POST /ts2021` switches protocols, the Noise
//! handshake answers the initiation the client sent in its header, the
//! optional early payload follows, and then HTTP/2 runs over Noise records.
//!
//! The record layer runs as two tasks between the TCP stream and one end
//! of an in-memory duplex pipe; the HTTP/2 server (the `h2` crate) runs on
//! the other end, and never sees a ciphertext.

use crate::{noise, Io};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `"\xff\xff\xffTS"`, then a big-endian u32 length, then the JSON of
/// `tailcfg.EarlyNoise` (tailscale v1.96.4 `control/ts2021/conn.go` 82-91,
/// 132-160). The client takes it or, without the magic, HTTP/2 at once.
const EARLY_MAGIC: &[u8] = b"\xff\xff\xffTS";

/// Upgrades `tcp` (whose request head is already read, `rest` being the
/// bytes after it) to the Noise transport, and returns the plaintext side
/// plus the client's protocol version and machine key.
///
/// A client whose version is below `min_version` gets the `101` and then
/// the end of the stream, with no handshake answer: Headscale refuses it in
/// the early write, before the corked response is sent (headscale v0.29.2
/// `hscontrol/noise.go` 224-234; tailscale `controlhttpserver.go` 81-109).
pub async fn upgrade(
    mut tcp: Io,
    rest: Vec<u8>,
    init_b64: &str,
    server_key: &x25519_dalek::StaticSecret,
    min_version: u16,
    early: String,
) -> Result<(tokio::io::DuplexStream, u16, [u8; 32]), String> {
    use base64::Engine;
    // controlhttpserver.go 60-64: a header that is not base64 gets a 400,
    // before any switch.
    let init = match base64::engine::general_purpose::STANDARD.decode(init_b64.trim()) {
        Ok(i) => i,
        Err(e) => {
            let body = b"invalid tailscale handshake header\n";
            let _ = crate::http1::respond(&mut tcp, 400, "text/plain; charset=utf-8", body).await;
            return Err(format!("decoding base64 handshake header: {e}"));
        }
    };
    // controlhttpserver.go 57-71: 101 first, then the handshake response.
    crate::http1::switch(&mut tcp, "tailscale-control-protocol", &[]).await.map_err(|e| e.to_string())?;
    let mut a = match noise::accept(server_key, &init) {
        Ok(a) => a,
        Err(e) => {
            // The error frame Tailscale's server writes goes into its corked
            // connection and is never sent (controlhttpserver.go 92-112): the
            // client sees the end of the stream.
            let _ = tcp.shutdown().await;
            return Err(format!("noise handshake failed: {e}"));
        }
    };
    let (version, machine) = (a.version, a.machine);
    if version < min_version {
        let _ = tcp.shutdown().await;
        return Err(format!("unsupported client version: capability version {version}, below {min_version}"));
    }
    let mut out = a.response.to_vec();
    let mut p = EARLY_MAGIC.to_vec();
    p.extend_from_slice(&(early.len() as u32).to_be_bytes());
    p.extend_from_slice(early.as_bytes());
    for chunk in p.chunks(noise::MAX_PLAINTEXT) {
        out.extend_from_slice(&a.tx.seal_record(chunk)?);
    }
    tcp.write_all(&out).await.map_err(|e| e.to_string())?;
    tcp.flush().await.map_err(|e| e.to_string())?;
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let (mut tcp_r, mut tcp_w) = tokio::io::split(tcp);
    let (mut pipe_r, mut pipe_w) = tokio::io::split(ours);
    let (mut rx, mut tx) = (a.rx, a.tx);
    // Client to server: records in, plaintext out.
    tokio::spawn(async move {
        let mut buf = rest;
        loop {
            while buf.len() >= 3 {
                let len = u16::from_be_bytes([buf[1], buf[2]]) as usize;
                if buf[0] != noise::MSG_RECORD || 3 + len > noise::MAX_MESSAGE {
                    eprintln!("headscale-double (TEST DOUBLE): a bad record on the Noise stream; closing it");
                    return;
                }
                if buf.len() < 3 + len {
                    break;
                }
                let plain = match rx.open(&buf[3..3 + len]) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("headscale-double (TEST DOUBLE): {e}; closing the Noise stream");
                        return;
                    }
                };
                buf.drain(..3 + len);
                if pipe_w.write_all(&plain).await.is_err() {
                    return;
                }
            }
            let mut chunk = [0u8; 8192];
            match tcp_r.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = pipe_w.shutdown().await;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    // Server to client: plaintext in, records out.
    tokio::spawn(async move {
        let mut chunk = vec![0u8; noise::MAX_PLAINTEXT];
        loop {
            match pipe_r.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = tcp_w.shutdown().await;
                    return;
                }
                Ok(n) => {
                    let Ok(f) = tx.seal_record(&chunk[..n]) else { return };
                    if tcp_w.write_all(&f).await.is_err() || tcp_w.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((theirs, version, machine))
}

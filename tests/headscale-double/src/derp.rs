//! A minimal DERP relay: the HTTP upgrade, the key exchange, keepalives and
//! pongs, and packets relayed between the nodes connected to it. Headscale
//! serves the same protocol as its embedded DERP server; an air-gapped
//! tailnet has no other relay, and a node is `Running` only once it holds
//! a DERP connection or a live peer.
//!
//! Written from tailscale v1.96.4 `derp/derp.go` (frame types 71-131, the
//! header 263-275), `derp/derp_client.go` (the client's side of the key
//! exchange, 98-211) and `derp/derpserver/handler.go` (the upgrade, 24-82).

use crate::Io;
use crypto_box::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const MAGIC: &[u8; 8] = b"DERP\xf0\x9f\x94\x91";
const PROTOCOL_VERSION: u32 = 2;
const SERVER_KEY: u8 = 0x01;
const CLIENT_INFO: u8 = 0x02;
const SERVER_INFO: u8 = 0x03;
const SEND_PACKET: u8 = 0x04;
const RECV_PACKET: u8 = 0x05;
const KEEP_ALIVE: u8 = 0x06;
const NOTE_PREFERRED: u8 = 0x07;
const PEER_GONE: u8 = 0x08;
const PING: u8 = 0x12;
const PONG: u8 = 0x13;
/// The largest frame accepted from a client (derp_client.go 511-513 caps
/// the other direction at 1 MiB too).
const MAX_FRAME: usize = 1 << 20;
/// The reference server sends a keepalive every 60 s plus jitter; the
/// client gives up after 120 s of silence (derp_client.go 480-496).
const KEEP_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(45);

/// The relay's key and the nodes connected to it, by node key.
pub struct Relay {
    secret: SecretKey,
    peers: Mutex<HashMap<[u8; 32], mpsc::UnboundedSender<Vec<u8>>>>,
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay { secret: SecretKey::generate(&mut rand_core::OsRng), peers: Mutex::new(HashMap::new()) })
    }

    pub fn public_hex(&self) -> String {
        crate::hex(self.secret.public_key().as_bytes())
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// Serves one upgraded connection. `rest` holds any bytes the client sent
/// after its request head.
pub async fn serve(relay: Arc<Relay>, mut io: Io, rest: Vec<u8>, log: crate::Log) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    // handler.go 54-63: the 101 names the protocol version and the key.
    crate::http1::switch(
        &mut io,
        "DERP",
        &[("Derp-Version", PROTOCOL_VERSION.to_string()), ("Derp-Public-Key", relay.public_hex())],
    )
    .await
    .map_err(e)?;
    let mut key_frame = MAGIC.to_vec();
    key_frame.extend_from_slice(relay.secret.public_key().as_bytes());
    io.write_all(&frame(SERVER_KEY, &key_frame)).await.map_err(e)?;
    let mut io = crate::Prefixed::new(rest, io);
    let (kind, body) = tokio::time::timeout(std::time::Duration::from_secs(10), read_frame(&mut io))
        .await
        .map_err(|_| "no client info within 10 s".to_string())?
        .map_err(e)?;
    if kind != CLIENT_INFO || body.len() < 32 + 24 + 16 {
        return Err(format!("expected the client info frame, got type {kind:#x} of {} bytes", body.len()));
    }
    let mut node = [0u8; 32];
    node.copy_from_slice(&body[..32]);
    let client = PublicKey::from(node);
    let shared = SalsaBox::new(&client, &relay.secret);
    let info = shared
        .decrypt(body[32..56].into(), &body[56..])
        .map_err(|_| "the client info box does not open with the client's key".to_string())?;
    let info: serde_json::Value =
        serde_json::from_slice(&info).map_err(|e| format!("the client info is not JSON: {e}"))?;
    let nonce = SalsaBox::generate_nonce(&mut rand_core::OsRng);
    let sealed = shared.encrypt(&nonce, &b"{\"version\":2}"[..]).map_err(|_| "sealing the server info".to_string())?;
    let mut si = nonce.to_vec();
    si.extend_from_slice(&sealed);
    io.write_all(&frame(SERVER_INFO, &si)).await.map_err(e)?;
    log.event(
        "derp-connected",
        &[("node", format!("nodekey:{}", crate::hex(&node))), ("client_info", info.to_string())],
    );

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    relay.peers.lock().unwrap().insert(node, tx.clone());
    let (mut r, mut w) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
        tick.tick().await;
        loop {
            let f = tokio::select! {
                f = rx.recv() => match f { Some(f) => f, None => return },
                _ = tick.tick() => frame(KEEP_ALIVE, &[]),
            };
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    let result = loop {
        let (kind, body) = match read_frame(&mut r).await {
            Ok(f) => f,
            Err(err) => break Err(err.to_string()),
        };
        match kind {
            PING if body.len() == 8 => {
                let _ = tx.send(frame(PONG, &body));
            }
            NOTE_PREFERRED | PONG | KEEP_ALIVE => {}
            SEND_PACKET if body.len() >= 32 => {
                let mut dst = [0u8; 32];
                dst.copy_from_slice(&body[..32]);
                let to = relay.peers.lock().unwrap().get(&dst).cloned();
                match to {
                    Some(to) => {
                        let mut p = node.to_vec();
                        p.extend_from_slice(&body[32..]);
                        let _ = to.send(frame(RECV_PACKET, &p));
                    }
                    None => {
                        // PeerGone, reason 1: not connected here (derp.go 137-141).
                        let mut p = dst.to_vec();
                        p.push(1);
                        let _ = tx.send(frame(PEER_GONE, &p));
                    }
                }
            }
            _ => {}
        }
    };
    {
        let mut peers = relay.peers.lock().unwrap();
        if peers.get(&node).is_some_and(|t| t.same_channel(&tx)) {
            peers.remove(&node);
        }
    }
    writer.abort();
    log.event("derp-disconnected", &[("node", format!("nodekey:{}", crate::hex(&node)))]);
    result
}

//! The responder's side of Tailscale's control transport: a Noise IK
//! handshake, then records of ChaCha20-Poly1305 ciphertext.
//!
//! Written from tailscale v1.96.4 `control/controlbase/handshake.go` and
//! `conn.go`; where Tailscale departs from the Noise spec, the line says so:
//! - the protocol name is `Noise_IK_25519_ChaChaPoly_BLAKE2s`, and the
//!   prologue is `Tailscale Control Protocol v<version>` (handshake.go 30-49);
//! - the initiation is `version:u16be, 0x01, len:u16be (96), e, enc(s), tag`
//!   (messages.go 29-46), the response `0x02, len:u16be (48), e, tag`
//!   (messages.go 62-75);
//! - a record is `0x04, len:u16be, ciphertext`, at most 4096 bytes in all
//!   (conn.go 26-34, 169-171);
//! - the transport nonce is 4 zero bytes and a **big-endian** counter
//!   (conn.go 385-396), where the Noise spec says little-endian. The
//!   handshake's own single-use ciphers use the all-zero nonce.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use x25519_dalek::{PublicKey, StaticSecret};

const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";
pub const INITIATION_LEN: usize = 101;
pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_RECORD: u8 = 4;
/// The largest frame either side sends or accepts (conn.go 28).
pub const MAX_MESSAGE: usize = 4096;
/// The largest plaintext in one record: the frame less its 3-byte header
/// and the 16-byte tag.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - 3 - 16;

struct Symmetric {
    h: [u8; 32],
    ck: [u8; 32],
}

impl Symmetric {
    fn new() -> Symmetric {
        // The name is longer than a hash, so h = HASH(name) (Noise §5.2).
        let h: [u8; 32] = Blake2s256::digest(PROTOCOL_NAME).into();
        Symmetric { h, ck: h }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Blake2s256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    /// MixKey(DH(..)): HKDF over BLAKE2s with the chaining key as salt; the
    /// first 32 bytes become the new chaining key, the next the cipher key.
    fn mix_dh(&mut self, dh: &[u8; 32]) -> Result<[u8; 32], String> {
        if dh.iter().all(|&b| b == 0) {
            // X25519 with a low-order point; Go's curve25519.X25519 refuses it.
            return Err("X25519 gave the all-zero output".into());
        }
        let (ck, k) = hkdf2(&self.ck, dh);
        self.ck = ck;
        Ok(k)
    }

    fn encrypt_and_hash(&mut self, k: &[u8; 32], plain: &[u8]) -> Vec<u8> {
        let c = ChaCha20Poly1305::new(k.into());
        let out = c.encrypt(&[0u8; 12].into(), Payload { msg: plain, aad: &self.h }).expect("in-memory seal");
        self.mix_hash(&out);
        out
    }

    fn decrypt_and_hash(&mut self, k: &[u8; 32], ct: &[u8]) -> Result<Vec<u8>, String> {
        let c = ChaCha20Poly1305::new(k.into());
        let out = c
            .decrypt(&[0u8; 12].into(), Payload { msg: ct, aad: &self.h })
            .map_err(|_| "handshake ciphertext does not authenticate".to_string())?;
        self.mix_hash(ct);
        Ok(out)
    }
}

/// HKDF (RFC 5869 with HMAC-BLAKE2s, empty info), two 32-byte outputs:
/// Noise's HKDF(ck, ikm) for two outputs.
fn hkdf2(salt: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let hk = hkdf::SimpleHkdf::<Blake2s256>::new(Some(salt), ikm);
    let mut okm = [0u8; 64];
    hk.expand(&[], &mut okm).expect("64 bytes is a valid HKDF length");
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    (a, b)
}

/// One direction of the transport.
pub struct CipherState {
    aead: ChaCha20Poly1305,
    n: u64,
}

impl CipherState {
    fn new(k: &[u8; 32]) -> CipherState {
        CipherState { aead: ChaCha20Poly1305::new(k.into()), n: 0 }
    }

    fn nonce(&mut self) -> Result<[u8; 12], String> {
        if self.n == u64::MAX {
            return Err("nonces exhausted".into());
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.n.to_be_bytes());
        self.n += 1;
        Ok(nonce)
    }

    /// One record frame holding `plain` (at most [`MAX_PLAINTEXT`] bytes).
    pub fn seal_record(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        assert!(plain.len() <= MAX_PLAINTEXT);
        let nonce = self.nonce()?;
        let ct = self.aead.encrypt(&nonce.into(), plain).map_err(|_| "seal failed".to_string())?;
        let mut frame = Vec::with_capacity(3 + ct.len());
        frame.push(MSG_RECORD);
        frame.extend_from_slice(&(ct.len() as u16).to_be_bytes());
        frame.extend_from_slice(&ct);
        Ok(frame)
    }

    /// The plaintext of one record's ciphertext.
    pub fn open(&mut self, ct: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = self.nonce()?;
        self.aead.decrypt(&nonce.into(), ct).map_err(|_| "a record does not authenticate".to_string())
    }
}

/// What the responder learns and keeps from a handshake.
pub struct Accepted {
    /// The protocol version the client asked for (its capability version).
    pub version: u16,
    /// The client's machine key.
    pub machine: [u8; 32],
    /// The response frame to send back.
    pub response: [u8; 51],
    /// Server to client.
    pub tx: CipherState,
    /// Client to server.
    pub rx: CipherState,
}

/// Answers a client's initiation message (handshake.go `Server`, 196-317).
pub fn accept(server: &StaticSecret, init: &[u8]) -> Result<Accepted, String> {
    if init.len() != INITIATION_LEN {
        return Err("wrong handshake initiation size".into());
    }
    let version = u16::from_be_bytes([init[0], init[1]]);
    if init[2] != MSG_INITIATION {
        return Err("unexpected handshake message type".into());
    }
    if u16::from_be_bytes([init[3], init[4]]) as usize != INITIATION_LEN - 5 {
        return Err("wrong handshake initiation length".into());
    }
    let (e_raw, s_enc, tag) = (&init[5..37], &init[37..85], &init[85..101]);
    let mut s = Symmetric::new();
    s.mix_hash(format!("{PROLOGUE_PREFIX}{version}").as_bytes());
    let server_pub = PublicKey::from(server);
    s.mix_hash(server_pub.as_bytes());
    let mut e = [0u8; 32];
    e.copy_from_slice(e_raw);
    let client_e = PublicKey::from(e);
    s.mix_hash(client_e.as_bytes());
    let k = s.mix_dh(server.diffie_hellman(&client_e).as_bytes())?;
    let machine_raw = s.decrypt_and_hash(&k, s_enc).map_err(|e| format!("decrypting machine key: {e}"))?;
    let mut machine = [0u8; 32];
    machine.copy_from_slice(&machine_raw);
    let client_s = PublicKey::from(machine);
    let k = s.mix_dh(server.diffie_hellman(&client_s).as_bytes())?;
    s.decrypt_and_hash(&k, tag).map_err(|e| format!("decrypting initiation tag: {e}"))?;

    let ours = StaticSecret::random_from_rng(rand_core::OsRng);
    let ours_pub = PublicKey::from(&ours);
    s.mix_hash(ours_pub.as_bytes());
    s.mix_dh(ours.diffie_hellman(&client_e).as_bytes())?;
    let k = s.mix_dh(ours.diffie_hellman(&client_s).as_bytes())?;
    let tag = s.encrypt_and_hash(&k, &[]);
    let mut response = [0u8; 51];
    response[0] = MSG_RESPONSE;
    response[1..3].copy_from_slice(&48u16.to_be_bytes());
    response[3..35].copy_from_slice(ours_pub.as_bytes());
    response[35..].copy_from_slice(&tag);
    let (k1, k2) = hkdf2(&s.ck, &[]);
    // The initiator sends with the first key (handshake.go 172-183, 305-315).
    Ok(Accepted { version, machine, response, tx: CipherState::new(&k2), rx: CipherState::new(&k1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initiator's side, for the round trip below only: the client in
    /// every other test is the real one.
    fn initiate(server: &PublicKey, machine: &StaticSecret, version: u16) -> ([u8; 101], Symmetric, StaticSecret) {
        let mut s = Symmetric::new();
        s.mix_hash(format!("{PROLOGUE_PREFIX}{version}").as_bytes());
        s.mix_hash(server.as_bytes());
        let e = StaticSecret::random_from_rng(rand_core::OsRng);
        let e_pub = PublicKey::from(&e);
        let mut m = [0u8; 101];
        m[..2].copy_from_slice(&version.to_be_bytes());
        m[2] = MSG_INITIATION;
        m[3..5].copy_from_slice(&96u16.to_be_bytes());
        m[5..37].copy_from_slice(e_pub.as_bytes());
        s.mix_hash(e_pub.as_bytes());
        let k = s.mix_dh(e.diffie_hellman(server).as_bytes()).unwrap();
        let enc = s.encrypt_and_hash(&k, PublicKey::from(machine).as_bytes());
        m[37..85].copy_from_slice(&enc);
        let k = s.mix_dh(machine.diffie_hellman(server).as_bytes()).unwrap();
        let tag = s.encrypt_and_hash(&k, &[]);
        m[85..].copy_from_slice(&tag);
        (m, s, e)
    }

    #[test]
    fn a_handshake_and_records_round_trip_and_tampering_is_refused() {
        let server = StaticSecret::random_from_rng(rand_core::OsRng);
        let machine = StaticSecret::random_from_rng(rand_core::OsRng);
        let (init, mut s, e) = initiate(&PublicKey::from(&server), &machine, 131);
        let mut a = accept(&server, &init).unwrap();
        assert_eq!(a.version, 131);
        assert_eq!(&a.machine, PublicKey::from(&machine).as_bytes());
        // The initiator finishes: <- e, ee, se.
        let mut re = [0u8; 32];
        re.copy_from_slice(&a.response[3..35]);
        let re = PublicKey::from(re);
        s.mix_hash(re.as_bytes());
        s.mix_dh(e.diffie_hellman(&re).as_bytes()).unwrap();
        let k = s.mix_dh(machine.diffie_hellman(&re).as_bytes()).unwrap();
        s.decrypt_and_hash(&k, &a.response[35..]).unwrap();
        let (k1, k2) = hkdf2(&s.ck, &[]);
        let (mut ctx, mut crx) = (CipherState::new(&k1), CipherState::new(&k2));
        for msg in [&b"PRI * HTTP/2.0"[..], b"", &[7u8; MAX_PLAINTEXT]] {
            let f = ctx.seal_record(msg).unwrap();
            assert_eq!(a.rx.open(&f[3..]).unwrap(), msg);
            let f = a.tx.seal_record(msg).unwrap();
            assert_eq!(crx.open(&f[3..]).unwrap(), msg);
        }
        // A record out of order (nonce 3 expected, 4 sealed) is refused.
        let _skipped = ctx.seal_record(b"x").unwrap();
        let f = ctx.seal_record(b"y").unwrap();
        assert!(a.rx.open(&f[3..]).is_err());
        // A flipped bit in the initiation is refused.
        let (mut bad, _, _) = initiate(&PublicKey::from(&server), &machine, 131);
        bad[50] ^= 1;
        assert!(accept(&server, &bad).is_err());
        // A different prologue version no longer authenticates.
        let (mut other, _, _) = initiate(&PublicKey::from(&server), &machine, 131);
        other[1] = 130;
        assert!(accept(&server, &other).is_err());
    }
}

//! Decrypting a passphrase-encrypted age file (age-encryption.org/v1, the
//! `scrypt` recipient), as made by `age -p`: how an auth key travels on a
//! USB stick. Only decryption, only the passphrase recipient, only small
//! files: that is all the stub needs, and it keeps the stub small. The
//! primitives come from RustCrypto's crates; this module reads the format.
//!
//! The format (https://age-encryption.org/v1), in brief:
//!
//! ```text
//! age-encryption.org/v1
//! -> scrypt <salt, base64> <log2 N>
//! <the file key wrapped with ChaCha20-Poly1305, base64>
//! --- <HMAC-SHA256 of the header up to "---", base64>
//! <16-byte nonce><payload in 64 KiB ChaCha20-Poly1305 chunks>
//! ```
//!
//! optionally inside `-----BEGIN AGE ENCRYPTED FILE-----` armor.

use crate::secret::Secret;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hmac::Mac;
use sha2::Sha256;

/// Largest encrypted file read: an auth key is a few dozen bytes.
pub const MAX_FILE: usize = 64 * 1024;
/// The most scrypt work accepted (log2 N); age writes 18, and 2^22 needs
/// 4 GiB of memory.
pub const MAX_LOG_N: u8 = 22;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// Why a file could not be decrypted. Never holds any of its plaintext.
#[derive(Debug, PartialEq, Eq)]
pub enum AgeError {
    NotAge,
    /// Encrypted to a public key (`age -r`), not to a passphrase.
    NotPassphrase(String),
    Damaged(&'static str),
    /// The passphrase does not open it.
    WrongPassphrase,
    TooLarge,
}

impl std::fmt::Display for AgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgeError::NotAge => write!(f, "not an age file (no `age-encryption.org/v1` header)"),
            AgeError::NotPassphrase(kind) => {
                write!(f, "encrypted to a `{kind}` recipient, not to a passphrase")
            }
            AgeError::Damaged(what) => write!(f, "damaged age file: {what}"),
            AgeError::WrongPassphrase => write!(f, "the passphrase does not decrypt it"),
            AgeError::TooLarge => write!(f, "larger than {MAX_FILE} bytes: not an auth key"),
        }
    }
}

/// Decrypts `file` (binary or armored) with `passphrase`.
pub fn decrypt(file: &[u8], passphrase: &[u8]) -> Result<Secret, AgeError> {
    if file.len() > MAX_FILE {
        return Err(AgeError::TooLarge);
    }
    let dearmored;
    let file = if file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
        dearmored = dearmor(file)?;
        &dearmored[..]
    } else {
        file
    };
    let h = Header::parse(file)?;
    // Unwrap the file key with the passphrase.
    let mut label = b"age-encryption.org/v1/scrypt".to_vec();
    label.extend_from_slice(&h.salt);
    let params = scrypt::Params::new(h.log_n, 8, 1).map_err(|_| AgeError::Damaged("bad scrypt parameters"))?;
    let mut wrap = Secret::new(vec![0u8; 32]);
    scrypt::scrypt(passphrase, &label, &params, wrap.bytes_mut()).map_err(|_| AgeError::Damaged("scrypt"))?;
    let mut file_key = Secret::new(h.body[..16].to_vec());
    let tag: [u8; TAG] = h.body[16..].try_into().expect("length checked");
    open(wrap.bytes(), &[0; 12], file_key.bytes_mut(), &tag).map_err(|_| AgeError::WrongPassphrase)?;

    // The header MAC proves the header is the one the key was wrapped in.
    let mut hk = Secret::new(vec![0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(None, file_key.bytes()).expand(b"header", hk.bytes_mut()).expect("32 bytes");
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(hk.bytes()).expect("any key length");
    m.update(&file[..h.mac_covers]);
    m.verify_slice(&h.mac).map_err(|_| AgeError::Damaged("header MAC does not match"))?;
    payload(&file_key, &file[h.payload..])
}

/// A passphrase file's header: one scrypt stanza and the MAC line.
struct Header {
    salt: [u8; 16],
    log_n: u8,
    /// The wrapped file key and its tag.
    body: Vec<u8>,
    mac: Vec<u8>,
    /// The header bytes the MAC covers: up to `---` on the MAC line.
    mac_covers: usize,
    /// Where the payload begins.
    payload: usize,
}

impl Header {
    fn parse(file: &[u8]) -> Result<Header, AgeError> {
        let Some(rest) = file.strip_prefix(b"age-encryption.org/v1\n") else {
            return Err(AgeError::NotAge);
        };
        let damaged = AgeError::Damaged;
        // The header is text up to the MAC line; its lines are read one by one.
        let mut pos = file.len() - rest.len();
        let line = |pos: &mut usize| -> Result<&[u8], AgeError> {
            let end = file[*pos..].iter().position(|&b| b == b'\n').ok_or(damaged("header not terminated"))?;
            let l = &file[*pos..*pos + end];
            *pos += end + 1;
            Ok(l)
        };
        let stanza = line(&mut pos)?;
        let (salt, log_n) = scrypt_stanza(stanza)?;
        // The body: full 64-column lines, ended by a shorter one.
        let mut body_b64 = Vec::new();
        loop {
            let l = line(&mut pos)?;
            body_b64.extend_from_slice(l);
            if l.len() > 64 {
                return Err(damaged("stanza body line too long"));
            }
            if l.len() < 64 {
                break;
            }
        }
        let body = b64(&body_b64).ok_or(damaged("bad stanza body"))?;
        if body.len() != 16 + TAG {
            return Err(damaged("wrapped file key has the wrong length"));
        }
        let mac_line_start = pos;
        let mac_line = line(&mut pos)?;
        if mac_line.starts_with(b"-> ") {
            // A passphrase file has exactly one stanza.
            return Err(damaged("a scrypt stanza must be the only recipient"));
        }
        let mac = mac_line.strip_prefix(b"--- ").and_then(b64).ok_or(damaged("bad header MAC line"))?;
        Ok(Header { salt, log_n, body, mac, mac_covers: mac_line_start + 3, payload: pos })
    }
}

/// `-> scrypt SALT LOG_N`: the salt and the work factor, in range.
fn scrypt_stanza(stanza: &[u8]) -> Result<([u8; 16], u8), AgeError> {
    let damaged = AgeError::Damaged;
    let args: Vec<&[u8]> = stanza.split(|&b| b == b' ').collect();
    if args.first() != Some(&&b"->"[..]) || args.len() < 2 {
        return Err(damaged("no recipient stanza"));
    }
    if args[1] != b"scrypt" {
        return Err(AgeError::NotPassphrase(String::from_utf8_lossy(args[1]).into_owned()));
    }
    if args.len() != 4 {
        return Err(damaged("scrypt stanza takes a salt and a work factor"));
    }
    let salt: [u8; 16] = b64(args[2]).and_then(|s| s.try_into().ok()).ok_or(damaged("bad scrypt salt"))?;
    let log_n = std::str::from_utf8(args[3])
        .ok()
        .filter(|s| !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u8>().ok())
        .ok_or(damaged("bad scrypt work factor"))?;
    if log_n == 0 || log_n > MAX_LOG_N {
        return Err(damaged("scrypt work factor out of range"));
    }
    Ok((salt, log_n))
}

/// The payload: a nonce, then the STREAM of chunks, each authenticated,
/// the last one marked as last.
fn payload(file_key: &Secret, payload: &[u8]) -> Result<Secret, AgeError> {
    let damaged = AgeError::Damaged;
    if payload.len() < 16 + TAG {
        return Err(damaged("payload too short"));
    }
    let (nonce, mut chunks) = payload.split_at(16);
    let mut pk = Secret::new(vec![0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(nonce), file_key.bytes()).expand(b"payload", pk.bytes_mut()).expect("32 bytes");
    let mut out = Secret::new(Vec::new());
    let mut counter: u64 = 0;
    loop {
        let take = chunks.len().min(CHUNK + TAG);
        let (chunk, rest) = chunks.split_at(take);
        let last = rest.is_empty();
        if chunk.len() < TAG || (chunk.len() == TAG && counter > 0) {
            return Err(damaged("truncated or empty payload chunk"));
        }
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = last as u8;
        let mut plain = Secret::new(chunk[..chunk.len() - TAG].to_vec());
        let tag: [u8; TAG] = chunk[chunk.len() - TAG..].try_into().expect("length checked");
        open(pk.bytes(), &n, plain.bytes_mut(), &tag).map_err(|_| damaged("payload chunk does not authenticate"))?;
        out.extend(plain.bytes());
        if last {
            return Ok(out);
        }
        counter += 1;
        chunks = rest;
    }
}

/// ChaCha20-Poly1305 decryption in place.
fn open(key: &[u8], nonce: &[u8; 12], buf: &mut [u8], tag: &[u8; TAG]) -> Result<(), ()> {
    let key: [u8; 32] = key.try_into().map_err(|_| ())?;
    let cipher = ChaCha20Poly1305::new(&key.into());
    cipher.decrypt_inout_detached(&(*nonce).into(), &[], buf.into(), &(*tag).into()).map_err(|_| ())
}

/// Unpadded standard base64, as age's header uses; `None` on anything else
/// (padding, stray bytes, or non-canonical trailing bits).
fn b64(s: &[u8]) -> Option<Vec<u8>> {
    decode64(s, false)
}

fn decode64(s: &[u8], padded: bool) -> Option<Vec<u8>> {
    let s = if padded { s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s) } else { s };
    if s.len() % 4 == 1 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for group in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        let n = group.len() * 6 / 8;
        // The bits past the last byte must be zero (one spelling only).
        if n < 3 && bytes[1 + n] != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[1..1 + n]);
    }
    Some(out)
}

/// The binary file inside age's ASCII armor.
fn dearmor(file: &[u8]) -> Result<Vec<u8>, AgeError> {
    let text = std::str::from_utf8(file).map_err(|_| AgeError::Damaged("armor is not text"))?;
    let text = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    let inner = text
        .strip_prefix("-----BEGIN AGE ENCRYPTED FILE-----")
        .and_then(|t| t.strip_suffix("-----END AGE ENCRYPTED FILE-----"))
        .ok_or(AgeError::Damaged("armor has no END line"))?;
    let b64: String = inner.lines().map(str::trim_end).collect();
    decode64(b64.as_bytes(), true).ok_or(AgeError::Damaged("armor is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_strict() {
        assert_eq!(b64(b"aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(b64(b"aGl"), None, "non-zero trailing bits");
        assert_eq!(b64(b"aGk="), None, "the header is unpadded");
        assert_eq!(decode64(b"aGk=", true).as_deref(), Some(&b"hi"[..]));
        assert_eq!(b64(b"a"), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(decrypt(b"hello", b"pw").unwrap_err(), AgeError::NotAge);
        let x25519 = b"age-encryption.org/v1\n-> X25519 abc\nxyz\n--- mac\n";
        assert_eq!(decrypt(x25519, b"pw").unwrap_err(), AgeError::NotPassphrase("X25519".into()));
        assert_eq!(decrypt(&vec![b'a'; MAX_FILE + 1], b"pw").unwrap_err(), AgeError::TooLarge);
        let huge_n = b"age-encryption.org/v1\n-> scrypt AAAAAAAAAAAAAAAAAAAAAA 40\nxyz\n--- mac\n";
        assert!(matches!(decrypt(huge_n, b"pw").unwrap_err(), AgeError::Damaged(_)));
    }
}

//! Keys and signatures in minisign's formats.
//!
//! Key files are read and written with the `minisign` crate, so keys made by
//! `minisign -G` work here and ours work with `minisign -S`. Signing itself
//! is done here, with deterministic Ed25519 (RFC 8032) over minisign's
//! prehashed (BLAKE2b-512) mode: the `minisign` crate adds random noise to
//! each signature, and that would make two builds of the same inputs differ.
//! The result is an ordinary minisign signature; `minisign -V` and the
//! `minisign` crate both verify it, and `sign()` checks that before
//! returning.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use blake2::Digest as _;
use ed25519_dalek::Signer as _;
use nxs_format::trust::{KeyId, PublicKey};
use std::io::Read;
use std::path::Path;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A secret key ready to sign.
pub struct SigningKey {
    keynum: [u8; 8],
    key: ed25519_dalek::SigningKey,
    public: minisign::PublicKey,
}

impl SigningKey {
    /// Loads a minisign secret key file. An encrypted key needs `password`;
    /// without one, it is asked for on the terminal.
    pub fn load(path: &Path, password: Option<String>) -> Result<SigningKey> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read secret key {}", path.display()))?;
        let line = nxs_format::trust::key_line(&text)
            .ok_or_else(|| anyhow!("{} is not a minisign secret key: no key line", path.display()))?;
        let raw = B64.decode(line).map_err(|e| anyhow!("{} is not a minisign secret key: {e}", path.display()))?;
        if raw.len() != 158 || &raw[0..2] != b"Ed" {
            bail!("{} is not a minisign Ed25519 secret key", path.display());
        }
        // An unencrypted key (`minisign -G -W`, or ours with --unencrypted)
        // is read directly: minisign 0.11 writes it with an all-zero
        // checksum, which the minisign crate refuses. The public half is
        // still checked against the seed below.
        let raw = if raw[2..4] == [0, 0] {
            raw
        } else {
            let password = match password {
                Some(p) => p,
                None => rpassword::prompt_password(format!("Password for {}: ", path.display()))
                    .with_context(|| format!("{} is encrypted and no password was given", path.display()))?,
            };
            minisign::SecretKeyBox::from_string(&text)
                .and_then(|b| b.into_secret_key(Some(password)))
                .map_err(|e| anyhow!("cannot decrypt {}: {e} (wrong password?)", path.display()))?
                .to_bytes()
        };
        Self::from_raw(&raw).with_context(|| format!("secret key {}", path.display()))
    }

    /// From the 158 raw bytes of a decrypted minisign secret key:
    /// sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) opslimit(8) memlimit(8)
    /// keynum(8) seed||pk(64) chk(32).
    fn from_raw(raw: &[u8]) -> Result<SigningKey> {
        let keynum: [u8; 8] = raw[54..62].try_into().unwrap();
        let seed: [u8; 32] = raw[62..94].try_into().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if key.verifying_key().to_bytes()[..] != raw[94..126] {
            bail!("secret key is damaged: its public half does not match its seed");
        }
        let mut pk = b"Ed".to_vec();
        pk.extend_from_slice(&keynum);
        pk.extend_from_slice(&raw[94..126]);
        let public = minisign::PublicKey::from_base64(&B64.encode(&pk)).map_err(|e| anyhow!("{e}"))?;
        Ok(SigningKey { keynum, key, public })
    }

    /// The minisign public key, base64 (the second line of a `.pub` file).
    pub fn public_base64(&self) -> String {
        self.public.to_base64()
    }

    /// The key id as minisign prints it.
    pub fn key_id(&self) -> String {
        KeyId(self.keynum).to_string()
    }

    /// The public half, as a root lists it.
    pub fn public(&self) -> PublicKey {
        PublicKey::parse(&self.public_base64()).expect("a key we hold is a minisign key")
    }

    /// Signs `data` in prehashed mode and returns the `.minisig` text.
    pub fn sign(&self, mut data: impl Read, trusted_comment: &str) -> Result<String> {
        let mut h = blake2::Blake2b512::new();
        std::io::copy(&mut data, &mut HashWriter(&mut h))?;
        self.sign_prehashed(&h.finalize().into(), trusted_comment)
    }

    /// As [`SigningKey::sign`], of data whose BLAKE2b-512 is `prehash`
    /// (hashed as it was written, rather than read again).
    pub fn sign_prehashed(&self, prehash: &[u8; 64], trusted_comment: &str) -> Result<String> {
        if trusted_comment.contains(['\n', '\r']) {
            bail!("a trusted comment is one line");
        }
        let sig = self.key.sign(prehash).to_bytes();
        let mut sig_line = Vec::with_capacity(74);
        sig_line.extend_from_slice(b"ED");
        sig_line.extend_from_slice(&self.keynum);
        sig_line.extend_from_slice(&sig);
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&sig);
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_sig = self.key.sign(&global).to_bytes();
        let text = format!(
            "{}\n{}\ntrusted comment: {}\n{}\n",
            nxs_format::SIGNATURE_FIRST_LINE,
            B64.encode(&sig_line),
            trusted_comment,
            B64.encode(global_sig)
        );
        Ok(text)
    }

    /// Checks `sig_text` over `data` with the `minisign` crate, refusing
    /// legacy signatures: a guard that what `sign` wrote is what others read.
    pub fn check(&self, data: &[u8], sig_text: &str) -> Result<()> {
        let sig = minisign::SignatureBox::from_string(sig_text).map_err(|e| anyhow!("{e}"))?;
        minisign::verify(&self.public, &sig, std::io::Cursor::new(data), true, false, false)
            .map_err(|e| anyhow!("self-check of a fresh signature failed: {e}"))
    }
}

struct HashWriter<'a>(&'a mut blake2::Blake2b512);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The public key in a minisign `.pub` file.
pub fn public_key_file(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read public key {}", path.display()))?;
    parse_public(&text).with_context(|| format!("public key {}", path.display()))
}

/// Parses a `.pub` file's text: an optional comment line, then base64.
pub fn parse_public(text: &str) -> Result<PublicKey> {
    let line = nxs_format::trust::key_line(text).ok_or_else(|| anyhow!("no key line"))?;
    PublicKey::parse(line).map_err(|e| anyhow!("not a minisign public key: {e}"))
}

/// Writes a new minisign key pair: `<stem>.key` and `<stem>.pub`.
/// With `password`, the secret key is encrypted with it (scrypt), as
/// `minisign -G` does; without, it is stored unencrypted, as `minisign -G -W`.
pub fn keygen(stem: &Path, password: Option<String>, force: bool) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let sk_path = stem.with_extension("key");
    let pk_path = stem.with_extension("pub");
    for p in [&sk_path, &pk_path] {
        if p.exists() && !force {
            bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    let encrypted = password.is_some();
    let kp = match password {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow!("key generation failed: {e}"))?;
    let comment = if encrypted { "nxs-bundle encrypted secret key" } else { "nxs-bundle unencrypted secret key" };
    let sk_text = kp.sk.to_box(Some(comment)).map_err(|e| anyhow!("{e}"))?.to_string();
    let pk_text = kp.pk.to_box().map_err(|e| anyhow!("{e}"))?.to_string();
    if let Some(dir) = sk_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&sk_path, sk_text.as_bytes(), 0o600)?;
    crate::fsutil::write_atomic(&pk_path, pk_text.as_bytes(), 0o644)?;
    Ok((sk_path, pk_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_deterministic_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = keygen(&dir.path().join("k"), None, false).unwrap();
        let key = SigningKey::load(&sk, None).unwrap();
        let a = key.sign(&b"hello"[..], "nxs test").unwrap();
        let b = key.sign(&b"hello"[..], "nxs test").unwrap();
        assert_eq!(a, b);
        key.check(b"hello", &a).unwrap();
        assert!(key.check(b"hellO", &a).is_err());
        let tk = public_key_file(&pk).unwrap();
        assert_eq!(tk.base64, key.public_base64());
        assert_eq!(tk.id.to_string(), key.key_id());
    }

    #[test]
    fn encrypted_keys_need_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, _) = keygen(&dir.path().join("k"), Some("pw".into()), false).unwrap();
        assert!(SigningKey::load(&sk, Some("pw".into())).is_ok());
        assert!(SigningKey::load(&sk, Some("wrong".into())).is_err());
        assert!(keygen(&dir.path().join("k"), None, false).is_err(), "no silent overwrite");
    }
}

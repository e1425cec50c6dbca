//! Trust that outlives a key (format 4): a chain of signed roots, each
//! naming the keys that may sign and how many of them must, checked
//! offline and without a clock.
//!
//! The model is TUF's root role (the TUF specification, section 5.3,
//! "Update the root role"), without expiry: root N+1 is trusted when at
//! least `threshold(N)` distinct keys of root N and `threshold(N+1)`
//! distinct keys of root N+1 have signed its exact bytes, and its version
//! is exactly N+1. tough's `load_root` (tough `src/lib.rs`) walks the same
//! chain; ours walks it from the root the stub embeds, over roots the
//! bundle carries, never over a network.
//!
//! - [`Root`]: the root file, `nxs-root 1` (docs/FORMAT.md, "Roots").
//! - [`TrustBlock`]: a format 4 bundle's signature region: the chain of
//!   roots with their signatures, then the manifest's signatures.
//! - [`walk`] and [`signed_by`]: the rules.
//!
//! Signatures are ordinary minisign signatures, prehashed only, one per
//! signer, so stock `minisign -V` checks each one; they are checked with
//! the `minisign-verify` crate.

mod block;
mod root;
mod walk;

pub use block::{SignedRoot, TrustBlock, MAX_BLOCK_LEN};
pub use root::{key_line, PublicKey, Root, MAX_KEYS};
pub use walk::{signed_by, walk, Signers, Walked, MAX_STEPS};

use std::fmt;

/// A minisign key id: the 8-byte key number that a public key and each of
/// its signatures carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parses a key id as minisign prints it: 16 upper-case hex digits,
    /// the little-endian key number read as a number.
    pub fn parse(s: &str) -> Option<KeyId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
            return None;
        }
        let n = u64::from_str_radix(s, 16).ok()?;
        Some(KeyId(n.to_le_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// The key id a minisign signature's text says it is from, before it is
/// checked: to name the signer of a signature that no key accepts.
pub fn signature_key_id(sig_text: &str) -> Option<KeyId> {
    use base64::Engine as _;
    let line = sig_text.lines().nth(1)?;
    let raw = base64::engine::general_purpose::STANDARD.decode(line).ok()?;
    (raw.len() == 74).then(|| KeyId(raw[2..10].try_into().unwrap()))
}

/// Why a root, a trust block or a chain was refused: one sentence that
/// names the root version, the step or the signature, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustError(pub String);

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrustError {}

fn refuse<T>(msg: impl Into<String>) -> Result<T, TrustError> {
    Err(TrustError(msg.into()))
}

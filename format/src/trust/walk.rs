//! The chain rules (TUF specification section 5.3, without expiry), and
//! the threshold count shared by roots and manifests.

use super::{refuse, signature_key_id, KeyId, Root, TrustBlock, TrustError};
use std::collections::BTreeSet;

/// The most roots a chain may add to the one a reader starts from.
pub const MAX_STEPS: usize = 1024;

/// Who signed: the distinct keys of a root whose signatures check, and
/// what was not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signers {
    /// Distinct keys, in the order their first good signature came.
    pub keys: Vec<KeyId>,
    /// Why some signatures did not count, one phrase each.
    pub not_counted: Vec<String>,
}

impl Signers {
    fn explain(&self) -> String {
        if self.not_counted.is_empty() {
            String::new()
        } else {
            format!("; not counted: {}", self.not_counted.join("; "))
        }
    }
}

/// The distinct keys of `root` that signed `data`, refusing fewer than
/// its threshold. A key counts once however often it signs; a key that
/// `revoked` holds, or that `root` does not list, never counts.
pub fn signed_by(
    root: &Root,
    revoked: &BTreeSet<KeyId>,
    data: &[u8],
    sigs: &[String],
    what: &str,
) -> Result<Signers, TrustError> {
    let mut s = Signers::default();
    for (i, sig) in sigs.iter().enumerate() {
        let n = i + 1;
        let Some(id) = signature_key_id(sig) else {
            s.not_counted.push(format!("signature {n} is not a minisign signature"));
            continue;
        };
        if revoked.contains(&id) {
            s.not_counted.push(format!("signature {n} is by key {id}, which is revoked"));
        } else if s.keys.contains(&id) {
            s.not_counted.push(format!("signature {n} is by key {id} again, and a key counts once"));
        } else if let Some(key) = root.key(&id) {
            match key.check(data, sig) {
                Ok(()) => s.keys.push(id),
                Err(why) => s.not_counted.push(format!("signature {n} (key {id}) {why}")),
            }
        } else {
            s.not_counted.push(format!("signature {n} is by key {id}, which root {} does not list", root.version));
        }
    }
    if s.keys.len() < root.threshold {
        return refuse(format!(
            "{what} has {} valid signature{} from keys of root {}, which needs {}{}",
            s.keys.len(),
            if s.keys.len() == 1 { "" } else { "s" },
            root.version,
            root.threshold,
            s.explain()
        ));
    }
    Ok(s)
}

/// Where a walk ended: the newest root trusted, and every key any root on
/// the way revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub root: Root,
    /// The newest root's exact bytes.
    pub text: String,
    pub revoked: BTreeSet<KeyId>,
    /// Roots walked past the one started from.
    pub steps: usize,
}

/// Walks `block`'s chain from `anchor` (whose exact bytes are
/// `anchor_text`), the root a reader already trusts.
///
/// The block's roots must have consecutive versions. Those older than the
/// anchor are passed over; one of the anchor's version must be the
/// anchor, byte for byte. Each newer root N+1 needs `threshold(N)`
/// distinct keys of root N and `threshold(N+1)` of its own, none of them
/// revoked on the way, and may not list a key revoked on the way. At most
/// [`MAX_STEPS`] roots are walked.
pub fn walk(anchor: &Root, anchor_text: &str, block: &TrustBlock) -> Result<Walked, TrustError> {
    let newer = block.roots.iter().filter(|r| r.root.version > anchor.version).count();
    if newer > MAX_STEPS {
        return refuse(format!(
            "the chain has {newer} roots past root {}; at most {MAX_STEPS} are walked",
            anchor.version
        ));
    }
    let mut trusted = anchor.clone();
    let mut trusted_text = anchor_text.to_string();
    let mut revoked: BTreeSet<KeyId> = anchor.revoked.iter().copied().collect();
    let mut steps = 0;
    for (i, pair) in block.roots.iter().enumerate() {
        let v = pair.root.version;
        if i > 0 {
            let before = block.roots[i - 1].root.version;
            if before.checked_add(1) != Some(v) {
                return refuse(format!(
                    "root chain: root {v} follows root {before}; each root's version must be exactly one more than the one before it"
                ));
            }
        }
        if v < trusted.version {
            continue;
        }
        if v == trusted.version {
            if pair.text != trusted_text {
                return refuse(format!(
                    "root chain: the bundle's root {v} is not the root {v} trusted here (the same version with other bytes)"
                ));
            }
            continue;
        }
        let step = format!("root chain step {} -> {v}", trusted.version);
        if v != trusted.version + 1 {
            return refuse(format!(
                "{step}: root {} is missing; each root's version must be exactly one more than the one it follows",
                trusted.version + 1
            ));
        }
        let data = pair.text.as_bytes();
        signed_by(&trusted, &revoked, data, &pair.signatures, &format!("{step}: root {v}"))?;
        let mut now_revoked = revoked.clone();
        now_revoked.extend(pair.root.revoked.iter().copied());
        if let Some(k) = pair.root.keys.iter().find(|k| now_revoked.contains(&k.id)) {
            return refuse(format!("{step}: root {v} lists key {}, which an earlier root revoked", k.id));
        }
        signed_by(&pair.root, &now_revoked, data, &pair.signatures, &format!("{step}: root {v}"))?;
        revoked = now_revoked;
        trusted = pair.root.clone();
        trusted_text = pair.text.clone();
        steps += 1;
    }
    Ok(Walked { root: trusted, text: trusted_text, revoked, steps })
}

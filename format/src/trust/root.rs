//! The root file: which keys may sign, and how many must.
//!
//! ```text
//! nxs-root 1
//! version <N>                   1, 2, 3, ...: one more than the root before
//! threshold <K>                 1 <= K <= the number of keys
//! key <minisign public key>     one per key (base64, a .pub file's second line)
//! revoked-key <key id>          zero or more: keys that may never sign again
//! end
//! ```
//!
//! Lines come in that order, each field in one spelling, as in the
//! manifest; no field of a root ever needs percent-encoding, so none may
//! carry a `%`.

use super::{refuse, KeyId, TrustError};
use base64::Engine as _;
use std::collections::BTreeSet;

/// The most keys a root may list.
pub const MAX_KEYS: usize = 255;
/// The largest root file, in bytes.
const MAX_ROOT_LEN: usize = 64 << 10;

/// The key line of a minisign key file (`.pub` or `.key`): the first
/// line that is neither blank nor the untrusted comment.
pub fn key_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
}

/// A minisign Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// As on the second line of a `.pub` file.
    pub base64: String,
    pub id: KeyId,
}

impl PublicKey {
    /// Parses the base64 of a minisign public key, in its one spelling.
    pub fn parse(b64: &str) -> Result<PublicKey, String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let raw = engine.decode(b64).map_err(|e| format!("`{b64}` is not base64: {e}"))?;
        if raw.len() != 42 || &raw[0..2] != b"Ed" {
            return Err(format!("`{b64}` is not a minisign Ed25519 public key"));
        }
        if engine.encode(&raw) != b64 {
            return Err(format!("`{b64}` is not in canonical base64"));
        }
        Ok(PublicKey { base64: b64.to_string(), id: KeyId(raw[2..10].try_into().unwrap()) })
    }

    /// Whether `sig_text` is this key's valid prehashed signature over
    /// `data` (its trusted comment and global signature included, as
    /// `minisign -V` checks them). Legacy signatures are refused.
    pub fn verifies(&self, data: &[u8], sig_text: &str) -> bool {
        self.check(data, sig_text).is_ok()
    }

    /// As [`PublicKey::verifies`], saying why not.
    pub fn check(&self, data: &[u8], sig_text: &str) -> Result<(), String> {
        let key = minisign_verify::PublicKey::from_base64(&self.base64).map_err(|e| e.to_string())?;
        let sig =
            minisign_verify::Signature::decode(sig_text).map_err(|e| format!("not a minisign signature ({e})"))?;
        key.verify(data, &sig, false).map_err(|e| match e {
            minisign_verify::Error::UnexpectedAlgorithm => {
                "is a legacy (non-prehashed) signature, which is refused".into()
            }
            e => format!("does not match ({e})"),
        })
    }
}

/// A root: version, threshold, keys, and the keys it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub version: u64,
    pub threshold: usize,
    pub keys: Vec<PublicKey>,
    pub revoked: Vec<KeyId>,
}

impl Root {
    /// Today's trust model as a root: version 1, any one of `keys`.
    pub fn single(keys: Vec<PublicKey>) -> Root {
        Root { version: 1, threshold: 1, keys, revoked: Vec::new() }
    }

    /// The key with id `id`, if this root lists it.
    pub fn key(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// The root's text, in its one spelling.
    pub fn to_text(&self) -> String {
        let mut out = format!("nxs-root 1\nversion {}\nthreshold {}\n", self.version, self.threshold);
        for k in &self.keys {
            out.push_str(&format!("key {}\n", k.base64));
        }
        for r in &self.revoked {
            out.push_str(&format!("revoked-key {r}\n"));
        }
        out.push_str("end\n");
        out
    }

    /// Parses a root file, refusing every other spelling and every root
    /// that breaks a rule of its own: no keys, a threshold of 0 or above
    /// the number of keys, a key listed twice, a key both listed and
    /// revoked.
    pub fn parse(bytes: &[u8]) -> Result<Root, TrustError> {
        if bytes.len() > MAX_ROOT_LEN {
            return refuse(format!("root file is {} bytes, more than the {MAX_ROOT_LEN} a root may be", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| TrustError("root file is not UTF-8".into()))?;
        let Some(body) = text.strip_suffix('\n') else {
            return refuse("root file does not end with a newline");
        };
        let mut lines = Lines { lines: body.split('\n').enumerate().map(|(i, l)| (i + 1, l)).peekable() };
        match lines.field("nxs-root")? {
            (_, Some(v)) if v == "1" => {}
            (n, Some(v)) => return refuse(format!("root file line {n}: root format `{v}`; this reader knows 1")),
            _ => return refuse("not a root file: it does not begin with `nxs-root 1`"),
        }
        let (n, v) = lines.field("version")?;
        let version = number(n, "version", v)?;
        let (threshold_line, v) = lines.field("threshold")?;
        let threshold = number(threshold_line, "threshold", v)?;
        let keys = lines.keys()?;
        let revoked = lines.revoked(&keys)?;
        match lines.lines.next() {
            Some((_, "end")) => {}
            Some((n, l)) => {
                return Err(bad(
                    n,
                    format!(
                        "unexpected line `{l}` (lines go nxs-root, version, threshold, key..., revoked-key..., end)"
                    ),
                ))
            }
            None => return refuse("root file has no `end` line"),
        }
        if let Some((n, _)) = lines.lines.next() {
            return Err(bad(n, "text after the `end` line".into()));
        }
        if keys.is_empty() {
            return refuse("root file lists no key");
        }
        if threshold as usize > keys.len() {
            return Err(bad(
                threshold_line,
                format!("threshold {threshold} is more than the {} keys listed", keys.len()),
            ));
        }
        Ok(Root { version, threshold: threshold as usize, keys, revoked })
    }
}

fn bad(n: usize, why: String) -> TrustError {
    TrustError(format!("root file line {n}: {why}"))
}

/// A number from 1, in its one spelling.
fn number(n: usize, what: &str, v: Option<String>) -> Result<u64, TrustError> {
    let v = v.ok_or_else(|| bad(n.max(2), format!("expected the `{what}` line")))?;
    if v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return Err(bad(n, format!("{what}: expected a number from 1, found `{v}`")));
    }
    Ok(v.parse().expect("checked"))
}

/// A root file's lines, numbered from 1, read one keyword at a time.
struct Lines<'a, I: Iterator<Item = (usize, &'a str)>> {
    lines: std::iter::Peekable<I>,
}

impl<'a, I: Iterator<Item = (usize, &'a str)>> Lines<'a, I> {
    /// The next line's one field, if it is a `want` line.
    fn field(&mut self, want: &str) -> Result<(usize, Option<String>), TrustError> {
        let Some(&(n, l)) = self.lines.peek() else { return Ok((0, None)) };
        match l.strip_prefix(want).and_then(|r| r.strip_prefix(' ')) {
            Some(v) if !v.is_empty() && !v.contains([' ', '%']) => {
                self.lines.next();
                Ok((n, Some(v.to_string())))
            }
            Some(_) => Err(bad(n, format!("`{want}` takes one field"))),
            None => Ok((n, None)),
        }
    }

    fn keys(&mut self) -> Result<Vec<PublicKey>, TrustError> {
        let mut keys: Vec<PublicKey> = Vec::new();
        while let (n, Some(v)) = self.field("key")? {
            let k = PublicKey::parse(&v).map_err(|e| bad(n, e))?;
            if keys.iter().any(|o| o.id == k.id) {
                return Err(bad(n, format!("key {} is listed twice", k.id)));
            }
            if keys.len() == MAX_KEYS {
                return Err(bad(n, format!("more than {MAX_KEYS} keys")));
            }
            keys.push(k);
        }
        Ok(keys)
    }

    fn revoked(&mut self, keys: &[PublicKey]) -> Result<Vec<KeyId>, TrustError> {
        let mut revoked = Vec::new();
        let mut seen = BTreeSet::new();
        while let (n, Some(v)) = self.field("revoked-key")? {
            let id =
                KeyId::parse(&v).ok_or_else(|| bad(n, format!("`{v}` is not a key id (16 upper-case hex digits)")))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(bad(n, format!("key {id} is both listed and revoked")));
            }
            if !seen.insert(id) || revoked.len() == MAX_KEYS {
                return Err(bad(n, format!("key {id} is revoked twice, or too many keys are revoked")));
            }
            revoked.push(id);
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const KEY_A: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    #[test]
    fn round_trips_and_refuses_other_spellings() {
        let r = Root {
            version: 2,
            threshold: 1,
            keys: vec![PublicKey::parse(KEY_A).unwrap()],
            revoked: vec![KeyId([1; 8])],
        };
        let text = r.to_text();
        assert_eq!(Root::parse(text.as_bytes()), Ok(r.clone()));
        for (bad, why) in [
            (text.replace("version 2", "version 02"), "number"),
            (text.replace("version 2", "version 0"), "number"),
            (text.replace("threshold 1", "threshold 2"), "more than"),
            (text.replace("threshold 1", "threshold 0"), "number"),
            (text.replace("nxs-root 1", "nxs-root 2"), "knows 1"),
            (text.replace("end\n", "end\nend\n"), "after"),
            (text.replace("end\n", ""), "end"),
            (
                text.replace(
                    "revoked-key 0101010101010101",
                    "revoked-key 0101010101010101\nrevoked-key 0101010101010101",
                ),
                "twice",
            ),
            (text.replace("revoked-key 0101010101010101", "revoked-key 0101010101010101x"), "key id"),
            (text.replace("0101010101010101", &PublicKey::parse(KEY_A).unwrap().id.to_string()), "both"),
            (text.replace(&format!("key {KEY_A}"), &format!("key {KEY_A}\nkey {KEY_A}")), "twice"),
            (text.replace("threshold 1\n", "threshold 1\nversion 3\n"), "unexpected"),
            (text.replace("key ", "key  "), "one field"),
            (text.trim_end().to_string(), "newline"),
        ] {
            let e = Root::parse(bad.as_bytes()).expect_err(&bad).0;
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        let k = PublicKey::parse(KEY_A).unwrap();
        assert_eq!(KeyId::parse(&k.id.to_string()), Some(k.id));
        assert_eq!(KeyId::parse("e7620f1842b4e81f"), None, "lower case is not minisign's spelling");
    }
}

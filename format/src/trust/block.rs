//! A format 4 bundle's signature region: the trust block.
//!
//! ```text
//! nxs-trust 1
//! root <N>                 a root's file follows, through its `end` line,
//! signature                then its signatures: each `signature` line
//! <four lines>             is followed by one minisign signature
//! ...                      (more roots, each with its signatures, in order)
//! manifest                 then the manifest's signatures
//! signature
//! <four lines>
//! end-of-trust
//! ```
//!
//! No line of a root or a signature can be mistaken for a section line
//! (`root N`, `signature`, `manifest`, `end-of-trust`), so the block splits
//! into files with `awk` for stock `minisign -V` (docs/FORMAT.md gives the
//! recipe).

use super::{refuse, Root, TrustError};

/// The largest trust block a reader accepts, in bytes: room for a chain of
/// well over [`super::MAX_STEPS`] roots.
pub const MAX_BLOCK_LEN: u64 = 16 << 20;
/// Most signatures on one root or on the manifest.
const MAX_SIGNATURES: usize = 255;

/// A root as a bundle carries it: its exact bytes, parsed, and the
/// signatures over those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRoot {
    pub text: String,
    pub root: Root,
    pub signatures: Vec<String>,
}

/// The chain of roots, oldest first, and the manifest's signatures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustBlock {
    pub roots: Vec<SignedRoot>,
    pub manifest_signatures: Vec<String>,
}

impl TrustBlock {
    /// The block's text, in its one spelling.
    pub fn to_text(&self) -> String {
        let mut out = String::from("nxs-trust 1\n");
        for r in &self.roots {
            out.push_str(&format!("root {}\n{}", r.root.version, r.text));
            for s in &r.signatures {
                out.push_str("signature\n");
                out.push_str(s);
            }
        }
        out.push_str("manifest\n");
        for s in &self.manifest_signatures {
            out.push_str("signature\n");
            out.push_str(s);
        }
        out.push_str("end-of-trust\n");
        out
    }

    /// Parses a trust block. Every root is parsed ([`Root::parse`]) and
    /// must have the version its section line says; every signature is the
    /// four lines of a bundle signature, its first line the fixed one
    /// ([`crate::SIGNATURE_FIRST_LINE`]). Nothing is verified here: that is
    /// [`super::walk`] and [`super::signed_by`].
    pub fn parse(bytes: &[u8]) -> Result<TrustBlock, TrustError> {
        if bytes.len() as u64 > MAX_BLOCK_LEN {
            return refuse(format!("trust block is {} bytes, more than {MAX_BLOCK_LEN}", bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| TrustError("trust block is not UTF-8".into()))?;
        if !text.ends_with('\n') || text.contains('\r') {
            return refuse("trust block does not end with a newline, or holds a carriage return");
        }
        let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
        let bad = |i: usize, why: String| TrustError(format!("trust block line {}: {why}", i + 1));
        if lines.first() != Some(&"nxs-trust 1") {
            return refuse("not a trust block: it does not begin with `nxs-trust 1`");
        }
        let mut block = TrustBlock::default();
        let mut i = 1;
        let mut in_manifest = false;
        loop {
            let Some(&l) = lines.get(i) else { return refuse("trust block has no `end-of-trust` line") };
            if l == "end-of-trust" {
                if !in_manifest {
                    return Err(bad(i, "`end-of-trust` before the `manifest` section".into()));
                }
                if i + 1 != lines.len() {
                    return Err(bad(i + 1, "text after `end-of-trust`".into()));
                }
                return Ok(block);
            }
            if l == "signature" {
                let sig = signature(&lines, i + 1).map_err(|why| bad(i + 1, why))?;
                let list = match (in_manifest, block.roots.last_mut()) {
                    (true, _) => &mut block.manifest_signatures,
                    (false, Some(r)) => &mut r.signatures,
                    (false, None) => return Err(bad(i, "a signature before any root".into())),
                };
                if list.len() == MAX_SIGNATURES {
                    return Err(bad(i, format!("more than {MAX_SIGNATURES} signatures in one section")));
                }
                list.push(sig);
                i += 5;
            } else if l == "manifest" && !in_manifest {
                in_manifest = true;
                i += 1;
            } else if let Some(v) = l.strip_prefix("root ").filter(|_| !in_manifest) {
                let end = (i + 1..lines.len())
                    .find(|&j| lines[j] == "end")
                    .ok_or_else(|| bad(i, format!("root {v} has no `end` line")))?;
                let text: String = lines[i + 1..=end].iter().map(|l| format!("{l}\n")).collect();
                let root = Root::parse(text.as_bytes()).map_err(|e| bad(i, format!("root {v}: {e}")))?;
                if v != root.version.to_string() {
                    return Err(bad(
                        i,
                        format!("the section says root {v}, the root inside says version {}", root.version),
                    ));
                }
                block.roots.push(SignedRoot { text, root, signatures: Vec::new() });
                i = end + 1;
            } else {
                return Err(bad(i, format!("unexpected line `{l}`")));
            }
        }
    }
}

/// The four lines of a signature starting at line `at`, each with its `\n`.
fn signature(lines: &[&str], at: usize) -> Result<String, String> {
    let four = lines.get(at..at + 4).ok_or("a signature must be four lines")?;
    if four[0] != crate::SIGNATURE_FIRST_LINE || !four[2].starts_with("trusted comment: ") {
        return Err(format!(
            "not the four lines of a bundle signature (the first must be `{}`, the third a trusted comment)",
            crate::SIGNATURE_FIRST_LINE
        ));
    }
    Ok(four.iter().map(|l| format!("{l}\n")).collect())
}

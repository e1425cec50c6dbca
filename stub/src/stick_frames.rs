//! `stick verify`'s second opinion on a damaged bundle or shared part:
//! its signed manifest. The stub region and each frame of the file are
//! hashed against the signed sha256s, so the report names which signed
//! regions are damaged ("stub", "frame 3"), and locates the damage even
//! where the file's parity is missing.

use crate::bundle::{Signed, Trust};
use nxs_format::Manifest;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A damaged signed region of a file: its name and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// Whether `file`'s bytes `[at, at + len)` hash to `want`.
fn intact(file: &File, at: u64, len: u64, want: &[u8; 32]) -> bool {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], at + done).is_err() {
            return false;
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    h.finalize()[..] == want[..]
}

/// The signed manifest of the bundle at `path` (opened from `file`), if
/// its trailer, manifest and signature are intact.
pub fn manifest_of(file: File, path: &Path) -> Option<Manifest> {
    Signed::open_file(file, path, &Trust::Embedded).ok().map(|s| s.manifest().clone())
}

/// The damaged signed regions of `file`: a bundle whose manifest is `m`
/// (`shared` false), or the shared part `m` names (`shared` true).
/// Formats 1 and 2 sign no frame's hash: their frames are not named.
pub fn damaged(file: &File, m: &Manifest, shared: bool) -> Vec<Region> {
    let mut out = Vec::new();
    if !shared && !intact(file, 0, m.stub.len, &m.stub.sha256) {
        out.push(Region { name: "stub".into(), start: 0, end: m.stub.len });
    }
    let mut at = if shared { 0 } else { m.stub.len };
    // A bundle's frames by their line in its frame table; the shared
    // part's among the shared ones only, the same on every platform.
    for (k, (i, f)) in m.frames.iter().enumerate().filter(|(_, f)| f.shared == shared).enumerate() {
        let (start, end) = (at, at + f.compressed);
        at = end;
        if f.sha256.is_some_and(|want| !intact(file, start, f.compressed, &want)) {
            let name = if shared { format!("shared frame {k}") } else { format!("frame {i}") };
            out.push(Region { name, start, end });
        }
    }
    out
}

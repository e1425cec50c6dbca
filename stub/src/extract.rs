//! Walking the payload's tar stream against the signed manifest, entry by
//! entry, and either checking it (`verify`) or writing it into a fresh
//! staging directory (`extract`, `install`).
//!
//! # Security
//! The manifest is the whole truth; the tar stream must match it exactly.
//! Entry i of the tar stream must be manifest entry i: the same path, the
//! same type (directory or regular file only) and the same size. Anything
//! else is refused, never skipped. Modes come from the manifest, never from
//! tar headers. Files are created with O_EXCL in a staging directory this
//! run created, so nothing can redirect a write through a link. Every file
//! is hashed as it is written and compared with the manifest.

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::payload::PayloadReader;
use nxs_format::{hex, EntryKind};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Where extracted bytes go.
pub enum Sink<'a> {
    /// Nowhere: hash and compare only.
    Check,
    /// Into this staging directory, which must already exist and be empty.
    Dir(&'a Path),
}

/// Progress reporting for long extractions.
pub struct Progress {
    pub enabled: bool,
    total: u64,
    done: u64,
    next: u64,
}

impl Progress {
    pub fn new(enabled: bool, total: u64) -> Progress {
        Progress { enabled, total, done: 0, next: 0 }
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        if self.enabled && self.done >= self.next && self.total > (64 << 20) {
            eprintln!("  ... {} / {} MiB", self.done >> 20, self.total >> 20);
            self.next = self.done + (self.total / 10).max(64 << 20);
        }
    }
}

fn region_err(b: &Bundle, msg: impl std::fmt::Display) -> Error {
    Error::verify(format!("{}: {msg}", b.path.display()))
}

/// Reads the payload of `b` against its manifest into `sink`.
pub fn run(b: &Bundle, sink: &Sink, progress: &mut Progress) -> Result<()> {
    let m = &b.manifest;
    let reader = PayloadReader::new(&b.file, b.trailer.payload_offset(), m);
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| region_err(b, format!("payload: {e}")))?;
    let mut count = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    for item in entries {
        let mut entry = item.map_err(|e| region_err(b, format!("payload: tar stream after {count} entries: {e}")))?;
        let want = m.entries.get(count).ok_or_else(|| {
            region_err(b, format!("payload holds more entries than the {} the manifest lists", m.entries.len()))
        })?;
        let raw_path = entry.path_bytes().into_owned();
        let name = std::str::from_utf8(&raw_path).unwrap_or("<not UTF-8>");
        let name = name.strip_suffix('/').unwrap_or(name);
        if name != want.path.as_str() {
            return Err(region_err(b, format!("payload entry {count} is `{name}`, the manifest says `{}`", want.path)));
        }
        if let Sink::Dir(_) = sink {
            crate::fault::effect(&format!("extract:{name}"))?;
        }
        let ty = entry.header().entry_type();
        let size = entry.header().size().map_err(|e| region_err(b, format!("payload entry `{name}`: {e}")))?;
        match (&want.kind, ty) {
            (EntryKind::Dir, tar::EntryType::Directory) if size == 0 => {
                if let Sink::Dir(root) = sink {
                    let p = root.join(want.path.as_str());
                    fs::create_dir(&p).map_err(|e| Error::io("cannot create directory", &p, e))?;
                }
            }
            (EntryKind::File { size: want_size, sha256 }, tar::EntryType::Regular) if size == *want_size => {
                let mut out = match sink {
                    Sink::Check => None,
                    Sink::Dir(root) => {
                        let p = root.join(want.path.as_str());
                        let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p).map_err(|e| Error::io("cannot create", &p, e))?;
                        Some((f, p))
                    }
                };
                let mut h = Sha256::new();
                let mut left = size;
                while left > 0 {
                    let n = (left.min(buf.len() as u64)) as usize;
                    entry.read_exact(&mut buf[..n]).map_err(|e| region_err(b, format!("payload entry `{name}` at byte {}: {e}", size - left)))?;
                    h.update(&buf[..n]);
                    if let Some((f, p)) = out.as_mut() {
                        f.write_all(&buf[..n]).map_err(|e| Error::io("cannot write", p, e))?;
                    }
                    left -= n as u64;
                    progress.add(n as u64);
                }
                let got: [u8; 32] = h.finalize().into();
                if &got != sha256 {
                    return Err(region_err(b, format!("file `{name}`: sha256 is {}, the signed manifest says {}", hex::encode(&got), hex::encode(sha256))));
                }
                if let Some((f, p)) = out {
                    f.set_permissions(fs::Permissions::from_mode(want.mode)).map_err(|e| Error::io("cannot set the mode of", &p, e))?;
                    f.sync_all().map_err(|e| Error::io("cannot fsync", &p, e))?;
                }
            }
            _ => {
                return Err(region_err(
                    b,
                    format!("payload entry `{name}` is a {ty:?} of {size} bytes, which the manifest does not declare (it says {})", describe(&want.kind)),
                ))
            }
        }
        count += 1;
    }
    if count != m.entries.len() {
        return Err(region_err(
            b,
            format!("payload ends after {count} of the {} entries the manifest lists (truncated?)", m.entries.len()),
        ));
    }
    // Past the end-of-archive marker only zero padding may follow; reading
    // it to the end also completes the payload hash.
    let mut reader = archive.into_inner();
    loop {
        let n = reader.read(&mut buf).map_err(|e| region_err(b, format!("payload: {e}")))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&x| x != 0) {
            return Err(region_err(b, "payload has data after the end of its tar stream"));
        }
    }
    if !reader.finished() {
        return Err(region_err(b, "payload was not read to its end"));
    }
    // Directory modes last: a read-only directory must be filled first.
    if let Sink::Dir(root) = sink {
        for e in m.entries.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
            let p = root.join(e.path.as_str());
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .map_err(|err| Error::io("cannot set the mode of", &p, err))?;
        }
        sync_dirs(root, m)?;
    }
    Ok(())
}

fn describe(k: &EntryKind) -> String {
    match k {
        EntryKind::Dir => "a directory".into(),
        EntryKind::File { size, .. } => format!("a regular file of {size} bytes"),
    }
}

fn sync_dirs(root: &Path, m: &nxs_format::Manifest) -> Result<()> {
    crate::fsx::fsync_dir(root)?;
    for e in m.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        crate::fsx::fsync_dir(&root.join(e.path.as_str()))?;
    }
    Ok(())
}

/// Checks an installed tree against a manifest: every file's bytes and
/// mode, every directory's mode. Returns the list of problems.
pub fn check_tree(root: &Path, m: &nxs_format::Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for e in &m.entries {
        let p = root.join(e.path.as_str());
        let meta = match fs::symlink_metadata(&p) {
            Ok(meta) => meta,
            Err(err) => {
                problems.push(format!("{}: {err}", p.display()));
                continue;
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        match &e.kind {
            EntryKind::Dir if !meta.is_dir() => problems.push(format!("{}: expected a directory", p.display())),
            EntryKind::File { .. } if !meta.is_file() => {
                problems.push(format!("{}: expected a regular file", p.display()))
            }
            EntryKind::File { size, sha256 } => match hash_file(&p) {
                Ok((n, got)) if n == *size && &got == sha256 => {}
                Ok((n, got)) => problems.push(format!(
                    "{}: {} bytes with sha256 {}, expected {size} bytes with {}",
                    p.display(),
                    n,
                    hex::encode(&got),
                    hex::encode(sha256)
                )),
                Err(err) => problems.push(format!("{}: {err}", p.display())),
            },
            EntryKind::Dir => {}
        }
        if mode != e.mode {
            problems.push(format!("{}: mode {mode:o}, expected {:o}", p.display(), e.mode));
        }
    }
    problems
}

fn hash_file(p: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok((n, h.finalize().into()));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

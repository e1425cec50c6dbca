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
    /// Into this staging directory, which must exist. With `resume`, it may
    /// hold entries from an interrupted run: directories are kept, files
    /// that match the manifest byte for byte are kept, anything else there
    /// is replaced.
    Dir { root: &'a Path, resume: bool },
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

fn region_err(label: &Path, msg: impl std::fmt::Display) -> Error {
    Error::verify(format!("{}: {msg}", label.display()))
}

/// Reads the payload of `b` against its manifest into `sink`. Returns how
/// many files a resumed staging directory already held, verified.
pub fn run(b: &Bundle, sink: &Sink, progress: &mut Progress) -> Result<usize> {
    let reader = PayloadReader::new(&b.file, b.trailer.payload_offset(), &b.manifest);
    let (reused, reader) = walk(reader, &b.manifest, &b.path, sink, progress)?;
    if !reader.finished() {
        return Err(region_err(&b.path, "payload was not read to its end"));
    }
    finish(sink, &b.manifest)?;
    Ok(reused)
}

/// Walks a tar stream against manifest `m`, entry by entry, into `sink`;
/// `label` names the bundle in errors. Returns the reused-file count and
/// the reader, read to its end.
///
/// # Security
/// The stream is untrusted even when signed. It must hold exactly `m`'s
/// entries in order, directories and regular files only, with the declared
/// sizes and digests, and only zero padding after its end.
pub fn walk<R: Read>(
    reader: R,
    m: &nxs_format::Manifest,
    label: &Path,
    sink: &Sink,
    progress: &mut Progress,
) -> Result<(usize, R)> {
    let mut reused = 0usize;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| region_err(label, format!("payload: {e}")))?;
    let mut count = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    for item in entries {
        let mut entry =
            item.map_err(|e| region_err(label, format!("payload: tar stream after {count} entries: {e}")))?;
        let want = m.entries.get(count).ok_or_else(|| {
            region_err(label, format!("payload holds more entries than the {} the manifest lists", m.entries.len()))
        })?;
        let raw_path = entry.path_bytes().into_owned();
        let name = std::str::from_utf8(&raw_path).unwrap_or("<not UTF-8>");
        let name = name.strip_suffix('/').unwrap_or(name);
        if name != want.path.as_str() {
            return Err(region_err(
                label,
                format!("payload entry {count} is `{name}`, the manifest says `{}`", want.path),
            ));
        }
        if let Sink::Dir { .. } = sink {
            crate::fault::effect(&format!("extract:{name}"))?;
        }
        let ty = entry.header().entry_type();
        let size = entry.header().size().map_err(|e| region_err(label, format!("payload entry `{name}`: {e}")))?;
        match (&want.kind, ty) {
            (EntryKind::Dir, tar::EntryType::Directory) if size == 0 => {
                if let Sink::Dir { root, resume } = sink {
                    let p = root.join(want.path.as_str());
                    let kept = *resume && fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false);
                    if !kept {
                        if *resume {
                            remove_any(&p)?;
                        }
                        fs::create_dir(&p).map_err(|e| Error::io("cannot create directory", &p, e))?;
                    }
                }
            }
            (EntryKind::Link { target }, tar::EntryType::Symlink) if size == 0 => {
                let got = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                if got != target.as_bytes() {
                    return Err(region_err(
                        label,
                        format!("payload link `{name}` points at `{}`, the manifest says `{target}`", String::from_utf8_lossy(&got)),
                    ));
                }
                if let Sink::Dir { root, resume } = sink {
                    let p = root.join(want.path.as_str());
                    let kept = *resume && fs::read_link(&p).map(|t| t.as_os_str().as_encoded_bytes() == target.as_bytes()).unwrap_or(false);
                    if !kept {
                        if *resume {
                            remove_any(&p)?;
                        }
                        std::os::unix::fs::symlink(target, &p).map_err(|e| Error::io("cannot create link", &p, e))?;
                    }
                }
            }
            (EntryKind::File { size: want_size, sha256 }, tar::EntryType::Regular) if size == *want_size => {
                let mut out = match sink {
                    Sink::Check => None,
                    Sink::Dir { root, resume } => {
                        let p = root.join(want.path.as_str());
                        if *resume {
                            if staged_file_matches(&p, *want_size, sha256) {
                                // Its mode and durability may predate the crash.
                                let f = fs::File::open(&p).map_err(|e| Error::io("cannot open", &p, e))?;
                                seal(&f, &p, want.mode)?;
                                reused += 1;
                                // Still read the entry: the payload is checked whole.
                                copy_entry(&mut entry, size, &mut buf, None, progress, label, name, sha256)?;
                                count += 1;
                                continue;
                            }
                            remove_any(&p)?;
                        }
                        let f = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&p)
                            .map_err(|e| Error::io("cannot create", &p, e))?;
                        Some((f, p))
                    }
                };
                let to = out.as_mut().map(|(f, p)| (f, p.as_path()));
                copy_entry(&mut entry, size, &mut buf, to, progress, label, name, sha256)?;
                if let Some((f, p)) = out {
                    seal(&f, &p, want.mode)?;
                }
            }
            _ => {
                return Err(region_err(
                    label,
                    format!("payload entry `{name}` is a {ty:?} of {size} bytes, which the manifest does not declare (it says {})", describe(&want.kind)),
                ))
            }
        }
        count += 1;
    }
    if count != m.entries.len() {
        return Err(region_err(
            label,
            format!("payload ends after {count} of the {} entries the manifest lists (truncated?)", m.entries.len()),
        ));
    }
    // Past the end-of-archive marker only zero padding may follow; reading
    // it to the end also completes the payload hash.
    let mut reader = archive.into_inner();
    loop {
        let n = reader.read(&mut buf).map_err(|e| region_err(label, format!("payload: {e}")))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&x| x != 0) {
            return Err(region_err(label, "payload has data after the end of its tar stream"));
        }
    }
    Ok((reused, reader))
}

/// After a complete walk into a directory: prune a resumed staging
/// directory and apply directory modes.
fn finish(sink: &Sink, m: &nxs_format::Manifest) -> Result<()> {
    // A resumed staging directory may hold what the manifest does not
    // (a file from another attempt, or put there by someone): remove it,
    // so that exactly the manifest's entries are switched in.
    if let Sink::Dir { root, resume: true } = sink {
        let wanted: std::collections::HashSet<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        prune(root, root, &wanted)?;
    }
    // Directory modes last: a read-only directory must be filled first.
    if let Sink::Dir { root, .. } = sink {
        for e in m.entries.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
            let p = root.join(e.path.as_str());
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .map_err(|err| Error::io("cannot set the mode of", &p, err))?;
        }
        sync_dirs(root, m)?;
    }
    Ok(())
}

/// True if `p` is a regular file (not a link) of `size` bytes with `sha256`.
fn staged_file_matches(p: &Path, size: u64, sha256: &[u8; 32]) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_file() && m.len() == size => matches!(hash_file(p), Ok((n, got)) if n == size && &got == sha256),
        _ => false,
    }
}

/// Removes everything under `dir` whose path relative to `root` is not wanted.
fn prune(root: &Path, dir: &Path, wanted: &std::collections::HashSet<&str>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    for e in entries {
        let p = e.map_err(|e| Error::io("cannot read", dir, e))?.path();
        let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        if !wanted.contains(rel.as_str()) {
            remove_any(&p)?;
        } else if fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            prune(root, &p, wanted)?;
        }
    }
    Ok(())
}

/// Removes whatever is at `p` in a staging directory being resumed.
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => crate::fsx::remove_tree(p),
        Ok(_) => fs::remove_file(p).map_err(|e| Error::io("cannot replace", p, e)),
    }
}

/// Gives a staged file its manifest mode and makes it durable.
fn seal(f: &fs::File, p: &Path, mode: u32) -> Result<()> {
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io("cannot set the mode of", p, e))?;
    f.sync_all().map_err(|e| Error::io("cannot fsync", p, e))
}

/// Reads a tar entry's `size` bytes, writing them to `out` if given, and
/// checks them against the manifest's digest.
#[allow(clippy::too_many_arguments)]
fn copy_entry(
    entry: &mut impl Read,
    size: u64,
    buf: &mut [u8],
    mut out: Option<(&mut fs::File, &Path)>,
    progress: &mut Progress,
    label: &Path,
    name: &str,
    want: &[u8; 32],
) -> Result<()> {
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        entry
            .read_exact(&mut buf[..n])
            .map_err(|e| region_err(label, format!("payload entry `{name}` at byte {}: {e}", size - left)))?;
        h.update(&buf[..n]);
        if let Some((f, p)) = out.as_mut() {
            f.write_all(&buf[..n]).map_err(|e| Error::io("cannot write", p, e))?;
        }
        left -= n as u64;
        progress.add(n as u64);
    }
    let got: [u8; 32] = h.finalize().into();
    if &got != want {
        return Err(region_err(
            label,
            format!("file `{name}`: sha256 is {}, the signed manifest says {}", hex::encode(&got), hex::encode(want)),
        ));
    }
    Ok(())
}

fn describe(k: &EntryKind) -> String {
    match k {
        EntryKind::Dir => "a directory".into(),
        EntryKind::Link { target } => format!("a link to `{target}`"),
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
            EntryKind::Link { target } => {
                let ok = meta.file_type().is_symlink()
                    && fs::read_link(&p)
                        .map(|t| t.as_os_str().as_encoded_bytes() == target.as_bytes())
                        .unwrap_or(false);
                if !ok {
                    problems.push(format!("{}: expected a link to `{target}`", p.display()));
                }
                // A link's own mode means nothing on Linux.
                continue;
            }
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

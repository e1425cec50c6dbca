//! Reading a backup: age, then zstd, then tar, then every member against
//! the manifest that leads it, and in format 2 every file's hash against
//! the `NXS-SUMS` that ends it. With a staging directory, members are
//! written there as they are checked; without one, nothing is written. A
//! staged file whose sum comes only at the end is trusted only once the
//! end has been read: the restore swaps nothing in before that.
//!
//! The age layer authenticates every 64 KiB chunk and the last one is
//! marked, so a flipped bit or a cut file fails there; the manifest's
//! sizes cap every file, so a decompression bomb stops at the declared size;
//! the hashes catch anything else. Failures are `Verify` (exit 3), or `Io`
//! when the medium itself fails to read.

use crate::error::{Class, Error, Result};
use crate::fault;
use crate::keys::Decrypt;
use crate::manifest::{self, Kind, Manifest};
use nxs_sys::events::Progress;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod walk;
use walk::{Source, Walk};

/// What a backup holds, once every byte of it has been checked.
#[derive(Debug)]
pub struct Opened {
    pub manifest: Manifest,
    /// The sha256 of the backup file, every byte of it, hashed as it was
    /// read: the restore's journal names the file it staged by it.
    pub sha256: [u8; 32],
    /// Encrypted to a passphrase (age scrypt), not to X25519 recipients.
    pub passphrase: bool,
    /// Members under a bootstrap-owned name (a hand-made backup of a whole
    /// state directory): checked, not restored.
    pub dropped: Vec<String>,
}

/// The file being read; remembers its own read errors, so that they are
/// told apart from corruption found in what it returned. It is read on the
/// decoder's thread ([`crate::pipe::reader`]), and looked at from this one.
struct Medium {
    file: File,
    pos: Arc<AtomicU64>,
    hash: Arc<Mutex<Sha256>>,
    failed: Arc<Mutex<Option<(u64, io::Error)>>>,
}

impl Read for Medium {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file.read(buf) {
            Ok(n) => {
                self.pos.fetch_add(n as u64, Ordering::Relaxed);
                lock(&self.hash).update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                *lock(&self.failed) = Some((self.pos.load(Ordering::Relaxed), copy));
                Err(e)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The decompressed stream, capped: at first at what a manifest may take,
/// then, once the manifest is read, at what it declares (every file's size,
/// plus tar's headers and padding). A tar header that claims a huge long
/// name, or data past the end, fails here instead of filling memory or disk.
struct Budget<R> {
    inner: R,
    left: Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left.get();
        if left == 0 {
            // One byte more than allowed is the proof that there is more.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, "more data than the manifest declares")),
            };
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// What a tar of `m` may take: each entry's data rounded up to 512 bytes,
/// plus generous room for its headers (long names, pax records), plus the
/// end-of-archive blocks and a tar writer's padding to 10 KiB records.
fn declared(m: &Manifest, manifest_len: u64) -> u64 {
    let data: u64 = m.files().map(|(_, s)| s.div_ceil(512) * 512).sum();
    let headers = (m.entries.len() as u64 + 2) * (16 << 10);
    data + headers + manifest_len.div_ceil(512) * 512 + (1 << 20)
}

fn decrypt_error(path: &Path, e: age::DecryptError, passphrase_file: bool, keys: &Decrypt) -> Error {
    use age::DecryptError as D;
    let name = path.display();
    let given_pass = matches!(keys, Decrypt::Passphrase(_));
    match e {
        D::NoMatchingKeys if passphrase_file && !given_pass => {
            Error::verify(format!("{name}: is encrypted with a passphrase, and identities were given"))
                .hint("give --passphrase-file FILE instead of --identity")
        }
        D::NoMatchingKeys if !passphrase_file && given_pass => {
            Error::verify(format!("{name}: is encrypted to X25519 recipients, and a passphrase was given"))
                .hint("give --identity FILE with the matching AGE-SECRET-KEY")
        }
        D::NoMatchingKeys => Error::verify(format!("{name}: none of the given identities can open it (wrong key)"))
            .hint("`age-keygen -y KEYFILE` prints a key's recipient; the backup was made for another one"),
        D::DecryptionFailed | D::KeyDecryptionFailed => {
            Error::verify(format!("{name}: the passphrase or key does not open it (wrong key, or a damaged header)"))
        }
        D::InvalidMac => Error::verify(format!("{name}: the age header's MAC does not match: the header is damaged")),
        D::InvalidHeader => Error::verify(format!("{name}: not an age file, or its header is damaged")),
        // age reads a header that says v1 but does not parse as v1 as a
        // header of an unknown version (age 0.12.1 `src/format.rs` 301-310:
        // `alt` falls back to `Header::Unknown`): that is damage, not a
        // newer format.
        D::UnknownFormat if says_age_v1(path) => {
            Error::verify(format!("{name}: its age header says v1 but does not parse: the header is damaged"))
                .hint("this copy cannot be trusted; use an older backup, or another copy of this one")
        }
        D::UnknownFormat => {
            Error::new(Class::Incompatible, format!("{name}: an age format version this tool does not read"))
                .hint("decrypt it with a newer `age`, then restore from the decrypted tar.zst made into a backup")
        }
        D::ExcessiveWork { required, target } => Error::verify(format!(
            "{name}: its passphrase needs scrypt work 2^{required}, past this machine's limit 2^{target}"
        )),
        D::Io(e) => Error::verify(format!("{name}: cannot read the age header: {e}")),
        other => Error::verify(format!("{name}: {other}")),
    }
}

/// Whether the file begins with age's v1 version line.
fn says_age_v1(path: &Path) -> bool {
    let mut head = [0u8; 22];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"age-encryption.org/v1\n"
}

/// Staging: where checked members are written, and the modes to set last.
struct Stage<'a> {
    root: &'a Path,
    dir_modes: BTreeMap<String, u32>,
}

impl Stage<'_> {
    fn ensure_parents(&mut self, rel: &str) -> Result<()> {
        let mut at = String::new();
        for comp in rel.split('/').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(comp);
            self.mkdir(&at)?;
        }
        Ok(())
    }
    fn mkdir(&mut self, rel: &str) -> Result<()> {
        let p = self.root.join(rel);
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.dir_modes.contains_key(rel) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Parents are made on demand; a later entry for one is fine.
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => Ok(()),
                    _ => Err(Error::io("cannot create", &p, e)),
                }
            }
            Err(e) => Err(Error::io("cannot create", &p, e)),
        }
    }
}

/// Opens, checks and (with `stage`) writes out a backup, in one pass over
/// the file. `stage` must be a new, empty directory.
pub fn open(path: &Path, keys: &Decrypt, stage: Option<&Path>) -> Result<Opened> {
    open_with(path, keys, stage, &|_| Ok(()))
}

/// As [`open`]; `room` hears the bytes the manifest declares as soon as it
/// is read, before any file is written, and may refuse.
pub fn open_with(
    path: &Path,
    keys: &Decrypt,
    stage: Option<&Path>,
    room: &dyn Fn(u64) -> Result<()>,
) -> Result<Opened> {
    let file = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let reread = file.try_clone().map_err(|e| Error::io("cannot open", path, e))?;
    let src = Source { path, failed: Arc::new(Mutex::new(None)) };
    let (pos, hash) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Sha256::new())));
    let medium = Medium { file, pos: pos.clone(), hash: hash.clone(), failed: src.failed.clone() };
    let medium = BufReader::with_capacity(1 << 20, medium);
    let decryptor = age::Decryptor::new_buffered(medium).map_err(|e| {
        let passphrase_file = false;
        src.medium_error(decrypt_error(path, e, passphrase_file, keys))
    })?;
    let passphrase = decryptor.is_scrypt();
    let plain = match keys {
        Decrypt::Identities(ids) => decryptor.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity)),
        Decrypt::Passphrase(p) => {
            let id = age::scrypt::Identity::new(p.clone());
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        }
    }
    .map_err(|e| src.medium_error(decrypt_error(path, e, passphrase, keys)))?;
    // One zstd frame or several, as `zstd` and `cat a.zst b.zst` make them;
    // skippable frames are skipped.
    let frames = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, plain))
        .map_err(|e| Error::new(Class::Io, format!("cannot start the zstd decoder: {e}")))?;
    // age and zstd on a thread of their own, while this one parses the tar,
    // hashes each file and writes it.
    let frames = crate::pipe::reader(frames);
    let budget = Rc::new(std::cell::Cell::new(manifest::MAX_LEN + (64 << 10)));
    let frames = Budget { inner: frames, left: budget.clone() };
    let mut tar = tar::Archive::new(frames);
    let mut walk = Walk {
        src: &src,
        stage: stage.map(|root| Stage { root, dir_modes: BTreeMap::new() }),
        room,
        budget,
        seen: BTreeSet::new(),
        dropped: Vec::new(),
        manifest: None,
        hashed: Vec::new(),
        sums: None,
        // The phase begins once the manifest says how much there is.
        progress: Progress::silent(),
        buf: vec![0u8; 256 << 10],
    };
    for entry in tar.entries().map_err(|e| src.corrupt(e))? {
        walk.member(&mut entry.map_err(|e| src.corrupt(e))?)?;
    }
    if walk.manifest.is_none() {
        return Err(src.verify("holds no manifest (an empty archive)"));
    }
    // Read to the very end: the last age chunk's tag is checked there, and a
    // cut file fails here if not before.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| src.corrupt(e))?;
    drop(rest);
    // The file's hash: what the layers above left unread (nothing, or
    // bytes past age's last chunk, which it refuses) is read here.
    // (The decoder's thread has read its last byte: it sent the end.)
    let mut sink = crate::HashSink(std::mem::take(&mut *lock(&hash)));
    let mut reread = reread;
    io::Seek::seek(&mut reread, io::SeekFrom::Start(pos.load(Ordering::Relaxed)))
        .and_then(|_| io::copy(&mut reread, &mut sink))
        .map_err(|e| Error::io("cannot read", path, e))?;
    let sha256: [u8; 32] = sink.0.finalize().into();
    let (manifest, dropped) = walk.finish()?;
    Ok(Opened { manifest, sha256, passphrase, dropped })
}

/// sha256 of a whole file, and its length.
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    let mut f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut h = crate::HashSink(Sha256::new());
    let n = io::copy(&mut f, &mut h).map_err(|e| Error::io("cannot read", path, e))?;
    Ok((h.0.finalize().into(), n))
}

/// Whether the file begins as an age file does, and with which stanza
/// (`X25519`, `scrypt`), without any key.
pub fn peek_kind(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 512];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    let mut lines = text.lines();
    if lines.next()? != "age-encryption.org/v1" {
        return None;
    }
    match lines.next()?.split(' ').nth(1)? {
        "X25519" => Some("x25519"),
        "scrypt" => Some("passphrase"),
        _ => Some("other"),
    }
}

/// Checks an already staged tree against a manifest (a restore resumed
/// after a crash re-checks what it staged before it swaps it in).
pub fn check_tree(root: &Path, m: &Manifest) -> Result<()> {
    for (rel, e) in &m.entries {
        let p: PathBuf = root.join(rel);
        let meta = fs::symlink_metadata(&p).map_err(|e| Error::verify(format!("staged {}: {e}", p.display())))?;
        let ok = match &e.kind {
            Kind::Dir => meta.is_dir(),
            Kind::Link { target } => {
                meta.file_type().is_symlink() && fs::read_link(&p).ok().as_deref() == Some(Path::new(target))
            }
            Kind::File { size, sha256 } => meta.is_file() && meta.len() == *size && Some(sha256_file(&p)?.0) == *sha256,
        };
        if !ok {
            return Err(Error::verify(format!("staged {} does not match the backup's manifest", p.display())));
        }
    }
    Ok(())
}

//! Packing one planned bundle into one `.run` file:
//! `stub | payload | manifest | signature | trailer` (see docs/FORMAT.md).
//!
//! It streams. The tar stream is cut into independent zstd frames of a
//! fixed raw size, compressed by a pool of threads while the sources are
//! read and hashed, so memory stays at a few frames whatever the input
//! size, and the output does not depend on the number of threads.

use crate::plan::{BundlePlan, PlannedEntry};
use crate::sign::SigningKey;
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use nxs_format::trust::{SignedRoot, TrustBlock};
use nxs_format::{Entry, EntryKind, Frame, Hook, Manifest, Region, Trailer};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Knobs of the packer. The defaults suit release builds.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Raw (tar) bytes per zstd frame.
    pub frame_size: usize,
    /// zstd level; low, since level 19 runs at a few MB/s.
    pub level: i32,
    /// Compression threads.
    pub threads: usize,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            frame_size: 4 << 20,
            level: 3,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            progress: true,
        }
    }
}

/// A bundle written to disk.
#[derive(Debug, Clone)]
pub struct Packed {
    pub path: PathBuf,
    pub signature_path: PathBuf,
    pub manifest: Manifest,
    pub size: u64,
    pub stub_len: u64,
    /// The whole file's sha256, as SHA256SUMS lists it.
    pub sha256: [u8; 32],
}

/// A writer that cuts what it is given into zstd frames, compressed by a
/// pool of threads while the caller goes on reading and hashing sources.
/// Frames are written in order as they come back; at most a few are in
/// flight, so memory stays bounded whatever the input size.
struct FrameWriter<W: Write> {
    /// `None` only once `finish` has taken it.
    out: Option<W>,
    opts: PackOptions,
    buf: Vec<u8>,
    /// Frames sent to the pool and not yet written, and the next to write.
    sent: usize,
    next: usize,
    jobs: Option<std::sync::mpsc::Sender<(usize, Vec<u8>)>>,
    results: std::sync::mpsc::Receiver<(usize, usize, io::Result<Compressed>)>,
    ready: std::collections::BTreeMap<usize, (usize, io::Result<Compressed>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    frames: Vec<Frame>,
    hasher: Sha256,
    written: u64,
    /// Format 6: where the shared part's frames go, and whether the frames
    /// cut now belong to it; each sent frame's choice, by number.
    shared: Option<SharedSink>,
    to_shared: bool,
    kinds: Vec<bool>,
    raw_total: u64,
    /// Raw bytes taken so far: where in the tar stream the next byte is.
    position: u64,
    next_report: u64,
}

/// The shared part's writer and region, once written.
type SharedWritten = Option<(BufWriter<File>, Region)>;

/// What [`FrameWriter::finish`] gives back.
type Finished<W> = (W, Vec<Frame>, Region, SharedWritten);

/// A compressed frame and the sha256 of its bytes (format 3 signs it).
type Compressed = (Vec<u8>, [u8; 32]);

/// The shared part being written: its file, hash and length so far.
struct SharedSink {
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    fn new(out: W, opts: PackOptions) -> Self {
        let cap = opts.frame_size;
        let (jobs, rx) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let (tx, results) = std::sync::mpsc::channel();
        let level = opts.level;
        let workers = (0..opts.threads.max(1))
            .map(|_| {
                let (rx, tx) = (rx.clone(), tx.clone());
                std::thread::spawn(move || loop {
                    let job = rx.lock().map(|r| r.recv());
                    let Ok(Ok((i, raw))) = job else { return };
                    // Hashed here, beside the compression: in parallel, off
                    // the thread that reads the sources.
                    let comp = zstd::bulk::compress(&raw, level).map(|c| {
                        let h = Sha256::digest(&c).into();
                        (c, h)
                    });
                    if tx.send((i, raw.len(), comp)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        FrameWriter {
            out: Some(out),
            opts,
            buf: Vec::with_capacity(cap),
            sent: 0,
            next: 0,
            jobs: Some(jobs),
            results,
            ready: std::collections::BTreeMap::new(),
            workers,
            frames: Vec::new(),
            hasher: Sha256::new(),
            written: 0,
            shared: None,
            to_shared: false,
            kinds: Vec::new(),
            raw_total: 0,
            position: 0,
            next_report: 256 << 20,
        }
    }

    fn send(&mut self, raw: Vec<u8>) -> io::Result<()> {
        let stopped = || io::Error::other("a compression thread stopped");
        self.jobs.as_ref().ok_or_else(stopped)?.send((self.sent, raw)).map_err(|_| stopped())?;
        self.kinds.push(self.to_shared);
        self.sent += 1;
        // Two frames a thread in flight keep the pool busy; more only costs memory.
        let limit = 2 * self.opts.threads.max(1);
        self.write_ready(self.sent - self.next >= limit)
    }

    /// Writes the frames that are back, in order; with `wait`, waits for
    /// the next one first.
    fn write_ready(&mut self, mut wait: bool) -> io::Result<()> {
        loop {
            while let Ok((i, raw, comp)) = self.results.try_recv() {
                self.ready.insert(i, (raw, comp));
            }
            match self.ready.remove(&self.next) {
                Some((raw, comp)) => {
                    let (comp, sha256) = comp?;
                    let shared = self.kinds[self.next];
                    match self.shared.as_mut().filter(|_| shared) {
                        Some(part) => {
                            part.out.write_all(&comp)?;
                            part.hasher.update(&comp);
                            part.written += comp.len() as u64;
                        }
                        None => {
                            self.out.as_mut().expect("not finished").write_all(&comp)?;
                            self.hasher.update(&comp);
                            self.written += comp.len() as u64;
                        }
                    }
                    self.raw_total += raw as u64;
                    self.frames.push(Frame {
                        compressed: comp.len() as u64,
                        raw: raw as u64,
                        sha256: Some(sha256),
                        first: None,
                        shared,
                    });
                    self.next += 1;
                    wait = false;
                    if self.opts.progress && self.raw_total >= self.next_report {
                        eprintln!("    ... {} MiB packed", self.raw_total >> 20);
                        self.next_report += 256 << 20;
                    }
                }
                None if wait && self.next < self.sent => {
                    let (i, raw, comp) =
                        self.results.recv().map_err(|_| io::Error::other("a compression thread stopped"))?;
                    self.ready.insert(i, (raw, comp));
                }
                None => return Ok(()),
            }
        }
    }

    /// Ends the frame being filled, so that the next byte starts a frame,
    /// and sends the frames from here on to the shared part (`to_shared`,
    /// which must then be set up) or to the payload. The shared part's
    /// frames are then cut at the same offsets of its own bytes on every
    /// platform, so they compress to the same bytes.
    fn cut(&mut self, to_shared: bool) -> io::Result<()> {
        if !self.buf.is_empty() {
            let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.opts.frame_size));
            self.send(part)?;
        }
        self.to_shared = to_shared && self.shared.is_some();
        Ok(())
    }

    /// The payload's writer, its frames and region, and the shared part's
    /// writer and region when it had one.
    fn finish(mut self) -> io::Result<Finished<W>> {
        self.cut(false)?;
        while self.next < self.sent {
            self.write_ready(true)?;
        }
        // The workers, idle now, end when `Drop` closes their queue.
        let sha256 = std::mem::take(&mut self.hasher).finalize().into();
        let out = self.out.take().expect("finished once");
        let shared = self.shared.take().map(|p| {
            let region = Region { len: p.written, sha256: p.hasher.finalize().into() };
            (p.out, region)
        });
        Ok((out, std::mem::take(&mut self.frames), Region { len: self.written, sha256 }, shared))
    }
}

impl<W: Write> Drop for FrameWriter<W> {
    fn drop(&mut self) {
        // Close the queue and let the workers end (after `finish`, or on an
        // early return).
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.opts.frame_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.position += n as u64;
        if self.buf.len() == self.opts.frame_size {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.opts.frame_size));
            self.send(full)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Counts bytes written, so we know the stub's length without a seek.
fn copy_hashed(mut from: impl Read, to: &mut impl Write) -> io::Result<Region> {
    let mut r = HashingReader { inner: &mut from, hasher: Sha256::new(), count: 0 };
    io::copy(&mut r, to)?;
    Ok(Region { len: r.count, sha256: r.hasher.finalize().into() })
}

fn append_entry<W: Write>(tar: &mut tar::Builder<W>, e: &PlannedEntry, mtime: u64) -> Result<Entry> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    if let Some(target) = &e.link {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, e.path.as_str(), target)?;
        return Ok(Entry { path: e.path.clone(), mode: 0o777, kind: EntryKind::Link { target: target.clone() } });
    }
    match &e.source {
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{}/", e.path), io::empty())?;
            Ok(Entry { path: e.path.clone(), mode: e.mode, kind: EntryKind::Dir })
        }
        Some(src) => {
            let file = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                bail!("{} is no longer a regular file", src.display());
            }
            let size = meta.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            let mut r = HashingReader { inner: file.take(size), hasher: Sha256::new(), count: 0 };
            tar.append_data(&mut h, e.path.as_str(), &mut r)
                .with_context(|| format!("cannot pack {}", src.display()))?;
            // A file that shrank or grew while we read it would not match
            // the size in its header: refuse rather than pack a torn copy.
            let mut extra = [0u8; 1];
            if r.count != size || r.inner.into_inner().read(&mut extra)? != 0 {
                bail!("{} changed while it was being packed; build again", src.display());
            }
            Ok(Entry {
                path: e.path.clone(),
                mode: e.mode,
                kind: EntryKind::File { size, sha256: r.hasher.finalize().into() },
            })
        }
    }
}

/// Gives each frame its first member (format 3): the first of `starts`
/// (each member's offset in the tar stream, in order, then the end
/// marker's) that lies in the frame's decoded bytes.
fn index_frames(frames: &mut [Frame], starts: &[u64]) {
    let (mut at, mut next) = (0u64, 0usize);
    for f in frames {
        while next < starts.len() && starts[next] < at {
            next += 1;
        }
        f.first = (next < starts.len() && starts[next] < at + f.raw)
            .then(|| nxs_format::FirstMember { entry: next as u64, offset: starts[next] - at });
        at += f.raw;
    }
}

/// The trusted comment signed with a manifest: one line that `minisign -V`
/// prints, naming the bundle. It is never parsed by the stub.
pub fn manifest_comment(m: &Manifest) -> String {
    format!("nxs-manifest {}", m.bundle_id())
}

/// The signature region of a bundle of `format` over the manifest `text`
/// (docs/FORMAT.md): before format 4, one minisign signature by the first
/// key; from format 4, the trust block, carrying `chain` and a signature
/// by every key. Each signature is checked before it is used.
pub fn signature_region(
    format: u32,
    text: &str,
    comment: &str,
    keys: &[&SigningKey],
    chain: &[SignedRoot],
) -> Result<String> {
    let mut sigs = Vec::with_capacity(keys.len());
    for key in keys {
        let sig = key.sign(text.as_bytes(), comment)?;
        key.check(text.as_bytes(), &sig)?;
        sigs.push(sig);
    }
    if format < 4 {
        return sigs.into_iter().next().context("no signing key");
    }
    Ok(TrustBlock { roots: chain.to_vec(), manifest_signatures: sigs }.to_text())
}

/// What one bundle is made from.
pub struct PackInput<'a> {
    pub spec: &'a Spec,
    pub plan: &'a BundlePlan,
    pub stub: &'a Path,
    pub mtime: u64,
    /// The manifest's signers, at least the newest root's threshold.
    pub keys: &'a [SigningKey],
    /// The roots the bundle carries, oldest first.
    pub chain: &'a [SignedRoot],
    /// Signed with a development key.
    pub dev: bool,
    /// Format 6, a stick's bundles: the shared part to keep the plan's
    /// platform-independent files in.
    pub shared: Option<crate::shared::SharedOut<'a>>,
}

/// Packs one bundle into `out_dir`: written under a temp name, fsynced and
/// renamed, so a failed or interrupted build leaves no `.run` behind.
pub fn pack(input: &PackInput, out_dir: &Path, opts: &PackOptions) -> Result<Packed> {
    let PackInput { spec, plan, stub, mtime, keys, chain, dev, shared } = *input;
    let key = &keys[0];
    let final_path = out_dir.join(&plan.file_name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", plan.file_name))
        .tempfile_in(out_dir)
        .with_context(|| format!("cannot create a temp file in {}", out_dir.display()))?;
    let mut out = Tee::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));

    let stub_file = File::open(stub).with_context(|| format!("cannot open stub {}", stub.display()))?;
    let stub_region =
        copy_hashed(stub_file, &mut out).with_context(|| format!("cannot copy stub {}", stub.display()))?;

    let mut frames_out = FrameWriter::new(&mut out, opts.clone());
    let shared = shared.filter(|_| plan.shared_from < plan.entries.len());
    let shared_tmp = match shared {
        Some(s) => Some(shared_sink(s.path, &mut frames_out)?),
        None => None,
    };
    let (entries, frames, payload, shared_written) = write_tar(plan, mtime, frames_out)?;
    let shared = match (shared, shared_tmp, shared_written) {
        (Some(s), Some(tmp), Some((w, region))) => Some(crate::shared::keep(s, tmp, w, region, &plan.target)?),
        _ => None,
    };

    let manifest = Manifest {
        format: nxs_format::FORMAT_VERSION,
        product: spec.name.clone(),
        version: spec.version.clone(),
        tier: plan.tier.clone(),
        target: plan.target.clone(),
        mtime,
        dev,
        stub: stub_region,
        payload,
        frames,
        headscale: spec.headscale.as_ref().map(|h| h.value.clone()),
        hooks: spec
            .hooks
            .iter()
            .map(|h| Hook { stage: h.stage, timeout_secs: h.timeout_secs, argv: h.argv.clone() })
            .collect(),
        entries,
        tiers: plan.tiers.clone(),
        shared,
    };
    let text = manifest.to_text();
    // Guard the contract: what we write must parse back to what we meant.
    debug_assert_eq!(Manifest::parse(text.as_bytes()).as_ref(), Ok(&manifest));
    let signers: Vec<&SigningKey> = keys.iter().collect();
    let sig = signature_region(manifest.format, &text, &manifest_comment(&manifest), &signers, chain)?;
    out.write_all(text.as_bytes())?;
    out.write_all(sig.as_bytes())?;
    let trailer = Trailer {
        format_version: nxs_format::FORMAT_VERSION,
        stub_len: manifest.stub.len,
        payload_len: manifest.payload.len,
        manifest_len: text.len() as u64,
        signature_len: sig.len() as u64,
    };
    out.write_all(&trailer.encode())?;
    let (mut written, sha256, prehash) = out.finish();
    written.flush()?;
    drop(written);
    let size = trailer.total_len().expect("lengths we just wrote");
    crate::fsutil::finish_atomic(tmp, &final_path, 0o755)?;

    // The detached signature covers the whole file, for `minisign -V` on a
    // machine that does not trust the stub yet; SHA256SUMS lists the file's
    // sha256. Both were hashed as the file was written.
    let comment = format!("file:{} {}", plan.file_name, manifest.bundle_id());
    let detached = key.sign_prehashed(&prehash, &comment)?;
    let signature_path = PathBuf::from(format!("{}.minisig", final_path.display()));
    crate::fsutil::write_atomic(&signature_path, detached.as_bytes(), 0o644)?;
    Ok(Packed { path: final_path, signature_path, size, stub_len: manifest.stub.len, manifest, sha256 })
}

/// The tar stream of `plan`'s entries into `frames_out`: the entries'
/// manifest lines, the indexed frames, the payload region and the shared
/// part's writer and region, if it had one.
fn write_tar<W: Write>(
    plan: &BundlePlan,
    mtime: u64,
    frames_out: FrameWriter<W>,
) -> Result<(Vec<Entry>, Vec<Frame>, Region, SharedWritten)> {
    // Only a stick's bundle, writing a shared part, cuts frames other
    // than every `frame_size` bytes.
    let sharing = frames_out.shared.is_some();
    let mut tar = tar::Builder::new(frames_out);
    let mut entries = Vec::with_capacity(plan.entries.len());
    // Where each member begins in the tar stream, then the end marker.
    let mut starts = Vec::with_capacity(plan.entries.len() + 1);
    for (i, e) in plan.entries.iter().enumerate() {
        if sharing && i == plan.shared_from {
            tar.get_mut().cut(true)?;
        }
        starts.push(tar.get_ref().position);
        entries.push(append_entry(&mut tar, e, mtime)?);
    }
    if sharing {
        // The end-of-archive marker is the bundle's own.
        tar.get_mut().cut(false)?;
    }
    starts.push(tar.get_ref().position);
    let frames_out = tar.into_inner().context("cannot finish the tar stream")?;
    let (_, mut frames, payload, shared) = frames_out.finish().context("cannot write the payload")?;
    index_frames(&mut frames, &starts);
    Ok((entries, frames, payload, shared))
}

/// A temporary file beside `path` for the shared part, which `w` then
/// writes the shared frames to.
fn shared_sink<W: Write>(path: &Path, w: &mut FrameWriter<W>) -> Result<tempfile::NamedTempFile> {
    let (dir, name) = (nxs_sys::fs::parent(path), path.file_name().unwrap_or_default());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", name.to_string_lossy()))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let out = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?);
    w.shared = Some(SharedSink { out, hasher: Sha256::new(), written: 0 });
    Ok(tmp)
}

/// Passes writes through, and hashes what was written (sha256 for
/// SHA256SUMS, BLAKE2b-512 for the detached minisign signature) on a
/// thread of its own, so that the finished file is never read again.
struct Tee<W> {
    inner: W,
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    hashes: Option<std::thread::JoinHandle<([u8; 32], [u8; 64])>>,
}

impl<W: Write> Tee<W> {
    const CHUNK: usize = 1 << 20;

    fn new(inner: W) -> Tee<W> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let hashes = std::thread::spawn(move || {
            let (mut sha, mut blake) = (Sha256::new(), blake2::Blake2b512::new());
            for chunk in rx {
                sha.update(&chunk);
                blake2::Digest::update(&mut blake, &chunk);
            }
            (sha.finalize().into(), blake.finalize().into())
        });
        Tee { inner, buf: Vec::with_capacity(Self::CHUNK), tx: Some(tx), hashes: Some(hashes) }
    }

    fn send(&mut self) {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK));
        if let Some(tx) = &self.tx {
            tx.send(chunk).expect("the hashing thread lives until finish");
        }
    }

    /// The writer, and the sha256 and BLAKE2b-512 of everything written.
    fn finish(mut self) -> (W, [u8; 32], [u8; 64]) {
        self.send();
        self.tx = None;
        let (sha, blake) = self.hashes.take().expect("finished once").join().expect("hashing thread panicked");
        (self.inner, sha, blake)
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= Self::CHUNK {
            self.send();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_independent_and_thread_count_does_not_matter() {
        let data: Vec<u8> = (0..(3 << 20) + 1234).map(|i| (i * 7 % 251) as u8).collect();
        let mut outs = Vec::new();
        for threads in [1, 3] {
            let opts = PackOptions { frame_size: 1 << 20, level: 3, threads, progress: false };
            let mut w = FrameWriter::new(Vec::new(), opts);
            w.write_all(&data).unwrap();
            let (out, frames, region, _) = w.finish().unwrap();
            assert_eq!(frames.len(), 4);
            assert_eq!(frames.iter().map(|f| f.raw).sum::<u64>(), data.len() as u64);
            assert_eq!(region.len, out.len() as u64);
            // Concatenated frames are one valid zstd stream.
            assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
    }

    #[test]
    fn a_cut_starts_a_frame_and_sends_the_frames_after_it_to_the_shared_part() {
        let data: Vec<u8> = (0..(3 << 20)).map(|i| (i * 13 % 241) as u8).collect();
        let opts = PackOptions { frame_size: 1 << 20, level: 3, threads: 2, progress: false };
        let mut w = FrameWriter::new(Vec::new(), opts);
        let part = tempfile::tempfile().unwrap();
        w.shared =
            Some(SharedSink { out: BufWriter::new(part.try_clone().unwrap()), hasher: Sha256::new(), written: 0 });
        w.write_all(b"own head").unwrap();
        w.cut(true).unwrap();
        w.write_all(&data).unwrap();
        w.cut(false).unwrap();
        w.write_all(b"own tail").unwrap();
        let (own, frames, region, shared) = w.finish().unwrap();
        let kinds: Vec<(u64, bool)> = frames.iter().map(|f| (f.raw, f.shared)).collect();
        assert_eq!(kinds, [(8, false), (1 << 20, true), (1 << 20, true), (1 << 20, true), (8, false)]);
        assert_eq!((region.len, zstd::decode_all(&own[..]).unwrap()), (own.len() as u64, b"own headown tail".to_vec()));
        let (out, part_region) = shared.unwrap();
        drop(out.into_inner().unwrap());
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut &part).unwrap();
        (&part).read_to_end(&mut bytes).unwrap();
        assert_eq!(part_region.len, bytes.len() as u64);
        assert_eq!(part_region.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), data);
    }

    #[test]
    fn each_frame_names_the_first_member_that_begins_in_it() {
        let mut frames: Vec<Frame> = [100, 100, 100, 100].iter().map(|&r| Frame::sized(1, r)).collect();
        // Members at 0 and 50, one spanning frames 1 and 2, the end marker at 350.
        index_frames(&mut frames, &[0, 50, 120, 350]);
        let firsts: Vec<Option<(u64, u64)>> = frames.iter().map(|f| f.first.map(|m| (m.entry, m.offset))).collect();
        assert_eq!(firsts, vec![Some((0, 0)), Some((2, 20)), None, Some((3, 50))]);
    }
}

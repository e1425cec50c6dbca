//! The payload as a stream of tar bytes: the signed frame table says where
//! each zstd frame lies and exactly how many bytes it decodes to.
//!
//! # Security
//! A frame that decodes to more bytes than declared is refused when the
//! declared size is reached, so a decompression bomb stops there. The
//! compressed bytes are hashed again as they are read, and the total is
//! compared with the signed payload hash at the end: bytes changed on the
//! medium after `verify` cannot slip through.

use nxs_format::{hex, Frame, Manifest};
use ruzstd::decoding::FrameDecoder;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

pub struct PayloadReader<'a> {
    file: &'a File,
    frames: &'a [Frame],
    /// The next frame to hand to the reader, and the next to read from disk.
    next: usize,
    submitted: usize,
    offset: u64,
    start: u64,
    want_sha256: [u8; 32],
    out: Vec<u8>,
    out_pos: usize,
    hasher: Sha256,
    /// Set when the last frame is read from disk and its hash is wrong.
    hash_error: Option<String>,
    decoders: Decoders,
    /// Decoded frames that arrived ahead of their turn, by index.
    ready: std::collections::BTreeMap<usize, io::Result<Vec<u8>>>,
    /// Buffers to reuse: a fresh multi-MiB allocation per frame costs page
    /// faults and zeroing every time.
    spare_out: Vec<Vec<u8>>,
    /// With decoding threads, the compressed bytes are hashed on a thread
    /// of their own too, in file order; the digest comes back at the end.
    hash_tx: Option<mpsc::Sender<Arc<Vec<u8>>>>,
    hasher_thread: Option<std::thread::JoinHandle<[u8; 32]>>,
    in_flight_raw: u64,
    done: bool,
}

/// Raw bytes decoded ahead of the reader at most (beyond one frame): what
/// bounds memory, whatever the frame sizes a bundle declares.
const READ_AHEAD: u64 = 12 << 20;

/// Where frames are decoded: on this thread, or on a few workers that
/// decode independent frames in parallel (ruzstd decodes one stream on one
/// core; the frames are independent by design).
enum Decoders {
    Inline(Box<FrameDecoder>),
    Pool { jobs: Option<mpsc::Sender<Job>>, results: mpsc::Receiver<Done> },
}

struct Job {
    index: usize,
    comp: Arc<Vec<u8>>,
    /// A buffer to decode into, reused.
    out: Vec<u8>,
    raw: u64,
    where_: String,
}

struct Done {
    index: usize,
    out: io::Result<Vec<u8>>,
}

fn decoder() -> FrameDecoder {
    let mut d = FrameDecoder::new();
    d.set_max_window_size(nxs_format::manifest::MAX_FRAME_RAW);
    d
}

/// Decodes one frame into `out`, which ends up exactly its declared size,
/// or says why not.
fn decode(d: &mut FrameDecoder, comp: &[u8], mut out: Vec<u8>, raw: u64, where_: &str) -> io::Result<Vec<u8>> {
    // A reused buffer already holds initialised bytes: only grow it (and
    // zero the growth); the decoder overwrites what is kept.
    if out.len() < raw as usize {
        out.resize(raw as usize, 0);
    }
    out.truncate(raw as usize);
    let n = d
        .decode_all(comp, &mut out)
        .map_err(|e| bad(format!("{where_}: does not decode within its declared {raw} bytes: {e}")))?;
    if n as u64 != raw {
        return Err(bad(format!("{where_}: decodes to {n} bytes, the signed manifest says {raw}")));
    }
    Ok(out)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Decoding threads: one per core, at most 3; none on one core.
fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(3)
}

impl<'a> PayloadReader<'a> {
    pub fn new(file: &'a File, payload_offset: u64, manifest: &'a Manifest) -> Self {
        let n = if manifest.frames.len() > 1 { workers() } else { 0 };
        let decoders = if n < 2 {
            Decoders::Inline(Box::new(decoder()))
        } else {
            let (jobs, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let (tx, results) = mpsc::channel();
            for _ in 0..n {
                let (rx, tx) = (rx.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut d = decoder();
                    loop {
                        let job = match rx.lock().map(|r| r.recv()) {
                            Ok(Ok(job)) => job,
                            _ => return,
                        };
                        let out = decode(&mut d, &job.comp, job.out, job.raw, &job.where_);
                        if tx.send(Done { index: job.index, out }).is_err() {
                            return;
                        }
                    }
                });
            }
            Decoders::Pool { jobs: Some(jobs), results }
        };
        let (hash_tx, hasher_thread) = match decoders {
            Decoders::Inline(_) => (None, None),
            Decoders::Pool { .. } => {
                let (tx, rx) = mpsc::channel::<Arc<Vec<u8>>>();
                let t = std::thread::spawn(move || {
                    let mut h = Sha256::new();
                    for comp in rx {
                        h.update(&comp[..]);
                    }
                    h.finalize().into()
                });
                (Some(tx), Some(t))
            }
        };
        PayloadReader {
            file,
            frames: &manifest.frames,
            next: 0,
            submitted: 0,
            offset: payload_offset,
            start: payload_offset,
            want_sha256: manifest.payload.sha256,
            out: Vec::new(),
            out_pos: 0,
            hasher: Sha256::new(),
            hash_error: None,
            decoders,
            ready: std::collections::BTreeMap::new(),
            spare_out: Vec::new(),
            hash_tx,
            hasher_thread,
            in_flight_raw: 0,
            done: false,
        }
    }

    /// Reads frame `submitted` from disk, hashing its compressed bytes in
    /// file order, and returns it as a job.
    fn read_frame(&mut self) -> io::Result<Job> {
        let i = self.submitted;
        let f = self.frames[i];
        let at = self.offset - self.start;
        let where_ = format!("payload frame {i} at payload offset {at} ({} compressed bytes)", f.compressed);
        let mut comp = vec![0u8; f.compressed as usize];
        self.file.read_exact_at(&mut comp, self.offset).map_err(|e| bad(format!("{where_}: read failed: {e}")))?;
        let comp = Arc::new(comp);
        match &self.hash_tx {
            Some(tx) => tx.send(comp.clone()).map_err(|_| bad("payload hasher stopped".into()))?,
            None => self.hasher.update(&comp[..]),
        }
        self.offset += f.compressed;
        self.submitted += 1;
        if self.submitted == self.frames.len() {
            let got: [u8; 32] = match (self.hash_tx.take(), self.hasher_thread.take()) {
                // Closing the queue ends the hasher, which returns the digest.
                (Some(tx), Some(t)) => {
                    drop(tx);
                    t.join().map_err(|_| bad("payload hasher stopped".into()))?
                }
                _ => std::mem::take(&mut self.hasher).finalize().into(),
            };
            if got != self.want_sha256 {
                self.hash_error = Some(format!(
                    "payload changed while it was read: sha256 {} is not the signed {}",
                    hex::encode(&got),
                    hex::encode(&self.want_sha256)
                ));
            }
        }
        let out = self.spare_out.pop().unwrap_or_default();
        Ok(Job { index: i, comp, out, raw: f.raw, where_ })
    }

    fn decode_next(&mut self) -> io::Result<()> {
        let frame = match &mut self.decoders {
            Decoders::Inline(_) => {
                let job = self.read_frame()?;
                let Decoders::Inline(d) = &mut self.decoders else { unreachable!() };
                decode(d, &job.comp, job.out, job.raw, &job.where_)?
            }
            Decoders::Pool { .. } => {
                // Keep the workers busy up to the read-ahead bound.
                while self.submitted < self.frames.len()
                    && (self.submitted == self.next
                        || self.in_flight_raw + self.frames[self.submitted].raw <= READ_AHEAD)
                {
                    let job = self.read_frame()?;
                    self.in_flight_raw += job.raw;
                    let Decoders::Pool { jobs: Some(jobs), .. } = &self.decoders else { unreachable!() };
                    jobs.send(job).map_err(|_| bad("payload decoder stopped".into()))?;
                }
                let Decoders::Pool { results, .. } = &self.decoders else { unreachable!() };
                let frame = loop {
                    if let Some(r) = self.ready.remove(&self.next) {
                        break r;
                    }
                    let done = results.recv().map_err(|_| bad("payload decoder stopped".into()))?;
                    self.ready.insert(done.index, done.out);
                };
                self.in_flight_raw -= self.frames[self.next].raw;
                frame?
            }
        };
        if let Some(e) = self.hash_error.take() {
            return Err(bad(e));
        }
        let used = std::mem::replace(&mut self.out, frame);
        self.spare_out.push(used);
        self.next += 1;
        self.out_pos = 0;
        self.done = self.next == self.frames.len();
        Ok(())
    }

    /// True once every frame was read and the payload hash matched.
    pub fn finished(&self) -> bool {
        self.done && self.out_pos == self.out.len()
    }
}

impl Drop for PayloadReader<'_> {
    fn drop(&mut self) {
        // Closing the job queue lets the workers end.
        if let Decoders::Pool { jobs, .. } = &mut self.decoders {
            jobs.take();
        }
    }
}

impl Read for PayloadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos == self.out.len() {
            if self.next == self.frames.len() {
                return Ok(0);
            }
            self.decode_next()?;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nxs_format::Region;

    fn manifest(frames: Vec<Frame>, len: u64, sha256: [u8; 32]) -> Manifest {
        crate::test_manifest(frames, Region { len, sha256 }, vec![])
    }

    fn payload_file(parts: &[&[u8]]) -> (tempfile::NamedTempFile, Vec<Frame>, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for p in parts {
            let c = zstd::bulk::compress(p, 3).unwrap();
            frames.push(Frame { compressed: c.len() as u64, raw: p.len() as u64 });
            bytes.extend_from_slice(&c);
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        (f, frames, bytes)
    }

    #[test]
    fn reads_frames_in_order_and_checks_the_payload_hash_at_the_end() {
        let (f, frames, bytes) = payload_file(&[b"hello ", b"world"]);
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let mut r = PayloadReader::new(f.as_file(), 0, &m);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        assert!(r.finished());
    }

    #[test]
    fn bytes_that_differ_from_the_signed_hash_are_refused_while_reading() {
        // As if the medium changed after verification: same frames, other hash.
        let (f, frames, bytes) = payload_file(&[b"hello ", b"world"]);
        let m = manifest(frames, bytes.len() as u64, [7; 32]);
        let mut out = Vec::new();
        let e = PayloadReader::new(f.as_file(), 0, &m).read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("payload changed while it was read"), "{e}");
    }

    #[test]
    fn a_frame_that_decodes_to_other_than_declared_is_refused() {
        let (f, mut frames, bytes) = payload_file(&[b"hello world"]);
        frames[0].raw = 5;
        let m = manifest(frames.clone(), bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("does not decode within its declared 5 bytes"), "{e}");
        frames[0].raw = 20;
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("decodes to 11 bytes, the signed manifest says 20"), "{e}");
    }

    #[test]
    fn many_frames_come_out_in_order_through_the_decoding_threads() {
        // Frames of varied sizes, more than the read-ahead holds at once.
        let parts: Vec<Vec<u8>> = (0..40u32)
            .map(|i| (0..(i as usize * 97_001) % (3 << 20) + 1).map(|j| (j as u32 ^ i).to_le_bytes()[0]).collect())
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let (f, frames, bytes) = payload_file(&refs);
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let mut r = PayloadReader::new(f.as_file(), 0, &m);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, parts.concat());
        assert!(r.finished());
        // A bad frame in the middle is reported as that frame, in turn.
        let mut frames = m.frames.clone();
        frames[17].raw += 1;
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("payload frame 17 "), "{e}");
    }
}

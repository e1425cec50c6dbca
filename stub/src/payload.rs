//! The payload as a stream of tar bytes: the signed frame table says where
//! each zstd frame lies, exactly how many bytes it decodes to and (format 3
//! on) the sha256 of its compressed bytes.
//!
//! # Security
//! Format 3: each frame is read once, hashed and compared with its signed
//! hash, and only then decoded: no unverified byte reaches the decoder, and
//! the medium is read once. Formats 1 and 2 sign only the whole payload's
//! hash, which [`crate::bundle::Signed::verify`] checks before the
//! first frame is decoded; here the compressed bytes are hashed again as
//! they are read and the total compared at the end, so bytes changed on the
//! medium after that check cannot slip through.
//!
//! A frame that decodes to more bytes than declared is refused when the
//! declared size is reached, so a decompression bomb stops there.
//!
//! Frames are decoded by libzstd (the `zstd` crate; its C is compiled for
//! every platform by the `zig cc` the xtask uses), on up to three threads:
//! the frames are independent by design.

use nxs_format::{hex, Frame, Manifest};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

pub struct PayloadReader<'a> {
    file: &'a File,
    /// Format 6: the shared part the manifest's `shared-frame`s lie in,
    /// and its name, for messages.
    shared: Option<&'a File>,
    shared_name: &'a str,
    frames: &'a [Frame],
    /// The next frame to hand to the reader, and the next to read from disk.
    next: usize,
    submitted: usize,
    /// File offset of the next frame of the payload to read, and of the
    /// payload region; offset of the next one in the shared part.
    offset: u64,
    start: u64,
    shared_offset: u64,
    /// Formats 1 and 2: the whole payload's hash, computed as frames are
    /// read and compared once the last one is.
    whole: Option<(Sha256, [u8; 32])>,
    out: Vec<u8>,
    out_pos: usize,
    /// Decoded bytes of the first frame to drop: a reader that starts at a
    /// frame starts at the member the index names.
    skip: usize,
    /// Set when the last frame is read from disk and the whole hash is wrong.
    hash_error: Option<String>,
    decoders: Decoders,
    /// Decoded frames that arrived ahead of their turn, by index.
    ready: std::collections::BTreeMap<usize, io::Result<Vec<u8>>>,
    /// Buffers to reuse: a fresh multi-MiB allocation per frame costs page
    /// faults and zeroing every time.
    spare_out: Vec<Vec<u8>>,
    /// Likewise for the compressed frames read from disk.
    spare_comp: Vec<Vec<u8>>,
    in_flight_raw: u64,
    read: u64,
    done: bool,
}

/// Raw bytes decoded ahead of the reader at most (beyond one frame): what
/// bounds memory, whatever the frame sizes a bundle declares.
const READ_AHEAD: u64 = 12 << 20;

/// Where frames are decoded: on this thread, or on a few workers that
/// verify and decode independent frames in parallel.
enum Decoders {
    Inline(Box<zstd::bulk::Decompressor<'static>>),
    Pool { jobs: Option<mpsc::Sender<Job>>, results: mpsc::Receiver<Done> },
}

struct Job {
    index: usize,
    comp: Vec<u8>,
    /// The signed hash to check before decoding (format 3).
    sha256: Option<[u8; 32]>,
    /// A buffer to decode into, reused.
    out: Vec<u8>,
    raw: u64,
    where_: String,
}

struct Done {
    index: usize,
    out: io::Result<Vec<u8>>,
    /// The compressed frame's buffer, back for the next read.
    comp: Vec<u8>,
}

fn decoder() -> io::Result<zstd::bulk::Decompressor<'static>> {
    let mut d = zstd::bulk::Decompressor::new()?;
    // A frame may not ask for a window larger than a frame may decode to.
    let log = nxs_format::manifest::MAX_FRAME_RAW.trailing_zeros();
    d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(log))?;
    Ok(d)
}

/// Checks one frame against its signed hash, then decodes it into `out`,
/// which ends up exactly its declared size; or says why not. The
/// compressed buffer comes back either way, to be read into again.
fn verify_and_decode(d: &mut zstd::bulk::Decompressor<'static>, job: Job) -> (io::Result<Vec<u8>>, Vec<u8>) {
    let Job { comp, sha256, out, raw, where_, .. } = job;
    let out = verify_and_decode_into(d, &comp, sha256, out, raw, &where_);
    (out, comp)
}

fn verify_and_decode_into(
    d: &mut zstd::bulk::Decompressor<'static>,
    comp: &[u8],
    sha256: Option<[u8; 32]>,
    mut out: Vec<u8>,
    raw: u64,
    where_: &str,
) -> io::Result<Vec<u8>> {
    if let Some(want) = sha256 {
        let got: [u8; 32] = Sha256::digest(comp).into();
        if got != want {
            return Err(bad(format!(
                "{where_}: sha256 is {}, the signed manifest says {}; nothing of it was decoded",
                hex::encode(&got),
                hex::encode(&want)
            )));
        }
    }
    // A reused buffer already holds initialised bytes: only grow it (and
    // zero the growth); the decoder overwrites what is kept.
    if out.len() < raw as usize {
        out.resize(raw as usize, 0);
    }
    out.truncate(raw as usize);
    let n = d
        .decompress_to_buffer(comp, &mut out[..])
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
    /// Reads the whole payload, from its first frame.
    pub fn new(file: &'a File, payload_offset: u64, manifest: &'a Manifest) -> io::Result<Self> {
        Self::from_frame(file, payload_offset, manifest, 0)
    }

    /// Reads the payload from frame `first`, which must name its first
    /// member (format 3): the tar stream then starts at that member. The
    /// frames before it are not read at all.
    pub fn from_frame(file: &'a File, payload_offset: u64, manifest: &'a Manifest, first: usize) -> io::Result<Self> {
        let frames = &manifest.frames;
        let per_frame = manifest.format >= 3;
        let skip = match (first, frames.get(first).and_then(|f| f.first)) {
            (0, _) => 0,
            (_, Some(m)) if per_frame => m.offset as usize,
            _ => return Err(bad(format!("payload frame {first}: no member begins there to start from"))),
        };
        let before = |shared: bool| frames[..first].iter().filter(|f| f.shared == shared).map(|f| f.compressed).sum();
        let offset = payload_offset + before(false);
        let n = if frames.len() - first > 1 { workers() } else { 0 };
        let decoders = if n < 2 {
            Decoders::Inline(Box::new(decoder()?))
        } else {
            let (jobs, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let (tx, results) = mpsc::channel();
            for _ in 0..n {
                let (rx, tx) = (rx.clone(), tx.clone());
                let mut d = decoder()?;
                std::thread::spawn(move || loop {
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(job)) => job,
                        _ => return,
                    };
                    let index = job.index;
                    let (out, comp) = verify_and_decode(&mut d, job);
                    if tx.send(Done { index, out, comp }).is_err() {
                        return;
                    }
                });
            }
            Decoders::Pool { jobs: Some(jobs), results }
        };
        Ok(PayloadReader {
            file,
            shared: None,
            shared_name: manifest.shared.as_ref().map_or("", |p| p.name.as_str()),
            frames,
            next: first,
            submitted: first,
            offset,
            start: payload_offset,
            shared_offset: before(true),
            whole: (!per_frame).then(|| (Sha256::new(), manifest.payload.sha256)),
            out: Vec::new(),
            out_pos: 0,
            skip,
            hash_error: None,
            decoders,
            ready: std::collections::BTreeMap::new(),
            spare_out: Vec::new(),
            spare_comp: Vec::new(),
            in_flight_raw: 0,
            read: 0,
            done: first == frames.len(),
        })
    }

    /// Reads the manifest's `shared-frame`s from `part` (format 6).
    pub fn with_shared(mut self, part: Option<&'a File>) -> Self {
        self.shared = part;
        self
    }

    /// Bytes of the bundle (and its shared part) read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Reads frame `submitted` from disk and returns it as a job.
    fn read_frame(&mut self) -> io::Result<Job> {
        let i = self.submitted;
        let f = self.frames[i];
        let (file, at, of) = match f.shared {
            false => (Some(self.file), &mut self.offset, "the bundle".to_string()),
            true => (self.shared, &mut self.shared_offset, format!("the shared part {}", self.shared_name)),
        };
        let where_ =
            format!("payload frame {i} of {} (bytes {}..{} of {of})", self.frames.len(), *at, *at + f.compressed);
        let file = file.ok_or_else(|| bad(format!("{where_}: the shared part is not open")))?;
        // A reused buffer is only grown (the growth zeroed); the read
        // overwrites all of it.
        let mut comp = self.spare_comp.pop().unwrap_or_default();
        comp.resize(f.compressed as usize, 0);
        file.read_exact_at(&mut comp, *at).map_err(|e| bad(format!("{where_}: read failed: {e}")))?;
        *at += f.compressed;
        self.read += f.compressed;
        if let Some((h, _)) = &mut self.whole {
            h.update(&comp);
        }
        self.submitted += 1;
        if self.submitted == self.frames.len() {
            if let Some((h, want)) = self.whole.take() {
                let got: [u8; 32] = h.finalize().into();
                if got != want {
                    self.hash_error = Some(format!(
                        "payload (bytes {}..{} of the bundle) changed while it was read: sha256 {} is not the signed {}",
                        self.start,
                        self.offset,
                        hex::encode(&got),
                        hex::encode(&want)
                    ));
                }
            }
        }
        let out = self.spare_out.pop().unwrap_or_default();
        Ok(Job { index: i, comp, sha256: f.sha256, out, raw: f.raw, where_ })
    }

    fn decode_next(&mut self) -> io::Result<()> {
        let frame = match &mut self.decoders {
            Decoders::Inline(_) => {
                let job = self.read_frame()?;
                let Decoders::Inline(d) = &mut self.decoders else { unreachable!() };
                let (out, comp) = verify_and_decode(d, job);
                self.spare_comp.push(comp);
                out?
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
                    self.spare_comp.push(done.comp);
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
        self.out_pos = std::mem::take(&mut self.skip);
        self.done = self.next == self.frames.len();
        Ok(())
    }

    /// True once every frame was read and verified.
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
    use nxs_format::{FirstMember, Region};

    fn manifest(frames: Vec<Frame>, len: u64, sha256: [u8; 32]) -> Manifest {
        crate::test_manifest(frames, Region { len, sha256 }, vec![])
    }

    /// Format 2 frames (sizes only), and format 3 frames of the same bytes
    /// (each with its hash, and a member at `offset` of every frame).
    fn payload_file(parts: &[&[u8]]) -> (tempfile::NamedTempFile, Vec<Frame>, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for p in parts {
            let c = zstd::bulk::compress(p, 3).unwrap();
            frames.push(Frame::sized(c.len() as u64, p.len() as u64));
            bytes.extend_from_slice(&c);
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        (f, frames, bytes)
    }

    fn format3(m: &mut Manifest, bytes: &[u8], offset: u64) {
        m.format = 3;
        let mut at = 0usize;
        for (i, f) in m.frames.iter_mut().enumerate() {
            f.sha256 = Some(Sha256::digest(&bytes[at..at + f.compressed as usize]).into());
            f.first = Some(FirstMember { entry: i as u64, offset: if i == 0 { 0 } else { offset } });
            at += f.compressed as usize;
        }
    }

    #[test]
    fn reads_frames_in_order_and_checks_the_payload_hash_at_the_end() {
        let (f, frames, bytes) = payload_file(&[b"hello ", b"world"]);
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let mut r = PayloadReader::new(f.as_file(), 0, &m).unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        assert!(r.finished());
        assert_eq!(r.bytes_read(), bytes.len() as u64);
    }

    #[test]
    fn bytes_that_differ_from_the_signed_hash_are_refused_while_reading() {
        // As if the medium changed after verification: same frames, other hash.
        let (f, frames, bytes) = payload_file(&[b"hello ", b"world"]);
        let m = manifest(frames, bytes.len() as u64, [7; 32]);
        let mut out = Vec::new();
        let e = PayloadReader::new(f.as_file(), 0, &m).unwrap().read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }

    #[test]
    fn a_format_3_frame_is_checked_before_it_is_decoded_and_named_with_its_bytes() {
        let parts: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 100_000]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let (f, frames, bytes) = payload_file(&refs);
        let mut m = manifest(frames, bytes.len() as u64, [0; 32]);
        format3(&mut m, &bytes, 0);
        let mut out = Vec::new();
        PayloadReader::new(f.as_file(), 0, &m).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, parts.concat());
        // One flipped bit in frame 3: refused as that frame, with its range.
        let mut evil = bytes.clone();
        let at: u64 = m.frames[..3].iter().map(|f| f.compressed).sum();
        evil[at as usize + 5] ^= 1;
        let mut g = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut g, &evil).unwrap();
        let mut r = PayloadReader::new(g.as_file(), 0, &m).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err().to_string();
        let range = format!("payload frame 3 of 6 (bytes {at}..{} of the bundle)", at + m.frames[3].compressed);
        assert!(e.contains(&range) && e.contains("nothing of it was decoded"), "{e}");
        // What came out before it was the good frames only.
        assert_eq!(out, parts[..3].concat());
    }

    #[test]
    fn a_reader_can_start_at_a_frame_and_reads_nothing_before_it() {
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 50_000]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let (f, frames, bytes) = payload_file(&refs);
        let mut m = manifest(frames, bytes.len() as u64, [0; 32]);
        format3(&mut m, &bytes, 10);
        let mut r = PayloadReader::from_frame(f.as_file(), 0, &m, 3).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, [&parts[3][10..], &parts[4][..]].concat());
        assert_eq!(r.bytes_read(), m.frames[3].compressed + m.frames[4].compressed);
        drop(r);
        // Formats 1 and 2 have no per-frame hash: only a whole read.
        m.format = 2;
        assert!(PayloadReader::from_frame(f.as_file(), 0, &m, 3).is_err());
    }

    #[test]
    fn shared_frames_are_read_from_the_shared_part_in_tar_order() {
        // Frames 0 and 3 in the bundle (after 7 bytes of stub), 1 and 2 in
        // the shared part.
        let parts: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'k' + i; 30_000]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let (_, frames, bytes) = payload_file(&refs);
        let mut m = manifest(frames, 0, [0; 32]);
        format3(&mut m, &bytes, 0);
        let (mut own, mut shared, mut at) = (b"stub...".to_vec(), Vec::new(), 0usize);
        for (i, f) in m.frames.iter_mut().enumerate() {
            f.shared = i == 1 || i == 2;
            let c = &bytes[at..at + f.compressed as usize];
            if f.shared {
                shared.extend_from_slice(c)
            } else {
                own.extend_from_slice(c)
            }
            at += f.compressed as usize;
        }
        m.shared = Some(nxs_format::SharedPart {
            name: "p.shared".into(),
            region: Region { len: shared.len() as u64, sha256: Sha256::digest(&shared).into() },
        });
        let file = |b: &[u8]| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, b).unwrap();
            f
        };
        let (own_f, shared_f) = (file(&own), file(&shared));
        let mut out = Vec::new();
        let r = PayloadReader::new(own_f.as_file(), 7, &m).unwrap();
        r.with_shared(Some(shared_f.as_file())).read_to_end(&mut out).unwrap();
        assert_eq!(out, parts.concat());
        // From frame 2: one frame of the part, then the bundle's last.
        let mut out = Vec::new();
        let r = PayloadReader::from_frame(own_f.as_file(), 7, &m, 2).unwrap();
        r.with_shared(Some(shared_f.as_file())).read_to_end(&mut out).unwrap();
        assert_eq!(out, parts[2..].concat());
        // Without the part, the first shared frame is refused by name.
        let e = PayloadReader::new(own_f.as_file(), 7, &m).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("payload frame 1 of 4 (bytes 0..") && e.to_string().contains("p.shared"), "{e}");
        // A flipped byte in the part is named with its range in the part.
        let mut evil = shared.clone();
        evil[m.frames[1].compressed as usize + 3] ^= 1;
        let evil_f = file(&evil);
        let r = PayloadReader::new(own_f.as_file(), 7, &m).unwrap();
        let e = r.with_shared(Some(evil_f.as_file())).read_to_end(&mut Vec::new()).unwrap_err().to_string();
        let range = format!("bytes {}..{} of the shared part p.shared", m.frames[1].compressed, shared.len());
        assert!(e.contains("payload frame 2 of 4") && e.contains(&range), "{e}");
    }

    #[test]
    fn a_frame_that_decodes_to_other_than_declared_is_refused() {
        let (f, mut frames, bytes) = payload_file(&[b"hello world"]);
        frames[0].raw = 5;
        let m = manifest(frames.clone(), bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("does not decode within its declared 5 bytes"), "{e}");
        frames[0].raw = 20;
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
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
        let mut r = PayloadReader::new(f.as_file(), 0, &m).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, parts.concat());
        assert!(r.finished());
        // A bad frame in the middle is reported as that frame, in turn.
        let mut frames = m.frames.clone();
        frames[17].raw += 1;
        let m = manifest(frames, bytes.len() as u64, Sha256::digest(&bytes).into());
        let e = PayloadReader::new(f.as_file(), 0, &m).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("payload frame 17 "), "{e}");
    }
}

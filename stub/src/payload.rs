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

pub struct PayloadReader<'a> {
    file: &'a File,
    frames: &'a [Frame],
    next: usize,
    offset: u64,
    start: u64,
    want_sha256: [u8; 32],
    comp: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    decoder: FrameDecoder,
    hasher: Sha256,
    done: bool,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a> PayloadReader<'a> {
    pub fn new(file: &'a File, payload_offset: u64, manifest: &'a Manifest) -> Self {
        let mut decoder = FrameDecoder::new();
        decoder.set_max_window_size(nxs_format::manifest::MAX_FRAME_RAW);
        PayloadReader {
            file,
            frames: &manifest.frames,
            next: 0,
            offset: payload_offset,
            start: payload_offset,
            want_sha256: manifest.payload.sha256,
            comp: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            decoder,
            hasher: Sha256::new(),
            done: false,
        }
    }

    fn decode_next(&mut self) -> io::Result<()> {
        let i = self.next;
        let f = self.frames[i];
        let at = self.offset - self.start;
        let where_ = format!("payload frame {i} at payload offset {at} ({} compressed bytes)", f.compressed);
        self.comp.resize(f.compressed as usize, 0);
        self.file.read_exact_at(&mut self.comp, self.offset).map_err(|e| bad(format!("{where_}: read failed: {e}")))?;
        self.hasher.update(&self.comp);
        self.out.resize(f.raw as usize, 0);
        let n = self
            .decoder
            .decode_all(&self.comp, &mut self.out)
            .map_err(|e| bad(format!("{where_}: does not decode within its declared {} bytes: {e}", f.raw)))?;
        if n as u64 != f.raw {
            return Err(bad(format!("{where_}: decodes to {n} bytes, the signed manifest says {}", f.raw)));
        }
        self.offset += f.compressed;
        self.next += 1;
        self.out_pos = 0;
        if self.next == self.frames.len() {
            let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if got != self.want_sha256 {
                return Err(bad(format!(
                    "payload changed while it was read: sha256 {} is not the signed {}",
                    hex::encode(&got),
                    hex::encode(&self.want_sha256)
                )));
            }
            self.done = true;
        }
        Ok(())
    }

    /// True once every frame was read and the payload hash matched.
    pub fn finished(&self) -> bool {
        self.done && self.out_pos == self.out.len()
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
}

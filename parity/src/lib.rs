//! Recovery data for the files of a stick (docs/FORMAT.md, "Stick parity"):
//! each file is cut into equal blocks, each block hashed, and
//! Reed-Solomon recovery blocks computed over them (the
//! `reed-solomon-simd` crate, Leopard-RS in GF(2^16): any `n` of the `n`
//! data and `r` recovery blocks give the data back). A reader finds the
//! damaged blocks by their hashes and rebuilds them from the recovery
//! blocks whose own hashes still match.
//!
//! No I/O: bytes in, bytes out. The parity file is
//! `header ‖ recovery blocks ‖ header ‖ header length (u64 LE)`; the
//! header is kept twice so that damage to either end leaves one.
//!
//! # Security
//! Parity is not trusted: it only proposes bytes. A repaired file counts
//! only when its sha256 is the one the signed sums give (checked by the
//! caller), and the header here is checked by its own hash before use.

use sha2::{Digest, Sha256};

/// The header's first bytes.
pub const MAGIC: [u8; 8] = *b"NXSPAR1\n";
/// The smallest block: a 4 KiB page, so small damage costs little parity.
pub const MIN_BLOCK: u32 = 4096;
/// Most data blocks, and most recovery blocks, of one file
/// (reed-solomon-simd takes any mix up to 32768 of each).
pub const MAX_BLOCKS: u32 = 32768;
/// Bytes of the header before its tables.
const FIXED: usize = 8 + 8 + 4 + 4 + 4 + 32;

/// A parity file's header: the file it protects and the hash of every
/// block, data and recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The protected file's length in bytes.
    pub size: u64,
    /// The block length (a power of two, at least [`MIN_BLOCK`]).
    pub block: u32,
    /// The protected file's sha256.
    pub file_sha256: [u8; 32],
    /// The sha256 of each data block, the last one zero-padded to `block`.
    pub blocks: Vec<[u8; 32]>,
    /// The sha256 of each recovery block.
    pub recovery: Vec<[u8; 32]>,
}

/// The block length, data block count and recovery block count for a file
/// of `size` bytes with `percent` parity (1 to 100): blocks of 4 KiB, or
/// larger so that there are at most [`MAX_BLOCKS`]; at least one recovery
/// block for a file that is not empty.
pub fn layout(size: u64, percent: u32) -> (u32, u32, u32) {
    let mut block = MIN_BLOCK as u64;
    while size.div_ceil(block) > MAX_BLOCKS as u64 {
        block *= 2;
    }
    let n = size.div_ceil(block) as u32;
    let r = (n as u64 * percent.clamp(1, 100) as u64).div_ceil(100) as u32;
    (block as u32, n, r.clamp(n.min(1), MAX_BLOCKS))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl Header {
    /// The header's length in bytes for `n` data and `r` recovery blocks.
    pub fn len_for(n: usize, r: usize) -> usize {
        FIXED + 32 * (n + r) + 32
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Header::len_for(self.blocks.len(), self.recovery.len()));
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.block.to_le_bytes());
        b.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.recovery.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.file_sha256);
        for h in self.blocks.iter().chain(&self.recovery) {
            b.extend_from_slice(h);
        }
        let sum = sha256(&b);
        b.extend_from_slice(&sum);
        b
    }

    /// Reads a header at the start of `b`, checked by its hash and its
    /// counts against [`layout`]'s limits. Returns it and its length.
    pub fn decode(b: &[u8]) -> Result<(Header, usize), String> {
        if b.len() < FIXED + 32 || b[..8] != MAGIC {
            return Err("not an nxs parity header (magic `NXSPAR1`)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let size = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        let (block, n, r) = (u32_at(16), u32_at(20), u32_at(24));
        if !block.is_power_of_two() || block < MIN_BLOCK || n > MAX_BLOCKS || r > MAX_BLOCKS {
            return Err(format!("header says block {block}, {n} data and {r} recovery blocks: out of range"));
        }
        if size.div_ceil(block as u64) != n as u64 || layout(size, 1).0 != block {
            return Err(format!("header says {size} bytes in {n} blocks of {block}: that is not the layout"));
        }
        if usize::try_from(size).is_err() || r > n.max(1) {
            return Err(format!(
                "header says {size} bytes and {r} recovery blocks: more than this machine can address"
            ));
        }
        let len = Header::len_for(n as usize, r as usize);
        if b.len() < len {
            return Err(format!("header of {len} bytes cut short at {}", b.len()));
        }
        if sha256(&b[..len - 32]) != b[len - 32..len] {
            return Err("the header's own sha256 does not match: it is damaged".into());
        }
        let hash_at = |i: usize| -> [u8; 32] { b[FIXED + 32 * i..FIXED + 32 * (i + 1)].try_into().expect("32") };
        let header = Header {
            size,
            block,
            file_sha256: b[28..60].try_into().expect("32 bytes"),
            blocks: (0..n as usize).map(hash_at).collect(),
            recovery: (n as usize..(n + r) as usize).map(hash_at).collect(),
        };
        Ok((header, len))
    }

    /// Data block `i` of `data` as it was protected: zero-padded to the
    /// block length, or `None` where `data` is too short to hold it whole
    /// (a truncated file).
    fn block_of(&self, data: &[u8], i: usize) -> Option<Vec<u8>> {
        let (b, start) = (self.block as usize, i * self.block as usize);
        let end = (start + b).min(self.size as usize);
        if data.len() < end {
            return None;
        }
        let mut v = data[start..end].to_vec();
        v.resize(b, 0);
        Some(v)
    }

    /// The data blocks of `data` whose bytes are not what this header
    /// hashed (missing ones included), in order.
    pub fn damaged(&self, data: &[u8]) -> Vec<u32> {
        (0..self.blocks.len())
            .filter(|&i| self.block_of(data, i).is_none_or(|v| sha256(&v) != self.blocks[i]))
            .map(|i| i as u32)
            .collect()
    }

    /// The byte ranges `[start, end)` of the file that damaged blocks
    /// cover, neighbours merged, clipped to the file's length.
    pub fn ranges(&self, damaged: &[u32]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &i in damaged {
            let start = i as u64 * self.block as u64;
            let end = (start + self.block as u64).min(self.size);
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }
}

/// Computes the parity file of `data` with `percent` parity.
pub fn create(data: &[u8], percent: u32) -> Result<Vec<u8>, String> {
    let (block, n, r) = layout(data.len() as u64, percent);
    let mut header =
        Header { size: data.len() as u64, block, file_sha256: sha256(data), blocks: vec![], recovery: vec![] };
    let originals: Vec<Vec<u8>> =
        (0..n as usize).map(|i| header.block_of(data, i).expect("the data is whole")).collect();
    header.blocks = originals.iter().map(|b| sha256(b)).collect();
    let recovery = match n {
        0 => vec![],
        _ => reed_solomon_simd::encode(n as usize, r as usize, &originals).map_err(|e| format!("{e}"))?,
    };
    header.recovery = recovery.iter().map(|b| sha256(b)).collect();
    let head = header.encode();
    let mut out = head.clone();
    for b in &recovery {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&head);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    Ok(out)
}

/// A parity file as read back: its header (from whichever copy is
/// intact) and each recovery block whose hash still matches.
#[derive(Debug)]
pub struct Parity {
    pub header: Header,
    /// One per recovery block: `None` where it is damaged.
    pub recovery: Vec<Option<Vec<u8>>>,
    /// Which copy of the header was used: false for the first.
    pub used_tail_header: bool,
}

impl Parity {
    /// Reads a parity file: the first header, or the last when the first
    /// is damaged; then the recovery blocks, each checked.
    pub fn read(b: &[u8]) -> Result<Parity, String> {
        let (header, len, tail) = match Header::decode(b) {
            Ok((h, len)) => (h, len, false),
            Err(head_err) => {
                let tail = b
                    .len()
                    .checked_sub(8)
                    .map(|at| (at, u64::from_le_bytes(b[at..].try_into().expect("8 bytes")) as usize))
                    .and_then(|(at, len)| at.checked_sub(len).map(|start| &b[start..at]))
                    .ok_or_else(|| format!("first header: {head_err}; no second header either"))?;
                let (h, len) =
                    Header::decode(tail).map_err(|e| format!("first header: {head_err}; second header: {e}"))?;
                (h, len, true)
            }
        };
        let bl = header.block as usize;
        let recovery = header
            .recovery
            .iter()
            .enumerate()
            .map(|(i, want)| {
                let at = len + i * bl;
                b.get(at..at + bl).filter(|blk| sha256(blk) == *want).map(<[u8]>::to_vec)
            })
            .collect();
        Ok(Parity { header, recovery, used_tail_header: tail })
    }

    /// Recovery blocks still intact.
    pub fn intact(&self) -> usize {
        self.recovery.iter().filter(|r| r.is_some()).count()
    }

    /// Whether `damaged` data blocks can be rebuilt from what is intact.
    pub fn can_repair(&self, damaged: usize) -> bool {
        damaged <= self.intact()
    }

    /// The file rebuilt from the intact blocks of `data` and the intact
    /// recovery blocks, checked against the header's sha256; or why not.
    pub fn repair(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let h = &self.header;
        let damaged = h.damaged(data);
        if damaged.is_empty() {
            return Ok(data[..h.size as usize].to_vec());
        }
        if !self.can_repair(damaged.len()) {
            return Err(format!(
                "{} damaged block(s) of {} bytes, and only {} intact recovery block(s): beyond the parity",
                damaged.len(),
                h.block,
                self.intact()
            ));
        }
        let (n, r) = (h.blocks.len(), h.recovery.len());
        let intact: Vec<(usize, Vec<u8>)> = (0..n)
            .filter(|i| damaged.binary_search(&(*i as u32)).is_err())
            .map(|i| (i, h.block_of(data, i).expect("an intact block is whole")))
            .collect();
        let recovery = self.recovery.iter().enumerate().filter_map(|(i, b)| b.as_ref().map(|b| (i, b)));
        let restored =
            reed_solomon_simd::decode(n, r, intact.iter().map(|(i, b)| (*i, b)), recovery.take(damaged.len()))
                .map_err(|e| format!("{e}"))?;
        let mut out = Vec::with_capacity(n * h.block as usize);
        let mut intact = intact.into_iter().peekable();
        for i in 0..n {
            match intact.next_if(|(j, _)| *j == i) {
                Some((_, b)) => out.extend_from_slice(&b),
                None => out.extend_from_slice(restored.get(&i).ok_or("the decoder left a block out")?),
            }
        }
        out.truncate(h.size as usize);
        if sha256(&out) != h.file_sha256 {
            return Err("the rebuilt file's sha256 is not the one the parity was made for".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn layouts() {
        assert_eq!(layout(0, 10), (4096, 0, 0));
        assert_eq!(layout(1, 10), (4096, 1, 1));
        assert_eq!(layout(10 << 20, 10), (4096, 2560, 256));
        assert_eq!(layout(4 << 30, 10), (128 << 10, 32768, 3277));
        assert_eq!(layout(40 << 20, 100), (4096, 10240, 10240));
    }

    #[test]
    fn three_damaged_regions_are_found_named_and_rebuilt() {
        let good = data(1 << 20);
        let par = create(&good, 10).unwrap();
        let p = Parity::read(&par).unwrap();
        assert_eq!((p.header.blocks.len(), p.intact()), (256, 26));
        let mut bad = good.clone();
        for at in [5000usize, 400_000, 1_000_000] {
            bad[at..at + 4096].iter_mut().for_each(|b| *b ^= 0x5a);
        }
        let damaged = p.header.damaged(&bad);
        assert_eq!(damaged, [1, 2, 97, 98, 244, 245]);
        assert_eq!(p.header.ranges(&damaged), [(4096, 12288), (397312, 405504), (999424, 1007616)]);
        assert_eq!(p.repair(&bad).unwrap(), good);
    }

    #[test]
    fn a_truncated_or_missing_file_comes_back() {
        let good = data(100_000);
        let p = Parity::read(&create(&good, 10).unwrap()).unwrap();
        assert_eq!(p.repair(&good[..99_000]).unwrap(), good);
        let tiny = b"abc".to_vec();
        let p = Parity::read(&create(&tiny, 10).unwrap()).unwrap();
        assert_eq!(p.repair(b"").unwrap(), tiny, "one block, one recovery block: a copy");
    }

    #[test]
    fn beyond_the_parity_is_refused_and_damaged_parity_is_survived() {
        let good = data(200_000);
        let par = create(&good, 10).unwrap();
        let p = Parity::read(&par).unwrap();
        let mut bad = good.clone();
        bad[..20 * 4096].fill(0);
        let e = p.repair(&bad).unwrap_err();
        assert!(e.contains("beyond the parity"), "{e}");
        // The first header damaged: the second is used.
        let mut par2 = par.clone();
        par2[30] ^= 1;
        let p2 = Parity::read(&par2).unwrap();
        assert!(p2.used_tail_header);
        assert_eq!(p2.header, p.header);
        // A recovery block damaged: it no longer counts.
        let mut par3 = par.clone();
        let at = Header::len_for(p.header.blocks.len(), p.header.recovery.len()) + 10;
        par3[at] ^= 1;
        assert_eq!(Parity::read(&par3).unwrap().intact(), p.intact() - 1);
        // Both headers damaged: refused, saying so.
        let mut par4 = par2.clone();
        let n = par4.len();
        par4[n - 40] ^= 1;
        let e = Parity::read(&par4).unwrap_err();
        assert!(e.contains("first header") && e.contains("second header"), "{e}");
    }

    #[test]
    fn headers_that_are_not_the_layout_are_refused() {
        let par = create(&data(50_000), 10).unwrap();
        let (mut h, _) = Header::decode(&par).unwrap();
        h.block = 8192;
        h.blocks.truncate(7);
        assert!(Header::decode(&h.encode()).unwrap_err().contains("not the layout"));
        let (mut h, _) = Header::decode(&par).unwrap();
        h.recovery = vec![[0; 32]; 14];
        assert!(Header::decode(&h.encode()).unwrap_err().contains("recovery blocks"));
    }

    #[test]
    fn the_same_bytes_give_the_same_parity() {
        let d = data(300_000);
        assert_eq!(create(&d, 10).unwrap(), create(&d, 10).unwrap());
    }
}

//! The fixed-size trailer at the very end of a bundle. It is not signed: it
//! only says where the regions are, and every length it gives is checked
//! against the file size here and against the signed manifest by the reader.

use std::fmt;

/// The trailer's length in bytes.
pub const TRAILER_LEN: usize = 64;
/// First eight bytes of the trailer.
pub const MAGIC_HEAD: &[u8; 8] = b"NXSBNDL\0";
/// Last eight bytes of the trailer, and of the bundle.
pub const MAGIC_TAIL: &[u8; 8] = b"NXSTRLR\0";
/// Largest manifest a reader accepts, in bytes.
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// Largest signature region a reader accepts before format 4, in bytes
/// (one minisign signature); from format 4 it is the trust block's cap,
/// [`crate::trust::MAX_BLOCK_LEN`].
pub const MAX_SIGNATURE_LEN: u64 = 4096;

/// Where the regions of a bundle lie. They are contiguous, in this order:
/// stub, payload, manifest, signature, trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub format_version: u32,
    pub stub_len: u64,
    pub payload_len: u64,
    pub manifest_len: u64,
    pub signature_len: u64,
}

/// Why a trailer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailerError {
    /// The file is shorter than a trailer.
    TooShort { file_len: u64 },
    /// No trailer magic: not a bundle, or truncated.
    BadMagic,
    /// A newer format than this reader knows.
    UnsupportedVersion(u32),
    /// Reserved bytes are not zero.
    Reserved,
    /// The trailer's own checksum does not match: a damaged trailer.
    Checksum,
    /// The regions do not add up to the file's size.
    LengthMismatch { declared: Option<u64>, file_len: u64 },
    /// A region is larger than the reader accepts.
    TooLarge { region: &'static str, len: u64, max: u64 },
}

impl fmt::Display for TrailerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrailerError::TooShort { file_len } => {
                write!(f, "file is {file_len} bytes, shorter than the {TRAILER_LEN}-byte trailer")
            }
            TrailerError::BadMagic => {
                write!(f, "no bundle trailer in the last {TRAILER_LEN} bytes (truncated, or not a bundle)")
            }
            TrailerError::UnsupportedVersion(v) => {
                write!(f, "bundle format version {v}; this stub reads version {}", crate::FORMAT_VERSION)
            }
            TrailerError::Reserved => write!(f, "reserved trailer bytes are not zero"),
            TrailerError::Checksum => write!(f, "the trailer's checksum does not match (damaged)"),
            TrailerError::LengthMismatch { declared: Some(d), file_len } => {
                write!(f, "regions add up to {d} bytes but the file is {file_len} bytes (truncated or appended to)")
            }
            TrailerError::LengthMismatch { declared: None, file_len } => {
                write!(f, "region lengths overflow (file is {file_len} bytes)")
            }
            TrailerError::TooLarge { region, len, max } => {
                write!(f, "{region} is {len} bytes, the limit is {max}")
            }
        }
    }
}

impl std::error::Error for TrailerError {}

impl Trailer {
    pub fn payload_offset(&self) -> u64 {
        self.stub_len
    }
    pub fn manifest_offset(&self) -> u64 {
        self.stub_len + self.payload_len
    }
    pub fn signature_offset(&self) -> u64 {
        self.manifest_offset() + self.manifest_len
    }

    /// Total bundle length these regions imply, or `None` on overflow.
    pub fn total_len(&self) -> Option<u64> {
        self.stub_len
            .checked_add(self.payload_len)?
            .checked_add(self.manifest_len)?
            .checked_add(self.signature_len)?
            .checked_add(TRAILER_LEN as u64)
    }

    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(MAGIC_HEAD);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[16..24].copy_from_slice(&self.stub_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.signature_len.to_le_bytes());
        let sum = fnv1a(&b[..48]);
        b[48..56].copy_from_slice(&sum.to_le_bytes());
        b[56..64].copy_from_slice(MAGIC_TAIL);
        b
    }

    /// Parses the last [`TRAILER_LEN`] bytes of a file of `file_len` bytes.
    ///
    /// # Security
    /// The input is untrusted. Every length is checked with checked
    /// arithmetic against `file_len` and against fixed caps; the reader must
    /// still compare `stub_len` and `payload_len` with the signed manifest.
    pub fn decode(bytes: &[u8; TRAILER_LEN], file_len: u64) -> Result<Trailer, TrailerError> {
        if file_len < TRAILER_LEN as u64 {
            return Err(TrailerError::TooShort { file_len });
        }
        if &bytes[0..8] != MAGIC_HEAD || &bytes[56..64] != MAGIC_TAIL {
            return Err(TrailerError::BadMagic);
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        // The checksum first: a damaged byte must read as damage, not as a
        // newer format. Every version keeps it at bytes 48..56.
        if u64_at(48) != fnv1a(&bytes[..48]) {
            return Err(TrailerError::Checksum);
        }
        let format_version = u32_at(8);
        if !(crate::OLDEST_FORMAT_VERSION..=crate::FORMAT_VERSION).contains(&format_version) {
            return Err(TrailerError::UnsupportedVersion(format_version));
        }
        if u32_at(12) != 0 {
            return Err(TrailerError::Reserved);
        }
        let t = Trailer {
            format_version,
            stub_len: u64_at(16),
            payload_len: u64_at(24),
            manifest_len: u64_at(32),
            signature_len: u64_at(40),
        };
        if t.manifest_len > MAX_MANIFEST_LEN {
            return Err(TrailerError::TooLarge { region: "manifest", len: t.manifest_len, max: MAX_MANIFEST_LEN });
        }
        let max_signature = if format_version >= 4 { crate::trust::MAX_BLOCK_LEN } else { MAX_SIGNATURE_LEN };
        if t.signature_len > max_signature {
            return Err(TrailerError::TooLarge { region: "signature", len: t.signature_len, max: max_signature });
        }
        match t.total_len() {
            Some(n) if n == file_len => Ok(t),
            declared => Err(TrailerError::LengthMismatch { declared, file_len }),
        }
    }
}

/// FNV-1a, 64 bits: each step is a bijection of the state, so any single
/// changed byte changes the sum. (Integrity against damage; the signature
/// is what resists tampering.)
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trailer {
        Trailer { format_version: 1, stub_len: 1000, payload_len: 5 << 32, manifest_len: 300, signature_len: 200 }
    }

    #[test]
    fn round_trip_with_64_bit_lengths() {
        let t = sample();
        let len = t.total_len().unwrap();
        assert_eq!(Trailer::decode(&t.encode(), len), Ok(t));
    }

    #[test]
    fn refuses_mismatch_and_garbage() {
        let t = sample();
        let len = t.total_len().unwrap();
        assert!(matches!(Trailer::decode(&t.encode(), len - 1), Err(TrailerError::LengthMismatch { .. })));
        assert!(matches!(Trailer::decode(&t.encode(), len + 7), Err(TrailerError::LengthMismatch { .. })));
        assert_eq!(Trailer::decode(&[0u8; TRAILER_LEN], len), Err(TrailerError::BadMagic));
        assert_eq!(Trailer::decode(&t.encode(), 10), Err(TrailerError::TooShort { file_len: 10 }));
        // A newer format, with a sound checksum, is a version problem...
        let with_version = |v: u8| {
            let mut b = t.encode();
            b[8] = v;
            let sum = fnv1a(&b[..48]);
            b[48..56].copy_from_slice(&sum.to_le_bytes());
            b
        };
        assert_eq!(Trailer::decode(&with_version(7), len), Err(TrailerError::UnsupportedVersion(7)));
        assert_eq!(Trailer::decode(&with_version(0), len), Err(TrailerError::UnsupportedVersion(0)));
        // Every version this code knows is read.
        assert_eq!(Trailer::decode(&with_version(6), len).map(|t| t.format_version), Ok(6));
        assert_eq!(Trailer::decode(&with_version(5), len).map(|t| t.format_version), Ok(5));
        assert_eq!(Trailer::decode(&with_version(4), len).map(|t| t.format_version), Ok(4));
        assert_eq!(Trailer::decode(&with_version(3), len).map(|t| t.format_version), Ok(3));
        assert_eq!(Trailer::decode(&with_version(2), len).map(|t| t.format_version), Ok(2));
        assert_eq!(Trailer::decode(&with_version(1), len).map(|t| t.format_version), Ok(1));
        // ...but any flipped byte of a trailer is damage.
        for i in 8..56 {
            let mut b = t.encode();
            b[i] ^= 0x10;
            assert_eq!(Trailer::decode(&b, len), Err(TrailerError::Checksum), "byte {i}");
        }
        let huge = Trailer { payload_len: u64::MAX, ..t };
        assert!(matches!(
            Trailer::decode(&huge.encode(), len),
            Err(TrailerError::LengthMismatch { declared: None, .. })
        ));
    }
}

//! The stick's parity reader on any bytes: never panics; a header that
//! decodes encodes back to the same bytes; and whatever a parity file and
//! a damaged file say, a repair either fails or gives bytes whose sha256
//! the header names.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_parity::{Header, Parity};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the parity file ends and the
    // protected file begins.
    let Some((cut, rest)) = data.split_first_chunk::<2>() else { return };
    let at = (u16::from_le_bytes(*cut) as usize).min(rest.len());
    let (parity, file) = rest.split_at(at);
    if let Ok((h, len)) = Header::decode(parity) {
        assert_eq!(h.encode(), &parity[..len], "a header has one spelling");
    }
    if let Ok(p) = Parity::read(parity) {
        let damaged = p.header.damaged(file);
        for (a, b) in p.header.ranges(&damaged) {
            assert!(a < b && b <= p.header.size);
        }
        if let Ok(rebuilt) = p.repair(file) {
            let got: [u8; 32] = Sha256::digest(&rebuilt).into();
            assert_eq!(got, p.header.file_sha256);
        }
    }
});

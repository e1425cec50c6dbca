//! The trailer parser on any 64 bytes and any file length: never panics, and
//! whatever it accepts adds up to the file length and encodes back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::{Trailer, TRAILER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < TRAILER_LEN + 8 {
        return;
    }
    let file_len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let raw: [u8; TRAILER_LEN] = data[8..8 + TRAILER_LEN].try_into().unwrap();
    if let Ok(t) = Trailer::decode(&raw, file_len) {
        assert_eq!(t.total_len(), Some(file_len));
        assert_eq!(t.encode(), raw);
    }
});

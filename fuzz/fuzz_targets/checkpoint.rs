//! The checkpoint parser on any bytes: never panics; what it accepts
//! round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::parse(data) {
        assert_eq!(Checkpoint::parse(c.to_text().as_bytes()), Ok(c));
    }
});

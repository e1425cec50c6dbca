//! The manifest parser on any bytes: never panics, and whatever it accepts
//! writes back to text that parses to the same manifest, and holds only
//! safe paths. (Lines may come in another order than the writer's, so the
//! bytes themselves need not be identical.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(m.to_text().as_bytes()).as_ref(), Ok(&m), "round trip");
        for e in &m.entries {
            assert!(nxs_format::EntryPath::parse(e.path.as_str()).is_ok());
        }
    }
});

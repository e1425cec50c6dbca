//! The root and trust-block parsers and the chain walk on any bytes: never
//! panic; what parses writes back to exactly the same bytes (each has one
//! spelling); and a walk from the block's first root that succeeds ends
//! exactly `steps` versions later, after at most MAX_STEPS.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::trust::{walk, Root, TrustBlock, MAX_STEPS};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Root::parse(data) {
        assert_eq!(r.to_text().as_bytes(), data, "a root has one spelling");
        assert!(r.threshold >= 1 && r.threshold <= r.keys.len());
    }
    if let Ok(block) = TrustBlock::parse(data) {
        assert_eq!(block.to_text().as_bytes(), data, "a trust block has one spelling");
        if let Some(first) = block.roots.first() {
            if let Ok(w) = walk(&first.root, &first.text, &block) {
                assert_eq!(w.root.version, first.root.version + w.steps as u64);
                assert!(w.steps <= MAX_STEPS);
                assert!(w.root.keys.iter().all(|k| !w.revoked.contains(&k.id)), "a trusted root lists no revoked key");
            }
        }
    }
});

//! The extraction walk on any tar stream, against a fixed manifest, into a
//! scratch directory: never panics, and never writes outside it. The input
//! is untrusted tar bytes; the manifest is what a signed bundle would say.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::Manifest;
use nxs_stub::extract::{walk, Progress, Sink};
use std::sync::OnceLock;

const MANIFEST: &str = "nxs-manifest 1\nproduct p\nversion 1\ntier t\ntarget x\nmtime 0\ndev 0\n\
stub 0 0000000000000000000000000000000000000000000000000000000000000000\n\
payload 1 0000000000000000000000000000000000000000000000000000000000000000\nframe 1 1\n\
dir 755 d\nfile 644 5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 d/hello\n\
file 755 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 run\nend\n";

fuzz_target!(|data: &[u8]| {
    static M: OnceLock<Manifest> = OnceLock::new();
    let m = M.get_or_init(|| Manifest::parse(MANIFEST.as_bytes()).expect("fixed manifest"));
    let scratch = tempfile_dir();
    let staging = scratch.join("staging");
    std::fs::create_dir(&staging).unwrap();
    let mut p = Progress::silent();
    let _ = walk(data, m, std::path::Path::new("fuzz"), &Sink::Dir { root: &staging, resume: false }, &mut p);
    // Nothing may appear beside the staging directory.
    let names: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("staging")]);
    let _ = std::fs::remove_dir_all(&scratch);
});

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!("nxs-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

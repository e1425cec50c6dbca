//! The state-directory and staging readers on any bytes: the checkpoint
//! (with its staging identity), the downgrade guard and the install record,
//! each read through the stub's door from a real directory, as a rerun
//! finds them after a crash or a stranger's hand. None panics; what the
//! checkpoint reader accepts round-trips; the install record reader says
//! the same as the manifest parser on the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_stub::statedir::StateDir;

fuzz_target!(|data: &[u8]| {
    // One input, three files: split at the first two 0xff bytes.
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let (cp, guard, record) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(nxs_format::state::CHECKPOINT), cp).unwrap();
    std::fs::write(state.join(nxs_format::state::HIGHEST), guard).unwrap();
    let sd = StateDir::open(&state).unwrap();
    match sd.read_checkpoint().unwrap() {
        Some(Ok(c)) => {
            let again = nxs_format::checkpoint::Checkpoint::parse(c.to_text().as_bytes());
            assert_eq!(again, Ok(c));
        }
        Some(Err(_)) => {}
        None => panic!("the checkpoint was written"),
    }
    let _ = sd.highest();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join(nxs_format::RECORD_DIR)).unwrap();
    std::fs::write(root.join(nxs_format::RECORD_DIR).join("manifest"), record).unwrap();
    let layout = nxs_stub::root::Layout::new(&root).unwrap();
    let read = nxs_stub::root::installed_manifest(&layout);
    assert_eq!(read.is_ok(), nxs_format::Manifest::parse(record).is_ok());
});

//! Crash at every step: for every N from the first mutating effect to the
//! last, a run is killed with SIGKILL at effect N (the `fault-injection`
//! stub does it to itself, as a power cut would), the checkpoint still
//! parses, and a plain rerun ends RUNNING with every file as the manifest
//! says.

use nxs_tests::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

fn install(
    bundle: &std::path::Path,
    root: &std::path::Path,
    state: &std::path::Path,
    env: &[(&str, String)],
) -> std::process::Output {
    let mut c = Command::new(bundle);
    c.args(["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    for (k, v) in env {
        c.env(k, v);
    }
    output(&mut c).unwrap()
}

#[test]
fn sigkill_at_every_effect_then_rerun_converges() {
    let p = Project::new(None);
    let stubs = BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let report = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let packed = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
    let bundle = &packed.path;

    // Count the effects of a clean run.
    let t = tempfile::tempdir().unwrap();
    let o = install(bundle, &t.path().join("root"), &t.path().join("state"), &[("NXS_FAULT_TRACE", "1".into())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let total = stderr(&o).lines().filter(|l| l.starts_with("fault: effect ")).count();
    assert!(total > packed.manifest.entries.len(), "every entry is an effect: {total}");

    for n in 1..=total {
        let t = tempfile::tempdir().unwrap();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let o = install(bundle, &root, &state, &[("NXS_FAULT_CRASH_AT", n.to_string())]);
        assert_eq!(o.status.signal(), Some(9), "run {n} should be killed at effect {n}: {}", stderr(&o));
        // The checkpoint, if any, always parses.
        let s = run(bundle, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert_eq!(code(&s), 0, "after a crash at effect {n}, status: {}", stderr(&s));
        // The root is absent or complete, never half-written.
        if root.exists() && root.join(nxs_format::RECORD_DIR).exists() {
            let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
            assert_eq!(code(&c), 0, "crash at {n} left a partial root: {}", stdout(&c));
        }
        let again = install(bundle, &root, &state, &[]);
        assert_eq!(code(&again), 0, "rerun after a crash at effect {n}: {}", stderr(&again));
        let s = run(bundle, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(stdout(&s).starts_with("{\"state\":\"RUNNING\""), "after a crash at {n}: {}", stdout(&s));
        let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
        assert_eq!(code(&c), 0, "after a crash at {n}: {}", stdout(&c));
        let staging = t.path().join(".root.nxs-staging");
        assert!(!staging.exists(), "after a crash at {n}, staging is cleaned up");
    }
    eprintln!("crashed and recovered at each of {total} effects");
}

/// An empty, truncated, garbage, foreign or future-schema checkpoint has a
/// defined answer: install starts again from VERIFYING and ends RUNNING,
/// and status reports the damage (exit 5) instead of panicking.
#[test]
fn damaged_checkpoints_restart_from_verifying() {
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let bundle = bundle_of(&report, "minimal");
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("truncated", b"nxs-bootstrap-state 1\nbundle x\nversion 1\n"),
        ("garbage", &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]),
        ("foreign", b"{\"state\": \"RUNNING\"}\n"),
        ("future", b"nxs-bootstrap-state 99\nwhatever\nend\n"),
    ];
    for (name, bytes) in cases {
        let t = tempfile::tempdir().unwrap();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("bootstrap.state"), bytes).unwrap();
        let s = run(bundle, &["status", "--state-dir", state.to_str().unwrap()]);
        assert_eq!(code(&s), 5, "{name}: {}", stderr(&s));
        assert!(stderr(&s).contains("bootstrap.state") && stderr(&s).contains("hint:"), "{name}: {}", stderr(&s));
        let o = install(bundle, &root, &state, &[]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("starting again from VERIFYING"), "{name}: {}", stderr(&o));
        let s = run(bundle, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(stdout(&s).starts_with("{\"state\":\"RUNNING\""), "{name}: {}", stdout(&s));
    }
}

/// The same for an upgrade: killed at any effect, the root holds v1 or v2,
/// each complete, never a mix; the rerun ends RUNNING on v2.
#[test]
fn sigkill_at_every_effect_of_an_upgrade_leaves_old_or_new_never_a_mix() {
    let p = Project::new(None);
    let stubs = || BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let v1 = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out1"), &test_key().0, stubs())).unwrap();
    let v1 = v1.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().clone();
    let spec = std::fs::read_to_string(&p.spec).unwrap().replace("version = \"2.0.1\"", "version = \"2.1.0\"");
    std::fs::write(&p.spec, spec).unwrap();
    std::fs::write(p.path().join("src/etc/nxs.toml"), b"[instance]\nname = \"v2\"\n").unwrap();
    std::fs::write(p.path().join("src/data/new-in-v2"), b"new").unwrap();
    let v2 = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out2"), &test_key().0, stubs())).unwrap();
    let v2 = v2.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().clone();

    let fresh_v1 = || {
        let t = tempfile::tempdir().unwrap();
        let o = install(&v1.path, &t.path().join("root"), &t.path().join("state"), &[]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        t
    };
    let t = fresh_v1();
    let o = install(&v2.path, &t.path().join("root"), &t.path().join("state"), &[("NXS_FAULT_TRACE", "1".into())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let total = stderr(&o).lines().filter(|l| l.starts_with("fault: effect ")).count();

    let tree_is = |root: &std::path::Path, m: &nxs_format::Manifest| {
        m.entries.iter().all(|e| match &e.kind {
            nxs_format::EntryKind::File { sha256, .. } => std::fs::read(root.join(e.path.as_str()))
                .map(|b| sha256 == &<[u8; 32]>::from(sha2::Sha256::digest(&b)))
                .unwrap_or(false),
            nxs_format::EntryKind::Dir => root.join(e.path.as_str()).is_dir(),
            nxs_format::EntryKind::Link { target } => std::fs::read_link(root.join(e.path.as_str()))
                .map(|t| t == std::path::Path::new(target))
                .unwrap_or(false),
        }) && std::fs::read(root.join(".nxs-bundle/manifest")).map(|b| b == m.to_text().as_bytes()).unwrap_or(false)
    };
    use sha2::Digest;
    for n in 1..=total {
        let t = fresh_v1();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let o = install(&v2.path, &root, &state, &[("NXS_FAULT_CRASH_AT", n.to_string())]);
        assert_eq!(o.status.signal(), Some(9), "killed at effect {n}: {}", stderr(&o));
        let old = tree_is(&root, &v1.manifest);
        let new = tree_is(&root, &v2.manifest);
        // With RENAME_EXCHANGE the root is never missing.
        assert!(old ^ new, "after a crash at effect {n} the root is v1 ({old}) or v2 ({new}), exactly one");
        let o = install(&v2.path, &root, &state, &[]);
        assert_eq!(code(&o), 0, "rerun after a crash at effect {n}: {}", stderr(&o));
        assert!(tree_is(&root, &v2.manifest), "v2 complete after the rerun (crash at {n})");
        let s = run(&v2.path, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(
            stdout(&s).starts_with("{\"state\":\"RUNNING\"") && stdout(&s).contains("\"version\":\"2.1.0\""),
            "{}",
            stdout(&s)
        );
    }
    eprintln!("upgrade crashed and recovered at each of {total} effects");
}

/// Killed in the middle of extraction, the next run keeps the files already
/// staged and verified, and writes only the rest.
#[test]
fn extraction_resumes_at_file_granularity() {
    let p = Project::new(None);
    let stubs = BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let report = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let bundle = &report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().path;
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = install(bundle, &root, &state, &[("NXS_FAULT_TRACE", "1".into())]);
    assert_eq!(code(&o), 0);
    // The effect that extracts the last file of the payload.
    let last = stderr(&o).lines().rfind(|l| l.contains(" extract:")).unwrap().to_string();
    let n: usize = last.strip_prefix("fault: effect ").unwrap().split(' ').next().unwrap().parse().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = install(bundle, &root, &state, &[("NXS_FAULT_CRASH_AT", n.to_string())]);
    assert_eq!(o.status.signal(), Some(9));
    assert!(t.path().join(".root.nxs-staging").is_dir(), "staging survives the crash");
    // Something the manifest does not list, left in staging, is not installed.
    std::fs::write(t.path().join(".root.nxs-staging/etc/planted"), b"not in the manifest").unwrap();
    let o = install(bundle, &root, &state, &[("NXS_FAULT_TRACE", "1".into())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    let kept: usize = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("resumed: "))
        .and_then(|r| r.split(' ').next())
        .and_then(|k| k.parse().ok())
        .expect(&err);
    assert!(kept >= 5, "most files were kept: {kept}\n{err}");
    let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
    assert!(!root.join("etc/planted").exists(), "only the manifest's entries are switched in");
}

/// Killed well into the payload, the rerun starts reading the bundle at the
/// frame where the first entry it does not hold intact begins: the frames
/// before it are not read at all, so damaging them after the kill changes
/// nothing (and the same damage fails a fresh install).
#[test]
fn a_rerun_after_a_kill_late_in_the_payload_reads_only_the_frames_left() {
    let p = Project::new(None);
    let stubs = BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let report = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let bundle = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().path.clone();
    let (_, m) = read_manifest(&bundle);
    // The last frame in which an entry begins, and that entry.
    let (k, entry) = m
        .frames
        .iter()
        .enumerate()
        .filter_map(|(k, f)| f.first.map(|x| (k, x.entry as usize)))
        .rfind(|&(_, e)| e < m.entries.len())
        .expect("an entry begins in a later frame");
    assert!(k >= 2, "the kill comes after at least two frames: {k}");
    let name = m.entries[entry].path.as_str().to_string();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = install(&bundle, &root, &state, &[("NXS_FAULT_TRACE", "1".into())]);
    let at = stderr(&o)
        .lines()
        .find_map(|l| {
            l.strip_prefix("fault: effect ").filter(|r| r.ends_with(&format!(" extract:{name}"))).map(String::from)
        })
        .expect("the entry's effect");
    let n: usize = at.split(' ').next().unwrap().parse().unwrap();

    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("b.run");
    std::fs::copy(&bundle, &copy).unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = install(&copy, &root, &state, &[("NXS_FAULT_CRASH_AT", n.to_string())]);
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let mut bytes = std::fs::read(&copy).unwrap();
    let ranges = frame_ranges(&copy);
    for &(a, b) in &ranges[..k] {
        bytes[((a + b) / 2) as usize] ^= 0x08;
    }
    std::fs::remove_file(&copy).unwrap();
    write(&copy, &bytes, 0o755);
    let mut c = Command::new(&copy);
    c.args(["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--json"]);
    let o = output(&mut c).unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The rerun's `check` phase re-hashed what staging held before it read on.
    let events = check_events(&stdout(&o), 0);
    let check = events_of(&events, "phase-end")
        .into_iter()
        .find(|e| e.get("phase").and_then(|v| v.as_str()) == Some("check"))
        .unwrap_or_else(|| panic!("no check phase: {}", stdout(&o)));
    let Some(nxs_format::json::Value::Num(done)) = check.get("done") else { panic!("{}", stdout(&o)) };
    let done: u64 = done.parse().unwrap();
    assert!(done > 0, "{}", stdout(&o));
    let skipped = ranges[k].0 - ranges[0].0;
    let want = format!("resuming at payload frame {k} of {}", ranges.len());
    assert!(stderr(&o).contains(&want), "{want}: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("{skipped} bytes of the bundle not read again")), "{}", stderr(&o));
    let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
    // The control: read from the start, the damage is found.
    let fresh = t.path().join("fresh");
    let o = install(&copy, &fresh, &t.path().join("state2"), &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

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
    c.output().unwrap()
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

//! What `--json` prints, checked against docs/EVENTS.md (the page's tables
//! are read by the test), and what a terminal shows: a full install, a
//! refused bundle, `verify` and `extract`, and a session under `script`.
//! (The events of a DEGRADED join are checked in tests/tailnet.rs, with
//! the auth key's canary.)

use nxs_format::json::Value;
use nxs_tests::*;
use std::process::Command;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_full_install_reports_its_phases_states_and_result_as_documented() {
    let p = Project::new(None);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = run(&bundle, &["install", "--root", s(&root), "--state-dir", s(&state), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let events = check_events(&stdout(&o), 0);
    let states: Vec<&str> =
        events_of(&events, "state").iter().map(|e| e.get("to").and_then(Value::as_str).unwrap()).collect();
    assert_eq!(states.first(), Some(&"VERIFYING"), "{states:?}");
    assert_eq!(states.last(), Some(&"RUNNING"), "{states:?}");
    assert!(states.contains(&"FRESH") && states.contains(&"VALIDATING"), "{states:?}");
    let end = events_of(&events, "phase-end");
    let extract = end.iter().find(|e| e.get("phase").and_then(Value::as_str) == Some("extract")).expect("extract");
    assert_eq!(extract.get("ok").and_then(Value::as_bool), Some(true));
    assert_eq!(extract.get("done"), extract.get("total"), "every byte was written");
    let result = events.last().unwrap();
    assert_eq!(result.get("state").and_then(Value::as_str), Some("RUNNING"));
    // A second run: already there, said so.
    let o = run(&bundle, &["install", "--root", s(&root), "--state-dir", s(&state), "--json"]);
    let events = check_events(&stdout(&o), 0);
    assert_eq!(events.last().unwrap().get("already").and_then(Value::as_bool), Some(true));

    let o = run(&bundle, &["verify", "--json"]);
    let events = check_events(&stdout(&o), 0);
    assert_eq!(events.last().unwrap().get("format"), Some(&Value::Num(nxs_format::FORMAT_VERSION.to_string())));
    assert_eq!(events_of(&events, "phase-start").len(), 1, "format 3 verifies in one phase");
    let to = t.path().join("x");
    let o = run(&bundle, &["extract", "--to", s(&to), "--json"]);
    check_events(&stdout(&o), 0);
}

#[test]
fn a_bundle_with_a_damaged_frame_in_the_middle_installs_nothing_and_names_the_frame() {
    let p = Project::new(None);
    let good = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    let frames = frame_ranges(&good);
    assert!(frames.len() >= 3, "the full tier spans several frames: {frames:?}");
    let (a, b) = frames[1];
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[((a + b) / 2) as usize] ^= 0x40;
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.run");
    write(&bad, &bytes, 0o755);
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = run(&bad, &["install", "--root", s(&root), "--state-dir", s(&state), "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let events = check_events(&stdout(&o), 3);
    let error = events.last().unwrap().get("error").and_then(Value::as_str).unwrap().to_string();
    let n = frames.len();
    assert!(error.contains(&format!("payload frame 1 of {n} (bytes {a}..{b} of the bundle)")), "{error}");
    assert!(error.contains("nothing of it was decoded"), "{error}");
    // Frame 0 was written into staging; nothing of it is left, nor of the run.
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("bad.run")], "nothing but the bundle");
    // A state directory that was there keeps the checkpoint it had.
    std::fs::create_dir(&state).unwrap();
    let o = run(&good, &["install", "--root", s(&root), "--state-dir", s(&state)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let before = std::fs::read(state.join("bootstrap.state")).unwrap();
    let root2 = t.path().join("root2");
    let o = run(&bad, &["install", "--root", s(&root2), "--state-dir", s(&state)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(std::fs::read(state.join("bootstrap.state")).unwrap(), before, "the checkpoint is as it was");
    assert!(!root2.exists() && !t.path().join(".root2.nxs-staging").exists());
    // verify names it the same way.
    let o = run(&bad, &["verify"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains(&format!("payload frame 1 of {n}")), "{}", stderr(&o));
}

/// The medium is read once: strace adds up every read of the bundle file.
#[test]
fn an_install_reads_the_bundle_once() {
    let p = Project::new(None);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&bundle);
    cmd.args(["install", "--root", s(&t.path().join("root")), "--state-dir", s(&t.path().join("state"))]);
    let (o, n) = bytes_read_from(&bundle, &mut cmd);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let size = std::fs::metadata(&bundle).unwrap().len();
    let x = n as f64 / size as f64;
    eprintln!("install read {n} bytes of a {size}-byte bundle: {x:.3} x");
    assert!(x <= 1.05, "install read the bundle {x:.3} times");
    // A format 2 bundle is still read twice: the whole-payload hash first.
    let old = t.path().join("v2.run");
    as_format(&bundle, 2, &old);
    let mut cmd = Command::new(&old);
    cmd.args(["install", "--root", s(&t.path().join("r2")), "--state-dir", s(&t.path().join("s2"))]);
    let (o, n2) = bytes_read_from(&old, &mut cmd);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(n2 as f64 / size as f64 > 1.5, "format 2 reads the payload twice: {n2}");
}

#[test]
fn a_terminal_session_shows_the_progress_line_redrawn_in_place() {
    let p = Project::new(None);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} install --root {} --state-dir {}",
        s(&bundle),
        s(&t.path().join("root")),
        s(&t.path().join("state"))
    );
    // util-linux's script gives the stub a terminal and records it.
    let log = t.path().join("typescript");
    let o = output(Command::new("script").args(["-q", "-e", "-c", &cmd, s(&log)])).unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let seen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let draws: Vec<&str> = seen.split('\r').filter(|l| l.starts_with("  extract ")).collect();
    assert!(draws.len() >= 2, "the line is drawn, then redrawn: {seen}");
    let last = draws.last().unwrap();
    assert!(last.contains("100%") && last.contains("MiB/s") && last.contains("ETA"), "{last}");
    assert!(seen.contains("\x1b[K"), "each draw clears the rest of the line");
    // Off a terminal, a small install prints no progress at all.
    let t2 = tempfile::tempdir().unwrap();
    let o = run(&bundle, &["install", "--root", s(&t2.path().join("root")), "--state-dir", s(&t2.path().join("s"))]);
    assert!(!stderr(&o).contains('\r') && !stderr(&o).contains("MiB/s"), "{}", stderr(&o));
}

#[test]
fn format_1_2_and_3_bundles_signed_by_one_key_still_verify_and_install() {
    let p = Project::new(None);
    let good = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    for format in [1, 2, 3] {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join(format!("v{format}.run"));
        as_format(&good, format, &old);
        let o = run(&old, &["verify", "--json"]);
        let events = check_events(&stdout(&o), 0);
        assert_eq!(events.last().unwrap().get("format"), Some(&Value::Num(format.to_string())));
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let o = run(&old, &["install", "--root", s(&root), "--state-dir", s(&state)]);
        assert_eq!(code(&o), 0, "format {format}: {}", stderr(&o));
        let c = run(&root.join("bin/nxs-survival"), &["check", "--root", s(&root)]);
        assert_eq!(code(&c), 0, "format {format}: {}", stdout(&c));
        // Damage is still found before anything is written.
        let mut bytes = std::fs::read(&old).unwrap();
        let (a, b) = frame_ranges(&good)[1];
        bytes[((a + b) / 2) as usize] ^= 1;
        write(&old, &bytes, 0o755);
        let (root, state) = (t.path().join("r2"), t.path().join("s2"));
        let o = run(&old, &["install", "--root", s(&root), "--state-dir", s(&state)]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        let region = if format < 3 { "payload at bytes" } else { "payload frame 1 of" };
        assert!(stderr(&o).contains(region), "format {format}: {}", stderr(&o));
        assert!(!root.exists() && !state.exists());
    }
}

//! Two installs at once into the same state directory: one wins, the other
//! exits 6 and names the PID that holds the lock. A holder killed with
//! SIGKILL releases it.

use nxs_tests::*;
use std::process::{Command, Stdio};

#[test]
fn second_run_is_locked_out_and_sigkill_releases_the_lock() {
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let bundle = bundle_of(&report, "full");
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();

    // Hold the lock from a real separate process, flock(1), and write its
    // PID where an install writes its own. (-o: only flock itself holds it.)
    let lock = state.join("lock");
    std::fs::write(&lock, b"").unwrap();
    let mut holder =
        Command::new("flock").arg("-o").arg(&lock).args(["sleep", "30"]).stdout(Stdio::null()).spawn().unwrap();
    let pid = holder.id().to_string();
    std::fs::write(&lock, format!("{pid}\n")).unwrap();
    // Wait until flock really holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().unwrap().success() {
        assert!(std::time::Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let root = t.path().join("root");
    let args = ["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let o = run(bundle, &args);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("locked by process {pid}")), "{}", stderr(&o));
    assert!(!root.exists(), "the locked-out run installed nothing");

    // SIGKILL the holder: the kernel drops its lock, and the install goes on.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = run(bundle, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // Two real installs racing: exactly one succeeds, the other exits 6
    // (or, if it started after the first finished, finds it RUNNING).
    let t2 = tempfile::tempdir().unwrap();
    let (root2, state2) = (t2.path().join("root"), t2.path().join("state"));
    let a2 = ["install", "--root", root2.to_str().unwrap(), "--state-dir", state2.to_str().unwrap()];
    let kids: Vec<_> = (0..2)
        .map(|_| Command::new(bundle).args(a2).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outs: Vec<_> = kids.into_iter().map(|k| k.wait_with_output().unwrap()).collect();
    let codes: Vec<i32> = outs.iter().map(code).collect();
    assert!(codes.contains(&0), "{codes:?}");
    for o in &outs {
        match code(o) {
            0 => {}
            6 => assert!(stderr(o).contains("locked by process"), "{}", stderr(o)),
            c => panic!("unexpected exit {c}: {}", stderr(o)),
        }
    }
    let s = run(bundle, &["status", "--state-dir", state2.to_str().unwrap(), "--json"]);
    assert!(stdout(&s).starts_with("{\"state\":\"RUNNING\""), "{}", stdout(&s));
}

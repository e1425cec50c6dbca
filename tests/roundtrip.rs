//! Build, verify, install, and compare every installed byte and mode with
//! the sources; then status, a second install, list and extract.

use nxs_tests::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn build_verify_install_status() {
    let p = Project::new(None);
    let out = p.path().join("out");
    let report = p.build(&out);
    assert_eq!(report.bundles.len(), 2, "one bundle per tier");
    let run_file = bundle_of(&report, "full");
    assert_eq!(run_file.file_name().unwrap(), "demo-2.0.1-full-x86_64-unknown-linux-musl.run");

    let v = run(run_file, &["verify"]);
    assert_eq!(code(&v), 0, "{}", stderr(&v));
    assert!(stdout(&v).contains("verified"), "{}", stdout(&v));

    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("opt/nxs"), t.path().join("state"));
    let i = run(run_file, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code(&i), 0, "{}", stderr(&i));
    assert!(stderr(&i).contains("hook validate"), "the validate hook ran: {}", stderr(&i));

    // Every installed file equals its source, byte for byte; modes follow
    // the spec (explicit) or the source's executable bit (normalised).
    let src = p.path().join("src");
    let expect: &[(&str, &str, u32)] = &[
        ("etc/nxs.toml", "etc/nxs.toml", 0o644),
        ("etc/hooks/start.sh", "etc/hooks/start.sh", 0o755),
        ("etc/empty", "etc/empty", 0o644),
        ("etc/ca.pem", "etc/ca.pem", 0o644),
        ("share/data/big.bin", "data/big.bin", 0o644),
        ("share/data/a name with spaces.txt", "data/a name with spaces.txt", 0o644),
    ];
    for (installed, source, mode) in expect {
        let got = std::fs::read(root.join(installed)).unwrap();
        assert_eq!(got, std::fs::read(src.join(source)).unwrap(), "{installed}");
        let m = std::fs::metadata(root.join(installed)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, *mode, "mode of {installed}");
    }
    assert_eq!(std::fs::read(root.join("bin/nxs-survival")).unwrap(), std::fs::read(stub()).unwrap());
    assert_eq!(
        std::fs::read_link(root.join("etc/current.toml")).unwrap(),
        std::path::Path::new("nxs.toml"),
        "links are links"
    );
    let long = walkdir_find(&root, ".bin", "xxxxxxxxxx");
    assert_eq!(std::fs::read(long).unwrap(), b"long path");

    let s = run(run_file, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
    assert_eq!(code(&s), 0);
    let json = stdout(&s);
    assert!(json.starts_with("{\"state\":\"RUNNING\""), "{json}");
    assert!(json.contains("\"version\":\"2.0.1\""), "{json}");
    for st in ["VERIFYING", "DETECTING", "FRESH", "CONFIGURING", "VALIDATING", "RUNNING"] {
        assert!(json.contains(&format!("{{\"state\":\"{st}\"")), "history has {st}: {json}");
    }

    // Running it again finds the same install running and changes nothing.
    let before = snapshot(t.path());
    let again = run(run_file, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stdout(&again).contains("already installed"), "{}", stdout(&again));
    let after = snapshot(t.path());
    let changed: Vec<_> = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    assert!(changed.iter().all(|k| k.starts_with("state")), "only the state dir may change: {changed:?}");
    let s = run(run_file, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
    assert!(stdout(&s).starts_with("{\"state\":\"RUNNING\""), "still RUNNING: {}", stdout(&s));

    // The installed tool re-checks the install and notices tampering.
    let tool = root.join("bin/nxs-survival");
    assert_eq!(code(&run(&tool, &["check", "--root", root.to_str().unwrap()])), 0);
    std::fs::write(root.join("etc/nxs.toml"), b"tampered").unwrap();
    let c = run(&tool, &["check", "--root", root.to_str().unwrap(), "--json"]);
    assert_eq!(code(&c), 3);
    assert!(stdout(&c).contains("etc/nxs.toml"), "{}", stdout(&c));
}

fn walkdir_find(dir: &std::path::Path, suffix: &str, contains: &str) -> std::path::PathBuf {
    snapshot(dir)
        .keys()
        .find(|p| p.to_string_lossy().ends_with(suffix) && p.to_string_lossy().contains(contains))
        .map(|p| dir.join(p))
        .expect("long-path file installed")
}

#[test]
fn list_and_extract() {
    let p = Project::new(None);
    let out = p.path().join("out");
    let report = p.build(&out);
    let run_file = bundle_of(&report, "minimal");
    let l = run(run_file, &["list", "--json"]);
    assert_eq!(code(&l), 0, "{}", stderr(&l));
    let json = stdout(&l);
    assert!(json.contains("\"path\":\"etc/nxs.toml\",\"type\":\"file\",\"mode\":\"644\""), "{json}");
    assert!(!json.contains("share/data"), "minimal tier lacks the data component: {json}");

    let t = tempfile::tempdir().unwrap();
    let to = t.path().join("x");
    let e = run(run_file, &["extract", "--to", to.to_str().unwrap()]);
    assert_eq!(code(&e), 0, "{}", stderr(&e));
    assert_eq!(std::fs::read(to.join("etc/nxs.toml")).unwrap(), b"[instance]\nname = \"t\"\n");
    assert!(!to.join(nxs_format::RECORD_DIR).exists(), "extract writes no install record");
    // A second extract into the now non-empty directory is refused, untouched.
    let before = snapshot(t.path());
    let again = run(run_file, &["extract", "--to", to.to_str().unwrap()]);
    assert_eq!(code(&again), 5);
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    assert_eq!(snapshot(t.path()), before);
}

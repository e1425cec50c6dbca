//! Hostile machines: a full, read-only, noexec or foreign-mounted target,
//! and a user without permission. Each gets exit 5, a message that says
//! what and where, and a target exactly as it was. These tests mount small
//! tmpfs filesystems, so they need root (CI runs as root).

use nxs_tests::*;
use std::path::Path;
use std::process::Command;

fn install(bundle: &Path, root: &Path, state: &Path) -> std::process::Output {
    run(bundle, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
}

fn refused_on(bundle: &Path, area: &Path, root: &Path, state: &Path, needle: &str) {
    let before = snapshot(area);
    let o = install(bundle, root, state);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains(needle), "`{}` should say `{needle}`", stderr(&o));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(snapshot(area), before, "nothing written");
    assert!(!state.exists(), "the preflight runs before the state dir is touched");
}

#[test]
fn full_read_only_noexec_and_mount_point_targets() {
    let p = Project::new(None);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "full").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");

    let small = t.path().join("small");
    let _m = Mount::tmpfs(&small, "size=2m");
    std::fs::write(small.join("neighbour"), b"keep").unwrap();
    refused_on(&bundle, &small, &small.join("root"), &state, "not enough space: need ");
    let o = install(&bundle, &small.join("root"), &state);
    assert!(stderr(&o).contains(&format!("at {}", small.display())), "names the place: {}", stderr(&o));

    // A previous install on a filesystem since remounted read-only stays
    // exactly as it was.
    let ro = t.path().join("ro");
    let _m = Mount::tmpfs(&ro, "size=64m");
    let minimal = bundle_of(&p.build(&p.path().join("out-min")), "minimal").to_path_buf();
    let ro_state = t.path().join("ro-state");
    assert_eq!(code(&install(&minimal, &ro.join("root"), &ro_state)), 0);
    assert!(Command::new("mount").args(["-o", "remount,ro"]).arg(&ro).status().unwrap().success());
    refused_on(&bundle, &ro, &ro.join("root"), &state, "read-only filesystem");
    let c = run(&ro.join("root/bin/nxs-survival"), &["check", "--root", ro.join("root").to_str().unwrap()]);
    assert_eq!(code(&c), 0, "the previous install is intact: {}", stdout(&c));

    let noexec = t.path().join("noexec");
    let _m = Mount::tmpfs(&noexec, "size=64m,noexec");
    refused_on(&bundle, &noexec, &noexec.join("root"), &state, "mounted noexec");

    let parent = t.path().join("mp");
    let root = parent.join("root");
    // mode=0755: a fresh tmpfs is 1777, which is refused before anything
    // else as a root others can write.
    let _m = Mount::tmpfs(&root, "size=64m,mode=0755");
    refused_on(&bundle, &parent, &root, &state, "is a mount point");
}

#[test]
fn permission_denied_for_an_unprivileged_user() {
    let p = Project::new(None);
    let bundle = bundle_of(&p.build(&p.path().join("out")), "minimal").to_path_buf();
    let t = tempfile::tempdir().unwrap();
    // The bundle must be readable by the unprivileged user; the target not writable.
    let pub_dir = t.path().join("pub");
    std::fs::create_dir(&pub_dir).unwrap();
    let b = pub_dir.join("b.run");
    std::fs::copy(&bundle, &b).unwrap();
    let chmod = |p: &Path, m: &str| assert!(Command::new("chmod").arg(m).arg(p).status().unwrap().success());
    chmod(t.path(), "755");
    chmod(&pub_dir, "755");
    chmod(&b, "755");
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    chmod(&target, "755");
    let before = snapshot(&target);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&b)
        .args(["install", "--root"])
        .arg(target.join("root"))
        .arg("--state-dir")
        .arg(t.path().join("nobody-state"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("permission denied") && stderr(&o).contains(&target.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&target), before);
}

#[test]
fn disk_full_mid_extraction_keeps_the_previous_install() {
    // The preflight leaves no real way to fill the disk mid-run without a
    // race, so ENOSPC is injected (fault-injection stub) at the big file.
    let p = Project::new(None);
    let stubs = std::collections::BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let v1 = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out1"), &test_key().0, stubs.clone())).unwrap();
    let v1 = bundle_of(&v1, "full").to_path_buf();
    let spec = std::fs::read_to_string(&p.spec).unwrap().replace("version = \"2.0.1\"", "version = \"2.1.0\"");
    std::fs::write(&p.spec, spec).unwrap();
    std::fs::write(p.path().join("src/data/big.bin"), vec![7u8; 3 << 20]).unwrap();
    let v2 = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out2"), &test_key().0, stubs)).unwrap();
    let v2 = bundle_of(&v2, "full").to_path_buf();

    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    assert_eq!(code(&install(&v1, &root, &state)), 0);
    let before = snapshot(t.path().join("root").as_path());
    let o = output(
        Command::new(&v2)
            .args(["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
            .env("NXS_FAULT_NOSPC", "extract:share/data/big.bin"),
    )
    .unwrap();
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(stderr(&o).contains("No space left on device") && stderr(&o).contains("free some space"), "{}", stderr(&o));
    assert_eq!(snapshot(&root), before, "v1 intact");
    assert!(!t.path().join(".root.nxs-staging").exists(), "staging cleaned up");
    let s = run(&v1, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
    assert_eq!(code(&s), 0, "the checkpoint parses");
    // Room again: the next run succeeds.
    let o = install(&v2, &root, &state);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = run(&v2, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
    assert!(stdout(&s).contains("\"version\":\"2.1.0\""));
}

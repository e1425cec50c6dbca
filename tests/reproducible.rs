//! Two builds from copies of the same inputs, in different folders and with
//! different source mtimes, give byte-identical bundles and signatures.

use nxs_tests::*;

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let st = std::process::Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

#[test]
fn same_inputs_same_bytes() {
    let p = Project::new(None);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    copy_tree(&p.path().join("src"), &a.path().join("src"));
    copy_tree(&p.path().join("src"), &b.path().join("src"));
    std::fs::copy(&p.spec, a.path().join("spec.toml")).unwrap();
    std::fs::copy(&p.spec, b.path().join("spec.toml")).unwrap();
    // Different mtimes, and a different umask-like mode on a plain file.
    let st = std::process::Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(b.path().join("src/etc/nxs.toml"))
        .status()
        .unwrap();
    assert!(st.success());

    let build = |dir: &std::path::Path| {
        let proj = Project { dir: tempfile::tempdir().unwrap(), spec: dir.join("spec.toml") };
        let r = nxs_bundler::build(&proj.request(&dir.join("out"), &test_key().0)).unwrap();
        r.bundles
            .iter()
            .map(|b| (std::fs::read(&b.path).unwrap(), std::fs::read(&b.signature_path).unwrap()))
            .collect::<Vec<_>>()
    };
    let (ra, rb) = (build(a.path()), build(b.path()));
    assert_eq!(ra.len(), 2);
    for ((run_a, sig_a), (run_b, sig_b)) in ra.iter().zip(&rb) {
        assert!(run_a == run_b, "bundles differ ({} vs {} bytes)", run_a.len(), run_b.len());
        assert_eq!(sig_a, sig_b, "detached signatures differ");
    }
    assert_eq!(
        std::fs::read(a.path().join("out/SHA256SUMS")).unwrap(),
        std::fs::read(b.path().join("out/SHA256SUMS")).unwrap()
    );

    // And a changed input does change the bundle.
    std::fs::write(b.path().join("src/etc/nxs.toml"), b"[instance]\nname = \"u\"\n").unwrap();
    let rc = build(b.path());
    assert_ne!(ra[0].0, rc[0].0);
}

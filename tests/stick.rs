//! The stick (issue #17): one bundle per platform holding every tier, each
//! file once, and the stick directory around it.

use nxs_tests::*;
use std::path::{Path, PathBuf};

/// Installs `bundle` (with `extra` flags) into a fresh root; returns the
/// temporary directory, the root and the state directory.
fn install(bundle: &Path, extra: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, std::process::Output) {
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let mut args = vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    args.extend(extra);
    let o = run(bundle, &args);
    (t, root, state, o)
}

/// A tree's snapshot without the install record, which names the bundle it
/// came from.
fn payload_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut s = snapshot(root);
    s.retain(|p, _| !p.starts_with(nxs_format::RECORD_DIR));
    s
}

#[test]
fn each_tier_of_a_multi_tier_bundle_installs_what_its_own_bundle_does() {
    let proj = Project::new(None);
    let out = proj.path().join("out");
    let per_tier = proj.build(&out.join("tiers"));
    let mut req = proj.request(&out.join("multi"), &test_key().0);
    req.multi_tier = true;
    let multi = nxs_bundler::build(&req).unwrap();
    assert_eq!(multi.bundles.len(), 1);
    let stick = &multi.bundles[0].path;
    assert!(stick.file_name().unwrap().to_str().unwrap().ends_with("demo-2.0.1-x86_64-unknown-linux-musl.run"));
    let full_size = std::fs::metadata(bundle_of(&per_tier, "full")).unwrap().len();
    let multi_size = std::fs::metadata(stick).unwrap().len();
    eprintln!("full-tier bundle {full_size} bytes, multi-tier bundle {multi_size} bytes");

    // `list` names the tiers and each entry's; `list --tier` one tier's.
    let l = run(stick, &["list"]);
    assert_eq!(code(&l), 0, "{}", stderr(&l));
    assert!(stdout(&l).starts_with("tiers minimal, full (default full)\n"), "{}", stdout(&l));
    assert!(stdout(&l).contains(" share/data/big.bin  [full]\n"), "{}", stdout(&l));
    assert!(stdout(&l).contains(" bin/nxs-survival  [minimal,full]\n"), "{}", stdout(&l));
    let l = run(stick, &["list", "--tier", "minimal", "--json"]);
    assert_eq!(code(&l), 0, "{}", stderr(&l));
    assert!(stdout(&l).contains("\"tier\":\"minimal\",\"tiers\":[\"minimal\",\"full\"]"), "{}", stdout(&l));
    assert!(!stdout(&l).contains("big.bin"), "{}", stdout(&l));

    for tier in ["minimal", "full"] {
        let (_t1, want_root, _, o) = install(bundle_of(&per_tier, tier), &[]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let (_t2, root, state, o) = install(stick, &["--tier", tier]);
        assert_eq!(code(&o), 0, "{tier}: {}", stderr(&o));
        assert_eq!(payload_tree(&root), payload_tree(&want_root), "tier {tier}, file for file");
        let rec = std::fs::read_to_string(root.join(nxs_format::RECORD_DIR).join("tier")).unwrap();
        assert_eq!(rec, format!("{tier}\n"));
        // The installed tool checks the tree against its tier, and finds
        // a file of another tier put there.
        let tool = root.join("bin/nxs-survival");
        let c = run(&tool, &["check", "--root", root.to_str().unwrap()]);
        assert_eq!(code(&c), 0, "{}{}", stdout(&c), stderr(&c));
        let s = run(&tool, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(stdout(&s).contains(&format!("demo-2.0.1-{tier}-x86_64-unknown-linux-musl")), "{}", stdout(&s));
    }

    // No --tier: the default (the last tier, as this spec marks none).
    let (_t, root, state, o) = install(stick, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(root.join("share/data/big.bin").is_file());
    // Installing another tier over it replaces the tree with that tier's.
    let args = ["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let o = run(stick, &[&args[..], &["--tier", "minimal"]].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!root.join("share/data").exists(), "the full tier's files went with the switch");
    let o = run(stick, &[&args[..], &["--tier", "minimal"]].concat());
    assert!(stdout(&o).contains("already installed"), "the same tier again: {}", stdout(&o));

    // A tier the bundle does not hold: exit 2, naming those it does, and
    // nothing written.
    let (_t, root, state, o) = install(stick, &["--tier", "huge"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no tier `huge` (it has: minimal, full)"), "{}", stderr(&o));
    assert!(!root.exists() && !state.exists());
    // A one-tier bundle says it holds one.
    let o = run(bundle_of(&per_tier, "full"), &["list", "--tier", "minimal"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("holds tier `full` only"), "{}", stderr(&o));
}

//! Upgrades: v1 -> v2 switches atomically and keeps v1 as `previous`; a v2
//! whose validate hook fails is rolled back to v1 byte for byte (exit 7),
//! also when the rollback itself is interrupted; `rollback` on request; a
//! downgrade is refused (exit 4) unless forced.

use nxs_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the project at `version`, with `edit` applied to its spec text,
/// using `stub`; returns the full-tier bundle.
fn build_version(p: &Project, version: &str, edit: &dyn Fn(String) -> String, stub: &Path, out: &str) -> PathBuf {
    let text = std::fs::read_to_string(&p.spec).unwrap();
    let text = regex_version(&text, version);
    std::fs::write(&p.spec, edit(text)).unwrap();
    std::fs::write(p.path().join("src/etc/nxs.toml"), format!("[instance]\nversion = \"{version}\"\n")).unwrap();
    let stubs = BTreeMap::from([(HOST.to_string(), stub.to_path_buf())]);
    let r = nxs_bundler::build(&p.request_with_stubs(&p.path().join(out), &test_key().0, stubs)).unwrap();
    r.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().path.clone()
}

fn regex_version(text: &str, version: &str) -> String {
    text.lines()
        .map(|l| if l.starts_with("version = ") { format!("version = \"{version}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn same(s: String) -> String {
    s
}

fn failing_validate(s: String) -> String {
    s.replace(
        "argv = [\"bin/nxs-survival\", \"check\", \"--root\", \".\"]",
        "argv = [\"bin/nxs-survival\", \"check\", \"--root\", \"/nonexistent\"]",
    )
}

struct Target {
    _t: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

impl Target {
    fn new() -> Target {
        let t = tempfile::tempdir().unwrap();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        Target { _t: t, root, state }
    }
    fn install(&self, bundle: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = Command::new(bundle);
        c.args(["install", "--root", self.root.to_str().unwrap(), "--state-dir", self.state.to_str().unwrap()])
            .args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        output(&mut c).unwrap()
    }
    fn status(&self, bundle: &Path) -> String {
        stdout(&run(bundle, &["status", "--state-dir", self.state.to_str().unwrap(), "--json"]))
    }
    fn previous(&self) -> PathBuf {
        self.root.parent().unwrap().join(".root.nxs-previous")
    }
}

#[test]
fn upgrade_then_rollback_on_request() {
    let p = Project::new(None);
    let v1 = build_version(&p, "2.0.1", &same, stub(), "out1");
    let v2 = build_version(&p, "2.1.0", &same, stub(), "out2");
    let t = Target::new();
    assert_eq!(code(&t.install(&v1, &[], &[])), 0);
    let v1_tree = snapshot(&t.root);
    let o = t.install(&v2, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(t.status(&v2).contains("\"version\":\"2.1.0\""));
    assert_eq!(std::fs::read_to_string(t.root.join("etc/nxs.toml")).unwrap(), "[instance]\nversion = \"2.1.0\"\n");
    assert_eq!(snapshot(&t.previous()), v1_tree, "v1 is kept whole beside the root");

    let o = run(&v2, &["rollback", "--state-dir", t.state.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("from version 2.1.0 to 2.0.1"), "{}", stdout(&o));
    assert_eq!(snapshot(&t.root), v1_tree, "v1 is back, byte for byte");
    let s = t.status(&v2);
    assert!(s.starts_with("{\"state\":\"RUNNING\"") && s.contains("\"version\":\"2.0.1\""), "{s}");
}

#[test]
fn failed_validation_rolls_back_to_v1_byte_for_byte() {
    let p = Project::new(None);
    let v1 = build_version(&p, "2.0.1", &same, stub(), "out1");
    let v2 = build_version(&p, "2.1.0", &failing_validate, stub(), "out2");
    let t = Target::new();
    assert_eq!(code(&t.install(&v1, &[], &[])), 0);
    std::fs::write(t.state.join("user-data"), b"sessions and keys").unwrap();
    let v1_tree = snapshot(&t.root);
    let o = t.install(&v2, &[], &[]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(stderr(&o).contains("the previous install is back"), "{}", stderr(&o));
    assert!(stderr(&o).contains("diagnostic dump: "), "a failed validation leaves a dump: {}", stderr(&o));
    assert_eq!(snapshot(&t.root), v1_tree, "v1 restored byte for byte");
    assert_eq!(std::fs::read(t.state.join("user-data")).unwrap(), b"sessions and keys");
    let s = t.status(&v1);
    assert!(s.contains("\"state\":\"FAILED\"") && s.contains("ROLLING_BACK"), "{s}");
    assert!(!t.previous().exists(), "the failed version is not kept as a rollback target");
}

#[test]
fn an_interrupted_rollback_resumes_and_completes() {
    let p = Project::new(None);
    let v1 = build_version(&p, "2.0.1", &same, fault_stub(), "out1");
    let v2 = build_version(&p, "2.1.0", &failing_validate, fault_stub(), "out2");
    // Find the rollback's effects in a traced run.
    let probe = Target::new();
    assert_eq!(code(&probe.install(&v1, &[], &[])), 0);
    let traced = probe.install(&v2, &[], &[("NXS_FAULT_TRACE", "1")]);
    assert_eq!(code(&traced), 7);
    let rollback_effects: Vec<String> =
        stderr(&traced).lines().filter(|l| l.contains(" rollback-")).map(String::from).collect();
    assert!(!rollback_effects.is_empty(), "the rollback has effects: {}", stderr(&traced));
    for l in &rollback_effects {
        let n = l.strip_prefix("fault: effect ").unwrap().split(' ').next().unwrap();
        let t = Target::new();
        assert_eq!(code(&t.install(&v1, &[], &[])), 0);
        let v1_tree = snapshot(&t.root);
        let o = t.install(&v2, &[], &[("NXS_FAULT_CRASH_AT", n)]);
        assert_ne!(o.status.code(), Some(0), "killed at {l}");
        assert!(
            t.status(&v1).contains("\"state\":\"ROLLING_BACK\""),
            "checkpoint says ROLLING_BACK after a crash at {l}"
        );
        let o = t.install(&v2, &[], &[]);
        assert_eq!(code(&o), 7, "resumed rollback after a crash at {l}: {}", stderr(&o));
        assert_eq!(snapshot(&t.root), v1_tree, "v1 restored after a crash at {l}");
    }
}

#[test]
fn downgrade_is_refused_unless_forced() {
    let p = Project::new(None);
    let v1 = build_version(&p, "2.0.1", &same, stub(), "out1");
    let v2 = build_version(&p, "2.1.0", &same, stub(), "out2");
    let t = Target::new();
    assert_eq!(code(&t.install(&v2, &[], &[])), 0);
    let before = snapshot(&t.root);
    let o = t.install(&v1, &[], &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("refusing a downgrade") && stderr(&o).contains("--allow-downgrade"), "{}", stderr(&o));
    assert_eq!(snapshot(&t.root), before);
    // The highest version is remembered even if the root is wiped.
    std::fs::remove_dir_all(&t.root).unwrap();
    assert_eq!(code(&t.install(&v1, &[], &[])), 4);
    let o = t.install(&v1, &["--allow-downgrade"], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(t.status(&v1).contains("\"version\":\"2.0.1\""));
}

#[test]
fn a_new_version_with_the_same_payload_still_replaces_the_record() {
    let p = Project::new(None);
    let v1 = build_version(&p, "2.0.1", &same, stub(), "out1");
    // Same files, new version: only the signed manifest differs.
    let spec = regex_version(&std::fs::read_to_string(&p.spec).unwrap(), "2.0.2");
    std::fs::write(&p.spec, spec).unwrap();
    let stubs = BTreeMap::from([(HOST.to_string(), stub().to_path_buf())]);
    let r = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out2"), &test_key().0, stubs)).unwrap();
    let v2 = r.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().path.clone();
    let t = Target::new();
    assert_eq!(code(&t.install(&v1, &[], &[])), 0);
    let o = t.install(&v2, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let record = std::fs::read_to_string(t.root.join(".nxs-bundle/manifest")).unwrap();
    assert!(record.contains("version 2.0.2\n"), "the record is the new bundle's");
    assert!(t.status(&v2).contains("\"version\":\"2.0.2\""));
}

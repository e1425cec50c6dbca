//! The `nxs-bundle` command line: exit codes and messages a release
//! engineer's script relies on.

use std::process::Command;

const SPEC: &str = r#"platforms = ["x86_64-unknown-linux-musl"]
[product]
name = "p"
version = "1.0.0"
[trust]
keys = ["k.pub"]
[[component]]
name = "a"
source = "src/a"
install = "a"
[[tier]]
name = "t"
components = ["a", "b"]
"#;

fn bundle(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nxs-bundle")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn spec_error_exits_3_with_file_line_column() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("spec.toml"), SPEC).unwrap();
    let o = bundle(
        &["build", "--manifest", "spec.toml", "--stub", "x86_64-unknown-linux-musl=/bin/true", "--key", "k.key"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("spec.toml:13:20: tier `t` names component `b`, which is not declared"), "{err}");
    assert!(err.contains("help: declared components: a"), "{err}");
}

#[test]
fn missing_source_is_named_and_dry_run_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("spec.toml"), SPEC.replace(", \"b\"", "")).unwrap();
    let o = bundle(
        &[
            "build",
            "--manifest",
            "spec.toml",
            "--stub",
            "x86_64-unknown-linux-musl=/bin/true",
            "--key",
            "k.key",
            "--dry-run",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("component `a` (") && err.contains("src/a is missing"), "{err}");

    std::fs::create_dir_all(d.path().join("src/a")).unwrap();
    std::fs::write(d.path().join("src/a/f"), b"x").unwrap();
    let o = bundle(
        &[
            "build",
            "--manifest",
            "spec.toml",
            "--stub",
            "x86_64-unknown-linux-musl=/bin/true",
            "--key",
            "k.key",
            "--dry-run",
            "--json",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"file\":\"p-1.0.0-t-x86_64-unknown-linux-musl.run\""), "{out}");
    assert!(out.contains("{\"path\":\"a/f\",\"mode\":420,"), "{out}");
    assert!(!d.path().join("target").exists());
}

#[test]
fn keygen_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let o = bundle(&["keygen", "k", "--unencrypted"], d.path());
    assert_eq!(o.status.code(), Some(0));
    assert!(d.path().join("k.key").exists() && d.path().join("k.pub").exists());
    let o = bundle(&["keygen", "k", "--unencrypted"], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

/// The root ceremony from the command line (docs/TRUST.md): init, rotate,
/// sign one key at a time, verify; a chain short of signatures exits 3 and
/// names the step.
#[test]
fn root_init_rotate_sign_verify() {
    let d = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let o = bundle(args, d.path());
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    for k in ["a", "b", "c", "d"] {
        ok(&["keygen", "--unencrypted", k]);
    }
    std::fs::create_dir(d.path().join("roots")).unwrap();
    ok(&[
        "root",
        "init",
        "--threshold",
        "2",
        "--key",
        "a.pub",
        "--key",
        "b.pub",
        "--key",
        "c.pub",
        "--out",
        "roots/root-1",
        "--sign-with",
        "a.key",
        "--sign-with",
        "b.key",
    ]);
    let again = bundle(&["root", "init", "--threshold", "1", "--key", "a.pub", "--out", "roots/root-1"], d.path());
    assert_eq!(again.status.code(), Some(1), "a root is never rewritten");
    ok(&[
        "root",
        "rotate",
        "--from",
        "roots/root-1",
        "--threshold",
        "2",
        "--key",
        "b.pub",
        "--key",
        "c.pub",
        "--key",
        "d.pub",
        "--revoke",
        "a.pub",
        "--out",
        "roots/root-2",
        "--sign-with",
        "a.key",
    ]);
    // One signature of root 1's keys is not enough.
    let o = bundle(&["root", "verify", "roots/root-1", "roots/root-2"], d.path());
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("root chain step 1 -> 2: root 2 has 1 valid signature from keys of root 1, which needs 2"),
        "{err}"
    );
    // Each signer signs on their own machine; then the chain holds.
    ok(&["root", "sign", "roots/root-2", "--key", "b.key"]);
    ok(&["root", "sign", "roots/root-2", "--key", "d.key"]);
    let json = ok(&["root", "verify", "roots/root-1", "roots/root-2", "--json"]);
    assert!(json.starts_with("{\"root_version\":2,\"threshold\":2,") && json.contains("\"steps\":1"), "{json}");
    let text = std::fs::read_to_string(d.path().join("roots/root-2")).unwrap();
    assert!(text.starts_with("nxs-root 1\nversion 2\nthreshold 2\n") && text.contains("\nrevoked-key "), "{text}");
}

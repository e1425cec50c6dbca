//! Refusals of the walking skeleton: an untrusted signer, a spec error, a
//! missing source, damaged bundles. Each names what is wrong, exits with the
//! documented code, and writes nothing.

use nxs_tests::*;
use std::path::Path;

fn install_args<'a>(root: &'a Path, state: &'a Path) -> Vec<&'a str> {
    vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]
}

/// Runs verify and install on `bundle` in a fresh place and checks that both
/// exit `want`, mention `needle`, and leave the place as it was.
fn refused(bundle: &Path, want: i32, needle: &str) {
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir(&root).unwrap();
    std::fs::write(t.path().join("neighbour"), b"keep me").unwrap();
    let before = snapshot(t.path());
    for args in [vec!["verify"], install_args(&root, &state)] {
        let o = run(bundle, &args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: `{}` should mention `{needle}`", stderr(&o));
        assert!(stderr(&o).contains("hint:"), "{args:?}: a hint is given: {}", stderr(&o));
    }
    assert_eq!(snapshot(t.path()), before, "nothing may be written");
}

#[test]
fn a_key_outside_the_trust_root_is_refused() {
    let p = Project::new(None);
    let keys = tempfile::tempdir().unwrap();
    let (sk, pk) = nxs_bundler::sign::keygen(&keys.path().join("outsider"), None, false).unwrap();
    // The spec trusts the outsider, so the bundler signs; the stub does not.
    let spec = std::fs::read_to_string(&p.spec).unwrap().replace(test_key().1.to_str().unwrap(), pk.to_str().unwrap());
    std::fs::write(&p.spec, spec).unwrap();
    let r = nxs_bundler::build(&p.request(&p.path().join("out"), &sk)).unwrap();
    refused(&r.bundles[0].path, 3, "which root 1 does not list");
}

#[test]
fn the_bundler_refuses_a_key_outside_the_specs_trust_root() {
    let p = Project::new(None);
    let keys = tempfile::tempdir().unwrap();
    let (sk, _) = nxs_bundler::sign::keygen(&keys.path().join("stranger"), None, false).unwrap();
    let out = p.path().join("out");
    let e = nxs_bundler::build(&p.request(&out, &sk)).unwrap_err();
    assert!(format!("{e:#}").contains("not in the trust root"), "{e:#}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn damaged_bundles_are_refused_by_region() {
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let good = bundle_of(&report, "full");
    let bytes = std::fs::read(good).unwrap();
    let m = &report.bundles.iter().find(|b| b.path == good).unwrap().manifest;
    let stub_len = m.stub.len as usize;
    let payload_end = stub_len + m.payload.len as usize;
    let damaged = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("stub", flip(&bytes, 4096), "stub at bytes 0.."),
        ("payload", flip(&bytes, stub_len + 100), "payload frame 0 of"),
        ("payload end", flip(&bytes, payload_end - 1), "of the bundle): sha256 is"),
        ("manifest", flip(&bytes, payload_end + 40), "manifest at bytes"),
        ("trailer", flip(&bytes, bytes.len() - 30), "trailer"),
        ("truncated", bytes[..bytes.len() - 1000].to_vec(), "trailer"),
        ("appended", [&bytes[..], b"junk"].concat(), "trailer"),
    ];
    for (name, data, needle) in cases {
        let f = damaged.path().join(format!("{}.run", name.replace(' ', "-")));
        write(&f, &data, 0o755);
        // A byte flipped in the stub region may break the ELF itself; the
        // kernel then refuses to run it, which is also a refusal.
        if name == "stub" {
            let o = run(&f, &["verify"]);
            assert_ne!(code(&o), 0);
            continue;
        }
        refused(&f, 3, needle);
    }
}

fn flip(b: &[u8], at: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 0x40;
    v
}

#[test]
fn spec_errors_point_at_file_line_and_column() {
    let p = Project::new(None);
    let text = std::fs::read_to_string(&p.spec).unwrap().replace("version = \"2.0.1\"", "version = \"2.0-beta\"");
    std::fs::write(&p.spec, text).unwrap();
    let e = nxs_bundler::build(&p.request(&p.path().join("out"), &test_key().0)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.starts_with(&format!("{}:5:11: version `2.0-beta`", p.spec.display())), "{msg}");
    assert!(msg.contains("help:"), "{msg}");
}

#[test]
fn a_missing_source_is_named() {
    let p = Project::new(None);
    std::fs::remove_dir_all(p.path().join("src/data")).unwrap();
    let out = p.path().join("out");
    let e = nxs_bundler::build(&p.request(&out, &test_key().0)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(&p.path().join("src/data").display().to_string()), "{msg}");
    assert!(msg.contains("component `data`"), "{msg}");
    assert!(!out.exists(), "nothing written before the plan is complete");
}

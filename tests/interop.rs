//! Interop with tools nobody here wrote: the minisign CLI, zstd, GNU tar and
//! sha256sum read what we write, and keys cross both ways.

use nxs_bundler::sign::SigningKey;
use nxs_tests::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn sh(script: &str, dir: &std::path::Path, envs: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]).current_dir(dir);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn minisign_cli_accepts_the_detached_signature_and_sums() {
    require_tool("minisign");
    require_tool("sha256sum");
    let p = Project::new(None);
    let out = p.path().join("out");
    let report = p.build(&out);
    for b in &report.bundles {
        let o = run(
            std::path::Path::new("minisign"),
            &["-V", "-p", test_key().1.to_str().unwrap(), "-m", b.path.to_str().unwrap()],
        );
        assert_eq!(code(&o), 0, "minisign -V: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("Trusted comment: file:"), "{}", stdout(&o));
    }
    let o = sh("sha256sum -c SHA256SUMS && minisign -V -p \"$K\" -m SHA256SUMS", &out, &[("K", &test_key().1)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).matches(": OK").count(), 2, "{}", stdout(&o));

    // A flipped byte is caught by both stock tools.
    let b = &report.bundles[0].path;
    let mut bytes = std::fs::read(b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(b, &bytes).unwrap();
    assert_ne!(
        code(&run(
            std::path::Path::new("minisign"),
            &["-V", "-p", test_key().1.to_str().unwrap(), "-m", b.to_str().unwrap()]
        )),
        0
    );
    assert_ne!(code(&sh("sha256sum -c SHA256SUMS", &out, &[])), 0);
}

/// Runs the `verify-by-hand` block of docs/FORMAT.md, as written there
/// ([`format_md_recipe`], which tests/tar_grammar.rs runs too).
#[test]
fn format_md_recipe_verifies_the_manifest_and_lists_the_payload() {
    require_tool("minisign");
    require_tool("zstd");
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let packed = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
    let work = tempfile::tempdir().unwrap();
    let o = format_md_recipe(&packed.path, work.path());
    assert_eq!(code(&o), 0, "recipe failed: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Signature and comment signature verified"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Trusted comment: nxs-manifest demo-2.0.1-full-"), "{}", stdout(&o));

    // The manifest cut out by hand is the bundler's manifest, to the byte.
    let cut = std::fs::read(work.path().join("manifest.txt")).unwrap();
    assert_eq!(cut, packed.manifest.to_text().as_bytes());

    // tar -tv lists exactly the manifest's entries, in its order, owned by 0/0.
    let listed = recipe_listing(&o);
    let want: Vec<String> = packed.manifest.entries.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(listed, want);
}

#[test]
fn zstd_and_tar_unpack_what_the_manifest_lists() {
    require_tool("zstd");
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let packed = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
    let bytes = std::fs::read(&packed.path).unwrap();
    let s = packed.manifest.stub.len as usize;
    let payload = &bytes[s..s + packed.manifest.payload.len as usize];
    assert_eq!(sha256(payload), nxs_format::hex::encode(&packed.manifest.payload.sha256));
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("payload.zst"), payload).unwrap();
    let o = sh("mkdir x && zstd -dc payload.zst | tar -xf - -C x && cd x && find . -type f | sort", work.path(), &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Every file's sha256, as `sha256sum` computes it, matches the manifest.
    for e in &packed.manifest.entries {
        if let nxs_format::EntryKind::File { sha256: want, .. } = &e.kind {
            let o = Command::new("sha256sum").arg(work.path().join("x").join(e.path.as_str())).output().unwrap();
            let got = stdout(&o);
            assert_eq!(&got[..64], nxs_format::hex::encode(want), "{}", e.path);
        }
    }
}

fn minisign_verifies(dir: &std::path::Path, pubkey: &std::path::Path, file: &std::path::Path) {
    let o =
        Command::new("minisign").arg("-V").arg("-p").arg(pubkey).arg("-m").arg(file).current_dir(dir).output().unwrap();
    assert_eq!(code(&o), 0, "minisign -V: {}{}", stdout(&o), stderr(&o));
}

fn minisign_with_password(args: &[&str], dir: &std::path::Path, password: &str) {
    let mut c = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(format!("{password}\n{password}\n").as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "minisign {args:?}: {}{}", stdout(&o), stderr(&o));
}

#[test]
fn keys_cross_both_ways() {
    require_tool("minisign");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("data"), b"some data to sign\n").unwrap();

    // minisign -G keys (password-protected and -W unencrypted) sign in our builder.
    minisign_with_password(&["-G", "-p", "enc.pub", "-s", "enc.key"], dir, "hunter2");
    let o = Command::new("minisign")
        .args(["-G", "-W", "-p", "plain.pub", "-s", "plain.key"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for (sk, pk, pw) in [("enc.key", "enc.pub", Some("hunter2")), ("plain.key", "plain.pub", None)] {
        let key = SigningKey::load(&dir.join(sk), pw.map(String::from)).unwrap();
        let sig = key.sign(&b"some data to sign\n"[..], "from nxs-bundle").unwrap();
        std::fs::write(dir.join("data.minisig"), sig).unwrap();
        minisign_verifies(dir, &dir.join(pk), &dir.join("data"));
    }
    assert!(SigningKey::load(&dir.join("enc.key"), Some("wrong".into())).is_err(), "a wrong password is refused");

    // nxs-bundle keygen keys sign with minisign -S, both kinds.
    nxs_bundler::sign::keygen(&dir.join("ours-enc"), Some("pw".into()), false).unwrap();
    nxs_bundler::sign::keygen(&dir.join("ours-plain"), None, false).unwrap();
    std::fs::remove_file(dir.join("data.minisig")).unwrap();
    minisign_with_password(&["-S", "-s", "ours-enc.key", "-m", "data"], dir, "pw");
    minisign_verifies(dir, &dir.join("ours-enc.pub"), &dir.join("data"));
    let o =
        Command::new("minisign").args(["-S", "-s", "ours-plain.key", "-m", "data"]).current_dir(dir).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    minisign_verifies(dir, &dir.join("ours-plain.pub"), &dir.join("data"));
}

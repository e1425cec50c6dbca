//! Broken media: bytes flipped across every region of a real bundle,
//! truncation at every region boundary and at a spread of offsets, garbage
//! appended, a manifest swapped for another valid bundle's, and attacks on
//! the signature. Every case is refused with exit 3 and nothing written.

use nxs_tests::*;
use std::path::Path;
use std::process::Command;

/// Runs verify and install; both must exit `want` (or, for a stub whose
/// own code was hit, anything but success) and write nothing.
fn refused(bundle: &Path, want: Option<i32>, what: &str) {
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    for args in
        [vec!["verify"], vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]]
    {
        if want.is_none() {
            // The stub's own code was hit: it may not load, crash, or loop
            // for ever (a flipped jump); none of that is success.
            match status_within(Command::new(bundle).args(&args), STUB_FLIP_LIMIT) {
                Ok(Some(st)) => assert!(!st.success(), "{what}, {args:?}: a damaged stub must not succeed"),
                Ok(None) => eprintln!("{what}, {args:?}: still running after {STUB_FLIP_LIMIT:?}, killed"),
                // The kernel will not even load a stub whose ELF header was hit.
                Err(e) => assert_eq!(e.raw_os_error(), Some(8), "{what}: {e}"),
            }
            assert!(!root.exists() && !state.exists(), "{what}, {args:?}: nothing may be written");
            continue;
        }
        let o = output(Command::new(bundle).args(&args)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(o.status.code(), want, "{what}, {args:?}: {}", stderr(&o));
        assert!(!root.exists() && !state.exists(), "{what}, {args:?}: nothing may be written");
    }
}

/// How long a stub whose own code was hit may run before it is killed.
const STUB_FLIP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `cmd` (output discarded) to its end, or kills it after `limit`
/// and gives `None`. A busy executable (ETXTBSY, just written) is retried.
fn status_within(cmd: &mut Command, limit: std::time::Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => break other?,
        }
    };
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(None)
}

struct Regions {
    stub: usize,
    payload: usize,
    manifest: usize,
    signature: usize,
}

fn regions(bytes: &[u8]) -> Regions {
    let t = nxs_format::Trailer::decode(bytes[bytes.len() - 64..].try_into().unwrap(), bytes.len() as u64).unwrap();
    Regions {
        stub: t.stub_len as usize,
        payload: t.payload_len as usize,
        manifest: t.manifest_len as usize,
        signature: t.signature_len as usize,
    }
}

#[test]
fn flipped_bytes_in_every_region() {
    let p = Project::new(None);
    let good = std::fs::read(bundle_of(&p.build(&p.path().join("out")), "minimal")).unwrap();
    let r = regions(&good);
    let d = tempfile::tempdir().unwrap();
    let starts = [0, r.stub, r.stub + r.payload, r.stub + r.payload + r.manifest, good.len() - 64];
    let ends = [r.stub, r.stub + r.payload, r.stub + r.payload + r.manifest, good.len() - 64, good.len()];
    let names = ["stub", "payload", "manifest", "signature", "trailer"];
    let mut cases = 0;
    for i in 0..5 {
        let (a, b) = (starts[i], ends[i]);
        // First, last and a spread of bytes in between.
        let mut offsets: Vec<usize> = (0..12).map(|k| a + (b - a) * k / 12).collect();
        offsets.push(b - 1);
        for off in offsets {
            let mut bytes = good.clone();
            bytes[off] ^= 0x01;
            let f = d.path().join(format!("flip-{off}.run"));
            write(&f, &bytes, 0o755);
            // A flip inside the stub's own code may keep it from running at
            // all; past that, it must be refused like any other region.
            let want = if names[i] == "stub" { None } else { Some(3) };
            refused(&f, want, &format!("{} byte {off}", names[i]));
            cases += 1;
        }
    }
    eprintln!("{cases} flipped-byte cases refused");
    let _ = r.signature;
}

#[test]
fn truncation_and_appended_garbage() {
    let p = Project::new(None);
    let good = std::fs::read(bundle_of(&p.build(&p.path().join("out")), "minimal")).unwrap();
    let r = regions(&good);
    let d = tempfile::tempdir().unwrap();
    let bounds = [r.stub, r.stub + r.payload, r.stub + r.payload + r.manifest, good.len() - 64];
    let mut cuts: Vec<usize> = bounds.iter().flat_map(|&b| [b - 1, b, b + 1]).collect();
    cuts.extend((1..16).map(|k| good.len() * k / 16));
    cuts.extend([good.len() - 1, 63, 1]);
    for cut in cuts {
        let f = d.path().join(format!("cut-{cut}.run"));
        write(&f, &good[..cut], 0o755);
        // Cut inside the stub, the kernel may refuse to run the file at all.
        let want = if cut < r.stub { None } else { Some(3) };
        refused(&f, want, &format!("truncated at {cut}"));
    }
    for junk in [&b"x"[..], &[0u8; 64][..], &good[good.len() - 64..]] {
        let f = d.path().join("appended.run");
        write(&f, &[&good[..], junk].concat(), 0o755);
        refused(&f, Some(3), "appended garbage");
    }
}

#[test]
fn a_manifest_swapped_for_another_valid_bundles() {
    let p = Project::new(None);
    let report = p.build(&p.path().join("out"));
    let a = std::fs::read(bundle_of(&report, "minimal")).unwrap();
    let b = std::fs::read(bundle_of(&report, "full")).unwrap();
    let (ra, rb) = (regions(&a), regions(&b));
    // a's stub and payload, b's (validly signed) manifest and signature.
    let mut mixed = a[..ra.stub + ra.payload].to_vec();
    let b_meta = &b[rb.stub + rb.payload..b.len() - 64];
    mixed.extend_from_slice(b_meta);
    let t = nxs_format::Trailer {
        format_version: nxs_format::FORMAT_VERSION,
        stub_len: ra.stub as u64,
        payload_len: ra.payload as u64,
        manifest_len: rb.manifest as u64,
        signature_len: rb.signature as u64,
    };
    mixed.extend_from_slice(&t.encode());
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("mixed.run");
    write(&f, &mixed, 0o755);
    refused(&f, Some(3), "manifest swapped");
    let o = output(Command::new(&f).arg("verify")).unwrap();
    assert!(stderr(&o).contains("the signed manifest says"), "{}", stderr(&o));
}

/// Replaces the signature region of a bundle with a trust block holding
/// the one manifest signature `sig` (format 4), or with the block `sig`
/// itself.
fn with_signature(bundle: &[u8], sig: &str) -> Vec<u8> {
    let r = regions(bundle);
    let mut out = bundle[..r.stub + r.payload + r.manifest].to_vec();
    let sig = if sig.starts_with("nxs-trust ") {
        sig.to_string()
    } else {
        nxs_format::trust::TrustBlock { roots: vec![], manifest_signatures: vec![sig.to_string()] }.to_text()
    };
    out.extend_from_slice(sig.as_bytes());
    let t = nxs_format::Trailer {
        format_version: nxs_format::FORMAT_VERSION,
        stub_len: r.stub as u64,
        payload_len: r.payload as u64,
        manifest_len: r.manifest as u64,
        signature_len: sig.len() as u64,
    };
    out.extend_from_slice(&t.encode());
    out
}

#[test]
fn signature_attacks() {
    require_tool("minisign");
    let p = Project::new(None);
    let good = std::fs::read(bundle_of(&p.build(&p.path().join("out")), "minimal")).unwrap();
    let r = regions(&good);
    let manifest = &good[r.stub + r.payload..r.stub + r.payload + r.manifest];
    let sig = std::str::from_utf8(&good[r.stub + r.payload + r.manifest..good.len() - 64]).unwrap().to_string();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("m"), manifest).unwrap();

    // A legacy (non-prehashed) signature by the trusted key itself.
    let o = Command::new("minisign")
        .args(["-S", "-l", "-s"])
        .arg(test_key().0)
        .args(["-m", "m", "-x", "legacy.sig", "-t", "x"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let legacy = std::fs::read_to_string(d.path().join("legacy.sig")).unwrap();
    // The untrusted comment is signed by nothing: give it the bundle's
    // fixed line, so that only the legacy mode is left to refuse.
    let legacy = format!("{}\n{}", nxs_format::SIGNATURE_FIRST_LINE, legacy.split_once('\n').unwrap().1);
    let f = d.path().join("legacy.run");
    write(&f, &with_signature(&good, &legacy), 0o755);
    refused(&f, Some(3), "legacy signature");
    let o = output(Command::new(&f).arg("verify")).unwrap();
    assert!(stderr(&o).contains("is a legacy (non-prehashed) signature, which is refused"), "{}", stderr(&o));

    // Another key's signature, relabelled with the trusted key's id.
    let (osk, _) = nxs_bundler::sign::keygen(&d.path().join("other"), None, false).unwrap();
    let other = nxs_bundler::sign::SigningKey::load(&osk, None).unwrap().sign(manifest, "forged").unwrap();
    let lines: Vec<&str> = other.lines().collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(lines[1]).unwrap();
    let trusted_id =
        b64.decode(std::fs::read_to_string(test_key().1).unwrap().lines().nth(1).unwrap()).unwrap()[2..10].to_vec();
    raw[2..10].copy_from_slice(&trusted_id);
    let forged = format!("{}\n{}\n{}\n{}\n", lines[0], b64.encode(&raw), lines[2], lines[3]);
    let f = d.path().join("forged.run");
    write(&f, &with_signature(&good, &forged), 0o755);
    refused(&f, Some(3), "forged key id");
    let o = output(Command::new(&f).arg("verify")).unwrap();
    assert!(stderr(&o).contains("signature 1 (key ") && stderr(&o).contains("does not match"), "{}", stderr(&o));

    // The trusted comment edited: the global signature no longer matches.
    let edited = sig.replace("trusted comment: nxs-manifest", "trusted comment: nxs-manifesT");
    assert_ne!(edited, sig);
    let f = d.path().join("comment.run");
    write(&f, &with_signature(&good, &edited), 0o755);
    refused(&f, Some(3), "edited trusted comment");
    let o = output(Command::new(&f).arg("verify")).unwrap();
    assert!(stderr(&o).contains("0 valid signatures from keys of root 1"), "{}", stderr(&o));
}

/// The bundle is changed on disk after it was verified, while the install
/// runs. In place, Linux refuses to write a running executable (ETXTBSY);
/// by rename (a new file at the path), the install completes with exactly
/// the bytes it verified, read through the file it opened. Either way the
/// install ends with the verified bytes, never the modified ones. (Where a
/// filesystem allowed the write, the payload is hashed again as it is read
/// and every file as it is written: see payload.rs and extract.rs.)
#[test]
fn a_bundle_changed_on_disk_between_verify_and_install() {
    let p = Project::new(None);
    let stubs = std::collections::BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let r = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let packed = r.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
    let good = std::fs::read(&packed.path).unwrap();
    let reg = regions(&good);

    for in_place in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let bundle = t.path().join("b.run");
        write(&bundle, &good, 0o755);
        let (root, state, pause) = (t.path().join("root"), t.path().join("state"), t.path().join("paused"));
        // Pause at the first file written into staging: verification is done.
        let child = Command::new(&bundle)
            .args(["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
            .env("NXS_FAULT_PAUSE", "extract:share/data/big.bin")
            .env("NXS_FAULT_PAUSE_FILE", &pause)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !pause.exists() {
            assert!(std::time::Instant::now() < until, "the install never reached the pause");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut evil = good.clone();
        for i in (reg.stub + reg.payload / 2..reg.stub + reg.payload).step_by(4096) {
            evil[i] ^= 0xff;
        }
        if in_place {
            let e = std::fs::OpenOptions::new().write(true).open(&bundle).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(26), "the kernel refuses to write a running executable: {e}");
        } else {
            let tmp = t.path().join("evil.run");
            std::fs::write(&tmp, &evil).unwrap();
            std::fs::rename(&tmp, &bundle).unwrap();
        }
        std::fs::remove_file(&pause).unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
        assert_eq!(code(&c), 0, "exactly the verified bytes: {}", stdout(&c));
        assert_eq!(
            std::fs::read(root.join("share/data/big.bin")).unwrap(),
            std::fs::read(p.path().join("src/data/big.bin")).unwrap()
        );
    }
}

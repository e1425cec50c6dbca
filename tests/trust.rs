//! The root chain (format 4, docs/TRUST.md): a stub built with root 1, a
//! 2-of-3 threshold, installs bundles signed 2-of-3 under root 3 with
//! roots 2 and 3 on their chain, one key rotated out at each step; every
//! rule of the walk refuses what breaks it, naming the step and the rule;
//! a machine never goes back to an older root unless forced; and stock
//! `minisign -V` agrees with every signature.

use nxs_bundler::root::{init, root_comment, rotate, sign_root, write_root};
use nxs_bundler::sign::{keygen, SigningKey};
use nxs_format::trust::{SignedRoot, TrustBlock};
use nxs_tests::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Five keys and three roots, made once per test binary:
/// root 1 = 2 of k0 k1 k2; root 2 = 2 of k1 k2 k3 (k0 rotated out);
/// root 3 = 2 of k2 k3 k4 (k1 rotated out and revoked).
struct Ceremony {
    _dir: tempfile::TempDir,
    pubs: Vec<PathBuf>,
    secrets: Vec<PathBuf>,
    roots: Vec<PathBuf>,
    /// The host stub embedding root 1.
    stub: PathBuf,
}

fn ceremony() -> &'static Ceremony {
    static C: OnceLock<Ceremony> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("nxs-ceremony-").tempdir().unwrap();
        let d = dir.path();
        let (mut pubs, mut secrets) = (Vec::new(), Vec::new());
        for i in 0..5 {
            let (sk, pk) = keygen(&d.join(format!("k{i}")), None, false).unwrap();
            pubs.push(pk);
            secrets.push(sk);
        }
        let key = |i: usize| SigningKey::load(&secrets[i], None).unwrap();
        let roots: Vec<PathBuf> = (1..=3).map(|v| d.join(format!("roots/root-{v}"))).collect();
        std::fs::create_dir_all(d.join("roots")).unwrap();
        let r1 = init(2, &pubs[0..3]).unwrap();
        let r2 = rotate(&r1, 2, &pubs[1..4], &[]).unwrap();
        let r3 = rotate(&r2, 2, &pubs[2..5], &[key(1).public().id]).unwrap();
        for (r, path, signers) in
            [(&r1, &roots[0], &[0, 1][..]), (&r2, &roots[1], &[0, 1, 3]), (&r3, &roots[2], &[1, 2, 4])]
        {
            write_root(r, path).unwrap();
            for &i in signers {
                sign_root(path, &key(i)).unwrap();
            }
        }
        let root = workspace();
        let platform = xtask::platform::Platform::load(&root, HOST).unwrap();
        let stub = xtask::stub::build(&root, &platform, &r1, true).expect("stub build");
        Ceremony { _dir: dir, pubs, secrets, roots, stub }
    })
}

/// A bundle of the test project's minimal tier, its spec naming `roots`,
/// signed by keys `signers`.
fn build(roots: &[&Path], signers: &[usize], out: &Path) -> PathBuf {
    let c = ceremony();
    let p = Project::new(None);
    let spec = std::fs::read_to_string(&p.spec).unwrap();
    let keys_line = spec.lines().find(|l| l.starts_with("keys = ")).unwrap().to_string();
    let list: Vec<String> = roots.iter().map(|r| format!("{:?}", r.to_str().unwrap())).collect();
    std::fs::write(&p.spec, spec.replace(&keys_line, &format!("roots = [{}]", list.join(", ")))).unwrap();
    let mut req = p.request_with_stubs(out, &c.secrets[0], [(HOST.to_string(), c.stub.clone())].into());
    req.keys = signers.iter().map(|&i| c.secrets[i].clone()).collect();
    req.tiers = vec!["minimal".into()];
    let report = nxs_bundler::build(&req).expect("build");
    std::mem::forget(p);
    report.bundles[0].path.clone()
}

/// The chain bundle: roots 1 to 3, manifest signed by k2 and k3.
fn good(out: &Path) -> PathBuf {
    let c = ceremony();
    build(&[&c.roots[0], &c.roots[1], &c.roots[2]], &[2, 3], out)
}

fn block_of(bundle: &Path) -> TrustBlock {
    let bytes = std::fs::read(bundle).unwrap();
    let (t, _) = read_manifest(bundle);
    let at = t.signature_offset() as usize;
    TrustBlock::parse(&bytes[at..at + t.signature_len as usize]).unwrap()
}

/// `bundle` with its trust block replaced by `block`, written to `to`.
fn with_block(bundle: &Path, block: &TrustBlock, to: &Path) -> PathBuf {
    let bytes = std::fs::read(bundle).unwrap();
    let (mut t, _) = read_manifest(bundle);
    let text = block.to_text();
    let mut out = bytes[..t.signature_offset() as usize].to_vec();
    out.extend_from_slice(text.as_bytes());
    t.signature_len = text.len() as u64;
    out.extend_from_slice(&t.encode());
    write(to, &out, 0o755);
    to.to_path_buf()
}

fn key(i: usize) -> SigningKey {
    SigningKey::load(&ceremony().secrets[i], None).unwrap()
}

/// `root`'s text signed by keys `by`.
fn resigned(root: &SignedRoot, by: &[usize]) -> SignedRoot {
    let signatures =
        by.iter().map(|&i| key(i).sign(root.text.as_bytes(), &root_comment(&root.root)).unwrap()).collect();
    SignedRoot { signatures, ..root.clone() }
}

/// The manifest of `bundle` signed by keys `by`.
fn manifest_signed(bundle: &Path, by: &[usize]) -> Vec<String> {
    let (_, m) = read_manifest(bundle);
    let text = m.to_text();
    by.iter().map(|&i| key(i).sign(text.as_bytes(), &nxs_bundler::pack::manifest_comment(&m)).unwrap()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn id(i: usize) -> String {
    key(i).key_id()
}

#[test]
fn a_stub_with_root_1_installs_a_bundle_signed_2_of_3_under_root_3() {
    let t = tempfile::tempdir().unwrap();
    let b = good(&t.path().join("out"));
    let o = run(&b, &["verify", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let events = check_events(&stdout(&o), 0);
    let last = events.last().unwrap();
    use nxs_format::json::Value;
    assert_eq!(last.get("root_version"), Some(&Value::Num("3".into())), "{}", stdout(&o));
    assert_eq!(last.get("threshold"), Some(&Value::Num("2".into())));
    assert_eq!(last.get("root_steps"), Some(&Value::Num("2".into())));
    assert_eq!(last.get("signer").and_then(Value::as_str), Some(format!("{},{}", id(2), id(3)).as_str()));
    let o = run(&b, &["verify"]);
    assert!(
        stdout(&o).contains(&format!(
            "signed by keys {}, {} of root 3 (threshold 2, 2 root rotation(s) walked)",
            id(2),
            id(3)
        )),
        "{}",
        stdout(&o)
    );

    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = run(&b, &["install", "--root", s(&root), "--state-dir", s(&state)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let highest = std::fs::read_to_string(state.join("highest-root")).unwrap();
    assert!(highest.starts_with("3 ") && highest.len() == 2 + 64 + 1, "{highest:?}");
    let o = run(&b, &["status", "--state-dir", s(&state), "--json"]);
    let status = nxs_format::json::parse(stdout(&o).trim()).unwrap();
    let trust = status.get("trust").unwrap();
    assert_eq!(trust.get("root_version"), Some(&Value::Num("3".into())), "{}", stdout(&o));
    // The installed tool (this stub) checks the record through the chain.
    let c = run(&root.join("bin/nxs-survival"), &["check", "--root", s(&root)]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
}

#[test]
fn each_broken_rule_is_refused_naming_the_step_and_the_rule() {
    let t = tempfile::tempdir().unwrap();
    let b = good(&t.path().join("out"));
    let g = block_of(&b);
    assert_eq!(g.roots.len(), 3);
    let (r1, r2, r3) = (&g.roots[0], &g.roots[1], &g.roots[2]);
    let other_v2 = {
        let c = ceremony();
        let mut r = nxs_bundler::root::rotate(&r1.root, 1, &c.pubs[1..4], &[]).unwrap();
        r.threshold = 1;
        let text = r.to_text();
        resigned(&SignedRoot { text, root: r, signatures: vec![] }, &[0, 1, 3])
    };
    let mut long = vec![r1.clone(), resigned(&SignedRoot { ..r2.clone() }, &[0, 1, 3])];
    {
        // Roots 2 to 1026, each signed well, all 2 of k1 k2 k3.
        let mut r = r2.root.clone();
        for _ in 0..1024 {
            r.version += 1;
            let text = r.to_text();
            long.push(resigned(&SignedRoot { text, root: r.clone(), signatures: vec![] }, &[1, 2]));
        }
    }
    let cases: Vec<(&str, TrustBlock, String)> = vec![
        (
            "a chain missing root 2",
            TrustBlock { roots: vec![r1.clone(), r3.clone()], ..g.clone() },
            "root chain: root 3 follows root 1; each root's version must be exactly one more".into(),
        ),
        (
            "root 3 signed by one key of root 2",
            TrustBlock { roots: vec![r1.clone(), r2.clone(), resigned(r3, &[2, 4])], ..g.clone() },
            "root chain step 2 -> 3: root 3 has 1 valid signature from keys of root 2, which needs 2".into(),
        ),
        (
            "one key counted twice",
            TrustBlock { roots: vec![r1.clone(), r2.clone(), resigned(r3, &[2, 2, 4])], ..g.clone() },
            format!("signature 2 is by key {} again, and a key counts once", id(2)),
        ),
        (
            "a manifest signed by a revoked key",
            TrustBlock { manifest_signatures: manifest_signed(&b, &[1, 2]), ..g.clone() },
            format!("the manifest has 1 valid signature from keys of root 3, which needs 2; not counted: signature 1 is by key {}, which is revoked", id(1)),
        ),
        (
            "a manifest signed by a key of an older root only",
            TrustBlock { manifest_signatures: manifest_signed(&b, &[0, 3]), ..g.clone() },
            format!("signature 1 is by key {}, which root 3 does not list", id(0)),
        ),
        (
            "a chain of 1025 steps",
            TrustBlock { roots: long, ..g.clone() },
            "the chain has 1025 roots past root 1; at most 1024 are walked".into(),
        ),
        (
            "a version that repeats, well signed",
            TrustBlock { roots: vec![r1.clone(), r2.clone(), other_v2, r3.clone()], ..g.clone() },
            "root 2 follows root 2".into(),
        ),
    ];
    for (i, (what, block, want)) in cases.iter().enumerate() {
        let bad = with_block(&b, block, &t.path().join(format!("bad-{i}.run")));
        let o = run(&bad, &["verify"]);
        assert_eq!(code(&o), 3, "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(want.as_str()), "{what}: want `{want}` in: {}", stderr(&o));
        let (root, state) = (t.path().join(format!("r{i}")), t.path().join(format!("s{i}")));
        let o = run(&bad, &["install", "--root", s(&root), "--state-dir", s(&state)]);
        assert_eq!(code(&o), 3, "{what}: {}", stderr(&o));
        assert!(!root.exists() && !state.exists(), "{what}: nothing written");
    }
    // The good block, written back the same way, still verifies: the
    // refusals above are the rules, not the rewriting.
    let same = with_block(&b, &g, &t.path().join("same.run"));
    assert_eq!(code(&run(&same, &["verify"])), 0);
}

#[test]
fn a_machine_never_goes_back_to_an_older_root_unless_forced() {
    let c = ceremony();
    let t = tempfile::tempdir().unwrap();
    let v3 = good(&t.path().join("out3"));
    // Root 2's keys k1 k3 sign a bundle whose chain ends at root 2.
    let v2 = build(&[&c.roots[0], &c.roots[1]], &[1, 3], &t.path().join("out2"));
    assert_eq!(code(&run(&v2, &["verify"])), 0, "on its own, the root 2 bundle is good");
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let args = ["install", "--root", s(&root), "--state-dir", s(&state)];
    let o = run(&v3, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&v2, &args);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("root version 3 has been accepted here, and this bundle's root chain ends at version 2"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--allow-root-rollback"), "{}", stderr(&o));
    assert!(std::fs::read_to_string(state.join("highest-root")).unwrap().starts_with("3 "));
    let mut forced = args.to_vec();
    forced.push("--allow-root-rollback");
    let o = run(&v2, &forced);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(std::fs::read_to_string(state.join("highest-root")).unwrap().starts_with("3 "), "never lowered");
}

#[test]
fn stock_minisign_verifies_every_signature_by_the_format_md_recipe() {
    require_tool("minisign");
    let c = ceremony();
    let t = tempfile::tempdir().unwrap();
    let b = good(&t.path().join("out"));
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let o = format_md_recipe_with(&b, &work, &c.pubs[3]);
    assert_eq!(code(&o), 0, "recipe: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Signature and comment signature verified"), "{}", stdout(&o));
    // What the recipe cut out is the chain, byte for byte, and every
    // signature was checked (two on the manifest, 2 + 3 + 3 on the roots).
    for (i, r) in c.roots.iter().enumerate() {
        assert_eq!(std::fs::read(work.join(format!("root-{}", i + 1))).unwrap(), std::fs::read(r).unwrap());
    }
    let sigs = std::fs::read_dir(&work)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".minisig"))
        .count();
    assert_eq!(sigs, 2 + 2 + 3 + 3);
    // A key that signed nothing of it is refused by minisign too.
    let o = format_md_recipe_with(&b, &t.path().join("out"), &c.pubs[0]);
    assert_ne!(code(&o), 0, "k0 signed no manifest: {}", stderr(&o));
    // A root signature damaged: the recipe names it.
    let mut block = block_of(&b);
    let sig = &mut block.roots[1].signatures[0];
    *sig = sig.replace("trusted comment: nxs-root 2", "trusted comment: nxs-root 9");
    let bad = with_block(&b, &block, &t.path().join("bad.run"));
    let work2 = t.path().join("work2");
    std::fs::create_dir(&work2).unwrap();
    let o = format_md_recipe_with(&bad, &work2, &c.pubs[3]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("root-2.sig1.minisig: no key of the chain verifies it"), "{}", stderr(&o));
}

#[test]
fn verify_pubkey_takes_a_key_or_a_root_file() {
    let c = ceremony();
    let t = tempfile::tempdir().unwrap();
    let b = good(&t.path().join("out"));
    // A published key of root 3 checks the manifest's signature alone.
    let o = run(&b, &["verify", "--pubkey", s(&c.pubs[3])]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("signed by key {} given with --pubkey", id(3))), "{}", stdout(&o));
    // A key that signed no manifest is refused.
    let o = run(&b, &["verify", "--pubkey", s(&c.pubs[4])]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    // A root file given from outside: the chain is walked from it.
    let o = run(&b, &["verify", "--pubkey", s(&c.roots[1])]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("of root 3 (threshold 2, 1 root rotation(s) walked)"), "{}", stdout(&o));
}

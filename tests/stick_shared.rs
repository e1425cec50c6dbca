//! The stick's shared part (issue #17): the files of components a spec
//! marks `platform_independent` are stored once on a stick, in
//! `bundles/PRODUCT-VERSION.shared`, and every platform's bundle reads
//! them from there (format 6, docs/FORMAT.md "The shared part").

use nxs_tests::*;
use std::path::{Path, PathBuf};
use xtask::platform::Platform;
use xtask::task::stick::{stick, Stick, StickArgs, FAT32_PIECE};

/// Incompressible bytes, different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A spec whose payload is half platform-independent: each tier adds
/// 512 KiB that differ per platform and 512 KiB that every platform shares.
const HALF_SHARED: &str = r#"platforms = @PLATFORMS@
[product]
name = "half"
version = "1.0.0"
mtime = 1700000000
[trust]
keys = ["@TRUST@"]
[[component]]
name = "own-a"
source = "own/{target}/a"
install = "lib/own/a"
[[component]]
name = "own-b"
source = "own/{target}/b"
install = "lib/own/b"
[[component]]
name = "own-c"
source = "own/{target}/c"
install = "lib/own/c"
[[component]]
name = "common-a"
source = "common/a"
install = "share/common/a"
platform_independent = true
[[component]]
name = "common-b"
source = "common/b"
install = "share/common/b"
platform_independent = true
[[component]]
name = "common-c"
source = "common/c"
install = "share/common/c"
platform_independent = true
[[tier]]
name = "minimal"
components = ["own-a", "common-a"]
[[tier]]
name = "standard"
extends = "minimal"
components = ["own-b", "common-b"]
default = true
[[tier]]
name = "full"
extends = "standard"
components = ["own-c", "common-c"]
"#;

fn half_shared_spec(dir: &Path, triples: &[&str]) -> PathBuf {
    let list: Vec<String> = triples.iter().map(|t| format!("{t:?}")).collect();
    let text = HALF_SHARED
        .replace("@PLATFORMS@", &format!("[{}]", list.join(", ")))
        .replace("@TRUST@", test_key().1.to_str().unwrap());
    write(&dir.join("spec.toml"), text.as_bytes(), 0o644);
    for (i, part) in ["a", "b", "c"].iter().enumerate() {
        write(&dir.join("common").join(part).join("data.bin"), &noise(100 + i as u64, 512 << 10), 0o644);
        for (j, t) in triples.iter().enumerate() {
            let bytes = noise(1000 * (j as u64 + 1) + i as u64, 512 << 10);
            write(&dir.join("own").join(t).join(part).join("data.bin"), &bytes, 0o644);
        }
    }
    dir.join("spec.toml")
}

fn args(spec: &Path, out: PathBuf, sources: Vec<(String, PathBuf)>) -> StickArgs {
    StickArgs {
        manifest: spec.to_path_buf(),
        out,
        platforms: vec![],
        key: vec![test_key().0],
        password_file: None,
        sources,
        with_backups: None,
        parity: 10,
        piece: FAT32_PIECE,
    }
}

/// The per-tier bundles of `spec` for every platform, as downloads have them.
fn per_tier(spec: &Path, out: &Path, triples: &[&str], sources: &[(String, PathBuf)]) -> nxs_bundler::BuildReport {
    let req = nxs_bundler::BuildRequest {
        spec: spec.to_path_buf(),
        out_dir: out.to_path_buf(),
        platforms: vec![],
        tiers: vec![],
        multi_tier: false,
        shared: false,
        stubs: triples.iter().map(|t| (t.to_string(), stub_for(t))).collect(),
        sources: sources.to_vec(),
        keys: vec![test_key().0],
        key_password: None,
        dev: false,
        source_date_epoch: None,
        pack: nxs_bundler::PackOptions { progress: false, ..nxs_bundler::PackOptions::default() },
    };
    nxs_bundler::build(&req).unwrap()
}

fn without_parity(s: &Stick) -> u64 {
    s.bytes_under("") - s.bytes_under("parity/")
}

#[test]
fn a_half_platform_independent_stick_keeps_the_shared_half_once() {
    let platforms = Platform::all(&workspace()).unwrap();
    let triples: Vec<&str> = platforms.iter().map(|p| p.triple.as_str()).collect();
    let t = tempfile::tempdir().unwrap();
    let spec = half_shared_spec(&t.path().join("proj"), &triples);
    let s = stick(&workspace(), &args(&spec, t.path().join("stick"), vec![])).expect("stick");
    let separate = per_tier(&spec, &t.path().join("tiers"), &triples, &[]);
    assert_eq!(separate.bundles.len(), 15);
    let sum: u64 = separate.bundles.iter().map(|b| b.size).sum();
    let shared = s.files.iter().find(|(p, _)| p == "bundles/half-1.0.0.shared").expect("the shared part").1;
    let ratio = without_parity(&s) as f64 / sum as f64;
    eprintln!(
        "stick {} bytes without parity, {} with; shared part {shared}; 15 separate bundles {sum}: ratio {ratio:.3}",
        without_parity(&s),
        s.bytes_under("")
    );
    assert!(ratio <= 0.6, "the stick without parity is {ratio:.3} of the separate bundles");
    // The shared 1.5 MiB is there once: about its size, and in no bundle.
    assert!((3 << 19..(3 << 19) + (64 << 10)).contains(&shared), "shared part {shared} bytes");
    for p in &platforms {
        let name = format!("bundles/half-1.0.0-{}.run", p.triple);
        let size = s.files.iter().find(|(n, _)| *n == name).expect("a bundle").1;
        let full = separate.bundles.iter().find(|b| b.manifest.target == p.triple && b.manifest.tier == "full");
        let full = full.unwrap().size;
        assert!(size + shared - (32 << 10) < full && full < size + shared + (32 << 10), "{name}: {size}, full {full}");
    }

    // The x86_64 bundle, natively, and the aarch64 one, under qemu, install
    // every tier from the stick exactly as their per-tier bundles do.
    for (triple, runner) in [("x86_64-unknown-linux-musl", ""), ("aarch64-unknown-linux-musl", "qemu-aarch64")] {
        for tier in ["minimal", "full"] {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("root");
            let mut cmd = std::process::Command::new(s.dir.join("install"));
            cmd.args(["--platform", triple, "--tier", tier, "--quiet", "--root", root.to_str().unwrap()]);
            cmd.args(["--state-dir", d.path().join("state").to_str().unwrap()]);
            if !runner.is_empty() {
                require_tool(runner);
                cmd.env("NXS_RUNNER", runner);
            }
            let o = output(&mut cmd).unwrap();
            assert_eq!(code(&o), 0, "{triple} {tier}: {}", stderr(&o));
            let per = separate
                .bundles
                .iter()
                .find(|b| b.manifest.target == triple && b.manifest.tier == tier)
                .expect("a per-tier bundle");
            for e in &per.manifest.entries {
                if let nxs_format::EntryKind::File { sha256, .. } = e.kind {
                    let got = std::fs::read(root.join(e.path.as_str())).unwrap();
                    assert_eq!(self::sha(&got), sha256, "{triple} {tier}: {}", e.path);
                }
            }
        }
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// A stick's bundle needs its shared part: without it, it says which file
/// it needs and where it looked; `NXS_SHARED_DIR` points at it; a damaged
/// part is refused by frame and range, and nothing is installed.
#[test]
fn a_bundle_without_its_shared_part_says_what_it_needs_and_refuses_a_damaged_one() {
    let t = tempfile::tempdir().unwrap();
    let spec = half_shared_spec(&t.path().join("proj"), &[HOST]);
    let s = stick(&workspace(), &args(&spec, t.path().join("stick"), vec![])).expect("stick");
    let away = t.path().join("away");
    std::fs::create_dir_all(&away).unwrap();
    let bundle = away.join("b.run");
    std::fs::copy(s.dir.join(format!("bundles/half-1.0.0-{HOST}.run")), &bundle).unwrap();
    let o = run(&bundle, &["verify"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("are in the shared part `half-1.0.0.shared`") && e.contains(away.to_str().unwrap()), "{e}");
    assert!(e.contains("NXS_SHARED_DIR"), "{e}");
    let with_dir = |dir: &Path, args: &[&str]| {
        output(std::process::Command::new(&bundle).args(args).env("NXS_SHARED_DIR", dir)).unwrap()
    };
    let o = with_dir(&s.dir.join("bundles"), &["verify", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("\"shared\":\"half-1.0.0.shared\""), "{}", stdout(&o));
    // docs/FORMAT.md's recipe, by hand with stock tools: every frame
    // checked, from the bundle or the part, and tar lists every entry.
    let shared = s.dir.join("bundles/half-1.0.0.shared");
    let work = t.path().join("by-hand");
    std::fs::create_dir_all(&work).unwrap();
    let o = format_md_recipe_envs(&work, &[("BUNDLE", &bundle), ("PUBKEY", &test_key().1), ("SHARED", &shared)]);
    assert_eq!(code(&o), 0, "recipe: {}{}", stdout(&o), stderr(&o));
    let m = nxs_format::Manifest::parse(&std::fs::read(work.join("manifest.txt")).unwrap()).unwrap();
    assert!(m.shared.is_some() && m.frames.iter().any(|f| f.shared));
    let want: Vec<String> = m.entries.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(recipe_listing(&o), want);
    let o = format_md_recipe_envs(&work, &[("BUNDLE", &bundle), ("PUBKEY", &test_key().1)]);
    assert_ne!(code(&o), 0, "the recipe needs the part");
    assert!(stderr(&o).contains("this bundle needs its shared part"), "{}", stderr(&o));
    // One flipped byte in a copy of the part.
    let part = away.join("part");
    std::fs::create_dir_all(&part).unwrap();
    let mut bytes = std::fs::read(s.dir.join("bundles/half-1.0.0.shared")).unwrap();
    bytes[700_000] ^= 0x10;
    write(&part.join("half-1.0.0.shared"), &bytes, 0o644);
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let install = ["install", "--tier", "full", "--quiet", "--root", root.to_str().unwrap()];
    let o = with_dir(&part, &[&install[..], &["--state-dir", state.to_str().unwrap()]].concat());
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("of the shared part half-1.0.0.shared"), "{}", stderr(&o));
    assert!(!root.join(".nxs-bundle").exists(), "no install record: nothing was installed");
    // A part of the wrong length is refused before anything is read.
    bytes.pop();
    write(&part.join("half-1.0.0.shared"), &bytes, 0o644);
    let o = with_dir(&part, &["verify"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("the shared part is"), "{}", stderr(&o));

    // On the stick, the part damaged and its parity gone: `stick verify`
    // still locates the damage, by the frame the signed manifest hashes.
    let on_stick = s.dir.join("bundles/half-1.0.0.shared");
    let mut bytes = std::fs::read(&on_stick).unwrap();
    bytes[700_000] ^= 0x10;
    std::fs::write(&on_stick, &bytes).unwrap();
    std::fs::remove_file(s.dir.join("parity/bundles/half-1.0.0.shared.nxspar")).unwrap();
    let (_, m) = read_manifest(&s.dir.join(format!("bundles/half-1.0.0-{HOST}.run")));
    let mut at = 0;
    let mut hit = None;
    for (k, f) in m.frames.iter().filter(|f| f.shared).enumerate() {
        if (at..at + f.compressed).contains(&700_000) {
            hit = Some((k, at, at + f.compressed));
        }
        at += f.compressed;
    }
    let (k, a, b) = hit.expect("a shared frame holds byte 700000");
    let o = output(std::process::Command::new(s.dir.join("install")).args(["stick", "verify", "--json"])).unwrap();
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    let want = format!(
        "{{\"path\":\"bundles/half-1.0.0.shared\",\"state\":\"damaged\",\"ranges\":[[{a},{b}]],\"repairable\":false,"
    );
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("\"regions\":[\"shared frame {k}\"]")), "{}", stdout(&o));
}

/// The example spec (manifests/survival.toml: 5 platforms, 3 tiers, its
/// `config`, `service` and `docs` platform-independent): its stick is no
/// larger than the five largest-tier bundles plus the parity. nxs-backup is
/// built for each platform; PyPI ships the Tailscale client for x86_64
/// only, so its real programs stand in, by size, for the other platforms'.
#[test]
fn the_example_spec_stick_is_no_larger_than_its_five_full_bundles_and_the_parity() {
    let root = workspace();
    let platforms = Platform::all(&root).unwrap();
    let triples: Vec<&str> = platforms.iter().map(|p| p.triple.as_str()).collect();
    let t = tempfile::tempdir().unwrap();
    let manifests = root.join("manifests");
    let text = std::fs::read_to_string(manifests.join("survival.toml")).unwrap();
    let text = text
        .replace("source = \"", &format!("source = \"{}/", manifests.display()))
        .replace("\"../keys/release.pub\"", &format!("{:?}", test_key().1));
    let spec = t.path().join("survival.toml");
    write(&spec, text.as_bytes(), 0o644);
    let client = xtask::tailscale::real_client(&root).unwrap();
    for triple in &triples {
        for name in ["tailscale", "tailscaled"] {
            let to = t.path().join("tailscale").join(triple).join(name);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(client.join(name), &to).unwrap();
        }
    }
    for p in &platforms {
        xtask::tool::build_backup(&root, p, &[], true).expect("nxs-backup build");
    }
    let sources = vec![
        ("tailscale".to_string(), t.path().join("tailscale/{target}")),
        (xtask::tool::COMPONENT.to_string(), xtask::tool::backup_source(&root)),
    ];
    let s = stick(&root, &args(&spec, t.path().join("stick"), sources.clone())).expect("stick");
    let separate = per_tier(&spec, &t.path().join("tiers"), &triples, &sources);
    let full: u64 = separate.bundles.iter().filter(|b| b.manifest.tier == "full").map(|b| b.size).sum();
    let all: u64 = separate.bundles.iter().map(|b| b.size).sum();
    let shared = s.files.iter().find(|(p, _)| p == "bundles/nxs-survival-1.4.0.shared").expect("the shared part").1;
    let parity = s.bytes_under("parity/");
    eprintln!(
        "example stick {} bytes: {} without parity ({} in bundles/, shared part {shared}), parity {parity}; \
         5 full-tier bundles {full}, all 15 bundles {all}",
        s.bytes_under(""),
        without_parity(&s),
        s.bytes_under("bundles/"),
    );
    assert!(s.bytes_under("") <= full + parity, "the stick is larger than the 5 full bundles and its parity");
}

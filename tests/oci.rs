//! Fleets (issue #18): every tier's bundles for every platform as an OCI
//! image layout, carried by stock `skopeo` through Debian's
//! `docker-registry` (the distribution registry), which runs on loopback in
//! a network namespace of its own.

use nxs_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::platform::Platform;

fn publish(proj: &Project, out: PathBuf) -> nxs_bundler::oci::Layout {
    let build = xtask::task::BundleArgs {
        manifest: proj.spec.clone(),
        platforms: vec![],
        tiers: vec![],
        multi_tier: false,
        out,
        key: vec![test_key().0],
        password_file: None,
        sources: vec![],
        dry_run: false,
    };
    let a = xtask::task::publish::PublishArgs { build, tag: Some("stable".into()) };
    xtask::task::publish::publish(&workspace(), &a).expect("publish")
}

fn all_platforms() -> Project {
    let platforms = Platform::all(&workspace()).unwrap();
    let triples: Vec<&str> = platforms.iter().map(|p| p.triple.as_str()).collect();
    Project::for_platforms(None, &triples)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The blob a descriptor names, in layout `dir`.
fn blob(dir: &Path, d: &Value) -> PathBuf {
    let digest = d["digest"].as_str().unwrap();
    dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// The descriptor index.json gives tag `tag`.
fn tagged(dir: &Path, tag: &str) -> Value {
    let index = json(&dir.join("index.json"));
    let found = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag));
    found.unwrap_or_else(|| panic!("no tag {tag} in {index}")).clone()
}

#[test]
fn publishing_twice_gives_byte_identical_layouts_and_a_tag_per_tier() {
    let proj = all_platforms();
    let t = tempfile::tempdir().unwrap();
    let a = publish(&proj, t.path().join("a"));
    let b = publish(&proj, t.path().join("b"));
    assert_eq!(snapshot(&a.dir), snapshot(&b.dir), "the same inputs give the same layout, byte for byte");
    let tags: Vec<&str> = a.tags.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["2.0.1-full", "2.0.1-minimal", "stable"]);
    assert_eq!(a.tags[0].1, a.tags[2].1, "`stable` names the default tier, full");
    assert_eq!(json(&a.dir.join("oci-layout")), serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    // Every blob is named by its sha256.
    for e in std::fs::read_dir(a.dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(sha256(&std::fs::read(&p).unwrap()), p.file_name().unwrap().to_str().unwrap());
    }
    // Each tier's index: one manifest per platform, as OCI names it, each
    // with the bundle and its signature as layers and a config saying what
    // the bundle is.
    let index = json(&blob(&a.dir, &tagged(&a.dir, "2.0.1-minimal")));
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let v = p["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default();
            format!("{}/{}{v}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap())
        })
        .collect();
    assert_eq!(platforms, ["linux/arm64", "linux/arm/v7", "linux/386", "linux/riscv64", "linux/amd64"]);
    let m = json(&blob(&a.dir, &index["manifests"][4]));
    assert_eq!(m["artifactType"], nxs_bundler::oci::ARTIFACT_TYPE);
    let config = json(&blob(&a.dir, &m["config"]));
    assert_eq!((config["tier"].as_str(), config["target"].as_str()), (Some("minimal"), Some(HOST)));
    assert_eq!(m["layers"][0]["mediaType"], nxs_bundler::oci::BUNDLE_TYPE);
    assert_eq!(m["layers"][1]["mediaType"], nxs_bundler::oci::SIGNATURE_TYPE);
    let title = m["layers"][0]["annotations"]["org.opencontainers.image.title"].as_str().unwrap();
    assert_eq!(title, format!("demo-2.0.1-minimal-{HOST}.run"));
}

/// Debian's docker-registry on 127.0.0.1:5000 of `ns`, its storage under `dir`.
fn registry(ns: &xtask::double::NetNs, dir: &Path) -> std::process::Child {
    let config = dir.join("config.yml");
    let storage = dir.join("storage");
    let text = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
        storage.display()
    );
    write(&config, text.as_bytes(), 0o644);
    ns.cmd("docker-registry").arg("serve").arg(&config).spawn().expect("docker-registry")
}

fn skopeo(ns: &xtask::double::NetNs, args: &[&str]) -> std::process::Output {
    output(ns.cmd("skopeo").args(args)).unwrap()
}

#[test]
fn skopeo_carries_the_layout_through_docker_registry_and_back_with_the_same_digests() {
    require_tool("skopeo");
    require_tool("docker-registry");
    let proj = all_platforms();
    let t = tempfile::tempdir().unwrap();
    let layout = publish(&proj, t.path().join("layout"));
    let ns = xtask::double::NetNs::new().expect("a network namespace (ip netns, as root)");
    let mut reg = registry(&ns, t.path());
    let src = format!("oci:{}:2.0.1-full", layout.dir.display());
    let remote = "docker://127.0.0.1:5000/demo:2.0.1-full";
    // The registry takes a moment to listen: the push is tried again.
    let mut pushed = None;
    for _ in 0..50 {
        let o = skopeo(&ns, &["copy", "--all", "--dest-tls-verify=false", &src, remote]);
        if code(&o) == 0 {
            pushed = Some(o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(pushed.is_some(), "skopeo copy to the registry never succeeded");
    let o = skopeo(&ns, &["inspect", "--raw", "--tls-verify=false", remote]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let index: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["arm64", "arm", "386", "riscv64", "amd64"], "all five platforms");

    // Back into a fresh layout: the same digests, blob for blob.
    let back = t.path().join("back");
    let o = skopeo(
        &ns,
        &["copy", "--all", "--src-tls-verify=false", remote, &format!("oci:{}:2.0.1-full", back.display())],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    reg.kill().unwrap();
    reg.wait().unwrap();
    assert_eq!(tagged(&back, "2.0.1-full")["digest"], tagged(&layout.dir, "2.0.1-full")["digest"]);
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let full = json(&blob(&layout.dir, &tagged(&layout.dir, "2.0.1-full")));
    let mut want = vec![tagged(&layout.dir, "2.0.1-full")["digest"].as_str().unwrap()[7..].to_string()];
    for m in full["manifests"].as_array().unwrap() {
        want.push(m["digest"].as_str().unwrap()[7..].to_string());
        let man = json(&blob(&layout.dir, m));
        for d in std::iter::once(&man["config"]).chain(man["layers"].as_array().unwrap()) {
            want.push(d["digest"].as_str().unwrap()[7..].to_string());
        }
    }
    want.sort();
    assert_eq!(names(&back), want, "the full tier's blobs, and only them, with the same digests");

    // The pulled x86_64 bundle verifies with stock minisign, and with its stub.
    let host = full["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "amd64").unwrap();
    let man = json(&blob(&back, host));
    let pulled = t.path().join("pulled.run");
    std::fs::copy(blob(&back, &man["layers"][0]), &pulled).unwrap();
    std::fs::set_permissions(&pulled, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sig = blob(&back, &man["layers"][1]);
    let o = output(
        Command::new("minisign").arg("-V").arg("-p").arg(test_key().1).arg("-m").arg(&pulled).arg("-x").arg(&sig),
    )
    .unwrap();
    assert_eq!(code(&o), 0, "minisign: {}{}", stdout(&o), stderr(&o));
    let o = run(&pulled, &["verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

//! The example spec, manifests/survival.toml, is complete: it parses, every
//! tier plans with every source present, tiers are cumulative, and it holds
//! no secret. The Tailscale client comes from outside the repository
//! (placeholder files stand in for it here: the plan only needs files).

use nxs_bundler::Spec;
use nxs_tests::*;
use std::collections::BTreeMap;

#[test]
fn example_spec_plans_every_tier() {
    let mut spec = Spec::load(&workspace().join("manifests/survival.toml")).unwrap();
    let stubs: BTreeMap<String, std::path::PathBuf> =
        spec.platforms.iter().map(|p| (p.clone(), stub().to_path_buf())).collect();
    // The real Tailscale client is not in the repository, and nxs-backup is
    // built by `cargo xtask bundle` for each platform: without them, the
    // plan stops and says where each comes from.
    let tailscale = workspace().join("manifests/tailscale/x86_64-unknown-linux-musl/tailscale");
    let backup = workspace().join("manifests/backup/x86_64-unknown-linux-musl/nxs-backup");
    if !tailscale.exists() && !backup.exists() {
        let e = nxs_bundler::plan::plan(&spec, &[], &[], &stubs, 0).unwrap_err();
        assert!(format!("{e:#}").contains("manifests/backup"), "{e:#}");
        spec.override_source(xtask::tool::COMPONENT, stub()).unwrap();
        let e = nxs_bundler::plan::plan(&spec, &[], &[], &stubs, 0).unwrap_err();
        assert!(format!("{e:#}").contains("manifests/tailscale"), "{e:#}");
    }
    // Planning needs only files in the client's place.
    let client = tempfile::tempdir().unwrap();
    for name in ["tailscale", "tailscaled"] {
        write(&client.path().join(name), b"#!/bin/sh\n", 0o755);
    }
    spec.override_source("tailscale", client.path()).unwrap();
    // Planning needs only a file in nxs-backup's place.
    spec.override_source(xtask::tool::COMPONENT, stub()).unwrap();
    assert_eq!(spec.tiers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["minimal", "standard", "full"]);
    let plan = nxs_bundler::plan::plan(&spec, &[], &[], &stubs, 0).unwrap();
    let sets: Vec<Vec<String>> =
        plan.bundles.iter().map(|b| b.entries.iter().map(|e| e.path.to_string()).collect()).collect();
    assert!(sets.len() >= 3);
    assert!(sets[0].iter().all(|p| sets[1].contains(p)), "minimal is inside standard");
    assert!(sets[1].iter().all(|p| sets[2].contains(p)), "standard is inside full");
    assert!(sets[0].len() < sets[1].len() && sets[1].len() < sets[2].len());
    let hs = spec.headscale.as_ref().expect("headscale section");
    assert!(hs.value.login_server.starts_with("https://"));
    assert!(sets[0].contains(&hs.value.ca_cert.as_ref().unwrap().to_string()), "the CA file is in every tier");
    for program in [&hs.client().tailscale, &hs.client().tailscaled] {
        assert!(sets[0].contains(&program.to_string()), "the Tailscale client is in every tier");
    }
    for b in &plan.bundles {
        for e in &b.entries {
            if let Some(src) = &e.source {
                assert!(src.is_file(), "{} is missing", src.display());
            }
        }
    }
}

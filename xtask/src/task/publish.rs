//! `cargo xtask publish --oci-layout DIR`: every tier's bundles for every
//! platform, built as `cargo xtask bundle` builds them, then written as an
//! OCI image layout ([`nxs_bundler::oci`], docs/FORMAT.md "OCI image
//! layout") for `skopeo copy` to carry to a registry or a mirror.

use super::bundle::{bundle, under, BundleArgs};
use anyhow::{Context, Result};
use nxs_bundler::oci::Layout;

/// `build.out` is the layout to write; `build.tiers` must be empty.
pub struct PublishArgs {
    pub build: BundleArgs,
    /// One more tag, naming the spec's default tier.
    pub tag: Option<String>,
}

pub fn publish(root: &std::path::Path, a: &PublishArgs) -> Result<Layout> {
    let layout = under(root, &a.build.out);
    let spec = nxs_bundler::Spec::load(&under(root, &a.build.manifest))?;
    let parent = layout.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    // The bundles are built beside the layout, then copied into its blobs.
    let work = tempfile::Builder::new().prefix(".nxs-publish-").tempdir_in(parent)?;
    let args = BundleArgs { out: work.path().to_path_buf(), tiers: vec![], ..a.build.clone() };
    let report = bundle(root, &args)?.context("publish never makes a dry run")?;
    let extra = a.tag.as_deref().map(|t| (t, spec.default_tier.as_str()));
    let written = nxs_bundler::oci::write_layout(&layout, &report.bundles, extra)?;
    eprintln!("wrote the OCI image layout {} ({} tags)", written.dir.display(), written.tags.len());
    Ok(written)
}

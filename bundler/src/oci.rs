//! Bundles as an OCI image layout (docs/FORMAT.md, "OCI image layout"):
//! the form registries (distribution, Harbor, zot) and `skopeo copy`
//! carry, so a fleet's bundles ride the mirrors a site already runs.
//!
//! One image index per tier, tagged `<version>-<tier>` (the layout's
//! `org.opencontainers.image.ref.name`, image-layout.md "index.json
//! file"), with one manifest per platform (image-index.md: `platform`,
//! `architecture` as Go's GOARCH names it, `variant` for 32-bit ARM). A
//! manifest's config describes the bundle; its two layers are the `.run`
//! file and its detached minisign signature (manifest.md, "Guidelines for
//! Artifact Usage": our own `artifactType` and media types). Nothing in it
//! depends on the time or the machine, so the same bundles give the same
//! digests.

use crate::pack::Packed;
use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, Descriptor, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The manifest's `artifactType`: an nxs-survival bundle.
pub const ARTIFACT_TYPE: &str = "application/vnd.nxs.survival.bundle.v1";
/// The config blob: what the bundle is (JSON, [`config`]).
pub const CONFIG_TYPE: &str = "application/vnd.nxs.survival.bundle.config.v1+json";
/// The first layer: the `.run` file, byte for byte.
pub const BUNDLE_TYPE: &str = "application/vnd.nxs.survival.bundle.run.v1";
/// The second layer: the `.run` file's detached minisign signature.
pub const SIGNATURE_TYPE: &str = "application/vnd.nxs.survival.bundle.minisig.v1";
/// The layout's tag annotation (image-layout.md, "index.json file").
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// A layer's file name (annotations.md).
pub const TITLE: &str = "org.opencontainers.image.title";

/// The OCI platform of a target triple: `architecture` (Go's GOARCH) and
/// `variant`, or `None` for an architecture we do not publish.
pub fn oci_platform(triple: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match triple.split('-').next()? {
        "x86_64" => ("amd64", None),
        "i686" | "i586" => ("386", None),
        "aarch64" => ("arm64", None),
        "armv7" => ("arm", Some("v7")),
        "riscv64gc" | "riscv64" => ("riscv64", None),
        _ => return None,
    })
}

/// An OCI tag (distribution-spec's grammar): a letter, digit or `_`, then
/// up to 127 of those, `.` and `-`.
pub fn tag_ok(tag: &str) -> bool {
    let b = tag.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A bundle's config blob: sorted keys, no whitespace.
pub fn config(b: &Packed) -> Vec<u8> {
    let m = &b.manifest;
    let fields = BTreeMap::from([
        ("bundle", serde_json::Value::from(m.bundle_id())),
        ("dev", m.dev.into()),
        ("format", m.format.into()),
        ("payload_sha256", nxs_format::hex::encode(&m.payload.sha256).into()),
        ("product", m.product.clone().into()),
        ("target", m.target.clone().into()),
        ("tier", m.tier.clone().into()),
        ("version", m.version.as_str().into()),
    ]);
    serde_json::to_vec(&fields).expect("plain values")
}

/// What [`write_layout`] wrote: each tag and the digest it names.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub tags: Vec<(String, String)>,
}

/// The layout being written: its `blobs/sha256`.
struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    fn descriptor(media: &str, len: u64, sha256: &[u8; 32]) -> Result<Descriptor> {
        let digest = oci_spec::image::Digest::from_str(&format!("sha256:{}", nxs_format::hex::encode(sha256)))?;
        Ok(Descriptor::new(MediaType::from(media), len, digest))
    }

    /// Stores `bytes`, named by their digest.
    fn put(&self, media: &str, bytes: &[u8]) -> Result<Descriptor> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let path = self.dir.join(nxs_format::hex::encode(&sha256));
        crate::fsutil::write_atomic(&path, bytes, 0o644)?;
        Self::descriptor(media, bytes.len() as u64, &sha256)
    }

    /// Copies the file `from`, which must hash to `sha256`, into a blob.
    fn copy(&self, media: &str, from: &Path, sha256: &[u8; 32]) -> Result<Descriptor> {
        let mut src = std::fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let (mut h, mut len, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = src.read(&mut buf).with_context(|| format!("cannot read {}", from.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
            len += n as u64;
        }
        if <[u8; 32]>::from(h.finalize()) != *sha256 {
            bail!("{} changed since it was built: its sha256 is not the one its build wrote", from.display());
        }
        crate::fsutil::finish_atomic(tmp, &self.dir.join(nxs_format::hex::encode(sha256)), 0o644)?;
        Self::descriptor(media, len, sha256)
    }

    fn put_json(&self, media: &str, value: &impl serde::Serialize) -> Result<Descriptor> {
        self.put(media, &serde_json::to_vec(value)?)
    }
}

fn titled(mut d: Descriptor, title: &str) -> Descriptor {
    d.set_annotations(Some(HashMap::from([(TITLE.to_string(), title.to_string())])));
    d
}

/// One platform's manifest of bundle `b`, as the descriptor an index lists.
fn platform_manifest(blobs: &Blobs, b: &Packed) -> Result<Descriptor> {
    let name = |p: &Path| p.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let sig =
        std::fs::read(&b.signature_path).with_context(|| format!("cannot read {}", b.signature_path.display()))?;
    let layers = vec![
        titled(blobs.copy(BUNDLE_TYPE, &b.path, &b.sha256)?, &name(&b.path)),
        titled(blobs.put(SIGNATURE_TYPE, &sig)?, &name(&b.signature_path)),
    ];
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(ARTIFACT_TYPE))
        .config(blobs.put(CONFIG_TYPE, &config(b))?)
        .layers(layers)
        .build()?;
    let mut d = blobs.put_json("application/vnd.oci.image.manifest.v1+json", &manifest)?;
    let target = &b.manifest.target;
    let (arch, variant) = oci_platform(target).with_context(|| format!("no OCI architecture is known for {target}"))?;
    let mut p = PlatformBuilder::default().os(Os::Linux).architecture(Arch::from(arch));
    if let Some(v) = variant {
        p = p.variant(v.to_string());
    }
    d.set_platform(Some(p.build()?));
    Ok(d)
}

/// Writes `bundles` (per-tier bundles of one version, any platforms) as an
/// OCI image layout at `out`, which must not exist or be empty: an index
/// per tier, tagged `<version>-<tier>`, and `extra` (a tag and the tier it
/// names) too. Built under a temporary name beside `out`, then renamed.
pub fn write_layout(out: &Path, bundles: &[Packed], extra: Option<(&str, &str)>) -> Result<Layout> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty\n  help: name a new or empty directory", out.display());
    }
    let name = out.file_name().context("the layout's path names no directory")?.to_string_lossy().into_owned();
    let work = out.with_file_name(format!(".{name}.nxs-oci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let blobs = Blobs { dir: work.join("blobs/sha256") };
    std::fs::create_dir_all(&blobs.dir).with_context(|| format!("cannot create {}", blobs.dir.display()))?;
    let written = fill(&work, &blobs, bundles, extra);
    let tags = match written {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("cannot replace the empty {}", out.display()))?;
    }
    std::fs::rename(&work, out).with_context(|| format!("cannot rename {} to {}", work.display(), out.display()))?;
    nxs_sys::fs::fsync_dir(nxs_sys::fs::parent(out))?;
    Ok(Layout { dir: out.to_path_buf(), tags })
}

fn fill(work: &Path, blobs: &Blobs, bundles: &[Packed], extra: Option<(&str, &str)>) -> Result<Vec<(String, String)>> {
    let mut by_tier: BTreeMap<&str, Vec<&Packed>> = BTreeMap::new();
    for b in bundles {
        if b.manifest.tiers.is_some() {
            bail!("{}: a stick's bundle holds every tier; publish per-tier bundles", b.path.display());
        }
        by_tier.entry(&b.manifest.tier).or_default().push(b);
    }
    if let Some((tag, _)) = extra.filter(|(t, _)| !tag_ok(t)) {
        bail!("--tag {tag}: an OCI tag is 1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -");
    }
    let mut refs: Vec<(String, Descriptor)> = Vec::new();
    let mut extra_done = false;
    for (tier, mut list) in by_tier {
        list.sort_by(|a, b| a.manifest.target.cmp(&b.manifest.target));
        let version = list[0].manifest.version.as_str();
        let manifests = list.iter().map(|b| platform_manifest(blobs, b)).collect::<Result<Vec<_>>>()?;
        let index: ImageIndex = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()?;
        let d = blobs.put_json("application/vnd.oci.image.index.v1+json", &index)?;
        refs.push((format!("{version}-{tier}"), d.clone()));
        if let Some((tag, _)) = extra.filter(|(_, t)| *t == tier) {
            refs.push((tag.to_string(), d));
            extra_done = true;
        }
    }
    if let Some((tag, tier)) = extra.filter(|_| !extra_done) {
        bail!("--tag {tag} names tier `{tier}`, and no bundle of that tier was given");
    }
    let versions: std::collections::BTreeSet<&str> = bundles.iter().map(|b| b.manifest.version.as_str()).collect();
    if versions.len() > 1 {
        bail!(
            "the bundles are of several versions ({}): a layout holds one",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = refs.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!("the tag {} would name two indexes\n  help: give --tag a name that is not VERSION-TIER", w[0].0);
    }
    let tags = refs.iter().map(|(t, d)| (t.clone(), d.digest().to_string())).collect();
    let top = refs
        .into_iter()
        .map(|(tag, mut d)| {
            d.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), tag)])));
            d
        })
        .collect::<Vec<_>>();
    let index: ImageIndex =
        ImageIndexBuilder::default().schema_version(2u32).media_type(MediaType::ImageIndex).manifests(top).build()?;
    crate::fsutil::write_atomic(&work.join("index.json"), &serde_json::to_vec(&index)?, 0o644)?;
    crate::fsutil::write_atomic(&work.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_platforms() {
        for ok in ["1.4.0-standard", "stable", "_x", "A.b-9"] {
            assert!(tag_ok(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "é", &"x".repeat(129)] {
            assert!(!tag_ok(bad), "{bad}");
        }
        assert_eq!(oci_platform("armv7-unknown-linux-musleabihf"), Some(("arm", Some("v7"))));
        assert_eq!(oci_platform("i686-unknown-linux-musl"), Some(("386", None)));
        assert_eq!(oci_platform("mips64-unknown-linux-musl"), None);
    }
}

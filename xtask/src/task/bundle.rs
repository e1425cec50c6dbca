//! `cargo xtask bundle`: the release build, a static stub per platform,
//! every tier, signed.

use crate::platform::Platform;
use anyhow::{Context, Result};
use nxs_bundler::sign::SigningKey;
use nxs_bundler::{BuildRequest, PackOptions, Spec};
use nxs_format::trust::Root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct BundleArgs {
    pub manifest: PathBuf,
    pub platforms: Vec<String>,
    pub tiers: Vec<String>,
    /// One bundle per platform holding every tier, the platform-independent
    /// files in one shared part beside them: a stick's.
    pub multi_tier: bool,
    pub out: PathBuf,
    /// Empty: the development key.
    pub key: Vec<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub sources: Vec<(String, PathBuf)>,
    pub dry_run: bool,
}

/// `p`, taken from the workspace root `root` when relative.
pub(crate) fn under(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// The key password in `--password-file`, if one is given.
pub(crate) fn read_password(root: &Path, file: Option<&Path>) -> Result<Option<String>> {
    file.map(|f| {
        let text = std::fs::read_to_string(under(root, f)).with_context(|| format!("cannot read {}", f.display()))?;
        Ok(text.trim_end().to_string())
    })
    .transpose()
}

/// Builds the bundles; `None` for a dry run.
pub fn bundle(root: &Path, a: &BundleArgs) -> Result<Option<nxs_bundler::BuildReport>> {
    let abs = |p: &Path| under(root, p);
    let spec = Spec::load(&abs(&a.manifest))?;
    let (keys, dev) =
        if a.key.is_empty() { (vec![dev_key(root)?], true) } else { (a.key.iter().map(|k| abs(k)).collect(), false) };
    let password = read_password(root, a.password_file.as_deref())?;
    let dev_public = if dev { Some(SigningKey::load(&keys[0], password.clone())?.public()) } else { None };
    let (trust, warnings) = nxs_bundler::trust_plan(&spec, dev_public.as_ref())?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // Refuse missing or short signers before any stub is built.
    nxs_bundler::signing_keys(&trust, &keys, password.as_deref(), &spec.file)?;
    let platforms: Vec<String> = if a.platforms.is_empty() { spec.platforms.clone() } else { a.platforms.clone() };
    // A dry run builds nothing: an empty file stands in for each program
    // it would build (the stub, nxs-backup), so the plan can still be made.
    let placeholder = tempfile::NamedTempFile::new()?;
    let stand_in = a.dry_run.then(|| placeholder.path());
    let stubs = build_stubs(root, &platforms, &trust.anchor, stand_in)?;
    // The spec's `backup` component is the nxs-backup program, built here
    // for each platform unless --source backup=... names another.
    let mut sources: Vec<(String, PathBuf)> = a.sources.iter().map(|(n, p)| (n.clone(), abs(p))).collect();
    if spec.component(crate::tool::COMPONENT).is_some() && !sources.iter().any(|(n, _)| n == crate::tool::COMPONENT) {
        if !a.dry_run {
            for triple in &platforms {
                eprintln!("building nxs-backup for {triple}");
                let bin = crate::tool::build_backup(root, &Platform::load(root, triple)?, &[], true)?;
                eprintln!("  nxs-backup {triple}: {} bytes", std::fs::metadata(&bin)?.len());
            }
        }
        let built = stand_in.map(Path::to_path_buf).unwrap_or_else(|| crate::tool::backup_source(root));
        sources.push((crate::tool::COMPONENT.to_string(), built));
    }
    let req = BuildRequest {
        spec: abs(&a.manifest),
        out_dir: abs(&a.out),
        platforms,
        tiers: a.tiers.clone(),
        multi_tier: a.multi_tier,
        shared: a.multi_tier,
        stubs,
        sources,
        keys,
        key_password: password,
        dev,
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        pack: PackOptions::default(),
    };
    if a.dry_run {
        let (_, plan) = nxs_bundler::plan_build(&req)?;
        for b in &plan.bundles {
            println!("{} ({} entries)", b.file_name, b.entries.len());
        }
        println!("dry run: nothing was built or written (an empty file stood in for each stub and nxs-backup)");
        return Ok(None);
    }
    let report = nxs_bundler::build(&req)?;
    for b in &report.bundles {
        println!("{}", b.path.display());
    }
    println!("{}", report.sums.display());
    Ok(Some(report))
}

/// The development key, said loudly.
fn dev_key(root: &Path) -> Result<PathBuf> {
    eprintln!("==================================================================");
    eprintln!(" WARNING: no --key given: signing with the DEVELOPMENT key under");
    eprintln!(" target/dev-key/. These bundles are marked dev and are not for");
    eprintln!(" release. Pass --key keys/release.key for a release build.");
    eprintln!("==================================================================");
    crate::devkey::ensure(root)
}

/// The stub of each platform, built with `trust` (placeholders in a dry run).
fn build_stubs(
    root: &Path,
    platforms: &[String],
    trust: &Root,
    stand_in: Option<&Path>,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut stubs = BTreeMap::new();
    for triple in platforms {
        let p = Platform::load(root, triple)?;
        let stub = if let Some(s) = stand_in {
            s.to_path_buf()
        } else {
            eprintln!("building the stub for {triple} ({})", p.name);
            let s = crate::stub::build(root, &p, trust, true)?;
            let size = std::fs::metadata(&s)?.len();
            eprintln!("  stub {}: {} bytes ({:.1} KiB; budget 1 MiB)", triple, size, size as f64 / 1024.0);
            s
        };
        stubs.insert(triple.clone(), stub);
    }
    Ok(stubs)
}

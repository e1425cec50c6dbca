//! nxs-bundler: turns a bundle spec, a built stub per platform and a signing
//! key into signed, reproducible `.run` bundles, plus `SHA256SUMS`.
//!
//! The flow is plan, then run: [`spec::Spec::load`] checks the spec,
//! [`plan::plan`] lists every bundle and entry, and [`pack::pack`] writes
//! each bundle. Nothing is written before the whole plan is known good.

pub mod fsutil;
pub mod pack;
pub mod plan;
pub mod sign;
pub mod spec;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use sign::{SigningKey, TrustedKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use pack::{PackOptions, Packed};
pub use plan::{BundlePlan, Plan};
pub use spec::{Spec, SpecError};

/// The trust root a stub for `spec` must embed.
///
/// In a release build every key file the spec lists must exist. In a
/// development build (`dev_key` given) missing files are skipped with a
/// warning and the development key is added, so the example spec builds on a
/// fresh clone; such bundles are marked `dev` in their manifest.
///
/// Returns the keys, and a warning for each key file skipped.
pub fn trust_root(spec: &Spec, dev_key: Option<&TrustedKey>) -> Result<(Vec<TrustedKey>, Vec<String>)> {
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    for (path, (line, col)) in &spec.trust_keys {
        match TrustedKey::from_file(path) {
            Ok(k) => keys.push(k),
            Err(_) if dev_key.is_some() && !path.exists() => {
                warnings.push(format!("{}:{line}:{col}: trust root key {} is missing; this development build goes on without it", spec.file.display(), path.display()));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "{}:{line}:{col}: trust root key {} cannot be used\n  help: create it with `nxs-bundle keygen {}` or fix the path",
                    spec.file.display(),
                    path.display(),
                    path.with_extension("").display()
                )))
            }
        }
    }
    if let Some(d) = dev_key {
        if !keys.contains(d) {
            keys.push(d.clone());
        }
    }
    if keys.is_empty() {
        bail!("{}: the trust root is empty; list at least one public key under [trust] keys", spec.file.display());
    }
    Ok((keys, warnings))
}

/// Parses a `--source NAME=PATH` argument (the bundler's and the xtask's).
pub fn parse_source(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (n, p) = s.split_once('=').ok_or("expected COMPONENT=PATH")?;
    Ok((n.to_string(), PathBuf::from(p)))
}

/// Everything one build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub spec: PathBuf,
    pub out_dir: PathBuf,
    /// Empty means every platform of the spec.
    pub platforms: Vec<String>,
    /// Empty means every tier of the spec.
    pub tiers: Vec<String>,
    /// The stub binary for each platform.
    pub stubs: BTreeMap<String, PathBuf>,
    /// Component sources taken from elsewhere than the spec says: (name, path).
    pub sources: Vec<(String, PathBuf)>,
    pub key: PathBuf,
    pub key_password: Option<String>,
    /// The key is a development key: mark the bundles and relax the trust root.
    pub dev: bool,
    /// The value of `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<String>,
    pub pack: PackOptions,
}

/// What a build wrote.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub bundles: Vec<Packed>,
    pub sums: PathBuf,
    pub sums_signature: PathBuf,
}

/// Loads the spec and plans the build without writing anything.
pub fn plan_build(req: &BuildRequest) -> Result<(Spec, Plan)> {
    let mut spec = Spec::load(&req.spec)?;
    for (name, path) in &req.sources {
        spec.override_source(name, path).map_err(anyhow::Error::msg)?;
    }
    let mtime = spec.effective_mtime(req.source_date_epoch.as_deref()).map_err(anyhow::Error::msg)?;
    let plan = plan::plan(&spec, &req.platforms, &req.tiers, &req.stubs, mtime)?;
    Ok((spec, plan))
}

/// Plans and builds every bundle, then writes and signs `SHA256SUMS`.
pub fn build(req: &BuildRequest) -> Result<BuildReport> {
    let (spec, plan) = plan_build(req)?;
    let key = SigningKey::load(&req.key, req.key_password.clone())?;
    let signer = TrustedKey::parse(&key.public_base64())?;
    let (trust, _) = trust_root(&spec, if req.dev { Some(&signer) } else { None })?;
    if !trust.contains(&signer) {
        bail!(
            "the signing key {} (id {}) is not in the trust root of {}, so its bundles could never verify\n  help: add its .pub file to [trust] keys",
            req.key.display(),
            key.key_id(),
            spec.file.display()
        );
    }
    std::fs::create_dir_all(&req.out_dir).with_context(|| format!("cannot create {}", req.out_dir.display()))?;
    let mut bundles = Vec::new();
    for b in &plan.bundles {
        let stub = req.stubs.get(&b.target).with_context(|| format!("no stub given for {}", b.target))?;
        let started = std::time::Instant::now();
        if req.pack.progress {
            eprintln!("  packing {} ({} entries)", b.file_name, b.entries.len());
        }
        let input = pack::PackInput { spec: &spec, plan: b, stub, mtime: plan.mtime, key: &key, dev: req.dev };
        let packed = pack::pack(&input, &req.out_dir, &req.pack)?;
        if req.pack.progress {
            eprintln!(
                "  wrote   {} ({} bytes, stub {} bytes, {} files, {:.1}s)",
                packed.path.display(),
                packed.size,
                packed.stub_len,
                packed.manifest.entries.len(),
                started.elapsed().as_secs_f64()
            );
        }
        bundles.push(packed);
    }
    let (sums, sums_signature) = write_sums(&req.out_dir, &bundles, &key)?;
    Ok(BuildReport { bundles, sums, sums_signature })
}

/// The sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Writes `SHA256SUMS` for the bundles in `sha256sum -c` format and signs it.
fn write_sums(out_dir: &Path, bundles: &[Packed], key: &SigningKey) -> Result<(PathBuf, PathBuf)> {
    let mut lines: Vec<String> = Vec::new();
    for b in bundles {
        let digest = b.sha256;
        let name = b.path.file_name().unwrap().to_string_lossy();
        lines.push(format!("{}  {}\n", nxs_format::hex::encode(&digest), name));
    }
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let text = lines.concat();
    let sums = out_dir.join("SHA256SUMS");
    fsutil::write_atomic(&sums, text.as_bytes(), 0o644)?;
    let sig = key.sign(text.as_bytes(), "SHA256SUMS")?;
    let sums_signature = out_dir.join("SHA256SUMS.minisig");
    fsutil::write_atomic(&sums_signature, sig.as_bytes(), 0o644)?;
    Ok((sums, sums_signature))
}

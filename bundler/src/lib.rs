//! nxs-bundler: turns a bundle spec, a built stub per platform and a signing
//! key into signed, reproducible `.run` bundles, plus `SHA256SUMS`.
//!
//! The flow is plan, then run: [`spec::Spec::load`] checks the spec,
//! [`plan::plan`] lists every bundle and entry, and [`pack::pack`] writes
//! each bundle. Nothing is written before the whole plan is known good.

pub mod fsutil;
pub mod oci;
pub mod pack;
pub mod plan;
pub mod root;
pub mod shared;
pub mod sign;
pub mod spec;

use anyhow::{bail, Context, Result};
use nxs_format::trust::{walk, PublicKey, Root, SignedRoot, TrustBlock, Walked};
use sha2::{Digest, Sha256};
use sign::SigningKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use pack::{PackOptions, Packed};
pub use plan::{BundlePlan, Plan};
pub use spec::{Spec, SpecError};

/// What a build trusts and carries: the root stubs embed, the chain
/// bundles carry, and where it ends.
#[derive(Debug, Clone)]
pub struct TrustPlan {
    /// The root every stub embeds (the first of `[trust] roots`, or
    /// `[trust] keys` as root version 1 with a threshold of 1).
    pub anchor: Root,
    /// The roots each bundle carries, oldest first; empty for `keys`.
    pub chain: Vec<SignedRoot>,
    /// The chain walked from the anchor: its last root's keys sign.
    pub newest: Walked,
}

/// The trust a stub for `spec` embeds, and the chain its bundles carry.
///
/// In a release build every file the spec lists must exist. In a
/// development build (`dev_key` given) with `[trust] keys`, missing key
/// files are skipped with a warning and the development key is added, so
/// the example spec builds on a fresh clone; such bundles are marked `dev`
/// in their manifest. A chain of roots is walked here as a stub will walk
/// it, so a build never writes a bundle its own stubs would refuse.
///
/// Returns the plan, and a warning for each key file skipped.
pub fn trust_plan(spec: &Spec, dev_key: Option<&PublicKey>) -> Result<(TrustPlan, Vec<String>)> {
    if !spec.trust_roots.is_empty() {
        let mut chain = Vec::new();
        for (path, (line, col)) in &spec.trust_roots {
            chain.push(root::read_root(path).with_context(|| {
                format!("{}:{line}:{col}: trust root {} cannot be used", spec.file.display(), path.display())
            })?);
        }
        let newest = root::verify_chain(&chain)
            .with_context(|| format!("{}: the [trust] roots do not form a chain", spec.file.display()))?;
        return Ok((TrustPlan { anchor: chain[0].root.clone(), chain, newest }, Vec::new()));
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut warnings = Vec::new();
    for (path, (line, col)) in &spec.trust_keys {
        match sign::public_key_file(path) {
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
    let anchor = Root::single(keys);
    let newest = walk(&anchor, &anchor.to_text(), &TrustBlock::default()).map_err(anyhow::Error::msg)?;
    Ok((TrustPlan { anchor, chain: Vec::new(), newest }, warnings))
}

/// Loads the signing keys and checks that they meet the newest root's
/// threshold: each listed there and not revoked, each counted once.
pub fn signing_keys(
    trust: &TrustPlan,
    keys: &[PathBuf],
    password: Option<&str>,
    spec: &Path,
) -> Result<Vec<SigningKey>> {
    let newest = &trust.newest.root;
    let mut out: Vec<SigningKey> = Vec::new();
    for path in keys {
        let key = SigningKey::load(path, password.map(str::to_string))?;
        let id = key.public().id;
        if newest.key(&id).is_none() || trust.newest.revoked.contains(&id) {
            bail!(
                "the signing key {} (id {id}) is not in the trust root of {} (root version {}), so its bundles could never verify\n  help: add its .pub file to [trust] keys, or rotate the root to include it",
                path.display(),
                spec.display(),
                newest.version
            );
        }
        if out.iter().any(|k| k.public().id == id) {
            bail!("the signing key {} (id {id}) is given twice; a key counts once", path.display());
        }
        out.push(key);
    }
    if out.len() < newest.threshold {
        bail!(
            "root version {} needs {} signatures on each manifest, and {} signing key{} given\n  help: pass --key once per signer",
            newest.version,
            newest.threshold,
            out.len(),
            if out.len() == 1 { " is" } else { "s are" }
        );
    }
    Ok(out)
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
    /// One bundle per platform holding every tier (a stick's), in place
    /// of one per tier; `tiers` must then be empty.
    pub multi_tier: bool,
    /// With `multi_tier`: keep the files of platform-independent components
    /// once, in the shared part [`shared_name`] beside the bundles, which
    /// every platform's bundle reads (format 6).
    pub shared: bool,
    /// The stub binary for each platform.
    pub stubs: BTreeMap<String, PathBuf>,
    /// Component sources taken from elsewhere than the spec says: (name, path).
    pub sources: Vec<(String, PathBuf)>,
    /// The signing keys: at least the newest root's threshold of them.
    pub keys: Vec<PathBuf>,
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
    let plan = match req.multi_tier {
        true if !req.tiers.is_empty() => anyhow::bail!("a multi-tier build holds every tier: give no --tier"),
        false if req.shared => anyhow::bail!("only a multi-tier build (a stick's) keeps a shared part"),
        true => plan::plan_multi(&spec, &req.platforms, &req.stubs, mtime, req.shared)?,
        false => plan::plan(&spec, &req.platforms, &req.tiers, &req.stubs, mtime)?,
    };
    Ok((spec, plan))
}

/// Plans and builds every bundle, then writes and signs `SHA256SUMS`.
pub fn build(req: &BuildRequest) -> Result<BuildReport> {
    let (spec, plan) = plan_build(req)?;
    let first = req.keys.first().context("no signing key given")?;
    let dev_key = if req.dev { Some(SigningKey::load(first, req.key_password.clone())?.public()) } else { None };
    let (trust, _) = trust_plan(&spec, dev_key.as_ref())?;
    let keys = signing_keys(&trust, &req.keys, req.key_password.as_deref(), &spec.file)?;
    std::fs::create_dir_all(&req.out_dir).with_context(|| format!("cannot create {}", req.out_dir.display()))?;
    // Every platform shares the part, or none has one: known before a
    // byte is written.
    let sharing = |b: &&plan::BundlePlan| b.shared_from < b.entries.len();
    if let (Some(with), Some(without)) = (plan.bundles.iter().find(sharing), plan.bundles.iter().find(|b| !sharing(b)))
    {
        bail!(
            "{} has platform-independent files and {} has none: they could not share a part",
            with.target,
            without.target
        );
    }
    let mut bundles: Vec<Packed> = Vec::new();
    let shared_path = req.out_dir.join(shared_name(&spec));
    for b in &plan.bundles {
        let stub = req.stubs.get(&b.target).with_context(|| format!("no stub given for {}", b.target))?;
        let started = std::time::Instant::now();
        if req.pack.progress {
            eprintln!("  packing {} ({} entries)", b.file_name, b.entries.len());
        }
        let input = pack::PackInput {
            spec: &spec,
            plan: b,
            stub,
            mtime: plan.mtime,
            keys: &keys,
            chain: &trust.chain,
            dev: req.dev,
            shared: req.shared.then(|| shared::SharedOut {
                path: &shared_path,
                written: bundles.iter().find_map(|p| p.manifest.shared.as_ref()).map(|s| s.region),
            }),
        };
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
    let shared = bundles.iter().find_map(|p| p.manifest.shared.as_ref()).map(|s| (shared_path.clone(), s.region));
    let (sums, sums_signature) = write_sums(&req.out_dir, &bundles, shared.as_ref(), &keys[0])?;
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

/// The shared part's file name: `PRODUCT-VERSION.shared`.
pub fn shared_name(spec: &Spec) -> String {
    format!("{}-{}.shared", spec.name, spec.version)
}

/// Writes `SHA256SUMS` for the bundles (and the shared part) in
/// `sha256sum -c` format and signs it.
fn write_sums(
    out_dir: &Path,
    bundles: &[Packed],
    shared: Option<&(PathBuf, nxs_format::Region)>,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf)> {
    let mut lines: Vec<String> = Vec::new();
    let files = bundles.iter().map(|b| (&b.path, b.sha256)).chain(shared.map(|(p, r)| (p, r.sha256)));
    for (path, digest) in files {
        let name = path.file_name().unwrap().to_string_lossy();
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

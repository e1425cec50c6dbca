//! `cargo xtask stick`: a directory to copy onto a USB stick. One bundle
//! per platform holding every tier (each file once), the `install`
//! launcher that picks the machine's, the release key, the signed sums of
//! every file and the offline steps, and the backups to restore.
//!
//! ```text
//! DIR/install                 POSIX sh launcher (launcher.sh)
//! DIR/README.txt              the offline steps
//! DIR/release.pub             the minisign key SHA256SUMS is signed with
//! DIR/SHA256SUMS(.minisig)    every other file, `sha256sum -c` format
//! DIR/bundles/<product>-<version>-<triple>.run
//! DIR/backups/...             --with-backups, copied as they are
//! DIR/parity/<path>.nxspar    recovery data for each file above (nxs-parity)
//! ```
//!
//! The directory is built beside DIR under a temporary name and renamed
//! into place once complete, so a failed build leaves no half a stick.

use super::bundle::{bundle, read_password, under, BundleArgs};
use crate::platform::Platform;
use anyhow::{bail, Context, Result};
use nxs_bundler::sign::SigningKey;
use std::path::{Path, PathBuf};

/// FAT32 holds no file of 4 GiB or more; a larger file is stored as
/// pieces of at most this many bytes (4 GiB less 1 MiB).
pub const FAT32_PIECE: u64 = (4 << 30) - (1 << 20);

const LAUNCHER: &str = include_str!("launcher.sh");

pub struct StickArgs {
    pub manifest: PathBuf,
    pub out: PathBuf,
    /// Empty: every platform of the spec.
    pub platforms: Vec<String>,
    /// Empty: the development key.
    pub key: Vec<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub sources: Vec<(String, PathBuf)>,
    /// A backup directory (nxs-backup's) to carry under `backups/`.
    pub with_backups: Option<PathBuf>,
    /// Recovery data per file, as a percentage of its blocks (1 to 100);
    /// 0 for none.
    pub parity: u32,
    /// Files larger than this are stored as pieces `<name>.part-NNN` of
    /// this size: [`FAT32_PIECE`] unless a test asks for less.
    pub piece: u64,
}

/// What a stick holds: each file's path inside it and its size.
pub struct Stick {
    pub dir: PathBuf,
    pub files: Vec<(String, u64)>,
}

impl Stick {
    /// The bytes of every file whose path starts with `prefix`.
    pub fn bytes_under(&self, prefix: &str) -> u64 {
        self.files.iter().filter(|(p, _)| p.starts_with(prefix)).map(|(_, n)| n).sum()
    }
}

pub fn stick(root: &Path, a: &StickArgs) -> Result<Stick> {
    let abs = |p: &Path| under(root, p);
    if a.parity > 100 {
        bail!("--parity {}: expected a percentage from 0 (none) to 100", a.parity);
    }
    let out = abs(&a.out);
    if out.exists() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty\n  help: name a new or empty directory with --out", out.display());
    }
    let name = out.file_name().context("--out names no directory")?.to_string_lossy().into_owned();
    let work = out.with_file_name(format!(".{name}.nxs-stick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let built = fill(root, a, &work);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir(&out).with_context(|| format!("cannot replace the empty {}", out.display()))?;
    }
    std::fs::rename(&work, &out).with_context(|| format!("cannot rename {} to {}", work.display(), out.display()))?;
    let files = list_files(&out)?;
    Ok(Stick { dir: out, files })
}

/// Everything the stick holds, written into `work`.
fn fill(root: &Path, a: &StickArgs, work: &Path) -> Result<()> {
    let abs = |p: &Path| under(root, p);
    let spec = nxs_bundler::Spec::load(&abs(&a.manifest))?;
    let report = bundle(
        root,
        &BundleArgs {
            manifest: a.manifest.clone(),
            platforms: a.platforms.clone(),
            tiers: vec![],
            multi_tier: true,
            out: work.join("bundles"),
            key: a.key.clone(),
            password_file: a.password_file.clone(),
            sources: a.sources.clone(),
            dry_run: false,
        },
    )?
    .expect("not a dry run");
    // The stick's own sums cover the bundles; the build's would be a second list.
    for f in [&report.sums, &report.sums_signature] {
        std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
    }
    let mut table = Vec::new();
    for b in &report.bundles {
        let p = Platform::load(root, &b.manifest.target)?;
        table.push(format!("{} {}", p.triple, p.machines.join(" ")));
    }
    let launcher = LAUNCHER
        .replace("@PRODUCT@", &spec.name)
        .replace("@VERSION@", spec.version.as_str())
        .replace("@TABLE@", &table.join("\n"));
    write(&work.join("install"), launcher.as_bytes(), 0o755)?;
    let tiers: Vec<&str> = spec.tiers.iter().map(|t| t.name.as_str()).collect();
    let shared = report.bundles.iter().any(|b| b.manifest.shared.is_some());
    let readme = readme(&spec.name, spec.version.as_str(), &table, &tiers, &spec.default_tier, shared);
    write(&work.join("README.txt"), readme.as_bytes(), 0o644)?;
    if let Some(from) = &a.with_backups {
        copy_backups(&abs(from), &work.join("backups"))?;
    }
    let key = signing_key(root, a)?;
    let public = format!("untrusted comment: minisign public key {}\n{}\n", key.key_id(), key.public_base64());
    write(&work.join("release.pub"), public.as_bytes(), 0o644)?;
    for (rel, size) in list_files(work)? {
        if size > a.piece {
            split(&work.join(&rel), a.piece)?;
        }
    }
    let mut sums = String::new();
    for (rel, _) in list_files(work)? {
        let digest = nxs_bundler::sha256_file(&work.join(&rel))?;
        sums.push_str(&format!("{}  {rel}\n", nxs_format::hex::encode(&digest)));
    }
    write(&work.join("SHA256SUMS"), sums.as_bytes(), 0o644)?;
    let sig = key.sign(sums.as_bytes(), &format!("{} {} stick SHA256SUMS", spec.name, spec.version))?;
    write(&work.join("SHA256SUMS.minisig"), sig.as_bytes(), 0o644)?;
    if a.parity > 0 {
        write_parity(work, a.parity)?;
    }
    sync_dir(work)?;
    Ok(())
}

/// `parity/<path>.nxspar` for every file of the stick, the sums and their
/// signature included (docs/FORMAT.md, "Stick parity").
fn write_parity(work: &Path, percent: u32) -> Result<()> {
    let mut files = list_files(work)?;
    files.extend(["SHA256SUMS", "SHA256SUMS.minisig"].map(|p| (p.to_string(), 0)));
    for (rel, _) in files {
        let data = std::fs::read(work.join(&rel)).with_context(|| format!("cannot read {rel}"))?;
        let parity = nxs_parity::create(&data, percent).map_err(|e| anyhow::anyhow!("{rel}: {e}"))?;
        let at = work.join("parity").join(format!("{rel}.nxspar"));
        std::fs::create_dir_all(at.parent().expect("under parity/"))?;
        write(&at, &parity, 0o644)?;
    }
    Ok(())
}

/// Splits `path` into `<path>.part-000`, `-001`, ... of `piece` bytes (the
/// last shorter), each synced, then removes `path`: the launcher joins
/// them again into a temporary file to run a bundle (docs/FORMAT.md).
fn split(path: &Path, piece: u64) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    if len.div_ceil(piece) > 1000 {
        bail!("{}: {len} bytes would be more than 1000 pieces of {piece}", path.display());
    }
    for i in 0..len.div_ceil(piece) {
        let name = format!("{}.part-{i:03}", path.file_name().expect("a file").to_string_lossy());
        let to = path.with_file_name(name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)
            .with_context(|| format!("cannot create {}", to.display()))?;
        std::io::copy(&mut (&mut f).take(piece), &mut out)?;
        out.sync_all()?;
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(())
}

/// The key SHA256SUMS is signed with: the first `--key`, else the
/// development key (the bundle build has said so loudly already).
fn signing_key(root: &Path, a: &StickArgs) -> Result<SigningKey> {
    let abs = |p: &Path| under(root, p);
    let path = match a.key.first() {
        Some(k) => abs(k),
        None => crate::devkey::ensure(root)?,
    };
    SigningKey::load(&path, read_password(root, a.password_file.as_deref())?)
}

/// Every regular file under `dir`, as (path relative to it, size), sorted;
/// `SHA256SUMS` and its signature aside. A link or anything else that is
/// not a file or directory is refused: a stick holds none.
pub fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            let rel = e.path().strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                if rel != "SHA256SUMS" && rel != "SHA256SUMS.minisig" {
                    out.push((rel, meta.len()));
                }
            } else {
                bail!("{}: not a regular file or directory; a stick holds no links", e.path().display());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies a backup directory's regular files (nxs-backup's backups and
/// their `.sha256` files), refusing links and anything else.
fn copy_backups(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for (rel, _) in list_files(from)? {
        let dest = to.join(&rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from.join(&rel), &dest)
            .with_context(|| format!("cannot copy {} to {}", from.join(&rel).display(), dest.display()))?;
        std::fs::File::open(&dest)?.sync_all()?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// fsyncs every directory of the tree, so the rename publishes a stick
/// whose names are all on the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_dir(&e.path())?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The stick's README.txt: what an operator reads first, offline.
fn readme(product: &str, version: &str, table: &[String], tiers: &[&str], default: &str, shared: bool) -> String {
    let platforms: String = table.iter().map(|l| format!("  {l}\n")).collect();
    let shared = match shared {
        true => format!(
            "The files every platform shares are kept once, in\n\
             bundles/{product}-{version}.shared: copy it with a bundle, or run the\n\
             bundle with NXS_SHARED_DIR naming the folder that holds it.\n"
        ),
        false => String::new(),
    };
    format!(
        "{product} {version}: survival stick\n\
         =====================================\n\
         \n\
         This stick brings an NXS instance back on a bare Linux machine with no\n\
         network. Everything it needs is here.\n\
         \n\
         1. Check the stick (optional; the bundle checks itself anyway):\n\
         \n\
         \x20    minisign -Vm SHA256SUMS -p release.pub && sha256sum -c SHA256SUMS\n\
         \n\
         2. Install (as root). The launcher picks this machine's bundle from\n\
         \x20  `uname -m` and says which; the tier is `{default}` unless you name one:\n\
         \n\
         \x20    ./install --root /opt/nxs --authkey-file /path/to/key\n\
         \x20    ./install --root /opt/nxs --tier {last}\n\
         \n\
         \x20  Tiers on this stick: {tiers}.\n\
         \x20  The Headscale auth key is read from a file or a prompt, never argv.\n\
         \n\
         3. Restore a backup from the stick, then install, in one command:\n\
         \n\
         \x20    ./install --root /opt/nxs --restore-from backups/ \\\n\
         \x20              --restore-passphrase-file /path/to/passphrase\n\
         \n\
         4. If this machine is not listed below, ./install says so (exit 4);\n\
         \x20  ./install --platform TRIPLE runs another platform's bundle.\n\
         \n\
         Bundles (bundles/), by `uname -m`:\n\
         {platforms}\
         \n\
         Each bundle verifies its own signature, every frame and every file\n\
         before it writes anything. `./install list` shows what a tier holds;\n\
         `./install --help` lists every command.\n{shared}",
        last = tiers.last().copied().unwrap_or(default),
        tiers = tiers.join(", "),
    )
}

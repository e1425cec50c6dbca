//! A stick's shared part (format 6, docs/FORMAT.md "The shared part"):
//! where the packer puts the frames of the platform-independent files, the
//! same for every platform's bundle.

use anyhow::{bail, Context, Result};
use nxs_format::Region;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Where a stick's shared part goes: the first platform's pack writes it,
/// each later one must produce the very same bytes (`written`).
#[derive(Debug, Clone, Copy)]
pub struct SharedOut<'a> {
    pub path: &'a Path,
    pub written: Option<Region>,
}

/// Puts the shared part just written in place, or, when an earlier
/// platform's pack wrote it, checks that this one is byte for byte the
/// same and drops it: every platform's manifest then names the same file.
pub(crate) fn keep(
    s: SharedOut,
    tmp: tempfile::NamedTempFile,
    w: BufWriter<File>,
    region: Region,
    target: &str,
) -> Result<nxs_format::SharedPart> {
    w.into_inner().map_err(|e| e.into_error()).context("cannot write the shared part")?;
    match s.written {
        None => crate::fsutil::finish_atomic(tmp, s.path, 0o644)?,
        Some(r) if r == region => drop(tmp),
        Some(r) => bail!(
            "the platform-independent files pack differently for {target} ({} bytes, sha256 {}) than for the first platform ({} bytes, sha256 {}), so {} cannot serve both\n  help: a platform_independent component must give every platform the same files",
            region.len,
            nxs_format::hex::encode(&region.sha256),
            r.len,
            nxs_format::hex::encode(&r.sha256),
            s.path.display()
        ),
    }
    let name = s.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    Ok(nxs_format::SharedPart { name, region })
}

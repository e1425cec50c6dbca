//! The bundler's writers go through `nxs_sys::fs`, as the stub's and
//! nxs-backup's do; what is the bundler's own is finishing a write that
//! was streamed into a temp file (a bundle, hashed as it is written).

use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory. A reader sees the old file or the
/// new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    Ok(nxs_sys::fs::write_atomic(path, bytes, mode)?)
}

/// Completes an atomic write begun with a temp file in `path`'s directory.
pub fn finish_atomic(tmp: tempfile::NamedTempFile, path: &Path, mode: u32) -> Result<()> {
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all().with_context(|| format!("fsync of {}", tmp.path().display()))?;
    tmp.persist(path).with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(nxs_sys::fs::fsync_dir(nxs_sys::fs::parent(path))?)
}

//! Small filesystem helpers shared by the bundler's writers.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory. A reader sees the old file or the
/// new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".nxs-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    finish_atomic(tmp, path, mode)
}

/// Completes an atomic write begun with a temp file in `path`'s directory.
pub fn finish_atomic(tmp: tempfile::NamedTempFile, path: &Path, mode: u32) -> Result<()> {
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all().with_context(|| format!("fsync of {}", tmp.path().display()))?;
    tmp.persist(path).with_context(|| format!("cannot rename into {}", path.display()))?;
    fsync_dir(parent_of(path))
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync of directory {}", dir.display()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

//! The development key: made on first use under `target/dev-key/`, never
//! for release. Bundles signed with it say so in their manifest.

use anyhow::Result;
use std::path::{Path, PathBuf};

/// Returns the development secret key's path, creating the pair if needed.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let stem = root.join("target").join("dev-key").join("nxs-dev");
    let sk = stem.with_extension("key");
    if !sk.exists() {
        nxs_bundler::sign::keygen(&stem, None, true)?;
        eprintln!("made a development key pair at {}.{{key,pub}}", stem.display());
    }
    Ok(sk)
}

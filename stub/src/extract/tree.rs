//! `check`: an installed tree re-hashed against its signed record.

use super::*;

/// Checks an installed tree against a manifest: every file's bytes and
/// mode, every directory's mode. Returns the list of problems.
pub fn check_tree(root: &Path, m: &nxs_format::Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    // Directories that are not what the manifest says: nothing below one
    // is looked at, so no check reads through a link someone put there.
    let mut bad: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for e in &m.entries {
        let p = root.join(e.path.as_str());
        if let Some(parent) = e.path.as_str().rsplit_once('/').map(|(d, _)| d) {
            if bad.contains(parent) {
                problems.push(format!("{}: not checked, {parent} is not the directory it should be", p.display()));
                bad.insert(e.path.as_str());
                continue;
            }
        }
        if e.kind == EntryKind::Dir && !fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            bad.insert(e.path.as_str());
        }
        let meta = match fs::symlink_metadata(&p) {
            Ok(meta) => meta,
            Err(err) => {
                problems.push(format!("{}: {err}", p.display()));
                continue;
            }
        };
        let mode = meta.permissions().mode() & 0o7777;
        match &e.kind {
            EntryKind::Dir if !meta.is_dir() => problems.push(format!("{}: expected a directory", p.display())),
            EntryKind::File { .. } if !meta.is_file() => {
                problems.push(format!("{}: expected a regular file", p.display()))
            }
            EntryKind::File { size, sha256 } => match hash_file(&p) {
                Ok((n, got)) if n == *size && &got == sha256 => {}
                Ok((n, got)) => problems.push(format!(
                    "{}: {} bytes with sha256 {}, expected {size} bytes with {}",
                    p.display(),
                    n,
                    hex::encode(&got),
                    hex::encode(sha256)
                )),
                Err(err) => problems.push(format!("{}: {err}", p.display())),
            },
            EntryKind::Dir => {}
            EntryKind::Link { target } => {
                let ok = meta.file_type().is_symlink()
                    && fs::read_link(&p)
                        .map(|t| t.as_os_str().as_encoded_bytes() == target.as_bytes())
                        .unwrap_or(false);
                if !ok {
                    problems.push(format!("{}: expected a link to `{target}`", p.display()));
                }
                // A link's own mode means nothing on Linux.
                continue;
            }
        }
        if mode != e.mode {
            problems.push(format!("{}: mode {mode:o}, expected {:o}", p.display(), e.mode));
        }
    }
    problems
}

/// Hashes the regular file at `p`, opened without following a link and
/// without blocking on a FIFO.
pub(super) fn hash_file(p: &Path) -> io::Result<(u64, [u8; 32])> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    hash_reader(&mut f)
}

/// The length and sha256 of everything `r` yields.
pub(super) fn hash_reader(r: &mut impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((n, h.finalize().into()));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

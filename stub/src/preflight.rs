//! The preflight: before anything is written, check that the target can
//! take the install. Free space against the manifest's totals, a writable
//! and not read-only filesystem, `exec` allowed where the bundle carries
//! executables, and staging on the same filesystem as the root.

use crate::error::{Class, Error, Result};
use nxs_format::{EntryKind, Manifest};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes a bundle needs on the target: its files, a block per entry for
/// metadata and tails, and the install record.
pub fn needed_bytes(m: &Manifest) -> u64 {
    let per_entry = 4096u64;
    m.files_total().saturating_add((m.entries.len() as u64 + 8).saturating_mul(per_entry)).saturating_add(1 << 20)
}

fn writable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: access reads a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The nearest existing ancestor of `p` (the root and its parent may not
/// exist yet).
fn existing(p: &Path) -> &Path {
    let mut cur = p;
    while !cur.exists() {
        match cur.parent() {
            Some(q) if !q.as_os_str().is_empty() => cur = q,
            _ => return Path::new("/"),
        }
    }
    cur
}

/// `b` in MiB with one decimal, in integers: float formatting would cost
/// the stub several KiB.
fn mib(b: u64) -> String {
    let tenths = (b as u128 * 10 + (1 << 19)) >> 20;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

/// Checks the target of an install or extraction into `root`.
pub fn check(m: &Manifest, root: &Path) -> Result<()> {
    let parent = crate::fsx::parent(root);
    let at = existing(parent);
    let st = crate::fsx::statvfs(at)?;
    if st.f_flag & libc::ST_RDONLY != 0 {
        return Err(Error::new(Class::Io, format!("{} is on a read-only filesystem", at.display()))
            .hint("remount it read-write, or choose another --root"));
    }
    if !writable(at) {
        return Err(Error::new(Class::Io, format!("permission denied: cannot write in {}", at.display()))
            .hint("run as a user who may write there, or choose another --root"));
    }
    let need = needed_bytes(m);
    let have = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if have < need {
        return Err(Error::new(
            Class::Io,
            format!("not enough space: need {}, have {} at {}", mib(need), mib(have), at.display()),
        )
        .hint("free some space or choose another --root; nothing was written"));
    }
    let executables = m.entries.iter().any(|e| matches!(e.kind, EntryKind::File { .. }) && e.mode & 0o111 != 0);
    if executables && st.f_flag & libc::ST_NOEXEC != 0 {
        return Err(Error::new(
            Class::Io,
            format!("{} is mounted noexec, and the bundle carries programs that must run from it", at.display()),
        )
        .hint("choose a --root on a filesystem mounted with exec"));
    }
    // Staging sits in the root's parent; the switch is a rename, so the
    // root must not be a mount point of its own.
    if let (Ok(r), Ok(p)) = (std::fs::metadata(root), std::fs::metadata(parent)) {
        if r.dev() != p.dev() {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is a mount point: staging in {} would be on another filesystem (EXDEV)",
                    root.display(),
                    parent.display()
                ),
            )
            .hint("install into a directory inside the mounted filesystem, such as ROOT/nxs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn need_covers_files_and_metadata() {
        use nxs_format::*;
        let e = |p: &str, size: u64| Entry {
            path: EntryPath::parse(p).unwrap(),
            mode: 0o644,
            kind: EntryKind::File { size, sha256: [0; 32] },
        };
        let m = crate::test_manifest(vec![], Region { len: 0, sha256: [0; 32] }, vec![e("a", 10 << 20), e("b", 5)]);
        assert!(super::needed_bytes(&m) > (10 << 20) + 5);
    }

    #[test]
    fn mib_rounds_to_a_tenth() {
        use super::mib;
        assert_eq!(mib(0), "0.0 MiB");
        assert_eq!(mib(1 << 20), "1.0 MiB");
        assert_eq!(mib((1 << 20) + (1 << 19)), "1.5 MiB");
        assert_eq!(mib(1_000_000), "1.0 MiB");
        assert_eq!(mib(104_857), "0.1 MiB");
    }
}

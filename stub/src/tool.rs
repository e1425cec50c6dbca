//! `backup` and `restore`: the stub hands them to `nxs-backup`, the program
//! the payload carries at [`TOOL`], once it has verified that program.
//!
//! From a bundle, the program is read out of the verified payload and
//! checked against its signed manifest line; from an install (the stub as
//! `<root>/bin/nxs-survival`), against the install's signed record. Either
//! way the bytes checked are the bytes run: they go into a memfd and are
//! executed from there, so nothing is written to disk and nothing can swap
//! the file between the check and the exec. The age code lives in that
//! program, not here: it is larger than the stub's whole size budget.

use crate::bundle::{self, Bundle, Trust};
use crate::error::{Class, Error, Result};
use nxs_format::{EntryKind, Manifest, RECORD_DIR};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a payload carries nxs-backup.
pub const TOOL: &str = "bin/nxs-backup";

/// The size and sha256 the manifest gives nxs-backup; exit 4 without one.
pub fn expected(m: &Manifest) -> Result<(u64, [u8; 32])> {
    m.entries
        .iter()
        .find_map(|e| match e.kind {
            EntryKind::File { size, sha256 } if e.path.as_str() == TOOL => Some((size, sha256)),
            _ => None,
        })
        .ok_or_else(|| {
            Error::new(Class::Incompatible, format!("{} carries no {TOOL}", m.bundle_id()))
                .hint("backup and restore need a bundle whose tier includes the `backup` component")
        })
}

fn checked(r: impl Read, size: u64, sha256: &[u8; 32], label: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(size as usize);
    r.take(size + 1).read_to_end(&mut bytes).map_err(|e| crate::error::tampered(format!("{label}: {e}")))?;
    if bytes.len() as u64 != size || Sha256::digest(&bytes)[..] != sha256[..] {
        return Err(crate::error::tampered(format!("{label} does not match its signed manifest line")));
    }
    Ok(bytes)
}

/// The root an installed stub runs from: `<root>/bin/nxs-survival` beside
/// `<root>/.nxs-bundle/`.
fn installed_root(me: &Path) -> Option<PathBuf> {
    let root = me.parent()?.parent()?;
    root.join(RECORD_DIR).join("manifest").is_file().then(|| root.to_path_buf())
}

/// The verified bytes of nxs-backup.
pub fn load() -> Result<Vec<u8>> {
    let me = bundle::self_path()?;
    if let Some(root) = installed_root(&me) {
        return installed(&root, &bundle::installed_record(&root)?.manifest);
    }
    let b = Bundle::open_verified(&me, &Trust::Embedded)?;
    let (size, sha256) = expected(&b.manifest)?;
    let label = format!("{}: payload {TOOL}", b.path.display());
    // Format 3: read from the frame the program's member begins in, and
    // nothing before it.
    let entry = b.manifest.entries.iter().position(|e| e.path.as_str() == TOOL).unwrap_or(0);
    let frame = crate::extract::frame_of(&b.manifest, entry);
    let reader = b.payload_from(frame).map_err(|e| crate::error::tampered(format!("{label}: {e}")))?;
    let mut ar = tar::Archive::new(reader);
    for e in ar.entries().map_err(|e| crate::error::tampered(format!("{label}: {e}")))? {
        let e = e.map_err(|e| crate::error::tampered(format!("{label}: {e}")))?;
        if &*e.path_bytes() == TOOL.as_bytes() {
            return checked(e, size, &sha256, &label);
        }
    }
    Err(crate::error::tampered(format!("{label} is missing from the payload")))
}

/// nxs-backup as installed in `root`, checked against manifest `m`.
pub fn installed(root: &Path, m: &Manifest) -> Result<Vec<u8>> {
    let (size, sha256) = expected(m)?;
    let p = root.join(TOOL);
    // Beneath the root, through no link, and never a FIFO (crate::door).
    let f = crate::door::Dir::open(root)?
        .open_beneath(TOOL)?
        .ok_or_else(|| Error::io("cannot open", &p, std::io::ErrorKind::NotFound.into()))?;
    checked(f, size, &sha256, &p.display().to_string())
}

/// A memfd holding `bytes`, executable through `/proc/self/fd/N`.
pub fn memfd(bytes: &[u8]) -> Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::io::FromRawFd;
    // SAFETY: a static NUL-terminated name; the fd returned is ours.
    // MFD_EXEC: where vm.memfd_noexec is set (Linux 6.3+), a memfd is not
    // executable without it; older kernels refuse the flag (EINVAL).
    let create =
        |flags: libc::c_uint| unsafe { libc::syscall(libc::SYS_memfd_create, c"nxs-backup".as_ptr(), flags) } as i32;
    let mut fd = create(0x10);
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = create(0);
    }
    if fd < 0 {
        return Err(Error::io("cannot create a memfd for", Path::new(TOOL), std::io::Error::last_os_error())
            .hint("backup and restore need Linux 3.17 or newer"));
    }
    // SAFETY: fd was just returned by memfd_create.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(bytes).map_err(|e| Error::io("cannot write", Path::new("memfd"), e))?;
    Ok(f)
}

/// A command that runs `bytes` (a verified nxs-backup) from a memfd; keep
/// the file until the command has started.
pub fn command(bytes: &[u8]) -> Result<(std::fs::File, std::process::Command)> {
    use std::os::unix::process::CommandExt;
    let f = memfd(bytes)?;
    let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", std::os::unix::io::AsRawFd::as_raw_fd(&f)));
    cmd.arg0("nxs-backup");
    Ok((f, cmd))
}

/// Replaces this process with the verified nxs-backup, with `args`.
pub fn exec(args: &[String]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let (_f, mut cmd) = command(&load()?)?;
    let e = cmd.args(args).exec();
    Err(Error::io("cannot run", Path::new(TOOL), e))
}

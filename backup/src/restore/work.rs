//! The restore's work directory beside the state directory
//! (`.<name>.nxs-restore`), its journal, and the checks on what a crash
//! (or another user) may have left there.

use crate::error::{Class, Error, Result};
use nxs_format::hex;
use nxs_sys::fs::parent;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a restore writes before it swaps: the backup it restores, its
/// sha256, and the inode of the staged tree (which tells, after a crash,
/// whether the swap happened).
pub(super) struct Journal {
    pub(super) backup: PathBuf,
    pub(super) sha256: [u8; 32],
    pub(super) new_ino: u64,
}

impl Journal {
    pub(super) fn to_text(&self) -> String {
        format!(
            "nxs-restore 1\nbackup {}\nsha256 {}\nnew-ino {}\n",
            self.backup.display(),
            hex::encode(&self.sha256),
            self.new_ino
        )
    }
    pub(super) fn parse(text: &str) -> Option<Journal> {
        let mut lines = text.lines();
        if lines.next()? != "nxs-restore 1" {
            return None;
        }
        let backup = PathBuf::from(lines.next()?.strip_prefix("backup ")?);
        let sha256 = hex::decode_sha256(lines.next()?.strip_prefix("sha256 ")?)?;
        let new_ino = lines.next()?.strip_prefix("new-ino ")?.parse().ok()?;
        Some(Journal { backup, sha256, new_ino })
    }
}

/// The work directory and the names in it.
pub(super) struct Work {
    pub(super) dir: PathBuf,
    pub(super) new: PathBuf,
    pub(super) old: PathBuf,
    pub(super) journal: PathBuf,
    pub(super) manifest: PathBuf,
}

impl Work {
    pub(super) fn for_state_dir(state_dir: &Path) -> Result<Work> {
        let name = state_dir.file_name().ok_or_else(|| Error::usage(format!("{} has no name", state_dir.display())))?;
        let dir = parent(state_dir).join(format!(".{}.nxs-restore", name.to_string_lossy()));
        if let Some(why) = not_ours(&dir) {
            return Err(Error::new(Class::Io, format!("{}: {why}: refusing to use it", dir.display())).hint(
                "a restore's work directory is made by nxs-backup, 0700; this one is not, so nothing in it is trusted. Look at it, move it away, and run again",
            ));
        }
        Ok(Work {
            new: dir.join("new"),
            old: dir.join("old"),
            journal: dir.join("journal"),
            manifest: dir.join("manifest"),
            dir,
        })
    }
}

/// Why what is at `p` is not a work directory this user made, if it is
/// not: it must be absent, or a real directory (not a link) of this user,
/// not writable by group or others. Its parent may be `/tmp`, a home or a
/// stick, where another user could have planted one first.
pub(super) fn not_ours(p: &Path) -> Option<String> {
    let m = fs::symlink_metadata(p).ok()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.file_type().is_symlink() {
        Some("a symbolic link".into())
    } else if !m.is_dir() {
        Some("not a directory".into())
    } else if m.uid() != me {
        Some(format!("owned by uid {}, not by the user running nxs-backup", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Some(format!("writable by others (mode {:o})", m.mode() & 0o7777))
    } else {
        None
    }
}

pub(super) fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

pub(super) fn ino(p: &Path) -> Option<u64> {
    fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Whether a directory holds anything but the bootstrap's own names (or
/// cannot be listed: then it is kept, not removed).
pub(super) fn has_data(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().any(|e| !nxs_format::state::is_bootstrap_owned(&e.file_name().to_string_lossy())))
        .unwrap_or(true)
}

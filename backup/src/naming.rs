//! Names in a backup directory.
//!
//! - `nxs-backup-20261129T144637Z.tar.zst.age`: a finished backup (`-2`,
//!   `-3`... before `.tar` when two land in the same second);
//! - `<that>.sha256`: its checksum, in `sha256sum` format;
//! - `.nxs-backup-20261129T144637Z.tmp-PID`: one being written. It never
//!   matches the finished pattern, so a half-written backup never carries a
//!   finished backup's name.

use crate::clock;
use std::path::{Path, PathBuf};

pub const PREFIX: &str = "nxs-backup-";
pub const SUFFIX: &str = ".tar.zst.age";

pub fn temporary(stamp: &str, pid: u32) -> String {
    format!(".{PREFIX}{stamp}.tmp-{pid}")
}

/// The writer's PID, if `name` is a temporary backup.
pub fn temporary_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?.strip_prefix(PREFIX)?;
    rest.rsplit_once(".tmp-")?.1.parse().ok()
}

/// The time in a finished backup's name, if it is one of ours.
pub fn stamp_of(name: &str) -> Option<i64> {
    order_of(name).map(|(t, _)| t)
}

/// The time in a finished backup's name and its number within that second
/// (1 for none, 2 for `-2`...): the order of backups, oldest first.
fn order_of(name: &str) -> Option<(i64, u32)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (stamp, n) = match rest.split_once('-') {
        Some((s, n)) => (s, n.parse::<u32>().ok().filter(|n| *n >= 2)?),
        None => (rest, 1),
    };
    Some((clock::parse_stamp(stamp)?, n))
}

/// The first free finished name for this stamp.
pub fn free_name(dir: &Path, stamp: &str) -> PathBuf {
    let mut n = 1;
    loop {
        let name = if n == 1 { format!("{PREFIX}{stamp}{SUFFIX}") } else { format!("{PREFIX}{stamp}-{n}{SUFFIX}") };
        let p = dir.join(name);
        if std::fs::symlink_metadata(&p).is_err() {
            return p;
        }
        n += 1;
    }
}

pub fn sidecar(backup: &Path) -> PathBuf {
    let mut s = backup.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// A file in a backup directory that may be a backup: ours by name, or any
/// other `*.age` file (one made by hand). Newest first: by the stamp in the
/// name, else by the file's mtime.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub name: String,
    pub time: i64,
    /// Within the same second: `-2` after none.
    pub seq: u32,
    pub size: u64,
    pub ours: bool,
}

pub fn candidates(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".age") {
            continue;
        }
        let Ok(meta) = std::fs::metadata(e.path()) else { continue };
        if !meta.is_file() {
            continue;
        }
        let order = order_of(&name);
        out.push(Candidate {
            path: e.path(),
            time: order.map(|(t, _)| t).unwrap_or(meta.mtime()),
            seq: order.map(|(_, n)| n).unwrap_or(0),
            size: meta.len(),
            ours: order.is_some(),
            name,
        });
    }
    out.sort_by(|a, b| b.time.cmp(&a.time).then(b.seq.cmp(&a.seq)).then_with(|| b.name.cmp(&a.name)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(stamp_of("nxs-backup-20260101T000000Z.tar.zst.age"), Some(1_767_225_600));
        assert_eq!(stamp_of("nxs-backup-20260101T000000Z-3.tar.zst.age"), Some(1_767_225_600));
        assert_eq!(stamp_of("nxs-backup-20260101T000000Z-x.tar.zst.age"), None);
        assert_eq!(stamp_of("nxs-backup-20260101T000000Z-1.tar.zst.age"), None);
        assert_eq!(order_of("nxs-backup-20260101T000000Z-10.tar.zst.age"), Some((1_767_225_600, 10)));
        assert_eq!(stamp_of(".nxs-backup-20260101T000000Z.tmp-12"), None);
        assert_eq!(temporary_pid(&temporary("20260101T000000Z", 12)), Some(12));
        assert_eq!(temporary_pid("nxs-backup-20260101T000000Z.tar.zst.age"), None);
    }
}

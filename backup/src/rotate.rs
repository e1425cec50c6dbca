//! Retention: keep the newest backup of each of the last N days, weeks (ISO)
//! and months that have one, as restic's `forget --keep-daily/weekly/monthly`
//! does. A backup kept by one rule still counts for the others, so a
//! year of dailies leaves 7 + 4 + 12 or fewer. The newest is always kept.
//! Only backups named by this tool are pruned; other files are left alone.

use crate::error::{Error, Result};
use crate::{clock, fault, naming};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep { daily: 7, weekly: 4, monthly: 12 }
    }
}

/// The indices of `times` to keep; `times` is sorted newest first.
pub fn keep(times: &[i64], k: &Keep) -> BTreeSet<usize> {
    let mut kept = BTreeSet::new();
    if times.is_empty() {
        return kept;
    }
    kept.insert(0);
    type Bucket = fn(i64) -> (i32, u32);
    let rules: [(usize, Bucket); 3] = [
        (k.daily, |t| {
            let d = clock::utc(t);
            (d.year(), d.ordinal() as u32)
        }),
        (k.weekly, |t| {
            let (y, w, _) = clock::utc(t).to_iso_week_date();
            (y, w as u32)
        }),
        (k.monthly, |t| {
            let d = clock::utc(t);
            (d.year(), d.month() as u32)
        }),
    ];
    for (count, bucket) in rules {
        let mut last = None;
        let mut taken = 0;
        for (i, t) in times.iter().enumerate() {
            if taken == count {
                break;
            }
            let b = bucket(*t);
            if last != Some(b) {
                kept.insert(i);
                last = Some(b);
                taken += 1;
            }
        }
    }
    kept
}

/// Deletes the backups of `dir` that the policy does not keep, with their
/// `.sha256`; never `just_written`, even when the clock says it is older
/// than others (a board without a real-time clock). Returns what it deleted
/// and how many it kept.
pub fn prune(dir: &Path, k: &Keep, just_written: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let all = naming::candidates(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    let ours: Vec<_> = all.into_iter().filter(|c| c.ours).collect();
    let times: Vec<i64> = ours.iter().map(|c| c.time).collect();
    let mut kept = keep(&times, k);
    if let Some(i) = ours.iter().position(|c| c.path == just_written) {
        kept.insert(i);
    }
    let mut pruned = Vec::new();
    for (i, c) in ours.iter().enumerate() {
        if kept.contains(&i) {
            continue;
        }
        fault::effect("backup:prune")?;
        std::fs::remove_file(&c.path).map_err(|e| Error::io("cannot remove", &c.path, e))?;
        let _ = std::fs::remove_file(naming::sidecar(&c.path));
        eprintln!("  pruned {} (retention {}d/{}w/{}m)", c.name, k.daily, k.weekly, k.monthly);
        pruned.push(c.path.clone());
    }
    if !pruned.is_empty() {
        nxs_sys::fs::fsync_dir(dir)?;
    }
    Ok((pruned, kept.len()))
}

//! `restore`: the newest backup that verifies, swapped in for the state
//! directory in one rename.
//!
//! ```text
//! <parent>/.<name>.nxs-restore/      the work directory (same filesystem)
//!     new/        the backup, staged and checked; then, once swapped, the old state
//!     old/        the old state, after the swap
//!     manifest    the backup's manifest, to re-check `new/` after a crash
//!     journal     written once `new/` is complete and synced
//! <parent>/<name>.pre-restore-<stamp>/   the old state, kept
//! ```
//!
//! Nothing touches the state directory until the backup has been read to
//! its last byte and every hash has matched. The backup is read once: it
//! is decrypted, decompressed and staged in one pass into
//! `<parent>/.<name>.nxs-restore.stage-<pid>/new`, every size and hash
//! checked on the way; one that fails is removed with all it staged (and in
//! a directory the next-newest is tried). Only then is the lock taken and
//! the staged directory renamed to be the work directory. The bootstrap's own files
//! (lock, checkpoint, downgrade guard) are hard-linked into `new/`, so the
//! lock a restore holds is the lock of the directory swapped in. The swap is
//! `renameat2(RENAME_EXCHANGE)`: at every instant the state directory is the
//! old one or the new one, complete. A rerun after `kill -9` reads the
//! journal and finishes from what the filesystem shows; a failure after the
//! swap swaps back (exit 7).

use crate::archive;
mod work;
use crate::error::{Class, Error, Result};
use crate::keys::Decrypt;
use crate::manifest::Manifest;
use crate::{clock, fault, lock, naming};
use nxs_format::state::{BOOTSTRAP_DIRS, BOOTSTRAP_FILES};
use nxs_sys::fs::{exchange, fsync_dir, parent, remove_tree};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use work::{exists, has_data, ino, not_ours, Journal, Work};

pub struct RestoreOptions {
    pub from: PathBuf,
    pub state_dir: PathBuf,
    pub keys: Decrypt,
    pub lock_wait: Duration,
    /// The state directory's lock, already held by the parent (install).
    pub lock_fd: Option<i32>,
    pub now: i64,
}

#[derive(Debug, Default)]
pub struct Restored {
    pub backup: PathBuf,
    pub created: String,
    pub source_version: String,
    pub files: usize,
    pub bytes: u64,
    pub pre_restore: Option<PathBuf>,
    /// Backups passed over in a directory, with why.
    pub skipped: Vec<(String, String)>,
    pub dropped: Vec<String>,
    /// This run finished a restore that a crash interrupted.
    pub resumed: bool,
}

/// Done with a work directory: renamed away in one step, then removed, so
/// that a crash never leaves a half-removed one that looks interrupted.
fn retire(state_dir: &Path, w: &Work) -> Result<()> {
    let name = w.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let trash = w.dir.with_file_name(format!("{name}.done-{}", std::process::id()));
    fault::effect("restore:retire")?;
    fs::rename(&w.dir, &trash).map_err(|e| Error::io("cannot rename", &w.dir, e))?;
    fsync_dir(parent(state_dir))?;
    let _ = remove_tree(&trash);
    Ok(())
}

/// Work directories retired by a run that died before removing them.
fn remove_retired(state_dir: &Path, w: &Work) {
    let prefix = format!("{}.done-", w.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    if let Ok(rd) = fs::read_dir(parent(state_dir)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) && not_ours(&e.path()).is_none() {
                let _ = remove_tree(&e.path());
            }
        }
    }
}

/// Links the machine's own files (lock, checkpoint, downgrade guard) into
/// the staged tree, afresh: the lock a restore holds is then the lock of
/// the directory swapped in, and a checkpoint rewritten since staging is
/// the one that stays.
fn link_bootstrap(state_dir: &Path, w: &Work) -> Result<()> {
    for f in BOOTSTRAP_FILES {
        let (from, to) = (state_dir.join(f), w.new.join(f));
        let _ = fs::remove_file(&to);
        if exists(&from) {
            fault::effect("restore:link-bootstrap")?;
            fs::hard_link(&from, &to).map_err(|e| Error::io("cannot link", &from, e))?;
        }
    }
    Ok(())
}

/// Rolls a staged restore forward from its journal. Returns where the old
/// state was kept.
fn finish(state_dir: &Path, w: &Work, j: &Journal, now: i64) -> Result<Option<PathBuf>> {
    if ino(state_dir) != Some(j.new_ino) {
        link_bootstrap(state_dir, w)?;
        fault::effect("restore:exchange")?;
        if let Err(e) = exchange(state_dir, &w.new) {
            // Nothing was swapped: the state directory is as it was.
            let _ = retire(state_dir, w);
            return Err(e);
        }
        fsync_dir(parent(state_dir))?;
    }
    if exists(&w.new) {
        // After the swap, `new/` holds the old state.
        fault::effect("restore:rename-old")?;
        fs::rename(&w.new, &w.old).map_err(|e| Error::io("cannot rename", &w.new, e))?;
    }
    // The bootstrap's directories stay with the machine: move them over.
    let mut moved = Vec::new();
    for d in BOOTSTRAP_DIRS {
        let (from, to) = (w.old.join(d), state_dir.join(d));
        if exists(&from) && !exists(&to) {
            let step = fault::effect("restore:settle")
                .and_then(|_| fs::rename(&from, &to).map_err(|e| Error::io("cannot move", &from, e)));
            if let Err(e) = step {
                return Err(roll_back(state_dir, w, &moved, e));
            }
            moved.push(*d);
        }
    }
    fsync_dir(state_dir)?;
    let mut kept = None;
    if exists(&w.old) {
        if has_data(&w.old) {
            let name = state_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let stamp = clock::stamp(now);
            let mut to = parent(state_dir).join(format!("{name}.pre-restore-{stamp}"));
            let mut n = 2;
            while exists(&to) {
                to = parent(state_dir).join(format!("{name}.pre-restore-{stamp}-{n}"));
                n += 1;
            }
            fault::effect("restore:keep-old")?;
            fs::rename(&w.old, &to).map_err(|e| Error::io("cannot keep the old state as", &to, e))?;
            kept = Some(to);
        } else {
            remove_tree(&w.old)?;
        }
        fsync_dir(parent(state_dir))?;
    }
    retire(state_dir, w)?;
    Ok(kept)
}

/// After a failure past the swap: the old state swapped back, then the
/// bootstrap's directories moved back into it, then the work directory
/// retired. Anything that cannot be put back is named, never removed.
fn roll_back(state_dir: &Path, w: &Work, moved: &[&str], cause: Error) -> Error {
    if let Err(e) = exchange(state_dir, &w.old) {
        return Error::new(
            Class::Io,
            format!("the restore failed ({}), and so did swapping the previous state back: {}", cause.msg, e.msg),
        )
        .hint(format!("run restore again to finish it; the previous state is in {}", w.old.display()));
    }
    let _ = fsync_dir(parent(state_dir));
    // From here `old/` holds the backup's tree, with the directories moved into it.
    let _ = fault::effect("restore:undo");
    let stuck: Vec<&str> =
        moved.iter().copied().filter(|d| fs::rename(w.old.join(d), state_dir.join(d)).is_err()).collect();
    if !stuck.is_empty() {
        return Error::new(
            Class::Io,
            format!(
                "the restore failed ({}); the previous state is back, but not its {}, still in {}",
                cause.msg,
                stuck.join(", "),
                w.old.display()
            ),
        )
        .hint(format!("move them back into {} by hand, then remove {}", state_dir.display(), w.dir.display()));
    }
    let _ = retire(state_dir, w);
    Error::new(
        Class::RolledBack,
        format!("the restore failed after the swap, and the previous state is back: {}", cause.msg),
    )
    .hint(cause.hint.unwrap_or_else(|| "fix the cause and run restore again".into()))
}

/// A restore is about to swap `state_dir` itself: it must be a real
/// directory on its parent's filesystem (a symlink would be swapped, not
/// its target; a mount point cannot be renamed).
fn swappable(state_dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(state_dir).map_err(|e| Error::io("cannot read", state_dir, e))?;
    if meta.file_type().is_symlink() {
        let real = fs::canonicalize(state_dir).unwrap_or_default();
        return Err(Error::usage(format!(
            "{} is a symbolic link; a restore swaps the directory itself",
            state_dir.display()
        ))
        .hint(format!("give --state-dir {}", real.display())));
    }
    let up = fs::metadata(parent(state_dir)).map_err(|e| Error::io("cannot read", parent(state_dir), e))?;
    if up.dev() != meta.dev() {
        return Err(Error::new(
            Class::Io,
            format!("{} is a mount point: a restore cannot swap it in one rename", state_dir.display()),
        )
        .hint("keep the state in a directory inside the mount (e.g. --state-dir MOUNT/nxs), or restore into another path and move it"));
    }
    Ok(())
}

/// The backups to try, newest first.
fn choose(from: &Path) -> Result<(Vec<PathBuf>, bool)> {
    let meta = fs::metadata(from).map_err(|e| Error::io("cannot read", from, e))?;
    if !meta.is_dir() {
        return Ok((vec![from.to_path_buf()], false));
    }
    let list = naming::candidates(from).map_err(|e| Error::io("cannot list", from, e))?;
    if list.is_empty() {
        return Err(Error::new(Class::Verify, format!("{} holds no backup (no *.age file)", from.display()))
            .hint("name the backup file itself, or the directory `backup --to` wrote"));
    }
    Ok((list.into_iter().map(|c| c.path).collect(), true))
}

fn same_request(from: &Path, j: &Journal) -> bool {
    let from = fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf());
    j.backup == from || j.backup.parent() == Some(from.as_path())
}

/// Stages the first of `list` that verifies to its last byte into `dir`
/// (made here, 0700: `dir/new` holds the backup), in one pass over each
/// file: decrypted, decompressed and written, every size and hash checked
/// on the way. One that fails is removed with all it staged, and in a
/// directory the next-newest is tried; the others are reported with why
/// they were passed over.
fn stage_newest(
    list: &[PathBuf],
    is_dir: bool,
    keys: &Decrypt,
    dir: &Path,
    skipped: &mut Vec<(String, String)>,
) -> Result<(PathBuf, archive::Opened)> {
    let mut classes = Vec::new();
    for path in list {
        eprintln!("  restoring from {}", path.display());
        remove_tree(dir)?;
        let new = dir.join("new");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&new)
            .map_err(|e| Error::io("cannot create", &new, e))?;
        // The swap needs RENAME_EXCHANGE on this filesystem: find out now,
        // on two directories of our own, rather than after staging.
        let probe = dir.join("probe");
        let swappable = fs::create_dir(&probe)
            .map_err(|e| Error::io("cannot create", &probe, e))
            .and_then(|_| exchange(&new, &probe))
            .and_then(|_| fs::remove_dir(&probe).map_err(|e| Error::io("cannot remove", &probe, e)));
        if let Err(e) = swappable {
            let _ = remove_tree(dir);
            return Err(e);
        }
        // Too big for the disk: refused as soon as the manifest says so,
        // whatever else the directory holds.
        let full = std::cell::Cell::new(false);
        let room = |need: u64| room_for(path, need, dir).inspect_err(|_| full.set(true));
        match archive::open_with(path, keys, Some(&new), &room) {
            Ok(o) => return Ok((path.clone(), o)),
            Err(e) => {
                let _ = remove_tree(dir);
                match e.class {
                    // In a directory, an unreadable file (a bad sector) is
                    // passed over like a corrupt one: an older copy may read.
                    Class::Verify | Class::Incompatible | Class::Io if is_dir && !full.get() => {
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        eprintln!("  skipped {name}: {}", e.msg);
                        classes.push(e.class);
                        skipped.push((name, e.msg));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    // A newer format everywhere is "upgrade" (4); anything corrupt or
    // undecryptable is "verification" (3); only unreadable files, "I/O" (5).
    let class = if classes.iter().all(|c| *c == Class::Incompatible) {
        Class::Incompatible
    } else if classes.contains(&Class::Verify) {
        Class::Verify
    } else {
        classes.first().copied().unwrap_or(Class::Verify)
    };
    let from = list.first().and_then(|p| p.parent()).unwrap_or(Path::new("."));
    Err(Error::new(class, format!("no backup in {} can be restored ({} tried)", from.display(), list.len()))
        .hint("each one's reason is above; the state directory is untouched"))
}

/// Staging directories of runs that died before the lock (their process
/// is gone): `<parent>/.<name>.nxs-restore.stage-<pid>`.
fn stage_dir(w: &Work, pid: u32) -> PathBuf {
    let name = w.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    w.dir.with_file_name(format!("{name}.stage-{pid}"))
}

/// Removes a run's staging directory when the run ends, unless it was
/// renamed into the work directory (then nothing is at its path).
struct Unstage<'a>(&'a Path);

impl Drop for Unstage<'_> {
    fn drop(&mut self) {
        let _ = remove_tree(self.0);
    }
}

fn remove_dead_stages(state_dir: &Path, w: &Work) {
    let name = w.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!("{name}.stage-");
    let Ok(rd) = fs::read_dir(parent(state_dir)) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive && not_ours(&e.path()).is_none() {
            let _ = remove_tree(&e.path());
        }
    }
}

pub fn restore(o: &RestoreOptions) -> Result<Restored> {
    let state_dir = &o.state_dir;
    let w = Work::for_state_dir(state_dir)?;
    let mut out = Restored::default();
    // Nothing is written in the state directory, the lock included, until
    // a backup has been staged beside it and verified to its last byte, in
    // one pass; only a restore that a crash interrupted goes first. A
    // backup that fails leaves nothing behind.
    remove_dead_stages(state_dir, &w);
    let stage = stage_dir(&w, std::process::id());
    // Whatever ends this run before the staged backup becomes the work
    // directory takes the staging with it.
    let _unstage = Unstage(&stage);
    let mut staged = None;
    // A state directory that cannot be swapped is refused before staging.
    if exists(state_dir) {
        swappable(state_dir)?;
    }
    if !exists(&w.dir) {
        let (list, is_dir) = choose(&o.from)?;
        fault::effect("restore:stage")?;
        staged = Some(stage_newest(&list, is_dir, &o.keys, &stage, &mut out.skipped)?);
    }
    // A state directory that is a link: the restore's own refusal, which
    // names the real path, before the lock's.
    if fs::symlink_metadata(state_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        swappable(state_dir)?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| Error::io("cannot create the state directory", state_dir, e))?;
    let _lock = lock::take(state_dir, o.lock_wait, o.lock_fd)?;
    fault::effect("restore:locked")?;

    // A restore that a crash interrupted is finished first, or discarded if
    // it had not been staged.
    if resume(state_dir, &w, o, &mut out)? {
        return Ok(out);
    }
    let staged = match staged {
        Some(p) => p,
        None => {
            let (list, is_dir) = choose(&o.from)?;
            stage_newest(&list, is_dir, &o.keys, &stage, &mut out.skipped)?
        }
    };
    swap_in(state_dir, &w, o, &stage, staged, &mut out)?;
    Ok(out)
}

/// Finishes, or discards, what a crashed restore left in the work
/// directory. `true` if that restore was this one: nothing more to do.
fn resume(state_dir: &Path, w: &Work, o: &RestoreOptions, out: &mut Restored) -> Result<bool> {
    remove_retired(state_dir, w);
    if !exists(&w.dir) {
        return Ok(false);
    }
    let journal = fs::read_to_string(&w.journal).ok();
    match journal.as_deref().and_then(Journal::parse) {
        Some(j) if ino(state_dir) != Some(j.new_ino) && !exists(&w.new) => {
            // A rollback had swapped the old state back: bring back what
            // it had not, and start again.
            for d in BOOTSTRAP_DIRS {
                let (from, to) = (w.old.join(d), state_dir.join(d));
                if exists(&from) && !exists(&to) {
                    fs::rename(&from, &to).map_err(|e| Error::io("cannot move back", &from, e))?;
                }
            }
            eprintln!("  an earlier restore was rolled back; starting again");
            retire(state_dir, w)?;
        }
        Some(j) => {
            eprintln!("  finishing the restore of {} that was interrupted", j.backup.display());
            let staged = fs::read(&w.manifest).ok().and_then(|m| Manifest::parse(&m).ok());
            if ino(state_dir) != Some(j.new_ino) {
                let m = staged
                    .as_ref()
                    .ok_or_else(|| Error::new(Class::Io, format!("cannot read {}", w.manifest.display())))?;
                if let Err(e) = archive::check_tree(&w.new, m) {
                    let _ = retire(state_dir, w);
                    return Err(e.hint("the staged copy changed after the crash; it was discarded: run restore again"));
                }
            }
            out.pre_restore = finish(state_dir, w, &j, o.now)?;
            if same_request(&o.from, &j) {
                if let Some(m) = staged {
                    describe(out, &m);
                }
                out.backup = j.backup;
                out.resumed = true;
                return Ok(true);
            }
        }
        None if journal.is_some() || exists(&w.old) => {
            return Err(Error::new(
                Class::Io,
                format!("{} holds an interrupted restore whose journal cannot be read", w.dir.display()),
            )
            .hint("it may hold the previous state (old/): look inside, move what you need, remove it, then run restore again"));
        }
        None => {
            eprintln!("  discarding {}: a restore interrupted before its backup was fully checked", w.dir.display());
            remove_tree(&w.dir)?;
        }
    }
    Ok(false)
}

/// Swaps the staged, verified backup in for the state directory, under
/// the lock: it becomes the work directory, is made durable, then the
/// journal is written and the swap finished.
fn swap_in(
    state_dir: &Path,
    w: &Work,
    o: &RestoreOptions,
    stage: &Path,
    (path, opened): (PathBuf, archive::Opened),
    out: &mut Restored,
) -> Result<()> {
    let abs = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let checked = swappable(state_dir).and_then(|_| match abs.to_string_lossy().contains('\n') {
        true => Err(Error::usage(format!("{:?}: a backup's path may not hold a newline", abs))),
        false => Ok(()),
    });
    checked?;
    // The staged backup becomes the work directory, under the lock.
    fs::rename(stage, &w.dir).map_err(|e| Error::io("cannot rename", stage, e))?;
    fsync_dir(parent(state_dir))?;
    for d in &opened.dropped {
        eprintln!("  not restored: {d} (the bootstrap's own; this machine keeps its own)");
    }
    // Everything checked: make it durable, then write the journal.
    fault::effect("restore:staged")?;
    sync_tree(&w.new)?;
    let j = Journal { backup: abs.clone(), sha256: opened.sha256, new_ino: ino(&w.new).unwrap_or(0) };
    // The work directory's copy names every hash inline (format 1's
    // text), whatever format the backup was: a rerun re-checks `new/` by it.
    nxs_sys::fs::write_atomic(
        &w.manifest,
        Manifest { format: 1, ..opened.manifest.clone() }.to_text().as_bytes(),
        0o600,
    )?;
    fault::effect("restore:journal")?;
    nxs_sys::fs::write_atomic(&w.journal, j.to_text().as_bytes(), 0o600)?;
    eprintln!("  verified; swapping it in for {}", state_dir.display());
    out.pre_restore = finish(state_dir, w, &j, o.now)?;
    out.backup = abs;
    describe(out, &opened.manifest);
    out.dropped = opened.dropped;
    Ok(())
}

fn describe(out: &mut Restored, m: &Manifest) {
    out.created = m.created.clone();
    out.source_version = m.source_version.clone();
    out.files = m.files().count();
    out.bytes = m.files().map(|(_, s)| s).sum();
}

/// Refuses, before staging, a backup whose files would not fit beside the
/// state directory (the verification pass has read its manifest).
fn room_for(path: &Path, need: u64, dir: &Path) -> Result<()> {
    let Ok(free) = nxs_sys::fs::free_bytes(dir) else { return Ok(()) };
    // Files round up to blocks; a margin of 1 % and 1 MiB covers it.
    let want = need + need / 100 + (1 << 20);
    if free < want {
        return Err(Error::new(
            Class::Io,
            format!(
                "{} needs {} MiB to stage, and {} has {} MiB free",
                path.display(),
                want >> 20,
                dir.display(),
                free >> 20
            ),
        )
        .hint("free some space beside the state directory; nothing was written"));
    }
    Ok(())
}

/// Makes a staged tree durable: one `syncfs` on its filesystem.
fn sync_tree(dir: &Path) -> Result<()> {
    let d = fs::File::open(dir).map_err(|e| Error::io("cannot open", dir, e))?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io("cannot sync", dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

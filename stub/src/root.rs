//! The root switch: the root and its two siblings (`.<root-name>.nxs-staging`,
//! `.<root-name>.nxs-previous`), staging a verified bundle beside the root,
//! switching it in atomically, rolling back, and repairing what an
//! interrupted switch left.
//!
//! Architecture invariant: the stub writes only inside the root, these two
//! siblings and the state directory. Every operation here goes through the
//! root's parent, held open ([`crate::door::Dir`]): nothing is followed.

use crate::bundle::Bundle;
use crate::door::Dir;
use crate::error::{Class, Error, Result};
use crate::extract::{self, Progress, Sink};
use crate::fsx;
use nxs_format::checkpoint::Staging;
use nxs_format::{hex, Manifest, RECORD_DIR};
use std::fs;
use std::path::{Path, PathBuf};

/// The root and its two siblings, on the same filesystem, so that the
/// switch into place is a rename. Every operation on them goes through
/// their parent directory, held open ([`Layout::parent_dir`]): they are
/// looked at without following links, and renamed relative to it.
pub struct Layout {
    pub root: PathBuf,
    pub staging: PathBuf,
    pub previous: PathBuf,
    root_name: String,
    staging_name: String,
    previous_name: String,
}

/// The file that named a staging directory's payload before format 3 of
/// the checkpoint recorded it; removed when found.
fn old_staging_id(root_name: &str) -> String {
    format!(".{root_name}.nxs-staging.id")
}

impl Layout {
    pub fn new(root: &Path) -> Result<Layout> {
        let root = fsx::absolute(root)?;
        let name = root
            .file_name()
            .ok_or_else(|| Error::usage(format!("{} cannot be an install root", root.display())))?
            .to_str()
            .ok_or_else(|| Error::usage(format!("{}: the root's name is not UTF-8", root.display())))?
            .to_string();
        let parent = fsx::parent(&root).to_path_buf();
        let (staging_name, previous_name) = (format!(".{name}.nxs-staging"), format!(".{name}.nxs-previous"));
        Ok(Layout {
            staging: parent.join(&staging_name),
            previous: parent.join(&previous_name),
            root,
            root_name: name,
            staging_name,
            previous_name,
        })
    }

    fn parent(&self) -> &Path {
        fsx::parent(&self.root)
    }

    /// Opens the root's parent (made if missing, with `create`). The path
    /// to it is the operator's and may pass through links (`/opt` often is
    /// one); the parent itself must not let others swap the names in it:
    /// owned by root or by this user, and not writable by others unless
    /// sticky (as `/tmp` is, where others cannot rename what is ours).
    pub fn parent_dir(&self, create: bool) -> Result<Dir> {
        let parent = self.parent();
        if create {
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        let d = Dir::open_following(parent)?;
        let st = d.stat()?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if st.st_uid != 0 && st.st_uid != me {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is owned by uid {}: whoever owns it could swap the install under nxs",
                    parent.display(),
                    st.st_uid
                ),
            )
            .hint("install into a directory owned by root or by you"));
        }
        if st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 == 0 {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is writable by every user and not sticky (mode {:o})",
                    parent.display(),
                    st.st_mode & 0o7777
                ),
            )
            .hint("anyone could swap the install under nxs; choose another place for --root"));
        }
        // A group that may write there could swap the staging directory
        // for a link between two renames; root's group is root's.
        if st.st_mode & 0o020 != 0 && st.st_mode & 0o1000 == 0 && st.st_gid != 0 {
            return Err(Error::new(
                Class::Io,
                format!(
                    "{} is writable by group {} and not sticky (mode {:o})",
                    parent.display(),
                    st.st_gid,
                    st.st_mode & 0o7777
                ),
            )
            .hint("its members could swap the install under nxs; `chmod g-w` it, or choose another place for --root"));
        }
        Ok(d)
    }

    /// Refuses a root, staging or previous directory that is a link,
    /// not a directory, or not this user's, before anything reads it.
    pub fn check(&self, parent: &Dir) -> Result<()> {
        for name in [&self.root_name, &self.staging_name, &self.previous_name] {
            if let Some(st) = parent.lstat(name)? {
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    let e = crate::door::refuse(&parent.join(name), &st, "directory");
                    return Err(if name == &self.root_name { e.hint("choose another --root") } else { e });
                }
                // Opening checks the owner and the mode.
                parent.subdir(name, false)?;
            }
        }
        // An earlier stub's staging id: removed when staging starts, and
        // only if it is a regular file.
        parent.expect_file(&old_staging_id(&self.root_name))?;
        Ok(())
    }

    /// The install record of the root, staging or previous directory.
    fn record(&self, parent: &Dir, name: &str) -> Result<Option<Manifest>> {
        match parent.subdir(name, false)? {
            Some(d) => installed_manifest_in(&d),
            None => Ok(None),
        }
    }

    /// [`check`](Self::check), where the parent exists at all.
    pub fn check_if_present(&self) -> Result<()> {
        if crate::door::lstat_path(self.parent()).is_none() {
            return Ok(());
        }
        self.check(&self.parent_dir(false)?)
    }

    /// Whether `previous` holds an install (an interrupted upgrade's).
    pub fn has_previous(&self) -> Result<bool> {
        Ok(self.record(&self.parent_dir(false)?, &self.previous_name)?.is_some())
    }

    fn exists(&self, parent: &Dir, name: &str) -> Result<bool> {
        Ok(parent.lstat(name)?.is_some())
    }

    fn remove(&self, parent: &Dir, name: &str) -> Result<()> {
        if self.exists(parent, name)? {
            fsx::remove_tree(&parent.join(name))?;
        }
        Ok(())
    }
}

/// The install record, written into staging: the verified manifest
/// bytes and the signature region they came with (docs/FORMAT.md, "The
/// install record").
fn write_record(layout: &Layout, staging: &crate::door::Dir, b: &Bundle) -> Result<()> {
    fsx::remove_tree(&layout.staging.join(RECORD_DIR))?;
    let rec = staging.subdir(RECORD_DIR, true)?.expect("created");
    rec.write_atomic("manifest", &b.manifest_bytes, 0o644)?;
    let name = if b.manifest.format >= 4 { crate::bundle::RECORD_TRUST } else { crate::bundle::RECORD_SIGNATURE };
    rec.write_atomic(name, b.signature.as_bytes(), 0o644)?;
    if b.manifest.tiers.is_some() {
        let tier = format!("{}\n", b.selection.tier);
        rec.write_atomic(crate::bundle::RECORD_TIER, tier.as_bytes(), 0o644)?;
    }
    // SAFETY: fchmod on the descriptor just opened.
    unsafe { libc::fchmod(rec.fd(), 0o755) };
    Ok(())
}

/// Extracts the verified bundle into a fresh staging directory, with the
/// install record, ready to be switched in.
///
/// The staging directory is made here, 0700, and its identity (device and
/// inode) handed to `created` before a file is written, so the caller can
/// record it; `created` hears again, about once a second, how many frames
/// are done (format 3). With `resume`, the staging directory of an
/// interrupted run of the same payload is kept, if and only if it is still that very
/// directory (the identity recorded then); its files are kept only if each
/// is a regular file with one link, of this user, whose bytes match.
///
/// # Security
/// Nothing found in staging is trusted: a directory that is not the one
/// recorded is removed and made afresh, and a resumed one keeps only what
/// `extract` re-verifies.
pub fn stage(
    b: &Bundle,
    layout: &Layout,
    record: bool,
    progress: bool,
    resume: Option<&Staging>,
    created: &mut dyn FnMut(Staging) -> Result<()>,
) -> Result<()> {
    let parent = layout.parent_dir(true)?;
    layout.check(&parent)?;
    crate::fault::effect("stage")?;
    let id = hex::encode(&crate::bundle::payload_id(&b.manifest));
    let old_id = old_staging_id(&layout.root_name);
    if parent.expect_file(&old_id)?.is_some() {
        parent.remove_file(&old_id)?;
    }
    let resuming = match resume {
        Some(s) if s.payload_sha256 == id => match parent.subdir(&layout.staging_name, false)? {
            Some(d) => d.identity()? == (s.dev, s.ino),
            None => false,
        },
        _ => false,
    };
    let mut staging = match resume {
        Some(s) if resuming => s.clone(),
        _ => {
            // Anything else there is not provably ours: start afresh.
            layout.remove(&parent, &layout.staging_name)?;
            parent.sync()?;
            let d = parent.subdir(&layout.staging_name, true)?.expect("created");
            let (dev, ino) = d.identity()?;
            let st = Staging { payload_sha256: id, dev, ino, frames_done: 0 };
            created(st.clone())?;
            st
        }
    };
    // From here on, a failure takes the staging directory with it.
    let unstage = Unstage { layout, parent: &parent, armed: true };
    let m = &b.manifest;
    // A rerun reads the bundle only from the first frame staging does not
    // hold intact (format 3); before, it reads it all again.
    let (start, kept) = match resuming && m.format >= 3 {
        true => extract::resume_point(m, &b.selection, &layout.staging, staging.frames_done as usize, progress)?,
        false => (extract::Start::default(), 0),
    };
    if start.frame > 0 {
        let skipped: u64 = m.frames[..start.frame].iter().filter(|f| !f.shared).map(|f| f.compressed).sum();
        eprintln!(
            "  resuming at payload frame {} of {}: {kept} file(s) staged before it are intact; {skipped} bytes of the bundle not read again",
            start.frame,
            m.frames.len(),
        );
    }
    // Every entry is read and hashed, the tier's or not: the progress
    // counts them all.
    let mut p = Progress::start_if(progress, "extract", m.files_total());
    let mut done = |frames: usize| {
        staging.frames_done = frames as u64;
        created(staging.clone())
    };
    let sink = Sink::Dir { root: &layout.staging, resume: resuming };
    let reused = extract::run_from(b, &sink, &mut p, start, &mut done)? + kept;
    p.end();
    if resuming {
        eprintln!("  resumed: {reused} file(s) already staged and verified were kept");
    }
    let staging = parent.subdir(&layout.staging_name, false)?.ok_or_else(|| {
        Error::new(Class::Io, format!("{} disappeared while nxs filled it", layout.staging.display()))
    })?;
    if record {
        write_record(layout, &staging, b)?;
    }
    staging.sync()?;
    unstage.commit();
    Ok(())
}

/// A staging directory being filled, removed when dropped unless the run
/// commits it: nothing of a bundle that failed verification, or of a run
/// that failed while staging, stays behind. This is rustup's transaction
/// guard (`src/dist/component/transaction.rs`: changes are undone on drop
/// unless committed). A SIGKILL runs no drop: the next run's staging rules
/// decide what of it is kept.
struct Unstage<'a> {
    layout: &'a Layout,
    parent: &'a Dir,
    armed: bool,
}

impl Unstage<'_> {
    fn commit(mut self) {
        self.armed = false;
    }
}

impl Drop for Unstage<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.layout.remove(self.parent, &self.layout.staging_name);
        }
    }
}

/// Switches the staged tree into the root. An existing install is swapped
/// out atomically (`RENAME_EXCHANGE`) and kept as `previous`; the parent
/// directory is fsynced after each rename. Every rename is relative to the
/// parent, held open.
pub fn commit(layout: &Layout) -> Result<()> {
    let parent = layout.parent_dir(false)?;
    layout.check(&parent)?;
    let (root, staging, previous) = (&layout.root_name, &layout.staging_name, &layout.previous_name);
    crate::fault::effect("commit")?;
    // Staging stays 0700 while it is filled and until now, so nothing can
    // be planted in it; the root it becomes is readable as an ordinary
    // install is.
    let staged = parent.subdir(staging, false)?.ok_or_else(|| {
        Error::new(Class::Io, format!("{} is missing: nothing to switch in", layout.staging.display()))
    })?;
    // SAFETY: fchmod on an open descriptor of the staging directory.
    if unsafe { libc::fchmod(staged.fd(), 0o755) } != 0 {
        return Err(Error::io("cannot set the mode of", &layout.staging, std::io::Error::last_os_error()));
    }
    let root_is_empty = match parent.subdir(root, false)? {
        Some(d) => Some(d.names()?.is_empty()),
        None => None,
    };
    match root_is_empty {
        Some(true) => {
            parent.remove_dir(root)?;
        }
        Some(false) => {
            layout.remove(&parent, previous)?;
            crate::fault::effect("commit-exchange")?;
            match parent.exchange(staging, root) {
                Ok(()) => {
                    parent.sync()?;
                    crate::fault::effect("commit-previous")?;
                    parent.rename(staging, previous)?;
                    return parent.sync();
                }
                // No RENAME_EXCHANGE on this filesystem: two renames. A crash
                // between them leaves no root and a complete `previous`,
                // which `repair` puts back on the next run.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                    parent.rename(root, previous)?;
                    parent.sync()?;
                    crate::fault::effect("commit-second-rename")?;
                }
                Err(e) => return Err(Error::io("cannot switch in the new install at", &layout.root, e)),
            }
        }
        None => {}
    }
    parent.rename(staging, root)?;
    parent.sync()
}

/// Puts `previous` back in place of the root, atomically. With `keep`, the
/// version rolled back from becomes `previous` (so a second rollback rolls
/// forward); without, it is removed. Idempotent: safe to run again after a
/// crash at any point.
pub fn roll_back(layout: &Layout, failed_payload: Option<&[u8; 32]>, keep: bool) -> Result<()> {
    let parent = layout.parent_dir(false)?;
    layout.check(&parent)?;
    let root_payload = layout.record(&parent, &layout.root_name)?.map(|m| crate::bundle::payload_id(&m));
    let already_back = match (failed_payload, root_payload) {
        (Some(f), Some(r)) => &r != f,
        _ => false,
    };
    if !already_back {
        if layout.record(&parent, &layout.previous_name)?.is_none() {
            return Err(Error::new(
                Class::Io,
                format!("there is no previous install at {} to roll back to", layout.previous.display()),
            )
            .hint("rollback needs an earlier install of this root"));
        }
        crate::fault::effect("rollback-exchange")?;
        parent
            .exchange(&layout.previous_name, &layout.root_name)
            .map_err(|e| Error::io("cannot swap the previous install back into", &layout.root, e))?;
        parent.sync()?;
    }
    if !keep {
        crate::fault::effect("rollback-cleanup")?;
        layout.remove(&parent, &layout.previous_name)?;
        parent.sync()?;
    }
    Ok(())
}

/// Repairs what an interrupted run can leave beside the root: a root moved
/// aside but not yet replaced, or the old install swapped out into staging
/// but not yet renamed to `previous`.
pub fn repair(layout: &Layout, payload: &[u8; 32]) -> Result<()> {
    let Ok(parent) = layout.parent_dir(false) else { return Ok(()) };
    layout.check(&parent)?;
    if !layout.exists(&parent, &layout.root_name)? && layout.record(&parent, &layout.previous_name)?.is_some() {
        eprintln!("  note: restoring {} from an interrupted switch", layout.root.display());
        parent.rename(&layout.previous_name, &layout.root_name)?;
        parent.sync()?;
    }
    if let Some(m) = layout.record(&parent, &layout.staging_name)? {
        if &crate::bundle::payload_id(&m) != payload && layout.record(&parent, &layout.root_name)?.is_some() {
            // A complete other install in staging is the one swapped out.
            layout.remove(&parent, &layout.previous_name)?;
            parent.rename(&layout.staging_name, &layout.previous_name)?;
            parent.sync()?;
        }
    }
    Ok(())
}

/// The install record as found in a root, its signature not checked: good
/// for deciding what DETECTING and `rollback` do, never for trusting what
/// the root holds (that is [`crate::bundle::Attested`]).
#[derive(Debug)]
pub struct Found {
    pub manifest: Manifest,
}

/// The install record in a root, if any: the manifest it was installed from.
pub fn installed_manifest(layout: &Layout) -> Result<Option<Found>> {
    match layout.parent_dir(false) {
        Ok(parent) => Ok(layout.record(&parent, &layout.root_name)?.map(|manifest| Found { manifest })),
        Err(_) if crate::door::lstat_path(layout.parent()).is_none() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The install record inside an open root: read beneath it, through no
/// link, regular file only.
fn installed_manifest_in(root: &Dir) -> Result<Option<Manifest>> {
    let Some(bytes) = crate::bundle::read_record(root, "manifest")? else { return Ok(None) };
    let m = Manifest::parse(&bytes).map_err(|e| {
        let p = root.join(&format!("{RECORD_DIR}/manifest"));
        Error::new(Class::Io, format!("{}: damaged install record: {e}", p.display()))
    })?;
    crate::bundle::record_view(root, m).map(Some)
}

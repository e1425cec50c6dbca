//! Walking the payload's tar stream against the signed manifest, entry by
//! entry, and either checking it (`verify`) or writing it into a fresh
//! staging directory (`extract`, `install`).
//!
//! # Security
//! The manifest is the whole truth; the tar stream must match it exactly.
//! The stream is read by [`crate::tarwalk`], which accepts only the tar the
//! bundler writes. Entry i of the tar stream must be manifest entry i: the
//! same path, the same type (directory, regular file or the declared link)
//! and the same size, and its header the manifest's mode and mtime, so
//! that stock tar extracts what the stub does. Anything else is refused,
//! never skipped. Modes applied come from the manifest. Files are created
//! with O_EXCL in a staging directory this run created, so nothing can
//! redirect a write through a link. Every file is hashed as it is written
//! and compared with the manifest.

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use nxs_format::{hex, EntryKind, FirstMember, Frame, Manifest, Selection};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

mod frames;
mod resume;
mod tree;
mod writer;

use frames::FrameIndex;
pub use resume::resume_point;
pub use tree::check_tree;
use tree::hash_reader;
use writer::{Msg, Writer, WRITE_CHUNK};

/// Where extracted bytes go.
pub enum Sink<'a> {
    /// Nowhere: hash and compare only.
    Check,
    /// Into this staging directory, which must exist. With `resume`, it may
    /// hold entries from an interrupted run: directories are kept, files
    /// that match the manifest byte for byte are kept, anything else there
    /// is replaced.
    Dir { root: &'a Path, resume: bool },
}

pub use crate::events::Progress;

fn region_err(label: &Path, msg: impl std::fmt::Display) -> Error {
    crate::error::tampered(format!("{}: {msg}", label.display()))
}

/// Where a walk of the payload starts: at its beginning, or (format 3) at
/// any frame whose index names the member that begins in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    pub frame: usize,
    /// The manifest entry of the first member read.
    pub entry: usize,
    /// That member's offset in the whole tar stream.
    pub tar_offset: u64,
}

impl Start {
    /// The start at frame `f` of `m`, if a reader can start there.
    pub fn at_frame(m: &Manifest, f: usize) -> Option<Start> {
        if f == 0 {
            return Some(Start::default());
        }
        if m.format < 3 {
            return None;
        }
        let first = m.frames.get(f)?.first?;
        let tar_offset = m.frames[..f].iter().map(|x| x.raw).sum::<u64>() + first.offset;
        Some(Start { frame: f, entry: first.entry as usize, tar_offset })
    }
}

/// The frame in which entry `entry`'s member begins, or one before it
/// where a reader can start: format 3 only, else the first.
pub fn frame_of(m: &Manifest, entry: usize) -> usize {
    if m.format < 3 {
        return 0;
    }
    m.frames.iter().rposition(|f| f.first.is_some_and(|x| x.entry as usize <= entry)).unwrap_or(0)
}

/// Called while a walk fills a directory, with the number of leading
/// frames whose entries were all handed to the disk: where a rerun may
/// start reading. Called about once a second at most.
pub type FramesDone<'a> = &'a mut dyn FnMut(usize) -> Result<()>;

/// Reads the payload of `b` against its manifest into `sink`. Returns how
/// many files a resumed staging directory already held, verified.
pub fn run(b: &Bundle, sink: &Sink, progress: &mut Progress) -> Result<usize> {
    run_from(b, sink, progress, Start::default(), &mut |_| Ok(()))
}

/// As [`run`], from `start`: the entries before it must already be in the
/// sink (checked by [`resume_point`]).
pub fn run_from(b: &Bundle, sink: &Sink, progress: &mut Progress, start: Start, done: FramesDone) -> Result<usize> {
    let reader = b.payload_from(start.frame).map_err(|e| region_err(&b.path, format!("payload: {e}")))?;
    let walk = Walk { m: &b.manifest, sel: Some(&b.selection), label: &b.path, sink };
    let (reused, reader) = walk.run(reader, progress, start, done)?;
    if !reader.finished() {
        return Err(region_err(&b.path, "payload was not read to its end"));
    }
    finish(sink, &b.view)?;
    Ok(reused)
}

/// Walks a tar stream against manifest `m`, entry by entry, into `sink`;
/// `label` names the bundle in errors. Returns the reused-file count and
/// the reader, read to its end.
///
/// # Security
/// The stream is untrusted even when signed. It must be in the bundler's
/// tar subset ([`crate::tarwalk`]: no PAX, sparse or other extension, every
/// field spelled as the bundler spells it), and hold exactly `m`'s entries
/// in order: directories, regular files and the declared links, with the
/// declared sizes, digests and modes and the manifest's mtime, and only
/// zero padding after its end.
pub fn walk<R: Read>(
    reader: R,
    m: &nxs_format::Manifest,
    label: &Path,
    sink: &Sink,
    progress: &mut Progress,
) -> Result<(usize, R)> {
    Walk { m, sel: None, label, sink }.run(reader, progress, Start::default(), &mut |_| Ok(()))
}

/// One walk of a tar stream against a manifest: into `sink` the entries
/// of `sel` (all when `None`); the others are read and checked the same
/// way, and written nowhere.
struct Walk<'a> {
    m: &'a Manifest,
    sel: Option<&'a Selection>,
    label: &'a Path,
    sink: &'a Sink<'a>,
}

impl Walk<'_> {
    /// Where entry `i` goes.
    fn sink_of(&self, i: usize) -> &Sink<'_> {
        match self.sel {
            Some(sel) if !sel.takes(i) => &Sink::Check,
            _ => self.sink,
        }
    }

    /// As [`walk`], of a stream that starts at `start`; format 3 members
    /// must begin where the frame index says, and `done` hears how far the
    /// disk has got.
    fn run<R: Read>(&self, reader: R, progress: &mut Progress, start: Start, done: FramesDone) -> Result<(usize, R)> {
        walk_members(self, reader, progress, start, done)
    }
}

fn walk_members<R: Read>(
    w: &Walk,
    reader: R,
    progress: &mut Progress,
    start: Start,
    done: FramesDone,
) -> Result<(usize, R)> {
    use crate::tarwalk::Kind;
    let (m, label, sink) = (w.m, w.label, w.sink);
    let mut reused = 0usize;
    let mut tar = crate::tarwalk::TarWalk::resume(reader, start.tar_offset, start.entry);
    let mut count = start.entry;
    let mut index = FrameIndex::new(m, start.frame);
    let mut last_done = std::time::Instant::now();
    let mut buf = vec![0u8; WRITE_CHUNK];
    // Files are written by a thread of their own, so that the kernel's copy
    // of their bytes overlaps with hashing and decoding here.
    let mut writer = matches!(sink, Sink::Dir { .. }).then(Writer::new);
    loop {
        if let Some(w) = &writer {
            w.check()?;
        }
        let Some(member) = tar.next_member().map_err(|e| region_err(label, format!("payload {e}")))? else {
            break;
        };
        let entry = &mut tar;
        let want = entry_for(m, count, &member, label)?;
        let name = want.path.as_str();
        let sink = w.sink_of(count);
        fault_point(sink, writer.as_ref(), name)?;
        let (ty, size) = (member.kind, member.size);
        check_declared(m, want, &member, count, label)?;
        if let Some(frame) =
            index.member(count, member.offset).map_err(|e| region_err(label, format!("payload {e}")))?
        {
            // Every entry before this one is with the writer: once it has
            // written them, a rerun may start reading at this frame.
            if let Some(w) = writer.as_ref().filter(|_| last_done.elapsed() >= std::time::Duration::from_secs(1)) {
                w.drain()?;
                done(frame)?;
                last_done = std::time::Instant::now();
            }
        }
        match (&want.kind, ty) {
            (EntryKind::Dir, Kind::Directory) => make_dir(sink, want)?,
            (EntryKind::Link { target }, Kind::Symlink) => make_link(sink, want, target, &member.link, label)?,
            (EntryKind::File { size: want_size, sha256 }, Kind::Regular) => {
                match open_staged(sink, want, *want_size, sha256)? {
                    Staged::Kept => {
                        reused += 1;
                        // Still read the entry: the payload is checked whole.
                        copy_entry(entry, size, None, &mut buf, progress, label, name, sha256)?;
                    }
                    Staged::Fresh(out) => {
                        let to = out.as_ref().zip(writer.as_ref()).map(|((f, p), w)| (w, f, p));
                        copy_entry(entry, size, to, &mut buf, progress, label, name, sha256)?;
                        if let (Some((f, p)), Some(w)) = (out, &writer) {
                            w.send(Msg::Seal(f, p, want.mode))?;
                        }
                    }
                }
            }
            _ => unreachable!("check_declared refused it"),
        }
        count += 1;
    }
    if let Some(w) = writer.take() {
        w.finish()?;
    }
    let end = tar.end_offset().expect("the walk ended at the end-of-archive marker");
    check_end(m, count, end, &mut index, label)?;
    // Past the end-of-archive marker only zero padding may follow; reading
    // it to the end also completes the payload hash.
    let reader = zeros_to_the_end(tar.into_inner(), &mut buf, label)?;
    Ok((reused, reader))
}

/// The stream ended with every entry the manifest lists, where the frame
/// index says it ends.
fn check_end(m: &Manifest, count: usize, end: u64, index: &mut FrameIndex, label: &Path) -> Result<()> {
    if count != m.entries.len() {
        return Err(region_err(
            label,
            format!("payload ends after {count} of the {} entries the manifest lists (truncated?)", m.entries.len()),
        ));
    }
    index.end(count, end).map_err(|e| region_err(label, format!("payload {e}")))
}

/// The manifest entry the member `count` of the stream must be: the same
/// path, byte for byte.
fn entry_for<'m>(
    m: &'m Manifest,
    count: usize,
    member: &crate::tarwalk::Member,
    label: &Path,
) -> Result<&'m nxs_format::Entry> {
    let want = m.entries.get(count).ok_or_else(|| {
        region_err(label, format!("payload holds more entries than the {} the manifest lists", m.entries.len()))
    })?;
    if member.path != want.path.as_str().as_bytes() {
        return Err(region_err(
            label,
            format!("payload entry {count} is `{}`, the manifest says `{}`", member.path.escape_ascii(), want.path),
        ));
    }
    Ok(want)
}

/// A crash test kills the run here: with everything before this entry
/// written, so where the rerun starts is deterministic.
fn fault_point(sink: &Sink, writer: Option<&Writer>, name: &str) -> Result<()> {
    if let Sink::Dir { .. } = sink {
        if cfg!(feature = "fault-injection") {
            if let Some(w) = writer {
                w.drain()?;
            }
        }
        crate::fault::effect(&format!("extract:{name}"))?;
    }
    Ok(())
}

fn zeros_to_the_end<R: Read>(mut reader: R, buf: &mut [u8], label: &Path) -> Result<R> {
    loop {
        let n = reader.read(buf).map_err(|e| region_err(label, format!("payload: {e}")))?;
        if n == 0 {
            return Ok(reader);
        }
        if buf[..n].iter().any(|&x| x != 0) {
            return Err(region_err(label, "payload has data after the end of its tar stream"));
        }
    }
}

/// A member's header against its manifest entry: the kind and size it
/// declares, and the mode and mtime that GNU tar and bsdtar apply from the
/// header, which must be what the stub applies (modes) or what the
/// manifest signs (mtime).
fn check_declared(
    m: &Manifest,
    want: &nxs_format::Entry,
    member: &crate::tarwalk::Member,
    count: usize,
    label: &Path,
) -> Result<()> {
    use crate::tarwalk::Kind;
    let (ty, size) = (member.kind, member.size);
    let name = want.path.as_str();
    let declared = match (&want.kind, ty) {
        (EntryKind::Dir, Kind::Directory) | (EntryKind::Link { .. }, Kind::Symlink) => size == 0,
        (EntryKind::File { size: want_size, .. }, Kind::Regular) => size == *want_size,
        _ => false,
    };
    if !declared {
        return Err(region_err(
            label,
            format!(
                "payload entry `{name}` is a {ty:?} of {size} bytes, which the manifest does not declare (it says {})",
                describe(&want.kind)
            ),
        ));
    }
    if member.mode != want.mode || member.mtime != m.mtime {
        return Err(region_err(
            label,
            format!(
                "payload entry {count} (`{name}`, at byte {}) has mode {:o} and mtime {} in its tar header, the manifest says mode {:o} and mtime {}",
                member.offset, member.mode, member.mtime, want.mode, m.mtime
            ),
        ));
    }
    Ok(())
}

/// A directory entry, made in staging (kept if a resumed run made it).
fn make_dir(sink: &Sink, want: &nxs_format::Entry) -> Result<()> {
    if let Sink::Dir { root, resume } = sink {
        let p = root.join(want.path.as_str());
        let kept = *resume && staged_dir_is_ours(&p);
        if !kept {
            if *resume {
                remove_any(&p)?;
            }
            fs::create_dir(&p).map_err(|e| Error::io("cannot create directory", &p, e))?;
        }
    }
    Ok(())
}

/// A link entry: its target must be the manifest's; then made in staging
/// (kept if a resumed run made it, with that target).
fn make_link(sink: &Sink, want: &nxs_format::Entry, target: &str, got: &[u8], label: &Path) -> Result<()> {
    if got != target.as_bytes() {
        return Err(region_err(
            label,
            format!("payload link `{}` points at `{}`, the manifest says `{target}`", want.path, got.escape_ascii()),
        ));
    }
    if let Sink::Dir { root, resume } = sink {
        let p = root.join(want.path.as_str());
        let kept = *resume
            && fs::read_link(&p).map(|t| t.as_os_str().as_encoded_bytes() == target.as_bytes()).unwrap_or(false);
        if !kept {
            if *resume {
                remove_any(&p)?;
            }
            std::os::unix::fs::symlink(target, &p).map_err(|e| Error::io("cannot create link", &p, e))?;
        }
    }
    Ok(())
}

/// Where a file entry's bytes go.
enum Staged {
    /// A resumed run's copy that matches, sealed again: only read the entry.
    Kept,
    /// A new file in staging, or `None` when only checking.
    Fresh(Option<(std::sync::Arc<fs::File>, std::sync::Arc<std::path::PathBuf>)>),
}

fn open_staged(sink: &Sink, want: &nxs_format::Entry, size: u64, sha256: &[u8; 32]) -> Result<Staged> {
    let Sink::Dir { root, resume } = sink else { return Ok(Staged::Fresh(None)) };
    let p = root.join(want.path.as_str());
    if *resume {
        if let Some(f) = staged_file_matches(&p, size, sha256) {
            // Its mode and durability may predate the crash.
            seal(&f, &p, want.mode)?;
            return Ok(Staged::Kept);
        }
        remove_any(&p)?;
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| Error::io("cannot create", &p, e))?;
    Ok(Staged::Fresh(Some((std::sync::Arc::new(f), std::sync::Arc::new(p)))))
}

/// After a complete walk into a directory: prune a resumed staging
/// directory and apply directory modes.
fn finish(sink: &Sink, m: &nxs_format::Manifest) -> Result<()> {
    // A resumed staging directory may hold what the manifest does not
    // (a file from another attempt, or put there by someone): remove it,
    // so that exactly the manifest's entries are switched in.
    if let Sink::Dir { root, resume: true } = sink {
        let wanted: std::collections::HashSet<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        prune(root, root, &wanted)?;
    }
    // Directory modes last: a read-only directory must be filled first.
    if let Sink::Dir { root, .. } = sink {
        for e in m.entries.iter().rev().filter(|e| e.kind == EntryKind::Dir) {
            let p = root.join(e.path.as_str());
            fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))
                .map_err(|err| Error::io("cannot set the mode of", &p, err))?;
        }
        sync_tree(root)?;
    }
    Ok(())
}

/// True if `p`, in a staging directory being resumed, is provably a file
/// an earlier run of ours wrote with these bytes: a regular file (not a
/// link), with one link (a planted hard link to a foreign inode has two),
/// owned by this user, of `size` bytes with `sha256`.
/// The file comes back open: the checks, the hash and the later `seal` are
/// all on that one descriptor, opened without following a link, so no
/// swap between them can redirect the chmod.
fn staged_file_matches(p: &Path, size: u64, sha256: &[u8; 32]) -> Option<fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p).ok()?;
    let m = f.metadata().ok()?;
    if !(m.is_file() && m.nlink() == 1 && m.uid() == me && m.len() == size) {
        return None;
    }
    let (n, got) = hash_reader(&mut f).ok()?;
    (n == size && &got == sha256).then_some(f)
}

/// True if `p`, in a staging directory being resumed, is a real directory
/// (not a link) of this user's.
fn staged_dir_is_ours(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == me)
}

/// Removes everything under `dir` whose path relative to `root` is not wanted.
fn prune(root: &Path, dir: &Path, wanted: &std::collections::HashSet<&str>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    for e in entries {
        let p = e.map_err(|e| Error::io("cannot read", dir, e))?.path();
        let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        if !wanted.contains(rel.as_str()) {
            remove_any(&p)?;
        } else if fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            prune(root, &p, wanted)?;
        }
    }
    Ok(())
}

/// Removes whatever is at `p` in a staging directory being resumed.
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => crate::fsx::remove_tree(p),
        Ok(_) => fs::remove_file(p).map_err(|e| Error::io("cannot replace", p, e)),
    }
}

/// Gives a staged file its manifest mode and starts writing it back to the
/// device without waiting; [`finish`] waits for all of it with one
/// `syncfs`, before anything is switched into place. (An fsync per file
/// would make the disk, not the CPU, set the pace: one round trip each.)
fn seal(f: &fs::File, p: &Path, mode: u32) -> Result<()> {
    use std::os::fd::AsRawFd;
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io("cannot set the mode of", p, e))?;
    // SAFETY: a hint on an open file descriptor; failure only loses the hint.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    Ok(())
}

/// Reads a tar entry's `size` bytes and checks them against the manifest's
/// digest. With `to`, the bytes also go to that file through the writer
/// (whose error, if any, comes at its next check); without, they are only
/// checked, read through `spare` (at least [`WRITE_CHUNK`] bytes).
#[allow(clippy::too_many_arguments)]
fn copy_entry(
    entry: &mut impl Read,
    size: u64,
    to: Option<(&Writer, &Arc<fs::File>, &Arc<std::path::PathBuf>)>,
    spare: &mut [u8],
    progress: &mut Progress,
    label: &Path,
    name: &str,
    want: &[u8; 32],
) -> Result<()> {
    let mut h = Sha256::new();
    let mut read = |buf: &mut [u8], at: u64| -> Result<()> {
        entry.read_exact(buf).map_err(|e| region_err(label, format!("payload entry `{name}` at byte {at}: {e}")))?;
        h.update(&*buf);
        Ok(())
    };
    let mut left = size;
    while left > 0 {
        let n = left.min(WRITE_CHUNK as u64) as usize;
        match to {
            Some((w, f, p)) => {
                let mut chunk = w.buffer();
                read(&mut chunk[..n], size - left)?;
                w.send(Msg::Data(f.clone(), p.clone(), chunk, n))?;
            }
            None => read(&mut spare[..n], size - left)?,
        }
        left -= n as u64;
        progress.add(n as u64);
    }
    let got: [u8; 32] = h.finalize().into();
    if &got != want {
        return Err(region_err(
            label,
            format!("file `{name}`: sha256 is {}, the signed manifest says {}", hex::encode(&got), hex::encode(want)),
        ));
    }
    Ok(())
}

fn describe(k: &EntryKind) -> String {
    match k {
        EntryKind::Dir => "a directory".into(),
        EntryKind::Link { target } => format!("a link to `{target}`"),
        EntryKind::File { size, .. } => format!("a regular file of {size} bytes"),
    }
}

/// Makes everything written under `root` durable: every file's data and
/// every directory entry, with one `syncfs` of its filesystem.
fn sync_tree(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(root).map_err(|e| Error::io("cannot open", root, e))?;
    // SAFETY: syncfs on an open descriptor of the staging directory.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io("cannot sync the filesystem of", root, std::io::Error::last_os_error()));
    }
    Ok(())
}

//! Where a rerun into a staging directory starts reading (format 3).

use super::*;

/// Where a rerun into a staging directory of the same payload starts
/// reading (format 3), and how many staged files it keeps without reading
/// them again from the bundle: at the frame where the first entry begins
/// that staging does not hold intact. Every entry before it is checked
/// here, under the same rules as in a walk (a regular file of this user's
/// with one link and the manifest's bytes; a real directory; the declared
/// link). `hint` is the frames the checkpoint says were done: only a note
/// when staging holds less (a power cut before the data reached the disk).
/// Only the entries of `sel` are staged; the others are passed over.
pub fn resume_point(m: &Manifest, sel: &Selection, root: &Path, hint: usize, progress: bool) -> Result<(Start, usize)> {
    let mut kept = Vec::new();
    let mut first_bad = m.entries.len();
    // The `check` phase: the bytes of what staging holds at the right size
    // (a first look with lstat alone), each re-hashed below.
    let staged: u64 = m
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| sel.takes(*i))
        .filter_map(|(_, e)| match e.kind {
            EntryKind::File { size, .. } => fs::symlink_metadata(root.join(e.path.as_str()))
                .ok()
                .filter(|md| md.is_file() && md.len() == size)
                .map(|_| size),
            _ => None,
        })
        .sum();
    let mut check = Progress::start_if(progress, "check", staged);
    for (i, e) in m.entries.iter().enumerate().filter(|(i, _)| sel.takes(*i)) {
        let p = root.join(e.path.as_str());
        let ok = match &e.kind {
            EntryKind::Dir => staged_dir_is_ours(&p),
            EntryKind::Link { target } => {
                fs::read_link(&p).is_ok_and(|t| t.as_os_str().as_encoded_bytes() == target.as_bytes())
            }
            EntryKind::File { size, sha256 } => match staged_file_matches(&p, *size, sha256) {
                Some(f) => {
                    seal(&f, &p, e.mode)?;
                    kept.push(i);
                    check.add(*size);
                    true
                }
                None => false,
            },
        };
        if !ok {
            first_bad = i;
            break;
        }
    }
    check.end();
    let start = Start::at_frame(m, frame_of(m, first_bad)).expect("a frame where a member begins");
    if start.frame < hint {
        eprintln!(
            "  note: staging holds less than the checkpoint says was written (frame {} of {hint}); reading again from there",
            start.frame
        );
    }
    // Entries from the start on are walked again, and kept there if intact.
    Ok((start, kept.iter().filter(|&&i| i < start.entry).count()))
}

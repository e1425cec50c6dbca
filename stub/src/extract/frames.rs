//! The format 3 frame index, checked against where the members of the
//! tar stream really begin.

use super::*;

/// A format 3 frame index, checked against where the members really begin
/// in the tar stream: each frame names the first member that begins in it,
/// or none when none does. A reader that starts at a frame relies on it.
pub(super) struct FrameIndex<'a> {
    frames: &'a [Frame],
    /// Where each frame begins in the tar stream.
    starts: Vec<u64>,
    /// The first frame whose first member has not been seen yet.
    next: usize,
}

impl<'a> FrameIndex<'a> {
    pub(super) fn new(m: &'a Manifest, first: usize) -> FrameIndex<'a> {
        let frames: &[Frame] = if m.format >= 3 { &m.frames } else { &[] };
        let mut at = 0u64;
        let starts = frames
            .iter()
            .map(|f| {
                let s = at;
                at += f.raw;
                s
            })
            .collect();
        FrameIndex { frames, starts, next: first }
    }

    /// Member `entry` (the entry count for the end marker) begins at tar
    /// offset `at`. Returns its frame when it is the first member there.
    pub(super) fn member(&mut self, entry: usize, at: u64) -> std::result::Result<Option<usize>, String> {
        if self.frames.is_empty() {
            return Ok(None);
        }
        let f = self.starts.partition_point(|&s| s <= at) - 1;
        for g in self.next..f {
            if let Some(x) = self.frames[g].first {
                return Err(format!(
                    "frame {g}: its signed index names entry {} at offset {}, but no member begins in it",
                    x.entry, x.offset
                ));
            }
        }
        if f < self.next {
            return Ok(None);
        }
        let want = FirstMember { entry: entry as u64, offset: at - self.starts[f] };
        if self.frames[f].first != Some(want) {
            return Err(format!(
                "entry {entry} begins at byte {} of frame {f}, which its signed index does not say ({:?})",
                want.offset, self.frames[f].first
            ));
        }
        self.next = f + 1;
        Ok(Some(f))
    }

    /// The end marker begins at `at`; no frame after it names a member.
    pub(super) fn end(&mut self, entry: usize, at: u64) -> std::result::Result<(), String> {
        if self.frames.is_empty() {
            return Ok(());
        }
        self.member(entry, at)?;
        let last = self.frames.len();
        match (self.next..last).find(|&g| self.frames[g].first.is_some()) {
            Some(g) => Err(format!("frame {g}: its signed index names a member after the end of the archive")),
            None => Ok(()),
        }
    }
}

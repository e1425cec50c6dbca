//! The payload's tar grammar: exactly the tar the bundler writes, and
//! nothing else.
//!
//! The bundler (`bundler/src/pack.rs`, `append_entry`) writes every member
//! with `tar::Header::new_gnu()` through `Builder::append_data` and
//! `append_link`, and ends with `Builder::finish`. That is this grammar,
//! block by block (512 bytes each; docs/FORMAT.md states it for readers):
//!
//! ```text
//! stream  = member* zero-block zero-block zero-byte*
//! member  = [long-name] [long-link] header data padding
//! ```
//!
//! - `header`: GNU magic `ustar ` with version ` \0`; typeflag `0` (regular
//!   file), `5` (directory, its name ending in `/`, size 0) or `2`
//!   (symbolic link, size 0, a non-empty link name); mode, uid and gid as
//!   seven octal digits and a NUL; uid and gid 0; size and mtime as eleven
//!   octal digits and a NUL, or, at 8 GiB (8^11) and over only, base-256
//!   (`0x80`, three zero bytes, eight big-endian bytes); the checksum as
//!   seven octal digits and a NUL; text fields NUL-padded; user and group
//!   names, device numbers and every other GNU field zero.
//! - `long-name`: a GNU `L` record, only for a name (with a directory's
//!   `/`) over 100 bytes: name `././@LongLink`, mode 0644, uid, gid and
//!   mtime 0, data the name and one NUL. The header's own name field then
//!   holds what the `tar` crate truncates the name to ([`truncated_name`]).
//! - `long-link`: a GNU `K` record, the same, only for a link target over
//!   100 bytes; the header's link field then holds what the `tar` crate left
//!   there before giving up ([`partial_link`]).
//! - `data`: exactly `size` bytes; `padding`: zeros to the next block.
//!
//! # Security
//! Everything else is refused, never skipped and never interpreted: PAX
//! records (`x`, `g`), which GNU tar and the `tar` crate honour and would
//! let a `size=` or `path=` record say something the header does not; GNU
//! sparse (`S`), multi-volume (`M`) and volume-label (`V`) headers; hard
//! links, devices, FIFOs and unknown typeflags; a checksum that does not
//! add up; another magic; a numeric field in any other spelling (so no
//! reader can parse one differently, and base-256 only where octal cannot
//! say it); a long-name or long-link record where none was needed, twice,
//! out of order, or whose header fields disagree with it; non-zero padding
//! and a lone zero block. Every byte of the stream is read and checked, so
//! what the stub accepts, GNU tar, bsdtar and the `tar` crate read as the
//! same members. Errors name the member's index and the byte offset of the
//! offending block in the tar stream.

use std::io::{self, Read};

/// One tar block.
pub const BLOCK: usize = 512;
/// The longest name a long-name record may carry: the longest entry path,
/// a directory's `/`, and the NUL.
const MAX_LONG_NAME: u64 = nxs_format::path::MAX_PATH_LEN as u64 + 2;
/// The longest link target a long-link record may carry, and its NUL.
const MAX_LONG_LINK: u64 = nxs_format::path::MAX_PATH_LEN as u64 + 1;
/// From here on, the `tar` crate writes a 12-byte numeric field in base-256.
const OCTAL_LIMIT: u64 = 1 << 33;

/// What a member is. (The names are the `tar` crate's, which messages
/// have always used.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
}

/// A member whose header (and long-name and long-link records) passed the
/// grammar. Its data, `size` bytes, is read through the walker's `Read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its position among the members, from 0.
    pub index: usize,
    /// Byte offset in the tar stream of its first block (its long-name
    /// record, if it has one).
    pub offset: u64,
    /// The path, without a directory's trailing `/`.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    /// The permission bits in the header (at most 0o7777).
    pub mode: u32,
    pub mtime: u64,
    /// A link's target; empty for anything else.
    pub link: Vec<u8>,
}

/// Reads a tar stream member by member, refusing anything outside the
/// grammar above.
pub struct TarWalk<R> {
    inner: R,
    /// Bytes of the stream consumed so far.
    offset: u64,
    /// Members returned so far.
    index: usize,
    /// Data bytes of the current member not read yet, and its padding.
    left: u64,
    pad: u64,
    ended: bool,
    /// Where the end-of-archive marker began, once it was read.
    end_at: Option<u64>,
}

impl<R: Read> TarWalk<R> {
    pub fn new(inner: R) -> TarWalk<R> {
        TarWalk::resume(inner, 0, 0)
    }

    /// A walk of a stream that `inner` gives from byte `offset` on, where
    /// member `index` begins: a reader that starts at a frame (format 3).
    /// Offsets in errors are the whole stream's.
    pub fn resume(inner: R, offset: u64, index: usize) -> TarWalk<R> {
        TarWalk { inner, offset, index, left: 0, pad: 0, ended: false, end_at: None }
    }

    /// The byte offset of the end-of-archive marker, once it was read.
    pub fn end_offset(&self) -> Option<u64> {
        self.end_at
    }

    /// Bytes of the tar stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The underlying reader, positioned after what was consumed: after the
    /// end-of-archive marker once [`TarWalk::next_member`] returned `None`.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next member, or `None` at the end-of-archive marker. What is left
    /// of the previous member's data is read (and discarded), and its
    /// padding must be zeros.
    ///
    /// # Security
    /// The input is untrusted; see the module's documentation for what is
    /// accepted. An error is a refusal of the whole stream.
    pub fn next_member(&mut self) -> Result<Option<Member>, String> {
        if self.ended {
            return Ok(None);
        }
        let mut sink = [0u8; BLOCK];
        while self.left > 0 {
            let n = self.left.min(BLOCK as u64) as usize;
            self.read_exact(&mut sink[..n]).map_err(|e| self.err("data", e))?;
        }
        if self.pad > 0 {
            let at = self.offset;
            let n = self.pad as usize;
            self.pad = 0;
            self.fill(&mut sink[..n]).map_err(|e| self.err("padding", e))?;
            if sink[..n].iter().any(|&b| b != 0) {
                return Err(format!(
                    "entry {} at byte {at}: the padding after its data is not zeros",
                    self.index.saturating_sub(1)
                ));
            }
        }
        let start = self.offset;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let at = self.offset;
            let mut block = [0u8; BLOCK];
            self.fill(&mut block).map_err(|e| self.err("a header", e))?;
            let index = self.index;
            let fail = |what: String| format!("entry {index} at byte {at}{}: {what}", quoted_name(&block));
            if block.iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() {
                    return Err(fail("a long-name or long-link record followed by the end of the archive".into()));
                }
                let mut second = [0u8; BLOCK];
                self.fill(&mut second).map_err(|e| self.err("the end-of-archive marker", e))?;
                if second.iter().any(|&b| b != 0) {
                    return Err(fail("a lone zero block; the bundler ends the archive with two".into()));
                }
                self.ended = true;
                self.end_at = Some(at);
                return Ok(None);
            }
            let h = check_header(&block).map_err(fail)?;
            match h.typeflag {
                b'L' | b'K' => {
                    let out_of_order = h.typeflag == b'L' && long_link.is_some();
                    let (slot, max, name) = match h.typeflag {
                        b'L' => (&mut long_name, MAX_LONG_NAME, "long-name"),
                        _ => (&mut long_link, MAX_LONG_LINK, "long-link"),
                    };
                    if slot.is_some() || out_of_order {
                        return Err(fail(format!(
                            "a second {name} record, or one out of order (the bundler writes at most one `L`, then at most one `K`)"
                        )));
                    }
                    if h.size < 2 || h.size > max {
                        return Err(fail(format!("a {name} record of {} bytes (2 to {max})", h.size)));
                    }
                    let mut data = vec![0u8; h.size.div_ceil(BLOCK as u64) as usize * BLOCK];
                    self.fill(&mut data).map_err(|e| self.err(name, e))?;
                    let (text, rest) = data.split_at(h.size as usize - 1);
                    if text.contains(&0) || rest.iter().any(|&b| b != 0) {
                        return Err(fail(format!("the {name} record is not one name, one NUL and zero padding")));
                    }
                    if text.len() <= 100 {
                        return Err(fail(format!(
                            "a {name} record for {} bytes, which fit the header (the bundler writes one only past 100)",
                            text.len()
                        )));
                    }
                    *slot = Some(text.to_vec());
                }
                _ => return self.member(start, h, long_name, long_link).map(Some).map_err(fail),
            }
        }
    }

    /// Checks a member header against the records before it.
    fn member(
        &mut self,
        start: u64,
        h: Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Member, String> {
        let kind = match h.typeflag {
            b'0' => Kind::Regular,
            b'5' => Kind::Directory,
            _ => Kind::Symlink,
        };
        let name = match long_name {
            Some(long) => {
                if h.name != truncated_name(&long) {
                    return Err(format!(
                        "its name field `{}` is not its long-name record `{}` cut as the bundler cuts it",
                        h.name.escape_ascii(),
                        long.escape_ascii()
                    ));
                }
                long
            }
            None => h.name.to_vec(),
        };
        let link = match (kind, long_link) {
            (Kind::Symlink, Some(long)) => {
                if h.link != partial_link(&long) {
                    return Err(format!(
                        "its link field `{}` is not its long-link record `{}` cut as the bundler cuts it",
                        h.link.escape_ascii(),
                        long.escape_ascii()
                    ));
                }
                long
            }
            (Kind::Symlink, None) if !h.link.is_empty() => h.link.to_vec(),
            (Kind::Symlink, None) => return Err("a symbolic link without a target".into()),
            (_, Some(_)) => return Err("a long-link record before something that is not a symbolic link".into()),
            (_, None) if !h.link.is_empty() => {
                return Err(format!("a link name `{}` on something that is not a link", h.link.escape_ascii()))
            }
            (_, None) => Vec::new(),
        };
        let path = match (kind, name.strip_suffix(b"/")) {
            (Kind::Directory, Some(p)) if !p.is_empty() => p.to_vec(),
            (Kind::Directory, _) => return Err("a directory whose name does not end in `/`".into()),
            (_, Some(_)) => return Err(format!("a {kind:?} whose name ends in `/`")),
            (_, None) => name,
        };
        if kind != Kind::Regular && h.size != 0 {
            return Err(format!("a {kind:?} of {} bytes (the bundler writes 0)", h.size));
        }
        let m =
            Member { index: self.index, offset: start, path, kind, size: h.size, mode: h.mode, mtime: h.mtime, link };
        self.index += 1;
        self.left = h.size;
        self.pad = (BLOCK as u64 - h.size % BLOCK as u64) % BLOCK as u64;
        Ok(m)
    }

    /// Reads exactly `buf.len()` bytes of the stream (headers, records,
    /// padding), counting them.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                io::Error::new(e.kind(), "the tar stream ends early, without its end-of-archive marker")
            }
            _ => e,
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn err(&self, what: &str, e: io::Error) -> String {
        format!("entry {} at byte {}: reading {what}: {e}", self.index, self.offset)
    }
}

impl<R: Read> Read for TarWalk<R> {
    /// Reads the current member's data; 0 at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the tar stream ends inside a file's data"));
        }
        self.left -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}

/// A header block's fields, checked.
struct Header<'a> {
    name: &'a [u8],
    link: &'a [u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    mtime: u64,
}

/// Checks one non-zero header block against the grammar.
fn check_header(b: &[u8; BLOCK]) -> Result<Header<'_>, String> {
    let sum: u32 = b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { x as u32 }).sum();
    match octal(&b[148..156]) {
        Some(c) if c == sum as u64 => {}
        _ => {
            return Err(format!(
                "header checksum `{}`, but its bytes add up to {sum:o} (written by the bundler: seven octal digits and a NUL)",
                b[148..156].escape_ascii()
            ))
        }
    }
    if &b[257..265] != b"ustar  \0" {
        return Err(format!(
            "magic and version `{}`{}; the bundler writes GNU tar's `ustar  \\0`",
            b[257..265].escape_ascii(),
            if &b[257..265] == b"ustar\x0000" { " (POSIX ustar or pax)" } else { "" }
        ));
    }
    let typeflag = b[156];
    let what = match typeflag {
        b'0' | b'5' | b'2' | b'L' | b'K' => None,
        b'x' => Some("a PAX extended header"),
        b'g' => Some("a PAX global header"),
        b'S' => Some("a GNU sparse file"),
        b'M' => Some("a GNU multi-volume continuation"),
        b'V' => Some("a volume label"),
        b'N' => Some("an old GNU long-name record"),
        b'D' => Some("a GNU dump directory"),
        b'1' => Some("a hard link"),
        b'3' => Some("a character device"),
        b'4' => Some("a block device"),
        b'6' => Some("a FIFO"),
        b'7' => Some("a contiguous file"),
        0 => Some("an old-style regular file"),
        _ => Some("an unknown type"),
    };
    if let Some(what) = what {
        return Err(format!(
            "{what} (typeflag `{}`), which the bundler never writes; it writes only `0`, `5`, `2`, `L` and `K`",
            [typeflag].escape_ascii()
        ));
    }
    // The rest of the GNU header: names, device numbers, times, sparse map.
    if let Some(i) = (265..BLOCK).find(|&i| b[i] != 0) {
        return Err(format!("byte {i} of the header is {:#04x}; the bundler leaves bytes 265 to 511 zero", b[i]));
    }
    let field = |range: std::ops::Range<usize>, what: &str| -> Result<&[u8], String> {
        let f = &b[range];
        let end = f.iter().position(|&x| x == 0).unwrap_or(f.len());
        if end == 0 || f[end..].iter().any(|&x| x != 0) {
            return Err(format!("its {what} field `{}` is not a name padded with NULs", f.escape_ascii()));
        }
        Ok(&f[..end])
    };
    let name = field(0..100, "name")?;
    let link = if b[157..257].iter().all(|&x| x == 0) { &b[157..157] } else { field(157..257, "link name")? };
    let mode = octal(&b[100..108]).filter(|&m| m <= 0o7777);
    let uid = octal(&b[108..116]);
    let gid = octal(&b[116..124]);
    let size = number(&b[124..136]);
    let mtime = number(&b[136..148]);
    let bad = |what: &str, f: &[u8], how: &str| Err(format!("its {what} field `{}` is not {how}", f.escape_ascii()));
    let Some(mode) = mode else { return bad("mode", &b[100..108], "seven octal digits (at most 0007777) and a NUL") };
    if uid != Some(0) {
        return bad("uid", &b[108..116], "`0000000\\0` (the bundler writes uid 0)");
    }
    if gid != Some(0) {
        return bad("gid", &b[116..124], "`0000000\\0` (the bundler writes gid 0)");
    }
    let how = "eleven octal digits and a NUL, or base-256 for 8 GiB and over";
    let Some(size) = size else { return bad("size", &b[124..136], how) };
    let Some(mtime) = mtime else { return bad("mtime", &b[136..148], how) };
    if matches!(typeflag, b'L' | b'K') && (name != b"././@LongLink" || mode != 0o644 || mtime != 0 || !link.is_empty())
    {
        return Err("a long-name or long-link record whose header is not the bundler's \
                    (`././@LongLink`, mode 0644, mtime 0, no link name)"
            .into());
    }
    Ok(Header { name, link, typeflag, mode: mode as u32, size, mtime })
}

/// An 8-byte field as the `tar` crate writes it: seven octal digits and a
/// NUL.
fn octal(f: &[u8]) -> Option<u64> {
    let (digits, nul) = f.split_at(f.len() - 1);
    if nul != [0] || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n * 8 + (d - b'0') as u64))
}

/// A 12-byte field as the `tar` crate writes it: eleven octal digits and a
/// NUL below 8^11, else base-256 (`0x80`, three zero bytes, eight
/// big-endian bytes), never both spellings for one value.
fn number(f: &[u8]) -> Option<u64> {
    if f[0] == 0x80 {
        if f[1..4] != [0, 0, 0] {
            return None;
        }
        let n = u64::from_be_bytes(f[4..12].try_into().expect("8 bytes"));
        return (n >= OCTAL_LIMIT).then_some(n);
    }
    octal(f)
}

/// What the `tar` crate writes in the header's name field for a name over
/// 100 bytes (`Builder::append_data`, `prepare_header_path`): its first 100
/// bytes, cut back to a UTF-8 boundary, then rewritten component by
/// component (which drops a last component that is just `.`), keeping a
/// trailing `/`.
pub fn truncated_name(long: &[u8]) -> Vec<u8> {
    let cut = &long[..long.len().min(100)];
    let cut = match std::str::from_utf8(cut) {
        Ok(_) => cut,
        Err(e) => &cut[..e.valid_up_to()],
    };
    let mut out = Vec::with_capacity(100);
    for c in cut.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if cut.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// What the `tar` crate leaves in the header's link field for a target over
/// 100 bytes (`Builder::append_link`): `Header::set_link_name` copies the
/// target's components (without empty ones, and without `.` after the
/// first) with their `/` one at a time, and fails at the first that does
/// not fit, leaving those before it.
pub fn partial_link(long: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(100);
    let parts = long.split(|&b| b == b'/').enumerate().filter(|&(i, c)| !c.is_empty() && (i == 0 || c != b"."));
    for (n, (_, c)) in parts.enumerate() {
        if n > 0 {
            if out.len() + 1 > 100 {
                break;
            }
            out.push(b'/');
        }
        if out.len() + c.len() > 100 {
            break;
        }
        out.extend_from_slice(c);
    }
    out
}

/// ` (name `…`)` for a message, when the block has a printable name.
fn quoted_name(b: &[u8; BLOCK]) -> String {
    let name = &b[..100];
    let name = &name[..name.iter().position(|&x| x == 0).unwrap_or(100)];
    if name.is_empty() {
        String::new()
    } else {
        format!(" (header name `{}`)", name.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream as the bundler writes it, through the same `tar` calls.
    fn bundler_tar(entries: &[(&str, u8, &[u8], &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(path, ty, data, target, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            match ty {
                b'2' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
                b'5' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), io::empty()).unwrap();
                }
                _ => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn members(tar: &[u8]) -> Result<Vec<(Member, Vec<u8>)>, String> {
        let mut w = TarWalk::new(tar);
        let mut out = Vec::new();
        while let Some(m) = w.next_member()? {
            let mut data = Vec::new();
            w.read_to_end(&mut data).map_err(|e| e.to_string())?;
            out.push((m, data));
        }
        let rest = w.into_inner();
        assert!(rest.iter().all(|&b| b == 0));
        Ok(out)
    }

    #[test]
    fn reads_what_the_bundler_writes_at_every_name_length() {
        let long = |n: usize, tail: &str| {
            let mut s = String::new();
            while s.len() + tail.len() < n {
                s.push_str(if s.len() % 40 == 39 { "/" } else { "a" });
            }
            s.push_str(tail);
            s
        };
        let mut names: Vec<String> = [98, 99, 100, 101, 102, 150, 250, 1000].iter().map(|&n| long(n, "x")).collect();
        // Cut after a dot, inside a multi-byte character, and at a slash.
        names.push(format!("{}/.hidden-and-long", "d".repeat(98)));
        names.push(format!("{}é{}", "e".repeat(99), "f".repeat(20)));
        names.push(format!("{}/{}", "g".repeat(99), "h".repeat(20)));
        names.push(format!("{}/{}", "g".repeat(98), "h".repeat(20)));
        for name in &names {
            for ty in [b'0', b'5', b'2'] {
                let targets =
                    ["t", &*long(100, "t"), &*long(101, "t"), &*format!("./{}/../{}", "k".repeat(60), long(90, "z"))];
                for target in targets {
                    let tar = bundler_tar(&[(name, ty, b"some bytes", target, 0o640)]);
                    let got = members(&tar).unwrap_or_else(|e| panic!("{name} {ty} {target}: {e}"));
                    assert_eq!(got.len(), 1);
                    let (m, data) = &got[0];
                    assert_eq!(m.path, name.as_bytes());
                    assert_eq!(m.mode, 0o640);
                    assert_eq!(m.mtime, 1_700_000_000);
                    match ty {
                        b'0' => assert_eq!((m.kind, &data[..]), (Kind::Regular, &b"some bytes"[..])),
                        b'5' => assert_eq!((m.kind, m.size), (Kind::Directory, 0)),
                        _ => assert_eq!((m.kind, &m.link[..]), (Kind::Symlink, target.as_bytes())),
                    }
                    if ty != b'2' {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn reads_sizes_on_both_sides_of_a_block_and_of_8_gib() {
        for n in [0usize, 1, 511, 512, 513, 1024] {
            let data = vec![7u8; n];
            let got = members(&bundler_tar(&[("f", b'0', &data, "", 0o644)])).unwrap();
            assert_eq!(got[0].1, data);
        }
        // Base-256 only from 8^11 on: a header that says 8 GiB parses, the
        // data is then missing.
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(OCTAL_LIMIT);
        h.set_cksum();
        let mut w = TarWalk::new(&h.as_bytes()[..]);
        assert_eq!(w.next_member().unwrap().unwrap().size, OCTAL_LIMIT);
        // The same header with base-256 for a size octal can say: refused.
        let mut raw = *h.as_bytes();
        raw[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        let mut h = tar::Header::from_byte_slice(&raw).clone();
        h.set_cksum();
        let e = TarWalk::new(&h.as_bytes()[..]).next_member().unwrap_err();
        assert!(e.contains("its size field"), "{e}");
    }

    #[test]
    fn refuses_what_the_bundler_never_writes() {
        let good = bundler_tar(&[("f", b'0', b"abc", "", 0o644)]);
        let edit = |at: usize, bytes: &[u8]| {
            let mut t = good.clone();
            t[at..at + bytes.len()].copy_from_slice(bytes);
            let mut h = tar::Header::from_byte_slice(&t[..512]).clone();
            h.set_cksum();
            t[..512].copy_from_slice(h.as_bytes());
            t
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (edit(156, b"x"), "PAX extended header"),
            (edit(156, b"g"), "PAX global header"),
            (edit(156, b"S"), "GNU sparse"),
            (edit(156, b"V"), "volume label"),
            (edit(156, b"1"), "hard link"),
            (edit(257, b"ustar\x0000"), "POSIX ustar"),
            (edit(108, b"0000001\0"), "uid field"),
            (edit(124, b"0000000003 \0"), "size field"),
            (edit(124, b"         3\0\0"), "size field"),
            (edit(100, b"0000644 "), "mode field"),
            (edit(136, b"\x80\0\0\0\0\0\0\0\0\0\0\x01"), "mtime field"),
            (edit(265, b"root"), "byte 265"),
            (edit(4, b"\0x"), "name field"),
            (edit(157, b"t"), "link name `t` on something"),
            (good[..512 + 512].to_vec(), "ends early"),
            (
                {
                    let mut t = good.clone();
                    t[512 + 3] = 1;
                    t
                },
                "padding",
            ),
            (
                {
                    let mut t = good.clone();
                    t[148] = b'1';
                    t
                },
                "checksum",
            ),
        ];
        for (tar, needle) in cases {
            let e = members(&tar).unwrap_err();
            assert!(e.contains(needle) && e.contains("entry "), "`{e}` should say `{needle}`");
        }
        // A lone zero block, then data.
        let mut t = good[..1024].to_vec();
        t.extend_from_slice(&[0u8; 512]);
        t.extend_from_slice(&[1u8; 512]);
        assert!(members(&t).unwrap_err().contains("lone zero block"));
    }

    #[test]
    fn refuses_long_records_that_disagree_or_are_not_needed() {
        let name = format!("{}/file", "d".repeat(120));
        let good = bundler_tar(&[(&name, b'0', b"abc", "", 0o644)]);
        assert!(members(&good).is_ok());
        // The truncated name in the header says something else.
        let mut t = good.clone();
        t[1024..1028].copy_from_slice(b"evil");
        let mut h = tar::Header::from_byte_slice(&t[1024..1536]).clone();
        h.set_cksum();
        t[1024..1536].copy_from_slice(h.as_bytes());
        let e = members(&t).unwrap_err();
        assert!(e.contains("entry 0 at byte 1024") && e.contains("long-name record"), "{e}");
        // A long-name record for a short name.
        let short = bundler_tar(&[("f", b'0', b"abc", "", 0o644)]);
        let mut t = good[..1024].to_vec();
        t[512..1024].fill(0);
        t[512..513].copy_from_slice(b"f");
        let mut h = tar::Header::from_byte_slice(&t[..512]).clone();
        h.set_size(2);
        h.set_cksum();
        t[..512].copy_from_slice(h.as_bytes());
        t.extend_from_slice(&short);
        let e = members(&t).unwrap_err();
        assert!(e.contains("fit the header"), "{e}");
        // Two long-name records.
        let mut t = good[..1024].to_vec();
        t.extend_from_slice(&good);
        assert!(members(&t).unwrap_err().contains("a second long-name record"));
    }
}

//! The manifest inside every backup that nxs-backup writes: the first tar
//! member, `NXS-BACKUP`, and in format 2 the sums that end it, `NXS-SUMS`.
//! Here, in the format crate, beside the bundle's manifest: it is as much a
//! contract with what already sits on sticks.
//!
//! Its paths are not [`crate::EntryPath`]s, deliberately: a bundle's names
//! are the release engineer's and can be held to one spelling (NFC, no
//! control bytes), but a state directory's names are whatever NXS and the
//! operator made, any bytes but NUL and `/`, newlines included (`NXS-SUMS`
//! escapes them as coreutils does). A backup that refused a file for its
//! name would lose it; [`path_problem`] refuses only what cannot be restored
//! safely.
//!
//! ```text
//! nxs-backup 2
//! created 2026-11-29T14:46:37Z
//! source-version 1.4.0
//! root 0700
//! dir 0700 sessions
//! file 0600 1234 - sessions/a.json        format 1: the sha256 hex instead of `-`
//! link sessions/latest -> a.json
//! ```
//!
//! Paths are relative to the state directory (the tar holds them under
//! `state/`) and come last on their line, so they may hold spaces; a link
//! line is `link PATH -> TARGET`, so neither may hold ` -> `.
//!
//! Format 2 exists so that a backup reads each file once: the manifest
//! that leads the tar can know sizes but not hashes, so the hashes follow
//! the files, in a last member `NXS-SUMS` that `sha256sum -c` reads as it
//! is (`HEX  state/PATH`). See docs/FORMAT.md, "Backups".

use crate::exit::Class;
use crate::hex;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A backup manifest or sums refused: the exit class (3, or 4 for a
/// newer format), what is wrong, and a hint.
#[derive(Debug)]
pub struct BackupError {
    pub class: Class,
    pub msg: String,
    pub hint: Option<String>,
}

type Result<T> = std::result::Result<T, BackupError>;

impl BackupError {
    fn new(class: Class, msg: impl Into<String>) -> BackupError {
        BackupError { class, msg: msg.into(), hint: None }
    }

    fn verify(msg: impl Into<String>) -> BackupError {
        BackupError::new(Class::Verify, msg)
    }

    fn hint(mut self, hint: impl Into<String>) -> BackupError {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for BackupError {}

/// The backup format this tool writes, and the newest it reads. Format 1
/// carried each file's hash in the manifest; format 2 in `NXS-SUMS`.
pub const FORMAT: u32 = 2;
/// The manifest's tar member name; it must be the archive's first member.
pub const NAME: &str = "NXS-BACKUP";
/// Format 2's last member: every file's sha256, in `sha256sum` form.
pub const SUMS: &str = "NXS-SUMS";
/// The tar directory that holds the state directory's contents.
pub const ROOT: &str = "state";
/// Between a link's path and its target on a `link` line.
pub const LINK_ARROW: &str = " -> ";
/// The largest manifest read, and the most entries it may list: a state
/// directory is sessions, keys and config, not a file system. Both bound
/// the memory a hostile backup can make a restore use.
pub const MAX_LEN: u64 = 64 << 20;
pub const MAX_ENTRIES: usize = 500_000;
/// The longest path and the deepest nesting a backup may hold.
pub const MAX_PATH: usize = 4096;
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// `sha256` is `None` in a format 2 manifest until `NXS-SUMS` is read.
    File {
        size: u64,
        sha256: Option<[u8; 32]>,
    },
    Link {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The format its text is written in: 1 (hashes inline) or 2 (hashes
    /// in `NXS-SUMS`).
    pub format: u32,
    pub created: String,
    pub source_version: String,
    pub root_mode: u32,
    /// By path, relative to the state directory.
    pub entries: BTreeMap<String, Entry>,
}

/// Why a path cannot be in a backup, or `None` if it can.
pub fn path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return Some("is empty");
    }
    if p.len() > MAX_PATH || p.split('/').count() > MAX_DEPTH {
        return Some("is too long or too deep");
    }
    if p.contains(['\n', '\r', '\0']) {
        return Some("holds a newline or NUL");
    }
    if p.contains(LINK_ARROW) {
        return Some("holds ` -> `");
    }
    if p.starts_with('/') {
        return Some("is absolute");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Some("has an empty, `.` or `..` component");
    }
    None
}

impl Manifest {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "nxs-backup {}\ncreated {}\nsource-version {}\nroot {:04o}\n",
            self.format, self.created, self.source_version, self.root_mode
        );
        for (path, e) in &self.entries {
            let _ = match &e.kind {
                Kind::Dir => writeln!(s, "dir {:04o} {path}", e.mode),
                Kind::File { size, sha256 } => {
                    let sum = match (self.format, sha256) {
                        (1, Some(h)) => hex::encode(h),
                        _ => "-".to_string(),
                    };
                    writeln!(s, "file {:04o} {size} {sum} {path}", e.mode)
                }
                Kind::Link { target } => writeln!(s, "link {path}{LINK_ARROW}{target}"),
            };
        }
        s
    }

    /// Parses a manifest. A newer format is `Incompatible` (exit 4); any
    /// other fault is `Verify` (exit 3), with its line number.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|_| BackupError::verify(format!("{NAME} is not UTF-8")))?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (_, first) = lines.next().ok_or_else(|| BackupError::verify(format!("{NAME} is empty")))?;
        let version = format_line(first)?;
        let mut m = Manifest {
            format: version,
            created: String::new(),
            source_version: String::new(),
            root_mode: 0o700,
            entries: BTreeMap::new(),
        };
        for (n, line) in lines {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (path, entry) = match key {
                "created" => {
                    m.created = rest.to_string();
                    continue;
                }
                "source-version" => {
                    m.source_version = rest.to_string();
                    continue;
                }
                "root" => {
                    m.root_mode = mode(n, rest)?;
                    continue;
                }
                "dir" => {
                    let (md, path) = rest.split_once(' ').ok_or_else(|| bad(n, "expected `dir MODE PATH`".into()))?;
                    (path, Entry { mode: mode(n, md)?, kind: Kind::Dir })
                }
                "file" => file_line(version, n, rest)?,
                "link" => {
                    let (path, target) =
                        rest.split_once(LINK_ARROW).ok_or_else(|| bad(n, "expected `link PATH -> TARGET`".into()))?;
                    if target.is_empty() || target.contains(['\n', '\0']) || target.contains(LINK_ARROW) {
                        return Err(bad(n, format!("link `{path}` has an empty or unusable target")));
                    }
                    (path, Entry { mode: 0o777, kind: Kind::Link { target: target.to_string() } })
                }
                "" => continue,
                other => return Err(bad(n, format!("unknown line `{other}`"))),
            };
            if let Some(why) = path_problem(path) {
                return Err(bad(n, format!("path `{path}` {why}")));
            }
            if m.entries.insert(path.to_string(), entry).is_some() {
                return Err(bad(n, format!("`{path}` is listed twice")));
            }
            if m.entries.len() > MAX_ENTRIES {
                return Err(bad(n, format!("more than {MAX_ENTRIES} entries")));
            }
        }
        check_parents(&m.entries)?;
        Ok(m)
    }

    /// Format 2's `NXS-SUMS`: a line per file, in manifest order, as
    /// `sha256sum` writes them for the tar's names. A name holding a
    /// backslash is escaped as coreutils does (a leading `\\`, and `\\\\`
    /// for each backslash: src/md5sum.c, `print_filename` and its callers'
    /// `needs_escape`), so `sha256sum -c NXS-SUMS` reads it back.
    pub fn sums_text(sums: &[(&str, [u8; 32])]) -> String {
        let mut s = String::new();
        for (path, h) in sums {
            let name = format!("{ROOT}/{path}");
            let _ = match name.contains('\\') {
                true => writeln!(s, "\\{}  {}", hex::encode(h), name.replace('\\', "\\\\")),
                false => writeln!(s, "{}  {name}", hex::encode(h)),
            };
        }
        s
    }

    /// Fills in a format 2 manifest's hashes from its `NXS-SUMS`: exactly
    /// one line for each listed file, and none for anything else.
    pub fn apply_sums(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |n: usize, why: String| BackupError::verify(format!("{SUMS} line {n}: {why}"));
        let text = std::str::from_utf8(bytes).map_err(|_| BackupError::verify(format!("{SUMS} is not UTF-8")))?;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let (escaped, line) = match line.strip_prefix('\\') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (sum, name) = line
                .split_once("  ")
                .or_else(|| line.split_once(" *"))
                .ok_or_else(|| bad(n, "expected `SHA256  state/PATH`".into()))?;
            let sha = hex::decode_sha256(sum).ok_or_else(|| bad(n, format!("`{sum}` is not a sha256")))?;
            let name = match escaped {
                true => unescape(name).ok_or_else(|| bad(n, format!("`{name}` is badly escaped")))?,
                false => name.to_string(),
            };
            let rel = name.strip_prefix("state/").unwrap_or("");
            match self.entries.get_mut(rel) {
                Some(Entry { kind: Kind::File { sha256: sha256 @ None, .. }, .. }) => *sha256 = Some(sha),
                Some(Entry { kind: Kind::File { .. }, .. }) => return Err(bad(n, format!("`{name}` is listed twice"))),
                _ => return Err(bad(n, format!("`{name}` is not a file of {NAME}"))),
            }
        }
        if let Some((p, _)) = self.entries.iter().find(|(_, e)| matches!(e.kind, Kind::File { sha256: None, .. })) {
            return Err(BackupError::verify(format!("{SUMS} has no line for `state/{p}`")));
        }
        Ok(())
    }

    pub fn files(&self) -> impl Iterator<Item = (&String, u64)> {
        self.entries.iter().filter_map(|(p, e)| match e.kind {
            Kind::File { size, .. } => Some((p, size)),
            _ => None,
        })
    }
}

/// `\\\\` is a backslash, `\\n` a newline (which no backup path holds);
/// anything else after a backslash is not sha256sum's.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn bad(n: usize, why: String) -> BackupError {
    BackupError::verify(format!("{NAME} line {n}: {why}"))
}

fn mode(n: usize, v: &str) -> Result<u32> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o7777 && !v.is_empty())
        .ok_or_else(|| bad(n, format!("`{v}` is not an octal mode")))
}

/// `nxs-backup N`: a format this tool reads.
fn format_line(first: &str) -> Result<u32> {
    let version = first
        .strip_prefix("nxs-backup ")
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| bad(1, format!("expected `nxs-backup {FORMAT}`, found `{first}`")))?;
    if version > FORMAT {
        return Err(BackupError::new(
            Class::Incompatible,
            format!("the backup is format {version}; this nxs-backup reads formats 1 to {FORMAT}"),
        )
        .hint(format!(
            "it was written by a newer nxs-survival: restore it with a bundle of that release or later \
             (its `BUNDLE.run restore`), which reads backup format {version}"
        )));
    }
    if version == 0 {
        return Err(bad(1, "format 0 does not exist".into()));
    }
    Ok(version)
}

/// `file MODE SIZE SHA256 PATH`. Format 1 names the hash here; format 2
/// says `-`, and NXS-SUMS names it after the file.
fn file_line(version: u32, n: usize, rest: &str) -> Result<(&str, Entry)> {
    let mut f = rest.splitn(4, ' ');
    let (Some(md), Some(size), Some(sha), Some(path)) = (f.next(), f.next(), f.next(), f.next()) else {
        return Err(bad(n, "expected `file MODE SIZE SHA256 PATH`".into()));
    };
    let size = size.parse().map_err(|_| bad(n, format!("`{size}` is not a size")))?;
    let sha256 = match version {
        1 => Some(hex::decode_sha256(sha).ok_or_else(|| bad(n, format!("`{sha}` is not a sha256")))?),
        _ if sha == "-" => None,
        _ => return Err(bad(n, format!("expected `-` for the sha256 in format {version}, found `{sha}`"))),
    };
    Ok((path, Entry { mode: mode(n, md)?, kind: Kind::File { size, sha256 } }))
}

/// Every listed path's parents must be listed directories.
fn check_parents(entries: &BTreeMap<String, Entry>) -> Result<()> {
    for path in entries.keys() {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            if !matches!(entries.get(p), Some(Entry { kind: Kind::Dir, .. })) {
                return Err(BackupError::verify(format!(
                    "{NAME}: `{path}` lies under `{p}`, which is not a listed directory"
                )));
            }
            parent = p;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut entries = BTreeMap::new();
        entries.insert("a b".to_string(), Entry { mode: 0o750, kind: Kind::Dir });
        let file = Kind::File { size: 3, sha256: Some([7; 32]) };
        entries.insert("a b/c.txt".to_string(), Entry { mode: 0o600, kind: file });
        entries.insert("l".to_string(), Entry { mode: 0o777, kind: Kind::Link { target: "a b/c.txt".into() } });
        Manifest {
            format: 1,
            created: "2026-11-29T14:46:37Z".into(),
            source_version: "1.4.0".into(),
            root_mode: 0o700,
            entries,
        }
    }

    /// The same, in format 2: hashes unknown until its sums are applied.
    fn sample2() -> Manifest {
        let mut m = sample();
        m.format = 2;
        for e in m.entries.values_mut() {
            if let Kind::File { sha256, .. } = &mut e.kind {
                *sha256 = None;
            }
        }
        m
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(m.to_text().as_bytes()).unwrap(), m);
        let m2 = sample2();
        let text = m2.to_text();
        assert!(text.starts_with("nxs-backup 2\n") && text.contains("file 0600 3 - a b/c.txt\n"), "{text}");
        let mut parsed = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, m2);
        parsed.apply_sums(Manifest::sums_text(&[("a b/c.txt", [7; 32])]).as_bytes()).unwrap();
        assert_eq!(parsed.entries, sample().entries);
    }

    #[test]
    fn sums_escape_a_backslash_as_sha256sum_does() {
        let text = Manifest::sums_text(&[("a\\b", [1; 32]), ("c", [2; 32])]);
        assert_eq!(text, format!("\\{}  state/a\\\\b\n{}  state/c\n", "01".repeat(32), "02".repeat(32)));
        let mut m = sample2();
        m.entries.clear();
        for p in ["a\\b", "c"] {
            m.entries.insert(p.into(), Entry { mode: 0o600, kind: Kind::File { size: 0, sha256: None } });
        }
        m.apply_sums(text.as_bytes()).unwrap();
        assert_eq!(m.entries["a\\b"].kind, Kind::File { size: 0, sha256: Some([1; 32]) });
    }

    #[test]
    fn sums_must_name_each_file_once_and_nothing_else() {
        let good = Manifest::sums_text(&[("a b/c.txt", [7; 32])]);
        let h = "07".repeat(32);
        for (what, bad) in [
            ("a file left out", String::new()),
            ("a file twice", format!("{good}{good}")),
            ("a directory", format!("{good}{h}  state/a b\n")),
            ("an unlisted name", format!("{good}{h}  state/zzz\n")),
            ("outside state/", format!("{h}  a b/c.txt\n")),
            ("no hash", "state/a b/c.txt\n".to_string()),
            ("a bad escape", format!("\\{h}  state/a b/c.txt\\q\n")),
        ] {
            let e = sample2().apply_sums(bad.as_bytes()).unwrap_err();
            assert_eq!(e.class, Class::Verify, "{what}: {e}");
        }
    }

    #[test]
    fn refusals() {
        let t = sample().to_text();
        let newer = t.replacen("nxs-backup 1", "nxs-backup 3", 1);
        assert_eq!(Manifest::parse(newer.as_bytes()).unwrap_err().class, Class::Incompatible);
        for bad in [
            t.replace("a b/c.txt", "../c.txt"),
            t.replace("a b/c.txt", "/etc/passwd"),
            t.replace("dir 0750 a b\n", ""),
            format!("{t}file 0600 3 {} l\n", "00".repeat(32)),
            t.replace("0600", "0999"),
            t.replace("nxs-backup 1", "tar"),
            format!("{t}fifo x\n"),
            // format 1 needs the hash inline, format 2 refuses one there
            t.replace(&"07".repeat(32), "-"),
            t.replacen("nxs-backup 1", "nxs-backup 2", 1),
        ] {
            let e = Manifest::parse(bad.as_bytes()).unwrap_err();
            assert_eq!(e.class, Class::Verify, "{bad}: {e}");
        }
    }
}

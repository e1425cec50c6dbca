//! `EntryPath`: a path inside a bundle or an install root that cannot
//! escape it. Parse, don't validate: once a value of this type exists, it is
//! relative, non-empty and made of plain components only.
//!
//! It also carries the name rule: two paths name the same file when
//! [`name_key`] gives them the same key, which is Unicode's canonical
//! caseless matching (The Unicode Standard, chapter 3, section 3.13
//! "Default Case Algorithms", definition D145). A filesystem that ignores
//! case (vfat, exFAT, ext4 or f2fs with casefold, NTFS) or normalises names
//! (ZFS with `normalization`, APFS) would put two such paths in one file.

use std::fmt;
use unicode_normalization::char::{canonical_combining_class, compose, decompose_canonical};

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted component, in bytes (the common Linux NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative path of plain components, separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong(usize),
    Absolute,
    EmptyComponent,
    DotComponent(String),
    ComponentTooLong(String),
    ForbiddenByte {
        byte: u8,
    },
    /// Not in Unicode Normalization Form C; carries the NFC spelling.
    NotNfc(String),
    Reserved,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "empty path"),
            PathError::TooLong(n) => write!(f, "path is {n} bytes, the limit is {MAX_PATH_LEN}"),
            PathError::Absolute => write!(f, "absolute path"),
            PathError::EmptyComponent => write!(f, "empty component (`//` or a trailing `/`)"),
            PathError::DotComponent(c) => write!(f, "`{c}` component"),
            PathError::ComponentTooLong(c) => {
                write!(f, "component of {} bytes, the limit is {MAX_COMPONENT_LEN}", c.len())
            }
            PathError::ForbiddenByte { byte } => {
                write!(f, "forbidden byte 0x{byte:02x} (control character or backslash)")
            }
            PathError::NotNfc(nfc) => write!(
                f,
                "not in Unicode Normalization Form C: spell it `{nfc}` (NFC), so the path has one spelling on disk"
            ),
            PathError::Reserved => write!(f, "`{}` is reserved for the install record", crate::RECORD_DIR),
        }
    }
}

impl std::error::Error for PathError {}

impl EntryPath {
    /// Parses a bundle path.
    ///
    /// # Security
    /// This is the only way to make an `EntryPath`. It refuses absolute
    /// paths, `.` and `..`, empty components, control characters, backslashes
    /// and over-long names, the reserved install-record directory, and any
    /// path not in Unicode Normalization Form C.
    pub fn parse(s: &str) -> Result<EntryPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(s.len()));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if let Some(&byte) = s.as_bytes().iter().find(|&&b| b < 0x20 || b == 0x7f || b == b'\\') {
            return Err(PathError::ForbiddenByte { byte });
        }
        for (i, c) in s.split('/').enumerate() {
            match c {
                "" => return Err(PathError::EmptyComponent),
                "." | ".." => return Err(PathError::DotComponent(c.to_string())),
                c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::ComponentTooLong(c.to_string())),
                c if i == 0 && c == crate::RECORD_DIR => return Err(PathError::Reserved),
                _ => {}
            }
        }
        // Every path is in NFC, so each name has exactly one spelling: the
        // manifest, the tar stream and the tree on disk agree byte for byte,
        // and what a hook or an operator types (NFC is what keyboards and
        // most tools produce) is the name on disk. The name rule ([`name_key`])
        // already refuses two paths that differ only in normalisation; this
        // also refuses the one path whose bytes a normalising filesystem
        // would change. `/` neither composes nor decomposes, so checking the
        // whole path is checking each component.
        let nfc = nfc(s);
        if nfc != s {
            return Err(PathError::NotNfc(nfc));
        }
        Ok(EntryPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key two paths collide on when a filesystem ignores case or
    /// normalises names ([`name_key`]): two entries with the same key are
    /// refused, at build and at extract time.
    pub fn fold_key(&self) -> String {
        name_key(&self.0)
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<EntryPath> {
        self.0.rfind('/').map(|i| EntryPath(self.0[..i].to_string()))
    }

    /// `self` followed by one more plain component.
    pub fn join(&self, component: &str) -> Result<EntryPath, PathError> {
        EntryPath::parse(&format!("{}/{}", self.0, component))
    }
}

/// The name rule: two names are the same name when their keys are equal.
///
/// The key is Unicode's canonical caseless form (The Unicode Standard,
/// section 3.13, D145): `NFD(fold(NFD(x)))`, with [`case_fold`] in place of
/// `toCasefold`. The inner NFD makes a precomposed letter and its
/// decomposition fold alike (U+212B ANGSTROM SIGN, U+00C5 and `A` U+030A);
/// the outer one puts back in canonical order the marks that folding
/// changes (U+0345 YPOGEGRAMMENI folds to a spacing iota). The key of a
/// path is the keys of its components joined by `/`.
pub fn name_key(s: &str) -> String {
    nfd(nfd(s.chars()).into_iter().flat_map(case_fold)).into_iter().collect()
}

// NFD and NFC (Unicode Standard Annex #15), written over the crate's
// per-character tables rather than with its iterators: those choose between
// canonical and compatibility decomposition at run time, so they would link
// the compatibility tables too, about 80 KiB of the stub for nothing. The
// tests compare both with the crate's own `nfd()` and `nfc()`.

/// Canonical decomposition: every character fully decomposed (Hangul
/// syllables by arithmetic), then each run of marks in canonical order.
fn nfd(chars: impl Iterator<Item = char>) -> Vec<char> {
    let mut out = Vec::new();
    for c in chars {
        decompose_canonical(c, |d| out.push(d));
    }
    // A stable insertion sort of each run of non-starters by combining
    // class: runs are short, and this links no sort routine.
    for i in 1..out.len() {
        let class = canonical_combining_class(out[i]);
        let mut j = i;
        while class != 0 && j > 0 && canonical_combining_class(out[j - 1]) > class {
            out.swap(j - 1, j);
            j -= 1;
        }
    }
    out
}

/// Canonical composition of the NFD: each character joins the last starter
/// when nothing between them blocks it (a starter, or a mark of the same or
/// a higher class) and the pair has a primary composite.
fn nfc(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    let mut starter: Option<usize> = None;
    for c in nfd(s.chars()) {
        let class = canonical_combining_class(c);
        if let Some(at) = starter {
            // Everything after the starter is a mark, in canonical order, so
            // the last one has the highest class.
            let last = out.len() - 1;
            let blocked = last != at && !(1..class).contains(&canonical_combining_class(out[last]));
            match compose(out[at], c) {
                Some(composed) if !blocked => {
                    out[at] = composed;
                    continue;
                }
                _ => {}
            }
        }
        if class == 0 {
            starter = Some(out.len());
        }
        out.push(c);
    }
    out.into_iter().collect()
}

/// Full case folding, from std's case mappings: lower case of the upper case
/// of the lower case, one character at a time. This is never the string
/// `to_lowercase`, whose final-sigma rule turns a final `Σ` into `ς`. The
/// first lower case is for `ẞ` (U+1E9E), whose upper case is itself and
/// whose folding is `ss`: lower `ß`, upper `SS`, lower `ss`.
///
/// A unit test checks it over every Unicode scalar value against a real
/// `CaseFolding.txt` table (the `caseless` crate): whatever full case
/// folding equates, this equates too. It is stricter in one way: dotless
/// `ı` (U+0131) folds to `i`, with `I` and `i` (Unicode folds `ı` to
/// itself), since it upper-cases to `I`. It also knows the case pairs of
/// Unicode versions newer than that table. Equating more is safe: the
/// rule only ever refuses.
pub fn case_fold(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().flat_map(char::to_uppercase).flat_map(char::to_lowercase)
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    #[test]
    fn accepts_plain_paths() {
        for ok in ["a", "bin/nxs", "etc/nxs/nxs.toml", "a b/c d", "ünï/cödé", ".hidden/x"] {
            assert_eq!(EntryPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escapes_and_oddities() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../x", PathError::DotComponent("..".into())),
            ("a/../../x", PathError::DotComponent("..".into())),
            ("./a", PathError::DotComponent(".".into())),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\nb", PathError::ForbiddenByte { byte: b'\n' }),
            ("a\\..\\b", PathError::ForbiddenByte { byte: b'\\' }),
            (".nxs-bundle/manifest", PathError::Reserved),
            ("cafe\u{301}", PathError::NotNfc("caf\u{e9}".into())),
        ];
        for (input, want) in cases {
            assert_eq!(EntryPath::parse(input).unwrap_err(), *want, "input {input:?}");
        }
        assert!(matches!(EntryPath::parse(&"a".repeat(256)), Err(PathError::ComponentTooLong(_))));
        assert!(matches!(EntryPath::parse(&"a/".repeat(2100)), Err(PathError::TooLong(_))));
    }

    /// Pairs of spellings that name one file on a filesystem that ignores
    /// case or normalises names. Some spellings are not NFC, so they are
    /// compared as keys here; `manifest/parse.rs` checks the NFC ones in a manifest.
    pub(crate) const SAME_NAME: &[(&str, &str)] = &[
        ("Etc/NXS.toml", "etc/nxs.toml"),
        ("\u{3a3}", "\u{3c3}"),                      // Σ, σ
        ("\u{3c3}", "\u{3c2}"),                      // σ, final ς
        ("O\u{3a3}", "o\u{3c2}"),                    // a final Σ is not special
        ("stra\u{df}e", "strasse"),                  // ß, ss
        ("\u{1e9e}", "ss"),                          // ẞ, ss
        ("\u{1e9e}", "\u{df}"),                      // ẞ, ß
        ("\u{17f}", "s"),                            // long s
        ("\u{212a}", "k"),                           // KELVIN SIGN
        ("\u{212b}", "\u{c5}"),                      // ANGSTROM SIGN, Å
        ("\u{c5}", "A\u{30a}"),                      // Å, A + ring
        ("\u{212b}", "a\u{30a}"),                    // ANGSTROM SIGN, a + ring
        ("\u{2126}", "\u{3c9}"),                     // OHM SIGN, ω
        ("\u{fb01}", "fi"),                          // ﬁ ligature
        ("\u{d55c}", "\u{1112}\u{1161}\u{11ab}"),    // 한, its conjoining jamo
        ("\u{e9}", "e\u{301}"),                      // é, NFC and NFD
        ("\u{c9}", "e\u{301}"),                      // É, e + acute
        ("\u{929}", "\u{928}\u{93c}"),               // Devanagari NNNA, NA + nukta
        ("\u{b95}\u{bca}", "\u{b95}\u{bc6}\u{bbe}"), // Tamil KO, two-part vowel sign
        ("\u{1026}", "\u{1025}\u{102e}"),            // Myanmar UU
        ("\u{1fb3}", "\u{3b1}\u{345}"),              // ᾳ, α + ypogegrammeni
        ("\u{1fb3}", "\u{391}\u{3b9}"),              // ᾳ, Αι
        ("\u{130}", "i\u{307}"),                     // İ, i + dot above
        ("\u{131}", "i"),                            // dotless ı: stricter than Unicode
        ("\u{1c5}", "\u{1c4}"),                      // titlecase ǅ, Ǆ
        ("\u{13a0}", "\u{ab70}"),                    // Cherokee Ꭰ, ꭰ
    ];

    /// Names that differ.
    pub(crate) const DISTINCT: &[(&str, &str)] = &[
        ("a", "b"),
        ("\u{e9}", "e"),
        ("\u{e9}", "\u{e8}"),
        ("\u{c5}", "A"),
        ("\u{3c3}", "\u{3c9}"),
        ("ss", "s"),
        ("fi", "f"),
        ("\u{d55c}", "\u{d55d}"),
        ("\u{929}", "\u{928}"),
        ("a/b", "a-b"),
        ("a/b", "ab"),
    ];

    #[test]
    fn names_with_one_meaning_share_a_key() {
        for (a, b) in SAME_NAME {
            assert_eq!(name_key(a), name_key(b), "{a:?} and {b:?} name the same file");
        }
        for (a, b) in DISTINCT {
            assert_ne!(name_key(a), name_key(b), "{a:?} and {b:?} are different names");
        }
        let a = EntryPath::parse("Etc/NXS.toml").unwrap();
        let b = EntryPath::parse("etc/nxs.toml").unwrap();
        assert_eq!(a.fold_key(), b.fold_key());
        assert_eq!(name_key("\u{3a3}\u{3a3}"), "\u{3c3}\u{3c3}", "no final-sigma context");
    }

    #[test]
    fn paths_are_nfc() {
        for ok in ["caf\u{e9}", "\u{d55c}", "\u{929}", "\u{b95}\u{bca}", "\u{1fb3}", "\u{c5}", "\u{3a9}"] {
            assert!(EntryPath::parse(ok).is_ok(), "{ok:?} is NFC");
        }
        let cases = [
            ("cafe\u{301}", "caf\u{e9}"),
            ("\u{212b}", "\u{c5}"),  // a singleton: never NFC
            ("\u{2126}", "\u{3a9}"), // likewise OHM SIGN
            ("\u{212a}", "K"),       // and KELVIN SIGN
            ("\u{1112}\u{1161}\u{11ab}", "\u{d55c}"),
            ("\u{928}\u{93c}", "\u{929}"),
            ("\u{b95}\u{bc6}\u{bbe}", "\u{b95}\u{bca}"),
            ("a/\u{1025}\u{102e}", "a/\u{1026}"),
        ];
        for (bad, nfc) in cases {
            assert_eq!(EntryPath::parse(bad), Err(PathError::NotNfc(nfc.into())), "{bad:?}");
        }
        let e = EntryPath::parse("cafe\u{301}").unwrap_err().to_string();
        assert!(e.contains("Normalization Form C"), "{e}");
    }

    /// Our NFD and NFC are the crate's, on every scalar value alone and
    /// followed by marks in both orders, and on Hangul in jamo.
    #[test]
    fn nfd_and_nfc_match_the_crate() {
        let marks = ['\u{300}', '\u{301}', '\u{308}', '\u{323}', '\u{327}', '\u{345}', '\u{93c}', '\u{bbe}'];
        let check = |s: &str| {
            assert_eq!(nfd(s.chars()).into_iter().collect::<String>(), s.nfd().collect::<String>(), "nfd {s:?}");
            assert_eq!(nfc(s), s.nfc().collect::<String>(), "nfc {s:?}");
        };
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            check(&c.to_string());
        }
        let moved = |c: char| !c.to_string().nfd().eq([c]) || canonical_combining_class(c) != 0;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|&c| moved(c) || c.is_ascii_alphabetic()) {
            for m in marks {
                for m2 in marks {
                    check(&[c, m, m2].iter().collect::<String>());
                }
            }
        }
        for s in
            ["\u{1100}\u{1161}", "\u{1100}\u{1161}\u{11a8}", "\u{ac00}\u{11a8}", "\u{1100}\u{301}\u{1161}", "a\u{1161}"]
        {
            check(s);
        }
    }

    /// Canonical caseless form by the book: NFD(toCasefold(NFD(s))), with
    /// `toCasefold` from the `caseless` crate's copy of CaseFolding.txt.
    fn canonical_caseless(s: &str) -> String {
        caseless::default_case_fold_str(&s.nfd().collect::<String>()).nfd().collect()
    }

    /// Whatever canonical caseless matching equates, the key equates too:
    /// for every scalar value `c`, the key of `c` is the key of its
    /// canonical caseless form. So two strings Unicode calls the same get
    /// one key. Where the key equates more, it is dotless `ı` with `i`, or a
    /// case pair of a Unicode version newer than the table (std knows it,
    /// the table does not).
    #[test]
    fn case_fold_is_complete() {
        let mut by_key: std::collections::HashMap<String, Vec<(char, String)>> = Default::default();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s = c.to_string();
            let (k, unicode) = (name_key(&s), canonical_caseless(&s));
            if unicode != s {
                assert_eq!(k, name_key(&unicode), "U+{:04X}", c as u32);
            }
            by_key.entry(k).or_default().push((c, unicode));
        }
        for (key, chars) in by_key {
            if key == "i" || chars.iter().all(|(_, u)| *u == chars[0].1) {
                continue;
            }
            // A newer case pair: two characters the table leaves alone, one
            // the other's lower case in std.
            let [(u, uu), (l, ul)] = &chars[..] else { panic!("{chars:?}") };
            assert!(u.to_lowercase().eq([*l]) || l.to_lowercase().eq([*u]), "{chars:?}");
            assert_eq!((uu, ul), (&u.to_string(), &l.to_string()), "{chars:?}");
        }
        assert_eq!(name_key("\u{131}"), "i");
        assert_eq!(canonical_caseless("\u{131}"), "\u{131}", "Unicode keeps dotless i apart");
        // Marks after a letter: normalisation and folding meet here (U+0345
        // folds to a spacing iota, and canonical order moves marks).
        let marks = ['\u{300}', '\u{301}', '\u{307}', '\u{308}', '\u{327}', '\u{342}', '\u{345}', '\u{93c}'];
        let moved = |c: char| name_key(&c.to_string()) != c.to_string() || !c.to_string().nfd().eq([c]);
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|&c| moved(c)) {
            for m in marks {
                for m2 in marks {
                    let s: String = [c, m, m2].iter().collect();
                    assert_eq!(name_key(&s), name_key(&canonical_caseless(&s)), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn parent_and_join() {
        let p = EntryPath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(EntryPath::parse("a").unwrap().parent(), None);
        assert!(p.join("..").is_err());
    }
}

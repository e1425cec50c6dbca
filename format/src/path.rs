//! `EntryPath`: a path inside a bundle or an install root that cannot
//! escape it. Parse, don't validate: once a value of this type exists, it is
//! relative, non-empty and made of plain components only.

use std::fmt;

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
    /// A combining character, which would give the path a second
    /// Unicode-normalised spelling.
    Combining(char),
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
            PathError::Combining(c) => write!(
                f,
                "combining character U+{:04X}: write the precomposed form, so the path has one normalised spelling",
                *c as u32
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
    /// and over-long names, and the reserved install-record directory.
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
        if let Some(c) = s.chars().find(|&c| is_combining(c)) {
            return Err(PathError::Combining(c));
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
        Ok(EntryPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key two paths collide on when a filesystem ignores case: two
    /// entries with the same key are refused, at build and at extract time.
    pub fn fold_key(&self) -> String {
        self.0.to_lowercase()
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

/// Combining marks and conjoining jamo: the characters through which one
/// name gets several Unicode-normalised spellings (NFC and NFD differ only
/// where such characters appear or could be composed from them).
fn is_combining(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x0483..=0x0489 | 0x0591..=0x05BD | 0x0610..=0x061A | 0x064B..=0x065F
        | 0x0900..=0x0903 | 0x093A..=0x094F | 0x1100..=0x11FF | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF
        | 0x20D0..=0x20FF | 0x302A..=0x302F | 0x3099..=0x309A | 0xA960..=0xA97F | 0xD7B0..=0xD7FF
        | 0xFE20..=0xFE2F)
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("cafe\u{301}", PathError::Combining('\u{301}')),
        ];
        for (input, want) in cases {
            assert_eq!(EntryPath::parse(input).unwrap_err(), *want, "input {input:?}");
        }
        assert!(matches!(EntryPath::parse(&"a".repeat(256)), Err(PathError::ComponentTooLong(_))));
        assert!(matches!(EntryPath::parse(&"a/".repeat(2100)), Err(PathError::TooLong(_))));
    }

    #[test]
    fn case_folds_collide() {
        let a = EntryPath::parse("Etc/NXS.toml").unwrap();
        let b = EntryPath::parse("etc/nxs.toml").unwrap();
        assert_eq!(a.fold_key(), b.fold_key());
        assert!(EntryPath::parse("café").is_ok(), "precomposed is fine");
    }

    #[test]
    fn parent_and_join() {
        let p = EntryPath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(EntryPath::parse("a").unwrap().parent(), None);
        assert!(p.join("..").is_err());
    }
}

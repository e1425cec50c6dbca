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
    ForbiddenByte { byte: u8 },
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
        ];
        for (input, want) in cases {
            assert_eq!(EntryPath::parse(input).unwrap_err(), *want, "input {input:?}");
        }
        assert!(matches!(EntryPath::parse(&"a".repeat(256)), Err(PathError::ComponentTooLong(_))));
        assert!(matches!(EntryPath::parse(&"a/".repeat(2100)), Err(PathError::TooLong(_))));
    }

    #[test]
    fn parent_and_join() {
        let p = EntryPath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(EntryPath::parse("a").unwrap().parent(), None);
        assert!(p.join("..").is_err());
    }
}

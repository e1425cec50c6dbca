//! Monotonic product versions: dot-separated decimal numbers, compared
//! numerically. Downgrade guards compare these.

use std::cmp::Ordering;
use std::fmt;

/// A version such as `1.4.0`. Only digits and dots; each part fits a u64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
    /// Parses `1.4.0`. Refuses empty parts, signs, letters and leading `+`.
    pub fn parse(text: &str) -> Option<Version> {
        if text.is_empty() || text.len() > 64 {
            return None;
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts.push(part.parse().ok()?);
        }
        Some(Version { text: text.to_string(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        // Missing trailing parts count as zero, so 1.4 == 1.4.0 in order.
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn orders_numerically() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2") > v("1.99"));
        assert_eq!(v("1.4").cmp(&v("1.4.0")), std::cmp::Ordering::Equal);
        for bad in ["", "1..2", "1.a", "-1", "1.2-rc1", "v1"] {
            assert!(Version::parse(bad).is_none(), "{bad:?} must be refused");
        }
    }
}

//! A multi-tier bundle (format 5): one bundle that holds every tier of a
//! platform, each file stored once, and each entry naming the tiers it
//! belongs to. An install takes one tier's entries ([`Selection`]).

use super::Manifest;

/// Most tiers one bundle may hold.
pub const MAX_TIERS: usize = 64;

/// The tiers a multi-tier bundle holds (format 5): their names, in the
/// spec's order, and for each entry the set it belongs to, bit `i` for
/// `names[i]`. A tier is closed under parents: an entry's directory
/// belongs to every tier the entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    pub names: Vec<String>,
    /// One per entry, in entry order.
    pub of_entry: Vec<u64>,
}

impl Tiers {
    /// The set of entry `i`, as the manifest spells it: names, comma-separated.
    pub fn spell(&self, set: u64) -> String {
        let names = self.names.iter().enumerate().filter(|(i, _)| set & (1 << i) != 0);
        names.map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Which of a manifest's entries an install takes: those of one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The tier's name.
    pub tier: String,
    /// One per entry: whether it is in the tier.
    pub take: Vec<bool>,
}

impl Selection {
    pub fn takes(&self, i: usize) -> bool {
        self.take.get(i).copied().unwrap_or(false)
    }
}

/// A tier name: what `tiers` and the entries' sets may spell.
pub fn tier_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Manifest {
    /// The tiers this bundle holds: its one `tier`, or the `tiers` line's.
    pub fn tier_names(&self) -> Vec<&str> {
        match &self.tiers {
            Some(t) => t.names.iter().map(String::as_str).collect(),
            None => vec![self.tier.as_str()],
        }
    }

    /// The entries of tier `name` (the default tier when `None`), or why
    /// there is no such tier here.
    pub fn select(&self, name: Option<&str>) -> Result<Selection, String> {
        let name = name.unwrap_or(&self.tier);
        let take = match &self.tiers {
            Some(t) => {
                let Some(bit) = t.names.iter().position(|n| n == name) else {
                    return Err(format!("this bundle has no tier `{name}` (it has: {})", t.names.join(", ")));
                };
                t.of_entry.iter().map(|set| set & (1 << bit) != 0).collect()
            }
            None if name == self.tier => vec![true; self.entries.len()],
            None => {
                return Err(format!(
                    "this bundle holds tier `{}` only, not `{name}`; a stick's bundle holds every tier",
                    self.tier
                ))
            }
        };
        Ok(Selection { tier: name.to_string(), take })
    }

    /// This manifest as seen by an install of `sel`: only its entries,
    /// and `tier` its name. For listing, sizing and checking an installed
    /// tree, never for reading the payload, whose stream holds them all.
    pub fn view(&self, sel: &Selection) -> Manifest {
        let entries = self.entries.iter().enumerate().filter(|(i, _)| sel.takes(*i)).map(|(_, e)| e.clone());
        Manifest { tier: sel.tier.clone(), entries: entries.collect(), tiers: None, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::manifest::EntryKind;
    use crate::EntryPath;

    /// A format 5 manifest of three tiers: `bin/tool` in all, `doc/` in
    /// `full` only.
    fn multi() -> Manifest {
        let p = |s| EntryPath::parse(s).unwrap();
        let file = |s, h| Entry { path: p(s), mode: 0o644, kind: EntryKind::File { size: 1, sha256: [h; 32] } };
        let mut m = crate::manifest::tests::sample();
        m.format = 5;
        m.entries = vec![
            Entry { path: p("bin"), mode: 0o755, kind: EntryKind::Dir },
            file("bin/tool", 1),
            Entry { path: p("doc"), mode: 0o755, kind: EntryKind::Dir },
            file("doc/a", 2),
            Entry { path: p("lib"), mode: 0o755, kind: EntryKind::Dir },
            file("lib/svc", 3),
        ];
        m.tiers = Some(Tiers {
            names: vec!["minimal".into(), "standard".into(), "full".into()],
            of_entry: vec![0b111, 0b111, 0b100, 0b100, 0b110, 0b110],
        });
        m
    }

    #[test]
    fn round_trip_and_spelling() {
        let m = multi();
        let text = m.to_text();
        assert!(text.contains("\ntiers minimal standard full\n"), "{text}");
        assert!(text.contains("\ndir minimal,standard,full 755 bin\n"), "{text}");
        assert!(text.contains("\nfile full 644 1 "), "{text}");
        assert!(text.contains("\nfile standard,full 644 1 "), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()), Ok(m));
    }

    #[test]
    fn a_selection_takes_its_tier_and_the_default_is_the_tier_line() {
        let m = multi();
        assert_eq!(m.tier_names(), ["minimal", "standard", "full"]);
        let def = m.select(None).unwrap();
        assert_eq!(def.tier, "standard");
        assert_eq!(def.take, [true, true, false, false, true, true]);
        let v = m.view(&m.select(Some("minimal")).unwrap());
        let paths: Vec<&str> = v.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "bin/tool"]);
        assert_eq!((v.tier.as_str(), v.tiers.is_none()), ("minimal", true));
        let e = m.select(Some("huge")).unwrap_err();
        assert!(e.contains("no tier `huge`") && e.contains("minimal, standard, full"), "{e}");
        let one = Manifest { tiers: None, ..multi() };
        assert!(one.select(Some("full")).unwrap_err().contains("holds tier `standard` only"));
        assert_eq!(one.select(Some("standard")).unwrap().take, [true; 6]);
    }

    fn refused(text: &str, want: &str) {
        let e = Manifest::parse(text.as_bytes()).expect_err(text).to_string();
        assert!(e.contains(want), "`{e}` should say `{want}`");
    }

    #[test]
    fn refusals() {
        let good = multi().to_text();
        let edit = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            good.replacen(from, to, 1)
        };
        refused(&edit("nxs-manifest 5", "nxs-manifest 4"), "`tiers` is a format 5 line");
        refused(&edit("tiers minimal standard full", "tiers minimal standard full full"), "named twice");
        refused(&edit("tiers minimal standard full", "tiers minimal st,d full"), "tier name `st,d`");
        refused(&edit("dir minimal,standard,full 755 bin", "dir 755 bin"), "not on the `tiers` line");
        refused(&edit("dir minimal,standard,full 755 bin", "dir full,minimal 755 bin"), "order");
        refused(&edit("dir minimal,standard,full 755 bin", "dir minimal,minimal 755 bin"), "order");
        refused(&edit("file full 644 1", "file minimal,full 644 1"), "its directory `doc` is in full only");
        refused(&edit("tier standard", "tier huge"), "default tier `huge` is not on the `tiers` line");
        let plain = Manifest { tiers: None, ..multi() }.to_text();
        let late = plain.replacen("\nend\n", "\ntiers minimal standard full\nend\n", 1);
        refused(&late, "before the first");
    }

    #[test]
    fn each_tier_checks_its_own_links() {
        // `bin/x -> ../lib/l/../esc/..` with `lib/esc -> ..`: through the
        // link `lib/l -> sub/deeper` it ends in `lib/sub`; in a tier
        // without `lib/l`, `lib/l/..` is `lib`, `esc` leads to the root
        // and the last `..` climbs out.
        let mut m = multi();
        let p = |s| EntryPath::parse(s).unwrap();
        let link = |s, t: &str| Entry { path: p(s), mode: 0o777, kind: EntryKind::Link { target: t.into() } };
        m.entries.insert(2, link("bin/x", "../lib/l/../esc/.."));
        m.entries.push(link("lib/esc", ".."));
        m.entries.push(link("lib/l", "sub/deeper"));
        let t = m.tiers.as_mut().unwrap();
        t.of_entry.insert(2, 0b110);
        t.of_entry.extend([0b110, 0b100]);
        let whole = Manifest { tiers: None, format: 4, ..m.clone() };
        assert!(Manifest::parse(whole.to_text().as_bytes()).is_ok(), "as one tree it stays inside");
        refused(&m.to_text(), "in tier `standard`");
    }
}

//! The signed manifest: a small line-oriented text that says what a bundle
//! is and everything it holds. The stub verifies the signature over these
//! exact bytes, then parses them here; nothing else about a bundle is
//! trusted.
//!
//! Each line is a keyword followed by fields separated by single spaces.
//! Fields are percent-encoded: a space, `%`, control characters and bytes
//! outside printable ASCII appear as `%XX`. The grammar is in
//! `docs/FORMAT.md`.

use crate::hex;
use crate::path::EntryPath;
use crate::version::Version;
use std::fmt;

mod links;
mod parse;
mod rules;
mod tiers;

pub use links::{check_link_chains, link_target_ok, LinkChainError, LinkChainErrorKind, MAX_LINK_CHAIN};
pub use parse::same_name;
pub use rules::{tag_problem, up_flag_problem, up_flags_problem, ServerUrl, RESERVED_UP_FLAGS};
pub use tiers::{tier_name_ok, Selection, Tiers, MAX_TIERS};

/// Most entries a manifest may list.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most zstd frames a manifest may list.
pub const MAX_FRAMES: usize = 1_000_000;
/// Largest raw (decompressed) size of one frame.
pub const MAX_FRAME_RAW: u64 = 64 << 20;
/// Most hook arguments, and the longest hook timeout.
pub const MAX_HOOK_ARGS: usize = 64;
pub const MAX_HOOK_TIMEOUT_SECS: u64 = 24 * 3600;

/// A byte region of the bundle: its length and sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// One independent zstd frame of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Its compressed length in the payload.
    pub compressed: u64,
    /// The number of tar bytes it decodes to, exactly.
    pub raw: u64,
    /// Format 3 and later: the sha256 of its compressed bytes, so a reader
    /// checks each frame before it decodes it, in one pass over the medium.
    pub sha256: Option<[u8; 32]>,
    /// Format 3 and later: the first tar member that begins in this frame,
    /// if one does, so a reader can start at this frame.
    pub first: Option<FirstMember>,
    /// Format 6 and later: the frame lies in the manifest's shared part
    /// (a file beside the bundle, on a stick), not in the bundle's payload.
    pub shared: bool,
}

impl Frame {
    /// A frame of a format 1 or 2 manifest: sizes only.
    pub fn sized(compressed: u64, raw: u64) -> Frame {
        Frame { compressed, raw, sha256: None, first: None, shared: false }
    }
}

/// Format 6: the platform-independent part of a stick's bundles, stored
/// once beside them. Its frames are listed in the frame table, in tar
/// order among the bundle's own, each with its signed hash; this is the
/// file's name (a plain file name, [`shared_name_ok`]), length and sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPart {
    pub name: String,
    pub region: Region,
}

/// A shared part's name: 1 to 128 bytes of `A-Za-z0-9._-`, not starting
/// with a dot, so it names a file in the bundle's own directory on any
/// filesystem and nothing else.
pub fn shared_name_ok(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Where the first tar member that begins in a frame is: its index among
/// the manifest's entries (the entry count for the end-of-archive marker)
/// and its byte offset in the frame's decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstMember {
    pub entry: u64,
    pub offset: u64,
}

/// The Headscale login settings signed into the bundle. It has no field for
/// an auth key, on purpose: the key arrives at install time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headscale {
    pub login_server: String,
    pub ca_cert: Option<EntryPath>,
    pub tags: Vec<String>,
    pub hostname: String,
    /// The Tailscale client the bundle carries. `None` only in manifests
    /// from before the client was packed: settings, but nothing to join with.
    pub client: Option<TailscaleClient>,
    pub userspace: Userspace,
    /// Extra `tailscale up` flags, each checked by [`up_flag_problem`].
    pub up_flags: Vec<String>,
}

/// Where the Tailscale client's two programs sit in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleClient {
    pub tailscale: EntryPath,
    pub tailscaled: EntryPath,
}

/// When `tailscaled` runs with userspace networking instead of a TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Userspace {
    /// Only when the machine has no usable `/dev/net/tun`.
    #[default]
    Auto,
    Always,
    Never,
}

impl Userspace {
    pub fn as_str(self) -> &'static str {
        match self {
            Userspace::Auto => "auto",
            Userspace::Always => "always",
            Userspace::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Userspace> {
        [Userspace::Auto, Userspace::Always, Userspace::Never].into_iter().find(|u| u.as_str() == s)
    }
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookStage {
    Configure,
    /// Run when `Configure` fails, if the spec declares it (for example, a
    /// config written to another path).
    ConfigureFallback,
    Validate,
    Run,
}

impl HookStage {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStage::Configure => "configure",
            HookStage::ConfigureFallback => "configure-fallback",
            HookStage::Validate => "validate",
            HookStage::Run => "run",
        }
    }
    pub fn parse(s: &str) -> Option<HookStage> {
        match s {
            "configure" => Some(HookStage::Configure),
            "configure-fallback" => Some(HookStage::ConfigureFallback),
            "validate" => Some(HookStage::Validate),
            "run" => Some(HookStage::Run),
            _ => None,
        }
    }
}

/// A command run inside the install root during a state of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub stage: HookStage,
    pub timeout_secs: u64,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        sha256: [u8; 32],
    },
    /// A symbolic link. Its target is relative and, resolved from the
    /// link's directory, stays inside the root ([`link_target_ok`]), with
    /// the manifest's other links on its way followed too
    /// ([`check_link_chains`]).
    Link {
        target: String,
    },
}

/// One entry of the payload, in payload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: EntryPath,
    /// Permission bits (at most 0o7777). Extraction applies exactly these.
    pub mode: u32,
    pub kind: EntryKind,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The format version of its first line: what a reader may rely on
    /// (per-frame hashes from 3 on).
    pub format: u32,
    pub product: String,
    pub version: Version,
    pub tier: String,
    pub target: String,
    /// Seconds since the epoch stamped on every payload entry.
    pub mtime: u64,
    /// Signed with a development key: never for release.
    pub dev: bool,
    pub stub: Region,
    pub payload: Region,
    pub frames: Vec<Frame>,
    pub headscale: Option<Headscale>,
    pub hooks: Vec<Hook>,
    pub entries: Vec<Entry>,
    /// Format 5 and later: the tiers the bundle holds, when it holds more
    /// than the one its `tier` line names. That line is then the default.
    pub tiers: Option<Tiers>,
    /// Format 6 and later: the shared part some frames lie in, if any.
    pub shared: Option<SharedPart>,
}

/// Why a manifest was refused, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub line: usize,
    pub kind: ManifestErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestErrorKind {
    NotUtf8,
    NotAManifest,
    UnsupportedVersion(String),
    Syntax(String),
    Missing(&'static str),
    Duplicate(&'static str),
    Limit(String),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "manifest line {}: ", self.line)?;
        match &self.kind {
            ManifestErrorKind::NotUtf8 => write!(f, "not UTF-8"),
            ManifestErrorKind::NotAManifest => write!(f, "does not start with `nxs-manifest`"),
            ManifestErrorKind::UnsupportedVersion(v) => {
                write!(f, "manifest format {v}; this stub reads format {}", crate::FORMAT_VERSION)
            }
            ManifestErrorKind::Syntax(m) => f.write_str(m),
            ManifestErrorKind::Missing(k) => write!(f, "required line `{k}` is missing"),
            ManifestErrorKind::Duplicate(k) => write!(f, "line `{k}` appears twice"),
            ManifestErrorKind::Limit(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    /// True when the manifest is well formed but of a newer format.
    pub fn is_unsupported_version(&self) -> bool {
        matches!(self.kind, ManifestErrorKind::UnsupportedVersion(_))
    }
}

// ---------------------------------------------------------------------------
// Field encoding

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b == b'%' || b >= 0x7f
}

/// Percent-encodes one field.
pub fn encode_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if needs_escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    if out.is_empty() {
        // An empty field would vanish between two separators.
        out.push_str("%00");
    }
    out
}

/// Decodes one percent-encoded field; `None` unless it is in canonical form.
pub fn decode_field(s: &str) -> Option<String> {
    if s == "%00" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            let byte = (hi * 16 + lo) as u8;
            // Only escaped bytes may be escaped, so each value has one spelling.
            if !needs_escape(byte) || byte == 0 {
                return None;
            }
            out.push(byte);
            i += 3;
        } else if needs_escape(b[i]) {
            return None;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// Writing

impl Manifest {
    /// Serialises the manifest. `parse(m.to_text())` gives `m` back.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |fields: &[&str]| {
            let mut first = true;
            for f in fields {
                if !first {
                    s.push(' ');
                }
                // The keyword is never escaped; every other field is.
                if first {
                    s.push_str(f);
                } else {
                    s.push_str(&encode_field(f));
                }
                first = false;
            }
            s.push('\n');
        };
        let fv = self.format.to_string();
        line(&["nxs-manifest", &fv]);
        line(&["product", &self.product]);
        line(&["version", self.version.as_str()]);
        line(&["tier", &self.tier]);
        line(&["target", &self.target]);
        if let Some(t) = &self.tiers {
            let mut f = vec!["tiers"];
            f.extend(t.names.iter().map(String::as_str));
            line(&f);
        }
        line(&["mtime", &self.mtime.to_string()]);
        line(&["dev", if self.dev { "1" } else { "0" }]);
        line(&["stub", &self.stub.len.to_string(), &hex::encode(&self.stub.sha256)]);
        line(&["payload", &self.payload.len.to_string(), &hex::encode(&self.payload.sha256)]);
        if let Some(p) = &self.shared {
            line(&["shared", &p.name, &p.region.len.to_string(), &hex::encode(&p.region.sha256)]);
        }
        for fr in &self.frames {
            let f = self.frame_fields(fr);
            line(&f.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let Some(h) = &self.headscale {
            line(&["headscale-login-server", &h.login_server]);
            if let Some(ca) = &h.ca_cert {
                line(&["headscale-ca-cert", ca.as_str()]);
            }
            for t in &h.tags {
                line(&["headscale-tag", t]);
            }
            line(&["headscale-hostname", &h.hostname]);
            if self.format >= 2 {
                if let Some(c) = &h.client {
                    line(&["headscale-client", c.tailscale.as_str(), c.tailscaled.as_str()]);
                }
                line(&["headscale-userspace", h.userspace.as_str()]);
                for f in &h.up_flags {
                    line(&["headscale-up-flag", f]);
                }
            }
        }
        for hook in &self.hooks {
            let timeout = hook.timeout_secs.to_string();
            let mut f: Vec<&str> = vec!["hook", hook.stage.as_str(), &timeout];
            f.extend(hook.argv.iter().map(String::as_str));
            line(&f);
        }
        for i in 0..self.entries.len() {
            let f = self.entry_fields(i);
            line(&f.iter().map(String::as_str).collect::<Vec<_>>());
        }
        line(&["end"]);
        s
    }

    /// The fields of a frame's line, its keyword first, unescaped.
    fn frame_fields(&self, fr: &Frame) -> Vec<String> {
        let (c, r) = (fr.compressed.to_string(), fr.raw.to_string());
        if self.format < 3 {
            return vec!["frame".into(), c, r];
        }
        let sha = fr.sha256.map(|h| hex::encode(&h)).unwrap_or_default();
        let (e, o) = match fr.first {
            Some(f) => (f.entry.to_string(), f.offset.to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let kw = if fr.shared { "shared-frame" } else { "frame" };
        vec![kw.into(), c, r, sha, e, o]
    }

    /// The fields of entry `i`'s line, its keyword first, unescaped: with
    /// a `tiers` line, its tier set comes next.
    fn entry_fields(&self, i: usize) -> Vec<String> {
        let e = &self.entries[i];
        let mode = format!("{:o}", e.mode);
        let path = e.path.as_str().to_string();
        let (kw, rest) = match &e.kind {
            EntryKind::Dir => ("dir", vec![mode, path]),
            EntryKind::Link { target } => ("link", vec![path, target.clone()]),
            EntryKind::File { size, sha256 } => ("file", vec![mode, size.to_string(), hex::encode(sha256), path]),
        };
        let set = self.tiers.as_ref().map(|t| t.spell(t.of_entry[i]));
        std::iter::once(kw.to_string()).chain(set).chain(rest).collect()
    }

    /// Sum of the raw sizes of all frames: the tar stream's length.
    pub fn tar_len(&self) -> u64 {
        self.frames.iter().map(|f| f.raw).sum()
    }

    /// Sum of all file sizes.
    pub fn files_total(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                EntryKind::Dir | EntryKind::Link { .. } => 0,
            })
            .sum()
    }

    /// A short identifier for this bundle: product, version, tier, target.
    /// A multi-tier bundle's names no tier, as its file name does not.
    pub fn bundle_id(&self) -> String {
        match self.tiers {
            Some(_) => format!("{}-{}-{}", self.product, self.version, self.target),
            None => format!("{}-{}-{}-{}", self.product, self.version, self.tier, self.target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let p = |s| EntryPath::parse(s).unwrap();
        Manifest {
            format: crate::FORMAT_VERSION,
            product: "nxs-survival".into(),
            version: Version::parse("1.4.0").unwrap(),
            tier: "standard".into(),
            target: "x86_64-unknown-linux-musl".into(),
            mtime: 1_700_000_000,
            dev: false,
            stub: Region { len: 600_000, sha256: [1; 32] },
            payload: Region { len: 30, sha256: [2; 32] },
            frames: vec![
                Frame {
                    compressed: 10,
                    raw: 4096,
                    sha256: Some([3; 32]),
                    first: Some(FirstMember { entry: 0, offset: 0 }),
                    shared: false,
                },
                Frame { compressed: 20, raw: 1024, sha256: Some([4; 32]), first: None, shared: false },
            ],
            headscale: Some(Headscale {
                login_server: "https://hs.example.net".into(),
                ca_cert: Some(p("etc/ca.pem")),
                tags: vec!["tag:nxs".into()],
                hostname: "nxs-{hostname}".into(),
                client: Some(TailscaleClient { tailscale: p("bin/tailscale"), tailscaled: p("bin/tailscaled") }),
                userspace: Userspace::Always,
                up_flags: vec!["--accept-dns=false".into()],
            }),
            hooks: vec![Hook {
                stage: HookStage::Validate,
                timeout_secs: 30,
                argv: vec!["bin/nxs survival".into(), "check".into(), "--root".into(), ".".into(), "".into()],
            }],
            entries: vec![
                Entry { path: p("etc"), mode: 0o755, kind: EntryKind::Dir },
                Entry { path: p("etc/ca.pem"), mode: 0o644, kind: EntryKind::File { size: 5, sha256: [3; 32] } },
                Entry { path: p("etc/a b%c"), mode: 0o4755, kind: EntryKind::File { size: 0, sha256: [4; 32] } },
            ],
            tiers: None,
            shared: None,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let text = m.to_text();
        assert_eq!(Manifest::parse(text.as_bytes()), Ok(m));
        assert!(text.contains("file 644 5 0303"));
        assert!(text.contains("etc/a%20b%25c\n"));
    }

    fn check_refused(text: &str, want_line: usize, want_msg: &str) {
        let e = Manifest::parse(text.as_bytes()).expect_err(text);
        assert_eq!(e.line, want_line, "{e}");
        assert!(e.to_string().contains(want_msg), "`{e}` should mention `{want_msg}`");
    }

    #[test]
    fn refusals_name_the_line() {
        let good = sample().to_text();
        let edit = |from: &str, to: &str| good.replacen(from, to, 1);
        check_refused("hello\n", 1, "does not start");
        check_refused("nxs-manifest 7\nend\n", 1, "format 7");
        check_refused(&edit("end\n", ""), 22, "`end` is missing");
        check_refused(&good.replace("\nend\n", "\nend"), 23, "newline");
        check_refused(&edit("etc/ca.pem\n", "../ca.pem\n"), 13, "`..`");
        check_refused(&edit("dir 755 etc\n", "dir 755 etc\ndir 755 etc\n"), 21, "duplicate entry");
        check_refused(&edit("dir 755 etc\n", ""), 20, "before its directory");
        check_refused(&edit("dir 755 etc\n", "dir 755 etc\ndir 755 ETC\n"), 21, "`etc` and `ETC` name the same file");
        check_refused(&edit("frame 10 4096", "frame 11 4096"), 23, "does not add up");
        check_refused(&edit("mtime 1700000000", "mtime 1e9"), 6, "decimal");
        check_refused(&edit("mtime 1700000000", "mtime 01700000000"), 6, "decimal");
        check_refused(&edit("hook validate 30", "hook validate 030"), 19, "decimal");
        check_refused(&edit("file 644", "file 0644"), 21, "octal mode");
        check_refused(&edit("file 644", "file +644"), 21, "octal mode");
        check_refused(&edit("tier standard", "tier standard extra"), 4, "takes 1 field");
        check_refused(&edit("tier standard", "tier a%41"), 4, "badly encoded");
        check_refused(&edit("file 644", "file 17777"), 21, "octal mode");
        check_refused(&edit("version 1.4.0", "surprise 1"), 3, "unknown line");
        check_refused(&format!("{good}x\n"), 24, "after the `end`");
    }

    #[test]
    fn tags_and_up_flags_follow_the_clients_rules() {
        for good in ["tag:nxs", "tag:a", "tag:Prod-2"] {
            assert_eq!(tag_problem(good), None, "{good}");
        }
        for bad in ["nxs", "tag:", "tag:1a", "tag:-a", "tag:a_b", "tag:a.b", "tag:é"] {
            assert!(tag_problem(bad).is_some(), "{bad}");
        }
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(up_flags_problem(&f(&["--accept-dns=false", "--ssh"])), None);
        assert!(up_flags_problem(&f(&["--accept-dns=false", "--accept-dns"])).unwrap().contains("twice"));
        for reserved in ["--reset", "--timeout=5s", "--advertise-tags=tag:x"] {
            assert!(up_flag_problem(reserved).is_some(), "{reserved}");
        }
        let bad = sample().to_text().replace("headscale-tag tag:nxs\n", "headscale-tag tag:nxs_x\n");
        assert!(Manifest::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn links_stay_inside_the_root() {
        let p = |s| EntryPath::parse(s).unwrap();
        assert!(link_target_ok(&p("bin/nxs"), "../lib/nxs"));
        assert!(link_target_ok(&p("a/b/c"), "../../x"));
        assert!(!link_target_ok(&p("a/b/c"), "../../../x"), "climbs out of the root");
        assert!(!link_target_ok(&p("top"), "../x"));
        assert!(!link_target_ok(&p("bin/nxs"), "/etc/passwd"));
        assert!(!link_target_ok(&p("bin/nxs"), "./nxs"), "`.` parts have a second spelling");
        assert!(!link_target_ok(&p("bin/nxs"), "../lib/./nxs"));
        assert!(!link_target_ok(&p("bin/nxs"), ""));
        assert!(!link_target_ok(&p("bin/nxs"), "a//b"));
        let good = sample().to_text().replace("end\n", "link etc/link ca.pem\nend\n");
        let m = Manifest::parse(good.as_bytes()).unwrap();
        assert_eq!(m.entries.last().unwrap().kind, EntryKind::Link { target: "ca.pem".into() });
        assert_eq!(Manifest::parse(m.to_text().as_bytes()), Ok(m));
        check_refused(
            &sample().to_text().replace("end\n", "link etc/link ../../etc/passwd\nend\n"),
            23,
            "stay inside the root",
        );
        // Nothing may sit below a link: its parent must be a declared directory.
        check_refused(&sample().to_text().replace("end\n", "link etc/l ca.pem\nfile 644 0 0404040404040404040404040404040404040404040404040404040404040404 etc/l/x\nend\n"), 24, "before its directory");
    }

    /// `sample()` with `lines` before `end`; they start on line 23.
    fn with(lines: &str) -> String {
        sample().to_text().replace("end\n", &format!("{lines}end\n"))
    }

    #[test]
    fn names_with_one_meaning_are_refused() {
        use crate::path::tests::{DISTINCT, SAME_NAME};
        let dir = |name: &str| format!("dir 755 {}\n", encode_field(&format!("etc/{name}")));
        for (a, b) in SAME_NAME.iter().filter(|(a, b)| !a.contains('/') && !b.contains('/')) {
            for (first, second) in [(a, b), (b, a)] {
                let text = with(&format!("{}{}", dir(first), dir(second)));
                let e = Manifest::parse(text.as_bytes()).expect_err(&text).to_string();
                if EntryPath::parse(first).is_err() {
                    assert!(e.starts_with("manifest line 23: ") && e.contains("Form C"), "{e}");
                } else if EntryPath::parse(second).is_err() {
                    assert!(e.starts_with("manifest line 24: ") && e.contains("Form C"), "{e}");
                } else {
                    let want = format!("manifest line 24: `etc/{first}` and `etc/{second}` name the same file");
                    assert!(e.starts_with(&want), "{e}");
                    assert!(e.contains("case-insensitive or normalising filesystem"), "{e}");
                }
            }
        }
        // The pairs the brief of issue #12 names, all refused in a manifest
        // one way or the other.
        for (a, b) in [
            ("\u{3a3}", "\u{3c3}"),
            ("\u{3c3}", "\u{3c2}"),
            ("\u{3a3}", "\u{3c2}"),
            ("\u{df}", "ss"),
            ("\u{1e9e}", "ss"),
            ("\u{1e9e}", "\u{df}"),
            ("\u{212a}", "k"),
            ("\u{212b}", "\u{c5}"),
            ("\u{c5}", "A\u{30a}"),
            ("\u{2126}", "\u{3c9}"),
            ("\u{fb01}", "fi"),
            ("\u{d55c}", "\u{1112}\u{1161}\u{11ab}"),
            ("\u{e9}", "e\u{301}"),
            ("\u{929}", "\u{928}\u{93c}"),
            ("\u{b95}\u{bca}", "\u{b95}\u{bc6}\u{bbe}"),
        ] {
            let text = with(&format!("{}{}", dir(a), dir(b)));
            assert!(Manifest::parse(text.as_bytes()).is_err(), "{a:?} and {b:?}");
        }
        for (a, b) in DISTINCT.iter().filter(|(a, b)| !a.contains('/') && !b.contains('/')) {
            let text = with(&format!("{}{}", dir(a), dir(b)));
            let m = Manifest::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{a:?} and {b:?}: {e}"));
            assert_eq!(m.entries.len(), 5);
        }
    }

    /// `check_link_chains` over `(path, link target)`.
    fn chains(entries: &[(&str, Option<&str>)]) -> Result<(), LinkChainError> {
        let paths: Vec<EntryPath> = entries.iter().map(|(p, _)| EntryPath::parse(p).unwrap()).collect();
        check_link_chains(paths.iter().zip(entries).map(|(p, (_, t))| (p, *t)))
    }

    fn chain_refused(entries: &[(&str, Option<&str>)], want_index: usize, want: LinkChainErrorKind) {
        let e = chains(entries).expect_err("must be refused");
        assert_eq!((e.index, e.kind), (want_index, want), "{entries:?}");
    }

    #[test]
    fn link_chains_that_escape_are_refused() {
        let p = |s| EntryPath::parse(s).unwrap();
        let via = |s| LinkChainErrorKind::Escapes { via: Some(p(s)) };
        // Each target below is lexically fine: `link_target_ok` passes it.
        assert!(link_target_ok(&p("a/l1"), ".."));
        assert!(link_target_ok(&p("a/l2"), "l1/.."));
        assert!(link_target_ok(&p("top"), "a/l1/.."));
        // a/l1 is the root; a/l2 is then the root's parent.
        chain_refused(&[("a", None), ("a/l1", Some("..")), ("a/l2", Some("l1/.."))], 2, via("a/l1"));
        chain_refused(&[("a", None), ("a/l1", Some("..")), ("top", Some("a/l1/.."))], 2, via("a/l1"));
        // Two levels down, and out through a file name beyond.
        chain_refused(
            &[("a", None), ("a/b", None), ("a/b/up", Some("../..")), ("esc", Some("a/b/up/../x"))],
            3,
            via("a/b/up"),
        );
        // A chain of two links, each lexically inside.
        chain_refused(
            &[("a", None), ("a/b", None), ("a/b/up", Some("..")), ("a/up2", Some("b/up/..")), ("x", Some("a/up2/.."))],
            4,
            via("a/up2"),
        );
        // Through a link listed later: it is resolved first.
        chain_refused(&[("a", None), ("top", Some("a/l1/..")), ("a/l1", Some(".."))], 1, via("a/l1"));
        // Matched as a case-insensitive filesystem matches names.
        chain_refused(&[("a", None), ("a/l1", Some("..")), ("top", Some("A/L1/.."))], 2, via("a/l1"));
        chain_refused(&[("a", None), ("a/\u{3c3}", Some("..")), ("top", Some("A/\u{3a3}/.."))], 2, via("a/\u{3c3}"));
        // Lexically outside is refused here too.
        chain_refused(&[("top", Some("../x"))], 0, LinkChainErrorKind::Escapes { via: None });
    }

    #[test]
    fn link_loops_and_long_chains_are_refused() {
        let p = |s| EntryPath::parse(s).unwrap();
        chain_refused(&[("a", Some("b")), ("b", Some("a"))], 0, LinkChainErrorKind::Loop { at: p("a") });
        chain_refused(&[("d", None), ("d/l", Some("l/x"))], 1, LinkChainErrorKind::Loop { at: p("d/l") });
        chain_refused(
            &[("x", Some("y")), ("a", Some("b")), ("b", Some("a"))],
            1,
            LinkChainErrorKind::Loop { at: p("a") },
        );
        // l0 -> l1 -> ... -> l{n-1} -> file: following l0 takes n links.
        let chain = |n: usize| -> Vec<(String, Option<String>)> {
            (0..n)
                .map(|i| (format!("l{i}"), Some(if i + 1 == n { "file".to_string() } else { format!("l{}", i + 1) })))
                .chain([("file".to_string(), None)])
                .collect()
        };
        let borrow = |v: &[(String, Option<String>)]| -> Result<(), LinkChainError> {
            let list: Vec<(&str, Option<&str>)> = v.iter().map(|(p, t)| (p.as_str(), t.as_deref())).collect();
            chains(&list)
        };
        assert_eq!(borrow(&chain(40)), Ok(()), "40 links, as Linux follows");
        let e = borrow(&chain(41)).unwrap_err();
        assert_eq!((e.index, e.kind), (0, LinkChainErrorKind::TooLong));
        // Listed the other way round, the nested count refuses l0 all the same.
        let mut reversed = chain(41);
        reversed.reverse();
        let e = borrow(&reversed).unwrap_err();
        assert_eq!((e.path.as_str(), e.kind), ("l0", LinkChainErrorKind::TooLong));
    }

    #[test]
    fn legitimate_link_chains_are_accepted() {
        let tree = [
            ("bin", None),
            ("bin/tool", Some("../lib/cur/tool")),
            ("lib", None),
            ("lib/cur", Some("v2")),
            ("lib/v2", None),
            ("lib/v2/tool", None),
            ("lib/latest", Some("cur")),
            ("lib/v2/up", Some("..")),
            ("lib/v2/again", Some("up/cur/up/v2/tool")),
            ("etc", Some("./lib/./v2")),
            ("dangling", Some("lib/nothing/../../x")),
        ];
        assert_eq!(chains(&tree), Ok(()));
        let mut reversed = tree;
        reversed.reverse();
        assert_eq!(chains(&reversed), Ok(()), "order does not matter");
        // The same in a manifest, in the bundler's path order: `bin/tool`
        // goes through `lib/cur`, listed after it.
        let text = sample().to_text().replace(
            "end\n",
            "dir 755 bin\nlink bin/tool ../lib/cur/tool\ndir 755 lib\nlink lib/cur v2\ndir 755 lib/v2\n\
             file 755 0 0404040404040404040404040404040404040404040404040404040404040404 lib/v2/tool\nend\n",
        );
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 9);
    }

    #[test]
    fn manifests_refuse_link_chains() {
        check_refused(
            &with("dir 755 a\nlink a/l1 ..\nlink a/l2 l1/..\n"),
            25,
            "link `a/l2` -> `l1/..`: climbs above the root once the link `a/l1` on its way is followed",
        );
        check_refused(&with("dir 755 a\nlink a/up ../../etc\n"), 24, "stay inside the root");
        check_refused(&with("link top a/l1/..\ndir 755 a\nlink a/l1 ..\n"), 23, "climbs above the root");
        check_refused(&with("link x y\nlink y x\n"), 23, "loop of links at `x`");
    }

    #[test]
    fn escapes_are_canonical() {
        assert_eq!(decode_field("a%20b").as_deref(), Some("a b"));
        assert_eq!(decode_field("%41"), None, "an escaped plain byte has two spellings");
        assert_eq!(decode_field("a\tb"), None);
        assert_eq!(encode_field(""), "%00");
        assert_eq!(decode_field("%00").as_deref(), Some(""));
    }

    #[test]
    fn headscale_client_settings_are_checked() {
        let good = sample().to_text();
        let edit = |from: &str, to: &str| good.replacen(from, to, 1);
        check_refused(
            &edit("headscale-up-flag --accept-dns=false", "headscale-up-flag --auth-key=tskey"),
            18,
            "set by the stub",
        );
        check_refused(&edit("headscale-up-flag --accept-dns=false", "headscale-up-flag -x"), 18, "long flags");
        check_refused(&edit("headscale-userspace always", "headscale-userspace maybe"), 17, "auto, always or never");
        check_refused(&edit("headscale-client bin/tailscale", "headscale-client /bin/tailscale"), 16, "absolute path");
        check_refused(&edit("hs.example.net", "hs.example.net?x=1"), 12, "query");
        // A format 1 manifest, from before the client was packed, still reads;
        // the new lines are refused in it.
        let mut v1 = older(1);
        let old = v1.to_text();
        assert!(!old.contains("headscale-client"), "{old}");
        let hs = Manifest::parse(old.as_bytes()).unwrap().headscale.unwrap();
        assert_eq!((hs.client, hs.userspace, hs.up_flags.len()), (None, Userspace::Auto, 0));
        v1.format = 2;
        let with_client = v1.to_text().replacen("nxs-manifest 2", "nxs-manifest 1", 1);
        check_refused(&with_client, 16, "format 2 line");
    }

    /// The sample as a manifest of an older format would say it.
    fn older(format: u32) -> Manifest {
        let mut m = sample();
        m.format = format;
        if format < 3 {
            for f in &mut m.frames {
                *f = Frame::sized(f.compressed, f.raw);
            }
        }
        m
    }

    #[test]
    fn every_older_format_still_reads() {
        for v in crate::OLDEST_FORMAT_VERSION..crate::FORMAT_VERSION {
            let mut m = older(v);
            if v < 2 {
                let hs = m.headscale.as_mut().unwrap();
                (hs.client, hs.userspace, hs.up_flags) = (None, Userspace::Auto, vec![]);
            }
            let text = m.to_text();
            assert!(text.starts_with(&format!("nxs-manifest {v}\n")));
            assert_eq!(text.contains("\nframe 10 4096\n"), v < 3, "{text}");
            assert_eq!(Manifest::parse(text.as_bytes()), Ok(m), "format {v}");
        }
    }

    #[test]
    fn a_format_3_frame_carries_its_hash_and_index_and_both_are_checked() {
        let good = sample().to_text();
        let h3 = "03".repeat(32);
        let line = format!("frame 10 4096 {h3} 0 0\n");
        assert!(good.contains(&line), "{good}");
        assert!(good.contains(&format!("frame 20 1024 {} - -\n", "04".repeat(32))), "{good}");
        let edit = |to: &str| good.replacen(&line, to, 1);
        check_refused(&edit("frame 10 4096\n"), 10, "takes 5 field(s)");
        check_refused(&edit(&format!("frame 10 4096 {h3} 1 0\n")), 23, "entry 0 at offset 0");
        check_refused(&edit(&format!("frame 10 4096 {h3} - -\n")), 23, "entry 0 at offset 0");
        check_refused(&edit(&format!("frame 10 4096 {h3} 0 4096\n")), 10, "not inside the frame");
        check_refused(&edit(&format!("frame 10 4096 {h3} 0 -\n")), 10, "decimal");
        check_refused(&edit(&format!("frame 10 4096 {} 0 0\n", "3".repeat(63))), 10, "64 lower-case hex");
        let second = format!("frame 20 1024 {} - -\n", "04".repeat(32));
        let two = |to: &str| good.replacen(&second, to, 1);
        check_refused(&two(&format!("frame 20 1024 {} 0 5\n", "04".repeat(32))), 11, "does not follow entry 0");
        check_refused(&two(&format!("frame 20 1024 {} 9 5\n", "04".repeat(32))), 23, "past the last");
        let fine = two(&format!("frame 20 1024 {} 2 5\n", "04".repeat(32)));
        assert_eq!(
            Manifest::parse(fine.as_bytes()).unwrap().frames[1].first,
            Some(FirstMember { entry: 2, offset: 5 })
        );
    }

    #[test]
    fn a_format_6_shared_part_lists_its_frames_and_they_must_add_up() {
        let mut m = sample();
        m.frames[1].shared = true;
        m.payload.len = 10;
        m.shared = Some(SharedPart { name: "nxs-1.4.0.shared".into(), region: Region { len: 20, sha256: [5; 32] } });
        let text = m.to_text();
        assert!(text.contains(&format!("\nshared nxs-1.4.0.shared 20 {}\n", "05".repeat(32))), "{text}");
        assert!(text.contains(&format!("\nshared-frame 20 1024 {} - -\n", "04".repeat(32))), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()), Ok(m.clone()));
        let edit = |from: &str, to: &str| text.replacen(from, to, 1);
        check_refused(&edit("shared nxs-1.4.0.shared 20", "shared nxs-1.4.0.shared 21"), 24, "shared part's length");
        check_refused(&edit("shared nxs-1.4.0.shared", "shared ../x"), 10, "shared part `../x`");
        check_refused(&edit("shared nxs-1.4.0.shared", "shared .hidden"), 10, "not first a dot");
        let line = format!("shared nxs-1.4.0.shared 20 {}\n", "05".repeat(32));
        check_refused(&edit(&line, ""), 23, "no `shared` line");
        check_refused(&edit("\nshared-frame", "\nframe"), 24, "payload length");
        check_refused(&text.replacen("nxs-manifest 6", "nxs-manifest 5", 1), 10, "format 6 line");
        for ok in ["a", "nxs-survival-1.4.0.shared", "A_b.c-9"] {
            assert!(shared_name_ok(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!shared_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn login_server_urls() {
        let u = ServerUrl::parse("https://hs.example.net").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port), (true, "hs.example.net", 443));
        let u = ServerUrl::parse("http://127.0.0.1:8080/base").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port), (false, "127.0.0.1", 8080));
        let u = ServerUrl::parse("http://[::1]:9").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        for bad in ["ftp://x", "https://", "http://h:0", "http://h:x", "https://u:p@h", "http://h h"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

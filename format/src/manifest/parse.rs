//! Parsing the manifest's text: each kind of line in a method of its own
//! ([`Parser`]), then the checks on the whole once `end` is read.

use super::*;
use std::collections::{HashMap, HashSet};

fn err(line: usize, kind: ManifestErrorKind) -> ManifestError {
    ManifestError { line, kind }
}

fn syntax(line: usize, msg: impl Into<String>) -> ManifestError {
    err(line, ManifestErrorKind::Syntax(msg.into()))
}

/// A format 3 frame's index, against the frames before it: the member it
/// names begins inside the frame, and after every member named before.
fn check_first(line: usize, prev: Option<FirstMember>, f: &Frame) -> Result<(), ManifestError> {
    let Some(first) = f.first else { return Ok(()) };
    if first.offset >= f.raw {
        return Err(syntax(
            line,
            format!("frame index: offset {} is not inside the frame's {} bytes", first.offset, f.raw),
        ));
    }
    if let Some(prev) = prev {
        if first.entry <= prev.entry {
            return Err(syntax(
                line,
                format!("frame index: entry {} does not follow entry {}", first.entry, prev.entry),
            ));
        }
    }
    Ok(())
}

fn num(line: usize, what: &str, s: &str) -> Result<u64, ManifestError> {
    // One spelling per number: no sign, no leading zeros.
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(syntax(line, format!("{what}: expected a decimal number, found `{s}`")));
    }
    s.parse().map_err(|_| syntax(line, format!("{what}: number `{s}` does not fit 64 bits")))
}

fn digest(line: usize, s: &str) -> Result<[u8; 32], ManifestError> {
    hex::decode_sha256(s).ok_or_else(|| syntax(line, format!("expected 64 lower-case hex digits, found `{s}`")))
}

fn mode(line: usize, s: &str) -> Result<u32, ManifestError> {
    match u32::from_str_radix(s, 8) {
        Ok(m)
            if m <= 0o7777
                && !s.is_empty()
                && s.len() <= 4
                && !(s.len() > 1 && s.starts_with('0'))
                && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(m)
        }
        _ => Err(syntax(line, format!("expected an octal mode up to 7777, found `{s}`"))),
    }
}

fn entry_path(line: usize, s: &str) -> Result<EntryPath, ManifestError> {
    EntryPath::parse(s).map_err(|e| syntax(line, format!("path `{s}`: {e}")))
}

/// Why two paths with one name key are refused: the bundler says it too.
pub fn same_name(a: &EntryPath, b: &EntryPath) -> String {
    format!(
        "`{a}` and `{b}` name the same file on a case-insensitive or normalising filesystem \
         (they are equal under Unicode canonical caseless matching)"
    )
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: usize, key: &'static str) -> Result<(), ManifestError> {
    if slot.is_some() {
        return Err(err(line, ManifestErrorKind::Duplicate(key)));
    }
    *slot = Some(value);
    Ok(())
}

impl Manifest {
    /// Parses manifest bytes.
    ///
    /// # Security
    /// Call this only on bytes whose signature has been verified, and keep
    /// using those same bytes. The parser is still strict on its own: every
    /// number is range-checked, every path is an [`EntryPath`], counts are
    /// capped, entries are unique even under Unicode canonical caseless
    /// matching ([`crate::path::name_key`]) and their parents are declared
    /// first, no link leads out of the root even through other links
    /// ([`check_link_chains`]), and the frame table must add up to the
    /// payload length.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| err(1, ManifestErrorKind::NotUtf8))?;
        if !text.ends_with('\n') {
            return Err(syntax(text.lines().count().max(1), "manifest does not end with a newline"));
        }
        let mut lines = text[..text.len() - 1].split('\n').enumerate().map(|(i, l)| (i + 1, l));
        let mut p = Parser { format: format_line(lines.next())?, ..Parser::default() };
        let mut ended = false;
        let mut last_line = 1;
        for (n, l) in lines {
            last_line = n;
            if ended {
                return Err(syntax(n, "text after the `end` line"));
            }
            let mut parts = l.split(' ');
            let key = parts.next().unwrap_or("");
            let fields: Vec<String> = parts
                .map(|f| decode_field(f).ok_or_else(|| syntax(n, format!("badly encoded field `{f}`"))))
                .collect::<Result<_, _>>()?;
            if key == "end" {
                want(n, key, &fields, 0)?;
                ended = true;
            } else {
                p.line(n, key, &fields)?;
            }
        }
        if !ended {
            return Err(err(last_line, ManifestErrorKind::Missing("end")));
        }
        p.finish(last_line)
    }
}

/// `nxs-manifest N`, a version this parser reads.
fn format_line(first: Option<(usize, &str)>) -> Result<u32, ManifestError> {
    match first {
        Some((_, l))
            if (crate::OLDEST_FORMAT_VERSION..=crate::FORMAT_VERSION).any(|v| l == format!("nxs-manifest {v}")) =>
        {
            Ok(l["nxs-manifest ".len()..].parse().expect("one of ours"))
        }
        Some((n, l)) => Err(match l.strip_prefix("nxs-manifest ") {
            Some(v) => err(n, ManifestErrorKind::UnsupportedVersion(v.to_string())),
            None => err(n, ManifestErrorKind::NotAManifest),
        }),
        None => Err(err(1, ManifestErrorKind::NotAManifest)),
    }
}

/// A line of `key` takes exactly `k` fields.
fn want(n: usize, key: &str, fields: &[String], k: usize) -> Result<(), ManifestError> {
    if fields.len() == k {
        Ok(())
    } else {
        Err(syntax(n, format!("`{key}` takes {k} field(s), found {}", fields.len())))
    }
}

/// What the lines have said so far.
#[derive(Default)]
struct Parser {
    format: u32,
    product: Option<String>,
    version: Option<Version>,
    tier: Option<String>,
    target: Option<String>,
    mtime: Option<u64>,
    dev: Option<bool>,
    stub: Option<Region>,
    payload: Option<Region>,
    shared: Option<SharedPart>,
    frames: Vec<Frame>,
    last_first: Option<FirstMember>,
    hs_server: Option<String>,
    hs_ca: Option<EntryPath>,
    hs_host: Option<String>,
    hs_tags: Vec<String>,
    hs_client: Option<TailscaleClient>,
    hs_userspace: Option<Userspace>,
    hs_flags: Vec<String>,
    hooks: Vec<Hook>,
    entries: Vec<Entry>,
    seen: HashSet<EntryPath>,
    /// Name key -> the path that has it, to name both in a refusal.
    folded: HashMap<String, EntryPath>,
    /// The line of each entry, for the link-chain check after `end`.
    entry_lines: Vec<usize>,
    dirs: HashSet<EntryPath>,
    /// Format 5: the `tiers` line's names, then each entry's set.
    tier_names: Option<Vec<String>>,
    tier_sets: Vec<u64>,
    /// Each directory's tier set, for the parent rule.
    dir_sets: HashMap<EntryPath, u64>,
}

impl Parser {
    /// One line, `end` aside.
    fn line(&mut self, n: usize, key: &str, fields: &[String]) -> Result<(), ManifestError> {
        if self.format < 2 && matches!(key, "headscale-client" | "headscale-userspace" | "headscale-up-flag") {
            return Err(syntax(n, format!("`{key}` is a format 2 line, in a format 1 manifest")));
        }
        let one = |k: &str| want(n, k, fields, 1);
        match key {
            "product" => one(key).and_then(|_| set_once(&mut self.product, fields[0].clone(), n, "product")),
            "version" => {
                one(key)?;
                let v = Version::parse(&fields[0])
                    .ok_or_else(|| syntax(n, format!("version `{}`: expected numbers and dots", fields[0])))?;
                set_once(&mut self.version, v, n, "version")
            }
            "tier" => one(key).and_then(|_| set_once(&mut self.tier, fields[0].clone(), n, "tier")),
            "target" => one(key).and_then(|_| set_once(&mut self.target, fields[0].clone(), n, "target")),
            "mtime" => {
                one(key)?;
                set_once(&mut self.mtime, num(n, "mtime", &fields[0])?, n, "mtime")
            }
            "dev" => {
                one(key)?;
                let d = match fields[0].as_str() {
                    "0" => false,
                    "1" => true,
                    o => return Err(syntax(n, format!("dev: expected 0 or 1, found `{o}`"))),
                };
                set_once(&mut self.dev, d, n, "dev")
            }
            "stub" | "payload" => {
                want(n, key, fields, 2)?;
                let r = Region { len: num(n, key, &fields[0])?, sha256: digest(n, &fields[1])? };
                match key {
                    "stub" => set_once(&mut self.stub, r, n, "stub"),
                    _ => set_once(&mut self.payload, r, n, "payload"),
                }
            }
            "tiers" => self.tiers(n, fields),
            "frame" => self.frame(n, fields, false),
            "shared" | "shared-frame" if self.format < 6 => {
                Err(syntax(n, format!("`{key}` is a format 6 line, in a format {} manifest", self.format)))
            }
            "shared-frame" => self.frame(n, fields, true),
            "shared" => {
                want(n, key, fields, 3)?;
                if !shared_name_ok(&fields[0]) {
                    return Err(syntax(
                        n,
                        format!(
                            "shared part `{}`: a name is 1 to 128 of A-Z a-z 0-9 . _ -, not first a dot",
                            fields[0]
                        ),
                    ));
                }
                let region = Region { len: num(n, key, &fields[1])?, sha256: digest(n, &fields[2])? };
                set_once(&mut self.shared, SharedPart { name: fields[0].clone(), region }, n, "shared")
            }
            "hook" => self.hook(n, fields),
            "dir" | "file" | "link" => self.entry(n, key, fields),
            "headscale-login-server"
            | "headscale-ca-cert"
            | "headscale-tag"
            | "headscale-hostname"
            | "headscale-client"
            | "headscale-userspace"
            | "headscale-up-flag" => self.headscale(n, key, fields),
            other => Err(syntax(n, format!("unknown line `{other}`"))),
        }
    }

    /// `frame COMPRESSED RAW`, and in format 3 `SHA256 ENTRY OFFSET` too;
    /// in format 6, `shared-frame` with the same fields for a frame of the
    /// shared part.
    fn frame(&mut self, n: usize, fields: &[String], shared: bool) -> Result<(), ManifestError> {
        want(n, "frame", fields, if self.format >= 3 { 5 } else { 2 })?;
        if self.frames.len() >= MAX_FRAMES {
            return Err(err(n, ManifestErrorKind::Limit(format!("more than {MAX_FRAMES} frames"))));
        }
        let mut f = Frame::sized(num(n, "frame", &fields[0])?, num(n, "frame", &fields[1])?);
        f.shared = shared;
        if f.raw == 0 || f.raw > MAX_FRAME_RAW || f.compressed == 0 {
            return Err(err(n, ManifestErrorKind::Limit(format!("frame sizes must be 1..={MAX_FRAME_RAW} bytes"))));
        }
        if self.format >= 3 {
            f.sha256 = Some(digest(n, &fields[2])?);
            f.first = match (fields[3].as_str(), fields[4].as_str()) {
                ("-", "-") => None,
                (e, o) => Some(FirstMember { entry: num(n, "frame", e)?, offset: num(n, "frame", o)? }),
            };
            check_first(n, self.last_first, &f)?;
            self.last_first = f.first.or(self.last_first);
        }
        self.frames.push(f);
        Ok(())
    }

    /// The `headscale-*` lines.
    fn headscale(&mut self, n: usize, key: &str, fields: &[String]) -> Result<(), ManifestError> {
        want(n, key, fields, if key == "headscale-client" { 2 } else { 1 })?;
        let f = &fields[0];
        match key {
            "headscale-login-server" => {
                ServerUrl::parse(f).map_err(|e| syntax(n, e))?;
                set_once(&mut self.hs_server, f.clone(), n, "headscale-login-server")
            }
            "headscale-ca-cert" => set_once(&mut self.hs_ca, entry_path(n, f)?, n, "headscale-ca-cert"),
            "headscale-tag" => {
                if let Some(p) = tag_problem(f) {
                    return Err(syntax(n, p));
                }
                self.hs_tags.push(f.clone());
                Ok(())
            }
            "headscale-hostname" => set_once(&mut self.hs_host, f.clone(), n, "headscale-hostname"),
            "headscale-client" => {
                let c = TailscaleClient { tailscale: entry_path(n, f)?, tailscaled: entry_path(n, &fields[1])? };
                set_once(&mut self.hs_client, c, n, "headscale-client")
            }
            "headscale-userspace" => {
                let u = Userspace::parse(f).ok_or_else(|| {
                    syntax(n, format!("headscale-userspace: expected auto, always or never, found `{f}`"))
                })?;
                set_once(&mut self.hs_userspace, u, n, "headscale-userspace")
            }
            "headscale-up-flag" => {
                if let Some(p) = up_flag_problem(f) {
                    return Err(syntax(n, p));
                }
                if self.hs_flags.len() >= MAX_HOOK_ARGS {
                    return Err(err(n, ManifestErrorKind::Limit(format!("more than {MAX_HOOK_ARGS} up flags"))));
                }
                self.hs_flags.push(f.clone());
                match up_flags_problem(&self.hs_flags) {
                    Some(p) => Err(syntax(n, p)),
                    None => Ok(()),
                }
            }
            other => Err(syntax(n, format!("unknown line `{other}`"))),
        }
    }

    /// `hook STAGE TIMEOUT ARGV...`.
    fn hook(&mut self, n: usize, fields: &[String]) -> Result<(), ManifestError> {
        if fields.len() < 3 || fields.len() > MAX_HOOK_ARGS + 2 {
            return Err(syntax(n, format!("`hook` takes a stage, a timeout and 1..={MAX_HOOK_ARGS} arguments")));
        }
        let stage = HookStage::parse(&fields[0]).ok_or_else(|| {
            syntax(n, format!("hook stage `{}`: expected configure, configure-fallback, validate or run", fields[0]))
        })?;
        let timeout_secs = num(n, "hook timeout", &fields[1])?;
        if timeout_secs == 0 || timeout_secs > MAX_HOOK_TIMEOUT_SECS {
            return Err(syntax(n, format!("hook timeout must be 1..={MAX_HOOK_TIMEOUT_SECS} seconds")));
        }
        self.hooks.push(Hook { stage, timeout_secs, argv: fields[2..].to_vec() });
        Ok(())
    }

    /// `tiers NAME...` (format 5): the tiers a multi-tier bundle holds,
    /// once, before the first entry.
    fn tiers(&mut self, n: usize, fields: &[String]) -> Result<(), ManifestError> {
        if self.format < 5 {
            return Err(syntax(n, format!("`tiers` is a format 5 line, in a format {} manifest", self.format)));
        }
        if !self.entries.is_empty() {
            return Err(syntax(n, "`tiers` comes after an entry; it must come before the first"));
        }
        if fields.is_empty() || fields.len() > MAX_TIERS {
            return Err(syntax(n, format!("`tiers` names 1 to {MAX_TIERS} tiers, found {}", fields.len())));
        }
        for (i, t) in fields.iter().enumerate() {
            if !tier_name_ok(t) {
                return Err(syntax(n, format!("tier name `{t}`: expected ASCII letters, digits, `-`, `_` or `.`")));
            }
            if fields[..i].contains(t) {
                return Err(syntax(n, format!("tier `{t}` is named twice")));
            }
        }
        set_once(&mut self.tier_names, fields.to_vec(), n, "tiers")
    }

    /// An entry's tier set (format 5, with `tiers`): names from `tiers`,
    /// comma-separated, in its order, at least one.
    fn tier_set(&self, n: usize, field: &str) -> Result<u64, ManifestError> {
        let names = self.tier_names.as_ref().expect("asked only with a tiers line");
        let mut set = 0u64;
        let mut last = None;
        for t in field.split(',') {
            let Some(i) = names.iter().position(|x| x == t) else {
                return Err(syntax(n, format!("tier set `{field}`: `{t}` is not on the `tiers` line")));
            };
            if last.is_some_and(|l| i <= l) {
                return Err(syntax(
                    n,
                    format!("tier set `{field}`: names must follow the `tiers` line's order, each once"),
                ));
            }
            last = Some(i);
            set |= 1 << i;
        }
        Ok(set)
    }

    /// `dir MODE PATH`, `file MODE SIZE SHA256 PATH`, `link PATH TARGET`:
    /// unique, even folded, and each after its directory. With a `tiers`
    /// line, each has its tier set first, within its directory's.
    fn entry(&mut self, n: usize, key: &str, fields: &[String]) -> Result<(), ManifestError> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(err(n, ManifestErrorKind::Limit(format!("more than {MAX_ENTRIES} entries"))));
        }
        let (set, fields) = match self.tier_names {
            Some(_) if fields.is_empty() => return Err(syntax(n, format!("`{key}` has no tier set"))),
            Some(_) => (Some(self.tier_set(n, &fields[0])?), &fields[1..]),
            None => (None, fields),
        };
        let entry = match key {
            "dir" => {
                want(n, key, fields, 2)?;
                Entry { mode: mode(n, &fields[0])?, path: entry_path(n, &fields[1])?, kind: EntryKind::Dir }
            }
            "link" => {
                want(n, key, fields, 2)?;
                let path = entry_path(n, &fields[0])?;
                if !link_target_ok(&path, &fields[1]) {
                    return Err(syntax(
                        n,
                        format!(
                            "link `{path}` -> `{}`: the target must be relative and stay inside the root",
                            fields[1]
                        ),
                    ));
                }
                Entry { path, mode: 0o777, kind: EntryKind::Link { target: fields[1].clone() } }
            }
            _ => {
                want(n, key, fields, 4)?;
                Entry {
                    mode: mode(n, &fields[0])?,
                    kind: EntryKind::File { size: num(n, "size", &fields[1])?, sha256: digest(n, &fields[2])? },
                    path: entry_path(n, &fields[3])?,
                }
            }
        };
        if !self.seen.insert(entry.path.clone()) {
            return Err(syntax(n, format!("duplicate entry `{}`", entry.path)));
        }
        if let Some(other) = self.folded.insert(entry.path.fold_key(), entry.path.clone()) {
            return Err(syntax(n, same_name(&other, &entry.path)));
        }
        if let Some(parent) = entry.path.parent() {
            if !self.dirs.contains(&parent) {
                return Err(syntax(n, format!("`{}` comes before its directory `{parent}`", entry.path)));
            }
            if let Some(set) = set.filter(|s| s & !self.dir_sets[&parent] != 0) {
                let names = self.tier_names.as_ref().expect("a set");
                let t = Tiers { names: names.clone(), of_entry: vec![] };
                return Err(syntax(
                    n,
                    format!(
                        "`{}` is in tiers {} and its directory `{parent}` is in {} only",
                        entry.path,
                        t.spell(set),
                        t.spell(self.dir_sets[&parent])
                    ),
                ));
            }
        }
        if entry.kind == EntryKind::Dir {
            self.dirs.insert(entry.path.clone());
            self.dir_sets.insert(entry.path.clone(), set.unwrap_or(u64::MAX));
        }
        self.tier_sets.extend(set);
        self.entries.push(entry);
        self.entry_lines.push(n);
        Ok(())
    }

    /// The checks on the whole, once every line is read.
    fn finish(self, last_line: usize) -> Result<Manifest, ManifestError> {
        // Links are checked again with the links on their way followed,
        // once every entry is known: a link may go through one listed later.
        let link = |e: &Entry| match &e.kind {
            EntryKind::Link { target } => (e.path.clone(), Some(target.clone())),
            _ => (e.path.clone(), None),
        };
        let all: Vec<_> = self.entries.iter().map(link).collect();
        check_link_chains(all.iter().map(|(p, t)| (p, t.as_deref())))
            .map_err(|e| syntax(self.entry_lines[e.index], e.to_string()))?;
        let tiers = self.tier_names.clone().map(|names| Tiers { names, of_entry: self.tier_sets.clone() });
        if let Some(t) = &tiers {
            // Each tier is a tree of its own: its links are checked again
            // without the entries it does not hold.
            for bit in 0..t.names.len() {
                let (lines, links): (Vec<usize>, Vec<_>) = (0..all.len())
                    .filter(|&i| t.of_entry[i] & (1 << bit) != 0)
                    .map(|i| (self.entry_lines[i], &all[i]))
                    .unzip();
                check_link_chains(links.iter().map(|(p, t)| (p, t.as_deref())))
                    .map_err(|e| syntax(lines[e.index], format!("in tier `{}`: {e}", t.names[bit])))?;
            }
        }
        let missing = |what: &'static str| err(last_line, ManifestErrorKind::Missing(what));
        let headscale =
            self.headscale_value().ok_or_else(|| missing("headscale-login-server and headscale-hostname"))?;
        let m = Manifest {
            format: self.format,
            product: self.product.ok_or_else(|| missing("product"))?,
            version: self.version.ok_or_else(|| missing("version"))?,
            tier: self.tier.ok_or_else(|| missing("tier"))?,
            target: self.target.ok_or_else(|| missing("target"))?,
            mtime: self.mtime.ok_or_else(|| missing("mtime"))?,
            dev: self.dev.ok_or_else(|| missing("dev"))?,
            stub: self.stub.ok_or_else(|| missing("stub"))?,
            payload: self.payload.ok_or_else(|| missing("payload"))?,
            frames: self.frames,
            headscale,
            hooks: self.hooks,
            entries: self.entries,
            tiers,
            shared: self.shared,
        };
        if let Some(t) = m.tiers.as_ref().filter(|t| !t.names.contains(&m.tier)) {
            return Err(syntax(
                last_line,
                format!("the default tier `{}` is not on the `tiers` line ({})", m.tier, t.names.join(", ")),
            ));
        }
        check_frames(&m, last_line)?;
        Ok(m)
    }

    /// The Headscale settings: all of them with a login server and a
    /// hostname, or none. `None` when some are given without those two.
    fn headscale_value(&self) -> Option<Option<Headscale>> {
        match (&self.hs_server, &self.hs_host) {
            (Some(login_server), Some(hostname)) => Some(Some(Headscale {
                login_server: login_server.clone(),
                ca_cert: self.hs_ca.clone(),
                tags: self.hs_tags.clone(),
                hostname: hostname.clone(),
                client: self.hs_client.clone(),
                userspace: self.hs_userspace.unwrap_or_default(),
                up_flags: self.hs_flags.clone(),
            })),
            (None, None)
                if self.hs_ca.is_none()
                    && self.hs_tags.is_empty()
                    && self.hs_client.is_none()
                    && self.hs_userspace.is_none()
                    && self.hs_flags.is_empty() =>
            {
                Some(None)
            }
            _ => None,
        }
    }
}

/// The frame table adds up to the payload, and in format 3 its index
/// starts at entry 0 and names no entry past the last.
fn check_frames(m: &Manifest, last_line: usize) -> Result<(), ManifestError> {
    let sum = |shared: bool| {
        m.frames.iter().filter(|f| f.shared == shared).try_fold(0u64, |acc, f| acc.checked_add(f.compressed))
    };
    if sum(false) != Some(m.payload.len) {
        return Err(syntax(last_line, "frame table does not add up to the payload length"));
    }
    match &m.shared {
        Some(p) if sum(true) != Some(p.region.len) || p.region.len == 0 => {
            return Err(syntax(last_line, "the shared frames do not add up to the shared part's length"));
        }
        None if m.frames.iter().any(|f| f.shared) => {
            return Err(syntax(last_line, "a `shared-frame` line, and no `shared` line names its part"));
        }
        _ => {}
    }
    if m.frames.iter().try_fold(0u64, |acc, f| acc.checked_add(f.raw)).is_none() {
        return Err(syntax(last_line, "frame table overflows"));
    }
    if m.format >= 3 {
        if m.frames.first().and_then(|f| f.first) != Some(FirstMember { entry: 0, offset: 0 }) {
            return Err(syntax(last_line, "the first frame's index must name entry 0 at offset 0"));
        }
        if m.frames.iter().filter_map(|f| f.first).any(|f| f.entry > m.entries.len() as u64) {
            return Err(syntax(last_line, "a frame's index names an entry past the last"));
        }
    }
    Ok(())
}

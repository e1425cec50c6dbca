//! The build plan: every bundle to write and every entry it will hold, with
//! the source each comes from. Computed before any byte is packed, so a
//! `--dry-run` prints it and a missing source stops the build before it
//! writes anything.

use crate::spec::{Source, Spec};
use anyhow::{bail, Context, Result};
use nxs_format::EntryPath;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    pub path: EntryPath,
    pub mode: u32,
    /// The file to read, or `None` for a directory or a link.
    pub source: Option<PathBuf>,
    /// For a symbolic link: its (relative, inside-the-root) target.
    pub link: Option<String>,
    /// The component that contributes it (`-` for implied parent dirs).
    pub component: String,
}

/// One bundle: a tier for a platform.
#[derive(Debug, Clone)]
pub struct BundlePlan {
    pub tier: String,
    pub target: String,
    pub file_name: String,
    /// In payload order: sorted by path, so every parent precedes its
    /// children; in a stick's bundle, the platform-independent files
    /// follow the rest, from `shared_from` on, each sorted by path.
    pub entries: Vec<PlannedEntry>,
    /// The first platform-independent file; `entries.len()` when none.
    pub shared_from: usize,
    /// A multi-tier bundle (a stick's): every tier, each entry once, with
    /// the tiers it belongs to; `tier` is then the default.
    pub tiers: Option<nxs_format::Tiers>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mtime: u64,
    pub bundles: Vec<BundlePlan>,
}

/// Picks the named items of `all`, or all of them when `wanted` is empty.
fn select<'a>(all: &'a [String], wanted: &[String], what: &str) -> Result<Vec<&'a String>> {
    if wanted.is_empty() {
        return Ok(all.iter().collect());
    }
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|a| *a == w)
                .with_context(|| format!("{what} `{w}` is not in the spec (it has: {})", all.join(", ")))
        })
        .collect()
}

/// Plans the bundles for the chosen platforms and tiers (all when empty).
/// `stubs` gives the stub binary for each platform.
pub fn plan(
    spec: &Spec,
    platforms: &[String],
    tiers: &[String],
    stubs: &BTreeMap<String, PathBuf>,
    mtime: u64,
) -> Result<Plan> {
    let tier_names: Vec<String> = spec.tiers.iter().map(|t| t.name.clone()).collect();
    let mut bundles = Vec::new();
    for target in select(&spec.platforms, platforms, "platform")? {
        for tier_name in select(&tier_names, tiers, "tier")? {
            let tier = spec.tier(tier_name).expect("selected from the spec");
            let mut entries: BTreeMap<EntryPath, PlannedEntry> = BTreeMap::new();
            for cname in &tier.components {
                let c = spec.component(cname).expect("checked by Spec::parse");
                if !c.platforms.is_empty() && !c.platforms.contains(target) {
                    continue;
                }
                let at = format!("{}:{}:{}", spec.file.display(), c.at.0, c.at.1);
                let source = match &c.source {
                    Source::Stub => stubs.get(target).cloned().with_context(|| {
                        format!("component `{cname}` ({at}) installs the stub, and no stub was built for {target}")
                    })?,
                    Source::Path(p) => spec.base_dir.join(p.replace("{target}", target)),
                };
                add_component(&mut entries, c, &source, &at).with_context(|| format!("component `{cname}` ({at})"))?;
            }
            if let Some(hs) = &spec.headscale {
                let client = hs.client();
                let needed = hs
                    .value
                    .ca_cert
                    .iter()
                    .map(|p| ("ca_cert", p, false))
                    .chain([("tailscale", &client.tailscale, true), ("tailscaled", &client.tailscaled, true)]);
                for (field, path, exec) in needed {
                    match entries.get(path) {
                        Some(e) if e.source.is_some() && (!exec || e.mode & 0o111 != 0) => {}
                        Some(e) if e.source.is_some() => bail!(
                            "{}:{}:{}: headscale.{field} `{path}` is not executable in tier `{tier_name}` for {target}\n  help: give its component mode = 0o755",
                            spec.file.display(), hs.at.0, hs.at.1
                        ),
                        _ => bail!(
                            "{}:{}:{}: headscale.{field} `{path}` is not a file of tier `{tier_name}` for {target}\n  help: add the component that installs it to the tier{}",
                            spec.file.display(), hs.at.0, hs.at.1,
                            if exec { "; see manifests/tailscale/README.md for where the Tailscale client comes from" } else { "" }
                        ),
                    }
                }
            }
            // The stub refuses the same, with the same rules, so a bundle
            // that would not install is never written.
            check_names(&entries).with_context(|| format!("tier `{tier_name}` for {target}"))?;
            nxs_format::manifest::check_link_chains(entries.values().map(|e| (&e.path, e.link.as_deref())))
                .map_err(|e| {
                    let component = &entries[&e.path].component;
                    anyhow::anyhow!("{e} (component `{component}`)\n  help: a packed link must lead inside the install root, with the links on its way followed")
                })
                .with_context(|| format!("tier `{tier_name}` for {target}"))?;
            let entries: Vec<PlannedEntry> = entries.into_values().collect();
            bundles.push(BundlePlan {
                tier: tier_name.clone(),
                target: target.clone(),
                file_name: format!("{}-{}-{}-{}.run", spec.name, spec.version, tier_name, target),
                shared_from: entries.len(),
                entries,
                tiers: None,
            });
        }
    }
    Ok(Plan { mtime, bundles })
}

/// Plans one bundle per chosen platform (all when empty) holding every
/// tier, each path once, marked with the tiers it belongs to: a stick's
/// bundles. A path that two tiers would fill differently is refused, since
/// it could be stored only once. With `shared`, the files of
/// platform-independent components come last, from `shared_from`.
pub fn plan_multi(
    spec: &Spec,
    platforms: &[String],
    stubs: &BTreeMap<String, PathBuf>,
    mtime: u64,
    shared: bool,
) -> Result<Plan> {
    let per_tier = plan(spec, platforms, &[], stubs, mtime)?;
    let names: Vec<String> = spec.tiers.iter().map(|t| t.name.clone()).collect();
    let mut bundles = Vec::new();
    for target in per_tier.bundles.iter().map(|b| &b.target).collect::<std::collections::BTreeSet<_>>() {
        let mut merged: BTreeMap<EntryPath, (PlannedEntry, u64)> = BTreeMap::new();
        for b in per_tier.bundles.iter().filter(|b| &b.target == target) {
            let bit = 1u64 << names.iter().position(|n| n == &b.tier).expect("a spec tier");
            for e in &b.entries {
                match merged.get_mut(&e.path) {
                    None => {
                        merged.insert(e.path.clone(), (e.clone(), bit));
                    }
                    Some((have, set)) if same_content(have, e) => *set |= bit,
                    Some((have, _)) => bail!(
                        "`{}` differs between tiers for {target}: component `{}` and component `{}` (tier `{}`) give it different contents\n  help: a stick's bundle stores each path once; give each tier the same file there",
                        e.path, have.component, e.component, b.tier
                    ),
                }
            }
        }
        // Directories and links stay in every platform's own part, so
        // each tree is whole before the shared files arrive.
        let independent = |e: &PlannedEntry| {
            shared && e.source.is_some() && spec.component(&e.component).is_some_and(|c| c.platform_independent)
        };
        let (shared, own): (Vec<_>, Vec<_>) = merged.into_values().partition(|(e, _)| independent(e));
        let shared_from = own.len();
        let (entries, of_entry): (Vec<PlannedEntry>, Vec<u64>) = own.into_iter().chain(shared).unzip();
        bundles.push(BundlePlan {
            tier: spec.default_tier.clone(),
            target: target.clone(),
            file_name: format!("{}-{}-{}.run", spec.name, spec.version, target),
            entries,
            shared_from,
            tiers: Some(nxs_format::Tiers { names: names.clone(), of_entry }),
        });
    }
    Ok(Plan { mtime, bundles })
}

/// The same entry, as far as the payload and manifest can tell.
fn same_content(a: &PlannedEntry, b: &PlannedEntry) -> bool {
    a.mode == b.mode && a.source == b.source && a.link == b.link
}

/// Refuses two entries that a filesystem ignoring case or normalising names
/// would merge: equal under Unicode canonical caseless matching
/// ([`nxs_format::path::name_key`]), as the stub checks the manifest.
fn check_names(entries: &BTreeMap<EntryPath, PlannedEntry>) -> Result<()> {
    let mut folded: BTreeMap<String, &PlannedEntry> = BTreeMap::new();
    for e in entries.values() {
        if let Some(other) = folded.insert(e.path.fold_key(), e) {
            bail!(
                "{}\n  {}\n  {}\n  help: rename one of them",
                nxs_format::manifest::same_name(&other.path, &e.path),
                origin(other),
                origin(e)
            );
        }
    }
    Ok(())
}

/// Where an entry comes from, for a message.
fn origin(e: &PlannedEntry) -> String {
    match (&e.source, &e.link, e.component.as_str()) {
        (_, _, "-") => format!("`{}`: a directory its contents imply", e.path),
        (Some(src), _, c) => format!("`{}`: component `{c}`, from {}", e.path, src.display()),
        (None, Some(target), c) => format!("`{}`: component `{c}`, a link to `{target}`", e.path),
        (None, None, c) => format!("`{}`: component `{c}`, a directory", e.path),
    }
}

fn insert(entries: &mut BTreeMap<EntryPath, PlannedEntry>, e: PlannedEntry) -> Result<()> {
    // Implied parent directories first.
    let mut parent = e.path.parent();
    let mut parents = Vec::new();
    while let Some(p) = parent {
        parent = p.parent();
        parents.push(p);
    }
    for p in parents.into_iter().rev() {
        match entries.get(&p) {
            Some(existing) if existing.source.is_some() || existing.link.is_some() => {
                // Nothing may sit below a link: the stub refuses it.
                bail!(
                    "`{}` needs `{p}` to be a directory, but component `{}` installs a {} there",
                    e.path,
                    existing.component,
                    if existing.source.is_some() { "file" } else { "link" }
                )
            }
            Some(_) => {}
            None => {
                entries.insert(
                    p.clone(),
                    PlannedEntry { path: p, mode: 0o755, source: None, link: None, component: "-".into() },
                );
            }
        }
    }
    match entries.get(&e.path) {
        // Two components may both declare the same directory.
        Some(existing)
            if existing.source.is_none() && e.source.is_none() && existing.link.is_none() && e.link.is_none() =>
        {
            if existing.component == "-" {
                entries.insert(e.path.clone(), e);
            }
            Ok(())
        }
        Some(existing) => bail!(
            "`{}` is installed by both component `{}` and component `{}`",
            e.path,
            existing.component,
            e.component
        ),
        None => {
            entries.insert(e.path.clone(), e);
            Ok(())
        }
    }
}

fn file_mode(explicit: Option<u32>, meta: &std::fs::Metadata) -> u32 {
    // Without an explicit mode, keep only "executable or not": the build
    // machine's umask and ownership must not leak into the bundle.
    explicit.unwrap_or(if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 })
}

fn add_component(
    entries: &mut BTreeMap<EntryPath, PlannedEntry>,
    c: &crate::spec::Component,
    source: &Path,
    _at: &str,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(source)
        .with_context(|| format!("source {} is missing or unreadable", source.display()))?;
    let name = c.name.clone();
    if meta.is_file() {
        return insert(
            entries,
            PlannedEntry {
                path: c.install.clone(),
                mode: file_mode(c.mode, &meta),
                source: Some(source.to_path_buf()),
                link: None,
                component: name,
            },
        );
    }
    if !meta.is_dir() {
        bail!(
            "source {} is neither a regular file nor a directory (symlinks and special files are not packed)",
            source.display()
        );
    }
    insert(
        entries,
        PlannedEntry { path: c.install.clone(), mode: c.dir_mode, source: None, link: None, component: name.clone() },
    )?;
    for item in walkdir::WalkDir::new(source).min_depth(1).sort_by_file_name().follow_links(false) {
        let item = item.with_context(|| format!("cannot walk {}", source.display()))?;
        let rel = item.path().strip_prefix(source).expect("walkdir yields paths under its root");
        let rel = rel.to_str().with_context(|| format!("{} is not UTF-8", item.path().display()))?;
        let path = EntryPath::parse(&format!("{}/{rel}", c.install))
            .with_context(|| format!("{} cannot be packed", item.path().display()))?;
        let ft = item.file_type();
        let entry = if ft.is_dir() {
            PlannedEntry { path, mode: c.dir_mode, source: None, link: None, component: name.clone() }
        } else if ft.is_file() {
            let meta = item.metadata()?;
            PlannedEntry {
                path,
                mode: file_mode(c.mode, &meta),
                source: Some(item.path().to_path_buf()),
                link: None,
                component: name.clone(),
            }
        } else if ft.is_symlink() {
            // Packed as a link, never followed; only a relative target that
            // stays inside the install root is allowed.
            let target = std::fs::read_link(item.path())?;
            let target =
                target.to_str().with_context(|| format!("{}: link target is not UTF-8", item.path().display()))?;
            if !nxs_format::manifest::link_target_ok(&path, target) {
                bail!(
                    "{} -> {target}: a packed link must be relative and stay inside the install root",
                    item.path().display()
                );
            }
            PlannedEntry { path, mode: 0o777, source: None, link: Some(target.to_string()), component: name.clone() }
        } else {
            bail!("{} is a special file; only regular files, directories and links are packed", item.path().display());
        };
        insert(entries, entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A spec in a temporary directory whose components `a` and `b` install
    /// the directories `src/a` and `src/b` at `install_a` and `install_b`.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for d in ["src/a", "src/b"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            Fixture { dir }
        }

        fn file(&self, rel: &str) -> &Fixture {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
            self
        }

        fn link(&self, rel: &str, target: &str) -> &Fixture {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
            self
        }

        fn plan(&self, install_a: &str, install_b: &str) -> Result<Plan> {
            let text = format!(
                r#"
platforms = ["x86_64-unknown-linux-musl"]
[product]
name = "nxs-survival"
version = "1.4.0"
[trust]
keys = ["keys/release.pub"]
[[component]]
name = "a"
source = "src/a"
install = "{install_a}"
[[component]]
name = "b"
source = "src/b"
install = "{install_b}"
[[tier]]
name = "minimal"
components = ["a", "b"]
"#
            );
            let spec = Spec::parse(&self.dir.path().join("spec.toml"), &text)?;
            plan(&spec, &[], &[], &BTreeMap::new(), 0)
        }
    }

    /// A two-platform, three-tier spec over components `a`, `b` and `c`.
    fn multi(f: &Fixture, c_install: &str, default: &str, full_extends: &str) -> Result<Plan> {
        let text = format!(
            r#"
platforms = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]
[product]
name = "nxs-survival"
version = "1.4.0"
[trust]
keys = ["keys/release.pub"]
[[component]]
name = "a"
source = "src/a"
install = "share/a"
[[component]]
name = "b"
source = "src/b"
install = "share/b"
[[component]]
name = "c"
source = "src/a"
install = "{c_install}"
mode = 0o600
[[tier]]
name = "minimal"
components = ["a"]
[[tier]]
name = "standard"
extends = "minimal"
components = ["b"]
{default}
[[tier]]
name = "full"
{full_extends}
components = ["c"]
"#
        );
        let spec = Spec::parse(&f.dir.path().join("spec.toml"), &text)?;
        plan_multi(&spec, &[], &BTreeMap::new(), 0, false)
    }

    #[test]
    fn a_multi_tier_plan_stores_each_path_once_with_its_tiers() {
        let f = Fixture::new();
        f.file("src/a/x").file("src/b/y");
        let plan = multi(&f, "opt/c", "default = true", "extends = \"standard\"").unwrap();
        let names: Vec<_> = plan.bundles.iter().map(|b| b.file_name.as_str()).collect();
        assert_eq!(
            names,
            ["nxs-survival-1.4.0-aarch64-unknown-linux-musl.run", "nxs-survival-1.4.0-x86_64-unknown-linux-musl.run"]
        );
        let b = &plan.bundles[1];
        assert_eq!(b.tier, "standard", "the tier marked default");
        let t = b.tiers.as_ref().unwrap();
        assert_eq!(t.names, ["minimal", "standard", "full"]);
        let sets: Vec<(&str, String)> =
            b.entries.iter().zip(&t.of_entry).map(|(e, s)| (e.path.as_str(), t.spell(*s))).collect();
        let want = [
            ("opt", "full"),
            ("opt/c", "full"),
            ("opt/c/x", "full"),
            ("share", "minimal,standard,full"),
            ("share/a", "minimal,standard,full"),
            ("share/a/x", "minimal,standard,full"),
            ("share/b", "standard,full"),
            ("share/b/y", "standard,full"),
        ];
        assert_eq!(sets, want.map(|(p, s)| (p, s.to_string())));
        // Without a mark, the last tier is the default.
        assert_eq!(multi(&f, "opt/c", "", "extends = \"standard\"").unwrap().bundles[0].tier, "full");
    }

    #[test]
    fn a_path_two_tiers_fill_differently_is_refused() {
        let f = Fixture::new();
        f.file("src/a/x").file("src/b/y");
        // Tier full (extending nothing) has component `c` put src/a at
        // share/a, its files with another mode than component `a` gives.
        refused(
            multi(&f, "share/a", "", ""),
            &[
                "`share/a/x` differs between tiers",
                "component `a` and component `c` (tier `full`)",
                "stores each path once",
            ],
        );
    }

    fn refused(r: Result<Plan>, want: &[&str]) {
        let e = format!("{:#}", r.expect_err("must be refused"));
        for w in want {
            assert!(e.contains(w), "`{e}` should contain `{w}`");
        }
    }

    #[test]
    fn names_with_one_meaning_are_refused_at_build_time() {
        let f = Fixture::new();
        f.file("src/a/Readme").file("src/b/README");
        refused(
            f.plan("doc", "doc"),
            &["`doc/README` and `doc/Readme` name the same file", "component `a`, from ", "src/a/Readme"],
        );
        let f = Fixture::new();
        f.file("src/a/\u{3a3}").file("src/b/\u{3c2}");
        refused(f.plan("x", "x"), &["`x/\u{3a3}` and `x/\u{3c2}` name the same file", "component `b`"]);
        let f = Fixture::new();
        f.file("src/a/stra\u{df}e").file("src/b/strasse");
        refused(f.plan("x", "x"), &["name the same file on a case-insensitive or normalising filesystem"]);
        // Two install paths, not two files: a directory and a file.
        let f = Fixture::new();
        f.file("src/a/f").file("src/b/f");
        refused(f.plan("\u{fb01}", "fi"), &["`fi` and `\u{fb01}` name the same file", "component `b`, a directory"]);
        // A source name not in NFC cannot be packed at all.
        let f = Fixture::new();
        f.file("src/a/cafe\u{301}");
        refused(f.plan("x", "y"), &["cannot be packed", "Normalization Form C", "caf\u{e9}"]);
        // Distinct names pass.
        let f = Fixture::new();
        f.file("src/a/caf\u{e9}").file("src/b/cafe");
        assert_eq!(f.plan("x", "x").unwrap().bundles[0].entries.len(), 3);
    }

    #[test]
    fn link_chains_are_refused_at_build_time() {
        // Each link is lexically inside; followed together, they leave.
        let f = Fixture::new();
        f.file("src/a/sub/f").link("src/a/sub/up", "../..").link("src/a/esc", "sub/up/..");
        refused(
            f.plan("top", "other"),
            &["link `top/esc` -> `sub/up/..`", "the link `top/sub/up` on its way", "component `a`"],
        );
        let f = Fixture::new();
        f.file("src/a/f").link("src/a/l", "..").link("src/b/esc", "../top/l/..");
        refused(f.plan("top", "b"), &["link `b/esc` -> `../top/l/..`", "component `b`"]);
        // A loop.
        let f = Fixture::new();
        f.link("src/a/x", "y").link("src/a/y", "x");
        refused(f.plan("top", "b"), &["loop of links"]);
        // Nothing may sit below a link, even when another component puts it there.
        let f = Fixture::new();
        f.link("src/a/l", "d").file("src/b/f");
        refused(f.plan("top", "top/l/x"), &["needs `top/l` to be a directory", "installs a link there"]);
        // A legitimate chain, through a link that sorts after it.
        let f = Fixture::new();
        f.file("src/a/v2/tool").link("src/a/cur", "v2").link("src/b/tool", "../lib/cur/tool");
        let plan = f.plan("lib", "bin").unwrap();
        let links: Vec<_> =
            plan.bundles[0].entries.iter().filter(|e| e.link.is_some()).map(|e| e.path.as_str()).collect();
        assert_eq!(links, ["bin/tool", "lib/cur"]);
    }
}

//! The bundle spec (`manifests/*.toml`): what a bundle is made of, read and
//! checked. Every error points at the spec's file, line and column and says
//! what was expected.

mod raw;
use raw::*;

use nxs_format::{EntryPath, HookStage, Version};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A spec error, located in the spec file.
#[derive(Debug, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub msg: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// How a component gets its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file or directory of the build tree; `{target}` in it is replaced
    /// by the platform's target triple.
    Path(String),
    /// The bootstrap stub built for the platform, installed as a tool.
    Stub,
}

#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub source: Source,
    pub install: EntryPath,
    /// Mode for files; `None` means 0755 if the source is executable, else 0644.
    pub mode: Option<u32>,
    pub dir_mode: u32,
    /// Platforms this component is for; empty means all.
    pub platforms: Vec<String>,
    /// Its files are the same on every platform: a stick keeps them once,
    /// in the shared part (docs/FORMAT.md, "The shared part").
    pub platform_independent: bool,
    /// Where it is declared, for errors found later.
    pub at: (usize, usize),
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// All components of the tier, its ancestors' first, without repeats.
    pub components: Vec<String>,
}

/// The spec's `[headscale]`: the manifest's own value (its `client` always
/// `Some`), and where in the spec it was written, for messages.
#[derive(Debug, Clone)]
pub struct HeadscaleSpec {
    pub value: nxs_format::Headscale,
    pub at: (usize, usize),
}

impl HeadscaleSpec {
    /// Where the Tailscale client's two programs are installed; some
    /// component of every tier must carry them.
    pub fn client(&self) -> &nxs_format::TailscaleClient {
        self.value.client.as_ref().expect("a spec's [headscale] always names the client")
    }
}

#[derive(Debug, Clone)]
pub struct HookSpec {
    pub stage: HookStage,
    pub argv: Vec<String>,
    pub timeout_secs: u64,
}

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub file: PathBuf,
    /// The directory that relative paths in the spec are taken from.
    pub base_dir: PathBuf,
    pub name: String,
    pub version: Version,
    pub mtime: Option<u64>,
    pub platforms: Vec<String>,
    /// `[trust] keys`: root version 1, any one of these keys (the trust
    /// model before format 4).
    pub trust_keys: Vec<(PathBuf, (usize, usize))>,
    /// `[trust] roots`: a chain of root files, oldest first; stubs embed
    /// the first, bundles carry them all, manifests are signed by the last.
    pub trust_roots: Vec<(PathBuf, (usize, usize))>,
    pub headscale: Option<HeadscaleSpec>,
    pub hooks: Vec<HookSpec>,
    pub components: Vec<Component>,
    pub tiers: Vec<Tier>,
    /// The tier a multi-tier bundle installs when none is named: the one
    /// marked `default = true`, else the last (the largest).
    pub default_tier: String,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// A secret in the spec would be signed into every bundle: say so
    /// plainly rather than with a generic "unknown field".
    fn no_secrets(&self) -> Result<(), SpecError> {
        let Ok(doc) = self.text.parse::<toml::Table>() else { return Ok(()) };
        if let Some(toml::Value::Table(hs)) = doc.get("headscale") {
            if let Some(k) = hs.keys().find(|k| looks_like_secret(k)) {
                let offset = self.text.find(k.as_str()).unwrap_or(0);
                return Err(self.err_at(
                    offset,
                    format!("`headscale.{k}` looks like a secret, and the spec is signed into every bundle"),
                    Some("the Headscale auth key is given at install time (--authkey-file, NXS_AUTHKEY_FILE, a prompt or an age-encrypted file), never in the spec"),
                ));
            }
        }
        Ok(())
    }

    fn platforms(&self, raw: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<String>, SpecError> {
        let mut platforms = Vec::new();
        for p in raw.get_ref() {
            if !plain_name(p.get_ref()) {
                return Err(self.err(p, format!("platform `{}`: expected a target triple", p.get_ref()), None));
            }
            if platforms.contains(p.get_ref()) {
                return Err(self.err(p, format!("platform `{}` is listed twice", p.get_ref()), None));
            }
            platforms.push(p.get_ref().clone());
        }
        if platforms.is_empty() {
            return Err(self.err(
                raw,
                "expected at least one platform",
                Some("for example platforms = [\"x86_64-unknown-linux-musl\"]"),
            ));
        }
        Ok(platforms)
    }

    /// `[headscale]`, checked as the client and the server check it.
    fn headscale(&self, h: &Spanned<RawHeadscale>) -> Result<HeadscaleSpec, SpecError> {
        let hs = h.get_ref();
        let url = hs.login_server.get_ref();
        if let Err(e) = nxs_format::ServerUrl::parse(url) {
            return Err(self.err(
                &hs.login_server,
                format!("login_server {e}"),
                Some("for example login_server = \"https://headscale.example.net\""),
            ));
        }
        let ca_cert = match &hs.ca_cert {
            None => None,
            Some(c) => Some(EntryPath::parse(c.get_ref()).map_err(|e| {
                self.err(c, format!("ca_cert `{}`: {e}", c.get_ref()), Some("ca_cert is the install path of a file that a component carries, such as etc/nxs/headscale-ca.pem"))
            })?),
        };
        let mut tags = Vec::new();
        for t in &hs.tags {
            if let Some(problem) = nxs_format::manifest::tag_problem(t.get_ref()) {
                return Err(self.err(
                    t,
                    problem,
                    Some("Headscale tags are `tag:` and a name such as tag:nxs; they are carried by the pre-auth key (headscale preauthkeys create --tags ...)"),
                ));
            }
            tags.push(t.get_ref().clone());
        }
        let hostname = self.hostname(&hs.hostname)?;
        let tailscale = self.program(&hs.tailscale, "bin/tailscale")?;
        let tailscaled = self.program(&hs.tailscaled, "bin/tailscaled")?;
        let userspace = match &hs.userspace {
            None => nxs_format::Userspace::Auto,
            Some(u) => nxs_format::Userspace::parse(u.get_ref()).ok_or_else(|| {
                self.err(
                    u,
                    format!("userspace `{}`: expected \"auto\", \"always\" or \"never\"", u.get_ref()),
                    Some("auto uses userspace networking only where there is no /dev/net/tun"),
                )
            })?,
        };
        let mut up_flags = Vec::new();
        for f in &hs.up_flags {
            if let Some(problem) = nxs_format::manifest::up_flag_problem(f.get_ref()) {
                return Err(self.err(f, format!("up_flags: {problem}"), None));
            }
            up_flags.push(f.get_ref().clone());
            if let Some(problem) = nxs_format::manifest::up_flags_problem(&up_flags) {
                return Err(self.err(f, format!("up_flags: {problem}"), None));
            }
        }
        Ok(HeadscaleSpec {
            value: nxs_format::Headscale {
                login_server: url.clone(),
                ca_cert,
                tags,
                hostname,
                client: Some(nxs_format::TailscaleClient { tailscale, tailscaled }),
                userspace,
                up_flags,
            },
            at: self.line_col(h.span().start),
        })
    }

    /// The hostname template: a DNS label once `{hostname}` is filled in.
    fn hostname(&self, h: &Spanned<String>) -> Result<String, SpecError> {
        let plain = h.get_ref().replace("{hostname}", "h");
        if plain.is_empty()
            || plain.len() > 63
            || !plain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(self.err(
                h,
                "hostname: expected a template such as `nxs-{hostname}` (letters, digits, `-`, and `{hostname}` for the machine's name)",
                None,
            ));
        }
        Ok(h.get_ref().clone())
    }

    /// The install path of one of the Tailscale client's programs.
    fn program(&self, v: &Option<Spanned<String>>, default: &str) -> Result<EntryPath, SpecError> {
        match v {
            None => Ok(EntryPath::parse(default).expect("a valid default")),
            Some(v) => EntryPath::parse(v.get_ref()).map_err(|e| {
                self.err(
                    v,
                    format!("`{}`: {e}", v.get_ref()),
                    Some("the install path of the program inside the bundle, such as bin/tailscale"),
                )
            }),
        }
    }

    fn hooks(&self, raw: &RawHooks) -> Result<Vec<HookSpec>, SpecError> {
        let mut hooks = Vec::new();
        for (stage, key, hook) in [
            (HookStage::Configure, "configure", &raw.configure),
            (HookStage::ConfigureFallback, "configure_fallback", &raw.configure_fallback),
            (HookStage::Validate, "validate", &raw.validate),
            (HookStage::Run, "run", &raw.run),
        ] {
            if let Some(h) = hook {
                let r = h.get_ref();
                if r.argv.is_empty() || r.argv.len() > nxs_format::manifest::MAX_HOOK_ARGS {
                    return Err(self.err(
                        h,
                        format!("hooks.{key}: argv needs 1 to {} arguments", nxs_format::manifest::MAX_HOOK_ARGS),
                        None,
                    ));
                }
                if r.timeout == 0 || r.timeout > nxs_format::manifest::MAX_HOOK_TIMEOUT_SECS {
                    return Err(self.err(
                        h,
                        format!(
                            "hooks.{key}: timeout must be 1 to {} seconds",
                            nxs_format::manifest::MAX_HOOK_TIMEOUT_SECS
                        ),
                        None,
                    ));
                }
                hooks.push(HookSpec { stage, argv: r.argv.clone(), timeout_secs: r.timeout });
            }
        }
        Ok(hooks)
    }

    /// A `[[component]]`: its name, where its files come from, where they
    /// go, their modes and platforms.
    fn component(
        &self,
        c: &Spanned<RawComponent>,
        platforms: &[String],
        before: &[Component],
    ) -> Result<Component, SpecError> {
        let rc = c.get_ref();
        let cname = rc.name.get_ref();
        if !plain_name(cname) {
            return Err(self.err(
                &rc.name,
                format!("component name `{cname}`: expected lower-case letters, digits, `-` or `_`"),
                None,
            ));
        }
        if before.iter().any(|o| &o.name == cname) {
            return Err(self.err(&rc.name, format!("component `{cname}` is declared twice"), None));
        }
        let source = match (&rc.source, &rc.from) {
            (Some(s), None) => Source::Path(s.get_ref().clone()),
            (None, Some(f)) if f.get_ref() == "stub" => Source::Stub,
            (None, Some(f)) => return Err(self.err(f, format!("from = `{}`: expected \"stub\"", f.get_ref()), None)),
            _ => {
                return Err(self.err(
                    c,
                    format!("component `{cname}`: expected exactly one of `source = \"path\"` or `from = \"stub\"`"),
                    None,
                ))
            }
        };
        let install = EntryPath::parse(rc.install.get_ref()).map_err(|e| {
            self.err(
                &rc.install,
                format!("install path `{}`: {e}", rc.install.get_ref()),
                Some("install paths are relative to the install root, with plain components only"),
            )
        })?;
        let check_mode = |m: &Option<Spanned<u32>>| -> Result<Option<u32>, SpecError> {
            match m {
                Some(m) if *m.get_ref() > 0o7777 => Err(self.err(
                    m,
                    format!("mode {:o}: expected permission bits up to 0o7777", m.get_ref()),
                    Some("write modes in octal, such as 0o755"),
                )),
                Some(m) => Ok(Some(*m.get_ref())),
                None => Ok(None),
            }
        };
        let mode = check_mode(&rc.mode)?;
        let dir_mode = check_mode(&rc.dir_mode)?.unwrap_or(0o755);
        let mut cplat = Vec::new();
        for p in &rc.platforms {
            if !platforms.contains(p.get_ref()) {
                return Err(self.err(p, format!("platform `{}` is not in the spec's platforms", p.get_ref()), None));
            }
            cplat.push(p.get_ref().clone());
        }
        let independent = rc.platform_independent.as_ref().filter(|b| *b.get_ref());
        if let Some((flag, why)) = independent.and_then(|f| Some((f, not_independent(&source, &cplat)?))) {
            return Err(self.err(
                flag,
                format!("component `{cname}` cannot be platform_independent: {why}"),
                Some("mark only components whose files are the same for every platform"),
            ));
        }
        Ok(Component {
            name: cname.clone(),
            source,
            install,
            mode,
            dir_mode,
            platforms: cplat,
            platform_independent: independent.is_some(),
            at: self.line_col(c.span().start),
        })
    }

    /// The `[[tier]]`s, each its own components and those of the tier it
    /// extends.
    fn tiers(&self, raw: &[Spanned<RawTier>], components: &[Component]) -> Result<Vec<Tier>, SpecError> {
        let mut tiers: Vec<Tier> = Vec::new();
        for t in raw {
            let rt = t.get_ref();
            let tname = rt.name.get_ref();
            if !plain_name(tname) {
                return Err(self.err(
                    &rt.name,
                    format!("tier name `{tname}`: expected lower-case letters, digits, `-` or `_`"),
                    None,
                ));
            }
            if tiers.iter().any(|o| &o.name == tname) {
                return Err(self.err(&rt.name, format!("tier `{tname}` is declared twice"), None));
            }
            let mut list = match &rt.extends {
                None => Vec::new(),
                Some(e) => {
                    tiers.iter().find(|o| &o.name == e.get_ref()).map(|o| o.components.clone()).ok_or_else(|| {
                        self.err(
                            e,
                            format!("tier `{tname}` extends `{}`, which is not declared above it", e.get_ref()),
                            Some("tiers are cumulative: declare the smaller tier first"),
                        )
                    })?
                }
            };
            for c in &rt.components {
                if !components.iter().any(|o| &o.name == c.get_ref()) {
                    let known: Vec<_> = components.iter().map(|o| o.name.as_str()).collect();
                    return Err(self.err(
                        c,
                        format!("tier `{tname}` names component `{}`, which is not declared", c.get_ref()),
                        Some(&format!("declared components: {}", known.join(", "))),
                    ));
                }
                if !list.contains(c.get_ref()) {
                    list.push(c.get_ref().clone());
                }
            }
            if list.is_empty() {
                return Err(self.err(t, format!("tier `{tname}` has no components"), None));
            }
            tiers.push(Tier { name: tname.clone(), components: list });
        }
        if tiers.is_empty() {
            return Err(self.err_at(
                self.text.len(),
                "expected at least one [[tier]]",
                Some("for example [[tier]] name = \"standard\" components = [\"tool\"]"),
            ));
        }
        Ok(tiers)
    }

    /// The one `[[tier]]` marked `default = true`, else the last.
    fn default_tier(&self, raw: &[Spanned<RawTier>]) -> Result<String, SpecError> {
        let marked: Vec<_> =
            raw.iter().filter(|t| t.get_ref().default.as_ref().is_some_and(|d| *d.get_ref())).collect();
        match marked.as_slice() {
            [] => Ok(raw.last().expect("tiers checked non-empty").get_ref().name.get_ref().clone()),
            [one] => Ok(one.get_ref().name.get_ref().clone()),
            [_, second, ..] => Err(self.err(
                second.get_ref().default.as_ref().expect("marked"),
                "a second tier marked `default = true`",
                Some("one tier is the default"),
            )),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    fn err_at(&self, offset: usize, msg: impl Into<String>, hint: Option<&str>) -> SpecError {
        let (line, col) = self.line_col(offset);
        SpecError { file: self.file.to_path_buf(), line, col, msg: msg.into(), hint: hint.map(str::to_string) }
    }

    fn err<T>(&self, s: &Spanned<T>, msg: impl Into<String>, hint: Option<&str>) -> SpecError {
        self.err_at(s.span().start, msg, hint)
    }
}

/// Names that end up in file names: lower-case letters, digits, `-`, `_`.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
        && !s.starts_with('.')
}

/// Keys that look like a secret have no place in a spec.
fn looks_like_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['-', '_'], "");
    k.contains("authkey") || k.contains("preauth") || k.contains("secret") || k.contains("password") || k == "key"
}

impl Spec {
    /// Reads and checks a spec file.
    pub fn load(file: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(file).map_err(|e| SpecError {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            msg: format!("cannot read the spec: {e}"),
            hint: Some("pass the spec with --manifest FILE".into()),
        })?;
        Spec::parse(file, &text)
    }

    /// Checks spec text; `file` names it in errors and anchors relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
        let cx = Ctx { file, text };
        cx.no_secrets()?;
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            cx.err_at(
                offset,
                e.message().trim().to_string(),
                Some("see manifests/survival.toml for a complete example"),
            )
        })?;

        let name = raw.product.name.get_ref().clone();
        if !plain_name(&name) {
            return Err(cx.err(
                &raw.product.name,
                format!("product name `{name}`: expected lower-case letters, digits, `-`, `_` or `.`"),
                None,
            ));
        }
        let version = Version::parse(raw.product.version.get_ref()).ok_or_else(|| {
            cx.err(
                &raw.product.version,
                format!("version `{}`: expected dot-separated numbers such as `1.4.0`", raw.product.version.get_ref()),
                Some("versions are compared numerically to refuse downgrades"),
            )
        })?;
        let platforms = cx.platforms(&raw.platforms)?;
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let located = |list: &[Spanned<String>]| -> Vec<(PathBuf, (usize, usize))> {
            list.iter().map(|k| (base_dir.join(k.get_ref()), cx.line_col(k.span().start))).collect()
        };
        let (trust_keys, trust_roots) = (located(&raw.trust.keys), located(&raw.trust.roots));
        if !trust_keys.is_empty() && !trust_roots.is_empty() {
            return Err(cx.err(
                &raw.trust.roots[0],
                "[trust] names both `keys` and `roots`".to_string(),
                Some("`keys` is root version 1 with a threshold of 1; once there is a root chain, its keys live in the root files"),
            ));
        }
        let headscale = match &raw.headscale {
            None => None,
            Some(h) => Some(cx.headscale(h)?),
        };
        let hooks = cx.hooks(&raw.hooks)?;
        let mut components: Vec<Component> = Vec::new();
        for c in &raw.component {
            let component = cx.component(c, &platforms, &components)?;
            components.push(component);
        }
        let tiers = cx.tiers(&raw.tier, &components)?;
        let default_tier = cx.default_tier(&raw.tier)?;
        Ok(Spec {
            file: file.to_path_buf(),
            base_dir,
            name,
            version,
            mtime: raw.product.mtime,
            platforms,
            trust_keys,
            trust_roots,
            headscale,
            hooks,
            components,
            tiers,
            default_tier,
        })
    }

    /// The tier named `name`.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Takes component `name`'s files from `path` instead of its declared
    /// source (`{target}` is replaced as in a spec). How a build feeds in
    /// files that do not live beside the spec, such as the Tailscale client.
    pub fn override_source(&mut self, name: &str, path: &Path) -> Result<(), String> {
        let c = self
            .components
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("--source {name}=...: the spec has no component `{name}`"))?;
        let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
        c.source = Source::Path(abs.to_string_lossy().into_owned());
        Ok(())
    }

    /// The entry mtime: `SOURCE_DATE_EPOCH` if set, else the spec's, else 0.
    pub fn effective_mtime(&self, source_date_epoch: Option<&str>) -> Result<u64, String> {
        match source_date_epoch {
            Some(s) => s.trim().parse().map_err(|_| format!("SOURCE_DATE_EPOCH=`{s}` is not a number of seconds")),
            None => Ok(self.mtime.unwrap_or(0)),
        }
    }

    /// Hooks by stage, for the manifest.
    pub fn hooks_by_stage(&self) -> BTreeMap<HookStage, &HookSpec> {
        self.hooks.iter().map(|h| (h.stage, h)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
platforms = ["x86_64-unknown-linux-musl"]
[product]
name = "nxs-survival"
version = "1.4.0"
[trust]
keys = ["keys/release.pub"]
[[component]]
name = "tool"
from = "stub"
install = "bin/nxs-survival"
mode = 0o755
[[tier]]
name = "minimal"
components = ["tool"]
[[tier]]
name = "standard"
extends = "minimal"
"#;

    /// Parses `text` and expects an error at `line:col` mentioning `want`.
    fn check_err(text: &str, line: usize, col: usize, want: &str) {
        let e = Spec::parse(Path::new("m/spec.toml"), text).expect_err("must be refused");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("m/spec.toml:{line}:{col}: ")), "{shown}");
        assert!(shown.contains(want), "`{shown}` should contain `{want}`");
    }

    #[test]
    fn good_spec_and_cumulative_tiers() {
        let s = Spec::parse(Path::new("m/spec.toml"), GOOD).unwrap();
        assert_eq!(s.tier("standard").unwrap().components, vec!["tool"]);
        assert_eq!(s.trust_keys[0].0, Path::new("m/keys/release.pub"));
        assert_eq!(s.component("tool").unwrap().source, Source::Stub);
    }

    #[test]
    fn errors_point_at_line_and_column() {
        check_err(&GOOD.replace("version = \"1.4.0\"", "version = \"1.4-rc\""), 5, 11, "dot-separated numbers");
        check_err(&GOOD.replace("version = \"1.4.0\"", "version = 14"), 5, 11, "expected a string");
        check_err(&GOOD.replace("components = [\"tool\"]", "components = [\"tols\"]"), 15, 15, "component `tols`");
        check_err(&GOOD.replace("extends = \"minimal\"", "extends = \"full\""), 18, 11, "not declared above");
        check_err(&GOOD.replace("install = \"bin/nxs-survival\"", "install = \"../bin\""), 11, 11, "`..`");
        check_err(&GOOD.replace("mode = 0o755", "mode = 0o17777"), 12, 8, "up to 0o7777");
        check_err(&GOOD.replace("from = \"stub\"", "from = \"stub\"\nsource = \"x\""), 8, 1, "exactly one");
        check_err(
            &format!("{GOOD}[headscale]\nlogin_server = \"https://h\"\nhostname = \"n\"\nauth_key = \"hskey\"\n"),
            22,
            1,
            "looks like a secret",
        );
        check_err(&GOOD.replace("[trust]", "[trust]\ncolour = 1"), 7, 1, "unknown field `colour`");
        let shared = GOOD.replace("mode = 0o755", "mode = 0o755\nplatform_independent = true");
        check_err(&shared, 13, 24, "installs the stub");
        let docs =
            "[[component]]\nname = \"docs\"\nsource = \"doc/{target}\"\ninstall = \"d\"\nplatform_independent = true\n";
        check_err(&format!("{GOOD}{docs}"), 23, 24, "names `{target}`");
        let s = Spec::parse(Path::new("m/spec.toml"), &format!("{GOOD}{}", docs.replace("/{target}", ""))).unwrap();
        assert!(
            s.component("docs").unwrap().platform_independent && !s.component("tool").unwrap().platform_independent
        );
    }

    #[test]
    fn headscale_settings_are_checked() {
        let hs = |extra: &str| {
            format!("{GOOD}[headscale]\nlogin_server = \"https://h.example\"\nhostname = \"nxs-{{hostname}}\"\n{extra}")
        };
        let s = Spec::parse(Path::new("m/spec.toml"), &hs("")).unwrap();
        let h = s.headscale.unwrap();
        assert_eq!(
            (h.client().tailscale.as_str(), h.client().tailscaled.as_str()),
            ("bin/tailscale", "bin/tailscaled")
        );
        assert_eq!(h.value.userspace, nxs_format::Userspace::Auto);
        check_err(&hs("up_flags = [\"--auth-key=tskey-abc\"]\n"), 22, 13, "set by the stub");
        check_err(&hs("up_flags = [\"--authkey\", \"x\"]\n"), 22, 13, "set by the stub");
        check_err(&hs("up_flags = [\"--timeout=5s\"]\n"), 22, 13, "set by the stub");
        check_err(&hs("up_flags = [\"--accept-dns=false\", \"--accept-dns\"]\n"), 22, 35, "given twice");
        check_err(&hs("tags = [\"tag:1nxs\"]\n"), 22, 9, "starts with a letter");
        check_err(&hs("tags = [\"tag:nxs_a\"]\n"), 22, 9, "as the client checks");
        check_err(&hs("tags = [\"nxs\"]\n"), 22, 9, "starts with `tag:`");
        check_err(&hs("userspace = \"sometimes\"\n"), 22, 13, "\"auto\", \"always\" or \"never\"");
        check_err(&hs("tailscale = \"/usr/bin/tailscale\"\n"), 22, 13, "absolute");
        check_err(&hs("").replace("https://h.example", "https://u:p@h"), 20, 16, "credentials");
        check_err(&hs("").replace("nxs-{hostname}", "nxs {hostname}"), 21, 12, "hostname");
        check_err(&hs("preauth_key = \"x\"\n"), 22, 1, "looks like a secret");
    }
}

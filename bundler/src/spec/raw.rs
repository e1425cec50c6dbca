//! The raw TOML shape of a spec, with spans, before it is checked.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub(super) product: RawProduct,
    pub(super) platforms: Spanned<Vec<Spanned<String>>>,
    pub(super) trust: RawTrust,
    pub(super) headscale: Option<Spanned<RawHeadscale>>,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    #[serde(default)]
    pub(super) component: Vec<Spanned<RawComponent>>,
    #[serde(default)]
    pub(super) tier: Vec<Spanned<RawTier>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProduct {
    pub(super) name: Spanned<String>,
    pub(super) version: Spanned<String>,
    pub(super) mtime: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default)]
    pub(super) keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) roots: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeadscale {
    pub(super) login_server: Spanned<String>,
    pub(super) ca_cert: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tags: Vec<Spanned<String>>,
    pub(super) hostname: Spanned<String>,
    pub(super) tailscale: Option<Spanned<String>>,
    pub(super) tailscaled: Option<Spanned<String>>,
    pub(super) userspace: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) up_flags: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) configure: Option<Spanned<RawHook>>,
    pub(super) configure_fallback: Option<Spanned<RawHook>>,
    pub(super) validate: Option<Spanned<RawHook>>,
    pub(super) run: Option<Spanned<RawHook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) argv: Vec<String>,
    #[serde(default = "default_timeout")]
    pub(super) timeout: u64,
}

fn default_timeout() -> u64 {
    60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) name: Spanned<String>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) install: Spanned<String>,
    pub(super) mode: Option<Spanned<u32>>,
    pub(super) dir_mode: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) platforms: Vec<Spanned<String>>,
    /// The same bytes on every platform: a stick stores them once.
    pub(super) platform_independent: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) name: Spanned<String>,
    pub(super) extends: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) components: Vec<Spanned<String>>,
    /// The tier a stick's bundle installs when `install` names none.
    pub(super) default: Option<Spanned<bool>>,
}

/// Why a component may not be `platform_independent`: its files may differ
/// by platform. `None` when it may.
pub(super) fn not_independent(source: &super::Source, platforms: &[String]) -> Option<&'static str> {
    match source {
        super::Source::Stub => Some("it installs the stub, which is built for each platform"),
        super::Source::Path(p) if p.contains("{target}") => Some("its source names `{target}`"),
        _ if !platforms.is_empty() => Some("it is limited to some platforms"),
        _ => None,
    }
}

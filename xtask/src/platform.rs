//! `platforms/*.toml`: the targets the stub is built for, and how.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub triple: String,
    /// A friendly name, such as `linux-arm64`.
    pub name: String,
    /// The linker strategy: `rust-lld` (rustup ships the target's std and
    /// musl CRT), or `zig` (`zig cc` from PyPI's `ziglang` supplies musl, for
    /// targets rustup has no std for).
    pub linker: String,
    /// zig's target and CPU for this triple: the linker with `zig`, and the
    /// C compiler for the C in nxs-backup (libzstd) on every platform.
    #[serde(default)]
    pub zig_target: String,
    #[serde(default)]
    pub zig_cpu: String,
    /// The qemu-user program that runs this platform's binaries in tests,
    /// or empty for the host.
    #[serde(default)]
    pub runner: String,
    pub min_kernel: String,
    /// `uname -m` values this platform runs on.
    pub machines: Vec<String>,
}

impl Platform {
    /// Reads `platforms/<triple>.toml` under `root`.
    pub fn load(root: &Path, triple: &str) -> Result<Platform> {
        let path = root.join("platforms").join(format!("{triple}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("platform {triple}: cannot read {}\n  help: add a platforms/{triple}.toml", path.display())
        })?;
        let p: Platform = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if p.triple != triple {
            bail!("{}: says triple = {:?}, but its name says {triple}", path.display(), p.triple);
        }
        match p.linker.as_str() {
            "rust-lld" => {}
            "zig" if !p.zig_target.is_empty() => {}
            "zig" => bail!("{}: linker \"zig\" needs zig_target", path.display()),
            other => {
                bail!("{}: linker strategy {other:?} is not known (expected \"rust-lld\" or \"zig\")", path.display())
            }
        }
        Ok(p)
    }

    /// Every platform under `root/platforms`, sorted by triple.
    pub fn all(root: &Path) -> Result<Vec<Platform>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(root.join("platforms"))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(triple) = name.strip_suffix(".toml") {
                out.push(Platform::load(root, triple)?);
            }
        }
        out.sort_by(|a, b| a.triple.cmp(&b.triple));
        Ok(out)
    }

    /// The platform that runs natively on this machine.
    pub fn host(root: &Path) -> Result<Platform> {
        let arch = std::env::consts::ARCH;
        Platform::all(root)?
            .into_iter()
            .find(|p| p.runner.is_empty() && p.machines.iter().any(|m| m == arch))
            .with_context(|| format!("no platform in platforms/ runs natively on this {arch} machine"))
    }
}

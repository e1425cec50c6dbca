//! Building the static stub for a platform, with a given trust root baked in.
//!
//! Each trust root gets its own cargo target directory under
//! `target/stubs/<fingerprint>/`, so switching between the development key,
//! the test key and a release key does not rebuild, and cargo's own
//! freshness checks make a second call cheap.

use crate::platform::Platform;
use anyhow::{bail, Context, Result};
use nxs_format::trust::Root;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ziglang release the armv7 and riscv64 stubs link with.
pub const ZIGLANG: &str = "ziglang==0.17.1";

/// Installs `ziglang` from PyPI if `python3 -m ziglang` is missing.
pub fn ensure_zig() -> Result<()> {
    let have = Command::new("python3")
        .args(["-m", "ziglang", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    eprintln!("installing {ZIGLANG} from PyPI (zig cc compiles libzstd for every platform and links the armv7 and riscv64 stubs)");
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", ZIGLANG])
        .status()
        .context("cannot run pip")?;
    if !st.success() {
        bail!("`pip install {ZIGLANG}` failed");
    }
    Ok(())
}

/// Writes the linker wrapper cargo runs for a `zig` platform: `zig cc` for
/// the platform's zig target and CPU. zig accepts rustc's link line as is.
/// The same wrapper is the C compiler for the C in nxs-backup.
pub fn zig_wrapper(root: &Path, platform: &Platform) -> Result<PathBuf> {
    let cpu = if platform.zig_cpu.is_empty() { String::new() } else { format!(" -mcpu={}", platform.zig_cpu) };
    zig_script(root, &format!("cc-{}", platform.triple), &format!("cc -target {}{cpu}", platform.zig_target))
}

/// The C compiler and archiver for `platform`, as cc-rs reads them
/// (`CC_<triple>`, `AR_<triple>`): libzstd, in the stub and in nxs-backup,
/// is C, and `zig cc` compiles it for every target.
pub fn c_toolchain(root: &Path, platform: &Platform) -> Result<Vec<(String, String)>> {
    if platform.zig_target.is_empty() {
        bail!("platforms/{}.toml: zig_target is missing (libzstd's C is compiled by zig cc)", platform.triple);
    }
    let triple = platform.triple.replace('-', "_");
    let cc = zig_wrapper(root, platform)?.display().to_string();
    let ar = zig_ar(root)?.display().to_string();
    Ok(vec![(format!("CC_{triple}"), cc), (format!("AR_{triple}"), ar)])
}

/// `zig ar`, the archiver that goes with [`zig_wrapper`].
pub fn zig_ar(root: &Path) -> Result<PathBuf> {
    zig_script(root, "ar", "ar")
}

fn zig_script(root: &Path, name: &str, command: &str) -> Result<PathBuf> {
    ensure_zig()?;
    let dir = root.join("target").join("zigcc");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    // cc-rs adds rustc's `--target=<triple>`, which zig does not read: its
    // own `-target` above says the same. Drop it.
    let text = format!(
        "#!/bin/sh\nfor a; do shift; case \"$a\" in --target=*) ;; *) set -- \"$@\" \"$a\" ;; esac; done\n\
         exec python3 -m ziglang {command} \"$@\"\n"
    );
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&path, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}

/// Adds the rustup target if it is missing. Targets rustup has no std for
/// (the `zig` platforms) need only `rust-src`: their std is built anyway.
pub fn ensure_target_for(platform: &Platform) -> Result<()> {
    if platform.linker == "zig" {
        return ensure_rust_src().map(|_| ());
    }
    ensure_target(&platform.triple)
}

/// Adds the rustup target if it is missing.
pub fn ensure_target(triple: &str) -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("cannot run rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    eprintln!("adding rustup target {triple}");
    let st = Command::new("rustup").args(["target", "add", triple]).status().context("cannot run rustup")?;
    if !st.success() {
        bail!("`rustup target add {triple}` failed");
    }
    Ok(())
}

/// The toolchain's sysroot, where `rust-src` lives.
fn sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().context("cannot run rustc")?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Adds the `rust-src` component if it is missing: the stub builds std
/// from source.
pub fn ensure_rust_src() -> Result<PathBuf> {
    let root = sysroot()?;
    if !root.join("lib/rustlib/src/rust/library/std").is_dir() {
        eprintln!("adding the rust-src component");
        let st = Command::new("rustup").args(["component", "add", "rust-src"]).status().context("cannot run rustup")?;
        if !st.success() {
            bail!("`rustup component add rust-src` failed");
        }
    }
    Ok(root)
}

/// A short fingerprint of a trust root.
pub fn fingerprint(trust: &Root) -> String {
    nxs_format::hex::encode(&Sha256::digest(trust.to_text().as_bytes()))[..16].to_string()
}

/// Builds the stub for `platform` trusting `trust`; returns its path.
///
/// std is rebuilt from source with the stub's profile (`-Zbuild-std`, through
/// `RUSTC_BOOTSTRAP=1` on the stable toolchain) and `optimize_for_size`, and
/// the binary is linked static and non-PIE, without unwind tables: the
/// stub drops by a third (x86_64: 690 KB with the prebuilt std). Panic
/// messages stay.
pub fn build(root: &Path, platform: &Platform, trust: &Root, quiet: bool) -> Result<PathBuf> {
    build_with_features(root, platform, trust, &[], quiet)
}

/// As [`build`], with cargo features of the stub (tests use
/// `fault-injection`; releases never do). Each feature set gets its own
/// target directory.
pub fn build_with_features(
    root: &Path,
    platform: &Platform,
    trust: &Root,
    features: &[&str],
    quiet: bool,
) -> Result<PathBuf> {
    let mut dir_name = fingerprint(trust);
    for f in features {
        dir_name.push('-');
        dir_name.push_str(f);
    }
    let mut env = vec![
        ("NXS_TRUST_ROOT".into(), trust.to_text()),
        ("NXS_PLATFORM_MACHINES".into(), platform.machines.join(",")),
        ("NXS_MIN_KERNEL".into(), platform.min_kernel.clone()),
    ];
    env.extend(c_toolchain(root, platform)?);
    let job = CrossBuild {
        package: "nxs-stub",
        bin: "nxs-stub",
        profile: "stub",
        target_dir: root.join("target").join("stubs").join(dir_name),
        env,
        build_std_features: "optimize_for_size",
        // Panics keep their messages but not their file:line:column, which
        // name build paths and cost about 3 KiB of strings.
        rustflags: &["-Zlocation-detail=none"],
        features,
    };
    cross_build(root, platform, &job, quiet)
}

/// One static, cross-compiled binary of the workspace.
pub struct CrossBuild<'a> {
    pub package: &'a str,
    pub bin: &'a str,
    pub profile: &'a str,
    pub target_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub build_std_features: &'a str,
    /// Extra rustc flags for this binary.
    pub rustflags: &'a [&'a str],
    pub features: &'a [&'a str],
}

/// Builds `job` for `platform` as the stub is built: std rebuilt from
/// source, static, non-PIE, no unwind tables, paths remapped, and linked by
/// rust-lld or zig cc as `platforms/<triple>.toml` says.
pub fn cross_build(root: &Path, platform: &Platform, job: &CrossBuild, quiet: bool) -> Result<PathBuf> {
    ensure_target_for(platform)?;
    let sysroot = ensure_rust_src()?;
    let triple_env = platform.triple.to_uppercase().replace('-', "_");
    // Paths baked into panic messages would make the binary depend on where
    // the tree was checked out; map them to fixed prefixes.
    let cargo_home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let mut rustflags = vec![
        format!("--remap-path-prefix={}=/nxs", root.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
        format!("--remap-path-prefix={}=/rustc", sysroot.display()),
        "-Crelocation-model=static".to_string(),
        // panic = "abort" never unwinds: the tables (60 KiB on x86_64) only
        // served backtraces, which a stripped binary cannot print anyway.
        "-Cforce-unwind-tables=no".to_string(),
    ];
    let linker = match platform.linker.as_str() {
        // zig brings musl's CRT and libc; rustc must not look for its own.
        "zig" => {
            rustflags.push("-Clink-self-contained=no".to_string());
            zig_wrapper(root, platform)?.into_os_string()
        }
        _ => platform.linker.clone().into(),
    };
    rustflags.extend(job.rustflags.iter().map(|f| f.to_string()));
    let rustflags = rustflags.join("\x1f");
    let mut cmd = Command::new(crate::cargo());
    cmd.current_dir(root)
        .args(["build", "--package", job.package, "--bin", job.bin, "--profile", job.profile])
        .args(["--target", &platform.triple, "-Zbuild-std=std,panic_abort"])
        .arg("--target-dir")
        .arg(&job.target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(format!("CARGO_TARGET_{triple_env}_LINKER"), linker)
        .env("ZIG_GLOBAL_CACHE_DIR", root.join("target").join("zig-cache"))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    if !job.build_std_features.is_empty() {
        cmd.arg(format!("-Zbuild-std-features={}", job.build_std_features));
    }
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    if !job.features.is_empty() {
        cmd.arg("--features").arg(job.features.join(","));
    }
    if quiet {
        cmd.arg("--quiet");
    }
    let st = cmd.status().context("cannot run cargo")?;
    if !st.success() {
        bail!("building {} for {} failed", job.package, platform.triple);
    }
    let bin = job.target_dir.join(&platform.triple).join(job.profile).join(job.bin);
    if !bin.is_file() {
        bail!("cargo succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

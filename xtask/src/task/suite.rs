//! `cargo xtask test`: the whole suite, after installing the stock tools
//! it runs against and registering qemu-user for the foreign platforms.

use crate::platform::Platform;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The stock tools the tests run against, with the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("minisign", "minisign"),
    ("zstd", "zstd"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
    ("age", "age"),
    ("script", "bsdutils"),
    ("flock", "util-linux"),
    ("bsdtar", "libarchive-tools"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("strace", "strace"),
    ("mkfs.vfat", "dosfstools"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
    ("mcopy", "mtools"),
];

/// Installs missing stock tools from Debian's packages when we are root,
/// so that the suite runs on a fresh machine; else says what to install.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools.iter().filter(|(t, _)| !crate::on_path(t)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if !is_root || !crate::on_path("apt-get") {
        bail!(
            "the tests need these Debian packages: {}\n  help: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing {} from Debian's packages", missing.join(" "));
    let ok = Command::new("apt-get").arg("update").status()?.success()
        && Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// Lets the kernel run foreign executables through qemu-user, so that a
/// stub under qemu can spawn its bundle's per-platform hooks. Registers
/// Debian's qemu-user-binfmt entries for the platforms' runners (never the
/// host's own architecture), mounting binfmt_misc if needed.
fn ensure_binfmt(platforms: &[Platform]) -> Result<()> {
    let misc = Path::new("/proc/sys/fs/binfmt_misc");
    for p in platforms.iter().filter(|p| !p.runner.is_empty()) {
        let arch = p.runner.trim_start_matches("qemu-");
        if p.machines.iter().any(|m| m == std::env::consts::ARCH) || arch == "i386" {
            continue; // runs natively here
        }
        let entry = misc.join(&p.runner);
        if entry.exists() {
            continue;
        }
        if !misc.join("register").exists() {
            let st = Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc"]).arg(misc).status()?;
            if !st.success() {
                bail!("cannot mount binfmt_misc (are we root?); the qemu tests need it");
            }
        }
        let conf = Path::new("/usr/lib/binfmt.d").join(format!("{}.conf", p.runner));
        if !conf.exists() {
            let ok = Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "qemu-user-binfmt"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?
                .success();
            if !ok || !conf.exists() {
                bail!("{} is missing\n  help: apt-get install qemu-user-binfmt", conf.display());
            }
        }
        let line: String = std::fs::read_to_string(&conf)?.lines().filter(|l| l.starts_with(':')).collect();
        std::fs::write(misc.join("register"), line)
            .with_context(|| format!("cannot register {} with binfmt_misc", p.runner))?;
        eprintln!("registered {} with binfmt_misc", p.runner);
    }
    Ok(())
}

pub fn test(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools(TEST_TOOLS)?;
    let platforms = Platform::all(root)?;
    for p in &platforms {
        crate::stub::ensure_target_for(p)?;
    }
    ensure_binfmt(&platforms)?;
    // Echo cargo's output and add up its "test result:" lines, so the run
    // closes on one line that says how many tests ran.
    let mut child = Command::new(crate::cargo())
        .current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for line in std::io::BufRead::lines(out) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| {
                rest.split("; ")
                    .find_map(|p| p.trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
        }
    }
    let st = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !st.success() || failed > 0 {
        bail!("tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

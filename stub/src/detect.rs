//! DETECTING: does this machine suit this bundle? The machine's
//! architecture (`uname -m`) must be one the stub's platform runs on, and its
//! kernel at least the platform's minimum. Both come from
//! `platforms/<triple>.toml`, baked in at build time.

use crate::bundle::STUB_TARGET;

/// `uname -m` values this stub runs on, comma-separated.
pub const MACHINES: &str = env!("NXS_PLATFORM_MACHINES");
/// The oldest kernel this stub supports, such as `3.2`.
pub const MIN_KERNEL: &str = env!("NXS_MIN_KERNEL");

/// The machine, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub arch: String,
    pub kernel: String,
    pub nodename: String,
}

pub fn this_machine() -> Machine {
    // SAFETY: uname fills a caller-owned struct; on failure we report "unknown".
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Machine { arch: "unknown".into(), kernel: "0".into(), nodename: String::new() };
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Machine { arch: field(&u.machine), kernel: field(&u.release), nodename: field(&u.nodename) }
}

/// The machine's hostname, as the kernel reports it.
pub fn nodename() -> String {
    this_machine().nodename
}

/// The leading numbers of a kernel release: "6.1.0-13-amd64" -> [6, 1, 0].
fn kernel_numbers(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or("")
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect()
}

fn at_least(release: &str, min: &str) -> bool {
    let (have, need) = (kernel_numbers(release), kernel_numbers(min));
    for i in 0..need.len().max(have.len()) {
        let (h, n) = (have.get(i).copied().unwrap_or(0), need.get(i).copied().unwrap_or(0));
        if h != n {
            return h > n;
        }
    }
    true
}

/// The bundle target that suits a machine, for the compatibility report.
pub fn target_for(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "amd64" => "x86_64-unknown-linux-musl",
        "aarch64" | "arm64" => "aarch64-unknown-linux-musl",
        "armv7l" | "armv8l" => "armv7-unknown-linux-musleabihf",
        "riscv64" => "riscv64gc-unknown-linux-musl",
        "i686" | "i586" | "i386" => "i686-unknown-linux-musl",
        _ => return None,
    })
}

/// Checks `m` against what the platform needs; `Err` is the report.
pub fn check(m: &Machine, machines: &str, min_kernel: &str) -> Result<(), String> {
    let arch_ok = machines.split(',').any(|a| a == m.arch);
    let kernel_ok = at_least(&m.kernel, min_kernel);
    if arch_ok && kernel_ok {
        return Ok(());
    }
    let mut report = format!(
        "this machine cannot run this bundle\n  the bundle needs: {STUB_TARGET}, machine {}, Linux {min_kernel} or newer\n  this machine has: machine {}, Linux {}",
        machines.replace(',', " or "),
        m.arch,
        m.kernel
    );
    if !arch_ok {
        match target_for(&m.arch) {
            Some(t) => report.push_str(&format!("\n  use the bundle built for {t} instead")),
            None => report.push_str(&format!("\n  no bundle is built for {} machines", m.arch)),
        }
    }
    if !kernel_ok {
        report.push_str(&format!("\n  the kernel is older than the {min_kernel} this platform supports"));
    }
    Err(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(arch: &str, kernel: &str) -> Machine {
        Machine { arch: arch.into(), kernel: kernel.into(), nodename: "n".into() }
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert!(at_least("6.1.0-13-amd64", "3.2"));
        assert!(at_least("3.2.0", "3.2"));
        assert!(at_least("3.10", "3.2"));
        assert!(!at_least("3.1.99", "3.2"));
        assert!(!at_least("2.6.32-754.el6", "3.2"));
        assert!(at_least("6.18.44-fc-v657", "4.20"));
    }

    #[test]
    fn reports_say_what_is_needed_and_what_is_there() {
        assert!(check(&m("x86_64", "6.1.0"), "x86_64", "3.2").is_ok());
        let r = check(&m("aarch64", "6.1.0"), "x86_64", "3.2").unwrap_err();
        assert!(r.contains("needs: ") && r.contains("machine x86_64"), "{r}");
        assert!(r.contains("has: machine aarch64, Linux 6.1.0"), "{r}");
        assert!(r.contains("aarch64-unknown-linux-musl instead"), "{r}");
        let r = check(&m("x86_64", "2.6.32"), "x86_64", "3.2").unwrap_err();
        assert!(r.contains("older than the 3.2"), "{r}");
        assert!(check(&m("sparc64", "6.1"), "x86_64", "3.2").unwrap_err().contains("no bundle is built for sparc64"));
    }
}

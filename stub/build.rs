//! Per-target work for the stub: embed the trust root, the target triple and
//! the version, and ask for a static link where the target allows it.
//!
//! `NXS_TRUST_ROOT` holds the root of trust: a root file's text, or
//! minisign public keys (base64, as on the second line of a `.pub` file)
//! separated by commas or white space. `cargo xtask` sets it from the
//! bundle spec; without it the stub trusts no key and can only check a
//! bundle with `verify --pubkey`.

use nxs_format::trust::{PublicKey, Root};

fn main() {
    println!("cargo:rerun-if-env-changed=NXS_TRUST_ROOT");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rustc-env=NXS_STUB_TARGET={target}");

    // What DETECTING accepts, from platforms/<triple>.toml (set by the xtask).
    // A plain `cargo build` falls back to the target's own architecture.
    println!("cargo:rerun-if-env-changed=NXS_PLATFORM_MACHINES");
    println!("cargo:rerun-if-env-changed=NXS_MIN_KERNEL");
    let machines = std::env::var("NXS_PLATFORM_MACHINES").unwrap_or_else(|_| {
        match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default().as_str() {
            "x86" => "i686".to_string(),
            "arm" => "armv7l".to_string(),
            other => other.to_string(),
        }
    });
    println!("cargo:rustc-env=NXS_PLATFORM_MACHINES={machines}");
    let min_kernel = std::env::var("NXS_MIN_KERNEL").unwrap_or_else(|_| "3.2".to_string());
    println!("cargo:rustc-env=NXS_MIN_KERNEL={min_kernel}");

    // The root this stub embeds: a root file's text (`nxs-root 1`, what
    // the xtask passes), or, as before format 4, minisign public keys
    // separated by commas or white space, which are root version 1 with a
    // threshold of 1. Either way it is checked by the format crate's own
    // parser here, and again when the stub reads it.
    let raw = std::env::var("NXS_TRUST_ROOT").unwrap_or_default();
    let text = if raw.is_empty() {
        String::new()
    } else if raw.starts_with("nxs-root ") {
        Root::parse(raw.as_bytes()).unwrap_or_else(|e| panic!("NXS_TRUST_ROOT: {e}"));
        raw
    } else {
        let keys = raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(|k| PublicKey::parse(k).unwrap_or_else(|e| panic!("NXS_TRUST_ROOT: {e}")))
            .collect();
        Root::single(keys).to_text()
    };
    let out =
        format!("/// The root this stub trusts, as text (empty: none).\npub const TRUST_ROOT: &str = {text:?};\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("trust_root.rs");
    std::fs::write(dest, out).unwrap();

    // musl targets link statically by default; say so explicitly for the
    // gnu targets built with +crt-static, where the linker must be told.
    if std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default().split(',').any(|f| f == "crt-static")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-static");
    }
}

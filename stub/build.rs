//! Per-target work for the stub: embed the trust root, the target triple and
//! the version, and ask for a static link where the target allows it.
//!
//! `NXS_TRUST_ROOT` holds the minisign public keys (base64, as on the second
//! line of a `.pub` file) separated by commas or white space. `cargo xtask`
//! sets it from the bundle spec; without it the stub trusts no key and can
//! only check a bundle with `verify --pubkey`.

use base64::Engine as _;
use std::fmt::Write as _;

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

    let raw = std::env::var("NXS_TRUST_ROOT").unwrap_or_default();
    let mut out = String::from(
        "/// The public keys this stub trusts: (key id, base64).\npub const TRUST_ROOT: &[(&str, &str)] = &[\n",
    );
    for key in raw.split(|c: char| c == ',' || c.is_whitespace()).filter(|k| !k.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap_or_else(|e| panic!("NXS_TRUST_ROOT: `{key}` is not base64: {e}"));
        assert!(
            bytes.len() == 42 && &bytes[0..2] == b"Ed",
            "NXS_TRUST_ROOT: `{key}` is not a minisign Ed25519 public key"
        );
        let id: String = bytes[2..10].iter().rev().map(|b| format!("{b:02X}")).collect();
        writeln!(out, "    ({id:?}, {key:?}),").unwrap();
    }
    out.push_str("];\n");
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

//! Every platform in platforms/: the stub is a static ELF for the right
//! machine with no interpreter, and a bundle for it verifies, lists and
//! installs under Debian's qemu-user, with its per-platform executable run as
//! the validate hook. Foreign executables spawned by the stub (the hook) run
//! through binfmt_misc, which `cargo xtask test` registers for qemu.

use nxs_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use xtask::platform::Platform;

/// What an ELF file says about itself.
#[derive(Debug)]
struct Elf {
    class64: bool,
    machine: u16,
    has_interp: bool,
    needed: usize,
}

fn parse_elf(b: &[u8]) -> Elf {
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    let class64 = b[4] == 2;
    assert_eq!(b[5], 1, "little-endian");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let word = |o: usize| if class64 { u64_at(o) } else { u32_at(o) as u64 };
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32) as usize, u16_at(54) as usize, u16_at(56) as usize)
    } else {
        (u32_at(28) as usize, u16_at(42) as usize, u16_at(44) as usize)
    };
    let (mut has_interp, mut needed) = (false, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(ph);
        let (offset, filesz) = if class64 {
            (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize)
        } else {
            (u32_at(ph + 4) as usize, u32_at(ph + 16) as usize)
        };
        match p_type {
            3 => has_interp = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC (static-pie has one for self-relocation): no DT_NEEDED.
                let step = if class64 { 16 } else { 8 };
                for d in (offset..offset + filesz).step_by(step) {
                    match word(d) {
                        0 => break,
                        1 => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Elf { class64, machine, has_interp, needed }
}

/// (ELF class 64?, e_machine) for a target triple.
fn expected_machine(triple: &str) -> (bool, u16) {
    match triple.split('-').next().unwrap() {
        "x86_64" => (true, 62),
        "aarch64" => (true, 183),
        "riscv64gc" => (true, 243),
        "armv7" => (false, 40),
        "i686" => (false, 3),
        other => panic!("no ELF expectation for {other}"),
    }
}

#[test]
fn every_stub_is_static_for_its_machine() {
    let mut sizes = Vec::new();
    for p in Platform::all(&workspace()).unwrap() {
        let stub = stub_for(&p.triple);
        let bytes = std::fs::read(&stub).unwrap();
        let elf = parse_elf(&bytes);
        assert_eq!((elf.class64, elf.machine), expected_machine(&p.triple), "{}: {elf:?}", p.triple);
        assert!(!elf.has_interp, "{}: has a PT_INTERP", p.triple);
        assert_eq!(elf.needed, 0, "{}: needs shared libraries", p.triple);
        sizes.push(format!("{} {} bytes", p.triple, bytes.len()));
    }
    // Sizes are reported, not asserted (the budget is 1 MiB a stub).
    eprintln!("stub sizes: {}", sizes.join(", "));
}

fn runner_cmd(p: &Platform, program: &Path) -> Command {
    if p.runner.is_empty() {
        Command::new(program)
    } else {
        let mut c = Command::new(&p.runner);
        c.arg(program);
        c
    }
}

fn run_on(p: &Platform, program: &Path, args: &[&str]) -> std::process::Output {
    output(runner_cmd(p, program).args(args)).unwrap()
}

#[test]
fn bundles_verify_and_install_under_qemu() {
    let foreign: Vec<Platform> =
        Platform::all(&workspace()).unwrap().into_iter().filter(|p| !p.runner.is_empty()).collect();
    assert!(!foreign.is_empty(), "platforms/ lists foreign platforms");
    for p in &foreign {
        require_tool(&p.runner);
        let proj = Project::for_platforms(None, &[&p.triple]);
        let stubs = BTreeMap::from([(p.triple.clone(), stub_for(&p.triple))]);
        let report =
            nxs_bundler::build(&proj.request_with_stubs(&proj.path().join("out"), &test_key().0, stubs)).unwrap();
        let packed = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
        let bundle = &packed.path;
        let ctx = |o: &std::process::Output| format!("{} {}: {}{}", p.triple, p.runner, stdout(o), stderr(o));

        let v = run_on(p, bundle, &["verify"]);
        assert_eq!(code(&v), 0, "verify {}", ctx(&v));
        let l = run_on(p, bundle, &["list", "--json"]);
        assert_eq!(code(&l), 0, "list {}", ctx(&l));
        assert!(stdout(&l).contains("\"path\":\"share/data/big.bin\""), "{}", ctx(&l));

        let t = tempfile::tempdir().unwrap();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let i =
            run_on(p, bundle, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
        assert_eq!(code(&i), 0, "install {}", ctx(&i));
        // The validate hook is the bundle's own per-platform executable.
        assert!(stdout(&i).contains("entries match the signed record"), "validate hook ran: {}", ctx(&i));
        let s = run_on(p, bundle, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(stdout(&s).starts_with("{\"state\":\"RUNNING\""), "status {}", ctx(&s));

        // Every installed file's sha256, computed here on the host, is the
        // host-side manifest's.
        for e in &packed.manifest.entries {
            if let nxs_format::EntryKind::File { sha256: want, .. } = &e.kind {
                let got = sha256(&std::fs::read(root.join(e.path.as_str())).unwrap());
                assert_eq!(got, nxs_format::hex::encode(want), "{}: {}", p.triple, e.path);
            }
        }
        eprintln!("{}: verify, list, install and validate under {} ok", p.triple, p.runner);
    }
}

#[test]
fn detecting_refuses_another_machine_with_a_report() {
    // An i686 stub runs natively on this x86_64 machine, so DETECTING sees
    // the real mismatch: the x86_64 bundle is the one to use.
    let i686 = Platform::load(&workspace(), "i686-unknown-linux-musl").unwrap();
    assert_eq!(std::env::consts::ARCH, "x86_64", "this test needs an x86_64 host");
    let proj = Project::for_platforms(None, &[&i686.triple]);
    let stubs = BTreeMap::from([(i686.triple.clone(), stub_for(&i686.triple))]);
    let report = nxs_bundler::build(&proj.request_with_stubs(&proj.path().join("out"), &test_key().0, stubs)).unwrap();
    let bundle = &report.bundles[0].path;
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    // verify checks the bundle, not the machine: it passes.
    assert_eq!(code(&run(bundle, &["verify"])), 0);
    let i = run(bundle, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code(&i), 4, "{}", stderr(&i));
    let err = stderr(&i);
    assert!(err.contains("the bundle needs: i686-unknown-linux-musl, machine i686 or i586"), "{err}");
    assert!(err.contains("this machine has: machine x86_64"), "{err}");
    assert!(err.contains("use the bundle built for x86_64-unknown-linux-musl instead"), "{err}");
    assert!(!root.exists(), "nothing installed");
}

#[test]
fn an_upgrade_over_another_architecture_is_refused() {
    let aarch64 = Platform::load(&workspace(), "aarch64-unknown-linux-musl").unwrap();
    let proj = Project::for_platforms(None, &[&aarch64.triple, HOST]);
    let stubs =
        BTreeMap::from([(aarch64.triple.clone(), stub_for(&aarch64.triple)), (HOST.to_string(), stub().to_path_buf())]);
    let report = nxs_bundler::build(&proj.request_with_stubs(&proj.path().join("out"), &test_key().0, stubs)).unwrap();
    let of = |t: &str| {
        report.bundles.iter().find(|b| b.manifest.target == t && b.manifest.tier == "minimal").unwrap().path.clone()
    };
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let args = ["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let o = run_on(&aarch64, &of(&aarch64.triple), &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let before = snapshot(&root);
    let o = run(&of(HOST), &args);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("holds an install for aarch64-unknown-linux-musl"), "{}", stderr(&o));
    assert_eq!(snapshot(&root), before, "the aarch64 install is untouched");
}

#[test]
fn nxs_backup_is_static_and_backs_up_and_restores_on_every_platform() {
    require_tool("age");
    let root = workspace();
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("key.txt");
    assert!(Command::new("age-keygen").arg("-o").arg(&key).output().unwrap().status.success());
    let o = Command::new("age-keygen").arg("-y").arg(&key).output().unwrap();
    let recipient = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let state = t.path().join("state");
    write(&state.join("sessions/a.json"), b"{\"a\":1}", 0o600);
    write(&state.join("run.sh"), b"#!/bin/sh\n", 0o755);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for p in Platform::all(&root).unwrap() {
        if !p.runner.is_empty() {
            require_tool(&p.runner);
        }
        // Built as `cargo xtask bundle` builds the payload's copy.
        let tool = xtask::tool::build_backup(&root, &p, &[], true).expect("nxs-backup build");
        let elf = parse_elf(&std::fs::read(&tool).unwrap());
        assert_eq!((elf.class64, elf.machine), expected_machine(&p.triple), "{}: {elf:?}", p.triple);
        assert!(!elf.has_interp && elf.needed == 0, "{}: nxs-backup is not static", p.triple);
        let stick = t.path().join(format!("stick-{}", p.triple));
        let ctx = |o: &std::process::Output| format!("{} {}: {}{}", p.triple, p.runner, stdout(o), stderr(o));
        let b = run_on(&p, &tool, &["backup", "--state-dir", &s(&state), "--to", &s(&stick), "-r", &recipient]);
        assert_eq!(code(&b), 0, "backup {}", ctx(&b));
        // The stock age on the host opens what the foreign tool wrote.
        let file = std::fs::read_dir(&stick)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_str().unwrap().ends_with(".age"))
            .unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg("age -d -i \"$1\" \"$2\" | zstd -dq | tar -tf -")
            .args(["sh", &s(&key), &s(&file)])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("state/sessions/a.json"), "{}", ctx(&o));
        let into = t.path().join(format!("restored-{}", p.triple));
        let r = run_on(&p, &tool, &["restore", "--from", &s(&stick), "--state-dir", &s(&into), "-i", &s(&key)]);
        assert_eq!(code(&r), 0, "restore {}", ctx(&r));
        assert_eq!(std::fs::read(into.join("sessions/a.json")).unwrap(), b"{\"a\":1}", "{}", p.triple);
        eprintln!("{}: nxs-backup {} bytes, backup and restore ok", p.triple, std::fs::metadata(&tool).unwrap().len());
    }
}

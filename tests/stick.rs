//! The stick (issue #17): one bundle per platform holding every tier, each
//! file once, and the stick directory around it.

use nxs_tests::*;
use std::path::{Path, PathBuf};

/// Installs `bundle` (with `extra` flags) into a fresh root; returns the
/// temporary directory, the root and the state directory.
fn install(bundle: &Path, extra: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, std::process::Output) {
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let mut args = vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    args.extend(extra);
    let o = run(bundle, &args);
    (t, root, state, o)
}

/// A tree's snapshot without the install record, which names the bundle it
/// came from.
fn payload_tree(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut s = snapshot(root);
    s.retain(|p, _| !p.starts_with(nxs_format::RECORD_DIR));
    s
}

#[test]
fn each_tier_of_a_multi_tier_bundle_installs_what_its_own_bundle_does() {
    let proj = Project::new(None);
    let out = proj.path().join("out");
    let per_tier = proj.build(&out.join("tiers"));
    let mut req = proj.request(&out.join("multi"), &test_key().0);
    req.multi_tier = true;
    let multi = nxs_bundler::build(&req).unwrap();
    assert_eq!(multi.bundles.len(), 1);
    let stick = &multi.bundles[0].path;
    assert!(stick.file_name().unwrap().to_str().unwrap().ends_with("demo-2.0.1-x86_64-unknown-linux-musl.run"));
    let full_size = std::fs::metadata(bundle_of(&per_tier, "full")).unwrap().len();
    let multi_size = std::fs::metadata(stick).unwrap().len();
    eprintln!("full-tier bundle {full_size} bytes, multi-tier bundle {multi_size} bytes");

    // `list` names the tiers and each entry's; `list --tier` one tier's.
    let l = run(stick, &["list"]);
    assert_eq!(code(&l), 0, "{}", stderr(&l));
    assert!(stdout(&l).starts_with("tiers minimal, full (default full)\n"), "{}", stdout(&l));
    assert!(stdout(&l).contains(" share/data/big.bin  [full]\n"), "{}", stdout(&l));
    assert!(stdout(&l).contains(" bin/nxs-survival  [minimal,full]\n"), "{}", stdout(&l));
    let l = run(stick, &["list", "--tier", "minimal", "--json"]);
    assert_eq!(code(&l), 0, "{}", stderr(&l));
    assert!(stdout(&l).contains("\"tier\":\"minimal\",\"tiers\":[\"minimal\",\"full\"]"), "{}", stdout(&l));
    assert!(!stdout(&l).contains("big.bin"), "{}", stdout(&l));

    for tier in ["minimal", "full"] {
        let (_t1, want_root, _, o) = install(bundle_of(&per_tier, tier), &[]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let (_t2, root, state, o) = install(stick, &["--tier", tier]);
        assert_eq!(code(&o), 0, "{tier}: {}", stderr(&o));
        assert_eq!(payload_tree(&root), payload_tree(&want_root), "tier {tier}, file for file");
        let rec = std::fs::read_to_string(root.join(nxs_format::RECORD_DIR).join("tier")).unwrap();
        assert_eq!(rec, format!("{tier}\n"));
        // The installed tool checks the tree against its tier, and finds
        // a file of another tier put there.
        let tool = root.join("bin/nxs-survival");
        let c = run(&tool, &["check", "--root", root.to_str().unwrap()]);
        assert_eq!(code(&c), 0, "{}{}", stdout(&c), stderr(&c));
        let s = run(&tool, &["status", "--state-dir", state.to_str().unwrap(), "--json"]);
        assert!(stdout(&s).contains(&format!("demo-2.0.1-{tier}-x86_64-unknown-linux-musl")), "{}", stdout(&s));
    }

    // No --tier: the default (the last tier, as this spec marks none).
    let (_t, root, state, o) = install(stick, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(root.join("share/data/big.bin").is_file());
    // Installing another tier over it replaces the tree with that tier's.
    let args = ["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let o = run(stick, &[&args[..], &["--tier", "minimal"]].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!root.join("share/data").exists(), "the full tier's files went with the switch");
    let o = run(stick, &[&args[..], &["--tier", "minimal"]].concat());
    assert!(stdout(&o).contains("already installed"), "the same tier again: {}", stdout(&o));

    // A tier the bundle does not hold: exit 2, naming those it does, and
    // nothing written.
    let (_t, root, state, o) = install(stick, &["--tier", "huge"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no tier `huge` (it has: minimal, full)"), "{}", stderr(&o));
    assert!(!root.exists() && !state.exists());
    // A one-tier bundle says it holds one.
    let o = run(bundle_of(&per_tier, "full"), &["list", "--tier", "minimal"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("holds tier `full` only"), "{}", stderr(&o));
}

/// What installing manifest `m` gives, as [`snapshot`] spells a tree.
fn tree_of(m: &nxs_format::Manifest) -> std::collections::BTreeMap<PathBuf, String> {
    use nxs_format::EntryKind;
    let spell = |e: &nxs_format::Entry| match &e.kind {
        EntryKind::Dir => format!("40{:o} dir", e.mode),
        EntryKind::File { sha256, .. } => format!("100{:o} {}", e.mode, nxs_format::hex::encode(sha256)),
        EntryKind::Link { .. } => "120777 other".to_string(),
    };
    m.entries.iter().map(|e| (PathBuf::from(e.path.as_str()), spell(e))).collect()
}

/// The stick of the test project's spec into `out`: its platforms, the
/// test key, 10 % parity, FAT32's piece size, no backups.
fn stick_args(proj: &Project, out: PathBuf) -> xtask::task::stick::StickArgs {
    xtask::task::stick::StickArgs {
        manifest: proj.spec.clone(),
        out,
        platforms: vec![],
        key: vec![test_key().0],
        password_file: None,
        sources: vec![],
        with_backups: None,
        parity: 10,
        piece: xtask::task::stick::FAT32_PIECE,
    }
}

/// A stick for every platform of platforms/, from the test project.
fn make_stick(proj: &Project, out: &Path) -> xtask::task::stick::Stick {
    let a = stick_args(proj, out.to_path_buf());
    xtask::task::stick::stick(&workspace(), &a).expect("stick")
}

#[test]
fn the_launcher_runs_the_machines_bundle_and_every_other_under_qemu() {
    use xtask::platform::Platform;
    let platforms = Platform::all(&workspace()).unwrap();
    let triples: Vec<&str> = platforms.iter().map(|p| p.triple.as_str()).collect();
    let proj = Project::for_platforms(None, &triples);
    let t = tempfile::tempdir().unwrap();
    let stick = make_stick(&proj, &t.path().join("stick"));
    let launcher = stick.dir.join("install");
    // The per-tier bundles of the same spec, for downloads: what each tier
    // of the stick must install, file for file.
    let stubs = platforms.iter().map(|p| (p.triple.clone(), stub_for(&p.triple))).collect();
    let per_tier = nxs_bundler::build(&proj.request_with_stubs(&t.path().join("tiers"), &test_key().0, stubs)).unwrap();
    let separate: u64 = per_tier.bundles.iter().map(|b| b.size).sum();
    eprintln!(
        "stick {} bytes ({} in bundles/), {} per-tier bundles {separate} bytes",
        stick.bytes_under(""),
        stick.bytes_under("bundles/"),
        per_tier.bundles.len()
    );

    // On this x86_64 machine the launcher picks the x86_64 bundle by itself.
    let o = output(std::process::Command::new(&launcher).arg("list")).unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("install: x86_64-unknown-linux-musl, because uname -m is x86_64"), "{}", stderr(&o));

    for p in &platforms {
        for tier in ["minimal", "full"] {
            let d = tempfile::tempdir().unwrap();
            let (root, state) = (d.path().join("root"), d.path().join("state"));
            let mut cmd = std::process::Command::new(&launcher);
            cmd.args(["--platform", &p.triple, "--tier", tier, "--quiet"]);
            cmd.args(["--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
            if !p.runner.is_empty() {
                require_tool(&p.runner);
                cmd.env("NXS_RUNNER", &p.runner);
            }
            let o = output(&mut cmd).unwrap();
            assert_eq!(code(&o), 0, "{} {tier}: {}{}", p.triple, stdout(&o), stderr(&o));
            assert!(stderr(&o).contains(&format!("because --platform {}", p.triple)), "{}", stderr(&o));
            let want = per_tier
                .bundles
                .iter()
                .find(|b| b.manifest.target == p.triple && b.manifest.tier == tier)
                .expect("a per-tier bundle");
            assert_eq!(payload_tree(&root), tree_of(&want.manifest), "{} tier {tier}, file for file", p.triple);
        }
        eprintln!("{}: both tiers install from the stick through the launcher", p.triple);
    }

    // A machine no bundle serves: exit 4 and the report. `uname` is this
    // test's, first on PATH.
    let bin = t.path().join("bin");
    write(&bin.join("uname"), b"#!/bin/sh\n[ \"$1\" = -m ] && echo mips64 || echo 6.1.0\n", 0o755);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = output(std::process::Command::new(&launcher).arg("list").env("PATH", &path)).unwrap();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let report = stderr(&o);
    assert!(report.contains("no bundle on this stick runs on this machine"), "{report}");
    assert!(report.contains("this machine: uname -m = mips64"), "{report}");
    for p in &platforms {
        assert!(report.contains(&format!("    {} (uname -m: {})", p.triple, p.machines.join(" "))), "{report}");
    }
    // `arm64` is aarch64's other name.
    write(&bin.join("uname"), b"#!/bin/sh\necho arm64\n", 0o755);
    let o = output(
        std::process::Command::new(&launcher).arg("--version").env("PATH", &path).env("NXS_RUNNER", "qemu-aarch64"),
    )
    .unwrap();
    assert!(stderr(&o).contains("install: aarch64-unknown-linux-musl, because uname -m is arm64"), "{}", stderr(&o));
    // A --platform that is no triple is refused before it becomes a path.
    let o = output(std::process::Command::new(&launcher).args(["--platform", "../../x", "list"])).unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// A real backup of a small state directory, made by the host's
/// nxs-backup into `out` with the passphrase in `pass`.
fn real_backup(t: &Path, out: &Path, pass: &Path) {
    let platform = xtask::platform::Platform::load(&workspace(), HOST).unwrap();
    let bin = xtask::tool::build_backup(&workspace(), &platform, &[], true).expect("nxs-backup build");
    let state = t.join("state-to-back-up");
    write(&state.join("sessions/demo.json"), b"{\"session\":\"demo\"}\n", 0o600);
    // Incompressible, so the backup is about this size.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&state.join("db/blob.bin"), &big, 0o600);
    write(pass, b"correct horse battery staple\n", 0o600);
    let o = run(
        &bin,
        &[
            "backup",
            "--state-dir",
            state.to_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Runs the stick's launcher with a PATH of `sh`, `uname`, `dirname`,
/// `cp`, `mktemp`, `chmod`, `rm` and `sha256sum` only: no `par2`, no
/// `minisign`.
fn launcher_bare(stick: &Path, args: &[&str]) -> std::process::Output {
    let bin = stick.parent().unwrap().join("bare-bin");
    if !bin.exists() {
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["sh", "uname", "dirname", "cp", "mktemp", "chmod", "rm", "sha256sum"] {
            let at = std::env::split_paths(&std::env::var_os("PATH").unwrap())
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{tool} on PATH"));
            std::os::unix::fs::symlink(at, bin.join(tool)).unwrap();
        }
    }
    output(std::process::Command::new(stick.join("install")).args(args).env("PATH", &bin)).unwrap()
}

#[test]
fn stick_verify_names_the_damage_and_stick_repair_undoes_it_offline() {
    let t = tempfile::tempdir().unwrap();
    let backups = t.path().join("backups");
    real_backup(t.path(), &backups, &t.path().join("pass"));
    // Two platforms that both run here: the damaged bundle is this
    // machine's own, its stub among the damage, and the other one repairs.
    let proj = Project::for_platforms(None, &[HOST, "i686-unknown-linux-musl"]);
    let a = xtask::task::stick::StickArgs {
        with_backups: Some(backups.clone()),
        ..stick_args(&proj, t.path().join("stick"))
    };
    let stick = xtask::task::stick::stick(&workspace(), &a).expect("stick");
    let dir = &stick.dir;
    eprintln!("stick: {} bytes, of which parity {} bytes", stick.bytes_under(""), stick.bytes_under("parity/"));
    let pristine = snapshot(dir);
    let o = launcher_bare(dir, &["stick", "verify"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("OK: "), "{}", stdout(&o));

    // The damage: three 4 KiB regions of the bundle, one byte of the sums,
    // and the backup cut short.
    let run_file = dir.join(format!("bundles/demo-2.0.1-{HOST}.run"));
    let bundle_rel = format!("bundles/{}", run_file.file_name().unwrap().to_str().unwrap());
    let mut bytes = std::fs::read(&run_file).unwrap();
    for at in [100_000usize, 1_500_000, 3_000_000] {
        bytes[at..at + 4096].iter_mut().for_each(|b| *b = !*b);
    }
    std::fs::write(&run_file, &bytes).unwrap();
    // The signed regions those bytes lie in, by the bundle's frame table:
    // the stub (the first), and the frames the other two fall in.
    let (_, m) = read_manifest(&run_file);
    let mut regions = vec!["stub".to_string()];
    let mut at = m.stub.len;
    for (i, f) in m.frames.iter().enumerate().filter(|(_, f)| !f.shared) {
        if [1_500_000u64, 3_000_000].iter().any(|&d| d + 4096 > at && d < at + f.compressed) {
            regions.push(format!("frame {i}"));
        }
        at += f.compressed;
    }
    let regions_json = format!("[{}]", regions.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(","));
    let sums = dir.join("SHA256SUMS");
    let mut s = std::fs::read(&sums).unwrap();
    s[10] = if s[10] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums, &s).unwrap();
    let backup = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".age"))
        .expect("a backup on the stick");
    let backup_rel = format!("backups/{}", backup.file_name().unwrap().to_str().unwrap());
    let len = std::fs::metadata(&backup).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&backup).unwrap().set_len(len - 5000).unwrap();

    let o = launcher_bare(dir, &["stick", "verify", "--json"]);
    assert_eq!(code(&o), 3, "damage is a failed verification: {}{}", stdout(&o), stderr(&o));
    let j = stdout(&o);
    assert!(j.contains("\"damaged\":3"), "{j}");
    // Each region is two 4 KiB blocks: none is aligned.
    let ranges = "[[98304,106496],[1499136,1507328],[2998272,3006464]]";
    assert!(
        j.contains(&format!(
            "{{\"path\":\"{bundle_rel}\",\"state\":\"damaged\",\"ranges\":{ranges},\"repairable\":true,\"regions\":{regions_json}}}"
        )),
        "{j}"
    );
    assert!(j.contains("{\"path\":\"SHA256SUMS\",\"state\":\"damaged\",\"ranges\":[[0,"), "{j}");
    let tail = (len - 5000) / 4096 * 4096;
    assert!(
        j.contains(&format!(
            "{{\"path\":\"{backup_rel}\",\"state\":\"damaged\",\"ranges\":[[{tail},{len}]],\"repairable\":true}}"
        )),
        "{j}"
    );
    let text = launcher_bare(dir, &["stick", "verify"]);
    let signed = format!("(signed regions damaged: {})", regions.join(", "));
    assert!(stdout(&text).contains(&format!("DAMAGED {bundle_rel}: bytes 98304..106496, bytes 1499136..1507328, bytes 2998272..3006464 {signed}; the parity can repair it")), "{}", stdout(&text));

    let o = launcher_bare(dir, &["stick", "repair"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The machine's own bundle does not match its sum: the i686 one ran.
    assert!(
        stderr(&o).contains("checking the stick with bundles/demo-2.0.1-i686-unknown-linux-musl.run"),
        "{}",
        stderr(&o)
    );
    for p in [&bundle_rel, "SHA256SUMS", &backup_rel] {
        assert!(stdout(&o).contains(&format!("REPAIRED {p}\n")), "{}", stdout(&o));
    }
    assert_eq!(snapshot(dir), pristine, "every file byte-identical to the original");
    assert!(
        !std::fs::read_dir(dir.join("bundles")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .starts_with('.')),
        "no temporary left"
    );

    // Beyond the parity: a third of the bundle gone. Not repairable, and
    // nothing overwritten.
    let mut bytes = std::fs::read(&run_file).unwrap();
    let n = bytes.len();
    bytes[..n / 3].fill(0);
    std::fs::write(&run_file, &bytes).unwrap();
    let before = snapshot(dir);
    let o = launcher_bare(dir, &["stick", "repair"]);
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("DAMAGED {bundle_rel}: bytes 0..")), "{}", stdout(&o));
    assert!(stdout(&o).contains("NOT repairable"), "{}", stdout(&o));
    assert!(stdout(&o).contains("beyond the parity"), "{}", stdout(&o));
    assert_eq!(snapshot(dir), before, "nothing overwritten");
}

#[test]
fn a_stick_copied_through_a_fat32_image_still_verifies_and_installs() {
    for tool in ["mkfs.vfat", "mcopy", "mdir"] {
        require_tool(tool);
    }
    let t = tempfile::tempdir().unwrap();
    let proj = Project::new(None);
    let a = stick_args(&proj, t.path().join("stick"));
    let stick = xtask::task::stick::stick(&workspace(), &a).expect("stick");
    // A FAT32 filesystem image, filled and read back with mtools: this
    // machine's kernel may not mount vfat, and mtools needs no mount.
    let img = t.path().join("stick.img");
    let sh = |cmd: &mut std::process::Command| {
        let o = output(cmd).unwrap();
        assert!(o.status.success(), "{cmd:?}: {}{}", stdout(&o), stderr(&o));
        o
    };
    sh(std::process::Command::new("truncate").args(["-s", "64M"]).arg(&img));
    sh(std::process::Command::new("mkfs.vfat").args(["-F", "32", "-n", "NXSSTICK"]).arg(&img));
    let mut copy_in = std::process::Command::new("mcopy");
    copy_in.args(["-s", "-i"]).arg(&img);
    for e in std::fs::read_dir(&stick.dir).unwrap() {
        copy_in.arg(e.unwrap().path());
    }
    sh(copy_in.arg("::/"));
    let listing = stdout(&sh(std::process::Command::new("mdir").args(["-/", "-b", "-i"]).arg(&img).arg("::/")));
    for (rel, _) in &stick.files {
        assert!(listing.contains(&format!("::/{rel}")), "{rel} on the FAT32 image:\n{listing}");
    }
    let back = t.path().join("from-fat");
    std::fs::create_dir(&back).unwrap();
    sh(std::process::Command::new("mcopy").args(["-s", "-i"]).arg(&img).arg("::/*").arg(&back));
    // FAT32 keeps no execute bits: the launcher is run with sh, and it
    // runs a copy of the bundle it cannot execute where it is.
    let run_sh = |args: &[&str]| output(std::process::Command::new("sh").arg(back.join("install")).args(args)).unwrap();
    let o = run_sh(&["stick", "verify"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "OK: {} files match the signed SHA256SUMS",
            stick.files.iter().filter(|(p, _)| !p.starts_with("parity/")).count() + 2
        )),
        "{}",
        stdout(&o)
    );
    let d = tempfile::tempdir().unwrap();
    let (root, state) = (d.path().join("root"), d.path().join("state"));
    let o = run_sh(&["--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("cannot be executed where it is: running a copy"), "{}", stderr(&o));
    assert!(root.join("share/data/big.bin").is_file(), "the default tier (the last, full) installed");
}

#[test]
fn one_launcher_command_restores_the_sticks_backup_and_installs() {
    let t = tempfile::tempdir().unwrap();
    let (backups, pass) = (t.path().join("backups"), t.path().join("pass"));
    real_backup(t.path(), &backups, &pass);
    // The project's bundle carries this machine's nxs-backup, as the
    // example spec's does.
    let platform = xtask::platform::Platform::load(&workspace(), HOST).unwrap();
    let tool = xtask::tool::build_backup(&workspace(), &platform, &[], true).unwrap();
    let proj = Project::new(None);
    let spec = std::fs::read_to_string(&proj.spec)
        .unwrap()
        .replace("components = [\"tool\", \"config\"]", "components = [\"tool\", \"config\", \"backup\"]")
        + &format!(
            "\n[[component]]\nname = \"backup\"\nsource = \"{}\"\ninstall = \"bin/nxs-backup\"\nmode = 0o755\n",
            tool.display()
        );
    write(&proj.spec, spec.as_bytes(), 0o644);
    let a = xtask::task::stick::StickArgs { with_backups: Some(backups), ..stick_args(&proj, t.path().join("stick")) };
    let stick = xtask::task::stick::stick(&workspace(), &a).expect("stick");
    let d = tempfile::tempdir().unwrap();
    let (root, state) = (d.path().join("root"), d.path().join("state"));
    // From the stick's directory, as README.txt says.
    let o = output(
        std::process::Command::new("./install")
            .current_dir(&stick.dir)
            .args(["--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--quiet"])
            .args(["--restore-from", "backups/", "--restore-passphrase-file", pass.to_str().unwrap()]),
    )
    .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(std::fs::read(state.join("sessions/demo.json")).unwrap(), b"{\"session\":\"demo\"}\n", "restored");
    assert_eq!(std::fs::read(state.join("db/blob.bin")).unwrap().len(), 300_000);
    assert!(root.join("bin/nxs-backup").is_file() && root.join("share/data/big.bin").is_file(), "installed");
}

#[test]
fn a_bundle_too_large_for_fat32_is_stored_in_pieces_and_joined_to_run() {
    let t = tempfile::tempdir().unwrap();
    let proj = Project::new(None);
    // Pieces of 1 MiB stand in for FAT32's 4 GiB here.
    let a = xtask::task::stick::StickArgs { piece: 1 << 20, ..stick_args(&proj, t.path().join("stick")) };
    let stick = xtask::task::stick::stick(&workspace(), &a).expect("stick");
    let run = format!("bundles/demo-2.0.1-{HOST}.run");
    assert!(!stick.dir.join(&run).exists());
    let pieces: Vec<_> = stick.files.iter().filter(|(p, _)| p.starts_with(&format!("{run}.part-"))).collect();
    assert!(pieces.len() >= 4, "{pieces:?}");
    assert!(stick.files.iter().all(|(_, n)| *n <= 1 << 20), "no file over the piece size: {:?}", stick.files);
    let o = output(std::process::Command::new(stick.dir.join("install")).args(["stick", "verify"])).unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let d = tempfile::tempdir().unwrap();
    let (root, state) = (d.path().join("root"), d.path().join("state"));
    let o = output(std::process::Command::new(stick.dir.join("install")).args([
        "--root",
        root.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--quiet",
    ]))
    .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains(&format!("joining the pieces of {run}")), "{}", stderr(&o));
    assert!(root.join("share/data/big.bin").is_file());
}

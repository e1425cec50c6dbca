//! One door to the disk (issue #12): the stub never follows a link it did
//! not make, never trusts a file it did not write, and never blocks on a
//! special file. Each test builds the hostile situation on a real
//! filesystem, with a decoy directory standing in for `/etc`, runs the
//! stub's commands against it, and asserts the refusal (exit code and
//! message) and that the decoy is byte for byte as it was, its access
//! times included.

use nxs_tests::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A decoy `/etc`: two files whose access times are two days old, so that
/// any read of them (relatime included) would move them.
struct Decoy {
    dir: PathBuf,
}

impl Decoy {
    fn new(at: &Path) -> Decoy {
        let dir = at.join("etc");
        std::fs::create_dir(&dir).unwrap();
        for (name, text) in [("passwd", "root:x:0:0::/root:/bin/sh\n"), ("hosts", "127.0.0.1 localhost\n")] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86400);
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_times(std::fs::FileTimes::new().set_modified(old).set_accessed(old + Duration::from_secs(86400)))
                .unwrap();
        }
        Decoy { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("passwd")
    }

    /// Mode, size, modification and access time of every file in it,
    /// taken without reading a byte (a read would move the access time).
    fn state(&self) -> Vec<(String, u32, u64, i64, i64)> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let m = std::fs::symlink_metadata(self.dir.join(&n)).unwrap();
                (n, m.mode(), m.size(), m.mtime(), m.atime())
            })
            .collect()
    }

    /// The bytes of every file, checked last, after [`Decoy::state`].
    fn contents(&self) -> BTreeMap<PathBuf, String> {
        snapshot(&self.dir)
    }
}

fn bundle() -> &'static Path {
    static B: std::sync::OnceLock<(Project, PathBuf)> = std::sync::OnceLock::new();
    &B.get_or_init(|| {
        let p = Project::new(None);
        let r = p.build(&p.path().join("out"));
        let b = bundle_of(&r, "full").to_path_buf();
        (p, b)
    })
    .1
}

fn install(bundle: &Path, root: &Path, state: &Path) -> std::process::Output {
    run(bundle, &["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
}

/// Runs `args` with a deadline; a run that blocks (on a FIFO, say) fails.
fn run_within(program: &Path, args: &[&str], limit: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{args:?} still running after {limit:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

fn assert_refused(o: &std::process::Output, what: &str, needle: &str) {
    assert_eq!(code(o), 5, "{what}: {}", stderr(o));
    assert!(stderr(o).contains(needle), "{what}: `{}` should say `{needle}`", stderr(o));
    assert!(stderr(o).contains("hint:"), "{what}: a hint: {}", stderr(o));
}

#[test]
fn planted_links_in_the_state_directory_are_refused() {
    let b = bundle();
    // Each case plants one link, at the state directory or one of its
    // fixed names, pointing into the decoy.
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("lock", false),
        ("bootstrap.state", false),
        ("highest-version", false),
        ("logs", true),
        ("logs/hook-validate.log", false),
        ("tailnet", true),
        ("tailnet/authkey", false),
        ("diag", true),
    ];
    for (name, to_dir) in cases {
        let t = tempfile::tempdir().unwrap();
        let decoy = Decoy::new(t.path());
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let target = if *to_dir { decoy.dir.clone() } else { decoy.file() };
        if name.is_empty() {
            std::os::unix::fs::symlink(&target, &state).unwrap();
        } else {
            let at = state.join(name);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&target, &at).unwrap();
        }
        let bytes = decoy.contents();
        let before = decoy.state();
        let link = if name.is_empty() { state.clone() } else { state.join(name) };
        let o = install(b, &root, &state);
        assert_refused(&o, &format!("install, link at `{name}`"), &format!("{} is a symbolic link", link.display()));
        assert!(!root.exists(), "install wrote nothing: link at `{name}`");
        for args in [
            vec!["status", "--state-dir", state.to_str().unwrap()],
            vec!["status", "--json", "--state-dir", state.to_str().unwrap()],
            vec!["rollback", "--state-dir", state.to_str().unwrap()],
        ] {
            let o = run(b, &args);
            assert_refused(&o, &format!("{args:?}, link at `{name}`"), "symbolic link");
        }
        assert_eq!(decoy.state(), before, "the decoy is untouched: link at `{name}`");
        assert_eq!(decoy.contents(), bytes);
    }
}

/// Makes a FIFO, a socket or a character device at `p`.
fn plant_special(kind: &str, p: &Path) -> Option<std::os::unix::net::UnixListener> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    match kind {
        "FIFO" => assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0),
        "socket" => return Some(std::os::unix::net::UnixListener::bind(p).unwrap()),
        // The same device as /dev/null (1, 3): needs root, as CI runs.
        _ => assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) },
            0,
            "mknod needs root"
        ),
    }
    None
}

#[test]
fn special_files_at_every_fixed_name_are_refused_at_once() {
    let b = bundle();
    let mut names: Vec<String> = nxs_format::state::BOOTSTRAP_FILES.iter().map(|s| s.to_string()).collect();
    names.extend(nxs_stub::statedir::log_names().iter().map(|n| format!("logs/{n}")));
    names.extend(nxs_stub::tailnet::FILES.iter().map(|n| format!("tailnet/{n}")));
    let mut slowest = Duration::ZERO;
    for kind in ["FIFO", "socket", "character device"] {
        for name in &names {
            let t = tempfile::tempdir().unwrap();
            let (root, state) = (t.path().join("root"), t.path().join("state"));
            let _keep = plant_special(kind, &state.join(name));
            for args in [
                vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()],
                vec!["status", "--state-dir", state.to_str().unwrap()],
            ] {
                let (o, took) = run_within(b, &args, Duration::from_secs(10));
                slowest = slowest.max(took);
                assert_refused(&o, &format!("{args:?} with a {kind} at {name}"), &format!("is a {kind}"));
                assert!(stderr(&o).contains(name.as_str()), "the message names {name}: {}", stderr(&o));
            }
            assert!(!root.exists(), "nothing installed with a {kind} at {name}");
            // The lock is free again (where the lock is a regular file).
            if name != "lock" {
                if let Ok(f) = std::fs::File::open(state.join("lock")) {
                    f.try_lock().expect("the lock is released");
                }
            }
        }
    }
    assert!(slowest < Duration::from_secs(2), "every refusal comes at once; the slowest took {slowest:?}");
}

#[test]
fn a_state_directory_of_another_user_or_open_to_all_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let b = bundle();
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(&install(b, &root, &state), "a state directory open to all", "writable by every user");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(4242), Some(4242)).unwrap();
    assert_refused(&install(b, &root, &state), "a state directory of uid 4242", "owned by uid 4242");
    assert!(!root.exists());
}

#[test]
fn a_root_or_sibling_that_is_a_link_is_neither_read_nor_written() {
    let b = bundle();
    for name in ["root", ".root.nxs-staging", ".root.nxs-previous"] {
        let t = tempfile::tempdir().unwrap();
        let decoy = Decoy::new(t.path());
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        std::os::unix::fs::symlink(&decoy.dir, t.path().join(name)).unwrap();
        let bytes = decoy.contents();
        let before = decoy.state();
        let o = install(b, &root, &state);
        assert_refused(&o, &format!("install with {name} a link"), "is a symbolic link");
        if name == "root" {
            let o = run(b, &["extract", "--to", root.to_str().unwrap()]);
            assert_refused(&o, "extract into a link", "is a symbolic link");
        }
        assert_eq!(decoy.state(), before, "{name}: the decoy is untouched");
        assert_eq!(decoy.contents(), bytes);
        assert!(std::fs::symlink_metadata(t.path().join(name)).unwrap().file_type().is_symlink());
    }
}

#[test]
fn a_planted_hard_link_in_staging_is_not_kept_and_its_inode_is_not_touched() {
    use std::os::unix::fs::PermissionsExt;
    // A run killed in the middle of extraction leaves a staging directory
    // and a checkpoint that names it.
    let p = Project::new(None);
    let stubs = BTreeMap::from([(HOST.to_string(), fault_stub().to_path_buf())]);
    let report = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let packed = report.bundles.iter().find(|b| b.manifest.tier == "full").unwrap();
    let t = tempfile::tempdir().unwrap();
    let decoy = Decoy::new(t.path());
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let last = packed.manifest.entries.last().unwrap().path.to_string();
    // Killed while extracting its last entry, it leaves the others staged.
    let mut c = Command::new(&packed.path);
    c.args(["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]).env(
        "NXS_FAULT_CRASH_AT",
        {
            let mut tr = Command::new(&packed.path);
            tr.args(["install", "--root", t.path().join("probe").to_str().unwrap()])
                .args(["--state-dir", t.path().join("probe-state").to_str().unwrap()])
                .env("NXS_FAULT_TRACE", "1");
            let o = output(&mut tr).unwrap();
            let at = stderr(&o)
                .lines()
                .filter(|l| l.starts_with("fault: effect "))
                .position(|l| l.contains(&format!("extract:{last}")))
                .expect("the last entry is an effect");
            (at + 1).to_string()
        },
    );
    let o = output(&mut c).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let staging = t.path().join(".root.nxs-staging");
    // Swap a staged file for a hard link to a foreign file with the same
    // bytes: its type, size and hash match, but it is not ours.
    let (victim, bytes) = packed
        .manifest
        .entries
        .iter()
        .find_map(|e| match &e.kind {
            nxs_format::EntryKind::File { size, .. } if *size > 0 => {
                let p = staging.join(e.path.as_str());
                std::fs::read(&p).ok().map(|b| (p, b))
            }
            _ => None,
        })
        .expect("a staged file");
    std::fs::write(decoy.file(), &bytes).unwrap();
    std::fs::set_permissions(decoy.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::fs::hard_link(decoy.file(), &victim).unwrap();
    let bytes_before = decoy.contents();
    let before = decoy.state();
    let decoy_ino = std::fs::metadata(decoy.file()).unwrap().ino();
    let o = install(&packed.path, &root, &state);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(decoy.state(), before, "the foreign inode was neither chmodded, read nor written");
    assert_eq!(decoy.contents(), bytes_before);
    let m = std::fs::metadata(decoy.file()).unwrap();
    assert_eq!(m.nlink(), 1, "the planted link is gone from the install");
    let installed = root.join(victim.strip_prefix(&staging).unwrap());
    assert_ne!(std::fs::metadata(&installed).unwrap().ino(), decoy_ino, "the installed file is ours");
    let c = run(&root.join("bin/nxs-survival"), &["check", "--root", root.to_str().unwrap()]);
    assert_eq!(code(&c), 0, "{}", stdout(&c));
}

/// The example project with `bin/nxs-backup` in its payload.
fn backup_bundle() -> &'static Path {
    static B: std::sync::OnceLock<(Project, PathBuf)> = std::sync::OnceLock::new();
    &B.get_or_init(|| {
        let root = workspace();
        let platform = xtask::platform::Platform::load(&root, HOST).expect("platform file");
        let tool = xtask::tool::build_backup(&root, &platform, &["fault-injection"], true).expect("nxs-backup build");
        let p = Project::new(None);
        let text = std::fs::read_to_string(&p.spec).unwrap();
        let text = text
            .replace("components = [\"tool\", \"config\"]", "components = [\"tool\", \"backup\", \"config\"]")
            + &format!(
                "\n[[component]]\nname = \"backup\"\nsource = \"{}\"\ninstall = \"bin/nxs-backup\"\nmode = 0o755\n",
                tool.display()
            );
        write(&p.spec, text.as_bytes(), 0o644);
        let r = p.build(&p.path().join("out"));
        let b = bundle_of(&r, "minimal").to_path_buf();
        (p, b)
    })
    .1
}

#[test]
fn backup_and_restore_refuse_a_planted_lock_and_never_block() {
    let b = backup_bundle();
    let t = tempfile::tempdir().unwrap();
    let decoy = Decoy::new(t.path());
    let (state, stick, pass) = (t.path().join("state"), t.path().join("stick"), t.path().join("pass"));
    write(&state.join("data.txt"), b"nxs data", 0o600);
    write(&pass, b"correct horse battery staple\n", 0o600);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let backup = ["backup", "--state-dir", &s(&state), "--to", &s(&stick), "--passphrase-file", &s(&pass)];
    let restore = ["restore", "--state-dir", &s(&state), "--from", &s(&stick), "--passphrase-file", &s(&pass)];
    let (o, _) = run_within(b, &backup, Duration::from_secs(60));
    assert_eq!(code(&o), 0, "a clean backup first: {}", stderr(&o));
    let lock = state.join("lock");
    for kind in ["link", "FIFO"] {
        let _ = std::fs::remove_file(&lock);
        match kind {
            "link" => std::os::unix::fs::symlink(decoy.file(), &lock).unwrap(),
            _ => {
                plant_special("FIFO", &lock);
            }
        }
        let bytes = decoy.contents();
        let before = decoy.state();
        let stick_before = snapshot(&stick);
        let state_before = snapshot(&state);
        for args in [&backup[..], &restore[..]] {
            // A restore reads the whole backup (scrypt included) before it
            // touches the state directory, lock and all: it refuses after
            // that, but never blocks.
            let (o, took) = run_within(b, args, Duration::from_secs(60));
            if args[0] == "backup" {
                assert!(took < Duration::from_secs(2), "{args:?} with a {kind} lock took {took:?}");
            }
            assert_refused(&o, &format!("{} with a {kind} at lock", args[0]), &format!("{} is a", lock.display()));
        }
        assert_eq!(snapshot(&stick), stick_before, "no backup written with a {kind} lock");
        assert_eq!(snapshot(&state), state_before, "the state is as it was with a {kind} lock");
        assert_eq!(decoy.state(), before, "the decoy is untouched with a {kind} lock");
        assert_eq!(decoy.contents(), bytes);
    }
}

#[test]
fn the_installed_check_reads_nothing_through_a_planted_link() {
    let b = bundle();
    let t = tempfile::tempdir().unwrap();
    let decoy = Decoy::new(t.path());
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    let o = install(b, &root, &state);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let tool = t.path().join("nxs-survival");
    std::fs::copy(root.join("bin/nxs-survival"), &tool).unwrap();
    // A directory of the install swapped for a link into the decoy, with
    // the names the manifest expects below it.
    let data = root.join("share/data");
    let names: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    std::fs::remove_dir_all(&data).unwrap();
    for n in &names {
        let _ = std::fs::copy(decoy.file(), decoy.dir.join(n));
    }
    std::os::unix::fs::symlink(&decoy.dir, &data).unwrap();
    let bytes = decoy.contents();
    let before = decoy.state();
    let o = run(&tool, &["check", "--root", root.to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    assert!(stdout(&o).contains("expected a directory"), "{}", stdout(&o));
    assert_eq!(decoy.state(), before, "nothing was read through the link");
    assert_eq!(decoy.contents(), bytes);
    // The install record itself behind a link: refused, not read.
    let rec = root.join(nxs_format::RECORD_DIR);
    std::fs::rename(&rec, t.path().join("record")).unwrap();
    std::os::unix::fs::symlink(t.path().join("record"), &rec).unwrap();
    let o = run(&tool, &["check", "--root", root.to_str().unwrap()]);
    assert_refused(&o, "check with the record behind a link", "link");
}

#[test]
fn a_root_or_parent_that_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let b = bundle();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // A root open to every user.
    let t = tempfile::tempdir().unwrap();
    let (root, state) = (t.path().join("root"), t.path().join("state"));
    std::fs::create_dir(&root).unwrap();
    mode(&root, 0o777);
    assert_refused(&install(b, &root, &state), "a root open to all", "writable by every user");
    // A parent its group may write, not sticky, of a group other than root's.
    let parent = t.path().join("shared");
    std::fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, None, Some(4242)).unwrap();
    mode(&parent, 0o775);
    assert_refused(&install(b, &parent.join("root"), &state), "a group-writable parent", "writable by group 4242");
    // A parent owned by another user.
    mode(&parent, 0o755);
    std::os::unix::fs::chown(&parent, Some(4242), None).unwrap();
    assert_refused(&install(b, &parent.join("root"), &state), "a parent of uid 4242", "owned by uid 4242");
    assert!(!parent.join("root").exists() && !state.join("bootstrap.state").exists(), "nothing written");
    // Sticky and open to all, as /tmp is: fine.
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    mode(&tmp, 0o1777);
    let o = install(b, &tmp.join("root"), &state);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

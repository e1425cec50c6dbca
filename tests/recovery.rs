//! The recovery matrix of MISSION.md section 4, one test per row, each
//! driving the failure it names. (DETECTING is in platforms.rs, UPGRADE in
//! upgrade.rs; crash recovery in crash.rs.)

use nxs_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const HOOKS: &str = "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \".\"]\ntimeout = 60\n";

/// A project whose hooks section is `hooks`, plus a `flaky.sh` that exits
/// 75 (retry later) until its third run, and a `start.sh` that fails
/// unless NXS_SAFE_MODE is set. Built with `stub`; returns the full bundle.
fn project(hooks: &str, stub: &Path) -> (Project, PathBuf) {
    let p = Project::new(None);
    let spec = std::fs::read_to_string(&p.spec).unwrap().replace(HOOKS, hooks);
    std::fs::write(&p.spec, spec).unwrap();
    write(
        &p.path().join("src/etc/hooks/flaky.sh"),
        b"#!/bin/sh\nf=\"$NXS_STATE_DIR/flaky-count\"\nn=$(cat \"$f\" 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > \"$f\"\necho \"flaky run $n\"\n[ $n -ge 3 ] || exit 75\n",
        0o755,
    );
    write(&p.path().join("src/etc/hooks/write-config.sh"), b"#!/bin/sh\necho configured > \"$1\"\n", 0o755);
    write(
        &p.path().join("src/etc/hooks/partial.sh"),
        b"#!/bin/sh\n[ -f \"$NXS_STATE_DIR/dependency-up\" ] && exit 0\necho dependency unreachable\nexit 69\n",
        0o755,
    );
    write(
        &p.path().join("src/etc/hooks/start.sh"),
        b"#!/bin/sh\nif [ -n \"$NXS_SAFE_MODE\" ]; then echo started in safe mode; exit 0; fi\necho crashed on start >&2\nexit 3\n",
        0o755,
    );
    let stubs = BTreeMap::from([(HOST.to_string(), stub.to_path_buf())]);
    let r = nxs_bundler::build(&p.request_with_stubs(&p.path().join("out"), &test_key().0, stubs)).unwrap();
    let b = r.bundles.iter().find(|b| b.manifest.tier == "full").unwrap().path.clone();
    (p, b)
}

struct Place {
    t: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place { t: tempfile::tempdir().unwrap() }
    }
    fn root(&self) -> PathBuf {
        self.t.path().join("root")
    }
    fn state(&self) -> PathBuf {
        self.t.path().join("state")
    }
    fn install(&self, bundle: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = Command::new(bundle);
        c.args(["install", "--root", self.root().to_str().unwrap(), "--state-dir", self.state().to_str().unwrap()])
            .args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        output(&mut c).unwrap()
    }
    fn status(&self, bundle: &Path) -> String {
        stdout(&run(bundle, &["status", "--state-dir", self.state().to_str().unwrap(), "--json"]))
    }
}

#[test]
fn start_missing_payload_is_named_then_a_good_copy_installs() {
    let (_p, bundle) = project(HOOKS, stub());
    let bytes = std::fs::read(&bundle).unwrap();
    let place = Place::new();
    let cut = place.t.path().join("cut.run");
    write(&cut, &bytes[..bytes.len() / 2], 0o755);
    let o = place.install(&cut, &[], &[]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("trailer") && stderr(&o).contains("truncated"), "{}", stderr(&o));
    assert!(!place.state().exists() && !place.root().exists(), "nothing written");
    // The operator copies the bundle again: the next run verifies it afresh.
    write(&cut, &bytes, 0o755);
    let o = place.install(&cut, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn fresh_install_error_is_retried_in_a_fresh_staging_directory() {
    let (_p, bundle) = project(HOOKS, fault_stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[("NXS_FAULT_FAIL", "extract:share/data/big.bin*1")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("retrying once in a fresh staging directory"), "{}", stderr(&o));

    assert!(place.status(&bundle).starts_with("{\"state\":\"RUNNING\""));
    // Twice in a row is not transient: the run fails and cleans up.
    let place = Place::new();
    let o = place.install(&bundle, &[], &[("NXS_FAULT_FAIL", "extract:share/data/big.bin")]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(!place.t.path().join(".root.nxs-staging").exists(), "staging removed");
    assert!(!place.root().exists());
}

#[test]
fn transient_errors_are_retried_with_backoff() {
    let (_p, bundle) = project(HOOKS, fault_stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[("NXS_FAULT_BUSY", "write:bootstrap.state*2")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("retry 1 of 3 in 50 ms") && err.contains("retry 2 of 3 in 100 ms"), "{err}");
    // More than three in a row: the run gives up with an I/O error.
    let place = Place::new();
    let o = place.install(&bundle, &[], &[("NXS_FAULT_BUSY", "write:bootstrap.state")]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
}

#[test]
fn configuring_hook_may_ask_to_retry_later() {
    let hooks = "[hooks.configure]\nargv = [\"etc/hooks/flaky.sh\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("asks to retry later (exit 75)").count(), 2, "{}", stderr(&o));
    assert!(stdout(&o).contains("flaky run 3"));
    assert!(std::fs::read_to_string(place.state().join("logs/hook-configure.log")).unwrap().contains("flaky run 1"));
}

#[test]
fn validating_failure_writes_a_diagnostic_dump_and_offers_no_shell_to_scripts() {
    let hooks =
        "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \"/nonexistent\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 9, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("emergency shell"), "never offered without a terminal: {err}");
    let path = err.lines().find_map(|l| l.trim().strip_prefix("diagnostic dump: ")).expect("dump path printed");
    let list = Command::new("tar").args(["-tf", path]).output().unwrap();
    let names = stdout(&list);
    for want in
        ["nxs-diag/error.txt", "nxs-diag/machine.txt", "nxs-diag/bootstrap.state", "nxs-diag/logs/hook-validate.log"]
    {
        assert!(names.contains(want), "{want} in {names}");
    }
    let machine = Command::new("tar").args(["-xOf", path, "nxs-diag/machine.txt"]).output().unwrap();
    assert!(stdout(&machine).contains("machine: x86_64"), "{}", stdout(&machine));
    assert!(place.status(&bundle).contains("\"state\":\"FAILED\""));
}

#[test]
fn running_startup_crash_leads_to_safe_mode() {
    let hooks = "[hooks.run]\nargv = [\"etc/hooks/start.sh\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    let o = place.install(&bundle, &["--max-start-attempts", "2"], &[]);
    assert_eq!(code(&o), 10, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("start attempt 1 of 2 failed") && err.contains("start attempt 2 of 2 failed"), "{err}");
    assert!(err.contains("safe mode"), "{err}");
    assert!(stdout(&o).contains("started in safe mode"));
    assert!(place.status(&bundle).starts_with("{\"state\":\"SAFE_MODE\""), "{}", place.status(&bundle));
}

#[test]
fn a_bundle_that_keeps_failing_is_not_retried_forever() {
    let hooks =
        "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \"/nonexistent\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    for _ in 0..5 {
        assert_eq!(code(&place.install(&bundle, &[], &[])), 9);
    }
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    assert!(stderr(&o).contains("failed 5 runs in a row") && stderr(&o).contains("--retry-failed"), "{}", stderr(&o));
    let o = place.install(&bundle, &["--retry-failed"], &[]);
    assert_eq!(code(&o), 9, "tried again on request: {}", stderr(&o));
}

#[test]
fn a_partial_failure_finishes_degraded_and_a_later_run_resumes_without_extracting() {
    let hooks = "[hooks.validate]\nargv = [\"etc/hooks/partial.sh\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("partial failure"), "{}", stderr(&o));
    let s = place.status(&bundle);
    assert!(s.starts_with("{\"state\":\"DEGRADED\"") && s.contains("partial failure"), "{s}");
    assert!(place.root().join("share/data/big.bin").is_file(), "installed, with less");

    // The dependency comes back: the next run validates again, without
    // extracting anything.
    std::fs::write(place.state().join("dependency-up"), b"").unwrap();
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at CONFIGURING") && !stderr(&o).contains("extracting"), "{}", stderr(&o));
    assert!(place.status(&bundle).starts_with("{\"state\":\"RUNNING\""));
}

#[test]
fn configuring_falls_back_to_the_declared_path() {
    let hooks = "[hooks.configure]\nargv = [\"etc/hooks/write-config.sh\", \"/proc/nxs-cannot-write-here.conf\"]\n\
                 [hooks.configure_fallback]\nargv = [\"sh\", \"-c\", \"etc/hooks/write-config.sh $NXS_STATE_DIR/nxs.conf\"]\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    let o = place.install(&bundle, &[], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("running the declared fallback"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(place.state().join("nxs.conf")).unwrap(), "configured\n");
}

#[test]
fn an_interactive_failure_offers_the_emergency_shell() {
    let hooks =
        "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \"/nonexistent\"]\ntimeout = 30\n";
    let (_p, bundle) = project(hooks, stub());
    let place = Place::new();
    // script(1) gives the run a terminal; we answer "n".
    let cmdline = format!(
        "{} install --root {} --state-dir {}",
        bundle.display(),
        place.root().display(),
        place.state().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("Start an emergency shell in"), "{all}");
    assert_eq!(code(&o), 9, "{all}");
}

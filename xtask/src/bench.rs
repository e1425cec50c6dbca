//! `cargo xtask bench`: nxs-survival side by side with what a release
//! engineer or an operator would otherwise run, on the same seeded corpus,
//! in the same run, alternating the order of the contenders each round.
//!
//! Anchors (MISSION.md section 8): the shell pipeline (`tar | zstd -T0 -3`,
//! `sha256sum` and `minisign`) and `makeself --zstd --sha256`. Every timed
//! command ends with `sync`, ours included, so that durability is compared
//! fairly (our install fsyncs as it goes). Medians of `runs` rounds.

use anyhow::{bail, Context, Result};
use nxs_format::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Args {
    pub size: u64,
    pub runs: usize,
    /// Corpus sizes at which the stub's peak RSS during install is measured.
    pub rss_sizes: Vec<u64>,
    /// Platforms whose stub size is reported (empty: all).
    pub platforms: Vec<String>,
    pub seed: u64,
}

/// The tools the anchors are made of, with their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("zstd", "zstd"),
    ("tar", "tar"),
    ("sha256sum", "coreutils"),
    ("minisign", "minisign"),
    ("makeself", "makeself"),
    ("age", "age"),
    ("strace", "strace"),
];

/// The unverified extraction of the same payload: the floor an install
/// that verifies everything is compared with.
const UNVERIFIED_INSTALL: &str = "mkdir \"$R\"\nzstd -q -d -T0 -c \"$A\" | tar -xf - -C \"$R\"\nsync";

/// USB 2.0 stick read speed, for the estimate from bytes read.
const USB_BYTES_PER_SEC: f64 = 30e6;

/// The backup anchor: what an operator would type without us.
const ANCHOR_BACKUP: &str = "tar -cf - -C \"$C\" . | zstd -q -T0 -3 | age -R \"$RF\" > \"$W/backup.age\"\nsync";
const ANCHOR_RESTORE: &str =
    "mkdir \"$W/restored\"\nage -d -i \"$ID\" \"$BA\" | zstd -q -d | tar -xf - -C \"$W/restored\"\nsync";

struct Env {
    dir: PathBuf,
    work: PathBuf,
    bundler: PathBuf,
    stub: PathBuf,
    triple: String,
    key: PathBuf,
    pubkey: PathBuf,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The shell pipeline's build: the corpus `$C` packed into `$A`, its files'
/// sums into `$A.sums`, the archive signed with `$K`.
const ANCHOR_BUILD: &str = "tar -cf - -C \"$C\" . | zstd -q -f -T0 -3 -o \"$A\"\n\
    (cd \"$C\" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > \"$A.sums\"\n\
    minisign -S -s \"$K\" -m \"$A\" >/dev/null\nsync";

/// makeself's build of the corpus `$C` into `$M`.
const MAKESELF_BUILD: &str = "makeself --zstd --sha256 --nox11 --quiet \"$C\" \"$M\" nxs-bench true >/dev/null\nsync";

/// Runs `script` with sh, `-e`, with the given variables; its time in seconds.
fn timed(label: &str, script: &str, vars: &[(&str, &Path)]) -> Result<f64> {
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", script]).stdin(Stdio::null()).stdout(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output().with_context(|| format!("{label}: cannot run sh"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{label} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

fn clear(dir: &Path) -> Result<()> {
    if dir.exists() {
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(dir).status();
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The corpus of `size` bytes under `target/bench/corpus-<size>`, made once.
fn corpus(dir: &Path, size: u64, seed: u64) -> Result<(PathBuf, u64)> {
    let c = dir.join(format!("corpus-{size}-{seed}"));
    let done = c.with_extension("done");
    if let Ok(n) = std::fs::read_to_string(&done) {
        return Ok((c, n.trim().parse().unwrap_or(0)));
    }
    eprintln!("generating a {} corpus (seed {seed})", mib(size));
    let (files, _) = crate::corpus::generate(&c, size, seed)?;
    std::fs::write(&done, files.to_string())?;
    Ok((c, files))
}

/// Builds our bundle of `corpus` into `out` with the release bundler.
fn build_ours(env: &Env, corpus: &Path, out: &Path) -> Result<PathBuf> {
    let spec = env.dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "platforms = [{:?}]\n[product]\nname = \"nxs-bench\"\nversion = \"1.0.0\"\nmtime = 0\n[trust]\nkeys = [{:?}]\n\
             [[component]]\nname = \"data\"\nsource = {:?}\ninstall = \"data\"\n\
             [[tier]]\nname = \"all\"\ncomponents = [\"data\"]\n",
            env.triple,
            env.pubkey.display().to_string(),
            corpus.display().to_string()
        ),
    )?;
    let st = Command::new(&env.bundler)
        .args(["build", "--dev", "--manifest"])
        .arg(&spec)
        .arg("--stub")
        .arg(format!("{}={}", env.triple, env.stub.display()))
        .arg("--key")
        .arg(&env.key)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("nxs-bundle build failed for {}", corpus.display());
    }
    Ok(out.join(format!("nxs-bench-1.0.0-all-{}.run", env.triple)))
}

/// Peak RSS, in bytes, of `cmd` and its waited-for children.
fn peak_rss(cmd: &mut Command) -> Result<u64> {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child, with caller-owned out-parameters.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("the measured install failed (status {status})");
    }
    Ok(ru.ru_maxrss as u64 * 1024)
}

/// The sha2 crate's throughput over `file` (SHA-NI when the CPU has it).
fn sha2_rate(file: &Path) -> Result<f64> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, t) = (0u64, Instant::now());
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    std::hint::black_box(h.finalize());
    Ok(n as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Each platform's stub (all when `platforms` is empty), built as a
/// release is with the development key, and its size in bytes.
pub fn stub_sizes(root: &Path, platforms: &[String]) -> Result<BTreeMap<String, u64>> {
    let key = crate::devkey::ensure(root)?;
    let trust = vec![nxs_bundler::sign::TrustedKey::from_file(&key.with_extension("pub"))?];
    let platforms = if platforms.is_empty() {
        crate::platform::Platform::all(root)?
    } else {
        platforms.iter().map(|t| crate::platform::Platform::load(root, t)).collect::<Result<_>>()?
    };
    let mut stubs = BTreeMap::new();
    for p in &platforms {
        let bin = crate::stub::build(root, p, &trust, true)?;
        stubs.insert(p.triple.clone(), std::fs::metadata(&bin)?.len());
    }
    Ok(stubs)
}

struct Row {
    name: &'static str,
    ours: f64,
    pipeline: Option<f64>,
    makeself: Option<f64>,
    goal_pipeline: Option<f64>,
    goal_makeself: Option<f64>,
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    for (tool, pkg) in TOOLS {
        if !crate::on_path(tool) {
            bail!("the benchmark needs `{tool}`\n  help: apt-get install {pkg}");
        }
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    eprintln!("building the release bundler and the host stub");
    let st = Command::new(crate::cargo())
        .current_dir(root)
        .args(["build", "--quiet", "--release", "-p", "nxs-bundler", "--bin", "nxs-bundle"])
        .status()?;
    if !st.success() {
        bail!("building nxs-bundle failed");
    }
    let key = crate::devkey::ensure(root)?;
    let pubkey = key.with_extension("pub");
    let trust = vec![nxs_bundler::sign::TrustedKey::from_file(&pubkey)?];
    let host = crate::platform::Platform::host(root)?;
    let stub = crate::stub::build(root, &host, &trust, true)?;
    let env = Env {
        work: dir.join("work"),
        bundler: root.join("target/release/nxs-bundle"),
        stub,
        triple: host.triple.clone(),
        key,
        pubkey,
        dir: dir.clone(),
    };
    let (corpus_dir, files) = corpus(&dir, a.size, a.seed)?;
    let w = env.work.clone();
    let vars = |extra: &[(&'static str, PathBuf)]| -> Vec<(&'static str, PathBuf)> {
        let mut v = vec![
            ("C", corpus_dir.clone()),
            ("W", w.clone()),
            ("K", env.key.clone()),
            ("P", env.pubkey.clone()),
            ("R", w.join("root")),
            ("S", w.join("state")),
        ];
        v.extend_from_slice(extra);
        v
    };
    let run_sh = |label: &str, script: &str, extra: &[(&'static str, PathBuf)]| -> Result<f64> {
        let v = vars(extra);
        let refs: Vec<(&str, &Path)> = v.iter().map(|(k, p)| (*k, p.as_path())).collect();
        timed(label, script, &refs)
    };

    // The artefacts the install and verify rounds use, built once.
    let arte = dir.join("artefacts");
    clear(&arte)?;
    let ours_run = build_ours(&env, &corpus_dir, &arte.join("ours"))?;
    let a_vars: [(&'static str, PathBuf); 3] =
        [("B", ours_run.clone()), ("A", arte.join("anchor.tar.zst")), ("M", arte.join("makeself.run"))];
    run_sh("anchor build", ANCHOR_BUILD, &a_vars)?;
    run_sh("makeself build", MAKESELF_BUILD, &a_vars)?;
    // Where the timed builds write.
    let b_vars: [(&'static str, PathBuf); 2] = [("A", w.join("a.tar.zst")), ("M", w.join("m.run"))];

    let mut build = (Vec::new(), Vec::new(), Vec::new());
    let mut install = (Vec::new(), Vec::new(), Vec::new());
    let mut unverified = Vec::new();
    let mut verify = (Vec::new(), Vec::new());
    for round in 0..a.runs {
        eprintln!("round {} of {}", round + 1, a.runs);
        // Build: ours, the pipeline, makeself, in a rotating order.
        for k in 0..3 {
            clear(&w)?;
            match (k + round) % 3 {
                0 => {
                    let t = Instant::now();
                    build_ours(&env, &corpus_dir, &w.join("out"))?;
                    run_sh("sync", "sync", &[])?;
                    build.0.push(t.elapsed().as_secs_f64());
                    eprintln!("  build    nxs-bundle          {:7.2} s", build.0.last().unwrap());
                }
                1 => {
                    build.1.push(run_sh("anchor build", ANCHOR_BUILD, &b_vars)?);
                    eprintln!("  build    tar|zstd+sha+minisign {:5.2} s", build.1.last().unwrap());
                }
                _ => {
                    build.2.push(run_sh("makeself build", MAKESELF_BUILD, &b_vars)?);
                    eprintln!("  build    makeself            {:7.2} s", build.2.last().unwrap());
                }
            }
        }
        // Install: each into a fresh root.
        for k in 0..4 {
            clear(&w)?;
            run_sh("sync", "sync", &[])?;
            match (k + round) % 4 {
                3 => {
                    unverified.push(run_sh("unverified install", UNVERIFIED_INSTALL, &a_vars)?);
                    eprintln!("  install  zstd -d|tar -x      {:7.2} s", unverified.last().unwrap());
                }
                0 => {
                    install.0.push(run_sh(
                        "our install",
                        "\"$B\" install --root \"$R\" --state-dir \"$S\" --quiet\nsync",
                        &a_vars,
                    )?);
                    eprintln!("  install  bundle.run          {:7.2} s", install.0.last().unwrap());
                }
                1 => {
                    install.1.push(run_sh(
                        "anchor install",
                        "minisign -V -q -p \"$P\" -m \"$A\"\nmkdir \"$R\"\n\
                         zstd -q -d -T0 -c \"$A\" | tar -xf - -C \"$R\"\n\
                         (cd \"$R\" && sha256sum -c --quiet \"$A.sums\")\nsync",
                        &a_vars,
                    )?);
                    eprintln!("  install  minisign+zstd|tar+sha {:5.2} s", install.1.last().unwrap());
                }
                _ => {
                    install.2.push(run_sh(
                        "makeself install",
                        "\"$M\" --quiet --nox11 --noexec --target \"$R\" >/dev/null\nsync",
                        &a_vars,
                    )?);
                    eprintln!("  install  makeself            {:7.2} s", install.2.last().unwrap());
                }
            }
        }
        for k in 0..2 {
            match (k + round) % 2 {
                0 => {
                    verify.0.push(run_sh("our verify", "\"$B\" verify", &a_vars)?);
                    eprintln!("  verify   bundle.run          {:7.2} s", verify.0.last().unwrap());
                }
                _ => {
                    verify.1.push(run_sh(
                        "anchor verify",
                        "minisign -V -q -p \"$P\" -m \"$A\"\nsha256sum \"$A\" >/dev/null",
                        &a_vars,
                    )?);
                    eprintln!("  verify   minisign+sha256sum  {:7.2} s", verify.1.last().unwrap());
                }
            }
        }
    }
    clear(&w)?;

    // Backups: nxs-backup against tar | zstd | age, both ways. Its lock
    // file is the one thing it adds to the corpus, removed after.
    let tool = crate::tool::build_backup(root, &host, &[], true)?;
    let id = arte.join("age.key");
    let rf = arte.join("age.recipients");
    let _ = std::fs::remove_file(&id);
    let keygen = Command::new("age-keygen").arg("-o").arg(&id).output()?;
    if !keygen.status.success() {
        bail!("age-keygen failed");
    }
    let rcp = Command::new("age-keygen").arg("-y").arg(&id).output()?;
    std::fs::write(&rf, &rcp.stdout)?;
    let k_vars: [(&'static str, PathBuf); 6] = [
        ("X", tool),
        ("ID", id),
        ("RF", rf),
        ("BK", arte.join("backups")),
        ("BA", arte.join("backup.age")),
        ("BD", arte.join("backups")),
    ];
    clear(&arte.join("backups"))?;
    let ours_backup = "\"$X\" backup --state-dir \"$C\" --to \"$W/bk\" -R \"$RF\" >/dev/null 2>&1\nsync";
    run_sh("a backup to restore", &ours_backup.replace("$W/bk", "$BD"), &k_vars)?;
    run_sh("an age backup to restore", &ANCHOR_BACKUP.replace("$W/backup.age", "$BA"), &k_vars)?;
    let mut backup = (Vec::new(), Vec::new());
    let mut restore = (Vec::new(), Vec::new());
    for round in 0..a.runs {
        for k in 0..2 {
            clear(&w)?;
            if (k + round) % 2 == 0 {
                backup.0.push(run_sh("our backup", ours_backup, &k_vars)?);
                eprintln!("  backup   nxs-backup          {:7.2} s", backup.0.last().unwrap());
            } else {
                backup.1.push(run_sh("anchor backup", ANCHOR_BACKUP, &k_vars)?);
                eprintln!("  backup   tar|zstd|age        {:7.2} s", backup.1.last().unwrap());
            }
        }
        for k in 0..2 {
            clear(&w)?;
            if (k + round) % 2 == 0 {
                let script =
                    "\"$X\" restore --from \"$BK\" --state-dir \"$W/restored\" -i \"$ID\" >/dev/null 2>&1\nsync";
                restore.0.push(run_sh("our restore", script, &k_vars)?);
                eprintln!("  restore  nxs-backup          {:7.2} s", restore.0.last().unwrap());
            } else {
                restore.1.push(run_sh("anchor restore", ANCHOR_RESTORE, &k_vars)?);
                eprintln!("  restore  age|zstd|tar        {:7.2} s", restore.1.last().unwrap());
            }
        }
    }
    let _ = std::fs::remove_file(corpus_dir.join(nxs_format::state::LOCK));
    clear(&w)?;

    // Ceilings: what the machine can do at all.
    let raw = a.size as f64 / 1e6;
    let zstd_decode = raw / run_sh("zstd -d", "zstd -q -d -T0 -c \"$A\" >/dev/null", &a_vars)?;
    let archive = std::fs::metadata(arte.join("anchor.tar.zst"))?.len() as f64 / 1e6;
    let sha256sum = archive / run_sh("sha256sum", "sha256sum \"$A\" >/dev/null", &a_vars)?;
    let sha2 = sha2_rate(&arte.join("anchor.tar.zst"))?;

    // Peak RSS of the stub during install, at each size.
    let mut rss = BTreeMap::new();
    for &s in &a.rss_sizes {
        let (c, _) = corpus(&dir, s, a.seed)?;
        let out = dir.join("rss-out");
        clear(&out)?;
        let run = build_ours(&env, &c, &out)?;
        clear(&w)?;
        let peak = peak_rss(
            Command::new(&run)
                .arg("install")
                .arg("--root")
                .arg(w.join("root"))
                .arg("--state-dir")
                .arg(w.join("state"))
                .arg("--quiet"),
        )?;
        eprintln!("  peak RSS of install at {}: {}", mib(s), mib(peak));
        rss.insert(s, peak);
        clear(&w)?;
        clear(&out)?;
        if s != a.size && s >= 4 << 30 {
            // Big corpora are not kept.
            let _ = std::fs::remove_dir_all(&c);
            let _ = std::fs::remove_file(c.with_extension("done"));
        }
    }

    // Bytes read from the bundle: a whole install, and the rerun after a
    // kill half-way through the payload.
    clear(&w)?;
    let bundle_len = std::fs::metadata(&ours_run)?.len();
    let read_full = bundle_reads(&ours_run, &w.join("root"), &w.join("state"))?;
    clear(&w)?;
    let read_rerun = match kill_half_way(&ours_run, &w.join("root"), &w.join("state"))? {
        true => Some(bundle_reads(&ours_run, &w.join("root"), &w.join("state"))?),
        false => None,
    };
    clear(&w)?;
    eprintln!(
        "  bundle reads: install {:.3} x its size, rerun after a kill at half {}",
        read_full as f64 / bundle_len as f64,
        read_rerun
            .map(|r| format!("{:.3} x", r as f64 / bundle_len as f64))
            .unwrap_or_else(|| "(not caught half-way)".into())
    );

    let stubs = stub_sizes(root, &a.platforms)?;

    let rows = [
        Row {
            name: "build",
            ours: median(&build.0),
            pipeline: Some(median(&build.1)),
            makeself: Some(median(&build.2)),
            goal_pipeline: Some(0.5),
            goal_makeself: None,
        },
        Row {
            name: "install",
            ours: median(&install.0),
            pipeline: Some(median(&install.1)),
            makeself: Some(median(&install.2)),
            goal_pipeline: Some(0.3),
            goal_makeself: Some(0.3),
        },
        Row {
            name: "install vs unverified extraction",
            ours: median(&install.0),
            pipeline: Some(median(&unverified)),
            makeself: None,
            goal_pipeline: Some(1.0),
            goal_makeself: None,
        },
        Row {
            name: "verify",
            ours: median(&verify.0),
            pipeline: Some(median(&verify.1)),
            makeself: None,
            goal_pipeline: None,
            goal_makeself: None,
        },
        Row {
            name: "backup",
            ours: median(&backup.0),
            pipeline: Some(median(&backup.1)),
            makeself: None,
            goal_pipeline: Some(1.0),
            goal_makeself: None,
        },
        Row {
            name: "restore",
            ours: median(&restore.0),
            pipeline: Some(median(&restore.1)),
            makeself: None,
            goal_pipeline: Some(1.0),
            goal_makeself: None,
        },
    ];
    let report = Report {
        size: a.size,
        files,
        runs: a.runs,
        rows: &rows,
        zstd_decode,
        sha256sum,
        sha2,
        rss: &rss,
        stubs: &stubs,
        reads: Reads { bundle: bundle_len, install: read_full, rerun: read_rerun },
    };
    let md = report.markdown();
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("report.json"), report.json())?;
    println!("{md}");
    println!("written: {} and report.json", dir.join("report.md").display());
    Ok(())
}

struct Report<'a> {
    size: u64,
    files: u64,
    runs: usize,
    rows: &'a [Row],
    zstd_decode: f64,
    sha256sum: f64,
    sha2: f64,
    rss: &'a BTreeMap<u64, u64>,
    stubs: &'a BTreeMap<String, u64>,
    reads: Reads,
}

/// Bytes read from the bundle file (strace of every read of it).
struct Reads {
    bundle: u64,
    install: u64,
    /// `None` when the install ended before it could be killed half-way.
    rerun: Option<u64>,
}

/// `bundle install` into `root` and `state`, quiet, its output dropped.
fn install_cmd(bundle: &Path, root: &Path, state: &Path) -> Command {
    let mut c = Command::new(bundle);
    c.arg("install").arg("--root").arg(root).arg("--state-dir").arg(state).arg("--quiet");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Runs `cmd` under strace and adds up what every read, pread and readv of
/// `file` returned, by any thread: the bytes a run takes from the medium.
/// The tests measure with it too.
pub fn reads_of(file: &Path, cmd: &Command) -> Result<(std::process::Output, u64)> {
    let log = tempfile::NamedTempFile::new()?;
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-y", "-e", "trace=read,pread64,readv,preadv,preadv2", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let out = traced.output().context("cannot run strace")?;
    let name = format!("<{}>", file.canonicalize()?.display());
    let n = std::fs::read_to_string(log.path())?
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.rsplit_once(" = ")?.1.split(' ').next()?.parse::<u64>().ok())
        .sum();
    Ok((out, n))
}

/// Bytes of `bundle` an install reads (see [`reads_of`]).
fn bundle_reads(bundle: &Path, root: &Path, state: &Path) -> Result<u64> {
    let (out, n) = reads_of(bundle, &install_cmd(bundle, root, state))?;
    if !out.status.success() {
        bail!("the install under strace failed ({})", out.status);
    }
    Ok(n)
}

/// Starts an install of `bundle` and kills it (SIGKILL) once it has read
/// half of the bundle's bytes (`rchar` in /proc/PID/io, polled). False if
/// it ended first (a corpus too small to catch it half-way).
fn kill_half_way(bundle: &Path, root: &Path, state: &Path) -> Result<bool> {
    let half = std::fs::metadata(bundle)?.len() / 2;
    let mut child = install_cmd(bundle, root, state).spawn()?;
    let io = format!("/proc/{}/io", child.id());
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        let read = std::fs::read_to_string(&io)
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("rchar: ")?.trim().parse::<u64>().ok()))
            .unwrap_or(0);
        if read >= half {
            child.kill()?;
            child.wait()?;
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

const RSS_GOAL: u64 = 64 << 20;
const STUB_GOAL: u64 = 1 << 20;

fn ratio(ours: f64, other: Option<f64>) -> Option<f64> {
    other.filter(|o| *o > 0.0).map(|o| ours / o)
}

fn verdict(r: Option<f64>, goal: Option<f64>) -> &'static str {
    match (r, goal) {
        (Some(r), Some(g)) if r <= g => "met",
        (Some(_), Some(_)) => "NOT met",
        _ => "",
    }
}

impl Report<'_> {
    fn markdown(&self) -> String {
        let mut s = format!(
            "# nxs-survival benchmark\n\nCorpus: {} in {} files (40 % incompressible), medians of {} rounds, \
             contenders alternated each round; every timed command ends with `sync`.\n\n\
             | step | nxs-survival | shell pipeline | ratio | goal | makeself | ratio | goal |\n\
             |---|---|---|---|---|---|---|---|\n",
            mib(self.size),
            self.files,
            self.runs
        );
        let f = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.2}{unit}")).unwrap_or_else(|| "-".into());
        for r in self.rows {
            let (rp, rm) = (ratio(r.ours, r.pipeline), ratio(r.ours, r.makeself));
            s.push_str(&format!(
                "| {} | {:.2} s | {} | {} | {} {} | {} | {} | {} {} |\n",
                r.name,
                r.ours,
                f(r.pipeline, " s"),
                f(rp, ""),
                r.goal_pipeline.map(|g| format!("≤ {g}")).unwrap_or_default(),
                verdict(rp, r.goal_pipeline),
                f(r.makeself, " s"),
                f(rm, ""),
                r.goal_makeself.map(|g| format!("≤ {g}")).unwrap_or_default(),
                verdict(rm, r.goal_makeself),
            ));
        }
        s.push_str(&format!(
            "\nThe shell pipeline: build `tar -c | zstd -T0 -3` + `sha256sum` of every file + `minisign -S`; \
             install `minisign -V` + `zstd -d -T0 | tar -x` + `sha256sum -c`; verify `minisign -V` + `sha256sum` \
             of the archive; backup `tar -c | zstd -T0 -3 | age -R`; restore `age -d | zstd -d | tar -x` (ours \
             stages and checks in one pass, and swaps in only what matched); the unverified extraction \
             (`zstd -d -T0 | tar -x` of the same payload, nothing checked) is the floor. makeself: `makeself --zstd --sha256`, and the archive extracting itself (`--noexec`).\n\n\
             Ceilings on this machine: `zstd -d -T0 > /dev/null` {:.0} MB/s of tar; `sha256sum` {:.0} MB/s; \
             the sha2 crate {:.0} MB/s. Our install at this size: {:.0} MB/s of tar.\n\n\
             | peak RSS of the stub during install | |\n|---|---|\n",
            self.zstd_decode,
            self.sha256sum,
            self.sha2,
            self.size as f64 / 1e6 / self.rows[1].ours
        ));
        for (size, rss) in self.rss {
            s.push_str(&format!(
                "| {} corpus | {} {} |\n",
                mib(*size),
                mib(*rss),
                if *rss <= RSS_GOAL { "(≤ 64 MiB: met)" } else { "(> 64 MiB: NOT met)" }
            ));
        }
        let r = &self.reads;
        let x = |n: u64| n as f64 / r.bundle as f64;
        s.push_str(&format!(
            "\n| bytes read from the bundle ({}) | bytes | × its size | goal | at 30 MB/s (USB 2.0) |\n|---|---|---|---|---|\n\
             | install | {} | {:.3} | ≤ 1.05 {} | {:.1} s |\n\
             | rerun after a kill half-way through its reads | {} | {} | ≤ 0.6 {} | {} |\n",
            mib(r.bundle),
            r.install,
            x(r.install),
            verdict(Some(x(r.install)), Some(1.05)),
            r.install as f64 / USB_BYTES_PER_SEC,
            r.rerun.map(|n| n.to_string()).unwrap_or_else(|| "not caught half-way".into()),
            r.rerun.map(|n| format!("{:.3}", x(n))).unwrap_or_default(),
            verdict(r.rerun.map(x), Some(0.6)),
            r.rerun.map(|n| format!("{:.1} s", n as f64 / USB_BYTES_PER_SEC)).unwrap_or_default(),
        ));
        s.push_str("\n| stub | bytes | ≤ 1 MiB |\n|---|---|---|\n");
        for (t, n) in self.stubs {
            s.push_str(&format!("| {t} | {n} | {} |\n", if *n <= STUB_GOAL { "met" } else { "NOT met" }));
        }
        s
    }

    fn json(&self) -> String {
        let num = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "null".into());
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}:{{\"ours_s\":{:.4},\"pipeline_s\":{},\"makeself_s\":{},\"ratio_pipeline\":{},\"ratio_makeself\":{},\"goal_pipeline\":{},\"goal_makeself\":{}}}",
                    json::s(r.name),
                    r.ours,
                    num(r.pipeline),
                    num(r.makeself),
                    num(ratio(r.ours, r.pipeline)),
                    num(ratio(r.ours, r.makeself)),
                    num(r.goal_pipeline),
                    num(r.goal_makeself)
                )
            })
            .collect();
        let rss: Vec<String> =
            self.rss.iter().map(|(s, r)| format!("{{\"corpus_bytes\":{s},\"peak_rss_bytes\":{r}}}")).collect();
        let stubs: Vec<String> = self.stubs.iter().map(|(t, n)| format!("{}:{n}", json::s(t))).collect();
        format!(
            "{{\"corpus_bytes\":{},\"files\":{},\"runs\":{},{},\"bundle_reads\":{{\"bundle_bytes\":{},\"install_bytes\":{},\"rerun_after_kill_at_half_bytes\":{}}},\"ceilings_mb_s\":{{\"zstd_decode\":{:.1},\"sha256sum\":{:.1},\"sha2\":{:.1}}},\"peak_rss\":[{}],\"stub_bytes\":{{{}}}}}\n",
            self.size,
            self.files,
            self.runs,
            rows.join(","),
            self.reads.bundle,
            self.reads.install,
            self.reads.rerun.map(|n| n.to_string()).unwrap_or_else(|| "null".into()),
            self.zstd_decode,
            self.sha256sum,
            self.sha2,
            rss.join(","),
            stubs.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_verdicts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(verdict(Some(0.5), Some(0.6)), "met");
        assert_eq!(verdict(Some(0.7), Some(0.6)), "NOT met");
        assert_eq!(verdict(Some(0.7), None), "");
    }
}

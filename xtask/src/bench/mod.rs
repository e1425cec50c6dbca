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

mod reads;
mod report;
pub use reads::reads_of;
use reads::{bundle_reads, kill_half_way};
use report::{Reads, Report};

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
    let trust = nxs_format::trust::Root::single(vec![nxs_bundler::sign::public_key_file(&key.with_extension("pub"))?]);
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
    let b = Bench::set_up(root, a, &dir)?;
    let t = b.rounds()?;
    clear(b.w())?;
    let (backup, restore) = b.backups(root)?;
    clear(b.w())?;
    let (zstd_decode, sha256sum, sha2) = b.ceilings()?;
    let rss = b.peak_rss()?;
    let reads = b.reads()?;
    let stubs = stub_sizes(root, &a.platforms)?;
    let rows = rows(&t, &backup, &restore);
    let report = Report {
        size: a.size,
        files: b.files,
        runs: a.runs,
        rows: &rows,
        zstd_decode,
        sha256sum,
        sha2,
        rss: &rss,
        stubs: &stubs,
        reads,
    };
    let md = report.markdown();
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(dir.join("report.json"), report.json())?;
    println!("{md}");
    println!("written: {} and report.json", dir.join("report.md").display());
    Ok(())
}

/// Seconds per round, of each contender of each step.
#[derive(Default)]
struct Timings {
    /// Ours, the pipeline, makeself.
    build: (Vec<f64>, Vec<f64>, Vec<f64>),
    install: (Vec<f64>, Vec<f64>, Vec<f64>),
    unverified: Vec<f64>,
    /// Ours, the pipeline.
    verify: (Vec<f64>, Vec<f64>),
}

/// One run of the benchmark: where it works, its corpus, and the inputs
/// the contenders share.
struct Bench<'a> {
    a: &'a Args,
    env: Env,
    host: crate::platform::Platform,
    corpus: PathBuf,
    files: u64,
    arte: PathBuf,
    ours_run: PathBuf,
    /// The artefacts the install and verify rounds use, built once.
    a_vars: Vec<(&'static str, PathBuf)>,
}

impl<'a> Bench<'a> {
    fn set_up(root: &Path, a: &'a Args, dir: &Path) -> Result<Bench<'a>> {
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
        let trust = nxs_format::trust::Root::single(vec![nxs_bundler::sign::public_key_file(&pubkey)?]);
        let host = crate::platform::Platform::host(root)?;
        let stub = crate::stub::build(root, &host, &trust, true)?;
        let env = Env {
            work: dir.join("work"),
            bundler: root.join("target/release/nxs-bundle"),
            stub,
            triple: host.triple.clone(),
            key,
            pubkey,
            dir: dir.to_path_buf(),
        };
        let (corpus_dir, files) = corpus(dir, a.size, a.seed)?;
        let arte = dir.join("artefacts");
        clear(&arte)?;
        let ours_run = build_ours(&env, &corpus_dir, &arte.join("ours"))?;
        let a_vars =
            vec![("B", ours_run.clone()), ("A", arte.join("anchor.tar.zst")), ("M", arte.join("makeself.run"))];
        let b = Bench { a, env, host, corpus: corpus_dir, files, arte, ours_run, a_vars };
        b.sh("anchor build", ANCHOR_BUILD, &b.a_vars)?;
        b.sh("makeself build", MAKESELF_BUILD, &b.a_vars)?;
        Ok(b)
    }

    fn w(&self) -> &Path {
        &self.env.work
    }

    /// Runs `script` with the corpus, the work directory, the keys, a root
    /// and a state directory in its variables, and `extra`; its seconds.
    fn sh(&self, label: &str, script: &str, extra: &[(&'static str, PathBuf)]) -> Result<f64> {
        let w = self.w();
        let mut v = vec![
            ("C", self.corpus.clone()),
            ("W", w.to_path_buf()),
            ("K", self.env.key.clone()),
            ("P", self.env.pubkey.clone()),
            ("R", w.join("root")),
            ("S", w.join("state")),
        ];
        v.extend_from_slice(extra);
        let refs: Vec<(&str, &Path)> = v.iter().map(|(k, p)| (*k, p.as_path())).collect();
        timed(label, script, &refs)
    }

    /// Build, install and verify, each contender once a round, in an order
    /// that rotates.
    fn rounds(&self) -> Result<Timings> {
        let mut t = Timings::default();
        for round in 0..self.a.runs {
            eprintln!("round {} of {}", round + 1, self.a.runs);
            for k in 0..3 {
                self.build_round((k + round) % 3, &mut t)?;
            }
            for k in 0..4 {
                self.install_round((k + round) % 4, &mut t)?;
            }
            for k in 0..2 {
                self.verify_round((k + round) % 2, &mut t)?;
            }
        }
        Ok(t)
    }

    fn build_round(&self, which: usize, t: &mut Timings) -> Result<()> {
        let w = self.w();
        clear(w)?;
        // Where the timed builds write.
        let b_vars = [("A", w.join("a.tar.zst")), ("M", w.join("m.run"))];
        match which {
            0 => {
                let start = Instant::now();
                build_ours(&self.env, &self.corpus, &w.join("out"))?;
                self.sh("sync", "sync", &[])?;
                t.build.0.push(start.elapsed().as_secs_f64());
                eprintln!("  build    nxs-bundle          {:7.2} s", t.build.0.last().unwrap());
            }
            1 => {
                t.build.1.push(self.sh("anchor build", ANCHOR_BUILD, &b_vars)?);
                eprintln!("  build    tar|zstd+sha+minisign {:5.2} s", t.build.1.last().unwrap());
            }
            _ => {
                t.build.2.push(self.sh("makeself build", MAKESELF_BUILD, &b_vars)?);
                eprintln!("  build    makeself            {:7.2} s", t.build.2.last().unwrap());
            }
        }
        Ok(())
    }

    /// An install, into a fresh root.
    fn install_round(&self, which: usize, t: &mut Timings) -> Result<()> {
        clear(self.w())?;
        self.sh("sync", "sync", &[])?;
        let av = &self.a_vars;
        match which {
            3 => {
                t.unverified.push(self.sh("unverified install", UNVERIFIED_INSTALL, av)?);
                eprintln!("  install  zstd -d|tar -x      {:7.2} s", t.unverified.last().unwrap());
            }
            0 => {
                let script = "\"$B\" install --root \"$R\" --state-dir \"$S\" --quiet\nsync";
                t.install.0.push(self.sh("our install", script, av)?);
                eprintln!("  install  bundle.run          {:7.2} s", t.install.0.last().unwrap());
            }
            1 => {
                let script = "minisign -V -q -p \"$P\" -m \"$A\"\nmkdir \"$R\"\n\
                              zstd -q -d -T0 -c \"$A\" | tar -xf - -C \"$R\"\n\
                              (cd \"$R\" && sha256sum -c --quiet \"$A.sums\")\nsync";
                t.install.1.push(self.sh("anchor install", script, av)?);
                eprintln!("  install  minisign+zstd|tar+sha {:5.2} s", t.install.1.last().unwrap());
            }
            _ => {
                let script = "\"$M\" --quiet --nox11 --noexec --target \"$R\" >/dev/null\nsync";
                t.install.2.push(self.sh("makeself install", script, av)?);
                eprintln!("  install  makeself            {:7.2} s", t.install.2.last().unwrap());
            }
        }
        Ok(())
    }

    fn verify_round(&self, which: usize, t: &mut Timings) -> Result<()> {
        if which == 0 {
            t.verify.0.push(self.sh("our verify", "\"$B\" verify", &self.a_vars)?);
            eprintln!("  verify   bundle.run          {:7.2} s", t.verify.0.last().unwrap());
        } else {
            let script = "minisign -V -q -p \"$P\" -m \"$A\"\nsha256sum \"$A\" >/dev/null";
            t.verify.1.push(self.sh("anchor verify", script, &self.a_vars)?);
            eprintln!("  verify   minisign+sha256sum  {:7.2} s", t.verify.1.last().unwrap());
        }
        Ok(())
    }

    /// Backups: nxs-backup against tar | zstd | age, both ways. Its lock
    /// file is the one thing it adds to the corpus, removed after.
    fn backups(&self, root: &Path) -> Result<(Pair, Pair)> {
        let tool = crate::tool::build_backup(root, &self.host, &[], true)?;
        let (arte, w) = (&self.arte, self.w());
        let id = arte.join("age.key");
        let rf = arte.join("age.recipients");
        let _ = std::fs::remove_file(&id);
        let keygen = Command::new("age-keygen").arg("-o").arg(&id).output()?;
        if !keygen.status.success() {
            bail!("age-keygen failed");
        }
        let rcp = Command::new("age-keygen").arg("-y").arg(&id).output()?;
        std::fs::write(&rf, &rcp.stdout)?;
        let k_vars = [
            ("X", tool),
            ("ID", id),
            ("RF", rf),
            ("BK", arte.join("backups")),
            ("BA", arte.join("backup.age")),
            ("BD", arte.join("backups")),
        ];
        clear(&arte.join("backups"))?;
        let ours_backup = "\"$X\" backup --state-dir \"$C\" --to \"$W/bk\" -R \"$RF\" >/dev/null 2>&1\nsync";
        let ours_restore = "\"$X\" restore --from \"$BK\" --state-dir \"$W/restored\" -i \"$ID\" >/dev/null 2>&1\nsync";
        self.sh("a backup to restore", &ours_backup.replace("$W/bk", "$BD"), &k_vars)?;
        self.sh("an age backup to restore", &ANCHOR_BACKUP.replace("$W/backup.age", "$BA"), &k_vars)?;
        let (mut backup, mut restore) = (Pair::default(), Pair::default());
        for round in 0..self.a.runs {
            for k in 0..4 {
                clear(w)?;
                // Each round: both backups, then both restores, in an order that rotates.
                let (step, ours) = (k / 2, (k + round) % 2 == 0);
                let (pair, label, script, name) = match (step, ours) {
                    (0, true) => (&mut backup.0, "our backup", ours_backup, "backup   nxs-backup    "),
                    (0, false) => (&mut backup.1, "anchor backup", ANCHOR_BACKUP, "backup   tar|zstd|age  "),
                    (_, true) => (&mut restore.0, "our restore", ours_restore, "restore  nxs-backup    "),
                    (_, false) => (&mut restore.1, "anchor restore", ANCHOR_RESTORE, "restore  age|zstd|tar  "),
                };
                pair.push(self.sh(label, script, &k_vars)?);
                eprintln!("  {name}      {:7.2} s", pair.last().unwrap());
            }
        }
        let _ = std::fs::remove_file(self.corpus.join(nxs_format::state::LOCK));
        Ok((backup, restore))
    }

    /// Ceilings: what the machine can do at all (MB/s of zstd -d, of
    /// sha256sum, and of the sha2 crate).
    fn ceilings(&self) -> Result<(f64, f64, f64)> {
        let raw = self.a.size as f64 / 1e6;
        let zstd_decode = raw / self.sh("zstd -d", "zstd -q -d -T0 -c \"$A\" >/dev/null", &self.a_vars)?;
        let archive = std::fs::metadata(self.arte.join("anchor.tar.zst"))?.len() as f64 / 1e6;
        let sha256sum = archive / self.sh("sha256sum", "sha256sum \"$A\" >/dev/null", &self.a_vars)?;
        Ok((zstd_decode, sha256sum, sha2_rate(&self.arte.join("anchor.tar.zst"))?))
    }

    /// Peak RSS of the stub during install, at each size.
    fn peak_rss(&self) -> Result<BTreeMap<u64, u64>> {
        let w = self.w();
        let mut rss = BTreeMap::new();
        for &s in &self.a.rss_sizes {
            let (c, _) = corpus(&self.env.dir, s, self.a.seed)?;
            let out = self.env.dir.join("rss-out");
            clear(&out)?;
            let run = build_ours(&self.env, &c, &out)?;
            clear(w)?;
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
            clear(w)?;
            clear(&out)?;
            if s != self.a.size && s >= 4 << 30 {
                // Big corpora are not kept.
                let _ = std::fs::remove_dir_all(&c);
                let _ = std::fs::remove_file(c.with_extension("done"));
            }
        }
        Ok(rss)
    }

    /// Bytes read from the bundle: a whole install, and the rerun after a
    /// kill half-way through the payload.
    fn reads(&self) -> Result<Reads> {
        let w = self.w();
        let (run, root, state) = (&self.ours_run, w.join("root"), w.join("state"));
        clear(w)?;
        let bundle = std::fs::metadata(run)?.len();
        let install = bundle_reads(run, &root, &state)?;
        clear(w)?;
        let rerun = match kill_half_way(run, &root, &state)? {
            true => Some(bundle_reads(run, &root, &state)?),
            false => None,
        };
        clear(w)?;
        eprintln!(
            "  bundle reads: install {:.3} x its size, rerun after a kill at half {}",
            install as f64 / bundle as f64,
            rerun
                .map(|r| format!("{:.3} x", r as f64 / bundle as f64))
                .unwrap_or_else(|| "(not caught half-way)".into())
        );
        Ok(Reads { bundle, install, rerun })
    }
}

/// Ours and the pipeline's seconds, a round each.
type Pair = (Vec<f64>, Vec<f64>);

fn row(
    name: &'static str,
    ours: &[f64],
    pipeline: &[f64],
    makeself: Option<&[f64]>,
    goals: (Option<f64>, Option<f64>),
) -> Row {
    Row {
        name,
        ours: median(ours),
        pipeline: Some(median(pipeline)),
        makeself: makeself.map(median),
        goal_pipeline: goals.0,
        goal_makeself: goals.1,
    }
}

/// The report's rows, with the goals of issue #14.
fn rows(t: &Timings, backup: &Pair, restore: &Pair) -> [Row; 6] {
    [
        row("build", &t.build.0, &t.build.1, Some(&t.build.2), (Some(0.5), None)),
        row("install", &t.install.0, &t.install.1, Some(&t.install.2), (Some(0.3), Some(0.3))),
        row("install vs unverified extraction", &t.install.0, &t.unverified, None, (Some(1.0), None)),
        row("verify", &t.verify.0, &t.verify.1, None, (None, None)),
        row("backup", &backup.0, &backup.1, None, (Some(1.0), None)),
        row("restore", &restore.0, &restore.1, None, (Some(1.0), None)),
    ]
}

#[cfg(test)]
mod tests {
    use super::report::verdict;
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

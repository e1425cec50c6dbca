//! `cargo xtask`: the project's tasks. Flags are parsed here, in one place;
//! each task lives in a module of the `xtask` library (`task/` for the
//! larger ones).

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xtask::task;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nxs-survival build tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// What a build takes: the spec, its platforms, the signers, and
/// components taken from elsewhere (`bundle`, `stick`, `publish`).
#[derive(clap::Args)]
struct Build {
    #[arg(long, default_value = "manifests/survival.toml")]
    manifest: PathBuf,
    /// Only these platforms (default: all of the spec's).
    #[arg(long = "platform")]
    platforms: Vec<String>,
    /// Minisign secret key (default: the development key, loudly);
    /// once per signer for a k-of-n manifest signature.
    #[arg(long = "key")]
    key: Vec<PathBuf>,
    /// File holding the key's password (else a prompt).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Take a component's files from PATH instead of its spec source:
    /// NAME=PATH (`{target}` in PATH is the platform's triple).
    #[arg(long = "source", value_parser = nxs_bundler::parse_source)]
    sources: Vec<(String, PathBuf)>,
}

impl Build {
    /// The bundle task's arguments for these flags.
    fn args(self, tiers: Vec<String>, out: PathBuf, dry_run: bool) -> task::BundleArgs {
        task::BundleArgs {
            manifest: self.manifest,
            platforms: self.platforms,
            tiers,
            multi_tier: false,
            out,
            key: self.key,
            password_file: self.password_file,
            sources: self.sources,
            dry_run,
        }
    }
}

#[derive(Subcommand)]
enum Task {
    /// Build the example bundle for this machine with the development key,
    /// install it into a temporary root and show what happened.
    Demo,
    /// The release build: a static stub per platform, every tier, signed.
    Bundle {
        #[command(flatten)]
        build: Build,
        /// Only these tiers (default: all).
        #[arg(long = "tier")]
        tiers: Vec<String>,
        #[arg(long, default_value = "target/bundles")]
        out: PathBuf,
        /// Print the plan; build and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every tier's bundles for every platform as an OCI image layout
    /// (an index per tier, tagged VERSION-TIER, a manifest per platform),
    /// for `skopeo copy` to a registry or a mirror.
    Publish {
        #[command(flatten)]
        build: Build,
        /// The layout to write: a new or empty directory.
        #[arg(long)]
        oci_layout: PathBuf,
        /// One more tag, naming the spec's default tier.
        #[arg(long)]
        tag: Option<String>,
    },
    /// A directory for a USB stick: one bundle per platform holding every
    /// tier, the `install` launcher, the release key, signed SHA256SUMS,
    /// README.txt and the backups to restore.
    Stick {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        build: Build,
        /// A backup directory to carry under backups/.
        #[arg(long)]
        with_backups: Option<PathBuf>,
        /// Reed-Solomon recovery data per file, in percent of its blocks
        /// (0: none); `./install stick repair` uses it.
        #[arg(long, default_value_t = 10)]
        parity: u32,
        /// Store files larger than this many bytes as pieces (default: as
        /// FAT32 needs, 4 GiB less 1 MiB).
        #[arg(long, default_value_t = task::stick::FAT32_PIECE)]
        piece_size: u64,
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
        Task::Demo => task::demo::demo(&root),
        Task::Bundle { build, tiers, out, dry_run } => {
            task::bundle(&root, &build.args(tiers, out, dry_run)).map(|_| ())
        }
        Task::Publish { build, oci_layout, tag } => {
            let a = task::publish::PublishArgs { build: build.args(vec![], oci_layout, false), tag };
            task::publish::publish(&root, &a).map(|l| {
                for (tag, digest) in &l.tags {
                    println!("{tag}  {digest}");
                }
                println!("{}", l.dir.display());
            })
        }
        Task::Stick { out, build, with_backups, parity, piece_size } => {
            let a = task::stick::StickArgs {
                manifest: build.manifest,
                out,
                platforms: build.platforms,
                key: build.key,
                password_file: build.password_file,
                sources: build.sources,
                with_backups,
                parity,
                piece: piece_size,
            };
            task::stick::stick(&root, &a).map(|s| {
                for (p, n) in &s.files {
                    println!("{n:>12}  {p}");
                }
                println!("{:>12}  in all, in {}", s.bytes_under(""), s.dir.display());
            })
        }
        Task::Test { args } => task::suite::test(&root, &args),
        Task::StubSizes { platforms } => (|| {
            for (triple, size) in xtask::bench::stub_sizes(&root, &platforms)? {
                println!("{triple:34} {size:>8} bytes ({:.1} KiB of the 1 MiB budget)", size as f64 / 1024.0);
            }
            Ok(())
        })(),
        Task::Bench { size, runs, rss_sizes, platforms, seed } => (|| {
            task::ensure_tools(xtask::bench::TOOLS)?;
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
        Task::Soak { iterations, size, seed } => task::soak::soak(&root, iterations, &size, seed),
        Task::Fuzz { seconds, targets } => task::fuzz::fuzz(&root, seconds, &targets),
        Task::Big { size } => task::big::big(&root, &size),
        Task::House => xtask::house::run(&root),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

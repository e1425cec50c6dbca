//! `nxs-bundle`: the bundler's command line.
//!
//! Exit codes: 0 success, 1 build failure, 2 usage, 3 spec error.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nxs_bundler::{BuildRequest, PackOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "nxs-bundle", version, about = "Build signed nxs-survival bundles")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build bundles from a spec.
    Build {
        /// The bundle spec.
        #[arg(long, default_value = "manifests/survival.toml")]
        manifest: PathBuf,
        /// A built stub: TRIPLE=PATH (once per platform).
        #[arg(long = "stub", value_parser = parse_stub, required = true)]
        stubs: Vec<(String, PathBuf)>,
        /// Take a component's files from PATH instead of its spec source:
        /// NAME=PATH (`{target}` in PATH is the platform's triple).
        #[arg(long = "source", value_parser = nxs_bundler::parse_source)]
        sources: Vec<(String, PathBuf)>,
        /// Minisign secret key to sign with.
        #[arg(long)]
        key: PathBuf,
        /// File holding the secret key's password (else a prompt).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The key is a development key: mark bundles as such.
        #[arg(long)]
        dev: bool,
        #[arg(long = "platform")]
        platforms: Vec<String>,
        #[arg(long = "tier")]
        tiers: Vec<String>,
        #[arg(long, default_value = "target/bundles")]
        out: PathBuf,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a minisign key pair: STEM.key and STEM.pub.
    Keygen {
        stem: PathBuf,
        /// Store the secret key without a password (for CI).
        #[arg(long)]
        unencrypted: bool,
        /// File holding the password (else a prompt).
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
}

fn parse_stub(s: &str) -> Result<(String, PathBuf), String> {
    let (t, p) = s.split_once('=').ok_or("expected TRIPLE=PATH")?;
    Ok((t.to_string(), PathBuf::from(p)))
}

fn read_password(file: &Option<PathBuf>) -> Result<Option<String>> {
    match file {
        None => Ok(None),
        Some(f) => {
            let s = std::fs::read_to_string(f).with_context(|| format!("cannot read password file {}", f.display()))?;
            Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()))
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Keygen { stem, unencrypted, password_file, force } => {
            let password = if unencrypted {
                None
            } else {
                match read_password(&password_file)? {
                    Some(p) => Some(p),
                    None => {
                        let a = rpassword::prompt_password("Password for the new key: ")?;
                        let b = rpassword::prompt_password("Password (again): ")?;
                        anyhow::ensure!(a == b, "the passwords differ");
                        Some(a)
                    }
                }
            };
            let (sk, pk) = nxs_bundler::sign::keygen(&stem, password, force)?;
            println!("secret key: {}\npublic key: {}", sk.display(), pk.display());
            Ok(())
        }
        Cmd::Build { manifest, stubs, sources, key, password_file, dev, platforms, tiers, out, dry_run, json } => {
            let req = BuildRequest {
                spec: manifest,
                out_dir: out,
                platforms,
                tiers,
                stubs: stubs.into_iter().collect::<BTreeMap<_, _>>(),
                sources,
                key,
                key_password: read_password(&password_file)?,
                dev,
                source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
                pack: PackOptions::default(),
            };
            if dry_run {
                let (_, plan) = nxs_bundler::plan_build(&req)?;
                print_plan(&plan, json);
                return Ok(());
            }
            let report = nxs_bundler::build(&req)?;
            for b in &report.bundles {
                println!("{}", b.path.display());
            }
            println!("{}", report.sums.display());
            Ok(())
        }
    }
}

fn print_plan(plan: &nxs_bundler::Plan, json: bool) {
    if !json {
        for b in &plan.bundles {
            println!("{} ({} entries)", b.file_name, b.entries.len());
            for e in &b.entries {
                let src = e.source.as_ref().map(|s| s.display().to_string()).unwrap_or_else(|| "(dir)".into());
                println!("  {:o} {} <- {} [{}]", e.mode, e.path, src, e.component);
            }
        }
        return;
    }
    let bundles: Vec<String> = plan
        .bundles
        .iter()
        .map(|b| {
            let entries: Vec<String> = b
                .entries
                .iter()
                .map(|e| {
                    format!(
                        "{{\"path\":{},\"mode\":{},\"source\":{},\"component\":{}}}",
                        nxs_format::json::s(e.path.as_str()),
                        e.mode,
                        e.source
                            .as_ref()
                            .map(|s| nxs_format::json::s(&s.display().to_string()))
                            .unwrap_or_else(|| "null".into()),
                        nxs_format::json::s(&e.component)
                    )
                })
                .collect();
            format!(
                "{{\"file\":{},\"tier\":{},\"target\":{},\"entries\":[{}]}}",
                nxs_format::json::s(&b.file_name),
                nxs_format::json::s(&b.tier),
                nxs_format::json::s(&b.target),
                entries.join(",")
            )
        })
        .collect();
    println!("{{\"mtime\":{},\"bundles\":[{}]}}", plan.mtime, bundles.join(","));
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        let code = if e.downcast_ref::<nxs_bundler::SpecError>().is_some() { 3 } else { 1 };
        std::process::exit(code);
    }
}

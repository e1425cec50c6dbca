//! `nxs-bundle`: the bundler's command line.
//!
//! Exit codes: 0 success, 1 build failure, 2 usage, 3 spec error or a
//! root chain that breaks a rule (`root verify`).

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
        /// Minisign secret key to sign with; once per signer, for a
        /// root whose threshold is above 1.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
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
        /// One bundle per platform holding every tier, each file once
        /// (a stick's); `install --tier` picks one, the spec's default
        /// when none is named.
        #[arg(long, conflicts_with = "tiers")]
        multi_tier: bool,
        /// With --multi-tier: keep the files of platform_independent
        /// components once, in PRODUCT-VERSION.shared beside the bundles
        /// (a stick's layout; each bundle then needs that file to install).
        #[arg(long, requires = "multi_tier")]
        shared: bool,
        #[arg(long, default_value = "target/bundles")]
        out: PathBuf,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Root chains: make, rotate, sign and check the roots of trust
    /// (docs/TRUST.md).
    Root {
        #[command(subcommand)]
        cmd: RootCmd,
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

/// What `root init` and `root rotate` make: a threshold of keys, written
/// to a new file, perhaps signed at once.
#[derive(clap::Args)]
struct NewRoot {
    #[arg(long)]
    threshold: usize,
    /// A minisign public key file; once per key.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Where to write the root (never over an existing file).
    #[arg(long)]
    out: PathBuf,
    /// Sign it at once with these secret keys (else `root sign` later).
    #[arg(long = "sign-with")]
    sign_with: Vec<PathBuf>,
    #[arg(long)]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RootCmd {
    /// Write root version 1: THRESHOLD of the given public keys.
    Init {
        #[command(flatten)]
        new: NewRoot,
    },
    /// Write the root after --from: its version plus one, new keys and
    /// threshold, and keys revoked.
    Rotate {
        #[arg(long)]
        from: PathBuf,
        /// A key that may never sign again: its id (as minisign prints
        /// it) or its .pub file.
        #[arg(long = "revoke")]
        revoke: Vec<String>,
        #[command(flatten)]
        new: NewRoot,
    },
    /// Sign a root with one secret key, offline: writes ROOT.<KEY ID>.minisig.
    Sign {
        root: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Check a chain of roots, oldest first, as a stub embedding the first
    /// would. Exit 3 names the step and the rule that failed.
    Verify {
        #[arg(required = true)]
        chain: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn sign_all(root: &std::path::Path, keys: &[PathBuf], password: &Option<String>) -> Result<()> {
    for k in keys {
        let key = nxs_bundler::sign::SigningKey::load(k, password.clone())?;
        let out = nxs_bundler::root::sign_root(root, &key)?;
        println!("signed: {} (key {})", out.display(), key.key_id());
    }
    Ok(())
}

fn run_root(cmd: RootCmd) -> Result<()> {
    use nxs_bundler::root;
    match cmd {
        RootCmd::Init { new: NewRoot { threshold, keys, out, sign_with, password_file } } => {
            let r = root::init(threshold, &keys)?;
            root::write_root(&r, &out)?;
            println!("root {}: {} ({} of {} keys)", r.version, out.display(), r.threshold, r.keys.len());
            sign_all(&out, &sign_with, &read_password(&password_file)?)
        }
        RootCmd::Rotate { from, revoke, new: NewRoot { threshold, keys, out, sign_with, password_file } } => {
            let old = root::read_root(&from)?;
            let revoke =
                revoke
                    .iter()
                    .map(|r| match nxs_format::trust::KeyId::parse(r) {
                        Some(id) => Ok(id),
                        None => nxs_bundler::sign::public_key_file(std::path::Path::new(r)).map(|k| k.id).with_context(
                            || format!("--revoke {r}: neither a key id (16 upper-case hex digits) nor a .pub file"),
                        ),
                    })
                    .collect::<Result<Vec<_>>>()?;
            let r = root::rotate(&old.root, threshold, &keys, &revoke)?;
            root::write_root(&r, &out)?;
            println!(
                "root {}: {} ({} of {} keys, {} revoked)",
                r.version,
                out.display(),
                r.threshold,
                r.keys.len(),
                r.revoked.len()
            );
            println!(
                "it needs {} signatures by keys of root {} and {} by its own",
                old.root.threshold, old.root.version, r.threshold
            );
            sign_all(&out, &sign_with, &read_password(&password_file)?)
        }
        RootCmd::Sign { root: path, key, password_file } => sign_all(&path, &[key], &read_password(&password_file)?),
        RootCmd::Verify { chain, json } => {
            let roots = chain.iter().map(|p| root::read_root(p)).collect::<Result<Vec<_>>>()?;
            let walked = root::verify_chain(&roots).map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))?;
            let r = &walked.root;
            if json {
                use nxs_format::json::{s, Obj};
                let o = Obj::new()
                    .raw("root_version", r.version)
                    .raw("threshold", r.threshold)
                    .array("keys", r.keys.iter().map(|k| s(&k.id.to_string())))
                    .array("revoked", walked.revoked.iter().map(|k| s(&k.to_string())))
                    .raw("steps", walked.steps);
                println!("{}", o.finish());
            } else {
                println!(
                    "chain good: root {} -> root {} ({} steps); root {} trusts {} of {} keys ({}), {} revoked",
                    roots[0].root.version,
                    r.version,
                    walked.steps,
                    r.version,
                    r.threshold,
                    r.keys.len(),
                    r.keys.iter().map(|k| k.id.to_string()).collect::<Vec<_>>().join(", "),
                    walked.revoked.len()
                );
            }
            Ok(())
        }
    }
}

/// A chain that breaks a rule: exit 3, as the stub refuses it.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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
        Cmd::Root { cmd } => run_root(cmd),
        Cmd::Build {
            manifest,
            stubs,
            sources,
            keys,
            password_file,
            dev,
            platforms,
            tiers,
            multi_tier,
            shared,
            out,
            dry_run,
            json,
        } => {
            let req = BuildRequest {
                spec: manifest,
                out_dir: out,
                platforms,
                tiers,
                multi_tier,
                shared,
                stubs: stubs.into_iter().collect::<BTreeMap<_, _>>(),
                sources,
                keys,
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
        let code = if e.downcast_ref::<nxs_bundler::SpecError>().is_some() || e.downcast_ref::<Refused>().is_some() {
            3
        } else {
            1
        };
        std::process::exit(code);
    }
}

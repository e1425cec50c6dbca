//! nxs-stub: the program at the front of every bundle, and the installed
//! `nxs-survival` tool. It verifies the bundle it is part of, extracts it
//! safely and runs the bootstrap state machine.
//!
//! Kept small on purpose: no argument-parsing or serialisation crates; the
//! dependencies are the format crate, a minisign verifier, sha2, tar,
//! libzstd's decoder and the RustCrypto pieces of age.

use nxs_format::json;
use nxs_format::{hex, EntryKind};
use nxs_stub::bundle::{self, Bundle, Trust};
use nxs_stub::error::{Class, Error, Result};
use nxs_stub::events::{self, Progress};
use nxs_stub::{detect, extract, fsx, install, preflight, tailnet};
use std::path::PathBuf;

const USAGE: &str = "\
usage: BUNDLE.run <command> [flags]

commands:
  verify [--pubkey FILE] [--json]   check the signature, the stub, the payload
                                    and every file; write nothing
  list [--json]                     the files the bundle holds
  extract --to DIR [--json]         verified extraction into a new or empty DIR
  install --root DIR [--state-dir DIR] [--allow-downgrade] [--max-start-attempts N] [--retry-failed]
          [--authkey-file F | --authkey-age F [--passphrase-file F]]
          [--join-attempts N] [--probe-timeout SECONDS] [--up-timeout SECONDS] [--quiet] [--json]
                                    verify and install; running it again resumes;
                                    a failed upgrade is rolled back (exit 7); the
                                    tailnet join waits (exit 8) while the login
                                    server is unreachable or no key is given.
                                    The auth key is read from a file only (or
                                    $NXS_AUTHKEY_FILE, or a prompt): never argv
          [--restore-from FILE-or-DIR (--restore-identity F | --restore-passphrase-file F)]
                                    on a fresh machine, restore the state directory
                                    from a backup before CONFIGURING
  backup --to DIR (--recipient AGE_PUBKEY | --passphrase-file F) | backup list DIR
  restore --from FILE-or-DIR (--identity F | --passphrase-file F)
                                    age-encrypted backups of the state directory,
                                    by the verified bin/nxs-backup (`backup --help`)
  status [--state-dir DIR] [--json] where the last install stands
  rollback [--state-dir DIR]        put the previous install back
  check --root DIR [--json]         re-hash an installed tree against its record
  --version                         this stub's version and target

--json on verify, extract and install: one JSON event a line on stdout
(docs/EVENTS.md); progress goes to stderr, redrawn on a terminal.

exit codes: 0 ok, 2 usage, 3 verification failed, 4 incompatible,
5 I/O or resources, 6 locked, 7 rolled back, 8 degraded, 9 hook failed,
10 safe mode, 11 gave up after repeated failures";

/// Parsed flags: `--name value`, `--name=value` and bare `--switch`.
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Flags> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if a.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            if with_value.contains(&name.as_str()) {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| Error::usage(format!("{name} needs a value")))?,
                };
                pairs.push((name, Some(v)));
            } else if switches.contains(&name.as_str()) && inline.is_none() {
                pairs.push((name, None));
            } else {
                return Err(Error::usage(format!("unexpected argument `{a}`")));
            }
        }
        Ok(Flags { pairs })
    }
    fn value(&self, name: &str) -> Option<PathBuf> {
        self.pairs.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.clone()).map(PathBuf::from)
    }
    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }
    fn require(&self, name: &str) -> Result<PathBuf> {
        self.value(name).ok_or_else(|| Error::usage(format!("{name} DIR is required")))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // How this run reports (events.rs): the commands with an event stream
    // take --json, and install --quiet turns progress off.
    let streams = matches!(args.first().map(String::as_str), Some("verify" | "extract" | "install"));
    events::init(streams && args.iter().any(|a| a == "--json"), args.iter().any(|a| a == "--quiet"));
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.msg);
            if let Some(h) = &e.hint {
                eprintln!("  hint: {h}");
            }
            let code = e.class as i32;
            events::emit(
                "result",
                &[
                    ("ok", "false".into()),
                    ("exit", code.to_string()),
                    ("error", json::s(&e.msg)),
                    ("hint", json::opt(e.hint.as_deref())),
                ],
            );
            code
        }
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32> {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprintln!("{USAGE}");
            return Ok(Class::Usage as i32);
        }
    };
    match cmd {
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        "--version" | "-V" => {
            println!("nxs-stub {} ({})", env!("CARGO_PKG_VERSION"), bundle::STUB_TARGET);
            println!(
                "runs on: machine {}, Linux {} or newer",
                detect::MACHINES.replace(',', " or "),
                detect::MIN_KERNEL
            );
            Ok(0)
        }
        "verify" => {
            let f = Flags::parse(rest, &["--pubkey"], &["--json"])?;
            let pubkey = f.value("--pubkey");
            let trust = match &pubkey {
                Some(p) => Trust::PubkeyFile(p),
                None => Trust::Embedded,
            };
            let b = Bundle::open_verified(&bundle::self_path()?, &trust)?;
            let mut p = Progress::start("verify", b.manifest.files_total());
            extract::run(&b, &extract::Sink::Check, &mut p)?;
            p.end();
            let m = &b.manifest;
            if events::json_mode() {
                events::emit(
                    "result",
                    &[
                        ("ok", "true".into()),
                        ("exit", "0".into()),
                        ("bundle", json::s(&m.bundle_id())),
                        ("version", json::s(m.version.as_str())),
                        ("tier", json::s(&m.tier)),
                        ("target", json::s(&m.target)),
                        ("format", m.format.to_string()),
                        ("signer", json::s(&b.signer)),
                        ("dev", m.dev.to_string()),
                        ("entries", m.entries.len().to_string()),
                        ("payload_sha256", json::s(&hex::encode(&m.payload.sha256))),
                    ],
                );
            } else {
                println!(
                    "OK {}: signature by key {}, stub, payload and {} entries verified",
                    m.bundle_id(),
                    b.signer,
                    m.entries.len()
                );
                if m.dev {
                    println!("WARNING: signed with a development key; not for production");
                }
            }
            Ok(0)
        }
        "list" => {
            let f = Flags::parse(rest, &[], &["--json"])?;
            let b = bundle::Signed::open(&bundle::self_path()?, &Trust::Embedded)?;
            let m = b.manifest();
            if f.has("--json") {
                let items: Vec<String> = m
                    .entries
                    .iter()
                    .map(|e| match &e.kind {
                        EntryKind::Dir => format!(
                            "{{\"path\":{},\"type\":\"dir\",\"mode\":\"{:o}\"}}",
                            json::s(e.path.as_str()),
                            e.mode
                        ),
                        EntryKind::Link { target } => {
                            format!(
                                "{{\"path\":{},\"type\":\"link\",\"target\":{}}}",
                                json::s(e.path.as_str()),
                                json::s(target)
                            )
                        }
                        EntryKind::File { size, sha256 } => format!(
                            "{{\"path\":{},\"type\":\"file\",\"mode\":\"{:o}\",\"size\":{size},\"sha256\":{}}}",
                            json::s(e.path.as_str()),
                            e.mode,
                            json::s(&hex::encode(sha256))
                        ),
                    })
                    .collect();
                println!("{{\"bundle\":{},\"entries\":[{}]}}", json::s(&m.bundle_id()), items.join(","));
            } else {
                for e in &m.entries {
                    match &e.kind {
                        EntryKind::Dir => println!("d {:>5o} {:>12} {}/", e.mode, "-", e.path),
                        EntryKind::Link { target } => println!("l {:>5} {:>12} {} -> {target}", "-", "-", e.path),
                        EntryKind::File { size, .. } => {
                            println!("f {:>5o} {:>12} {}", e.mode, size, e.path)
                        }
                    }
                }
            }
            Ok(0)
        }
        "extract" => {
            let f = Flags::parse(rest, &["--to"], &["--json"])?;
            let to = f.require("--to")?;
            let layout = nxs_stub::root::Layout::new(&to)?;
            layout.check_if_present()?;
            if !fsx::is_missing_or_empty(&layout.root)? {
                return Err(Error::new(Class::Io, format!("{} is not empty", layout.root.display()))
                    .hint("extract into a new or empty directory"));
            }
            let b = Bundle::open_verified(&bundle::self_path()?, &Trust::Embedded)?;
            preflight::check(&b.manifest, &layout.root)?;
            nxs_stub::root::stage(&b, &layout, false, true, None, &mut |_| Ok(()))?;
            nxs_stub::root::commit(&layout)?;
            let n = b.manifest.entries.len();
            if events::json_mode() {
                let to = json::s(&layout.root.display().to_string());
                events::emit(
                    "result",
                    &[("ok", "true".into()), ("exit", "0".into()), ("entries", n.to_string()), ("root", to)],
                );
            } else {
                println!("extracted {n} entries into {}", layout.root.display());
            }
            Ok(0)
        }
        "install" => {
            let f = Flags::parse(
                rest,
                &[
                    "--root",
                    "--state-dir",
                    "--max-start-attempts",
                    "--authkey-file",
                    "--authkey-age",
                    "--passphrase-file",
                    "--join-attempts",
                    "--probe-timeout",
                    "--up-timeout",
                    "--restore-from",
                    "--restore-identity",
                    "--restore-passphrase-file",
                ],
                &["--allow-downgrade", "--quiet", "--retry-failed", "--json"],
            )?;
            let number = |name: &str, default: u32| -> Result<u32> {
                match f.value(name) {
                    None => Ok(default),
                    Some(v) => v
                        .to_str()
                        .and_then(|v| v.parse().ok())
                        .filter(|n| (1..=3600).contains(n))
                        .ok_or_else(|| Error::usage(format!("{name} takes a number from 1 to 3600"))),
                }
            };
            let max_start_attempts = number("--max-start-attempts", 3)?;
            let age = f.value("--authkey-age");
            let key = tailnet::KeyInput {
                // The environment is the fallback for a plain key file only:
                // a flag given on the command line wins.
                file: f.value("--authkey-file").or_else(|| {
                    std::env::var_os(tailnet::KEY_FILE_ENV)
                        .filter(|v| !v.is_empty() && age.is_none())
                        .map(PathBuf::from)
                }),
                age,
                passphrase_file: f.value("--passphrase-file"),
            };
            if key.file.is_some() && key.age.is_some() {
                return Err(Error::usage(
                    "give the auth key one way: --authkey-file (or NXS_AUTHKEY_FILE) or --authkey-age",
                ));
            }
            if key.passphrase_file.is_some() && key.age.is_none() {
                return Err(Error::usage("--passphrase-file opens an --authkey-age file; give that too"));
            }
            let restore = match (
                f.value("--restore-from"),
                f.value("--restore-identity"),
                f.value("--restore-passphrase-file"),
            ) {
                (None, None, None) => None,
                (Some(from), Some(key), None) => Some(install::RestoreFrom { from, key, passphrase: false }),
                (Some(from), None, Some(key)) => Some(install::RestoreFrom { from, key, passphrase: true }),
                _ => {
                    return Err(Error::usage(
                        "--restore-from takes one key: --restore-identity F or --restore-passphrase-file F",
                    ))
                }
            };
            if let Some(r) = &restore {
                for p in [&r.from, &r.key] {
                    std::fs::metadata(p).map_err(|e| Error::io("cannot read", p, e))?;
                }
            }
            let opts = install::InstallOptions {
                restore,
                bundle: bundle::self_path()?,
                root: f.require("--root")?,
                state_dir: nxs_stub::fsx::state_dir(f.value("--state-dir"))?,
                allow_downgrade: f.has("--allow-downgrade"),
                progress: !f.has("--quiet"),
                max_start_attempts,
                retry_failed: f.has("--retry-failed"),
                key,
                join_attempts: number("--join-attempts", 3)?,
                probe_timeout: std::time::Duration::from_secs(number("--probe-timeout", 5)?.into()),
                up_timeout: std::time::Duration::from_secs(
                    number("--up-timeout", tailnet::UP_TIMEOUT.as_secs() as u32)?.into(),
                ),
            };
            let out = install::install(&opts)?;
            if events::json_mode() {
                events::emit(
                    "result",
                    &[
                        ("ok", "true".into()),
                        ("exit", "0".into()),
                        ("state", json::s(out.state.as_str())),
                        ("already", out.already.to_string()),
                        ("root", json::s(&opts.root.display().to_string())),
                        ("state_dir", json::s(&opts.state_dir.display().to_string())),
                    ],
                );
            } else if out.already {
                println!("already installed and RUNNING in {}; nothing to do", opts.root.display());
            } else {
                println!("{} in {} (state dir {})", out.state, opts.root.display(), opts.state_dir.display());
            }
            Ok(0)
        }
        "backup" | "restore" => nxs_stub::tool::exec(args),
        "rollback" => {
            let f = Flags::parse(rest, &["--state-dir"], &[])?;
            let dir = nxs_stub::fsx::state_dir(f.value("--state-dir"))?;
            install::rollback_command(&dir)?;
            Ok(0)
        }
        "status" => {
            let f = Flags::parse(rest, &["--state-dir"], &["--json"])?;
            let dir = nxs_stub::fsx::state_dir(f.value("--state-dir"))?;
            status(&dir, f.has("--json"))
        }
        "check" => {
            let f = Flags::parse(rest, &["--root"], &["--json"])?;
            let root = f.require("--root")?;
            check(&root, f.has("--json"))
        }
        other => Err(Error::usage(format!("unknown command `{other}`"))),
    }
}

fn status(dir: &std::path::Path, as_json: bool) -> Result<i32> {
    let checkpoint = match nxs_stub::statedir::StateDir::open_existing(dir)? {
        Some(sd) => sd.read_checkpoint()?,
        None => None,
    };
    let cp = match checkpoint {
        None => {
            if as_json {
                println!("{{\"state\":null,\"state_dir\":{}}}", json::s(&dir.display().to_string()));
            } else {
                println!("no install recorded in {}", dir.display());
            }
            return Ok(0);
        }
        Some(Err(e)) => {
            return Err(Error::new(Class::Io, format!("{}: {e}", dir.join(install::CHECKPOINT_FILE).display()))
                .hint("run install again: it starts afresh from VERIFYING"))
        }
        Some(Ok(c)) => c,
    };
    if as_json {
        let hist: Vec<String> =
            cp.history.iter().map(|h| format!("{{\"state\":\"{}\",\"at\":{}}}", h.state, h.at)).collect();
        let tailnet = match &cp.join {
            None => "null".to_string(),
            Some(j) => format!(
                "{{\"joined\":{},\"pending\":{},\"attempts\":{},\"reason\":{}}}",
                j.joined,
                !j.joined,
                j.attempts,
                json::opt(j.reason.as_deref())
            ),
        };
        println!(
            "{{\"state\":\"{}\",\"bundle\":{},\"version\":{},\"payload_sha256\":{},\"root\":{},\"last_error\":{},\"tailnet\":{tailnet},\"history\":[{}],\"state_dir\":{}}}",
            cp.state,
            json::s(&cp.bundle_id),
            json::s(&cp.version),
            json::s(&cp.payload_sha256),
            json::s(&cp.root),
            json::opt(cp.last_error.as_deref()),
            hist.join(","),
            json::s(&dir.display().to_string())
        );
    } else {
        println!("state:    {}", cp.state);
        println!("bundle:   {}", cp.bundle_id);
        println!("version:  {}", cp.version);
        println!("root:     {}", cp.root);
        if let Some(e) = &cp.last_error {
            println!("error:    {e}");
        }
        match &cp.join {
            Some(j) if j.joined => match &j.reason {
                Some(why) => println!("tailnet:  joined, degraded: {why}"),
                None => println!("tailnet:  joined"),
            },
            Some(j) => println!(
                "tailnet:  join pending ({} attempt(s) so far): {}",
                j.attempts,
                j.reason.as_deref().unwrap_or("not tried yet")
            ),
            None => {}
        }
        let tail: Vec<String> = cp.history.iter().rev().take(10).rev().map(|h| h.state.to_string()).collect();
        println!("history:  {}", tail.join(" -> "));
    }
    Ok(0)
}

fn check(root: &std::path::Path, as_json: bool) -> Result<i32> {
    let m = bundle::installed_record(root)?.manifest;
    let problems = extract::check_tree(root, &m);
    if as_json {
        let items: Vec<String> = problems.iter().map(|p| json::s(p)).collect();
        println!(
            "{{\"ok\":{},\"bundle\":{},\"entries\":{},\"problems\":[{}]}}",
            problems.is_empty(),
            json::s(&m.bundle_id()),
            m.entries.len(),
            items.join(",")
        );
    } else if problems.is_empty() {
        println!("OK {}: {} entries match the signed record", m.bundle_id(), m.entries.len());
    } else {
        for p in &problems {
            println!("MISMATCH {p}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { Class::Verify as i32 })
}

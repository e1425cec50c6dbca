//! nxs-stub: the program at the front of every bundle, and the installed
//! `nxs-survival` tool. It verifies the bundle it is part of, extracts it
//! safely and runs the bootstrap state machine. The command line is
//! `nxs_stub::cli`'s table; this file carries each command out and reports.
//!
//! Kept small on purpose: no argument-parsing or serialisation crates; the
//! dependencies are the format crate, a minisign verifier, sha2, tar,
//! libzstd's decoder and the RustCrypto pieces of age.

use nxs_format::json::{self, Obj};
use nxs_format::{hex, EntryKind};
use nxs_stub::bundle::{self, Bundle, Trust};
use nxs_stub::cli::{self, Cmd};
use nxs_stub::error::{Class, Error, Result};
use nxs_stub::events::{self, Progress};
use nxs_stub::{detect, extract, fsx, install, preflight};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // How this run reports (events.rs): the commands with an event stream
    // take --json, and install --quiet turns progress off.
    let streams = matches!(args.first().map(String::as_str), Some("verify" | "extract" | "install"));
    events::init(streams && args.iter().any(|a| a == "--json"), args.iter().any(|a| a == "--quiet"));
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => events::failed(&e),
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32> {
    if args.is_empty() {
        eprintln!("{}", cli::usage());
        return Ok(Class::Usage as i32);
    }
    match Cmd::parse(args, &|k| std::env::var_os(k))? {
        Cmd::Help => println!("{}", cli::usage()),
        Cmd::CommandHelp(c) => println!("{}", cli::command_usage(c)),
        Cmd::Version => {
            println!("nxs-stub {} ({})", env!("CARGO_PKG_VERSION"), bundle::STUB_TARGET);
            println!(
                "runs on: machine {}, Linux {} or newer",
                detect::MACHINES.replace(',', " or "),
                detect::MIN_KERNEL
            );
        }
        Cmd::Verify { pubkey } => verify(pubkey.as_deref())?,
        Cmd::List { tier, json } => list(tier.as_deref(), json)?,
        Cmd::Extract { to, tier } => extract(&to, tier.as_deref())?,
        Cmd::Install(i) => install(*i)?,
        Cmd::Tool => return nxs_stub::tool::exec(args),
        Cmd::Rollback { state_dir } => install::rollback_command(&fsx::state_dir(state_dir)?)?,
        Cmd::Status { state_dir, json } => return status(&fsx::state_dir(state_dir)?, json),
        Cmd::Check { root, json } => return check(&root, json),
        Cmd::Stick { repair, dir, json } => return stick(&dir, repair, json),
    }
    Ok(0)
}

fn verify(pubkey: Option<&Path>) -> Result<()> {
    let trust = match pubkey {
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
                ("tiers", format!("[{}]", m.tier_names().iter().map(|t| json::s(t)).collect::<Vec<_>>().join(","))),
                ("target", json::s(&m.target)),
                ("format", m.format.to_string()),
                ("signer", json::s(&b.trusted.signers.join(","))),
                ("root_version", b.trusted.root_version.to_string()),
                ("threshold", b.trusted.threshold.to_string()),
                (
                    "signers",
                    format!("[{}]", b.trusted.signers.iter().map(|k| json::s(k)).collect::<Vec<_>>().join(",")),
                ),
                ("root_steps", b.trusted.steps.to_string()),
                ("dev", m.dev.to_string()),
                ("entries", m.entries.len().to_string()),
                ("payload_sha256", json::s(&hex::encode(&m.payload.sha256))),
                ("shared", m.shared.as_ref().map_or("null".into(), |p| json::s(&p.name))),
            ],
        );
        return Ok(());
    }
    let t = &b.trusted;
    let by =
        if t.signers.len() == 1 { format!("key {}", t.signers[0]) } else { format!("keys {}", t.signers.join(", ")) };
    let under = match (t.root_version, t.steps) {
        (0, _) => "given with --pubkey".to_string(),
        (v, 0) => format!("of root {v} (threshold {})", t.threshold),
        (v, n) => format!("of root {v} (threshold {}, {n} root rotation(s) walked)", t.threshold),
    };
    let payload = match &m.shared {
        Some(p) => format!("payload (and its shared part {})", p.name),
        None => "payload".to_string(),
    };
    println!("OK {}: signed by {by} {under}; stub, {payload} and {} entries verified", m.bundle_id(), m.entries.len());
    if m.dev {
        println!("WARNING: signed with a development key; not for production");
    }
    Ok(())
}

/// `list` reads a bundle whose signature is verified; its regions need not
/// be (nothing of it is extracted). A stick's bundle lists every entry
/// with its tiers, or with `--tier` that tier's entries.
fn list(tier: Option<&str>, as_json: bool) -> Result<()> {
    let b = bundle::Signed::open(&bundle::self_path()?, &Trust::Embedded)?;
    let full = b.manifest();
    let sel = match tier {
        Some(t) => Some(full.select(Some(t)).map_err(|why| Error::usage(why).hint("`list` names the tiers"))?),
        None => None,
    };
    let view = sel.as_ref().map(|s| full.view(s));
    let m = view.as_ref().unwrap_or(full);
    let tiers_of = |i: usize| m.tiers.as_ref().map(|t| t.spell(t.of_entry[i]));
    if as_json {
        let items = m.entries.iter().enumerate().map(|(i, e)| {
            let o = Obj::new().str("path", e.path.as_str());
            let o = match &e.kind {
                EntryKind::Dir => o.str("type", "dir").str("mode", &format!("{:o}", e.mode)),
                EntryKind::Link { target } => o.str("type", "link").str("target", target),
                EntryKind::File { size, sha256 } => o
                    .str("type", "file")
                    .str("mode", &format!("{:o}", e.mode))
                    .raw("size", size)
                    .str("sha256", &hex::encode(sha256)),
            };
            match tiers_of(i) {
                Some(t) => o.array("tiers", t.split(',').map(json::s)),
                None => o,
            }
            .finish()
        });
        let names = full.tier_names().into_iter().map(json::s);
        let top = Obj::new().str("bundle", &full.bundle_id()).str("tier", &m.tier).array("tiers", names);
        println!("{}", top.array("entries", items).finish());
        return Ok(());
    }
    if full.tiers.is_some() {
        match &sel {
            Some(s) => println!("tier {} of {}", s.tier, full.tier_names().join(", ")),
            None => println!("tiers {} (default {})", full.tier_names().join(", "), full.tier),
        }
    }
    for (i, e) in m.entries.iter().enumerate() {
        let t = tiers_of(i).map(|t| format!("  [{t}]")).unwrap_or_default();
        match &e.kind {
            EntryKind::Dir => println!("d {:>5o} {:>12} {}/{t}", e.mode, "-", e.path),
            EntryKind::Link { target } => println!("l {:>5} {:>12} {} -> {target}{t}", "-", "-", e.path),
            EntryKind::File { size, .. } => println!("f {:>5o} {:>12} {}{t}", e.mode, size, e.path),
        }
    }
    Ok(())
}

fn extract(to: &Path, tier: Option<&str>) -> Result<()> {
    let layout = nxs_stub::root::Layout::new(to)?;
    layout.check_if_present()?;
    if !fsx::is_missing_or_empty(&layout.root)? {
        return Err(Error::new(Class::Io, format!("{} is not empty", layout.root.display()))
            .hint("extract into a new or empty directory"));
    }
    let mut b = Bundle::open_verified(&bundle::self_path()?, &Trust::Embedded)?;
    b.choose_tier(tier)?;
    preflight::check(&b.view, &layout.root)?;
    nxs_stub::root::stage(&b, &layout, false, true, None, &mut |_| Ok(()))?;
    nxs_stub::root::commit(&layout)?;
    let n = b.view.entries.len();
    if events::json_mode() {
        let to = json::s(&layout.root.display().to_string());
        events::emit(
            "result",
            &[("ok", "true".into()), ("exit", "0".into()), ("entries", n.to_string()), ("root", to)],
        );
    } else {
        println!("extracted {n} entries into {}", layout.root.display());
    }
    Ok(())
}

fn install(i: cli::Install) -> Result<()> {
    if let Some(r) = &i.restore {
        for p in [&r.from, &r.key] {
            std::fs::metadata(p).map_err(|e| Error::io("cannot read", p, e))?;
        }
    }
    let opts = install::InstallOptions {
        restore: i.restore,
        tier: i.tier,
        bundle: bundle::self_path()?,
        root: i.root,
        state_dir: fsx::state_dir(i.state_dir)?,
        allow_downgrade: i.allow_downgrade,
        allow_root_rollback: i.allow_root_rollback,
        progress: !i.quiet,
        max_start_attempts: i.max_start_attempts,
        retry_failed: i.retry_failed,
        key: i.key,
        join_attempts: i.join_attempts,
        probe_timeout: i.probe_timeout,
        up_timeout: i.up_timeout,
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
    Ok(())
}

fn status(dir: &Path, as_json: bool) -> Result<i32> {
    let checkpoint = match nxs_stub::statedir::StateDir::open_existing(dir)? {
        Some(sd) => sd.read_checkpoint()?,
        None => None,
    };
    let cp = match checkpoint {
        None => {
            if as_json {
                println!("{}", Obj::new().raw("state", "null").str("state_dir", &dir.display().to_string()).finish());
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
    // The install record's trust, checked as `check` checks it; a record
    // that does not verify is reported, not hidden.
    let installed = bundle::installed_record(Path::new(&cp.root)).map(|a| a.trusted);
    if as_json {
        let hist = cp.history.iter().map(|h| Obj::new().str("state", h.state.as_str()).raw("at", h.at).finish());
        let tailnet = match &cp.join {
            None => "null".to_string(),
            Some(j) => Obj::new()
                .raw("joined", j.joined)
                .raw("pending", !j.joined)
                .raw("attempts", j.attempts)
                .opt("reason", j.reason.as_deref())
                .finish(),
        };
        let o = Obj::new()
            .str("state", cp.state.as_str())
            .str("bundle", &cp.bundle_id)
            .str("version", &cp.version)
            .str("payload_sha256", &cp.payload_sha256)
            .str("root", &cp.root)
            .opt("last_error", cp.last_error.as_deref())
            .raw("tailnet", tailnet)
            .raw("trust", trust_json(&installed))
            .array("history", hist)
            .str("state_dir", &dir.display().to_string());
        println!("{}", o.finish());
    } else {
        println!("state:    {}", cp.state);
        println!("bundle:   {}", cp.bundle_id);
        println!("version:  {}", cp.version);
        println!("root:     {}", cp.root);
        println!("trust:    {}", trust_text(&installed));
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

/// `stick verify|repair DIR`: the report, and exit 3 while damage remains.
fn stick(dir: &Path, repair: bool, as_json: bool) -> Result<i32> {
    use nxs_stub::stick;
    let (report, repaired) = match repair {
        true => stick::repair(dir).map(|(r, done)| (r, Some(done)))?,
        false => (stick::verify(dir)?, None),
    };
    stick::print(&report, repaired.as_deref(), as_json);
    if report.damaged().next().is_none() {
        return Ok(0);
    }
    if !as_json {
        let hint = match repair {
            true => "what is left is beyond the stick's parity: copy it again from another stick or the release",
            false => "`stick repair DIR` rebuilds each file the parity can",
        };
        eprintln!("error: {}: damage found\n  hint: {hint}", dir.display());
    }
    Ok(Class::Verify as i32)
}

/// The install's trust as `status` reports it.
fn trust_text(t: &Result<bundle::Trusted>) -> String {
    match t {
        Ok(t) => {
            format!(
                "root {}, {} of threshold {} (keys {})",
                t.root_version,
                t.signers.len(),
                t.threshold,
                t.signers.join(", ")
            )
        }
        Err(e) => format!("install record not verified: {}", e.msg),
    }
}

/// The install's trust as `status --json` reports it.
fn trust_json(t: &Result<bundle::Trusted>) -> String {
    match t {
        Ok(t) => Obj::new()
            .raw("root_version", t.root_version)
            .raw("threshold", t.threshold)
            .array("signers", t.signers.iter().map(|k| json::s(k)))
            .finish(),
        Err(e) => Obj::new().raw("root_version", "null").str("error", &e.msg).finish(),
    }
}

fn check(root: &Path, as_json: bool) -> Result<i32> {
    let m = bundle::installed_record(root)?.manifest;
    let problems = extract::check_tree(root, &m);
    if as_json {
        let o = Obj::new()
            .raw("ok", problems.is_empty())
            .str("bundle", &m.bundle_id())
            .raw("entries", m.entries.len())
            .array("problems", problems.iter().map(|p| json::s(p)));
        println!("{}", o.finish());
    } else if problems.is_empty() {
        println!("OK {}: {} entries match the signed record", m.bundle_id(), m.entries.len());
    } else {
        for p in &problems {
            println!("MISMATCH {p}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { Class::Verify as i32 })
}

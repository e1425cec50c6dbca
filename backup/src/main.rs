//! The `nxs-backup` command. `BUNDLE.run backup|restore ...` and the
//! installed `nxs-survival backup|restore ...` hand their arguments here.

use clap::{Args, Parser, Subcommand};
use nxs_backup::error::{Error, Result};
use nxs_backup::{clock, create, keys, list, restore, rotate};
use nxs_format::{hex, json};
use nxs_sys::events;
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

/// Encrypted backups of an NXS state directory, and their restore.
///
/// Exit codes: 0 ok, 2 usage, 3 a backup failed to verify (wrong key, bad
/// MAC, truncated, a hash mismatch), 4 a backup from a newer format,
/// 5 I/O, 6 the state directory is locked, 7 the restore failed after the
/// swap and the previous state was put back.
#[derive(Parser)]
#[command(name = "nxs-backup", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Back up a state directory into DIR, encrypted with age, then prune by the retention policy.
    Backup(BackupCmd),
    /// Restore the newest backup that verifies (or the named one) into a state directory.
    Restore(RestoreCmd),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BackupCmd {
    #[command(subcommand)]
    sub: Option<BackupSub>,
    /// The state directory [default: $NXS_HOME, else ~/.nxs].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where the backup goes (created if missing), e.g. a directory on the stick.
    #[arg(long, value_name = "DIR", required = true)]
    to: Option<PathBuf>,
    /// Encrypt to this age X25519 recipient (age1...); repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "AGE_PUBKEY")]
    recipients: Vec<String>,
    /// Encrypt to the recipients listed in this file, one per line; repeatable.
    #[arg(long = "recipients-file", short = 'R', value_name = "FILE")]
    recipients_files: Vec<PathBuf>,
    /// Encrypt with the passphrase on this file's first line (age's scrypt mode).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Daily backups to keep.
    #[arg(long, default_value_t = 7, value_name = "N")]
    keep_daily: usize,
    /// Weekly (ISO week) backups to keep.
    #[arg(long, default_value_t = 4, value_name = "N")]
    keep_weekly: usize,
    /// Monthly backups to keep.
    #[arg(long, default_value_t = 12, value_name = "N")]
    keep_monthly: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum BackupSub {
    /// Each backup in DIR: date, size, source version, and whether it verifies.
    List(ListCmd),
}

#[derive(Args)]
struct ListCmd {
    dir: PathBuf,
    /// Decrypt and check each backup with these identities.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// Decrypt and check each backup with this passphrase.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RestoreCmd {
    /// A backup file, or a directory of them (the newest that verifies is taken).
    #[arg(long, value_name = "FILE-or-DIR")]
    from: PathBuf,
    /// The state directory [default: $NXS_HOME, else ~/.nxs].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Decrypt with the identities (AGE-SECRET-KEY-1...) in this file; repeatable.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identities: Vec<PathBuf>,
    /// Decrypt with the passphrase on this file's first line.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The state directory's lock, held by the calling install (internal).
    #[arg(long, hide = true)]
    lock_fd: Option<i32>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// Seconds to wait for the state directory's lock.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    lock_timeout: u64,
    /// Print events on stdout, one JSON object a line, ending with the
    /// result (docs/EVENTS.md).
    #[arg(long)]
    json: bool,
}

/// The `result` event's fields beyond `ok` and `exit`, rendered as JSON.
type Fields = Vec<(&'static str, String)>;

use nxs_sys::fs::state_dir;

fn run(cli: Cli) -> Result<Fields> {
    match cli.cmd {
        Cmd::Backup(BackupCmd { sub: Some(BackupSub::List(l)), .. }) => {
            let keys = keys::decrypt(&l.identities, l.passphrase_file.as_deref())?;
            let items = list::list(&l.dir, keys.as_ref())?;
            if l.json {
                println!("{}", list::to_json(&l.dir, &items));
            } else {
                print!("{}", list::to_text(&items));
                if keys.is_none() {
                    eprintln!("  note: without --identity or --passphrase-file only the .sha256 files are checked");
                }
            }
            Ok(Fields::new())
        }
        Cmd::Backup(b) => backup(b),
        Cmd::Restore(r) => restore(r),
    }
}

/// `backup`: the result's fields, and a line of text without --json.
fn backup(b: BackupCmd) -> Result<Fields> {
    let opts = create::BackupOptions {
        state_dir: state_dir(b.state_dir)?,
        to: b.to.ok_or_else(|| Error::usage("--to DIR is required"))?,
        encrypt: keys::encrypt(&b.recipients, &b.recipients_files, b.passphrase_file.as_deref())?,
        keep: rotate::Keep { daily: b.keep_daily, weekly: b.keep_weekly, monthly: b.keep_monthly },
        lock_wait: Duration::from_secs(b.common.lock_timeout),
        now: clock::now()?,
    };
    let c = create::backup(&opts)?;
    let pruned: Vec<String> = c.pruned.iter().map(|p| json::s(&p.to_string_lossy())).collect();
    let skipped: Vec<String> = c.skipped.iter().map(|s| json::s(s)).collect();
    let fields = vec![
        ("backup", json::s(&c.path.to_string_lossy())),
        ("size", c.size.to_string()),
        ("sha256", json::s(&hex::encode(&c.sha256))),
        ("files", c.files.to_string()),
        ("bytes", c.bytes.to_string()),
        ("source_version", json::s(&c.source_version)),
        ("consistency", json::s("lock")),
        ("skipped", format!("[{}]", skipped.join(","))),
        ("pruned", format!("[{}]", pruned.join(","))),
        ("kept", c.kept.to_string()),
    ];
    if !b.common.json {
        println!(
            "backed up {} files ({} bytes, source version {}) to {}; {} kept, {} pruned",
            c.files,
            c.bytes,
            c.source_version,
            c.path.display(),
            c.kept,
            c.pruned.len()
        );
    }
    Ok(fields)
}

/// `restore`: the result's fields, and a line of text without --json.
fn restore(r: RestoreCmd) -> Result<Fields> {
    let keys = keys::decrypt(&r.identities, r.passphrase_file.as_deref())?.ok_or_else(|| {
        Error::usage("no key: give --identity FILE or --passphrase-file FILE")
            .hint("the identity is the AGE-SECRET-KEY file the backup was made for")
    })?;
    let opts = restore::RestoreOptions {
        from: r.from,
        state_dir: state_dir(r.state_dir)?,
        keys,
        lock_wait: Duration::from_secs(r.common.lock_timeout),
        lock_fd: r.lock_fd,
        now: clock::now()?,
    };
    let out = restore::restore(&opts)?;
    let kept = out.pre_restore.as_ref().map(|p| p.to_string_lossy().into_owned());
    let skipped: Vec<String> =
        out.skipped.iter().map(|(n, why)| format!("{{\"name\":{},\"reason\":{}}}", json::s(n), json::s(why))).collect();
    let fields = vec![
        ("restored", json::s(&out.backup.to_string_lossy())),
        ("state_dir", json::s(&opts.state_dir.to_string_lossy())),
        ("created", json::s(&out.created)),
        ("source_version", json::s(&out.source_version)),
        ("files", out.files.to_string()),
        ("bytes", out.bytes.to_string()),
        ("pre_restore", json::opt(kept.as_deref())),
        ("resumed", out.resumed.to_string()),
        ("skipped", format!("[{}]", skipped.join(","))),
    ];
    if !r.common.json {
        println!(
            "restored {} ({} files, {} bytes, made {} from version {}) into {}{}",
            out.backup.display(),
            out.files,
            out.bytes,
            out.created,
            out.source_version,
            opts.state_dir.display(),
            if out.resumed { " (finished an interrupted restore)" } else { "" }
        );
        if let Some(k) = kept {
            println!("the previous state is kept in {k}");
        }
    }
    Ok(fields)
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error under --json still ends with a result event.
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                events::init(true, false);
                let msg = e.kind().to_string();
                events::emit(
                    "result",
                    &[("ok", "false".into()), ("exit", "2".into()), ("error", json::s(&msg)), ("hint", "null".into())],
                );
            }
            e.exit()
        }
    };
    // `backup` and `restore` report as the stub's long commands do: a
    // redrawn line on a terminal, plain lines elsewhere, events with --json.
    let json = match &cli.cmd {
        Cmd::Backup(b) => b.sub.is_none() && b.common.json,
        Cmd::Restore(r) => r.common.json,
    };
    events::init(json, false);
    match run(cli) {
        Ok(fields) => {
            let mut all = vec![("ok", "true".to_string()), ("exit", "0".to_string())];
            all.extend(fields);
            events::emit("result", &all);
        }
        Err(e) => std::process::exit(events::failed(&e)),
    }
}

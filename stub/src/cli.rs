//! The stub's command line as data: one table ([`COMMANDS`]) says which
//! flags each command takes, and both the parser and the usage text come
//! from it, so a flag cannot exist undocumented. Each command then parses
//! into a typed struct that holds its own validation (rust-analyzer's
//! `xtask/src/flags.rs` does the same with its flags DSL; the stub cannot
//! carry a parser crate, so the table is hand-written).

use crate::error::{Error, Result};
use crate::run::RestoreFrom;
use crate::tailnet::{KeyInput, KEY_FILE_ENV};
use std::path::PathBuf;
use std::time::Duration;

/// A flag: `--name VALUE`, or a bare switch when `value` is `None`.
pub struct Flag {
    pub name: &'static str,
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// A command: its flags, how its synopsis groups them, and what it does.
pub struct Command {
    pub name: &'static str,
    /// The flags as the synopsis shows them (alternatives, optional parts).
    pub synopsis: &'static str,
    pub flags: &'static [Flag],
    pub help: &'static str,
}

const fn v(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag { name, value: Some(value), help }
}

const fn sw(name: &'static str, help: &'static str) -> Flag {
    Flag { name, value: None, help }
}

const JSON: Flag = sw("--json", "one JSON object a line on stdout (docs/EVENTS.md); progress goes to stderr");
const TIER: Flag = v("--tier", "NAME", "of a stick's bundle, this tier (default: the one its spec names)");
const STATE_DIR: Flag = v("--state-dir", "DIR", "the state directory (default $NXS_HOME, else ~/.nxs)");

/// Every command the stub takes. `backup` and `restore` are passed whole to
/// the verified `bin/nxs-backup`, which has its own `--help`.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "verify",
        synopsis: "[--pubkey FILE] [--json]",
        flags: &[v("--pubkey", "FILE", "trust this minisign public key instead of the embedded ones"), JSON],
        help: "check the signature, the stub, the payload and every file; write nothing",
    },
    Command {
        name: "list",
        synopsis: "[--tier NAME] [--json]",
        flags: &[TIER, sw("--json", "the entries as one JSON object")],
        help: "the files the bundle holds (in a stick's bundle, with the tiers each belongs to), or one tier's",
    },
    Command {
        name: "extract",
        synopsis: "--to DIR [--tier NAME] [--json]",
        flags: &[v("--to", "DIR", "a new or empty directory"), TIER, JSON],
        help: "verified extraction into a new or empty DIR",
    },
    Command {
        name: "install",
        synopsis: "--root DIR [--tier NAME] [--state-dir DIR] [--allow-downgrade] [--allow-root-rollback] [--max-start-attempts N]\n\
                   [--retry-failed]\n\
                   [--authkey-file F | --authkey-age F [--passphrase-file F]]\n\
                   [--join-attempts N] [--probe-timeout SECONDS] [--up-timeout SECONDS] [--quiet] [--json]\n\
                   [--restore-from FILE-or-DIR (--restore-identity F | --restore-passphrase-file F)]",
        flags: &[
            v("--root", "DIR", "where the instance is installed"),
            TIER,
            STATE_DIR,
            sw("--allow-downgrade", "install a version older than one installed here before"),
            sw("--allow-root-rollback", "install a bundle whose root chain ends below the root accepted here"),
            v("--max-start-attempts", "N", "start attempts before safe mode (1 to 3600, default 3)"),
            sw("--retry-failed", "try again a bundle that failed 5 runs in a row"),
            v("--authkey-file", "F", "the Headscale auth key, in a file (or $NXS_AUTHKEY_FILE); never argv"),
            v("--authkey-age", "F", "the auth key, in a passphrase-encrypted age file"),
            v("--passphrase-file", "F", "the passphrase of --authkey-age (else a prompt)"),
            v("--join-attempts", "N", "`tailscale up` attempts in this run (1 to 3600, default 3)"),
            v("--probe-timeout", "SECONDS", "bound on each probe of the login server (default 5)"),
            v("--up-timeout", "SECONDS", "how long each `tailscale up` may wait (default 60)"),
            sw("--quiet", "no progress lines"),
            JSON,
            v("--restore-from", "FILE-or-DIR", "on a fresh machine, restore the state directory from a backup"),
            v("--restore-identity", "F", "the age identity of --restore-from"),
            v("--restore-passphrase-file", "F", "the passphrase file of --restore-from"),
        ],
        help: "verify and install; running it again resumes; a failed upgrade is rolled back (exit 7); the \
               tailnet join waits (exit 8) while the login server is unreachable or no key is given. The auth \
               key is read from a file only (or $NXS_AUTHKEY_FILE, or a prompt): never argv. --restore-from \
               restores the state directory before CONFIGURING",
    },
    Command {
        name: "backup",
        synopsis: "--to DIR (--recipient AGE_PUBKEY | --passphrase-file F) | backup list DIR",
        flags: &[],
        help: "age-encrypted backups of the state directory, by the verified bin/nxs-backup (`backup --help`)",
    },
    Command {
        name: "restore",
        synopsis: "--from FILE-or-DIR (--identity F | --passphrase-file F)",
        flags: &[],
        help: "restore the state directory from a backup, by the verified bin/nxs-backup (`restore --help`)",
    },
    Command {
        name: "stick",
        synopsis: "verify|repair DIR [--json]",
        flags: &[sw("--json", "the files and their state as one JSON object")],
        help: "check every file of a stick (`cargo xtask stick`) against its signed SHA256SUMS, naming each \
               damaged file and byte range; `repair` rebuilds what the stick's parity can, never replacing a \
               good file (exit 3 while damage remains)",
    },
    Command {
        name: "status",
        synopsis: "[--state-dir DIR] [--json]",
        flags: &[STATE_DIR, sw("--json", "the checkpoint as one JSON object")],
        help: "where the last install stands",
    },
    Command {
        name: "rollback",
        synopsis: "[--state-dir DIR]",
        flags: &[STATE_DIR],
        help: "put the previous install back",
    },
    Command {
        name: "check",
        synopsis: "--root DIR [--json]",
        flags: &[v("--root", "DIR", "an installed root"), sw("--json", "the problems as one JSON object")],
        help: "re-hash an installed tree against its record",
    },
];

const EXIT_CODES: &str = "exit codes: 0 ok, 2 usage, 3 verification failed, 4 incompatible,\n\
5 I/O or resources, 6 locked, 7 rolled back, 8 degraded, 9 hook failed,\n\
10 safe mode, 11 gave up after repeated failures";

/// The usage text, from [`COMMANDS`].
pub fn usage() -> String {
    let mut out = String::from("usage: BUNDLE.run <command> [flags]\n\ncommands:\n");
    for c in COMMANDS {
        let mut lines = c.synopsis.lines();
        let first = format!("  {} {}", c.name, lines.next().unwrap_or(""));
        out.push_str(&first);
        for l in lines {
            out.push_str(&format!("\n{}{}", " ".repeat(c.name.len() + 3), l.trim()));
        }
        out.push_str(&format!("\n{}\n", wrap(c.help, 6, 80)));
    }
    out.push_str("  --version\n      this stub's version and target\n\n");
    out.push_str("--json on verify, extract and install: one JSON event a line on stdout\n");
    out.push_str("(docs/EVENTS.md); progress goes to stderr, redrawn on a terminal.\n\n");
    out.push_str("`BUNDLE.run <command> --help` describes each flag of a command.\n\n");
    out.push_str(EXIT_CODES);
    out
}

/// One command's synopsis and flags.
pub fn command_usage(c: &Command) -> String {
    let mut out =
        format!("usage: BUNDLE.run {} {}\n\n{}\n", c.name, c.synopsis.replace('\n', " "), wrap(c.help, 2, 80));
    if !c.flags.is_empty() {
        out.push_str("\nflags:\n");
    }
    for f in c.flags {
        let name = match f.value {
            Some(v) => format!("{} {v}", f.name),
            None => f.name.to_string(),
        };
        out.push_str(&format!("  {name:30} {}\n", f.help));
    }
    out.push('\n');
    out.push_str(EXIT_CODES);
    out
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = vec![pad.clone()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("never empty");
        if cur.len() > indent && cur.len() + 1 + word.len() > width {
            lines.push(format!("{pad}{word}"));
        } else {
            if cur.len() > indent {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines.join("\n")
}

/// The flags of one command line: `--name value`, `--name=value`, and bare
/// switches, each checked against the command's table entry.
pub struct Flags {
    pairs: Vec<(&'static str, Option<String>)>,
}

impl Flags {
    pub fn parse(c: &Command, args: &[String]) -> Result<Flags> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if a.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let Some(f) = c.flags.iter().find(|f| f.name == name) else {
                return Err(Error::usage(format!("unexpected argument `{a}`"))
                    .hint(format!("`BUNDLE.run {} --help` lists its flags", c.name)));
            };
            match (f.value, inline) {
                (Some(_), Some(v)) => pairs.push((f.name, Some(v))),
                (Some(_), None) => {
                    let v = it.next().cloned().ok_or_else(|| Error::usage(format!("{name} needs a value")))?;
                    pairs.push((f.name, Some(v)));
                }
                (None, None) => pairs.push((f.name, None)),
                (None, Some(_)) => return Err(Error::usage(format!("unexpected argument `{a}`"))),
            }
        }
        Ok(Flags { pairs })
    }

    pub fn value(&self, name: &str) -> Option<PathBuf> {
        self.pairs.iter().rev().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone()).map(PathBuf::from)
    }

    /// A value that is text: a name, not a path.
    pub fn text(&self, name: &str) -> Option<String> {
        self.pairs.iter().rev().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| *n == name)
    }

    pub fn require(&self, name: &str) -> Result<PathBuf> {
        self.value(name).ok_or_else(|| Error::usage(format!("{name} DIR is required")))
    }

    /// A count or a number of seconds, from 1 to 3600.
    fn number(&self, name: &str, default: u32) -> Result<u32> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .to_str()
                .and_then(|v| v.parse().ok())
                .filter(|n| (1..=3600).contains(n))
                .ok_or_else(|| Error::usage(format!("{name} takes a number from 1 to 3600"))),
        }
    }
}

/// What the command line asks for.
pub enum Cmd {
    Help,
    CommandHelp(&'static Command),
    Version,
    Verify {
        pubkey: Option<PathBuf>,
    },
    List {
        tier: Option<String>,
        json: bool,
    },
    Extract {
        to: PathBuf,
        tier: Option<String>,
    },
    Install(Box<Install>),
    /// `backup` and `restore`: the whole argv goes to nxs-backup.
    Tool,
    Status {
        state_dir: Option<PathBuf>,
        json: bool,
    },
    Rollback {
        state_dir: Option<PathBuf>,
    },
    Check {
        root: PathBuf,
        json: bool,
    },
    /// `stick verify DIR` or `stick repair DIR`.
    Stick {
        repair: bool,
        dir: PathBuf,
        json: bool,
    },
}

/// `install`'s flags, validated.
pub struct Install {
    pub root: PathBuf,
    /// A stick's bundle: the tier to install (else the spec's default).
    pub tier: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub allow_downgrade: bool,
    pub allow_root_rollback: bool,
    pub quiet: bool,
    pub max_start_attempts: u32,
    pub retry_failed: bool,
    pub key: KeyInput,
    pub join_attempts: u32,
    pub probe_timeout: Duration,
    pub up_timeout: Duration,
    pub restore: Option<RestoreFrom>,
}

fn spec(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

impl Cmd {
    /// Parses the arguments after the program's name. `env` looks up an
    /// environment variable (`$NXS_AUTHKEY_FILE`).
    pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<Cmd> {
        let Some((cmd, rest)) = args.split_first() else { return Err(Error::usage("no command given")) };
        match cmd.as_str() {
            "--help" | "-h" | "help" => return Ok(Cmd::Help),
            "--version" | "-V" => return Ok(Cmd::Version),
            _ => {}
        }
        let c = spec(cmd).ok_or_else(|| Error::usage(format!("unknown command `{cmd}`")))?;
        if c.name == "backup" || c.name == "restore" {
            return Ok(Cmd::Tool);
        }
        if rest.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(Cmd::CommandHelp(c));
        }
        if c.name == "stick" {
            let (repair, dir) = match rest {
                [what, dir, ..] if (what == "verify" || what == "repair") && !dir.starts_with('-') => {
                    (what == "repair", PathBuf::from(dir))
                }
                _ => return Err(Error::usage("stick takes verify or repair, then the stick's directory")),
            };
            let f = Flags::parse(c, &rest[2..])?;
            return Ok(Cmd::Stick { repair, dir, json: f.has("--json") });
        }
        let f = Flags::parse(c, rest)?;
        Ok(match c.name {
            "verify" => Cmd::Verify { pubkey: f.value("--pubkey") },
            "list" => Cmd::List { tier: f.text("--tier"), json: f.has("--json") },
            "extract" => Cmd::Extract { to: f.require("--to")?, tier: f.text("--tier") },
            "install" => Cmd::Install(Box::new(Install::from_flags(&f, env)?)),
            "status" => Cmd::Status { state_dir: f.value("--state-dir"), json: f.has("--json") },
            "rollback" => Cmd::Rollback { state_dir: f.value("--state-dir") },
            "check" => Cmd::Check { root: f.require("--root")?, json: f.has("--json") },
            other => unreachable!("{other} is in the table but not parsed"),
        })
    }
}

impl Install {
    fn from_flags(f: &Flags, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<Install> {
        let age = f.value("--authkey-age");
        let key = KeyInput {
            // The environment is the fallback for a plain key file only: a
            // flag given on the command line wins.
            file: f
                .value("--authkey-file")
                .or_else(|| env(KEY_FILE_ENV).filter(|v| !v.is_empty() && age.is_none()).map(PathBuf::from)),
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
        let restore =
            match (f.value("--restore-from"), f.value("--restore-identity"), f.value("--restore-passphrase-file")) {
                (None, None, None) => None,
                (Some(from), Some(key), None) => Some(RestoreFrom { from, key, passphrase: false }),
                (Some(from), None, Some(key)) => Some(RestoreFrom { from, key, passphrase: true }),
                _ => {
                    return Err(Error::usage(
                        "--restore-from takes one key: --restore-identity F or --restore-passphrase-file F",
                    ))
                }
            };
        let secs = |name: &str, default: u32| f.number(name, default).map(|n| Duration::from_secs(n.into()));
        Ok(Install {
            root: f.require("--root")?,
            tier: f.text("--tier"),
            state_dir: f.value("--state-dir"),
            allow_downgrade: f.has("--allow-downgrade"),
            allow_root_rollback: f.has("--allow-root-rollback"),
            quiet: f.has("--quiet"),
            max_start_attempts: f.number("--max-start-attempts", 3)?,
            retry_failed: f.has("--retry-failed"),
            key,
            join_attempts: f.number("--join-attempts", 3)?,
            probe_timeout: secs("--probe-timeout", 5)?,
            up_timeout: secs("--up-timeout", crate::tailnet::UP_TIMEOUT.as_secs() as u32)?,
            restore,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;

    fn parse(line: &str, env: Option<&str>) -> Result<Cmd> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let env = env.map(std::ffi::OsString::from);
        Cmd::parse(&args, &move |k| (k == KEY_FILE_ENV).then(|| env.clone()).flatten())
    }

    #[test]
    fn every_flag_the_parser_takes_is_in_the_usage_and_back() {
        let text = usage();
        for c in COMMANDS {
            assert!(text.contains(&format!("  {} ", c.name)), "{} missing from the usage", c.name);
            for f in c.flags {
                assert!(c.synopsis.contains(f.name), "{} {}: in the table, not in the synopsis", c.name, f.name);
                assert!(command_usage(c).contains(f.name));
                let line = match f.value {
                    Some(_) => format!("{} {} x", c.name, f.name),
                    None => format!("{} {}", c.name, f.name),
                };
                // A flag of the table is never "unexpected".
                if let Err(e) = parse(&line, None) {
                    assert!(!e.msg.contains("unexpected"), "{line}: {}", e.msg);
                }
            }
        }
        assert!(text.contains("--quiet"));
    }

    #[test]
    fn command_lines_parse_or_are_refused_as_documented() {
        // (line, $NXS_AUTHKEY_FILE, Ok or the refusal's words)
        let cases: &[(&str, Option<&str>, std::result::Result<(), &str>)] = &[
            ("verify", None, Ok(())),
            ("verify --pubkey k.pub", None, Ok(())),
            ("verify --pubkey=k.pub --json", None, Ok(())),
            ("verify --pubkey", None, Err("needs a value")),
            ("verify --nope", None, Err("unexpected argument `--nope`")),
            ("verify --json=1", None, Err("unexpected argument")),
            ("frobnicate", None, Err("unknown command")),
            ("extract", None, Err("--to DIR is required")),
            ("install --root r", None, Ok(())),
            ("install --root r --authkey-file k --authkey-age a", None, Err("one way")),
            ("install --root r --authkey-age a", Some("k"), Ok(())),
            ("install --root r --passphrase-file p", None, Err("opens an --authkey-age")),
            ("install --root r --max-start-attempts 0", None, Err("from 1 to 3600")),
            ("install --root r --up-timeout 3601", None, Err("from 1 to 3600")),
            ("install --root r --restore-from b", None, Err("takes one key")),
            ("install --root r --restore-from b --restore-identity i", None, Ok(())),
            (
                "install --root r --restore-from b --restore-identity i --restore-passphrase-file p",
                None,
                Err("one key"),
            ),
            ("status --state-dir s --json", None, Ok(())),
            ("rollback --json", None, Err("unexpected")),
            ("check --root r", None, Ok(())),
        ];
        for (line, env, want) in cases {
            match (parse(line, *env), want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(words)) => {
                    assert_eq!(e.class, Class::Usage, "{line}");
                    assert!(e.msg.contains(words), "{line}: {}", e.msg);
                }
                (Ok(_), Err(words)) => panic!("{line}: parsed, but should be refused with {words:?}"),
                (Err(e), Ok(())) => panic!("{line}: refused: {}", e.msg),
            }
        }
    }

    #[test]
    fn the_key_file_comes_from_the_flag_then_the_environment() {
        let key = |line: &str, env: Option<&str>| match parse(line, env).unwrap() {
            Cmd::Install(i) => (i.key.file, i.key.age),
            _ => unreachable!(),
        };
        assert_eq!(key("install --root r", Some("e")).0, Some("e".into()));
        assert_eq!(key("install --root r --authkey-file f", Some("e")).0, Some("f".into()));
        assert_eq!(key("install --root r", Some("")).0, None);
        assert_eq!(key("install --root r --authkey-age a", Some("e")), (None, Some("a".into())));
        assert!(matches!(parse("install --help", None).unwrap(), Cmd::CommandHelp(c) if c.name == "install"));
        assert!(matches!(parse("backup --to d --recipient x", None).unwrap(), Cmd::Tool));
    }
}

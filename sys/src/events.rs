//! What a long run tells whoever watches it. On a terminal, one line per
//! long phase, redrawn in place, with bytes done, the total, the percentage,
//! the rate and the time left; off a terminal, a plain line about every
//! 10 %; with `--json`, one JSON object a line on stdout, in the versioned
//! schema of docs/EVENTS.md, and nothing else on stdout.
//!
//! # Security
//! Events carry sizes, names, states and messages, which never quote an
//! auth key (ARCHITECTURE.md); no event has a field for one.

use nxs_format::json;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The events schema (docs/EVENTS.md). A field may be added within a
/// version; removing or changing one is a new version.
pub const SCHEMA: u32 = 1;

/// How a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress off (`--quiet`); messages still go to stderr.
    Quiet,
    /// stderr is a terminal: redrawn progress lines.
    Terminal,
    /// stderr is a file or a pipe: a line about every 10 %.
    Plain,
    /// `--json`: events on stdout, messages still on stderr.
    Json,
}

static MODE: AtomicU8 = AtomicU8::new(u8::MAX);

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Chooses how this run reports: `--json` wins, then `--quiet`, then
/// whether stderr is a terminal.
pub fn init(json: bool, quiet: bool) {
    // SAFETY: isatty only looks at the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    let m = match (json, quiet, tty) {
        (true, _, _) => Mode::Json,
        (_, true, _) => Mode::Quiet,
        (_, _, true) => Mode::Terminal,
        _ => Mode::Plain,
    };
    MODE.store(m as u8, Ordering::Relaxed);
    started();
}

pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        0 => Mode::Quiet,
        1 => Mode::Terminal,
        3 => Mode::Json,
        // Before `init` (library callers, tests): plain lines.
        _ => Mode::Plain,
    }
}

pub fn json_mode() -> bool {
    mode() == Mode::Json
}

/// One event, with `fields` already rendered as JSON values (use
/// [`nxs_format::json::s`] for strings). Only in JSON mode.
pub fn emit(event: &str, fields: &[(&str, String)]) {
    if !json_mode() {
        return;
    }
    let mut line =
        format!("{{\"schema\":{SCHEMA},\"event\":{},\"t\":{:.3}", json::s(event), started().elapsed().as_secs_f64());
    for (k, v) in fields {
        line.push_str(&format!(",{}:{v}", json::s(k)));
    }
    line.push('}');
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How a run that failed ends, for every program of ours: the error and
/// its hint on stderr, the `result` event with the exit code under
/// `--json`; the exit code to end with.
pub fn failed(e: &crate::error::Error) -> i32 {
    eprintln!("error: {}", e.msg);
    if let Some(h) = &e.hint {
        eprintln!("  hint: {h}");
    }
    let code = e.exit_code();
    emit(
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

/// A state transition of the install.
pub fn state(from: &str, to: &str) {
    emit("state", &[("from", json::s(from)), ("to", json::s(to))]);
}

/// Something failed and is tried again.
pub fn retry(what: &str, attempt: u32, of: u32, delay: Duration, why: &str) {
    emit(
        "retry",
        &[
            ("what", json::s(what)),
            ("attempt", attempt.to_string()),
            ("of", of.to_string()),
            ("delay_ms", delay.as_millis().to_string()),
            ("error", json::s(why)),
        ],
    );
}

/// A long phase's progress, reported as [`mode`] says.
pub struct Progress {
    phase: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
    /// Plain mode: the next tenth to report.
    next_tenth: u64,
    ended: bool,
    /// Reports nothing at all (fuzzing, internal reads).
    silent: bool,
}

/// Plain lines only for phases at least this long: small installs stay
/// quiet in logs.
const PLAIN_MIN: u64 = 64 << 20;

impl Progress {
    /// Starts phase `phase` of `total` bytes.
    pub fn start(phase: &'static str, total: u64) -> Progress {
        let now = Instant::now();
        emit("phase-start", &[("phase", json::s(phase)), ("total", total.to_string())]);
        let p = Progress { phase, total, done: 0, start: now, last: now, next_tenth: 1, ended: false, silent: false };
        if mode() == Mode::Terminal {
            p.draw();
        }
        p
    }

    /// Progress that reports nothing, for reads that are not a phase.
    pub fn silent() -> Progress {
        let now = Instant::now();
        Progress { phase: "", total: 0, done: 0, start: now, last: now, next_tenth: 1, ended: true, silent: true }
    }

    /// `start`, or [`Progress::silent`] when `on` is false.
    pub fn start_if(on: bool, phase: &'static str, total: u64) -> Progress {
        if on {
            Progress::start(phase, total)
        } else {
            Progress::silent()
        }
    }

    /// `n` more bytes are done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.silent {
            return;
        }
        let now = Instant::now();
        match mode() {
            Mode::Terminal if now - self.last >= Duration::from_millis(100) => {
                self.last = now;
                self.draw();
            }
            Mode::Json if now - self.last >= Duration::from_secs(1) => {
                self.last = now;
                let (rate, eta) = self.rate_eta();
                emit(
                    "progress",
                    &[
                        ("phase", json::s(self.phase)),
                        ("done", self.done.to_string()),
                        ("total", self.total.to_string()),
                        ("rate", format!("{rate:.0}")),
                        ("eta", eta.map(|e| format!("{e:.1}")).unwrap_or_else(|| "null".into())),
                    ],
                );
            }
            Mode::Plain if self.total >= PLAIN_MIN && self.done * 10 >= self.next_tenth * self.total => {
                while self.next_tenth <= 10 && self.done * 10 >= self.next_tenth * self.total {
                    self.next_tenth += 1;
                }
                let (rate, eta) = self.rate_eta();
                eprintln!(
                    "  {}: {} / {} ({}%), {}/s, {} left",
                    self.phase,
                    mib(self.done),
                    mib(self.total),
                    self.percent(),
                    mib(rate as u64),
                    eta.map(clock).unwrap_or_else(|| "?".into())
                );
            }
            _ => {}
        }
    }

    /// The phase ended well.
    pub fn end(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, ok: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        if mode() == Mode::Terminal {
            self.draw();
            eprintln!();
        }
        emit(
            "phase-end",
            &[
                ("phase", json::s(self.phase)),
                ("ok", ok.to_string()),
                ("done", self.done.to_string()),
                ("total", self.total.to_string()),
                ("seconds", format!("{:.3}", self.start.elapsed().as_secs_f64())),
            ],
        );
    }

    fn percent(&self) -> u64 {
        (self.done * 100).checked_div(self.total).unwrap_or(100).min(100)
    }

    /// Bytes a second so far, and the seconds left at that rate.
    fn rate_eta(&self) -> (f64, Option<f64>) {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.done as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0).then(|| self.total.saturating_sub(self.done) as f64 / rate);
        (rate, eta)
    }

    fn draw(&self) {
        let (rate, eta) = self.rate_eta();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r  {:<8} {:>10} / {:<10} {:>3}%  {:>10}/s  ETA {:<6}\x1b[K",
            self.phase,
            mib(self.done),
            mib(self.total),
            self.percent(),
            mib(rate as u64),
            eta.map(clock).unwrap_or_else(|| "-".into())
        );
        let _ = err.flush();
    }
}

impl Drop for Progress {
    /// A phase cut short by an error: the line ends, and the event says so.
    fn drop(&mut self) {
        self.finish(false);
    }
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

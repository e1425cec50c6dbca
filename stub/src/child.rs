//! The one child-process runner: every spawn of the stub that must not
//! hang it (hooks, `tailscaled`'s service manager, the client) goes through
//! [`run_logged`], which bounds it by a deadline, appends its output to a
//! log of the state directory, and echoes or keeps it.

use crate::error::{Class, Error, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Copies a child's pipe to the log, to `capture` if given, and to our
/// own stream if `echo`.
fn tee(
    mut from: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    capture: Option<Arc<Mutex<Vec<u8>>>>,
    echo: Option<bool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = log.lock().map(|mut f| f.write_all(&buf[..n]));
            if let Some(c) = &capture {
                let _ = c.lock().map(|mut c| c.extend_from_slice(&buf[..n]));
            }
            match echo {
                // With --json, stdout holds events only: a child's output
                // goes to stderr (and its log) instead.
                Some(true) if !crate::events::json_mode() => drop(std::io::stdout().write_all(&buf[..n])),
                Some(true) => drop(std::io::stderr().write_all(&buf[..n])),
                Some(false) => drop(std::io::stderr().write_all(&buf[..n])),
                None => {}
            }
        }
    })
}

/// What a finished child did: its exit status (-1 for a signal or a
/// timeout) and, if asked for, its output.
pub struct Finished {
    pub status: i32,
    pub output: Vec<u8>,
}

/// Runs `cmd` to its end or its deadline, its output appended to `log`
/// (opened through [`StateDir::log`]), echoed to ours if `echo`, or kept
/// if `capture`.
pub fn run_logged(
    cmd: &mut Command,
    label: &str,
    log: File,
    timeout: Duration,
    echo: bool,
    capture: bool,
) -> Result<Finished> {
    let log = Arc::new(Mutex::new(log));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(Class::HookFailed, format!("{label}: cannot start {}: {e}", cmd.get_program().to_string_lossy()))
            .hint("the program must exist in the bundle or on PATH and run on this machine")
    })?;
    let captured = capture.then(|| Arc::new(Mutex::new(Vec::new())));
    let out = tee(child.stdout.take().expect("piped"), log.clone(), captured.clone(), echo.then_some(true));
    let err = tee(child.stderr.take().expect("piped"), log.clone(), captured.clone(), echo.then_some(false));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = log.lock().map(|mut f| writeln!(f, "nxs: timed out after {} s", timeout.as_secs()));
                eprintln!("  {label} timed out after {} s", timeout.as_secs());
                break -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::new(Class::HookFailed, format!("{label}: cannot wait for it: {e}"))),
        }
    };
    // A child that leaves a daemon behind may keep the pipes open: wait a
    // moment for the output, never forever.
    let until = Instant::now() + Duration::from_secs(1);
    while !(out.is_finished() && err.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = captured.map(|c| c.lock().map(|c| c.clone()).unwrap_or_default()).unwrap_or_default();
    Ok(Finished { status, output })
}

//! Fault injection for the crash tests, shared by the stub and nxs-backup
//! so that both read one grammar. It is compiled in only with this crate's
//! `fault-injection` feature, which each program's own feature of that
//! name turns on; release builds get the no-op below.
//!
//! Every mutating step calls [`effect`] first, with a name. With the
//! feature on, the environment can:
//! - kill the process with SIGKILL at the Nth effect, as a power cut would
//!   (`NXS_FAULT_CRASH_AT=N`);
//! - fail every effect whose name starts with a prefix, with EIO
//!   (`NXS_FAULT_FAIL=prefix`), a transient EBUSY (`NXS_FAULT_BUSY`) or
//!   ENOSPC (`NXS_FAULT_NOSPC`); `prefix*N` fails only the first N;
//! - pause at the first matching effect (`NXS_FAULT_PAUSE=prefix`): create
//!   the file `NXS_FAULT_PAUSE_FILE` and wait, up to 60 s, until it is
//!   removed, so that a test can change the world at that instant;
//! - print every effect (`NXS_FAULT_TRACE=1`).
//!
//! The error is the bare `io::Error`; each program names the effect in its
//! own error type.

#[cfg(feature = "fault-injection")]
pub fn effect(name: &str) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var_os("NXS_FAULT_TRACE").is_some() {
        eprintln!("fault: effect {n} {name}");
    }
    if std::env::var("NXS_FAULT_CRASH_AT").ok().and_then(|v| v.parse::<u64>().ok()) == Some(n) {
        eprintln!("fault: SIGKILL at effect {n} ({name})");
        // SAFETY: sends a signal to ourselves; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if let (Ok(prefix), Some(file)) = (std::env::var("NXS_FAULT_PAUSE"), std::env::var_os("NXS_FAULT_PAUSE_FILE")) {
        static PAUSED: AtomicU64 = AtomicU64::new(0);
        if !prefix.is_empty() && name.starts_with(&prefix) && PAUSED.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = std::fs::write(&file, name);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::path::Path::new(&file).exists() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    static FIRED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let kinds = [("NXS_FAULT_FAIL", libc::EIO), ("NXS_FAULT_BUSY", libc::EBUSY), ("NXS_FAULT_NOSPC", libc::ENOSPC)];
    for (i, (var, errno)) in kinds.into_iter().enumerate() {
        let Ok(spec) = std::env::var(var) else { continue };
        let (prefix, limit) = match spec.split_once('*') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(u64::MAX)),
            None => (spec.clone(), u64::MAX),
        };
        if !prefix.is_empty() && name.starts_with(&prefix) && FIRED[i].fetch_add(1, Ordering::SeqCst) < limit {
            eprintln!("fault: {var} at effect {n} ({name})");
            return Err(std::io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn effect(_name: &str) -> std::io::Result<()> {
    Ok(())
}

//! Fault injection for the crash tests, compiled in only with the
//! `fault-injection` feature; release stubs get the no-op below.
//!
//! Every mutating effect calls [`effect`] first, with a name. With the
//! feature on, the environment can make the Nth effect kill the process
//! with SIGKILL (`NXS_FAULT_CRASH_AT=N`, as a power cut would), make a named
//! effect fail (`NXS_FAULT_FAIL=name-prefix`), or trace every effect
//! (`NXS_FAULT_TRACE=1`). `NXS_FAULT_BUSY` and `NXS_FAULT_NOSPC` fail a
//! named effect with EBUSY or ENOSPC instead of EIO.

use crate::error::Result;

#[cfg(feature = "fault-injection")]
pub fn effect(name: &str) -> Result<()> {
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
    // NXS_FAULT_PAUSE=prefix: at the first matching effect, create the file
    // NXS_FAULT_PAUSE_FILE and wait (up to 60 s) until it is removed, so a
    // test can change the world at that instant.
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
    // NXS_FAULT_FAIL=prefix fails every matching effect with EIO; prefix*N
    // only the first N. NXS_FAULT_BUSY likewise, with a transient EBUSY.
    // NXS_FAULT_NOSPC likewise, with ENOSPC (a disk filling up mid-run).
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
            let e = std::io::Error::from_raw_os_error(errno);
            return Err(crate::error::Error::io("fault: injected failure at", std::path::Path::new(name), e));
        }
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn effect(_name: &str) -> Result<()> {
    Ok(())
}

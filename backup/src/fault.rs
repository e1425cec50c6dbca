//! Fault injection for the crash tests, compiled in only with the
//! `fault-injection` feature; the tool in a release payload gets the no-op.
//!
//! The same switches as the stub's: every mutating step calls [`effect`]
//! with a name. `NXS_FAULT_CRASH_AT=N` kills the process with SIGKILL at
//! the Nth effect (a power cut), `NXS_FAULT_FAIL=prefix` fails every effect
//! whose name starts with it, `NXS_FAULT_PAUSE=prefix` waits at the first
//! matching effect, `NXS_FAULT_TRACE=1` prints each effect.

use crate::error::Result;

#[cfg(feature = "fault-injection")]
pub fn effect(name: &str) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var_os("NXS_FAULT_TRACE").is_some() {
        eprintln!("fault: effect {n} {name}");
    }
    // NXS_FAULT_PAUSE=prefix, as in the stub: at the first matching effect,
    // create NXS_FAULT_PAUSE_FILE and wait (up to 60 s) until it is
    // removed, so a test can change the world at that instant.
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
    if std::env::var("NXS_FAULT_CRASH_AT").ok().and_then(|v| v.parse::<u64>().ok()) == Some(n) {
        eprintln!("fault: SIGKILL at effect {n} ({name})");
        // SAFETY: sends a signal to ourselves; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if let Ok(prefix) = std::env::var("NXS_FAULT_FAIL") {
        if !prefix.is_empty() && name.starts_with(&prefix) {
            eprintln!("fault: NXS_FAULT_FAIL at effect {n} ({name})");
            return Err(crate::error::Error::io(
                "fault: injected failure at",
                std::path::Path::new(name),
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn effect(_name: &str) -> Result<()> {
    Ok(())
}

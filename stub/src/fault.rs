//! Fault injection for the crash tests, compiled in only with the
//! `fault-injection` feature; release stubs get the no-op below.
//!
//! Every mutating effect calls [`effect`] first, with a name. With the
//! feature on, the environment can make the Nth effect kill the process
//! with SIGKILL (`NXS_FAULT_CRASH_AT=N`, as a power cut would), make a named
//! effect fail (`NXS_FAULT_FAIL=name-prefix`), or trace every effect
//! (`NXS_FAULT_TRACE=1`).

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
    if let Ok(prefix) = std::env::var("NXS_FAULT_FAIL") {
        if !prefix.is_empty() && name.starts_with(&prefix) {
            return Err(crate::error::Error::new(
                crate::error::Class::Io,
                format!("fault: injected failure at {name}"),
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

//! Fault injection for the crash tests: `nxs_sys::fault` (its grammar is
//! documented there), with the effect's name in the stub's error. Compiled
//! in only with the `fault-injection` feature; release stubs get a no-op.

use crate::error::Result;

#[inline(always)]
pub fn effect(name: &str) -> Result<()> {
    nxs_sys::fault::effect(name)
        .map_err(|e| crate::error::Error::io("fault: injected failure at", std::path::Path::new(name), e))
}

//! Running the signed spec's hooks: a command inside the install root, with
//! a timeout. The argv comes from the verified manifest only.

use crate::error::{Class, Error, Result};
use nxs_format::Hook;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `hook` with the install root as its working directory. A relative
/// program path with a `/` is taken inside the root.
pub fn run(hook: &Hook, root: &Path, state_dir: &Path, version: &str) -> Result<()> {
    let stage = hook.stage.as_str();
    let prog = &hook.argv[0];
    let program = if prog.contains('/') && !prog.starts_with('/') { root.join(prog) } else { prog.into() };
    eprintln!("  hook {stage}: {}", hook.argv.join(" "));
    let mut child = Command::new(&program)
        .args(&hook.argv[1..])
        .current_dir(root)
        .env("NXS_ROOT", root)
        .env("NXS_STATE_DIR", state_dir)
        .env("NXS_BUNDLE_VERSION", version)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::new(Class::HookFailed, format!("{stage} hook: cannot start {}: {e}", program.display()))
                .hint("the hook's program must exist in the bundle or on PATH and run on this machine")
        })?;
    let deadline = Instant::now() + Duration::from_secs(hook.timeout_secs);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::new(
                    Class::HookFailed,
                    format!("{stage} hook `{}` failed: {status}", hook.argv.join(" ")),
                )
                .hint("its output is above; fix the cause and run install again"))
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(
                    Class::HookFailed,
                    format!("{stage} hook `{}` timed out after {} s", hook.argv.join(" "), hook.timeout_secs),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::new(Class::HookFailed, format!("{stage} hook: cannot wait for it: {e}"))),
        }
    }
}

//! Running the signed spec's hooks: a command inside the install root, with
//! a timeout. The argv comes from the verified manifest only.
//!
//! A hook that exits 75 (EX_TEMPFAIL) asks to be retried later: it is run
//! again up to 3 times, with exponential backoff. Its output goes to the
//! terminal and to `<state-dir>/logs/hook-<stage>.log`.

use crate::error::{Class, Error, Result};
use crate::statedir::StateDir;
use nxs_format::Hook;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Exit status with which a hook asks to be retried later (sysexits' EX_TEMPFAIL).
pub const RETRY_LATER: i32 = 75;
/// Exit status with which a validate hook says "works, but a dependency is
/// unavailable" (sysexits' EX_UNAVAILABLE): the install goes on DEGRADED.
pub const DEGRADED: i32 = 69;

/// Runs `hook` with the install root as its working directory, and
/// `extra_env` added. A relative program path with a `/` is taken inside
/// the root.
pub fn run(hook: &Hook, root: &Path, state_dir: &StateDir, version: &str, extra_env: &[(&str, &str)]) -> Result<()> {
    let mut delay = Duration::from_millis(250);
    for attempt in 0..=3 {
        match run_once(hook, root, state_dir, version, extra_env)? {
            None => return Ok(()),
            Some(code) if code == RETRY_LATER && attempt < 3 => {
                eprintln!(
                    "  hook {} asks to retry later (exit 75); retry {} of 3 in {} ms",
                    hook.stage.as_str(),
                    attempt + 1,
                    delay.as_millis()
                );
                crate::events::retry(
                    &format!("hook {}", hook.stage.as_str()),
                    attempt + 1,
                    3,
                    delay,
                    "the hook asks to retry later (exit 75)",
                );
                std::thread::sleep(delay);
                delay *= 2;
            }
            Some(DEGRADED) if hook.stage == nxs_format::HookStage::Validate => {
                return Err(Error::new(
                    Class::Degraded,
                    format!("validate hook `{}` reports a partial failure (exit 69)", hook.argv.join(" ")),
                )
                .hint(format!(
                    "the install works with less; its output is in {}; run install again later to retry",
                    log_path(state_dir, hook).display()
                )));
            }
            Some(code) => {
                let log = log_path(state_dir, hook);
                return Err(Error::new(
                    Class::HookFailed,
                    format!("{} hook `{}` failed with exit status {code}", hook.stage.as_str(), hook.argv.join(" ")),
                )
                .hint(format!("its output is in {}; fix the cause and run install again", log.display())));
            }
        }
    }
    unreachable!("the last attempt returns")
}

pub fn log_path(state_dir: &StateDir, hook: &Hook) -> std::path::PathBuf {
    state_dir.join("logs").join(log_name(hook))
}

fn log_name(hook: &Hook) -> String {
    stage_log(hook.stage)
}

/// The log of a hook stage's runs, under `<state-dir>/logs/`.
pub use crate::statedir::names::stage_log;

/// One run; `None` on success, else the exit status (-1 for a signal or timeout).
fn run_once(
    hook: &Hook,
    root: &Path,
    state_dir: &StateDir,
    version: &str,
    extra_env: &[(&str, &str)],
) -> Result<Option<i32>> {
    let stage = hook.stage.as_str();
    let prog = &hook.argv[0];
    let program = if prog.contains('/') && !prog.starts_with('/') { root.join(prog) } else { prog.into() };
    eprintln!("  hook {stage}: {}", hook.argv.join(" "));
    let mut cmd = Command::new(&program);
    cmd.args(&hook.argv[1..])
        .current_dir(root)
        // The key file's path is not the key, but a hook has no business with it.
        .env_remove(crate::secret::KEY_FILE_ENV)
        .env("NXS_ROOT", root)
        .env("NXS_STATE_DIR", state_dir.path())
        .env("NXS_BUNDLE_VERSION", version);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let label = format!("{stage} hook");
    let done = crate::child::run_logged(
        &mut cmd,
        &label,
        state_dir.log(&log_name(hook))?.0,
        Duration::from_secs(hook.timeout_secs),
        true,
        false,
    )?;
    Ok(if done.status == 0 { None } else { Some(done.status) })
}

//! The diagnostic dump and the emergency shell: what an operator gets when
//! an install fails. The dump is one tar file under `<state-dir>/diag/`
//! holding the error, the checkpoint, the hook logs and a machine summary;
//! its path is printed. It holds no secret: none passes through the stub's
//! logs or checkpoint.

use crate::error::{Error, Result};
use crate::statedir::StateDir;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Largest part of one log kept in a dump (its tail).
const MAX_LOG: usize = 1 << 20;

fn free_space(path: &Path) -> String {
    match crate::fsx::free_bytes(path) {
        Ok(b) => format!("{} MiB free", b >> 20),
        Err(_) => "unknown".into(),
    }
}

/// A plain-text summary of this machine and run.
pub fn machine_summary(root: &Path, state_dir: &Path) -> String {
    let m = crate::detect::this_machine();
    let parent = crate::fsx::parent(root);
    format!(
        "stub: nxs-stub {} for {}\nmachine: {}\nkernel: {}\nplatform accepts: machines {}, Linux {}+\nroot: {} ({} at {})\nstate dir: {} ({})\ninteractive: {}\ntime: {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::bundle::STUB_TARGET,
        m.arch,
        m.kernel,
        crate::detect::MACHINES,
        crate::detect::MIN_KERNEL,
        root.display(),
        free_space(parent),
        parent.display(),
        state_dir.display(),
        free_space(state_dir),
        std::io::stdin().is_terminal(),
        crate::unix_now()
    )
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(crate::unix_now());
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
}

/// Writes the dump and returns its path. Everything in it is read through
/// the state directory's door: regular files only, no link followed, so a
/// planted link cannot copy a foreign file into a dump.
pub fn dump(state: &StateDir, root: &Path, error: &Error) -> Result<PathBuf> {
    let mut b = tar::Builder::new(Vec::new());
    let mut text = format!("error: {}\n", error.msg);
    if let Some(h) = &error.hint {
        text.push_str(&format!("hint: {h}\n"));
    }
    let io = |e: std::io::Error| Error::io("cannot build the diagnostic dump for", state.path(), e);
    add(&mut b, "nxs-diag/error.txt", text.as_bytes()).map_err(io)?;
    add(&mut b, "nxs-diag/machine.txt", machine_summary(root, state.path()).as_bytes()).map_err(io)?;
    if let Ok(Some(cp)) = state.checkpoint_bytes() {
        add(&mut b, "nxs-diag/bootstrap.state", &cp).map_err(io)?;
    }
    if let Ok(Some(logs)) = state.sub_existing("logs") {
        for name in logs.names().unwrap_or_default() {
            // Only the tail of each log; anything not a regular file is
            // named in the dump instead of read.
            let data = match logs.open_file(&name, crate::door::Access::ReadOwn) {
                Ok(Some(f)) => tail(f),
                Ok(None) => continue,
                Err(e) => format!("(not read: {})\n", e.msg).into_bytes(),
            };
            add(&mut b, &format!("nxs-diag/logs/{name}"), &data).map_err(io)?;
        }
    }
    let bytes = b.into_inner().map_err(io)?;
    let dir = state.sub("diag")?;
    let name = format!("nxs-diag-{}.tar", crate::unix_now());
    dir.write_atomic(&name, &bytes, 0o600)?;
    Ok(dir.join(&name))
}

/// The last [`MAX_LOG`] bytes of a log.
fn tail(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG as u64)));
    let mut data = Vec::new();
    let _ = f.take(MAX_LOG as u64).read_to_end(&mut data);
    data
}

/// On an interactive terminal only, offers a shell in the logs directory
/// (manual mode). Never offered to scripts, CI or a pipe.
pub fn offer_shell(state: &StateDir) {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return;
    }
    let Ok(logs) = state.sub("logs") else { return };
    eprint!("Start an emergency shell in {} to look around? [y/N] ", logs.path().display());
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y") {
        let shell = std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into());
        let _ = std::process::Command::new(shell).current_dir(logs.path()).status();
    }
}

//! The diagnostic dump and the emergency shell: what an operator gets when
//! an install fails. The dump is one tar file under `<state-dir>/diag/`
//! holding the error, the checkpoint, the hook logs and a machine summary;
//! its path is printed. It holds no secret: none passes through the stub's
//! logs or checkpoint.

use crate::error::{Error, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Largest part of one log kept in a dump (its tail).
const MAX_LOG: usize = 1 << 20;

fn free_space(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return "?".into() };
    // SAFETY: statvfs fills a caller-owned struct from a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    format!("{} MiB free", (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 20)
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

/// Writes the dump and returns its path.
pub fn dump(state_dir: &Path, root: &Path, error: &Error) -> Result<PathBuf> {
    let mut b = tar::Builder::new(Vec::new());
    let mut text = format!("error: {}\n", error.msg);
    if let Some(h) = &error.hint {
        text.push_str(&format!("hint: {h}\n"));
    }
    let io = |e: std::io::Error| Error::io("cannot build the diagnostic dump for", state_dir, e);
    add(&mut b, "nxs-diag/error.txt", text.as_bytes()).map_err(io)?;
    add(&mut b, "nxs-diag/machine.txt", machine_summary(root, state_dir).as_bytes()).map_err(io)?;
    if let Ok(cp) = std::fs::read(state_dir.join(crate::install::CHECKPOINT_FILE)) {
        add(&mut b, "nxs-diag/bootstrap.state", &cp).map_err(io)?;
    }
    if let Ok(entries) = std::fs::read_dir(state_dir.join("logs")) {
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            if let Ok(data) = std::fs::read(&p) {
                let tail = &data[data.len().saturating_sub(MAX_LOG)..];
                let name = format!("nxs-diag/logs/{}", p.file_name().unwrap_or_default().to_string_lossy());
                add(&mut b, &name, tail).map_err(io)?;
            }
        }
    }
    let bytes = b.into_inner().map_err(io)?;
    let dir = state_dir.join("diag");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let path = dir.join(format!("nxs-diag-{}.tar", crate::unix_now()));
    crate::fsx::write_atomic(&path, &bytes, 0o600)?;
    Ok(path)
}

/// On an interactive terminal only, offers a shell in the logs directory
/// (manual mode). Never offered to scripts, CI or a pipe.
pub fn offer_shell(state_dir: &Path) {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return;
    }
    let logs = state_dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    eprint!("Start an emergency shell in {} to look around? [y/N] ", logs.display());
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_ok() && answer.trim().eq_ignore_ascii_case("y") {
        let shell = std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into());
        let _ = std::process::Command::new(shell).current_dir(&logs).status();
    }
}

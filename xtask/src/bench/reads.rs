//! Bytes read from the bundle by an install, counted by strace: a whole
//! install, and the rerun after a kill half-way through the payload.

use super::*;

/// `bundle install` into `root` and `state`, quiet, its output dropped.
pub(super) fn install_cmd(bundle: &Path, root: &Path, state: &Path) -> Command {
    let mut c = Command::new(bundle);
    c.arg("install").arg("--root").arg(root).arg("--state-dir").arg(state).arg("--quiet");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Runs `cmd` under strace and adds up what every read, pread and readv of
/// `file` returned, by any thread: the bytes a run takes from the medium.
/// The tests measure with it too.
pub fn reads_of(file: &Path, cmd: &Command) -> Result<(std::process::Output, u64)> {
    let log = tempfile::NamedTempFile::new()?;
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-y", "-e", "trace=read,pread64,readv,preadv,preadv2", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    let out = traced.output().context("cannot run strace")?;
    let name = format!("<{}>", file.canonicalize()?.display());
    let n = std::fs::read_to_string(log.path())?
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.rsplit_once(" = ")?.1.split(' ').next()?.parse::<u64>().ok())
        .sum();
    Ok((out, n))
}

/// Bytes of `bundle` an install reads (see [`reads_of`]).
pub(super) fn bundle_reads(bundle: &Path, root: &Path, state: &Path) -> Result<u64> {
    let (out, n) = reads_of(bundle, &install_cmd(bundle, root, state))?;
    if !out.status.success() {
        bail!("the install under strace failed ({})", out.status);
    }
    Ok(n)
}

/// Starts an install of `bundle` and kills it (SIGKILL) once it has read
/// half of the bundle's bytes (`rchar` in /proc/PID/io, polled). False if
/// it ended first (a corpus too small to catch it half-way).
pub(super) fn kill_half_way(bundle: &Path, root: &Path, state: &Path) -> Result<bool> {
    let half = std::fs::metadata(bundle)?.len() / 2;
    let mut child = install_cmd(bundle, root, state).spawn()?;
    let io = format!("/proc/{}/io", child.id());
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        let read = std::fs::read_to_string(&io)
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("rchar: ")?.trim().parse::<u64>().ok()))
            .unwrap_or(0);
        if read >= half {
            child.kill()?;
            child.wait()?;
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

//! The service that keeps `tailscaled` running: the hostname, the tun
//! choice, its argv and environment, and a systemd unit or a supervisor
//! script.

use super::*;

/// The machine's hostname put into the spec's template, as a DNS label.
pub fn hostname(template: &str) -> String {
    let node = crate::detect::nodename();
    let raw = template.replace("{hostname}", &node).to_ascii_lowercase();
    let mut label: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    label.truncate(63);
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "nxs".into()
    } else {
        label
    }
}

/// True if the kernel offers a TUN device we may open.
fn have_tun() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").is_ok()
}

/// `tailscaled`'s `--tun`, from the spec's choice and whether this machine
/// offers `/dev/net/tun`. An open `/dev/net/tun` does not mean a TUN device
/// can be made (that needs CAP_NET_ADMIN, which containers lack), so
/// `auto` gives the real daemon its own fallback list: it tries each name
/// in turn (tailscale v1.102.3 `cmd/tailscaled/tailscaled.go`, `createEngine`,
/// 752-767; since v1.6.0).
pub(super) fn tun_flag(choice: Userspace, have_tun: bool) -> Option<&'static str> {
    match (choice, have_tun) {
        (Userspace::Always, _) | (Userspace::Auto, false) => Some("--tun=userspace-networking"),
        (Userspace::Auto, true) => Some("--tun=tailscale0,userspace-networking"),
        (Userspace::Never, _) => None,
    }
}

/// `tailscaled`'s argv.
fn daemon_argv(p: &Paths, hs: &Headscale, client: &TailscaleClient, root: &Path) -> Vec<String> {
    let mut argv = vec![
        root.join(client.tailscaled.as_str()).display().to_string(),
        format!("--state={}", p.state.display()),
        format!("--statedir={}", p.dir.display()),
        format!("--socket={}", p.socket.display()),
        // No log upload to Tailscale's servers: an air-gapped site has no
        // route there, and a self-hosted one wants none.
        "--no-logs-no-support".into(),
    ];
    if let Some(tun) = tun_flag(hs.userspace, have_tun()) {
        argv.push(tun.into());
    }
    argv
}

/// The environment `tailscaled` runs with: a CA for the login server, if
/// the bundle carries one, and nothing of ours.
pub(super) fn daemon_env(hs: &Headscale, root: &Path) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), "/usr/sbin:/usr/bin:/sbin:/bin".to_string())];
    if let Some(ca) = &hs.ca_cert {
        env.push(("SSL_CERT_FILE".into(), root.join(ca.as_str()).display().to_string()));
    }
    env
}

/// Single-quotes for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(super) fn supervisor_script(argv: &[String], env: &[(String, String)], pid_file: &Path) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Written by nxs-survival: keeps tailscaled running, restarting it if it exits.\nexec </dev/null\n",
    );
    // The supervisor names itself, so that it can be stopped even if the
    // run that started it was killed before it could write this.
    let pid = sh_quote(&pid_file.display().to_string());
    s.push_str(&format!("echo $$ > {pid}.tmp && mv -f {pid}.tmp {pid}\n"));
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    let cmd: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    s.push_str(&format!(
        "while :; do\n  {}\n  echo \"nxs: tailscaled exited with status $?; restarting in 2 s\" >&2\n  sleep 2\ndone\n",
        cmd.join(" ")
    ));
    s
}

pub(super) fn systemd_unit(argv: &[String], env: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Written by nxs-survival.\n[Unit]\nDescription=Tailscale node agent for nxs-survival (Headscale)\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\n",
    );
    for (k, v) in env {
        s.push_str(&format!("Environment=\"{k}={}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")));
    }
    let cmd: Vec<String> =
        argv.iter().map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    s.push_str(&format!(
        "ExecStart={}\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n",
        cmd.join(" ")
    ));
    s
}

/// How `tailscaled` is kept running: systemd where it runs the machine,
/// else a supervising shell loop. `NXS_INIT=systemd|script` overrides.
fn use_systemd() -> bool {
    match std::env::var("NXS_INIT").as_deref() {
        Ok("systemd") => true,
        Ok("script") => false,
        _ => Path::new("/run/systemd/system").is_dir(),
    }
}

fn daemon_answers(p: &Paths) -> bool {
    std::os::unix::net::UnixStream::connect(&p.socket).is_ok()
}

/// Writes the service definition and makes sure `tailscaled` runs with it:
/// started if not running, restarted if its definition changed.
pub fn ensure_daemon(p: &Paths, hs: &Headscale, client: &TailscaleClient, root: &Path) -> Result<()> {
    let argv = daemon_argv(p, hs, client, root);
    let env = daemon_env(hs, root);
    if use_systemd() {
        let unit = systemd_unit(&argv, &env);
        let changed = p.read_small(UNIT_FILE).is_none_or(|old| old != unit);
        p.tailnet.write_atomic(UNIT_FILE, unit.as_bytes(), 0o644)?;
        let name = format!("{UNIT}.service");
        let unit_path = p.unit.display().to_string();
        let verb = if changed || !daemon_answers(p) { "restart" } else { "start" };
        for args in [vec!["link", "--force", unit_path.as_str()], vec!["enable", &name], vec![verb, &name]] {
            let done = crate::child::run_logged(
                Command::new("systemctl").args(&args).env_clear().envs(env.iter().take(1).cloned()),
                "systemctl",
                p.log(DAEMON_LOG)?,
                Duration::from_secs(60),
                false,
                false,
            )?;
            if done.status != 0 {
                return Err(Error::new(Class::Io, format!("systemctl {} exited {}", args.join(" "), done.status))
                    .hint(format!("see {} and `journalctl -u {name}`", p.daemon_log.display())));
            }
        }
    } else {
        let script = supervisor_script(&argv, &env, &p.pid);
        let changed = p.read_small(SCRIPT).is_none_or(|old| old != script);
        if !changed && daemon_answers(p) {
            return Ok(());
        }
        stop_supervisor(p);
        p.tailnet.write_atomic(SCRIPT, script.as_bytes(), 0o700)?;
        let log = p.log(DAEMON_LOG)?;
        let err = log.try_clone().map_err(|e| Error::io("cannot open", &p.daemon_log, e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(&p.script)
            .env_clear()
            .envs(env.iter().take(1).cloned())
            .current_dir(&p.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; the supervisor leaves our
        // session so that it outlives this run.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        let child = cmd.spawn().map_err(|e| Error::io("cannot start the tailscaled supervisor", &p.script, e))?;
        p.tailnet.write_atomic(PID, format!("{}\n", child.id()).as_bytes(), 0o600)?;
        eprintln!("  started tailscaled under a supervisor (pid {}), log in {}", child.id(), p.daemon_log.display());
        // The supervisor is reaped by init once we exit.
        std::mem::forget(child);
    }
    let until = Instant::now() + DAEMON_START;
    while !daemon_answers(p) {
        if Instant::now() >= until {
            return Err(Error::new(
                Class::Io,
                format!("tailscaled did not open {} within {} s", p.socket.display(), DAEMON_START.as_secs()),
            )
            .hint(format!("see {}", p.daemon_log.display())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops a supervisor this state directory started, and its tailscaled.
pub fn stop_supervisor(p: &Paths) {
    let Some(pid) = p.read_small(PID).and_then(|s| s.trim().parse::<i32>().ok()) else { return };
    if pid > 1 {
        // SAFETY: signals the process group the supervisor leads.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while unsafe { libc::kill(-pid, 0) } == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = p.tailnet.remove_file(PID);
}

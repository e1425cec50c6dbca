//! The tailnet join's effects. CONFIGURING starts the client and joins,
//! VALIDATING checks the node; [`crate::join::step`] decides each next
//! step, and this carries it out and says what it saw. A join that cannot
//! happen yet never fails the install: it leaves it DEGRADED with the join
//! pending, for a later run.

use super::Run;
use crate::error::{Class, Error, Result};
use crate::join::{self, Action, JoinState, Login, Observation};
use crate::tailnet::{self, JoinFailure, Paths};
use nxs_format::{Headscale, TailscaleClient};

impl Run<'_> {
    fn client(&self) -> Option<(Headscale, TailscaleClient)> {
        let hs = self.bundle.as_ref()?.manifest.headscale.clone()?;
        let client = hs.client.clone()?;
        Some((hs, client))
    }

    pub(super) fn probe_login_server(&mut self) {
        let Some((hs, _)) = self.client() else { return };
        let r = tailnet::probe(&hs.login_server, self.opts.probe_timeout);
        match &r {
            Ok(()) => eprintln!("  login server {}: reachable", hs.login_server),
            Err(why) => eprintln!("  login server {}: not reachable ({why}); the join will wait", hs.login_server),
        }
        self.reachable = Some(r);
    }

    fn join_record(&self) -> nxs_format::checkpoint::Join {
        self.checkpoint.join.clone().unwrap_or(nxs_format::checkpoint::Join {
            joined: false,
            attempts: 0,
            reason: None,
        })
    }

    fn set_join(&mut self, j: nxs_format::checkpoint::Join) -> Result<()> {
        self.checkpoint.join = Some(j);
        self.save_quiet()
    }

    /// Stashes the key the operator gave, or asks for one on a terminal
    /// ([`join::should_prompt`]).
    fn take_key(&mut self, p: &Paths, joined: bool) -> Result<()> {
        if let Some(k) = self.key.take() {
            tailnet::stash_key(p, &k)?;
            eprintln!("  auth key kept in {} (0600) until the join succeeds", p.key.display());
        } else if join::should_prompt(p.key_present()?, joined, self.reachable.as_ref()) {
            if let Some(k) = tailnet::prompt_key()? {
                tailnet::stash_key(p, &k)?;
            }
        }
        Ok(())
    }

    /// CONFIGURING's join: the machine of [`crate::join`], carried out.
    pub(super) fn join(&mut self) -> Result<()> {
        let Some((hs, client)) = self.client() else { return Ok(()) };
        let p = Paths::new(&self.sd)?;
        let record = self.join_record();
        self.take_key(&p, record.joined)?;
        let mut s = JoinState::new(record, self.opts.join_attempts, self.reachable.clone(), &hs.tags);
        let mut action = join::step(&mut s, Observation::Begin);
        loop {
            let seen = match action {
                Action::StartDaemon => self.start_daemon(&p, &hs, &client, s.record.joined)?,
                Action::AskKey => Observation::Key(p.key_present()?),
                Action::Probe { after, attempt, of } => {
                    if !after.is_zero() {
                        eprintln!("  join attempt {attempt} of {of} in {} s", after.as_secs());
                        std::thread::sleep(after);
                    }
                    self.probe_login_server();
                    Observation::Reachable(self.reachable.clone().unwrap_or(Ok(())))
                }
                Action::Up { reauth } => Observation::Up(self.up(&p, &hs, &client, reauth)?),
                Action::DropKey => {
                    tailnet::forget_key(&p)?;
                    break;
                }
                Action::Done => break,
            };
            action = join::step(&mut s, seen);
        }
        self.joined_now = s.joined_now;
        self.set_join(s.record)
    }

    /// Starts the daemon, then asks it where it is logged in. A run killed
    /// after `tailscale up` succeeded, but before it could say so, left the
    /// daemon logged in (it keeps its state): the machine does not spend
    /// the key again on it.
    fn start_daemon(&self, p: &Paths, hs: &Headscale, client: &TailscaleClient, joined: bool) -> Result<Observation> {
        crate::fault::effect("tailnet-daemon")?;
        if let Err(e) = tailnet::ensure_daemon(p, hs, client, &self.layout.root) {
            eprintln!("  tailscaled: {}", e.msg);
            return Ok(Observation::DaemonDown(e.msg));
        }
        let root = &self.layout.root;
        let login = match tailnet::settled_status(p, client, root) {
            Ok(s) if s.backend_state == "Running" => match tailnet::control_url(p, client, root) {
                Ok(url) if tailnet::same_server(&url, &hs.login_server) => Login::Ours,
                Ok(url) => Login::Elsewhere(url),
                Err(why) => Login::Unknown(why),
            },
            _ => Login::NotRunning,
        };
        match &login {
            Login::Ours if !joined => {
                eprintln!("  tailscaled is already logged in: the join went through in an earlier run")
            }
            Login::Elsewhere(url) => {
                eprintln!("  tailscaled is logged in to {url}, not to {}: joining again", hs.login_server)
            }
            Login::Unknown(why) => eprintln!("  tailscaled's login server is unknown ({why}): joining again"),
            _ => {}
        }
        if joined && login != Login::Ours {
            eprintln!("  the node was joined, but tailscaled is not running on {}: joining again", hs.login_server);
        }
        Ok(Observation::Login(login))
    }

    /// One `tailscale up`. When it only says it waited, the client's health
    /// knows why.
    fn up(
        &self,
        p: &Paths,
        hs: &Headscale,
        client: &TailscaleClient,
        reauth: bool,
    ) -> Result<std::result::Result<(), JoinFailure>> {
        crate::fault::effect("tailnet-up")?;
        eprintln!("  joining {} as {}", hs.login_server, tailnet::hostname(&hs.hostname));
        let root = &self.layout.root;
        let failure = match tailnet::up(p, hs, client, root, self.opts.up_timeout, reauth)? {
            Ok(()) => return Ok(Ok(())),
            Err(JoinFailure::Timeout(said)) => match tailnet::status(p, client, root) {
                Ok(st) => match st.last_login_error() {
                    Some(m) => tailnet::classify_server(m),
                    None if st.health.is_empty() => JoinFailure::Timeout(said),
                    None => JoinFailure::Timeout(format!("{said}; health: {}", st.health.join("; "))),
                },
                Err(_) => JoinFailure::Timeout(said),
            },
            Err(f) => f,
        };
        if !matches!(failure, JoinFailure::KeyRejected(_)) {
            eprintln!("  {}", failure.reason());
        }
        Ok(Err(failure))
    }

    /// `None` if the node is on the tailnet (or the bundle has no client);
    /// else the DEGRADED error that says why the join is pending.
    pub(super) fn validate_join(&mut self) -> Result<Option<Error>> {
        let Some((hs, client)) = self.client() else { return Ok(None) };
        let p = Paths::new(&self.sd)?;
        let mut j = self.join_record();
        if self.joined_now || j.joined {
            // Running and online, and on our login server: a node on
            // another one is not joined to ours.
            let server = |s: &tailnet::NodeStatus| match s.backend_state == "Running" && s.online {
                true => Some(tailnet::control_url(&p, &client, &self.layout.root)),
                false => None,
            };
            match tailnet::settled_status(&p, &client, &self.layout.root) {
                Ok(s) => match server(&s) {
                    Some(Ok(url)) if tailnet::same_server(&url, &hs.login_server) => {
                        eprintln!(
                            "  tailnet: joined {} as {} (BackendState Running, online; tailscale {})",
                            hs.login_server,
                            if s.ips.is_empty() { "(no address yet)".to_string() } else { s.ips.join(", ") },
                            s.version
                        );
                        // Registered: the key is spent, whatever the relay says.
                        j.joined = true;
                        j.reason = None;
                        let relay = tailnet::relay_check(&p, &hs, &client, &self.layout.root);
                        if let Err(why) = &relay {
                            j.reason = Some(why.clone());
                        }
                        self.set_join(j)?;
                        crate::fault::effect("tailnet-forget-key")?;
                        tailnet::forget_key(&p)?;
                        return Ok(relay.err().map(|why| {
                            Error::new(Class::Degraded, format!("installed and on the tailnet, but {why}")).hint(
                                "peers are reachable only directly; an air-gapped Headscale must serve its embedded DERP relay (derp.server.enabled: true, with an https server_url and a stun_listen_addr; see docs/HEADSCALE.md). Run install again once it does: it checks the relay again without extracting",
                            )
                        }));
                    }
                    Some(Ok(url)) => {
                        j.joined = false;
                        j.reason = Some(format!("the node runs on the login server {url}, not on {}", hs.login_server))
                    }
                    Some(Err(why)) => {
                        j.joined = false;
                        j.reason = Some(format!("the node's login server is unknown: {why}"))
                    }
                    None => {
                        j.joined = false;
                        j.reason = Some(format!(
                            "tailscale status says BackendState {}, {}",
                            if s.backend_state.is_empty() { "(none)" } else { &s.backend_state },
                            if s.online { "online" } else { "offline" }
                        ))
                    }
                },
                Err(why) => {
                    j.joined = false;
                    j.reason = Some(why)
                }
            }
        }
        let reason = j.reason.clone().unwrap_or_else(|| "the join has not happened yet".into());
        self.set_join(j)?;
        Ok(Some(
            Error::new(Class::Degraded, format!("installed, but the tailnet join is pending: {reason}")).hint(
                "the instance works locally; run install again when the login server is reachable and you have a key: it resumes the join without extracting again",
            ),
        ))
    }
}

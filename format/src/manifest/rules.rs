//! The rules the manifest's Headscale lines follow, as the real client and
//! server check them: tags, `tailscale up` flags, the login server's URL.
//! The bundler applies the same functions to the spec.

/// Flags the stub sets itself, or that would carry a secret: never allowed
/// among a spec's extra `up` flags. Since tailscale 1.84 a flag given twice
/// is an error ("flag provided multiple times"), so a spec flag the stub
/// also sets (`--reset`, `--timeout`) would make every `up` fail.
/// `--advertise-tags` is here because Headscale 0.28 and later refuse a
/// registration with a pre-auth key that asks for tags
/// (juanfont/headscale v0.29.2 `hscontrol/state/state.go` 1825-1829): the
/// tags come from the key.
pub const RESERVED_UP_FLAGS: &[&str] =
    &["auth-key", "authkey", "login-server", "hostname", "advertise-tags", "socket", "json", "reset", "timeout"];

/// Why a list of extra `up` flags is refused as a whole: a flag named
/// twice (tailscale 1.84 and later exit 2 on it).
pub fn up_flags_problem(flags: &[String]) -> Option<String> {
    let name = |f: &str| f.trim_start_matches('-').split('=').next().unwrap_or("").to_string();
    let mut seen = std::collections::BTreeSet::new();
    flags
        .iter()
        .map(|f| name(f))
        .find(|n| !seen.insert(n.clone()))
        .map(|n| format!("`--{n}` is given twice; tailscale 1.84 and later refuse a repeated flag"))
}

/// Why a Headscale tag is refused, if it is: the client's own rule
/// (tailscale v1.102.3 `tailcfg/tailcfg.go`, `CheckTag`): `tag:`, then an
/// ASCII letter, then ASCII letters, digits and `-` only.
pub fn tag_problem(tag: &str) -> Option<String> {
    let Some(body) = tag.strip_prefix("tag:") else {
        return Some(format!("tag `{tag}`: a tag starts with `tag:`"));
    };
    let mut b = body.bytes();
    match b.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return Some(format!("tag `{tag}`: the name after `tag:` starts with a letter")),
    }
    if !b.all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return Some(format!("tag `{tag}`: only letters, digits and `-` may follow `tag:`, as the client checks"));
    }
    None
}

/// Why an extra `tailscale up` flag is refused, if it is.
pub fn up_flag_problem(flag: &str) -> Option<String> {
    let Some(body) = flag.strip_prefix("--") else {
        return Some(format!("`{flag}`: extra up flags are long flags, `--name` or `--name=value`"));
    };
    let name = body.split('=').next().unwrap_or("");
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some(format!("`{flag}`: a flag name is lowercase letters, digits and dashes"));
    }
    if RESERVED_UP_FLAGS.contains(&name) {
        return Some(format!("`--{name}` is set by the stub itself (the auth key never travels in a bundle)"));
    }
    None
}

/// A login server URL, split for the reachability probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl ServerUrl {
    /// Accepts `http://` and `https://` URLs with a host, an optional port
    /// and an optional path; nothing with credentials, a query or spaces.
    pub fn parse(url: &str) -> Result<ServerUrl, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}`: the login server is an http:// or https:// URL"));
        };
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) || rest.contains(['?', '#', '@']) {
            return Err(format!("`{url}`: no spaces, credentials, query or fragment in the login server URL"));
        }
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("`{url}`: bad port `{p}`"))?,
            None if https => 443,
            None => 80,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        Ok(ServerUrl { https, host: host.to_string(), port })
    }
}

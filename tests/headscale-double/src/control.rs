//! The control plane inside the Noise tunnel: HTTP/2 `POST /machine/register`
//! and the streaming `POST /machine/map`, with Headscale v0.29.2's rules.
//!
//! Sources, at those tags: tailscale `control/controlclient/direct.go`
//! (what the client sends and reads), `tailcfg/tailcfg.go` (the JSON);
//! headscale `hscontrol/noise.go`, `hscontrol/auth.go`,
//! `hscontrol/state/state.go`, `hscontrol/types/preauth_key.go`,
//! `hscontrol/poll.go`, `hscontrol/mapper/` (the rules and the answers).
//!
//! What it leaves out: interactive (web) login (a node without a key gets
//! its `AuthURL`, and nothing serves it), OIDC, policies (every node
//! may reach every other, Headscale's default without a policy), routes,
//! peers (each node's map lists none) and live map updates.

use crate::db::{self, Lookup};
use crate::{hex, Derp, Io, Server};
use bytes::Bytes;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// The owner of every tagged node (headscale `hscontrol/types/users.go`
/// 34-47).
const TAGGED_DEVICES_ID: u64 = 2147455555;
/// The owner of a key made without tags: the one user of this double.
const USER_ID: u64 = 1;
const USER_NAME: &str = "nxs";
/// `dns.base_domain`.
const BASE_DOMAIN: &str = "tailnet.test";
/// A keepalive every 50 s (poll.go 24, 56: 50 s plus up to 9 s of jitter);
/// the client gives up after 120 s without one (direct.go 882-885).
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(50);
/// Request bodies are capped at 1 MiB (noise.go 77).
const MAX_BODY: usize = 1 << 20;

/// The Noise static key, made on first start and kept under `DIR/noise.key`
/// (a client caches it between its `/key` fetches).
pub fn load_or_make_key(dir: &Path) -> Result<x25519_dalek::StaticSecret, String> {
    let p = dir.join("noise.key");
    match std::fs::read(&p) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            Ok(x25519_dalek::StaticSecret::from(k))
        }
        Ok(_) => Err(format!("{}: not a 32-byte key", p.display())),
        Err(_) => {
            let k = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
            std::fs::write(&p, k.to_bytes()).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(k)
        }
    }
}

/// `GET /key?v=N` (hscontrol/handlers.go 116-129, 192-220): the Noise key
/// for N >= 39, and the zero legacy key.
pub fn key_response(s: &Server, v: Option<&str>) -> (u16, String) {
    let Some(v) = v else { return (400, "capability version must be set\n".into()) };
    let Ok(n) = v.parse::<u32>() else { return (400, "invalid capability version\n".into()) };
    if n < 39 {
        return (200, String::new());
    }
    let public = x25519_dalek::PublicKey::from(&s.noise_key);
    (
        200,
        format!(
            "{{\"legacyPublicKey\":\"mkey:{}\",\"publicKey\":\"mkey:{}\"}}\n",
            "0".repeat(64),
            hex(public.as_bytes())
        ),
    )
}

/// `unsupported client version: v1.78 (109)`; the name is empty for a
/// capability version Headscale's table lacks (capver/capver.go 43-45,
/// capver_generated.go 48-82).
fn unsupported(capver: u16) -> String {
    const TABLE: &[(u16, &str)] = &[
        (32, "v1.24"),
        (41, "v1.30"),
        (46, "v1.32"),
        (51, "v1.34"),
        (56, "v1.36"),
        (58, "v1.38"),
        (61, "v1.40"),
        (62, "v1.42"),
        (63, "v1.44"),
        (65, "v1.46"),
        (68, "v1.48"),
        (74, "v1.50"),
        (79, "v1.52"),
        (82, "v1.56"),
        (85, "v1.58"),
        (87, "v1.60"),
        (88, "v1.62"),
        (90, "v1.64"),
        (95, "v1.66"),
        (97, "v1.68"),
        (102, "v1.70"),
        (104, "v1.72"),
        (106, "v1.74"),
        (109, "v1.78"),
        (113, "v1.80"),
        (115, "v1.82"),
        (116, "v1.84"),
        (123, "v1.86"),
        (125, "v1.88"),
        (130, "v1.90"),
        (131, "v1.92"),
        (133, "v1.96"),
        (138, "v1.98"),
    ];
    let name = TABLE.iter().find(|(c, _)| *c == capver).map(|(_, n)| *n).unwrap_or("");
    format!("unsupported client version: {name} ({capver})")
}

/// After `101`: the handshake, then HTTP/2 until the client goes.
pub async fn serve_noise(s: Arc<Server>, io: Io, rest: Vec<u8>, init: &str) -> Result<(), String> {
    let challenge = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng));
    let early = format!("{{\"nodeKeyChallenge\":\"chalpub:{}\"}}", hex(challenge.as_bytes()));
    let (pipe, version, machine) = match crate::tunnel::upgrade(io, rest, init, &s.noise_key, s.min_capver, early).await
    {
        Ok(t) => t,
        Err(e) if e.starts_with("unsupported client version") => {
            s.log.event("version-refused", &[("error", e)]);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let machine = format!("mkey:{}", hex(&machine));
    s.log.event("noise", &[("machine", machine.clone()), ("capver", version.to_string())]);
    let mut conn = h2::server::handshake(pipe).await.map_err(|e| format!("HTTP/2: {e}"))?;
    while let Some(r) = conn.accept().await {
        let (req, respond) = r.map_err(|e| format!("HTTP/2: {e}"))?;
        let (s, machine) = (s.clone(), machine.clone());
        tokio::spawn(async move {
            if let Err(e) = request(s.clone(), &machine, req, respond).await {
                s.log.event("request-error", &[("machine", machine), ("error", e)]);
            }
        });
    }
    Ok(())
}

type Respond = h2::server::SendResponse<Bytes>;

fn reply(respond: &mut Respond, code: u16, ctype: &str, body: &[u8]) -> Result<(), String> {
    let resp = http::Response::builder().status(code).header("content-type", ctype).body(()).expect("a response");
    let mut send = respond.send_response(resp, body.is_empty()).map_err(|e| e.to_string())?;
    if !body.is_empty() {
        send.send_data(Bytes::copy_from_slice(body), true).map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn request(
    s: Arc<Server>,
    machine: &str,
    req: http::Request<h2::RecvStream>,
    mut respond: Respond,
) -> Result<(), String> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_BODY {
            return reply(&mut respond, 413, "text/plain; charset=utf-8", b"request body too large\n");
        }
    }
    match (method.as_str(), path.as_str()) {
        ("POST", "/machine/register") => {
            let v: Value = match serde_json::from_slice(&data) {
                Ok(v) => v,
                Err(_) => return reply(&mut respond, 400, "text/plain; charset=utf-8", b"invalid request\n"),
            };
            let (code, ctype, out) = register(&s, machine, &v);
            reply(&mut respond, code, ctype, out.as_bytes())
        }
        ("POST", "/machine/map") => {
            let v: Value = match serde_json::from_slice(&data) {
                Ok(v) => v,
                Err(_) => return reply(&mut respond, 500, "text/plain; charset=utf-8", b"internal server error\n"),
            };
            map(&s, machine, &v, respond).await
        }
        // noise.go 183-210: routes Headscale has and does not implement.
        (_, "/machine/whoami" | "/machine/set-dns" | "/machine/set-device-attr" | "/machine/audit-log")
        | (_, "/machine/id-token" | "/machine/feature/query" | "/machine/update-health" | "/machine/c2n") => {
            reply(&mut respond, 501, "text/plain; charset=utf-8", b"Not implemented yet\n")
        }
        _ => reply(&mut respond, 404, "text/plain; charset=utf-8", b"404 page not found\n"),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// `RegisterResponse` (tailcfg.go 1299-1313) as Headscale fills it.
fn register_json(node: Option<&db::Node>, error: &str, expired: bool) -> String {
    let (user, login) = match node {
        Some(n) if !n.tags.is_empty() => (
            json!({"ID": TAGGED_DEVICES_ID, "DisplayName": "Tagged Devices"}),
            json!({"ID": TAGGED_DEVICES_ID, "Provider": "", "LoginName": "tagged-devices", "DisplayName": "Tagged Devices"}),
        ),
        Some(_) => (
            json!({"ID": USER_ID, "DisplayName": USER_NAME}),
            json!({"ID": USER_ID, "Provider": "", "LoginName": USER_NAME, "DisplayName": USER_NAME}),
        ),
        None => {
            (json!({"ID": 0, "DisplayName": ""}), json!({"ID": 0, "Provider": "", "LoginName": "", "DisplayName": ""}))
        }
    };
    let authorized = node.is_some() && error.is_empty() && !expired;
    json!({"User": user, "Login": login, "NodeKeyExpired": expired, "MachineAuthorized": authorized,
           "AuthURL": "", "NodeKeySignature": null, "Error": error})
    .to_string()
        + "\n"
}

/// A DNS label from a hostname, as `dnsname.SanitizeHostname` makes one.
fn given_name(hostname: &str) -> String {
    let mut label: String = hostname
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    label.truncate(63);
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "node".into()
    } else {
        label
    }
}

/// `/machine/register` with a pre-auth key (auth.go 26-144, state.go
/// 2284-2612, types/preauth_key.go 120-145). Every refusal is a 200 whose
/// `Error` the client prints as `backend error: <Error>` (noise.go 756-790).
fn register(s: &Server, machine: &str, req: &Value) -> (u16, &'static str, String) {
    const JSON: &str = "application/json; charset=utf-8";
    let node_key = str_at(req, &["NodeKey"]).to_string();
    let auth_key = str_at(req, &["Auth", "AuthKey"]).to_string();
    let hostname = str_at(req, &["Hostinfo", "Hostname"]).to_string();
    let request_tags: Vec<String> = req
        .pointer("/Hostinfo/RequestTags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let version = req.get("Version").and_then(Value::as_u64).unwrap_or(0) as u16;
    let hostinfo = req.get("Hostinfo").cloned().unwrap_or(Value::Null);
    let outcome = s.db.with(|d| {
        if auth_key.is_empty() {
            // auth.go 66-112: a known node key is the node coming back (a
            // restarted tailscaled); anything else would be a web login,
            // which this double does not offer.
            return match d.nodes.iter().find(|n| n.node_key == node_key) {
                Some(n) if n.machine_key != machine => {
                    (false, (None, "node exists with a different machine key".to_string(), None))
                }
                Some(n) => (false, (Some(n.clone()), String::new(), None)),
                // auth.go 430-462: a web login, which the client offers the
                // user as a URL; this double serves no such page.
                None => (false, (None, String::new(), None)),
            };
        }
        let i = match db::find_key(d, &auth_key) {
            Lookup::Found(i) => i,
            // auth.go 375-377.
            Lookup::NotFound => return (false, (None, "invalid pre auth key".to_string(), None)),
            Lookup::Malformed(m) => return (false, (None, format!("handling register with auth key: {m}"), None)),
        };
        let key = d.keys[i].clone();
        let key_name = format!("{}{}", db::KEY_PREFIX, key.prefix);
        // state.go 2224-2281: a tagged key finds the tagged node of this
        // machine; a user's key that user's node of this machine.
        let existing = d.nodes.iter().position(|n| n.machine_key == machine && n.tags.is_empty() == key.tags.is_empty());
        // state.go 2322-2341: the same node key on an unexpired node skips
        // the key's checks (a container running `up --authkey` again).
        let same = existing.is_some_and(|e| d.nodes[e].node_key == node_key);
        if !same {
            // preauth_key.go 131-142, in this order.
            if key.expiration.is_some_and(|t| t < db::now()) {
                return (false, (None, "authkey expired".to_string(), Some(key_name)));
            }
            if !key.reusable && key.used {
                return (false, (None, "authkey already used".to_string(), Some(key_name)));
            }
        }
        let holder = d.nodes.iter().find(|n| n.node_key == node_key && n.machine_key != machine);
        let idx = match existing {
            Some(e) => {
                if holder.is_some() {
                    let m = "handling register with auth key: node key already in use by another machine";
                    return (false, (None, m.to_string(), Some(key_name)));
                }
                let n = &mut d.nodes[e];
                n.node_key = node_key.clone();
                n.hostname = hostname.clone();
                n.hostinfo = hostinfo.clone();
                e
            }
            None => {
                if holder.is_some() {
                    let m = "handling register with auth key: creating new node: node key already in use by another machine";
                    return (false, (None, m.to_string(), Some(key_name)));
                }
                // state.go 1825-1829: no tags may be asked for with a
                // pre-auth key; Go prints the list as `[a b]`.
                if !request_tags.is_empty() {
                    let m = format!(
                        "handling register with auth key: creating new node: requested tags [{}] are invalid or not permitted",
                        request_tags.join(" ")
                    );
                    return (false, (None, m, Some(key_name)));
                }
                let (ipv4, ipv6) = db::next_ips(d);
                // node_store.go 583-605: a taken name gets -1, -2, ...
                let base = given_name(&hostname);
                let mut name = base.clone();
                let mut k = 0;
                while d.nodes.iter().any(|n| n.given_name == name) {
                    k += 1;
                    name = format!("{base}-{k}");
                }
                let id = d.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
                d.nodes.push(db::Node {
                    id,
                    machine_key: machine.to_string(),
                    node_key: node_key.clone(),
                    disco_key: String::new(),
                    hostname: hostname.clone(),
                    given_name: name,
                    tags: key.tags.clone(),
                    ipv4,
                    ipv6,
                    auth_key_id: key.id,
                    created: db::now(),
                    endpoints: vec![],
                    hostinfo: hostinfo.clone(),
                });
                d.nodes.len() - 1
            }
        };
        // state.go 2488-2493, 1902-1907: a single-use key is spent once.
        if !same {
            let k = &mut d.keys[i];
            if !k.reusable {
                k.used = true;
            }
            k.registrations += 1;
        }
        (true, (Some(d.nodes[idx].clone()), String::new(), Some(key_name)))
    });
    let (node, error, key_name) = match outcome {
        Ok(o) => o,
        Err(e) => return (500, "text/plain; charset=utf-8", format!("{e}\n")),
    };
    if node.is_none() && error.is_empty() {
        let url = format!("{}/register/{}", s.server_url.trim_end_matches('/'), db::random_string(24));
        s.log.event("register-interactive", &[("machine", machine.to_string()), ("auth_url", url.clone())]);
        let mut v: Value = serde_json::from_str(&register_json(None, "", false)).expect("our JSON");
        v["AuthURL"] = url.into();
        return (200, JSON, v.to_string() + "\n");
    }
    let mut fields = vec![("machine", machine.to_string()), ("hostname", hostname.clone())];
    if let Some(k) = key_name {
        fields.push(("key", k));
    }
    if let Some(n) = &node {
        fields.push(("node_id", n.id.to_string()));
        fields.push(("ipv4", n.ipv4.clone()));
        fields.push(("tags", n.tags.join(",")));
    }
    if !error.is_empty() {
        fields.push(("error", error.clone()));
    }
    s.log.event(if error.is_empty() { "registered" } else { "register-refused" }, &fields);
    // noise.go 783-785: the version is checked after the registration.
    if version < s.min_capver {
        return (400, "text/plain; charset=utf-8", unsupported(version) + "\n");
    }
    (200, JSON, register_json(node.as_ref(), &error, false))
}

fn rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The DERP map: the embedded relay on this port, or one nobody serves.
/// Region 999 "headscale" is the embedded server's (derp/server/derp_server.go
/// 73-148); its host and port are `server_url`'s, its STUN port the same
/// number over UDP.
fn derp_map(s: &Server) -> Value {
    let url = s.server_url.split("://").nth(1).unwrap_or("").trim_end_matches('/');
    let (host, port) = match url.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().unwrap_or(443)),
        None => (url.to_string(), 443),
    };
    let (port, stun, name) = match s.derp {
        Derp::Embedded => (port as i64, port as i64, "Headscale Embedded DERP"),
        Derp::Unreachable => (s.dead_port as i64, -1, "Unreachable relay (TEST DOUBLE)"),
    };
    json!({"Regions": {"999": {"RegionID": 999, "RegionCode": "headscale", "RegionName": name,
        "Nodes": [{"Name": "999", "RegionID": 999, "HostName": host, "STUNPort": stun, "DERPPort": port}]}}})
}

/// `tailcfg.Node` for the node itself (types/node.go 1233-1353).
fn node_json(n: &db::Node, capver: u64) -> Value {
    let user = if n.tags.is_empty() { USER_ID } else { TAGGED_DEVICES_ID };
    let addrs = vec![format!("{}/32", n.ipv4), format!("{}/128", n.ipv6)];
    let home = n.hostinfo.pointer("/NetInfo/PreferredDERP").and_then(Value::as_u64).unwrap_or(0);
    json!({
        "ID": n.id, "StableID": n.id.to_string(), "Name": format!("{}.{BASE_DOMAIN}.", n.given_name),
        "User": user, "Key": n.node_key, "KeyExpiry": "0001-01-01T00:00:00Z", "Machine": n.machine_key,
        "DiscoKey": if n.disco_key.is_empty() { format!("discokey:{}", "0".repeat(64)) } else { n.disco_key.clone() },
        "Addresses": addrs, "AllowedIPs": addrs, "Endpoints": n.endpoints, "HomeDERP": home,
        "Hostinfo": n.hostinfo, "Created": rfc3339(n.created), "Cap": capver, "Tags": n.tags,
        "Online": true, "MachineAuthorized": true,
        "CapMap": {"https://tailscale.com/cap/is-admin": [], "https://tailscale.com/cap/ssh": [],
                   "https://tailscale.com/cap/file-sharing": [], "default-auto-update": [false]},
    })
}

/// One message of the map stream: a little-endian u32 length, then the
/// JSON, zstd-compressed when the client asked (poll.go 329-372).
fn map_frame(v: &Value, zstd: bool) -> Bytes {
    let json = v.to_string();
    let body = if zstd { zstd::bulk::compress(json.as_bytes(), 1).expect("in-memory zstd") } else { json.into_bytes() };
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&body);
    Bytes::from(f)
}

/// `/machine/map` (noise.go 708-739, poll.go).
async fn map(s: &Server, machine: &str, req: &Value, mut respond: Respond) -> Result<(), String> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let version = req.get("Version").and_then(Value::as_u64).unwrap_or(0);
    if version < s.min_capver as u64 {
        return reply(&mut respond, 400, TEXT, (unsupported(version as u16) + "\n").as_bytes());
    }
    let node_key = str_at(req, &["NodeKey"]).to_string();
    let stream = req.get("Stream").and_then(Value::as_bool).unwrap_or(false);
    let zstd = str_at(req, &["Compress"]) == "zstd";
    let disco = str_at(req, &["DiscoKey"]).to_string();
    let endpoints: Vec<String> = req
        .get("Endpoints")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let hostinfo = req.get("Hostinfo").cloned();
    let found = s.db.with(|d| match d.nodes.iter_mut().find(|n| n.node_key == node_key) {
        None => (false, Err("node not found\n")),
        Some(n) if n.machine_key != machine => {
            (false, Err("node key in request does not match the one associated with this machine key\n"))
        }
        Some(n) => {
            if !disco.is_empty() {
                n.disco_key = disco.clone();
            }
            if !endpoints.is_empty() {
                n.endpoints = endpoints.clone();
            }
            if let Some(h) = &hostinfo {
                if !h.is_null() {
                    n.hostinfo = h.clone();
                }
            }
            (true, Ok(n.clone()))
        }
    })?;
    let node = match found {
        Ok(n) => n,
        Err(m) => return reply(&mut respond, 404, TEXT, m.as_bytes()),
    };
    if !stream {
        // poll.go 114-140: a "lite" update is stored and answered empty.
        return reply(&mut respond, 200, TEXT, b"");
    }
    let resp = http::Response::builder().status(200).body(()).expect("a response");
    let mut send = respond.send_response(resp, false).map_err(|e| e.to_string())?;
    let server_host = s.server_url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("").to_string();
    let profile = if node.tags.is_empty() {
        json!({"ID": USER_ID, "LoginName": USER_NAME, "DisplayName": USER_NAME})
    } else {
        json!({"ID": TAGGED_DEVICES_ID, "LoginName": "tagged-devices", "DisplayName": "Tagged Devices"})
    };
    let first = json!({
        "Node": node_json(&node, version),
        "DERPMap": derp_map(s),
        "Domain": server_host,
        "DNSConfig": {"Domains": [BASE_DOMAIN], "Proxied": true},
        "PacketFilters": {"base": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]},
        "UserProfiles": [profile],
        "Peers": [],
        "ControlTime": rfc3339(db::now()),
    });
    send.send_data(map_frame(&first, zstd), false).map_err(|e| e.to_string())?;
    s.log.event(
        "map-stream",
        &[("node_id", node.id.to_string()), ("ipv4", node.ipv4.clone()), ("derp", format!("{:?}", s.derp))],
    );
    let keep = json!({"KeepAlive": true});
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEEP_ALIVE) => {
                if send.send_data(map_frame(&keep, zstd), false).is_err() {
                    break;
                }
            }
            r = std::future::poll_fn(|cx| send.poll_reset(cx)) => {
                let _ = r;
                break;
            }
        }
    }
    s.log.event("map-closed", &[("node_id", node.id.to_string())]);
    Ok(())
}

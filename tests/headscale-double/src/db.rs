//! The double's database: pre-auth keys and nodes, one JSON file under
//! `--db DIR`, replaced atomically on every change and shared between the
//! server and the `preauthkeys` commands under an advisory lock.
//!
//! Keys look like Headscale 0.28+'s, `hskey-auth-<12 chars>-<64 chars>`
//! (headscale v0.29.2 `hscontrol/db/preauth_keys.go` 40-44, 125), and only a
//! hash of the secret part is kept, as there (Headscale keeps a bcrypt hash;
//! the double a sha256, which no client can tell apart).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const KEY_PREFIX: &str = "hskey-auth-";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PreAuthKey {
    pub id: u64,
    pub prefix: String,
    pub hash: String,
    pub tags: Vec<String>,
    pub reusable: bool,
    pub ephemeral: bool,
    /// Unix seconds; `None` never expires.
    pub expiration: Option<u64>,
    pub used: bool,
    /// How many registrations this key carried: the tests' proof that no
    /// key was spent twice.
    #[serde(default)]
    pub registrations: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Node {
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    #[serde(default)]
    pub disco_key: String,
    pub hostname: String,
    pub given_name: String,
    pub tags: Vec<String>,
    pub ipv4: String,
    pub ipv6: String,
    pub auth_key_id: u64,
    pub created: u64,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub hostinfo: serde_json::Value,
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Data {
    pub keys: Vec<PreAuthKey>,
    pub nodes: Vec<Node>,
}

pub struct Db {
    dir: PathBuf,
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    crate::hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// URL-safe base64 alphabet characters from the OS's randomness.
pub fn random_string(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| A[(b & 63) as usize] as char).collect()
}

impl Db {
    pub fn open(dir: &Path) -> Result<Db, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Db { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` on the data under the lock, and writes it back if `f`
    /// returns `true` in its first field.
    pub fn with<T>(&self, f: impl FnOnce(&mut Data) -> (bool, T)) -> Result<T, String> {
        use std::os::fd::AsRawFd;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("db.lock"))
            .map_err(|e| format!("db.lock: {e}"))?;
        // SAFETY: flock on a descriptor we hold; released when it closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("db.lock: {}", std::io::Error::last_os_error()));
        }
        let path = self.dir.join("db.json");
        let mut data: Data = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let (changed, out) = f(&mut data);
        if changed {
            let tmp = self.dir.join(format!(".db.json.{}", std::process::id()));
            let bytes = serde_json::to_vec_pretty(&data).expect("plain data");
            std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(out)
    }

    /// `headscale preauthkeys create --tags ... --expiration D [--reusable]
    /// [--ephemeral]`: returns the whole key, shown once.
    pub fn create_key(
        &self,
        tags: &[String],
        expires_in: Option<u64>,
        reusable: bool,
        ephemeral: bool,
    ) -> Result<String, String> {
        // db/preauth_keys.go 85-93: every tag must begin with `tag:`.
        if let Some(t) = tags.iter().find(|t| !t.starts_with("tag:")) {
            return Err(format!("auth-key tag is invalid: '{t}' did not begin with 'tag:'"));
        }
        let mut tags = tags.to_vec();
        tags.sort();
        tags.dedup();
        let prefix = random_string(PREFIX_LEN);
        let secret = random_string(SECRET_LEN);
        let hash = sha256_hex(&secret);
        self.with(|d| {
            let id = d.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            d.keys.push(PreAuthKey {
                id,
                prefix: prefix.clone(),
                hash,
                tags,
                reusable,
                ephemeral,
                expiration: expires_in.map(|s| now() + s),
                used: false,
                registrations: 0,
            });
            (true, ())
        })?;
        Ok(format!("{KEY_PREFIX}{prefix}-{secret}"))
    }
}

/// Why a key was not found, in Headscale v0.29.2's words.
#[derive(Debug)]
pub enum Lookup {
    Found(usize),
    /// `invalid pre auth key` (ErrPreAuthKeyNotFound, hscontrol/auth.go 375-377).
    NotFound,
    /// A malformed `hskey-auth-` key (db/preauth_keys.go 213-264); the
    /// message is wrapped by the caller.
    Malformed(String),
}

/// Finds a key as `findAuthKey` does (db/preauth_keys.go 193-279).
pub fn find_key(d: &Data, key: &str) -> Lookup {
    let Some((_, rest)) = key.split_once(KEY_PREFIX) else {
        // The legacy plaintext form: the double has none of those.
        return Lookup::NotFound;
    };
    if rest.len() < PREFIX_LEN + 1 + SECRET_LEN {
        return Lookup::Malformed(format!(
            "failed to parse auth-key: key too short, expected at least {} chars after prefix, got {}",
            PREFIX_LEN + 1 + SECRET_LEN,
            rest.len()
        ));
    }
    let (prefix, sep, secret) = (&rest[..PREFIX_LEN], rest.as_bytes()[PREFIX_LEN], &rest[PREFIX_LEN + 1..]);
    if sep != b'-' {
        return Lookup::Malformed(format!(
            "failed to parse auth-key: expected separator '-' at position {PREFIX_LEN}, got '{}'",
            sep as char
        ));
    }
    if secret.len() != SECRET_LEN {
        return Lookup::Malformed(format!(
            "failed to parse auth-key: hash length mismatch, expected {SECRET_LEN} chars, got {}",
            secret.len()
        ));
    }
    match d.keys.iter().position(|k| k.prefix == prefix) {
        None => Lookup::NotFound,
        Some(i) if d.keys[i].hash == sha256_hex(secret) => Lookup::Found(i),
        // preauth_keys.go 271-276, with bcrypt's own words.
        Some(_) => Lookup::Malformed(
            "invalid auth key: crypto/bcrypt: hashedPassword is not the hash of the given password".into(),
        ),
    }
}

/// The next free addresses, sequentially from the prefixes' start as
/// Headscale's default allocation does (hscontrol/db/ip.go 94-103, 205-249):
/// the first node gets 100.64.0.1 and fd7a:115c:a1e0::1.
pub fn next_ips(d: &Data) -> (String, String) {
    let used4: Vec<&str> = d.nodes.iter().map(|n| n.ipv4.as_str()).collect();
    let mut n: u32 = 1;
    loop {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + n).to_string();
        // 100.100.100.100 is reserved (ip.go 312-316); far past any test.
        if !used4.contains(&ip.as_str()) {
            return (ip, format!("fd7a:115c:a1e0::{n:x}"));
        }
        n += 1;
    }
}

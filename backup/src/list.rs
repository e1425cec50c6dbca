//! `backup list DIR`: what a stick holds, and which backups can be trusted.
//!
//! Without a key it reads each backup's age header and checks it against
//! the `.sha256` written beside it (bit rot, a half-copied file); with one
//! it decrypts and checks everything, as a restore would, writing nothing.

use crate::archive;
use crate::error::{Class, Error, Result};
use crate::keys::Decrypt;
use crate::{clock, naming};
use nxs_format::{hex, json};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Listed {
    pub path: PathBuf,
    pub name: String,
    pub date: String,
    pub size: u64,
    /// `x25519`, `passphrase`, or None when it is not an age file.
    pub encryption: Option<&'static str>,
    pub source_version: Option<String>,
    pub format: Option<u32>,
    /// `verified`, `checksum-ok`, `unchecked`, or `bad`.
    pub status: &'static str,
    pub reason: Option<String>,
}

fn sidecar_check(path: &Path, name: &str) -> Result<Option<bool>> {
    let Ok(text) = std::fs::read_to_string(naming::sidecar(path)) else { return Ok(None) };
    let want = text.split_whitespace().next().and_then(hex::decode_sha256);
    let named = text.split_whitespace().nth(1) == Some(name);
    let (got, _) = archive::sha256_file(path)?;
    Ok(Some(want == Some(got) && named))
}

pub fn list(dir: &Path, keys: Option<&Decrypt>) -> Result<Vec<Listed>> {
    let all = naming::candidates(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    let mut out = Vec::new();
    for c in all {
        eprintln!("  checking {}", c.name);
        let mut l = Listed {
            date: clock::rfc3339(c.time),
            encryption: archive::peek_kind(&c.path),
            source_version: None,
            format: None,
            status: "unchecked",
            reason: None,
            size: c.size,
            path: c.path.clone(),
            name: c.name.clone(),
        };
        if l.encryption.is_none() {
            l.status = "bad";
            l.reason = Some("not an age file".into());
        } else {
            match sidecar_check(&c.path, &c.name) {
                Ok(Some(true)) => l.status = "checksum-ok",
                Ok(Some(false)) => {
                    l.status = "bad";
                    l.reason = Some(format!("does not match {}", naming::sidecar(&c.path).display()));
                }
                Ok(None) => {}
                Err(e) => {
                    l.status = "bad";
                    l.reason = Some(e.msg);
                }
            }
            if let (Some(k), true) = (keys, l.status != "bad") {
                match archive::open(&c.path, k, None) {
                    Ok(o) => {
                        l.status = "verified";
                        l.format = Some(o.manifest.format);
                        if let Some(t) = clock::parse_rfc3339(&o.manifest.created) {
                            l.date = clock::rfc3339(t);
                        }
                        l.source_version = Some(o.manifest.source_version);
                    }
                    Err(e) if matches!(e.class, Class::Verify | Class::Incompatible) => {
                        l.status = "bad";
                        l.reason = Some(e.msg);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        out.push(l);
    }
    Ok(out)
}

pub fn to_json(dir: &Path, items: &[Listed]) -> String {
    let rows: Vec<String> = items
        .iter()
        .map(|l| {
            format!(
                "{{\"name\":{},\"path\":{},\"date\":{},\"size\":{},\"encryption\":{},\"source_version\":{},\"format\":{},\"status\":{},\"verified\":{},\"reason\":{}}}",
                json::s(&l.name),
                json::s(&l.path.to_string_lossy()),
                json::s(&l.date),
                l.size,
                json::opt(l.encryption),
                json::opt(l.source_version.as_deref()),
                l.format.map(|f| f.to_string()).unwrap_or_else(|| "null".into()),
                json::s(l.status),
                l.status == "verified",
                json::opt(l.reason.as_deref()),
            )
        })
        .collect();
    format!("{{\"dir\":{},\"backups\":[{}]}}", json::s(&dir.to_string_lossy()), rows.join(","))
}

pub fn to_text(items: &[Listed]) -> String {
    let mut s = format!(
        "{:<20}  {:>12}  {:<10}  {:<11}  {:<12}  {}\n",
        "DATE", "SIZE", "SOURCE", "ENCRYPTION", "STATUS", "NAME"
    );
    for l in items {
        s.push_str(&format!(
            "{:<20}  {:>12}  {:<10}  {:<11}  {:<12}  {}\n",
            l.date,
            l.size,
            l.source_version.as_deref().unwrap_or("-"),
            l.encryption.unwrap_or("-"),
            l.status,
            l.name
        ));
        if let Some(r) = &l.reason {
            s.push_str(&format!("    {r}\n"));
        }
    }
    s
}

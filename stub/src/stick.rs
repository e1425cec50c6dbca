//! `stick verify DIR` and `stick repair DIR`: every file of a stick
//! (`cargo xtask stick`) against its signed `SHA256SUMS`, the damaged ones
//! named with their byte ranges, and rebuilt from the stick's parity
//! (`parity/<path>.nxspar`, the `nxs-parity` crate; docs/FORMAT.md, "The
//! stick").
//!
//! # Security
//! The stick is untrusted. `SHA256SUMS` counts only under a signature by a
//! key of this stub's trust (the newest root its own bundle's chain
//! reaches, else the root it embeds); a copy rebuilt from parity counts
//! only once that signature verifies over it. Every other file counts only
//! when its sha256 is the signed one: parity only proposes bytes. Paths
//! come from the signed sums and are plain relative names, opened through
//! [`crate::door::Dir`] without following a link. A repaired file is
//! written under a temporary name, synced, and renamed over the damaged
//! one, which is hashed again just before: a good file is never replaced.

use crate::door::{Access, Dir};
use crate::error::{Class, Error, Result};
use crate::stick_frames::Region;
use nxs_format::trust::PublicKey;
use nxs_format::{hex, json};
use nxs_parity::Parity;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The signed list of the stick's files and its signature.
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.minisig";
/// Where each file's parity is: `parity/<path>.nxspar`.
pub const PARITY_DIR: &str = "parity";
pub const PARITY_EXT: &str = ".nxspar";
/// The largest `SHA256SUMS` (and signature) read.
const MAX_SUMS: u64 = 16 << 20;
/// The largest file read whole to be analysed or repaired: 8 GiB, or
/// 1 GiB where addresses are 32 bits.
const MAX_REPAIR: u64 = if usize::BITS < 64 { 1 << 30 } else { 8 << 30 };

/// What was found of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Ok,
    /// Missing, short, or with other bytes.
    Damaged {
        /// Byte ranges `[start, end)` the damaged blocks cover; empty when
        /// no parity could say.
        ranges: Vec<(u64, u64)>,
        /// Whether the stick's parity can rebuild it, and if not why not.
        repair: std::result::Result<(), String>,
    },
}

/// One file of the stick and its state.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: String,
    pub state: State,
    /// The rebuilt bytes, when found damaged and repairable (kept only for
    /// the sums and their signature, which `repair` writes first).
    rebuilt: Option<Vec<u8>>,
    /// A damaged bundle's or shared part's damaged signed regions (stub,
    /// frames), by the signed manifest's hashes.
    pub regions: Vec<Region>,
}

/// A file's rebuilt bytes and the damaged ranges they replace.
type Rebuilt = Option<(Vec<u8>, Vec<(u64, u64)>)>;
/// The signed list: each path and its sha256.
type Sums = Vec<(String, [u8; 32])>;

/// A check of a whole stick.
pub struct Report {
    pub files: Vec<Found>,
    /// The signed list, as verified (rebuilt from parity if it was damaged).
    sums: Sums,
}

impl Report {
    pub fn damaged(&self) -> impl Iterator<Item = &Found> {
        self.files.iter().filter(|f| f.state != State::Ok)
    }
}

/// One relative path of the sums: plain components only.
fn plain(rel: &str) -> bool {
    !rel.is_empty()
        && rel.len() <= 4096
        && rel.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.bytes().any(|b| b < 0x20))
}

/// The directory holding `rel` inside `top` (`None` for `top` itself) and
/// its last name; `None` when a directory on the way is missing.
fn parent_of(top: &Dir, rel: &str, create: bool) -> Result<Option<(Option<Dir>, String)>> {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts.pop().expect("a plain path has a name").to_string();
    let mut cur: Option<Dir> = None;
    for p in parts {
        match cur.as_ref().unwrap_or(top).subdir_of_anyone(p, create)? {
            Some(next) => cur = Some(next),
            None => return Ok(None),
        }
    }
    Ok(Some((cur, name)))
}

/// The regular file `rel` under `top`, open for reading, and its path.
fn open(top: &Dir, rel: &str) -> Result<Option<(std::fs::File, std::path::PathBuf)>> {
    let Some((sub, name)) = parent_of(top, rel, false)? else { return Ok(None) };
    let d = sub.as_ref().unwrap_or(top);
    Ok(d.open_file(&name, Access::Read)?.map(|f| (f, d.join(&name))))
}

/// A file's bytes, whole (at most `cap`), or `None` if missing.
fn read_all(top: &Dir, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
    let Some((f, path)) = open(top, rel)? else { return Ok(None) };
    let mut v = Vec::new();
    f.take(cap + 1).read_to_end(&mut v).map_err(|e| Error::io("cannot read", &path, e))?;
    if v.len() as u64 > cap {
        return Err(Error::new(Class::Io, format!("{}: larger than {cap} bytes", path.display())));
    }
    Ok(Some(v))
}

/// A file's sha256, read once in 1 MiB pieces, or `None` if missing.
fn hash_file(top: &Dir, rel: &str) -> Result<Option<[u8; 32]>> {
    let Some((mut f, path)) = open(top, rel)? else { return Ok(None) };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("cannot read", &path, e))?;
        if n == 0 {
            return Ok(Some(h.finalize().into()));
        }
        h.update(&buf[..n]);
    }
}

/// `SHA256SUMS` as `sha256sum` writes it: `<64 hex>  <path>` a line.
fn parse_sums(text: &[u8]) -> std::result::Result<Sums, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let mut out: Vec<(String, [u8; 32])> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let (h, p) = line.split_once("  ").ok_or(format!("line {}: not `<sha256>  <path>`", i + 1))?;
        let h = hex::decode_sha256(h).ok_or(format!("line {}: `{h}` is not a sha256", i + 1))?;
        if !plain(p) || out.iter().any(|(q, _)| q == p) {
            return Err(format!("line {}: `{p}` is not a plain relative path listed once", i + 1));
        }
        out.push((p.to_string(), h));
    }
    Ok(out)
}

/// The keys `SHA256SUMS` may be signed by: the newest root this stub's
/// own bundle reaches through its chain, or, when that bundle cannot be
/// read (it may be the damaged file), the root the stub embeds.
fn sums_keys() -> Vec<PublicKey> {
    let own = crate::bundle::self_path()
        .and_then(|p| crate::bundle::Signed::open(&p, &crate::bundle::Trust::Embedded))
        .map(|s| s.trusted().keys.clone());
    own.unwrap_or_else(|_| crate::bundle::embedded_root().map(|r| r.keys).unwrap_or_default())
}

/// The parity of `rel`, read and checked against the signed sha256.
fn parity_of(top: &Dir, rel: &str, want: &[u8; 32]) -> std::result::Result<Parity, String> {
    let at = format!("{PARITY_DIR}/{rel}{PARITY_EXT}");
    let bytes = read_all(top, &at, MAX_REPAIR)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{at} is missing: no parity for it"))?;
    let p = Parity::read(&bytes).map_err(|e| format!("{at}: {e}"))?;
    if &p.header.file_sha256 != want {
        return Err(format!("{at} was made for other bytes than the signed ones"));
    }
    Ok(p)
}

/// A damaged file's ranges and whether it can be rebuilt, and the bytes.
fn analyse(top: &Dir, rel: &str, want: &[u8; 32]) -> Result<(State, Option<Vec<u8>>)> {
    let data = match read_all(top, rel, MAX_REPAIR) {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => return Ok((State::Damaged { ranges: vec![], repair: Err(e.to_string()) }, None)),
    };
    let p = match parity_of(top, rel, want) {
        Ok(p) => p,
        Err(why) => return Ok((State::Damaged { ranges: vec![], repair: Err(why) }, None)),
    };
    let damaged = p.header.damaged(&data);
    let ranges = p.header.ranges(&damaged);
    match p.repair(&data) {
        Ok(b) => Ok((State::Damaged { ranges, repair: Ok(()) }, Some(b))),
        Err(why) => Ok((State::Damaged { ranges, repair: Err(why) }, None)),
    }
}

/// The signed sums, rebuilding the list or its signature from parity when
/// they do not verify as they are; each reported.
fn signed_sums(top: &Dir, keys: &[PublicKey]) -> Result<(Sums, Vec<Found>)> {
    let read = |name: &str| read_all(top, name, MAX_SUMS).map(Option::unwrap_or_default);
    let (sums, sig) = (read(SUMS)?, read(SUMS_SIG)?);
    let verifies = |s: &[u8], g: &[u8]| {
        let g = std::str::from_utf8(g).unwrap_or("");
        keys.iter().any(|k| k.verifies(s, g))
    };
    if verifies(&sums, &sig) {
        let list = parse_sums(&sums).map_err(|e| crate::error::tampered(format!("{SUMS}: {e}")))?;
        let ok = [SUMS, SUMS_SIG].map(|p| Found { path: p.into(), state: State::Ok, rebuilt: None, regions: vec![] });
        return Ok((list, ok.to_vec()));
    }
    // Either may be the damaged one: try each rebuilt from its parity.
    let candidate = |name: &str, have: &[u8]| -> Rebuilt {
        let bytes = read_all(top, &format!("{PARITY_DIR}/{name}{PARITY_EXT}"), MAX_SUMS).ok()??;
        let p = Parity::read(&bytes).ok()?;
        let ranges = p.header.ranges(&p.header.damaged(have));
        p.repair(have).ok().map(|b| (b, ranges))
    };
    let (new_sums, new_sig) = (candidate(SUMS, &sums), candidate(SUMS_SIG, &sig));
    let s = new_sums.as_ref().map(|(b, _)| b.clone()).unwrap_or_else(|| sums.clone());
    let g = new_sig.as_ref().map(|(b, _)| b.clone()).unwrap_or_else(|| sig.clone());
    if !verifies(&s, &g) {
        let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
        return Err(Error::new(
            Class::Verify,
            format!(
                "{}: {SUMS} is not signed by a key this stub trusts ({}), and its parity does not rebuild a copy that is",
                top.path().display(),
                ids.join(", ")
            ),
        )
        .hint("the sums or their parity are damaged beyond repair, or this stick is from another release; `sha256sum -c SHA256SUMS` still names damaged files"));
    }
    let found = |name: &str, have: &[u8], new: Rebuilt| match new {
        Some((b, ranges)) if b != have => {
            let state = State::Damaged { ranges, repair: Ok(()) };
            Found { path: name.into(), state, rebuilt: Some(b), regions: vec![] }
        }
        _ => Found { path: name.into(), state: State::Ok, rebuilt: None, regions: vec![] },
    };
    let list = parse_sums(&s).map_err(|e| crate::error::tampered(format!("{SUMS}: {e}")))?;
    Ok((list, vec![found(SUMS, &sums, new_sums), found(SUMS_SIG, &sig, new_sig)]))
}

/// Checks every file of the stick at `dir`.
pub fn verify(dir: &Path) -> Result<Report> {
    let top = Dir::open(dir)?;
    let (sums, mut files) = signed_sums(&top, &sums_keys())?;
    let mut p = crate::events::Progress::start("stick", sums.len() as u64);
    for (rel, want) in &sums {
        let state = match hash_file(&top, rel)? {
            Some(got) if &got == want => (State::Ok, None),
            _ => analyse(&top, rel, want)?,
        };
        // Only the small files keep their rebuilt bytes; `repair` rebuilds
        // the others again, one at a time.
        files.push(Found { path: rel.clone(), state: state.0, rebuilt: None, regions: vec![] });
        p.add(1);
    }
    p.end();
    let runs: Vec<&str> = sums.iter().map(|(r, _)| r.as_str()).filter(|r| r.ends_with(".run")).collect();
    for f in files.iter_mut().filter(|f| f.state != State::Ok) {
        f.regions = signed_regions(&top, &f.path, &runs)?;
        // Where no parity located the damage, the frames do.
        if let State::Damaged { ranges, .. } = &mut f.state {
            if ranges.is_empty() {
                *ranges = f.regions.iter().map(|r| (r.start, r.end)).collect();
            }
        }
    }
    Ok(Report { files, sums })
}

/// The damaged signed regions of the stick's file `rel` when it is a
/// bundle (by its own manifest, if that is intact) or the shared part (by
/// the manifest of a bundle in `runs` that names it); else none.
fn signed_regions(top: &Dir, rel: &str, runs: &[&str]) -> Result<Vec<Region>> {
    let manifest = |bundle: &str| -> Result<Option<nxs_format::Manifest>> {
        let Some((f, path)) = open(top, bundle)? else { return Ok(None) };
        Ok(crate::stick_frames::manifest_of(f, &path))
    };
    let Some((file, _)) = open(top, rel)? else { return Ok(vec![]) };
    if rel.starts_with("bundles/") && rel.ends_with(".run") {
        return Ok(manifest(rel)?.map(|m| crate::stick_frames::damaged(&file, &m, false)).unwrap_or_default());
    }
    let Some(name) = rel.strip_prefix("bundles/").filter(|n| n.ends_with(".shared")) else { return Ok(vec![]) };
    for run in runs {
        if let Some(m) = manifest(run)?.filter(|m| m.shared.as_ref().is_some_and(|p| p.name == name)) {
            return Ok(crate::stick_frames::damaged(&file, &m, true));
        }
    }
    Ok(vec![])
}

/// Rebuilds every damaged file that parity can, each written under a
/// temporary name, synced and renamed over the damaged one; then checks
/// the stick again.
pub fn repair(dir: &Path) -> Result<(Report, Vec<String>)> {
    let before = verify(dir)?;
    let top = Dir::open(dir)?;
    let mut repaired = Vec::new();
    for f in before.damaged() {
        if !matches!(&f.state, State::Damaged { repair: Ok(()), .. }) {
            continue;
        }
        let bytes = match &f.rebuilt {
            Some(b) => b.clone(),
            None => {
                let want = &before.sums.iter().find(|(p, _)| p == &f.path).expect("listed").1;
                match analyse(&top, &f.path, want)? {
                    (_, Some(b)) => b,
                    (state, None) => {
                        return Err(Error::new(
                            Class::Verify,
                            format!("{}: could be rebuilt a moment ago and not now ({state:?})", f.path),
                        ))
                    }
                }
            }
        };
        let (sub, name) = parent_of(&top, &f.path, true)?.expect("made");
        let d = sub.as_ref().unwrap_or(&top);
        // Never replace a file that is good now.
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        if hash_file(&top, &f.path)? == Some(want) {
            continue;
        }
        // The damaged file's mode is kept; a missing one gets the mode the
        // stick gives it (programs 0755, the rest 0644).
        let mode = match d.lstat(&name)? {
            Some(st) => st.st_mode & 0o777,
            None if name.ends_with(".run") || f.path == "install" => 0o755,
            None => 0o644,
        };
        d.write_atomic(&name, &bytes, mode)?;
        repaired.push(f.path.clone());
    }
    Ok((verify(dir)?, repaired))
}

/// The report as text on stdout, or as one JSON object.
pub fn print(r: &Report, repaired: Option<&[String]>, as_json: bool) {
    let n = r.damaged().count();
    if as_json {
        let items = r.files.iter().map(|f| {
            let o = json::Obj::new().str("path", &f.path);
            match &f.state {
                State::Ok => o.str("state", "ok"),
                State::Damaged { ranges, repair } => {
                    let rs = ranges.iter().map(|(a, b)| format!("[{a},{b}]"));
                    let o = o.str("state", "damaged").array("ranges", rs).raw("repairable", repair.is_ok());
                    let o = match f.regions.is_empty() {
                        true => o,
                        false => o.array("regions", f.regions.iter().map(|r| json::s(&r.name))),
                    };
                    match repair {
                        Ok(()) => o,
                        Err(why) => o.str("why_not", why),
                    }
                }
            }
            .finish()
        });
        let mut top = json::Obj::new().raw("ok", n == 0).raw("damaged", n).array("files", items);
        if let Some(done) = repaired {
            top = top.array("repaired", done.iter().map(|p| json::s(p)));
        }
        println!("{}", top.finish());
        return;
    }
    for f in r.damaged() {
        let State::Damaged { ranges, repair } = &f.state else { continue };
        let at: Vec<String> = ranges.iter().map(|(a, b)| format!("bytes {a}..{b}")).collect();
        let mut at = if at.is_empty() { "its damage is not located".to_string() } else { at.join(", ") };
        if !f.regions.is_empty() {
            let names: Vec<&str> = f.regions.iter().map(|r| r.name.as_str()).collect();
            at = format!("{at} (signed regions damaged: {})", names.join(", "));
        }
        match repair {
            Ok(()) => println!("DAMAGED {}: {at}; the parity can repair it", f.path),
            Err(why) => println!("DAMAGED {}: {at}; NOT repairable: {why}", f.path),
        }
    }
    if let Some(done) = repaired {
        for p in done {
            println!("REPAIRED {p}");
        }
    }
    match n {
        0 => println!("OK: {} files match the signed {SUMS}", r.files.len()),
        _ => println!("{n} of {} files damaged", r.files.len()),
    }
}

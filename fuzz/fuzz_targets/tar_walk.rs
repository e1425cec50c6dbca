//! Differential: the stub's tar grammar (`nxs_stub::tarwalk`, and the
//! extraction walk over it) against the `tar` crate's ordinary reading, the
//! one that honours PAX and GNU extensions. For any bytes taken as a tar
//! stream:
//!
//! - whenever the stub's grammar accepts the whole stream, the `tar` crate
//!   reads the same members: path, type, size, link target, mode, mtime and
//!   the sha256 of the content;
//! - whenever `walk` accepts it against a manifest made of what the `tar`
//!   crate sees, or against a fixed small manifest, the `tar` crate's
//!   members are that manifest's entries.
//!
//! A stream the two read differently is the issue #12 finding: `verify`
//! says OK where stock tar extracts something else.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::{Entry, EntryKind, EntryPath, Manifest};
use nxs_stub::extract::{walk, Progress, Sink};
use nxs_stub::tarwalk::{Kind, TarWalk};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

const MANIFEST: &str = "nxs-manifest 1\nproduct p\nversion 1\ntier t\ntarget x\nmtime 0\ndev 0\n\
stub 0 0000000000000000000000000000000000000000000000000000000000000000\n\
payload 1 0000000000000000000000000000000000000000000000000000000000000000\nframe 1 1\n\
dir 755 d\nfile 644 5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 d/hello\n\
file 755 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 run\nend\n";

/// One member, as a reader saw it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    path: Vec<u8>,
    kind: Kind,
    size: u64,
    link: Vec<u8>,
    mode: u32,
    mtime: u64,
    sha256: [u8; 32],
}

/// The members as the stub's grammar reads them, if it accepts the whole
/// stream (two zero blocks, then only zeros).
fn stub_view(data: &[u8]) -> Option<Vec<Seen>> {
    let mut w = TarWalk::new(data);
    let mut out = Vec::new();
    while let Some(m) = w.next_member().ok()? {
        let mut content = Vec::new();
        (&mut w).read_to_end(&mut content).ok()?;
        assert_eq!(content.len() as u64, m.size, "the walk reads exactly the header's size");
        out.push(Seen {
            path: m.path,
            kind: m.kind,
            size: m.size,
            link: m.link,
            mode: m.mode,
            mtime: m.mtime,
            sha256: Sha256::digest(&content).into(),
        });
    }
    let rest = w.into_inner();
    rest.iter().all(|&b| b == 0).then_some(out)
}

/// The members as the `tar` crate reads them, PAX and GNU extensions
/// honoured; `None` if it fails, or if a member is not a directory,
/// regular file or symbolic link.
fn tar_view(data: &[u8]) -> Option<Vec<Seen>> {
    let mut ar = tar::Archive::new(data);
    let mut out = Vec::new();
    for e in ar.entries().ok()? {
        let mut e = e.ok()?;
        let kind = match e.header().entry_type() {
            tar::EntryType::Regular => Kind::Regular,
            tar::EntryType::Directory => Kind::Directory,
            tar::EntryType::Symlink => Kind::Symlink,
            _ => return None,
        };
        let mut path = e.path_bytes().into_owned();
        if kind == Kind::Directory && path.ends_with(b"/") {
            path.pop();
        }
        let link = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let (mode, mtime, size) = (e.header().mode().ok()?, e.header().mtime().ok()?, e.size());
        let mut content = Vec::new();
        e.read_to_end(&mut content).ok()?;
        if content.len() as u64 != size {
            return None;
        }
        out.push(Seen { path, kind, size, link, mode, mtime, sha256: Sha256::digest(&content).into() });
    }
    Some(out)
}

/// A manifest listing `seen`, with the fixed manifest's other lines.
fn manifest_of(template: &Manifest, seen: &[Seen]) -> Option<Manifest> {
    let mut m = template.clone();
    m.mtime = seen.first().map(|s| s.mtime).unwrap_or(0);
    m.entries.clear();
    for s in seen {
        let path = EntryPath::parse(std::str::from_utf8(&s.path).ok()?).ok()?;
        let kind = match s.kind {
            Kind::Directory => EntryKind::Dir,
            Kind::Regular => EntryKind::File { size: s.size, sha256: s.sha256 },
            Kind::Symlink => EntryKind::Link { target: String::from_utf8(s.link.clone()).ok()? },
        };
        m.entries.push(Entry { path, mode: s.mode, kind });
    }
    Some(m)
}

/// True if `seen` is exactly `m`'s entries.
fn same_as(seen: &[Seen], m: &Manifest) -> bool {
    seen.len() == m.entries.len()
        && seen.iter().zip(&m.entries).all(|(s, e)| {
            s.path == e.path.as_str().as_bytes()
                && s.mode == e.mode
                && s.mtime == m.mtime
                && match &e.kind {
                    EntryKind::Dir => s.kind == Kind::Directory && s.size == 0,
                    EntryKind::Link { target } => s.kind == Kind::Symlink && s.link == target.as_bytes(),
                    EntryKind::File { size, sha256 } => {
                        s.kind == Kind::Regular && s.size == *size && s.sha256 == *sha256
                    }
                }
        })
}

fn accepts(data: &[u8], m: &Manifest) -> bool {
    let mut p = Progress::silent();
    walk(data, m, Path::new("fuzz"), &Sink::Check, &mut p).is_ok()
}

fuzz_target!(|data: &[u8]| {
    static M: OnceLock<Manifest> = OnceLock::new();
    let fixed = M.get_or_init(|| Manifest::parse(MANIFEST.as_bytes()).expect("fixed manifest"));
    let ours = stub_view(data);
    let theirs = tar_view(data);
    if let Some(ours) = &ours {
        assert_eq!(Some(ours), theirs.as_ref(), "the stub's grammar accepts what the tar crate reads otherwise");
    }
    if let Some(m) = theirs.as_deref().and_then(|t| manifest_of(fixed, t)) {
        if accepts(data, &m) {
            assert!(ours.is_some(), "walk accepted a stream its own grammar refuses");
        }
    }
    if accepts(data, fixed) {
        let theirs = theirs.expect("the tar crate reads what the stub accepts");
        assert!(same_as(&theirs, fixed), "walk accepted the fixed manifest, the tar crate reads {theirs:?}");
    }
});

//! Opening a bundle and deciding whether to trust it, in two stages that
//! the types keep apart (as tough's `load_root` and `Repository` do):
//! [`Signed::open`] verifies the manifest's signature and yields a
//! [`Signed`] bundle, which `list` may read; [`Signed::verify`] consumes
//! it, checks the target and the regions, and yields a [`Bundle`], the
//! only kind that can be extracted or installed. The install record has
//! the same two stages: `root::Found` is read unverified, to decide;
//! [`Attested`] has had its signature checked.
//!
//! Order matters: read the trailer, read the manifest and signature into
//! memory, verify the signature over those bytes, parse exactly those bytes,
//! then check the regions the signed manifest describes. Nothing is parsed
//! before it is verified, and nothing verified is read again from disk.

use crate::error::{Class, Error, Result};
use nxs_format::trust::{self, PublicKey, Root, TrustBlock};
use nxs_format::{hex, Manifest, Selection, Trailer, TRAILER_LEN};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/trust_root.rs"));

/// The target triple this stub was built for.
pub const STUB_TARGET: &str = env!("NXS_STUB_TARGET");

/// A bundle whose manifest signature, target and regions have been
/// verified: everything but the per-file hashes and, in format 3, the
/// frames, which are checked as they are read. Only [`Signed::verify`]
/// makes one (`non_exhaustive`: no other crate can).
#[non_exhaustive]
pub struct Bundle {
    pub path: PathBuf,
    pub file: File,
    pub trailer: Trailer,
    pub manifest: Manifest,
    /// The verified manifest bytes, kept for the install record.
    pub manifest_bytes: Vec<u8>,
    /// The signature region's text, kept for the install record: one
    /// minisign signature before format 4, the trust block from 4.
    pub signature: String,
    /// Who signed it, under which root.
    pub trusted: Trusted,
    /// The entries an install or extraction writes: the default tier's,
    /// until [`Bundle::choose_tier`]. The payload is read whole either way.
    pub selection: Selection,
    /// The manifest as that tier sees it ([`Manifest::view`]): what is
    /// sized, compared with an install record and checked in a tree.
    pub view: Manifest,
    /// Format 6: the shared part its `shared-frame`s lie in, opened by
    /// [`Signed::verify`] from beside the bundle or `$NXS_SHARED_DIR`.
    pub shared: Option<File>,
}

/// What the trust check found: the root the manifest's signatures were
/// counted against, and whose they were.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// 0 when trust is one key given from outside (`verify --pubkey
    /// KEY.pub`), under no root.
    pub root_version: u64,
    pub threshold: usize,
    /// Key ids of the distinct keys whose signatures counted.
    pub signers: Vec<String>,
    /// Roots walked past the one this stub embeds.
    pub steps: usize,
    /// The sha256 of that root's exact bytes, for the freeze record.
    pub root_sha256: [u8; 32],
    /// That root's keys: what a stick's `SHA256SUMS` may be signed by.
    pub keys: Vec<PublicKey>,
}

/// A bundle whose manifest signature has been verified, and nothing else:
/// its manifest may be read (`list`), but it cannot be extracted or
/// installed until [`Signed::verify`] has checked its target and regions.
pub struct Signed {
    bundle: Bundle,
}

/// Where the trust comes from.
pub enum Trust<'a> {
    /// The root embedded at build time.
    Embedded,
    /// A file given by the operator (`verify --pubkey`): a minisign public
    /// key, which is trusted as root version 1 with a threshold of 1, or a
    /// root file, from which the bundle's chain is walked.
    PubkeyFile(&'a Path),
}

/// The path of the running executable: the bundle itself.
pub fn self_path() -> Result<PathBuf> {
    std::env::current_exe()
        .or_else(|_| std::env::args_os().next().map(PathBuf::from).ok_or(std::io::ErrorKind::NotFound.into()))
        .map_err(|e| Error::io("cannot find my own executable", Path::new("/proc/self/exe"), e))
}

fn read_at(file: &File, path: &Path, offset: u64, len: u64, region: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        crate::error::tampered(format!(
            "{}: cannot read the {region} at bytes {offset}..{}: {e}",
            path.display(),
            offset + len
        ))
    })?;
    Ok(buf)
}

/// Where a trust check starts.
enum Anchor {
    /// A root and its exact text: the bundle's chain is walked from it.
    Root(Root, String),
    /// One key given from outside (`verify --pubkey KEY.pub`): a manifest
    /// signature by it is enough, whatever chain the bundle carries.
    Key(PublicKey),
}

/// The root this stub embeds.
pub fn embedded_root() -> Result<Root> {
    match anchor(&Trust::Embedded)? {
        Anchor::Root(root, _) => Ok(root),
        Anchor::Key(_) => unreachable!("the embedded trust is a root"),
    }
}

/// Where trust starts.
fn anchor(trust: &Trust) -> Result<Anchor> {
    match trust {
        Trust::Embedded => {
            if TRUST_ROOT.is_empty() {
                return Err(Error::new(Class::Verify, "this stub was built with an empty trust root, so it trusts no signature")
                    .hint("check the bundle with `verify --pubkey FILE` and a published key, or rebuild with `cargo xtask bundle`"));
            }
            let root = Root::parse(TRUST_ROOT.as_bytes()).expect("checked by build.rs");
            Ok(Anchor::Root(root, TRUST_ROOT.to_string()))
        }
        Trust::PubkeyFile(p) => {
            let usage = |why: String| {
                Error::new(Class::Usage, format!("cannot use {} as a trust root: {why}", p.display()))
                    .hint("pass a minisign .pub file, or a root file (`nxs-root 1`)")
            };
            let text = std::fs::read_to_string(p).map_err(|e| usage(e.to_string()))?;
            if text.starts_with("nxs-root ") {
                let root = Root::parse(text.as_bytes()).map_err(|e| usage(e.to_string()))?;
                return Ok(Anchor::Root(root, text));
            }
            let line = trust::key_line(&text).ok_or_else(|| usage("no key line".into()))?;
            Ok(Anchor::Key(PublicKey::parse(line).map_err(usage)?))
        }
    }
}

/// The trailer, from the last [`TRAILER_LEN`] bytes, its lengths checked
/// against the file's.
fn read_trailer(file: &File, path: &Path) -> Result<Trailer> {
    let file_len = file.metadata().map_err(|e| Error::io("cannot stat the bundle", path, e))?.len();
    if file_len < TRAILER_LEN as u64 {
        return Err(crate::error::tampered(format!(
            "{}: trailer: file is only {file_len} bytes (truncated?)",
            path.display()
        )));
    }
    let raw = read_at(file, path, file_len - TRAILER_LEN as u64, TRAILER_LEN as u64, "trailer")?;
    Trailer::decode(raw[..].try_into().unwrap(), file_len).map_err(|e| {
        let err = format!("{}: trailer (last {TRAILER_LEN} bytes): {e}", path.display());
        match e {
            nxs_format::TrailerError::UnsupportedVersion(_) => Error::new(Class::Incompatible, err)
                .hint("this bundle needs a newer stub; use the bundle file built with it"),
            _ => crate::error::tampered(err),
        }
    })
}

/// The signature region's text, and where it lies, for messages.
fn read_signature(file: &File, path: &Path, trailer: &Trailer) -> Result<(String, String)> {
    let sig_bytes = read_at(file, path, trailer.signature_offset(), trailer.signature_len, "signature")?;
    let sig_region = format!(
        "signature at bytes {}..{}",
        trailer.signature_offset(),
        trailer.signature_offset() + trailer.signature_len
    );
    let text = String::from_utf8(sig_bytes)
        .map_err(|_| crate::error::tampered(format!("{}: {sig_region}: not text", path.display())))?;
    Ok((text, sig_region))
}

/// A format 1 to 3 signature region: the four canonical lines of one
/// bundle signature, decoded.
fn single_signature(signature: &str) -> std::result::Result<minisign_verify::Signature, String> {
    // minisign leaves the first line unsigned and tolerates stray
    // white space; the format allows one spelling only.
    let canonical = signature.ends_with('\n')
        && signature.lines().count() == 4
        && !signature.contains('\r')
        && signature.lines().next() == Some(nxs_format::SIGNATURE_FIRST_LINE);
    if !canonical {
        return Err("not the four lines of a bundle signature".into());
    }
    minisign_verify::Signature::decode(signature).map_err(|e| format!("not a minisign signature: {e}"))
}

/// The key id of the trusted key whose signature over `bytes` this is
/// (prehashed only: legacy signatures are refused), or why none is: the
/// one signature of a bundle before format 4.
fn check_signature(
    keys: &[PublicKey],
    bytes: &[u8],
    sig: &minisign_verify::Signature,
) -> std::result::Result<String, String> {
    let mut last = None;
    for k in keys {
        let key = minisign_verify::PublicKey::from_base64(&k.base64).expect("parsed as a minisign key");
        // allow_legacy = false.
        match key.verify(bytes, sig, false) {
            Ok(()) => return Ok(k.id.to_string()),
            Err(e) => last = Some(e),
        }
    }
    let ids: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
    let why = match last {
        Some(minisign_verify::Error::UnexpectedKeyId) => {
            "it was signed by a key that is not in the trust root".to_string()
        }
        Some(minisign_verify::Error::UnexpectedAlgorithm) => {
            "it is a legacy (non-prehashed) signature, which is refused".to_string()
        }
        Some(e) => format!("the signature does not match ({e})"),
        None => "no key to check it with".to_string(),
    };
    Err(format!("signature refused: {why} (trusted keys: {})", ids.join(", ")))
}

/// Checks the manifest's signatures against `anchor`: `region` is the
/// signature region's text (one signature before format 4, the trust
/// block from 4, whose chain is walked from the anchor), `at` where it
/// lies, for messages. docs/TRUST.md gives the rules.
fn check_trust(
    format: u32,
    anchor: &Anchor,
    manifest: &[u8],
    region: &str,
    at: &str,
) -> std::result::Result<Trusted, String> {
    let block =
        if format < 4 { None } else { Some(TrustBlock::parse(region.as_bytes()).map_err(|e| format!("{at}: {e}"))?) };
    let (root, text, signers, steps) = match (anchor, &block) {
        (Anchor::Key(key), _) => {
            let sigs = match &block {
                Some(b) => b.manifest_signatures.clone(),
                None => {
                    single_signature(region).map_err(|why| format!("{at}: {why}"))?;
                    vec![region.to_string()]
                }
            };
            if !sigs.iter().any(|sig| key.verifies(manifest, sig)) {
                return Err(format!("no signature on the manifest is by key {}", key.id));
            }
            // Trust is this one key, under no root: version 0.
            let root = Root { version: 0, ..Root::single(vec![key.clone()]) };
            (root, String::new(), vec![key.id.to_string()], 0)
        }
        (Anchor::Root(anchor, anchor_text), None) => {
            if anchor.threshold > 1 {
                return Err(format!(
                    "a format {format} bundle carries one signature, and root {} needs {}",
                    anchor.version, anchor.threshold
                ));
            }
            let sig = single_signature(region).map_err(|why| format!("{at}: {why}"))?;
            let signer = check_signature(&anchor.keys, manifest, &sig)?;
            (anchor.clone(), anchor_text.clone(), vec![signer], 0)
        }
        (Anchor::Root(anchor, anchor_text), Some(block)) => {
            let walked = trust::walk(anchor, anchor_text, block).map_err(|e| e.0)?;
            let by =
                trust::signed_by(&walked.root, &walked.revoked, manifest, &block.manifest_signatures, "the manifest")
                    .map_err(|e| e.0)?;
            (walked.root, walked.text, by.keys.iter().map(|k| k.to_string()).collect(), walked.steps)
        }
    };
    Ok(Trusted {
        root_version: root.version,
        threshold: root.threshold,
        signers,
        steps,
        root_sha256: Sha256::digest(text.as_bytes()).into(),
        keys: root.keys,
    })
}

impl Signed {
    /// Opens the bundle at `path` and verifies its manifest signature.
    ///
    /// # Security
    /// The file is untrusted. The trailer's lengths are checked against the
    /// file size, the signature against the trust root (prehashed Ed25519
    /// only; legacy signatures are refused), and only then is the manifest
    /// parsed, from the verified bytes. Its stub and payload lengths must
    /// equal the trailer's. Region hashes are checked by [`Signed::verify`].
    pub fn open(path: &Path, trust: &Trust) -> Result<Signed> {
        let file = File::open(path).map_err(|e| Error::io("cannot open the bundle", path, e))?;
        Self::open_file(file, path, trust)
    }

    /// [`Signed::open`] of a bundle already open as `file` (named `path`).
    pub fn open_file(file: File, path: &Path, trust: &Trust) -> Result<Signed> {
        let trailer = read_trailer(&file, path)?;
        let manifest_bytes = read_at(&file, path, trailer.manifest_offset(), trailer.manifest_len, "manifest")?;
        let (signature, sig_region) = read_signature(&file, path, &trailer)?;
        let manifest_region = format!(
            "manifest at bytes {}..{}",
            trailer.manifest_offset(),
            trailer.manifest_offset() + trailer.manifest_len
        );
        let trusted = check_trust(trailer.format_version, &anchor(trust)?, &manifest_bytes, &signature, &sig_region)
            .map_err(|why| {
                crate::error::tampered(format!("{}: {manifest_region}: signature refused: {why}", path.display()))
            })?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| {
            let class = if e.is_unsupported_version() { Class::Incompatible } else { Class::Verify };
            Error::new(class, format!("{}: {manifest_region}: {e}", path.display()))
        })?;
        if (manifest.format >= 4 || trailer.format_version >= 4) && manifest.format != trailer.format_version {
            return Err(crate::error::tampered(format!(
                "{}: the trailer says format {}, the signed manifest says {}",
                path.display(),
                trailer.format_version,
                manifest.format
            )));
        }
        if manifest.stub.len != trailer.stub_len || manifest.payload.len != trailer.payload_len {
            return Err(crate::error::tampered(format!(
                "{}: trailer says stub {} bytes and payload {} bytes, the signed manifest says {} and {}",
                path.display(),
                trailer.stub_len,
                trailer.payload_len,
                manifest.stub.len,
                manifest.payload.len
            )));
        }
        let selection = manifest.select(None).map_err(crate::error::tampered)?;
        let view = manifest.view(&selection);
        let bundle = Bundle {
            path: path.to_path_buf(),
            file,
            trailer,
            manifest,
            manifest_bytes,
            signature,
            trusted,
            selection,
            view,
            shared: None,
        };
        Ok(Signed { bundle })
    }

    /// Who signed it, under which root.
    pub fn trusted(&self) -> &Trusted {
        &self.bundle.trusted
    }

    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.bundle.manifest
    }

    /// Checks the target and the regions: what turns a signed bundle into
    /// one that may be extracted or installed.
    pub fn verify(mut self) -> Result<Bundle> {
        self.check_target()?;
        self.check_regions()?;
        self.bundle.shared = crate::shared::open(&self.bundle.path, &self.bundle.manifest)?;
        Ok(self.bundle)
    }

    /// Hashes the stub region against the manifest, and the payload region
    /// too in formats 1 and 2. Format 3 signs each frame's hash, and
    /// [`crate::payload::PayloadReader`] checks each frame before it decodes
    /// it: the payload is read once, when it is used.
    fn check_regions(&self) -> Result<()> {
        let b = &self.bundle;
        let t = &b.trailer;
        self.check_region("stub", 0, t.stub_len, &b.manifest.stub.sha256)?;
        if b.manifest.format >= 3 {
            return Ok(());
        }
        self.check_region("payload", t.payload_offset(), t.payload_len, &b.manifest.payload.sha256)
    }

    fn check_region(&self, name: &str, offset: u64, len: u64, want: &[u8; 32]) -> Result<()> {
        let b = &self.bundle;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        // The whole payload of a format 1 or 2 bundle: a phase of its own.
        let mut progress = crate::events::Progress::start_if(name == "payload", "verify", len);
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            b.file.read_exact_at(&mut buf[..n], offset + done).map_err(|e| {
                crate::error::tampered(format!(
                    "{}: {name} at bytes {}..{}: read failed at byte {}: {e}",
                    b.path.display(),
                    offset,
                    offset + len,
                    offset + done
                ))
            })?;
            h.update(&buf[..n]);
            done += n as u64;
            progress.add(n as u64);
        }
        progress.end();
        let got: [u8; 32] = h.finalize().into();
        if &got != want {
            return Err(crate::error::tampered(format!(
                "{}: {name} at bytes {}..{}: sha256 is {}, the signed manifest says {}",
                b.path.display(),
                offset,
                offset + len,
                hex::encode(&got),
                hex::encode(want)
            )));
        }
        Ok(())
    }

    /// Refuses a bundle built for another target than this stub.
    fn check_target(&self) -> Result<()> {
        let b = &self.bundle;
        if b.manifest.target != STUB_TARGET {
            return Err(Error::new(
                Class::Incompatible,
                format!(
                    "{}: the manifest is for {}, but this stub was built for {STUB_TARGET}",
                    b.path.display(),
                    b.manifest.target
                ),
            )
            .hint(format!("use {}-{}-{}-{STUB_TARGET}.run", b.manifest.product, b.manifest.version, b.manifest.tier)));
        }
        Ok(())
    }
}

/// What identifies a bundle's payload, in install records, staging and the
/// checkpoint: the payload's sha256, and from format 6, when some frames
/// lie in a shared part, the sha256 of that and the part's sha256, so two
/// builds that differ only in their shared files never look alike.
pub fn payload_id(m: &Manifest) -> [u8; 32] {
    match &m.shared {
        None => m.payload.sha256,
        Some(p) => Sha256::new().chain_update(m.payload.sha256).chain_update(p.region.sha256).finalize().into(),
    }
}

impl Bundle {
    /// A reader of the payload from frame `first` (0: all of it), which
    /// reads the shared part's frames from the shared part.
    pub fn payload_from(&self, first: usize) -> std::io::Result<crate::payload::PayloadReader<'_>> {
        let r = crate::payload::PayloadReader::from_frame(
            &self.file,
            self.trailer.payload_offset(),
            &self.manifest,
            first,
        )?;
        Ok(r.with_shared(self.shared.as_ref()))
    }

    /// [`Signed::open`], then [`Signed::verify`]: the signature, the
    /// target and the regions.
    pub fn open_verified(path: &Path, trust: &Trust) -> Result<Bundle> {
        Signed::open(path, trust)?.verify()
    }

    /// Takes tier `name` of a multi-tier bundle (`None`: the default), or
    /// refuses a tier it does not hold (exit 2, naming those it does).
    pub fn choose_tier(&mut self, name: Option<&str>) -> Result<()> {
        self.selection = self.manifest.select(name).map_err(|why| {
            Error::usage(format!("{}: {why}", self.path.display())).hint("`list` names the tiers a bundle holds")
        })?;
        self.view = self.manifest.view(&self.selection);
        Ok(())
    }
}

/// The install record's tier file (format 5, multi-tier bundles): the
/// tier installed, a line. Not signed: it only picks among signed tiers.
pub const RECORD_TIER: &str = "tier";

/// An install record's manifest as its install sees it: the tier its
/// `tier` file names (the default without one), or a refusal when that
/// is no tier of the manifest.
pub fn record_view(root: &crate::door::Dir, m: Manifest) -> Result<Manifest> {
    if m.tiers.is_none() {
        return Ok(m);
    }
    let tier = match read_record(root, RECORD_TIER)? {
        Some(b) => {
            Some(String::from_utf8(b).ok().and_then(|t| t.strip_suffix('\n').map(str::to_string)).ok_or_else(|| {
                crate::error::tampered(format!(
                    "{}/{RECORD_TIER}: not a tier name and a newline",
                    root.join(nxs_format::RECORD_DIR).display()
                ))
            })?)
        }
        None => None,
    };
    let sel = m.select(tier.as_deref()).map_err(|why| {
        crate::error::tampered(format!("{}/{RECORD_TIER}: {why}", root.join(nxs_format::RECORD_DIR).display()))
    })?;
    Ok(m.view(&sel))
}

/// The install record of a root whose signature has been checked against
/// the trust root this stub carries: what `check` and the installed
/// nxs-backup trust. Only [`installed_record`] makes one
/// (`non_exhaustive`: no other crate can).
#[non_exhaustive]
pub struct Attested {
    pub manifest: Manifest,
    pub trusted: Trusted,
}

/// The install record's signature file before format 4.
pub const RECORD_SIGNATURE: &str = "manifest.minisig";
/// The install record's trust block from format 4.
pub const RECORD_TRUST: &str = "manifest.trust";

/// The largest install record file read.
const MAX_RECORD: u64 = 256 << 20;

/// A file of the install record in the root held open as `root`: read
/// beneath it, through no link, at most [`MAX_RECORD`] bytes.
pub fn read_record(root: &crate::door::Dir, name: &str) -> Result<Option<Vec<u8>>> {
    root.read_beneath(&format!("{}/{name}", nxs_format::RECORD_DIR), MAX_RECORD)
}

/// The signed record of the install in `root`, verified against the trust
/// root this stub carries.
pub fn installed_record(root: &Path) -> Result<Attested> {
    let rec = root.join(nxs_format::RECORD_DIR);
    // Read beneath the root, through no link (crate::door).
    let dir = crate::door::Dir::open(root)?;
    let read = |name: &str| -> Result<Vec<u8>> {
        read_record(&dir, name)?.ok_or_else(|| {
            let p = rec.join(name);
            Error::io("cannot read the install record", &p, std::io::ErrorKind::NotFound.into())
        })
    };
    let bytes = read("manifest")?;
    // From format 4 the record keeps the trust block as RECORD_TRUST;
    // before, the one signature as RECORD_SIGNATURE.
    let (name, format) = match read_record(&dir, RECORD_TRUST)? {
        Some(_) => (RECORD_TRUST, 4),
        None => (RECORD_SIGNATURE, 3),
    };
    let sig_text = String::from_utf8(read(name)?)
        .map_err(|_| crate::error::tampered(format!("{}: not text", rec.join(name).display())))?;
    let at = rec.join(name).display().to_string();
    let trusted = check_trust(format, &anchor(&Trust::Embedded)?, &bytes, &sig_text, &at).map_err(|why| {
        crate::error::tampered(format!("{}: the install record's signature is refused: {why}", rec.display()))
    })?;
    let manifest = Manifest::parse(&bytes)
        .map_err(|e| crate::error::tampered(format!("{}: {e}", rec.join("manifest").display())))?;
    if (manifest.format >= 4) != (format >= 4) {
        return Err(crate::error::tampered(format!(
            "{}: {name} does not go with a format {} manifest",
            rec.display(),
            manifest.format
        )));
    }
    let manifest = record_view(&dir, manifest)?;
    Ok(Attested { manifest, trusted })
}

//! The nxs-survival on-disk format, shared by the bundler (which writes it)
//! and the stub (which reads it from untrusted media).
//!
//! A bundle is one file: `stub | payload | manifest | signature | trailer`.
//! See `docs/FORMAT.md` for the byte layout and the versioning rules.
//!
//! Architecture invariant: this crate does no I/O. Its dependencies are
//! `unicode-normalization` (the NFC/NFD tables the name rule needs),
//! `minisign-verify` (the root chain's signatures, [`trust`]) and
//! `base64` (minisign keys). It turns bytes into typed values and back,
//! and refuses anything else.

pub mod backup;
pub mod checkpoint;
pub mod exit;
pub mod hex;
pub mod json;
pub mod manifest;
pub mod path;
pub mod state;
pub mod trailer;
pub mod trust;
pub mod version;

pub use manifest::{
    Entry, EntryKind, FirstMember, Frame, Headscale, Hook, HookStage, Manifest, ManifestError, Region, Selection,
    ServerUrl, SharedPart, TailscaleClient, Tiers, Userspace,
};
pub use path::{EntryPath, PathError};
pub use trailer::{Trailer, TrailerError, TRAILER_LEN};
pub use version::Version;

/// The bundle format version this code writes. A reader refuses a bundle
/// whose trailer or manifest names a newer one (exit 4, incompatible).
/// Version 2 added the Headscale client lines to the manifest; version 3
/// each frame's sha256 and its first member; version 4 the trust block
/// (a root chain and k-of-n manifest signatures, [`trust`]) in place of
/// the single signature; version 5 bundles that hold several tiers, each
/// entry naming the tiers it belongs to ([`manifest::Tiers`]); version 6
/// frames kept in a shared part beside the bundle ([`SharedPart`]).
pub const FORMAT_VERSION: u32 = 6;
/// The oldest format version this code still reads: install records and
/// bundles written by earlier releases.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The first line of the signature embedded in a bundle, exactly. minisign
/// signs nothing of this line, so the format fixes it: a bundle whose line
/// differs is refused, and no byte of a bundle goes unchecked.
pub const SIGNATURE_FIRST_LINE: &str = "untrusted comment: signature from nxs-bundle secret key";

/// The directory inside an install root that holds the install's own record
/// (the verified manifest and its signature). Bundles may not carry it.
pub const RECORD_DIR: &str = ".nxs-bundle";

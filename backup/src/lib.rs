//! nxs-backup: encrypted backups of an NXS state directory, and their
//! restore on a machine that may never see a network.
//!
//! A backup is `age(zstd(tar))`: the tar's first member is a manifest
//! (`NXS-BACKUP`) with every file's path, size and mode, and the source
//! version; the state directory follows under `state/`, and the last
//! member, `NXS-SUMS`, holds every file's sha256 as `sha256sum` writes it
//! (backup format 2; format 1 had them in the manifest). The stock `age`,
//! `zstd`, `tar` and `sha256sum` open and check it (docs/FORMAT.md,
//! "Backups").
//!
//! This program travels in the bundle's payload (`bin/nxs-backup`), built
//! for every platform as the stub is; `BUNDLE.run backup|restore` runs it
//! once the bundle and it have been verified. It is not inside the stub:
//! the age crate alone is larger than the stub's whole budget.

pub mod archive;
pub mod clock;
pub mod create;
pub mod error;
pub mod fault;
pub mod keys;
pub mod list;
pub mod lock;
/// The backup manifest is the format crate's (`nxs_format::backup`).
pub use nxs_format::backup as manifest;
pub mod naming;
pub mod pipe;
pub mod restore;
pub mod rotate;

/// sha256 as an `io::Write`, for `io::copy` (sha2 0.11 has no std impl).
pub struct HashSink(pub sha2::Sha256);

impl std::io::Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

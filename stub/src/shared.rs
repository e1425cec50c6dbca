//! A stick's shared part (format 6, docs/FORMAT.md "The shared part"):
//! the file beside a stick's bundles that holds the frames of the files
//! every platform shares. This finds and opens it; its frames are checked
//! by [`crate::payload::PayloadReader`] as the payload's are.

use crate::error::{Class, Error, Result};
use nxs_format::Manifest;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a bundle looks for its shared part when it is not beside it.
pub const SHARED_DIR_ENV: &str = "NXS_SHARED_DIR";

/// Format 6: opens the shared part the manifest names, from the
/// bundle's own directory or else `$NXS_SHARED_DIR` (where the stick's
/// launcher points when it runs a copy of the bundle). Only its length
/// is checked here: each of its frames is checked against its signed
/// hash when it is read, as the payload's are.
/// `bundle` is the bundle's path, `manifest` its signed manifest.
pub fn open(bundle: &Path, manifest: &Manifest) -> Result<Option<File>> {
    let Some(part) = &manifest.shared else { return Ok(None) };
    let beside = bundle.parent().map(Path::to_path_buf).unwrap_or_default();
    let env = std::env::var_os(SHARED_DIR_ENV).map(PathBuf::from);
    for dir in std::iter::once(&beside).chain(env.as_ref()) {
        let path = dir.join(&part.name);
        // The name is a plain file name (the parser checks it); a link
        // there is not followed, and a FIFO does not block the open. The
        // first one found is used: a damaged one is refused, not passed
        // over for another.
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let f = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot open the bundle's shared part", &path, e)),
        };
        let meta = f.metadata().map_err(|e| Error::io("cannot read the shared part's size", &path, e))?;
        if !meta.is_file() {
            return Err(crate::error::tampered(format!("{}: the shared part is not a regular file", path.display()))
                .hint("the shared part is a plain file beside the bundles"));
        }
        if meta.len() != part.region.len {
            return Err(crate::error::tampered(format!(
                "{}: the shared part is {} bytes, the signed manifest of {} says {}",
                path.display(),
                meta.len(),
                bundle.display(),
                part.region.len
            ))
            .hint("`stick verify DIR` says which file of the stick is damaged, `stick repair DIR` rebuilds it"));
        }
        return Ok(Some(f));
    }
    let frames = manifest.frames.iter().filter(|f| f.shared).count();
    Err(Error::new(
        Class::Verify,
        format!(
            "{}: {frames} of its {} payload frames are in the shared part `{}` ({} bytes), which is not in {}{}",
            bundle.display(),
            manifest.frames.len(),
            part.name,
            part.region.len,
            beside.display(),
            env.map(|d| format!(" nor in {} (${SHARED_DIR_ENV})", d.display())).unwrap_or_default()
        ),
    )
    .hint(format!(
        "run the bundle from the stick's bundles/ directory or through the stick's ./install, or set {SHARED_DIR_ENV} to the directory that holds {}",
        part.name
    )))
}

#[cfg(test)]
mod tests {
    use crate::bundle::payload_id;
    use nxs_format::{Region, SharedPart};

    #[test]
    fn the_payload_id_covers_the_shared_part_when_there_is_one() {
        let mut m = crate::test_manifest(vec![], Region { len: 0, sha256: [1; 32] }, vec![]);
        assert_eq!(payload_id(&m), [1; 32], "without a part: the payload's sha256, as before format 6");
        m.shared = Some(SharedPart { name: "p.shared".into(), region: Region { len: 9, sha256: [2; 32] } });
        let a = payload_id(&m);
        m.shared.as_mut().unwrap().region.sha256 = [3; 32];
        assert!(a != [1; 32] && a != payload_id(&m), "another part, another id");
    }
}

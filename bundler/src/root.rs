//! Root chains on disk, for release engineers (docs/TRUST.md): make the
//! first root, rotate to the next, sign a root offline one key at a time,
//! and check a chain as a stub will.
//!
//! A root is a file (`roots/root-2`, say) with one signature file per
//! signer beside it, `<root file>.<KEY ID>.minisig`: ordinary minisign
//! signatures, so `minisign -Vm roots/root-2 -x roots/root-2.<ID>.minisig
//! -p key.pub` checks each one.

use crate::sign::{public_key_file, SigningKey};
use anyhow::{bail, Context, Result};
use nxs_format::trust::{signed_by, walk, KeyId, Root, SignedRoot, TrustBlock, Walked};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The trusted comment signed with a root: `minisign -V` prints it.
pub fn root_comment(root: &Root) -> String {
    format!("nxs-root {}", root.version)
}

/// Where the signature of `root_file` by key `id` lives.
pub fn signature_path(root_file: &Path, id: &KeyId) -> PathBuf {
    PathBuf::from(format!("{}.{id}.minisig", root_file.display()))
}

/// A root file and every signature beside it, in key-id order.
pub fn read_root(path: &Path) -> Result<SignedRoot> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read root {}", path.display()))?;
    let root = Root::parse(text.as_bytes()).with_context(|| format!("root {}", path.display()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("a root file has a name")?.to_string_lossy().to_string();
    let mut sigs: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let f = e.file_name().to_string_lossy().to_string();
        let id = f.strip_prefix(&format!("{name}.")).and_then(|r| r.strip_suffix(".minisig"));
        if id.is_some_and(|id| KeyId::parse(id).is_some()) {
            let sig =
                std::fs::read_to_string(e.path()).with_context(|| format!("cannot read {}", e.path().display()))?;
            sigs.push((f, sig));
        }
    }
    sigs.sort();
    Ok(SignedRoot { text, root, signatures: sigs.into_iter().map(|(_, s)| s).collect() })
}

/// The public keys in `.pub` files, refusing one listed twice.
fn keys_of(files: &[PathBuf]) -> Result<Vec<nxs_format::trust::PublicKey>> {
    let mut keys: Vec<nxs_format::trust::PublicKey> = Vec::new();
    for f in files {
        let k = public_key_file(f)?;
        if keys.iter().any(|o| o.id == k.id) {
            bail!("{}: key {} is given twice", f.display(), k.id);
        }
        keys.push(k);
    }
    Ok(keys)
}

/// Checks a root by its own rules, through the parser.
fn checked(root: Root) -> Result<Root> {
    Root::parse(root.to_text().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Root version 1: `threshold` of `keys`.
pub fn init(threshold: usize, keys: &[PathBuf]) -> Result<Root> {
    checked(Root { version: 1, threshold, keys: keys_of(keys)?, revoked: Vec::new() })
}

/// The root after `from`: `threshold` of `keys`, revoking `revoke` (key
/// ids) on top of what `from` revoked.
pub fn rotate(from: &Root, threshold: usize, keys: &[PathBuf], revoke: &[KeyId]) -> Result<Root> {
    let mut revoked = from.revoked.clone();
    for id in revoke {
        if !revoked.contains(id) {
            revoked.push(*id);
        }
    }
    let version = from.version.checked_add(1).context("root version overflows")?;
    checked(Root { version, threshold, keys: keys_of(keys)?, revoked })
}

/// Writes a root file (refusing to replace one).
pub fn write_root(root: &Root, path: &Path) -> Result<()> {
    if path.exists() {
        bail!("{} exists; a root is never rewritten (its signatures are over its bytes)", path.display());
    }
    crate::fsutil::write_atomic(path, root.to_text().as_bytes(), 0o644)
}

/// Signs the root file at `path` with `key`, beside it; returns the
/// signature's path.
pub fn sign_root(path: &Path, key: &SigningKey) -> Result<PathBuf> {
    let signed = read_root(path)?;
    let sig = key.sign(signed.text.as_bytes(), &root_comment(&signed.root))?;
    key.check(signed.text.as_bytes(), &sig)?;
    let out = signature_path(path, &key.public().id);
    crate::fsutil::write_atomic(&out, sig.as_bytes(), 0o644)?;
    Ok(out)
}

/// Checks a chain of roots, oldest first, as a stub embedding the first
/// would: the first must carry its own threshold of its own signatures
/// (nothing else vouches for it), then each step is walked.
pub fn verify_chain(chain: &[SignedRoot]) -> Result<Walked> {
    let first = chain.first().context("no root given")?;
    signed_by(
        &first.root,
        &first.root.revoked.iter().copied().collect::<BTreeSet<_>>(),
        first.text.as_bytes(),
        &first.signatures,
        &format!("root {}", first.root.version),
    )?;
    let block = TrustBlock { roots: chain.to_vec(), manifest_signatures: Vec::new() };
    Ok(walk(&first.root, &first.text, &block)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::keygen;

    struct Keys {
        _dir: tempfile::TempDir,
        dir: PathBuf,
        pubs: Vec<PathBuf>,
        secrets: Vec<SigningKey>,
    }

    fn keys(n: usize) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let (mut pubs, mut secrets) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (sk, pk) = keygen(&dir.path().join(format!("k{i}")), None, false).unwrap();
            pubs.push(pk);
            secrets.push(SigningKey::load(&sk, None).unwrap());
        }
        Keys { dir: dir.path().to_path_buf(), _dir: dir, pubs, secrets }
    }

    fn signed(root: &Root, by: &[&SigningKey]) -> SignedRoot {
        let text = root.to_text();
        let signatures = by.iter().map(|k| k.sign(text.as_bytes(), &root_comment(root)).unwrap()).collect();
        SignedRoot { text, root: root.clone(), signatures }
    }

    /// k0,k1,k2 (2 of 3) -> k1,k2,k3 -> k2,k3,k4: one key out per step.
    fn chain(k: &Keys) -> Vec<SignedRoot> {
        let s = &k.secrets;
        let v1 = init(2, &k.pubs[0..3]).unwrap();
        let v2 = rotate(&v1, 2, &k.pubs[1..4], &[]).unwrap();
        let v3 = rotate(&v2, 2, &k.pubs[2..5], &[s[1].public().id]).unwrap();
        vec![signed(&v1, &[&s[0], &s[1]]), signed(&v2, &[&s[0], &s[1], &s[3]]), signed(&v3, &[&s[1], &s[2], &s[4]])]
    }

    fn refusal(chain: &[SignedRoot]) -> String {
        verify_chain(chain).expect_err("refused").to_string()
    }

    #[test]
    fn a_rotated_chain_walks_and_each_rule_refuses() {
        let k = keys(5);
        let s = &k.secrets;
        let good = chain(&k);
        let w = verify_chain(&good).unwrap();
        assert_eq!((w.root.version, w.steps), (3, 2));
        assert!(w.revoked.contains(&s[1].public().id));

        // A chain missing v2.
        let e = refusal(&[good[0].clone(), good[2].clone()]);
        assert!(e.contains("root 3 follows root 1"), "{e}");
        // v3 signed by one old key only (k1 is revoked by v3 itself, k2 counts).
        let mut one_old = good.clone();
        one_old[2] = signed(&good[2].root, &[&s[2], &s[4]]);
        let e = refusal(&one_old);
        assert!(e.contains("step 2 -> 3") && e.contains("1 valid signature from keys of root 2, which needs 2"), "{e}");
        // The same key twice toward a threshold.
        let mut twice = good.clone();
        twice[1] = signed(&good[1].root, &[&s[0], &s[0], &s[3], &s[3]]);
        let e = refusal(&twice);
        assert!(e.contains("again, and a key counts once") && e.contains("needs 2"), "{e}");
        // A version that repeats, with good signatures.
        let v2_again = signed(&rotate(&good[0].root, 2, &k.pubs[1..4], &[]).unwrap(), &[&s[0], &s[1], &s[2]]);
        let e = refusal(&[good[0].clone(), good[1].clone(), v2_again]);
        assert!(e.contains("root 2 follows root 2"), "{e}");
        // A revoked key may not come back.
        let mut back = good[2].root.clone();
        back.version = 4;
        back.revoked.clear();
        back.keys = keys_of(&[k.pubs[1].clone(), k.pubs[2].clone()]).unwrap();
        back.revoked = good[2].root.revoked.clone();
        assert!(checked(back.clone()).is_err(), "the parser itself refuses listed-and-revoked");
        back.revoked.clear();
        let e = refusal(&[good[0].clone(), good[1].clone(), good[2].clone(), signed(&back, &[&s[2], &s[4], &s[1]])]);
        assert!(e.contains("which an earlier root revoked"), "{e}");
        // An unsigned first root vouches for nothing.
        let e = refusal(&[signed(&good[0].root, &[&s[0]])]);
        assert!(e.contains("needs 2"), "{e}");
    }

    #[test]
    fn the_walk_stops_after_1024_steps() {
        let k = keys(1);
        let key = &k.secrets[0];
        let mut root = init(1, &k.pubs).unwrap();
        let mut long = vec![signed(&root, &[key])];
        for _ in 0..1025 {
            root.version += 1;
            long.push(signed(&root, &[key]));
        }
        let e = refusal(&long);
        assert!(e.contains("1025 roots past root 1; at most 1024"), "{e}");
        long.pop();
        assert_eq!(verify_chain(&long).unwrap().steps, 1024);
    }

    #[test]
    fn signatures_are_files_beside_the_root() {
        let k = keys(3);
        let path = k.dir.join("root-1");
        write_root(&init(2, &k.pubs).unwrap(), &path).unwrap();
        assert!(write_root(&init(2, &k.pubs).unwrap(), &path).is_err(), "never rewritten");
        for s in &k.secrets[..2] {
            let p = sign_root(&path, s).unwrap();
            assert_eq!(p, signature_path(&path, &s.public().id));
        }
        let r = read_root(&path).unwrap();
        assert_eq!(r.signatures.len(), 2);
        assert_eq!(verify_chain(&[r]).unwrap().root.version, 1);
    }
}

//! Key material, named as the age CLI names it: recipients (`age1...`) and
//! recipients files to encrypt, identity files to decrypt, or a passphrase
//! read from a file (never from argv).

use crate::error::{Error, Result};
use age::secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How a backup is encrypted.
pub enum Encrypt {
    Recipients(Vec<age::x25519::Recipient>),
    Passphrase(SecretString),
}

/// How a backup is opened.
pub enum Decrypt {
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
    Passphrase(SecretString),
}

fn read(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(&format!("cannot read the {what}"), path, e))?;
    String::from_utf8(bytes).map_err(|_| Error::usage(format!("{}: the {what} is not text", path.display())))
}

/// The first line of a passphrase file, without its line ending.
pub fn passphrase(path: &Path) -> Result<SecretString> {
    let text = read(path, "passphrase file")?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(Error::usage(format!("{}: the passphrase file's first line is empty", path.display())));
    }
    Ok(SecretString::from(line.to_string()))
}

pub fn recipient(s: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        Error::usage(format!("`{}` is not an age X25519 recipient: {e}", s.trim()))
            .hint("a recipient starts with age1; `age-keygen -y KEYFILE` prints the one for a key")
    })
}

/// Recipients given inline and in recipients files (one per line, `#` comments).
pub fn encrypt(recipients: &[String], recipients_files: &[PathBuf], passphrase_file: Option<&Path>) -> Result<Encrypt> {
    let mut list = Vec::new();
    for r in recipients {
        list.push(recipient(r)?);
    }
    for f in recipients_files {
        for line in read(f, "recipients file")?.lines() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                list.push(recipient(line).map_err(|e| Error::usage(format!("{}: {}", f.display(), e.msg)))?);
            }
        }
    }
    match (list.is_empty(), passphrase_file) {
        (false, None) => Ok(Encrypt::Recipients(list)),
        (true, Some(p)) => Ok(Encrypt::Passphrase(passphrase(p)?)),
        (false, Some(_)) => Err(Error::usage("give recipients or a passphrase file, not both (as age does)")),
        (true, None) => {
            Err(Error::usage("no key: give --recipient AGE_PUBKEY, --recipients-file F or --passphrase-file F"))
        }
    }
}

pub fn decrypt(identities: &[PathBuf], passphrase_file: Option<&Path>) -> Result<Option<Decrypt>> {
    match (identities.is_empty(), passphrase_file) {
        (true, None) => Ok(None),
        (false, Some(_)) => Err(Error::usage("give identity files or a passphrase file, not both")),
        (true, Some(p)) => Ok(Some(Decrypt::Passphrase(passphrase(p)?))),
        (false, None) => {
            let mut all = Vec::new();
            for f in identities {
                let text = read(f, "identity file")?;
                let ids = age::IdentityFile::from_buffer(text.as_bytes())
                    .and_then(|f| f.into_identities().map_err(|e| std::io::Error::other(e.to_string())))
                    .map_err(|e| {
                        Error::usage(format!("{}: not an age identity file: {e}", f.display()))
                            .hint("an identity file holds AGE-SECRET-KEY-1... lines, as age-keygen writes them")
                    })?;
                if ids.is_empty() {
                    return Err(Error::usage(format!("{}: holds no identity", f.display())));
                }
                all.extend(ids);
            }
            Ok(Some(Decrypt::Identities(all)))
        }
    }
}

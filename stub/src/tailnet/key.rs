//! The auth key's intake: from a file, `$NXS_AUTHKEY_FILE`, an
//! age-encrypted file or the terminal; its short life in
//! `<state-dir>/tailnet/authkey`, and its end.

use super::*;

/// Where the operator said the key is, read before anything is written.
#[derive(Default)]
pub struct KeyInput {
    pub file: Option<PathBuf>,
    pub age: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
}

impl KeyInput {
    pub fn given(&self) -> bool {
        self.file.is_some() || self.age.is_some()
    }

    /// Reads the key from the given sources: `--authkey-file` (or
    /// `NXS_AUTHKEY_FILE`), or `--authkey-age` opened with the passphrase
    /// from `--passphrase-file` or a prompt. `None` if none was given.
    pub fn read(&self) -> Result<Option<Secret>> {
        let refuse = |path: &Path, msg: String| {
            Error::new(Class::Usage, format!("{}: {msg}", path.display()))
                .hint("the auth key file holds one Headscale pre-auth key on one line; see docs/HEADSCALE.md")
        };
        if let Some(f) = &self.file {
            let bytes = read_small(f)?;
            return check_key(Secret::new(bytes)).map(Some).map_err(|m| refuse(f, m));
        }
        let Some(f) = &self.age else { return Ok(None) };
        let bytes = read_small(f)?;
        let passphrase = match &self.passphrase_file {
            Some(p) => {
                let mut pw = Secret::new(read_small(p)?);
                // The first line, without its newline.
                let end = pw.bytes().iter().position(|&b| b == b'\n').unwrap_or(pw.len());
                let line = pw.bytes()[..end].strip_suffix(b"\r").unwrap_or(&pw.bytes()[..end]).to_vec();
                pw.bytes_mut().fill(0);
                Secret::new(line)
            }
            None => match prompt(&format!("Passphrase for {}: ", f.display()))? {
                Some(p) => p,
                None => {
                    return Err(Error::usage(format!("{} is encrypted and no passphrase was given", f.display()))
                        .hint("pass --passphrase-file FILE, or run on a terminal to be asked"))
                }
            },
        };
        let plain = crate::age::decrypt(&bytes, passphrase.bytes()).map_err(|e| {
            let hint = match e {
                crate::age::AgeError::NotPassphrase(_) => {
                    "encrypt the key file with a passphrase: age -p -o authkey.age authkey.txt"
                }
                crate::age::AgeError::WrongPassphrase => "check the passphrase, or the passphrase file's first line",
                _ => "copy the encrypted key file again; see docs/HEADSCALE.md",
            };
            Error::new(Class::Usage, format!("{}: {e}", f.display())).hint(hint)
        })?;
        check_key(plain).map(Some).map_err(|m| refuse(f, format!("decrypted, but {m}")))
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut buf = Vec::new();
    (&mut f)
        .take(crate::age::MAX_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", path, e))?;
    if buf.len() > crate::age::MAX_FILE {
        return Err(Error::new(Class::Usage, format!("{}: too large for a key file", path.display())));
    }
    Ok(buf)
}

/// Trims the line end; a key is one line of printable ASCII. The message
/// never quotes the content.
pub(super) fn check_key(mut raw: Secret) -> std::result::Result<Secret, String> {
    let bytes = raw.bytes();
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| i + 1).unwrap_or(0);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(end);
    let key = &bytes[start..end];
    let problem = if key.is_empty() {
        Some("is empty".to_string())
    } else if key.len() > MAX_KEY {
        Some(format!("holds {} bytes, more than an auth key's {MAX_KEY}", key.len()))
    } else if !key.iter().all(|b| (0x21..0x7f).contains(b)) {
        Some("does not look like an auth key (one line of printable text expected)".to_string())
    } else {
        None
    };
    let out = Secret::new(key.to_vec());
    raw.bytes_mut().fill(0);
    match problem {
        Some(p) => Err(p),
        None => Ok(out),
    }
}

/// Asks on the terminal with echo off. `None` when there is no terminal.
pub fn prompt(question: &str) -> Result<Option<Secret>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut tty = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty") {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: termios calls on an open terminal, with a caller-owned struct.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let _ = tty.write_all(question.as_bytes());
    let mut line = Secret::new(Vec::with_capacity(MAX_KEY + 2));
    let mut byte = [0u8; 1];
    while line.len() <= MAX_KEY {
        match tty.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.extend(&byte),
            _ => break,
        }
    }
    if have_termios {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    Ok(Some(line))
}

/// Prompts for the auth key on a terminal.
pub fn prompt_key() -> Result<Option<Secret>> {
    match prompt("Headscale pre-auth key (input hidden; empty to join later): ")? {
        Some(k) if !k.bytes().iter().all(u8::is_ascii_whitespace) => {
            check_key(k).map(Some).map_err(|m| Error::usage(format!("the key typed {m}")))
        }
        _ => Ok(None),
    }
}

/// Keeps the key for the join, 0600 in a 0700 directory.
pub fn stash_key(p: &Paths, key: &Secret) -> Result<()> {
    let mut bytes = Secret::new(Vec::with_capacity(key.len() + 1));
    bytes.extend(key.bytes());
    bytes.extend(b"\n");
    p.tailnet.write_atomic(KEY, bytes.bytes(), 0o600)
}

/// Removes the stashed key, durably.
pub fn forget_key(p: &Paths) -> Result<()> {
    if p.tailnet.remove_file(KEY)? {
        p.tailnet.sync()?;
    }
    Ok(())
}

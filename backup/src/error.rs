//! One error type: a class that maps to the documented exit code, a message
//! that names the file or path, and a hint. The codes are the stub's
//! (`nxs_format::exit`).

use std::fmt;
use std::path::Path;

/// Exit codes, as documented in README.md: the format crate holds them.
pub use nxs_format::exit::Class;

#[derive(Debug)]
pub struct Error {
    pub class: Class,
    pub msg: String,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(class: Class, msg: impl Into<String>) -> Error {
        Error { class, msg: msg.into(), hint: None }
    }
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(Class::Usage, msg)
    }
    pub fn verify(msg: impl Into<String>) -> Error {
        Error::new(Class::Verify, msg)
    }
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Some("the disk is full: free some space and run it again"),
            Some(libc::EROFS) => Some("the filesystem is read-only"),
            Some(libc::EACCES) | Some(libc::EPERM) => {
                Some("permission denied: run as the owner of the path, or as root")
            }
            _ => None,
        };
        let err = Error::new(Class::Io, format!("{what} {}: {e}", path.display()));
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

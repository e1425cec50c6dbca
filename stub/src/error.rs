//! The stub's one error type: a class that maps to a documented exit code,
//! a message that names the region, path or file, and a hint.

use std::fmt;

/// Exit codes, as documented in README.md: the format crate holds them.
pub use nxs_format::exit::Class;

#[derive(Debug)]
pub struct Error {
    pub class: Class,
    pub msg: String,
    pub hint: Option<String>,
    /// Worth another try after a pause: EBUSY, EAGAIN, EINTR, ETXTBSY.
    pub transient: bool,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(class: Class, msg: impl Into<String>) -> Error {
        Error { class, msg: msg.into(), hint: None, transient: false }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(Class::Usage, msg).hint("run with --help for the commands and their flags")
    }
    pub fn verify(msg: impl Into<String>) -> Error {
        Error::new(Class::Verify, msg)
            .hint("the bundle is damaged or was tampered with; do not run it. Copy it again from a good source and check it with `minisign -V` against the published key")
    }
    /// An I/O failure on `path`, with the OS error.
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(28) => "the filesystem is full: free some space and run again",
            Some(30) => "the filesystem is read-only: choose a writable target",
            Some(13) | Some(1) => "permission denied: run as a user who may write there, or choose another path",
            _ => "check the path and the device, then run again",
        };
        let transient = matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::EINTR | libc::ETXTBSY));
        Error { transient, ..Error::new(Class::Io, format!("{what} {}: {e}", path.display())).hint(hint) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

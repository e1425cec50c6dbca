//! The one error type of the stub and nxs-backup: a class that maps to a
//! documented exit code (`nxs_format::exit`), a message that names the
//! region, path or file, and a hint for the operator.

use std::fmt;
use std::path::Path;

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

    /// A bad command line or an argument that cannot be used (exit 2).
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(Class::Usage, msg).hint("run with --help for the commands and their flags")
    }

    /// Input that failed a check of its integrity (exit 3). The caller
    /// knows what was damaged, and adds the hint.
    pub fn verify(msg: impl Into<String>) -> Error {
        Error::new(Class::Verify, msg)
    }

    /// An I/O failure on `path`, with the OS error and a hint from it.
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => "the filesystem is full: free some space and run again",
            Some(libc::EROFS) => "the filesystem is read-only: choose a writable target",
            Some(libc::EACCES | libc::EPERM) => {
                "permission denied: run as a user who may write there, or choose another path"
            }
            _ => "check the path and the device, then run again",
        };
        let transient = matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::EINTR | libc::ETXTBSY));
        Error { transient, ..Error::new(Class::Io, format!("{what} {}: {e}", path.display())).hint(hint) }
    }

    /// The process exit code of this error's class.
    pub fn exit_code(&self) -> i32 {
        self.class as i32
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<nxs_format::backup::BackupError> for Error {
    fn from(e: nxs_format::backup::BackupError) -> Error {
        Error { class: e.class, msg: e.msg, hint: e.hint, transient: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_os_error_gets_its_hint_and_transience() {
        let cases: &[(i32, &str, bool)] = &[
            (libc::ENOSPC, "full", false),
            (libc::EDQUOT, "full", false),
            (libc::EROFS, "read-only", false),
            (libc::EACCES, "permission denied", false),
            (libc::EPERM, "permission denied", false),
            (libc::EBUSY, "check the path", true),
            (libc::EAGAIN, "check the path", true),
            (libc::EINTR, "check the path", true),
            (libc::ETXTBSY, "check the path", true),
            (libc::ENOENT, "check the path", false),
        ];
        for &(errno, hint, transient) in cases {
            let e = Error::io("cannot write", Path::new("/x"), std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.class, Class::Io);
            assert!(e.msg.starts_with("cannot write /x: "), "{}", e.msg);
            assert!(e.hint.as_deref().unwrap().contains(hint), "errno {errno}: {:?}", e.hint);
            assert_eq!(e.transient, transient, "errno {errno}");
        }
    }
}

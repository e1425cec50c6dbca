//! nxs-backup's errors are `nxs_sys::error`'s, the stub's own: a class
//! that maps to the documented exit code (`nxs_format::exit`), a message
//! that names the file or path, and a hint.

pub use nxs_sys::error::{Class, Error, Result};

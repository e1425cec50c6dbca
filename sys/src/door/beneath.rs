//! Paths deeper than one name below a [`Dir`] (the install record inside
//! a root): `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//! kernel has it (Linux 5.6+), and a walk of `O_NOFOLLOW` opens, one
//! component at a time, where it answers `ENOSYS`.

use super::*;

impl Dir {
    /// Reads the regular file at the relative path `rel`, as
    /// [`open_beneath`](Self::open_beneath) opens it, at most `cap` bytes.
    pub fn read_beneath(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        match self.open_beneath(rel)? {
            Some(f) => read_capped(f, cap, &self.path.join(rel)).map(Some),
            None => Ok(None),
        }
    }

    /// Opens the regular file at the relative path `rel` below this
    /// directory, following no link at any step and never leaving it.
    /// `None` if it is missing.
    pub fn open_beneath(&self, rel: &str) -> Result<Option<File>> {
        let path = self.path.join(rel);
        let c = cstr(rel, &self.path)?;
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
        const RESOLVE_NO_SYMLINKS: u64 = 0x04;
        const RESOLVE_BENEATH: u64 = 0x08;
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 with a valid name and a properly sized `how`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        } as i32;
        let fd = if fd >= 0 {
            fd
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // No openat2 (before Linux 5.6, or filtered): walk.
                Some(libc::ENOSYS) | Some(libc::EPERM) => return self.walk_beneath(rel),
                _ if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => {
                    return Err(Error::new(
                        Class::Io,
                        format!("{}: a link or a non-directory lies on the way there: refusing to follow it", path.display()),
                    )
                    .hint("nxs never reads through a link it did not make; look at what is there, move it away, and run again"))
                }
                _ => return Err(Error::io("cannot open", &path, e)),
            }
        };
        // SAFETY: a fresh descriptor.
        let f = unsafe { File::from_raw_fd(fd) };
        let st = fstat(fd, &path)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(refuse(&path, &st, "regular file"));
        }
        // SAFETY: fcntl on our own descriptor: blocking reads from here on.
        unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
        Ok(Some(f))
    }

    /// [`open_beneath`](Self::open_beneath) without `openat2`: one
    /// `O_NOFOLLOW` open per component.
    pub(super) fn walk_beneath(&self, rel: &str) -> Result<Option<File>> {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let last = parts.pop().unwrap_or("");
        let mut owned: Option<Dir> = None;
        for part in parts {
            if part.is_empty() || part == "." || part == ".." {
                return Err(Error::new(
                    Class::Io,
                    format!("{}: not a plain relative path", self.path.join(rel).display()),
                ));
            }
            let at = owned.as_ref().unwrap_or(self);
            if at.expect_dir(part)?.is_none() {
                return Ok(None);
            }
            let c = cstr(part, &at.path)?;
            // SAFETY: openat relative to an open directory; owned below.
            let fd = unsafe { libc::openat(at.fd(), c.as_ptr(), DIR_FLAGS) };
            if fd < 0 {
                return Err(Self::open_error(&at.join(part), std::io::Error::last_os_error(), Some((at, part))));
            }
            // SAFETY: a fresh descriptor.
            owned = Some(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: at.join(part) });
        }
        owned.as_ref().unwrap_or(self).open_file(last, Access::Read)
    }
}

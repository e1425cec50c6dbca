//! The one pass over a backup's tar members: the manifest first, then each
//! member checked against it and staged, then the sums.

use super::*;

/// The backup being read, for errors that say where: a read of the medium
/// that failed is named as that, at its byte, rather than as what it made
/// the layers above say.
pub(super) struct Source<'a> {
    pub(super) path: &'a Path,
    pub(super) failed: Arc<Mutex<Option<(u64, io::Error)>>>,
}

impl Source<'_> {
    pub(super) fn medium_error(&self, what: Error) -> Error {
        match lock(&self.failed).take() {
            Some((at, e)) => Error::io(&format!("cannot read (at byte {at})"), self.path, e)
                .hint("the medium fails to read: copy the backup off the stick, or try another copy"),
            None => what,
        }
    }

    pub(super) fn corrupt(&self, e: io::Error) -> Error {
        self.medium_error(
            Error::verify(format!("{}: corrupted or truncated: {e}", self.path.display()))
                .hint("this copy cannot be trusted; use an older backup, or another copy of this one"),
        )
    }

    pub(super) fn verify(&self, msg: impl std::fmt::Display) -> Error {
        Error::verify(format!("{}: {msg}", self.path.display()))
    }
}

/// One pass over the tar's members: the manifest first, then each member
/// checked against it (and staged, when restoring), then the sums.
pub(super) struct Walk<'a> {
    pub(super) src: &'a Source<'a>,
    pub(super) stage: Option<Stage<'a>>,
    pub(super) room: &'a dyn Fn(u64) -> Result<()>,
    /// How much more the stream may hold: what the manifest declares.
    pub(super) budget: Rc<std::cell::Cell<u64>>,
    pub(super) seen: BTreeSet<String>,
    /// The bootstrap's own names a hand-made backup carried, not restored.
    pub(super) dropped: Vec<String>,
    pub(super) manifest: Option<Manifest>,
    /// Format 2: each file's hash as read, for NXS-SUMS at the end.
    pub(super) hashed: Vec<(String, [u8; 32])>,
    pub(super) sums: Option<Vec<u8>>,
    pub(super) progress: Progress,
    pub(super) buf: Vec<u8>,
}

impl Walk<'_> {
    pub(super) fn member<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| self.src.verify("a member's name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        // `tar -cf - .` names members `./x` and leads with `./` itself.
        let bare = name.strip_prefix("./").unwrap_or(&name);
        let bare = bare.trim_end_matches('/');
        if bare.is_empty() || bare == "." {
            return Ok(());
        }
        let Some(format) = self.manifest.as_ref().map(|m| m.format) else {
            return self.manifest_member(entry, &name, bare, kind);
        };
        if self.sums.is_some() {
            return Err(self
                .src
                .verify(format!("member `{name}` follows {}, which ends a backup", manifest::SUMS))
                .hint("the archive was altered after it was made; use another backup"));
        }
        if bare == manifest::ROOT {
            return Ok(());
        }
        if bare == manifest::SUMS && format >= 2 && kind.is_file() {
            let size = entry.header().size().map_err(|e| self.src.corrupt(e))?;
            if size > manifest::MAX_LEN {
                return Err(self.src.verify(format!("{} claims {size} bytes", manifest::SUMS)));
            }
            let mut text = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut text).map_err(|e| self.src.corrupt(e))?;
            self.sums = Some(text);
            return Ok(());
        }
        let rel = bare
            .strip_prefix("state/")
            .ok_or_else(|| self.src.verify(format!("member `{name}` lies outside state/")))?;
        if let Some(why) = manifest::path_problem(rel) {
            return Err(self.src.verify(format!("member `{name}` {why}")));
        }
        let top = rel.split('/').next().unwrap_or(rel);
        if nxs_format::state::is_bootstrap_owned(top) {
            self.drop_name(top);
            return Ok(());
        }
        let want = self.manifest.as_ref().and_then(|m| m.entries.get(rel)).cloned().ok_or_else(|| {
            self.src
                .verify(format!("member `{name}` is not in the manifest"))
                .hint("the archive and its manifest disagree: it was altered after it was made")
        })?;
        if !self.seen.insert(rel.to_string()) {
            return Err(self.src.verify(format!("member `{name}` appears twice")));
        }
        self.data_member(entry, &name, rel, &want, kind)
    }

    fn drop_name(&mut self, top: &str) {
        if !self.dropped.iter().any(|d| d == top) {
            self.dropped.push(top.to_string());
        }
    }

    /// The first member, `NXS-BACKUP`: from here the stream may hold what
    /// it declares, and `room` may refuse that before anything is written.
    fn manifest_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &str,
        bare: &str,
        kind: tar::EntryType,
    ) -> Result<()> {
        if bare != manifest::NAME || !kind.is_file() {
            return Err(self
                .src
                .verify(format!("the first member is `{name}`, not the manifest `{}`", manifest::NAME))
                .hint("a backup's tar starts with NXS-BACKUP, then state/ (docs/FORMAT.md, \"Backups\")"));
        }
        let size = entry.header().size().map_err(|e| self.src.corrupt(e))?;
        if size > manifest::MAX_LEN {
            return Err(self.src.verify(format!("the manifest claims {size} bytes")));
        }
        let mut text = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut text).map_err(|e| self.src.corrupt(e))?;
        let mut parsed = Manifest::parse(&text)
            .map_err(|e| Error { msg: format!("{}: {}", self.src.path.display(), e.msg), ..Error::from(e) })?;
        // A hand-made backup of a whole state directory carries the
        // bootstrap's own files too; they are checked against nothing
        // and never restored over the machine's own.
        let top = |p: &str| p.split('/').next().unwrap_or(p).to_string();
        let owned: Vec<String> =
            parsed.entries.keys().map(|p| top(p)).filter(|t| nxs_format::state::is_bootstrap_owned(t)).collect();
        parsed.entries.retain(|p, _| !nxs_format::state::is_bootstrap_owned(&top(p)));
        for t in &owned {
            self.drop_name(t);
        }
        self.budget.set(declared(&parsed, size).saturating_sub(size.div_ceil(512) * 512 + 512));
        let total = parsed.files().map(|(_, s)| s).sum();
        (self.room)(total)?;
        self.progress = Progress::start(if self.stage.is_some() { "restore" } else { "check" }, total);
        self.manifest = Some(parsed);
        Ok(())
    }

    /// A member of `state/`: the kind its manifest line says, made in the
    /// staging when restoring.
    fn data_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &str,
        rel: &str,
        want: &manifest::Entry,
        kind: tar::EntryType,
    ) -> Result<()> {
        match (&want.kind, kind) {
            (Kind::Dir, tar::EntryType::Directory) => {
                if let Some(s) = &mut self.stage {
                    s.ensure_parents(rel)?;
                    s.mkdir(rel)?;
                    s.dir_modes.insert(rel.to_string(), want.mode);
                }
                Ok(())
            }
            (Kind::Link { target }, tar::EntryType::Symlink) => {
                let got = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                if got != target.as_bytes() {
                    return Err(self.src.verify(format!("link `{name}` points elsewhere than its manifest says")));
                }
                if let Some(s) = &mut self.stage {
                    s.ensure_parents(rel)?;
                    let p = s.root.join(rel);
                    std::os::unix::fs::symlink(target, &p).map_err(|e| Error::io("cannot create the link", &p, e))?;
                }
                Ok(())
            }
            (Kind::File { size, sha256 }, k) if k.is_file() => {
                self.file_member(entry, name, rel, want.mode, *size, *sha256)
            }
            _ => Err(self.src.verify(format!("member `{name}` is not the kind its manifest line says"))),
        }
    }

    /// A file: read once, hashed, checked against its size and (format 1)
    /// its hash, and written into the staging when restoring.
    fn file_member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &str,
        rel: &str,
        mode: u32,
        size: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<()> {
        let mut out = match &mut self.stage {
            Some(s) => {
                s.ensure_parents(rel)?;
                let p = s.root.join(rel);
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .map_err(|e| Error::io("cannot create", &p, e))?;
                Some((f, p))
            }
            None => None,
        };
        let mut h = Sha256::new();
        let mut got = 0u64;
        loop {
            let n = entry.read(&mut self.buf).map_err(|e| self.src.corrupt(e))?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > size {
                return Err(self.src.verify(format!("`{name}` is larger than the {size} bytes its manifest says")));
            }
            h.update(&self.buf[..n]);
            self.progress.add(n as u64);
            if let Some((f, p)) = &mut out {
                f.write_all(&self.buf[..n]).map_err(|e| Error::io("cannot write", p, e))?;
            }
        }
        let digest: [u8; 32] = h.finalize().into();
        if got != size || sha256.is_some_and(|want| want != digest) {
            return Err(self
                .src
                .verify(format!("`{name}` does not match its manifest line (size {got} of {size}, or its sha256)"))
                .hint("the backup was altered after it was made; use another"));
        }
        if sha256.is_none() {
            self.hashed.push((rel.to_string(), digest));
        }
        if let Some((f, p)) = out {
            // Modes come from the manifest; setuid and setgid never.
            f.set_permissions(fs::Permissions::from_mode(mode & 0o1777))
                .map_err(|e| Error::io("cannot set the mode of", &p, e))?;
            if let Ok(t) = entry.header().mtime() {
                let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
            }
            fault::effect("restore:stage-file")?;
        }
        Ok(())
    }

    /// The end of the archive: every entry was there, the sums (format 2)
    /// agree with what was read, and the staged directories get their modes.
    pub(super) fn finish(self) -> Result<(Manifest, Vec<String>)> {
        let Some(mut m) = self.manifest else {
            return Err(self.src.verify("holds no manifest (an empty archive)"));
        };
        let missing: Vec<&String> = m.entries.keys().filter(|p| !self.seen.contains(*p)).collect();
        if let Some(first) = missing.first() {
            return Err(self
                .src
                .verify(format!("{} manifest entries are missing from the archive, first `{first}`", missing.len()))
                .hint("the archive was cut short or altered; use another backup"));
        }
        if m.format >= 2 {
            let text = self.sums.ok_or_else(|| {
                self.src
                    .verify(format!("ends without {}, the sums of its files", manifest::SUMS))
                    .hint("the archive was cut short or altered; use another backup")
            })?;
            m.apply_sums(&text)
                .map_err(|e| Error { msg: format!("{}: {}", self.src.path.display(), e.msg), ..Error::from(e) })?;
            for (rel, digest) in &self.hashed {
                if !matches!(m.entries.get(rel), Some(manifest::Entry { kind: Kind::File { sha256: Some(h), .. }, .. }) if h == digest)
                {
                    return Err(self
                        .src
                        .verify(format!("`state/{rel}` does not match its sha256 in {}", manifest::SUMS))
                        .hint("the backup was altered after it was made; use another"));
                }
            }
        }
        self.progress.end();
        if let Some(s) = self.stage {
            // Deepest first, so that a read-only directory is closed last.
            for (rel, mode) in s.dir_modes.iter().rev() {
                let p = s.root.join(rel);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o1777))
                    .map_err(|e| Error::io("cannot set the mode of", &p, e))?;
            }
            fs::set_permissions(s.root, fs::Permissions::from_mode(m.root_mode & 0o1777))
                .map_err(|e| Error::io("cannot set the mode of", s.root, e))?;
        }
        Ok((m, self.dropped))
    }
}

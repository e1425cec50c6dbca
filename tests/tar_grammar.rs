//! One tar grammar, the one the bundler writes (docs/FORMAT.md, "The tar
//! subset"; `stub/src/tarwalk.rs`).
//!
//! First, hostile payloads, one per tar extension or spelling the bundler
//! never writes, signed with the trusted test key: `verify`, `install` and
//! `extract` each refuse with exit 3, name the entry and its byte offset,
//! and leave the target's surroundings byte for byte as they were. Then the
//! other direction: real bundles whose payloads exercise the grammar (long
//! names at every boundary, deep directories, links, empty and
//! block-sized files, modes, a read-only directory) extract to the same
//! tree with the stub, GNU tar and bsdtar, and the by-hand recipe of
//! docs/FORMAT.md reads them.

use nxs_tests::hostile::*;
use nxs_tests::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `verify`, `install` and `extract` all refuse `bundle` with exit 3, and
/// every needle is in the message; nothing appears, changes or goes away
/// beside the target.
fn refused(bundle: &Path, needles: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let area = t.path().join("area");
    std::fs::create_dir(&area).unwrap();
    std::fs::write(area.join("neighbour"), b"keep me").unwrap();
    let (root, to, state) = (area.join("root"), area.join("x"), t.path().join("state"));
    let before = snapshot(&area);
    let runs = [
        vec!["verify"],
        vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()],
        vec!["extract", "--to", to.to_str().unwrap()],
    ];
    for args in runs {
        let o = run(bundle, &args);
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
        for needle in needles {
            assert!(stderr(&o).contains(needle), "{args:?}: `{}` should name `{needle}`", stderr(&o));
        }
        assert_eq!(snapshot(&area), before, "{args:?}: the target and its surroundings changed");
    }
}

/// A bundle of `tar` that declares one file, `evil`, holding `evil`.
fn evil_bundle(dir: &Path, name: &str, tar: Vec<u8>) -> std::path::PathBuf {
    bundle(dir, name, &end(tar), vec![file("evil", 0o644, b"evil")])
}

/// The finding of issue #12: a PAX `size` record that disagrees with the
/// header. The `tar` crate honoured it and skipped the bytes the header
/// did not cover, unread, so `verify` said OK while GNU tar extracted a
/// different `evil` from the same payload.
#[test]
fn a_pax_size_record_that_disagrees_with_the_header() {
    require_tool("tar");
    let d = tempfile::tempdir().unwrap();
    let mut tar = pax(b'x', &[("size", "1536")]);
    tar.extend(gnu_member(b"evil", b'0', b"evil", 0o644));
    // What GNU tar reads as the rest of `evil`: a whole member, hidden.
    tar.extend(gnu_member(b"hidden", b'0', b"GNU tar sees these bytes in evil", 0o644));
    let tar = end(tar);

    // Stock tar follows the record: its `evil` is not the signed one.
    std::fs::write(d.path().join("p.tar"), &tar).unwrap();
    let o = bash("mkdir x && tar -xf p.tar -C x", d.path(), &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(d.path().join("x/evil")).unwrap().len(), 1536, "GNU tar honours the record");

    let b = bundle(d.path(), "paxsize.run", &tar, vec![file("evil", 0o644, b"evil")]);
    refused(&b, &["payload entry 0 at byte 0", "a PAX extended header (typeflag `x`)"]);
}

#[test]
fn a_pax_path_record() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = pax(b'x', &[("path", "../../nxs-hostile-evil")]);
    tar.extend(gnu_member(b"evil", b'0', b"evil", 0o644));
    refused(&evil_bundle(d.path(), "paxpath.run", tar), &["payload entry 0 at byte 0", "PAX extended header"]);
    assert!(!Path::new("/tmp/nxs-hostile-evil").exists());
}

#[test]
fn a_pax_global_header() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = pax(b'g', &[("comment", "global"), ("mtime", "0")]);
    tar.extend(gnu_member(b"evil", b'0', b"evil", 0o644));
    refused(
        &evil_bundle(d.path(), "paxglobal.run", tar),
        &["payload entry 0 at byte 0", "a PAX global header (typeflag `g`)"],
    );
}

#[test]
fn a_gnu_sparse_file() {
    let d = tempfile::tempdir().unwrap();
    let tar = gnu_member(b"evil", b'S', b"evil", 0o644);
    refused(
        &evil_bundle(d.path(), "sparse.run", tar),
        &["payload entry 0 at byte 0", "a GNU sparse file (typeflag `S`)"],
    );
}

#[test]
fn a_volume_label() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = gnu_header(b"NXS VOLUME", b'V', 0, 0o644).to_vec();
    tar.extend(gnu_member(b"evil", b'0', b"evil", 0o644));
    refused(&evil_bundle(d.path(), "label.run", tar), &["payload entry 0 at byte 0", "a volume label (typeflag `V`)"]);
}

#[test]
fn a_header_checksum_that_does_not_add_up() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = gnu_member(b"d/", b'5', b"", 0o755);
    let mut evil = gnu_member(b"d/evil", b'0', b"evil", 0o644);
    evil[150] = if evil[150] == b'7' { b'6' } else { evil[150] + 1 };
    tar.extend(evil);
    let b = bundle(d.path(), "cksum.run", &end(tar), vec![dir("d"), file("d/evil", 0o644, b"evil")]);
    refused(&b, &["payload entry 1 at byte 512", "header checksum"]);
}

#[test]
fn a_magic_other_than_gnu() {
    let d = tempfile::tempdir().unwrap();
    // POSIX ustar (`ustar\0` `00`), as `tar --format=ustar` or pax write.
    let mut h = tar::Header::new_ustar();
    h.set_path("evil").unwrap();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(b"evil");
    tar.resize(1024, 0);
    refused(&evil_bundle(d.path(), "ustar.run", tar), &["payload entry 0 at byte 0", "POSIX ustar"]);
}

#[test]
fn a_long_name_record_that_disagrees_with_the_header() {
    let d = tempfile::tempdir().unwrap();
    let long = format!("d/{}", "x".repeat(150));
    let mut tar = gnu_member(b"d/", b'5', b"", 0o755);
    tar.extend(gnu_long(b'L', long.as_bytes()));
    // The header's own name should be the long name's first 100 bytes; a
    // reader without GNU long names would write `d/evil` instead.
    tar.extend(gnu_member(b"d/evil", b'0', b"evil", 0o644));
    let b = bundle(d.path(), "longname.run", &end(tar), vec![dir("d"), file(&long, 0o644, b"evil")]);
    refused(&b, &["payload entry 1 at byte 1536", "is not its long-name record"]);
}

#[test]
fn a_long_name_record_where_the_name_fits() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = gnu_long(b'L', b"evil");
    tar.extend(gnu_member(b"evil", b'0', b"evil", 0o644));
    refused(&evil_bundle(d.path(), "shortlong.run", tar), &["payload entry 0 at byte 0", "which fit the header"]);
}

#[test]
fn a_number_in_base_256_where_octal_fits() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = gnu_member(b"evil", b'0', b"evil", 0o644);
    tar[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
    reseal(&mut tar);
    refused(&evil_bundle(d.path(), "base256.run", tar), &["payload entry 0 at byte 0", "its size field"]);
}

#[test]
fn a_header_mode_that_disagrees_with_the_manifest() {
    let d = tempfile::tempdir().unwrap();
    // GNU tar as root would install it setuid and setgid; the stub 0755.
    let tar = end(gnu_member(b"tool", b'0', b"#!/bin/sh\n", 0o6777));
    let b = bundle(d.path(), "mode.run", &tar, vec![file("tool", 0o755, b"#!/bin/sh\n")]);
    refused(&b, &["payload entry 0 (`tool`, at byte 0) has mode 6777"]);
}

// The other direction: what the bundler writes, every reader reads alike.

/// A project whose one bundle exercises the tar grammar.
fn grammar_project() -> Project {
    let dir = tempfile::Builder::new().prefix("nxs-grammar-").tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    let text = format!(
        r#"platforms = ["{HOST}"]

[product]
name = "grammar"
version = "1.0.0"
mtime = 1700000000

[trust]
keys = ["{}"]

[[component]]
name = "names"
source = "src/names"
install = "n"

[[component]]
name = "ro"
source = "src/ro"
install = "ro"
mode = 0o400

[[component]]
name = "priv"
source = "src/priv"
install = "priv"
mode = 0o700

[[component]]
name = "locked"
source = "src/locked"
install = "locked"
dir_mode = 0o555

[[tier]]
name = "all"
components = ["names", "ro", "priv", "locked"]
"#,
        test_key().1.display()
    );
    write(&spec, text.as_bytes(), 0o644);
    let src = dir.path().join("src");
    // Payload paths (under `n/`) of 99, 100, 101 and 250 bytes.
    let names = src.join("names");
    for (len, c) in [(99, "a"), (100, "b"), (101, "c"), (250, "d")] {
        write(&names.join(c.repeat(len - 2)), format!("{len} bytes of name\n").as_bytes(), 0o644);
    }
    // Directories whose header name (with its `/`) is 100 and 101 bytes.
    write(&names.join("e".repeat(97)).join("in-99"), b"in a directory of 99 bytes\n", 0o644);
    write(&names.join("g".repeat(98)).join("in-100"), b"in a directory of 100 bytes\n", 0o644);
    // Where the crate cuts a long name: after a `/.`, and inside a character.
    write(&names.join("h".repeat(96)).join(".hidden-past-the-cut"), b"dot\n", 0o644);
    write(&names.join(format!("{}é{}", "i".repeat(97), "j".repeat(10))), b"utf-8\n", 0o644);
    // Deep directories.
    let deep = names.join("deep/".repeat(30));
    write(&deep.join("bottom.txt"), b"at the bottom\n", 0o644);
    // Empty, block-sized and not, executable.
    write(&names.join("empty"), b"", 0o644);
    for n in [1usize, 511, 512, 513, 1024, 70_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        write(&names.join(format!("f{n}")), &data, 0o644);
    }
    write(&names.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    // Declared links: short, a target over 100 bytes, up and into a directory.
    let link = |target: &str, at: &Path| std::os::unix::fs::symlink(target, at).unwrap();
    link("f1", &names.join("link-short"));
    link(&"d".repeat(248), &names.join("link-long"));
    link(&format!("{}/{}", "../".repeat(29).trim_end_matches('/'), "f512"), &deep.join("up"));
    link(&"e".repeat(97), &names.join("link-dir"));
    // Modes 0400 and 0700 (explicit), and a read-only directory.
    write(&src.join("ro/secret"), b"read only\n", 0o644);
    write(&src.join("priv/tool"), b"#!/bin/sh\n", 0o644);
    write(&src.join("locked/sub/file"), b"in a read-only directory\n", 0o644);
    write(&src.join("locked/top"), b"also\n", 0o644);
    Project { dir, spec }
}

/// Type, permission bits and content (bytes or link target) of everything
/// under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                todo.push(p.clone());
                format!("dir {mode:o}")
            } else if meta.is_file() {
                format!("file {mode:o} {}", sha256(&std::fs::read(&p).unwrap()))
            } else {
                format!("other {mode:o}")
            };
            out.insert(p.strip_prefix(root).unwrap().to_str().unwrap().to_string(), what);
        }
    }
    out
}

/// GNU tar's `-tv` escapes bytes it does not print as `\ooo`; undoes it.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d)) {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap(), 8).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_stub_gnu_tar_and_bsdtar_extract_the_same_tree() {
    for t in ["tar", "bsdtar", "zstd"] {
        require_tool(t);
    }
    let p = grammar_project();
    let report = p.build(&p.path().join("out"));
    let packed = &report.bundles[0];
    let m = &packed.manifest;
    assert!(m.entries.iter().any(|e| e.path.components().count() > 30), "deep directories");

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let v = run(&packed.path, &["verify"]);
    assert_eq!(code(&v), 0, "{}", stderr(&v));
    let o = run(&packed.path, &["extract", "--to", w.join("stub").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    std::fs::write(w.join("payload.zst"), payload_region(&packed.path, m)).unwrap();
    // As root, both tars apply the header's modes without the umask (`-p`
    // says so explicitly) and make the owner 0/0, as the headers say; the
    // stub applies the manifest's modes, which the grammar requires the
    // headers to repeat. Directory modes are applied last by all three, so
    // the read-only directory is filled first.
    for (dir, cmd) in [("gnu", "tar -xpf - -C gnu"), ("bsd", "bsdtar -xpf - -C bsd")] {
        let o = bash(&format!("mkdir {dir} && zstd -dcq payload.zst | {cmd}"), w, &[]);
        assert_eq!(code(&o), 0, "{cmd}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{cmd} has nothing to warn about");
    }

    let stub = tree(&w.join("stub"));
    // The stub's tree is the manifest's, entry for entry.
    assert_eq!(stub.len(), m.entries.len());
    for e in &m.entries {
        let got = &stub[e.path.as_str()];
        match &e.kind {
            nxs_format::EntryKind::Dir => assert_eq!(got, &format!("dir {:o}", e.mode)),
            nxs_format::EntryKind::Link { target } => assert_eq!(got, &format!("link -> {target}")),
            nxs_format::EntryKind::File { sha256, .. } => {
                assert_eq!(got, &format!("file {:o} {}", e.mode, nxs_format::hex::encode(sha256)))
            }
        }
    }
    for (name, other) in [("GNU tar", tree(&w.join("gnu"))), ("bsdtar", tree(&w.join("bsd")))] {
        for (path, what) in &stub {
            assert_eq!(other.get(path), Some(what), "{name} differs at {path}");
        }
        assert_eq!(
            other.len(),
            stub.len(),
            "{name} extracted more: {:?}",
            other.keys().filter(|k| !stub.contains_key(*k))
        );
    }
    // What the grammar was meant to exercise is there.
    for want in ["dir 555", "file 400", "file 700", "file 755", "file 644"] {
        assert!(stub.values().any(|v| v.starts_with(want)), "no `{want}` in the tree");
    }
    assert!(stub.keys().any(|k| k.len() == 250) && stub.keys().any(|k| k.len() == 101));
}

#[test]
fn the_format_md_recipe_reads_the_grammar_bundle() {
    require_tool("minisign");
    require_tool("zstd");
    let p = grammar_project();
    let report = p.build(&p.path().join("out"));
    let packed = &report.bundles[0];
    let work = tempfile::tempdir().unwrap();
    let o = format_md_recipe(&packed.path, work.path());
    assert_eq!(code(&o), 0, "recipe failed: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Signature and comment signature verified"), "{}", stdout(&o));
    let listed: Vec<String> = recipe_listing(&o).iter().map(|l| unescape(l)).collect();
    let want: Vec<String> = packed.manifest.entries.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(listed, want);
}

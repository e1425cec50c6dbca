//! Hostile bundles, one test per attack class, built in memory and signed
//! with the trusted test key (so only the stub's own checks stand between
//! them and the disk). Each asserts the documented exit code, an error that
//! names the path or region, and a byte-for-byte snapshot of the target and
//! its surroundings before and after: nothing is written outside the root,
//! ever, and nothing at all on refusal.

use nxs_tests::hostile::*;
use nxs_tests::*;
use std::path::Path;

/// verify and install both refuse `bundle` with `want`, naming `needle`,
/// and the place around the root is as it was.
fn refused(bundle: &Path, want: i32, needle: &str) {
    let t = tempfile::tempdir().unwrap();
    let area = t.path().join("area");
    std::fs::create_dir(&area).unwrap();
    std::fs::write(area.join("neighbour"), b"keep me").unwrap();
    let (root, state) = (area.join("root"), t.path().join("state"));
    let before = snapshot(&area);
    for args in
        [vec!["verify"], vec!["install", "--root", root.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]]
    {
        let o = run(bundle, &args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: `{}` should name `{needle}`", stderr(&o));
        assert_eq!(snapshot(&area), before, "{args:?}: the target and its surroundings changed");
    }
    assert!(!Path::new("/tmp/nxs-hostile-evil").exists(), "nothing escaped the root");
}

fn one_file_bundle(dir: &Path, name: &str, tar_name: &[u8], typeflag: u8) -> std::path::PathBuf {
    let tar = end(member(tar_name, typeflag, b"evil", 0o644));
    bundle(dir, name, &tar, vec![file("evil", 0o644, b"evil")])
}

#[test]
fn dot_dot_paths() {
    let d = tempfile::tempdir().unwrap();
    refused(
        &one_file_bundle(d.path(), "dotdot.run", b"../nxs-hostile-evil", b'0'),
        3,
        "payload entry 0 is `../nxs-hostile-evil`",
    );
}

#[test]
fn absolute_paths() {
    let d = tempfile::tempdir().unwrap();
    refused(
        &one_file_bundle(d.path(), "abs.run", b"/tmp/nxs-hostile-evil", b'0'),
        3,
        "payload entry 0 is `/tmp/nxs-hostile-evil`",
    );
}

#[test]
fn links_devices_fifos_sparse_and_unknown_types() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        // Types the bundler never writes are refused by the tar grammar
        // itself; a symlink where the manifest says a file, by the walk.
        (b'1', "(header name `evil`): a hard link (typeflag `1`)"),
        (b'2', "(header name `evil`): a symbolic link without a target"),
        (b'3', "(header name `evil`): a character device (typeflag `3`)"),
        (b'4', "(header name `evil`): a block device (typeflag `4`)"),
        (b'6', "(header name `evil`): a FIFO (typeflag `6`)"),
        (b'S', "(header name `evil`): a GNU sparse file (typeflag `S`)"),
        (b'Z', "(header name `evil`): "),
    ];
    for (flag, needle) in cases {
        let tar = end(member(b"evil", flag, b"", 0o644));
        let b = bundle(d.path(), &format!("type-{}.run", flag as char), &tar, vec![file("evil", 0o644, b"")]);
        refused(&b, 3, needle);
    }
}

#[test]
fn duplicate_entries() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = member(b"evil", b'0', b"evil", 0o644);
    tar.extend(member(b"evil", b'0', b"EVIL", 0o644));
    let b = bundle(d.path(), "dup.run", &end(tar), vec![file("evil", 0o644, b"evil")]);
    refused(&b, 3, "payload holds more entries than the 1 the manifest lists");
}

#[test]
fn a_path_through_a_link() {
    let d = tempfile::tempdir().unwrap();
    let mut link = header(b"d", b'2', 0, 0o777);
    link[157..161].copy_from_slice(b"/tmp");
    let mut h = tar::Header::from_byte_slice(&link).clone();
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend(member(b"d/nxs-hostile-evil", b'0', b"evil", 0o644));
    let b = bundle(d.path(), "through.run", &end(tar), vec![dir("d"), file("d/nxs-hostile-evil", 0o644, b"evil")]);
    refused(&b, 3, "payload entry `d` is a Symlink");
}

#[test]
fn pax_headers_that_disagree_with_the_manifest() {
    let d = tempfile::tempdir().unwrap();
    let mut tar = pax(b'x', &[("path", "../../nxs-hostile-evil")]);
    tar.extend(member(b"evil", b'0', b"evil", 0o644));
    refused(
        &bundle(d.path(), "paxpath.run", &end(tar), vec![file("evil", 0o644, b"evil")]),
        3,
        "a PAX extended header (typeflag `x`)",
    );

    let mut tar = pax(b'x', &[("size", "1")]);
    tar.extend(member(b"evil", b'0', b"evil", 0o644));
    refused(
        &bundle(d.path(), "paxsize.run", &end(tar), vec![file("evil", 0o644, b"evil")]),
        3,
        "a PAX extended header (typeflag `x`)",
    );
}

#[test]
fn sizes_that_disagree_with_the_manifest() {
    let d = tempfile::tempdir().unwrap();
    let tar = end(member(b"evil", b'0', b"evil and more", 0o644));
    refused(
        &bundle(d.path(), "size.run", &tar, vec![file("evil", 0o644, b"evil")]),
        3,
        "payload entry `evil` is a Regular of 13 bytes",
    );
    // Same size, other bytes: the per-file hash catches it.
    let tar = end(member(b"evil", b'0', b"EVIL", 0o644));
    refused(&bundle(d.path(), "bytes.run", &tar, vec![file("evil", 0o644, b"evil")]), 3, "file `evil`: sha256 is");
}

#[test]
fn a_decompression_bomb_stops_at_the_declared_size() {
    let d = tempfile::tempdir().unwrap();
    // 64 MiB of tar that compresses to a few KiB, declared as 4 KiB.
    let mut tar = member(b"evil", b'0', &vec![0u8; 64 << 20], 0o644);
    tar = end(tar);
    let c = zstd::bulk::compress(&tar, 19).unwrap();
    let frames = vec![nxs_format::Frame {
        compressed: c.len() as u64,
        raw: 4096,
        sha256: Some(<sha2::Sha256 as sha2::Digest>::digest(&c).into()),
        first: Some(nxs_format::FirstMember { entry: 0, offset: 0 }),
        shared: false,
    }];
    let b = bundle_with(d.path(), "bomb.run", &c, frames, vec![file("evil", 0o644, b"")], &|s| s);
    refused(&b, 3, "does not decode within its declared 4096 bytes");
}

#[test]
fn unsafe_or_colliding_paths_in_a_signed_manifest() {
    let d = tempfile::tempdir().unwrap();
    let tar = end(member(b"evil", b'0', b"evil", 0o644));
    let (payload, frames) = frames_of(&tar);
    let b = bundle_with(d.path(), "mdotdot.run", &payload, frames.clone(), vec![file("evil", 0o644, b"evil")], &|s| {
        s.replace(" evil\n", " ../evil\n")
    });
    refused(&b, 3, "manifest at bytes");
    let b = bundle_with(d.path(), "mcase.run", &payload, frames.clone(), vec![file("evil", 0o644, b"evil")], &|s| {
        s.replace("end\n", &format!("file 644 4 {} EVIL\nend\n", sha256(b"evil")))
    });
    refused(&b, 3, "name the same file");
    // The same name in two Unicode spellings (NFD, then Angstrom sign).
    let b = bundle_with(d.path(), "mnfd.run", &payload, frames.clone(), vec![file("evil", 0o644, b"evil")], &|s| {
        s.replace("end\n", &format!("file 644 4 {} e%CC%81vil\nend\n", sha256(b"evil")))
    });
    refused(&b, 3, "not in Unicode Normalization Form C");
    // A link whose target is inside the root as written, and outside once
    // the link on its way is followed: `a/up` is the root, so `esc` ->
    // `a/up/..` is its parent.
    let b = bundle_with(d.path(), "mchain.run", &payload, frames, vec![file("evil", 0o644, b"evil")], &|s| {
        s.replace("end\n", "dir 755 a\nlink a/up ..\nlink esc a/up/..\nend\n")
    });
    refused(&b, 3, "climbs above the root once the link `a/up` on its way is followed");
}

#[test]
fn modes_come_from_the_manifest_and_setuid_is_not_smuggled_in() {
    let d = tempfile::tempdir().unwrap();
    let tar = end(member(b"tool", b'0', b"#!/bin/sh\n", 0o6777));
    let b = bundle(d.path(), "mode.run", &tar, vec![file("tool", 0o755, b"#!/bin/sh\n")]);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    // A header mode other than the manifest's is refused outright: GNU tar
    // as root would apply it, and the stub must extract what tar would.
    let o =
        run(&b, &["install", "--root", root.to_str().unwrap(), "--state-dir", t.path().join("s").to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("has mode 6777"), "{}", stderr(&o));
    assert!(!root.join("tool").exists(), "nothing installed");
}

#[test]
fn links_must_match_the_manifest_and_stay_inside() {
    let d = tempfile::tempdir().unwrap();
    let link = |target: &str| nxs_format::Entry {
        path: nxs_format::EntryPath::parse("l").unwrap(),
        mode: 0o777,
        kind: nxs_format::EntryKind::Link { target: target.into() },
    };
    // The tar's link points elsewhere than the signed manifest says.
    let mut h = header(b"l", b'2', 0, 0o777);
    h[157..168].copy_from_slice(b"/etc/passwd");
    let mut hh = tar::Header::from_byte_slice(&h).clone();
    hh.set_cksum();
    let tar = end(hh.as_bytes().to_vec());
    refused(
        &bundle(d.path(), "relink.run", &tar, vec![link("x")]),
        3,
        "payload link `l` points at `/etc/passwd`, the manifest says `x`",
    );
    // A signed manifest may not declare a link out of the root.
    let (payload, frames) = frames_of(&tar);
    let b = bundle_with(d.path(), "outlink.run", &payload, frames, vec![link("x")], &|s| {
        s.replace("link l x\n", "link l ../../etc/passwd\n")
    });
    refused(&b, 3, "must be relative and stay inside the root");
}

#[test]
fn the_bundler_refuses_a_source_link_that_leaves_the_root() {
    let p = Project::new(None);
    std::os::unix::fs::symlink("/etc/passwd", p.path().join("src/etc/passwd")).unwrap();
    let out = p.path().join("out");
    let e = nxs_bundler::build(&p.request(&out, &test_key().0)).unwrap_err();
    assert!(format!("{e:#}").contains("must be relative and stay inside the install root"), "{e:#}");
    assert!(!out.exists());
}

//! The remote conformance suite: one set of test bodies that every `Remote` must pass
//! (in-memory, fault-injecting, local directory, Apache, rclone webdav, s3s-fs, rclone s3).
//! Each body gets a remote rooted in an empty scratch directory.

#![allow(dead_code)]

use skyfill::model::{Kind, RelPath, RemoteEntry};
use skyfill::remote::transfer::Transfer;
use skyfill::remote::{self, Precondition, ReadRange, Remote, RemoteError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn file_with(bytes: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    f
}

pub fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

/// The entry a listing of `dir` gives for `path`.
async fn listed<R: Remote + ?Sized>(r: &R, dir: &str, path: &str) -> RemoteEntry {
    r.list_dir(&RelPath::parse(dir).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.path.as_str() == path)
        .unwrap_or_else(|| panic!("{}: {path} not listed", r.describe()))
}

pub async fn read_all<R: Remote + ?Sized>(r: &R, e: &RemoteEntry) -> Vec<u8> {
    let f = tempfile::tempfile().unwrap();
    let t = Transfer {
        chunk: 64 * 1024,
        parallel: 4,
        ..Transfer::default()
    };
    remote::transfer::download(r, ReadRange::new(&e.path, &e.version, 0, e.size, &f), &t)
        .await
        .unwrap_or_else(|err| panic!("{}: reading {}: {err}", r.describe(), e.path));
    let mut v = vec![0u8; e.size as usize];
    f.read_exact_at(&mut v, 0).unwrap();
    v
}

/// Names a walk of `dir` lists, in order, and its counts (rejected entries included).
pub async fn walk_names<R: Remote + ?Sized>(
    r: &R,
    dir: &RelPath,
) -> (Vec<String>, remote::WalkStats) {
    let mut seen = Vec::new();
    let stats = r
        .walk(dir, &mut |e| {
            seen.push(e.path.as_str().to_string());
            Ok(())
        })
        .await
        .expect("walk");
    (seen, stats)
}

async fn walk_all<R: Remote + ?Sized>(r: &R, dir: &RelPath) -> BTreeMap<String, RemoteEntry> {
    let mut m = BTreeMap::new();
    let mut sink = |e: RemoteEntry| {
        assert!(
            m.insert(e.path.as_str().to_string(), e).is_none(),
            "walk listed an entry twice"
        );
        Ok(())
    };
    r.walk(dir, &mut sink).await.expect("walk");
    m
}

/// Names every server must carry through both ways (percent-encoding, UTF-8, reserved chars).
pub const NAMES: &[&str] = &[
    "plain.txt",
    "with space.txt",
    "ünïcødé 📁.bin",
    "pct%20literal",
    "hash#and?query",
    "plus+amp&eq=semi;",
    "quote'dq\"",
    "...dots",
];

pub async fn run_all<R: Remote + ?Sized>(r: &R) {
    let who = r.describe();
    // --- empty root
    assert!(
        walk_all(r, &RelPath::root()).await.is_empty(),
        "{who}: root not empty"
    );
    assert_eq!(r.stat(&RelPath::root()).await.unwrap().kind, Kind::Dir);

    // --- make a tree
    r.mkdir(&p("d")).await.unwrap();
    r.mkdir(&p("d"))
        .await
        .expect("mkdir of an existing dir is fine");
    r.mkdir(&p("d/e")).await.unwrap();
    let sizes: &[(&str, usize)] = &[
        ("empty", 0),
        ("one", 1),
        ("d/p4095", 4095),
        ("d/p4096", 4096),
        ("d/e/mib1", (1 << 20) + 1),
        ("d/e/odd", 300_001),
    ];
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (name, len)) in sizes.iter().enumerate() {
        let bytes = data(i as u64 + 1, *len);
        let e = r
            .upload(&p(name), &file_with(&bytes), &Precondition::MustNotExist)
            .await
            .unwrap_or_else(|e| panic!("{who}: upload {name}: {e}"));
        assert_eq!(e.size, *len as u64, "{who}: size after upload of {name}");
        assert_eq!(e.kind, Kind::File);
        want.insert(name.to_string(), bytes);
    }
    for (i, n) in NAMES.iter().enumerate() {
        let path = format!("d/{n}");
        let bytes = data(100 + i as u64, 100 + i);
        r.upload(&p(&path), &file_with(&bytes), &Precondition::None)
            .await
            .unwrap_or_else(|e| panic!("{who}: upload {path:?}: {e}"));
        want.insert(path, bytes);
    }

    // --- listings agree with what was written
    let all = walk_all(r, &RelPath::root()).await;
    let files: BTreeMap<_, _> = all.iter().filter(|(_, e)| e.kind == Kind::File).collect();
    let dirs: Vec<_> = all
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir)
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(dirs, vec!["d", "d/e"], "{who}: directories in walk");
    assert_eq!(
        files.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        want.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "{who}: files in walk"
    );
    for (k, e) in &files {
        assert_eq!(
            e.size,
            want[k.as_str()].len() as u64,
            "{who}: listed size of {k}"
        );
    }
    let mut top: Vec<String> = r
        .list_dir(&RelPath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.as_str().to_string())
        .collect();
    top.sort();
    assert_eq!(top, vec!["d", "empty", "one"], "{who}: list_dir of root");
    let sub = walk_all(r, &p("d/e")).await;
    assert_eq!(
        sub.keys().cloned().collect::<Vec<_>>(),
        vec!["d/e/mib1", "d/e/odd"]
    );

    // --- stat agrees with the listing, content is exact
    for (k, bytes) in &want {
        let e = r
            .stat(&p(k))
            .await
            .unwrap_or_else(|e| panic!("{who}: stat {k}: {e}"));
        assert_eq!(e.size, bytes.len() as u64, "{who}: stat size of {k}");
        assert!(
            remote::same_version(&e, files[k]),
            "{who}: stat and walk disagree on the version of {k}: {:?} vs {:?}",
            e.version,
            files[k].version
        );
        assert_eq!(&read_all(r, &e).await, bytes, "{who}: content of {k}");
    }
    assert_eq!(r.stat(&p("d")).await.unwrap().kind, Kind::Dir);

    // --- ranged reads land at the offset asked for, exactly
    let big = r.stat(&p("d/e/mib1")).await.unwrap();
    let src = &want["d/e/mib1"];
    let f = tempfile::tempfile().unwrap();
    for (off, len) in [
        (0u64, 1u64),
        (4095, 2),
        (500_000, 70_000),
        ((1 << 20) - 10, 11),
    ] {
        r.read_range(ReadRange::new(&big.path, &big.version, off, len, &f).to(off + 7))
            .await
            .unwrap_or_else(|e| panic!("{who}: range {off}+{len}: {e}"));
        let mut got = vec![0u8; len as usize];
        f.read_exact_at(&mut got, off + 7).unwrap();
        assert_eq!(
            got,
            src[off as usize..(off + len) as usize],
            "{who}: range {off}+{len}"
        );
    }
    // A range past the end is a version change, never short data.
    let e = r
        .read_range(ReadRange::new(&big.path, &big.version, big.size - 5, 10, &f).to(0))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::VersionChanged { .. }),
        "{who}: read past end gave {e}"
    );

    // --- a changed object is never mixed with the old version
    let old = r.stat(&p("d/p4096")).await.unwrap();
    // The new bytes differ in size, so every kind of version (an ETag over size and mtime,
    // a content hash, size+mtime) must change at once: no clock tick is waited for. (A
    // same-size rewrite within one second is what mtime-based tags cannot tell apart; this
    // suite does not claim it.)
    let newer = data(999, 5000);
    assert_ne!(
        newer.len() as u64,
        old.size,
        "the overwrite must change the size"
    );
    let ne = r
        .upload(
            &p("d/p4096"),
            &file_with(&newer),
            &Precondition::IfMatch(old.version.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{who}: conditional overwrite: {e}"));
    assert!(
        !remote::same_version(&ne, &old),
        "{who}: overwrite kept the version"
    );
    let e = r
        .read_range(ReadRange::new(&old.path, &old.version, 0, 100, &f))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::VersionChanged { .. }),
        "{who}: stale read gave {e}"
    );
    let e = r
        .upload(
            &p("d/p4096"),
            &file_with(b"x"),
            &Precondition::IfMatch(old.version.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::PreconditionFailed { .. }),
        "{who}: stale If-Match gave {e}"
    );
    let e = r
        .upload(&p("one"), &file_with(b"x"), &Precondition::MustNotExist)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::AlreadyExists { .. }),
        "{who}: MustNotExist gave {e}"
    );
    assert_eq!(
        read_all(r, &r.stat(&p("one")).await.unwrap()).await,
        want["one"]
    );

    // --- rename file and directory
    let before = listed(r, "", "one").await;
    let answer = r
        .rename(&p("one"), &p("d/one-moved"), Kind::File)
        .await
        .unwrap();
    assert!(matches!(
        r.stat(&p("one")).await,
        Err(RemoteError::NotFound { .. })
    ));
    // The version the rename's answer gives is the one listings give from then on (what the
    // sync base and the file's record keep), and reads at it get the bytes.
    let after = listed(r, "d", "d/one-moved").await;
    let said = answer.version(&before.version);
    assert!(
        said.same(&after.version),
        "{who}: the rename said {said}, the listing says {}",
        after.version
    );
    assert_eq!(
        read_all(
            r,
            &RemoteEntry {
                version: said,
                ..after
            }
        )
        .await,
        want["one"]
    );
    let m = r.stat(&p("d/one-moved")).await.unwrap();
    assert_eq!(read_all(r, &m).await, want["one"]);
    let e = r
        .rename(&p("empty"), &p("d/p4095"), Kind::File)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RemoteError::AlreadyExists { .. }),
        "{who}: rename onto a file gave {e}"
    );
    r.rename(&p("d/e"), &p("e2"), Kind::Dir).await.unwrap();
    let moved = walk_all(r, &p("e2")).await;
    assert_eq!(
        moved.keys().cloned().collect::<Vec<_>>(),
        vec!["e2/mib1", "e2/odd"]
    );
    assert_eq!(read_all(r, &moved["e2/odd"]).await, want["d/e/odd"]);
    assert!(matches!(
        r.stat(&p("d/e")).await,
        Err(RemoteError::NotFound { .. })
    ));

    // --- delete
    r.delete(&p("empty"), Kind::File).await.unwrap();
    assert!(matches!(
        r.stat(&p("empty")).await,
        Err(RemoteError::NotFound { .. })
    ));
    r.delete(&p("d"), Kind::Dir).await.unwrap();
    assert!(matches!(
        r.stat(&p("d")).await,
        Err(RemoteError::NotFound { .. })
    ));
    assert!(matches!(
        r.stat(&p("d/plain.txt")).await,
        Err(RemoteError::NotFound { .. })
    ));
    let left: Vec<String> = walk_all(r, &RelPath::root()).await.into_keys().collect();
    assert_eq!(
        left,
        vec!["e2", "e2/mib1", "e2/odd"],
        "{who}: after deletes"
    );

    // --- missing objects
    let e = r.stat(&p("nope/never")).await.unwrap_err();
    assert!(
        matches!(e, RemoteError::NotFound { .. }),
        "{who}: stat missing gave {e}"
    );
    let e = r
        .read_range(ReadRange::new(&p("nope"), &big.version, 0, 1, &f))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RemoteError::NotFound { .. } | RemoteError::VersionChanged { .. }
        ),
        "{who}: read missing gave {e}"
    );
}

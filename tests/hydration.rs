//! On-demand hydration end to end, as root: loop-mounted ext4/xfs/btrfs, `skyfilld` (keeper +
//! worker) against Apache WebDAV and s3s-fs, and real programs (cat, cp, sha256sum, dd,
//! python mmap, tar, rsync, sqlite3, exec). `scripts/test` starts the servers.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{allocated, sh, sh_ok, sha256, sha256_bytes, wait_blocked_in_fanotify, Daemon, LoopFs};
use remotes::{add_root, env, scratch, upload, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use suite::data;
use url::Url;

/// The generated tree every program must read exactly.
fn tree() -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("empty".into(), vec![]);
    t.insert("one".into(), data(1, 1));
    t.insert("p4095".into(), data(2, 4095));
    t.insert("p4096".into(), data(3, 4096));
    t.insert("dir/mib1".into(), data(4, (1 << 20) + 1));
    t.insert("dir/deep/big64".into(), data(5, 64 << 20));
    let mut zeros = data(6, 3 << 20);
    zeros[100_000..(2 << 20)].fill(0);
    t.insert("zeros-inside".into(), zeros);
    t.insert("allzero".into(), vec![0u8; 5 << 20]);
    let elf = std::fs::read("/usr/bin/basename").expect("a real ELF binary");
    t.insert("bin/elf".into(), elf);
    let db = tempfile::tempdir().unwrap();
    let dbp = db.path().join("t.db");
    sh_ok(&format!(
        "sqlite3 {} 'create table t(a); insert into t values (42),(43); create table big(b); with recursive c(x) as (select 1 union all select x+1 from c where x<20000) insert into big select randomblob(100) from c;'",
        dbp.display()
    ));
    t.insert("db.sqlite".into(), std::fs::read(&dbp).unwrap());
    t
}

fn check_placeholders(root: &Path, files: &BTreeMap<String, Vec<u8>>, fstype: &str) {
    for (k, v) in files {
        let f = root.join(k);
        let m = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(m.len(), v.len() as u64, "{k}: size");
        assert!(
            allocated(&f) == 0,
            "{fstype} {k}: a placeholder must hold no data or xattr block ({} bytes allocated)",
            allocated(&f)
        );
    }
}

/// Every program reads exactly the server's bytes from online-only files.
async fn programs_read_exact_bytes(fstype: &str, server: Server) {
    let fs = LoopFs::new(fstype, 2048);
    let d = Daemon::start(None);
    let files = tree();
    let (args, secret) = upload(&server, &files).await;
    type Check = fn(&Path, &str, &[u8]);
    let checks: Vec<(&str, Check)> = vec![
        ("cat", |f, k, v| {
            let o = std::process::Command::new("cat").arg(f).output().unwrap();
            assert!(o.status.success(), "cat {k}");
            assert!(o.stdout == v, "cat {k}: wrong bytes");
        }),
        ("sha256sum", |f, k, v| {
            assert_eq!(sha256(f).unwrap(), sha256_bytes(v), "sha256sum {k}")
        }),
        ("cp", |f, k, v| {
            let t = tempfile::tempdir().unwrap();
            let dst = t.path().join("c");
            sh_ok(&format!("cp '{}' '{}'", f.display(), dst.display()));
            assert!(
                std::fs::read(&dst).unwrap() == v,
                "cp {k}: wrong bytes (zeros from holes?)"
            );
        }),
        ("dd skip", |f, k, v| {
            let o = sh(&format!(
                "dd if='{}' bs=4096 skip=1 count=300 status=none",
                f.display()
            ));
            assert!(o.status.success(), "dd {k}");
            let want = if v.len() > 4096 {
                &v[4096..v.len().min(4096 * 301)]
            } else {
                &[][..]
            };
            assert!(o.stdout == want, "dd {k}: wrong bytes");
        }),
        ("python mmap", |f, k, v| {
            if v.is_empty() {
                return;
            }
            let o = sh(&format!(
                "python3 -c \"import mmap,hashlib,sys; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(hashlib.sha256(m[:]).hexdigest())\" '{}'",
                f.display()
            ));
            assert!(
                o.status.success(),
                "mmap {k}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&o.stdout).trim(),
                sha256_bytes(v),
                "mmap {k}"
            );
        }),
    ];
    for (i, (name, check)) in checks.iter().enumerate() {
        let root = fs.mnt.join(format!("r{i}"));
        add_root(&d, &root, &args, &secret);
        check_placeholders(&root, &files, fstype);
        for (k, v) in &files {
            check(&root.join(k), k, v);
        }
        eprintln!("{fstype}: {name} ok");
    }
    // tar of the whole tree, then compare the extracted files.
    let root = fs.mnt.join("rtar");
    add_root(&d, &root, &args, &secret);
    let out = tempfile::tempdir().unwrap();
    sh_ok(&format!(
        "tar -C '{}' -cf - . | tar -C '{}' -xf -",
        root.display(),
        out.path().display()
    ));
    for (k, v) in &files {
        assert!(std::fs::read(out.path().join(k)).unwrap() == *v, "tar {k}");
    }
    // sqlite3 opens the database placeholder; exec of an online-only ELF.
    let root = fs.mnt.join("rapp");
    add_root(&d, &root, &args, &secret);
    let q = sh_ok(&format!(
        "sqlite3 '{}' 'select sum(a) from t; select count(*) from big;'",
        root.join("db.sqlite").display()
    ));
    assert_eq!(
        q.split_whitespace().collect::<Vec<_>>(),
        vec!["85", "20000"]
    );
    sh_ok(&format!("chmod +x '{}'", root.join("bin/elf").display()));
    let o = sh_ok(&format!(
        "'{}' /a/b/hello.txt",
        root.join("bin/elf").display()
    ));
    assert_eq!(o.trim(), "hello.txt");
    // The placeholder left untouched is still online-only and free.
    assert_eq!(allocated(&root.join("dir/deep/big64")), 0);
    let s = d.cli(&["status", root.join("dir/deep/big64").to_str().unwrap()]);
    assert_eq!(s["state"], "online-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn ext4_apache_programs_read_exact_bytes() {
    programs_read_exact_bytes("ext4", Server::Apache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn xfs_s3s_programs_read_exact_bytes() {
    programs_read_exact_bytes("xfs", Server::S3s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_apache_programs_read_exact_bytes() {
    programs_read_exact_bytes("btrfs", Server::Apache).await;
}

/// Other mount namespaces, bind mounts made later, hole-aware copy tools, and a placeholder
/// moved out of the root all read the right bytes.
#[tokio::test(flavor = "multi_thread")]
async fn every_way_in_sees_the_right_bytes() {
    let fs = LoopFs::new("ext4", 2048);
    let d = Daemon::start(None);
    let mut files = tree();
    files.insert("huge40".into(), data(9, 40 << 20)); // above the whole-file threshold
    let (args, secret) = upload(&Server::S3s, &files).await;
    let want = |k: &str| sha256_bytes(&files[k]);
    // unshare -m: a new mount namespace.
    let r = fs.mnt.join("ns");
    add_root(&d, &r, &args, &secret);
    for k in files.keys() {
        let o = sh_ok(&format!("unshare -m sha256sum '{}'", r.join(k).display()));
        assert_eq!(
            o.split_whitespace().next().unwrap(),
            want(k),
            "unshare -m {k}"
        );
    }
    // A bind mount made after the daemon started.
    let r = fs.mnt.join("bind");
    add_root(&d, &r, &args, &secret);
    let b = tempfile::tempdir().unwrap();
    sh_ok(&format!(
        "mount --bind '{}' '{}'",
        r.display(),
        b.path().display()
    ));
    let res = std::panic::catch_unwind(|| {
        for k in files.keys() {
            assert_eq!(
                sha256(&b.path().join(k)).unwrap(),
                want(k),
                "bind mount {k}"
            );
        }
    });
    sh_ok(&format!("umount '{}'", b.path().display()));
    res.unwrap();
    // cp, rsync and tar of online-only files of every size.
    for (tool, cmd) in [
        ("cp", "cp -a '{src}/.' '{dst}/'"),
        ("rsync", "rsync -a '{src}/' '{dst}/'"),
        ("tar", "tar -C '{src}' -cf - . | tar -C '{dst}' -xf -"),
        (
            "cp --sparse=always",
            "cp -a --sparse=always '{src}/.' '{dst}/'",
        ),
    ] {
        let r = fs
            .mnt
            .join(format!("copy-{}", tool.replace([' ', '=', '-'], "_")));
        add_root(&d, &r, &args, &secret);
        let out = tempfile::tempdir().unwrap();
        sh_ok(
            &cmd.replace("{src}", r.to_str().unwrap())
                .replace("{dst}", out.path().to_str().unwrap()),
        );
        for k in files.keys() {
            assert_eq!(sha256(&out.path().join(k)).unwrap(), want(k), "{tool} {k}");
        }
    }
    // Renames inside the root, read before any pass has synced them (the root is paused):
    // the record keeps only a hash of its remote path, and the daemon finds the path in the
    // sync base (add-root wrote it). A read while a pass replays a rename:
    // `a_read_goes_on_while_a_pass_moves_its_file_on_the_server`.
    let r = fs.mnt.join("renamed");
    add_root(&d, &r, &args, &secret);
    d.cli(&["pause", r.to_str().unwrap()]);
    std::fs::create_dir(r.join("elsewhere")).unwrap();
    for (k, to) in [
        ("p4096", "p4096.renamed"),
        ("dir/mib1", "elsewhere/mib1"),
        ("dir/deep/big64", "elsewhere/big64.moved"),
    ] {
        std::fs::rename(r.join(k), r.join(to)).unwrap();
        let got = sha256(&r.join(to)).unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
        assert_eq!(got, want(k), "after mv {k} {to}");
    }
    // mv of placeholders to a directory outside the root (same filesystem), read before the
    // next pass (which deletes them on the server, as for `rm`: doc/SEMANTICS.md). The root
    // is paused and its first pass waited out (`sync` waits for a running pass), so no pass
    // comes between the move and the read.
    let r = fs.mnt.join("mv");
    add_root(&d, &r, &args, &secret);
    d.cli(&["pause", r.to_str().unwrap()]);
    d.cli(&["sync", r.to_str().unwrap()]);
    let outside = fs.mnt.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for k in ["huge40", "dir/mib1", "p4096"] {
        let dst = outside.join(k.replace('/', "_"));
        std::fs::rename(r.join(k), &dst).unwrap();
        assert_eq!(
            sha256(&dst).unwrap(),
            want(k),
            "after mv out of the root: {k}"
        );
    }
}

/// Reading 1 MiB in the middle of a 1 GiB online-only file fetches at most 8 MiB: counted by
/// the daemon and by the server's access log.
#[tokio::test(flavor = "multi_thread")]
async fn a_middle_read_fetches_only_its_region() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    // The 1 GiB object is made on the server's disk (sparse there, random in the middle).
    let s = scratch();
    let dir = PathBuf::from(env("SKYFILL_TEST_APACHE_DIR"))
        .join("data")
        .join(&s);
    std::fs::create_dir(&dir).unwrap();
    let big = dir.join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    let mid = data(11, 4 << 20);
    std::os::unix::fs::FileExt::write_all_at(&f, &mid, 510 << 20).unwrap();
    drop(f);
    sh_ok(&format!("chown -R www-data:www-data '{}'", dir.display()));
    let port = Url::parse(&env("SKYFILL_TEST_APACHE"))
        .unwrap()
        .port()
        .unwrap();
    let root = fs.mnt.join("r");
    add_root(
        &d,
        &root,
        &[format!("dav://127.0.0.1:{port}/dav/{s}")],
        &None,
    );
    let before = d.stats()["bytes_fetched"].as_u64().unwrap();
    let o = sh_ok(&format!(
        "dd if='{}' bs=1M skip=511 count=1 status=none | sha256sum",
        root.join("big.bin").display()
    ));
    assert_eq!(
        o.split_whitespace().next().unwrap(),
        sha256_bytes(&mid[1 << 20..2 << 20])
    );
    let fetched = d.stats()["bytes_fetched"].as_u64().unwrap() - before;
    assert!(
        (1 << 20..=8 << 20).contains(&fetched),
        "daemon fetched {fetched} bytes"
    );
    // The server's log: bytes sent for this file.
    let log =
        std::fs::read_to_string(PathBuf::from(env("SKYFILL_TEST_APACHE_DIR")).join("access.log"))
            .unwrap();
    let sent: u64 = log
        .lines()
        .filter(|l| l.starts_with("GET ") && l.contains(&format!("/dav/{s}/big.bin")))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    assert!(
        (1 << 20..=8 << 20).contains(&sent),
        "server sent {sent} bytes"
    );
    assert!(allocated(&root.join("big.bin")) <= (8 << 20) + 4096);
}

/// Waits (generously) until every file of `paths` is local.
fn wait_local(d: &Daemon, paths: &[PathBuf]) {
    let until = Instant::now() + Duration::from_secs(60);
    for f in paths {
        while d.cli(&["status", f.to_str().unwrap()])["state"] != "local" {
            assert!(Instant::now() < until, "{} never became local", f.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A program opening a folder's small files in name order gets the next ones fetched ahead
/// of it (folder read-ahead), with the right bytes; opens out of order fetch nothing ahead.
/// A sequential read of a large file costs a few large requests, each byte fetched once.
/// Counted, never timed.
#[tokio::test(flavor = "multi_thread")]
async fn in_order_readers_get_files_ahead_and_sequential_reads_few_requests() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for i in 0..40u64 {
        files.insert(
            format!("pics/p{i:02}"),
            data(100 + i, 5000 + 100 * i as usize),
        );
        if i < 10 {
            files.insert(format!("other/o{i:02}"), data(200 + i, 3000));
        }
    }
    files.insert("big.bin".to_string(), data(7, 96 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let state = |p: &str| d.cli(&["status", root.join(p).to_str().unwrap()])["state"].clone();

    // Out of order: only what was opened becomes local.
    for i in [9, 8, 7] {
        sh_ok(&format!(
            "head -c1 '{}' >/dev/null",
            root.join(format!("other/o{i:02}")).display()
        ));
    }
    // In order: the first two opens show the pattern; the next files arrive unasked.
    for i in [0, 1] {
        sh_ok(&format!(
            "head -c1 '{}' >/dev/null",
            root.join(format!("pics/p{i:02}")).display()
        ));
    }
    let ahead: Vec<PathBuf> = (2..20)
        .map(|i| root.join(format!("pics/p{i:02}")))
        .collect();
    wait_local(&d, &ahead);
    for i in 0..7 {
        assert_eq!(
            state(&format!("other/o{i:02}")),
            "online-only",
            "o{i:02} was fetched ahead"
        );
    }
    // Every file reads exactly, fetched ahead or not; none was fetched twice.
    for (k, v) in files.iter().filter(|(k, _)| k.starts_with("pics/")) {
        assert_eq!(sha256(&root.join(k)).unwrap(), sha256_bytes(v), "{k}");
    }
    let s = d.stats();
    let small: u64 = files
        .iter()
        .filter(|(k, _)| !k.starts_with("big"))
        .filter(|(k, _)| {
            k.starts_with("pics/")
                || ["7", "8", "9"]
                    .iter()
                    .any(|n| k.ends_with(n) && k.starts_with("other/"))
        })
        .map(|(_, v)| v.len() as u64)
        .sum();
    assert_eq!(s["bytes_fetched"].as_u64().unwrap(), small);

    // A sequential read of 96 MiB: the bytes once, in a few large requests.
    let (r0, b0) = (
        s["requests"].as_u64().unwrap(),
        s["bytes_fetched"].as_u64().unwrap(),
    );
    let o = sh_ok(&format!(
        "dd if='{}' bs=1M status=none | sha256sum",
        root.join("big.bin").display()
    ));
    assert_eq!(
        o.split_whitespace().next().unwrap(),
        sha256_bytes(&files["big.bin"])
    );
    let s = d.stats();
    let requests = s["requests"].as_u64().unwrap() - r0;
    assert_eq!(s["bytes_fetched"].as_u64().unwrap() - b0, 96 << 20);
    assert!(
        requests <= 12,
        "{requests} requests for 96 MiB read sequentially"
    );
}

/// A throttling proxy in front of the Apache server that `args` (an add-root's remote
/// arguments) name, and the same arguments pointing at the proxy.
async fn via_proxy(args: &[String]) -> (proxy::Proxy, Vec<String>) {
    let port = Url::parse(&env("SKYFILL_TEST_APACHE"))
        .unwrap()
        .port()
        .unwrap();
    let proxy = proxy::Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut via = args.to_vec();
    via[0] = args[0].replace(&format!("127.0.0.1:{port}"), &proxy.addr.to_string());
    (proxy, via)
}

/// Adds a root holding one 48 MiB file behind a proxy throttled to 512 KiB/s per connection,
/// and reads its first 3 MiB in order (checking them): the reader's read-ahead window (about
/// 9 MiB past its first chunk, in two pieces) takes some 10 s to arrive, and the reader stops
/// some 6 s in, so the window is still arriving, by seconds, when this returns. Returns the
/// proxy (throttled), the file and its bytes.
async fn window_left_arriving(
    d: &Daemon,
    fs: &LoopFs,
    seed: u64,
) -> (proxy::Proxy, PathBuf, Vec<u8>) {
    let mut files = BTreeMap::new();
    files.insert("movie.bin".to_string(), data(seed, 48 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let (proxy, via) = via_proxy(&args).await;
    let root = fs.mnt.join("r");
    add_root(d, &root, &via, &secret);
    proxy.set(proxy::Mode::Throttle(512 << 10), u64::MAX);
    let f = root.join("movie.bin");
    let o = sh_ok(&format!(
        "dd if='{}' bs=1M count=3 status=none | sha256sum",
        f.display()
    ));
    let bytes = files.remove("movie.bin").unwrap();
    assert_eq!(
        o.split_whitespace().next().unwrap(),
        sha256_bytes(&bytes[..3 << 20])
    );
    (proxy, f, bytes)
}

/// A sequential reader leaves a read-ahead window downloading in the background; an editor
/// then saves over the file in place (`open(O_TRUNC)`, which raises no event, and a write).
/// The download stops: no stale server bytes land after the new content.
#[tokio::test(flavor = "multi_thread")]
async fn saving_over_a_file_stops_its_background_download() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let (proxy, f, _) = window_left_arriving(&d, &fs, 41).await;
    std::fs::write(&f, b"new content\n").unwrap();
    // Long enough for the whole window to have arrived, had it gone on.
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.set(proxy::Mode::Pass, u64::MAX);
    assert_eq!(std::fs::read(&f).unwrap(), b"new content\n");
    let log = d.log();
    assert!(
        log.contains("the file changed under the download"),
        "the download was not stopped: {log}"
    );
    // The stopped pieces never landed whole: only the first chunk (1 MiB, fetched before the
    // reader was seen to be sequential) was counted; each piece of the window is 4 MiB or more.
    let fetched = d.stats()["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched < 4 << 20,
        "{fetched} bytes fetched: the window went on after the save"
    );
}

/// A sequential reader leaves a read-ahead window downloading in the background and goes
/// away; the user frees the file meanwhile. The free stops the daemon's own download (which
/// held the file open) instead of failing as "open by another process", no byte lands after
/// it, and the file reads right afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn freeing_a_file_stops_its_background_download() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let (proxy, f, bytes) = window_left_arriving(&d, &fs, 43).await;
    let fetched = d.stats()["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched < 4 << 20,
        "{fetched} bytes fetched: the window was no longer arriving when the free came"
    );
    d.cli(&["free", f.to_str().unwrap()]);
    assert_eq!(allocated(&f), 0, "not freed");
    assert!(
        d.log()
            .contains("stopped the file's background downloads to free it"),
        "the free did not stop the window's download: {}",
        d.log()
    );
    // Long enough for the whole window to have arrived, had it gone on: nothing lands.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(allocated(&f), 0, "bytes landed after the free");
    proxy.set(proxy::Mode::Pass, u64::MAX);
    assert_eq!(sha256(&f).unwrap(), sha256_bytes(&bytes));
}

/// 32 processes read one online-only file at once: it is downloaded once.
#[tokio::test(flavor = "multi_thread")]
async fn many_readers_one_download() {
    let fs = LoopFs::new("xfs", 1024);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("shared.bin".to_string(), data(21, 48 << 20));
    files.insert("small.bin".to_string(), data(22, 3 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    for k in ["shared.bin", "small.bin"] {
        let before = d.stats()["bytes_fetched"].as_u64().unwrap();
        let f = root.join(k);
        let kids: Vec<_> = (0..32)
            .map(|_| {
                std::process::Command::new("sha256sum")
                    .arg(&f)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in kids {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            assert_eq!(
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap(),
                sha256_bytes(&files[k])
            );
        }
        let fetched = d.stats()["bytes_fetched"].as_u64().unwrap() - before;
        assert_eq!(
            fetched,
            files[k].len() as u64,
            "{k} was downloaded more than once"
        );
    }
}

/// Server stopped, stalled, answering 500, dying mid-body: the reader gets an errno within
/// the bound; afterwards a read succeeds with the right bytes.
#[tokio::test(flavor = "multi_thread")]
async fn faults_give_an_errno_in_time_then_recover() {
    use proxy::{Mode, Proxy};
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(Some(
        // The retry budget is longer than the hydration timeout: the timeout ends a stalled
        // read (each attempt gives up after 2 s idle and is retried until then).
        serde_json::json!({"timeout_secs": 6, "retry_budget_secs": 10, "idle_timeout_secs": 2}),
    ));
    let mut files = BTreeMap::new();
    for m in ["stopped", "stalled", "e500", "midbody"] {
        files.insert(format!("{m}.bin"), data(m.len() as u64, 6 << 20));
    }
    let (args, _) = upload(&Server::Apache, &files).await;
    let apache = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", apache.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    let via = args[0].replace(
        &format!("127.0.0.1:{}", apache.port().unwrap()),
        &proxy.addr.to_string(),
    );
    let root = fs.mnt.join("r");
    add_root(&d, &root, &[via], &None);
    for (name, mode) in [
        ("stopped", Mode::Drop),
        ("stalled", Mode::Stall),
        ("e500", Mode::Error500),
        ("midbody", Mode::CutAfter(200_000)),
    ] {
        let f = root.join(format!("{name}.bin"));
        proxy.set(mode, u64::MAX);
        let t = Instant::now();
        let err = tokio::task::spawn_blocking({
            let f = f.clone();
            move || std::fs::read(&f)
        })
        .await
        .unwrap()
        .expect_err("reading through a broken server must fail");
        let took = t.elapsed();
        eprintln!("{name}: errno after {took:?}");
        // The configured timeout is 6 s: a stalled server fails the read at the timeout (not
        // before), every fault within it plus one retry's margin.
        if name == "stalled" {
            assert!(
                took >= Duration::from_secs(5),
                "{name}: errno after {took:?}, before the 6 s timeout"
            );
        }
        assert!(
            took < Duration::from_secs(12),
            "{name}: errno after {took:?} with a 6 s timeout"
        );
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        let st = d.cli(&["status", f.to_str().unwrap()]);
        assert_ne!(
            st["state"], "local",
            "{name}: a failed fill must not count as local"
        );
        proxy.set(Mode::Pass, 0);
        // After the server is back, a read succeeds (once the short offline hold is over).
        let t = Instant::now();
        let got = loop {
            let f = f.clone();
            match tokio::task::spawn_blocking(move || std::fs::read(&f))
                .await
                .unwrap()
            {
                Ok(b) => break b,
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{name}: reads still fail 30 s after the server came back: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            got == files[&format!("{name}.bin")],
            "{name}: wrong bytes after recovery"
        );
    }
}

/// kill -9 in the middle of downloads, 8 times: of the worker alone (the keeper starts the
/// next), and of keeper and worker together with the group parked in the fd store (as under
/// systemd). The server sits behind a slow link, and each kill comes only once a file is
/// partly written and its reader is still waiting, so every kill lands mid-download. Readers
/// see the right bytes or an I/O error, never zeros, and some see the bytes; afterwards each
/// file's state matches its blocks, and a read makes it local with the right bytes.
#[tokio::test(flavor = "multi_thread")]
async fn killing_the_worker_never_shows_zeros() {
    use proxy::Mode;
    let fs = LoopFs::new("ext4", 1024);
    let mut store = hsm::FdStore::new();
    let mut d = Daemon::start(None);
    d.stop();
    store.spawn(&mut d);
    let mut files = BTreeMap::new();
    files.insert("a.bin".to_string(), data(31, 48 << 20));
    files.insert("b.bin".to_string(), data(32, 24 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let (proxy, via) = via_proxy(&args).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &via, &secret);
    // 4 MiB/s on each connection: a file takes seconds to arrive.
    proxy.set(Mode::Throttle(4 << 20), u64::MAX);
    let answered = |d: &Daemon| {
        d.log()
            .matches("answered an event of the previous worker")
            .count()
    };
    let (mut ok, mut errs, mut resumed) = (0, 0, 0);
    for i in 0..8 {
        let whole_service = i % 2 == 1;
        for k in files.keys() {
            let f = root.join(k);
            // Also when online-only: a killed worker may have written bytes it never
            // recorded (never served: the record says they are missing); free reclaims them.
            d.cli(&["free", f.to_str().unwrap()]);
            if allocated(&f) > 0 {
                let log = d.log();
                let tail: Vec<&str> = log.lines().rev().take(150).collect();
                panic!(
                    "round {i}: {k} was not freed; log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        let before = answered(&d);
        let readers: Vec<_> = files
            .keys()
            .map(|k| {
                std::process::Command::new("sha256sum")
                    .arg(root.join(k))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Kill only once the big file is partly there and its reader still waits.
        let big = root.join("a.bin");
        let size = files["a.bin"].len() as u64;
        let t = Instant::now();
        while allocated(&big) <= 1 << 20 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "round {i}: the download never started; log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let old = d.worker_pid().unwrap();
        if whole_service {
            d.kill_all();
        } else {
            // SAFETY: killing the worker on purpose.
            unsafe { libc::kill(old as i32, libc::SIGKILL) };
            hsm::wait_dead(old);
        }
        // The dead worker wrote part of the file: the kill landed mid-download.
        let at_kill = allocated(&big);
        assert!(
            at_kill < size,
            "round {i}: a.bin was complete ({at_kill} bytes) when the kill landed"
        );
        if whole_service {
            // No keeper, no worker: the reader waits on the parked group.
            wait_blocked_in_fanotify(readers[0].id(), &format!("round {i}: reader of a.bin"));
            store.spawn(&mut d);
        } else {
            d.wait_ready(Some(old));
        }
        for (mut c, k) in readers.into_iter().zip(files.keys()) {
            // A reader must finish (bytes or an errno), never hang: 120 s is far beyond a
            // restart plus the download.
            let t = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if t.elapsed() > Duration::from_secs(120) {
                    let _ = c.kill();
                    let log = d.log();
                    let tail: Vec<&str> = log.lines().rev().take(150).collect();
                    panic!(
                        "round {i}: a reader of {k} is still blocked after 120 s; log tail:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let o = c.wait_with_output().unwrap();
            if o.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .next()
                        .unwrap(),
                    sha256_bytes(&files[k]),
                    "round {i}: {k} read wrong bytes"
                );
                ok += 1;
            } else {
                let e = String::from_utf8_lossy(&o.stderr);
                assert!(
                    e.contains("Input/output error")
                        || e.contains("Resource temporarily unavailable"),
                    "round {i}: {k} failed with something other than an I/O error: {e}"
                );
                errs += 1;
            }
        }
        if answered(&d) > before {
            resumed += 1;
        }
    }
    eprintln!(
        "reads: {ok} right, {errs} errno; {resumed} of 8 rounds finished a dead worker's event"
    );
    assert!(ok > 0, "no reader ever got its bytes across a kill");
    assert!(
        resumed > 0,
        "no round left an event for the next worker to finish: the kills did not land inside a hydration"
    );
    proxy.set(Mode::Pass, 0);
    for (k, v) in &files {
        let f = root.join(k);
        let st = d.cli(&["status", f.to_str().unwrap()]);
        let state = st["state"].as_str().unwrap().to_string();
        let have = allocated(&f);
        let size = v.len() as u64;
        match state.as_str() {
            "local" => assert!(have >= size, "{k}: local with {have} of {size} bytes"),
            "online-only" => {
                // Unrecorded bytes of a killed worker are reclaimed by free (see above).
                d.cli(&["free", f.to_str().unwrap()]);
                let have = allocated(&f);
                assert!(have == 0, "{k}: online-only with {have} bytes after free");
            }
            "partial" => assert!(have > 0 && have < size, "{k}: partial with {have} bytes"),
            other => panic!("{k}: state {other} after the storm"),
        }
        assert_eq!(sha256(&f).unwrap(), sha256_bytes(v), "{k} after the storm");
        assert_eq!(
            d.cli(&["status", f.to_str().unwrap()])["state"],
            "local",
            "{k}: a full read leaves it local"
        );
    }
}

/// Delete the index, restart, and the state is rebuilt identically.
#[tokio::test(flavor = "multi_thread")]
async fn index_loss_is_rebuilt() {
    let fs = LoopFs::new("btrfs", 1024);
    let mut d = Daemon::start(None);
    let files = tree();
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    sha256(&root.join("dir/mib1")).unwrap();
    sha256(&root.join("one")).unwrap();
    let before = d.cli(&["status", root.to_str().unwrap()]);
    let file_before = d.cli(&["status", root.join("dir/mib1").to_str().unwrap()]);
    d.stop();
    std::fs::remove_dir_all(d.state.join("index")).unwrap();
    d.restart();
    assert_eq!(d.cli(&["status", root.to_str().unwrap()]), before);
    assert_eq!(
        d.cli(&["status", root.join("dir/mib1").to_str().unwrap()]),
        file_before
    );
    // After a full restart the placeholders are marked again and still hydrate.
    assert_eq!(
        sha256(&root.join("dir/deep/big64")).unwrap(),
        sha256_bytes(&files["dir/deep/big64"])
    );
}

/// Programs on the never-download list get EIO; files outside roots raise no events; a
/// root on a filesystem without pre-content events is refused; eviction is safe.
#[tokio::test(flavor = "multi_thread")]
async fn policy_outside_files_refusal_and_eviction() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("doc.bin".to_string(), data(41, 2 << 20));
    files.insert("keep.bin".to_string(), data(42, 2 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let doc = root.join("doc.bin");
    // An indexer by name: refused, logged, still online-only.
    let t = tempfile::tempdir().unwrap();
    let fake = t.path().join("tracker-extract-3");
    std::fs::copy("/usr/bin/cat", &fake).unwrap();
    let o = std::process::Command::new(&fake)
        .arg(&doc)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Input/output error"));
    assert_eq!(
        d.cli(&["status", doc.to_str().unwrap()])["state"],
        "online-only"
    );
    // Files outside the root on the same filesystem raise no event. The counter does count
    // events: reading a placeholder in the root moves it.
    let ev = d.stats()["events"].as_u64().unwrap();
    assert_eq!(
        std::fs::read(root.join("keep.bin")).unwrap(),
        files["keep.bin"]
    );
    let after_root_read = d.stats()["events"].as_u64().unwrap();
    assert!(
        after_root_read > ev,
        "reading a placeholder raised no counted event ({ev} before, {after_root_read} after)"
    );
    std::fs::write(fs.mnt.join("plain.txt"), b"plain").unwrap();
    let ev = d.stats()["events"].as_u64().unwrap();
    for _ in 0..100 {
        assert_eq!(std::fs::read(fs.mnt.join("plain.txt")).unwrap(), b"plain");
    }
    assert_eq!(
        d.stats()["events"].as_u64().unwrap(),
        ev,
        "files outside roots must not reach the daemon"
    );
    // tmpfs cannot deliver pre-content events: refused with a clear message.
    let o = d.try_cli(&["add-root", "/dev/shm/skyfill-refused", &args[0]]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pre-content"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir("/dev/shm/skyfill-refused");
    // Eviction: refused while open, done when closed, refused when modified.
    assert_eq!(sha256(&doc).unwrap(), sha256_bytes(&files["doc.bin"]));
    let held = std::fs::File::open(&doc).unwrap();
    let o = d.try_cli(&["free", doc.to_str().unwrap()]);
    assert!(!o.status.success(), "free must refuse a file that is open");
    drop(held);
    let r = d.cli(&["free", doc.to_str().unwrap()]);
    assert_eq!(r["files"], 1);
    assert_eq!(allocated(&doc), 0);
    assert_eq!(
        d.cli(&["status", doc.to_str().unwrap()])["state"],
        "online-only"
    );
    assert_eq!(sha256(&doc).unwrap(), sha256_bytes(&files["doc.bin"]));
    let keep = root.join("keep.bin");
    sh_ok(&format!("echo more >> '{}'", keep.display()));
    let o = d.try_cli(&["free", keep.to_str().unwrap()]);
    assert!(!o.status.success(), "free must refuse a modified file");
    assert!(std::fs::read(&keep).unwrap().ends_with(b"more\n"));
}

/// Writes hydrate the whole file first; truncate through a writable fd, copy_file_range and
/// sendfile see the server's bytes.
#[tokio::test(flavor = "multi_thread")]
async fn writes_truncate_and_kernel_copies() {
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for k in ["w.bin", "t.bin", "cfr.bin", "sf.bin"] {
        files.insert(
            k.to_string(),
            data(k.len() as u64 + k.as_bytes()[0] as u64, 40 << 20),
        );
    }
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    // A 10-byte write in the middle of a 40 MiB online-only file: everything else intact.
    sh_ok(&format!(
        "python3 -c \"import os; fd=os.open('{}', os.O_RDWR); os.pwrite(fd, b'0123456789', 20<<20); os.close(fd)\"",
        root.join("w.bin").display()
    ));
    let mut want = files["w.bin"].clone();
    want[20 << 20..(20 << 20) + 10].copy_from_slice(b"0123456789");
    assert!(
        std::fs::read(root.join("w.bin")).unwrap() == want,
        "write into a placeholder lost bytes"
    );
    // ftruncate through a writable fd keeps the head exactly.
    sh_ok(&format!(
        "python3 -c \"import os; fd=os.open('{}', os.O_RDWR); os.ftruncate(fd, 5<<20); os.close(fd)\"",
        root.join("t.bin").display()
    ));
    assert!(
        std::fs::read(root.join("t.bin")).unwrap() == files["t.bin"][..5 << 20],
        "truncate"
    );
    // copy_file_range within the filesystem and sendfile to another file.
    sh_ok(&format!(
        "python3 -c \"import os; s=os.open('{src}', os.O_RDONLY); t=os.open('{dst}', os.O_WRONLY|os.O_CREAT, 0o644); n=os.path.getsize('{src}'); o=0\nwhile o<n: o+=os.copy_file_range(s, t, n-o)\"",
        src = root.join("cfr.bin").display(),
        dst = fs.mnt.join("cfr.copy").display()
    ));
    assert!(
        std::fs::read(fs.mnt.join("cfr.copy")).unwrap() == files["cfr.bin"],
        "copy_file_range"
    );
    sh_ok(&format!(
        "python3 -c \"import os; s=os.open('{src}', os.O_RDONLY); t=os.open('{dst}', os.O_WRONLY|os.O_CREAT, 0o644); n=os.path.getsize('{src}'); o=0\nwhile o<n: o+=os.sendfile(t, s, o, n-o)\"",
        src = root.join("sf.bin").display(),
        dst = fs.mnt.join("sf.copy").display()
    ));
    assert!(
        std::fs::read(fs.mnt.join("sf.copy")).unwrap() == files["sf.bin"],
        "sendfile"
    );
}

/// The socket is a security boundary: requests are authorized by the peer's uid, paths are
/// confined to the caller's roots, and broken messages get a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn socket_authorizes_by_uid_and_survives_bad_input() {
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("secret.txt".to_string(), b"root only".to_vec());
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("rootsroot");
    add_root(&d, &root, &args, &secret);
    // A copy of the CLI where user nobody can run it, wherever the checkout lives.
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        bin.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cli = bin.path().join("skyfill");
    std::fs::copy(env!("CARGO_BIN_EXE_skyfill"), &cli).unwrap();
    let cli = cli.display();
    let as_nobody = |a: &str| {
        sh(&format!(
            "runuser -u nobody -- '{cli}' --socket '{}' --json {a}",
            d.socket.display()
        ))
    };
    let o = as_nobody(&format!("status '{}'", root.join("secret.txt").display()));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not in one of your sync roots"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = as_nobody(&format!("free '{}'", root.display()));
    assert!(!o.status.success());
    let o = as_nobody("roots");
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "");
    // A file:// remote the caller does not own, and a local dir the caller does not own.
    std::fs::create_dir(fs.mnt.join("mine")).unwrap();
    sh_ok(&format!("chown nobody '{}'", fs.mnt.join("mine").display()));
    // /root is not even readable for nobody: the kernel refuses (the daemon opens the share
    // as the caller); /etc is readable but not nobody's: the owner check refuses.
    let o = as_nobody(&format!(
        "add-root '{}' file:///root",
        fs.mnt.join("mine/c").display()
    ));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = as_nobody(&format!(
        "add-root '{}' file:///etc",
        fs.mnt.join("mine/c2").display()
    ));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not your directory"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = as_nobody(&format!(
        "add-root '{}' {}",
        fs.mnt.join("theirs").display(),
        args[0]
    ));
    assert!(!o.status.success());
    // The folder would be made as nobody in a folder of root's: the kernel refuses.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Broken messages: clear errors; a malformed frame closes only its connection; refusals
    // keep the connection usable; the daemon survives.
    let out = sh_ok(&format!(
        "python3 - '{}' <<'PY'\nimport socket, sys, json\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\nf.write(b'{{not json\\n'); f.flush(); print(f.readline().decode().strip()); assert f.readline() == b''\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\nfor line in [b'{{\"id\":1,\"op\":\"stats\"}}\\n', b'{{\"id\":2,\"op\":\"hello\",\"version\":99,\"client\":\"t\"}}\\n', b'{{\"id\":3,\"op\":\"hello\",\"version\":1,\"client\":\"t\"}}\\n', b'{{\"id\":4,\"op\":\"free\",\"path\":\"/etc/../etc/passwd\"}}\\n', b'{{\"id\":5,\"op\":\"stats\"}}\\n']:\n    f.write(line); f.flush(); print(f.readline().decode().strip())\nPY",
        d.socket.display()
    ));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["error"]["code"], "bad_request");
    assert_eq!(lines[1]["error"]["code"], "bad_request"); // hello first
    assert_eq!(lines[2]["error"]["code"], "version_mismatch");
    assert_eq!(lines[3]["ok"], true);
    assert_eq!(lines[4]["error"]["code"], "not_a_root");
    assert_eq!(lines[5]["ok"], true);
}

/// The packaged service keeps the fanotify group in systemd's fd store. Acting as systemd
/// (a notify socket, then `LISTEN_FDS` for the next start): keeper and worker are killed -9
/// together; a reader of an online-only file waits instead of reading zeros, and gets the
/// right bytes once the next keeper takes the stored group back.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_of_the_whole_service_keeps_readers_waiting_through_the_fd_store() {
    let fs = LoopFs::new("ext4", 512);
    let mut store = hsm::FdStore::new();
    let mut d = Daemon::start(None);
    d.stop();
    store.spawn(&mut d);

    let mut files = BTreeMap::new();
    files.insert("big.bin".to_string(), data(41, 12 << 20));
    let (args, secret) = upload(&Server::S3s, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let f = root.join("big.bin");
    assert_eq!(
        d.cli(&["status", f.to_str().unwrap()])["state"],
        "online-only"
    );

    // The service dies as a whole; only "systemd" (this test) still holds the group.
    d.kill_all();
    let mut reader = std::process::Command::new("sha256sum")
        .arg(&f)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read happens while no daemon runs: the reader is held by the parked group.
    wait_blocked_in_fanotify(reader.id(), "the reader with no daemon running");
    assert!(
        reader.try_wait().unwrap().is_none(),
        "with no daemon running, a reader of an online-only file finished instead of waiting"
    );

    // The next start: the stored descriptor at fd 3, LISTEN_PID set to the keeper's own pid.
    store.spawn(&mut d);
    let t = Instant::now();
    while reader.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the reader is still blocked 120 s after the restart; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "reader failed after the restart");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap(),
        sha256_bytes(&files["big.bin"]),
        "the reader saw other bytes than the server's"
    );
    assert!(
        d.log().contains("took the fanotify group back"),
        "the new keeper did not adopt the stored group; log:\n{}",
        d.log()
    );
}

/// An orderly stop (SIGTERM to the keeper with no service manager holding the group) refuses
/// the reads still waiting for bytes with EAGAIN (closing the group would let them read
/// zeros); started again, the daemon serves the bytes. `doctor` says whether the kernel gate
/// is active, and why not.
#[tokio::test(flavor = "multi_thread")]
async fn an_orderly_stop_refuses_waiting_readers_never_zeros() {
    use proxy::Mode;
    let fs = LoopFs::new("ext4", 512);
    let mut d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_string(), data(51, 16 << 20));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let (proxy, via) = via_proxy(&args).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &via, &secret);
    let gate = gate_line(&d);
    assert!(
        gate.contains("the kernel gate is active")
            || gate.contains("the kernel gate is not active ("),
        "doctor: {gate}"
    );
    // A gate the kernel refused leaves nothing pinned (its map is pinned before the refusal).
    assert!(
        gate.contains("the kernel gate is active") || !d.gate.exists(),
        "the refused gate left {} behind",
        d.gate.display()
    );
    let big = root.join("big.bin");
    // A reader waits for bytes arriving at 256 KiB/s when the service is stopped.
    proxy.set(Mode::Throttle(256 << 10), u64::MAX);
    let reader = std::process::Command::new("sha256sum")
        .arg(&big)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while allocated(&big) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the download never started; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_blocked_in_fanotify(reader.id(), "the reader of big.bin");
    d.stop();
    let out = reader.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("Resource temporarily unavailable"),
        "the waiting reader was not refused with EAGAIN at the stop (status {}, stdout {}, stderr {said}); log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    assert!(
        d.log().contains("refused the accesses still waiting"),
        "log:\n{}",
        d.log()
    );
    // Back: the file that was partly there reads right.
    proxy.set(Mode::Pass, u64::MAX);
    d.restart();
    assert_eq!(sha256(&big).unwrap(), sha256_bytes(&files["big.bin"]));
    drop(proxy);
}

/// `doctor`'s finding about the kernel gate (its JSON line).
fn gate_line(d: &Daemon) -> String {
    let o = d.try_cli(&["doctor"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("kernel gate"))
        .unwrap_or_else(|| panic!("doctor says nothing of the kernel gate: {text}"))
        .to_string()
}

/// What `cmd` (a shell command reading `f`) says: its stdout on success, or its stderr.
fn read_with(cmd: &str, f: &Path) -> Result<String, String> {
    let o = sh(&cmd.replace("{}", &f.display().to_string()));
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// With the daemon stopped (SIGTERM to the keeper) or killed whole (SIGKILL, no service
/// manager), the kernel gate refuses to open a placeholder: programs get EAGAIN at once,
/// never zeros; a complete file opens as ever. Started again, the daemon serves the bytes.
/// Needs a kernel that loads BPF LSM programs: the CI machine's answers EPERM to every
/// trampoline program (`bpftool feature probe`: "program_type lsm is NOT available"), so this
/// runs by hand: `cargo test --features integration --test hydration -- --ignored gate`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel that loads BPF LSM programs (not the CI machine's: see doc/SEMANTICS.md)"]
async fn the_kernel_gate_refuses_placeholders_while_no_daemon_serves() {
    let fs = LoopFs::new("ext4", 512);
    let mut d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_string(), data(52, 4 << 20));
    files.insert("note.txt".to_string(), b"a small file\n".to_vec());
    files.insert("tool.py".to_string(), b"print('ran')\n".to_vec());
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let gate = gate_line(&d);
    assert!(
        gate.contains("the kernel gate is active"),
        "{gate}; log:\n{}",
        d.log()
    );
    assert!(d.gate.join("gate").exists() && d.gate.join("placeholders").exists());
    let big = root.join("big.bin");
    let note = root.join("note.txt");
    let check_refused = |when: &str| {
        for (f, cmd) in [
            (&note, "cat {}"),
            (&big, "sha256sum {}"),
            (&big, "python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(sum(m[:4096]))' {}"),
            (&root.join("tool.py"), "python3 {}"),
        ] {
            let t = Instant::now();
            match read_with(cmd, f) {
                Ok(out) => panic!("{when}: `{cmd}` on {} read {out:?} with no daemon", f.display()),
                Err(e) => assert!(
                    e.contains("Resource temporarily unavailable"),
                    "{when}: `{cmd}` failed otherwise than with EAGAIN: {e}"
                ),
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{when}: the refusal was not at once");
        }
        // Metadata needs no bytes: the placeholder is listed with its size.
        assert_eq!(std::fs::metadata(&big).unwrap().len(), 4 << 20);
    };
    d.stop();
    check_refused("after SIGTERM to the keeper");
    d.restart();
    assert_eq!(sha256(&big).unwrap(), sha256_bytes(&files["big.bin"]));
    assert_eq!(std::fs::read(&note).unwrap(), files["note.txt"]);
    for f in [&big, &note] {
        d.cli(&["free", f.to_str().unwrap()]);
        assert_eq!(allocated(f), 0);
    }
    d.kill_all();
    check_refused("after SIGKILL of keeper and worker");
    d.restart();
    assert_eq!(sha256(&big).unwrap(), sha256_bytes(&files["big.bin"]));
    assert_eq!(
        read_with("python3 {}", &root.join("tool.py")).unwrap(),
        "ran\n"
    );
    // A complete file opens with no daemon: the gate refuses placeholders only.
    d.stop();
    assert_eq!(sha256(&big).unwrap(), sha256_bytes(&files["big.bin"]));
}

/// A program waiting for the daemon's answer never holds the folder watcher's filesystem
/// mark: closing the watcher (what a worker's exit does) goes on at once while a reader of a
/// placeholder waits, because the pre-content group's own mark comes first in the
/// filesystem's mark list (`Group::shield`). Without it the close waits until the reader is
/// answered, which only the next worker would do (doc/BENCHMARKS.md, #19).
#[test]
fn closing_the_watcher_never_waits_for_a_reader() {
    use skyfill::hsm::fanotify::{Group, Reply};
    use skyfill::sync::watch::Watcher;
    use std::os::fd::AsFd;
    let fs = LoopFs::new("ext4", 64);
    let f = fs.mnt.join("ph");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(1 << 20).unwrap();
    let group = Group::new().unwrap_or_else(|e| panic!("fanotify_init: {e} (needs root)"));
    group.mark_inode(file.as_fd()).unwrap();
    let dir = std::fs::File::open(&fs.mnt).unwrap();
    let watcher = Watcher::new().unwrap();
    watcher.watch(dir.as_fd(), &|fd| group.shield(fd)).unwrap();
    let mut reader = std::process::Command::new("cat")
        .arg(&f)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let ev = loop {
        if let Some(ev) = group.read_events().unwrap().pop() {
            break ev;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no event from the reader"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(watcher);
        let _ = tx.send(());
    });
    // 10 s: closing a group takes microseconds; the failure this guards against is forever.
    let closed = rx.recv_timeout(Duration::from_secs(10)).is_ok();
    group.respond(&ev, Reply::Deny(libc::EIO)).unwrap();
    let status = reader.wait().unwrap();
    assert!(
        closed,
        "closing the watcher waited for a reader of the pre-content group"
    );
    assert!(!status.success(), "the reader was refused, so cat fails");
}

/// The filesystem marks of process `pid`'s fanotify groups, as `/proc/PID/fdinfo` lists
/// them: (the kernel's device number, mask, ignore mask) of each.
fn filesystem_marks(pid: u32) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            // "fanotify sdev:%x mflags:%x mask:%x ignored_mask:%x" (fs/notify/fdinfo.c)
            let Some(rest) = line.strip_prefix("fanotify sdev:") else {
                continue;
            };
            let field = |name: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0)
            };
            let sdev = rest
                .split_whitespace()
                .next()
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            out.push((sdev, field("mask:"), field("ignored_mask:")));
        }
    }
    out
}

/// A root's filesystem carries the watcher's filesystem mark (close-after-write) and, ahead
/// of it, the pre-content group's ignore-only shield; removing the filesystem's last root
/// takes both away, so its files cost nothing for Skyfill any more.
#[tokio::test(flavor = "multi_thread")]
async fn the_filesystem_marks_come_and_go_with_the_filesystems_last_root() {
    use std::os::unix::fs::MetadataExt;
    let fs = LoopFs::new("ext4", 64);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("a.txt".to_string(), b"a\n".to_vec());
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let dev = std::fs::metadata(&fs.mnt).unwrap().dev();
    let kdev = (libc::major(dev) as u64) << 20 | libc::minor(dev) as u64;
    let ours = |d: &Daemon| -> Vec<(u64, u64, u64)> {
        filesystem_marks(d.worker_pid().unwrap())
            .into_iter()
            .filter(|m| m.0 == kdev)
            .collect()
    };
    let watched = |m: &Vec<(u64, u64, u64)>| {
        m.iter()
            .any(|&(_, mask, _)| mask & libc::FAN_CLOSE_WRITE != 0)
    };
    let t = Instant::now();
    while !watched(&ours(&d)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no filesystem mark for close-after-write on the root's filesystem: {:?}; log:\n{}",
            ours(&d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let marks = ours(&d);
    assert!(
        marks
            .iter()
            .any(|&(_, mask, ignored)| mask == 0 && ignored & libc::FAN_OPEN_EXEC != 0),
        "no shield on the root's filesystem: {marks:?}"
    );
    // A file written in the root is still seen and uploaded (through the filesystem mark).
    std::fs::write(root.join("new.txt"), b"written here\n").unwrap();
    let t = Instant::now();
    while d.cli(&["status", root.join("new.txt").to_str().unwrap()])["sync"] != "synced" {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "new.txt was not uploaded; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.cli(&["remove-root", "--keep-local", root.to_str().unwrap()]);
    assert_eq!(
        ours(&d),
        vec![],
        "filesystem marks left after the last root went"
    );
}

/// A root inside a btrfs subvolume: the kernel refuses filesystem marks there (`EXDEV`: the
/// subvolume's fsid is not its superblock's), so that filesystem's folders watch their files
/// instead. Placeholders still hydrate, and a file written again in a nested folder is still
/// seen at once (not at the next poll).
#[tokio::test(flavor = "multi_thread")]
async fn a_root_in_a_btrfs_subvolume_falls_back_to_folder_marks() {
    let fs = LoopFs::new("btrfs", 256);
    let sub = fs.mnt.join("sub");
    sh_ok(&format!(
        "btrfs subvolume create {} >/dev/null",
        sub.display()
    ));
    let d = Daemon::start(None);
    // No poll within the test: what uploads the changes below is the watcher's events.
    d.cli(&["config", "set", "poll-interval", "3600"]);
    let mut files = BTreeMap::new();
    files.insert("a.txt".to_string(), b"a\n".to_vec());
    files.insert("d/e/b.bin".to_string(), data(41, 300_000));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = sub.join("r");
    add_root(&d, &root, &args, &secret);
    assert_eq!(
        sha256(&root.join("d/e/b.bin")).unwrap(),
        sha256_bytes(&files["d/e/b.bin"]),
        "a placeholder in the subvolume hydrates"
    );
    // A new file in a nested folder (its folder's create event), then that file written
    // again (only a close-after-write on a child tells).
    let until_on_server = |want: &'static [u8]| {
        let args = args.clone();
        let d = &d;
        async move {
            let t = Instant::now();
            loop {
                let on_server = remotes::server_files(&Server::Apache, &args).await;
                if on_server.get("d/e/new.txt").map(Vec::as_slice) == Some(want) {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "d/e/new.txt with {:?} was not uploaded from the subvolume: server has {:?}; log:\n{}",
                    String::from_utf8_lossy(want),
                    on_server.get("d/e/new.txt").map(|b| String::from_utf8_lossy(b).into_owned()),
                    d.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    std::fs::write(root.join("d/e/new.txt"), b"written here\n").unwrap();
    until_on_server(b"written here\n").await;
    std::fs::write(root.join("d/e/new.txt"), b"and written again\n").unwrap();
    until_on_server(b"and written again\n").await;
    assert!(
        d.log().contains("cannot watch the filesystem as a whole"),
        "the filesystem mark was not refused in a btrfs subvolume, so the fallback went untested; log:\n{}",
        d.log()
    );
}

/// The gate's keys name the inode as the kernel does: the generation read from a file handle
/// (no open) is the one `FS_IOC_GETVERSION` answers, on each filesystem with pre-content events.
#[test]
fn gate_keys_carry_the_kernels_inode_generation() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    for fstype in ["ext4", "xfs", "btrfs"] {
        let fs = LoopFs::new(fstype, 320);
        for i in 0..20 {
            let p = fs.mnt.join(format!("f{i}"));
            let f = std::fs::File::create(&p).unwrap();
            let (htype, handle) = skyfill::hsm::fanotify::handle_of(f.as_fd()).unwrap();
            let gen = skyfill::hsm::gate::generation(htype, &handle).unwrap_or_else(|| {
                panic!("{fstype}: no generation in a handle of type {htype:#x}")
            });
            let mut want: libc::c_long = 0;
            // SAFETY: FS_IOC_GETVERSION writes one long through the pointer, on our own fd.
            let r = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0x8008_7601u64 as _, // FS_IOC_GETVERSION
                    &mut want,
                )
            };
            assert_eq!(
                r,
                0,
                "{fstype}: FS_IOC_GETVERSION: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(gen, want as u32, "{fstype}: f{i}");
            assert!(f.metadata().unwrap().ino() > 0);
        }
    }
}

/// A tree written straight into Apache's data folder at a new scratch place: `folders`
/// folders `dNNN` of `per` files `fNNNN` holding "i/j\n", plus `extra` (path, content).
fn apache_tree(folders: u64, per: u64, extra: &[(String, String)]) -> (String, PathBuf) {
    let s = scratch();
    let dir = Path::new(&env("SKYFILL_TEST_APACHE_DIR"))
        .join("data")
        .join(&s);
    for i in 0..folders {
        let sub = dir.join(format!("d{i:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for j in 0..per {
            std::fs::write(sub.join(format!("f{j:04}")), format!("{i}/{j}\n")).unwrap();
        }
    }
    for (p, c) in extra {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    sh_ok(&format!("chown -R www-data:www-data {}", dir.display()));
    (s, dir)
}

/// A pass replays a local rename on the server (a WebDAV MOVE) while a program reads the
/// renamed placeholder through a slow link: the reader gets every byte. (A window of pieces
/// planned between the server's move and the record's new path finds the old path gone; the
/// hydrator then fetches it from the path the pass records. That window is milliseconds
/// wide, so this test does not force it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_read_goes_on_while_a_pass_moves_its_file_on_the_server() {
    use proxy::Mode;
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    // Above the size hydrated whole at open: read in windows of pieces, one GET each.
    let big: String = (0..(48u32 << 20) / 16)
        .map(|i| format!("{i:015}\n"))
        .collect();
    let (s, _dir) = apache_tree(1, 1, &[("big.txt".to_string(), big.clone())]);
    let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let args = vec![format!("dav://127.0.0.1:{}/dav/{s}", u.port().unwrap())];
    let (proxy, via) = via_proxy(&args).await;
    let root = fs.mnt.join("r");
    d.cli(&["add-root", root.to_str().unwrap(), &via[0]]);
    d.cli(&["sync", root.to_str().unwrap()]);
    // Add-root wrote the sync base: no pass after it had anything to do (a pass that does
    // something logs "sync pass").
    let log = d.log();
    assert!(
        log.contains("full pass") && !log.contains("sync pass root="),
        "a pass after add-root found work (the sync base was not written?); log:\n{log}"
    );
    // Paused, so that the rename is replayed when the test says, mid-read.
    d.cli(&["pause", root.to_str().unwrap()]);
    std::fs::rename(root.join("big.txt"), root.join("d000/moved.txt")).unwrap();
    proxy.set(Mode::Throttle(1 << 20), u64::MAX);
    let path = root.join("d000/moved.txt");
    let reader = std::thread::spawn(move || sha256(&path));
    std::thread::sleep(Duration::from_secs(2));
    d.cli(&["resume", root.to_str().unwrap()]);
    d.cli(&["sync", root.to_str().unwrap()]);
    assert!(
        !reader.is_finished(),
        "the read ended before the pass moved the file: this run shows nothing (is the proxy throttling?)"
    );
    let got = reader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
    assert_eq!(got, sha256_bytes(big.as_bytes()));
    let log = d.log();
    assert!(
        log.contains("renamed=1"),
        "the pass did not replay the rename; log:\n{log}"
    );
    proxy.set(Mode::Pass, u64::MAX);
}

/// add-root of a tree large enough that the first sync pass is due before the placeholders
/// are all made: the pass waits, every file is made exactly once and counted, nothing fails.
#[tokio::test(flavor = "multi_thread")]
async fn add_root_of_a_large_tree_makes_every_placeholder_once() {
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let (folders, per) = (40, 500);
    let (s, dir) = apache_tree(folders, per, &[]);
    let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let root = fs.mnt.join("big");
    let res = d.cli(&[
        "add-root",
        root.to_str().unwrap(),
        &format!("dav://127.0.0.1:{}/dav/{s}", u.port().unwrap()),
    ]);
    assert_eq!(res["files"], folders * per, "{res}");
    assert_eq!(res["dirs"], folders, "{res}");
    let mut n = 0;
    for i in 0..folders {
        n += std::fs::read_dir(root.join(format!("d{i:03}")))
            .unwrap()
            .count();
    }
    assert_eq!(n, (folders * per) as usize);
    // A pass after it finds nothing to do, and nothing failed along the way.
    let sync = d.cli(&["sync", root.to_str().unwrap()]);
    assert_eq!(sync["added"], 0, "{sync}");
    let log = d.log();
    assert!(
        !log.contains("File exists") && !log.contains("sync step failed"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("d007/f0123")).unwrap(),
        "7/123\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// While add-root is still listing a tree (the listing throttled to take seconds), a program
/// lists the root, then a folder the listing has not reached and one below it: each listing
/// waits until that folder is filled and shows all of it, and its files read right. After
/// add-root ends every file exists once, is counted once, and a pass finds nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_listed_while_its_root_is_added_is_complete() {
    use proxy::Mode;
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let (folders, per, deep) = (20u64, 150u64, 40u64);
    let extra: Vec<(String, String)> = (0..deep)
        .map(|j| {
            (
                format!("d{:03}/sub/g{j:03}", folders - 1),
                format!("deep {j}\n"),
            )
        })
        .collect();
    let (s, dir) = apache_tree(folders, per, &extra);
    let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let args = vec![format!("dav://127.0.0.1:{}/dav/{s}", u.port().unwrap())];
    let (proxy, via) = via_proxy(&args).await;
    // A slow link: the full listing (several hundred KiB) takes seconds, a folder's own
    // listing a fraction of one.
    proxy.set(Mode::Throttle(128 << 10), u64::MAX);
    let root = fs.mnt.join("big");
    let mut adding = std::process::Command::new(env!("CARGO_BIN_EXE_skyfill"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .args(["add-root", root.to_str().unwrap(), &via[0]])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !d.log().contains("populating (on_demand") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "add-root did not start populating; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let names = |p: &Path| -> Vec<String> {
        let o = sh_ok(&format!("ls -1 '{}'", p.display()));
        o.lines().map(str::to_string).collect()
    };
    let still_adding = |adding: &mut std::process::Child, what: &str| {
        assert!(
            adding.try_wait().unwrap().is_none(),
            "add-root ended before {what} was listed: this run shows nothing about folders \
             listed during add-root (is the proxy throttling?)"
        );
    };
    let top = names(&root);
    still_adding(&mut adding, "the root");
    // The thread that fills a folder a program waits on is favoured over the background
    // creators (a nice value 10 below theirs), which compete with it for the CPU.
    let nice_of = |comm: &str| -> Vec<i64> {
        let pid = d.worker_pid().expect("worker pid");
        let mut out = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let c = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if c.trim_end() == comm {
                let st = std::fs::read_to_string(t.path().join("stat")).unwrap();
                // Fields after the command's closing parenthesis: nice is the 19th field.
                let rest = &st[st.rfind(')').unwrap() + 2..];
                out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
            }
        }
        out
    };
    assert_eq!(
        nice_of("fill-on-demand"),
        vec![-10],
        "the on-demand filler's nice"
    );
    let creators = nice_of("populate");
    assert!(
        !creators.is_empty() && creators.iter().all(|n| *n == 0),
        "the background creators' nice: {creators:?}"
    );
    let want: Vec<String> = (0..folders).map(|i| format!("d{i:03}")).collect();
    assert_eq!(top, want, "the root listed during add-root");
    let lastdir = root.join(format!("d{:03}", folders - 1));
    let mut inside = names(&lastdir);
    still_adding(&mut adding, "the last folder");
    inside.retain(|n| n != "sub");
    assert_eq!(
        inside.len() as u64,
        per,
        "the last folder listed during add-root"
    );
    let sub = names(&lastdir.join("sub"));
    still_adding(&mut adding, "a folder below it");
    assert_eq!(sub.len() as u64, deep, "a folder below it: {sub:?}");
    assert_eq!(
        std::fs::read_to_string(lastdir.join("f0149")).unwrap(),
        format!("{}/149\n", folders - 1)
    );
    assert_eq!(
        std::fs::read_to_string(lastdir.join("sub/g039")).unwrap(),
        "deep 39\n"
    );
    let out = adding.wait_with_output().unwrap();
    proxy.set(Mode::Pass, u64::MAX);
    assert!(out.status.success(), "add-root failed; log:\n{}", d.log());
    let res: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res["files"], folders * per + deep, "{res}");
    assert_eq!(res["dirs"], folders + 1, "{res}");
    let log = d.log();
    assert!(
        log.matches("filled before its reader went on").count() >= 3,
        "the listings did not wait for their folders to be filled; log:\n{log}"
    );
    let mut n = 0;
    for i in 0..folders {
        n += std::fs::read_dir(root.join(format!("d{i:03}")))
            .unwrap()
            .count() as u64;
    }
    assert_eq!(n, folders * per + 1);
    // Counted once: the root's totals hold every file's bytes once, and a pass finds nothing
    // to do.
    let st = d.cli(&["status", root.to_str().unwrap()]);
    let bytes: u64 = (0..folders)
        .flat_map(|i| (0..per).map(move |j| format!("{i}/{j}\n").len() as u64))
        .chain((0..deep).map(|j| format!("deep {j}\n").len() as u64))
        .sum();
    assert_eq!(st["size"], bytes, "the root's totals: {st}");
    let sync = d.cli(&["sync", root.to_str().unwrap()]);
    assert_eq!(sync["added"], 0, "{sync}");
    assert!(
        !log.contains("File exists") && !log.contains("sync step failed"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

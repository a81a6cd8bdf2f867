//! Two-way sync end to end, as root: real `skyfilld` and CLI, loop-mounted ext4, real servers.
//! Two sync roots on one server play two machines: creates (seen by the folder watcher),
//! edits, deletes, file and folder renames, and simultaneous edits on both; they converge with
//! the expected conflict copies (Apache WebDAV and s3s-fs). The daemon is killed (-9) during
//! uploads and during a planned batch, repeatedly: nothing is lost or duplicated. A disk
//! budget holds while more files are read than fit, pinned files staying. A local edit syncs
//! by a pass over its folder alone. With the server
//! unreachable, local files keep working and edits upload by themselves once it is back.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{allocated, sh_ok, Daemon, LoopFs};
use remotes::{add_root, env, server_files, upload, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use suite::data;

/// Every regular file below `root` with its bytes (reading hydrates placeholders).
fn local_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn names(m: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    m.keys().cloned().collect()
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn sync(d: &Daemon, root: &Path) -> serde_json::Value {
    d.cli(&["sync", root.to_str().unwrap()])
}

/// Syncs the roots until a round changes nothing and no file is still being written; fails
/// when that does not happen within 90 s.
fn settle(d: &Daemon, roots: &[&Path]) {
    let t = Instant::now();
    loop {
        let mut quiet = true;
        let mut last = vec![];
        for r in roots {
            let v = sync(d, r);
            for k in [
                "uploaded",
                "added",
                "downloaded",
                "conflicts",
                "changed",
                "waiting",
            ] {
                quiet &= v[k].as_u64() == Some(0);
            }
            quiet &= v["errors"].as_array().is_some_and(|e| e.is_empty());
            last.push(v);
        }
        if quiet {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "sync did not settle within 90 s; last results: {last:?}\nlog:\n{}",
            d.log()
        );
        // Files still being written are looked at again once they settle (2 s).
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Syncs `root` once no local file of it is still being written; returns that pass's result.
fn sync_settled(d: &Daemon, root: &Path) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let v = sync(d, root);
        if v["waiting"].as_u64() == Some(0) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "files of {} still settling after 60 s: {v}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Requests Apache completed for `scratch` with one of `methods` (from its access log).
fn apache_ops(scratch: &str, methods: &[&str]) -> usize {
    let log =
        std::fs::read_to_string(PathBuf::from(env("SKYFILL_TEST_APACHE_DIR")).join("access.log"))
            .expect("Apache's access log");
    log.lines()
        .filter(|l| {
            let mut w = l.split(' ');
            let (m, path, status) = (w.next(), w.next(), w.next());
            m.is_some_and(|m| methods.contains(&m))
                && path.is_some_and(|p| p.starts_with(&format!("/dav/{scratch}/")))
                && status.is_some_and(|s| s.starts_with('2'))
        })
        .count()
}

fn host() -> String {
    skyfill::sync::conflict::hostname()
}

fn is_conflict_copy(name: &str, stem: &str, ext: &str) -> bool {
    let pre = format!("{stem} (conflicted copy ");
    let post = format!(" {}){ext}", host());
    if !name.starts_with(&pre) || !name.ends_with(&post) || name.len() < pre.len() + post.len() {
        return false;
    }
    let stamp = &name[pre.len()..name.len() - post.len()];
    let b = stamp.as_bytes();
    stamp.len() == 17
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && stamp[11..].chars().all(|c| c.is_ascii_digit())
}

async fn two_machines(server: Server) {
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    d.cli(&["config", "set", "poll-interval", "5"]);
    let mut seed = BTreeMap::new();
    seed.insert("docs/a.txt".to_string(), b"a v1\n".to_vec());
    seed.insert("docs/b.txt".to_string(), b"b v1\n".to_vec());
    seed.insert("photos/p.bin".to_string(), data(7, 300_000));
    seed.insert("photos/q.bin".to_string(), data(8, 200_000));
    // Keeps `photos` on S3, where a folder with no object in it is gone.
    seed.insert("photos/keep.txt".to_string(), b"keep\n".to_vec());
    let (args, secret) = upload(&server, &seed).await;
    let a = fs.mnt.join("A");
    let b = fs.mnt.join("B");
    add_root(&d, &a, &args, &secret);
    add_root(&d, &b, &args, &secret);
    assert!(
        allocated(&b.join("photos/p.bin")) == 0,
        "placeholders take no disk"
    );

    // 1. Created on A: the watcher uploads them; B's poll brings them as placeholders.
    std::fs::write(a.join("new.txt"), b"from A\n").unwrap();
    std::fs::create_dir(a.join("newdir")).unwrap();
    std::fs::write(a.join("newdir/x.bin"), data(9, 200_000)).unwrap();
    wait_for("A's new files on the server", 60, || async {
        let s = server_files(&server, &args).await;
        s.get("new.txt").map(Vec::as_slice) == Some(b"from A\n")
            && s.get("newdir/x.bin") == Some(&data(9, 200_000))
    })
    .await;
    wait_for("A's new files on B", 60, || async {
        b.join("newdir/x.bin").exists() && b.join("new.txt").exists()
    })
    .await;
    assert!(
        allocated(&b.join("newdir/x.bin")) == 0,
        "arrives online-only"
    );
    assert_eq!(std::fs::read(b.join("new.txt")).unwrap(), b"from A\n");

    // 2. B edits and deletes; A renames a file and a folder.
    let before_rename = remotes::client(&server, &args)
        .stat(&skyfill::model::RelPath::parse("new.txt").unwrap())
        .await
        .unwrap();
    std::fs::write(b.join("docs/a.txt"), b"a v2 from B\n").unwrap();
    std::fs::remove_file(b.join("photos/p.bin")).unwrap();
    std::fs::rename(a.join("new.txt"), a.join("docs/moved.txt")).unwrap();
    std::fs::rename(a.join("newdir"), a.join("renamed_dir")).unwrap();
    settle(&d, &[&a, &b]);
    let s = server_files(&server, &args).await;
    assert_eq!(
        names(&s),
        [
            "docs/a.txt",
            "docs/b.txt",
            "docs/moved.txt",
            "photos/keep.txt",
            "photos/q.bin",
            "renamed_dir/x.bin"
        ],
        "server after edits, deletes and renames"
    );
    assert_eq!(s["docs/a.txt"], b"a v2 from B\n");
    if matches!(server, Server::Apache) {
        // A MOVE keeps the inode, so Apache's ETag; a delete and upload would not.
        let after = remotes::client(&server, &args)
            .stat(&skyfill::model::RelPath::parse("docs/moved.txt").unwrap())
            .await
            .unwrap();
        assert!(
            after.version.same(&before_rename.version),
            "the rename travelled as a MOVE ({} vs {})",
            before_rename.version,
            after.version
        );
    }

    // 3. A renames an online-only file; the pass that moves it on the server (a MOVE, or
    // S3's copy and delete, which gives the object a new version) leaves it readable at once,
    // with no pass in between.
    d.cli(&["pause"]);
    assert_eq!(
        allocated(&a.join("photos/q.bin")),
        0,
        "q.bin is online-only"
    );
    std::fs::rename(a.join("photos/q.bin"), a.join("q.bin")).unwrap();
    let v = sync_settled(&d, &a);
    assert_eq!(v["changed"], 1, "the rename is replayed: {v}");
    assert_eq!(
        std::fs::read(a.join("q.bin")).unwrap(),
        data(8, 200_000),
        "the moved placeholder reads its bytes"
    );
    let v = sync_settled(&d, &a);
    assert_eq!(
        (&v["changed"], &v["added"], &v["uploaded"]),
        (&0.into(), &0.into(), &0.into()),
        "nothing left to do after the rename: {v}"
    );
    d.cli(&["resume"]);
    settle(&d, &[&a, &b]);

    // 4. Both edit docs/b.txt: A syncs first, so B's edit becomes the conflict copy. (Paused,
    // so that only the explicit syncs below run, in this order.)
    assert_eq!(std::fs::read(a.join("docs/b.txt")).unwrap(), b"b v1\n");
    assert_eq!(std::fs::read(b.join("docs/b.txt")).unwrap(), b"b v1\n");
    d.cli(&["pause"]);
    std::fs::write(a.join("docs/b.txt"), b"b from A\n").unwrap();
    std::fs::write(b.join("docs/b.txt"), b"b from B\n").unwrap();
    let v = sync_settled(&d, &a);
    assert_eq!(v["uploaded"], 1, "A uploads its edit: {v}");
    let v = sync_settled(&d, &b);
    assert_eq!(v["conflicts"], 1, "B sees the conflict: {v}");
    d.cli(&["resume"]);
    settle(&d, &[&a, &b]);
    let s = server_files(&server, &args).await;
    let copies: Vec<&String> = s
        .keys()
        .filter(|k| k.starts_with("docs/b (conflicted"))
        .collect();
    assert_eq!(copies.len(), 1, "one conflict copy: {:?}", names(&s));
    let copy = copies[0].clone();
    assert!(
        is_conflict_copy(copy.strip_prefix("docs/").unwrap(), "b", ".txt"),
        "conflict copy name {copy}"
    );
    assert_eq!(
        s["docs/b.txt"], b"b from A\n",
        "the server's version keeps the name"
    );
    assert_eq!(
        s[&copy], b"b from B\n",
        "the other edit is kept as the copy"
    );

    // 5. Both machines hold exactly the server's files and bytes.
    let la = local_files(&a);
    let lb = local_files(&b);
    assert_eq!(la, s, "A converged");
    assert_eq!(lb, s, "B converged");
    let st = d.cli(&["status", a.join("docs/b.txt").to_str().unwrap()]);
    assert_eq!(st["sync"], "synced", "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_machines_converge_on_apache() {
    two_machines(Server::Apache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_machines_converge_on_s3s() {
    two_machines(Server::S3s).await;
}

/// How the daemon dies: the worker alone (its keeper starts the next), or keeper and worker
/// together (then started again, as systemd would).
fn kill(d: &mut Daemon, whole_service: bool) {
    if whole_service {
        d.kill_all();
        d.restart();
    } else {
        let old = d.worker_pid().expect("worker pid");
        sh_ok(&format!("kill -9 {old}"));
        d.wait_ready(Some(old));
    }
}

/// Waits until Apache has completed `n` more of `methods` for `scratch` than `from`, and
/// fails if the whole batch (`all`) is done by then: the next kill must land mid-batch.
fn wait_ops(scratch: &str, methods: &[&str], from: usize, n: usize, all: usize, what: &str) {
    let t = Instant::now();
    loop {
        let done = apache_ops(scratch, methods);
        assert!(
            done < all,
            "{what}: the whole batch ({done} of {all}) finished before the kill"
        );
        if done >= from + n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{what}: only {} more requests after 90 s",
            done - from
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// kill -9 during uploads, then during a planned batch of renames, deletes and edits, of the
/// worker and of the whole service, each kill once the batch is under way and before it is
/// done (a slow link and Apache's access log show it): afterwards the server and the folder
/// hold each file once with the last bytes written.
#[tokio::test(flavor = "multi_thread")]
async fn kill_during_uploads_and_batches_loses_and_duplicates_nothing() {
    use proxy::{Mode, Proxy};
    let fs = LoopFs::new("ext4", 1024);
    let mut d = Daemon::start(None);
    let (args, _) = upload(&Server::Apache, &BTreeMap::new()).await;
    let scratch = args[0].rsplit('/').next().unwrap().to_string();
    let apache = url::Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let port = apache.port().unwrap();
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let via = args[0].replace(&format!("127.0.0.1:{port}"), &proxy.addr.to_string());
    let r = fs.mnt.join("r");
    add_root(&d, &r, &[via, "--no-keyring".into()], &None);
    // 2 MiB/s each way on each connection: a file of 0.5-2.7 MiB takes a while to go up.
    proxy.set(Mode::Throttle(2 << 20), u64::MAX);
    let mut want = BTreeMap::new();
    for i in 0..24 {
        let body = data(100 + i, 500_000 + (i as usize) * 97_000);
        std::fs::write(r.join(format!("f{i:02}.bin")), &body).unwrap();
        want.insert(format!("f{i:02}.bin"), body);
    }
    let mut from = 0;
    for i in 0..4 {
        wait_ops(&scratch, &["PUT"], from, 2, 24, &format!("upload kill {i}"));
        kill(&mut d, i % 2 == 1);
        from = apache_ops(&scratch, &["PUT"]);
        assert!(
            from < 24,
            "upload kill {i}: the uploads were done at the kill"
        );
    }
    settle(&d, &[&r]);
    let s = server_files(&Server::Apache, &args).await;
    assert_eq!(s, want, "after kills during uploads");

    // A planned batch: renames, deletes and edits, made while paused (the watcher must not
    // run it before the kills), then run by `skyfill sync` and killed while it runs.
    d.cli(&["pause"]);
    for i in 0..8 {
        std::fs::rename(
            r.join(format!("f{i:02}.bin")),
            r.join(format!("moved{i:02}.bin")),
        )
        .unwrap();
        let body = want.remove(&format!("f{i:02}.bin")).unwrap();
        want.insert(format!("moved{i:02}.bin"), body);
    }
    for i in 8..14 {
        std::fs::remove_file(r.join(format!("f{i:02}.bin"))).unwrap();
        want.remove(&format!("f{i:02}.bin"));
    }
    for i in 14..24 {
        let body = data(900 + i, 1_500_000);
        std::fs::write(r.join(format!("f{i:02}.bin")), &body).unwrap();
        want.insert(format!("f{i:02}.bin"), body);
    }
    let batch = ["MOVE", "DELETE", "PUT"];
    let before = apache_ops(&scratch, &batch);
    let all = before + 8 + 6 + 10;
    // The runs below must find the whole batch ready: wait until every edit is older than
    // the settle time (2 s), going by the files' own mtimes.
    let t = Instant::now();
    while (14..24).any(|i| {
        std::fs::metadata(r.join(format!("f{i:02}.bin")))
            .and_then(|m| m.modified())
            .map(|m| m.elapsed().unwrap_or_default() < Duration::from_secs(3))
            .unwrap_or(true)
    }) {
        assert!(t.elapsed() < Duration::from_secs(30), "edits never settled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut from = before;
    for i in 0..4 {
        let sock = d.socket.clone();
        let root = r.clone();
        let runner = std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_skyfill"))
                .arg("--socket")
                .arg(sock)
                .args(["sync", root.to_str().unwrap()])
                .output()
                .unwrap()
        });
        wait_ops(&scratch, &batch, from, 1, all, &format!("batch kill {i}"));
        kill(&mut d, i % 2 == 1);
        let out = runner.join().unwrap();
        assert!(
            !out.status.success(),
            "batch kill {i}: the sync run finished before the kill: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        from = apache_ops(&scratch, &batch);
    }
    d.cli(&["resume"]);
    proxy.set(Mode::Pass, u64::MAX);
    settle(&d, &[&r]);
    let s = server_files(&Server::Apache, &args).await;
    assert_eq!(names(&s), names(&want), "names after kills during a batch");
    assert!(s == want, "bytes after kills during a batch");
    assert_eq!(local_files(&r), want, "local side");
    let log = d.log();
    assert!(
        !log.contains("conflicted copy"),
        "no conflict copy was needed:\n{log}"
    );
}

/// A local edit in a root whose other folders are untouched syncs by a pass over its folder
/// alone: the server is asked about that folder only (Apache's access log), and the edit is
/// there. A new folder with a file in it goes up the same way; a removed folder still syncs
/// (by a full pass). At the poll, the server's changes come down by a pass over the folders
/// where the server differs from the base.
#[tokio::test(flavor = "multi_thread")]
async fn changes_sync_by_passes_over_their_folders_alone() {
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for i in 0..6 {
        for j in 0..5 {
            files.insert(format!("d{i}/sub/f{j}.txt"), data(700 + i * 10 + j, 3000));
        }
    }
    let (args, _) = upload(&Server::Apache, &files).await;
    let scratch = args[0].rsplit('/').next().unwrap().to_string();
    let r = fs.mnt.join("r");
    add_root(&d, &r, &args, &None);
    // Full passes from here on only when asked: the poll interval is an hour.
    d.cli(&["config", "set", "poll_interval", "3600"]);
    settle(&d, &[&r]);
    let access = PathBuf::from(env("SKYFILL_TEST_APACHE_DIR")).join("access.log");
    let lines = || std::fs::read_to_string(&access).unwrap().lines().count();
    let propfinds_since = |from: usize| -> Vec<String> {
        std::fs::read_to_string(&access)
            .unwrap()
            .lines()
            .skip(from)
            .filter(|l| l.starts_with("PROPFIND "))
            .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
            .filter(|p| p.starts_with(&format!("/dav/{scratch}/")))
            .collect()
    };
    let passes = |log: &str| log.matches("sync pass over changed folders").count();

    // Waits for the next pass over changed folders; returns what the server was asked
    // meanwhile (nothing else lists it: the test looks at the server only afterwards).
    let pass_asked = |what: &str| {
        let (from, seen) = (lines(), passes(&d.log()));
        let t = Instant::now();
        while passes(&d.log()) == seen {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no pass over changed folders for {what} within 60 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        propfinds_since(from)
    };
    let within = |asked: &[String], dir: &str| {
        let dir = format!("/dav/{scratch}/{dir}");
        asked
            .iter()
            .all(|p| p == &dir || p.starts_with(&format!("{dir}/")))
    };

    std::fs::write(r.join("d3/sub/f2.txt"), b"edited here").unwrap();
    let asked = pass_asked("an edit");
    assert!(
        !asked.is_empty() && within(&asked, "d3/sub"),
        "only the edited folder was listed: {asked:?}"
    );
    assert_eq!(
        server_files(&Server::Apache, &args)
            .await
            .get("d3/sub/f2.txt"),
        Some(&b"edited here".to_vec())
    );

    std::fs::create_dir_all(r.join("d1/new/deeper")).unwrap();
    std::fs::write(r.join("d1/new/deeper/n.txt"), b"new file").unwrap();
    let asked = pass_asked("a new folder");
    assert!(
        within(&asked, "d1"),
        "only the new folder's parent and the new folders were listed: {asked:?}"
    );
    assert_eq!(
        server_files(&Server::Apache, &args)
            .await
            .get("d1/new/deeper/n.txt"),
        Some(&b"new file".to_vec())
    );

    std::fs::remove_dir_all(r.join("d5")).unwrap();
    // Apache's own tree (listing and reading while the daemon deletes would race it).
    let on_server = PathBuf::from(env("SKYFILL_TEST_APACHE_DIR"))
        .join("data")
        .join(&scratch);
    assert!(
        on_server.join("d3/sub/f2.txt").exists(),
        "Apache keeps files at {}",
        on_server.display()
    );
    wait_for("the removed folder gone from the server", 60, || async {
        !on_server.join("d5").exists()
    })
    .await;
    // The pass that removed it may still be running: wait for it (its lock) before reading.
    sync(&d, &r);
    // The server's changes at the poll: the server is compared with the sync base as a
    // stream, and only the folders that differ are synced.
    let edited: Vec<u8> = b"edited on the server, longer than before".repeat(3);
    let more: BTreeMap<String, Vec<u8>> = [
        ("d2/sub/f1.txt".to_string(), edited.clone()),
        ("d4/sub/g.txt".to_string(), b"new on the server".to_vec()),
    ]
    .into();
    remotes::upload_into(&Server::Apache, &args, &more).await;
    let seen = d.log().matches("remote=true").count();
    d.cli(&["config", "set", "poll_interval", "5"]);
    wait_for("the server's changes here", 60, || async {
        std::fs::metadata(r.join("d2/sub/f1.txt")).is_ok_and(|m| m.len() == edited.len() as u64)
            && r.join("d4/sub/g.txt").exists()
    })
    .await;
    // The pass writes its log line after its last change lands here: wait for the line.
    let limited = |log: &str| {
        log.lines().any(|l| {
            l.contains("sync pass over changed folders")
                && l.contains("remote=true")
                && l.contains("folders=2")
        }) && log.matches("remote=true").count() > seen
    };
    let t = Instant::now();
    let mut log = d.log();
    while !limited(&log) && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        log = d.log();
    }
    assert!(
        limited(&log),
        "a pass over the two folders the server changed:\n{log}"
    );
    d.cli(&["config", "set", "poll_interval", "3600"]);
    let mut want = files.clone();
    want.retain(|k, _| !k.starts_with("d5/"));
    want.insert("d3/sub/f2.txt".into(), b"edited here".to_vec());
    want.insert("d1/new/deeper/n.txt".into(), b"new file".to_vec());
    want.extend(more);
    assert_eq!(server_files(&Server::Apache, &args).await, want);
    assert_eq!(local_files(&r), want);
}

/// A budget of 6 MiB over 24 files of 1 MiB: reading them all keeps the root within the
/// budget (plus one chunk); the two pinned files stay local.
#[tokio::test(flavor = "multi_thread")]
async fn budget_keeps_disk_usage_within_the_limit() {
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for i in 0..24 {
        files.insert(format!("f{i:02}.bin"), data(300 + i, 1 << 20));
    }
    let (args, _) = upload(&Server::Apache, &files).await;
    let r = fs.mnt.join("r");
    add_root(&d, &r, &args, &None);
    d.cli(&[
        "config",
        "set",
        "budget",
        "6M",
        "--root",
        r.to_str().unwrap(),
    ]);
    let pinned = [r.join("f00.bin"), r.join("f01.bin")];
    let o = d.try_cli(&[
        "pin",
        pinned[0].to_str().unwrap(),
        pinned[1].to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "pin: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let limit = 6_000_000u64;
    let chunk = 1u64 << 20;
    let used = |r: &PathBuf| -> u64 {
        (0..24)
            .map(|i| allocated(&r.join(format!("f{i:02}.bin"))))
            .sum()
    };
    for i in 2..24 {
        let f = r.join(format!("f{i:02}.bin"));
        assert_eq!(std::fs::read(&f).unwrap(), files[&format!("f{i:02}.bin")]);
        let u = used(&r);
        assert!(
            u <= limit + chunk + 24 * 4096,
            "after reading {} files the root holds {u} bytes (budget {limit})",
            i - 1
        );
    }
    for p in &pinned {
        assert!(allocated(p) >= 1 << 20, "{} stays local", p.display());
    }
    let last = r.join("f23.bin");
    assert!(allocated(&last) >= 1 << 20, "the file just read stays");
    assert!(
        allocated(&r.join("f02.bin")) == 0,
        "the least recently used went"
    );
}

/// The server unreachable: local and pinned files keep working, new files and edits wait, and
/// they upload by themselves when the server is back.
#[tokio::test(flavor = "multi_thread")]
async fn offline_edits_queue_and_upload_when_the_server_is_back() {
    use proxy::{Mode, Proxy};
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(Some(
        serde_json::json!({"timeout_secs": 5, "retry_budget_secs": 3, "idle_timeout_secs": 2}),
    ));
    d.cli(&["config", "set", "poll-interval", "5"]);
    let mut files = BTreeMap::new();
    files.insert("pinned.txt".to_string(), b"pinned\n".to_vec());
    files.insert("local.txt".to_string(), b"local\n".to_vec());
    let (args, _) = upload(&Server::Apache, &files).await;
    let apache = url::Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let port = apache.port().unwrap();
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let via = args[0].replace(&format!("127.0.0.1:{port}"), &proxy.addr.to_string());
    let r = fs.mnt.join("r");
    add_root(&d, &r, &[via, "--no-keyring".into()], &None);
    d.cli(&["pin", r.join("pinned.txt").to_str().unwrap()]);
    assert_eq!(std::fs::read(r.join("local.txt")).unwrap(), b"local\n");

    proxy.set(Mode::Drop, u64::MAX);
    assert_eq!(std::fs::read(r.join("pinned.txt")).unwrap(), b"pinned\n");
    assert_eq!(std::fs::read(r.join("local.txt")).unwrap(), b"local\n");
    std::fs::write(r.join("local.txt"), b"edited offline\n").unwrap();
    std::fs::write(r.join("new.txt"), b"made offline\n").unwrap();
    let o = d.try_cli(&["sync", r.to_str().unwrap()]);
    assert!(!o.status.success(), "sync reports the server unreachable");
    let roots = d.cli(&["roots"]);
    let err = roots.to_string();
    assert!(err.contains("unreachable"), "the root says why: {err}");
    // The daemon keeps trying on its own (a new connection reaches the proxy); the edit stays.
    let tried = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    wait_for("the daemon to retry the unreachable server", 60, || async {
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > tried
    })
    .await;
    assert_eq!(
        std::fs::read(r.join("local.txt")).unwrap(),
        b"edited offline\n"
    );

    proxy.set(Mode::Pass, u64::MAX);
    wait_for(
        "queued changes uploaded after the server came back",
        90,
        || async {
            let s = server_files(&Server::Apache, &args).await;
            s.get("local.txt").map(Vec::as_slice) == Some(b"edited offline\n")
                && s.get("new.txt").map(Vec::as_slice) == Some(b"made offline\n")
        },
    )
    .await;
}

/// A file still being written is uploaded once, after it settles; editors' temporary files
/// and the user's ignore patterns never go up; a pinned file downloads the server's new
/// version by itself.
#[tokio::test(flavor = "multi_thread")]
async fn writers_settle_temporaries_stay_local_and_pinned_files_follow() {
    use std::io::Write;
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    d.cli(&["config", "set", "poll-interval", "5"]);
    d.cli(&["config", "set", "ignore", "*.scratch"]);
    let mut files = BTreeMap::new();
    files.insert("pinned/p.txt".to_string(), b"p v1\n".to_vec());
    let (args, _) = upload(&Server::Apache, &files).await;
    let scratch = args[0].rsplit('/').next().unwrap().to_string();
    let r = fs.mnt.join("r");
    add_root(&d, &r, &args, &None);
    let o = d.try_cli(&["pin", "-r", r.join("pinned").to_str().unwrap()]);
    assert!(
        o.status.success(),
        "pin: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A slow writer: 12 pieces, 500 ms apart, then close.
    let mut f = std::fs::File::create(r.join("slow.bin")).unwrap();
    let mut want = Vec::new();
    for i in 0..12u64 {
        let piece = data(40 + i, 100_000);
        f.write_all(&piece).unwrap();
        f.flush().unwrap();
        want.extend_from_slice(&piece);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(f);
    for n in [
        ".notes.txt.swp",
        ".~lock.sheet.ods#",
        "draft.scratch",
        "dl.part",
    ] {
        std::fs::write(r.join(n), b"temporary").unwrap();
    }
    wait_for("the finished file on the server", 60, || async {
        server_files(&Server::Apache, &args)
            .await
            .get("slow.bin")
            .is_some_and(|b| *b == want)
    })
    .await;
    // Sync until nothing is left to do: a second upload of the file would happen here.
    settle(&d, &[&r]);
    let log =
        std::fs::read_to_string(PathBuf::from(env("SKYFILL_TEST_APACHE_DIR")).join("access.log"))
            .unwrap();
    let puts = log
        .lines()
        .filter(|l| l.starts_with(&format!("PUT /dav/{scratch}/slow.bin ")))
        .count();
    assert_eq!(puts, 1, "uploaded once, after the writer finished");
    let s = server_files(&Server::Apache, &args).await;
    assert_eq!(
        names(&s),
        ["pinned/p.txt", "slow.bin"],
        "temporary and ignored names stay local"
    );

    // The server's new version of a pinned file is downloaded without anyone reading it.
    remotes::upload_into(
        &Server::Apache,
        &args,
        &[("pinned/p.txt".to_string(), b"p v2, longer\n".to_vec())].into(),
    )
    .await;
    wait_for("the pinned file's new version, local", 60, || async {
        let p = r.join("pinned/p.txt");
        std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 13 && allocated(&p) >= 13
    })
    .await;
    let st = d.cli(&["status", r.join("pinned/p.txt").to_str().unwrap()]);
    assert_eq!(st["state"], "pinned", "{st}");
    assert_eq!(
        std::fs::read(r.join("pinned/p.txt")).unwrap(),
        b"p v2, longer\n"
    );
}

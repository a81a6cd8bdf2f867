//! The control plane end to end, as root: the real `skyfill` CLI against a real `skyfilld` on
//! loop-mounted ext4 and real servers (Apache WebDAV, s3s-fs). Pinning and freeing folders,
//! status output, pause/resume, sync, settings, sign-in with the keyring, remove-root, doctor,
//! the event stream, and a second, unprivileged user who must not reach anyone else's files.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;
#[path = "support/users.rs"]
mod users;

use hsm::{allocated, sh, sh_ok, sha256, sha256_bytes, Daemon, LoopFs};
use remotes::{add_root, env, upload, Server};
use skyfill::ipc::client::Client;
use skyfill::ipc::proto::{Event, RequestBody};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use suite::data;
use users::User;

fn folder(n: usize, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    for i in 0..n {
        let size = 20_000 + (i * 3_001) % 90_000;
        t.insert(format!("folder/f{i:03}.bin"), data(seed + i as u64, size));
    }
    t.insert("outside.bin".into(), data(seed + 999, 50_000));
    t
}

fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `skyfill --json status PATH` as parsed JSON lines.
fn status_lines(d: &Daemon, paths: &[&Path]) -> Vec<serde_json::Value> {
    let mut a = vec!["status".to_string()];
    a.extend(paths.iter().map(|p| p.display().to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = d.try_cli(&a);
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn state_of(d: &Daemon, p: &Path) -> String {
    status_lines(d, &[p])[0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// Pin a folder of 100 online-only files: all local with the server's bytes; a new remote
/// file in it becomes local by itself on `sync`; free it: all placeholders, disk usage back.
fn pin_and_free_folder(server: Server) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = LoopFs::new("ext4", 1024);
    let d = Daemon::start(None);
    let files = folder(100, 7);
    let (args, secret) = rt.block_on(upload(&server, &files));
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let dir = root.join("folder");
    let total: u64 = files
        .iter()
        .filter(|(k, _)| k.starts_with("folder/"))
        .map(|(_, v)| v.len() as u64)
        .sum();

    let s = &status_lines(&d, &[&dir])[0];
    assert_eq!(s["state"], "online-only", "{s}");
    assert_eq!(s["size"], total);
    assert_eq!(s["local_bytes"], 0);
    let f0 = dir.join("f000.bin");
    let s = &status_lines(&d, &[&f0])[0];
    for k in ["path", "state", "sync", "size", "local_bytes"] {
        assert!(s.get(k).is_some(), "status --json lacks {k}: {s}");
    }
    assert_eq!(s["sync"], "synced");

    // A folder needs -r.
    let o = d.try_cli(&["pin", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-r"));

    let r = d.cli(&["pin", "-r", dir.to_str().unwrap()]);
    assert_eq!(r["files"], 100, "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 0);
    // Local before anyone reads: allocated blocks and the daemon's record say so.
    for (k, v) in files.iter().filter(|(k, _)| k.starts_with("folder/")) {
        let p = root.join(k);
        assert_eq!(state_of(&d, &p), "pinned", "{k}");
        assert!(allocated(&p) >= v.len() as u64, "{k} is not on disk");
    }
    let s = &status_lines(&d, &[&dir])[0];
    assert_eq!(s["state"], "pinned", "{s}");
    assert_eq!(s["local_bytes"], total);

    // `du`: where the space goes. The pinned folder holds every local byte of the root
    // (outside.bin is online-only), and is its largest local item.
    let du = d.cli(&["du", root.to_str().unwrap()]);
    assert_eq!(du["local_bytes"], total, "{du}");
    assert_eq!(du["size"], total + 50_000, "{du}");
    assert!(du["free_bytes"].as_u64().unwrap() > 0, "{du}");
    let largest = du["largest"].as_array().unwrap();
    assert_eq!(largest.len(), 1, "only the folder holds local bytes: {du}");
    assert_eq!(largest[0]["path"], dir.to_str().unwrap(), "{du}");
    let plain = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skyfill"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let o = plain(&["du", "--top", "3", root.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        said.contains("largest on this device:") && said.contains(" folder/"),
        "{said}"
    );
    assert!(
        said.contains("(100 pinned)") && said.contains(", 1 online-only"),
        "{said}"
    );
    // Messages say each thing once: the path of a missing file, no "(os error N)".
    let missing = root.join("no-such-file");
    let o = plain(&["pin", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(err.matches(missing.to_str().unwrap()).count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
    // The daemon's refusals come in the client's language (its hello says which).
    let german = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skyfill"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .env("LANGUAGE", "de")
            .env("LANG", "de_DE.UTF-8")
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .output()
            .unwrap()
    };
    let o = german(&["pin", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        err.contains("Datei oder Verzeichnis nicht gefunden")
            && err.matches(missing.to_str().unwrap()).count() == 1,
        "{err}"
    );
    let o = german(&["pin", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ist ein Ordner: mit -r"), "{err}");
    let o = german(&["status", "/"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/ liegt in keinem Ihrer Synchronisationsordner"),
        "{err}"
    );
    // English for a client that asks for none.
    let o = plain(&["status", "/"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/ is not in one of your sync roots"), "{err}");
    // The folder's rows whole (`list`) and a window at a time (`list_page`): the same rows
    // in the same order, and the folder count in its parent's rows comes from the totals.
    let call = |v: serde_json::Value| d.cli(&["call", &v.to_string()]);
    let all = call(serde_json::json!({"op": "list", "path": dir}));
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 100);
    let mut paged = Vec::new();
    for offset in (0..130).step_by(30) {
        let p = call(
            serde_json::json!({"op": "list_page", "path": dir, "offset": offset, "limit": 30}),
        );
        assert_eq!(p["total"], 100, "{p}");
        paged.extend(p["entries"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(paged, all);
    // Another order, and a filter, as the tray's Files view asks: the daemon sorts the
    // whole folder (not the page), and `total` counts what the filter kept.
    let sizes = |p: &serde_json::Value| -> Vec<(u64, String)> {
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["size"].as_u64().unwrap(),
                    e["path"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let by_size = call(
        serde_json::json!({"op": "list_page", "path": dir, "limit": 1000,
        "sort": "size", "descending": true}),
    );
    let mut want: Vec<(u64, String)> = files
        .iter()
        .filter(|(k, _)| k.starts_with("folder/"))
        .map(|(k, v)| (v.len() as u64, root.join(k).display().to_string()))
        .collect();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(sizes(&by_size), want, "largest first, ties by name");
    let second = call(
        serde_json::json!({"op": "list_page", "path": dir, "offset": 10,
        "limit": 5, "sort": "size", "descending": true}),
    );
    assert_eq!(
        sizes(&second),
        want[10..15].to_vec(),
        "a later page of the same order"
    );
    let by_time = call(
        serde_json::json!({"op": "list_page", "path": dir, "limit": 1000,
        "sort": "modified"}),
    );
    let times: Vec<i64> = by_time["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["mtime"].as_i64().expect("entries carry their mtime"))
        .collect();
    assert_eq!(times.len(), 100);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let found = call(
        serde_json::json!({"op": "list_page", "path": dir, "limit": 3,
        "filter": "F05"}),
    );
    assert_eq!(found["total"], 10, "f050..f059, whatever the case: {found}");
    assert_eq!(
        found["entries"][0]["path"],
        dir.join("f050.bin").to_str().unwrap()
    );
    let none = call(
        serde_json::json!({"op": "list_page", "path": dir, "limit": 3,
        "filter": "no such name"}),
    );
    assert_eq!(none["total"], 0, "{none}");
    // `status` of a folder as a tree (a pipe: no colour), five entries and the rest counted.
    let o = plain(&["status", "--limit", "5", dir.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", out(&o));
    assert!(said.starts_with("STATE"), "{said}");
    assert!(
        said.contains("├── f000.bin") && said.contains("├── f004.bin"),
        "{said}"
    );
    assert!(said.contains("└── … and 95 more"), "{said}");
    assert!(said.contains("always local"), "{said}");
    assert!(!said.contains('\x1b'), "colour in a pipe: {said:?}");
    let top = call(serde_json::json!({"op": "list_page", "path": root, "limit": 1}));
    assert_eq!(top["entries"][0]["path"], dir.to_str().unwrap(), "{top}");
    assert_eq!(top["entries"][0]["counts"]["pinned"], 100, "{top}");
    assert_eq!(top["entries"][0]["local_bytes"], total, "{top}");
    for (k, v) in &files {
        if k.starts_with("folder/") {
            assert_eq!(sha256(&root.join(k)).unwrap(), sha256_bytes(v), "{k}");
        }
    }
    assert_eq!(state_of(&d, &root.join("outside.bin")), "online-only");

    // A new remote file under the pinned folder becomes local by itself.
    let mut more = BTreeMap::new();
    more.insert("folder/new.bin".to_string(), data(4242, 70_000));
    rt.block_on(remotes::upload_into(&server, &args, &more));
    let r = d.cli(&["sync", dir.to_str().unwrap()]);
    assert_eq!(r["added"], 1, "{r}");
    let newf = dir.join("new.bin");
    assert_eq!(state_of(&d, &newf), "pinned");
    assert!(allocated(&newf) >= 70_000);
    assert_eq!(
        sha256(&newf).unwrap(),
        sha256_bytes(&more["folder/new.bin"])
    );

    // Free it: back to placeholders, disk usage back near zero.
    let r = d.cli(&["free", "-r", dir.to_str().unwrap()]);
    assert_eq!(r["files"], 101, "{r}");
    let mut used = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        used += allocated(&p);
        assert_eq!(state_of(&d, &p), "online-only", "{}", p.display());
    }
    assert!(used == 0, "{used} bytes still allocated after free");
    let s = &status_lines(&d, &[&dir])[0];
    assert_eq!(s["state"], "online-only");
    assert_eq!(s["setting"], "inherit");
    // And they still read right (online-only files hydrate on access).
    assert_eq!(
        sha256(&dir.join("f050.bin")).unwrap(),
        sha256_bytes(&files["folder/f050.bin"])
    );
    // A path outside every root is an error with a non-zero exit.
    let o = d.try_cli(&["status", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
}

#[test]
fn pin_and_free_folder_apache() {
    pin_and_free_folder(Server::Apache);
}

#[test]
fn pin_and_free_folder_s3s() {
    pin_and_free_folder(Server::S3s);
}

/// Pause defers pin downloads, resume catches up; settings; the per-user never-download
/// list; remove-root refuses unsynced data unless told; completions and man page.
#[test]
fn pause_config_remove_root_and_cli_extras() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = LoopFs::new("ext4", 1024);
    let mut d = Daemon::start(None);
    let mut files = folder(5, 100);
    // For remove-root: one file never read (online-only) and one above the whole-file size
    // (16 MiB) of which only a range is read (partly downloaded).
    files.insert("cold/never.bin".into(), data(101, 60_000));
    files.insert("cold/part.bin".into(), data(102, 20 << 20));
    let (args, secret) = rt.block_on(upload(&Server::Apache, &files));
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let dir = root.join("folder");

    d.cli(&["pause"]);
    let roots = d.cli(&["roots"]);
    assert_eq!(roots["paused"], true, "{roots}");
    let r = d.cli(&["pin", "-r", dir.to_str().unwrap()]);
    assert_eq!(r["deferred"], true, "{r}");
    assert_eq!(r["files"], 0);
    assert_eq!(state_of(&d, &dir.join("f000.bin")), "online-only");
    // Opening a file still works while paused.
    assert_eq!(
        sha256(&dir.join("f001.bin")).unwrap(),
        sha256_bytes(&files["folder/f001.bin"])
    );
    // Settings live on the files: they survive a restart with a lost index (and the pause
    // survives in the registry).
    d.stop();
    std::fs::remove_dir_all(d.state.join("index")).unwrap();
    d.restart();
    assert_eq!(d.cli(&["roots"])["paused"], true);
    assert_eq!(status_lines(&d, &[&dir])[0]["setting"], "pinned");
    assert_eq!(
        status_lines(&d, &[&dir.join("f002.bin")])[0]["setting"],
        "pinned"
    );
    assert_eq!(state_of(&d, &dir.join("f000.bin")), "online-only");
    d.cli(&["resume"]);
    wait_for("pinned files to download after resume", 30, || {
        state_of(&d, &dir.join("f004.bin")) == "pinned"
    });

    // Settings.
    let c = d.cli(&["config", "set", "poll-interval", "7"]);
    assert_eq!(c["settings"]["poll_interval_secs"], 7);
    let c = d.cli(&["config", "set", "download-limit", "5M"]);
    assert_eq!(c["settings"]["download_limit"], 5 << 20);
    let o = d.try_cli(&["config", "set", "poll-interval", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let c = d.cli(&[
        "config",
        "set",
        "budget",
        "10%",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert_eq!(c["roots"][0]["budget"]["keep_free_percent"], 10, "{c}");
    let c = d.cli(&["config", "set", "download-limit", "0"]);
    assert_eq!(c["settings"]["download_limit"], 0);
    // Never-download for this user: a program by name gets EIO, then may again.
    let t = tempfile::tempdir().unwrap();
    let tool = t.path().join("skyfill-blocked-tool");
    std::fs::copy("/usr/bin/cat", &tool).unwrap();
    d.cli(&["config", "block", "skyfill-blocked-tool"]);
    let target = root.join("outside.bin");
    let o = Command::new(&tool).arg(&target).output().unwrap();
    assert!(!o.status.success(), "a blocked program must not download");
    assert_eq!(state_of(&d, &target), "online-only");
    let c = d.cli(&["config", "unblock", "skyfill-blocked-tool"]);
    assert_eq!(c["settings"]["never_download"].as_array().unwrap().len(), 0);
    let o = Command::new(&tool).arg(&target).output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(o.stdout, files["outside.bin"]);

    // Doctor: everything fine here.
    let o = d.try_cli(&["doctor"]);
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("pre-content events"), "{text}");
    assert!(text.contains("server reachable"), "{text}");
    assert!(text.contains("clock within"), "{text}");

    // Completions and man page come from the CLI definition.
    let o = d.try_cli(&["completions", "bash"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("remove-root"));
    let o = d.try_cli(&["man"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains(".TH"));

    // remove-root: refused while a file is not on the server; nothing changed. Paused first,
    // so no background pass uploads the new file before remove-root looks (a pass would run
    // 2 s after the write: a race decided by timing otherwise).
    d.cli(&["pause"]);
    std::fs::write(root.join("mine.txt"), b"only here").unwrap();
    let o = d.try_cli(&["remove-root", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not on the server"),
        "{}",
        out(&o)
    );
    assert_eq!(d.cli(&["roots"])["local"], root.to_str().unwrap());
    assert_eq!(std::fs::read(root.join("mine.txt")).unwrap(), b"only here");

    // What each file is before --keep-local: the doc (doc/IPC.md, remove_root) says complete
    // files stay as ordinary files without Skyfill attributes, online-only and partly
    // downloaded ones are removed (nothing is left that would read as zeros), and files with
    // changes not on the server are kept.
    let never = root.join("cold/never.bin");
    let part = root.join("cold/part.bin");
    assert_eq!(state_of(&d, &never), "online-only");
    sh_ok(&format!(
        "dd if='{}' of=/dev/null bs=4096 skip=2048 count=1 status=none",
        part.display()
    ));
    assert_eq!(
        state_of(&d, &part),
        "partial",
        "a range read of a 20 MiB file"
    );
    assert_eq!(state_of(&d, &target), "local", "outside.bin was read whole");
    for i in 0..5 {
        assert_eq!(state_of(&d, &dir.join(format!("f{i:03}.bin"))), "pinned");
    }
    // --keep-local: local files stay as ordinary files with their bytes, online-only and
    // partial ones go.
    let r = d.cli(&["remove-root", "--keep-local", root.to_str().unwrap()]);
    assert_eq!(r["unsynced_kept"], serde_json::json!(["mine.txt"]), "{r}");
    assert_eq!(r["removed"], 2, "never.bin and part.bin: {r}");
    assert_eq!(r["kept"], 7, "five pinned, outside.bin, mine.txt: {r}");
    assert_eq!(std::fs::read(root.join("mine.txt")).unwrap(), b"only here");
    for (k, v) in files.iter().filter(|(k, _)| !k.starts_with("cold/")) {
        let p = root.join(k);
        assert!(
            p.exists(),
            "{k}: a complete file was deleted by --keep-local"
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            *v,
            "{k}: a kept file lost its bytes"
        );
    }
    for p in [&never, &part] {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{}: an incomplete file was kept (it would read as zeros)",
            p.display()
        );
    }
    let mut left: Vec<String> = walk(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    left.sort();
    let mut want: Vec<String> = files
        .keys()
        .filter(|k| !k.starts_with("cold/"))
        .cloned()
        .chain(["mine.txt".to_string()])
        .collect();
    want.sort();
    assert_eq!(left, want, "the files left after --keep-local");
    // No Skyfill attribute is left on any file or folder (getfattr -R lists every one).
    let o = sh(&format!("getfattr -R -d -m - '{}' 2>&1", root.display()));
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("skyfill"),
        "{}",
        out(&o)
    );
    // No placeholder is left to read as zeros.
    for e in walk(&root) {
        let m = std::fs::metadata(&e).unwrap();
        assert!(
            allocated(&e) >= m.len() || m.len() == 0,
            "{} left sparse",
            e.display()
        );
    }
    let o = d.try_cli(&["roots"]);
    assert!(o.stdout.is_empty(), "{}", out(&o));
    let o = d.try_cli(&["status", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        } else {
            v.push(e.path());
        }
    }
    v
}

/// `config set download-limit` is measured, not read back: an 8 MiB file hydrated under a
/// 1 MiB/s limit set after the root was added takes at least half the 8 s the limit implies
/// (the other half allowed as a burst: the first pieces start at once), the daemon's byte
/// counter never runs ahead of the rate by more than that burst, and with the limit back at
/// 0 the same hydration takes less than half as long as the limited one (the limit, not a
/// slow machine, made it slow).
#[test]
fn download_limit_holds_hydration_to_the_rate() {
    const RATE: u64 = 1 << 20;
    const SIZE: usize = 8 << 20;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    files.insert("slow.bin".to_string(), data(600, SIZE));
    files.insert("fast.bin".to_string(), data(601, SIZE));
    let (args, secret) = rt.block_on(upload(&Server::Apache, &files));
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);

    let c = d.cli(&["config", "set", "download-limit", "1M"]);
    assert_eq!(c["settings"]["download_limit"], RATE, "{c}");
    let fetched = || d.stats()["bytes_fetched"].as_u64().unwrap();
    let before = fetched();
    let slow = root.join("slow.bin");
    let t = Instant::now();
    let mut reader = Command::new("cat")
        .arg(&slow)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = reader.stdout.take().unwrap();
    let copier = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
        v
    });
    // The counter, sampled while the reader waits: bytes fetched by time t stay within
    // RATE * t plus the burst allowance.
    let burst = SIZE as u64 / 2;
    let mut samples = Vec::new();
    while reader.try_wait().unwrap().is_none() {
        let at = t.elapsed();
        let got = fetched() - before;
        samples.push((at, got));
        assert!(
            got <= (RATE as f64 * at.as_secs_f64()) as u64 + burst,
            "{got} bytes fetched after {at:?} under a {RATE} B/s limit; samples {samples:?}"
        );
        assert!(
            at < Duration::from_secs(60),
            "the limited read did not end in 60 s; samples {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let limited = t.elapsed();
    assert!(reader.wait().unwrap().success());
    assert_eq!(copier.join().unwrap(), files["slow.bin"]);
    assert_eq!(fetched() - before, SIZE as u64, "each byte fetched once");
    let implied = Duration::from_secs_f64(SIZE as f64 / RATE as f64);
    assert!(
        limited >= implied / 2,
        "8 MiB hydrated in {limited:?} under a 1 MiB/s limit (the limit implies {implied:?}); samples {samples:?}"
    );

    let c = d.cli(&["config", "set", "download-limit", "0"]);
    assert_eq!(c["settings"]["download_limit"], 0, "{c}");
    let t = Instant::now();
    let o = Command::new("cat")
        .arg(root.join("fast.bin"))
        .output()
        .unwrap();
    let unlimited = t.elapsed();
    eprintln!("8 MiB: {limited:?} at 1 MiB/s, {unlimited:?} unlimited");
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(o.stdout, files["fast.bin"]);
    assert!(
        unlimited < limited / 2,
        "without a limit 8 MiB took {unlimited:?}, with 1 MiB/s {limited:?}: the limit is not what slowed it"
    );
}

/// Secrets: persisted by the daemon (survive a restart), or kept only in the keyring (the
/// root waits for sign-in after a restart; `skyfill login` re-sends from the keyring);
/// wrong passwords are refused with a sign-in hint.
#[test]
fn login_keyring_and_persistence() {
    // The private keyring session (its tools are checked first: a missing one fails here).
    let session = PrivateKeyring::new();
    let machine_keyring = keyring_snapshot();
    let fs = LoopFs::new("ext4", 512);
    let mut d = Daemon::start(None);
    let files = folder(2, 300);
    // Behind Basic auth (/davauth): the files go straight into its directory.
    let scratch = remotes::scratch();
    let base = PathBuf::from(env("SKYFILL_TEST_APACHE_DIR"))
        .join("dataauth")
        .join(&scratch);
    for (k, v) in &files {
        let p = base.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, v).unwrap();
    }
    sh_ok(&format!("chmod -R a+rX '{}'", base.display()));
    let port = url::Url::parse(&env("SKYFILL_TEST_APACHE"))
        .unwrap()
        .port()
        .unwrap();
    let url = format!("dav://127.0.0.1:{port}/davauth/{scratch}");
    let user = env("SKYFILL_TEST_DAV_USER");
    let pass = env("SKYFILL_TEST_DAV_PASS");
    let a = fs.mnt.join("a");
    d.cli_stdin(
        &[
            "add-root",
            a.to_str().unwrap(),
            &url,
            "--user",
            &user,
            "--secret-stdin",
            "--no-keyring",
        ],
        &pass,
    );
    let o = d.try_cli(&["config"]);
    assert!(o.status.success());
    let state = std::fs::read_to_string(d.state.join("roots.json")).unwrap();
    assert!(
        !state.contains(&pass),
        "the secret must not be in roots.json"
    );
    let secrets = d.state.join("secrets");
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().mode() & 0o777,
        0o700,
        "secrets/ is root-only"
    );
    d.stop();
    d.restart();
    assert!(!d.log().contains(&pass), "the secret must never be logged");
    assert_eq!(d.cli(&["roots"])["signed_in"], true);
    assert_eq!(
        sha256(&a.join("folder/f000.bin")).unwrap(),
        sha256_bytes(&files["folder/f000.bin"])
    );
    // A wrong password is refused, with what to do.
    let o = d.try_cli_stdin(
        &["login", a.to_str().unwrap(), "--secret-stdin"],
        "wrong password",
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("login"),
        "{}",
        out(&o)
    );

    // Keyring only, inside a private session: its own D-Bus session bus and an unlocked GNOME
    // Keyring whose HOME and XDG directories are a throwaway directory, so the machine's
    // keyring is neither read nor written (checked below); everything started is stopped.
    let bin = env!("CARGO_BIN_EXE_skyfill");
    let sock = d.socket.display().to_string();
    let restart = session.dir.path().join("restart");
    let go = session.dir.path().join("go");
    let script = format!(
        "set -e
{start_keyring}
printf '%s' '{pass}' | {bin} --socket {sock} login {a} --secret-stdin --keyring-only
secret-tool lookup service skyfill >/dev/null || {{ echo 'not in the keyring'; exit 9; }}
echo RESTART > {restart}
i=0
until [ -e {go} ]; do i=$((i+1)); [ $i -lt 1200 ] || {{ echo 'no go after 120 s'; exit 7; }}; sleep 0.1; done
{bin} --socket {sock} --json roots > {roots_before}
{bin} --socket {sock} login
{bin} --socket {sock} --json roots
",
        start_keyring = session.start_script(),
        a = a.display(),
        restart = restart.display(),
        go = go.display(),
        roots_before = d.state.join("roots-before").display(),
    );
    let mut child = session.spawn(&script);
    wait_for("the keyring session to ask for a restart", 120, || {
        if let Some(st) = child.try_wait() {
            panic!("the keyring session ended early ({st}): {}", child.output());
        }
        std::fs::read_to_string(&restart).is_ok_and(|m| m.trim() == "RESTART")
    });
    d.stop();
    d.restart();
    std::fs::write(&go, "go\n").unwrap();
    let o = child.wait(Duration::from_secs(120));
    assert!(o.status.success(), "{}", out(&o));
    session.assert_stopped_and_used();
    assert_eq!(
        keyring_snapshot(),
        machine_keyring,
        "the machine's keyring changed during the test"
    );
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("roots-before")).unwrap()).unwrap();
    assert_eq!(
        before["signed_in"], false,
        "keyring-only: the daemon must not have kept the secret"
    );
    assert!(!secrets.join(before["id"].as_str().unwrap()).exists());
    let after: serde_json::Value = serde_json::from_slice(
        o.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(after["signed_in"], true, "{}", out(&o));
    assert_eq!(
        sha256(&a.join("folder/f001.bin")).unwrap(),
        sha256_bytes(&files["folder/f001.bin"])
    );
}

/// The tools a private keyring session needs, with the Debian package of each.
const KEYRING_TOOLS: &[(&str, &str)] = &[
    ("dbus-run-session", "dbus-daemon"),
    ("dbus-send", "dbus-bin"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("secret-tool", "libsecret-tools"),
];

/// A throwaway user session for keyring tests: HOME and the XDG directories in a temporary
/// directory, a private session bus (`dbus-run-session`) and a GNOME Keyring started in the
/// foreground there (so its pid is known), unlocked with a test password.
struct PrivateKeyring {
    dir: tempfile::TempDir,
}

impl PrivateKeyring {
    fn new() -> PrivateKeyring {
        for (tool, package) in KEYRING_TOOLS {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            assert!(
                found,
                "{tool} is missing: install the Debian package {package} (.ci/install-deps)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("skyfill-keyring")
            .tempdir()
            .unwrap();
        for sub in ["home", "data", "config", "cache", "runtime"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        sh_ok(&format!("chmod 700 '{}'/runtime", dir.path().display()));
        PrivateKeyring { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Shell lines that start the keyring (stopped when the script exits) and wait until it
    /// owns org.freedesktop.secrets on the private bus.
    fn start_script(&self) -> String {
        let log = self.path("keyring.log").display().to_string();
        let pid = self.path("keyring.pid").display().to_string();
        format!(
            "printf 'test-keyring-password' | gnome-keyring-daemon --foreground --unlock --components=secrets >'{log}' 2>&1 &
kp=$!
echo $kp > '{pid}'
trap 'kill $kp 2>/dev/null; wait $kp 2>/dev/null || true' EXIT
n=0
until dbus-send --session --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; do
  kill -0 $kp 2>/dev/null || {{ echo 'gnome-keyring-daemon exited:'; cat '{log}'; exit 8; }}
  n=$((n+1)); [ $n -lt 300 ] || {{ echo 'the private keyring is not on the session bus after 30 s:'; cat '{log}'; exit 8; }}
  sleep 0.1
done"
        )
    }

    /// Runs `script` under `sh` in the private session, with nothing of the caller's
    /// environment but PATH (no DBUS_SESSION_BUS_ADDRESS, HOME or XDG_* leaks in).
    fn spawn(&self, script: &str) -> SessionChild {
        use std::os::unix::process::CommandExt;
        let child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", self.path("home"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("dbus-run-session");
        SessionChild { child: Some(child) }
    }

    /// The keyring went into the private directory, and its daemon is gone.
    fn assert_stopped_and_used(&self) {
        let pid: i32 = std::fs::read_to_string(self.path("keyring.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_for("the private gnome-keyring-daemon to exit", 20, || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        let keyrings = self.path("data").join("keyrings");
        let n = std::fs::read_dir(&keyrings)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: the keyring was not the private one",
                    keyrings.display()
                )
            })
            .count();
        assert!(n > 0, "no keyring file in {}", keyrings.display());
    }
}

/// The session's process group, killed if the test ends before it does.
struct SessionChild {
    child: Option<std::process::Child>,
}

impl SessionChild {
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// What the session printed (once it has ended).
    fn output(&mut self) -> String {
        let c = self.child.take().unwrap();
        out(&c.wait_with_output().unwrap())
    }

    fn wait(&mut self, limit: Duration) -> Output {
        wait_for("the keyring session to end", limit.as_secs(), || {
            self.try_wait().is_some()
        });
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for SessionChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the process group this test started (its own pgid).
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// The machine's keyring directory for this user (names, sizes, mtimes), to show a test
/// left it alone. `None` when there is none.
fn keyring_snapshot() -> Option<Vec<(String, u64, i64, i64)>> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let mut v: Vec<_> = std::fs::read_dir(base.join("keyrings"))
        .ok()?
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
            )
        })
        .collect();
    v.sort();
    Some(v)
}

/// The event stream: reading a placeholder produces progress (with the reading program) and
/// a state change; a subscriber sees them without polling.
#[test]
fn subscription_stream() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = LoopFs::new("ext4", 512);
    let d = Daemon::start(None);
    let files = folder(1, 500);
    let (args, secret) = rt.block_on(upload(&Server::Apache, &files));
    let root = fs.mnt.join("r");
    add_root(&d, &root, &args, &secret);
    let mut c = Client::connect(&d.socket, "test").unwrap();
    c.subscribe().unwrap();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    let f = root.join("folder/f000.bin");
    let o = Command::new("cat").arg(&f).output().unwrap();
    assert_eq!(o.stdout, files["folder/f000.bin"]);
    let (mut progress, mut state) = (false, false);
    while !(progress && state) {
        match c.next_event().unwrap() {
            Event::Progress {
                path,
                app,
                done,
                total,
                ..
            } if path == f.to_str().unwrap() => {
                assert_eq!(app.as_deref(), Some("cat"));
                assert!(done <= total);
                progress = true;
            }
            Event::State { path, state: s, .. } if path == f.to_str().unwrap() => {
                assert_eq!(s, skyfill::model::Availability::Local);
                state = true;
            }
            _ => {}
        }
    }
    // Job progress of one's own long request arrives before its answer.
    let mut jobs = 0;
    let mut c2 = Client::connect(&d.socket, "test").unwrap();
    c2.call_with(
        RequestBody::Pin {
            path: root.display().to_string(),
            setting: skyfill::ipc::proto::PinSetting::Pinned,
            recursive: true,
        },
        &mut |e| {
            if let Event::Job { finished: true, .. } = e {
                jobs += 1;
            }
        },
    )
    .unwrap();
    assert_eq!(jobs, 1);
}

// ---------------------------------------------------------------- a second user

fn fill_of(p: &Path) -> String {
    let o = sh(&format!(
        "getfattr --only-values -n trusted.skyfill.meta '{}' 2>/dev/null",
        p.display()
    ));
    // The binary record (`hsm::meta`): magic 0xa7, then flags whose low two bits are the fill.
    match o.stdout.as_slice() {
        [0xa7, flags, ..] => ["placeholder", "partial", "complete", "?"][(flags & 3) as usize],
        _ => "?",
    }
    .to_string()
}

/// A second, unprivileged user cannot list, pin, free, read the status of, or sign in to
/// another user's root; cannot reach outside their root through `..`, absolute paths, a
/// planted symlink or one swapped in while requests run; cannot add a root in a directory
/// they don't own; a bad frame closes only their connection.
#[test]
fn second_user_is_confined() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fs = LoopFs::new("ext4", 1024);
    sh_ok(&format!(
        "chmod 755 '{}'",
        fs.mnt.parent().unwrap().display()
    ));
    let d = Daemon::start(None);
    let alice = User::create("a");
    let bob = User::create("b");
    // The CLI where other users can run it.
    let bindir = tempfile::Builder::new()
        .prefix("skyfill-bin")
        .tempdir_in("/var/tmp")
        .unwrap();
    sh_ok(&format!("chmod 755 '{}'", bindir.path().display()));
    let cli = bindir.path().join("skyfill");
    std::fs::copy(env!("CARGO_BIN_EXE_skyfill"), &cli).unwrap();
    let sock = d.socket.display().to_string();
    let as_user = |u: &User, args: &[&str]| -> Output {
        let mut a = vec![cli.to_str().unwrap(), "--socket", &sock, "--json"];
        a.extend_from_slice(args);
        u.run(&a)
    };

    let files = folder(4, 900);
    let (args_a, _) = rt.block_on(upload(&Server::Apache, &files));
    let (args_b, _) = rt.block_on(upload(&Server::Apache, &files));
    let ra = fs.mnt.join("ra");
    let rb = fs.mnt.join("rb");
    for (r, u) in [(&ra, &alice), (&rb, &bob)] {
        std::fs::create_dir(r).unwrap();
        std::os::unix::fs::chown(r, Some(u.uid), Some(u.gid)).unwrap();
    }
    let o = as_user(
        &alice,
        &["add-root", ra.to_str().unwrap(), &args_a[0], "--no-keyring"],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = as_user(
        &bob,
        &["add-root", rb.to_str().unwrap(), &args_b[0], "--no-keyring"],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(
        std::fs::metadata(ra.join("folder/f000.bin")).unwrap().uid(),
        alice.uid,
        "placeholders belong to the root's owner"
    );
    let bob_files: Vec<PathBuf> = walk(&rb);

    // Listing: each sees only their own.
    let o = as_user(&alice, &["roots"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(ra.to_str().unwrap()) && !text.contains(rb.to_str().unwrap()),
        "{text}"
    );

    let refused = |o: &Output, what: &str| {
        assert!(!o.status.success(), "{what} must be refused: {}", out(o));
    };
    let bf = rb.join("folder/f000.bin");
    let bdir = rb.join("folder");
    for args in [
        vec!["status", bf.to_str().unwrap()],
        vec!["pin", bf.to_str().unwrap()],
        vec!["pin", "-r", bdir.to_str().unwrap()],
        vec!["free", "-r", bdir.to_str().unwrap()],
        vec!["hydrate", bf.to_str().unwrap()],
        vec!["online-only", "-r", bdir.to_str().unwrap()],
        vec!["remove-root", "--keep-local", rb.to_str().unwrap()],
        vec!["pause", rb.to_str().unwrap()],
        vec!["sync", rb.to_str().unwrap()],
        vec![
            "config",
            "set",
            "budget",
            "1G",
            "--root",
            rb.to_str().unwrap(),
        ],
        vec!["status", "/etc/passwd"],
    ] {
        let o = as_user(&alice, &args);
        refused(&o, &format!("{args:?}"));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("sync root"),
            "{args:?}: {}",
            out(&o)
        );
    }
    // Raw requests the CLI would never send.
    let raw = |req: serde_json::Value| as_user(&alice, &["call", &req.to_string()]);
    let dotdot = format!("{}/../rb/folder/f000.bin", ra.display());
    for req in [
        serde_json::json!({"op": "status", "path": dotdot}),
        serde_json::json!({"op": "pin", "path": dotdot, "setting": "pinned"}),
        serde_json::json!({"op": "free", "path": format!("{}/../rb/folder", ra.display()), "recursive": true}),
        serde_json::json!({"op": "login", "local": rb.to_str().unwrap(), "secret": "x"}),
        serde_json::json!({"op": "status", "path": "relative/path"}),
        serde_json::json!({"op": "hydrate", "path": format!("{}/folder/\u{0}x", ra.display())}),
    ] {
        refused(&raw(req.clone()), &req.to_string());
    }
    // Adding a root where alice owns nothing.
    let o = as_user(
        &alice,
        &[
            "add-root",
            fs.mnt.join("new").to_str().unwrap(),
            &args_a[0],
            "--no-keyring",
        ],
    );
    refused(&o, "add-root under a directory alice does not own");
    let rb2 = fs.mnt.join("rb2");
    std::fs::create_dir(&rb2).unwrap();
    std::os::unix::fs::chown(&rb2, Some(bob.uid), Some(bob.gid)).unwrap();
    let o = as_user(
        &alice,
        &[
            "add-root",
            rb2.to_str().unwrap(),
            &args_a[0],
            "--no-keyring",
        ],
    );
    refused(&o, "add-root in bob's directory");
    let o = as_user(
        &alice,
        &[
            "add-root",
            fs.mnt.join("ra/inner").to_str().unwrap(),
            &args_a[0],
            "--no-keyring",
        ],
    );
    refused(&o, "a root inside a root");
    let o = as_user(
        &alice,
        &[
            "add-root",
            "/tmp/skyfill-alice",
            "file:///etc",
            "--no-keyring",
        ],
    );
    refused(&o, "a file:// remote alice does not own");

    // Planted symlinks into bob's root and /etc.
    let la = ra.join("link");
    let lf = ra.join("hostname");
    assert!(alice
        .run(&["ln", "-s", bdir.to_str().unwrap(), la.to_str().unwrap()])
        .status
        .success());
    assert!(alice
        .run(&["ln", "-s", "/etc/hostname", lf.to_str().unwrap()])
        .status
        .success());
    for args in [
        vec!["pin", "-r", la.to_str().unwrap()],
        vec!["free", "-r", la.to_str().unwrap()],
        vec!["status", la.join("f000.bin").to_str().unwrap()],
        vec!["pin", la.join("f000.bin").to_str().unwrap()],
        vec!["pin", lf.to_str().unwrap()],
        vec!["hydrate", lf.to_str().unwrap()],
    ] {
        refused(&as_user(&alice, &args), &format!("{args:?}"));
    }

    // A symlink swapped in while requests run (a race loop, until told to stop; the folder
    // is back in place when it ends). Alice's sync is paused meanwhile: the race is against
    // the control requests, and a sync pass seeing `folder` moved away would (rightly) act
    // on it, so the folder might not come back as it was.
    let o = as_user(&alice, &["pause", ra.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
    let d_real = ra.join("folder");
    let d_moved = ra.join("folder.real");
    let stop = ra.join(".stop-racing");
    let racer = format!(
        "while [ ! -e '{s}' ]; do \
         mv '{r}' '{m}' 2>/dev/null; ln -s '{b}' '{r}' 2>/dev/null; rm -f '{r}'; \
         ln -s /etc '{r}' 2>/dev/null; rm -f '{r}'; mv -T '{m}' '{r}' 2>/dev/null; done",
        s = stop.display(),
        r = d_real.display(),
        m = d_moved.display(),
        b = bdir.display()
    );
    let mut race = alice.command(&["sh", "-c", &racer]).spawn().unwrap();
    // A fixed number of requests (not a wall-clock budget): the same work on a slow machine.
    for _ in 0..25 {
        for verb in ["pin", "free", "hydrate", "online-only"] {
            let _ = as_user(&alice, &[verb, "-r", d_real.to_str().unwrap()]);
            let _ = as_user(
                &alice,
                &["status", d_real.join("f001.bin").to_str().unwrap()],
            );
        }
    }
    alice.run(&["touch", stop.to_str().unwrap()]);
    race.wait().unwrap();
    let _ = alice.run(&["rm", "-f", stop.to_str().unwrap()]);
    assert!(d_real.is_dir(), "the racer left the folder moved away");
    assert!(
        !d_moved.exists(),
        "the racer left {} behind",
        d_moved.display()
    );
    let o = as_user(&alice, &["resume", ra.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
    // Alice's own requests still work once the racing stops.
    let o = as_user(&alice, &["hydrate", "-r", d_real.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
    // Bob's files were never touched: still placeholders, no settings written.
    for f in &bob_files {
        assert_eq!(fill_of(f), "placeholder", "{} was touched", f.display());
        assert_eq!(allocated(f), 0);
    }
    let o = sh(&format!(
        "getfattr -d -m - -R '{}' /etc 2>/dev/null | grep -c skyfill.pin",
        rb.display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "a pin setting leaked out of alice's root"
    );
    // Alice's hydrate did its work: every file of her folder is complete (not just counted).
    let mut n = 0;
    for e in std::fs::read_dir(&d_real).unwrap() {
        let f = e.unwrap().path();
        if f.is_file() {
            n += 1;
            assert_eq!(
                fill_of(&f),
                "complete",
                "{} not hydrated by alice's hydrate -r; daemon log:\n{}",
                f.display(),
                d.log()
            );
        }
    }
    assert!(n > 0, "alice's folder holds no files after the race");

    // A malformed frame and an oversized one close only that connection. (The daemon answers
    // `bad_request` and closes; when it closes with the rest of the frame unread, the kernel
    // may reset the connection before the client reads that answer: closed either way.)
    let py = format!(
        "import socket,json\n\
s=socket.socket(socket.AF_UNIX); s.connect('{sock}'); f=s.makefile('rwb')\n\
f.write(b'{{\"id\":1,\"op\":\"hello\",\"version\":1,\"client\":\"t\"}}\\n'); f.flush(); f.readline()\n\
try:\n  s.sendall(b'x'*(2<<20)+b'\\n')\n\
except (BrokenPipeError, ConnectionResetError):\n  pass\n\
try:\n  r=json.loads(f.readline()); assert r['error']['code']=='bad_request', r\n  print('closed' if f.readline()==b'' else 'open')\n\
except ConnectionResetError:\n  print('closed')\n"
    );
    let o = alice.run(&["/usr/bin/python3", "-c", &py]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "closed");
    let o = as_user(&alice, &["status", ra.to_str().unwrap()]);
    assert!(o.status.success(), "the daemon keeps serving: {}", out(&o));
    let o = as_user(&bob, &["status", rb.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
}

//! The root daemon against hostile local users and hostile servers (issue "Security: the root
//! daemon never acts for a user on a path that user can swap"). Every test runs a real
//! `skyfilld` as root on a loop-mounted ext4, and the attacks as throwaway Unix users
//! (`useradd`, `setpriv`). Each test names the review finding it covers (F1 ... F14); the
//! table is in doc/SECURITY.md.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/users.rs"]
mod users;

use hsm::{allocated, sh, sh_ok, sha256, Daemon, LoopFs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use users::{out, SharedCli, User};

/// Polls `f` every 100 ms until it holds; panics after `secs` (a generous bound, never a
/// measurement).
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A loop ext4 whose mount point every user can reach, with a folder for each user.
fn world_fs(mb: u64) -> LoopFs {
    let fs = LoopFs::new("ext4", mb);
    sh_ok(&format!(
        "chmod 755 '{}' '{}'",
        fs.mnt.parent().unwrap().display(),
        fs.mnt.display()
    ));
    fs
}

fn home(fs: &LoopFs, u: &User) -> PathBuf {
    let h = fs.mnt.join(&u.name);
    u.own_dir(&h);
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o755)).unwrap();
    h
}

/// What most tests start from: a loop ext4 every user can reach, a daemon, the shared CLI,
/// and alice with a home folder on it. Fields drop in order: alice (and her processes), the
/// CLI, the daemon, then the filesystem.
struct Scene {
    alice: User,
    cli: SharedCli,
    d: Daemon,
    ha: PathBuf,
    fs: LoopFs,
}

impl Scene {
    fn new(mb: u64) -> Scene {
        let fs = world_fs(mb);
        let d = Daemon::start(None);
        let alice = User::create("a");
        let ha = home(&fs, &alice);
        Scene {
            alice,
            cli: SharedCli::new(),
            d,
            ha,
            fs,
        }
    }

    /// Makes alice's `share` folder by running `script` as alice in her home (after
    /// `mkdir share`); returns the share.
    fn share(&self, script: &str) -> PathBuf {
        self.alice.sh_ok(&format!(
            "cd '{}' && mkdir share && {script}",
            self.ha.display()
        ));
        self.ha.join("share")
    }
}

/// A root-only folder with a secret file in it; returns (folder, secret text).
fn root_only(fs: &LoopFs) -> (PathBuf, String) {
    let d = fs.mnt.join("rootonly");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = format!("TOPSECRET-{:016x}", rand::random::<u64>());
    std::fs::write(d.join("shadow.txt"), &secret).unwrap();
    std::fs::set_permissions(d.join("shadow.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    (d, secret)
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A hostile WebDAV/S3 server (tests/harness/hostile_server.py) whose behaviour the test
/// switches by writing a word into its mode file.
struct Hostile {
    child: Child,
    pub port: u16,
    mode: PathBuf,
    dir: tempfile::TempDir,
}

impl Hostile {
    fn start(mode: &str) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let (portfile, modefile) = (dir.path().join("port"), dir.path().join("mode"));
        std::fs::write(&modefile, mode).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/harness/hostile_server.py"
            ))
            .arg(&portfile)
            .arg(&modefile)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (for the hostile test server)");
        wait_for("the hostile server to listen", 20, || portfile.exists());
        let port = std::fs::read_to_string(&portfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Hostile {
            child,
            port,
            mode: modefile,
            dir,
        }
    }

    fn set(&self, mode: &str) {
        std::fs::write(&self.mode, mode).unwrap();
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("port.log")).unwrap_or_default()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_limits(d: &Daemon, limits: serde_json::Value) {
    std::fs::write(d.state.join("limits.json"), limits.to_string()).unwrap();
}

/// A daemon whose state dir holds `limits.json` before it starts.
fn daemon_with_limits(limits: serde_json::Value) -> Daemon {
    let mut d = Daemon::start(None);
    write_limits(&d, limits);
    d.restart();
    d
}

/// Every root the daemon has (`skyfill --json roots` as root: one JSON object a line).
fn roots(d: &Daemon) -> Vec<serde_json::Value> {
    let o = d.try_cli(&["roots"]);
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn last_error(d: &Daemon, local: &Path) -> Option<String> {
    roots(d)
        .iter()
        .find(|r| r["local"] == local.to_str().unwrap())
        .and_then(|r| r["last_error"].as_str().map(str::to_string))
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------- F1

/// F1: a `file://` share swapped for a symlink to a root-only folder never shows that
/// folder's files: not after `login`, not after a worker restart, not after a restart of the
/// whole service. The daemon opens the share as its owner, so the kernel refuses.
#[test]
fn f1_a_share_swapped_for_a_symlink_never_exposes_root_only_files() {
    let fs = world_fs(512);
    let mut d = Daemon::start(None);
    let cli = SharedCli::new();
    let alice = User::create("a");
    let h = home(&fs, &alice);
    let (secret_dir, secret) = root_only(&fs);
    alice.sh_ok(&format!(
        "cd '{}' && mkdir share && echo mine > share/mine.txt",
        h.display()
    ));
    let cloud = h.join("Cloud");
    let share = h.join("share");
    cli.add_share_root(&alice, &d.socket, &cloud, &share);
    assert_eq!(
        alice.sh_ok(&format!("cat '{}'", cloud.join("mine.txt").display())),
        "mine\n"
    );
    alice.sh_ok(&format!(
        "cd '{}' && mv share share.old && ln -s '{}' share",
        h.display(),
        secret_dir.display()
    ));
    let sock = d.socket.clone();
    let exposed = |stage: &str| {
        let o = cli.run(&alice, &sock, &["sync", cloud.to_str().unwrap()]);
        let listing = names(&cloud);
        assert!(
            !listing.iter().any(|n| n.contains("shadow")),
            "{stage}: the root-only file appeared in alice's root: {listing:?} ({})",
            out(&o)
        );
        let o = alice.run(&["cat", cloud.join("shadow.txt").to_str().unwrap()]);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains(&secret),
            "{stage}: alice read a root-only file"
        );
    };
    // Sign in again (any secret): the share is opened again, as alice, and refused.
    let o = cli.run_stdin(
        &alice,
        &d.socket,
        &["login", cloud.to_str().unwrap(), "--secret-stdin"],
        "anything\n",
    );
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("ermission denied"),
        "login through the swapped share must be refused by the kernel: {}",
        out(&o)
    );
    exposed("after login");
    // A worker restart opens every share again.
    let old = d.worker_pid().unwrap();
    // SAFETY: killing the worker on purpose.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    d.wait_ready(Some(old));
    exposed("after a worker restart");
    assert!(
        d.log().contains("Permission denied"),
        "the worker must have tried the share and been refused:\n{}",
        d.log()
    );
    // And a restart of keeper and worker.
    d.restart();
    exposed("after a restart of the whole service");
    // A folder alice can read but does not own is refused too (the owner is checked on
    // every open, not only at add-root).
    alice.sh_ok(&format!(
        "cd '{}' && rm share && ln -s /etc share",
        h.display()
    ));
    let o = cli.run_stdin(
        &alice,
        &d.socket,
        &["login", cloud.to_str().unwrap(), "--secret-stdin"],
        "anything\n",
    );
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not your directory"),
        "{}",
        out(&o)
    );
    exposed("after a share swapped for /etc");
    // Swapped back, the share works again: the refusals above were the owner check.
    alice.sh_ok(&format!(
        "cd '{}' && rm share && mv share.old share",
        h.display()
    ));
    let o = cli.run_stdin(
        &alice,
        &d.socket,
        &["login", cloud.to_str().unwrap(), "--secret-stdin"],
        "anything\n",
    );
    assert!(o.status.success(), "{}", out(&o));
}

// ---------------------------------------------------------------- F3, F4

const RACER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]
n = 0
while not os.path.exists(stop):
    for _ in range(200):
        if libc.renameat2(-100, a, -100, b, 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
            n += 1
print(n)
"#;

/// Talks the socket protocol directly (a CLI process per try would make the race slow).
const CLIENT: &str = r#"
import json, os, shutil, socket, sys
sock, target, remote, tries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
resets = json.loads(sys.argv[5])  # [[path, symlink target, null: a folder, "": nothing], ...]
def call(req):
    s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rwb")
    f.write(b'{"id":1,"op":"hello","version":1,"client":"race"}\n'); f.flush(); f.readline()
    f.write((json.dumps(dict(req, id=2)) + "\n").encode()); f.flush()
    while True:
        r = json.loads(f.readline())
        if r.get("id") == 2:
            s.close(); return r
def clear(p):
    for _ in range(1000):
        try:
            if os.path.islink(p) or os.path.isfile(p): os.unlink(p)
            elif os.path.isdir(p): shutil.rmtree(p)
            else: return
        except OSError: pass
def reset():
    for p, link in resets: clear(p)
    for p, link in resets:
        try:
            if link is None: os.makedirs(p, exist_ok=True)
            elif link != "": os.symlink(link, p)
        except OSError: pass
ok = refused = 0
for i in range(tries):
    r = call({"op": "add_root", "local": target, "remote": {"url": remote}})
    if r["ok"]:
        ok += 1
        for _ in range(20):
            if call({"op": "remove_root", "local": target, "mode": "keep_local"})["ok"]:
                break
    else:
        refused += 1
    reset()
print(ok, refused)
"#;

/// Runs CLIENT against RACER as `u`; returns (added, refused, swaps).
fn race(
    u: &User,
    d: &Daemon,
    target: &Path,
    remote: &str,
    x: (&Path, &Path),
    resets: serde_json::Value,
    tries: u32,
) -> (u64, u64, u64) {
    let stop = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let stop_path = stop.to_path_buf();
    drop(stop);
    let racer = u
        .command(&[
            "/usr/bin/python3",
            "-c",
            RACER,
            x.0.to_str().unwrap(),
            x.1.to_str().unwrap(),
            stop_path.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = u.run(&[
        "/usr/bin/python3",
        "-c",
        CLIENT,
        d.socket.to_str().unwrap(),
        target.to_str().unwrap(),
        remote,
        &tries.to_string(),
        &resets.to_string(),
    ]);
    std::fs::write(&stop_path, b"").unwrap();
    let r = racer.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&stop_path);
    assert!(o.status.success(), "race client: {}", out(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    let mut it = s.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    let swaps = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
    (it.next().unwrap(), it.next().unwrap(), swaps)
}

/// F3 and F4: add-root raced against `RENAME_EXCHANGE` of the new folder (with a symlink to
/// a root-owned file or folder) and of its parent (with a symlink to another user's home or a
/// root-owned folder), a thousand tries each. Root never chowns anything of someone else's,
/// and no root is ever bound outside alice's own folders.
#[test]
fn f3_f4_add_root_raced_against_rename_exchange_of_the_folder_and_its_parent() {
    let fs = world_fs(512);
    let d = Daemon::start(None);
    let alice = User::create("a");
    let bob = User::create("b");
    let ha = home(&fs, &alice);
    let hb = home(&fs, &bob);
    let victim = fs.mnt.join("victim");
    std::fs::write(&victim, b"root's").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let victim_dir = fs.mnt.join("victimdir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    alice.sh_ok(&format!(
        "cd '{}' && mkdir share && echo x > share/placeholder-bait.txt",
        ha.display()
    ));
    let remote = file_url(&ha.join("share"));
    let tries = 1000;

    // Checked after every race, so that a break shows which race caused it.
    let untouched = |phase: &str| {
        let m = std::fs::symlink_metadata(&victim).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o7777),
            (0, 0o600),
            "{phase}: root chowned or chmodded a root-owned file"
        );
        let m = std::fs::metadata(&victim_dir).unwrap();
        assert_eq!(m.uid(), 0, "{phase}: root chowned a root-owned folder");
        assert!(
            names(&victim_dir).is_empty(),
            "{phase}: a root was bound onto a root-owned folder: {:?}",
            names(&victim_dir)
        );
        assert!(
            names(&hb).is_empty(),
            "{phase}: a root was bound into bob's home: {:?}",
            names(&hb)
        );
        assert_eq!(
            std::fs::metadata(&hb).unwrap().uid(),
            bob.uid,
            "{phase}: bob's home"
        );
    };
    // What each race must leave true, and proof that it raced at all.
    let judge = |what: &str, ok: u64, refused: u64, swaps: u64| {
        eprintln!("{what}: added {ok}, refused {refused}, swaps {swaps}");
        untouched(what);
        assert!(
            swaps > 0,
            "{what}: the racer never swapped: the test proves nothing"
        );
        assert!(ok > 0, "{what}: add-root never succeeded during the race");
    };
    // The new folder itself, swapped with a symlink to a root-owned file, then folder.
    for bait_to in [&victim, &victim_dir] {
        let target = ha.join("new");
        let bait = ha.join("bait");
        let resets = serde_json::json!([[target, ""], [bait, bait_to]]);
        std::os::unix::fs::symlink(bait_to, &bait).unwrap();
        sh_ok(&format!(
            "chown -h {}:{} '{}'",
            alice.uid,
            alice.gid,
            bait.display()
        ));
        // Each try starts with the new folder missing: add-root makes it, the racer swaps it.
        let (ok, refused, swaps) = race(
            &alice,
            &d,
            &target,
            &remote,
            (&target, &bait),
            resets,
            tries,
        );
        judge(
            &format!("folder race against {}", bait_to.display()),
            ok,
            refused,
            swaps,
        );
        sh_ok(&format!(
            "rm -rf '{}' '{}'",
            target.display(),
            bait.display()
        ));
    }
    // The parent, swapped with a symlink to bob's home and to a root-owned folder.
    for bait_to in [&hb, &victim_dir] {
        let parent = ha.join("p");
        let pbait = ha.join("pbait");
        alice.sh_ok(&format!(
            "mkdir '{}' && ln -s '{}' '{}'",
            parent.display(),
            bait_to.display(),
            pbait.display()
        ));
        let target = parent.join("new");
        let resets = serde_json::json!([[parent, null], [pbait, bait_to]]);
        let (ok, refused, swaps) = race(
            &alice,
            &d,
            &target,
            &remote,
            (&parent, &pbait),
            resets,
            tries,
        );
        judge(
            &format!("parent race against {}", bait_to.display()),
            ok,
            refused,
            swaps,
        );
        sh_ok(&format!(
            "rm -rf '{}' '{}'",
            parent.display(),
            pbait.display()
        ));
    }

    untouched("after every race");
    // Whatever stayed registered lies in a folder alice owns, inside her home.
    for r in roots(&d) {
        let l = PathBuf::from(r["local"].as_str().unwrap());
        if let Ok(m) = std::fs::symlink_metadata(&l) {
            if m.is_dir() {
                assert_eq!(
                    m.uid(),
                    alice.uid,
                    "{} is registered but not alice's",
                    l.display()
                );
            }
        }
        assert!(
            l.starts_with(&ha),
            "{} registered outside alice's home",
            l.display()
        );
    }
}

// ---------------------------------------------------------------- F5

/// Sets `fs.protected_hardlinks` for the test's lifetime (restored on drop, also on panic).
struct HardlinkProtection(String);

impl HardlinkProtection {
    fn off() -> HardlinkProtection {
        let old = sh_ok("sysctl -n fs.protected_hardlinks").trim().to_string();
        sh_ok("sysctl -q fs.protected_hardlinks=0");
        HardlinkProtection(old)
    }
}

impl Drop for HardlinkProtection {
    fn drop(&mut self) {
        let _ = sh(&format!("sysctl -q fs.protected_hardlinks={}", self.0));
    }
}

/// F5: placeholder folders are made as their owner, never `mkdirat` then `fchownat` by name:
/// alice replaces each new folder of her root with a hard link to a root-owned file while
/// add-root and a sync pass make them (hard-link protection switched off, so the link is
/// possible at all); the file stays root's.
#[test]
fn f5_folders_swapped_for_hard_links_while_they_are_made_chown_nothing() {
    let sc = Scene::new(512);
    let (d, cli, alice, ha, fs) = (&sc.d, &sc.cli, &sc.alice, &sc.ha, &sc.fs);
    let victim = fs.mnt.join("victim");
    std::fs::write(&victim, b"root's").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _unprotected = HardlinkProtection::off();
    sc.share("for i in $(seq 100 399); do mkdir share/d$i && echo $i > share/d$i/f; done");
    let cloud = ha.join("Cloud");
    let racer = r#"
import os, sys
cloud, victim, stop = sys.argv[1], sys.argv[2], sys.argv[3]
n = 0
while not os.path.exists(stop):
    for i in range(100, 400):
        p = "%s/d%d" % (cloud, i)
        try:
            os.rmdir(p)
            os.link(victim, p)
            n += 1
        except OSError:
            pass
print(n)
"#;
    let stop = fs.mnt.join("stop");
    let mut linked = 0u64;
    for round in 0..4 {
        let r = alice
            .command(&[
                "/usr/bin/python3",
                "-c",
                racer,
                cloud.to_str().unwrap(),
                victim.to_str().unwrap(),
                stop.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let o = cli.run(
            alice,
            &d.socket,
            &[
                "add-root",
                cloud.to_str().unwrap(),
                &file_url(&ha.join("share")),
            ],
        );
        if o.status.success() {
            // New remote folders for a sync pass to make while the racer runs.
            alice.sh_ok(&format!(
                "cd '{}/share' && for i in $(seq 100 399); do mkdir -p n{round}/d$i; done",
                ha.display()
            ));
            let _ = cli.run(alice, &d.socket, &["sync", cloud.to_str().unwrap()]);
        }
        std::fs::write(&stop, b"").unwrap();
        let ro = r.wait_with_output().unwrap();
        linked += String::from_utf8_lossy(&ro.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        // Also after a failed add-root: a root whose placeholders could not all be made stays
        // registered (incomplete) until removed.
        let o = cli.run(
            alice,
            &d.socket,
            &["remove-root", "--keep-local", cloud.to_str().unwrap()],
        );
        assert!(
            o.status.success()
                || String::from_utf8_lossy(&o.stderr).contains("not in one of your sync roots")
                || String::from_utf8_lossy(&o.stderr).contains("not one of your"),
            "{}",
            out(&o)
        );
        std::fs::remove_file(&stop).unwrap();
        sh_ok(&format!("rm -rf '{}'", cloud.display()));
        let m = std::fs::metadata(&victim).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, 0, 0o600),
            "round {round}: the root-owned file was chowned or chmodded"
        );
    }
    eprintln!("hard links swapped in: {linked}");
    assert!(
        linked > 0,
        "the racer never swapped a folder: the test proves nothing"
    );
    // A hard link to a root-only file in the share: listed (alice can stat it herself), but
    // never readable through the daemon, which reads the share as alice.
    alice.sh_ok(&format!(
        "ln '{}' '{}/share/stolen'",
        victim.display(),
        ha.display()
    ));
    cli.add_share_root(alice, &d.socket, &cloud, &ha.join("share"));
    let o = alice.run(&["cat", cloud.join("stolen").to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "alice read a root-only file through a hard link: {}",
        out(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("root's"));
}

// ---------------------------------------------------------------- F6

/// F6: FIFOs swapped in for files never block the daemon: in a `file://` share (hydration
/// reads), and in a root between the scan and the upload. Readers get an error, the daemon
/// keeps answering, and the files that stayed regular still sync.
#[test]
fn f6_fifos_swapped_in_never_block_the_daemon() {
    let sc = Scene::new(1024);
    let (d, cli, alice, ha) = (&sc.d, &sc.cli, &sc.alice, &sc.ha);
    // In a share: 24 placeholders whose source becomes a FIFO (more than the 4 async threads
    // and enough to see blocking threads used up).
    sc.share("for i in $(seq 10 33); do head -c 65536 /dev/urandom > share/f$i; done && echo ok > share/good");
    let cloud = ha.join("Cloud");
    cli.add_share_root(alice, &d.socket, &cloud, &ha.join("share"));
    alice.sh_ok(&format!(
        "cd '{}/share' && for i in $(seq 10 33); do rm f$i && mkfifo f$i; done",
        ha.display()
    ));
    let readers: Vec<Child> = (10..34)
        .map(|i| {
            alice
                .command(&[
                    "timeout",
                    "120",
                    "cat",
                    cloud.join(format!("f{i}")).to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in readers {
        let st = r.wait().unwrap();
        assert_ne!(
            st.code(),
            Some(124),
            "a reader hung: the daemon blocked on a FIFO"
        );
        assert!(
            !st.success(),
            "a reader got bytes from a FIFO-backed placeholder"
        );
    }
    assert_eq!(
        alice.sh_ok(&format!("cat '{}'", cloud.join("good").display())),
        "ok\n"
    );

    // In a root: 300 local files; once the first upload lands in the share, every file not
    // uploaded yet becomes a FIFO.
    let share2 = ha.join("share2");
    let cloud2 = ha.join("Cloud2");
    alice.sh_ok(&format!("mkdir '{}'", share2.display()));
    cli.add_share_root(alice, &d.socket, &cloud2, &share2);
    let racer = r#"
import os, sys, time
cloud, share = sys.argv[1], sys.argv[2]
names = ["u%03d" % i for i in range(300)]
for n in names:
    with open(os.path.join(cloud, n), "wb") as f:
        f.write(os.urandom(262144))
deadline = time.time() + 120
while time.time() < deadline and not any(n in names for n in os.listdir(share)):
    time.sleep(0.005)
done = set(os.listdir(share))
swapped = 0
for n in names:
    if n not in done:
        os.unlink(os.path.join(cloud, n)); os.mkfifo(os.path.join(cloud, n)); swapped += 1
print(swapped)
"#;
    let o = alice.run(&[
        "/usr/bin/python3",
        "-c",
        racer,
        cloud2.to_str().unwrap(),
        share2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let swapped: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    eprintln!("swapped for FIFOs before their upload: {swapped}");
    assert!(
        swapped > 0,
        "the swap did not land mid-sync: the test proves nothing"
    );
    // The pass ends and the daemon answers; a sync after it completes too.
    let o = alice
        .command(&[
            "timeout",
            "120",
            cli.path.to_str().unwrap(),
            "--socket",
            d.socket.to_str().unwrap(),
            "sync",
            cloud2.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(124), "sync hung: {}", out(&o));
    let o = cli.run(alice, &d.socket, &["status", cloud2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
    for n in names(&share2) {
        let m = std::fs::symlink_metadata(share2.join(&n)).unwrap();
        assert!(m.is_file(), "{n} in the share is not a regular file");
        assert_eq!(m.len(), 262144, "{n} was uploaded short");
    }
    assert!(
        names(&share2).len() < 300,
        "every file was uploaded before its swap: the swap did not land mid-sync"
    );
}

// ---------------------------------------------------------------- F2

const HOG: &str = r#"
import os, resource, selectors, socket, sys, time
sock, n, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel, conns = selectors.DefaultSelector(), []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)  # a full backlog fails at once instead of waiting
    try:
        s.connect(sock)
        s.sendall(b'{"id":1,"op":"hello","version":1,"client":"hog"}\n')
    except OSError:
        s.close()
        continue
    conns.append(s)
    sel.register(s, selectors.EVENT_READ, b"")
busy = served = 0
deadline = time.time() + 20
pending = {s: b"" for s in conns}
while pending and time.time() < deadline:
    for key, _ in sel.select(0.5):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        pending[s] += data
        if not data or b"\n" in pending[s]:
            if b'"busy"' in pending[s]:
                busy += 1
            elif b"\n" in pending[s]:
                served += 1
            sel.unregister(s)
            del pending[s]
print(busy, served, flush=True)
while not os.path.exists(stop):
    time.sleep(0.1)
"#;

/// F2: 2,000 connections from one user (daemon at an open-file limit of 1024, as systemd's
/// soft default) are capped per user; another user's reader still gets its bytes, and the
/// worker never restarts. With the caps raised past the fd limit, `accept` failing with
/// EMFILE does not end the worker either.
#[test]
fn f2_thousands_of_connections_from_one_user_stall_no_one() {
    let fs = world_fs(512);
    let mut d = Daemon::start(None);
    let cli = SharedCli::new();
    let alice = User::create("a");
    let bob = User::create("b");
    let hb = home(&fs, &bob);
    bob.sh_ok(&format!(
        "cd '{}' && mkdir share && head -c 8388608 /dev/urandom > share/big && head -c 8388608 /dev/urandom > share/big2",
        hb.display()
    ));
    let cloud = hb.join("Cloud");
    let limited = |c: Command| {
        let mut w = Command::new("prlimit");
        w.arg("--nofile=1024:1024")
            .arg("--")
            .arg(c.get_program())
            .args(c.get_args());
        w
    };
    d.stop();
    let _ = std::fs::remove_file(d.state.join("worker.pid"));
    d.spawn_with(&limited);
    cli.add_share_root(&bob, &d.socket, &cloud, &hb.join("share"));
    let worker = d.worker_pid().unwrap();
    let stop = fs.mnt.join("stop");
    let hog = |d: &Daemon| -> (Child, u64, u64) {
        let mut c = alice
            .command(&[
                "/usr/bin/python3",
                "-c",
                HOG,
                d.socket.to_str().unwrap(),
                "2000",
                stop.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut it = line.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        (c, it.next().unwrap(), it.next().unwrap())
    };
    let (mut c, busy, served) = hog(&d);
    eprintln!("default caps: {served} served, {busy} refused as busy");
    assert!(
        busy >= 1900,
        "the per-user cap did not refuse alice's connections ({busy} busy, {served} served)"
    );
    // Bob, while alice holds her connections: a read of an online-only file and a request.
    let expected = sha256(&hb.join("share/big")).unwrap();
    let o = bob.run(&[
        "timeout",
        "120",
        "sha256sum",
        cloud.join("big").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&expected),
        "bob's reader: {}",
        out(&o)
    );
    let o = cli.run(&bob, &d.socket, &["status", cloud.to_str().unwrap()]);
    assert!(o.status.success(), "bob's request: {}", out(&o));
    std::fs::write(&stop, b"").unwrap();
    c.wait().unwrap();
    std::fs::remove_file(&stop).unwrap();
    assert_eq!(
        d.worker_pid(),
        Some(worker),
        "the worker restarted:\n{}",
        d.log()
    );

    // Caps above the fd limit: accept fails with EMFILE, and the worker stays up.
    write_limits(
        &d,
        serde_json::json!({"connections_per_user": 5000, "connections": 5000}),
    );
    d.stop();
    let _ = std::fs::remove_file(d.state.join("worker.pid"));
    d.spawn_with(&limited);
    let worker = d.worker_pid().unwrap();
    let (mut c, busy, served) = hog(&d);
    eprintln!("caps past the fd limit: {served} served, {busy} busy");
    assert!(
        served < 2000,
        "the fd limit was never reached: the test proves nothing"
    );
    std::fs::write(&stop, b"").unwrap();
    c.wait().unwrap();
    wait_for("the daemon to log the refused accept", 30, || {
        d.log().contains("cannot accept a connection")
    });
    assert_eq!(
        d.worker_pid(),
        Some(worker),
        "EMFILE ended the worker:\n{}",
        d.log()
    );
    let expected = sha256(&hb.join("share/big2")).unwrap();
    let o = bob.run(&[
        "timeout",
        "120",
        "sha256sum",
        cloud.join("big2").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&expected),
        "bob's reader after: {}",
        out(&o)
    );
}

// ---------------------------------------------------------------- F7

/// F7: one user's servers cannot stop background sync for others. Alice's WebDAV server
/// drips an endless PROPFIND and her S3 server repeats its continuation token; bob's root
/// keeps syncing meanwhile, the dripping pass ends at the pass deadline and the S3 listing
/// stops at the repeated token, each with an error on that root only.
#[test]
fn f7_a_dripping_propfind_and_a_repeated_s3_token_delay_only_their_own_root() {
    let fs = world_fs(512);
    // A dripping pass lasts 60 s; bob's files must arrive well inside that (45 s, against a
    // 5 s poll), which they cannot if passes of different roots wait for each other.
    let d = daemon_with_limits(serde_json::json!({"pass_deadline_secs": 60}));
    let cli = SharedCli::new();
    let alice = User::create("a");
    let bob = User::create("b");
    let ha = home(&fs, &alice);
    let hb = home(&fs, &bob);
    let dav = Hostile::start("normal");
    let s3 = Hostile::start("normal");
    let (dav_root, s3_root) = (ha.join("Dav"), ha.join("S3"));
    let o = cli.run(
        &alice,
        &d.socket,
        &[
            "add-root",
            dav_root.to_str().unwrap(),
            &format!("dav://127.0.0.1:{}/dav", dav.port),
            "--no-keyring",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = cli.run_stdin(
        &alice,
        &d.socket,
        &[
            "add-root",
            s3_root.to_str().unwrap(),
            "s3://bucket/pre",
            "--endpoint",
            &format!("http://127.0.0.1:{}", s3.port),
            "--path-style",
            "--secret-stdin",
            "--no-keyring",
        ],
        "ak:sk\n",
    );
    assert!(o.status.success(), "{}", out(&o));
    bob.sh_ok(&format!(
        "cd '{}' && mkdir share && echo 0 > share/first",
        hb.display()
    ));
    let bob_root = hb.join("Cloud");
    cli.add_share_root(&bob, &d.socket, &bob_root, &hb.join("share"));
    for u in [&alice, &bob] {
        let o = cli.run(u, &d.socket, &["config", "set", "poll_interval_secs", "5"]);
        assert!(o.status.success(), "{}", out(&o));
    }
    dav.set("drip");
    s3.set("loop");
    let before = dav.requests().lines().count();
    // Bob's remote changes keep arriving by background sync, three times over.
    for i in 1..=3 {
        bob.sh_ok(&format!("echo {i} > '{}/share/new{i}'", hb.display()));
        let p = bob_root.join(format!("new{i}"));
        wait_for(
            &format!("bob's new{i} to arrive by background sync"),
            45,
            || p.exists(),
        );
    }
    wait_for("the dripping root's pass to hit its deadline", 180, || {
        last_error(&d, &dav_root).is_some_and(|e| e.contains("gave up after"))
    });
    wait_for("the S3 root to stop at the repeated token", 90, || {
        last_error(&d, &s3_root).is_some_and(|e| e.contains("continuation token"))
    });
    assert!(
        dav.requests().lines().count() > before,
        "the dripping server was never asked"
    );
    assert!(
        last_error(&d, &bob_root).is_none(),
        "bob's root got an error: {:?}",
        last_error(&d, &bob_root)
    );
    let doctor =
        String::from_utf8_lossy(&cli.run(&alice, &d.socket, &["doctor"]).stdout).into_owned();
    assert!(
        doctor.contains("pass_deadline_secs"),
        "doctor does not name the limit:\n{doctor}"
    );
}

// ---------------------------------------------------------------- F8

/// F8: a listing of 5,000,000 entries is refused at the configured limit, per root and per
/// listing, with the worker's memory bounded; a root whose server later grows past the limit
/// gets an error and a `doctor` line.
#[test]
fn f8_a_listing_of_five_million_entries_is_refused_at_the_limit() {
    let fs = world_fs(512);
    // 20,000 entries fit the loop filesystem's inodes (add-root makes placeholders while the
    // listing streams in); the server offers 5,000,000.
    let mut d = daemon_with_limits(serde_json::json!({"entries_per_root": 20000}));
    let huge = Hostile::start("huge");
    let url = format!("dav://127.0.0.1:{}/dav", huge.port);
    let o = d.try_cli(&[
        "add-root",
        fs.mnt.join("a").to_str().unwrap(),
        &url,
        "--no-keyring",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success()
            && err.contains("more than 20000 entries")
            && err.contains("limits.json"),
        "{}",
        out(&o)
    );
    let peak = vm_hwm_kib(d.worker_pid().unwrap());
    eprintln!(
        "worker peak RSS after refusing the listing: {} MiB",
        peak / 1024
    );
    assert!(
        peak < 400 * 1024,
        "the worker held {} MiB for a refused listing",
        peak / 1024
    );

    // The per-listing limit, below the per-root one.
    let o = d.try_cli(&["doctor"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("a configured limit was reached"), "{text}");
    write_limits(
        &d,
        serde_json::json!({"entries_per_root": 10000000, "entries_per_listing": 10000}),
    );
    d.restart();
    let o = d.try_cli(&[
        "add-root",
        fs.mnt.join("b").to_str().unwrap(),
        &url,
        "--no-keyring",
    ]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr)
                .contains("more than 10000 entries in one listing"),
        "{}",
        out(&o)
    );
    let peak = vm_hwm_kib(d.worker_pid().unwrap());
    assert!(
        peak < 400 * 1024,
        "the worker held {} MiB for a refused listing",
        peak / 1024
    );

    // A root that grows past the limit after it was added.
    huge.set("normal");
    let c = fs.mnt.join("c");
    d.cli(&["add-root", c.to_str().unwrap(), &url, "--no-keyring"]);
    huge.set("huge");
    let o = d.try_cli(&["sync", c.to_str().unwrap()]);
    assert!(
        !o.status.success() && out(&o).contains("limits.json"),
        "{}",
        out(&o)
    );
    let o = d.try_cli(&["doctor"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("a configured limit was reached"), "{text}");
    assert!(c.join("a.txt").exists(), "the root's files were lost");
    // The per-root limit in a sync pass of a server that lists folder by folder (each
    // listing within its own limit).
    huge.set("wide");
    write_limits(
        &d,
        serde_json::json!({"entries_per_root": 20000, "entries_per_listing": 10000000}),
    );
    d.restart();
    let o = d.try_cli(&["sync", c.to_str().unwrap()]);
    assert!(
        !o.status.success() && out(&o).contains("more than 20000 entries in the sync root"),
        "{}",
        out(&o)
    );
    let peak = vm_hwm_kib(d.worker_pid().unwrap());
    assert!(
        peak < 400 * 1024,
        "the worker held {} MiB for a refused pass",
        peak / 1024
    );
    assert!(c.join("a.txt").exists(), "the root's files were lost");
}

// ---------------------------------------------------------------- F10

/// F10: below the daemon-wide free-space floor, hydration answers ENOSPC to the reader (and
/// says why in the log and an error event); the file stays a placeholder, never zeros.
#[test]
fn f10_hydration_stops_at_the_free_space_floor() {
    let fs = world_fs(256);
    let d = daemon_with_limits(serde_json::json!({"min_free_bytes": 1u64 << 30}));
    let share = fs.mnt.join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("f"), vec![7u8; 1 << 20]).unwrap();
    let root = fs.mnt.join("root");
    d.cli(&["add-root", root.to_str().unwrap(), &file_url(&share)]);
    let o = Command::new("cat").arg(root.join("f")).output().unwrap();
    assert!(!o.status.success(), "a read below the floor succeeded");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No space left on device"),
        "{}",
        out(&o)
    );
    assert!(o.stdout.iter().all(|&b| b == 7), "the reader saw zeros");
    assert!(
        allocated(&root.join("f")) < 1 << 20,
        "bytes were written below the floor"
    );
    assert!(d.log().contains("free-space floor"), "{}", d.log());
}

// ---------------------------------------------------------------- F11

/// F11: add-root's errors say only what the caller could see: inside a folder alice cannot
/// enter, an existing and a missing path give the same answer, for the root and for a
/// `file://` remote, and another user's root is never named.
#[test]
fn f11_errors_say_only_what_the_caller_could_see() {
    let fs = world_fs(256);
    let d = Daemon::start(None);
    let cli = SharedCli::new();
    let alice = User::create("a");
    let bob = User::create("b");
    let ha = home(&fs, &alice);
    let hb = home(&fs, &bob);
    let (ro, _) = root_only(&fs);
    std::fs::create_dir(ro.join("exists")).unwrap();
    alice.sh_ok(&format!("mkdir '{}/share'", ha.display()));
    let share = file_url(&ha.join("share"));
    let answer = |local: &Path, remote: &str| -> String {
        let o = cli.run(
            &alice,
            &d.socket,
            &["add-root", local.to_str().unwrap(), remote],
        );
        assert!(!o.status.success(), "{}", out(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e1 = answer(&ro.join("exists/new"), &share).replace("exists", "X");
    let e2 = answer(&ro.join("missing/new"), &share).replace("missing", "X");
    assert_eq!(
        e1, e2,
        "add-root tells whether a path in a root-only folder exists"
    );
    assert!(e1.contains("ermission denied"), "{e1}");
    let e1 = answer(&ha.join("c1"), &file_url(&ro.join("exists"))).replace("exists", "X");
    let e2 = answer(&ha.join("c1"), &file_url(&ro.join("missing"))).replace("missing", "X");
    assert_eq!(
        e1, e2,
        "a file:// remote tells whether a path in a root-only folder exists"
    );
    // Bob's root is not named to alice.
    bob.sh_ok(&format!("mkdir '{}/share'", hb.display()));
    let bob_root = hb.join("Cloud");
    cli.add_share_root(&bob, &d.socket, &bob_root, &hb.join("share"));
    std::fs::set_permissions(&bob_root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = answer(&bob_root.join("inner"), &share);
    assert!(!e.contains("overlaps the sync root"), "{e}");
    let e = answer(&hb, &share);
    assert!(
        !e.contains(bob_root.to_str().unwrap()) || e.contains("not your"),
        "{e}"
    );
}

// ---------------------------------------------------------------- F12

/// F12: setuid and setgid bits of a `file://` share never reach placeholders, and what the
/// daemon uploads into a share belongs to the share's owner.
#[test]
fn f12_no_setuid_placeholders_and_uploads_owned_by_the_user() {
    let sc = Scene::new(256);
    let (d, cli, alice, ha) = (&sc.d, &sc.cli, &sc.alice, &sc.ha);
    sc.share("mkdir share/sg && echo '#!/bin/sh' > share/tool && chmod 4755 share/tool && chmod 2775 share/sg");
    let cloud = ha.join("Cloud");
    cli.add_share_root(alice, &d.socket, &cloud, &ha.join("share"));
    for p in [cloud.join("tool"), cloud.join("sg")] {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            m.mode() & 0o6000,
            0,
            "{} has setuid/setgid bits: {:o}",
            p.display(),
            m.mode()
        );
    }
    assert_eq!(
        std::fs::metadata(cloud.join("tool")).unwrap().mode() & 0o777,
        0o755
    );
    alice.sh_ok(&format!("echo new > '{}/made-here.txt'", cloud.display()));
    let o = cli.run(alice, &d.socket, &["sync", cloud.to_str().unwrap()]);
    assert!(o.status.success(), "{}", out(&o));
    let up = ha.join("share/made-here.txt");
    wait_for("the upload", 60, || up.exists());
    assert_eq!(
        std::fs::metadata(&up).unwrap().uid(),
        alice.uid,
        "the upload is not alice's"
    );
}

//! Packaging: the systemd unit verifies cleanly and its `systemd-analyze security` exposure is
//! at most 4.0; the .debs tested are exactly those the last `scripts/package` built (the list
//! it writes, each the only one of its name, version and architecture); the core .deb holds
//! the daemon, CLI, unit, tmpfiles entry, file-manager integrations, emblems and man page, and
//! lintian reports no error; its maintainer scripts run through dpkg in a throwaway Debian 12
//! (install, upgrade, refused and allowed removal, stale sockets, reinstall, purge; with and
//! without systemd) and a purge leaves every file's bytes, mode and owner as they were; the
//! packaged pre-removal script refuses while a real daemon still has sync roots, and lets
//! removal go on once there are none. The tray app's .deb: fields, files, desktop entry,
//! lintian.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{Daemon, LoopFs};
use remotes::{add_root, upload, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/skyfilld.service"))
        .unwrap()
        .replace("/usr/bin/skyfilld", env!("CARGO_BIN_EXE_skyfilld"));
    let p = dir.path().join("skyfilld.service");
    std::fs::write(&p, unit).unwrap();
    let (ok, out) = run(
        "systemd-analyze",
        &["verify", "--man=no", p.to_str().unwrap()],
    );
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    let (_, out) = run(
        "systemd-analyze",
        &["security", "--offline=yes", p.to_str().unwrap()],
    );
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for skyfilld.service:")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{out}"));
    println!("systemd-analyze security exposure: {score}");
    assert!(score <= 4.0, "exposure {score} > 4.0:\n{out}");
}

/// The .deb of `package` that the last `scripts/package` built: the path it wrote to
/// `target/packaging/debs`, checked to be the only file in its folder with that exact
/// package name, version and architecture (an older or second build there fails the test
/// instead of being tested by mistake).
fn built_deb(package: &str, version: &str) -> PathBuf {
    let list = repo().join("target/packaging/debs");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/package (scripts/test runs `scripts/package --debug`)",
            list.display()
        )
    });
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| *name == package)
        .map(|(_, p)| p)
        .collect();
    let [path] = paths[..] else {
        panic!(
            "{} names {} .deb(s) of {package} (run scripts/package without --no-tray?):\n{text}",
            list.display(),
            paths.len()
        )
    };
    let deb = PathBuf::from(path);
    assert!(
        deb.is_file(),
        "{} (from {}) is gone",
        deb.display(),
        list.display()
    );
    let arch = host_arch();
    let fields = |p: &Path| {
        let (ok, f) = run(
            "dpkg-deb",
            &[
                "-f",
                p.to_str().unwrap(),
                "Package",
                "Version",
                "Architecture",
            ],
        );
        assert!(ok, "dpkg-deb -f {}: {f}", p.display());
        f
    };
    let f = fields(&deb);
    let want_version = |f: &str| {
        f.lines().any(|l| {
            l.strip_prefix("Version: ").is_some_and(|v| {
                v == version || v.strip_prefix(version).is_some_and(|r| r.starts_with('-'))
            })
        })
    };
    let matches = |f: &str| {
        f.lines().any(|l| l == format!("Package: {package}"))
            && f.lines().any(|l| l == format!("Architecture: {arch}"))
            && want_version(f)
    };
    assert!(
        matches(&f),
        "{} is not {package} {version} for {arch}:\n{f}",
        deb.display()
    );
    let candidates: Vec<PathBuf> = std::fs::read_dir(deb.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .filter(|p| matches(&fields(p)))
        .collect();
    assert_eq!(
        candidates,
        vec![deb.clone()],
        "more than one {package} {version} .deb for {arch}: which one was built is ambiguous"
    );
    deb
}

fn host_arch() -> String {
    let (ok, out) = run("dpkg", &["--print-architecture"]);
    assert!(ok, "dpkg --print-architecture: {out}");
    out.trim().to_string()
}

fn the_deb() -> PathBuf {
    built_deb("skyfill", env!("CARGO_PKG_VERSION"))
}

/// The tray app's .deb and the build profile it was bundled from (`debug` in CI).
fn the_tray_deb() -> (&'static str, PathBuf) {
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("src-tauri/tauri.conf.json")).unwrap())
            .unwrap();
    let version = conf["version"]
        .as_str()
        .expect("tauri.conf.json has no version");
    let deb = built_deb("skyfill-tray", version);
    let profile = ["debug", "release"]
        .into_iter()
        .find(|p| deb.starts_with(repo().join("target").join(p).join("bundle/deb")))
        .unwrap_or_else(|| panic!("{} is not under target/<profile>/bundle/deb", deb.display()));
    (profile, deb)
}

/// `dpkg-deb -f` and `-c` of `deb`, each checked to contain what is wanted.
fn fields_and_contents(deb: &str, fields: &[&str], files: &[&str]) -> (String, String) {
    let (ok, f) = run("dpkg-deb", &["-f", deb]);
    assert!(ok, "{f}");
    for want in fields {
        assert!(f.contains(want), "field {want:?} missing:\n{f}");
    }
    let (ok, list) = run("dpkg-deb", &["-c", deb]);
    assert!(ok, "{list}");
    for want in files {
        assert!(
            list.contains(want),
            "{want} missing from the package:\n{list}"
        );
    }
    (f, list)
}

#[test]
fn deb_has_everything_and_lintian_finds_no_error() {
    let deb = the_deb();
    let d = deb.to_str().unwrap();
    fields_and_contents(
        d,
        &[
            "Package: skyfill",
            "Architecture: amd64",
            "Section: utils",
            "Depends: ",
        ],
        &[
            "./usr/bin/skyfilld",
            "./usr/bin/skyfill",
            "./usr/lib/systemd/system/skyfilld.service",
            "./usr/lib/tmpfiles.d/skyfill.conf",
            "./usr/share/nautilus-python/extensions/skyfill_nautilus.py",
            "./usr/share/nemo-python/extensions/skyfill_nemo.py",
            "./usr/share/caja-python/extensions/skyfill_caja.py",
            "./usr/share/icons/hicolor/scalable/emblems/emblem-skyfill-cloud.svg",
            "./usr/share/kio/servicemenus/skyfill.desktop",
            "./usr/lib/x86_64-linux-gnu/qt5/plugins/kf5/overlayicon/skyfilloverlayplugin.so",
            "./usr/share/skyfill/thunar-uca.xml",
            "./usr/share/man/man1/skyfill.1.gz",
            "./usr/share/doc/skyfill/SYNC.md",
        ],
    );
    let ctl = tempfile::tempdir().unwrap();
    let (ok, out) = run("dpkg-deb", &["-e", d, ctl.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    for s in ["postinst", "prerm", "postrm"] {
        let p = ctl.path().join(s);
        let m = std::fs::metadata(&p).unwrap_or_else(|_| panic!("{s} missing"));
        assert!(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
        let (ok, out) = run("sh", &["-n", p.to_str().unwrap()]);
        assert!(ok, "{s}: {out}");
    }
    let (_, out) = run("lintian", &["--tag-display-limit", "0", d]);
    println!("lintian:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

/// The maintainer scripts of `deb`, unpacked into a temporary folder.
fn control_scripts(deb: &Path) -> tempfile::TempDir {
    let ctl = tempfile::tempdir().unwrap();
    let (ok, out) = run(
        "dpkg-deb",
        &["-e", deb.to_str().unwrap(), ctl.path().to_str().unwrap()],
    );
    assert!(ok, "{out}");
    ctl
}

/// The packaged `prerm remove` against a real daemon: it goes on while the daemon has no
/// root, refuses (naming the root) while it has one, and goes on again after remove-root.
#[tokio::test(flavor = "multi_thread")]
async fn removal_refuses_while_sync_roots_exist() {
    let ctl = control_scripts(&the_deb());
    let fs = LoopFs::new("ext4", 128);
    let d = Daemon::start(None);
    let prerm = ctl.path().join("prerm");
    let bin = Path::new(env!("CARGO_BIN_EXE_skyfill"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let attempt = || {
        Command::new("sh")
            .arg(&prerm)
            .arg("remove")
            .env("PATH", &path)
            .env("SKYFILL_SOCKET", &d.socket)
            .env("SKYFILL_STATE_DIR", &d.state)
            .output()
            .unwrap()
    };
    let o = attempt();
    assert!(o.status.success(), "no roots: removal goes on: {o:?}");
    let (args, secret) = upload(&Server::Apache, &BTreeMap::new()).await;
    let root = fs.mnt.join("Cloud");
    add_root(&d, &root, &args, &secret);
    let o = attempt();
    assert!(!o.status.success(), "with a root, removal must refuse");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("remove-root") && err.contains(root.to_str().unwrap()),
        "{err}"
    );
    assert!(d.socket.exists(), "prerm deleted a live daemon's socket");
    d.cli(&["remove-root", root.to_str().unwrap(), "--keep-local"]);
    let o = attempt();
    assert!(
        o.status.success(),
        "after remove-root, removal goes on: {o:?}"
    );
}

/// One entry of a file tree: type, mode, owner and content (file bytes hashed, link target,
/// device number): what a purge must leave as it found it.
fn describe(p: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(p).unwrap();
    let t = m.file_type();
    let what = if t.is_symlink() {
        format!("link -> {}", std::fs::read_link(p).unwrap().display())
    } else if t.is_file() {
        format!(
            "file {} sha256 {}",
            m.len(),
            hsm::sha256(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        )
    } else if t.is_dir() {
        "dir".to_string()
    } else if t.is_block_device() || t.is_char_device() {
        format!("dev {:x}", m.rdev())
    } else {
        format!("other {:?}", t)
    };
    format!("{what} mode {:o} owner {}:{}", m.mode(), m.uid(), m.gid())
}

/// The path of every process whose root directory is `dir` (a daemon a script started).
fn processes_rooted_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(r) = std::fs::read_link(e.path().join("root")) {
            if r == dir {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                found.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
            }
        }
    }
    found
}

/// A fresh minimal Debian 12 (debootstrap minbase, unpacked from the tarball
/// `.ci/install-deps` caches) to install packages into with `chroot … dpkg`.
struct Chroot {
    dir: tempfile::TempDir,
}

impl Chroot {
    fn new() -> Chroot {
        hsm::require_root();
        let tar = std::env::var("SKYFILL_TEST_CHROOT_TAR")
            .unwrap_or_else(|_| "/var/cache/skyfill-ci/bookworm-minbase.tar".into());
        assert!(
            Path::new(&tar).is_file(),
            "no throwaway Debian root at {tar}: run .ci/install-deps (debootstrap --variant=minbase)"
        );
        let dir = tempfile::Builder::new()
            .prefix("skyfill-chroot")
            .tempdir()
            .unwrap();
        let (ok, out) = run("tar", &["-C", dir.path().to_str().unwrap(), "-xf", &tar]);
        assert!(ok, "unpacking {tar}: {out}");
        Chroot { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    /// `args` inside the root; fails the test when it runs longer than 5 minutes (a
    /// maintainer script that blocks).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let log = tempfile::tempfile().unwrap();
        let mut child = Command::new("chroot")
            .arg(self.dir.path())
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} in the throwaway root still ran after 5 minutes");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        use std::io::{Read, Seek};
        let mut log = log;
        log.rewind().unwrap();
        let mut out = String::new();
        log.read_to_string(&mut out).unwrap();
        (st.success(), out)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "{args:?} in the throwaway root failed:\n{out}");
        out
    }

    fn status(&self) -> String {
        let (_, st) = self.run(&["dpkg-query", "-W", "-f", "${Status} ${Version}", "skyfill"]);
        st
    }

    /// Every entry below the root except dpkg's own bookkeeping, logs, caches and /tmp, each
    /// described by `describe`.
    fn tree(&self) -> BTreeMap<String, String> {
        let root = self.dir.path();
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                if ["var/lib/dpkg", "var/log", "var/cache", "tmp"]
                    .iter()
                    .any(|x| rel == *x || rel.starts_with(&format!("{x}/")))
                {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(p.clone());
                }
                out.insert(rel, describe(&p));
            }
        }
        out
    }

    /// Asserts that the root is as `before` described it (after a purge).
    fn assert_unchanged(&self, before: &BTreeMap<String, String>) {
        let after = self.tree();
        let mut diff = Vec::new();
        for (p, was) in before {
            match after.get(p) {
                None => diff.push(format!("removed {p} ({was})")),
                Some(now) if now != was => diff.push(format!("changed {p}: {was} -> {now}")),
                _ => {}
            }
        }
        for (p, now) in &after {
            if !before.contains_key(p) {
                diff.push(format!("added {p} ({now})"));
            }
        }
        assert!(
            diff.is_empty(),
            "the purge left the root changed:\n{}",
            diff.join("\n")
        );
        let info: Vec<_> = std::fs::read_dir(self.path("var/lib/dpkg/info"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("skyfill."))
            .collect();
        assert!(info.is_empty(), "dpkg still knows skyfill: {info:?}");
        let st = self.status();
        assert!(!st.contains("installed"), "after purge: {st}");
    }

    /// A copy of `deb` as version `version` in the root's /tmp (to upgrade to).
    fn deb_as_version(&self, deb: &Path, version: &str) -> String {
        let x = tempfile::tempdir().unwrap();
        let tree = x.path().join("tree");
        let (ok, out) = run(
            "dpkg-deb",
            &["-R", deb.to_str().unwrap(), tree.to_str().unwrap()],
        );
        assert!(ok, "{out}");
        let ctl = tree.join("DEBIAN/control");
        let text = std::fs::read_to_string(&ctl).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("Version: ") {
                    format!("Version: {version}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&ctl, text).unwrap();
        let name = format!("/tmp/skyfill_{version}.deb");
        let (ok, out) = run(
            "dpkg-deb",
            &[
                "--root-owner-group",
                "-b",
                tree.to_str().unwrap(),
                self.path(&name).to_str().unwrap(),
            ],
        );
        assert!(ok, "{out}");
        name
    }

    /// A socket file at `p` (inside the root) with no process behind it.
    fn stale_socket(&self, p: &str) -> PathBuf {
        let s = self.path(p);
        drop(std::os::unix::net::UnixListener::bind(&s).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&s).is_err());
        s
    }

    fn register_root(&self) {
        std::fs::write(
            self.path("var/lib/skyfill/roots.json"),
            r#"[{"local":"/home/u/Cloud","remote":"dav://example.org/u"}]"#,
        )
        .unwrap();
    }
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// Without systemd (the postinst's other branch), in a throwaway Debian 12: install,
/// refused removal, upgrade with a registered root, stale sockets, removal, reinstall after a
/// removal, purge. Each maintainer script runs through dpkg, and the purge leaves every file
/// of the root with the bytes, mode and owner it had.
#[test]
fn deb_lifecycle_without_systemd_in_a_throwaway_root() {
    let deb = the_deb();
    let c = Chroot::new();
    let before = c.tree();
    let v1 = "/tmp/skyfill.deb";
    std::fs::copy(&deb, c.path(v1)).unwrap();
    let v2 = c.deb_as_version(&deb, "99.0.0-1");

    // Install: binaries run against this system's libraries; the unit is enabled (not
    // masked); socket and state directories exist with their modes; nothing is started.
    c.ok(&["dpkg", "-i", v1]);
    assert!(
        c.status().starts_with("install ok installed"),
        "{}",
        c.status()
    );
    for cmd in [&["skyfill", "--version"][..], &["skyfilld", "--help"][..]] {
        c.ok(cmd);
    }
    let wants = c.path("etc/systemd/system/multi-user.target.wants/skyfilld.service");
    let mask = c.path("etc/systemd/system/skyfilld.service");
    let target = std::fs::read_link(&wants).unwrap_or_else(|e| {
        panic!(
            "postinst did not enable skyfilld.service ({}: {e})",
            wants.display()
        )
    });
    assert!(
        target.ends_with("systemd/system/skyfilld.service")
            && c.path(target.to_str().unwrap()).is_file(),
        "the wants link points to {}",
        target.display()
    );
    assert!(
        std::fs::symlink_metadata(&mask).is_err(),
        "the unit is masked after install"
    );
    assert_eq!(mode_owner(&c.path("run/skyfill")), (0o755, 0, 0));
    assert_eq!(mode_owner(&c.path("var/lib/skyfill")), (0o700, 0, 0));
    let started = processes_rooted_in(c.dir.path());
    assert!(
        started.is_empty(),
        "without systemd nothing may be started: {started:?}"
    );

    // A registered root, daemon not running: removal refuses and nothing is removed.
    c.register_root();
    let (ok, out) = c.run(&["dpkg", "-r", "skyfill"]);
    assert!(!ok, "removal must refuse while roots exist: {out}");
    assert!(
        out.contains("remove-root") && out.contains("/home/u/Cloud"),
        "{out}"
    );
    assert!(c.path("usr/bin/skyfilld").exists());
    assert!(c.status().contains(" ok installed "), "{}", c.status());

    // An upgrade goes on with the root registered, and keeps the registry as it was.
    let roots = std::fs::read(c.path("var/lib/skyfill/roots.json")).unwrap();
    c.ok(&["dpkg", "-i", &v2]);
    assert_eq!(c.status(), "install ok installed 99.0.0-1");
    assert_eq!(
        std::fs::read(c.path("var/lib/skyfill/roots.json")).unwrap(),
        roots
    );
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the upgrade disabled the unit"
    );

    // A stale socket (no daemon behind it) does not let removal past the registry; prerm
    // deletes it and does not block.
    let sock = c.stale_socket("run/skyfill/skyfill.sock");
    let (ok, out) = c.run(&["dpkg", "-r", "skyfill"]);
    assert!(
        !ok,
        "a stale socket let removal go on with a registered root: {out}"
    );
    assert!(
        out.contains("stale socket") && out.contains("roots.json"),
        "{out}"
    );
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the stale socket is still there"
    );
    assert!(c.status().contains(" ok installed "), "{}", c.status());

    // No root and a stale socket: removal goes on and deletes it; the state stays (until
    // purge), the unit is masked, the binaries are gone.
    std::fs::remove_file(c.path("var/lib/skyfill/roots.json")).unwrap();
    std::fs::write(c.path("var/lib/skyfill/keep"), b"state").unwrap();
    let sock = c.stale_socket("run/skyfill/skyfill.sock");
    let out = c.ok(&["dpkg", "-r", "skyfill"]);
    assert!(out.contains("stale socket"), "{out}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the stale socket is still there"
    );
    assert!(!c.path("usr/bin/skyfilld").exists());
    assert!(!c.path("usr/lib/systemd/system/skyfilld.service").exists());
    assert_eq!(
        std::fs::read(c.path("var/lib/skyfill/keep")).unwrap(),
        b"state"
    );
    assert_eq!(
        std::fs::read_link(&mask).ok(),
        Some(PathBuf::from("/dev/null")),
        "postrm remove did not mask the unit"
    );

    // Installing again after a removal unmasks and enables the unit.
    c.ok(&["dpkg", "-i", &v2]);
    assert!(
        std::fs::symlink_metadata(&mask).is_err(),
        "the unit stays masked after a reinstall"
    );
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the unit is not enabled after a reinstall"
    );

    // Removal and purge leave the root exactly as it was.
    c.ok(&["dpkg", "-r", "skyfill"]);
    c.ok(&["dpkg", "-P", "skyfill"]);
    assert!(!c.path("var/lib/skyfill").exists() && !c.path("run/skyfill").exists());
    let left = processes_rooted_in(c.dir.path());
    assert!(
        left.is_empty(),
        "processes left running in the root: {left:?}"
    );
    c.assert_unchanged(&before);
}

/// `systemctl` as the throwaway root's systemd (the test machine runs none): records each
/// call in /tmp/systemctl.log and keeps the unit's state like systemd would (enabled = its
/// wants link, masked = a link to /dev/null, active = /tmp/skyfilld.active), so that what
/// the maintainer scripts ask of systemd through deb-systemd-helper and deb-systemd-invoke
/// can be checked. `preset` enables (systemd's default policy).
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
verb=; unit=
for a in "$@"; do
  case "$a" in -*) ;; *) if [ -z "$verb" ]; then verb=$a; elif [ -z "$unit" ]; then unit=$a; fi;; esac
done
echo "$verb $unit" >>/tmp/systemctl.log
W=/etc/systemd/system/multi-user.target.wants/skyfilld.service
M=/etc/systemd/system/skyfilld.service
A=/tmp/skyfilld.active
masked() { [ "$(readlink "$M" 2>/dev/null)" = /dev/null ]; }
case "$verb" in
  is-enabled) if masked; then echo masked; exit 1; elif [ -L "$W" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  is-active) [ -e "$A" ] ;;
  start|restart)
    if masked || [ ! -f /usr/lib/systemd/system/skyfilld.service ]; then exit 1; fi
    echo "$verb" >"$A" ;;
  stop) rm -f "$A" ;;
  preset) [ -f /usr/lib/systemd/system/skyfilld.service ] && mkdir -p "${W%/*}" && ln -sf /lib/systemd/system/skyfilld.service "$W" ;;
  disable) rm -f "$W" ;;
  daemon-reload) ;;
  *) echo "fake systemctl: unexpected $*" >&2; exit 1 ;;
esac
"#;

/// With systemd (simulated by `FAKE_SYSTEMCTL`): a first install enables and starts the
/// daemon; an upgrade restarts it without stopping it first; removal stops it; a reinstall
/// starts it again; an administrator's `systemctl disable` survives an upgrade (not started,
/// not re-enabled); purge leaves the root as it was.
#[test]
fn deb_lifecycle_under_systemd_in_a_throwaway_root() {
    use std::os::unix::fs::PermissionsExt;
    let deb = the_deb();
    let c = Chroot::new();
    std::fs::create_dir_all(c.path("run/systemd/system")).unwrap();
    let sc = c.path("usr/bin/systemctl");
    assert!(!sc.exists(), "the minimal root already has a systemctl");
    std::fs::write(&sc, FAKE_SYSTEMCTL).unwrap();
    std::fs::set_permissions(&sc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = c.tree();
    let v1 = "/tmp/skyfill.deb";
    std::fs::copy(&deb, c.path(v1)).unwrap();
    let v2 = c.deb_as_version(&deb, "99.0.0-1");
    let v3 = c.deb_as_version(&deb, "99.1.0-1");
    let calls = || {
        let p = c.path("tmp/systemctl.log");
        let s = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        s
    };
    let active = || c.path("tmp/skyfilld.active").exists();
    let wants = c.path("etc/systemd/system/multi-user.target.wants/skyfilld.service");

    c.ok(&["dpkg", "-i", v1]);
    let log = calls();
    assert!(
        log.contains("daemon-reload") && log.contains("start skyfilld.service"),
        "install: {log}"
    );
    assert!(active(), "install did not start skyfilld.service: {log}");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "install did not enable the unit"
    );

    c.ok(&["dpkg", "-i", &v2]);
    let log = calls();
    assert!(
        !log.contains("stop"),
        "an upgrade stopped the daemon before the new one was in: {log}"
    );
    assert!(
        log.contains("restart skyfilld.service") && active(),
        "upgrade did not restart: {log}"
    );

    c.ok(&["dpkg", "-r", "skyfill"]);
    let log = calls();
    assert!(
        log.contains("stop skyfilld.service") && !active(),
        "removal did not stop: {log}"
    );

    c.ok(&["dpkg", "-i", &v2]);
    let log = calls();
    assert!(
        active(),
        "reinstall after removal did not start the daemon: {log}"
    );

    // The administrator disables and stops it; an upgrade keeps it so.
    c.ok(&["systemctl", "disable", "skyfilld.service"]);
    c.ok(&["systemctl", "stop", "skyfilld.service"]);
    calls();
    c.ok(&["dpkg", "-i", &v3]);
    let log = calls();
    assert!(
        std::fs::symlink_metadata(&wants).is_err(),
        "the upgrade re-enabled a unit the administrator disabled: {log}"
    );
    assert!(!active(), "the upgrade started a disabled unit: {log}");

    c.ok(&["dpkg", "-P", "skyfill"]);
    c.assert_unchanged(&before);
}

/// The tray app's .deb, built by the Tauri bundler (`scripts/package`; CI bundles a debug
/// build): name, dependencies, binary, desktop entry (validated), icons, copyright; lintian
/// finds no error (an unstripped binary is expected of a debug build only).
#[test]
fn tray_deb_from_the_tauri_bundler() {
    let (profile, deb) = the_tray_deb();
    let d = deb.to_str().unwrap();
    let (fields, _) = fields_and_contents(
        d,
        &["Package: skyfill-tray", "Architecture: amd64"],
        &[
            "usr/bin/skyfill-tray",
            "usr/bin/skyfill-tray-icon",
            "usr/share/applications/skyfill-tray.desktop",
            "usr/share/icons/hicolor/128x128/apps/skyfill-tray.png",
            "usr/share/doc/skyfill-tray/copyright",
        ],
    );
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{fields}"));
    for want in ["skyfill (>=", "libwebkit2gtk-4.1-0", "libgtk-3-0", "libc6"] {
        assert!(depends.contains(want), "Depends lacks {want}: {depends}");
    }
    let x = tempfile::tempdir().unwrap();
    let (ok, out) = run("dpkg-deb", &["-x", d, x.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let desktop = x.path().join("usr/share/applications/skyfill-tray.desktop");
    let (ok, out) = run("desktop-file-validate", &[desktop.to_str().unwrap()]);
    assert!(ok && !out.contains("error"), "desktop-file-validate: {out}");
    let entry = std::fs::read_to_string(&desktop).unwrap();
    assert!(
        entry.contains("Exec=skyfill-tray") && entry.contains("Icon=skyfill-tray"),
        "{entry}"
    );
    let (_, out) = run("lintian", &["--tag-display-limit", "0", d]);
    println!("lintian ({profile} build):\n{out}");
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E:"))
        .filter(|l| !(profile == "debug" && l.contains("unstripped-binary-or-object")))
        .collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

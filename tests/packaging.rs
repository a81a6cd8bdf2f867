//! Packaging: the systemd unit verifies cleanly and its `systemd-analyze security` exposure is
//! at most 4.0; the .deb built by `scripts/package` holds the daemon, CLI, unit, tmpfiles
//! entry, file-manager integrations, emblems and man page, with sane fields and maintainer
//! scripts, and lintian reports no error; the pre-removal script refuses while a real daemon
//! still has sync roots, and lets removal go on once there are none.

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

fn the_deb() -> PathBuf {
    let dir = repo().join("target/debian");
    deb_in(&dir, "skyfill_")
        .unwrap_or_else(|| panic!("no skyfill_*.deb in {}: run scripts/package", dir.display()))
}

fn deb_in(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
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

#[tokio::test(flavor = "multi_thread")]
async fn removal_refuses_while_sync_roots_exist() {
    let fs = LoopFs::new("ext4", 128);
    let d = Daemon::start(None);
    let prerm = repo().join("packaging/deb/prerm");
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
    d.cli(&["remove-root", root.to_str().unwrap(), "--keep-local"]);
    assert!(
        attempt().status.success(),
        "after remove-root, removal goes on"
    );
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

    fn run(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec![self.dir.path().to_str().unwrap()];
        a.extend_from_slice(args);
        run("chroot", &a)
    }

    /// Every path in the root except dpkg's own bookkeeping and logs.
    fn tree(&self) -> Vec<String> {
        let root = self.dir.path();
        let mut out = Vec::new();
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
                    stack.push(p);
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    }
}

/// Install, refuse removal with a registered root, remove and purge in a throwaway Debian
/// root: the binaries run against that system's libraries, the unit is enabled, and a purge
/// leaves the root exactly as it was.
#[test]
fn deb_installs_and_purges_cleanly_in_a_throwaway_root() {
    let deb = the_deb();
    let c = Chroot::new();
    let before = c.tree();
    std::fs::copy(&deb, c.path("tmp/skyfill.deb")).unwrap();
    let (ok, out) = c.run(&["dpkg", "-i", "/tmp/skyfill.deb"]);
    assert!(ok, "dpkg -i in a minimal Debian 12: {out}");
    let (ok, out) = c.run(&["dpkg-query", "-W", "-f", "${Status}", "skyfill"]);
    assert!(ok && out.contains("install ok installed"), "{out}");
    for cmd in [&["skyfill", "--version"][..], &["skyfilld", "--help"][..]] {
        let (ok, out) = c.run(cmd);
        assert!(ok, "{cmd:?} in the throwaway root: {out}");
    }
    let wants = c.path("etc/systemd/system/multi-user.target.wants/skyfilld.service");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "postinst did not enable skyfilld.service"
    );
    assert!(c.path("var/lib/skyfill").is_dir() && c.path("run/skyfill").is_dir());

    // A registered root (daemon not running): removal refuses and nothing is removed.
    std::fs::write(
        c.path("var/lib/skyfill/roots.json"),
        r#"[{"local":"/home/u/Cloud"}]"#,
    )
    .unwrap();
    let (ok, out) = c.run(&["dpkg", "-r", "skyfill"]);
    assert!(!ok, "removal must refuse while roots exist: {out}");
    assert!(out.contains("remove-root"), "{out}");
    assert!(c.path("usr/bin/skyfilld").exists());
    let (_, st) = c.run(&["dpkg-query", "-W", "-f", "${Status}", "skyfill"]);
    assert!(st.contains("installed"), "{st}");

    std::fs::remove_file(c.path("var/lib/skyfill/roots.json")).unwrap();
    let (ok, out) = c.run(&["dpkg", "-r", "skyfill"]);
    assert!(ok, "dpkg -r: {out}");
    assert!(!c.path("usr/bin/skyfilld").exists());
    let (ok, out) = c.run(&["dpkg", "-P", "skyfill"]);
    assert!(ok, "dpkg -P: {out}");
    let after = c.tree();
    let added: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    let removed: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "purge left the root changed: added {added:?}, removed {removed:?}"
    );
}

/// The tray app's .deb, built by the Tauri bundler (`scripts/package`; CI bundles a debug
/// build): name, dependencies, binary, desktop entry (validated), icons, copyright; lintian
/// finds no error (an unstripped binary is expected of a debug build only).
#[test]
fn tray_deb_from_the_tauri_bundler() {
    let (profile, deb) = ["release", "debug"]
        .into_iter()
        .find_map(|profile| {
            let dir = repo().join("target").join(profile).join("bundle/deb");
            deb_in(&dir, "skyfill-tray_").map(|p| (profile, p))
        })
        .expect("no skyfill-tray_*.deb under target/*/bundle/deb: run scripts/package");
    let d = deb.to_str().unwrap();
    let (fields, _) = fields_and_contents(
        d,
        &["Package: skyfill-tray", "Architecture: amd64"],
        &[
            "usr/bin/skyfill-tray",
            "usr/share/applications/skyfill-tray.desktop",
            "usr/share/icons/hicolor/128x128/apps/skyfill-tray.png",
            "usr/share/doc/skyfill-tray/copyright",
        ],
    );
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{fields}"));
    for want in [
        "skyfill (>=",
        "libwebkit2gtk-4.1-0",
        "libgtk-3-0",
        "libayatana-appindicator3-1",
        "libc6",
    ] {
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

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
    find_deb("skyfill_")
}

fn find_deb(prefix: &str) -> PathBuf {
    let dir = repo().join("target/debian");
    let deb = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        });
    deb.unwrap_or_else(|| panic!("no {prefix}*.deb in {}: run scripts/package", dir.display()))
}

#[test]
fn deb_has_everything_and_lintian_finds_no_error() {
    let deb = the_deb();
    let d = deb.to_str().unwrap();
    let (ok, fields) = run("dpkg-deb", &["-f", d]);
    assert!(ok, "{fields}");
    for want in [
        "Package: skyfill",
        "Architecture: amd64",
        "Section: utils",
        "Depends: ",
    ] {
        assert!(fields.contains(want), "field {want:?} missing:\n{fields}");
    }
    let (ok, list) = run("dpkg-deb", &["-c", d]);
    assert!(ok, "{list}");
    for want in [
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
    ] {
        assert!(
            list.contains(want),
            "{want} missing from the package:\n{list}"
        );
    }
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

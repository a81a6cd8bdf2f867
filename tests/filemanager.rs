//! The file-manager integrations against a real daemon, as root (loop-mounted ext4, Apache
//! WebDAV): `tests/filemanager_ext.py` loads `packaging/filemanagers/skyfill_nautilus.py`
//! (without gi, then with the real gi bindings of Nautilus, and the generated Nemo and Caja
//! variants with theirs), checks its protocol calls, emblems and menus, and activates its
//! real menu items on real files; the Dolphin service menu and the Thunar custom actions that
//! the .deb ships are executed as those file managers run them, and their effect is checked
//! on disk and with `skyfill status`.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{Daemon, LoopFs};
use remotes::{add_root, upload, Server};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use suite::data;

/// `python3 tests/filemanager_ext.py ARGS` against daemon `d` and root `root`, with the CLI
/// under test first on PATH (the menus and the checks call `skyfill`, as a desktop does).
fn ext(d: &Daemon, root: &Path, outside: &Path, args: &[&str]) -> Command {
    let cli = Path::new(env!("CARGO_BIN_EXE_skyfill"));
    let path = format!(
        "{}:{}",
        cli.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("/usr/bin/python3");
    c.arg("tests/filemanager_ext.py")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .env("FM_SKYFILL", cli)
        .env("SKYFILL_SOCKET", &d.socket)
        .env("FM_ROOT", root)
        .env("FM_OUTSIDE", outside);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn nautilus_extension_against_the_daemon() {
    let fs = LoopFs::new("ext4", 256);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for i in 0..5 {
        files.insert(
            format!("docs/f{i}.bin"),
            data(800 + i, 70_000 + i as usize * 1000),
        );
    }
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("Cloud");
    add_root(&d, &root, &args, &secret);
    let outside = fs.mnt.join("outside.txt");
    std::fs::write(&outside, b"not synced").unwrap();
    let o = ext(&d, &root, &outside, &[])
        .env("FM_REQUIRE_NAUTILUS", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "extension test failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("loaded by gi (Nautilus 4.0)"), "{out}");

    // The Nemo and Caja variants come from the same source and compile.
    let dir = tempfile::tempdir().unwrap();
    let g = Command::new("bash")
        .arg("packaging/filemanagers/generate")
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(g.success());
    for fm in ["nemo", "caja"] {
        let p = dir.path().join(format!("skyfill_{fm}.py"));
        let src = std::fs::read_to_string(&p).unwrap();
        assert!(src.contains(&format!(
            "FILE_MANAGER = \"{}\"",
            if fm == "nemo" { "Nemo" } else { "Caja" }
        )));
        let c = Command::new("/usr/bin/python3")
            .args(["-m", "py_compile", p.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(c.success(), "{fm} variant does not compile");
        // Loaded by the file manager's own gi bindings (nemo-python, python3-caja).
        let (name, version) = if fm == "nemo" {
            ("Nemo", "3.0")
        } else {
            ("Caja", "2.0")
        };
        let o = ext(
            &d,
            &root,
            &outside,
            &["--gi", name, version, p.to_str().unwrap()],
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{name} {version} bindings (install nemo-python / python3-caja):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout)
            .contains(&format!("loaded by gi ({name} {version})")));
    }
}

/// A name that only survives correct quoting: spaces, quotes, a `$` and parentheses.
const ODD_NAME: &str = "Q3 report's \"final\" $HOME (v2).bin";

#[tokio::test(flavor = "multi_thread")]
async fn dolphin_and_thunar_menus_run_against_the_daemon() {
    let fs = LoopFs::new("ext4", 256);
    let d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for i in 0..3 {
        files.insert(
            format!("docs/f{i}.bin"),
            data(900 + i, 60_000 + i as usize * 1000),
        );
    }
    files.insert(format!("more/{ODD_NAME}"), data(950, 50_000));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("Cloud");
    add_root(&d, &root, &args, &secret);
    let outside = fs.mnt.join("outside.txt");
    std::fs::write(&outside, b"not synced").unwrap();
    // The files the .deb installs (Cargo.toml's deb assets): the service menu under
    // usr/share/kio/servicemenus and kservices5, the actions under usr/share/skyfill.
    let o = ext(
        &d,
        &root,
        &outside,
        &[
            "--menus",
            "packaging/filemanagers/skyfill-dolphin.desktop",
            "packaging/filemanagers/thunar-uca.xml",
        ],
    )
    .env("FM_ODD_NAME", ODD_NAME)
    .output()
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "Dolphin/Thunar menus failed:\n{out}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    assert!(
        out.contains("Dolphin service menu: 5 actions executed"),
        "{out}"
    );
    assert!(
        out.contains("Thunar custom actions: 4 actions executed"),
        "{out}"
    );
}

//! The file-manager extensions against a real daemon, as root: `tests/filemanager_ext.py`
//! loads `packaging/filemanagers/skyfill_nautilus.py` (without and, where python3-nautilus is
//! installed, with the real gi bindings) and checks its protocol calls, emblems, menus and
//! actions on real files of a real sync root (loop-mounted ext4, Apache WebDAV). The Nemo and
//! Caja variants are generated from the same source and must load too.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{Daemon, LoopFs};
use remotes::{add_root, upload, Server};
use std::collections::BTreeMap;
use std::process::Command;
use suite::data;

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
    let o = Command::new("/usr/bin/python3")
        .arg("tests/filemanager_ext.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SKYFILL_SOCKET", &d.socket)
        .env("FM_ROOT", &root)
        .env("FM_OUTSIDE", &outside)
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
        let o = Command::new("/usr/bin/python3")
            .args(["tests/filemanager_ext.py", "--gi", name, version])
            .arg(&p)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SKYFILL_SOCKET", &d.socket)
            .env("FM_ROOT", &root)
            .env("FM_OUTSIDE", &outside)
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

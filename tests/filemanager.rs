//! The file-manager integrations against a real daemon, as root (loop-mounted ext4, Apache
//! WebDAV): `tests/filemanager_ext.py` loads `packaging/filemanagers/skyfill_nautilus.py`
//! (without gi, then with the real gi bindings of Nautilus, and the generated Nemo and Caja
//! variants with theirs), checks its protocol calls, emblems and menus, and activates its
//! real menu items on real files; the Dolphin service menu and the Thunar custom actions that
//! the .deb ships are executed as those file managers run them, and their effect is checked
//! on disk and with `skyfill status`. The Dolphin overlay-icon plugin
//! (`packaging/filemanagers/dolphin`) is built with cmake and loaded as Dolphin loads it by its
//! probe, which prints the emblems it gets from the daemon, then follows pushed changes across
//! a daemon restart.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{Daemon, LoopFs};
use remotes::{add_root, upload, Server};
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
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

/// Builds `packaging/filemanagers/dolphin` (the plugin and its probe) with cmake into a fresh
/// folder under target/; returns the folder, the plugin and the probe. No cmake or no KF5
/// development files is a failure, never a skip.
fn build_dolphin_plugin() -> (tempfile::TempDir, PathBuf, PathBuf) {
    const NEEDS: &str =
        "cmake extra-cmake-modules libkf5kio-dev qtbase5-dev g++ (.ci/install-deps installs them)";
    let dir = tempfile::Builder::new()
        .prefix("dolphin-plugin")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/filemanagers/dolphin");
    let build = dir.path().to_str().unwrap();
    let run = |what: &str, args: &[&str]| {
        let o = Command::new("cmake")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cmake cannot run ({e}): the Dolphin plugin needs {NEEDS}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success(),
            "{what} the Dolphin plugin failed (it needs {NEEDS}):\n{text}"
        );
        text
    };
    run(
        "configuring",
        &[
            "-S",
            src.to_str().unwrap(),
            "-B",
            build,
            "-DSKYFILL_BUILD_PROBE=ON",
        ],
    );
    let out = run("building", &["--build", build, "-j2"]);
    assert!(
        !out.contains("warning:"),
        "the Dolphin plugin builds with warnings:\n{out}"
    );
    let plugin = dir
        .path()
        .join("plugins/kf5/overlayicon/skyfilloverlayplugin.so");
    let probe = dir.path().join("bin/skyfill-dolphin-probe");
    assert!(plugin.is_file() && probe.is_file(), "{out}");
    (dir, plugin, probe)
}

/// The probe running in --follow mode: its stdout lines as they come; killed on drop.
struct Probe {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Probe {
    /// The next line within `within`, or a panic naming `what`.
    fn line(&mut self, what: &str, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(l) => l,
            Err(_) => panic!("the probe printed no line for {what}: {}", self.stderr()),
        }
    }

    /// Waits until the probe prints `want` (other changes may come first).
    fn expect(&mut self, want: &str, d: &Daemon) {
        let end = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if l == want {
                    return;
                }
                seen.push(l);
            }
        }
        panic!(
            "the plugin never reported {want:?}; it reported {seen:?}\nprobe: {}\ndaemon log:\n{}",
            self.stderr(),
            d.log()
        );
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dolphin_overlay_plugin_shows_states_from_the_daemon() {
    // The plugin's state -> emblem table is the Nautilus extension's, pair for pair.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/filemanagers");
    let py = std::fs::read_to_string(dir.join("skyfill_nautilus.py")).unwrap();
    let cpp = std::fs::read_to_string(dir.join("dolphin/skyfilloverlayplugin.cpp")).unwrap();
    let mut pairs = 0;
    for table in ["\nEMBLEMS = {", "\nSYNC_EMBLEMS = {"] {
        let body = py.split(table).nth(1).unwrap().split('}').next().unwrap();
        for l in body.lines().filter(|l| l.contains(':')) {
            let q: Vec<&str> = l.split('"').collect();
            let pair = format!(
                "{{QStringLiteral(\"{}\"), QStringLiteral(\"{}\")}}",
                q[1], q[3]
            );
            assert!(cpp.contains(&pair), "the Dolphin plugin lacks {pair}");
            pairs += 1;
        }
    }
    assert_eq!(pairs, 8, "the extension's emblem tables changed shape");
    let (_build, plugin, probe_bin) = build_dolphin_plugin();
    // The Qt plugin metadata Dolphin's KPluginMetaData::findPlugins reads (a plugin without it
    // is skipped).
    let o = Command::new("readelf")
        .args(["-p", ".qtmetadata"])
        .arg(&plugin)
        .output()
        .expect("readelf (binutils)");
    let meta = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && meta.contains("QTMETADATA") && meta.contains("skyfilloverlayplugin"),
        "no Qt plugin metadata in {}:\n{meta}{}",
        plugin.display(),
        String::from_utf8_lossy(&o.stderr)
    );

    let fs = LoopFs::new("ext4", 256);
    let mut d = Daemon::start(None);
    let mut files = BTreeMap::new();
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        files.insert(format!("docs/{name}.bin"), data(1000 + i as u64, 40_000));
    }
    files.insert("keep/g.bin".to_string(), data(1010, 30_000));
    files.insert("later/x.bin".to_string(), data(1011, 30_000));
    files.insert("later/y.bin".to_string(), data(1012, 30_000));
    let (args, secret) = upload(&Server::Apache, &files).await;
    let root = fs.mnt.join("Cloud");
    add_root(&d, &root, &args, &secret);
    let outside = fs.mnt.join("outside.txt");
    std::fs::write(&outside, b"not synced").unwrap();
    let p = |rel: &str| root.join(rel).to_str().unwrap().to_string();

    // a.bin local (read, as any program reads it), b.bin pinned, keep/ pinned with what is
    // below it (the CLI, as the menus call it); the rest stays online-only.
    assert_eq!(std::fs::read(p("docs/a.bin")).unwrap(), files["docs/a.bin"]);
    d.cli(&["pin", &p("docs/b.bin")]);
    d.cli(&["pin", "-r", &p("keep")]);

    let want: Vec<(String, &str)> = vec![
        (root.to_str().unwrap().to_string(), ""),
        (p("docs"), ""),
        (p("keep"), "emblem-skyfill-pinned"),
        (p("docs/a.bin"), "emblem-skyfill-local"),
        (p("docs/b.bin"), "emblem-skyfill-pinned"),
        (p("docs/c.bin"), "emblem-skyfill-cloud"),
        (p("docs/d.bin"), "emblem-skyfill-cloud"),
        (p("keep/g.bin"), "emblem-skyfill-pinned"),
        (p("later/x.bin"), "emblem-skyfill-cloud"),
        (p("later/y.bin"), "emblem-skyfill-cloud"),
        (outside.to_str().unwrap().to_string(), ""),
    ];
    let mut child = Command::new(&probe_bin)
        .args(["--timeout", "30", "--follow", "120"])
        .arg(plugin)
        .args(want.iter().map(|(path, _)| path))
        .env("SKYFILL_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", probe_bin.display()));
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut probe = Probe { child, lines };

    // What Dolphin shows on opening the folders: each file's state, nothing outside the root.
    let mut got = Vec::new();
    for (path, _) in &want {
        got.push(probe.line(path, Duration::from_secs(60)));
    }
    let expected: Vec<String> = want.iter().map(|(p, e)| format!("{p}\t{e}")).collect();
    assert_eq!(
        got,
        expected,
        "emblems per path (probe: {})\ndaemon log:\n{}",
        probe.stderr(),
        d.log()
    );
    assert_eq!(
        probe.line("the end of the first answers", Duration::from_secs(5)),
        "--"
    );

    // Pushed: a file read now turns local in the view without Dolphin asking again.
    assert_eq!(
        std::fs::read(p("later/x.bin")).unwrap(),
        files["later/x.bin"]
    );
    probe.expect(&format!("{}\temblem-skyfill-local", p("later/x.bin")), &d);

    // The daemon restarts: the plugin reconnects, subscribes again and sees what changes next.
    d.restart();
    d.cli(&["pin", &p("later/y.bin")]);
    probe.expect(&format!("{}\temblem-skyfill-pinned", p("later/y.bin")), &d);

    let err = probe.stderr();
    assert!(
        err.contains("metadata Id: skyfilloverlayplugin"),
        "the probe did not load the plugin by its metadata:\n{err}"
    );
}

//! The tray app end to end, as root and as a throwaway non-root user against the same root
//! daemon: the real built app (`target/debug/skyfill-tray`, built by `scripts/test`) under
//! Xvfb inside `dbus-run-session` with an unlocked GNOME Keyring, driven by WebdriverIO
//! through tauri-driver and WebKitWebDriver (`ui/e2e/run.mjs`, `tests/e2e/tray.sh`), against a
//! real `skyfilld` on loop-mounted ext4 and real servers (Apache WebDAV with a password,
//! s3s-fs). For each: the wizard runs for both servers (as the user, although root's roots
//! exist: the user's app sees only the user's roots, through the daemon's socket as a
//! non-root peer); files show online-only; "Make available offline" makes a folder's files
//! local with the right bytes, "Free up space" frees them; a download shows in Activity; after
//! the worker is killed the app re-sends the secret. Screenshots of each view land in
//! `target/e2e-screenshots/{root,user}/`. Afterwards the secrets are in that user's keyring
//! and in no file the app or the daemon wrote.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;
#[path = "support/users.rs"]
mod users;

use hsm::{sh_ok, sha256_bytes, Daemon, LoopFs};
use remotes::{env, upload, upload_into, Server};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use suite::data;
use users::{SharedCli, User};

fn grep_secret(dir: &Path, secret: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    if b.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

/// What one run's wizard is given: a fresh WebDAV folder (with a password) and S3 prefix.
struct Remotes {
    expected: BTreeMap<String, String>,
    auth_dir: PathBuf,
    dav_url: String,
    dav_pass: String,
    s3prefix: String,
    s3key: String,
    s3secret: String,
}

impl Drop for Remotes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.auth_dir);
    }
}

async fn remotes() -> Remotes {
    let mut files = BTreeMap::new();
    for i in 0..4 {
        files.insert(format!("docs/d{i}.txt"), data(500 + i, 30_000 + i as usize));
    }
    files.insert("big.bin".to_string(), data(77, 9 << 20));
    // Files of other sizes and types: the Files view's sorting, filter and type icons.
    files.insert("a-small.txt".to_string(), data(78, 1_000));
    files.insert("photo.jpg".to_string(), data(79, 200_000));
    let scratch = remotes::scratch();
    let apache = url::Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let auth_dir = PathBuf::from(env("SKYFILL_TEST_APACHE_DIR"))
        .join("dataauth")
        .join(&scratch);
    for (k, v) in &files {
        let p = auth_dir.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, v).unwrap();
    }
    sh_ok(&format!(
        "chown -R www-data:www-data '{}'",
        auth_dir.display()
    ));
    let expected = files
        .iter()
        .map(|(k, v)| (k.clone(), sha256_bytes(v)))
        .collect();
    let (s3args, _) = upload(&Server::S3s, &BTreeMap::new()).await;
    upload_into(
        &Server::S3s,
        &s3args,
        &[("s3file.txt".to_string(), b"on s3\n".to_vec())].into(),
    )
    .await;
    let keys = env("SKYFILL_TEST_S3_KEYS");
    let (ak, sk) = keys.split_once(':').unwrap();
    Remotes {
        expected,
        auth_dir,
        dav_url: format!(
            "http://127.0.0.1:{}/davauth/{scratch}",
            apache.port().unwrap()
        ),
        dav_pass: env("SKYFILL_TEST_DAV_PASS"),
        s3prefix: s3args[0].rsplit('/').next().unwrap().to_string(),
        s3key: ak.to_string(),
        s3secret: sk.to_string(),
    }
}

/// Kills the daemon's worker each time the run asks (`E2E_OUT/kill-worker`; the app may run
/// as a user who may not), answering with the pid in `E2E_OUT/worker-killed`.
fn worker_killer(
    out: PathBuf,
    state: PathBuf,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || loop {
        if stopped.recv_timeout(Duration::from_millis(100)).is_ok() {
            return;
        }
        if std::fs::remove_file(out.join("kill-worker")).is_ok() {
            let pid: i32 = std::fs::read_to_string(state.join("worker.pid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SAFETY: a signal to the daemon's worker, which this test started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
            std::fs::write(out.join("worker-killed"), pid.to_string()).unwrap();
        }
    });
    (stop, h)
}

/// What a non-root run needs from the checkout, linked (or copied) into a folder below
/// /var/tmp that every user can reach: the app, tauri-driver, `tests/e2e/tray.sh`, and the
/// WebdriverIO script with its modules. Removed on drop.
struct Stage(tempfile::TempDir);

impl Stage {
    fn new(app: &Path, driver: &Path) -> Stage {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::Builder::new()
            .prefix("skyfill-e2e-stage")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for d in ["tests", "ui"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let items: [(PathBuf, PathBuf); 7] = [
            (app.to_path_buf(), t.path().join("skyfill-tray")),
            // The tray process, which the window starts from its own folder.
            (
                app.with_file_name("skyfill-tray-icon"),
                t.path().join("skyfill-tray-icon"),
            ),
            (driver.to_path_buf(), t.path().join("tauri-driver")),
            (repo.join("tests/e2e"), t.path().join("tests/e2e")),
            (repo.join("ui/e2e"), t.path().join("ui/e2e")),
            (
                repo.join("ui/node_modules"),
                t.path().join("ui/node_modules"),
            ),
            (
                repo.join("ui/package.json"),
                t.path().join("ui/package.json"),
            ),
        ];
        for (from, to) in items {
            // Hard links where the filesystem allows (fast; the files keep their modes),
            // else a copy.
            let linked = Command::new("cp")
                .arg("-al")
                .arg(&from)
                .arg(&to)
                .output()
                .unwrap()
                .status
                .success();
            if !linked {
                let _ = std::fs::remove_dir_all(&to);
                let _ = std::fs::remove_file(&to);
                let o = Command::new("cp")
                    .arg("-a")
                    .arg(&from)
                    .arg(&to)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "staging {} for the user's run: {}",
                    from.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        Stage(t)
    }
    fn dir(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
    fn app(&self) -> PathBuf {
        self.0.path().join("skyfill-tray")
    }
    fn driver(&self) -> PathBuf {
        self.0.path().join("tauri-driver")
    }
}

/// One run of `tests/e2e/tray.sh` as `who` (root when `None`), with the sync roots `roots`
/// (not created yet: the wizard creates them) and `foreign` roots it must never show.
#[allow(clippy::too_many_arguments)]
fn run_app(
    who: Option<&User>,
    d: &Daemon,
    app: &Path,
    driver: &Path,
    r: &Remotes,
    roots: [&Path; 2],
    foreign: &[&Path],
    port: u16,
) {
    let tag = who.map_or("root", |_| "user");
    let keep = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e-screenshots")
        .join(tag);
    let _ = std::fs::remove_dir_all(&keep);
    // A user may not reach the checkout (a clone under /root or a 0700 temporary folder):
    // the user's run works from a copy of what it needs, in a folder anyone can reach.
    let stage = who.map(|_| Stage::new(app, driver));
    let (app, driver, workdir, out) = match &stage {
        Some(s) => (s.app(), s.driver(), s.dir(), s.dir().join("out")),
        None => (
            app.to_path_buf(),
            driver.to_path_buf(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            keep.clone(),
        ),
    };
    let (app, driver) = (app.as_path(), driver.as_path());
    std::fs::create_dir_all(&out).unwrap();
    let home = tempfile::Builder::new()
        .prefix("skyfill-e2e-home")
        .tempdir_in("/var/tmp")
        .unwrap();
    let exp = out.join("expected.json");
    std::fs::write(&exp, serde_json::to_vec(&r.expected).unwrap()).unwrap();
    if let Some(u) = who {
        for p in [out.as_path(), home.path()] {
            std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid)).unwrap();
        }
        for (what, p) in [("the app", app), ("tauri-driver", driver)] {
            let o = u.run(&["test", "-x", p.to_str().unwrap()]);
            assert!(
                o.status.success(),
                "{} cannot run {what} at {}: every directory above it must be reachable",
                u.name,
                p.display()
            );
        }
    }
    let foreign: Vec<String> = foreign.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = match who {
        Some(u) => u.command(&["dbus-run-session", "--", "bash", "tests/e2e/tray.sh"]),
        None => {
            let mut c = Command::new("dbus-run-session");
            c.args(["--", "bash", "tests/e2e/tray.sh"]);
            c
        }
    };
    cmd.current_dir(&workdir)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("XDG_CACHE_HOME", home.path().join(".cache"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env("SKYFILL_TRAY_APP", app)
        .env("SKYFILL_SOCKET", &d.socket)
        .env("TAURI_DRIVER", driver)
        .env("E2E_DRIVER_PORT", port.to_string())
        .env("E2E_OUT", &out)
        .env("E2E_EXPECTED", &exp)
        .env("E2E_ROOT1", roots[0])
        .env("E2E_ROOT2", roots[1])
        .env("E2E_FOREIGN_ROOTS", foreign.join(","))
        .env("E2E_DAV_URL", &r.dav_url)
        .env("E2E_DAV_USER", env("SKYFILL_TEST_DAV_USER"))
        .env("E2E_DAV_PASS", &r.dav_pass)
        .env("E2E_S3_ENDPOINT", env("SKYFILL_TEST_S3S"))
        .env("E2E_S3_BUCKET", "bucket")
        .env("E2E_S3_PREFIX", &r.s3prefix)
        .env("E2E_S3_KEY", &r.s3key)
        .env("E2E_S3_SECRET", &r.s3secret)
        // The user's run has the dark theme (GTK's, which WebKit follows for
        // prefers-color-scheme), so the accessibility audit checks both palettes' contrast.
        .env("E2E_THEME", if who.is_some() { "dark" } else { "light" });
    if who.is_some() {
        cmd.env("GTK_THEME", "Adwaita:dark");
    }
    let (stop, killer) = worker_killer(out.clone(), d.state.clone());
    let status = cmd.status().unwrap();
    stop.send(()).unwrap();
    killer.join().expect("killing the worker failed");
    if stage.is_some() {
        // Screenshots and logs where the root run's are.
        std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
        let o = Command::new("cp")
            .arg("-a")
            .arg(&out)
            .arg(&keep)
            .output()
            .unwrap();
        assert!(o.status.success(), "copying the user's screenshots: {o:?}");
    }
    assert!(
        status.success(),
        "the tray end-to-end run as {tag} failed (screenshots and logs in {}); daemon log:\n{}",
        out.display(),
        d.log()
    );
    for shot in [
        "wizard-1-kind-webdav",
        "wizard-2-server-webdav",
        "wizard-3-test-webdav",
        "files-online-only",
        "files-offline",
        "files-freed",
        "activity-transfer",
        "settings",
        "files-s3",
    ] {
        let p = out.join(format!("{shot}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", p.display());
    }
    let killed = std::fs::read_to_string(out.join("worker-killed")).unwrap_or_default();
    assert!(
        !killed.trim().is_empty(),
        "the run never asked for the worker to be killed"
    );
    // The roots were added by this user, through the app.
    if let Some(u) = who {
        use std::os::unix::fs::MetadataExt;
        for root in roots {
            let m = std::fs::metadata(root).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (u.uid, u.gid),
                "{} is not {}'s",
                root.display(),
                u.name
            );
        }
    }
    // Never in a file the app or the daemon wrote (the keyring's own files are encrypted).
    for secret in [r.dav_pass.as_str(), r.s3secret.as_str()] {
        let mut hits = grep_secret(&d.state, secret);
        hits.extend(
            grep_secret(home.path(), secret)
                .into_iter()
                .filter(|p| !p.to_string_lossy().contains("/keyrings/")),
        );
        hits.extend(grep_secret(&out, secret));
        assert!(hits.is_empty(), "a secret was written to {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tray_app_as_root_and_as_a_user_wizard_files_activity_and_keyring() {
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/skyfill-tray");
    assert!(
        app.exists(),
        "{} is missing: build it with `cargo build -p skyfill-tray` (scripts/test does)",
        app.display()
    );
    let driver = PathBuf::from(
        std::env::var("SKYFILL_CI_CACHE").unwrap_or_else(|_| "/var/cache/skyfill-ci".into()),
    )
    .join("tauri-driver/bin/tauri-driver");
    assert!(
        driver.exists(),
        "{} is missing: .ci/install-deps installs tauri-driver",
        driver.display()
    );
    let fs = LoopFs::new("ext4", 512);
    // Every user reaches the mount (their folders are below it) and the daemon's socket (its
    // state stays root's alone).
    sh_ok(&format!(
        "chmod 755 '{}' '{}'",
        fs.mnt.parent().unwrap().display(),
        fs.mnt.display()
    ));
    let d = Daemon::start(None);
    std::fs::set_permissions(
        d.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Xvfb's socket directory, as X itself makes it, so that the user's Xvfb does not own it.
    if !Path::new("/tmp/.X11-unix").exists() {
        sh_ok("mkdir -m 1777 /tmp/.X11-unix && chmod 1777 /tmp/.X11-unix");
    }
    // Slow downloads down so that a transfer is visible in Activity for a while.
    d.cli(&["config", "set", "download-limit", "1M"]);

    let root_roots = [fs.mnt.join("Cloud"), fs.mnt.join("Bucket")];
    let r = remotes().await;
    run_app(
        None,
        &d,
        &app,
        &driver,
        &r,
        [&root_roots[0], &root_roots[1]],
        &[],
        4444,
    );
    drop(r);

    // The same as a user, against the same daemon, which still has root's two roots.
    let user = User::create("tray");
    let cli = SharedCli::new();
    let o = cli.run(&user, &d.socket, &["config", "set", "download-limit", "1M"]);
    assert!(
        o.status.success(),
        "as {}: config set: {}",
        user.name,
        users::out(&o)
    );
    let home = fs.mnt.join(&user.name);
    user.own_dir(&home);
    let user_roots = [home.join("Cloud"), home.join("Bucket")];
    let r = remotes().await;
    run_app(
        Some(&user),
        &d,
        &app,
        &driver,
        &r,
        [&user_roots[0], &user_roots[1]],
        &[&root_roots[0], &root_roots[1]],
        4446,
    );
    // The daemon's registry holds both users' roots.
    let registry = std::fs::read_to_string(d.state.join("roots.json")).unwrap();
    for root in root_roots.iter().chain(&user_roots) {
        assert!(
            registry.contains(root.to_str().unwrap()),
            "{} missing from roots.json: {registry}",
            root.display()
        );
    }
}

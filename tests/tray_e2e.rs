//! The tray app end to end, as root: the real built app (`target/debug/skyfill-tray`, built by
//! `scripts/test`) under Xvfb inside `dbus-run-session` with an unlocked GNOME Keyring, driven
//! by WebdriverIO through tauri-driver and WebKitWebDriver (`ui/e2e/run.mjs`), against a real
//! `skyfilld` on loop-mounted ext4 and real servers (Apache WebDAV with a password, s3s-fs).
//! The wizard runs for both; files show online-only; "Make available offline" makes a folder's
//! files local with the right bytes, "Free up space" frees them; a download shows in Activity.
//! Screenshots of each view land in `target/e2e-screenshots/`. Afterwards the secrets are in
//! the keyring and in no file the app or the daemon wrote.

#[path = "support/hsm.rs"]
mod hsm;
#[path = "support/remotes.rs"]
mod remotes;
#[path = "support/suite.rs"]
mod suite;

use hsm::{sha256_bytes, Daemon, LoopFs};
use remotes::{env, upload, upload_into, Server};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use suite::data;

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

#[tokio::test(flavor = "multi_thread")]
async fn tray_app_wizard_files_activity_and_keyring() {
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
    let d = Daemon::start(None);
    // Slow downloads down so that a transfer is visible in Activity for a while.
    d.cli(&["config", "set", "download-limit", "3M"]);

    // WebDAV with a password (Apache /davauth), and S3.
    let mut files = BTreeMap::new();
    for i in 0..4 {
        files.insert(format!("docs/d{i}.txt"), data(500 + i, 30_000 + i as usize));
    }
    files.insert("big.bin".to_string(), data(77, 9 << 20));
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
    Command::new("chown")
        .args(["-R", "www-data:www-data", auth_dir.to_str().unwrap()])
        .status()
        .unwrap();
    let expected: BTreeMap<&String, String> =
        files.iter().map(|(k, v)| (k, sha256_bytes(v))).collect();
    let (s3args, _) = upload(&Server::S3s, &BTreeMap::new()).await;
    upload_into(
        &Server::S3s,
        &s3args,
        &[("s3file.txt".to_string(), b"on s3\n".to_vec())].into(),
    )
    .await;
    let s3prefix = s3args[0].rsplit('/').next().unwrap().to_string();
    let keys = env("SKYFILL_TEST_S3_KEYS");
    let (ak, sk) = keys.split_once(':').unwrap();

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let home = tempfile::tempdir().unwrap();
    let exp = out.join("expected.json");
    std::fs::write(&exp, serde_json::to_vec(&expected).unwrap()).unwrap();
    let dav_pass = env("SKYFILL_TEST_DAV_PASS");
    let status = Command::new("dbus-run-session")
        .args(["--", "bash", "tests/e2e/tray.sh"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("XDG_CACHE_HOME", home.path().join(".cache"))
        .env("XDG_RUNTIME_DIR", home.path())
        .env("SKYFILL_TRAY_APP", &app)
        .env("SKYFILL_SOCKET", &d.socket)
        .env("TAURI_DRIVER", &driver)
        .env("E2E_OUT", &out)
        .env("E2E_STATE", &d.state)
        .env("E2E_EXPECTED", &exp)
        .env("E2E_ROOT1", fs.mnt.join("Cloud"))
        .env("E2E_ROOT2", fs.mnt.join("Bucket"))
        .env(
            "E2E_DAV_URL",
            format!(
                "http://127.0.0.1:{}/davauth/{scratch}",
                apache.port().unwrap()
            ),
        )
        .env("E2E_DAV_USER", env("SKYFILL_TEST_DAV_USER"))
        .env("E2E_DAV_PASS", &dav_pass)
        .env("E2E_S3_ENDPOINT", env("SKYFILL_TEST_S3S"))
        .env("E2E_S3_BUCKET", "bucket")
        .env("E2E_S3_PREFIX", &s3prefix)
        .env("E2E_S3_KEY", ak)
        .env("E2E_S3_SECRET", sk)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the tray end-to-end run failed (screenshots and logs in {}); daemon log:\n{}",
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
    // Never in a file the app or the daemon wrote (the keyring's own files are encrypted).
    for secret in [dav_pass.as_str(), sk] {
        let mut hits = grep_secret(&d.state, secret);
        hits.extend(
            grep_secret(home.path(), secret)
                .into_iter()
                .filter(|p| !p.to_string_lossy().contains("/keyrings/")),
        );
        hits.extend(grep_secret(&out, secret));
        assert!(hits.is_empty(), "a secret was written to {hits:?}");
    }
    let _ = std::fs::remove_dir_all(&auth_dir);
}

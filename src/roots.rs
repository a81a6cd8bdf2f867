//! The registry of sync roots (`<state-dir>/roots.json`), their secrets
//! (`<state-dir>/secrets/<id>`, root-only 0600) and each user's settings
//! (`<state-dir>/settings/<uid>.json`). This is configuration, not cache; `doc/STATE.md`
//! describes the layout.

use crate::ipc::proto::{Budget, UserSettings};
use crate::remote::RemoteSpec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    pub id: String,
    /// Canonical absolute local path.
    pub local: PathBuf,
    pub remote: RemoteSpec,
    pub uid: u32,
    pub gid: u32,
    /// (st_dev, st_ino) of the root directory: a root moved away and replaced (say, by a
    /// symlink) is refused instead of followed.
    #[serde(default)]
    pub key: Option<(u64, u64)>,
    /// Background work (pin downloads, polling) is paused.
    #[serde(default)]
    pub paused: bool,
    /// The server needs a secret (one was given at add-root or login).
    #[serde(default)]
    pub has_secret: bool,
    /// The daemon keeps a root-only copy of the secret.
    #[serde(default)]
    pub persist_secret: bool,
    #[serde(default)]
    pub budget: Option<Budget>,
}

pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(state_dir: &Path) -> std::io::Result<Registry> {
        std::fs::create_dir_all(state_dir.join("secrets"))?;
        // Through an fd opened without following links, never chmod by name.
        let d = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(state_dir.join("secrets"))?;
        // SAFETY: plain getter.
        if std::os::unix::fs::MetadataExt::uid(&d.metadata()?) != unsafe { libc::geteuid() } {
            return Err(std::io::Error::other(format!(
                "{}: not owned by the daemon's user; refusing to keep secrets there",
                state_dir.join("secrets").display()
            )));
        }
        d.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        Ok(Registry {
            dir: state_dir.to_path_buf(),
        })
    }

    pub fn load(&self) -> std::io::Result<Vec<RootRecord>> {
        match std::fs::read(self.dir.join("roots.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, roots: &[RootRecord]) -> std::io::Result<()> {
        let tmp = self.dir.join("roots.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(roots).expect("serializable"))?;
        f.sync_all()?;
        std::fs::rename(tmp, self.dir.join("roots.json"))
    }

    fn secret_path(&self, id: &str) -> PathBuf {
        self.dir.join("secrets").join(id)
    }

    pub fn save_secret(&self, id: &str, secret: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.secret_path(id))?;
        f.write_all(secret.as_bytes())
    }

    pub fn secret(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.secret_path(id)).ok()
    }

    pub fn delete_secret(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.secret_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn settings(&self, uid: u32) -> UserSettings {
        std::fs::read(self.dir.join("settings").join(format!("{uid}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_settings(&self, uid: u32, s: &UserSettings) -> std::io::Result<()> {
        let d = self.dir.join("settings");
        std::fs::create_dir_all(&d)?;
        let tmp = d.join(format!("{uid}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(s).expect("serializable"))?;
        std::fs::rename(tmp, d.join(format!("{uid}.json")))
    }
}

//! The registry of sync roots (`<state-dir>/roots.json`) and their secrets
//! (`<state-dir>/secrets/<id>`, root-only 0600). This is configuration, not cache.

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
}

pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(state_dir: &Path) -> std::io::Result<Registry> {
        std::fs::create_dir_all(state_dir.join("secrets"))?;
        std::fs::set_permissions(
            state_dir.join("secrets"),
            std::fs::Permissions::from_mode(0o700),
        )?;
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
}

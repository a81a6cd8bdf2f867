//! What configuration bounds, never a server or a listing: connections per user and in all,
//! entries per root and per listing, the free-space floor below which hydration answers
//! ENOSPC, and the overall deadline of one sync pass. Read from `limits.json` in the state
//! directory (every field optional); `doc/SECURITY.md` explains each.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Socket connections one uid may hold open at once.
    pub connections_per_user: usize,
    /// Socket connections of all users together.
    pub connections: usize,
    /// Remote entries (files and folders) one sync root may have.
    pub entries_per_root: u64,
    /// Entries one listing (one folder, or one PROPFIND/ListObjects answer) may have.
    pub entries_per_listing: u64,
    /// Hydration refuses (ENOSPC to the reader) when a download would leave less free space
    /// than this many bytes ...
    pub min_free_bytes: u64,
    /// ... or less than this percentage of the filesystem, whichever is larger.
    pub min_free_percent: u8,
    /// One sync pass of one root gives up after this long (the next pass starts over).
    pub pass_deadline_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_user: 64,
            connections: 1024,
            entries_per_root: 2_000_000,
            entries_per_listing: 1_000_000,
            min_free_bytes: 32 << 20,
            min_free_percent: 1,
            pass_deadline_secs: 1800,
        }
    }
}

impl Limits {
    /// `limits.json` in `state_dir`, or the defaults when there is none.
    pub fn load(state_dir: &Path) -> io::Result<Limits> {
        match std::fs::read(state_dir.join("limits.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::other(format!("limits.json: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Limits::default()),
            Err(e) => Err(e),
        }
    }

    /// Free bytes a filesystem of `total` bytes must keep.
    pub fn floor(&self, total: u64) -> u64 {
        self.min_free_bytes
            .max(total / 100 * self.min_free_percent as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_fields_are_refused() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Limits::load(t.path()).unwrap(), Limits::default());
        std::fs::write(t.path().join("limits.json"), br#"{"entries_per_root": 5}"#).unwrap();
        let l = Limits::load(t.path()).unwrap();
        assert_eq!(l.entries_per_root, 5);
        assert_eq!(l.connections, Limits::default().connections);
        std::fs::write(t.path().join("limits.json"), br#"{"entries": 5}"#).unwrap();
        assert!(Limits::load(t.path()).is_err());
        let l = Limits::default();
        assert_eq!(l.floor(1 << 40), (1u64 << 40) / 100);
        assert_eq!(l.floor(1 << 30), 32 << 20);
    }
}

//! The index: a cache of every managed file's state for quick answers (directory status).
//! The truth lives in each file's xattr record; deleting the index and restarting rebuilds it
//! from the files. Behind a trait so the store can change; sled is the default.

use serde::{Deserialize, Serialize};
#[cfg(any(test, feature = "testing"))]
use std::collections::BTreeMap;
#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub availability: crate::model::Availability,
    pub size: u64,
    pub version: String,
    /// Bytes of the file on disk.
    #[serde(default)]
    pub local_bytes: u64,
}

/// What both sides of a sync root last agreed on for one path (the sync base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseEntry {
    pub kind: crate::model::Kind,
    /// Remote version token (`Version::token`) of that state.
    pub version: String,
    pub size: u64,
    /// Remote stable id, where the server has one.
    #[serde(default)]
    pub file_id: Option<String>,
}

impl BaseEntry {
    pub fn of(e: &crate::model::RemoteEntry) -> BaseEntry {
        BaseEntry {
            kind: e.kind,
            version: e.version.token(),
            size: e.size,
            file_id: e.file_id.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("index: {0}")]
pub struct IndexError(pub String);

pub trait Index: Send + Sync {
    fn put(&self, root: &str, path: &str, rec: &Record) -> Result<(), IndexError>;
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError>;
    /// Every record of `root` whose path is `dir` or below it (`""` = whole root).
    fn below(&self, root: &str, dir: &str) -> Result<Vec<(String, Record)>, IndexError>;
    fn remove_root(&self, root: &str) -> Result<(), IndexError>;
    fn is_empty(&self) -> bool;
    /// Drops the status record of one path.
    fn remove(&self, root: &str, path: &str) -> Result<(), IndexError>;

    // The sync base, kept apart from the status records.
    fn base_all(&self, root: &str) -> Result<Vec<(String, BaseEntry)>, IndexError>;
    fn base_get(&self, root: &str, path: &str) -> Result<Option<BaseEntry>, IndexError>;
    fn base_put(&self, root: &str, path: &str, e: &BaseEntry) -> Result<(), IndexError>;
    fn base_remove(&self, root: &str, path: &str) -> Result<(), IndexError>;
    /// Makes every write so far durable (after each remote side effect).
    fn flush(&self) -> Result<(), IndexError>;
}

fn key(root: &str, path: &str) -> Vec<u8> {
    let mut k = root.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

pub struct SledIndex {
    db: sled::Db,
    base: sled::Tree,
}

/// sled's page cache size.
const CACHE_BYTES: u64 = 16 << 20;

impl SledIndex {
    pub fn open(path: &std::path::Path) -> Result<Self, IndexError> {
        // sled caches up to 1 GiB of pages by default; the index is read a record at a time,
        // so a small cache keeps the daemon small with a million files (doc/BENCHMARKS.md).
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| IndexError(e.to_string()))?;
        let base = db
            .open_tree("base")
            .map_err(|e| IndexError(e.to_string()))?;
        Ok(SledIndex { db, base })
    }
}

fn e(err: impl std::fmt::Display) -> IndexError {
    IndexError(err.to_string())
}

impl Index for SledIndex {
    fn put(&self, root: &str, path: &str, rec: &Record) -> Result<(), IndexError> {
        self.db
            .insert(key(root, path), serde_json::to_vec(rec).map_err(e)?)
            .map_err(e)?;
        Ok(())
    }
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError> {
        match self.db.get(key(root, path)).map_err(e)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(e)?)),
            None => Ok(None),
        }
    }
    fn below(&self, root: &str, dir: &str) -> Result<Vec<(String, Record)>, IndexError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(key(root, dir)) {
            let (k, v) = kv.map_err(e)?;
            let p = String::from_utf8_lossy(&k[root.len() + 1..]).into_owned();
            if under(&p, dir) {
                out.push((p, serde_json::from_slice(&v).map_err(e)?));
            }
        }
        Ok(out)
    }
    fn remove_root(&self, root: &str) -> Result<(), IndexError> {
        for k in self.db.scan_prefix(key(root, "")).keys() {
            self.db.remove(k.map_err(e)?).map_err(e)?;
        }
        for k in self.base.scan_prefix(key(root, "")).keys() {
            self.base.remove(k.map_err(e)?).map_err(e)?;
        }
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
    fn remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.db.remove(key(root, path)).map_err(e)?;
        Ok(())
    }
    fn base_all(&self, root: &str) -> Result<Vec<(String, BaseEntry)>, IndexError> {
        let mut out = Vec::new();
        for kv in self.base.scan_prefix(key(root, "")) {
            let (k, v) = kv.map_err(e)?;
            let p = String::from_utf8_lossy(&k[root.len() + 1..]).into_owned();
            out.push((p, serde_json::from_slice(&v).map_err(e)?));
        }
        Ok(out)
    }
    fn base_get(&self, root: &str, path: &str) -> Result<Option<BaseEntry>, IndexError> {
        match self.base.get(key(root, path)).map_err(e)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(e)?)),
            None => Ok(None),
        }
    }
    fn base_put(&self, root: &str, path: &str, b: &BaseEntry) -> Result<(), IndexError> {
        self.base
            .insert(key(root, path), serde_json::to_vec(b).map_err(e)?)
            .map_err(e)?;
        Ok(())
    }
    fn base_remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.base.remove(key(root, path)).map_err(e)?;
        Ok(())
    }
    fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map_err(e)?;
        Ok(())
    }
}

/// In-memory index for unit tests.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct MemoryIndex {
    m: Mutex<BTreeMap<(String, String), Record>>,
    base: Mutex<BTreeMap<(String, String), BaseEntry>>,
}

#[cfg(any(test, feature = "testing"))]
impl Index for MemoryIndex {
    fn put(&self, root: &str, path: &str, rec: &Record) -> Result<(), IndexError> {
        self.m
            .lock()
            .unwrap()
            .insert((root.into(), path.into()), rec.clone());
        Ok(())
    }
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError> {
        Ok(self
            .m
            .lock()
            .unwrap()
            .get(&(root.into(), path.into()))
            .cloned())
    }
    fn below(&self, root: &str, dir: &str) -> Result<Vec<(String, Record)>, IndexError> {
        Ok(self
            .m
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, p), _)| r == root && under(p, dir))
            .map(|((_, p), v)| (p.clone(), v.clone()))
            .collect())
    }
    fn remove_root(&self, root: &str) -> Result<(), IndexError> {
        self.m.lock().unwrap().retain(|(r, _), _| r != root);
        self.base.lock().unwrap().retain(|(r, _), _| r != root);
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.m.lock().unwrap().is_empty()
    }
    fn remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.m.lock().unwrap().remove(&(root.into(), path.into()));
        Ok(())
    }
    fn base_all(&self, root: &str) -> Result<Vec<(String, BaseEntry)>, IndexError> {
        Ok(self
            .base
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, _), _)| r == root)
            .map(|((_, p), v)| (p.clone(), v.clone()))
            .collect())
    }
    fn base_get(&self, root: &str, path: &str) -> Result<Option<BaseEntry>, IndexError> {
        Ok(self
            .base
            .lock()
            .unwrap()
            .get(&(root.into(), path.into()))
            .cloned())
    }
    fn base_put(&self, root: &str, path: &str, b: &BaseEntry) -> Result<(), IndexError> {
        self.base
            .lock()
            .unwrap()
            .insert((root.into(), path.into()), b.clone());
        Ok(())
    }
    fn base_remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.base
            .lock()
            .unwrap()
            .remove(&(root.into(), path.into()));
        Ok(())
    }
    fn flush(&self) -> Result<(), IndexError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ix: &dyn Index) {
        use crate::model::Availability;
        let r = |a: Availability| Record {
            availability: a,
            size: 1,
            version: "v".into(),
            local_bytes: 0,
        };
        ix.put("r1", "a", &r(Availability::Local)).unwrap();
        ix.put("r1", "a/b", &r(Availability::OnlineOnly)).unwrap();
        ix.put("r1", "ab", &r(Availability::Local)).unwrap();
        ix.put("r2", "a/c", &r(Availability::Local)).unwrap();
        let below: Vec<String> = ix
            .below("r1", "a")
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(below, vec!["a", "a/b"]);
        assert_eq!(ix.below("r1", "").unwrap().len(), 3);
        assert_eq!(
            ix.get("r1", "a/b").unwrap().unwrap().availability,
            Availability::OnlineOnly
        );
        ix.remove_root("r1").unwrap();
        assert!(ix.get("r1", "a").unwrap().is_none());
        assert!(!ix.is_empty());
    }

    #[test]
    fn memory_and_sled_agree() {
        check(&MemoryIndex::default());
        let t = tempfile::tempdir().unwrap();
        check(&SledIndex::open(&t.path().join("ix")).unwrap());
    }
}

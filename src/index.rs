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
    /// Up to `limit` records of the files next to `path` (same folder) that sort after it,
    /// in order; looks at no more than a few times `limit` records (a folder's subfolders
    /// sort in between), so it costs O(log n + limit) whatever the size of the root.
    fn next_in_folder(
        &self,
        root: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, IndexError>;
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

/// How many records [`Index::next_in_folder`] looks at per record it may return.
const SCAN_PER_SIBLING: usize = 8;

/// Whether `p` is a file directly in `folder` (`""`: the root), sorting after `path`.
fn sibling_after(p: &str, folder: &str, path: &str) -> bool {
    let rest = if folder.is_empty() {
        Some(p)
    } else {
        p.strip_prefix(folder).and_then(|r| r.strip_prefix('/'))
    };
    p > path && rest.is_some_and(|r| !r.is_empty() && !r.contains('/'))
}

/// The folder of `path` (`""` for a file at the root).
fn folder_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
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
    fn next_in_folder(
        &self,
        root: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, IndexError> {
        let folder = folder_of(path);
        let mut out = Vec::new();
        let range = self
            .db
            .range(key(root, path)..key(root, &format!("{folder}\u{10FFFF}")));
        for kv in range.take(limit.saturating_mul(SCAN_PER_SIBLING)) {
            let (k, v) = kv.map_err(e)?;
            let p = String::from_utf8_lossy(&k[root.len() + 1..]).into_owned();
            if sibling_after(&p, folder, path) {
                out.push((p, serde_json::from_slice(&v).map_err(e)?));
                if out.len() == limit {
                    break;
                }
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
    fn next_in_folder(
        &self,
        root: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, IndexError> {
        let folder = folder_of(path);
        Ok(self
            .m
            .lock()
            .unwrap()
            .range((root.to_string(), path.to_string())..)
            .take_while(|((r, _), _)| r == root)
            .take(limit.saturating_mul(SCAN_PER_SIBLING))
            .filter(|((_, p), _)| sibling_after(p, folder, path))
            .take(limit)
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
        // Siblings after a file, in order, skipping a subfolder's contents and other roots.
        for p in ["d/f1", "d/f1x/deep", "d/f2", "d/f3", "d/g/h", "e/f4", "top"] {
            ix.put("r1", p, &r(Availability::OnlineOnly)).unwrap();
        }
        let next = |p: &str, n: usize| -> Vec<String> {
            ix.next_in_folder("r1", p, n)
                .unwrap()
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        };
        assert_eq!(next("d/f1", 10), ["d/f2", "d/f3"]);
        assert_eq!(next("d/f1", 1), ["d/f2"]);
        assert_eq!(next("d/f0", 10), ["d/f1", "d/f2", "d/f3"]);
        assert!(next("d/f3", 10).is_empty());
        assert_eq!(next("a", 10), ["ab", "top"]);
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

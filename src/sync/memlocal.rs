//! An in-memory sync root for property tests of the planner and executor: files with
//! content or placeholders, records that travel with renames, a clock for mtimes, and the
//! "user" operations a test applies (write, delete, rename, read).

use super::local::{stale, LocalFs};
use super::{LocalEntry, LocalMap, LocalRecord, Stamp};
use crate::hsm::meta::{Fill, Pin};
use crate::model::{Kind, RelPath, RemoteEntry};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemRecord {
    pub root: String,
    pub origin: RelPath,
    pub version: String,
    pub size: u64,
    pub mtime: (i64, u32),
    /// Whether the origin is kept in full; otherwise only its hash is, as on a real file
    /// whose record was written where it stood (see `hsm::meta::Place`).
    pub explicit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemNode {
    Dir,
    File {
        /// `None`: a placeholder (no byte local).
        data: Option<Vec<u8>>,
        size: u64,
        mtime: (i64, u32),
        record: Option<MemRecord>,
    },
}

#[derive(Debug)]
pub struct MemLocal {
    root: String,
    state: Mutex<(BTreeMap<RelPath, MemNode>, i64)>,
}

fn err(kind: io::ErrorKind, p: &RelPath, what: &str) -> io::Error {
    io::Error::new(kind, format!("{p}: {what}"))
}

impl MemLocal {
    pub fn new(root: &str) -> Self {
        MemLocal {
            root: root.into(),
            // A fixed start (2026-12-01 00:00 UTC): mtimes, settling and conflict names
            // depend on this clock alone, so a model run replays the same from its seed.
            state: Mutex::new((BTreeMap::new(), 1_796_083_200)),
        }
    }

    /// Lets `secs` pass on this root's clock (each user operation is one second).
    pub fn advance(&self, secs: i64) {
        self.state.lock().unwrap().1 += secs;
    }

    pub fn nodes(&self) -> BTreeMap<RelPath, MemNode> {
        self.state.lock().unwrap().0.clone()
    }

    fn parents(nodes: &mut BTreeMap<RelPath, MemNode>, p: &RelPath) -> io::Result<()> {
        let mut a = p.parent();
        let mut todo = vec![];
        while let Some(d) = a {
            if d.is_root() {
                break;
            }
            match nodes.get(&d) {
                Some(MemNode::Dir) => break,
                Some(_) => return Err(err(io::ErrorKind::Other, &d, "not a directory")),
                None => todo.push(d.clone()),
            }
            a = d.parent();
        }
        for d in todo {
            nodes.insert(d, MemNode::Dir);
        }
        Ok(())
    }

    /// A user writes `data` to `p` (creating it and its folders). Writing a placeholder needs
    /// its bytes first: `fetch(origin, version)` plays hydration and may fail (`None`).
    pub fn user_write(
        &self,
        p: &RelPath,
        data: &[u8],
        fetch: &dyn Fn(&RelPath, &str) -> Option<Vec<u8>>,
    ) -> bool {
        let mut g = self.state.lock().unwrap();
        g.1 += 1;
        let now = g.1;
        match g.0.get_mut(p) {
            Some(MemNode::Dir) => false,
            Some(MemNode::File {
                data: d,
                size,
                mtime,
                record,
            }) => {
                if d.is_none() {
                    let Some(r) = record.as_ref() else {
                        return false;
                    };
                    if fetch(&r.origin, &r.version).is_none() {
                        return false;
                    }
                }
                *d = Some(data.to_vec());
                *size = data.len() as u64;
                *mtime = (now, 0);
                true
            }
            None => {
                if Self::parents(&mut g.0, p).is_err() {
                    return false;
                }
                g.0.insert(
                    p.clone(),
                    MemNode::File {
                        data: Some(data.to_vec()),
                        size: data.len() as u64,
                        mtime: (now, 0),
                        record: None,
                    },
                );
                true
            }
        }
    }

    /// A user removes `p` (a folder with everything below it).
    pub fn user_delete(&self, p: &RelPath) -> bool {
        let mut g = self.state.lock().unwrap();
        let had = g.0.contains_key(p);
        g.0.retain(|k, _| !k.starts_with(p));
        had
    }

    /// A user renames `from` to `to` (`mv -n`), folders with their contents.
    pub fn user_rename(&self, from: &RelPath, to: &RelPath) -> bool {
        let mut g = self.state.lock().unwrap();
        if !g.0.contains_key(from) || g.0.contains_key(to) || to.starts_with(from) {
            return false;
        }
        if Self::parents(&mut g.0, to).is_err() {
            return false;
        }
        Self::move_tree(&mut g.0, from, to);
        true
    }

    fn move_tree(nodes: &mut BTreeMap<RelPath, MemNode>, from: &RelPath, to: &RelPath) {
        let keys: Vec<RelPath> = nodes
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for k in keys {
            let n = nodes.remove(&k).unwrap();
            let rest = &k.as_str()[from.as_str().len()..];
            nodes.insert(
                RelPath::parse(&format!("{}{}", to.as_str(), rest)).expect("valid"),
                n,
            );
        }
    }

    /// The bytes a reader sees: local data, or a hydration through `fetch`.
    pub fn user_read(
        &self,
        p: &RelPath,
        fetch: &dyn Fn(&RelPath, &str) -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let g = self.state.lock().unwrap();
        match g.0.get(p)? {
            MemNode::File { data: Some(d), .. } => Some(d.clone()),
            MemNode::File {
                data: None,
                record: Some(r),
                ..
            } => fetch(&r.origin, &r.version),
            _ => None,
        }
    }

    /// Hydrates a placeholder (a reader came by).
    pub fn user_hydrate(&self, p: &RelPath, fetch: &dyn Fn(&RelPath, &str) -> Option<Vec<u8>>) {
        let got = self.user_read(p, fetch);
        let mut g = self.state.lock().unwrap();
        if let (Some(MemNode::File { data, size, .. }), Some(bytes)) = (g.0.get_mut(p), got) {
            if data.is_none() && bytes.len() as u64 == *size {
                *data = Some(bytes);
            }
        }
    }
}

impl LocalFs for MemLocal {
    fn scan(&self) -> io::Result<LocalMap> {
        let g = self.state.lock().unwrap();
        Ok(g.0
            .iter()
            .map(|(p, n)| {
                let e = match n {
                    MemNode::Dir => LocalEntry {
                        kind: Kind::Dir,
                        size: 0,
                        mtime: (0, 0),
                        record: None,
                    },
                    MemNode::File {
                        data,
                        size,
                        mtime,
                        record,
                    } => LocalEntry {
                        kind: Kind::File,
                        size: *size,
                        mtime: *mtime,
                        record: record.as_ref().filter(|r| r.root == self.root).map(|r| {
                            let hashed = !r.explicit && &r.origin != p;
                            LocalRecord {
                                origin: if hashed { p.clone() } else { r.origin.clone() },
                                origin_hash: hashed
                                    .then(|| crate::hsm::meta::path_hash(r.origin.as_str())),
                                version: r.version.clone(),
                                fill: if data.is_some() {
                                    Fill::Complete
                                } else {
                                    Fill::Placeholder
                                },
                                pin: Pin::Inherit,
                                size: r.size,
                                mtime: r.mtime,
                            }
                        }),
                    },
                };
                (p.clone(), e)
            })
            .collect())
    }

    fn scan_dir(&self, dir: &RelPath) -> io::Result<LocalMap> {
        let is_dir =
            dir.is_root() || matches!(self.state.lock().unwrap().0.get(dir), Some(MemNode::Dir));
        if !is_dir {
            return Err(err(io::ErrorKind::NotFound, dir, "no such folder"));
        }
        Ok(self
            .scan()?
            .into_iter()
            .filter(|(p, _)| p.parent().as_ref() == Some(dir))
            .collect())
    }

    fn open_upload(&self, p: &RelPath) -> io::Result<(File, Stamp)> {
        let g = self.state.lock().unwrap();
        match g.0.get(p) {
            Some(MemNode::File {
                data: Some(d),
                size,
                mtime,
                ..
            }) => {
                let mut f = super::execute::scratch()?;
                f.write_all(d)?;
                Ok((f, (*size, mtime.0, mtime.1)))
            }
            Some(MemNode::File { data: None, .. }) => Err(err(
                io::ErrorKind::Other,
                p,
                "not all bytes are local; refusing to upload holes",
            )),
            _ => Err(err(io::ErrorKind::NotFound, p, "no such file")),
        }
    }

    fn mark_synced(&self, p: &RelPath, e: &RemoteEntry, stamp: Stamp) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        match g.0.get_mut(p) {
            Some(MemNode::File { record, .. }) => {
                *record = Some(MemRecord {
                    root: self.root.clone(),
                    origin: p.clone(),
                    version: e.version.token(),
                    size: stamp.0,
                    mtime: (stamp.1, stamp.2),
                    explicit: false,
                });
                Ok(())
            }
            _ => Err(err(io::ErrorKind::NotFound, p, "no such file")),
        }
    }

    fn mark_pending(&self, p: &RelPath, stamp: Stamp) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if let Some(MemNode::File { record, .. }) = g.0.get_mut(p) {
            if record.as_ref().is_none_or(|r| r.root != self.root) {
                *record = Some(MemRecord {
                    root: self.root.clone(),
                    origin: p.clone(),
                    version: String::new(),
                    size: stamp.0,
                    mtime: (stamp.1, stamp.2),
                    explicit: false,
                });
            }
        }
        Ok(())
    }

    fn set_origin(
        &self,
        p: &RelPath,
        origin: &RelPath,
        version: Option<(&str, &str)>,
    ) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if let Some(MemNode::File {
            record: Some(r), ..
        }) = g.0.get_mut(p)
        {
            r.origin = origin.clone();
            r.explicit = origin != p;
            if let Some((_, now)) = version.filter(|(was, _)| *was == r.version) {
                r.version = now.to_string();
            }
        }
        Ok(())
    }

    fn create_placeholder(&self, e: &RemoteEntry) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if g.0.contains_key(&e.path) {
            return Err(err(io::ErrorKind::AlreadyExists, &e.path, "exists"));
        }
        Self::parents(&mut g.0, &e.path)?;
        let mtime = (crate::model::unix_secs(e.mtime), 0);
        g.0.insert(
            e.path.clone(),
            MemNode::File {
                data: (e.size == 0).then(Vec::new),
                size: e.size,
                mtime,
                record: Some(MemRecord {
                    root: self.root.clone(),
                    origin: e.path.clone(),
                    version: e.version.token(),
                    size: e.size,
                    mtime,
                    explicit: false,
                }),
            },
        );
        Ok(())
    }

    fn refresh(&self, e: &RemoteEntry, expect: &str) -> io::Result<()> {
        {
            let g = self.state.lock().unwrap();
            match g.0.get(&e.path) {
                Some(MemNode::File {
                    data,
                    size,
                    mtime,
                    record: Some(r),
                }) if r.version == expect
                    && (data.is_none() || (*size, *mtime) == (r.size, r.mtime)) => {}
                _ => return Err(stale(&e.path)),
            }
        }
        self.state.lock().unwrap().0.remove(&e.path);
        self.create_placeholder(e)
    }

    fn mkdir(&self, p: &RelPath) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        match g.0.get(p) {
            Some(MemNode::Dir) => Ok(()),
            Some(_) => Err(err(io::ErrorKind::AlreadyExists, p, "a file is in the way")),
            None => {
                Self::parents(&mut g.0, p)?;
                g.0.insert(p.clone(), MemNode::Dir);
                Ok(())
            }
        }
    }

    fn remove(&self, p: &RelPath, kind: Kind, expect: Option<&str>) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        match (g.0.get(p), kind) {
            (Some(MemNode::Dir), Kind::Dir) => {
                if g.0.keys().any(|k| k != p && k.starts_with(p)) {
                    return Err(err(io::ErrorKind::Other, p, "folder not empty"));
                }
            }
            (
                Some(MemNode::File {
                    data,
                    size,
                    mtime,
                    record: Some(r),
                }),
                Kind::File,
            ) => {
                let clean = data.is_none() || (*size, *mtime) == (r.size, r.mtime);
                if !clean || expect.is_some_and(|v| v != r.version) {
                    return Err(stale(p));
                }
            }
            (None, _) => return Ok(()),
            _ => return Err(stale(p)),
        }
        g.0.remove(p);
        Ok(())
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if !g.0.contains_key(from) {
            return Err(err(io::ErrorKind::NotFound, from, "gone"));
        }
        if g.0.contains_key(to) {
            return Err(err(io::ErrorKind::AlreadyExists, to, "exists"));
        }
        Self::parents(&mut g.0, to)?;
        Self::move_tree(&mut g.0, from, to);
        Ok(())
    }

    fn set_aside(&self, from: &RelPath, to: &RelPath, keep_record: bool) -> io::Result<()> {
        let mut g = self.state.lock().unwrap();
        if g.0.contains_key(to) {
            return Err(err(io::ErrorKind::AlreadyExists, to, "exists"));
        }
        if !g.0.contains_key(from) {
            return Err(err(io::ErrorKind::NotFound, from, "gone"));
        }
        // A file's record goes first: a crash after this step leaves a new, unsynced file.
        // Files in a folder keep theirs and travel as renames.
        // (A placeholder keeps its record: its bytes are still only on the remote.)
        if let Some(MemNode::File {
            record,
            data: Some(_),
            ..
        }) = g.0.get_mut(from)
        {
            if !keep_record {
                *record = None;
            }
        }
        Self::move_tree(&mut g.0, from, to);
        Ok(())
    }

    fn exists(&self, p: &RelPath) -> bool {
        self.state.lock().unwrap().0.contains_key(p)
    }

    fn now_secs(&self) -> i64 {
        self.state.lock().unwrap().1
    }
}

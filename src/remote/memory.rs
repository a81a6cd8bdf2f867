//! In-memory remote for unit tests and the conformance suite's reference model.
//! Versions are strong ETags from a counter, so every write is a new version. [`Memory::copying`]
//! renames as S3 does (a copy and a delete: moved files get new versions).

use super::{Moved, Precondition, ReadRange, RemoteError, Result, Sink, WalkStats};
use crate::model::{Kind, RelPath, RemoteEntry, Version};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone)]
struct Node {
    kind: Kind,
    data: Vec<u8>,
    mtime: SystemTime,
    tag: u64,
    /// Stable across edits and renames (a Nextcloud file id), in [`Memory::propagating`].
    id: u64,
}

#[derive(Default)]
pub struct Memory {
    state: Mutex<(BTreeMap<RelPath, Node>, u64)>,
    propagate: bool,
    copy_renames: bool,
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// A server that behaves like Nextcloud: every entry has a file id that survives edits
    /// and renames, and a folder's ETag changes whenever anything below it changes (what
    /// makes incremental listings possible).
    pub fn propagating() -> Self {
        Memory {
            propagate: true,
            ..Self::default()
        }
    }

    /// A server that renames as S3 does: a copy and a delete, so every moved file gets a new
    /// ETag and time, which the rename's answer names for a file.
    pub fn copying() -> Self {
        Memory {
            copy_renames: true,
            ..Self::default()
        }
    }

    /// What a listing shows for `n` at `p`: the plain entry, dressed with file ids and
    /// folder ETags that hash the subtree when the server propagates.
    fn view(&self, map: &BTreeMap<RelPath, Node>, p: &RelPath, n: &Node) -> RemoteEntry {
        let mut e = entry(p, n);
        if self.propagate {
            e.file_id = Some(format!("fileid-{}", n.id));
            if n.kind == Kind::Dir {
                e.version = subtree_tag(map, p);
            }
        }
        e
    }

    fn root_view(&self, map: &BTreeMap<RelPath, Node>) -> RemoteEntry {
        let mut e = root_entry();
        if self.propagate {
            e.file_id = Some("fileid-root".into());
            e.version = subtree_tag(map, &RelPath::root());
        }
        e
    }

    /// Test helper: puts a file (creating parents), returning its version.
    pub fn put(&self, path: &str, data: &[u8]) -> Version {
        let p = RelPath::parse(path).expect("valid test path");
        let mut g = self.state.lock().unwrap();
        let mut anc = p.parent();
        while let Some(a) = anc {
            if a.is_root() {
                break;
            }
            g.1 += 1;
            let tag = g.1;
            g.0.entry(a.clone()).or_insert(Node {
                kind: Kind::Dir,
                data: vec![],
                mtime: SystemTime::now(),
                tag,
                id: tag,
            });
            anc = a.parent();
        }
        g.1 += 1;
        let tag = g.1;
        let id = g.0.get(&p).map_or(tag, |n| n.id);
        g.0.insert(
            p,
            Node {
                kind: Kind::File,
                data: data.to_vec(),
                mtime: SystemTime::now(),
                tag,
                id,
            },
        );
        Version::Etag {
            value: tag.to_string(),
            weak: false,
        }
    }
}

impl Memory {
    /// Test helper: the current version and bytes of a file.
    pub fn get(&self, path: &RelPath) -> Option<(Version, Vec<u8>)> {
        let g = self.state.lock().unwrap();
        g.0.get(path)
            .filter(|n| n.kind == Kind::File)
            .map(|n| (entry(path, n).version, n.data.clone()))
    }

    /// Test helper: every path with its kind and (for files) bytes.
    pub fn tree(&self) -> BTreeMap<RelPath, Option<Vec<u8>>> {
        let g = self.state.lock().unwrap();
        g.0.iter()
            .map(|(p, n)| (p.clone(), (n.kind == Kind::File).then(|| n.data.clone())))
            .collect()
    }
}

fn entry(p: &RelPath, n: &Node) -> RemoteEntry {
    RemoteEntry {
        path: p.clone(),
        kind: n.kind,
        size: n.data.len() as u64,
        mtime: n.mtime,
        version: Version::Etag {
            value: n.tag.to_string(),
            weak: false,
        },
        file_id: None,
        mode: None,
        permissions: None,
    }
}

/// A folder's ETag on a propagating server: a hash of every path, version and id below it.
fn subtree_tag(map: &BTreeMap<RelPath, Node>, dir: &RelPath) -> Version {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h = (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (p, n) in map {
        if p != dir && (dir.is_root() || p.starts_with(dir)) {
            eat(p.as_str().as_bytes());
            eat(&n.tag.to_le_bytes());
            eat(&n.id.to_le_bytes());
        }
    }
    Version::Etag {
        value: format!("d{h:x}"),
        weak: false,
    }
}

fn root_entry() -> RemoteEntry {
    RemoteEntry {
        path: RelPath::root(),
        kind: Kind::Dir,
        size: 0,
        mtime: SystemTime::UNIX_EPOCH,
        version: Version::Etag {
            value: "root".into(),
            weak: false,
        },
        file_id: None,
        mode: None,
        permissions: None,
    }
}

#[async_trait]
impl super::Remote for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        let g = self.state.lock().unwrap();
        if path.is_root() {
            return Ok(self.root_view(&g.0));
        }
        g.0.get(path)
            .map(|n| self.view(&g.0, path, n))
            .ok_or_else(|| RemoteError::NotFound { path: path.clone() })
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        let g = self.state.lock().unwrap();
        if !dir.is_root() && g.0.get(dir).map(|n| n.kind) != Some(Kind::Dir) {
            return Err(RemoteError::NotFound { path: dir.clone() });
        }
        Ok(g.0
            .iter()
            .filter(|(p, _)| p.parent().as_ref() == Some(dir))
            .map(|(p, n)| self.view(&g.0, p, n))
            .collect())
    }

    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        let all: Vec<RemoteEntry> = {
            let g = self.state.lock().unwrap();
            if !dir.is_root() && !g.0.contains_key(dir) {
                return Err(RemoteError::NotFound { path: dir.clone() });
            }
            g.0.iter()
                .filter(|(p, _)| p.starts_with(dir) && *p != dir)
                .map(|(p, n)| self.view(&g.0, p, n))
                .collect()
        };
        let mut stats = WalkStats::default();
        for e in all {
            stats.entries += 1;
            sink(e)?;
        }
        Ok(stats)
    }

    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        let ReadRange {
            path,
            version,
            offset,
            len,
            dst,
            dst_offset,
            ..
        } = req;
        let data = {
            let g = self.state.lock().unwrap();
            let n =
                g.0.get(path)
                    .ok_or_else(|| RemoteError::NotFound { path: path.clone() })?;
            let e = entry(path, n);
            if !e.version.same(version) || (n.data.len() as u64) < offset + len {
                return Err(RemoteError::version_changed(
                    path,
                    version,
                    Some(&e.version),
                ));
            }
            n.data[offset as usize..(offset + len) as usize].to_vec()
        };
        dst.write_all_at(&data, dst_offset)
            .map_err(|e| RemoteError::io(path, e))
    }

    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        let mut data = Vec::new();
        let len = src.metadata().map_err(|e| RemoteError::io(path, e))?.len();
        data.resize(len as usize, 0);
        src.read_exact_at(&mut data, 0)
            .map_err(|e| RemoteError::io(path, e))?;
        let mut g = self.state.lock().unwrap();
        if let Some(parent) = path.parent() {
            if !parent.is_root() && g.0.get(&parent).map(|n| n.kind) != Some(Kind::Dir) {
                return Err(RemoteError::NotFound { path: parent });
            }
        }
        let cur = g.0.get(path).map(|n| entry(path, n));
        match (pre, &cur) {
            (Precondition::MustNotExist, Some(_)) => {
                return Err(RemoteError::AlreadyExists { path: path.clone() })
            }
            (Precondition::IfMatch(v), Some(c)) if !c.version.same(v) => {
                return Err(RemoteError::PreconditionFailed { path: path.clone() })
            }
            (Precondition::IfMatch(_), None) => {
                return Err(RemoteError::PreconditionFailed { path: path.clone() })
            }
            _ => {}
        }
        g.1 += 1;
        let node = Node {
            kind: Kind::File,
            data,
            mtime: SystemTime::now(),
            tag: g.1,
            id: g.0.get(path).map_or(g.1, |n| n.id),
        };
        let e = self.view(&g.0, path, &node);
        g.0.insert(path.clone(), node);
        Ok(e)
    }

    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        let mut g = self.state.lock().unwrap();
        match g.0.get(path) {
            Some(n) if n.kind == kind => {}
            _ => return Err(RemoteError::NotFound { path: path.clone() }),
        }
        g.0.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        let mut g = self.state.lock().unwrap();
        if !g.0.contains_key(from) {
            return Err(RemoteError::NotFound { path: from.clone() });
        }
        if g.0.contains_key(to) {
            return Err(RemoteError::AlreadyExists { path: to.clone() });
        }
        if let Some(parent) = to.parent().filter(|p| !p.is_root()) {
            if g.0.get(&parent).map(|n| n.kind) != Some(Kind::Dir) {
                return Err(RemoteError::NotFound { path: parent });
            }
        }
        let moved: Vec<RelPath> =
            g.0.keys()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
        let mut answer = Moved::default();
        for p in moved {
            let mut n = g.0.remove(&p).unwrap();
            if self.copy_renames && n.kind == Kind::File {
                g.1 += 1;
                n.tag = g.1;
                n.mtime = SystemTime::now();
                if kind == Kind::File {
                    let e = entry(&p, &n);
                    answer = Moved {
                        etag: Some(e.version),
                        mtime: Some(e.mtime),
                    };
                }
            }
            let rest = &p.as_str()[from.as_str().len()..];
            let np = RelPath::parse(&format!("{}{}", to.as_str(), rest)).expect("valid");
            g.0.insert(np, n);
        }
        Ok(answer)
    }

    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        if path.is_root() {
            return Ok(());
        }
        let mut g = self.state.lock().unwrap();
        match g.0.get(path) {
            Some(n) if n.kind == Kind::Dir => return Ok(()),
            Some(_) => return Err(RemoteError::AlreadyExists { path: path.clone() }),
            None => {}
        }
        if let Some(parent) = path.parent() {
            if !parent.is_root() && g.0.get(&parent).map(|n| n.kind) != Some(Kind::Dir) {
                return Err(RemoteError::NotFound { path: parent });
            }
        }
        g.1 += 1;
        let tag = g.1;
        g.0.insert(
            path.clone(),
            Node {
                kind: Kind::Dir,
                data: vec![],
                mtime: SystemTime::now(),
                tag,
                id: tag,
            },
        );
        Ok(())
    }
}

//! The index: a cache of every managed file's state for quick answers (directory status).
//! The truth lives in each file's xattr record; deleting the index and restarting rebuilds it
//! from the files. Behind a trait so the store can change; sled is the default.

mod packed;

use packed::{Limits, Packed};
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

impl Record {
    /// Bytes this file counts as local in its folders' totals and the disk budget.
    fn local(&self) -> u64 {
        if self.availability.is_local() {
            self.size
        } else {
            self.local_bytes.min(self.size)
        }
    }

    /// Whether the file may be freed for the disk budget (it is then in the eviction order).
    fn evictable(&self) -> bool {
        self.availability == crate::model::Availability::Local && self.local_bytes > 0
    }
}

/// The files in a folder and below it, kept up to date as records change (never counted
/// by a scan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub online_only: u64,
    pub partial: u64,
    pub local: u64,
    pub pinned: u64,
    /// Sum of the files' sizes.
    pub size: u64,
    /// Bytes on disk (a local or pinned file counts whole).
    pub local_bytes: u64,
}

impl Totals {
    fn add(&mut self, r: &Record, sign: i8) {
        use crate::model::Availability as A;
        let f = |x: &mut u64, n: u64| {
            *x = if sign > 0 {
                x.saturating_add(n)
            } else {
                x.saturating_sub(n)
            }
        };
        match r.availability {
            A::OnlineOnly => f(&mut self.online_only, 1),
            A::Partial => f(&mut self.partial, 1),
            A::Local => f(&mut self.local, 1),
            A::Pinned => f(&mut self.pinned, 1),
        }
        f(&mut self.size, r.size);
        f(&mut self.local_bytes, r.local());
    }

    pub fn files(&self) -> u64 {
        self.online_only + self.partial + self.local + self.pinned
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        for x in [
            self.online_only,
            self.partial,
            self.local,
            self.pinned,
            self.size,
            self.local_bytes,
        ] {
            crate::varint::put(&mut v, x);
        }
        v
    }

    fn decode(b: &[u8]) -> Totals {
        let mut c = b;
        let mut n = || crate::varint::get(&mut c).unwrap_or(0);
        Totals {
            online_only: n(),
            partial: n(),
            local: n(),
            pinned: n(),
            size: n(),
            local_bytes: n(),
        }
    }
}

/// A local file in the eviction order: when the index last saw it used (seconds), its path
/// and its record.
pub type Evictable = (i64, String, Record);

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
    /// Records of a new root's placeholders, many at once (cheaper than one `put` each).
    /// A path that has a record already keeps it: that one is newer (the file was used
    /// between its creation and this batch).
    fn put_new(&self, root: &str, recs: &[(String, Record)]) -> Result<(), IndexError> {
        for (p, r) in recs {
            if self.get(root, p)?.is_none() {
                self.put(root, p, r)?;
            }
        }
        Ok(())
    }
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError>;
    /// The totals of the files in folder `dir` and below it (`""` = the whole root), in
    /// O(log n): kept as records change.
    fn totals(&self, root: &str, dir: &str) -> Result<Totals, IndexError>;
    /// Up to `limit` local files that may be freed for the disk budget, least recently used
    /// first, starting after `after` (a stamp and path from an earlier answer). O(log n +
    /// limit).
    fn oldest_local(
        &self,
        root: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Evictable>, IndexError>;
    /// The file was used at `stamp` (seconds): it moves back in the eviction order.
    fn touch(&self, root: &str, path: &str, stamp: i64) -> Result<(), IndexError>;
    /// Up to `limit` records of the files next to `path` (same folder) that sort after it,
    /// in order; looks at no more than a few times `limit` records (a folder's subfolders
    /// sort in between), so it costs O(log n + limit) whatever the size of the root.
    fn next_in_folder(
        &self,
        root: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, IndexError>;
    /// Calls `f` with the path of every status record of `root`, in order, holding none.
    fn record_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError>;
    fn remove_root(&self, root: &str) -> Result<(), IndexError>;
    fn is_empty(&self) -> bool;
    /// Drops the status record of one path.
    fn remove(&self, root: &str, path: &str) -> Result<(), IndexError>;

    // The sync base, kept apart from the status records.
    fn base_all(&self, root: &str) -> Result<Vec<(String, BaseEntry)>, IndexError>;
    /// The base entries directly in folder `dir` (`""`: the root), in path order. Skips over
    /// each subfolder's subtree, so it costs O(children x log n) whatever lies below.
    fn base_children(&self, root: &str, dir: &str) -> Result<Vec<(String, BaseEntry)>, IndexError>;
    /// [`Index::base_children`], each given to `f` in path order instead of held.
    fn base_children_each(&self, root: &str, dir: &str, f: Each<'_>) -> Result<(), IndexError> {
        for (p, b) in self.base_children(root, dir)? {
            f(&p, b);
        }
        Ok(())
    }
    /// Calls `f` with the path of every base entry of `root`, in order, holding none of them.
    fn base_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError>;
    fn base_get(&self, root: &str, path: &str) -> Result<Option<BaseEntry>, IndexError>;
    fn base_put(&self, root: &str, path: &str, e: &BaseEntry) -> Result<(), IndexError>;
    /// Several base entries at once (add-root records what it made from the listing).
    fn base_put_many(&self, root: &str, items: &[(String, BaseEntry)]) -> Result<(), IndexError> {
        for (p, b) in items {
            self.base_put(root, p, b)?;
        }
        Ok(())
    }
    fn base_remove(&self, root: &str, path: &str) -> Result<(), IndexError>;
    /// Makes every write so far durable (after each remote side effect).
    fn flush(&self) -> Result<(), IndexError>;
    /// Gives back what the store keeps in memory of what was read so far, when nobody is
    /// using it (`false`: it was in use, or there is nothing to give back). Called when the
    /// daemon goes idle.
    fn release(&self) -> Result<bool, IndexError> {
        Ok(false)
    }
}

fn key(root: &str, path: &str) -> Vec<u8> {
    let mut k = root.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

/// What [`Index::base_children_each`] gives each base entry to.
pub type Each<'a> = &'a mut dyn FnMut(&str, BaseEntry);

/// The eviction-order key: root, stamp (big-endian, so keys sort by time), path.
fn lru_key(root: &str, stamp: i64, path: &str) -> Vec<u8> {
    let mut k = root.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&(stamp.max(0) as u64).to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    k
}

/// The folders whose totals a file counts in: the root (`""`) and every folder above it.
fn folders_above(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(
        path.match_indices('/')
            .map(move |(i, _)| &path[..i])
            .filter(|d| !d.is_empty()),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// First byte of a binary sync base entry (a JSON one, from before, starts with `{`).
const BASE_V1: u8 = 1;

/// A sync base entry as stored: format byte, kind and whether a file id follows (one byte),
/// size, the version token (`varint::put_token`), the file id. About 25 bytes with an MD5
/// ETag, against about 90 for the JSON it replaces.
fn encode_base(b: &BaseEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.push(BASE_V1);
    let kind = match b.kind {
        crate::model::Kind::File => 0,
        crate::model::Kind::Dir => 1,
    };
    v.push(kind | u8::from(b.file_id.is_some()) << 1);
    crate::varint::put(&mut v, b.size);
    crate::varint::put_token(&mut v, &b.version);
    if let Some(id) = &b.file_id {
        crate::varint::put_bytes(&mut v, id.as_bytes());
    }
    v
}

fn decode_base(b: &[u8]) -> Result<BaseEntry, IndexError> {
    if b.first() == Some(&b'{') {
        return serde_json::from_slice(b).map_err(e);
    }
    let bad = || IndexError("malformed sync base entry".into());
    let (head, mut c) = match b {
        [BASE_V1, flags, rest @ ..] => (*flags, rest),
        _ => return Err(bad()),
    };
    let kind = match head & 1 {
        0 => crate::model::Kind::File,
        _ => crate::model::Kind::Dir,
    };
    let size = crate::varint::get(&mut c).ok_or_else(bad)?;
    let version = crate::varint::get_token(&mut c).ok_or_else(bad)?;
    let file_id = if head & 2 != 0 {
        let id = crate::varint::get_bytes(&mut c).ok_or_else(bad)?;
        Some(String::from_utf8(id.to_vec()).map_err(|_| bad())?)
    } else {
        None
    };
    if !c.is_empty() {
        return Err(bad());
    }
    Ok(BaseEntry {
        kind,
        version,
        size,
        file_id,
    })
}

/// First byte of a binary status record (a JSON one, from before, starts with `{`).
const RECORD_V1: u8 = 1;

/// A status record and its eviction stamp, as stored: format byte, availability, size,
/// local bytes, stamp (varints), then the version token's bytes. About 10 bytes plus the
/// token, against about 90 for the JSON it replaces.
fn encode(r: &Record, stamp: i64) -> Vec<u8> {
    use crate::model::Availability as A;
    let mut v = Vec::with_capacity(16 + r.version.len());
    v.push(RECORD_V1);
    v.push(match r.availability {
        A::OnlineOnly => 0,
        A::Partial => 1,
        A::Local => 2,
        A::Pinned => 3,
    });
    crate::varint::put(&mut v, r.size);
    crate::varint::put(&mut v, r.local_bytes);
    crate::varint::put(&mut v, stamp.max(0) as u64);
    v.extend_from_slice(r.version.as_bytes());
    v
}

fn decode(b: &[u8]) -> Result<(Record, i64), IndexError> {
    use crate::model::Availability as A;
    match b.split_first() {
        Some((&RECORD_V1, rest)) => {
            let bad = || IndexError("a damaged index record".into());
            let (&a, mut c) = rest.split_first().ok_or_else(bad)?;
            let availability = match a {
                0 => A::OnlineOnly,
                1 => A::Partial,
                2 => A::Local,
                3 => A::Pinned,
                _ => return Err(bad()),
            };
            let size = crate::varint::get(&mut c).ok_or_else(bad)?;
            let local_bytes = crate::varint::get(&mut c).ok_or_else(bad)?;
            let stamp = crate::varint::get(&mut c).ok_or_else(bad)? as i64;
            let version = String::from_utf8(c.to_vec()).map_err(|_| bad())?;
            Ok((
                Record {
                    availability,
                    size,
                    version,
                    local_bytes,
                },
                stamp,
            ))
        }
        _ => Ok((serde_json::from_slice(b).map_err(e)?, 0)),
    }
}

/// How many entries below a child folder [`Index::base_children`] reads past before it
/// seeks past the folder's subtree (a seek reads a chunk again).
const SKIP_BEFORE_SEEK: usize = if cfg!(test) { 2 } else { 64 };

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

#[cfg(any(test, feature = "testing"))]
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// The sled store. Trees: `chunks` (one entry per path holding its status record and its
/// sync base entry, see [`join`], packed 32-64 paths to a sled key: [`packed`]), `totals`
/// (per folder), `lru` (local files by last use) and `meta` (the format). An index from
/// before `chunks` kept one sled key per path in a `files` tree, or, before that, the
/// records in the default tree and the base in a `base` tree; it is copied over once on
/// open.
pub struct SledIndex {
    path: std::path::PathBuf,
    /// The open database; `None` only between closing it and opening it again
    /// ([`Index::release`]), or after such an open failed (tried again on next use).
    /// Taken for writing only with `try_write`, never waited for: a reader may read again
    /// inside a callback, which a waiting writer would block.
    store: std::sync::RwLock<Option<Store>>,
    /// Held by every write: an edit reads the chunks it changes before its transaction.
    write: std::sync::Mutex<()>,
    /// Reads after which the store is closed and opened again at the next walk that finds
    /// nobody else in it ([`SledIndex::store_for_walk`]; [`SHED_AFTER_READS`], lower in tests).
    shed_after: u64,
}

/// Reads (key lookups, and entries walks went past: [`packed::Packed::reads`]) after which
/// the next walk gives back the pages sled decoded for them (see [`SledIndex::reopen`]; a
/// pass walks each folder it looks at, a download never walks): a full
/// pass over a million files makes several million, and kept ~14 MiB of decoded pages
/// without this; a reopen costs 10-20 ms there (doc/BENCHMARKS.md).
const SHED_AFTER_READS: u64 = 100_000;

/// Entries a walk of paths reads under one hold of the store (see [`SledIndex::paths_with`]);
/// a few in unit tests, so their walks cross many runs.
const WALK_RUN: usize = if cfg!(test) { 7 } else { 50_000 };

/// The open sled database and its trees.
struct Store {
    db: sled::Db,
    files: Packed,
    totals: sled::Tree,
    lru: sled::Tree,
}

impl Store {
    fn open(db: sled::Db) -> Result<Self, IndexError> {
        Ok(Store {
            files: Packed::new(db.open_tree("chunks").map_err(e)?, LIMITS),
            totals: db.open_tree("totals").map_err(e)?,
            lru: db.open_tree("lru").map_err(e)?,
            db,
        })
    }
}

/// A read hold on the open store.
struct Held<'a>(std::sync::RwLockReadGuard<'a, Option<Store>>);

impl std::ops::Deref for Held<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        // Held is only made of a guard that holds a store.
        self.0.as_ref().expect("a held index store")
    }
}

/// sled's page cache size. sled holds several times this in decoded pages; measured with
/// 2,000,000 records (a million files and their sync base): 2 MiB keeps the writer at 58 MiB
/// against 153 MiB with 16 MiB, and a read of every record at 86 against 156, at the same
/// write speed (doc/BENCHMARKS.md).
const CACHE_BYTES: u64 = 2 << 20;

/// The `meta` key set once the totals and the eviction order cover every record.
const DERIVED_V1: &[u8] = b"derived-v1";

/// The `meta` key set once the records and the base share the `files` tree. sled splits a
/// leaf at 16 keys and keeps every page's metadata in memory: one key per path instead of
/// two halves the pages; with a million files the index opens at 41.6 MiB against 74.1,
/// takes 201 bytes a file on disk against 315, and is written in two thirds of the time
/// (doc/BENCHMARKS.md).
const FILES_V1: &[u8] = b"files-v1";

/// The `meta` key set once the paths are packed in the `chunks` tree. sled keeps every
/// page's metadata in memory and splits a leaf at 16 keys; with one key per path a million
/// files cost about 40 MiB only to open the index (doc/BENCHMARKS.md).
const PACKED_V1: &[u8] = b"packed-v1";

/// Whether `db` has a tree named `name`.
fn has_tree(db: &sled::Db, name: &[u8]) -> bool {
    db.tree_names().iter().any(|n| &n[..] == name)
}

/// The chunk sizes: small in unit tests, so a few paths already fill several chunks.
const LIMITS: Limits = if cfg!(test) {
    Limits {
        min_n: 2,
        target_n: 2,
        max_n: 3,
        target_bytes: 1024,
        max_bytes: 2048,
    }
} else {
    Limits::INDEX
};

/// First byte of a `files` value.
const ENTRY_V1: u8 = 0xE1;

/// A `files` value: [`ENTRY_V1`], the length of the status record (0: none), the record
/// ([`encode`]), then the sync base entry ([`encode_base`]; empty: none). `None` when the
/// path has neither.
fn join(rec: Option<&[u8]>, base: Option<&[u8]>) -> Option<Vec<u8>> {
    if rec.is_none() && base.is_none() {
        return None;
    }
    let (rec, base) = (rec.unwrap_or_default(), base.unwrap_or_default());
    let mut v = Vec::with_capacity(2 + rec.len() + base.len());
    v.push(ENTRY_V1);
    crate::varint::put(&mut v, rec.len() as u64);
    v.extend_from_slice(rec);
    v.extend_from_slice(base);
    Some(v)
}

/// The status record's bytes and the base entry's bytes of a `files` value.
type Parts<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn split(v: &[u8]) -> Result<Parts<'_>, IndexError> {
    let bad = || IndexError("a damaged index entry".into());
    let Some((&ENTRY_V1, mut c)) = v.split_first() else {
        return Err(bad());
    };
    let n = crate::varint::get(&mut c).ok_or_else(bad)? as usize;
    if n > c.len() {
        return Err(bad());
    }
    let (rec, base) = c.split_at(n);
    Ok((
        (!rec.is_empty()).then_some(rec),
        (!base.is_empty()).then_some(base),
    ))
}

fn record_of(v: &[u8]) -> Result<Option<(Record, i64)>, IndexError> {
    split(v)?.0.map(decode).transpose()
}

fn base_of(v: &[u8]) -> Result<Option<BaseEntry>, IndexError> {
    split(v)?.1.map(decode_base).transpose()
}

/// The paths of an index from before `files`: its records (default tree) and base entries
/// (`base` tree), read in key order in step, each path's two halves joined ([`join`]).
fn merged(
    mut recs: std::iter::Peekable<sled::Iter>,
    mut bases: std::iter::Peekable<sled::Iter>,
) -> impl Iterator<Item = Result<packed::Entry, IndexError>> {
    fn head(it: &mut std::iter::Peekable<sled::Iter>) -> Result<Option<sled::IVec>, IndexError> {
        match it.peek() {
            Some(Ok((k, _))) => Ok(Some(k.clone())),
            Some(Err(err)) => Err(e(err)),
            None => Ok(None),
        }
    }
    std::iter::from_fn(move || loop {
        let (rk, bk) = match (head(&mut recs), head(&mut bases)) {
            (Ok(r), Ok(b)) => (r, b),
            (Err(err), _) | (_, Err(err)) => return Some(Err(err)),
        };
        if rk.is_none() && bk.is_none() {
            return None;
        }
        let take_rec = rk.is_some() && bk.as_ref().is_none_or(|b| rk.as_ref() <= Some(b));
        let take_base = bk.is_some() && rk.as_ref().is_none_or(|r| bk.as_ref() <= Some(r));
        let rec = if take_rec {
            recs.next().and_then(Result::ok)
        } else {
            None
        };
        let b = if take_base {
            bases.next().and_then(Result::ok)
        } else {
            None
        };
        let k = rec.as_ref().or(b.as_ref()).map(|(k, _)| k.to_vec());
        let v = join(
            rec.as_ref().map(|(_, v)| &v[..]),
            b.as_ref().map(|(_, v)| &v[..]),
        );
        if let (Some(k), Some(v)) = (k, v) {
            return Some(Ok((k, v)));
        }
    })
}

impl SledIndex {
    pub fn open(path: &std::path::Path) -> Result<Self, IndexError> {
        // A copy (below) that was renamed away but not yet into place: it is complete.
        for (tmp, stale) in [("merging", "unmerged"), ("recompressing", "uncompressed")] {
            let (tmp, stale) = (path.with_extension(tmp), path.with_extension(stale));
            if !path.exists() && tmp.exists() && stale.exists() {
                std::fs::rename(&tmp, path).map_err(e)?;
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        // sled caches up to 1 GiB of pages by default; the index is read a record at a time,
        // so a small cache keeps the daemon small with a million files (doc/BENCHMARKS.md).
        // Compressed pages: keys share long path prefixes, and sled's log keeps several
        // versions of a page; zstd takes the index from about 600 to about 80 bytes a file
        // (doc/BENCHMARKS.md).
        // An index from before compression (sled refuses to change the setting, and a
        // refused open can keep the database's lock for the rest of the process): told by
        // sled's own `conf` file before any open, and copied over once, keeping the sync base.
        let db = if Self::written_uncompressed(path) {
            let old = Self::open_when_unlocked(Self::transient(sled::Config::new().path(path)))
                .map_err(|err| {
                    e(format!(
                        "{}: an index from before compression: {err}",
                        path.display()
                    ))
                })?;
            Self::recompress(path, old)?;
            Self::open_when_unlocked(Self::config(path)).map_err(e)?
        } else {
            Self::open_when_unlocked(Self::config(path)).map_err(e)?
        };
        let meta = db.open_tree("meta").map_err(e)?;
        let db = if meta.get(PACKED_V1).map_err(e)?.is_some() {
            db
        } else if db.is_empty() && !has_tree(&db, b"base") && !has_tree(&db, b"files") {
            // New: nothing to copy.
            meta.insert(FILES_V1, &[]).map_err(e)?;
            meta.insert(PACKED_V1, &[]).map_err(e)?;
            db
        } else {
            drop(meta);
            Self::repack(path, db)?;
            Self::open_when_unlocked(Self::config(path)).map_err(e)?
        };
        let meta = db.open_tree("meta").map_err(e)?;
        let ix = SledIndex {
            path: path.to_path_buf(),
            store: std::sync::RwLock::new(Some(Store::open(db)?)),
            write: Default::default(),
            shed_after: SHED_AFTER_READS,
        };
        if meta.get(DERIVED_V1).map_err(e)?.is_none() {
            ix.derive()?;
            meta.insert(DERIVED_V1, &[]).map_err(e)?;
            meta.flush().map_err(e)?;
        }
        Ok(ix)
    }

    /// The open store, opened again first if [`Index::release`] left it closed. Lookups
    /// (a download's among them) use this one and never pay for a reopen.
    fn store(&self) -> Result<Held<'_>, IndexError> {
        self.held(false)
    }

    /// [`SledIndex::store`] for a walk (a pass's folder or a run of a long walk): first,
    /// if more than `shed_after` reads went through the store since it was opened and
    /// nobody else is using it, it is reopened here, giving back what sled decoded (when
    /// someone is, a later walk does it).
    fn store_for_walk(&self) -> Result<Held<'_>, IndexError> {
        self.held(true)
    }

    fn held(&self, mut shed: bool) -> Result<Held<'_>, IndexError> {
        loop {
            let g = self.store.read().unwrap_or_else(|p| p.into_inner());
            match &*g {
                Some(s) if shed && s.files.reads() >= self.shed_after => {
                    drop(g);
                    shed = false;
                    let t = std::time::Instant::now();
                    match self.reopen() {
                        Ok(true) => tracing::debug!(
                            index = %self.path.display(),
                            ms = t.elapsed().as_millis() as u64,
                            "index reopened to give back decoded pages"
                        ),
                        Ok(false) => {}
                        // Left closed: the next turn opens it, or says why it cannot.
                        Err(err) => tracing::warn!(index = %self.path.display(), %err,
                            "reopening the index"),
                    }
                }
                Some(_) => return Ok(Held(g)),
                None => {
                    drop(g);
                    match self.try_write() {
                        Some(mut w) => {
                            if w.is_none() {
                                *w = Some(self.open_store()?);
                            }
                        }
                        None => std::thread::sleep(std::time::Duration::from_millis(1)),
                    }
                }
            }
        }
    }

    /// The store's lock for writing if nobody holds it (never waited for). A lock left
    /// poisoned by a thread that panicked holding it is taken all the same: what it guards
    /// is a handle, open or not, and refusing it would leave every later use waiting.
    fn try_write(&self) -> Option<std::sync::RwLockWriteGuard<'_, Option<Store>>> {
        match self.store.try_write() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Opens the database at `path` (waiting out a lock just let go) and its trees.
    fn open_store(&self) -> Result<Store, IndexError> {
        let db = Self::open_when_unlocked(Self::config(&self.path))
            .map_err(|err| e(format!("{}: {err}", self.path.display())))?;
        Store::open(db)
    }

    /// [`Index::release`]: gives back the memory sled keeps of the pages read so far, by
    /// closing the database (after writing it out) and opening it again: a few tens of
    /// milliseconds with a million files. sled's page cache limit does not bound it: sled
    /// counts each page by its compressed size, and tallies accesses only once 64 have
    /// queued in one of its 256 shards, so a walk of a few thousand pages keeps every one
    /// decoded (13 MiB after a full pass over a million files, doc/BENCHMARKS.md). Skipped
    /// (`false`) while anyone is using the index: it is tried again next time.
    fn reopen(&self) -> Result<bool, IndexError> {
        let Some(mut w) = self.try_write() else {
            return Ok(false);
        };
        if let Some(s) = w.take() {
            s.db.flush().map_err(e)?;
        }
        *w = Some(self.open_store()?);
        Ok(true)
    }

    fn config(path: &std::path::Path) -> sled::Config {
        sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .use_compression(true)
            .compression_factor(1)
    }

    /// Whether the index at `path` was written without compression: sled's `conf` file in
    /// it holds a line `use_compression: false` (absent for a new index).
    fn written_uncompressed(path: &std::path::Path) -> bool {
        std::fs::read(path.join("conf")).is_ok_and(|conf| {
            conf.split(|&b| b == b'\n')
                .any(|line| line == b"use_compression: false")
        })
    }

    /// Opens, waiting (up to 5 s) while the database's lock is still held by a handle of
    /// this process just dropped: sled's background threads let go of the lock file a moment
    /// after the handle (seen when an old index is copied and reopened at once, and on a
    /// release or a reopen under load: every open goes through here). sled reports
    /// a held lock as an `Other` I/O error naming the lock.
    fn open_when_unlocked(c: sled::Config) -> sled::Result<sled::Db> {
        let mut tries = 0;
        loop {
            match c.open() {
                Err(sled::Error::Io(io))
                    if tries < 250 && io.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// A handle opened only for a moment (the copy of an old index): no background flusher
    /// thread, which could still hold the database's lock after the handle is dropped and so
    /// make the next open of the same files fail. Such handles are flushed explicitly.
    fn transient(c: sled::Config) -> sled::Config {
        c.flush_every_ms(None)
    }

    /// Copies an uncompressed index into a compressed one that then takes its place.
    fn recompress(path: &std::path::Path, old: sled::Db) -> Result<(), IndexError> {
        let tmp = path.with_extension("recompressing");
        let _ = std::fs::remove_dir_all(&tmp);
        let new = Self::transient(Self::config(&tmp)).open().map_err(e)?;
        new.import(old.export());
        new.flush().map_err(e)?;
        drop((new, old));
        Self::put_in_place(path, &tmp, "uncompressed")?;
        tracing::info!(index = %path.display(), "index compressed");
        Ok(())
    }

    /// Puts the complete copy at `tmp` in the place of the index at `path`, which goes to
    /// `path.<stale>` first and is removed after: a crash between the two renames leaves
    /// both, and [`SledIndex::open`] finishes the move.
    fn put_in_place(
        path: &std::path::Path,
        tmp: &std::path::Path,
        stale: &str,
    ) -> Result<(), IndexError> {
        let stale = path.with_extension(stale);
        let _ = std::fs::remove_dir_all(&stale);
        std::fs::rename(path, &stale).map_err(e)?;
        std::fs::rename(tmp, path).map_err(e)?;
        let _ = std::fs::remove_dir_all(&stale);
        Ok(())
    }

    /// Copies an index from before `chunks` into a new one that then takes its place (a
    /// copy, not a change in place: sled keeps the memory and disk of cleared trees). The
    /// paths come from its `files` tree (one sled key each) or, older still, from its
    /// default tree (records) and `base` tree merged in key order, in step. Nothing is held
    /// but a batch. A copy that stopped is made again from the start.
    fn repack(path: &std::path::Path, old: sled::Db) -> Result<(), IndexError> {
        let t = std::time::Instant::now();
        let tmp = path.with_extension("merging");
        let _ = std::fs::remove_dir_all(&tmp);
        let new = Self::transient(Self::config(&tmp)).open().map_err(e)?;
        let chunks = Packed::new(new.open_tree("chunks").map_err(e)?, LIMITS);
        let n = if has_tree(&old, b"files") {
            let files = old.open_tree("files").map_err(e)?;
            chunks.load(
                files
                    .iter()
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(e)),
            )?
        } else {
            let base = old.open_tree("base").map_err(e)?;
            chunks.load(merged(old.iter().peekable(), base.iter().peekable()))?
        };
        for name in ["totals", "lru", "meta"] {
            let (from, to) = (
                old.open_tree(name).map_err(e)?,
                new.open_tree(name).map_err(e)?,
            );
            let mut batch = sled::Batch::default();
            for (i, kv) in from.iter().enumerate() {
                let (k, v) = kv.map_err(e)?;
                batch.insert(k, v);
                if i % 10_000 == 9_999 {
                    to.apply_batch(std::mem::take(&mut batch)).map_err(e)?;
                }
            }
            to.apply_batch(batch).map_err(e)?;
        }
        let meta = new.open_tree("meta").map_err(e)?;
        meta.insert(FILES_V1, &[]).map_err(e)?;
        meta.insert(PACKED_V1, &[]).map_err(e)?;
        new.flush().map_err(e)?;
        drop((chunks, meta, new, old));
        Self::put_in_place(path, &tmp, "unmerged")?;
        tracing::info!(
            paths = n,
            secs = t.elapsed().as_secs_f64(),
            "index: paths packed into chunks"
        );
        Ok(())
    }

    /// Builds the totals and the eviction order from the records (once, for an index written
    /// before they existed).
    fn derive(&self) -> Result<(), IndexError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.store()?;
        s.totals.clear().map_err(e)?;
        s.lru.clear().map_err(e)?;
        let mut sums: std::collections::BTreeMap<Vec<u8>, Totals> = Default::default();
        let stamp = now();
        let mut ed = s.files.edit();
        for (n, kv) in s.files.range(b"").enumerate() {
            let (k, v) = kv?;
            let Some(z) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            let (root, path) = (
                String::from_utf8_lossy(&k[..z]),
                String::from_utf8_lossy(&k[z + 1..]),
            );
            let (r, b) = split(&v)?;
            let Some(r) = r else {
                continue;
            };
            let (rec, _) = decode(r)?;
            for d in folders_above(&path) {
                sums.entry(key(&root, d)).or_default().add(&rec, 1);
            }
            if rec.evictable() {
                s.lru.insert(lru_key(&root, stamp, &path), &[]).map_err(e)?;
            }
            let kept = if rec.evictable() { stamp } else { 0 };
            ed.set(&k, join(Some(&encode(&rec, kept)), b))?;
            if n % 10_000 == 9_999 {
                s.files
                    .apply(std::mem::replace(&mut ed, s.files.edit()).finish()?)?;
            }
        }
        s.files.apply(ed.finish()?)?;
        for (k, t) in sums {
            s.totals.insert(k, t.encode()).map_err(e)?;
        }
        Ok(())
    }

    /// Replaces (or with `None` removes) the record of `path`, keeping its folders' totals
    /// and the eviction order in step, in one transaction. `stamp`: a new last-use time, or
    /// `None` to keep the old one (or take now for a file that just became evictable).
    fn set(
        &self,
        root: &str,
        path: &str,
        rec: Option<&Record>,
        stamp: Option<i64>,
    ) -> Result<(), IndexError> {
        self.set_many(root, &[(path, rec, stamp)], false)
    }

    /// [`SledIndex::set`] for many paths of one root in one transaction: each folder's
    /// totals are read and written once per batch. `only_new`: paths with a record keep it.
    fn set_many(&self, root: &str, items: &[Change<'_>], only_new: bool) -> Result<(), IndexError> {
        use sled::transaction::TransactionError;
        use sled::Transactional;
        let now = now();
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.store()?;
        let mut ed = s.files.edit();
        let mut sums: std::collections::HashMap<Vec<u8>, Totals> = Default::default();
        // Eviction-order keys to insert (`true`) or remove, in order.
        let mut lru: Vec<(Vec<u8>, bool)> = Vec::new();
        for &(path, rec, stamp) in items {
            let k = key(root, path);
            let (old, old_base) = match ed.get(&k)? {
                Some(v) => {
                    let (r, b) = split(v)?;
                    (r.map(decode).transpose()?, b.map(<[u8]>::to_vec))
                }
                None => (None, None),
            };
            if (old.is_none() && rec.is_none()) || (only_new && old.is_some()) {
                continue;
            }
            let old_stamp = old.as_ref().filter(|(o, _)| o.evictable()).map(|o| o.1);
            let new_stamp = match rec {
                Some(r) if r.evictable() => Some(stamp.or(old_stamp).unwrap_or(now)),
                _ => None,
            };
            let bytes = rec.map(|r| encode(r, new_stamp.unwrap_or(0)));
            ed.set(&k, join(bytes.as_deref(), old_base.as_deref()))?;
            if old_stamp != new_stamp {
                if let Some(o) = old_stamp {
                    lru.push((lru_key(root, o, path), false));
                }
                if let Some(n) = new_stamp {
                    lru.push((lru_key(root, n, path), true));
                }
            }
            let same = match (&old, rec) {
                (Some((o, _)), Some(r)) => {
                    (o.availability, o.size, o.local()) == (r.availability, r.size, r.local())
                }
                _ => false,
            };
            if same {
                continue;
            }
            for d in folders_above(path) {
                let tk = key(root, d);
                let tot = match sums.entry(tk) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let cur = s.totals.get(v.key()).map_err(e)?;
                        v.insert(cur.map(|x| Totals::decode(&x)).unwrap_or_default())
                    }
                };
                if let Some((o, _)) = &old {
                    tot.add(o, -1);
                }
                if let Some(r) = rec {
                    tot.add(r, 1);
                }
            }
        }
        let writes = ed.finish()?;
        // Read above under the write lock; the transaction only makes the writes of the
        // three trees one.
        let r: Result<(), TransactionError<IndexError>> = (s.files.tree(), &s.totals, &s.lru)
            .transaction(|(s, t, l)| {
                for (k, v) in &writes {
                    match v {
                        Some(v) => s.insert(&k[..], &v[..])?,
                        None => s.remove(&k[..])?,
                    };
                }
                for (k, add) in &lru {
                    if *add {
                        l.insert(&k[..], &[])?;
                    } else {
                        l.remove(&k[..])?;
                    }
                }
                for (tk, tot) in &sums {
                    if tot.files() == 0 {
                        t.remove(&tk[..])?;
                    } else {
                        t.insert(&tk[..], tot.encode())?;
                    }
                }
                Ok(())
            });
        r.map_err(|err| match err {
            TransactionError::Abort(x) => x,
            TransactionError::Storage(x) => e(x),
        })
    }
}

/// One record change of a batch: the path, its new record (`None`: removed) and last use.
type Change<'a> = (&'a str, Option<&'a Record>, Option<i64>);

impl SledIndex {
    /// Sets (or with `None` removes) the base entries of `items` (encoded), keeping each
    /// path's status record, in one transaction.
    fn base_set(&self, root: &str, items: &[(&str, Option<Vec<u8>>)]) -> Result<(), IndexError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.store()?;
        let mut ed = s.files.edit();
        for (path, b) in items {
            let k = key(root, path);
            let rec = match ed.get(&k)? {
                Some(v) => split(v)?.0.map(<[u8]>::to_vec),
                None => None,
            };
            ed.set(&k, join(rec.as_deref(), b.as_deref()))?;
        }
        s.files.apply(ed.finish()?)
    }

    /// Calls `f` with the path of every entry of `root` that has a status record (`records`)
    /// or a base entry, in order.
    fn paths_with(
        &self,
        root: &str,
        records: bool,
        f: &mut dyn FnMut(&str),
    ) -> Result<(), IndexError> {
        let prefix = key(root, "");
        let mut last: Option<Vec<u8>> = None;
        // In runs of WALK_RUN entries, each under a hold of its own: between two the store
        // may be reopened ([`SledIndex::store_for_walk`]), so a walk of a large root does not keep
        // every page it decoded. Each run starts after the key the one before ended at.
        loop {
            let s = self.store_for_walk()?;
            let from = last.clone().unwrap_or_else(|| prefix.clone());
            let mut n = 0;
            for kv in s.files.range(&from) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) {
                    return Ok(());
                }
                if last.as_ref() == Some(&k) {
                    continue;
                }
                let (r, b) = split(&v)?;
                if if records { r.is_some() } else { b.is_some() } {
                    f(&String::from_utf8_lossy(&k[root.len() + 1..]));
                }
                n += 1;
                if n == WALK_RUN {
                    last = Some(k);
                    break;
                }
            }
            if n < WALK_RUN {
                return Ok(());
            }
        }
    }
}

fn e(err: impl std::fmt::Display) -> IndexError {
    IndexError(err.to_string())
}

impl Index for SledIndex {
    fn put(&self, root: &str, path: &str, rec: &Record) -> Result<(), IndexError> {
        self.set(root, path, Some(rec), None)
    }
    fn put_new(&self, root: &str, recs: &[(String, Record)]) -> Result<(), IndexError> {
        let items: Vec<Change<'_>> = recs
            .iter()
            .map(|(p, r)| (p.as_str(), Some(r), None))
            .collect();
        self.set_many(root, &items, true)
    }
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError> {
        let s = self.store()?;
        match s.files.get(&key(root, path))? {
            Some(v) => Ok(record_of(&v)?.map(|r| r.0)),
            None => Ok(None),
        }
    }
    fn totals(&self, root: &str, dir: &str) -> Result<Totals, IndexError> {
        let s = self.store()?;
        Ok(s.totals
            .get(key(root, dir))
            .map_err(e)?
            .map(|v| Totals::decode(&v))
            .unwrap_or_default())
    }
    fn oldest_local(
        &self,
        root: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Evictable>, IndexError> {
        let s = self.store()?;
        let prefix = key(root, "");
        let start = match after {
            // Just past the last answer: its key with a 0 byte appended.
            Some((s, p)) => {
                let mut k = lru_key(root, s, p);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for kv in s.lru.range(start..) {
            let (k, _) = kv.map_err(e)?;
            if !k.starts_with(&prefix) || k.len() < prefix.len() + 8 {
                break;
            }
            let stamp = u64::from_be_bytes(k[prefix.len()..prefix.len() + 8].try_into().unwrap());
            let path = String::from_utf8_lossy(&k[prefix.len() + 8..]).into_owned();
            if let Some(rec) = self.get(root, &path)? {
                out.push((stamp as i64, path, rec));
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
    fn touch(&self, root: &str, path: &str, stamp: i64) -> Result<(), IndexError> {
        match self.get(root, path)? {
            Some(rec) if rec.evictable() => self.set(root, path, Some(&rec), Some(stamp)),
            _ => Ok(()),
        }
    }
    fn next_in_folder(
        &self,
        root: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, IndexError> {
        let s = self.store()?;
        let folder = folder_of(path);
        let mut out = Vec::new();
        let end = key(root, &format!("{folder}\u{10FFFF}"));
        let range = s
            .files
            .range(&key(root, path))
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| *k < end));
        for kv in range.take(limit.saturating_mul(SCAN_PER_SIBLING)) {
            let (k, v) = kv?;
            let p = String::from_utf8_lossy(&k[root.len() + 1..]).into_owned();
            if !sibling_after(&p, folder, path) {
                continue;
            }
            if let Some((rec, _)) = record_of(&v)? {
                out.push((p, rec));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }
    fn remove_root(&self, root: &str) -> Result<(), IndexError> {
        let s = self.store()?;
        let prefix = key(root, "");
        loop {
            let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let keys = s
                .files
                .scan_prefix(&prefix)
                .take(10_000)
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut ed = s.files.edit();
            for k in keys {
                ed.set(&k, None)?;
            }
            s.files.apply(ed.finish()?)?;
        }
        for t in [&s.totals, &s.lru] {
            for k in t.scan_prefix(key(root, "")).keys() {
                t.remove(k.map_err(e)?).map_err(e)?;
            }
        }
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.store().is_ok_and(|s| s.files.is_empty())
    }
    fn remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.set(root, path, None, None)
    }
    fn base_all(&self, root: &str) -> Result<Vec<(String, BaseEntry)>, IndexError> {
        let s = self.store_for_walk()?;
        let mut out = Vec::new();
        let prefix = key(root, "");
        for kv in s.files.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if let Some(b) = base_of(&v)? {
                let p = String::from_utf8_lossy(&k[root.len() + 1..]).into_owned();
                out.push((p, b));
            }
        }
        Ok(out)
    }
    fn base_children(&self, root: &str, dir: &str) -> Result<Vec<(String, BaseEntry)>, IndexError> {
        let mut out = Vec::new();
        self.base_children_each(root, dir, &mut |p, b| out.push((p.to_string(), b)))?;
        Ok(out)
    }
    fn base_children_each(&self, root: &str, dir: &str, f: Each<'_>) -> Result<(), IndexError> {
        let s = self.store_for_walk()?;
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let end = key(root, &format!("{prefix}\u{10FFFF}"));
        let mut it = s.files.range(&key(root, &prefix));
        let mut below = 0;
        while let Some(kv) = it.next() {
            let (k, v) = kv?;
            if k >= end {
                break;
            }
            let p = String::from_utf8_lossy(&k[root.len() + 1..]);
            let rest = &p[prefix.len()..];
            match rest.find('/') {
                // Below a child folder: read on past a few, then jump past its subtree ('0'
                // follows '/').
                Some(i) => {
                    below += 1;
                    if below == SKIP_BEFORE_SEEK {
                        below = 0;
                        it = s
                            .files
                            .range(&key(root, &format!("{prefix}{}0", &rest[..i])));
                    }
                }
                None => {
                    below = 0;
                    if !rest.is_empty() {
                        if let Some(b) = base_of(&v)? {
                            f(&p, b);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    fn record_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError> {
        self.paths_with(root, true, f)
    }
    fn base_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError> {
        self.paths_with(root, false, f)
    }
    fn base_get(&self, root: &str, path: &str) -> Result<Option<BaseEntry>, IndexError> {
        let s = self.store()?;
        match s.files.get(&key(root, path))? {
            Some(v) => base_of(&v),
            None => Ok(None),
        }
    }
    fn base_put(&self, root: &str, path: &str, b: &BaseEntry) -> Result<(), IndexError> {
        self.base_set(root, &[(path, Some(encode_base(b)))])
    }
    fn base_put_many(&self, root: &str, items: &[(String, BaseEntry)]) -> Result<(), IndexError> {
        let items: Vec<(&str, Option<Vec<u8>>)> = items
            .iter()
            .map(|(p, b)| (p.as_str(), Some(encode_base(b))))
            .collect();
        self.base_set(root, &items)
    }
    fn base_remove(&self, root: &str, path: &str) -> Result<(), IndexError> {
        self.base_set(root, &[(path, None)])
    }
    fn flush(&self) -> Result<(), IndexError> {
        let s = self.store()?;
        s.db.flush().map_err(e)?;
        Ok(())
    }
    fn release(&self) -> Result<bool, IndexError> {
        self.reopen()
    }
}

/// In-memory index for unit tests, and the reference model the sled store is checked
/// against: its totals and eviction order are computed by scanning, the obvious way.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct MemoryIndex {
    m: Mutex<BTreeMap<(String, String), (Record, i64)>>,
    base: Mutex<BTreeMap<(String, String), BaseEntry>>,
}

#[cfg(any(test, feature = "testing"))]
impl Index for MemoryIndex {
    fn put(&self, root: &str, path: &str, rec: &Record) -> Result<(), IndexError> {
        let mut m = self.m.lock().unwrap();
        let k = (root.to_string(), path.to_string());
        let stamp = match m.get(&k) {
            Some((o, s)) if o.evictable() => *s,
            _ => now(),
        };
        m.insert(k, (rec.clone(), stamp));
        Ok(())
    }
    fn get(&self, root: &str, path: &str) -> Result<Option<Record>, IndexError> {
        Ok(self
            .m
            .lock()
            .unwrap()
            .get(&(root.into(), path.into()))
            .map(|x| x.0.clone()))
    }
    fn totals(&self, root: &str, dir: &str) -> Result<Totals, IndexError> {
        let mut t = Totals::default();
        for ((r, p), (rec, _)) in self.m.lock().unwrap().iter() {
            if r == root && p != dir && under(p, dir) {
                t.add(rec, 1);
            }
        }
        Ok(t)
    }
    fn oldest_local(
        &self,
        root: &str,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Evictable>, IndexError> {
        let mut v: Vec<Evictable> = self
            .m
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, _), (rec, _))| r == root && rec.evictable())
            .map(|((_, p), (rec, s))| (*s, p.clone(), rec.clone()))
            .filter(|(s, p, _)| after.is_none_or(|(a, ap)| (*s, p.as_str()) > (a, ap)))
            .collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v.truncate(limit);
        Ok(v)
    }
    fn touch(&self, root: &str, path: &str, stamp: i64) -> Result<(), IndexError> {
        if let Some((rec, s)) = self.m.lock().unwrap().get_mut(&(root.into(), path.into())) {
            if rec.evictable() {
                *s = stamp;
            }
        }
        Ok(())
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
            .map(|((_, p), v)| (p.clone(), v.0.clone()))
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
    fn base_children(&self, root: &str, dir: &str) -> Result<Vec<(String, BaseEntry)>, IndexError> {
        Ok(self
            .base_all(root)?
            .into_iter()
            .filter(|(p, _)| !p.is_empty() && folder_of(p) == dir)
            .collect())
    }
    fn base_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError> {
        for (p, _) in self.base_all(root)? {
            f(&p);
        }
        Ok(())
    }
    fn record_paths(&self, root: &str, f: &mut dyn FnMut(&str)) -> Result<(), IndexError> {
        let paths: Vec<String> = self
            .m
            .lock()
            .unwrap()
            .keys()
            .filter(|(r, _)| r == root)
            .map(|(_, p)| p.clone())
            .collect();
        for p in paths {
            f(&p);
        }
        Ok(())
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
    use crate::model::Availability;

    fn rec(a: Availability, size: u64) -> Record {
        Record {
            availability: a,
            size,
            version: "v".into(),
            local_bytes: if a.is_local() { size } else { 0 },
        }
    }

    /// A file's base entry of 10 bytes.
    fn file_base(version: &str, file_id: Option<&str>) -> BaseEntry {
        BaseEntry {
            kind: crate::model::Kind::File,
            version: version.into(),
            size: 10,
            file_id: file_id.map(Into::into),
        }
    }

    fn check(ix: &dyn Index) {
        let r = |a: Availability| rec(a, 1);
        ix.put("r1", "a", &r(Availability::Local)).unwrap();
        ix.put("r1", "a/b", &r(Availability::OnlineOnly)).unwrap();
        ix.put("r1", "ab", &r(Availability::Local)).unwrap();
        ix.put("r2", "a/c", &r(Availability::Local)).unwrap();
        let t = ix.totals("r1", "a").unwrap();
        assert_eq!(
            (t.online_only, t.local, t.size, t.local_bytes),
            (1, 0, 1, 0)
        );
        let t = ix.totals("r1", "").unwrap();
        assert_eq!((t.files(), t.local, t.local_bytes), (3, 2, 2));
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
        // The eviction order: local files only, oldest use first, paged.
        ix.touch("r1", "ab", 5).unwrap();
        ix.touch("r1", "a", 7).unwrap();
        ix.touch("r1", "d/f1", 1).unwrap(); // online-only: not in the order
        let names = |v: Vec<Evictable>| v.into_iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(names(ix.oldest_local("r1", None, 10).unwrap()), ["ab", "a"]);
        assert_eq!(
            names(ix.oldest_local("r1", Some((5, "ab")), 10).unwrap()),
            ["a"]
        );
        ix.remove("r1", "ab").unwrap();
        assert_eq!(names(ix.oldest_local("r1", None, 10).unwrap()), ["a"]);
        assert_eq!(ix.totals("r1", "").unwrap().local, 1);
        ix.remove_root("r1").unwrap();
        assert!(ix.get("r1", "a").unwrap().is_none());
        assert_eq!(ix.totals("r1", "").unwrap(), Totals::default());
        assert!(ix.oldest_local("r1", None, 10).unwrap().is_empty());
        assert!(!ix.is_empty());
    }

    #[test]
    fn memory_and_sled_agree() {
        check(&MemoryIndex::default());
        let t = tempfile::tempdir().unwrap();
        check(&SledIndex::open(&t.path().join("ix")).unwrap());
    }

    #[test]
    fn records_round_trip_and_old_json_records_still_read() {
        for a in [
            Availability::OnlineOnly,
            Availability::Partial,
            Availability::Local,
            Availability::Pinned,
        ] {
            let mut r = rec(a, 1 << 40);
            r.version = "\"d41d8cd98f00b204e9800998ecf8427e-12\"".into();
            r.local_bytes = 12345;
            let b = encode(&r, 1_700_000_000);
            assert!(b.len() < 20 + r.version.len(), "{} bytes", b.len());
            assert_eq!(decode(&b).unwrap(), (r.clone(), 1_700_000_000));
            assert_eq!(decode(&serde_json::to_vec(&r).unwrap()).unwrap(), (r, 0));
        }
        assert!(decode(&[RECORD_V1, 9]).is_err());
        assert!(decode(&[RECORD_V1, 0, 0x80]).is_err());
    }

    #[test]
    fn base_entries_round_trip_and_old_json_entries_still_read() {
        use crate::model::Kind;
        for (kind, version, size, file_id) in [
            (Kind::File, "e:d41d8cd98f00b204e9800998ecf8427e", 5u64, None),
            (
                Kind::File,
                "e:d41d8cd98f00b204e9800998ecf8427e-12",
                1 << 40,
                Some("00000042ocabc"),
            ),
            (Kind::Dir, "e:\"W/odd\" etag ü", 0, None),
            (Kind::File, "s:12:1700000000", 12, Some("")),
            (Kind::File, "s:12:-5", 12, None),
            (Kind::Dir, "", 0, None),
            (Kind::File, "e:ABCDEF", 3, None),
            (Kind::File, "e:0a", 3, None),
            (Kind::File, "e:a", 3, None),
            (
                Kind::File,
                "e:1a2b3c-2faf080-6755c1a0.1f3a5b7c",
                3,
                Some("1715004"),
            ),
            (Kind::File, "e:a.b", 3, None),
            (Kind::File, "e:a..b", 3, None),
            (Kind::File, "e:a.", 3, None),
            (Kind::File, "e:.a", 3, None),
            (Kind::File, "e:-", 3, None),
        ] {
            let b = BaseEntry {
                kind,
                version: version.into(),
                size,
                file_id: file_id.map(Into::into),
            };
            let bytes = encode_base(&b);
            assert_eq!(decode_base(&bytes).unwrap(), b, "{version}");
            assert_eq!(decode_base(&serde_json::to_vec(&b).unwrap()).unwrap(), b);
            for cut in 0..bytes.len() {
                assert!(
                    decode_base(&bytes[..cut]).is_err(),
                    "{version}: cut at {cut}"
                );
            }
        }
        let md5 = BaseEntry {
            kind: Kind::File,
            version: "e:d41d8cd98f00b204e9800998ecf8427e".into(),
            size: 123_456,
            file_id: None,
        };
        assert!(
            encode_base(&md5).len() <= 24,
            "{} bytes",
            encode_base(&md5).len()
        );
    }

    /// An index written before totals and compression gets both on open, and keeps its records
    /// and its sync base.
    #[test]
    fn an_old_index_gains_its_totals_on_open() {
        let t = tempfile::tempdir().unwrap();
        {
            let db = SledIndex::transient(sled::Config::new().path(t.path().join("ix")))
                .open()
                .unwrap();
            let r = rec(Availability::Local, 10);
            db.insert(key("r", "a/b"), serde_json::to_vec(&r).unwrap())
                .unwrap();
            db.insert(key("r", "c"), serde_json::to_vec(&r).unwrap())
                .unwrap();
            let base = BaseEntry {
                kind: crate::model::Kind::File,
                version: "b".into(),
                size: 10,
                file_id: None,
            };
            db.open_tree("base")
                .unwrap()
                .insert(key("r", "c"), serde_json::to_vec(&base).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let ix = SledIndex::open(&t.path().join("ix")).unwrap();
        assert_eq!(ix.base_get("r", "c").unwrap().unwrap().version, "b");
        assert_eq!(ix.totals("r", "").unwrap().local_bytes, 20);
        assert_eq!(ix.totals("r", "a").unwrap().local, 1);
        assert_eq!(ix.oldest_local("r", None, 9).unwrap().len(), 2);
    }

    /// An index from before the `files` tree (records in the default tree, the base in
    /// `base`, paths in one, the other or both) is merged on open: every record and entry
    /// kept, the old trees gone; reopening changes nothing.
    #[test]
    fn an_old_index_is_merged_into_one_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = rec(Availability::Local, 10);
        let be = |v: &str| file_base(v, Some("id"));
        let n = 25_000;
        {
            let c = SledIndex::transient(SledIndex::config(&t.path().join("ix")));
            let db = c.open().unwrap();
            let base = db.open_tree("base").unwrap();
            for i in 0..n {
                let p = format!("d{}/f{i:05}", i % 7);
                if i % 3 != 0 {
                    db.insert(key("r", &p), encode(&r, 5)).unwrap();
                }
                if i % 3 != 1 {
                    base.insert(key("r", &p), encode_base(&be(&p))).unwrap();
                }
            }
            db.open_tree("meta")
                .unwrap()
                .insert(DERIVED_V1, &[])
                .unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let ix = SledIndex::open(&t.path().join("ix")).unwrap();
            let (mut recs, mut bases) = (0, 0);
            ix.record_paths("r", &mut |_| recs += 1).unwrap();
            ix.base_paths("r", &mut |_| bases += 1).unwrap();
            assert_eq!(
                (recs, bases),
                (
                    (0..n).filter(|i| i % 3 != 0).count(),
                    (0..n).filter(|i| i % 3 != 1).count()
                )
            );
            assert_eq!(ix.get("r", "d2/f00002").unwrap(), Some(r.clone()));
            assert_eq!(
                ix.base_get("r", "d2/f00002").unwrap(),
                Some(be("d2/f00002"))
            );
            assert_eq!(ix.get("r", "d0/f00000").unwrap(), None);
            assert_eq!(ix.base_get("r", "d1/f00001").unwrap(), None);
            assert!(ix.store().unwrap().db.is_empty());
            assert!(!ix
                .store()
                .unwrap()
                .db
                .tree_names()
                .iter()
                .any(|n| &n[..] == b"base"));
        }
    }

    /// An index with one sled key per path (the `files` tree) is packed into chunks on
    /// open: every record, base entry and folder total kept, the old tree gone; reopening
    /// changes nothing.
    #[test]
    fn a_one_key_per_path_index_is_packed_on_open() {
        let t = tempfile::tempdir().unwrap();
        let r = rec(Availability::Local, 10);
        let be = |v: &str| file_base(v, None);
        let n: usize = 5_000;
        {
            let db = SledIndex::transient(SledIndex::config(&t.path().join("ix")))
                .open()
                .unwrap();
            let files = db.open_tree("files").unwrap();
            for i in 0..n {
                let p = format!("d{}/f{i:05}", i % 7);
                let rec = (i % 3 != 0).then(|| encode(&r, 0));
                let base = (i % 3 != 1).then(|| encode_base(&be(&p)));
                files
                    .insert(key("r", &p), join(rec.as_deref(), base.as_deref()).unwrap())
                    .unwrap();
            }
            let mut tot = Totals::default();
            tot.add(&r, 1);
            db.open_tree("totals")
                .unwrap()
                .insert(key("r", "d3"), tot.encode())
                .unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert(DERIVED_V1, &[]).unwrap();
            meta.insert(FILES_V1, &[]).unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let ix = SledIndex::open(&t.path().join("ix")).unwrap();
            let (mut recs, mut bases) = (Vec::new(), 0);
            ix.record_paths("r", &mut |p| recs.push(p.to_string()))
                .unwrap();
            ix.base_paths("r", &mut |_| bases += 1).unwrap();
            assert_eq!(recs.len(), (0..n).filter(|i| i % 3 != 0).count());
            assert!(recs.windows(2).all(|w| w[0] < w[1]), "in order");
            assert_eq!(bases, (0..n).filter(|i| i % 3 != 1).count());
            assert_eq!(ix.get("r", "d2/f00002").unwrap(), Some(r.clone()));
            assert_eq!(
                ix.base_get("r", "d2/f00002").unwrap(),
                Some(be("d2/f00002"))
            );
            assert_eq!(ix.base_children("r", "d4").unwrap().len(), 476);
            assert_eq!(ix.totals("r", "d3").unwrap().local, 1);
            assert!(!has_tree(&ix.store().unwrap().db, b"files"));
            assert!(
                ix.store().unwrap().files.tree().len() <= n.div_ceil(LIMITS.target_n),
                "{} chunks",
                ix.store().unwrap().files.tree().len()
            );
        }
    }

    /// Releasing the store's memory (closing and opening it again) loses nothing, is
    /// skipped while the store is in use (a reader inside a callback: no wait, no deadlock),
    /// and threads reading and writing throughout see every write.
    #[test]
    fn releasing_the_store_loses_nothing_and_waits_for_nobody() {
        let t = tempfile::tempdir().unwrap();
        let ix = std::sync::Arc::new(SledIndex::open(&t.path().join("ix")).unwrap());
        let r = rec(Availability::Local, 7);
        for i in 0..300 {
            ix.put("r", &format!("d/f{i:03}"), &r).unwrap();
        }
        assert!(ix.release().unwrap(), "idle: released");
        assert_eq!(ix.get("r", "d/f150").unwrap(), Some(r.clone()));
        // In use: a callback of a walk asks for the release, and reads again.
        let mut inside = Vec::new();
        ix.record_paths("r", &mut |p| {
            if inside.is_empty() {
                inside.push(ix.release().unwrap());
                assert_eq!(ix.get("r", p).unwrap(), Some(r.clone()));
            }
        })
        .unwrap();
        assert_eq!(inside, [false]);
        // Writers and readers on other threads while the store is released over and over.
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (ix, r) = (ix.clone(), r.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let p = format!("w{w}/f{i:03}");
                        ix.put("r", &p, &r).unwrap();
                        assert_eq!(ix.get("r", &p).unwrap(), Some(r.clone()), "{p}");
                    }
                })
            })
            .collect();
        // (Tried every 10 ms while they run: a try finds the store in use or not, by timing.)
        let mut released = 0;
        while writers.iter().any(|w| !w.is_finished()) || released == 0 {
            released += usize::from(ix.release().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_kept_after_closing(ix, &t.path().join("ix"), 300 + 3 * 100);
    }

    /// Closes the last handle `ix` on the index at `dir`, opens it again and checks that it
    /// holds `n` status records of root `r` and totals that count them.
    fn assert_kept_after_closing(ix: std::sync::Arc<SledIndex>, dir: &std::path::Path, n: u64) {
        drop(ix);
        let ix = SledIndex::open(dir).unwrap();
        let mut walked = 0;
        ix.record_paths("r", &mut |_| walked += 1).unwrap();
        assert_eq!(walked, n, "every write kept after closing");
        assert_eq!(ix.totals("r", "").unwrap().files(), n);
    }

    /// Past its limit of reads the store reopens itself at the next walk (or run of a long
    /// walk) that finds it free, giving back what sled decoded; never at a lookup, never
    /// under a reader inside a callback; no write is lost while threads read and write
    /// through the reopens.
    #[test]
    fn the_store_reopens_itself_at_walks_after_many_reads_and_loses_nothing() {
        let t = tempfile::tempdir().unwrap();
        let mut ix = SledIndex::open(&t.path().join("ix")).unwrap();
        ix.shed_after = 64;
        let ix = std::sync::Arc::new(ix);
        let r = rec(Availability::Local, 7);
        for i in 0..200 {
            ix.put("r", &format!("d/f{i:03}"), &r).unwrap();
            assert_eq!(ix.get("r", &format!("d/f{i:03}")).unwrap(), Some(r.clone()));
        }
        // Hundreds of lookups, and no reopen: a lookup (a download's) never pays for one.
        assert!(
            ix.store().unwrap().files.reads() >= 400,
            "lookups alone reopened"
        );
        // A walk reopens first; the lookups of its callback go on past the limit under
        // one run's hold, and the store is reopened between runs. The walk sees every path.
        let mut seen = 0;
        let mut most = 0;
        ix.record_paths("r", &mut |p| {
            assert_eq!(ix.get("r", p).unwrap(), Some(r.clone()), "{p}");
            most = most.max(ix.store().unwrap().files.reads());
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 200);
        // A run of WALK_RUN entries reads a chunk or two (up to 64 entries each) and looks
        // each entry up: without a reopen between runs the count would pass 2,000.
        assert!(
            most < 64 + 3 * 64 + WALK_RUN as u64,
            "not reopened between runs: {most}"
        );
        for i in 0..300 {
            ix.get("r", &format!("d/f{:03}", i % 200)).unwrap();
        }
        let before = ix.store().unwrap().files.reads();
        ix.base_children_each("r", "zz", &mut |_, _| {}).unwrap();
        let after = ix.store().unwrap().files.reads();
        assert!(
            before >= 300 && after < 100,
            "a folder's walk reopens first: {before} reads before it, {after} after"
        );
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let (ix, r) = (ix.clone(), r.clone());
                std::thread::spawn(move || {
                    for i in 0..40 {
                        if w == 3 {
                            if i % 4 == 0 {
                                let mut n = 0;
                                ix.record_paths("r", &mut |_| n += 1).unwrap();
                                assert!(n >= 200, "a walk saw {n}");
                            }
                            continue;
                        }
                        let p = format!("w{w}/f{i:03}");
                        ix.put("r", &p, &r).unwrap();
                        assert_eq!(ix.get("r", &p).unwrap(), Some(r.clone()), "{p}");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_kept_after_closing(ix, &t.path().join("ix"), 200 + 3 * 40);
    }

    /// A thread that panics while it holds the store's lock (poisoning it) leaves the
    /// index usable: the store can still be released, opened again, read and written.
    #[test]
    fn a_panic_holding_the_store_leaves_the_index_usable() {
        let t = tempfile::tempdir().unwrap();
        let ix = std::sync::Arc::new(SledIndex::open(&t.path().join("ix")).unwrap());
        let r = rec(Availability::Local, 7);
        ix.put("r", "a", &r).unwrap();
        let held = ix.clone();
        let died = std::thread::spawn(move || {
            let mut w = held.store.write().unwrap();
            // Closed, as a reopen that panicked between closing and opening leaves it.
            w.take();
            panic!("a panic while the store is held");
        })
        .join();
        assert!(died.is_err() && ix.store.is_poisoned());
        assert_eq!(ix.get("r", "a").unwrap(), Some(r.clone()), "opened again");
        ix.put("r", "b", &r).unwrap();
        assert!(ix.release().unwrap(), "released though poisoned");
        assert_eq!(ix.get("r", "b").unwrap(), Some(r));
    }

    /// A path's status record and its base entry live in one value: changing or removing
    /// one keeps the other, and a path with neither is gone.
    #[test]
    fn records_and_base_entries_keep_each_other() {
        let t = tempfile::tempdir().unwrap();
        let sled = SledIndex::open(&t.path().join("ix")).unwrap();
        let mem = MemoryIndex::default();
        let b = BaseEntry {
            kind: crate::model::Kind::File,
            version: "e:1".into(),
            size: 3,
            file_id: None,
        };
        for ix in [&sled as &dyn Index, &mem] {
            let r = rec(Availability::Local, 3);
            ix.put("r", "a", &r).unwrap();
            ix.base_put("r", "a", &b).unwrap();
            ix.put("r", "a", &rec(Availability::OnlineOnly, 3)).unwrap();
            assert_eq!(ix.base_get("r", "a").unwrap(), Some(b.clone()));
            ix.base_put_many("r", &[("a".into(), b.clone()), ("b".into(), b.clone())])
                .unwrap();
            assert_eq!(
                ix.get("r", "a").unwrap().map(|r| r.availability),
                Some(Availability::OnlineOnly)
            );
            ix.remove("r", "a").unwrap();
            assert_eq!(ix.base_get("r", "a").unwrap(), Some(b.clone()));
            ix.put("r", "a", &r).unwrap();
            ix.base_remove("r", "a").unwrap();
            assert_eq!(ix.get("r", "a").unwrap(), Some(r.clone()));
            assert_eq!(ix.base_all("r").unwrap().len(), 1);
            ix.remove("r", "a").unwrap();
            ix.base_remove("r", "b").unwrap();
            assert!(ix.base_all("r").unwrap().is_empty());
            assert!(ix.next_in_folder("r", "", 10).unwrap().is_empty());
        }
        assert!(sled.store().unwrap().files.is_empty());
    }

    /// A folder's base children, with names that sort around '/' and deep subtrees between
    /// them, in both stores, and in another root's keys.
    #[test]
    fn base_children_skip_subtrees() {
        let t = tempfile::tempdir().unwrap();
        let sled = SledIndex::open(&t.path().join("ix")).unwrap();
        let mem = MemoryIndex::default();
        let paths = [
            "a", "a-b", "a.txt", "a/x", "a/x/y", "a/z", "a0", "b", "b/c", "b/c/d/e", "b/c0", "z",
        ];
        let be = |p: &str| BaseEntry {
            kind: crate::model::Kind::File,
            version: p.into(),
            size: 1,
            file_id: None,
        };
        for ix in [&sled as &dyn Index, &mem] {
            for p in paths {
                ix.base_put("r", p, &be(p)).unwrap();
                ix.base_put("r2", p, &be(p)).unwrap();
            }
            let names = |d: &str| -> Vec<String> {
                ix.base_children("r", d)
                    .unwrap()
                    .into_iter()
                    .map(|(p, b)| {
                        assert_eq!(b.version, p);
                        p
                    })
                    .collect()
            };
            assert_eq!(names(""), ["a", "a-b", "a.txt", "a0", "b", "z"]);
            assert_eq!(names("a"), ["a/x", "a/z"]);
            assert_eq!(names("a/x"), ["a/x/y"]);
            assert_eq!(names("b"), ["b/c", "b/c0"]);
            assert_eq!(names("b/c"), Vec::<String>::new());
            assert_eq!(names("q"), Vec::<String>::new());
            let mut all = Vec::new();
            ix.base_paths("r", &mut |p| all.push(p.to_string()))
                .unwrap();
            assert_eq!(all, paths);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of puts, removes and touches leaves the sled store's kept totals and
        /// eviction order equal to the reference model's scans.
        #[test]
        fn kept_totals_match_a_scan(ops in proptest::collection::vec(
            (0usize..12, 0u8..6, 0u64..1000, 0i64..50), 1..60)) {
            let paths = ["a", "b", "d/a", "d/b", "d/e/a", "d/e/b", "x/y/z/w", "d/ea", "e", "d/e", "dd/a", "d/e/f/g"];
            let mem = MemoryIndex::default();
            let t = tempfile::tempdir().unwrap();
            let sled = SledIndex::open(&t.path().join("ix")).unwrap();
            for (i, op, size, stamp) in ops {
                let p = paths[i];
                let root = if stamp % 7 == 0 { "r2" } else { "r1" };
                for ix in [&mem as &dyn Index, &sled] {
                    match op {
                        0 => ix.remove(root, p).unwrap(),
                        4 => ix.touch(root, p, stamp).unwrap(),
                        5 => ix.put_new(root, &[(p.to_string(), rec(Availability::Local, size)), ("n".into(), rec(Availability::OnlineOnly, 1))]).unwrap(),
                        a => {
                            let a = [Availability::OnlineOnly, Availability::Partial, Availability::Local][a as usize - 1];
                            let mut r = rec(a, size);
                            if a == Availability::Partial { r.local_bytes = size / 2; }
                            ix.put(root, p, &r).unwrap();
                        }
                    }
                }
            }
            for root in ["r1", "r2"] {
                for d in ["", "d", "d/e", "x", "x/y", "x/y/z", "dd", "nope"] {
                    proptest::prop_assert_eq!(mem.totals(root, d).unwrap(), sled.totals(root, d).unwrap(), "{} {:?}", root, d);
                }
                let key = |v: Vec<Evictable>| { let mut v: Vec<String> = v.into_iter().map(|x| x.1).collect(); v.sort(); v };
                proptest::prop_assert_eq!(key(mem.oldest_local(root, None, 100).unwrap()), key(sled.oldest_local(root, None, 100).unwrap()));
            }
        }
    }
}

//! The `LocalFs` trait: everything the executor does to a sync root's files, so that the same
//! executor runs against the real root (the daemon's implementation works through a private,
//! ignore-marked mount and never opens a placeholder through the user's tree) and against
//! the in-memory tree of the property tests.

use super::{LocalEntry, LocalMap, Stamp};
use crate::model::{Kind, RelPath, RemoteEntry};
use std::fs::File;
use std::io;

pub trait LocalFs: Send + Sync {
    /// Every entry below the root, with the records of managed files.
    fn scan(&self) -> io::Result<LocalMap>;
    /// The entries directly in folder `dir` (not below its subfolders).
    fn scan_dir(&self, dir: &RelPath) -> io::Result<LocalMap>;
    /// [`LocalFs::scan_dir`], each entry given to `f` as it is read (in no particular
    /// order) instead of held.
    fn scan_dir_each(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(RelPath, LocalEntry),
    ) -> io::Result<()> {
        for (p, e) in self.scan_dir(dir)? {
            f(p, e);
        }
        Ok(())
    }
    /// Opens a file whose bytes are all local, for upload, with its stamp at open time.
    /// A placeholder or partial file is refused: its holes are not content.
    fn open_upload(&self, p: &RelPath) -> io::Result<(File, Stamp)>;
    /// Records that the file at `p`, as it was at `stamp`, holds remote version `e`.
    fn mark_synced(&self, p: &RelPath, e: &RemoteEntry, stamp: Stamp) -> io::Result<()>;
    /// Before a new file's first upload: gives it a record for `p` with an empty version (an
    /// upload in flight), unless it already has one, so that after a crash the file is
    /// recognised, even renamed, and compared instead of uploaded twice.
    fn mark_pending(&self, p: &RelPath, stamp: Stamp) -> io::Result<()>;
    /// Points the record of the file at `p` to the remote path `origin` (`p` itself after a
    /// rename was replayed), and with `version` = `(was, now)` to the version `now` if it
    /// names `was` (the server gave the same bytes a new version by moving them: S3's copy).
    /// One record write, so a reader never sees the new path with the old version.
    fn set_origin(
        &self,
        p: &RelPath,
        origin: &RelPath,
        version: Option<(&str, &str)>,
    ) -> io::Result<()>;
    /// A placeholder for a new remote file (fails with `EEXIST` if the name is taken).
    fn create_placeholder(&self, e: &RemoteEntry) -> io::Result<()>;
    /// Replaces the clean file at `e.path` (still at version `expect`) by a placeholder of
    /// `e`, keeping its setting; fails with `ESTALE` if it changed meanwhile.
    fn refresh(&self, e: &RemoteEntry, expect: &str) -> io::Result<()>;
    fn mkdir(&self, p: &RelPath) -> io::Result<()>;
    /// Removes a file still at version `expect` and unmodified, or an empty folder.
    fn remove(&self, p: &RelPath, kind: Kind, expect: Option<&str>) -> io::Result<()>;
    /// Renames without replacing, keeping bytes, settings and the record as it is (the
    /// executor points it to the new path once the base has moved).
    fn rename(&self, from: &RelPath, to: &RelPath) -> io::Result<()>;
    /// Moves a file or folder aside (conflict copies). Unless `keep_record`, a file whose
    /// bytes are all local loses its record first and becomes a new, unsynced file; the files
    /// of a folder, and placeholders, keep theirs (they travel as renames).
    fn set_aside(&self, from: &RelPath, to: &RelPath, keep_record: bool) -> io::Result<()>;
    fn exists(&self, p: &RelPath) -> bool;
    /// Now, on the clock the root's mtimes are written with (settling compares the two).
    fn now_secs(&self) -> i64 {
        crate::model::unix_secs(std::time::SystemTime::now())
    }
}

pub(crate) fn stale(p: &RelPath) -> io::Error {
    io::Error::other(format!("{p}: changed locally meanwhile (ESTALE)"))
}

//! File operations for users: the state of a path and of a folder's entries (`status`,
//! `list`), and the batches that change where bytes are (`pin`, `free`, `hydrate`, and the
//! downloads of pinned files after a pass). Every path is resolved beneath its root with
//! `openat2` (no `..`, no symlinks); files owned by anyone but the root's owner are left
//! alone; placeholders are opened only through the root's private ignore-marked mount, so a
//! request never raises a pre-content event to itself.

use super::core::Core;
use super::error::{Error, Result};
use crate::fsutil::{self, Walked};
use crate::hsm::evict::{self, EvictError};
use crate::hsm::hydrate::Notice;
use crate::hsm::meta::{self, Availability, FileMeta, Fill, Pin};
use crate::hsm::pins;
use crate::ipc::proto::*;
use crate::ipc::server::{JobSink, Peer};
use crate::model::RelPath;
use crate::roots::RootRecord;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long freeing a file waits for its own background downloads to stop (each stops
/// before its next write, within a read of the network).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Synced or pending for a file (and its record, if it is managed).
pub fn sync_state(m: Option<&FileMeta>, st: &libc::stat) -> SyncState {
    match m {
        None => SyncState::Pending,
        Some(m)
            if m.fill == Fill::Complete
                && (st.st_size as u64 != m.size
                    || (st.st_mtime, st.st_mtime_nsec as u32) != m.mtime) =>
        {
            SyncState::Pending
        }
        Some(_) => SyncState::Synced,
    }
}

fn percent(local: u64, size: u64) -> f64 {
    if size == 0 {
        100.0
    } else {
        ((local as f64 * 1000.0 / size as f64).floor() / 10.0).min(100.0)
    }
}

/// What is at and below a path: directories and regular files (with their owner).
#[derive(Default)]
pub struct Found {
    pub is_dir: bool,
    pub dirs: Vec<RelPath>,
    pub files: Vec<(RelPath, u32)>,
}

/// Lists `rel` and, for a directory, everything below it, never following a symlink.
pub fn scan(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<Found> {
    fsutil::blocking(|| scan_tree(root, rel))
}

fn scan_tree(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<Found> {
    let mut f = Found::default();
    let is_dir = fsutil::walk(root, rel, &mut |w| match w {
        Walked::Dir(d) => f.dirs.push(d.clone()),
        Walked::File { path, st, .. } => f.files.push((path, st.st_uid)),
    })?;
    f.is_dir = is_dir;
    Ok(f)
}

/// The files at and below `rel` that are root `r`'s (owned by its user) and pinned but not
/// complete: what a pass downloads. Keeps only those files, so a root of a million files
/// costs what this returns, not a path for every file in it (as [`scan`] would).
fn pinned_unfilled(
    root: BorrowedFd<'_>,
    rel: &RelPath,
    r: &RootRecord,
) -> io::Result<Vec<RelPath>> {
    let mut out = Vec::new();
    fsutil::walk(root, rel, &mut |w| {
        if let Walked::File {
            dir,
            name,
            path,
            st,
        } = w
        {
            if st.st_uid == r.uid
                && matches!(
                    evict::meta_at(dir, name, path.as_str()),
                    Ok(Some(m)) if m.root == r.id && m.pin == Pin::Pinned && m.fill != Fill::Complete
                )
            {
                out.push(path);
            }
        }
    })?;
    Ok(out)
}

/// What a batch does to each file after writing its setting.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Download,
    Evict,
    Nothing,
}

/// File operations: a view of the daemon's state with this one job.
pub struct Files<'a>(pub &'a Core);

impl std::ops::Deref for Files<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0
    }
}

impl Files<'_> {
    pub fn list(&self, peer: Peer, path: &str) -> Result<Vec<PathStatus>> {
        Ok(self
            .page(peer, path, 0, usize::MAX, &PageOrder::default())?
            .entries)
    }

    /// Entries `offset..offset + limit` of a folder in `order` (by default `list`'s: folders
    /// first, then by name). The folder's names and types come from one directory read (and,
    /// to sort by size or time, one `fstatat` per entry); only the entries of the page are
    /// looked at further, so a page of a 100,000-entry folder costs its rows.
    pub fn list_page(
        &self,
        peer: Peer,
        path: &str,
        offset: u64,
        limit: u32,
        order: &PageOrder,
    ) -> Result<Page> {
        let limit = limit.min(crate::ipc::proto::MAX_PAGE) as usize;
        self.page(
            peer,
            path,
            usize::try_from(offset).unwrap_or(usize::MAX),
            limit,
            order,
        )
    }

    fn page(
        &self,
        peer: Peer,
        path: &str,
        offset: usize,
        limit: usize,
        order: &PageOrder,
    ) -> Result<Page> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let dfd = fsutil::open_beneath(
            root.as_fd(),
            &rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| Error::said(ErrorCode::NotFound, crate::i18n::said_os_at(path, &e)))?;
        let base = path.trim_end_matches('/');
        let needle = order
            .filter
            .as_deref()
            .map(str::to_lowercase)
            .filter(|f| !f.is_empty());
        let mut rows: Vec<Row> = fsutil::read_dir_kinds(dfd.as_fd())
            .map_err(Error::internal)?
            .into_iter()
            .filter_map(|(raw, dir)| {
                let name = crate::model::validate_name(&raw).ok()?;
                if name.starts_with(".~skyfill-") {
                    return None;
                }
                if let Some(n) = &needle {
                    if !name.to_lowercase().contains(n.as_str()) {
                        return None;
                    }
                }
                Some(Row {
                    file: !dir?,
                    key: 0,
                    name: name.to_string(),
                })
            })
            .collect();
        sort_rows(&mut rows, order, |row| {
            let st = fsutil::stat_at(dfd.as_fd(), &row.name).ok()?;
            Some(match order.sort {
                SortKey::Size if row.file => st.st_size,
                SortKey::Size | SortKey::Name => 0,
                SortKey::Modified => st.st_mtime,
            })
        });
        let entries = rows
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|row| self.status(peer, &format!("{base}/{}", row.name)).ok())
            .collect();
        Ok(Page {
            entries,
            total: rows.len() as u64,
        })
    }

    pub fn status(&self, peer: Peer, path: &str) -> Result<PathStatus> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let fd = fsutil::open_beneath(root.as_fd(), &rel, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| Error::said(ErrorCode::NotFound, crate::i18n::said_os_at(path, &e)))?;
        let st = fsutil::fstat(fd.as_fd()).map_err(Error::internal)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let dfd = fsutil::open_beneath(
                    root.as_fd(),
                    &rel,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| Error::said(ErrorCode::NotFound, crate::i18n::said_os_at(path, &e)))?;
                let setting = pins::dir_setting(dfd.as_fd()).map_err(Error::internal)?;
                // Kept by the index as records change: O(log n), whatever the folder holds.
                let t = self
                    .index
                    .totals(&r.id, rel.as_str())
                    .map_err(Error::internal)?;
                let c = Counts {
                    online_only: t.online_only,
                    partial: t.partial,
                    local: t.local,
                    pinned: t.pinned,
                };
                let (size, local) = (t.size, t.local_bytes);
                let total = c.online_only + c.partial + c.local + c.pinned;
                let state = if total > 0 && c.pinned == total {
                    Availability::Pinned
                } else if c.online_only + c.partial == 0 {
                    Availability::Local
                } else if c.local + c.pinned + c.partial == 0 {
                    Availability::OnlineOnly
                } else {
                    Availability::Partial
                };
                Ok(PathStatus {
                    path: path.into(),
                    kind: Kind::Dir,
                    state,
                    sync: SyncState::Synced,
                    size,
                    local_bytes: local,
                    percent: (state == Availability::Partial).then(|| percent(local, size)),
                    setting,
                    counts: Some(c),
                    mtime: Some(st.st_mtime),
                })
            }
            libc::S_IFREG => {
                let m = meta::read_proc_fd(fd.as_fd()).map_err(Error::internal)?;
                let m = m.filter(|m| m.root == r.id);
                let sync = sync_state(m.as_ref(), &st);
                Ok(match m {
                    None => PathStatus {
                        path: path.into(),
                        kind: Kind::File,
                        state: Availability::Local,
                        sync,
                        size: st.st_size as u64,
                        local_bytes: st.st_size as u64,
                        percent: None,
                        setting: Pin::Inherit,
                        counts: None,
                        mtime: Some(st.st_mtime),
                    },
                    Some(m) => PathStatus {
                        path: path.into(),
                        kind: Kind::File,
                        state: m.availability(),
                        sync,
                        size: m.size,
                        local_bytes: m.local_bytes(),
                        percent: (m.fill == Fill::Partial)
                            .then(|| percent(m.local_bytes(), m.size)),
                        setting: m.pin,
                        counts: None,
                        mtime: Some(st.st_mtime),
                    },
                })
            }
            _ => Err(Error::said(
                ErrorCode::BadRequest,
                crate::said!("{path}: not a file or folder", path = path),
            )),
        }
    }

    // ------------------------------------------------------------ pin, free, hydrate

    #[allow(clippy::too_many_arguments)]
    pub async fn batch(
        &self,
        peer: Peer,
        path: &str,
        recursive: bool,
        setting: Option<Pin>,
        action: Action,
        job: JobKind,
        jobs: &JobSink,
    ) -> Result<BatchResult> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let q = self.quiet(&root)?;
        let found = scan(q.as_fd(), &rel).map_err(|e| {
            let code = if e.raw_os_error() == Some(libc::ENOENT) {
                ErrorCode::NotFound
            } else {
                ErrorCode::BadRequest
            };
            Error::said(
                code,
                match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::EXDEV) => crate::said!(
                        "{path}: the path goes through a symlink, which Skyfill never follows",
                        path = path
                    ),
                    _ => crate::i18n::said_os_at(path, &e),
                },
            )
        })?;
        if found.is_dir && !recursive {
            return Err(Error::said(
                ErrorCode::BadRequest,
                crate::said!(
                    "{path} is a folder: use -r (recursive) to act on everything below it",
                    path = path
                ),
            ));
        }
        // Folder settings first, so new files arriving meanwhile inherit the new one.
        let dir_setting = match (setting, action) {
            (Some(p), _) => Some(p),
            // Freeing a pinned folder unpins it (a folder cannot be both).
            (None, Action::Evict) => Some(Pin::Inherit),
            _ => None,
        };
        if let Some(p) = dir_setting {
            for d in &found.dirs {
                let fd = fsutil::open_beneath(q.as_fd(), d, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| {
                        Error::said(ErrorCode::BadRequest, crate::i18n::said_os_at(path, &e))
                    })?;
                let cur = pins::dir_setting(fd.as_fd()).map_err(Error::internal)?;
                if setting.is_some() || cur == Pin::Pinned {
                    pins::set_dir_setting(fd.as_fd(), p).map_err(Error::internal)?;
                }
            }
        }
        let mut skipped = Vec::new();
        let files: Vec<RelPath> = found
            .files
            .into_iter()
            .filter_map(|(f, uid)| {
                if uid != r.uid {
                    skipped.push(Skipped::said(
                        Core::abs(&r, f.as_str()),
                        crate::said!("owned by another user; Skyfill leaves it alone"),
                    ));
                    None
                } else {
                    Some(f)
                }
            })
            .collect();
        let mut res = self
            .apply(&r, &q, &files, setting, action, job, path, jobs, false)
            .await;
        skipped.append(&mut res.skipped);
        res.skipped = skipped;
        Ok(res)
    }

    /// Writes `setting` on each file and then downloads, evicts or leaves it.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        r: &RootRecord,
        q: &OwnedFd,
        files: &[RelPath],
        setting: Option<Pin>,
        action: Action,
        job: JobKind,
        label: &str,
        jobs: &JobSink,
        force: bool,
    ) -> BatchResult {
        let mut res = BatchResult::default();
        let paused = !force && self.root_by_id(&r.id).map(|x| x.paused).unwrap_or(true);
        // Totals for progress.
        let metas: Vec<Option<FileMeta>> = files
            .iter()
            .map(|f| {
                fsutil::open_beneath(q.as_fd(), f, libc::O_PATH | libc::O_NOFOLLOW, 0)
                    .ok()
                    .and_then(|fd| meta::read_proc_fd(fd.as_fd()).ok().flatten())
            })
            .collect();
        let bytes_total: u64 = metas
            .iter()
            .flatten()
            .map(|m| match action {
                Action::Download => m.size - m.local_bytes().min(m.size),
                Action::Evict => m.local_bytes(),
                Action::Nothing => 0,
            })
            .sum();
        let n = files.len() as u64;
        let mut last = Instant::now() - Duration::from_secs(1);
        for (i, (f, m)) in files.iter().zip(metas).enumerate() {
            if last.elapsed() > Duration::from_millis(200) {
                jobs.report(job, label, i as u64, n, res.bytes, bytes_total, false);
                last = Instant::now();
            }
            let abs = Core::abs(r, f.as_str());
            let Some(m) = m else {
                if action == Action::Evict {
                    res.skipped.push(Skipped::said(
                        abs,
                        crate::said!("a local file that is not on the server yet"),
                    ));
                }
                continue;
            };
            if m.root != r.id {
                res.skipped.push(Skipped::said(
                    abs,
                    crate::said!("belongs to another sync root"),
                ));
                continue;
            }
            let span = tracing::info_span!("file", path = %abs, job = ?job);
            let one = self
                .apply_one(q, f, &m, setting, action, paused, &mut res)
                .instrument(span)
                .await;
            if let Err(e) = one {
                res.skipped.push(Skipped {
                    path: abs,
                    reason: e.message,
                    said: e.said,
                });
            }
        }
        jobs.report(job, label, n, n, res.bytes, bytes_total, true);
        res
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        q: &OwnedFd,
        f: &RelPath,
        m: &FileMeta,
        setting: Option<Pin>,
        action: Action,
        paused: bool,
        res: &mut BatchResult,
    ) -> Result<()> {
        let need_write = setting.is_some_and(|p| p != m.pin)
            || (action == Action::Evict && m.pin == Pin::Pinned);
        let want_data = action == Action::Download && m.fill != Fill::Complete;
        if !need_write && !want_data && action != Action::Evict {
            return Ok(());
        }
        let file = Arc::new(File::from(
            fsutil::open_beneath(q.as_fd(), f, libc::O_RDWR | libc::O_NOFOLLOW, 0)
                .map_err(Error::from)?,
        ));
        if need_write {
            let new = setting.unwrap_or(Pin::Inherit);
            self.hydrator
                .update_meta(&file, |m| m.pin = new)
                .await
                .map_err(Error::from)?;
            res.settings += 1;
        }
        match action {
            Action::Download if want_data => {
                if paused {
                    res.deferred = true;
                    return Ok(());
                }
                let st = fsutil::fstat(file.as_fd()).map_err(Error::from)?;
                let size = m.size.min(st.st_size as u64);
                self.hydrator
                    .fetch(&file, (st.st_dev, st.st_ino), 0, size)
                    .await
                    .map_err(|errno| Error::errno(errno, crate::said!("download failed: ")))?;
                res.files += 1;
                res.bytes += size - m.local_bytes().min(size);
            }
            Action::Evict => {
                let st = fsutil::fstat(file.as_fd()).map_err(Error::from)?;
                drop(file);
                let mut freed = evict::evict(q.as_fd(), f, &self.group, true);
                // Held open by our own read-ahead, its reader gone: stop it, then free.
                if matches!(freed, Err(EvictError::Busy))
                    && self
                        .hydrator
                        .stop_unwatched((st.st_dev, st.st_ino), STOP_WAIT)
                        .await
                {
                    freed = evict::evict(q.as_fd(), f, &self.group, true);
                }
                match freed {
                    Ok(b) => {
                        res.files += 1;
                        res.bytes += b;
                        if let Ok((pfd, name)) = fsutil::open_parent(q.as_fd(), f) {
                            if let Ok(Some(m)) = evict::meta_at(pfd.as_fd(), name, f.as_str()) {
                                self.note(Notice::changed(&m));
                            }
                        }
                    }
                    Err(EvictError::AlreadyOnline) => {}
                    Err(e) => return Err(Error::internal(e)),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Downloads every file below `below` whose setting is pinned but that is not complete
    /// (after a restart, a resume, a sign-in, or new files in a pinned folder).
    pub async fn reconcile(&self, r: &RootRecord, below: &RelPath) -> Result<BatchResult> {
        let root = self.open_root(r)?;
        let q = self.quiet(&root)?;
        let todo = match fsutil::blocking(|| pinned_unfilled(q.as_fd(), below, r)) {
            Ok(f) => f,
            // Gone, or neither a folder nor a file (a symlink): nothing pinned to fill.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
                return Ok(BatchResult::default())
            }
            Err(e) => return Err(Error::internal(e)),
        };
        if todo.is_empty() {
            return Ok(BatchResult::default());
        }
        let label = Core::abs(r, below.as_str());
        Ok(self
            .apply(
                r,
                &q,
                &todo,
                None,
                Action::Download,
                JobKind::Pin,
                &label,
                &JobSink::none(),
                false,
            )
            .await)
    }
}

/// One entry of a folder being listed: a file (after the folders), its sort key, its name.
struct Row {
    file: bool,
    key: i64,
    name: String,
}

/// Sorts a folder's rows for `list_page`: folders first, then by `order`'s key (`key_of`,
/// asked only when the sort is not by name; an entry it cannot read sorts as 0), ties and the
/// name sort by name; `descending` reverses within each group.
fn sort_rows(rows: &mut [Row], order: &PageOrder, key_of: impl Fn(&Row) -> Option<i64>) {
    if order.sort != SortKey::Name {
        for row in rows.iter_mut() {
            row.key = key_of(row).unwrap_or(0);
        }
    }
    let by_name = order.sort == SortKey::Name;
    rows.sort_unstable_by(|a, b| {
        let (key, name) = (a.key.cmp(&b.key), a.name.cmp(&b.name));
        let key = if order.descending { key.reverse() } else { key };
        let name = if order.descending && by_name {
            name.reverse()
        } else {
            name
        };
        a.file.cmp(&b.file).then(key).then(name)
    });
}

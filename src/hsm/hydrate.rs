//! The hydrator: turns an access into the bytes it needs. One async lock per file gives one
//! download per chunk however many processes touch the file; different files proceed in
//! parallel. Fills are written through the event's fd (never by reopening the watched path),
//! recorded in the file's xattr after the data, and a complete file loses its mark so it is
//! read at native speed from then on.

use super::fanotify::{Access, Group, Reply};
use super::meta::{self, FileMeta, Fill};
use super::policy::{self, Decision, Policy, Proc};
use super::procinfo::proc_info_for;
pub use super::stats::{RootStats, Stats};
use crate::fsutil;
use crate::model::{RelPath, Version};
use crate::remote::{transfer, ReadRange, Remote, RemoteError};
use futures_util::stream::StreamExt;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// (st_dev, st_ino) of a file.
type FileKey = (u64, u64);

#[derive(Default)]
struct Slot {
    /// End of the last range asked for (sequential-read detection).
    last_end: u64,
    /// Read-ahead of the last fetch for a sequential reader (0: none yet).
    ahead: u64,
}

/// What happened to a managed file, as a typed event: the hydrator, eviction and the sync
/// executor send these on one channel, and one task of the daemon applies them (index,
/// subscribers, disk budget). Sending never waits, so nothing on the per-file hot path calls
/// back into the daemon.
#[derive(Debug)]
pub enum Notice {
    /// A file's record changed (more bytes local, complete, freed, pinned).
    Changed(Box<FileMeta>),
    /// Bytes of a file arrived: `done` of `total` are local; `app` started it, if a process did.
    Progress {
        root: String,
        path: String,
        done: u64,
        total: u64,
        app: Option<(i32, String)>,
    },
    /// A fetch failed with this errno.
    Failed {
        root: String,
        path: String,
        errno: i32,
    },
    /// `bytes` are about to be downloaded into a root with a disk budget: the consumer makes
    /// room and then answers on `room` (the download waits for that answer, boundedly).
    Fetching {
        root: String,
        bytes: u64,
        room: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Answered once every notice sent before it has been applied (a request that reads the
    /// index waits for what the kernel's events changed just before).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending end of the notice channel.
pub type Notices = tokio::sync::mpsc::UnboundedSender<Notice>;

impl Notice {
    pub fn changed(m: &FileMeta) -> Notice {
        Notice::Changed(Box::new(m.clone()))
    }

    pub fn failed(m: &FileMeta, errno: i32) -> Notice {
        Notice::Failed {
            root: m.root.clone(),
            path: m.path.clone(),
            errno,
        }
    }
}

tokio::task_local! {
    /// The process whose access is being served (pid, executable name), when it may be
    /// named to the file's owner: only when that process is the owner's own.
    static APP: Option<(i32, String)>;
}

/// A token bucket for a bandwidth limit (bytes per second).
pub struct Bucket {
    rate: u64,
    next_free: Mutex<tokio::time::Instant>,
}

impl Bucket {
    pub fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate.max(1),
            next_free: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits until `n` more bytes fit under the rate.
    pub async fn take(&self, n: u64) {
        let at = {
            let mut nf = self.next_free.lock().unwrap();
            let now = tokio::time::Instant::now();
            let start = (*nf).max(now);
            *nf = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            start
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Per-root settings that come from the root owner's preferences.
#[derive(Default, Clone)]
pub struct RootPolicy {
    /// Extra programs that never trigger downloads in this root.
    pub never_download: Vec<String>,
    pub download_limit: Option<Arc<Bucket>>,
    /// The root has a disk budget: room is made before each download.
    pub budget: bool,
}

/// How long a download waits for room to be made within a disk budget.
const ROOM_WAIT: Duration = Duration::from_secs(10);

pub struct Hydrator {
    pub policy: Policy,
    notices: Notices,
    group: Arc<Group>,
    root_policy: RwLock<HashMap<String, RootPolicy>>,
    remotes: RwLock<HashMap<String, Arc<dyn Remote>>>,
    files: Mutex<HashMap<FileKey, Arc<tokio::sync::Mutex<Slot>>>>,
    pub stats: Stats,
    /// The free-space floor: (bytes, percent of the filesystem); the larger one counts.
    free_floor: std::sync::RwLock<(u64, u8)>,
}

/// Whether writing `bytes` more would leave less free space (what unprivileged users may
/// still use, so root's reserve is never touched) than the floor on the file's filesystem.
fn below_floor(file: &File, bytes: u64, floor: (u64, u8)) -> bool {
    let mut sv = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: the kernel fills `sv` on success.
    if unsafe { libc::fstatvfs(std::os::fd::AsRawFd::as_raw_fd(file), sv.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful call.
    let sv = unsafe { sv.assume_init() };
    let frsize = sv.f_frsize;
    let free = sv.f_bavail * frsize;
    let total = sv.f_blocks * frsize;
    let need = floor.0.max(total / 100 * floor.1 as u64);
    free < need.saturating_add(bytes)
}

/// The errno an application sees for a failed fetch (only values a deny reply accepts).
pub fn errno_for(e: &RemoteError) -> i32 {
    match e {
        RemoteError::Auth { .. } => libc::EPERM,
        RemoteError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::ENOSPC) => libc::ENOSPC,
            Some(libc::EDQUOT) => libc::EDQUOT,
            _ => libc::EIO,
        },
        RemoteError::Exhausted { last, .. } => errno_for(last),
        _ => libc::EIO,
    }
}

fn mtime_of(m: &FileMeta) -> SystemTime {
    crate::model::from_unix_secs(m.mtime.0) + Duration::from_nanos(m.mtime.1 as u64)
}

impl Hydrator {
    /// A hydrator that reports what happens to files on `notices`.
    pub fn new(policy: Policy, group: Arc<Group>, notices: Notices) -> Self {
        Hydrator {
            policy,
            notices,
            group,
            root_policy: RwLock::new(HashMap::new()),
            remotes: RwLock::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            free_floor: std::sync::RwLock::new((32 << 20, 1)),
        }
    }

    /// Hydration answers ENOSPC when a download would leave less than `bytes` (or `percent`
    /// of the filesystem, whichever is larger) free.
    pub fn set_free_floor(&self, bytes: u64, percent: u8) {
        *self.free_floor.write().unwrap() = (bytes, percent);
    }

    /// Sends a notice (a closed channel means the daemon is stopping: nothing to tell).
    pub fn note(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    pub fn set_root_policy(&self, root: &str, p: RootPolicy) {
        self.root_policy
            .write()
            .unwrap()
            .insert(root.to_string(), p);
    }

    /// Whether the root owner's policy forbids `exe` to download (no clone on this hot path).
    fn denies(&self, root: &str, exe: &str) -> bool {
        self.root_policy
            .read()
            .unwrap()
            .get(root)
            .is_some_and(|p| p.never_download.iter().any(|x| x == exe))
    }

    fn budgeted(&self, root: &str) -> bool {
        self.root_policy
            .read()
            .unwrap()
            .get(root)
            .is_some_and(|p| p.budget)
    }

    fn download_limit(&self, root: &str) -> Option<Arc<Bucket>> {
        self.root_policy
            .read()
            .unwrap()
            .get(root)
            .and_then(|p| p.download_limit.clone())
    }

    /// Changes a file's record under its lock (so no concurrent fetch overwrites the change).
    pub async fn update_meta(
        &self,
        file: &File,
        f: impl FnOnce(&mut FileMeta),
    ) -> std::io::Result<Option<FileMeta>> {
        let st = fsutil::fstat(file.as_fd())?;
        let slot = self.slot((st.st_dev, st.st_ino));
        let _g = slot.lock().await;
        let Some(mut m) = meta::read_fd(file.as_fd())? else {
            return Ok(None);
        };
        f(&mut m);
        meta::write_fd(file.as_fd(), &m)?;
        self.note(Notice::changed(&m));
        Ok(Some(m))
    }

    pub fn set_remote(&self, root: &str, r: Arc<dyn Remote>) {
        self.remotes.write().unwrap().insert(root.to_string(), r);
    }

    pub fn remove_remote(&self, root: &str) {
        self.remotes.write().unwrap().remove(root);
    }

    pub fn remote(&self, root: &str) -> Option<Arc<dyn Remote>> {
        self.remotes.read().unwrap().get(root).cloned()
    }

    /// Decides and performs what one kernel event needs; returns the reply to send.
    pub async fn handle(&self, access: Access, file: &Arc<File>, pid: i32) -> Reply {
        self.stats.total.events.fetch_add(1, Ordering::Relaxed);
        let meta = match meta::read_fd(file.as_fd()) {
            Ok(Some(m)) => {
                self.stats
                    .of(&m.root)
                    .events
                    .fetch_add(1, Ordering::Relaxed);
                m
            }
            Ok(None) => {
                // Marked but not (or no longer) ours: nothing to fill.
                let _ = self.group.unmark_inode(file.as_fd());
                return Reply::Allow;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read file metadata");
                return Reply::Deny(libc::EIO);
            }
        };
        if meta.fill == Fill::Complete {
            let _ = self.group.unmark_inode(file.as_fd());
            return Reply::Allow;
        }
        let st = match fsutil::fstat(file.as_fd()) {
            Ok(s) => s,
            Err(_) => return Reply::Deny(libc::EIO),
        };
        if let (Access::Pre { offset, count }, Fill::Partial) = (access, meta.fill) {
            let end = if count == 0 {
                meta.size
            } else {
                offset.saturating_add(count)
            };
            let end = end.min(meta.size).min(st.st_size as u64);
            if meta.ranges.covers(offset.min(end), end)
                && !proc_info_for(pid, st.st_ino, true).await.writer
            {
                return Reply::Allow; // already local: no lock, no network
            }
        }
        let proc = proc_info_for(pid, st.st_ino, matches!(access, Access::Pre { .. })).await;
        let span = tracing::info_span!("access", path = %meta.path, ?access, pid, exe = %proc.exe);
        if !proc.is_daemon && self.denies(&meta.root, &proc.exe) {
            self.stats.add(&meta.root, |c| &c.denied, 1);
            let _e = span.enter();
            tracing::info!("download refused for this program by the owner's policy");
            return Reply::Deny(libc::EIO);
        }
        let app = (proc.uid == Some(st.st_uid)).then(|| (pid, proc.exe.clone()));
        APP.scope(
            app,
            self.decide_and_fetch(access, file, &meta, &st, &proc)
                .instrument(span),
        )
        .await
    }

    async fn decide_and_fetch(
        &self,
        access: Access,
        file: &Arc<File>,
        meta: &FileMeta,
        st: &libc::stat,
        proc: &Proc,
    ) -> Reply {
        match policy::decide(&self.policy, access, meta, st.st_size as u64, proc) {
            Decision::Allow => Reply::Allow,
            Decision::Deny(e) => {
                self.stats.add(&meta.root, |c| &c.denied, 1);
                tracing::info!(errno = e, "download refused for this program by policy");
                Reply::Deny(e)
            }
            Decision::Fetch(s, e) => match self.fetch_within(file, st, s, e).await {
                Ok(()) => Reply::Allow,
                Err(errno) => {
                    self.stats.add(&meta.root, |c| &c.denied, 1);
                    Reply::Deny(errno)
                }
            },
        }
    }

    /// [`Hydrator::fetch`] bounded by the policy's timeout (EIO when it passes).
    async fn fetch_within(
        &self,
        file: &Arc<File>,
        st: &libc::stat,
        start: u64,
        end: u64,
    ) -> Result<(), i32> {
        let bound = Duration::from_secs(self.policy.timeout_secs);
        let key = (st.st_dev, st.st_ino);
        match tokio::time::timeout(bound, self.fetch(file, key, start, end)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(?bound, "hydration timed out");
                Err(libc::EIO)
            }
        }
    }

    /// Finishes an access whose reader is not known any more (an event a killed worker had
    /// taken, reopened by handle): the bytes that access needs, within the timeout. No
    /// program policy applies: the event was already let through to a fetch once.
    pub async fn finish(&self, access: Access, file: &Arc<File>) -> Reply {
        let st = match fsutil::fstat(file.as_fd()) {
            Ok(s) => s,
            Err(_) => return Reply::Deny(libc::EIO),
        };
        let m = match meta::read_fd(file.as_fd()) {
            Ok(Some(m)) => m,
            Ok(None) => return Reply::Allow, // not ours (any more): nothing to fill
            Err(_) => return Reply::Deny(libc::EIO),
        };
        let (s, e) = policy::range_of(access, m.size.min(st.st_size as u64));
        match self.fetch_within(file, &st, s, e).await {
            Ok(()) => Reply::Allow,
            Err(errno) => Reply::Deny(errno),
        }
    }

    fn slot(&self, key: (u64, u64)) -> Arc<tokio::sync::Mutex<Slot>> {
        self.files.lock().unwrap().entry(key).or_default().clone()
    }

    /// Makes `[start, end)` of the file local (aligned, with read-ahead), then completes the
    /// file if nothing is missing.
    pub async fn fetch(
        &self,
        file: &Arc<File>,
        key: (u64, u64),
        start: u64,
        end: u64,
    ) -> Result<(), i32> {
        let slot = self.slot(key);
        let mut g = slot.lock().await;
        let mut meta = match meta::read_fd(file.as_fd()) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(_) => return Err(libc::EIO),
        };
        if meta.fill == Fill::Complete {
            return Ok(());
        }
        let local_size = fsutil::fstat(file.as_fd()).map_err(|_| libc::EIO)?.st_size as u64;
        let size = meta.size.min(local_size);
        let sequential = start > 0 && start == g.last_end;
        let ahead = sequential.then(|| policy::next_ahead(&self.policy, g.ahead));
        let (s, e) = policy::plan(&self.policy, start, end, size, ahead);
        g.last_end = end;
        let missing = if meta.fill == Fill::Placeholder {
            vec![(s, e)]
        } else {
            meta.ranges.missing(s, e)
        };
        if missing.is_empty() {
            return Ok(()); // another reader fetched it while we waited
        }
        g.ahead = ahead.unwrap_or(0);
        let want: u64 = missing.iter().map(|(a, b)| b - a).sum();
        if self.budgeted(&meta.root) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.note(Notice::Fetching {
                root: meta.root.clone(),
                bytes: want,
                room: Some(tx),
            });
            if tokio::time::timeout(ROOM_WAIT, rx).await.is_err() {
                tracing::warn!(root = %meta.root, "no room made within the budget in time; downloading anyway");
            }
        }
        if below_floor(file, want, *self.free_floor.read().unwrap()) {
            tracing::warn!(root = %meta.root, path = %meta.path, bytes = want,
                "not downloading: the filesystem is at the free-space floor (limits.json)");
            self.note(Notice::failed(&meta, libc::ENOSPC));
            return Err(libc::ENOSPC);
        }
        let Some(remote) = self.remote(&meta.root) else {
            tracing::warn!(root = %meta.root, "no remote for this root (missing credentials?)");
            return Err(libc::EPERM);
        };
        let (Some(version), Ok(path)) = (
            Version::from_token(&meta.version),
            RelPath::parse(&meta.path),
        ) else {
            return Err(libc::EIO);
        };
        // Pieces fetched in parallel as the policy's transfer sizes say (remote/transfer.rs),
        // each recorded as it lands.
        let t = &self.policy.transfer;
        let pieces = t.split(&missing);
        let mut first_err: Option<RemoteError> = None;
        let limit = self.download_limit(&meta.root);
        let app = APP.try_with(|a| a.clone()).ok().flatten();
        let root_id = meta.root.clone();
        let (limit, root_id) = (&limit, &root_id);
        let whole = ReadRange::new(&path, &version, 0, size, file);
        let mut results = Box::pin(transfer::fetch(
            &*remote,
            whole,
            pieces,
            t.parallel,
            |a, b| async move {
                if let Some(l) = limit {
                    l.take(b - a).await;
                }
                self.stats.add(root_id, |c| &c.requests, 1);
            },
        ));
        while let Some((a, b, r)) = results.next().await {
            match r {
                Ok(()) => {
                    self.stats.add(&meta.root, |c| &c.bytes_fetched, b - a);
                    meta.ranges.insert(a, b);
                    self.note(Notice::Progress {
                        root: meta.root.clone(),
                        path: meta.path.clone(),
                        done: meta.ranges.bytes(),
                        total: size,
                        app: app.clone(),
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "fetch failed");
                    first_err.get_or_insert(err);
                }
            }
        }
        drop(results);
        let complete = meta.ranges.covers(0, size);
        if complete {
            // Data first, then the record that says it is there. The data is written out and
            // waited for (which allocates its blocks in the journal's running transaction);
            // the record is set afterwards, so journal order (ext4, xfs) or the transaction
            // commit (btrfs) never makes the record durable without the data. Cheaper than
            // fdatasync, which would force a journal commit per file.
            if let Err(e) = fsutil::write_out(file.as_fd()) {
                tracing::warn!(error = %e, "writing out the data failed; syncing instead");
                let _ = file.sync_data();
            }
            meta.fill = Fill::Complete;
            meta.ranges = Default::default();
        } else if meta.ranges.bytes() > 0 {
            meta.fill = Fill::Partial;
        }
        if let Err(e) = meta::write_fd(file.as_fd(), &meta) {
            tracing::error!(error = %e, "cannot record hydration state");
            return Err(libc::EIO);
        }
        let _ = fsutil::set_mtime(file.as_fd(), mtime_of(&meta));
        self.note(Notice::changed(&meta));
        if complete {
            let _ = self.group.unmark_inode(file.as_fd());
            self.stats.add(&meta.root, |c| &c.completed, 1);
            drop(g);
            self.files.lock().unwrap().remove(&key);
            tracing::info!(path = %meta.path, "file is now local");
        }
        match first_err {
            Some(e) if !(complete || meta.ranges.covers(start.min(size), end.min(size))) => {
                let errno = errno_for(&e);
                self.note(Notice::failed(&meta, errno));
                Err(errno)
            }
            Some(e) => {
                // The part asked for is here; only read-ahead failed.
                tracing::debug!(error = %e, "read-ahead failed");
                Ok(())
            }
            None => Ok(()),
        }
    }
}

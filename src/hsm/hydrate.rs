//! The hydrator: turns an access into the bytes it needs. Each file's downloads go through
//! its [`Flow`] (one fetch per byte however many processes touch the file; different files
//! proceed in parallel): an access plans what to ask for (its bytes, and a growing window
//! ahead of a sequential reader), the pieces are fetched by a background task, and the access
//! is answered as soon as its own bytes have landed, not when the whole window has. Fills are
//! written through the event's fd (never by reopening the watched path), recorded in the
//! file's xattr after the data, and a complete file loses its mark so it is read at native
//! speed from then on.

use super::fanotify::{Access, Group, Reply};
use super::flow::Flow;
use super::meta::{self, FileMeta, Fill, Ranges};
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

/// Flows kept for partly local files before idle ones are dropped.
const KEEP_FLOWS: usize = 4096;

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
    /// A program opened this small online-only file for its bytes (folder read-ahead
    /// watches for files opened in name order).
    Opened { root: String, path: String },
    /// Answered once every notice sent before it has been applied (a request that reads the
    /// index waits for what the kernel's events changed just before).
    Flush(tokio::sync::oneshot::Sender<()>),
    /// A download into a budgeted root ended and every record it wrote was noticed before
    /// this: the consumer gives its `bytes` back with [`Hydrator::release`] (the index totals
    /// now count them).
    Released { root: String, bytes: u64 },
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

    /// The rate, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
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

/// How long an access that completed a file waits for its record to say so.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// How long a download waits for room to be made within a disk budget.
const ROOM_WAIT: Duration = Duration::from_secs(10);

pub struct Hydrator {
    /// Itself, for the background downloads it starts.
    me: std::sync::Weak<Hydrator>,
    pub policy: Policy,
    notices: Notices,
    group: Arc<Group>,
    root_policy: RwLock<HashMap<String, RootPolicy>>,
    remotes: RwLock<HashMap<String, Arc<dyn Remote>>>,
    flows: Mutex<HashMap<FileKey, Arc<Flow>>>,
    pub stats: Stats,
    /// The free-space floor: (bytes, percent of the filesystem); the larger one counts.
    free_floor: std::sync::RwLock<(u64, u8)>,
    /// Whether `bytes` more fit in a root's disk budget as it stands (no eviction needed):
    /// such downloads go on without asking the notice consumer to make room.
    room: std::sync::RwLock<Option<RoomCheck>>,
    /// Per budgeted root, the bytes of downloads under way or ended but not yet counted in
    /// the index's totals (their records are still in the notice queue): the quick budget
    /// check adds them, so a download never slips past the budget on stale totals.
    reserved: Mutex<HashMap<String, u64>>,
    /// Finds the remote path of a file whose record holds only its hash and that is not at
    /// the place the hash names as its path (see [`Hydrator::set_origin_finder`]).
    origin_finder: std::sync::RwLock<Option<OriginFinder>>,
    /// Remote paths found for such files, by inode and hash (a file is renamed, then read
    /// many times before the next pass): bounded, cleared when full.
    origins: Mutex<HashMap<(FileKey, u64), String>>,
}

/// See [`Hydrator::set_origin_finder`].
pub type OriginFinder =
    Arc<dyn Fn(&str, std::os::fd::BorrowedFd<'_>, u64) -> Option<String> + Send + Sync>;

/// At most this many found origins are remembered.
const ORIGINS_KEPT: usize = 4096;

/// Bytes reserved in a budgeted root for one download; dropping it (the download ended, its
/// records noticed) queues their release behind those records.
struct Reservation<'a> {
    hydrator: &'a Hydrator,
    root: String,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.hydrator.note(Notice::Released {
            root: std::mem::take(&mut self.root),
            bytes: self.bytes,
        });
    }
}

/// See [`Hydrator::set_room_check`].
pub type RoomCheck = Arc<dyn Fn(&str, u64) -> bool + Send + Sync>;

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

/// A piece's errno when the server answered that the file is not at its path (404): the
/// reader gets EIO, unless the file turns out to have been moved there by a pass.
const GONE: i32 = libc::ESTALE;
/// How long a fetch that found its path gone waits for a pass to record the file's new path.
const MOVED_WAIT: Duration = Duration::from_secs(2);

/// Allocates the blocks of `pieces` (in file order, as [`Flow::plan`] gives them) before their
/// bytes arrive, out of order, over parallel connections: the file then lies on disk as if
/// written in one go. With blocks allocated in arrival order, a hydrated 1 GiB file lay in
/// extents out of order and cold sequential reads of it ran at 0.68-0.75x a copy of it
/// (bench case 1). Adjacent pieces are one call. Best effort (a filesystem without
/// `fallocate` only loses the ordering); the size never changes (`FALLOC_FL_KEEP_SIZE`: a
/// file truncated meanwhile stays truncated). The descriptor is the daemon's (an event's or
/// one opened through the root's private mount): no event.
fn preallocate(file: &File, pieces: &[(u64, u64)]) {
    let mut runs = pieces.iter().copied().peekable();
    while let Some((a, mut b)) = runs.next() {
        while let Some(&(c, d)) = runs.peek() {
            if c != b {
                break;
            }
            b = d;
            runs.next();
        }
        let (Ok(off), Ok(len)) = (i64::try_from(a), i64::try_from(b.saturating_sub(a))) else {
            return;
        };
        if len == 0 {
            continue;
        }
        // SAFETY: fallocate on a descriptor borrowed for the call; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(file),
                libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "preallocation skipped");
            return;
        }
    }
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
    pub fn new(policy: Policy, group: Arc<Group>, notices: Notices) -> Arc<Self> {
        Arc::new_cyclic(|me| Hydrator {
            me: me.clone(),
            policy,
            notices,
            group,
            root_policy: RwLock::new(HashMap::new()),
            remotes: RwLock::new(HashMap::new()),
            flows: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            free_floor: std::sync::RwLock::new((32 << 20, 1)),
            room: std::sync::RwLock::new(None),
            reserved: Mutex::new(HashMap::new()),
            origin_finder: std::sync::RwLock::new(None),
            origins: Mutex::new(HashMap::new()),
        })
    }

    /// Hydration answers ENOSPC when a download would leave less than `bytes` (or `percent`
    /// of the filesystem, whichever is larger) free.
    pub fn set_free_floor(&self, bytes: u64, percent: u8) {
        *self.free_floor.write().unwrap() = (bytes, percent);
    }

    /// Sets the quick check of a root's disk budget: `check(root, bytes)` says whether the
    /// bytes fit as things stand (it must be cheap: it runs before each download). Without
    /// one, every download in a budgeted root asks for room.
    pub fn set_room_check(&self, check: RoomCheck) {
        *self.room.write().unwrap() = Some(check);
    }

    /// Sets how a file's remote path is found when its record keeps only the path's hash:
    /// `find(root, file, hash)` returns the root-relative path whose hash it is (the place
    /// the file is at in its root, or its place in the sync base after a local rename).
    pub fn set_origin_finder(&self, find: OriginFinder) {
        *self.origin_finder.write().unwrap() = Some(find);
    }

    /// The file's record with its remote path resolved; an error (EIO) when the record names
    /// its path by a hash that nothing found matches.
    fn read_record(&self, file: &File) -> std::io::Result<Option<FileMeta>> {
        let Some(mut m) = meta::read_fd(file.as_fd())? else {
            return Ok(None);
        };
        let Some(h) = m.unknown_hash() else {
            return Ok(Some(m));
        };
        let st = fsutil::fstat(file.as_fd())?;
        let key = ((st.st_dev, st.st_ino), h);
        if let Some(p) = self.origins.lock().unwrap().get(&key) {
            m.resolve_origin(p);
            m.resolve(p);
            return Ok(Some(m));
        }
        let finder = self.origin_finder.read().unwrap().clone();
        let found = finder.and_then(|f| f(&m.root, file.as_fd(), h));
        match found {
            Some(p) if m.resolve_origin(&p) => {
                let mut o = self.origins.lock().unwrap();
                if o.len() >= ORIGINS_KEPT {
                    o.clear();
                }
                o.insert(key, p.clone());
                m.resolve(&p);
                Ok(Some(m))
            }
            _ => {
                tracing::warn!(root = %m.root, ino = st.st_ino, "the remote path of a renamed file is not known (its record keeps a hash, and neither its place nor the sync base has a match)");
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the file's remote path is not known",
                ))
            }
        }
    }

    /// Reserves `bytes` for a download into `root` when it has a budget, and says whether room
    /// must be made first (Some: the bytes reserved with the downloads not yet in the index's
    /// totals do not fit as things stand).
    fn reserve(&self, root: &str, bytes: u64) -> (Option<Reservation<'_>>, Option<u64>) {
        if !self.budgeted(root) {
            return (None, None);
        }
        let ahead = {
            let mut r = self.reserved.lock().unwrap();
            let e = r.entry(root.to_string()).or_default();
            let ahead = *e;
            *e += bytes;
            ahead
        };
        let held = Reservation {
            hydrator: self,
            root: root.to_string(),
            bytes,
        };
        let need = bytes + ahead;
        let fits = self
            .room
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|fits| fits(root, need));
        (Some(held), (!fits).then_some(need))
    }

    /// The bytes reserved in `root` for downloads whose records the index has not counted
    /// yet (this one's included, for a download asking for room).
    pub fn reserved(&self, root: &str) -> u64 {
        self.reserved
            .lock()
            .unwrap()
            .get(root)
            .copied()
            .unwrap_or(0)
    }

    /// Gives back bytes reserved for a download (see [`Notice::Released`]).
    pub fn release(&self, root: &str, bytes: u64) {
        let mut r = self.reserved.lock().unwrap();
        if let Some(e) = r.get_mut(root) {
            *e = e.saturating_sub(bytes);
            if *e == 0 {
                r.remove(root);
            }
        }
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

    /// Whether the root has a disk budget (room is made before each download).
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
        let key = (st.st_dev, st.st_ino);
        let Some(m) = self.read_record(file)? else {
            return Ok(None);
        };
        let flow = self.flow(file, key, &m);
        let _g = flow.record.lock().await;
        let Some(mut m) = self.read_record(file)? else {
            return Ok(None);
        };
        f(&mut m);
        meta::write_fd(file.as_fd(), &m)?;
        self.note(Notice::changed(&m));
        if m.fill == Fill::Complete {
            self.forget(key, &flow);
        }
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
        let meta = match self.read_record(file) {
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
        if let Access::Pre { offset, count } = access {
            let size = meta.size.min(st.st_size as u64);
            let end = if count == 0 {
                size
            } else {
                offset.saturating_add(count).min(size)
            };
            let start = offset.min(end);
            let key = (st.st_dev, st.st_ino);
            let flow = self.flows.lock().unwrap().get(&key).cloned();
            let here = match &flow {
                Some(f) if f.version == meta.version => f.has(start, end),
                _ => meta.fill == Fill::Partial && meta.ranges.covers(start, end),
            };
            if here && !proc_info_for(pid, st.st_ino, true).await.writer {
                // Already local: no network for this access, but a sequential reader's
                // next window is asked for before it gets there.
                self.start(file, key, &meta, start, end, None);
                if let Some(f) = flow.filter(|f| f.version == meta.version && f.has(0, size)) {
                    f.settled_within(SETTLE_WAIT).await; // as in `fetch`
                }
                return Reply::Allow;
            }
        }
        let proc = proc_info_for(pid, st.st_ino, matches!(access, Access::Pre { .. })).await;
        if proc.writer && !proc.is_daemon && (st.st_size as u64) < meta.size {
            // Truncated by a program writing it (`open(O_TRUNC)` raises no event): the content
            // is that program's now, not a copy of the server's. Nothing more is fetched into
            // it; sync sees a local change.
            return self.taken_over(file, (st.st_dev, st.st_ino)).await;
        }
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
            Decision::Fetch(s, e) => {
                if access == Access::Open && !proc.is_daemon {
                    self.note(Notice::Opened {
                        root: meta.root.clone(),
                        path: meta.path.clone(),
                    });
                }
                match self.fetch_within(file, st, s, e).await {
                    Ok(()) => Reply::Allow,
                    Err(errno) => {
                        self.stats.add(&meta.root, |c| &c.denied, 1);
                        Reply::Deny(errno)
                    }
                }
            }
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
        let m = match self.read_record(file) {
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

    /// A writer truncated a file that was not complete: its downloads stop, and its record
    /// says complete (every byte is the writer's), so no later access fetches server bytes
    /// over the new content.
    async fn taken_over(&self, file: &Arc<File>, key: FileKey) -> Reply {
        if let Some(f) = self.flows.lock().unwrap().get(&key) {
            f.kill();
        }
        let changed = self
            .update_meta(file, |m| {
                m.fill = Fill::Complete;
                m.ranges = Default::default();
            })
            .await;
        match changed {
            Ok(_) => {
                let _ = self.group.unmark_inode(file.as_fd());
                tracing::info!("truncated and written by a program: the file is local");
                Reply::Allow
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record hydration state");
                Reply::Deny(libc::EIO)
            }
        }
    }

    /// Stops the background downloads of a file no access waits on (its reader gone, a
    /// read-ahead window still arriving), so that it can be freed: its flow dies (nothing
    /// more is written into the file or recorded; bytes written but not recorded are freed
    /// with the rest) and leaves the map (a later access starts a new one), and this waits
    /// up to `bound` until no download holds the file open. `false` when there was nothing
    /// to stop, an access waits on it, or the downloads did not end within `bound`.
    pub async fn stop_unwatched(&self, key: (u64, u64), bound: Duration) -> bool {
        let flow = {
            let mut flows = self.flows.lock().unwrap();
            match flows.get(&key) {
                Some(f) if f.busy() && !f.watched() => {
                    let f = f.clone();
                    flows.remove(&key);
                    f
                }
                _ => return false,
            }
        };
        flow.stop_for_free();
        let until = std::time::Instant::now() + bound;
        // A download holds the file and the flow together, and lets go of both as it ends.
        while Arc::strong_count(&flow) > 1 {
            if std::time::Instant::now() >= until {
                tracing::warn!(
                    ?bound,
                    "background downloads did not stop in time to free the file"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("stopped the file's background downloads to free it");
        true
    }

    /// This file's flow for the version its record names (a new one for a new version).
    /// A new flow starts from the record as it is now, read again under the map's lock: a
    /// flow that completed the file and was dropped since `meta` was read leaves a complete
    /// record, so its bytes are never fetched twice.
    fn flow(&self, file: &File, key: FileKey, meta: &FileMeta) -> Arc<Flow> {
        let mut flows = self.flows.lock().unwrap();
        if let Some(f) = flows.get(&key) {
            if f.version == meta.version {
                return f.clone();
            }
        }
        let now = match self.read_record(file) {
            Ok(Some(m)) if m.version == meta.version => m,
            _ => meta.clone(),
        };
        if now.fill == Fill::Complete {
            // Nothing to fetch; not kept.
            return Arc::new(Flow::new(&now.version, &Ranges(vec![(0, u64::MAX)])));
        }
        if flows.len() >= KEEP_FLOWS {
            flows.retain(|_, f| f.busy());
        }
        let recorded = match now.fill {
            Fill::Partial => now.ranges,
            _ => Ranges::default(),
        };
        let f = Arc::new(Flow::new(&now.version, &recorded));
        flows.insert(key, f.clone());
        f
    }

    /// Drops a file's flow (complete: nothing more to fetch), unless a newer one replaced it.
    fn forget(&self, key: FileKey, flow: &Arc<Flow>) {
        let mut flows = self.flows.lock().unwrap();
        if flows.get(&key).is_some_and(|f| Arc::ptr_eq(f, flow)) {
            flows.remove(&key);
        }
    }

    /// Plans an access of `[start, end)` and starts fetching what it needs and what a
    /// sequential reader will need next, in the background. Returns the file's flow.
    fn start(
        &self,
        file: &Arc<File>,
        key: FileKey,
        meta: &FileMeta,
        start: u64,
        end: u64,
        app: Option<(i32, String)>,
    ) -> Option<Arc<Flow>> {
        let this = self.me.upgrade()?;
        let size = meta
            .size
            .min(fsutil::fstat(file.as_fd()).ok()?.st_size as u64);
        let flow = self.flow(file, key, meta);
        // Under a download limit, pieces of about a second's worth, so none waits long to
        // start.
        let cap = self.download_limit(&meta.root).map(|b| b.rate());
        let pieces = flow.plan(&self.policy, start, end, size, cap);
        if !pieces.is_empty() {
            let job = Download {
                file: file.clone(),
                key,
                flow: flow.clone(),
                meta: meta.clone(),
                size,
                app: app.filter(|(_, exe)| !exe.is_empty()),
            };
            let span = tracing::Span::current();
            tokio::spawn(async move { this.download(job, pieces).await }.instrument(span));
        }
        Some(flow)
    }

    /// Makes `[start, end)` of the file local (with read-ahead for a sequential reader):
    /// returns once those bytes have landed, while the rest of the window may still arrive.
    pub async fn fetch(
        &self,
        file: &Arc<File>,
        key: (u64, u64),
        start: u64,
        end: u64,
    ) -> Result<(), i32> {
        let meta = match self.read_record(file) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(_) => return Err(libc::EIO),
        };
        if meta.fill == Fill::Complete {
            return Ok(());
        }
        let app = APP.try_with(|a| a.clone()).ok().flatten();
        let mut meta = meta;
        let mut moved = false;
        let mut restarted = false;
        loop {
            let Some(flow) = self.start(file, key, &meta, start, end, app.clone()) else {
                return Err(libc::EIO); // the daemon is stopping
            };
            let size = meta
                .size
                .min(fsutil::fstat(file.as_fd()).map_err(|_| libc::EIO)?.st_size as u64);
            match flow.wait(start.min(size), end.min(size)).await {
                Ok(()) => {
                    if flow.has(0, size) {
                        // The file is recorded complete before this returns (boundedly: the
                        // bytes are here either way).
                        flow.settled_within(SETTLE_WAIT).await;
                    }
                    return Ok(());
                }
                // A free stopped the flow between this access finding it and waiting on it
                // (`stop_unwatched`); the file is still there to fill: a new flow serves it.
                Err(_) if flow.stopped_for_free() && !restarted => restarted = true,
                Err(GONE) if !moved => match self.moved_since(file, &meta).await {
                    Some(now) => {
                        moved = true;
                        meta = now;
                    }
                    None => {
                        self.note(Notice::failed(&meta, libc::EIO));
                        return Err(libc::EIO);
                    }
                },
                Err(errno) => {
                    let errno = if errno == GONE { libc::EIO } else { errno };
                    self.note(Notice::failed(&meta, errno));
                    return Err(errno);
                }
            }
        }
    }

    /// The file's record once it names another remote path than `was`: a sync pass replaying
    /// a local rename moves the file on the server, then records its new path (and the new
    /// version S3's copy gave the same bytes, in the same write), so a fetch between the two
    /// finds the old path gone. Waits up to [`MOVED_WAIT`] for that record; `None` if it does
    /// not come (the file is gone).
    async fn moved_since(&self, file: &File, was: &FileMeta) -> Option<FileMeta> {
        let until = std::time::Instant::now() + MOVED_WAIT;
        loop {
            // The cached answer for a renamed file's path is the one that just failed.
            if let Ok(st) = fsutil::fstat(file.as_fd()) {
                self.origins
                    .lock()
                    .unwrap()
                    .retain(|k, _| k.0 != (st.st_dev, st.st_ino));
            }
            match self.read_record(file) {
                Ok(Some(m)) if m.path != was.path => {
                    tracing::info!(from = %was.path, to = %m.path, "moved on the server by a pass; fetching from its new path");
                    return Some(m);
                }
                Ok(Some(m)) if m.version == was.version => {}
                _ => return None,
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fetches `pieces` of a file in the background, up to `parallel` at once: tells the
    /// flow as bytes land (waiting readers go on) and records each piece in the file's
    /// xattr when it is done; the last one completes the file.
    async fn download(&self, job: Download, pieces: Vec<(u64, u64)>) {
        let Download {
            file, flow, meta, ..
        } = &job;
        let fail = |errno: i32| {
            for &p in &pieces {
                if !flow.ended(p, Some(errno)).is_empty() {
                    flow.recorded(); // nothing recorded: the bytes stay in memory only
                }
            }
        };
        let want: u64 = pieces.iter().map(|(a, b)| b - a).sum();
        // Held to the end of the download, after its last record is noticed.
        let (_reserved, room) = self.reserve(&meta.root, want);
        if room.is_some() {
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
            return fail(libc::ENOSPC);
        }
        let Some(remote) = self.remote(&meta.root) else {
            tracing::warn!(root = %meta.root, "no remote for this root (missing credentials?)");
            return fail(libc::EPERM);
        };
        let (Some(version), Ok(path)) = (
            Version::from_token(&meta.version),
            RelPath::parse(&meta.path),
        ) else {
            return fail(libc::EIO);
        };
        let t = &self.policy.transfer;
        let limit = self.download_limit(&meta.root);
        let root_id = &meta.root;
        let limit = &limit;
        // Bytes land as they arrive; a file truncated under the download (an editor saving
        // over it with O_TRUNC raises no event) stops it before its next write, so no
        // stale remote bytes are written after the new content.
        let tell = |a: u64, n: u64| {
            if n > 0 {
                flow.landed(a, n);
            }
            job.unchanged()
        };
        preallocate(file, &pieces);
        let whole = ReadRange::new(&path, &version, 0, job.size, file).on_landed(&tell);
        let mut results = Box::pin(transfer::fetch(
            &*remote,
            whole,
            pieces.clone(),
            t.parallel,
            |a, b| async move {
                if let Some(l) = limit {
                    l.take(b - a).await;
                }
                self.stats.add(root_id, |c| &c.requests, 1);
            },
        ));
        while let Some((a, b, r)) = results.next().await {
            let errno = match r {
                Ok(()) => {
                    self.stats.add(&meta.root, |c| &c.bytes_fetched, b - a);
                    None
                }
                Err(err) => {
                    tracing::warn!(error = %err, start = a, end = b, "fetch failed");
                    // Gone from its path on the server: `fetch` looks whether a pass moved it.
                    Some(match err {
                        RemoteError::NotFound { .. } => GONE,
                        _ => errno_for(&err),
                    })
                }
            };
            let present = flow.ended((a, b), errno);
            if !present.is_empty() {
                self.record(&job, &present).await;
                flow.recorded();
            }
        }
    }

    /// Records that `parts` of the file are local (data first: they were written before);
    /// completes the file when nothing is missing.
    async fn record(&self, job: &Download, parts: &[(u64, u64)]) {
        let Download {
            file,
            key,
            flow,
            size,
            ..
        } = job;
        let _g = flow.record.lock().await;
        if !job.unchanged() {
            return; // the file changed under the download: its bytes are not ours to record
        }
        let mut meta = match self.read_record(file) {
            Ok(Some(m)) if m.version == flow.version && m.fill != Fill::Complete => m,
            _ => return, // replaced, no longer ours, or already complete
        };
        if meta.fill == Fill::Placeholder {
            meta.ranges = Default::default();
        }
        for &(a, b) in parts {
            meta.ranges.insert(a, b);
        }
        let complete = meta.ranges.covers(0, *size);
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
        } else {
            meta.fill = Fill::Partial;
        }
        if let Err(e) = meta::write_fd(file.as_fd(), &meta) {
            tracing::error!(error = %e, path = %meta.path, "cannot record hydration state");
            return;
        }
        let _ = fsutil::set_mtime(file.as_fd(), mtime_of(&meta));
        self.note(Notice::Progress {
            root: meta.root.clone(),
            path: meta.path.clone(),
            done: if complete { *size } else { meta.ranges.bytes() },
            total: *size,
            app: job.app.clone(),
        });
        self.note(Notice::changed(&meta));
        if complete {
            let _ = self.group.unmark_inode(file.as_fd());
            self.stats.add(&meta.root, |c| &c.completed, 1);
            self.forget(*key, flow);
            tracing::info!(path = %meta.path, "file is now local");
        }
    }
}

impl Download {
    /// Whether the file is still what the download writes into: its flow alive and its size
    /// not below what was planned. An `open(O_TRUNC)` raises no event, so a program saving
    /// over the file is seen here, before the next write: the flow dies and writes nothing
    /// more.
    fn unchanged(&self) -> bool {
        if self.flow.is_dead() {
            return false;
        }
        let ok = fsutil::fstat(self.file.as_fd()).is_ok_and(|st| st.st_size as u64 >= self.size);
        if !ok {
            self.flow.kill();
        }
        ok
    }
}

/// One background download: the file, its flow and the record it was planned from.
struct Download {
    file: Arc<File>,
    key: FileKey,
    flow: Arc<Flow>,
    meta: FileMeta,
    /// The bytes the file should have (the remote size, or less if truncated locally).
    size: u64,
    app: Option<(i32, String)>,
}

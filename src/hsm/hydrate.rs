//! The hydrator: turns an access into the bytes it needs. One async lock per file gives one
//! download per chunk however many processes touch the file; different files proceed in
//! parallel. Fills are written through the event's fd (never by reopening the watched path),
//! recorded in the file's xattr after the data, and a complete file loses its mark so it is
//! read at native speed from then on.

use super::fanotify::{Access, Group, Reply};
use super::meta::{self, FileMeta, Fill};
use super::policy::{self, Decision, Policy, Proc};
use crate::fsutil;
use crate::model::{RelPath, Version};
use crate::remote::{Remote, RemoteError};
use futures_util::stream::{self, StreamExt};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// Counters the daemon reports (`skyfill stats`) and tests check: daemon-wide (root sees
/// them) and per sync root (a user sees the sums over their own roots).
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_fetched: AtomicU64,
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub denied: AtomicU64,
    pub events: AtomicU64,
    per_root: Mutex<HashMap<String, RootStats>>,
}

/// One root's share of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RootStats {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub completed: u64,
    pub denied: u64,
    pub events: u64,
}

impl Stats {
    fn root(&self, root: &str, f: impl FnOnce(&mut RootStats)) {
        let mut m = self.per_root.lock().unwrap();
        match m.get_mut(root) {
            Some(r) => f(r),
            None => f(m.entry(root.to_string()).or_default()),
        }
    }

    /// The counters of one root (zeros for a root that saw nothing).
    pub fn of_root(&self, root: &str) -> RootStats {
        self.per_root
            .lock()
            .unwrap()
            .get(root)
            .copied()
            .unwrap_or_default()
    }
}

/// (st_dev, st_ino) of a file.
type FileKey = (u64, u64);

#[derive(Default)]
struct Slot {
    /// End of the last range asked for (sequential-read detection).
    last_end: u64,
    /// Read-ahead of the last fetch for a sequential reader (0: none yet).
    ahead: u64,
}

/// What the hydrator tells the daemon (which updates its index and tells subscribers).
pub enum Note<'a> {
    /// A file's record changed (more bytes local, or complete).
    Changed(&'a FileMeta),
    /// Bytes of a file arrived: `done` of `total` are local; `app` started it, if a process did.
    Progress {
        meta: &'a FileMeta,
        done: u64,
        total: u64,
        app: Option<(i32, String)>,
    },
    /// A fetch failed with this errno.
    Failed { meta: &'a FileMeta, errno: i32 },
}

pub type OnNote = Box<dyn Fn(Note<'_>) + Send + Sync>;
/// Called with (root id, bytes) before a download, to make room within a disk budget.
pub type BeforeFetch = Box<dyn Fn(&str, u64) + Send + Sync>;

tokio::task_local! {
    /// The process whose access is being served (pid, executable name).
    static APP: (i32, String);
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
}

pub struct Hydrator {
    pub policy: Policy,
    on_note: std::sync::OnceLock<OnNote>,
    before_fetch: std::sync::OnceLock<BeforeFetch>,
    group: Arc<Group>,
    root_policy: RwLock<HashMap<String, RootPolicy>>,
    remotes: RwLock<HashMap<String, Arc<dyn Remote>>>,
    files: Mutex<HashMap<FileKey, Arc<tokio::sync::Mutex<Slot>>>>,
    pub stats: Stats,
    parallel: usize,
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

/// Most fds of one process whose fdinfo is read to find a writer.
const MAX_FDS_SCANNED: usize = 65_536;

/// [`proc_info`] on a blocking thread: reading `/proc` never holds up the threads that answer
/// the kernel.
async fn proc_info_off_thread(pid: i32, ino: u64, want_writer: bool) -> Proc {
    tokio::task::spawn_blocking(move || proc_info(pid, ino, want_writer))
        .await
        .unwrap_or(Proc {
            exe: String::new(),
            writer: want_writer,
            is_daemon: false,
        })
}

/// Executable name and whether `pid` holds inode `ino` open for writing.
pub fn proc_info(pid: i32, ino: u64, want_writer: bool) -> Proc {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let is_daemon = pid as u32 == std::process::id();
    let mut writer = false;
    if want_writer && !is_daemon {
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
            for (i, e) in rd.flatten().enumerate() {
                if i >= MAX_FDS_SCANNED {
                    // A process with this many fds is treated as a writer: it gets the whole
                    // file (always correct), and nobody can make the daemon scan without end.
                    writer = true;
                    break;
                }
                let Ok(info) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let mut flags = 0u32;
                let mut this = false;
                for l in info.lines() {
                    if let Some(v) = l.strip_prefix("flags:") {
                        flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
                    } else if let Some(v) = l.strip_prefix("ino:") {
                        this = v.trim().parse::<u64>().ok() == Some(ino);
                    }
                }
                if this && (flags as i32 & libc::O_ACCMODE) != libc::O_RDONLY {
                    writer = true;
                    break;
                }
            }
        }
    }
    Proc {
        exe,
        writer,
        is_daemon,
    }
}

fn mtime_of(m: &FileMeta) -> SystemTime {
    crate::model::from_unix_secs(m.mtime.0) + Duration::from_nanos(m.mtime.1 as u64)
}

impl Hydrator {
    pub fn new(policy: Policy, group: Arc<Group>) -> Self {
        Hydrator {
            policy,
            on_note: std::sync::OnceLock::new(),
            before_fetch: std::sync::OnceLock::new(),
            group,
            root_policy: RwLock::new(HashMap::new()),
            remotes: RwLock::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            parallel: 4,
            free_floor: std::sync::RwLock::new((32 << 20, 1)),
        }
    }

    /// Hydration answers ENOSPC when a download would leave less than `bytes` (or `percent`
    /// of the filesystem, whichever is larger) free.
    pub fn set_free_floor(&self, bytes: u64, percent: u8) {
        *self.free_floor.write().unwrap() = (bytes, percent);
    }

    pub fn set_on_note(&self, f: OnNote) {
        let _ = self.on_note.set(f);
    }

    pub fn set_before_fetch(&self, f: BeforeFetch) {
        let _ = self.before_fetch.set(f);
    }

    fn note(&self, n: Note<'_>) {
        if let Some(f) = self.on_note.get() {
            f(n);
        }
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
        self.note(Note::Changed(&m));
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
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let meta = match meta::read_fd(file.as_fd()) {
            Ok(Some(m)) => {
                self.stats.root(&m.root, |r| r.events += 1);
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
                && !proc_info_off_thread(pid, st.st_ino, true).await.writer
            {
                return Reply::Allow; // already local: no lock, no network
            }
        }
        let proc = proc_info_off_thread(pid, st.st_ino, matches!(access, Access::Pre { .. })).await;
        let span = tracing::info_span!("access", path = %meta.path, ?access, pid, exe = %proc.exe);
        if !proc.is_daemon && self.denies(&meta.root, &proc.exe) {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            let _e = span.enter();
            tracing::info!("download refused for this program by the owner's policy");
            return Reply::Deny(libc::EIO);
        }
        APP.scope(
            (pid, proc.exe.clone()),
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
                self.stats.denied.fetch_add(1, Ordering::Relaxed);
                self.stats.root(&meta.root, |r| r.denied += 1);
                tracing::info!(errno = e, "download refused for this program by policy");
                Reply::Deny(e)
            }
            Decision::Fetch(s, e) => {
                let bound = Duration::from_secs(self.policy.timeout_secs);
                let key = (st.st_dev, st.st_ino);
                match tokio::time::timeout(bound, self.fetch(file, key, s, e)).await {
                    Ok(Ok(())) => Reply::Allow,
                    Ok(Err(errno)) => {
                        self.stats.denied.fetch_add(1, Ordering::Relaxed);
                        self.stats.root(&meta.root, |r| r.denied += 1);
                        Reply::Deny(errno)
                    }
                    Err(_) => {
                        self.stats.denied.fetch_add(1, Ordering::Relaxed);
                        self.stats.root(&meta.root, |r| r.denied += 1);
                        tracing::warn!(?bound, "hydration timed out");
                        Reply::Deny(libc::EIO)
                    }
                }
            }
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
        if let Some(f) = self.before_fetch.get() {
            f(&meta.root, want);
        }
        if below_floor(file, want, *self.free_floor.read().unwrap()) {
            tracing::warn!(root = %meta.root, path = %meta.path, bytes = want,
                "not downloading: the filesystem is at the free-space floor (limits.json)");
            self.note(Note::Failed {
                meta: &meta,
                errno: libc::ENOSPC,
            });
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
        // Pieces fetched in parallel, each recorded as it lands: chunk-sized, or for a large
        // window one piece per connection (fewer requests, each streaming longer).
        let total: u64 = missing.iter().map(|(a, b)| b - a).sum();
        let base = self.policy.chunk.max(4096);
        let chunk = (total / self.parallel.max(1) as u64).div_ceil(base).max(1) * base;
        let mut pieces = Vec::new();
        for (a, b) in missing {
            let mut o = a;
            while o < b {
                let n = (o / chunk + 1) * chunk;
                pieces.push((o, n.min(b)));
                o = n.min(b);
            }
        }
        let mut first_err: Option<RemoteError> = None;
        let limit = self.download_limit(&meta.root);
        let app = APP.try_with(|a| a.clone()).ok();
        let root_id = meta.root.clone();
        let mut results = stream::iter(pieces)
            .map(|(a, b)| {
                let (remote, path, version, limit) = (&remote, &path, &version, &limit);
                let root_id = &root_id;
                async move {
                    if let Some(l) = limit {
                        l.take(b - a).await;
                    }
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    self.stats.root(root_id, |r| r.requests += 1);
                    let r = remote.read_range(path, version, a, b - a, file, a).await;
                    (a, b, r)
                }
            })
            .buffer_unordered(self.parallel);
        while let Some((a, b, r)) = results.next().await {
            match r {
                Ok(()) => {
                    self.stats.bytes_fetched.fetch_add(b - a, Ordering::Relaxed);
                    self.stats.root(&meta.root, |r| r.bytes_fetched += b - a);
                    meta.ranges.insert(a, b);
                    self.note(Note::Progress {
                        meta: &meta,
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
        self.note(Note::Changed(&meta));
        if complete {
            let _ = self.group.unmark_inode(file.as_fd());
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.stats.root(&meta.root, |r| r.completed += 1);
            drop(g);
            self.files.lock().unwrap().remove(&key);
            tracing::info!(path = %meta.path, "file is now local");
        }
        match first_err {
            Some(e) if !(complete || meta.ranges.covers(start.min(size), end.min(size))) => {
                let errno = errno_for(&e);
                self.note(Note::Failed { meta: &meta, errno });
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

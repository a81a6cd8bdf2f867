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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// One set of counters (atomics: counting never takes a lock).
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_fetched: AtomicU64,
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub denied: AtomicU64,
    pub events: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RootStats {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub completed: u64,
    pub denied: u64,
    pub events: u64,
}

impl Counters {
    fn snapshot(&self) -> RootStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RootStats {
            bytes_fetched: l(&self.bytes_fetched),
            requests: l(&self.requests),
            completed: l(&self.completed),
            denied: l(&self.denied),
            events: l(&self.events),
        }
    }
}

impl std::ops::Add for RootStats {
    type Output = RootStats;
    fn add(self, o: RootStats) -> RootStats {
        RootStats {
            bytes_fetched: self.bytes_fetched + o.bytes_fetched,
            requests: self.requests + o.requests,
            completed: self.completed + o.completed,
            denied: self.denied + o.denied,
            events: self.events + o.events,
        }
    }
}

/// Counters the daemon reports (`skyfill stats`) and tests check: daemon-wide (root sees
/// them) and per sync root (a user sees the sums over their own roots).
#[derive(Debug, Default)]
pub struct Stats {
    total: Counters,
    per_root: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Stats {
    fn of(&self, root: &str) -> Arc<Counters> {
        if let Some(c) = self.per_root.read().unwrap().get(root) {
            return c.clone();
        }
        self.per_root
            .write()
            .unwrap()
            .entry(root.to_string())
            .or_default()
            .clone()
    }

    /// Adds `n` to one counter, daemon-wide and for `root`.
    fn add(&self, root: &str, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(&self.total).fetch_add(n, Ordering::Relaxed);
        field(&self.of(root)).fetch_add(n, Ordering::Relaxed);
    }

    /// The daemon-wide counters.
    pub fn total(&self) -> RootStats {
        self.total.snapshot()
    }

    /// The counters of one root (zeros for a root that saw nothing).
    pub fn of_root(&self, root: &str) -> RootStats {
        self.per_root
            .read()
            .unwrap()
            .get(root)
            .map(|c| c.snapshot())
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

/// [`proc_info`] for an access: the executable name alone is one cheap `readlink` and is read
/// here; the writer scan (one file per fd of the process) runs on a blocking thread, so it
/// never holds up the threads that answer the kernel.
async fn proc_info_for(pid: i32, ino: u64, want_writer: bool) -> Proc {
    if !want_writer {
        return proc_info(pid, ino, false);
    }
    tokio::task::spawn_blocking(move || proc_info(pid, ino, true))
        .await
        .unwrap_or(Proc {
            writer: true,
            ..Proc::default()
        })
}

/// Executable name, uid, and whether `pid` holds inode `ino` open for writing. `/proc/PID`
/// is opened once; everything else is read beneath that fd.
pub fn proc_info(pid: i32, ino: u64, want_writer: bool) -> Proc {
    let is_daemon = pid as u32 == std::process::id();
    let Ok(dir) = std::fs::File::open(format!("/proc/{pid}")) else {
        return Proc {
            is_daemon,
            ..Proc::default()
        };
    };
    let dfd = dir.as_fd();
    let uid = fsutil::fstat(dfd).ok().map(|st| st.st_uid);
    let mut buf = [0u8; 4096];
    // SAFETY: valid fd, NUL-terminated name, and a buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dfd.as_raw_fd(),
            c"exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let exe = if n > 0 {
        let target = &buf[..n as usize];
        let name = target.rsplit(|&b| b == b'/').next().unwrap_or(target);
        String::from_utf8_lossy(name).into_owned()
    } else {
        String::new()
    };
    let mut writer = false;
    if want_writer && !is_daemon {
        writer = holds_for_writing(dfd, ino);
    }
    Proc {
        exe,
        writer,
        is_daemon,
        uid,
    }
}

/// Whether any fd in `/proc/PID/fdinfo` (beneath `proc_dir`) is inode `ino` opened for writing.
/// A process with more than [`MAX_FDS_SCANNED`] fds counts as a writer: it gets the whole file
/// (always correct), and nobody can make the daemon scan without end.
fn holds_for_writing(proc_dir: BorrowedFd<'_>, ino: u64) -> bool {
    let Ok(rel) = RelPath::parse("fdinfo") else {
        return false;
    };
    let Ok(fdinfo) = fsutil::open_beneath(proc_dir, &rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
    else {
        return false;
    };
    let Ok(names) = fsutil::read_dir_names(fdinfo.as_fd()) else {
        return false;
    };
    if names.len() > MAX_FDS_SCANNED {
        return true;
    }
    for raw in names {
        let Ok(name) = std::str::from_utf8(&raw) else {
            continue;
        };
        let Ok(p) = RelPath::parse(name) else {
            continue;
        };
        let Ok(fd) = fsutil::open_beneath(fdinfo.as_fd(), &p, libc::O_RDONLY, 0) else {
            continue;
        };
        let mut info = String::new();
        if std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut info).is_err() {
            continue;
        }
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
            return true;
        }
    }
    false
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
            Decision::Fetch(s, e) => {
                let bound = Duration::from_secs(self.policy.timeout_secs);
                let key = (st.st_dev, st.st_ino);
                match tokio::time::timeout(bound, self.fetch(file, key, s, e)).await {
                    Ok(Ok(())) => Reply::Allow,
                    Ok(Err(errno)) => {
                        self.stats.add(&meta.root, |c| &c.denied, 1);
                        Reply::Deny(errno)
                    }
                    Err(_) => {
                        self.stats.add(&meta.root, |c| &c.denied, 1);
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
        let app = APP.try_with(|a| a.clone()).ok().flatten();
        let root_id = meta.root.clone();
        let mut results = stream::iter(pieces)
            .map(|(a, b)| {
                let (remote, path, version, limit) = (&remote, &path, &version, &limit);
                let root_id = &root_id;
                async move {
                    if let Some(l) = limit {
                        l.take(b - a).await;
                    }
                    self.stats.add(root_id, |c| &c.requests, 1);
                    let r = remote.read_range(path, version, a, b - a, file, a).await;
                    (a, b, r)
                }
            })
            .buffer_unordered(self.parallel);
        while let Some((a, b, r)) = results.next().await {
            match r {
                Ok(()) => {
                    self.stats.add(&meta.root, |c| &c.bytes_fetched, b - a);
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
            self.stats.add(&meta.root, |c| &c.completed, 1);
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

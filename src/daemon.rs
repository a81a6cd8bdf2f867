//! `skyfilld`: a tiny keeper process that owns the fanotify group and the socket and restarts
//! the worker, and the worker that does everything else (network, parsing, writes). When the
//! worker dies, the keeper's copy of the group keeps marks and pending events alive, so
//! readers wait for the next worker instead of reading zeros. This module wires the concrete
//! types together: remotes, hydrator, index, registry and the socket server.

use crate::fsutil;
use crate::hsm::fanotify::{Access, Group, Reply};
use crate::hsm::hydrate::Hydrator;
use crate::hsm::meta::{self, FileMeta};
use crate::hsm::policy::Policy;
use crate::index::{Index, Record, SledIndex};
use crate::model::RelPath;
use crate::roots::{Registry, RootRecord};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod control;
mod fdstore;
pub mod limits;
mod rootfs;
mod syncing;

/// Descriptor numbers the keeper hands to the worker.
pub const GROUP_FD: RawFd = 3;
pub const LISTEN_FD: RawFd = 4;

#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

// ---------------------------------------------------------------- keeper

/// Runs the keeper: creates the group and the socket, then runs workers until SIGTERM/SIGINT.
pub fn run_keeper(opts: &Options) -> io::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let group = match fdstore::take(fdstore::GROUP_NAME) {
        Some(fd) => {
            tracing::info!("took the fanotify group back from the service manager's fd store");
            // SAFETY: `take` checked that the descriptor is a fanotify group and gave it to us.
            unsafe { Group::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) }
        }
        None => Group::new().map_err(|e| {
            other(format!(
                "cannot create a fanotify pre-content group ({e}); skyfilld needs root and Linux >= 6.14"
            ))
        })?,
    };
    let listener = bind_socket(&opts.socket)?;
    // Under systemd, park a copy of the group in the fd store: if this whole service dies or
    // restarts, marks and queued events survive and the next keeper answers them.
    match fdstore::store(group.as_fd(), fdstore::GROUP_NAME) {
        Ok(true) => tracing::info!("fanotify group kept in the service manager's fd store"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot store the fanotify group with the service manager: {e}"),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let mut child = spawn_worker(opts, group.as_fd(), listener.as_fd())?;
            tracing::info!(pid = child.id(), "worker started");
            // The socket is bound and a worker will accept on it: ready for Type=notify.
            let _ = fdstore::notify("READY=1", &[]);
            tokio::select! {
                st = child.wait() => {
                    let st = st?;
                    tracing::warn!(status = %st, "worker exited; restarting (readers wait meanwhile)");
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                _ = term.recv() => { stop(&mut child).await; break; }
                _ = int.recv() => { stop(&mut child).await; break; }
            }
        }
        let _ = std::fs::remove_file(&opts.socket);
        tracing::info!("stopped; marks are gone with the group (see doc/SEMANTICS.md)");
        Ok::<(), io::Error>(())
    })
}

async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn bind_socket(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(other(format!(
            "another skyfilld is serving {}",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    // Anyone may connect; every request is authorized by the peer's uid. The socket is made
    // 0666 by the umask at bind (the keeper is single-threaded here), never chmodded by name.
    // SAFETY: umask only changes this process's creation mask.
    let old = unsafe { libc::umask(0o111) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    l.map_err(|e| other(format!("cannot bind {}: {e}", path.display())))
}

fn spawn_worker(
    opts: &Options,
    group: BorrowedFd<'_>,
    listener: BorrowedFd<'_>,
) -> io::Result<tokio::process::Child> {
    let exe = std::env::current_exe()?;
    let (g, l) = (group.as_raw_fd(), listener.as_raw_fd());
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--worker")
        .arg("--socket")
        .arg(&opts.socket)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(g, GROUP_FD), (l, LISTEN_FD)] {
                if from == to {
                    let fl = libc::fcntl(to, libc::F_GETFD);
                    libc::fcntl(to, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                } else if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

// ---------------------------------------------------------------- in-flight journal

/// An event a worker took and had not answered: enough to find the file again (handle) and
/// to answer the kernel (the fd number, which the kernel matches in the group).
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    fd: i32,
    dev: u64,
    handle: Option<(i32, Vec<u8>)>,
    access: Access,
}

impl Pending {
    fn line(&self) -> String {
        let (t, h) = match &self.handle {
            Some((t, h)) => (*t, hex::encode(h)),
            None => (0, "-".into()),
        };
        let (k, o, c) = match self.access {
            Access::Open => ('o', 0, 0),
            Access::OpenExec => ('x', 0, 0),
            Access::Pre { offset, count } => ('p', offset, count),
        };
        format!("+{} {} {} {} {} {} {}", self.fd, self.dev, t, h, k, o, c)
    }

    fn parse(l: &str) -> Option<Pending> {
        let mut it = l.strip_prefix('+')?.split(' ');
        let fd = it.next()?.parse().ok()?;
        let parsed = (|| {
            let dev = it.next()?.parse().ok()?;
            let t: i32 = it.next()?.parse().ok()?;
            let h = hex::decode(it.next()?).ok();
            let access = match (
                it.next()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ) {
                ("o", _, _) => Access::Open,
                ("x", _, _) => Access::OpenExec,
                ("p", offset, count) => Access::Pre { offset, count },
                _ => return None,
            };
            Some((dev, h.map(|h| (t, h)), access))
        })();
        Some(match parsed {
            Some((dev, handle, access)) => Pending {
                fd,
                dev,
                handle,
                access,
            },
            None => Pending {
                fd,
                dev: 0,
                handle: None,
                access: Access::Open,
            },
        })
    }
}

/// Events read but not yet answered, on disk, so that a restarted worker can finish what its
/// dead predecessor had taken: it refills the file and answers by fd number.
struct Journal {
    file: Mutex<File>,
    open: Mutex<HashSet<i32>>,
}

impl Journal {
    /// Opens a fresh journal, returning what the previous worker left unanswered.
    fn open(path: &Path) -> io::Result<(Journal, Vec<Pending>)> {
        let mut pending: Vec<Pending> = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for l in text.lines() {
                if let Some(p) = Pending::parse(l) {
                    pending.retain(|q| q.fd != p.fd);
                    pending.push(p);
                } else if let Some(n) = l.strip_prefix('-').and_then(|n| n.parse::<i32>().ok()) {
                    pending.retain(|q| q.fd != n);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok((
            Journal {
                file: Mutex::new(file),
                open: Mutex::new(HashSet::new()),
            },
            pending,
        ))
    }

    fn add(&self, p: &Pending) {
        self.open.lock().unwrap().insert(p.fd);
        // One write(2) per line: a line is never torn by a crash between two writes.
        let line = format!("{}\n", p.line());
        let _ = self.file.lock().unwrap().write_all(line.as_bytes());
    }

    fn done(&self, fd: i32) {
        let empty = {
            let mut o = self.open.lock().unwrap();
            o.remove(&fd);
            o.is_empty()
        };
        let mut f = self.file.lock().unwrap();
        if empty && f.metadata().map(|m| m.len() > (1 << 20)).unwrap_or(false) {
            let _ = f.set_len(0);
            let _ = std::io::Seek::seek(&mut *f, std::io::SeekFrom::Start(0));
        } else {
            let _ = f.write_all(format!("-{fd}\n").as_bytes());
        }
    }
}

// ---------------------------------------------------------------- worker

pub struct Daemon {
    opts: Options,
    group: Arc<Group>,
    pub hydrator: Arc<Hydrator>,
    index: Arc<dyn Index>,
    registry: Registry,
    roots: RwLock<Vec<RootRecord>>,
    events: crate::ipc::server::EventHub,
    /// What configuration bounds (`limits.json`).
    limits: limits::Limits,
    /// Last error talking to each root's server (cleared by a success).
    last_error: Mutex<std::collections::HashMap<String, String>>,
    /// Sync pass scheduling and the folder watcher.
    sync: syncing::SyncCtl,
}

/// Runs the worker on the descriptors the keeper passed (or on fresh ones when `standalone`).
pub async fn run_worker(opts: Options, standalone: bool) -> io::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    std::fs::write(
        opts.state_dir.join("worker.pid"),
        format!("{}\n", std::process::id()),
    )?;
    // Lease breaks raise SIGIO, whose default action would kill us.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    // glibc gives every thread that allocates its own arena; a handful of busy threads would
    // each keep tens of MiB. Two arenas are plenty for this daemon (doc/BENCHMARKS.md).
    // SAFETY: mallopt before the runtime's threads start.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let (group, listener) = if standalone {
        (Group::new()?, bind_socket(&opts.socket)?)
    } else {
        // SAFETY: the keeper passed these descriptors at fixed numbers.
        unsafe {
            (
                Group::from_raw(GROUP_FD),
                std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FD),
            )
        }
    };
    let group = Arc::new(group);
    let (journal, pending) = Journal::open(&opts.state_dir.join("inflight.log"))?;
    let journal = Arc::new(journal);
    let policy: Policy = match std::fs::read(opts.state_dir.join("policy.json")) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| other(format!("policy.json: {e}")))?,
        Err(_) => Policy::default(),
    };
    let hydrator = Arc::new(Hydrator::new(policy, group.clone()));
    // A broken limits.json must not take the daemon down for everyone: say so loudly and
    // keep the (safe) defaults.
    let limits = limits::Limits::load(&opts.state_dir).unwrap_or_else(|e| {
        tracing::error!(error = %e, "ignoring limits.json; using the default limits");
        limits::Limits::default()
    });
    hydrator.set_free_floor(limits.min_free_bytes, limits.min_free_percent);
    let index_path = opts.state_dir.join("index");
    let rebuild = !index_path.exists();
    let index: Arc<dyn Index> =
        Arc::new(SledIndex::open(&index_path).map_err(|e| other(e.to_string()))?);
    let registry = Registry::new(&opts.state_dir)?;
    let roots = registry.load()?;
    raise_fd_limit();
    let d = Arc::new(Daemon {
        opts,
        group: group.clone(),
        hydrator: hydrator.clone(),
        index: index.clone(),
        registry,
        roots: RwLock::new(Vec::new()),
        events: crate::ipc::server::EventHub::new(4096),
        limits,
        last_error: Mutex::new(Default::default()),
        sync: syncing::SyncCtl::new(),
    });
    {
        let weak = Arc::downgrade(&d);
        hydrator.set_on_note(Box::new(move |n| {
            if let Some(d) = weak.upgrade() {
                d.on_note(n);
            }
        }));
        let weak = Arc::downgrade(&d);
        hydrator.set_before_fetch(Box::new(move |root, bytes| {
            if let Some(d) = weak.upgrade() {
                d.budget_hook(root, bytes);
            }
        }));
    }
    // Activation opens no managed file (marks are added by name), so it runs before the
    // event loop; then the events the previous worker left are finished, before any new
    // event is read (their fd numbers must not be reused meanwhile).
    for mut r in roots {
        if let Err(e) = d.activate(&mut r, rebuild).await {
            tracing::error!(root = %r.local.display(), error = %e, "cannot activate sync root");
        }
        d.roots.write().unwrap().push(r);
    }
    {
        let roots = d.roots.read().unwrap().clone();
        let _ = d.registry.save(&roots);
    }
    d.recover(pending).await;
    tokio::spawn(event_loop(group.clone(), hydrator.clone(), journal));
    tokio::spawn(syncing::watch_loop(d.clone()));
    tokio::spawn(syncing::background(d.clone()));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tracing::info!(socket = %d.opts.socket.display(), "worker ready");
    let admission = crate::ipc::server::Admission::new(crate::ipc::server::ConnLimits {
        per_user: d.limits.connections_per_user,
        total: d.limits.connections,
    });
    crate::ipc::server::accept_loop(d.clone(), listener, admission).await;
    Ok(())
}

/// Raises the soft open-file limit to the hard one (systemd gives services 1024 soft): the
/// connection caps, not the fd limit, decide how many peers are served.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct RawGroup(RawFd);
impl AsRawFd for RawGroup {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

async fn event_loop(group: Arc<Group>, hydrator: Arc<Hydrator>, journal: Arc<Journal>) {
    // SAFETY: the group fd stays open as long as `group` (kept alive by this task) does.
    let afd =
        match unsafe { tokio::io::unix::AsyncFd::register(RawGroup(group.as_fd().as_raw_fd())) } {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot poll the fanotify group");
                std::process::exit(70);
            }
        };
    loop {
        let mut guard = match afd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "fanotify poll failed");
                std::process::exit(70);
            }
        };
        let events = match group.read_events() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "reading fanotify events failed");
                continue;
            }
        };
        if events.is_empty() {
            guard.clear_ready();
            continue;
        }
        for ev in events {
            let n = ev.fd.as_raw_fd();
            let st = fsutil::fstat(ev.fd.as_fd()).ok();
            journal.add(&Pending {
                fd: n,
                dev: st.map(|s| s.st_dev).unwrap_or(0),
                handle: crate::hsm::fanotify::handle_of(ev.fd.as_fd()).ok(),
                access: ev.access,
            });
            let (group, hydrator, journal) = (group.clone(), hydrator.clone(), journal.clone());
            tokio::spawn(async move {
                let access = ev.access;
                let pid = ev.pid;
                let file = Arc::new(File::from(ev.fd));
                let reply = hydrator.handle(access, &file, pid).await;
                if let Err(e) = group.respond_raw(n, reply) {
                    tracing::error!(error = %e, "cannot answer the kernel");
                }
                journal.done(n);
                drop(file);
            });
        }
    }
}

fn record_of(m: &FileMeta) -> Record {
    Record {
        availability: m.availability().into(),
        size: m.size,
        version: m.version.clone(),
        local_bytes: m.local_bytes(),
    }
}

impl Daemon {
    /// Finishes the events a dead worker had taken: refill through a private mount (no events
    /// to ourselves), then answer by fd number; EIO when that is impossible.
    async fn recover(&self, pending: Vec<Pending>) {
        let journaled: HashSet<i32> = pending.iter().map(|p| p.fd).collect();
        for p in pending {
            let reply = match self.refill(&p).await {
                Ok(()) => Reply::Allow,
                Err(e) => {
                    tracing::warn!(fd = p.fd, error = %e, "cannot finish an event of the previous worker; answering EIO");
                    Reply::Deny(libc::EIO)
                }
            };
            match self.group.respond_raw(p.fd, reply) {
                Ok(()) => tracing::info!(
                    fd = p.fd,
                    ?reply,
                    "answered an event of the previous worker"
                ),
                Err(e) => tracing::debug!(fd = p.fd, error = %e, "stale journal entry"),
            }
        }
        self.sweep_unjournaled(&journaled);
    }

    /// A worker killed between reading events and journaling them leaves those events
    /// pending in the group with no record of their files; their readers would wait until
    /// the group closes. This worker has read nothing yet, so every event still pending is a
    /// dead worker's: answer each fd number the dead worker could have used with EIO (never
    /// allow, which would show zeros). Numbers with no pending event answer ENOENT.
    fn sweep_unjournaled(&self, journaled: &HashSet<i32>) {
        // SAFETY: plain getter into a local struct.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur.min(1 << 20) as i32
        } else {
            1 << 16
        };
        let mut n = 0;
        for fd in 0..max {
            if !journaled.contains(&fd)
                && self.group.respond_raw(fd, Reply::Deny(libc::EIO)).is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            tracing::warn!(
                events = n,
                "answered EIO to events a killed worker had read but not journaled"
            );
        }
    }

    async fn refill(&self, p: &Pending) -> Result<(), String> {
        let (htype, handle) = p.handle.as_ref().ok_or("no file handle recorded")?;
        let roots: Vec<RootRecord> = self.roots.read().unwrap().clone();
        let root = roots
            .iter()
            .filter_map(|r| File::open(&r.local).ok())
            .find(|f| {
                fsutil::fstat(f.as_fd())
                    .map(|s| s.st_dev == p.dev)
                    .unwrap_or(false)
            })
            .ok_or("no sync root on that filesystem")?;
        let mnt = self
            .group
            .private_mount(root.as_fd())
            .map_err(|e| format!("private mount: {e}"))?;
        // open_by_handle_at wants a real (not O_PATH) descriptor inside the mount.
        let mdir = fsutil::open_beneath(
            mnt.as_fd(),
            &RelPath::root(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| format!("private mount root: {e}"))?;
        let fd = crate::hsm::fanotify::open_by_handle(mdir.as_fd(), *htype, handle, libc::O_RDWR)
            .map_err(|e| format!("open by handle: {e}"))?;
        let file = Arc::new(File::from(fd));
        let st = fsutil::fstat(file.as_fd()).map_err(|e| e.to_string())?;
        let Some(m) = meta::read_fd(file.as_fd()).map_err(|e| e.to_string())? else {
            return Ok(()); // not ours (any more): nothing to fill
        };
        let end = m.size.min(st.st_size as u64);
        let (s, e) = match p.access {
            Access::Pre { offset, count } if count > 0 => {
                (offset.min(end), offset.saturating_add(count).min(end))
            }
            Access::Pre { offset, .. } => (offset.min(end), end),
            Access::Open | Access::OpenExec => (0, end),
        };
        let bound = Duration::from_secs(self.hydrator.policy.timeout_secs);
        match tokio::time::timeout(
            bound,
            self.hydrator.fetch(&file, (st.st_dev, st.st_ino), s, e),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => Err(format!("fetch failed (errno {errno})")),
            Err(_) => Err("fetch timed out".into()),
        }
    }
}

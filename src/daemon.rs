//! `skyfilld`: a tiny keeper process that owns the fanotify group and the socket and restarts
//! the worker, and the worker that does everything else (network, parsing, writes). When the
//! worker dies, the keeper's copy of the group keeps marks and pending events alive, so
//! readers wait for the next worker instead of reading zeros. This module wires the concrete
//! types together: remotes, hydrator, index, registry and the socket server.

use crate::fsutil;
use crate::hsm::evict::{self, EvictError};
use crate::hsm::fanotify::{Access, Group, Reply};
use crate::hsm::hydrate::Hydrator;
use crate::hsm::meta::{self, FileMeta, Fill, Pin};
use crate::hsm::placeholder::{Owner, Populator};
use crate::hsm::policy::Policy;
use crate::index::{Index, Record, SledIndex};
use crate::ipc::proto::*;
use crate::model::RelPath;
use crate::remote::{self, http::HttpConfig, Remote, RemoteError};
use crate::roots::{Registry, RootRecord};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::Instrument;

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
    let group = Group::new().map_err(|e| {
        other(format!(
            "cannot create a fanotify pre-content group ({e}); skyfilld needs root and Linux >= 6.14"
        ))
    })?;
    let listener = bind_socket(&opts.socket)?;
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
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| other(format!("cannot bind {}: {e}", path.display())))?;
    // Anyone may connect; every request is authorized by the peer's uid.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(l)
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
        .arg(&opts.state_dir);
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
        let _ = writeln!(self.file.lock().unwrap(), "{}", p.line());
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
            let _ = writeln!(f, "-{fd}");
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
    let index_path = opts.state_dir.join("index");
    let rebuild = !index_path.exists();
    let index: Arc<dyn Index> =
        Arc::new(SledIndex::open(&index_path).map_err(|e| other(e.to_string()))?);
    let registry = Registry::new(&opts.state_dir)?;
    let roots = registry.load()?;
    let d = Arc::new(Daemon {
        opts,
        group: group.clone(),
        hydrator: hydrator.clone(),
        index: index.clone(),
        registry,
        roots: RwLock::new(Vec::new()),
    });
    {
        let ix = index.clone();
        hydrator.set_on_change(Box::new(move |m: &FileMeta| {
            let _ = ix.put(&m.root, &m.path, &record_of(m));
        }));
    }
    // Activation opens no managed file (marks are added by name), so it runs before the
    // event loop; then the events the previous worker left are finished, before any new
    // event is read (their fd numbers must not be reused meanwhile).
    for r in roots {
        if let Err(e) = d.activate(&r, rebuild).await {
            tracing::error!(root = %r.local.display(), error = %e, "cannot activate sync root");
        }
        d.roots.write().unwrap().push(r);
    }
    d.recover(pending).await;
    tokio::spawn(event_loop(group.clone(), hydrator.clone(), journal));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tracing::info!(socket = %d.opts.socket.display(), "worker ready");
    loop {
        let (s, _) = listener.accept().await?;
        tokio::spawn(serve_conn(d.clone(), s));
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
    }
}

async fn serve_conn(d: Arc<Daemon>, s: tokio::net::UnixStream) {
    let Ok(cred) = s.peer_cred() else { return };
    let (uid, gid) = (cred.uid(), cred.gid());
    let codec = tokio_util::codec::LinesCodec::new_with_max_length(MAX_LINE);
    let mut framed = tokio_util::codec::Framed::new(s, codec);
    let mut greeted = false;
    while let Some(line) = framed.next().await {
        let line = match line {
            Ok(l) => l,
            Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => {
                let r = Response::err(
                    0,
                    ErrorCode::BadRequest,
                    format!("message longer than {MAX_LINE} bytes"),
                );
                let _ = framed.send(serde_json::to_string(&r).unwrap()).await;
                return;
            }
            Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::err(0, ErrorCode::BadRequest, format!("unreadable request: {e}")),
            Ok(req) => {
                let id = req.id;
                match (&req.body, greeted) {
                    (RequestBody::Hello { version, .. }, _) => {
                        if *version != PROTOCOL_VERSION {
                            Response::err(
                                id,
                                ErrorCode::VersionMismatch,
                                format!(
                                    "daemon speaks protocol {PROTOCOL_VERSION}, client {version}"
                                ),
                            )
                        } else {
                            greeted = true;
                            Response::ok(
                                id,
                                serde_json::json!({"version": PROTOCOL_VERSION, "daemon": concat!("skyfilld ", env!("CARGO_PKG_VERSION"))}),
                            )
                        }
                    }
                    (_, false) => Response::err(id, ErrorCode::BadRequest, "send hello first"),
                    (_, true) => {
                        let span = tracing::info_span!("request", id, uid);
                        d.handle(uid, gid, req.body)
                            .instrument(span)
                            .await
                            .unwrap_or_else(|(c, m)| Response::err(id, c, m))
                            .with_id(id)
                    }
                }
            }
        };
        if framed
            .send(serde_json::to_string(&resp).unwrap())
            .await
            .is_err()
        {
            return;
        }
    }
}

trait WithId {
    fn with_id(self, id: u64) -> Self;
}
impl WithId for Response {
    fn with_id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }
}

type Fail = (ErrorCode, String);

fn fail(c: ErrorCode, m: impl Into<String>) -> Fail {
    (c, m.into())
}

fn remote_fail(e: RemoteError) -> Fail {
    fail(ErrorCode::Remote, e.to_string())
}

impl Daemon {
    /// Finishes the events a dead worker had taken: refill through a private mount (no events
    /// to ourselves), then answer by fd number; EIO when that is impossible.
    async fn recover(&self, pending: Vec<Pending>) {
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

    async fn handle(&self, uid: u32, gid: u32, body: RequestBody) -> Result<Response, Fail> {
        match body {
            RequestBody::Hello { .. } => unreachable!("handled by the connection"),
            RequestBody::AddRoot {
                local,
                remote,
                secret,
            } => {
                let r = self.add_root(uid, gid, &local, remote, secret).await?;
                Ok(Response::ok(0, r))
            }
            RequestBody::Roots => {
                let roots: Vec<RootInfo> = self
                    .roots
                    .read()
                    .unwrap()
                    .iter()
                    .filter(|r| uid == 0 || r.uid == uid)
                    .map(|r| RootInfo {
                        id: r.id.clone(),
                        local: r.local.display().to_string(),
                        remote: r.remote.url.clone(),
                        owner: r.uid,
                    })
                    .collect();
                Ok(Response::ok(0, roots))
            }
            RequestBody::Status { path } => {
                let v = match path {
                    Some(p) => serde_json::to_value(self.status(uid, &p)?).unwrap(),
                    None => {
                        let roots: Vec<RootRecord> = self
                            .roots
                            .read()
                            .unwrap()
                            .iter()
                            .filter(|r| uid == 0 || r.uid == uid)
                            .cloned()
                            .collect();
                        let mut out = Vec::new();
                        for r in roots {
                            out.push(self.status(uid, &r.local.display().to_string())?);
                        }
                        serde_json::to_value(out).unwrap()
                    }
                };
                Ok(Response::ok(0, v))
            }
            RequestBody::Free { path } => Ok(Response::ok(0, self.free(uid, &path)?)),
            RequestBody::Hydrate { path, pin } => {
                Ok(Response::ok(0, self.hydrate(uid, &path, pin).await?))
            }
            RequestBody::Stats => {
                use std::sync::atomic::Ordering::Relaxed;
                let s = &self.hydrator.stats;
                Ok(Response::ok(
                    0,
                    StatsBody {
                        bytes_fetched: s.bytes_fetched.load(Relaxed),
                        requests: s.requests.load(Relaxed),
                        completed: s.completed.load(Relaxed),
                        denied: s.denied.load(Relaxed),
                        events: s.events.load(Relaxed),
                    },
                ))
            }
        }
    }

    fn open_remote(&self, r: &RootRecord, secret: Option<&str>) -> remote::Result<Arc<dyn Remote>> {
        remote::open_remote(
            &r.remote,
            secret,
            HttpConfig::default(),
            Some(self.opts.state_dir.join("uploads")),
        )
    }

    /// Brings a registered root back after a (re)start: remote, marks, index.
    async fn activate(&self, r: &RootRecord, rebuild_index: bool) -> io::Result<()> {
        let root = File::open(&r.local)?;
        self.group
            .probe(root.as_fd())
            .map_err(|e| other(format!("filesystem refuses pre-content events: {e}")))?;
        let secret = self.registry.secret(&r.id);
        match self.open_remote(r, secret.as_deref()) {
            Ok(rem) => self.hydrator.set_remote(&r.id, rem),
            Err(e) => {
                tracing::error!(root = %r.local.display(), error = %e, "remote unavailable; reads will fail")
            }
        }
        // Mark every file that is not complete (idempotent when the keeper kept the marks;
        // needed after a full restart). Marks are added by name: nothing is opened.
        let mut n = 0u64;
        fsutil::walk_files(root.as_fd(), &RelPath::root(), &mut |dfd, name, _| {
            if let Some(m) = evict::meta_at(dfd, name)? {
                if m.fill != Fill::Complete {
                    let c = std::ffi::CString::new(name).unwrap();
                    self.group.mark_at(dfd, &c)?;
                    n += 1;
                }
                if rebuild_index && m.root == r.id {
                    let _ = self.index.put(&r.id, &m.path, &record_of(&m));
                }
            }
            Ok(())
        })?;
        tracing::info!(root = %r.local.display(), marked = n, "sync root active");
        Ok(())
    }

    async fn add_root(
        &self,
        uid: u32,
        gid: u32,
        local: &str,
        spec: remote::RemoteSpec,
        secret: Option<String>,
    ) -> Result<serde_json::Value, Fail> {
        let bad = |m: String| fail(ErrorCode::InvalidRoot, m);
        let p = Path::new(local);
        if !p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            })
        {
            return Err(bad(format!(
                "{local}: give an absolute path without . or .."
            )));
        }
        let parent = p
            .parent()
            .ok_or_else(|| bad("cannot use / as a sync root".into()))?;
        let cparent =
            std::fs::canonicalize(parent).map_err(|e| bad(format!("{}: {e}", parent.display())))?;
        if cparent != parent {
            return Err(bad(format!("{local}: the path goes through a symlink")));
        }
        let (owner_uid, owner_gid) = match std::fs::symlink_metadata(p) {
            Ok(m) => {
                if !m.is_dir() {
                    return Err(bad(format!("{local} exists and is not a directory")));
                }
                if uid != 0 && m.uid() != uid {
                    return Err(fail(
                        ErrorCode::NotAuthorized,
                        format!("{local} is not your directory"),
                    ));
                }
                if std::fs::read_dir(p)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
                {
                    return Err(bad(format!(
                        "{local} is not empty; a new sync root must start empty"
                    )));
                }
                (m.uid(), m.gid())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pm = std::fs::metadata(parent).map_err(|e| bad(e.to_string()))?;
                if uid != 0 && pm.uid() != uid {
                    return Err(fail(
                        ErrorCode::NotAuthorized,
                        format!("{} is not your directory", parent.display()),
                    ));
                }
                std::fs::create_dir(p).map_err(|e| bad(format!("{local}: {e}")))?;
                let (ou, og) = if uid == 0 {
                    (pm.uid(), pm.gid())
                } else {
                    (uid, gid)
                };
                std::os::unix::fs::chown(p, Some(ou), Some(og)).map_err(|e| bad(e.to_string()))?;
                (ou, og)
            }
            Err(e) => return Err(bad(format!("{local}: {e}"))),
        };
        {
            let roots = self.roots.read().unwrap();
            if let Some(o) = roots
                .iter()
                .find(|r| r.local.starts_with(p) || p.starts_with(&r.local))
            {
                return Err(bad(format!(
                    "{local} overlaps the sync root {}",
                    o.local.display()
                )));
            }
        }
        let root = File::open(p).map_err(|e| bad(e.to_string()))?;
        self.group.probe(root.as_fd()).map_err(|e| {
            bad(format!(
                "{local}: this filesystem cannot deliver fanotify pre-content events ({e}); use ext4, xfs or btrfs on Linux >= 6.14"
            ))
        })?;
        // The daemon reads a file:// remote as root: a user may only use a directory of
        // their own, or they could expose files they cannot read.
        if let Ok(u) = url::Url::parse(&spec.url) {
            if u.scheme() == "file" && uid != 0 {
                let dir = u
                    .to_file_path()
                    .map_err(|_| bad(format!("bad file URL {}", spec.url)))?;
                let m =
                    std::fs::metadata(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
                if m.uid() != uid {
                    return Err(fail(
                        ErrorCode::NotAuthorized,
                        format!(
                            "{} is not your directory; a file:// remote must be",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let rec = RootRecord {
            id: id.clone(),
            local: p.to_path_buf(),
            remote: spec,
            uid: owner_uid,
            gid: owner_gid,
        };
        let rem = self
            .open_remote(&rec, secret.as_deref())
            .map_err(remote_fail)?;
        rem.stat(&RelPath::root()).await.map_err(remote_fail)?;
        if let Some(s) = &secret {
            self.registry
                .save_secret(&id, s)
                .map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        }
        {
            let mut roots = self.roots.write().unwrap();
            roots.push(rec.clone());
            self.registry
                .save(&roots)
                .map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        }
        self.hydrator.set_remote(&id, rem.clone());
        let t = std::time::Instant::now();
        let mut pop = Populator::new(
            root.as_fd(),
            &id,
            Owner {
                uid: owner_uid,
                gid: owner_gid,
            },
            &self.group,
        );
        let index = self.index.clone();
        let mut sink = |e: crate::model::RemoteEntry| -> remote::Result<()> {
            pop.add(&e).map_err(|err| RemoteError::io(&e.path, err))?;
            if e.kind == crate::model::Kind::File {
                let avail = if e.size == 0 { "local" } else { "online-only" };
                let _ = index.put(
                    &id,
                    e.path.as_str(),
                    &Record {
                        availability: avail.into(),
                        size: e.size,
                        version: e.version.token(),
                    },
                );
            }
            Ok(())
        };
        let walk = rem
            .walk(&RelPath::root(), &mut sink)
            .await
            .map_err(remote_fail)?;
        let st = pop.stats;
        tracing::info!(root = local, files = st.files, dirs = st.dirs, rejected = walk.rejected, elapsed = ?t.elapsed(), "populated");
        Ok(
            serde_json::json!({"root_id": id, "files": st.files, "dirs": st.dirs, "rejected": walk.rejected, "seconds": t.elapsed().as_secs_f64()}),
        )
    }

    /// The caller's root containing `path`, and the path below it.
    fn resolve(&self, uid: u32, path: &str) -> Result<(RootRecord, RelPath), Fail> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(fail(
                ErrorCode::BadRequest,
                format!("{path}: give an absolute path"),
            ));
        }
        let roots = self.roots.read().unwrap();
        let r = roots
            .iter()
            .filter(|r| uid == 0 || r.uid == uid)
            .find(|r| p.starts_with(&r.local))
            .ok_or_else(|| {
                fail(
                    ErrorCode::NotARoot,
                    format!("{path} is not in one of your sync roots"),
                )
            })?;
        let rest = p.strip_prefix(&r.local).unwrap();
        let s = rest
            .to_str()
            .ok_or_else(|| fail(ErrorCode::BadRequest, "path is not UTF-8"))?;
        let rel =
            RelPath::parse(s).map_err(|e| fail(ErrorCode::BadRequest, format!("{path}: {e}")))?;
        Ok((r.clone(), rel))
    }

    fn status(&self, uid: u32, path: &str) -> Result<PathStatus, Fail> {
        let (r, rel) = self.resolve(uid, path)?;
        let root = File::open(&r.local).map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        let fd = fsutil::open_beneath(root.as_fd(), &rel, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
        let st = fsutil::fstat(fd.as_fd()).map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let mut c = Counts::default();
            let mut size = 0;
            let recs = self
                .index
                .below(&r.id, rel.as_str())
                .map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
            for (_, rec) in recs {
                size += rec.size;
                match rec.availability.as_str() {
                    "online-only" => c.online_only += 1,
                    "partial" => c.partial += 1,
                    "pinned" => c.pinned += 1,
                    _ => c.local += 1,
                }
            }
            return Ok(PathStatus {
                path: path.into(),
                kind: "dir".into(),
                availability: if c.online_only + c.partial == 0 {
                    "local".into()
                } else {
                    "mixed".into()
                },
                size,
                local_bytes: 0,
                counts: Some(c),
            });
        }
        let m =
            meta::read_proc_fd(fd.as_fd()).map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        Ok(match m {
            None => PathStatus {
                path: path.into(),
                kind: "file".into(),
                availability: "unmanaged".into(),
                size: st.st_size as u64,
                local_bytes: st.st_size as u64,
                counts: None,
            },
            Some(m) => PathStatus {
                path: path.into(),
                kind: "file".into(),
                availability: m.availability().into(),
                size: m.size,
                local_bytes: match m.fill {
                    Fill::Complete => m.size,
                    Fill::Partial => m.ranges.bytes(),
                    Fill::Placeholder => 0,
                },
                counts: None,
            },
        })
    }

    /// Every regular file at or below `rel`.
    fn files_below(root: &File, rel: &RelPath) -> io::Result<Vec<RelPath>> {
        let fd = fsutil::open_beneath(root.as_fd(), rel, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fsutil::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            return Ok(vec![rel.clone()]);
        }
        let mut out = Vec::new();
        fsutil::walk_files(root.as_fd(), rel, &mut |_, _, p| {
            out.push(p.clone());
            Ok(())
        })?;
        Ok(out)
    }

    fn free(&self, uid: u32, path: &str) -> Result<serde_json::Value, Fail> {
        let (r, rel) = self.resolve(uid, path)?;
        let root = File::open(&r.local).map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
        let files = Self::files_below(&root, &rel)
            .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
        let single = files.len() == 1 && files[0] == rel;
        let (mut freed, mut n) = (0u64, 0u64);
        let mut skipped = Vec::new();
        for f in files {
            match evict::evict(root.as_fd(), &f, &self.group) {
                Ok(b) => {
                    freed += b;
                    n += 1;
                    if let Ok(Some(m)) = self.meta_of(&root, &f) {
                        let _ = self.index.put(&r.id, &m.path, &record_of(&m));
                    }
                }
                Err(EvictError::AlreadyOnline) | Err(EvictError::NotManaged) if !single => {}
                Err(e) if single => {
                    let code = if matches!(e, EvictError::Busy) {
                        ErrorCode::Busy
                    } else {
                        ErrorCode::BadRequest
                    };
                    return Err(fail(code, format!("{path}: {e}")));
                }
                Err(e) => {
                    skipped.push(serde_json::json!({"path": f.as_str(), "reason": e.to_string()}))
                }
            }
        }
        Ok(serde_json::json!({"files": n, "freed_bytes": freed, "skipped": skipped}))
    }

    fn meta_of(&self, root: &File, rel: &RelPath) -> io::Result<Option<FileMeta>> {
        let pfd = fsutil::open_beneath(
            root.as_fd(),
            &rel.parent().unwrap_or_default(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        evict::meta_at(pfd.as_fd(), rel.name())
    }

    /// Makes files local now by opening them: the daemon's own open is served by the event
    /// loop like any other (whole file, since the opener is the daemon).
    async fn hydrate(&self, uid: u32, path: &str, pin: bool) -> Result<serde_json::Value, Fail> {
        let (r, rel) = self.resolve(uid, path)?;
        let root =
            Arc::new(File::open(&r.local).map_err(|e| fail(ErrorCode::Internal, e.to_string()))?);
        let files = Self::files_below(&root, &rel)
            .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
        let mut done = 0u64;
        let mut errors = Vec::new();
        for f in files {
            let root = root.clone();
            let f2 = f.clone();
            let res = tokio::task::spawn_blocking(move || -> io::Result<Option<FileMeta>> {
                let fd: OwnedFd =
                    fsutil::open_beneath(root.as_fd(), &f2, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
                let mut m = meta::read_fd(fd.as_fd())?;
                if let (true, Some(rec)) = (pin, m.as_mut()) {
                    rec.pin = Pin::Pinned;
                    meta::write_fd(fd.as_fd(), rec)?;
                }
                Ok(m)
            })
            .await
            .map_err(|e| fail(ErrorCode::Internal, e.to_string()))?;
            match res {
                Ok(Some(m)) => {
                    done += 1;
                    let _ = self.index.put(&r.id, &m.path, &record_of(&m));
                }
                Ok(None) => {}
                Err(e) => {
                    errors.push(serde_json::json!({"path": f.as_str(), "error": e.to_string()}))
                }
            }
        }
        Ok(serde_json::json!({"files": done, "errors": errors}))
    }
}

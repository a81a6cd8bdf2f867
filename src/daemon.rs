//! `skyfilld`: the composition root. A tiny keeper process ([`keeper`]) owns the fanotify
//! group and the socket and restarts the worker; the worker builds one [`core::Core`] (remotes,
//! hydrator, index, registry, event hub) and runs its tasks: the kernel's events (each
//! answered by the hydrator), the notice consumer ([`events`]), sync scheduling
//! ([`syncing`]) and the socket server, whose requests the [`handler`] maps to the services
//! (`roots`, `files`, `settings`, `doctor`, `syncing`). This is the only place that names
//! the concrete types.

use crate::fsutil;
use crate::hsm::fanotify::Group;
use crate::hsm::hydrate::Hydrator;
use crate::hsm::meta::FileMeta;
use crate::hsm::policy::Policy;
use crate::index::{Index, Record, SledIndex};
use crate::roots::Registry;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

mod core;
mod doctor;
pub mod error;
mod events;
mod fdstore;
mod files;
mod handler;
mod journal;
mod keeper;
pub mod limits;
pub mod memory;
mod origin;
mod prefetch;
mod rootfs;
mod roots;
mod schedule;
mod settings;
mod syncing;

pub use keeper::run_keeper;

use journal::{Journal, Pending};

/// Descriptor numbers the keeper hands to the worker.
pub const GROUP_FD: RawFd = 3;
pub const LISTEN_FD: RawFd = 4;

#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

/// Name and version reported in the handshake and by `doctor`.
fn daemon_name() -> String {
    concat!("skyfilld ", env!("CARGO_PKG_VERSION")).into()
}

/// The worker, as the socket server sees it: the shared state, whose services carry out
/// requests (see [`handler`]).
pub struct Daemon {
    core: Arc<core::Core>,
}

impl core::Core {
    /// Where bytes are: status, list, pin, free, hydrate.
    pub fn files(&self) -> files::Files<'_> {
        files::Files(self)
    }

    /// The roots' life cycle: activate, add, remove.
    pub fn lifecycle(&self) -> roots::Roots<'_> {
        roots::Roots(self)
    }

    /// Settings, sign-in, pause.
    pub fn settings(&self) -> settings::Settings<'_> {
        settings::Settings(self)
    }

    /// Sync passes.
    pub fn passes(&self) -> syncing::Passes<'_> {
        syncing::Passes(self)
    }
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
        (Group::new()?, keeper::bind_socket(&opts.socket)?)
    } else {
        // SAFETY: the keeper passed these descriptors at fixed numbers, open and ours alone.
        unsafe {
            (
                Group::from_raw(GROUP_FD),
                std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FD),
            )
        }
    };
    // Before any mark of this worker: each mark from here on also tells the gate.
    crate::hsm::gate::install_from_env();
    let group = Arc::new(group);
    let (journal, pending) = Journal::open(&opts.state_dir.join("inflight.log"))?;
    let journal = Arc::new(journal);
    let policy: Policy = match std::fs::read(opts.state_dir.join("policy.json")) {
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|e| io::Error::other(format!("policy.json: {e}")))?
        }
        Err(_) => Policy::default(),
    };
    let (notices, notices_rx) = tokio::sync::mpsc::unbounded_channel();
    let hydrator = Hydrator::new(policy, group.clone(), notices.clone());
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
        Arc::new(SledIndex::open(&index_path).map_err(|e| io::Error::other(e.to_string()))?);
    let registry = Registry::new(&opts.state_dir)?;
    let roots = registry.load()?;
    raise_fd_limit();
    let core = Arc::new(core::Core {
        opts,
        group: group.clone(),
        hydrator: hydrator.clone(),
        index,
        registry,
        roots: RwLock::new(Vec::new()),
        events: crate::ipc::server::EventHub::new(4096),
        limits,
        last_error: Mutex::new(Default::default()),
        syncing: Mutex::new(Default::default()),
        sync: schedule::SyncCtl::new(),
        notices,
    });
    tokio::spawn(events::run(core.clone(), notices_rx));
    let weak = Arc::downgrade(&core);
    let weak2 = weak.clone();
    hydrator.set_origin_finder(Arc::new(move |root: &str, file, hash| {
        weak2
            .upgrade()
            .and_then(|c| origin::find(&c, root, file, hash))
    }));
    hydrator.set_room_check(Arc::new(move |root: &str, bytes: u64| {
        weak.upgrade()
            .and_then(|c| c.root_by_id(root).map(|r| events::fits(&c, &r, bytes)))
            .unwrap_or(false)
    }));
    // Activation opens no managed file (marks are added by name), so it runs before the
    // event loop; then the events the previous worker left are finished, before any new
    // event is read (their fd numbers must not be reused meanwhile).
    for mut r in roots {
        if let Err(e) = core.lifecycle().activate(&mut r, rebuild).await {
            tracing::error!(root = %r.local.display(), error = %e, "cannot activate sync root");
        }
        core.roots.write().unwrap().push(r);
    }
    {
        let roots = core.roots.read().unwrap().clone();
        let _ = core.registry.save(&roots);
    }
    journal::recover(&core, pending).await;
    tokio::spawn(event_loop(group.clone(), hydrator.clone(), journal));
    {
        let core = core.clone();
        std::thread::Builder::new()
            .name("folder-watcher".into())
            .spawn(move || syncing::watch_loop(core))?;
    }
    tokio::spawn(syncing::background(core.clone()));
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    tracing::info!(socket = %core.opts.socket.display(), "worker ready");
    let admission = crate::ipc::server::Admission::new(crate::ipc::server::ConnLimits {
        per_user: core.limits.connections_per_user,
        total: core.limits.connections,
    });
    crate::ipc::server::accept_loop(Arc::new(Daemon { core }), listener, admission).await;
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

/// The index record of a file's xattr record.
fn record_of(m: &FileMeta) -> Record {
    Record {
        availability: m.availability(),
        size: m.size,
        version: m.version.clone(),
        local_bytes: m.local_bytes(),
    }
}

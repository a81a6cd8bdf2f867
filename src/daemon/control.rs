//! The daemon's control plane: what each socket request does and for whom. Every request is
//! authorized by the peer's uid (a user acts on their own roots, root on all), every path is
//! resolved beneath its root with `openat2` (no `..`, no symlinks), files owned by anyone
//! but the root's owner are left alone, and the daemon touches placeholders only through a
//! private ignore-marked mount, so a request never raises a pre-content event to itself.

use super::{other, record_of, Daemon};
use crate::asuser::{self, UserCreds};
use crate::fsutil;
use crate::hsm::evict::{self, EvictError};
use crate::hsm::hydrate::{Bucket, Note, RootPolicy};
use crate::hsm::meta::{self, FileMeta, Fill, Pin};
use crate::hsm::pins;
use crate::hsm::placeholder::{Owner, Populator};
use crate::index::Record;
use crate::ipc::proto::*;
use crate::ipc::server::{fail, Envelope, Fail, Handler, JobSink, Peer};
use crate::model::RelPath;
use crate::remote::{self, http::HttpConfig, Remote, RemoteError};
use crate::roots::RootRecord;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, Fail> {
    serde_json::to_value(v).map_err(|e| fail(ErrorCode::Internal, e.to_string()))
}

fn internal(e: impl std::fmt::Display) -> Fail {
    fail(ErrorCode::Internal, e.to_string())
}

fn remote_fail(e: RemoteError) -> Fail {
    let auth = match &e {
        RemoteError::Auth { .. } => true,
        RemoteError::Exhausted { last, .. } => matches!(**last, RemoteError::Auth { .. }),
        _ => false,
    };
    if auth {
        fail(
            ErrorCode::Auth,
            format!("{e}; sign in again with `skyfill login`"),
        )
    } else {
        fail(ErrorCode::Remote, e.to_string())
    }
}

fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// `synced` or `pending` for a file (and its record, if it is managed).
fn sync_state(m: Option<&FileMeta>, st: &libc::stat) -> &'static str {
    match m {
        None => "pending",
        Some(m)
            if m.fill == Fill::Complete
                && (st.st_size as u64 != m.size
                    || (st.st_mtime, st.st_mtime_nsec as u32) != m.mtime) =>
        {
            "pending"
        }
        Some(_) => "synced",
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
struct Found {
    is_dir: bool,
    dirs: Vec<RelPath>,
    files: Vec<(RelPath, u32)>,
}

/// Lists `rel` and, for a directory, everything below it, never following a symlink.
fn scan(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<Found> {
    fsutil::blocking(|| scan_tree(root, rel))
}

fn scan_tree(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<Found> {
    let fd = fsutil::open_beneath(root, rel, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    let st = fsutil::fstat(fd.as_fd())?;
    let mut f = Found::default();
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            f.files.push((rel.clone(), st.st_uid));
            return Ok(f);
        }
        libc::S_IFDIR => f.is_dir = true,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
    let mut stack = vec![rel.clone()];
    while let Some(d) = stack.pop() {
        let dfd = fsutil::open_beneath(root, &d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        f.dirs.push(d.clone());
        for raw in fsutil::read_dir_names(dfd.as_fd())? {
            let Ok(name) = std::str::from_utf8(&raw) else {
                continue;
            };
            let Ok(p) = d.join(name) else { continue };
            let Ok(st) = fsutil::stat_at(dfd.as_fd(), name) else {
                continue; // gone meanwhile
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => stack.push(p),
                libc::S_IFREG => f.files.push((p, st.st_uid)),
                _ => {}
            }
        }
    }
    Ok(f)
}

/// What a batch does to each file after writing its setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Download,
    Evict,
    Nothing,
}

/// Names of filesystems by `statfs` magic.
/// Finds or makes a new sync root's folder and opens it once, for `peer`: the parent is
/// resolved as the caller, the folder is made and opened (`O_NOFOLLOW`) as its future owner
/// (the caller; for root, the parent's owner), and the opened folder must be a directory
/// that owner owns and that is empty. Returns the folder and its owner.
fn open_new_root(p: &Path, peer: Peer) -> Result<(File, u32, u32), Fail> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let bad = |m: String| fail(ErrorCode::InvalidRoot, m);
    let local = p.display().to_string();
    let parent = p.parent().expect("checked by the caller");
    let name = p
        .file_name()
        .ok_or_else(|| bad(format!("{local}: no folder name")))?;
    let cname = std::ffi::CString::new(name.as_encoded_bytes())
        .map_err(|_| bad(format!("{local}: NUL in the path")))?;
    let caller = if peer.is_root() {
        UserCreds::current()
    } else {
        UserCreds::of(peer.uid, peer.gid)
    };
    // One resolution, as the caller, refusing any symlink on the way (no check-then-open).
    let parent_fd = asuser::with_creds(&caller, || -> Result<OwnedFd, Fail> {
        fsutil::open_no_symlinks(parent, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ELOOP) => bad(format!("{local}: the path goes through a symlink")),
                _ => bad(format!("{}: {e}", parent.display())),
            }
        })
    })
    .map_err(|e| internal(format!("cannot act as uid {}: {e}", peer.uid)))??;
    let owner = if peer.is_root() {
        let pst = fsutil::fstat(parent_fd.as_fd()).map_err(internal)?;
        UserCreds::of(pst.st_uid, pst.st_gid)
    } else {
        caller
    };
    let opened = asuser::with_creds(&owner, || -> Result<OwnedFd, Fail> {
        // SAFETY: valid fd and C string.
        let made = unsafe { libc::mkdirat(parent_fd.as_raw_fd(), cname.as_ptr(), 0o700) };
        if made < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(bad(format!("{local}: {e}")));
            }
        }
        // SAFETY: as above; the fd is owned right after.
        let fd = unsafe {
            libc::openat(
                parent_fd.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY
                    | libc::O_DIRECTORY
                    | libc::O_NOFOLLOW
                    | libc::O_NONBLOCK
                    | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                    bad(format!("{local} exists and is not a directory"))
                }
                _ => bad(format!("{local}: {e}")),
            });
        }
        // SAFETY: fresh descriptor from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .map_err(|e| internal(format!("cannot act as uid {}: {e}", owner.uid)))??;
    let st = fsutil::fstat(opened.as_fd()).map_err(internal)?;
    if st.st_uid != owner.uid {
        return Err(fail(
            ErrorCode::NotAuthorized,
            format!("{local} is not your directory"),
        ));
    }
    let empty = fsutil::read_dir_names(opened.as_fd())
        .map(|n| n.is_empty())
        .unwrap_or(false);
    if !empty {
        return Err(bad(format!(
            "{local} is not empty; a new sync root must start empty"
        )));
    }
    Ok((File::from(opened), st.st_uid, st.st_gid))
}

fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x794C_7630 => "overlayfs".into(),
        m => format!("type {m:#x}"),
    }
}

#[async_trait::async_trait]
impl Handler for Daemon {
    fn daemon_name(&self) -> String {
        concat!("skyfilld ", env!("CARGO_PKG_VERSION")).into()
    }

    fn events(&self, peer: Peer) -> tokio::sync::broadcast::Receiver<Envelope> {
        self.events.subscribe(peer.uid)
    }

    async fn handle(
        &self,
        peer: Peer,
        body: RequestBody,
        jobs: JobSink,
    ) -> Result<serde_json::Value, Fail> {
        match body {
            RequestBody::Hello { .. } | RequestBody::Subscribe => {
                Err(fail(ErrorCode::BadRequest, "handled by the connection"))
            }
            RequestBody::AddRoot {
                local,
                remote,
                secret,
                persist_secret,
            } => json(
                self.add_root(peer, &local, remote, secret, persist_secret)
                    .await?,
            ),
            RequestBody::RemoveRoot { local, mode } => {
                json(self.remove_root(peer, &local, mode, &jobs).await?)
            }
            RequestBody::Roots => json(
                self.mine(peer)
                    .iter()
                    .map(|r| self.root_info(r))
                    .collect::<Vec<_>>(),
            ),
            // Folder scans are blocking filesystem work: the runtime moves its other tasks
            // (the kernel's events, other users) off this thread meanwhile.
            RequestBody::Status { path: Some(p) } => {
                json(fsutil::blocking(|| self.status(peer, &p))?)
            }
            RequestBody::List { path } => json(fsutil::blocking(|| self.list(peer, &path))?),
            RequestBody::Status { path: None } => fsutil::blocking(|| {
                let mut out = Vec::new();
                for r in self.mine(peer) {
                    out.push(self.status(peer, &r.local.display().to_string())?);
                }
                json(out)
            }),
            RequestBody::Pin {
                path,
                setting,
                recursive,
            } => {
                let action = match setting {
                    Pin::Pinned => Action::Download,
                    Pin::OnlineOnly => Action::Evict,
                    Pin::Inherit => Action::Nothing,
                };
                json(
                    self.batch(peer, &path, recursive, Some(setting), action, "pin", &jobs)
                        .await?,
                )
            }
            RequestBody::Free { path, recursive } => json(
                self.batch(peer, &path, recursive, None, Action::Evict, "free", &jobs)
                    .await?,
            ),
            RequestBody::Hydrate { path, recursive } => json(
                self.batch(
                    peer,
                    &path,
                    recursive,
                    None,
                    Action::Download,
                    "hydrate",
                    &jobs,
                )
                .await?,
            ),
            RequestBody::Login {
                local,
                secret,
                persist,
            } => json(self.login(peer, &local, &secret, persist).await?),
            RequestBody::Pause { local } => json(self.set_paused(peer, local.as_deref(), true)?),
            RequestBody::Resume { local } => {
                json(self.set_paused(peer, local.as_deref(), false)?)
            }
            RequestBody::Sync { path } => json(self.sync_now(peer, path.as_deref()).await?),
            RequestBody::ConfigGet => json(self.config_get(peer)),
            RequestBody::ConfigSet { key, value, local } => {
                self.config_set(peer, &key, value, local.as_deref())?;
                json(self.config_get(peer))
            }
            RequestBody::Doctor => json(self.doctor(peer).await),
            RequestBody::Stats => {
                let s = &self.hydrator.stats;
                // Root sees the daemon's totals; a user the sums over their own roots.
                let x = if peer.is_root() {
                    s.total()
                } else {
                    self.mine(peer)
                        .iter()
                        .map(|r| s.of_root(&r.id))
                        .fold(Default::default(), |a, b| a + b)
                };
                json(StatsBody {
                    bytes_fetched: x.bytes_fetched,
                    requests: x.requests,
                    completed: x.completed,
                    denied: x.denied,
                    events: x.events,
                })
            }
        }
    }
}

impl Daemon {
    // ------------------------------------------------------------ roots and peers

    /// The roots `peer` may see.
    fn mine(&self, peer: Peer) -> Vec<RootRecord> {
        self.roots
            .read()
            .unwrap()
            .iter()
            .filter(|r| peer.is_root() || r.uid == peer.uid)
            .cloned()
            .collect()
    }

    pub(super) fn root_by_id(&self, id: &str) -> Option<RootRecord> {
        self.roots
            .read()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// The caller's root whose directory is exactly `local`.
    fn root_at(&self, peer: Peer, local: &str) -> Result<RootRecord, Fail> {
        let p = Path::new(local.trim_end_matches('/'));
        self.mine(peer)
            .into_iter()
            .find(|r| r.local == p)
            .ok_or_else(|| {
                fail(
                    ErrorCode::NotARoot,
                    format!("{local} is not one of your sync roots"),
                )
            })
    }

    fn update_root(&self, id: &str, f: impl FnOnce(&mut RootRecord)) -> Result<RootRecord, Fail> {
        let mut roots = self.roots.write().unwrap();
        let r = roots
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| fail(ErrorCode::NotARoot, "the root was removed"))?;
        f(r);
        let out = r.clone();
        self.registry.save(&roots).map_err(internal)?;
        Ok(out)
    }

    pub(super) fn emit(&self, uid: u32, event: Event) {
        self.events.send(Envelope { uid, event });
    }

    fn root_info(&self, r: &RootRecord) -> RootInfo {
        RootInfo {
            id: r.id.clone(),
            local: r.local.display().to_string(),
            remote: r.remote.url.clone(),
            user: r.remote.user.clone(),
            owner: r.uid,
            paused: r.paused,
            signed_in: self.hydrator.remote(&r.id).is_some(),
            secret_persisted: r.persist_secret,
            budget: r.budget,
            last_error: self.last_error.lock().unwrap().get(&r.id).cloned(),
        }
    }

    pub(super) fn set_error(&self, r: &RootRecord, e: Option<String>) {
        let changed = {
            let mut m = self.last_error.lock().unwrap();
            match &e {
                Some(e) => m.insert(r.id.clone(), e.clone()).as_ref() != Some(e),
                None => m.remove(&r.id).is_some(),
            }
        };
        if changed {
            match e {
                Some(message) => self.emit(
                    r.uid,
                    Event::Error {
                        path: Some(r.local.display().to_string()),
                        code: ErrorCode::Remote,
                        message,
                    },
                ),
                None => self.emit(
                    r.uid,
                    Event::Root {
                        local: r.local.display().to_string(),
                        change: "online".into(),
                    },
                ),
            }
        }
    }

    /// Opens a root's directory, refusing one that was replaced since it was added.
    pub(super) fn open_root(&self, r: &RootRecord) -> Result<File, Fail> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&r.local)
            .map_err(|e| {
                fail(
                    ErrorCode::NotFound,
                    format!("sync root {}: {e}", r.local.display()),
                )
            })?;
        let st = fsutil::fstat(f.as_fd()).map_err(internal)?;
        if st.st_uid != r.uid {
            return Err(fail(
                ErrorCode::InvalidRoot,
                format!(
                    "{} no longer belongs to the root's owner; remove the root and add it again",
                    r.local.display()
                ),
            ));
        }
        if let Some(k) = r.key {
            if k != (st.st_dev, st.st_ino) {
                return Err(fail(
                    ErrorCode::InvalidRoot,
                    format!(
                        "{} is no longer the folder that was added as a sync root; remove the root and add it again",
                        r.local.display()
                    ),
                ));
            }
        }
        Ok(f)
    }

    /// A private, ignore-marked view of the root: opening placeholders there raises no event.
    pub(super) fn quiet(&self, root: &File) -> Result<OwnedFd, Fail> {
        let mnt = self
            .group
            .private_mount(root.as_fd())
            .map_err(|e| internal(format!("private mount: {e}")))?;
        fsutil::open_beneath(
            mnt.as_fd(),
            &RelPath::root(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| internal(format!("private mount root: {e}")))
    }

    /// The caller's root containing `path`, and the path below it.
    fn resolve(&self, peer: Peer, path: &str) -> Result<(RootRecord, RelPath), Fail> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(fail(
                ErrorCode::BadRequest,
                format!("{path}: give an absolute path"),
            ));
        }
        let r = self
            .mine(peer)
            .into_iter()
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
        Ok((r, rel))
    }

    pub(super) fn abs(r: &RootRecord, rel: &str) -> String {
        if rel.is_empty() {
            r.local.display().to_string()
        } else {
            r.local.join(rel).display().to_string()
        }
    }

    /// Hydrator notes become index updates and events.
    pub(super) fn on_note(&self, n: Note<'_>) {
        match n {
            Note::Changed(m) => {
                let _ = self.index.put(&m.root, &m.path, &record_of(m));
                if let Some(r) = self.root_by_id(&m.root) {
                    self.emit(
                        r.uid,
                        Event::State {
                            path: Self::abs(&r, &m.path),
                            state: m.availability().into(),
                            sync: "synced".into(),
                            size: m.size,
                            local_bytes: m.local_bytes(),
                        },
                    );
                }
            }
            Note::Progress {
                meta,
                done,
                total,
                app,
            } => {
                if let Some(r) = self.root_by_id(&meta.root) {
                    self.emit(
                        r.uid,
                        Event::Progress {
                            path: Self::abs(&r, &meta.path),
                            direction: "down".into(),
                            done,
                            total,
                            pid: app.as_ref().map(|a| a.0),
                            app: app.map(|a| a.1),
                        },
                    );
                }
            }
            Note::Failed { meta, errno } => {
                if let Some(r) = self.root_by_id(&meta.root) {
                    self.emit(
                        r.uid,
                        Event::Error {
                            path: Some(Self::abs(&r, &meta.path)),
                            code: ErrorCode::Remote,
                            message: format!("download failed: {}", errno_text(errno)),
                        },
                    );
                }
            }
        }
    }

    fn open_remote(&self, r: &RootRecord, secret: Option<&str>) -> remote::Result<Arc<dyn Remote>> {
        remote::open_remote(
            &r.remote,
            secret,
            HttpConfig {
                // No single listing may hold more than the whole root may.
                max_listing_entries: self
                    .limits
                    .entries_per_listing
                    .min(self.limits.entries_per_root),
                ..HttpConfig::default()
            },
            Some(self.opts.state_dir.join("uploads")),
            UserCreds::of(r.uid, r.gid),
        )
    }

    /// Applies the owner's settings (per-application policy, bandwidth) to their roots.
    fn apply_user_policy(&self, uid: u32) {
        let s = self.registry.settings(uid);
        let bucket = (s.download_limit > 0).then(|| Arc::new(Bucket::new(s.download_limit)));
        for r in self.roots.read().unwrap().iter().filter(|r| r.uid == uid) {
            self.hydrator.set_root_policy(
                &r.id,
                RootPolicy {
                    never_download: s.never_download.clone(),
                    download_limit: bucket.clone(),
                },
            );
        }
    }

    // ------------------------------------------------------------ activation

    /// Brings a registered root back after a (re)start: remote, marks, index, policy.
    pub(super) async fn activate(&self, r: &mut RootRecord, rebuild_index: bool) -> io::Result<()> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&r.local)?;
        let st = fsutil::fstat(root.as_fd())?;
        if st.st_uid != r.uid {
            return Err(other(format!(
                "{} no longer belongs to the root's owner (uid {}); not activating it",
                r.local.display(),
                r.uid
            )));
        }
        match r.key {
            None => r.key = Some((st.st_dev, st.st_ino)),
            Some(k) if k != (st.st_dev, st.st_ino) => {
                return Err(other(format!(
                    "{} was replaced since it was added; not activating it",
                    r.local.display()
                )))
            }
            Some(_) => {}
        }
        self.group
            .probe(root.as_fd())
            .map_err(|e| other(format!("filesystem refuses pre-content events: {e}")))?;
        let secret = self.registry.secret(&r.id);
        if r.has_secret && secret.is_none() {
            tracing::warn!(root = %r.local.display(), "no stored secret: waiting for `skyfill login` (or the tray app)");
        } else {
            match self.open_remote(r, secret.as_deref()) {
                Ok(rem) => self.hydrator.set_remote(&r.id, rem),
                Err(e) => {
                    tracing::error!(root = %r.local.display(), error = %e, "remote unavailable; reads will fail")
                }
            }
        }
        // Mark every file that is not complete (idempotent when the keeper kept the marks;
        // needed after a full restart). Marks are added by name: nothing is opened.
        let mut n = 0u64;
        let id = r.id.clone();
        fsutil::walk_files(root.as_fd(), &RelPath::root(), &mut |dfd, name, _| {
            if let Some(m) = evict::meta_at(dfd, name)? {
                if m.fill != Fill::Complete {
                    let c = std::ffi::CString::new(name).unwrap();
                    self.group.mark_at(dfd, &c)?;
                    n += 1;
                }
                if rebuild_index && m.root == id {
                    let _ = self.index.put(&id, &m.path, &record_of(&m));
                }
            }
            Ok(())
        })?;
        let s = self.registry.settings(r.uid);
        self.hydrator.set_root_policy(
            &r.id,
            RootPolicy {
                never_download: s.never_download,
                download_limit: (s.download_limit > 0)
                    .then(|| Arc::new(Bucket::new(s.download_limit))),
            },
        );
        tracing::info!(root = %r.local.display(), marked = n, "sync root active");
        Ok(())
    }

    // ------------------------------------------------------------ add and remove

    async fn add_root(
        &self,
        peer: Peer,
        local: &str,
        spec: remote::RemoteSpec,
        secret: Option<String>,
        persist_secret: bool,
    ) -> Result<AddRootResult, Fail> {
        let bad = |m: String| fail(ErrorCode::InvalidRoot, m);
        let local = if local.len() > 1 {
            local.trim_end_matches('/')
        } else {
            local
        };
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
        if p.parent().is_none() {
            return Err(bad("cannot use / as a sync root".into()));
        }
        // Everything about the folder happens as the caller (or, for root, as the owner of
        // the parent folder): the kernel refuses what they could not do, errors say only what
        // they could see, and a folder made here is theirs without any chown.
        let (root, owner_uid, owner_gid) = {
            let p = p.to_path_buf();
            tokio::task::spawn_blocking(move || open_new_root(&p, peer))
                .await
                .map_err(internal)??
        };
        let st = fsutil::fstat(root.as_fd()).map_err(internal)?;
        {
            let roots = self.roots.read().unwrap();
            if let Some(o) = roots
                .iter()
                .find(|r| r.local.starts_with(p) || p.starts_with(&r.local))
            {
                return Err(bad(if peer.is_root() || o.uid == peer.uid {
                    format!("{local} overlaps the sync root {}", o.local.display())
                } else {
                    format!("{local} overlaps another sync root")
                }));
            }
        }
        self.group.probe(root.as_fd()).map_err(|e| {
            bad(format!(
                "{local}: this filesystem cannot deliver fanotify pre-content events ({e}); use ext4, xfs or btrfs on Linux >= 6.14"
            ))
        })?;
        let id = format!("{:016x}", rand::random::<u64>());
        let rec = RootRecord {
            id: id.clone(),
            local: p.to_path_buf(),
            remote: spec,
            uid: owner_uid,
            gid: owner_gid,
            key: Some((st.st_dev, st.st_ino)),
            paused: false,
            has_secret: secret.is_some(),
            persist_secret: secret.is_some() && persist_secret,
            budget: None,
        };
        let rem = self
            .open_remote(&rec, secret.as_deref())
            .map_err(remote_fail)?;
        rem.stat(&RelPath::root()).await.map_err(remote_fail)?;
        if let (Some(s), true) = (&secret, rec.persist_secret) {
            self.registry.save_secret(&id, s).map_err(internal)?;
        }
        // No sync pass may run on the root until its placeholders are all made: a pass would
        // create the same placeholders alongside (and each side would find the other's).
        let pass_lock = self.sync.lock(&id);
        let _no_pass = pass_lock.lock().await;
        {
            let mut roots = self.roots.write().unwrap();
            if roots
                .iter()
                .any(|r| r.local.starts_with(p) || p.starts_with(&r.local))
            {
                return Err(bad(format!("{local} overlaps another sync root")));
            }
            roots.push(rec.clone());
            self.registry.save(&roots).map_err(internal)?;
        }
        self.hydrator.set_remote(&id, rem.clone());
        self.apply_user_policy(owner_uid);
        let t = Instant::now();
        let (stats, rejected) = match self.populate(&rec, &root, &rem, &RelPath::root()).await {
            Ok(x) => x,
            Err((c, m)) => {
                // The root stays (what was made is kept; the next pass completes it or
                // fails the same way): say so, and keep the error for `roots` and `doctor`.
                self.set_error(&rec, Some(m.clone()));
                return Err((
                    c,
                    format!(
                        "{m}; the sync root was added but is incomplete (see `skyfill doctor`)"
                    ),
                ));
            }
        };
        tracing::info!(root = local, files = stats.files, dirs = stats.dirs, rejected, elapsed = ?t.elapsed(), "populated");
        self.emit(
            owner_uid,
            Event::Root {
                local: local.into(),
                change: "added".into(),
            },
        );
        Ok(AddRootResult {
            root_id: id,
            files: stats.files,
            dirs: stats.dirs,
            rejected,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Creates placeholders for remote entries below `below` that are new: not on disk and
    /// not known to the index (a known file missing on disk was deleted locally).
    ///
    /// Listing and creating overlap: the walk runs here while creator threads make the
    /// placeholders as entries arrive (bounded queues), so adding a large root takes about as
    /// long as the slowest part rather than the sum. Entries are spread over the creators by
    /// folder (a file goes where its folder is made), so each folder is filled by one thread.
    /// Only used by add-root, on a root that started empty.
    async fn populate(
        &self,
        r: &RootRecord,
        root: &File,
        rem: &Arc<dyn Remote>,
        below: &RelPath,
    ) -> Result<(crate::hsm::placeholder::PopulateStats, u64), Fail> {
        use std::hash::{Hash, Hasher};
        let owner = Owner {
            uid: r.uid,
            gid: r.gid,
        };
        let max_entries = self.limits.entries_per_root;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (index, id, group) = (&self.index, r.id.as_str(), &self.group);
        let rt = tokio::runtime::Handle::current();
        let (created, walked) = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let mut senders = Vec::new();
                let mut creators = Vec::new();
                for _ in 0..threads {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<crate::model::RemoteEntry>(2048);
                    senders.push(tx);
                    creators.push(s.spawn(move || -> remote::Result<_> {
                        let mut pop = Populator::new(root.as_fd(), id, owner, group).fresh();
                        for e in rx {
                            let before = pop.stats.files;
                            pop.add(&e).map_err(|err| RemoteError::io(&e.path, err))?;
                            if e.kind == crate::model::Kind::File && pop.stats.files > before {
                                let avail = if e.size == 0 { "local" } else { "online-only" };
                                let _ = index.put(
                                    id,
                                    e.path.as_str(),
                                    &Record {
                                        availability: avail.into(),
                                        size: e.size,
                                        version: e.version.token(),
                                        local_bytes: 0,
                                    },
                                );
                            }
                        }
                        Ok(pop.stats)
                    }));
                }
                let mut seen = 0u64;
                let mut sink = |e: crate::model::RemoteEntry| -> remote::Result<()> {
                    seen += 1;
                    if seen > max_entries {
                        return Err(RemoteError::TooMany {
                            path: RelPath::root(),
                            limit: max_entries,
                            what: "entries in the sync root",
                        });
                    }
                    let folder = match e.kind {
                        crate::model::Kind::Dir => e.path.clone(),
                        crate::model::Kind::File => e.path.parent().unwrap_or_default(),
                    };
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    folder.as_str().hash(&mut h);
                    senders[(h.finish() % senders.len() as u64) as usize]
                        .send(e)
                        .map_err(|_| RemoteError::Config("placeholder creation stopped".into()))
                };
                let walked = rt.block_on(rem.walk(below, &mut sink));
                drop(senders);
                let mut total = crate::hsm::placeholder::PopulateStats::default();
                let mut first_err = None;
                for c in creators {
                    match c.join() {
                        Ok(Ok(st)) => {
                            total.files += st.files;
                            total.dirs += st.dirs;
                            total.skipped += st.skipped;
                        }
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e);
                        }
                        Err(_) => {
                            first_err.get_or_insert(RemoteError::Config(
                                "placeholder thread panicked".into(),
                            ));
                        }
                    }
                }
                (first_err.map_or(Ok(total), Err), walked)
            })
        });
        // A creator's error explains a walk stopped by it; report that one first.
        let stats = created.map_err(remote_fail)?;
        let walk = walked.map_err(remote_fail)?;
        Ok((stats, walk.rejected))
    }

    async fn remove_root(
        &self,
        peer: Peer,
        local: &str,
        mode: RemoveMode,
        jobs: &JobSink,
    ) -> Result<RemoveResult, Fail> {
        let r = self.root_at(peer, local)?;
        let root = match self.open_root(&r) {
            Ok(f) => f,
            // The folder is gone or was replaced (a symlink, another folder): nothing there is
            // ours to touch, so with --keep-local the root is only forgotten.
            Err((ErrorCode::InvalidRoot | ErrorCode::NotFound, m)) if mode == RemoveMode::KeepLocal => {
                tracing::warn!(root = %r.local.display(), reason = %m, "forgetting a root whose folder is gone or replaced");
                let mut roots = self.roots.write().unwrap();
                roots.retain(|x| x.id != r.id);
                self.registry.save(&roots).map_err(internal)?;
                self.hydrator.remove_remote(&r.id);
                return Ok(RemoveResult::default());
            }
            Err((c, m)) => {
                return Err((
                    c,
                    format!("{m}; `skyfill remove-root --keep-local` forgets the root without touching the folder"),
                ))
            }
        };
        let q = self.quiet(&root)?;
        let found = scan(q.as_fd(), &RelPath::root()).map_err(internal)?;
        // What is not safely on the server?
        let mut unsynced = Vec::new();
        let mut incomplete = Vec::new();
        for (f, _) in &found.files {
            let st = match fsutil::open_beneath(q.as_fd(), f, libc::O_PATH | libc::O_NOFOLLOW, 0)
                .and_then(|fd| Ok((meta::read_proc_fd(fd.as_fd())?, fsutil::fstat(fd.as_fd())?)))
            {
                Ok(x) => x,
                Err(_) => continue,
            };
            let (m, st) = st;
            if m.as_ref().map(|m| m.root != r.id).unwrap_or(false) {
                unsynced.push(f.clone());
                continue;
            }
            if sync_state(m.as_ref(), &st) == "pending" {
                unsynced.push(f.clone());
            } else if m.map(|m| m.fill != Fill::Complete).unwrap_or(false) {
                incomplete.push(f.clone());
            }
        }
        if mode == RemoveMode::Refuse && !unsynced.is_empty() {
            let names: Vec<&str> = unsynced.iter().take(10).map(|p| p.as_str()).collect();
            return Err(fail(
                ErrorCode::Unsynced,
                format!(
                    "{} file(s) have changes that are not on the server ({}{}); nothing was changed. Keep them as ordinary local files with --keep-local",
                    unsynced.len(),
                    names.join(", "),
                    if unsynced.len() > 10 { ", ..." } else { "" }
                ),
            ));
        }
        if mode == RemoveMode::Download && !incomplete.is_empty() {
            let res = self
                .apply(
                    &r,
                    &q,
                    &incomplete,
                    None,
                    Action::Download,
                    "download",
                    local,
                    jobs,
                    true,
                )
                .await;
            if !res.skipped.is_empty() {
                return Err(fail(
                    ErrorCode::Remote,
                    format!(
                        "{} file(s) could not be downloaded (first: {}: {}); the root is unchanged",
                        res.skipped.len(),
                        res.skipped[0].path,
                        res.skipped[0].reason
                    ),
                ));
            }
        }
        // From here on the root is gone for every request.
        {
            let mut roots = self.roots.write().unwrap();
            roots.retain(|x| x.id != r.id);
            self.registry.save(&roots).map_err(internal)?;
        }
        let mut out = RemoveResult::default();
        for (f, _) in &found.files {
            let Ok((pfd, name)) = fsutil::open_parent(q.as_fd(), f) else {
                continue;
            };
            let pfd = match fsutil::open_beneath(
                pfd.as_fd(),
                &RelPath::root(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ) {
                Ok(d) => d,
                Err(_) => continue,
            };
            match evict::meta_at(pfd.as_fd(), name) {
                Ok(Some(m)) if m.root == r.id && m.fill != Fill::Complete => {
                    // Online-only bytes are on the server; a sparse file would read as zeros.
                    if fsutil::unlink_at(pfd.as_fd(), name, false).is_ok() {
                        out.removed += 1;
                    }
                }
                Ok(Some(m)) if m.root == r.id => {
                    let _ = pins::strip_at(pfd.as_fd(), name);
                    out.kept += 1;
                }
                _ => {
                    out.kept += 1;
                }
            }
        }
        for u in unsynced {
            out.unsynced_kept.push(u.as_str().to_string());
        }
        for d in &found.dirs {
            if let Ok(fd) =
                fsutil::open_beneath(q.as_fd(), d, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            {
                let _ = pins::set_dir_setting(fd.as_fd(), Pin::Inherit);
            }
        }
        let _ = self.index.remove_root(&r.id);
        let _ = self.registry.delete_secret(&r.id);
        self.hydrator.remove_remote(&r.id);
        self.emit(
            r.uid,
            Event::Root {
                local: r.local.display().to_string(),
                change: "removed".into(),
            },
        );
        tracing::info!(root = %r.local.display(), kept = out.kept, removed = out.removed, "sync root removed");
        Ok(out)
    }

    // ------------------------------------------------------------ status

    fn list(&self, peer: Peer, path: &str) -> Result<Vec<PathStatus>, Fail> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let dfd = fsutil::open_beneath(
            root.as_fd(),
            &rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
        let base = path.trim_end_matches('/');
        let mut out: Vec<PathStatus> = fsutil::read_dir_names(dfd.as_fd())
            .map_err(internal)?
            .into_iter()
            .filter_map(|raw| {
                let name = crate::model::validate_name(&raw).ok()?;
                if name.starts_with(".~skyfill-") {
                    return None;
                }
                self.status(peer, &format!("{base}/{name}")).ok()
            })
            .collect();
        out.sort_by(|a, b| (a.kind != "dir", &a.path).cmp(&(b.kind != "dir", &b.path)));
        Ok(out)
    }

    fn status(&self, peer: Peer, path: &str) -> Result<PathStatus, Fail> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let fd = fsutil::open_beneath(root.as_fd(), &rel, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
        let st = fsutil::fstat(fd.as_fd()).map_err(internal)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let dfd = fsutil::open_beneath(
                    root.as_fd(),
                    &rel,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| fail(ErrorCode::NotFound, format!("{path}: {e}")))?;
                let setting = pins::dir_setting(dfd.as_fd()).map_err(internal)?;
                let mut c = Counts::default();
                let (mut size, mut local) = (0u64, 0u64);
                for (_, rec) in self.index.below(&r.id, rel.as_str()).map_err(internal)? {
                    size += rec.size;
                    local += match rec.availability.as_str() {
                        "local" | "pinned" => rec.size,
                        _ => rec.local_bytes.min(rec.size),
                    };
                    match rec.availability.as_str() {
                        "online-only" => c.online_only += 1,
                        "partial" => c.partial += 1,
                        "pinned" => c.pinned += 1,
                        _ => c.local += 1,
                    }
                }
                let total = c.online_only + c.partial + c.local + c.pinned;
                let state = if total > 0 && c.pinned == total {
                    "pinned"
                } else if c.online_only + c.partial == 0 {
                    "local"
                } else if c.local + c.pinned + c.partial == 0 {
                    "online-only"
                } else {
                    "partial"
                };
                Ok(PathStatus {
                    path: path.into(),
                    kind: "dir".into(),
                    state: state.into(),
                    sync: "synced".into(),
                    size,
                    local_bytes: local,
                    percent: (state == "partial").then(|| percent(local, size)),
                    setting,
                    counts: Some(c),
                })
            }
            libc::S_IFREG => {
                let m = meta::read_proc_fd(fd.as_fd()).map_err(internal)?;
                let m = m.filter(|m| m.root == r.id);
                let sync = sync_state(m.as_ref(), &st).to_string();
                Ok(match m {
                    None => PathStatus {
                        path: path.into(),
                        kind: "file".into(),
                        state: "local".into(),
                        sync,
                        size: st.st_size as u64,
                        local_bytes: st.st_size as u64,
                        percent: None,
                        setting: Pin::Inherit,
                        counts: None,
                    },
                    Some(m) => PathStatus {
                        path: path.into(),
                        kind: "file".into(),
                        state: m.availability().into(),
                        sync,
                        size: m.size,
                        local_bytes: m.local_bytes(),
                        percent: (m.fill == Fill::Partial)
                            .then(|| percent(m.local_bytes(), m.size)),
                        setting: m.pin,
                        counts: None,
                    },
                })
            }
            _ => Err(fail(
                ErrorCode::BadRequest,
                format!("{path}: not a file or folder"),
            )),
        }
    }

    // ------------------------------------------------------------ pin, free, hydrate

    #[allow(clippy::too_many_arguments)]
    async fn batch(
        &self,
        peer: Peer,
        path: &str,
        recursive: bool,
        setting: Option<Pin>,
        action: Action,
        job: &str,
        jobs: &JobSink,
    ) -> Result<BatchResult, Fail> {
        let (r, rel) = self.resolve(peer, path)?;
        let root = self.open_root(&r)?;
        let q = self.quiet(&root)?;
        let found = scan(q.as_fd(), &rel).map_err(|e| {
            let code = if e.raw_os_error() == Some(libc::ENOENT) {
                ErrorCode::NotFound
            } else {
                ErrorCode::BadRequest
            };
            let why = match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::EXDEV) => {
                    "the path goes through a symlink, which Skyfill never follows".to_string()
                }
                _ => e.to_string(),
            };
            fail(code, format!("{path}: {why}"))
        })?;
        if found.is_dir && !recursive {
            return Err(fail(
                ErrorCode::BadRequest,
                format!("{path} is a folder: use -r (recursive) to act on everything below it"),
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
                    .map_err(|e| fail(ErrorCode::BadRequest, format!("{path}: {e}")))?;
                let cur = pins::dir_setting(fd.as_fd()).map_err(internal)?;
                if setting.is_some() || cur == Pin::Pinned {
                    pins::set_dir_setting(fd.as_fd(), p).map_err(internal)?;
                }
            }
        }
        let mut skipped = Vec::new();
        let files: Vec<RelPath> = found
            .files
            .into_iter()
            .filter_map(|(f, uid)| {
                if uid != r.uid {
                    skipped.push(Skipped {
                        path: Self::abs(&r, f.as_str()),
                        reason: "owned by another user; Skyfill leaves it alone".into(),
                    });
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
    async fn apply(
        &self,
        r: &RootRecord,
        q: &OwnedFd,
        files: &[RelPath],
        setting: Option<Pin>,
        action: Action,
        job: &str,
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
            let abs = Self::abs(r, f.as_str());
            let Some(m) = m else {
                if action == Action::Evict {
                    res.skipped.push(Skipped {
                        path: abs,
                        reason: "a local file that is not on the server yet".into(),
                    });
                }
                continue;
            };
            if m.root != r.id {
                res.skipped.push(Skipped {
                    path: abs,
                    reason: "belongs to another sync root".into(),
                });
                continue;
            }
            let span = tracing::info_span!("file", path = %abs, job);
            let one = self
                .apply_one(q, f, &m, setting, action, paused, &mut res)
                .instrument(span)
                .await;
            if let Err(reason) = one {
                res.skipped.push(Skipped { path: abs, reason });
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
    ) -> Result<(), String> {
        let need_write = setting.is_some_and(|p| p != m.pin)
            || (action == Action::Evict && m.pin == Pin::Pinned);
        let want_data = action == Action::Download && m.fill != Fill::Complete;
        if !need_write && !want_data && action != Action::Evict {
            return Ok(());
        }
        let file = Arc::new(File::from(
            fsutil::open_beneath(q.as_fd(), f, libc::O_RDWR | libc::O_NOFOLLOW, 0)
                .map_err(|e| e.to_string())?,
        ));
        if need_write {
            let new = setting.unwrap_or(Pin::Inherit);
            self.hydrator
                .update_meta(&file, |m| m.pin = new)
                .await
                .map_err(|e| e.to_string())?;
            res.settings += 1;
        }
        match action {
            Action::Download if want_data => {
                if paused {
                    res.deferred = true;
                    return Ok(());
                }
                let st = fsutil::fstat(file.as_fd()).map_err(|e| e.to_string())?;
                let size = m.size.min(st.st_size as u64);
                self.hydrator
                    .fetch(&file, (st.st_dev, st.st_ino), 0, size)
                    .await
                    .map_err(|errno| format!("download failed: {}", errno_text(errno)))?;
                res.files += 1;
                res.bytes += size - m.local_bytes().min(size);
            }
            Action::Evict => {
                drop(file);
                match evict::evict(q.as_fd(), f, &self.group, true) {
                    Ok(b) => {
                        res.files += 1;
                        res.bytes += b;
                        if let Ok((pfd, name)) = fsutil::open_parent(q.as_fd(), f) {
                            if let Ok(Some(m)) = evict::meta_at(pfd.as_fd(), name) {
                                self.on_note(Note::Changed(&m));
                            }
                        }
                    }
                    Err(EvictError::AlreadyOnline) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Downloads every file below `below` whose setting is pinned but that is not complete
    /// (after a restart, a resume, a sign-in, or new files in a pinned folder).
    pub(super) async fn reconcile(
        &self,
        r: &RootRecord,
        below: &RelPath,
    ) -> Result<BatchResult, Fail> {
        let root = self.open_root(r)?;
        let q = self.quiet(&root)?;
        let found = match scan(q.as_fd(), below) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(BatchResult::default()),
            Err(e) => return Err(internal(e)),
        };
        let mut todo = Vec::new();
        for (f, uid) in found.files {
            if uid != r.uid {
                continue;
            }
            let Ok((pfd, name)) = fsutil::open_parent(q.as_fd(), &f) else {
                continue;
            };
            if let Ok(Some(m)) = evict::meta_at(pfd.as_fd(), name) {
                if m.root == r.id && m.pin == Pin::Pinned && m.fill != Fill::Complete {
                    todo.push(f);
                }
            }
        }
        if todo.is_empty() {
            return Ok(BatchResult::default());
        }
        let label = Self::abs(r, below.as_str());
        Ok(self
            .apply(
                r,
                &q,
                &todo,
                None,
                Action::Download,
                "pin",
                &label,
                &JobSink::none(),
                false,
            )
            .await)
    }

    // ------------------------------------------------------------ sign-in, pause, sync

    async fn login(
        &self,
        peer: Peer,
        local: &str,
        secret: &str,
        persist: bool,
    ) -> Result<RootInfo, Fail> {
        let r = self.root_at(peer, local)?;
        let rem = self.open_remote(&r, Some(secret)).map_err(remote_fail)?;
        rem.stat(&RelPath::root()).await.map_err(remote_fail)?;
        if persist {
            self.registry.save_secret(&r.id, secret).map_err(internal)?;
        } else {
            self.registry.delete_secret(&r.id).map_err(internal)?;
        }
        self.hydrator.set_remote(&r.id, rem);
        let r = self.update_root(&r.id, |x| {
            x.has_secret = true;
            x.persist_secret = persist;
        })?;
        self.set_error(&r, None);
        self.emit(
            r.uid,
            Event::Root {
                local: r.local.display().to_string(),
                change: "signed-in".into(),
            },
        );
        tracing::info!(root = %r.local.display(), persist, "signed in");
        Ok(self.root_info(&r))
    }

    fn set_paused(
        &self,
        peer: Peer,
        local: Option<&str>,
        paused: bool,
    ) -> Result<Vec<RootInfo>, Fail> {
        let targets = match local {
            Some(l) => vec![self.root_at(peer, l)?],
            None => self.mine(peer),
        };
        let mut out = Vec::new();
        for r in targets {
            let r = self.update_root(&r.id, |x| x.paused = paused)?;
            self.emit(
                r.uid,
                Event::Root {
                    local: r.local.display().to_string(),
                    change: if paused { "paused" } else { "resumed" }.into(),
                },
            );
            if !paused {
                // Due now: catch up with the server and with pinned files.
                self.sync.due_now(&r.id);
            }
            out.push(self.root_info(&r));
        }
        Ok(out)
    }

    /// Looks for new remote files below `below` and downloads pinned ones.
    async fn sync_now(&self, peer: Peer, path: Option<&str>) -> Result<SyncResult, Fail> {
        let targets: Vec<(RootRecord, RelPath)> = match path {
            Some(p) => {
                let (r, rel) = self.resolve(peer, p)?;
                let root = self.open_root(&r)?;
                // A file: look at its folder.
                let is_dir = fsutil::open_beneath(root.as_fd(), &rel, libc::O_PATH, 0)
                    .and_then(|fd| fsutil::fstat(fd.as_fd()))
                    .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    .unwrap_or(false);
                let rel = if is_dir {
                    rel
                } else {
                    rel.parent().unwrap_or_default()
                };
                vec![(r, rel)]
            }
            None => self
                .mine(peer)
                .into_iter()
                .map(|r| (r, RelPath::root()))
                .collect(),
        };
        let mut out = SyncResult::default();
        for (r, rel) in targets {
            out.roots += 1;
            match self.sync_root(&r).await {
                Ok(done) => {
                    out.added += done.added;
                    out.downloaded += done.downloaded;
                    out.uploaded += done.uploaded;
                    out.conflicts += done.conflicts;
                    out.changed += done.changed;
                    out.waiting += done.waiting;
                    for e in done.errors {
                        out.errors.push(Skipped {
                            path: Self::abs(&r, rel.as_str()),
                            reason: e,
                        });
                    }
                }
                Err((_, m)) => out.errors.push(Skipped {
                    path: Self::abs(&r, rel.as_str()),
                    reason: m,
                }),
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------ settings

    fn config_get(&self, peer: Peer) -> ConfigResult {
        ConfigResult {
            settings: self.registry.settings(peer.uid),
            system_never_download: self.hydrator.policy.never_download.clone(),
            roots: self.mine(peer).iter().map(|r| self.root_info(r)).collect(),
        }
    }

    fn config_set(
        &self,
        peer: Peer,
        key: &str,
        value: serde_json::Value,
        local: Option<&str>,
    ) -> Result<(), Fail> {
        let bad = |m: String| fail(ErrorCode::BadRequest, m);
        let num = |v: &serde_json::Value| {
            v.as_u64()
                .ok_or_else(|| bad(format!("{key}: give a whole number")))
        };
        if key == "budget" {
            let l = local.ok_or_else(|| bad("budget is per root: name the root".into()))?;
            let r = self.root_at(peer, l)?;
            let b: Option<Budget> = serde_json::from_value(value).map_err(|e| {
                bad(format!(
                    "budget: {e}; use null, {{\"max_bytes\": N}} or {{\"keep_free_percent\": N}}"
                ))
            })?;
            if let Some(Budget::KeepFreePercent(p)) = b {
                if p == 0 || p > 90 {
                    return Err(bad("keep_free_percent must be 1..90".into()));
                }
            }
            self.update_root(&r.id, |x| x.budget = b)?;
            return Ok(());
        }
        let mut s = self.registry.settings(peer.uid);
        match key {
            "poll_interval_secs" => {
                let n = num(&value)?;
                if !(5..=86_400).contains(&n) {
                    return Err(bad("poll_interval_secs must be 5..86400".into()));
                }
                s.poll_interval_secs = n;
            }
            "download_limit" => s.download_limit = num(&value)?,
            "upload_limit" => s.upload_limit = num(&value)?,
            "never_download" => {
                let v: Vec<String> = serde_json::from_value(value)
                    .map_err(|e| bad(format!("never_download: a list of program names ({e})")))?;
                for x in &v {
                    if x.is_empty() || x.len() > 255 || x.contains('/') || x.contains('\0') {
                        return Err(bad(format!(
                            "never_download: {x:?} is not a program name (no paths)"
                        )));
                    }
                }
                s.never_download = v;
            }
            "ignore" => {
                let v: Vec<String> = serde_json::from_value(value)
                    .map_err(|e| bad(format!("ignore: a list of name patterns ({e})")))?;
                crate::sync::ignore::Ignore::new(&v).map_err(|e| bad(format!("ignore: {e}")))?;
                s.ignore = v;
            }
            k => {
                return Err(bad(format!(
                    "unknown setting {k:?}; known: poll_interval_secs, download_limit, upload_limit, never_download, ignore, budget"
                )))
            }
        }
        self.registry
            .save_settings(peer.uid, &s)
            .map_err(internal)?;
        self.apply_user_policy(peer.uid);
        Ok(())
    }

    // ------------------------------------------------------------ doctor

    async fn doctor(&self, peer: Peer) -> DoctorResult {
        let mut checks = Vec::new();
        let mut add = |level: &str, what: String, fix: &str| {
            checks.push(Check {
                level: level.into(),
                what,
                fix: fix.into(),
            })
        };
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let roots = self.mine(peer);
        if roots.is_empty() {
            add(
                "warn",
                "you have no sync roots".into(),
                "add one with `skyfill add-root ~/Cloud dav://server/path` or the tray app",
            );
        }
        for r in roots {
            let l = r.local.display().to_string();
            match self.open_root(&r) {
                Err((_, m)) => add(
                    "fail",
                    m,
                    "restore the folder, or remove the root with `skyfill remove-root`",
                ),
                Ok(root) => {
                    let fs = nix::sys::statfs::fstatfs(&root)
                        .map(|s| fs_name(s.filesystem_type().0))
                        .unwrap_or_else(|_| "unknown".into());
                    match self.group.probe(root.as_fd()) {
                        Ok(()) => add(
                            "ok",
                            format!("{l} is on {fs}, which delivers pre-content events"),
                            "",
                        ),
                        Err(e) => add(
                            "fail",
                            format!("{l} is on {fs}, which refuses pre-content events ({e})"),
                            "move the root to ext4, xfs or btrfs on Linux >= 6.14",
                        ),
                    }
                }
            }
            if r.paused {
                add(
                    "warn",
                    format!("{l} is paused"),
                    "resume with `skyfill resume`",
                );
            }
            let last = self.last_error.lock().unwrap().get(&r.id).cloned();
            if let Some(e) = last {
                if e.contains("limits.json") {
                    add(
                        "fail",
                        format!("{l}: a configured limit was reached: {e}"),
                        "if the server really holds that much, raise the limit in limits.json in the daemon's state directory (doc/SECURITY.md)",
                    );
                } else {
                    add("warn", format!("{l}: last sync failed: {e}"), "");
                }
            }
            let Some(rem) = self.hydrator.remote(&r.id) else {
                add(
                    "fail",
                    format!("{l}: no credentials (needs sign-in)"),
                    "run `skyfill login` (or sign in from the tray app)",
                );
                continue;
            };
            add(
                "ok",
                format!(
                    "{l}: credentials present{}",
                    if r.persist_secret {
                        " (kept by the daemon)"
                    } else if r.has_secret {
                        " (from your keyring; re-sent after each daemon start)"
                    } else {
                        " (anonymous server)"
                    }
                ),
                "",
            );
            match tokio::time::timeout(Duration::from_secs(15), rem.stat(&RelPath::root())).await {
                Ok(Ok(_)) => add(
                    "ok",
                    format!("{l}: server reachable ({})", rem.describe()),
                    "",
                ),
                Ok(Err(e)) => {
                    let (code, m) = remote_fail(e);
                    add(
                        "fail",
                        format!("{l}: {m}"),
                        if code == ErrorCode::Auth {
                            "sign in again with `skyfill login`"
                        } else {
                            "check the network and the server address"
                        },
                    );
                }
                Err(_) => add(
                    "fail",
                    format!("{l}: the server did not answer within 15 s"),
                    "check the network and the server address",
                ),
            }
            if let Some(skew) = remote::config::clock_skew(&r.remote).await {
                let s = skew.abs();
                let limit = if r.remote.url.starts_with("s3:") {
                    300
                } else {
                    900
                };
                if s > limit {
                    add(
                        "fail",
                        format!("{l}: this machine's clock is {skew} s off the server's"),
                        "turn on time synchronisation (timedatectl set-ntp true); S3 refuses requests signed more than 15 minutes off",
                    );
                } else {
                    add("ok", format!("{l}: clock within {s} s of the server's"), "");
                }
            }
        }
        DoctorResult {
            daemon: self.daemon_name(),
            kernel,
            checks,
        }
    }
}

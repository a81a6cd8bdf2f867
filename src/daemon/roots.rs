//! The sync roots' life cycle: bringing a registered root back after a start (marks, index,
//! policy), adding one (the folder made and opened once as its future owner, the server
//! checked, placeholders created while the listing streams in) and removing one without
//! losing a byte that is not on the server.

use super::core::{Core, RootError};
use super::error::{Error, Result};
use super::files::{scan, sync_state, Action, Files};
use crate::asuser::{self, UserCreds};
use crate::fsutil;
use crate::hsm::evict;
use crate::hsm::meta::{self, Fill, Pin};
use crate::hsm::pins;
use crate::hsm::placeholder::{self, Owner};
use crate::ipc::proto::*;
use crate::ipc::server::{JobSink, Peer};
use crate::model::RelPath;
use crate::remote;
use crate::roots::RootRecord;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

/// Finds or makes a new sync root's folder and opens it once, for `peer`: the parent is
/// resolved as the caller, the folder is made and opened (`O_NOFOLLOW`) as its future owner
/// (the caller; for root, the parent's owner), and the opened folder must be a directory
/// that owner owns and that is empty. Returns the folder and its owner.
fn open_new_root(p: &Path, peer: Peer) -> Result<(File, u32, u32)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let bad = |m: crate::i18n::Said| Error::said(ErrorCode::InvalidRoot, m);
    let local = p.display().to_string();
    let parent = p.parent().expect("checked by the caller");
    let name = p
        .file_name()
        .ok_or_else(|| bad(crate::said!("{local}: no folder name", local = local)))?;
    let cname = std::ffi::CString::new(name.as_encoded_bytes())
        .map_err(|_| bad(crate::said!("{local}: NUL in the path", local = local)))?;
    let caller = if peer.is_root() {
        UserCreds::current()
    } else {
        UserCreds::of(peer.uid, peer.gid)
    };
    // One resolution, as the caller, refusing any symlink on the way (no check-then-open).
    let parent_fd = asuser::with_creds(&caller, || -> Result<OwnedFd> {
        fsutil::open_no_symlinks(parent, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ELOOP) => bad(crate::said!(
                    "{local}: the path goes through a symlink",
                    local = local
                )),
                _ => bad(crate::i18n::said_os_at(parent.display(), &e)),
            }
        })
    })
    .map_err(|e| Error::internal(format!("cannot act as uid {}: {e}", peer.uid)))??;
    let owner = if peer.is_root() {
        let pst = fsutil::fstat(parent_fd.as_fd()).map_err(Error::internal)?;
        UserCreds::of(pst.st_uid, pst.st_gid)
    } else {
        caller
    };
    let opened = asuser::with_creds(&owner, || -> Result<OwnedFd> {
        // SAFETY: valid fd and C string.
        let made = unsafe { libc::mkdirat(parent_fd.as_raw_fd(), cname.as_ptr(), 0o700) };
        if made < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(bad(crate::i18n::said_os_at(&local, &e)));
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
                Some(libc::ENOTDIR) | Some(libc::ELOOP) => bad(crate::said!(
                    "{local} exists and is not a directory",
                    local = local
                )),
                _ => bad(crate::i18n::said_os_at(&local, &e)),
            });
        }
        // SAFETY: fresh descriptor from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .map_err(|e| Error::internal(format!("cannot act as uid {}: {e}", owner.uid)))??;
    let st = fsutil::fstat(opened.as_fd()).map_err(Error::internal)?;
    if st.st_uid != owner.uid {
        return Err(Error::said(
            ErrorCode::NotAuthorized,
            crate::said!("{local} is not your directory", local = local),
        ));
    }
    let empty = fsutil::read_dir_names(opened.as_fd())
        .map(|n| n.is_empty())
        .unwrap_or(false);
    if !empty {
        return Err(bad(crate::said!(
            "{local} is not empty; a new sync root must start empty",
            local = local
        )));
    }
    Ok((File::from(opened), st.st_uid, st.st_gid))
}

/// The roots' life cycle: a view of the daemon's state with this one job.
pub struct Roots<'a>(pub &'a Core);

impl std::ops::Deref for Roots<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0
    }
}

impl Roots<'_> {
    /// Brings a registered root back after a (re)start: remote, marks, index, policy.
    pub async fn activate(&self, r: &mut RootRecord, rebuild_index: bool) -> io::Result<()> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&r.local)?;
        let st = fsutil::fstat(root.as_fd())?;
        if st.st_uid != r.uid {
            return Err(io::Error::other(format!(
                "{} no longer belongs to the root's owner (uid {}); not activating it",
                r.local.display(),
                r.uid
            )));
        }
        match r.key {
            None => r.key = Some((st.st_dev, st.st_ino)),
            Some(k) if k != (st.st_dev, st.st_ino) => {
                return Err(io::Error::other(format!(
                    "{} was replaced since it was added; not activating it",
                    r.local.display()
                )))
            }
            Some(_) => {}
        }
        self.group
            .probe(root.as_fd())
            .map_err(|e| io::Error::other(format!("filesystem refuses pre-content events: {e}")))?;
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
        fsutil::walk_files(root.as_fd(), &RelPath::root(), &mut |dfd, name, p| {
            if let Some(m) = evict::meta_at(dfd, name, p.as_str())? {
                if m.fill != Fill::Complete {
                    let c = std::ffi::CString::new(name).unwrap();
                    self.group.mark_at(dfd, &c)?;
                    n += 1;
                }
                if rebuild_index && m.root == id && m.resolved() {
                    let _ = self.index.put(&id, &m.path, &super::record_of(&m));
                }
            }
            Ok(())
        })?;
        self.0.settings().apply_user_policy(r.uid);
        tracing::info!(root = %r.local.display(), marked = n, "sync root active");
        Ok(())
    }

    /// Binds an empty (or new) folder of the caller to a server and fills it with
    /// placeholders.
    pub async fn add_root(
        &self,
        peer: Peer,
        local: &str,
        spec: remote::RemoteSpec,
        secret: Option<String>,
        persist_secret: bool,
    ) -> Result<AddRootResult> {
        let bad = |m: crate::i18n::Said| Error::said(ErrorCode::InvalidRoot, m);
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
            return Err(bad(crate::said!(
                "{local}: give an absolute path without . or ..",
                local = local
            )));
        }
        if p.parent().is_none() {
            return Err(bad(crate::said!("cannot use / as a sync root")));
        }
        // Everything about the folder happens as the caller (or, for root, as the owner of
        // the parent folder): the kernel refuses what they could not do, errors say only what
        // they could see, and a folder made here is theirs without any chown.
        let (root, owner_uid, owner_gid) = {
            let p = p.to_path_buf();
            tokio::task::spawn_blocking(move || open_new_root(&p, peer))
                .await
                .map_err(Error::internal)??
        };
        let st = fsutil::fstat(root.as_fd()).map_err(Error::internal)?;
        {
            let roots = self.roots.read().unwrap();
            if let Some(o) = roots
                .iter()
                .find(|r| r.local.starts_with(p) || p.starts_with(&r.local))
            {
                return Err(bad(if peer.is_root() || o.uid == peer.uid {
                    crate::said!(
                        "{local} overlaps the sync root {other}",
                        local = local,
                        other = o.local.display()
                    )
                } else {
                    crate::said!("{local} overlaps another sync root", local = local)
                }));
            }
        }
        self.group.probe(root.as_fd()).map_err(|e| {
            bad(crate::said!(
                "{local}: this filesystem cannot deliver fanotify pre-content events ({error}); use ext4, xfs or btrfs on Linux >= 6.14",
                local = local,
                error = e
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
            .map_err(Error::from)?;
        rem.stat(&RelPath::root()).await.map_err(Error::from)?;
        if let (Some(s), true) = (&secret, rec.persist_secret) {
            self.registry.save_secret(&id, s).map_err(Error::internal)?;
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
                return Err(bad(crate::said!(
                    "{local} overlaps another sync root",
                    local = local
                )));
            }
            roots.push(rec.clone());
            self.registry.save(&roots).map_err(Error::internal)?;
        }
        self.hydrator.set_remote(&id, rem.clone());
        self.0.settings().apply_user_policy(owner_uid);
        let t = Instant::now();
        let owner = Owner {
            uid: rec.uid,
            gid: rec.gid,
        };
        let populated = placeholder::populate(
            root.as_fd(),
            &rec.id,
            owner,
            &self.group,
            &*self.index,
            &*rem,
            &RelPath::root(),
            self.limits.entries_per_root,
        );
        let (stats, rejected) = match populated {
            Ok(x) => x,
            Err(e) => {
                // The root stays (what was made is kept; the next pass completes it or
                // fails the same way): say so, and keep the error for `roots` and `doctor`.
                let e = Error::from(e);
                self.set_error(
                    &rec,
                    Some(RootError {
                        message: e.message.clone(),
                        said: e.said.clone(),
                        offline: false,
                    }),
                );
                return Err(e.hint_said(crate::said!(
                    "; the sync root was added but is incomplete (see `skyfill doctor`)"
                )));
            }
        };
        tracing::info!(root = local, files = stats.files, dirs = stats.dirs, rejected, elapsed = ?t.elapsed(), "populated");
        self.emit_root(&rec, RootChange::Added);
        Ok(AddRootResult {
            root_id: id,
            files: stats.files,
            dirs: stats.dirs,
            rejected,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// After a root is dropped: if no other root is on its filesystem, the folder watcher's
    /// filesystem mark and then the group's shield ahead of it leave that filesystem, so
    /// opening its files costs nothing for Skyfill any more. A root whose filesystem is not
    /// recorded counts as being on this one.
    fn let_go_of_filesystem(&self, root: &File) {
        let Ok(dev) = fsutil::fstat(root.as_fd()).map(|st| st.st_dev) else {
            return;
        };
        let shared = self
            .roots
            .read()
            .unwrap()
            .iter()
            .any(|o| o.key.is_none_or(|(d, _)| d == dev));
        if shared {
            return;
        }
        if let Some(w) = &self.sync.watcher {
            if let Err(error) = w.unwatch_filesystem(root.as_fd()) {
                tracing::warn!(%error, "cannot stop watching the filesystem");
                return;
            }
        }
        if let Err(error) = self.group.unshield(root.as_fd()) {
            tracing::warn!(%error, "cannot remove the group's filesystem mark");
        }
    }

    /// Unbinds a root; `mode` says what happens to files not safely on the server.
    pub async fn remove_root(
        &self,
        peer: Peer,
        local: &str,
        mode: RemoveMode,
        jobs: &JobSink,
    ) -> Result<RemoveResult> {
        let r = self.root_at(peer, local)?;
        let root = match self.open_root(&r) {
            Ok(f) => f,
            // The folder is gone or was replaced (a symlink, another folder): nothing there is
            // ours to touch, so with --keep-local the root is only forgotten.
            Err(e)
                if matches!(e.code, ErrorCode::InvalidRoot | ErrorCode::NotFound)
                    && mode == RemoveMode::KeepLocal =>
            {
                tracing::warn!(root = %r.local.display(), reason = %e, "forgetting a root whose folder is gone or replaced");
                self.drop_root(&r.id)?;
                self.hydrator.remove_remote(&r.id);
                return Ok(RemoveResult::default());
            }
            Err(e) => {
                return Err(e.hint_said(crate::said!(
                "; `skyfill remove-root --keep-local` forgets the root without touching the folder"
            )))
            }
        };
        // A pass of this root still running holds the folder (and its filesystem) open: wait
        // for it, boundedly, so the folder is free once the root is gone (an unmount right
        // after succeeds). Passes that start later find the root gone.
        let lock = self.sync.lock(&r.id);
        let _pass = tokio::time::timeout(std::time::Duration::from_secs(30), lock.lock())
            .await
            .ok();
        let q = self.quiet(&root)?;
        let found = scan(q.as_fd(), &RelPath::root()).map_err(Error::internal)?;
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
            if sync_state(m.as_ref(), &st) == SyncState::Pending {
                unsynced.push(f.clone());
            } else if m.map(|m| m.fill != Fill::Complete).unwrap_or(false) {
                incomplete.push(f.clone());
            }
        }
        if mode == RemoveMode::Refuse && !unsynced.is_empty() {
            let names: Vec<&str> = unsynced.iter().take(10).map(|p| p.as_str()).collect();
            let more = if unsynced.len() > 10 { ", ..." } else { "" };
            return Err(Error::said(
                ErrorCode::Unsynced,
                crate::said_n!(
                    "{n} file has changes that are not on the server ({names}); nothing was changed. Keep it as an ordinary local file with --keep-local",
                    "{n} files have changes that are not on the server ({names}); nothing was changed. Keep them as ordinary local files with --keep-local",
                    unsynced.len(),
                    names = format!("{}{more}", names.join(", "))
                ),
            ));
        }
        if mode == RemoveMode::Download && !incomplete.is_empty() {
            let res = Files(self.0)
                .apply(
                    &r,
                    &q,
                    &incomplete,
                    None,
                    Action::Download,
                    JobKind::Download,
                    local,
                    jobs,
                    true,
                )
                .await;
            if !res.skipped.is_empty() {
                return Err(Error::said(
                    ErrorCode::Remote,
                    crate::said_n!(
                        "{n} file could not be downloaded ({path}: {reason}); the root is unchanged",
                        "{n} files could not be downloaded (first: {path}: {reason}); the root is unchanged",
                        res.skipped.len(),
                        path = res.skipped[0].path,
                        reason = res.skipped[0].reason
                    )
                    .with(
                        "reason",
                        res.skipped[0].said.clone().unwrap_or_else(|| {
                            crate::i18n::Said::text(res.skipped[0].reason.clone())
                        }),
                    ),
                ));
            }
        }
        // From here on the root is gone for every request.
        self.drop_root(&r.id)?;
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
            match evict::meta_at(pfd.as_fd(), name, f.as_str()) {
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
        self.let_go_of_filesystem(&root);
        let _ = self.index.remove_root(&r.id);
        let _ = self.registry.delete_secret(&r.id);
        self.hydrator.remove_remote(&r.id);
        self.emit_root(&r, RootChange::Removed);
        tracing::info!(root = %r.local.display(), kept = out.kept, removed = out.removed, "sync root removed");
        Ok(out)
    }
}

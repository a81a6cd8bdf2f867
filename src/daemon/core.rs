//! The worker's shared state and the checks every service makes with it: which roots a peer
//! may see, resolving a path to (root, path below it) for that peer, opening a root's folder
//! (refusing one that was replaced) and its private ignore-marked view, telling subscribers.
//! The services (`roots`, `files`, `settings`, `doctor`, `syncing`) are views over one
//! [`Core`], each with one job; [`super::Daemon`] composes them.

use super::error::{Error, Result};
use super::{limits, schedule, Options};
use crate::asuser::UserCreds;
use crate::fsutil;
use crate::hsm::fanotify::Group;
use crate::hsm::hydrate::{Hydrator, Notice, Notices};
use crate::index::Index;
use crate::ipc::proto::{ErrorCode, Event, RootChange, RootInfo, RootState};
use crate::ipc::server::{Envelope, EventHub, Peer};
use crate::model::RelPath;
use crate::remote::{self, Remote};
use crate::roots::{Registry, RootRecord};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Why a root's last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootError {
    pub message: String,
    /// The message to say in each client's language, when there is one.
    pub said: Option<crate::i18n::Said>,
    /// The server could not be reached (as opposed to refusing or failing).
    pub offline: bool,
}

pub struct Core {
    pub opts: Options,
    pub group: Arc<Group>,
    pub hydrator: Arc<Hydrator>,
    pub index: Arc<dyn Index>,
    pub registry: Registry,
    pub roots: RwLock<Vec<RootRecord>>,
    pub events: EventHub,
    /// What configuration bounds (`limits.json`).
    pub limits: limits::Limits,
    /// Last error talking to each root's server (cleared by a success).
    pub last_error: Mutex<HashMap<String, RootError>>,
    /// Roots whose sync pass is running now.
    pub syncing: Mutex<HashSet<String>>,
    /// Sync pass scheduling and the folder watcher.
    pub sync: schedule::SyncCtl,
    /// Where file changes are reported (the notice consumer applies them).
    pub notices: Notices,
}

impl Core {
    /// The roots `peer` may see.
    pub fn mine(&self, peer: Peer) -> Vec<RootRecord> {
        self.roots
            .read()
            .unwrap()
            .iter()
            .filter(|r| peer.is_root() || r.uid == peer.uid)
            .cloned()
            .collect()
    }

    pub fn root_by_id(&self, id: &str) -> Option<RootRecord> {
        self.roots
            .read()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// The caller's root whose directory is exactly `local`.
    pub fn root_at(&self, peer: Peer, local: &str) -> Result<RootRecord> {
        let p = Path::new(local.trim_end_matches('/'));
        self.mine(peer)
            .into_iter()
            .find(|r| r.local == p)
            .ok_or_else(|| {
                Error::said(
                    ErrorCode::NotARoot,
                    crate::said!("{local} is not one of your sync roots", local = local),
                )
            })
    }

    /// The caller's root containing `path`, and the path below it.
    pub fn resolve(&self, peer: Peer, path: &str) -> Result<(RootRecord, RelPath)> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(Error::said(
                ErrorCode::BadRequest,
                crate::said!("{path}: give an absolute path", path = path),
            ));
        }
        let r = self
            .mine(peer)
            .into_iter()
            .find(|r| p.starts_with(&r.local))
            .ok_or_else(|| {
                Error::said(
                    ErrorCode::NotARoot,
                    crate::said!("{path} is not in one of your sync roots", path = path),
                )
            })?;
        let rest = p.strip_prefix(&r.local).unwrap();
        let s = rest
            .to_str()
            .ok_or_else(|| Error::said(ErrorCode::BadRequest, crate::said!("path is not UTF-8")))?;
        let rel = RelPath::parse(s).map_err(|e| Error::bad_request(format!("{path}: {e}")))?;
        Ok((r, rel))
    }

    /// Changes a root's record and saves the registry.
    pub fn update_root(&self, id: &str, f: impl FnOnce(&mut RootRecord)) -> Result<RootRecord> {
        let mut roots = self.roots.write().unwrap();
        let r = roots.iter_mut().find(|r| r.id == id).ok_or_else(|| {
            Error::said(ErrorCode::NotARoot, crate::said!("the root was removed"))
        })?;
        f(r);
        let out = r.clone();
        self.registry.save(&roots).map_err(Error::internal)?;
        Ok(out)
    }

    /// Forgets a root (the registry too).
    pub fn drop_root(&self, id: &str) -> Result<()> {
        let mut roots = self.roots.write().unwrap();
        roots.retain(|x| x.id != id);
        self.registry.save(&roots).map_err(Error::internal)
    }

    pub fn emit(&self, uid: u32, event: Event) {
        self.events.send(Envelope { uid, event });
    }

    pub fn emit_root(&self, r: &RootRecord, change: RootChange) {
        self.emit(
            r.uid,
            Event::Root {
                local: r.local.display().to_string(),
                change,
            },
        );
    }

    /// Reports a changed file record (index and subscribers, by the notice consumer).
    pub fn note(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    /// Waits until every notice sent so far has been applied (bounded: a stuck consumer
    /// delays an answer by at most a few seconds, never forever).
    pub async fn flush_notices(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.note(Notice::Flush(tx));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
    }

    /// What a root is doing, decided here so that no client reads error text.
    pub fn root_state(&self, r: &RootRecord) -> RootState {
        let err = self.last_error.lock().unwrap().get(&r.id).cloned();
        if r.paused {
            RootState::Paused
        } else if self.hydrator.remote(&r.id).is_none() {
            RootState::NeedsSignIn
        } else if self.syncing.lock().unwrap().contains(&r.id) {
            RootState::Syncing
        } else {
            match err {
                Some(e) if e.offline => RootState::Offline,
                Some(_) => RootState::Error,
                None => RootState::UpToDate,
            }
        }
    }

    pub fn root_info(&self, r: &RootRecord) -> RootInfo {
        let (last_error, last_error_said) = self
            .last_error
            .lock()
            .unwrap()
            .get(&r.id)
            .map(|e| (Some(e.message.clone()), e.said.clone()))
            .unwrap_or_default();
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
            last_error,
            last_error_said,
            state: self.root_state(r),
        }
    }

    /// Records (or clears) a root's last error; subscribers hear of a change.
    pub fn set_error(&self, r: &RootRecord, e: Option<RootError>) {
        let changed = {
            let mut m = self.last_error.lock().unwrap();
            match &e {
                Some(e) => m.insert(r.id.clone(), e.clone()).as_ref() != Some(e),
                None => m.remove(&r.id).is_some(),
            }
        };
        if changed {
            match e {
                Some(e) => self.emit(
                    r.uid,
                    Event::Error {
                        path: Some(r.local.display().to_string()),
                        code: ErrorCode::Remote,
                        message: e.message,
                        said: e.said,
                    },
                ),
                None => self.emit_root(r, RootChange::Online),
            }
        }
    }

    /// A pass started or ended: the root's state changed for subscribers.
    pub fn set_syncing(&self, r: &RootRecord, on: bool) {
        let changed = {
            let mut s = self.syncing.lock().unwrap();
            if on {
                s.insert(r.id.clone())
            } else {
                s.remove(&r.id)
            }
        };
        if changed {
            self.emit_root(r, RootChange::State);
        }
    }

    /// Opens a root's directory, refusing one that was replaced since it was added.
    pub fn open_root(&self, r: &RootRecord) -> Result<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&r.local)
            .map_err(|e| {
                Error::said(
                    ErrorCode::NotFound,
                    crate::said!("sync root {root}: ", root = r.local.display())
                        .then(crate::i18n::said_os(&e)),
                )
            })?;
        let st = fsutil::fstat(f.as_fd())?;
        if st.st_uid != r.uid {
            return Err(Error::said(
                ErrorCode::InvalidRoot,
                crate::said!(
                    "{folder} no longer belongs to the root's owner; remove the root and add it again",
                    folder = r.local.display()
                ),
            ));
        }
        if let Some(k) = r.key {
            if k != (st.st_dev, st.st_ino) {
                return Err(Error::said(
                    ErrorCode::InvalidRoot,
                    crate::said!(
                        "{folder} is no longer the folder that was added as a sync root; remove the root and add it again",
                        folder = r.local.display()
                    ),
                ));
            }
        }
        Ok(f)
    }

    /// A private, ignore-marked view of the root: opening placeholders there raises no event.
    pub fn quiet(&self, root: &File) -> Result<OwnedFd> {
        let mnt = self
            .group
            .private_mount(root.as_fd())
            .map_err(|e| Error::internal(format!("private mount: {e}")))?;
        fsutil::open_beneath(
            mnt.as_fd(),
            &RelPath::root(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| Error::internal(format!("private mount root: {e}")))
    }

    /// The absolute path of `rel` in root `r`, as users see it.
    pub fn abs(r: &RootRecord, rel: &str) -> String {
        if rel.is_empty() {
            r.local.display().to_string()
        } else {
            r.local.join(rel).display().to_string()
        }
    }

    /// Opens a root's server with the resolved HTTP settings.
    pub fn open_remote(
        &self,
        r: &RootRecord,
        secret: Option<&str>,
    ) -> remote::Result<Arc<dyn Remote>> {
        let mut http = self.hydrator.policy.http();
        // No single listing may hold more than the whole root may.
        http.max_listing_entries = self
            .limits
            .entries_per_listing
            .min(self.limits.entries_per_root);
        remote::open_remote(
            &r.remote,
            secret,
            http,
            Some(self.opts.state_dir.join("uploads")),
            UserCreds::of(r.uid, r.gid),
        )
    }
}

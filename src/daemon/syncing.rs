//! Sync passes and what surrounds them: the folder watcher's events and the background loop
//! start the passes `schedule` says are due, `skyfill sync` runs one now; after a pass,
//! pinned files download and the disk budget is kept (by the notice consumer).
//! One pass at a time per root; the pass itself is `sync::Pass` (scan, plan, execute).

use super::core::{Core, RootError};
use super::error::{Error, Result};
use super::rootfs::RootFs;
use super::schedule::{Scope, OFFLINE_RETRY, SETTLE};
use crate::fsutil;
use crate::hsm::hydrate::Notice;
use crate::hsm::placeholder::Owner;
use crate::ipc::proto::{ErrorCode, Event, Skipped, SyncResult};
use crate::ipc::server::Peer;
use crate::model::RelPath;
use crate::roots::RootRecord;
use crate::sync::{conflict, ignore::Ignore, Op, Pass};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What one pass did, for `skyfill sync`.
#[derive(Debug, Default)]
pub struct Done {
    pub added: u64,
    pub uploaded: u64,
    pub downloaded: u64,
    pub conflicts: u64,
    /// Renames, deletes and refreshed placeholders.
    pub changed: u64,
    /// Local files still settling.
    pub waiting: u64,
    pub errors: Vec<String>,
}

/// Sync passes: a view of the daemon's state with this one job.
pub struct Passes<'a>(pub &'a Core);

impl std::ops::Deref for Passes<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0
    }
}

impl Passes<'_> {
    /// Runs one sync pass of `r` now (waiting for a running one), then downloads pinned
    /// files and keeps the disk budget.
    pub async fn sync_root(&self, r: &RootRecord) -> Result<Done> {
        self.sync_root_as(r, false).await
    }

    /// Like [`Self::sync_root`], but limited to the folders the watcher reported changed
    /// when that is enough (see [`schedule::SyncCtl::take_scope`]).
    ///
    /// [`schedule::SyncCtl::take_scope`]: super::schedule::SyncCtl::take_scope
    pub async fn sync_changes(&self, r: &RootRecord) -> Result<Done> {
        self.sync_root_as(r, true).await
    }

    async fn sync_root_as(&self, r: &RootRecord, limited: bool) -> Result<Done> {
        let deadline = Duration::from_secs(self.limits.pass_deadline_secs);
        // A pass stopped at an await point is like a crash there: the executor's order keeps
        // both sides consistent, and the next pass starts over.
        self.set_syncing(r, true);
        let done = match tokio::time::timeout(deadline, self.sync_root_once(r, limited)).await {
            Ok(d) => d,
            Err(_) => {
                let msg = crate::said!(
                    "sync pass gave up after {deadline} (pass_deadline_secs in limits.json); the next pass starts over",
                    deadline = format!("{deadline:?}")
                );
                tracing::warn!(root = %r.local.display(), "{}", msg.english());
                Err(self.pass_failed(r, msg, false))
            }
        };
        self.set_syncing(r, false);
        // The last pass running: the index gives back the pages it read (skipped while it is
        // in use, e.g. by a download; the next pass tries again).
        if self.syncing.lock().unwrap().is_empty() {
            let index = self.index.clone();
            let released = tokio::task::spawn_blocking(move || index.release()).await;
            if let Ok(Err(err)) = released {
                tracing::warn!(root = %r.local.display(), %err, "index: releasing memory");
            }
        }
        // A pass over a large root allocates its trees at once; hand the memory back to the
        // system rather than keeping the peak for the daemon's whole life.
        super::memory::give_back();
        done
    }

    /// A pass that did not finish: the root's error, and another try after a while.
    fn pass_failed(&self, r: &RootRecord, msg: crate::i18n::Said, offline: bool) -> Error {
        self.set_error(
            r,
            Some(RootError {
                message: msg.english(),
                said: Some(msg.clone()),
                offline,
            }),
        );
        self.sync
            .roots
            .lock()
            .unwrap()
            .entry(r.id.clone())
            .or_default()
            .retry_at = Some(Instant::now() + OFFLINE_RETRY);
        Error::said(ErrorCode::Remote, msg)
    }

    async fn sync_root_once(&self, r: &RootRecord, limited: bool) -> Result<Done> {
        let rem = self.hydrator.remote(&r.id).ok_or_else(|| {
            Error::said(
                ErrorCode::Auth,
                crate::said!(
                    "{root}: not signed in; run `skyfill login {root}`",
                    root = r.local.display()
                ),
            )
        })?;
        let lock = self.sync.lock(&r.id);
        let mut prev = lock.lock().await;
        if self.root_by_id(&r.id).is_none() {
            return Ok(Done::default()); // removed while this pass waited
        }
        // Until this pass ends with nothing done, the base may no longer be what the server
        // was at that ETag (a pass stopped midway leaves it so).
        let matched_at = prev.as_mut().and_then(|p| p.base_version.take());
        let scope = if limited {
            let poll = Duration::from_secs(self.registry.settings(r.uid).poll_interval_secs);
            self.sync.take_scope(&r.id, poll)
        } else {
            self.sync.take_all(&r.id);
            Scope::Full
        };
        {
            let mut m = self.sync.roots.lock().unwrap();
            let s = m.entry(r.id.clone()).or_default();
            s.first_event = None;
            s.last_event = None;
            s.retry_at = None;
        }
        let root = self.open_root(r)?;
        let q = self.quiet(&root)?;
        let settings = self.registry.settings(r.uid);
        let ignore = Ignore::new(&settings.ignore).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the user's ignore patterns");
            Ignore::default()
        });
        let fs = RootFs {
            id: r.id.clone(),
            q,
            owner: Owner {
                uid: r.uid,
                gid: r.gid,
            },
            group: &self.group,
            index: &*self.index,
            watcher: self.sync.watcher.as_ref(),
            watched: &self.sync.keys,
            touched: Mutex::new(Vec::new()),
        };
        let pass = Pass {
            root: &r.id,
            remote: &*rem,
            local: &fs,
            index: &*self.index,
            ignore: &ignore,
            settle_secs: SETTLE.as_secs() as i64,
            host: conflict::hostname(),
            prev: prev.as_ref(),
            max_entries: self.limits.entries_per_root,
            crash_after: None,
            folders_per_pass: crate::sync::MAX_FOLDERS,
        };
        let res = match scope {
            Scope::Full => pass.run_full(matched_at).await.map(|c| {
                if c.streamed {
                    tracing::info!(root = %r.local.display(), folders = c.outcome.snapshot.listed_dirs,
                        ops = c.outcome.plan.ops.len(),
                        ms = c.compared.as_ref().map(|(_, t)| t.as_millis() as u64),
                        "full pass: both sides compared with the sync base, the folders that differ synced");
                }
                (c.outcome, true, None)
            }),
            Scope::Folders { dirs, remote } => {
                pass.run_changed(dirs, remote, matched_at)
                    .await
                    .map(|c| {
                        if let Some((found, took)) = &c.compared {
                            let folders = match found {
                                Some(f) => f.len().to_string(),
                                None => "over-limit".into(),
                            };
                            tracing::debug!(root = %r.local.display(), folders,
                                ms = took.as_millis() as u64, "server compared with the sync base");
                        }
                        // (Limited passes only: a full one is logged as any pass is.)
                        if !c.full && c.outcome.snapshot.listed_dirs > 0 {
                            tracing::info!(root = %r.local.display(), folders = c.outcome.snapshot.listed_dirs,
                                remote, ops = c.outcome.plan.ops.len(), "sync pass over changed folders");
                        }
                        (c.outcome, c.full, c.base_version)
                    })
            }
        };
        for m in fs.touched.lock().unwrap().drain(..) {
            self.note(Notice::changed(&m));
        }
        let (mut out, full, seen_at) = match res {
            Ok(o) => o,
            Err(e) => {
                let offline = e.is_offline();
                let msg = if offline {
                    crate::said!(
                        "server unreachable; local changes are kept and sync resumes by itself ("
                    )
                    .then(e.said())
                    .suffixed(")")
                } else {
                    e.said()
                };
                tracing::warn!(root = %r.local.display(), error = %e, "sync pass failed");
                return Err(self.pass_failed(r, msg, offline));
            }
        };
        let rep = &out.report;
        let waiting = out.plan.waiting.len();
        if !out.plan.ops.is_empty() {
            tracing::info!(root = %r.local.display(), ops = out.plan.ops.len(), done = rep.done,
                uploaded = rep.uploaded, placeholders = rep.placeholders, refreshed = rep.refreshed,
                renamed = rep.renamed, deleted = rep.deleted, conflicts = rep.conflicts.len(),
                errors = rep.errors.len(), "sync pass");
        }
        for (p, copy) in &rep.conflicts {
            self.emit(
                r.uid,
                Event::Conflict {
                    path: Core::abs(r, p.as_str()),
                    copy: Core::abs(r, copy.as_str()),
                },
            );
        }
        {
            let mut m = self.sync.roots.lock().unwrap();
            let s = m.entry(r.id.clone()).or_default();
            if rep.offline || !rep.errors.is_empty() {
                s.retry_at = Some(Instant::now() + OFFLINE_RETRY);
            } else if !out.plan.waiting.is_empty() {
                // Files still being written: look again once they settle.
                let now = Instant::now();
                s.first_event.get_or_insert(now);
                s.last_event = Some(now);
            }
        }
        if rep.offline {
            self.set_error(
                r,
                Some(RootError {
                    message:
                        "server unreachable; local changes are kept and sync resumes by itself"
                            .into(),
                    said: Some(crate::said!(
                        "server unreachable; local changes are kept and sync resumes by itself"
                    )),
                    offline: true,
                }),
            );
        } else if let Some((p, e)) = rep.errors.first() {
            self.set_error(
                r,
                Some({
                    let said = crate::said_n!(
                        "{n} item not synced yet: {path}: {error}",
                        "{n} items not synced yet; first: {path}: {error}",
                        rep.errors.len(),
                        path = p,
                        error = e
                    );
                    RootError {
                        message: said.english(),
                        said: Some(said),
                        offline: false,
                    }
                }),
            );
        } else {
            self.set_error(r, None);
        }
        // The listing is kept for the next pass only where it lets that pass list less
        // (folder ETags propagate); elsewhere the next pass lists in full anyway, and a
        // million entries held between passes would be the daemon's whole memory at rest.
        if !out.settled() {
            // Files still being written, conflicts, things set aside: the next pass looks
            // at the whole root.
            self.sync.need_full(&r.id);
        }
        if full {
            *prev = Some(std::mem::take(&mut out.snapshot)).filter(|s| s.propagating);
        } else if let Some(p) = prev.as_mut() {
            // Any change to the base (either side's) parts it from that ETag: seen again
            // (content-derived ETags repeat) it would say nothing about the base.
            p.base_version = seen_at;
        }
        drop(prev);
        // Pinned files download: after a full pass, wherever they are; after a pass over
        // changed folders, among the placeholders it made.
        let todo: Vec<RelPath> = if full {
            vec![RelPath::root()]
        } else {
            out.plan
                .ops
                .iter()
                .filter(|o| matches!(o, Op::Placeholder { .. } | Op::Refresh { .. }))
                .map(|o| o.path().clone())
                .collect()
        };
        let mut got = 0;
        for p in &todo {
            match self.files().reconcile(r, p).await {
                Ok(b) => got += b.files,
                Err(e) => {
                    tracing::warn!(root = %r.local.display(), error = %e, "pinned files not downloaded");
                }
            }
        }
        // The budget is kept by the notice consumer, like after a download.
        self.note(Notice::Fetching {
            root: r.id.clone(),
            bytes: 0,
            room: None,
        });
        Ok(Done {
            added: rep.placeholders,
            uploaded: rep.uploaded,
            downloaded: got,
            conflicts: rep.conflicts.len() as u64,
            changed: rep.renamed + rep.deleted + rep.refreshed,
            waiting: waiting as u64,
            errors: rep
                .errors
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect(),
        })
    }

    /// Looks for changes now (in `path`'s root, or in all of the caller's roots) and
    /// downloads pinned files.
    pub async fn sync_now(&self, peer: Peer, path: Option<&str>) -> Result<SyncResult> {
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
                            path: Core::abs(&r, rel.as_str()),
                            reason: e,
                            said: None,
                        });
                    }
                }
                Err(e) => out.errors.push(Skipped {
                    path: Core::abs(&r, rel.as_str()),
                    reason: e.message,
                    said: e.said,
                }),
            }
        }
        Ok(out)
    }
}

/// How long the folder watcher lets events gather before reading them.
const GATHER: Duration = Duration::from_millis(20);

/// Events in one read (of at most about a thousand) after which the next read goes on at once.
const BUSY_READ: usize = 256;

/// Folder events -> roots to sync, on a thread of its own (`folder-watcher`). Events the
/// daemon caused itself are dropped.
///
/// Events come in bursts and streams (a program saving; a build or an unpacked archive
/// elsewhere on the filesystem, which the filesystem mark reports too). The thread waits
/// for the first with `poll` and then sleeps a moment ([`GATHER`]) off the group's wait
/// queue, so the events arriving meanwhile wake nobody, and reads them a buffer at a time;
/// only a read that found many goes on at once. (Registered with the async runtime instead,
/// every event woke its reactor: 12 us of the worker's time per file written anywhere on a
/// root's filesystem.) A pass waits 2 s for quiet anyway.
pub(super) fn watch_loop(d: Arc<Core>) {
    let Some(w) = d.sync.watcher.as_ref() else {
        return;
    };
    let me = std::process::id() as i32;
    let mut buf = vec![0u8; crate::hsm::fanotify::READ_BUF];
    let mut busy = false;
    loop {
        if !busy {
            match w.wait(1000) {
                Ok(true) => std::thread::sleep(GATHER),
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "folder watcher failed");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let changes = match w.read(&mut buf) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "folder watcher failed");
                busy = false;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        busy = changes.len() >= BUSY_READ;
        let ids: Vec<String> = d
            .roots
            .read()
            .unwrap()
            .iter()
            .map(|r| r.id.clone())
            .collect();
        for c in changes {
            if c.pid == me {
                continue;
            }
            if c.overflow() {
                d.sync.touch_all(&ids);
                continue;
            }
            let root = c
                .dir
                .as_ref()
                .and_then(|k| d.sync.keys.lock().unwrap().get(k).cloned());
            // A folder removed or moved away (seen from itself or from its parent): what was
            // below it, and a folder made again under its name, are not described by any
            // one folder's entries, so the whole root is looked at.
            let moved = c.mask & (libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0
                || (c.mask & libc::FAN_ONDIR != 0
                    && c.mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0);
            match root {
                Some((id, _)) if moved => d.sync.touch(&id),
                Some((id, dir)) => d.sync.touch_dir(&id, Some(&dir)),
                // A file written somewhere else on a filesystem that holds a root.
                None if c.filesystem_wide() => {}
                None => d.sync.touch_all(&ids),
            }
        }
    }
}

/// Startup pass of every root, then passes when due.
/// Starts due passes. Each root's pass is a task of its own (with the pass deadline), so a
/// slow or endless server delays only its own root, never another user's.
pub(super) async fn background(d: Arc<Core>) {
    let running: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    loop {
        let roots: Vec<RootRecord> = d.roots.read().unwrap().clone();
        for r in roots {
            if r.paused || d.hydrator.remote(&r.id).is_none() {
                continue;
            }
            if running.lock().unwrap().contains(&r.id) {
                continue;
            }
            // A root whose lock is held is being populated or synced already: not now.
            if d.sync.lock(&r.id).try_lock().is_err() {
                continue;
            }
            let poll = Duration::from_secs(d.registry.settings(r.uid).poll_interval_secs);
            if d.sync.due(&r.id, poll) {
                running.lock().unwrap().insert(r.id.clone());
                let (d, running) = (d.clone(), running.clone());
                tokio::spawn(async move {
                    let span = tracing::info_span!("sync", root = %r.local.display());
                    let _ = d.passes().sync_changes(&r).instrument(span).await;
                    running.lock().unwrap().remove(&r.id);
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

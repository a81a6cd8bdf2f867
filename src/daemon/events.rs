//! The one consumer of the file notices that the hydrator, eviction and the sync executor
//! send: it updates the index, tells the file's owner (subscribers) and keeps each root's
//! disk budget. A download into a root with a budget announces itself here and waits for the
//! answer that room was made: the index scan and the evictions run in this task, never in
//! the hydrator.

use super::core::Core;
use super::prefetch;
use crate::hsm::evict;
use crate::hsm::hydrate::Notice;
use crate::hsm::meta::Pin;
use crate::ipc::proto::{Direction, ErrorCode, Event, SyncState};
use crate::model::RelPath;
use crate::roots::RootRecord;
use crate::sync::budget;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// The least recently used local files of `r`, enough of them to free `need` bytes when
/// possible. The index orders files by the last use it knows of; each candidate's real
/// last use (atime or ctime) is read, and a file used since moves back in the order. Files
/// whose real use is no later than the order's position so far are surely older than any not
/// yet looked at, so the walk stops once those hold `need` bytes (or after
/// [`MAX_CANDIDATES`]).
fn candidates(
    core: &Core,
    r: &RootRecord,
    q: std::os::fd::BorrowedFd<'_>,
    need: u64,
) -> Vec<budget::Candidate> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<(i64, String)> = None;
    while seen.len() < MAX_CANDIDATES {
        let Ok(batch) =
            core.index
                .oldest_local(&r.id, after.as_ref().map(|(s, p)| (*s, p.as_str())), 256)
        else {
            break;
        };
        let Some(last) = batch.last() else { break };
        after = Some((last.0, last.1.clone()));
        let horizon = last.0;
        for (stamp, p, rec) in batch {
            if !seen.insert(p.clone()) {
                continue;
            }
            let Ok(path) = RelPath::parse(&p) else {
                continue;
            };
            let Ok((pfd, name)) = crate::fsutil::open_parent(q, &path) else {
                continue;
            };
            let (Ok(st), Ok(Some(m))) = (
                crate::fsutil::stat_at(pfd.as_fd(), name),
                evict::meta_at(pfd.as_fd(), name, &p),
            ) else {
                continue;
            };
            let used_at = st.st_atime.max(st.st_ctime);
            if used_at > stamp {
                let _ = core.index.touch(&r.id, &p, used_at);
            }
            let dirty = (st.st_size as u64, (st.st_mtime, st.st_mtime_nsec as u32))
                != (m.size, m.mtime)
                || m.version.is_empty();
            out.push(budget::Candidate {
                path,
                bytes: rec.local_bytes,
                atime: used_at,
                pinned: m.pin == Pin::Pinned,
                dirty,
            });
        }
        let sure: u64 = out
            .iter()
            .filter(|c| !c.pinned && !c.dirty && c.atime <= horizon)
            .map(|c| c.bytes)
            .sum();
        if sure >= need {
            break;
        }
    }
    out
}

/// Applies notices as they come, until the daemon stops. Opens of small files also feed
/// the folder read-ahead detector (kept here: this task is its only user).
pub async fn run(core: Arc<Core>, mut rx: UnboundedReceiver<Notice>) {
    let mut readers = prefetch::Readers::default();
    while let Some(n) = rx.recv().await {
        if let Notice::Opened { root, path } = &n {
            fetch_ahead(&core, &mut readers, root, path);
        } else if matches!(n, Notice::Fetching { .. }) {
            // Budget work is blocking filesystem work: the runtime moves its other tasks off
            // this thread meanwhile.
            crate::fsutil::blocking(|| apply(&core, n));
        } else {
            apply(&core, n);
        }
    }
}

/// A program opened `path` for its bytes: if it is reading the folder in name order, the
/// next small online-only files are fetched ahead of it, in the background. Not in a root
/// with a disk budget (nothing is downloaded there that was not asked for).
fn fetch_ahead(core: &Arc<Core>, readers: &mut prefetch::Readers, root: &str, path: &str) {
    let p = &core.hydrator.policy;
    let Some((after, n)) = readers.opened(root, path, p.folder_prefetch) else {
        return;
    };
    let Some(r) = core.root_by_id(root).filter(|r| r.budget.is_none()) else {
        return;
    };
    let todo = prefetch::candidates(core, root, &after, n, p.whole_file_below);
    let Some(last) = todo.last() else { return };
    readers.fetched(root, last, todo.len());
    tracing::debug!(folder = %path, files = todo.len(), "fetching ahead of an in-order reader");
    let parallel = 2 * p.transfer.parallel;
    tokio::spawn(prefetch::prefetch(core.clone(), r, todo, parallel));
}

/// One notice: the index and the file's owner learn of it.
pub fn apply(core: &Core, n: Notice) {
    match n {
        // A record whose remote path is not known (renamed here, not yet synced): the next
        // pass resolves it and records it.
        Notice::Changed(m) if !m.resolved() => {}
        Notice::Changed(m) => {
            let _ = core.index.put(&m.root, &m.path, &super::record_of(&m));
            if let Some(r) = core.root_by_id(&m.root) {
                core.emit(
                    r.uid,
                    Event::State {
                        path: Core::abs(&r, &m.path),
                        state: m.availability(),
                        sync: SyncState::Synced,
                        size: m.size,
                        local_bytes: m.local_bytes(),
                    },
                );
            }
        }
        Notice::Progress {
            root,
            path,
            done,
            total,
            app,
        } => {
            if let Some(r) = core.root_by_id(&root) {
                core.emit(
                    r.uid,
                    Event::Progress {
                        path: Core::abs(&r, &path),
                        direction: Direction::Down,
                        done,
                        total,
                        pid: app.as_ref().map(|a| a.0),
                        app: app.map(|a| a.1),
                    },
                );
            }
        }
        Notice::Failed { root, path, errno } => {
            if let Some(r) = core.root_by_id(&root) {
                core.emit(r.uid, {
                    let said = crate::said!("download failed: ").then(crate::i18n::said_os(
                        &std::io::Error::from_raw_os_error(errno),
                    ));
                    Event::Error {
                        path: Some(Core::abs(&r, &path)),
                        code: ErrorCode::Remote,
                        message: said.english(),
                        said: Some(said),
                    }
                });
            }
        }
        Notice::Flush(done) => {
            let _ = done.send(());
        }
        Notice::Opened { .. } => {} // read-ahead: see `run`
        Notice::Released { root, bytes } => core.hydrator.release(&root, bytes),
        Notice::Fetching { root, bytes, room } => {
            if let Some(r) = core.root_by_id(&root).filter(|r| r.budget.is_some()) {
                // Room for every download the totals do not count yet, this one included.
                keep_budget(core, &r, core.hydrator.reserved(&root).max(bytes));
            }
            if let Some(tx) = room {
                let _ = tx.send(());
            }
        }
    }
}

/// The bytes `r` holds on disk and the most its budget allows (None: no budget). O(log n):
/// the index keeps the total.
fn usage(core: &Core, r: &RootRecord) -> Option<(u64, u64)> {
    let b = r.budget?;
    let used = core.index.totals(&r.id, "").ok()?.local_bytes;
    let (total, avail) = match nix::sys::statvfs::statvfs(&r.local) {
        Ok(v) => (
            v.blocks() * v.fragment_size(),
            v.blocks_available() * v.fragment_size(),
        ),
        Err(_) => (0, 0),
    };
    Some((used, budget::limit(&b, used, total, avail)))
}

/// Whether `incoming` more bytes fit in `r`'s budget as it stands: the hydrator's quick check
/// before a download, so only downloads that need evictions wait for this task.
pub fn fits(core: &Core, r: &RootRecord, incoming: u64) -> bool {
    usage(core, r).is_none_or(|(used, limit)| used + incoming <= limit)
}

/// How many eviction candidates one budget check looks at, at most.
const MAX_CANDIDATES: usize = 4096;

/// Evicts least recently used local files of `r` until `incoming` more bytes fit in its
/// budget. Pinned files, files with changes not uploaded and files in use stay. The bytes
/// used come from the index's totals and the candidates from its eviction order, so the cost
/// does not grow with the root: O(log n) when there is room, O(log n + victims) otherwise.
pub fn keep_budget(core: &Core, r: &RootRecord, incoming: u64) {
    let Some((used, limit)) = usage(core, r) else {
        return;
    };
    if used + incoming <= limit {
        return;
    }
    let Ok(root) = core.open_root(r) else { return };
    let Ok(q) = core.quiet(&root) else { return };
    let cands = candidates(core, r, q.as_fd(), used + incoming - limit);
    let victims = budget::choose(&cands, used, incoming, limit);
    let mut freed = 0u64;
    for v in &victims {
        match evict::evict(q.as_fd(), v, &core.group, true) {
            Ok(n) => {
                freed += n;
                if let Ok((pfd, name)) = crate::fsutil::open_parent(q.as_fd(), v) {
                    if let Ok(Some(m)) = evict::meta_at(pfd.as_fd(), name, v.as_str()) {
                        apply(core, Notice::changed(&m));
                    }
                }
            }
            Err(e) => tracing::debug!(path = %v, error = %e, "not evicted for the budget"),
        }
    }
    tracing::info!(root = %r.local.display(), used, limit, incoming, freed, files = victims.len(), "disk budget kept");
    if used + incoming > limit + freed {
        core.emit(
            r.uid,
            {
                let said = crate::said!(
                    "disk budget reached: {used} of {limit} bytes used by pinned, changed or open files",
                    used = used + incoming - freed,
                    limit = limit
                );
                Event::Error {
                    path: Some(r.local.display().to_string()),
                    code: ErrorCode::Budget,
                    message: said.english(),
                    said: Some(said),
                }
            },
        );
    }
}

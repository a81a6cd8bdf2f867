//! When each root's next sync pass is due: local changes debounced until files settle (or a
//! longest delay), the poll interval, retries while a server is unreachable, and the pass
//! lock (one pass at a time per root, none while add-root populates). Plain state, no I/O
//! but the folder watcher it owns; `syncing` runs the passes it says are due.

use crate::model::RelPath;
use crate::sync::remote_scan::Snapshot;
use crate::sync::watch::{DirKey, Watcher};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Local changes wait this long without further events before a pass (files settle).
pub const SETTLE: Duration = Duration::from_secs(2);
/// ... but no longer than this after the first one.
pub const MAX_DELAY: Duration = Duration::from_secs(15);
/// Retry interval while a server is unreachable.
pub const OFFLINE_RETRY: Duration = Duration::from_secs(10);

/// What a pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole root, on both sides.
    Full,
    /// These folders (changed locally), and with `remote` the folders where the server
    /// differs from the sync base (the poll).
    Folders { dirs: Vec<RelPath>, remote: bool },
}

#[derive(Default)]
pub struct RootSync {
    pub first_event: Option<Instant>,
    pub last_event: Option<Instant>,
    /// The last full pass (the poll interval counts from it).
    pub last_pass: Option<Instant>,
    pub retry_at: Option<Instant>,
    /// Folders the watcher reported changed since the last pass.
    pub dirty: BTreeSet<RelPath>,
    /// A change the folders cannot describe (an unknown folder, a lost event queue, a failed
    /// pass): the next pass is a full one.
    pub full: bool,
}

#[derive(Default)]
pub struct SyncCtl {
    pub roots: Mutex<HashMap<String, RootSync>>,
    /// One pass at a time per root; holds the last remote listing.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Snapshot>>>>>,
    pub watcher: Option<Watcher>,
    /// Watched folders: their root and path (as of the pass that last saw them).
    pub keys: Mutex<HashMap<DirKey, (String, RelPath)>>,
}

impl SyncCtl {
    pub fn new() -> SyncCtl {
        let watcher = match Watcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "no folder watcher: local changes are seen at the next poll only");
                None
            }
        };
        SyncCtl {
            watcher,
            ..Default::default()
        }
    }

    /// The root's pass lock: one pass at a time, and no pass while `add-root` is still
    /// creating the placeholders (it holds the lock meanwhile).
    pub fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<Snapshot>>> {
        self.locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Something changed in root `id`, somewhere: the next pass is a full one.
    pub fn touch(&self, id: &str) {
        self.touch_dir(id, None);
    }

    /// Something changed in folder `dir` of root `id` (None: somewhere in it).
    pub fn touch_dir(&self, id: &str, dir: Option<&RelPath>) {
        let now = Instant::now();
        let mut m = self.roots.lock().unwrap();
        let s = m.entry(id.to_string()).or_default();
        s.first_event.get_or_insert(now);
        s.last_event = Some(now);
        match dir {
            Some(d) if !s.full && s.dirty.len() < crate::sync::MAX_FOLDERS => {
                s.dirty.insert(d.clone());
            }
            _ => {
                s.full = true;
                s.dirty.clear();
            }
        }
    }

    /// At the start of a background pass of `id`: what it must look at. Takes the changed
    /// folders (events from now on count for the next pass). A full pass is due after a
    /// start, a failure, a change the folders cannot describe, or a pass asked for with no
    /// change (resume, sign-in); once the poll interval has passed, the server is compared
    /// too.
    pub fn take_scope(&self, id: &str, poll: Duration) -> Scope {
        let mut m = self.roots.lock().unwrap();
        let s = m.entry(id.to_string()).or_default();
        let dirs: Vec<RelPath> = std::mem::take(&mut s.dirty).into_iter().collect();
        let now = Instant::now();
        let poll_due = s.last_pass.is_none_or(|t| now.duration_since(t) >= poll);
        let full = std::mem::take(&mut s.full)
            || s.retry_at.is_some()
            || s.last_pass.is_none()
            || (dirs.is_empty() && !poll_due);
        if full || poll_due {
            s.last_pass = Some(now);
        }
        if full {
            Scope::Full
        } else {
            Scope::Folders {
                dirs,
                remote: poll_due,
            }
        }
    }

    /// Clears what a full pass covers (changed folders and the need for a full pass).
    pub fn take_all(&self, id: &str) {
        let mut m = self.roots.lock().unwrap();
        let s = m.entry(id.to_string()).or_default();
        s.dirty.clear();
        s.full = false;
        s.last_pass = Some(Instant::now());
    }

    /// The next pass of `id` must look at the whole root (whenever it is due).
    pub fn need_full(&self, id: &str) {
        let mut m = self.roots.lock().unwrap();
        let s = m.entry(id.to_string()).or_default();
        s.full = true;
        s.dirty.clear();
    }

    /// A pass is due at once (resume, sign-in).
    pub fn due_now(&self, id: &str) {
        self.roots
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .retry_at = Some(Instant::now());
    }

    /// Marks every root changed (queue overflow, unknown folder).
    pub fn touch_all(&self, ids: &[String]) {
        for id in ids {
            self.touch(id);
        }
    }

    /// Whether a pass is due for `id` now.
    pub fn due(&self, id: &str, poll: Duration) -> bool {
        let m = self.roots.lock().unwrap();
        let Some(s) = m.get(id) else {
            return true;
        };
        let now = Instant::now();
        if let Some(t) = s.retry_at {
            return now >= t;
        }
        if let (Some(first), Some(last)) = (s.first_event, s.last_event) {
            if now.duration_since(last) >= SETTLE || now.duration_since(first) >= MAX_DELAY {
                return true;
            }
        }
        s.last_pass.is_none_or(|t| now.duration_since(t) >= poll)
    }
}

//! When each root's next sync pass is due: local changes debounced until files settle (or a
//! longest delay), the poll interval, retries while a server is unreachable, and the pass
//! lock (one pass at a time per root, none while add-root populates). Plain state, no I/O
//! but the folder watcher it owns; `syncing` runs the passes it says are due.

use crate::sync::remote_scan::Snapshot;
use crate::sync::watch::{DirKey, Watcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Local changes wait this long without further events before a pass (files settle).
pub const SETTLE: Duration = Duration::from_secs(2);
/// ... but no longer than this after the first one.
pub const MAX_DELAY: Duration = Duration::from_secs(15);
/// Retry interval while a server is unreachable.
pub const OFFLINE_RETRY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct RootSync {
    pub first_event: Option<Instant>,
    pub last_event: Option<Instant>,
    pub last_pass: Option<Instant>,
    pub retry_at: Option<Instant>,
}

#[derive(Default)]
pub struct SyncCtl {
    pub roots: Mutex<HashMap<String, RootSync>>,
    /// One pass at a time per root; holds the last remote listing.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Snapshot>>>>>,
    pub watcher: Option<Watcher>,
    pub keys: Mutex<HashMap<DirKey, String>>,
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

    pub fn touch(&self, id: &str) {
        let now = Instant::now();
        let mut m = self.roots.lock().unwrap();
        let s = m.entry(id.to_string()).or_default();
        s.first_event.get_or_insert(now);
        s.last_event = Some(now);
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

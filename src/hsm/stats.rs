//! Transfer counters of the hydrator, per root and in all (atomics: counting never takes a
//! lock on the hot path). `skyfill stats` and the benchmarks read them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One set of counters (atomics: counting never takes a lock).
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_fetched: AtomicU64,
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub denied: AtomicU64,
    pub events: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RootStats {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub completed: u64,
    pub denied: u64,
    pub events: u64,
}

impl Counters {
    fn snapshot(&self) -> RootStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RootStats {
            bytes_fetched: l(&self.bytes_fetched),
            requests: l(&self.requests),
            completed: l(&self.completed),
            denied: l(&self.denied),
            events: l(&self.events),
        }
    }
}

impl std::ops::Add for RootStats {
    type Output = RootStats;
    fn add(self, o: RootStats) -> RootStats {
        RootStats {
            bytes_fetched: self.bytes_fetched + o.bytes_fetched,
            requests: self.requests + o.requests,
            completed: self.completed + o.completed,
            denied: self.denied + o.denied,
            events: self.events + o.events,
        }
    }
}

/// Counters the daemon reports (`skyfill stats`) and tests check: daemon-wide (root sees
/// them) and per sync root (a user sees the sums over their own roots).
#[derive(Debug, Default)]
pub struct Stats {
    pub total: Counters,
    per_root: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Stats {
    pub fn of(&self, root: &str) -> Arc<Counters> {
        if let Some(c) = self.per_root.read().unwrap().get(root) {
            return c.clone();
        }
        self.per_root
            .write()
            .unwrap()
            .entry(root.to_string())
            .or_default()
            .clone()
    }

    /// Adds `n` to one counter, daemon-wide and for `root`.
    pub fn add(&self, root: &str, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(&self.total).fetch_add(n, Ordering::Relaxed);
        field(&self.of(root)).fetch_add(n, Ordering::Relaxed);
    }

    /// The daemon-wide counters.
    pub fn total(&self) -> RootStats {
        self.total.snapshot()
    }

    /// The counters of one root (zeros for a root that saw nothing).
    pub fn of_root(&self, root: &str) -> RootStats {
        self.per_root
            .read()
            .unwrap()
            .get(root)
            .map(|c| c.snapshot())
            .unwrap_or_default()
    }
}

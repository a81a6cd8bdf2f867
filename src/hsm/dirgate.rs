//! Folders filled on demand while add-root populates a root. Every folder add-root makes
//! (the root first) carries a permission mark of the folder gate's group until its
//! placeholders are made: a program that reads the entries of a folder the listing has not
//! reached yet (a file manager opening it, `ls`, `find`) waits while that folder alone is
//! listed on the server and filled, then sees all of it, instead of a half-made folder.
//! The rest of the root keeps filling from the full listing in the background.
//!
//! [`Gate`] decides (which folder an event is about, fill it or let it through) and needs no
//! kernel; [`DirGate`] ties it to the group (`fanotify::FolderGroup`) and answers events.
//! What a program sees in the window is in `doc/SEMANTICS.md` ("While a root is added").

use super::fanotify::{FolderEvent, FolderGroup};
use crate::fsutil;
use crate::model::RelPath;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A folder's identity while the root is populated: device and inode.
pub type Key = (u64, u64);

/// What to do with a program's read of a folder's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it go on (a folder filled already, not ours, or the daemon's own read).
    Allow,
    /// Fill this folder first, then let it go on.
    Fill(RelPath),
}

/// Which folders are still waiting to be filled. A folder is guarded by whoever made it,
/// before any event about it can arrive (events need its mark), so a folder filled is never
/// guarded again: nothing else is kept.
#[derive(Debug, Default)]
pub struct Gate {
    waiting: HashMap<Key, RelPath>,
}

impl Gate {
    /// A folder just made at `path` waits until filled.
    pub fn guard(&mut self, key: Key, path: &RelPath) {
        self.waiting.insert(key, path.clone());
    }

    /// The answer to a read of folder `key`; `own` is a read by the daemon itself, which is
    /// never held (its own listings must not wait on the thread that answers them).
    pub fn verdict(&self, key: Key, own: bool) -> Verdict {
        match self.waiting.get(&key) {
            Some(p) if !own => Verdict::Fill(p.clone()),
            _ => Verdict::Allow,
        }
    }

    /// Folder `key` was filled (or its fill failed: the background listing completes it);
    /// later reads go on at once.
    pub fn filled(&mut self, key: Key) {
        self.waiting.remove(&key);
    }

    /// How many folders are still waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// The gate's group and decisions, for one add-root. Dropping it closes the group: the kernel
/// removes every mark and lets any read still held go on.
pub struct DirGate {
    group: FolderGroup,
    gate: Mutex<Gate>,
    me: i32,
}

fn key_of(fd: BorrowedFd<'_>) -> io::Result<Key> {
    let st = fsutil::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

impl DirGate {
    pub fn new() -> io::Result<DirGate> {
        Ok(DirGate {
            group: FolderGroup::new()?,
            gate: Mutex::new(Gate::default()),
            me: std::process::id() as i32,
        })
    }

    /// Holds reads of the folder behind `dir` (just made at `path`) until it is filled.
    pub fn guard(&self, dir: BorrowedFd<'_>, path: &RelPath) -> io::Result<()> {
        self.gate.lock().unwrap().guard(key_of(dir)?, path);
        self.group.guard(dir)
    }

    /// Answers reads of folders until `done` is set and no event is queued. A read of a
    /// folder not filled yet waits for `fill` of that folder (whatever its outcome: a failed
    /// fill is logged and the background listing completes the folder).
    pub fn serve<E: std::fmt::Display>(
        &self,
        done: &AtomicBool,
        fill: &mut dyn FnMut(&RelPath) -> Result<(), E>,
    ) {
        loop {
            let finished = done.load(Ordering::Acquire);
            let events = match self.group.wait(if finished { 0 } else { 50 }) {
                Ok(true) => self.group.read_events().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading folder gate events failed");
                    Vec::new()
                }),
                Ok(false) => Vec::new(),
                Err(e) => {
                    // Without the group's events no read can be held: stop serving (the
                    // group is closed with the gate, which lets every held read go on).
                    tracing::warn!(error = %e, "cannot wait for folder gate events");
                    return;
                }
            };
            if events.is_empty() {
                if finished {
                    return;
                }
                continue;
            }
            // Reads that may go on are answered at once; the others grouped by folder.
            let mut fills: Vec<(Key, RelPath, Vec<FolderEvent>)> = Vec::new();
            for ev in events {
                let verdict = match key_of(ev.fd.as_fd()) {
                    Ok(k) => (k, self.gate.lock().unwrap().verdict(k, ev.pid == self.me)),
                    Err(_) => ((0, 0), Verdict::Allow),
                };
                match verdict {
                    (_, Verdict::Allow) => self.answer(&ev),
                    (k, Verdict::Fill(p)) => match fills.iter_mut().find(|f| f.0 == k) {
                        Some(f) => f.2.push(ev),
                        None => fills.push((k, p, vec![ev])),
                    },
                }
            }
            for (key, path, evs) in fills {
                let span = tracing::info_span!("fill folder on demand", folder = %path);
                let _g = span.enter();
                let t = Instant::now();
                match fill(&path) {
                    Ok(()) => {
                        tracing::info!(elapsed = ?t.elapsed(), readers = evs.len(), "folder listed during add-root: filled before its reader went on")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "filling a folder on demand failed; the reader sees what is made so far")
                    }
                }
                self.gate.lock().unwrap().filled(key);
                if let Err(e) = self.group.release(evs[0].fd.as_fd()) {
                    tracing::debug!(error = %e, "removing a folder gate mark");
                }
                for ev in &evs {
                    self.answer(ev);
                }
            }
        }
    }

    fn answer(&self, ev: &FolderEvent) {
        if let Err(e) = self.group.allow(ev) {
            tracing::warn!(error = %e, "answering a folder gate event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn a_folder_waits_until_filled_then_goes_on() {
        let mut g = Gate::default();
        g.guard((1, 10), &p("a"));
        g.guard((1, 11), &p("a/b"));
        assert_eq!(g.verdict((1, 10), false), Verdict::Fill(p("a")));
        assert_eq!(g.verdict((1, 11), false), Verdict::Fill(p("a/b")));
        assert_eq!(g.waiting(), 2);
        g.filled((1, 10));
        assert_eq!(g.verdict((1, 10), false), Verdict::Allow);
        assert_eq!(g.verdict((1, 11), false), Verdict::Fill(p("a/b")));
        assert_eq!(g.waiting(), 1);
    }

    #[test]
    fn the_daemons_own_reads_and_unknown_folders_go_on() {
        let mut g = Gate::default();
        g.guard((1, 10), &p("a"));
        assert_eq!(g.verdict((1, 10), true), Verdict::Allow);
        assert_eq!(g.verdict((2, 10), false), Verdict::Allow);
        assert_eq!(g.verdict((1, 99), false), Verdict::Allow);
    }
}

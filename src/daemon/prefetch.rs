//! Folder read-ahead: when a program opens the small online-only files of a folder one after
//! another in name order (a viewer paging through photos, `head *`, a build reading sources),
//! the next files of that folder are fetched before it gets to them, several at once, so a
//! folder costs a few round trips instead of one per file. [`Readers`] is the pure detector;
//! [`prefetch`] runs what it asks for through the daemon's own (event-free) view of the root.
//! Nothing is fetched ahead in a root with a disk budget.

use super::core::Core;
use crate::fsutil;
use crate::hsm::meta::{self, Fill};
use crate::model::{Availability, RelPath};
use crate::roots::RootRecord;
use futures_util::stream::{self, StreamExt};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

/// Folders followed at once (the least recently opened is forgotten first).
const FOLLOWED: usize = 64;

/// Where one program-in-a-folder is.
#[derive(Debug, Default, Clone)]
struct Reading {
    /// The last file opened.
    last: String,
    /// The last file fetched ahead ("" if none).
    ahead_to: String,
    /// Files fetched ahead that the reader has not opened yet.
    pending: usize,
    /// When it was last opened (for forgetting).
    tick: u64,
}

/// The in-order detector: which folders are being read in name order, and how far ahead of
/// each reader files were fetched.
#[derive(Debug, Default)]
pub struct Readers {
    folders: HashMap<(String, String), Reading>,
    tick: u64,
}

impl Readers {
    /// `path` (root-relative) of root `root` was opened for its bytes. Returns the file to
    /// fetch after, and how many, when the folder is being read in order and fewer than half
    /// of `ahead` files are fetched ahead of the reader.
    pub fn opened(&mut self, root: &str, path: &str, ahead: usize) -> Option<(String, usize)> {
        if ahead == 0 {
            return None;
        }
        let folder = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        self.tick += 1;
        if self.folders.len() >= FOLLOWED
            && !self.folders.contains_key(&(root.into(), folder.clone()))
        {
            if let Some(k) = self
                .folders
                .iter()
                .min_by_key(|(_, r)| r.tick)
                .map(|(k, _)| k.clone())
            {
                self.folders.remove(&k);
            }
        }
        let r = self.folders.entry((root.to_string(), folder)).or_default();
        r.tick = self.tick;
        if r.last.is_empty() || path <= r.last.as_str() {
            // A first open, or out of order: start over.
            *r = Reading {
                last: path.to_string(),
                tick: self.tick,
                ..Reading::default()
            };
            return None;
        }
        r.last = path.to_string();
        if path <= r.ahead_to.as_str() {
            r.pending = r.pending.saturating_sub(1);
        } else {
            r.pending = 0; // the reader passed everything fetched ahead
        }
        if r.pending >= ahead / 2 {
            return None;
        }
        let after = if r.ahead_to.as_str() > path {
            r.ahead_to.clone()
        } else {
            path.to_string()
        };
        Some((after, ahead - r.pending))
    }

    /// Files up to `to` were asked for ahead of the reader of `to`'s folder: `n` of them.
    pub fn fetched(&mut self, root: &str, to: &str, n: usize) {
        let folder = to.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        if let Some(r) = self.folders.get_mut(&(root.to_string(), folder)) {
            if to > r.ahead_to.as_str() {
                r.ahead_to = to.to_string();
            }
            r.pending += n;
        }
    }
}

/// Files after `after` in its folder worth fetching ahead: online-only, at most `max_size`.
pub fn candidates(core: &Core, root: &str, after: &str, n: usize, max_size: u64) -> Vec<String> {
    match core.index.next_in_folder(root, after, n) {
        Ok(v) => v
            .into_iter()
            .filter(|(_, r)| r.availability == Availability::OnlineOnly && r.size <= max_size)
            .map(|(p, _)| p)
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "no siblings to fetch ahead");
            Vec::new()
        }
    }
}

/// Fetches `paths` of root `r` whole, `parallel` at once, through the root opened once and
/// verified and the daemon's own view of it (so no event is raised). A file that is not an
/// online-only file of this root any more is left alone; failures only cost the read-ahead.
pub async fn prefetch(core: Arc<Core>, r: RootRecord, paths: Vec<String>, parallel: usize) {
    let q = match core.open_root(&r).and_then(|root| core.quiet(&root)) {
        Ok(q) => q,
        Err(e) => {
            tracing::debug!(root = %r.id, error = %e.message, "cannot fetch ahead");
            return;
        }
    };
    let (q, core, id) = (&q, &core, r.id.as_str());
    stream::iter(paths)
        .for_each_concurrent(parallel.max(1), |p| async move {
            let Ok(rel) = RelPath::parse(&p) else { return };
            let Ok(fd) = fsutil::open_beneath(q.as_fd(), &rel, libc::O_RDWR | libc::O_NOFOLLOW, 0)
            else {
                return;
            };
            let file = Arc::new(File::from(fd));
            let (Ok(st), Ok(Some(m))) = (fsutil::fstat(file.as_fd()), meta::read_fd(file.as_fd()))
            else {
                return;
            };
            if m.root != id
                || m.fill != Fill::Placeholder
                || st.st_mode & libc::S_IFMT != libc::S_IFREG
            {
                return;
            }
            let size = m.size.min(st.st_size as u64);
            let span = tracing::debug_span!("fetch ahead", path = %p);
            let _ = tracing::Instrument::instrument(
                core.hydrator.fetch(&file, (st.st_dev, st.st_ino), 0, size),
                span,
            )
            .await;
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_opens_fetch_ahead_and_keep_half_a_window_ahead() {
        let mut r = Readers::default();
        assert_eq!(
            r.opened("r", "d/f00", 8),
            None,
            "a first open is not a pattern"
        );
        assert_eq!(r.opened("r", "d/f01", 8), Some(("d/f01".into(), 8)));
        r.fetched("r", "d/f09", 8);
        // Opening what was fetched ahead: nothing more until half of it is used.
        for i in 2..6 {
            assert_eq!(r.opened("r", &format!("d/f{i:02}"), 8), None, "f{i}");
        }
        assert_eq!(r.opened("r", "d/f06", 8), Some(("d/f09".into(), 5)));
        r.fetched("r", "d/f14", 5);
        // Out of order: start over.
        assert_eq!(r.opened("r", "d/f03", 8), None);
        assert_eq!(r.opened("r", "d/f04", 8), Some(("d/f04".into(), 8)));
        // Another folder and another root are followed apart; 0 turns it off.
        assert_eq!(r.opened("r", "e/a", 8), None);
        assert_eq!(r.opened("s", "d/f05", 8), None);
        assert_eq!(r.opened("r", "e/b", 0), None);
    }

    #[test]
    fn followed_folders_are_bounded() {
        let mut r = Readers::default();
        for i in 0..1000 {
            r.opened("r", &format!("d{i}/a"), 8);
        }
        assert!(r.folders.len() <= FOLLOWED);
    }
}

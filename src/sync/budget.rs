//! The disk budget of a root: how many bytes its files may hold on disk, and which files to
//! evict to stay within it (least recently used first; never pinned files, files with
//! unsynced changes, or files in use). Pure: the daemon gathers the candidates.

use crate::ipc::proto::Budget;
use crate::model::RelPath;

/// A local file that could be freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: RelPath,
    /// Bytes it holds on disk.
    pub bytes: u64,
    /// Last access (seconds); older goes first.
    pub atime: i64,
    pub pinned: bool,
    /// Has changes not on the server yet.
    pub dirty: bool,
}

/// The bytes a root may hold: a fixed limit, or what keeps `percent` of the filesystem free
/// given that the root holds `used` now and `avail` is free.
pub fn limit(b: &Budget, used: u64, fs_total: u64, fs_avail: u64) -> u64 {
    match *b {
        Budget::MaxBytes(n) => n,
        Budget::KeepFreePercent(p) => {
            let keep = fs_total / 100 * u64::from(p.min(100));
            (used + fs_avail).saturating_sub(keep)
        }
    }
}

/// Files to evict, in order, so that `used + incoming <= limit`. May fall short when too
/// little is evictable (the caller then refuses or lets the download overshoot by one chunk).
pub fn choose(cands: &[Candidate], used: u64, incoming: u64, limit: u64) -> Vec<RelPath> {
    let need = (used + incoming).saturating_sub(limit);
    if need == 0 {
        return vec![];
    }
    let mut v: Vec<&Candidate> = cands
        .iter()
        .filter(|c| !c.pinned && !c.dirty && c.bytes > 0)
        .collect();
    v.sort_by(|a, b| a.atime.cmp(&b.atime).then_with(|| a.path.cmp(&b.path)));
    let mut freed = 0;
    let mut out = vec![];
    for c in v {
        if freed >= need {
            break;
        }
        freed += c.bytes;
        out.push(c.path.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(p: &str, bytes: u64, atime: i64, pinned: bool, dirty: bool) -> Candidate {
        Candidate {
            path: RelPath::parse(p).unwrap(),
            bytes,
            atime,
            pinned,
            dirty,
        }
    }

    #[test]
    fn oldest_unpinned_clean_go_first() {
        let cands = vec![
            c("new", 10, 300, false, false),
            c("old", 10, 100, false, false),
            c("pinned", 10, 50, true, false),
            c("dirty", 10, 60, false, true),
            c("mid", 10, 200, false, false),
        ];
        let names = |v: Vec<RelPath>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(names(choose(&cands, 50, 0, 100)), Vec::<String>::new());
        assert_eq!(names(choose(&cands, 50, 15, 50)), vec!["old", "mid"]);
        assert_eq!(
            names(choose(&cands, 50, 100, 50)),
            vec!["old", "mid", "new"]
        );
        assert_eq!(limit(&Budget::MaxBytes(7), 1, 2, 3), 7);
        // 1000 total, 10 % to keep free: root holds 100, 300 free -> may hold 300.
        assert_eq!(limit(&Budget::KeepFreePercent(10), 100, 1000, 300), 300);
    }

    proptest! {
        #[test]
        fn choice_frees_enough_when_possible_and_never_touches_kept_files(
            files in proptest::collection::vec((1u64..1000, 0i64..100, any::<bool>(), any::<bool>()), 0..30),
            used in 0u64..20000, incoming in 0u64..5000, lim in 0u64..20000,
        ) {
            let cands: Vec<Candidate> = files.iter().enumerate()
                .map(|(i, &(b, a, p, d))| c(&format!("f{i}"), b, a, p, d)).collect();
            let got = choose(&cands, used, incoming, lim);
            let freed: u64 = got.iter().map(|p| cands.iter().find(|c| &c.path == p).unwrap().bytes).sum();
            let evictable: u64 = cands.iter().filter(|c| !c.pinned && !c.dirty).map(|c| c.bytes).sum();
            for p in &got {
                let c = cands.iter().find(|c| &c.path == p).unwrap();
                prop_assert!(!c.pinned && !c.dirty);
            }
            let need = (used + incoming).saturating_sub(lim);
            prop_assert!(freed >= need.min(evictable));
            // Minimal in count: without the last victim it would not have been enough.
            if let Some(last) = got.last() {
                let lb = cands.iter().find(|c| &c.path == last).unwrap().bytes;
                prop_assert!(freed - lb < need);
            }
        }
    }
}

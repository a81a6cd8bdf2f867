//! What to fetch for an access: a pure function of the access, the file's state and the
//! process, so it is unit-tested without root. Configurable lists name the programs that
//! look for holes instead of reading (hydrated whole at open) and the programs that never
//! trigger downloads (indexers, thumbnailers, scanners).

use super::fanotify::Access;
use super::meta::{FileMeta, Fill, Pin};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Files up to this size are hydrated whole when opened (hole-aware copies see no event).
    pub whole_file_below: u64,
    /// Fetch granularity; ranges are aligned to it.
    pub chunk: u64,
    /// Extra bytes fetched ahead of a sequential reader.
    pub readahead: u64,
    /// Executables (by name) that look for holes instead of reading: hydrated whole at open.
    pub hole_aware: Vec<String>,
    /// Executables (by name) that never trigger downloads; they get EIO.
    pub never_download: Vec<String>,
    /// Seconds before an access that waits for the network gets an errno.
    pub timeout_secs: u64,
    /// Total time the remote client keeps retrying one request (below `timeout_secs`).
    pub retry_budget_secs: u64,
    /// Longest silence from a server before a request counts as stalled.
    pub idle_timeout_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Policy {
            whole_file_below: 16 << 20,
            chunk: 1 << 20,
            readahead: 4 << 20,
            hole_aware: s(&[
                "cp",
                "mv",
                "tar",
                "bsdtar",
                "gtar",
                "rsync",
                "cpio",
                "dd_rescue",
                "install",
                "ln",
                "pax",
                "zip",
                "7z",
                "rclone",
            ]),
            never_download: s(&[
                "tracker-miner-fs-3",
                "tracker-extract-3",
                "localsearch-3",
                "localsearch-extractor-3",
                "baloo_file",
                "baloo_file_extractor",
                "updatedb",
                "updatedb.plocate",
                "plocate-build",
                "mlocate",
                "clamd",
                "clamscan",
                "freshclam",
                "gnome-desktop-thumbnailer",
                "gdk-pixbuf-thumbnailer",
                "totem-video-thumbnailer",
                "ffmpegthumbnailer",
                "evince-thumbnailer",
                "gnome-epub-thumbnailer",
                "tumblerd",
            ]),
            timeout_secs: 30,
            retry_budget_secs: 25,
            idle_timeout_secs: 15,
        }
    }
}

/// Facts about the process behind an event.
#[derive(Debug, Clone, Default)]
pub struct Proc {
    /// Executable file name (`/proc/PID/exe`), empty if unknown.
    pub exe: String,
    /// The process holds this file open for writing.
    pub writer: bool,
    /// The daemon itself (pinning, explicit hydration).
    pub is_daemon: bool,
    /// The process's uid (owner of its `/proc` entry), if it could be read.
    pub uid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(i32),
    /// Fetch these byte ranges (not yet aligned or clamped) before allowing.
    Fetch(u64, u64),
}

/// `local_size`: the file's current size (a truncated or extended file is never filled
/// past its end or past the remote size).
pub fn decide(
    p: &Policy,
    access: Access,
    meta: &FileMeta,
    local_size: u64,
    proc: &Proc,
) -> Decision {
    if meta.fill == Fill::Complete {
        return Decision::Allow;
    }
    let end = meta.size.min(local_size);
    if end == 0 {
        return Decision::Allow; // nothing to fetch
    }
    if !proc.is_daemon && p.never_download.contains(&proc.exe) {
        return Decision::Deny(libc::EIO);
    }
    let whole = Decision::Fetch(0, end);
    match access {
        Access::OpenExec => whole,
        Access::Open => {
            if proc.is_daemon
                || meta.size <= p.whole_file_below
                || meta.pin == Pin::Pinned
                || p.hole_aware.contains(&proc.exe)
            {
                whole
            } else {
                Decision::Allow
            }
        }
        Access::Pre { offset, count } => {
            if proc.writer || proc.is_daemon {
                return whole; // writes and truncates look like reads: fill everything first
            }
            if offset >= end {
                return Decision::Allow;
            }
            let stop = if count == 0 {
                end
            } else {
                offset.saturating_add(count).min(end)
            };
            Decision::Fetch(offset, stop)
        }
    }
}

/// Largest read-ahead window for a sequential reader.
pub const MAX_READAHEAD: u64 = 64 << 20;

/// Aligns `[start, end)` to chunks, adds `ahead` bytes of read-ahead for a sequential reader,
/// clamps to `size`.
pub fn plan(p: &Policy, start: u64, end: u64, size: u64, ahead: Option<u64>) -> (u64, u64) {
    let chunk = p.chunk.max(4096);
    let s = start / chunk * chunk;
    let mut e = end.div_ceil(chunk) * chunk;
    if let Some(a) = ahead {
        e += a;
    }
    (s.min(size), e.min(size))
}

/// The next read-ahead window of a sequential reader: it doubles from the policy's
/// `readahead` with every fetch, up to `MAX_READAHEAD` (as the kernel's own read-ahead does),
/// so a long sequential read costs few round trips while a short one fetches little.
pub fn next_ahead(p: &Policy, previous: u64) -> u64 {
    previous
        .saturating_mul(2)
        .clamp(p.readahead, MAX_READAHEAD.max(p.readahead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::meta::Ranges;

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            v: 1,
            root: "r".into(),
            path: "f".into(),
            version: "e:1".into(),
            size,
            mtime: (0, 0),
            fill: Fill::Placeholder,
            ranges: Ranges::default(),
            pin: Pin::Inherit,
        }
    }

    fn proc(exe: &str) -> Proc {
        Proc {
            exe: exe.into(),
            ..Proc::default()
        }
    }

    #[test]
    fn small_files_and_hole_aware_programs_hydrate_whole_at_open() {
        let p = Policy::default();
        assert_eq!(
            decide(&p, Access::Open, &meta(1000), 1000, &proc("cat")),
            Decision::Fetch(0, 1000)
        );
        let big = 1 << 30;
        assert_eq!(
            decide(&p, Access::Open, &meta(big), big, &proc("cat")),
            Decision::Allow
        );
        assert_eq!(
            decide(&p, Access::Open, &meta(big), big, &proc("cp")),
            Decision::Fetch(0, big)
        );
        assert_eq!(
            decide(&p, Access::OpenExec, &meta(big), big, &proc("bash")),
            Decision::Fetch(0, big)
        );
        let mut pinned = meta(big);
        pinned.pin = Pin::Pinned;
        assert_eq!(
            decide(&p, Access::Open, &pinned, big, &proc("cat")),
            Decision::Fetch(0, big)
        );
    }

    #[test]
    fn ranges_writes_truncation_and_blocked_programs() {
        let p = Policy::default();
        let big = 1 << 30;
        let pre = |o, c| Access::Pre {
            offset: o,
            count: c,
        };
        assert_eq!(
            decide(&p, pre(4096, 4096), &meta(big), big, &proc("cat")),
            Decision::Fetch(4096, 8192)
        );
        assert_eq!(
            decide(&p, pre(4096, 0), &meta(big), big, &proc("cat")),
            Decision::Fetch(4096, big)
        );
        let w = Proc {
            writer: true,
            ..proc("sqlite3")
        };
        assert_eq!(
            decide(&p, pre(0, 4096), &meta(big), big, &w),
            Decision::Fetch(0, big)
        );
        assert_eq!(
            decide(
                &p,
                pre(0, 4096),
                &meta(big),
                big,
                &proc("tracker-extract-3")
            ),
            Decision::Deny(libc::EIO)
        );
        // Truncated to 100 bytes locally: never filled past 100.
        assert_eq!(
            decide(&p, pre(0, 4096), &meta(big), 100, &proc("cat")),
            Decision::Fetch(0, 100)
        );
        assert_eq!(
            decide(&p, pre(0, 4096), &meta(big), 0, &proc("cat")),
            Decision::Allow
        );
        let mut done = meta(big);
        done.fill = Fill::Complete;
        assert_eq!(
            decide(&p, pre(0, 4096), &done, big, &proc("tracker-extract-3")),
            Decision::Allow
        );
    }

    #[test]
    fn plans_align_and_read_ahead() {
        let p = Policy::default();
        let mib = 1 << 20;
        assert_eq!(
            plan(&p, 500 * mib + 10, 500 * mib + 20, 1 << 30, None),
            (500 * mib, 501 * mib)
        );
        assert_eq!(
            plan(&p, 500 * mib, 501 * mib, 1 << 30, Some(4 * mib)),
            (500 * mib, 505 * mib)
        );
        assert_eq!(plan(&p, 0, 10, 10, Some(4 * mib)), (0, 10));
    }

    #[test]
    fn read_ahead_doubles_up_to_the_limit() {
        let p = Policy::default();
        let mut a = 0;
        let mut seen = vec![];
        for _ in 0..8 {
            a = next_ahead(&p, a);
            seen.push(a >> 20);
        }
        assert_eq!(seen, [4, 8, 16, 32, 64, 64, 64, 64]);
    }
}

//! What to fetch for an access: a pure function of the access, the file's state and the
//! process, so it is unit-tested without root. Configurable lists name the programs that
//! look for holes instead of reading (hydrated whole at open) and the programs that never
//! trigger downloads (indexers, thumbnailers, scanners).

use super::fanotify::Access;
use super::meta::{FileMeta, Fill, Pin};
use crate::remote::http::HttpConfig;
use crate::remote::retry::RetryPolicy;
use crate::remote::transfer::Transfer;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Files up to this size are hydrated whole when opened (hole-aware copies see no event).
    pub whole_file_below: u64,
    /// Transfer sizes (keys `chunk`, `parallel`, `readahead`, `max_readahead` at the top level
    /// of `policy.json`): hydration splits and aligns by them, and the remotes get them through
    /// [`Policy::http`].
    #[serde(flatten)]
    pub transfer: Transfer,
    /// Files fetched ahead of a program that opens a folder's small online-only files in
    /// name order (0: none); they are fetched `2 * parallel` at once.
    pub folder_prefetch: usize,
    /// Executables (by name) that look for holes instead of reading: hydrated whole at open.
    pub hole_aware: Vec<String>,
    /// Executables (by name) that never trigger downloads; they get EIO.
    pub never_download: Vec<String>,
    /// Seconds before an access that waits for the network gets an errno.
    pub timeout_secs: u64,
    /// Total time the remote client keeps retrying one request: the remotes' retry budget,
    /// through [`Policy::http`]. Below `timeout_secs` (the default), a reader gets the
    /// server's own failure; above it, the timeout ends every stalled read.
    pub retry_budget_secs: u64,
    /// Longest silence from a server before a request counts as stalled; the remotes' idle
    /// timeout, through [`Policy::http`].
    pub idle_timeout_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Policy {
            whole_file_below: 16 << 20,
            transfer: Transfer::default(),
            folder_prefetch: 32,
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

impl Policy {
    /// The HTTP settings of the remotes under this policy: its idle timeout, retry budget and
    /// transfer sizes; everything else default. (Zero seconds count as one: a zero idle
    /// timeout or budget would fail every request.)
    pub fn http(&self) -> HttpConfig {
        let d = HttpConfig::default();
        HttpConfig {
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            retry: RetryPolicy {
                budget: Duration::from_secs(self.retry_budget_secs.max(1)),
                ..d.retry
            },
            transfer: self.transfer,
            ..d
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

/// The bytes an access needs, within a file of `end` bytes: a read its range, an open
/// (or exec) the whole file.
pub fn range_of(access: Access, end: u64) -> (u64, u64) {
    match access {
        Access::Pre { offset, count } if count > 0 => {
            (offset.min(end), offset.saturating_add(count).min(end))
        }
        Access::Pre { offset, .. } => (offset.min(end), end),
        Access::Open | Access::OpenExec => (0, end),
    }
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

/// Where one file's reader is: the sequential-read detector's state, kept per file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// End of the last access.
    pub last_end: u64,
    /// End of everything asked for so far (the access and its read-ahead window).
    pub asked_to: u64,
    /// The read-ahead window of a sequential reader (0: not sequential).
    pub ahead: u64,
}

/// What an access makes the hydrator ask for: `range` (aligned to chunks, clamped to the
/// file), fetched in pieces of `piece` bytes (0: spread evenly over the connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub range: (u64, u64),
    pub piece: u64,
}

/// The bytes to have asked for when `[start, end)` of a file of `size` bytes is accessed:
/// the access aligned to chunks, and for a sequential reader (an access that starts where
/// the last one ended, or inside what was asked for ahead of it) a read-ahead window that
/// doubles from `readahead` to `max_readahead` each time the reader has used half of it.
/// So the next window is on its way before the reader gets there, and a long sequential
/// read costs a few large requests (`ahead / parallel` bytes each, at least eight chunks)
/// while a random reader fetches only the chunks it touches. Updates `r`.
pub fn window(p: &Policy, r: &mut Reader, start: u64, end: u64, size: u64) -> Window {
    let t = &p.transfer;
    let chunk = t.chunk.max(4096);
    let s = (start / chunk * chunk).min(size);
    let e = end.div_ceil(chunk).saturating_mul(chunk).min(size);
    let sequential = start > 0
        && start.saturating_add(chunk) >= r.last_end
        && start <= r.asked_to.max(r.last_end).saturating_add(chunk);
    r.last_end = end;
    if !sequential {
        *r = Reader {
            last_end: end,
            asked_to: e,
            ahead: 0,
        };
        return Window {
            range: (s, e),
            piece: 0,
        };
    }
    let piece_for = |ahead: u64| {
        (ahead / t.parallel.max(1) as u64)
            .max(8 * chunk)
            .div_ceil(chunk)
            * chunk
    };
    if r.ahead == 0 || r.asked_to < e.saturating_add(r.ahead / 2) {
        // Grown by whole pieces, so each extension costs as few requests as it can.
        r.ahead = next_ahead(p, r.ahead);
        let base = r.asked_to.max(e);
        let target = e.saturating_add(r.ahead);
        if target > base {
            let piece = piece_for(r.ahead);
            r.asked_to = base.saturating_add((target - base).div_ceil(piece) * piece);
        }
    }
    r.asked_to = r.asked_to.clamp(e, size.max(e));
    let piece = piece_for(r.ahead);
    Window {
        range: (s, r.asked_to),
        piece,
    }
}

/// The next read-ahead window of a sequential reader: it doubles from the policy's
/// `readahead` with every fetch, up to `max_readahead` (as the kernel's own read-ahead does),
/// so a long sequential read costs few round trips while a short one fetches little.
pub fn next_ahead(p: &Policy, previous: u64) -> u64 {
    let t = &p.transfer;
    previous
        .saturating_mul(2)
        .clamp(t.readahead, t.max_readahead.max(t.readahead))
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
            at: Default::default(),
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
    fn random_readers_get_their_chunks_and_sequential_readers_a_growing_window() {
        let p = Policy::default();
        let mib = 1 << 20;
        let gib = 1 << 30;
        let mut r = Reader::default();
        // A read in the middle: only its chunk.
        let w = window(&p, &mut r, 500 * mib + 10, 500 * mib + 20, gib);
        assert_eq!(w.range, (500 * mib, 501 * mib));
        // A read elsewhere: still random, still its chunk.
        let w = window(&p, &mut r, 9 * mib, 9 * mib + 4096, gib);
        assert_eq!(w.range, (9 * mib, 10 * mib));
        // Carrying on from there: sequential, with read-ahead.
        let w = window(&p, &mut r, 9 * mib + 4096, 9 * mib + 8192, gib);
        assert_eq!(w.range, (9 * mib, 18 * mib));
        assert_eq!(w.piece, 8 * mib);
        // Clamped to the file.
        let mut r = Reader::default();
        assert_eq!(window(&p, &mut r, 0, 10, 10).range, (0, 10));
        assert_eq!(window(&p, &mut r, 10, 20, 10).range, (0, 10));
    }

    /// The requests a sequential reader of `size` bytes costs, reading `step` at a time,
    /// when each window asks for what is not asked for yet, in pieces.
    fn requests_for(p: &Policy, size: u64, step: u64) -> (u64, u64) {
        let mut r = Reader::default();
        let mut asked = 0u64; // sequential: everything below is asked for
        let (mut n, mut biggest) = (0, 0);
        let mut o = 0;
        while o < size {
            let w = window(p, &mut r, o, (o + step).min(size), size);
            if w.range.1 > asked {
                let from = asked.max(w.range.0);
                let pieces = p.transfer.split_into(&[(from, w.range.1)], w.piece);
                n += pieces.len() as u64;
                biggest = pieces
                    .iter()
                    .map(|(a, b)| b - a)
                    .max()
                    .unwrap()
                    .max(biggest);
                asked = w.range.1;
            }
            o += step;
        }
        (n, biggest)
    }

    #[test]
    fn a_sequential_gib_costs_few_large_requests() {
        let p = Policy::default();
        let gib = 1 << 30;
        for step in [4096, 128 << 10, 1 << 20, 4 << 20] {
            let (n, biggest) = requests_for(&p, gib, step);
            assert!(n <= 32, "{n} requests reading {step} bytes at a time");
            assert!(biggest >= 32 << 20, "largest request {biggest}");
        }
        // A 4 GiB file: the window stops growing; requests stay large.
        let (n, _) = requests_for(&p, 4 * gib, 1 << 20);
        assert!(n <= 80, "{n} requests for 4 GiB");
    }

    #[test]
    fn every_key_reaches_hydration_or_the_remotes() {
        let p: Policy = serde_json::from_str(
            r#"{"timeout_secs": 6, "retry_budget_secs": 4, "idle_timeout_secs": 2,
                "chunk": 65536, "parallel": 2, "readahead": 131072, "max_readahead": 262144}"#,
        )
        .unwrap();
        assert_eq!(p.timeout_secs, 6);
        assert_eq!(
            p.transfer,
            Transfer {
                chunk: 65536,
                parallel: 2,
                readahead: 128 << 10,
                max_readahead: 256 << 10,
            }
        );
        let h = p.http();
        assert_eq!(h.idle_timeout, Duration::from_secs(2));
        assert_eq!(h.retry.budget, Duration::from_secs(4));
        assert_eq!(h.transfer, p.transfer);
        // The defaults are the remotes' own defaults, but for the budget (below the timeout).
        let (d, h) = (Policy::default(), HttpConfig::default());
        assert_eq!(d.transfer, h.transfer);
        assert_eq!(d.http().idle_timeout, h.idle_timeout);
        assert!(d.http().retry.budget < Duration::from_secs(d.timeout_secs));
        // Unknown keys are ignored, missing ones default.
        let p: Policy = serde_json::from_str(r#"{"chunk": 8192, "nonsense": 1}"#).unwrap();
        assert_eq!(p.transfer.chunk, 8192);
        assert_eq!(p.transfer.parallel, 4);
        assert_eq!(p.whole_file_below, 16 << 20);
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
        assert_eq!(seen, [4, 8, 16, 32, 64, 128, 256, 512]);
    }
}

//! The per-file truth: `trusted.skyfill.meta` (JSON) on every file Skyfill manages, plus a
//! user-readable `user.skyfill.state` for file managers. `trusted.*` is root-only, so users
//! cannot forge it; it moves with the inode (mv, ln) and survives a lost index.

pub use crate::model::Availability;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

pub const META_XATTR: &str = "trusted.skyfill.meta";
pub const USER_XATTR: &str = "user.skyfill.state";

/// What part of a file is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// No bytes local (online-only).
    Placeholder,
    /// Some ranges local.
    Partial,
    /// Every byte local.
    Complete,
}

/// The user's setting for a file or folder (shared with the protocol).
pub use crate::model::PinSetting as Pin;

/// Sorted, non-overlapping, non-adjacent half-open byte ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ranges(pub Vec<(u64, u64)>);

impl Ranges {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut v: Vec<(u64, u64)> = Vec::with_capacity(self.0.len() + 1);
        let (mut s, mut e) = (start, end);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                v.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        v.push((s, e));
        v.sort_unstable();
        self.0 = v;
    }

    pub fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.0.iter().any(|&(a, b)| a <= start && end <= b)
    }

    /// Parts of `[start, end)` not covered.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cur = start;
        for &(a, b) in &self.0 {
            if b <= cur {
                continue;
            }
            if a >= end {
                break;
            }
            if a > cur {
                out.push((cur, a.min(end)));
            }
            cur = cur.max(b);
            if cur >= end {
                break;
            }
        }
        if cur < end {
            out.push((cur, end));
        }
        out
    }

    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }
}

/// Everything Skyfill knows about one managed file, stored on the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Format version of this record.
    pub v: u32,
    /// Id of the sync root the file belongs to.
    pub root: String,
    /// Path below the remote's base.
    pub path: String,
    /// Remote version token (`Version::token`).
    pub version: String,
    /// Remote size and mtime (seconds, nanoseconds) at population.
    pub size: u64,
    pub mtime: (i64, u32),
    pub fill: Fill,
    /// Local ranges while `fill == Partial`.
    #[serde(default)]
    pub ranges: Ranges,
    #[serde(default)]
    pub pin: Pin,
}

impl FileMeta {
    /// Bytes of the file on disk.
    pub fn local_bytes(&self) -> u64 {
        match self.fill {
            Fill::Complete => self.size,
            Fill::Partial => self.ranges.bytes(),
            Fill::Placeholder => 0,
        }
    }

    /// The label users see.
    pub fn availability(&self) -> Availability {
        match (self.fill, self.pin) {
            (Fill::Complete, Pin::Pinned) => Availability::Pinned,
            (Fill::Complete, _) => Availability::Local,
            (Fill::Partial, _) => Availability::Partial,
            (Fill::Placeholder, _) => Availability::OnlineOnly,
        }
    }
}

fn name(n: &str) -> CString {
    CString::new(n).expect("static name")
}

pub fn read_fd(fd: BorrowedFd<'_>) -> io::Result<Option<FileMeta>> {
    let mut buf = vec![0u8; 8192];
    match crate::fsutil::get_xattr(fd, META_XATTR, &mut buf)? {
        Some(n) => decode(n as isize, &buf),
        None => Ok(None),
    }
}

/// Reads the record of the file at `p` without following a final symlink.
pub fn read_path(p: &Path) -> io::Result<Option<FileMeta>> {
    read_path_impl(p, false)
}

/// Reads the record through a `/proc/self/fd/N` link of an `O_PATH` descriptor.
pub fn read_proc_fd(fd: BorrowedFd<'_>) -> io::Result<Option<FileMeta>> {
    read_path_impl(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        true,
    )
}

fn read_path_impl(p: &Path, follow: bool) -> io::Result<Option<FileMeta>> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: as above; (l)getxattr does not open the file, so no event reaches us.
    let n = unsafe {
        if follow {
            libc::getxattr(
                c.as_ptr(),
                name(META_XATTR).as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } else {
            libc::lgetxattr(
                c.as_ptr(),
                name(META_XATTR).as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    };
    decode(n, &buf)
}

fn decode(n: isize, buf: &[u8]) -> io::Result<Option<FileMeta>> {
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    match serde_json::from_slice(&buf[..n as usize]) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable skyfill metadata; treating the file as local");
            Ok(None)
        }
    }
}

pub fn write_fd(fd: BorrowedFd<'_>, m: &FileMeta) -> io::Result<()> {
    let mut m = m.clone();
    // Keep the record within one xattr block: a heavily fragmented partial file keeps only
    // its first ranges (the rest is simply fetched again).
    m.ranges.0.truncate(128);
    let v = serde_json::to_vec(&m).expect("serializable");
    crate::fsutil::set_xattr(fd, META_XATTR, &v)?;
    // Best effort: some filesystems refuse user xattrs on special mounts.
    let _ = crate::fsutil::set_xattr(fd, USER_XATTR, m.availability().as_str().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_gaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        r.insert(20, 30);
        assert_eq!(r.0, vec![(10, 40)]);
        assert!(r.covers(15, 35));
        assert!(!r.covers(5, 15));
        r.insert(0, 5);
        r.insert(5, 10);
        assert_eq!(r.0, vec![(0, 40)]);
        assert_eq!(r.missing(0, 40), vec![]);
        assert_eq!(r.bytes(), 40);
    }

    proptest::proptest! {
        #[test]
        fn ranges_match_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..60), 0..30), q in (0u64..250, 0u64..250)) {
            let mut r = Ranges::default();
            let mut bits = vec![false; 300];
            for (s, l) in ops {
                r.insert(s, s + l);
                for b in bits.iter_mut().skip(s as usize).take(l as usize) { *b = true; }
            }
            let (a, b) = (q.0.min(q.1), q.0.max(q.1));
            let missing: u64 = r.missing(a, b).iter().map(|(x, y)| y - x).sum();
            let want = (a..b).filter(|&i| !bits[i as usize]).count() as u64;
            proptest::prop_assert_eq!(missing, want);
            proptest::prop_assert_eq!(r.covers(a, b), want == 0);
            for w in r.0.windows(2) { proptest::prop_assert!(w[0].1 < w[1].0); }
        }
    }
}

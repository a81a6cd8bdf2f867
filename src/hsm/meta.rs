//! The per-file truth: `trusted.skyfill.meta` on every file Skyfill manages, plus a
//! user-readable `user.skyfill.state` for file managers on files with local bytes.
//! `trusted.*` is root-only, so users cannot forge it; it moves with the inode (mv, ln) and
//! survives a lost index.
//!
//! The record is binary and small enough to live in the inode (about 60 bytes of value fit
//! in a default 256-byte ext4 inode): the remote path is stored only as a 64-bit hash while
//! the file sits at that path, and the reader, who knows where it found the file, gives the
//! path back (`FileMeta::resolve`). Records written as JSON by earlier versions still read.

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
    /// How the stored record names `path` (not part of the old JSON form).
    #[serde(skip)]
    pub at: Place,
}

/// How a record names its remote path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Place {
    /// The path is stored in full (the file is not where its remote path says).
    #[default]
    Elsewhere,
    /// The file is at its remote path: only the path's hash is stored.
    Here,
    /// Read back with only a hash, and not yet resolved: `path` is empty until a reader
    /// gives a candidate whose hash matches (`FileMeta::resolve`).
    Unknown(u64),
}

/// The stable hash that stands for a remote path in a record (FNV-1a, 64 bits).
pub fn path_hash(path: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(path.as_bytes());
    h.finish()
}

impl FileMeta {
    /// Whether the remote path is known (always, except for a record read back with only a
    /// hash and not resolved yet).
    pub fn resolved(&self) -> bool {
        !matches!(self.at, Place::Unknown(_))
    }

    /// Gives the record the path where its file was found; true when the remote path is
    /// known afterwards. A hash-only record takes `local` only when the hashes match (the
    /// file was not renamed since the record was written).
    pub fn resolve(&mut self, local: &str) -> bool {
        match self.at {
            Place::Unknown(h) => self.take_if(h, local, Place::Here),
            Place::Elsewhere if self.path == local => {
                self.at = Place::Here;
                true
            }
            Place::Here if self.path != local => {
                self.at = Place::Elsewhere;
                true
            }
            _ => true,
        }
    }

    /// Gives an unresolved record a candidate remote path found elsewhere (the sync base,
    /// the server's listing); true when it matches. The record keeps the path in full.
    pub fn resolve_origin(&mut self, origin: &str) -> bool {
        match self.at {
            Place::Unknown(h) => self.take_if(h, origin, Place::Elsewhere),
            _ => self.path == origin,
        }
    }

    /// An unresolved record (hash `h`) takes `path` if it has that hash.
    fn take_if(&mut self, h: u64, path: &str, at: Place) -> bool {
        let ok = path_hash(path) == h;
        if ok {
            self.path = path.to_string();
            self.at = at;
        }
        ok
    }

    /// The stored hash of an unresolved record.
    pub fn unknown_hash(&self) -> Option<u64> {
        match self.at {
            Place::Unknown(h) => Some(h),
            _ => None,
        }
    }

    /// The record read from the file at `local` (root-relative), resolved against that place.
    pub fn found_at(mut self, local: &str) -> FileMeta {
        self.resolve(local);
        self
    }

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
    let b = &buf[..n as usize];
    let m = if b.first() == Some(&b'{') {
        serde_json::from_slice(b).map_err(|e| e.to_string())
    } else {
        decode_binary(b)
    };
    match m {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable skyfill metadata; treating the file as local");
            Ok(None)
        }
    }
}

/// First byte of the binary record (a JSON record starts with `{`).
const MAGIC: u8 = 0xa7;
const F_ROOT_HEX: u8 = 1 << 4;
const F_PATH: u8 = 1 << 5;
const F_RANGES: u8 = 1 << 6;
/// The binary form: magic, flags (fill, pin, forms), root id, size, mtime, version, the
/// remote path or its hash, then the local ranges of a partial file.
fn encode(m: &FileMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    let fill = match m.fill {
        Fill::Placeholder => 0,
        Fill::Partial => 1,
        Fill::Complete => 2,
    };
    let pin = match m.pin {
        Pin::Inherit => 0,
        Pin::Pinned => 1,
        Pin::OnlineOnly => 2,
    };
    let root_hex = m.root.len() == 16
        && m.root
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let ranges = m.fill == Fill::Partial && !m.ranges.0.is_empty();
    let explicit = m.at == Place::Elsewhere;
    let mut flags = fill | pin << 2;
    for (on, f) in [
        (root_hex, F_ROOT_HEX),
        (explicit, F_PATH),
        (ranges, F_RANGES),
    ] {
        if on {
            flags |= f;
        }
    }
    v.push(MAGIC);
    v.push(flags);
    match u64::from_str_radix(&m.root, 16) {
        Ok(r) if root_hex => v.extend_from_slice(&r.to_be_bytes()),
        _ => crate::varint::put_bytes(&mut v, m.root.as_bytes()),
    }
    crate::varint::put(&mut v, m.size);
    crate::varint::put(&mut v, crate::varint::zigzag(m.mtime.0));
    crate::varint::put(&mut v, u64::from(m.mtime.1));
    crate::varint::put_token(&mut v, &m.version);
    match m.at {
        Place::Elsewhere => crate::varint::put_bytes(&mut v, m.path.as_bytes()),
        Place::Here => v.extend_from_slice(&path_hash(&m.path).to_le_bytes()),
        Place::Unknown(h) => v.extend_from_slice(&h.to_le_bytes()),
    }
    if ranges {
        crate::varint::put(&mut v, m.ranges.0.len() as u64);
        let mut last = 0;
        for &(a, b) in &m.ranges.0 {
            crate::varint::put(&mut v, a - last);
            crate::varint::put(&mut v, b - a);
            last = b;
        }
    }
    v
}

fn decode_binary(b: &[u8]) -> Result<FileMeta, String> {
    let bad = || "truncated or malformed binary record".to_string();
    let mut c = b;
    let take = |c: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if c.len() < n {
            return Err(bad());
        }
        let (a, rest) = c.split_at(n);
        *c = rest;
        Ok(a.to_vec())
    };
    let num = |c: &mut &[u8]| crate::varint::get(c).ok_or_else(bad);
    let bytes = |c: &mut &[u8]| {
        crate::varint::get_bytes(c)
            .map(<[u8]>::to_vec)
            .ok_or_else(bad)
    };
    let text =
        |b: Vec<u8>| String::from_utf8(b).map_err(|_| "record text is not UTF-8".to_string());
    let head = take(&mut c, 2)?;
    if head[0] != MAGIC {
        return Err(format!("unknown record format {:#x}", head[0]));
    }
    let flags = head[1];
    let fill = match flags & 3 {
        0 => Fill::Placeholder,
        1 => Fill::Partial,
        2 => Fill::Complete,
        _ => return Err(bad()),
    };
    let pin = match flags >> 2 & 3 {
        0 => Pin::Inherit,
        1 => Pin::Pinned,
        2 => Pin::OnlineOnly,
        _ => return Err(bad()),
    };
    let root = if flags & F_ROOT_HEX != 0 {
        let r: [u8; 8] = take(&mut c, 8)?.try_into().map_err(|_| bad())?;
        format!("{:016x}", u64::from_be_bytes(r))
    } else {
        text(bytes(&mut c)?)?
    };
    let size = num(&mut c)?;
    let secs = crate::varint::unzigzag(num(&mut c)?);
    let nanos = u32::try_from(num(&mut c)?).map_err(|_| bad())?;
    let version = crate::varint::get_token(&mut c).ok_or_else(bad)?;
    let (path, at) = if flags & F_PATH != 0 {
        (text(bytes(&mut c)?)?, Place::Elsewhere)
    } else {
        let h: [u8; 8] = take(&mut c, 8)?.try_into().map_err(|_| bad())?;
        (String::new(), Place::Unknown(u64::from_le_bytes(h)))
    };
    let mut ranges = Ranges::default();
    if flags & F_RANGES != 0 {
        let n = num(&mut c)?;
        let mut last = 0u64;
        for _ in 0..n.min(4096) {
            let a = last.checked_add(num(&mut c)?).ok_or_else(bad)?;
            let b = a.checked_add(num(&mut c)?).ok_or_else(bad)?;
            ranges.insert(a, b);
            last = b;
        }
    }
    if !c.is_empty() {
        return Err(bad());
    }
    Ok(FileMeta {
        v: 2,
        root,
        path,
        version,
        size,
        mtime: (secs, nanos),
        fill,
        ranges,
        pin,
        at,
    })
}

pub fn write_fd(fd: BorrowedFd<'_>, m: &FileMeta) -> io::Result<()> {
    let mut m = m.clone();
    // Keep the record within one xattr block: a heavily fragmented partial file keeps only
    // its first ranges (the rest is simply fetched again).
    m.ranges.0.truncate(128);
    crate::fsutil::set_xattr(fd, META_XATTR, &encode(&m))?;
    // The state file managers read, on files with local bytes only: an online-only (or
    // empty) file keeps its record alone, so it fits in the inode.
    // Best effort: some filesystems refuse user xattrs on special mounts.
    if m.local_bytes() == 0 {
        let _ = crate::fsutil::remove_xattr(fd, USER_XATTR);
    } else {
        let _ = crate::fsutil::set_xattr(fd, USER_XATTR, m.availability().as_str().as_bytes());
    }
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

    fn sample(version: &str, at: Place) -> FileMeta {
        FileMeta {
            v: 2,
            root: "0123456789abcdef".into(),
            path: "Photos/2024/IMG_0001.jpg".into(),
            version: version.into(),
            size: 3_512_331,
            mtime: (1_733_000_000, 123_000_000),
            fill: Fill::Placeholder,
            ranges: Ranges::default(),
            pin: Pin::Inherit,
            at,
        }
    }

    #[test]
    fn a_placeholder_record_fits_in_a_default_ext4_inode() {
        // 60 bytes of value fit in the inode next to the name `skyfill.meta` (doc/BENCHMARKS.md).
        for version in [
            "e:9b2cf535f27731c974343645a3985328",    // S3, rclone (MD5)
            "e:9b2cf535f27731c974343645a3985328-12", // S3 multipart
            "e:1f2a-62b4c7d3e8a40",                  // Apache mod_dav
            "e:6571e1b2c3d4e",                       // Nextcloud
            "e:1a2b3c-2faf080-6755c1a0.1f3a5b7c",    // file:// (ino-size-mtime.nsec)
            "e:0x8DC1A2B3C4D5E6F",                   // other servers: kept as text
            "s:3512331:1733000000",                  // no ETag at all
        ] {
            let m = sample(version, Place::Here);
            let b = encode(&m);
            assert!(b.len() <= 60, "{version}: {} bytes", b.len());
            let mut back = decode_binary(&b).unwrap();
            assert_eq!(back.at, Place::Unknown(path_hash(&m.path)));
            assert!(
                !back.resolve("Photos/2024/other.jpg"),
                "a renamed file is not taken for its origin"
            );
            assert!(back.resolve(&m.path));
            assert_eq!(back.version, m.version);
            assert_eq!(back, FileMeta { v: 2, ..m });
        }
    }

    #[test]
    fn records_of_earlier_versions_still_read() {
        let json = br#"{"v":1,"root":"r1","path":"a/b.txt","version":"e:x","size":5,"mtime":[7,8],"fill":"partial","ranges":[[0,2]],"pin":"pinned"}"#;
        let m = decode(json.len() as isize, json).unwrap().unwrap();
        assert_eq!(
            (m.root.as_str(), m.path.as_str(), m.at),
            ("r1", "a/b.txt", Place::Elsewhere)
        );
        assert_eq!(
            (m.fill, m.pin, m.ranges.0.clone()),
            (Fill::Partial, Pin::Pinned, vec![(0, 2)])
        );
        // Garbage is refused with a reason (the file is then treated as local, never as a
        // placeholder of some other path).
        for junk in [&[MAGIC][..], &[MAGIC, 0x3f], &[0xa7, 0, 1, 2], b"\xff\xfe"] {
            assert!(decode_binary(junk).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn binary_records_round_trip(
            root in "[0-9a-f]{16}|[a-z0-9]{0,20}",
            path in "[^\\x00]{1,80}",
            version in "e:[0-9a-f]{1,40}(-[0-9a-f]{1,4})?|e:.{0,50}|s:[0-9]{1,12}:-?[0-9]{1,11}|.{0,20}",
            size in proptest::num::u64::ANY,
            secs in proptest::num::i64::ANY,
            nanos in 0u32..1_000_000_000,
            fill in 0u8..3,
            pin in 0u8..3,
            here: bool,
            ranges in proptest::collection::vec((0u64..1 << 40, 1u64..1 << 30), 0..20),
        ) {
            let fill = [Fill::Placeholder, Fill::Partial, Fill::Complete][fill as usize];
            let mut r = Ranges::default();
            if fill == Fill::Partial {
                for (a, l) in ranges { r.insert(a, a + l); }
            }
            let m = FileMeta {
                v: 2, root, path: path.clone(), version, size, mtime: (secs, nanos), fill,
                ranges: r, pin: [Pin::Inherit, Pin::Pinned, Pin::OnlineOnly][pin as usize],
                at: if here { Place::Here } else { Place::Elsewhere },
            };
            let mut back = decode_binary(&encode(&m)).unwrap();
            if here {
                proptest::prop_assert_eq!(back.at, Place::Unknown(path_hash(&path)));
                proptest::prop_assert!(back.resolve(&path));
            }
            proptest::prop_assert_eq!(back, m);
        }

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

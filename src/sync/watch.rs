//! Local change notifications: a second fanotify group (notification class, file-handle
//! mode; a pre-content group cannot report directory entries) with an inode mark on every
//! folder of every root, reporting creates, deletes, moves, close-after-write and attribute
//! changes of each folder's children. No inotify watch limits apply. This adapter only says
//! *which folder changed* (by its file handle) and who changed it; a sync pass rescans and
//! the planner decides. Events the daemon caused itself are recognised by pid.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const FAN_CLOEXEC: u32 = 0x01;
const FAN_NONBLOCK: u32 = 0x02;
const FAN_CLASS_NOTIF: u32 = 0x00;
const FAN_UNLIMITED_QUEUE: u32 = 0x10;
const FAN_UNLIMITED_MARKS: u32 = 0x20;
const FAN_REPORT_FID: u32 = 0x200;
const FAN_REPORT_DIR_FID: u32 = 0x400;
const FAN_REPORT_NAME: u32 = 0x800;
const FAN_MARK_ADD: u32 = 0x01;

const FAN_ATTRIB: u64 = 0x04;
const FAN_CLOSE_WRITE: u64 = 0x08;
const FAN_MOVED_FROM: u64 = 0x40;
const FAN_MOVED_TO: u64 = 0x80;
const FAN_CREATE: u64 = 0x100;
const FAN_DELETE: u64 = 0x200;
const FAN_DELETE_SELF: u64 = 0x400;
const FAN_MOVE_SELF: u64 = 0x800;
pub const FAN_Q_OVERFLOW: u64 = 0x4000;
const FAN_ONDIR: u64 = 0x4000_0000;
const FAN_EVENT_ON_CHILD: u64 = 0x0800_0000;

const INFO_DFID_NAME: u8 = 2;
const INFO_DFID: u8 = 3;

/// What a folder mark asks for.
const MASK: u64 = FAN_CREATE
    | FAN_DELETE
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_CLOSE_WRITE
    | FAN_ATTRIB
    | FAN_DELETE_SELF
    | FAN_MOVE_SELF
    | FAN_ONDIR
    | FAN_EVENT_ON_CHILD;

/// A folder's identity in events: file handle type and bytes (fsid left out: one daemon
/// sees each folder through one filesystem).
pub type DirKey = (i32, Vec<u8>);

/// One change: the folder it happened in and the name, when reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pid: i32,
    pub mask: u64,
    pub dir: Option<DirKey>,
    pub name: Option<String>,
}

impl Change {
    /// The queue overflowed: everything must be rescanned.
    pub fn overflow(&self) -> bool {
        self.mask & FAN_Q_OVERFLOW != 0
    }
}

pub struct Watcher {
    fd: OwnedFd,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        let flags = FAN_CLASS_NOTIF
            | FAN_CLOEXEC
            | FAN_NONBLOCK
            | FAN_UNLIMITED_QUEUE
            | FAN_UNLIMITED_MARKS
            | FAN_REPORT_FID
            | FAN_REPORT_DIR_FID
            | FAN_REPORT_NAME;
        // SAFETY: plain syscall.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Watcher {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Watches the folder behind `dir` (idempotent); returns its key.
    pub fn watch(&self, dir: BorrowedFd<'_>) -> io::Result<DirKey> {
        // SAFETY: valid descriptors, NULL path (the fd itself).
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                FAN_MARK_ADD,
                MASK,
                dir.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        crate::hsm::fanotify::handle_of(dir)
    }

    /// Reads what is queued (non-blocking; empty when nothing is).
    pub fn read(&self) -> io::Result<Vec<Change>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(vec![]);
            }
            return Err(e);
        }
        Ok(parse(&buf[..n as usize]))
    }
}

/// Parses notification events with directory handle and name records.
pub fn parse(buf: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut off = 0usize;
    while off + meta_len <= buf.len() {
        // SAFETY: bounds checked; read_unaligned copes with alignment.
        let m: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        let ev_len = m.event_len as usize;
        if ev_len < meta_len || off + ev_len > buf.len() {
            break;
        }
        let end = off + ev_len;
        let mut c = Change {
            pid: m.pid,
            mask: m.mask,
            dir: None,
            name: None,
        };
        if m.fd >= 0 {
            // Not expected in FID mode; never leak it.
            // SAFETY: the kernel installed this fd for us.
            drop(unsafe { OwnedFd::from_raw_fd(m.fd) });
        }
        let mut i = off + m.metadata_len as usize;
        while i + 4 <= end {
            let ty = buf[i];
            let len = u16::from_ne_bytes([buf[i + 2], buf[i + 3]]) as usize;
            if len < 4 || i + len > end {
                break;
            }
            // header(4) fsid(8) file_handle{bytes u32, type i32, f_handle[bytes]} [name\0]
            if (ty == INFO_DFID_NAME || ty == INFO_DFID) && c.dir.is_none() && len >= 20 {
                let hb = u32::from_ne_bytes(buf[i + 12..i + 16].try_into().unwrap()) as usize;
                let ht = i32::from_ne_bytes(buf[i + 16..i + 20].try_into().unwrap());
                let h0 = i + 20;
                if h0 + hb <= i + len {
                    c.dir = Some((ht, buf[h0..h0 + hb].to_vec()));
                    if ty == INFO_DFID_NAME {
                        let rest = &buf[h0 + hb..i + len];
                        let z = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                        c.name = std::str::from_utf8(&rest[..z]).ok().map(str::to_string);
                    }
                }
            }
            i += len;
        }
        out.push(c);
        off = end;
    }
    out
}

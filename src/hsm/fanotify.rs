//! Thin adapter over the kernel's fanotify pre-content API (Linux >= 6.14): create the group,
//! add and remove inode marks, parse events, write responses. No policy lives here; the
//! constants newer than the system headers are defined locally (values checked against
//! `include/uapi/linux/fanotify.h`, see `../shared/kernel-facts.md` section 1).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub const FAN_OPEN_PERM: u64 = 0x0001_0000;
pub const FAN_ACCESS_PERM: u64 = 0x0002_0000;
pub const FAN_OPEN_EXEC_PERM: u64 = 0x0004_0000;
pub const FAN_PRE_ACCESS: u64 = 0x0010_0000;
pub const FAN_Q_OVERFLOW: u64 = 0x0000_4000;

const FAN_CLOEXEC: u32 = 0x01;
const FAN_NONBLOCK: u32 = 0x02;
const FAN_CLASS_PRE_CONTENT: u32 = 0x08;
const FAN_UNLIMITED_QUEUE: u32 = 0x10;
const FAN_UNLIMITED_MARKS: u32 = 0x20;

const FAN_MARK_ADD: u32 = 0x01;
const FAN_MARK_REMOVE: u32 = 0x02;
const FAN_MARK_MOUNT: u32 = 0x10;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x40;
const FAN_MARK_IGNORE: u32 = 0x400;
const SYS_OPEN_TREE: libc::c_long = 428;
const OPEN_TREE_CLONE: u32 = 1;

const FAN_ALLOW: u32 = 0x01;
const FAN_DENY: u32 = 0x02;
const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;
const FAN_NOFD: i32 = -1;

/// The events a placeholder's mark asks for.
pub const PLACEHOLDER_MASK: u64 = FAN_PRE_ACCESS | FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;

/// Errnos the kernel accepts in a deny reply (others leave the reader blocked).
pub const DENY_ERRNOS: &[i32] = &[
    libc::EPERM,
    libc::EIO,
    libc::EAGAIN,
    libc::EBUSY,
    libc::ETXTBSY,
    libc::ENOSPC,
    libc::EDQUOT,
];

/// What the application did, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    OpenExec,
    /// Pages `[offset, offset+count)` are about to be read, written, mapped or truncated;
    /// `count == 0` means "to the end of the file".
    Pre {
        offset: u64,
        count: u64,
    },
}

/// One permission event. Its `fd` must stay open until [`Group::respond`] was called.
#[derive(Debug)]
pub struct Event {
    pub access: Access,
    pub fd: OwnedFd,
    pub pid: i32,
}

/// A kernel answer to a permission event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Allow,
    Deny(i32),
}

/// A pre-content fanotify group.
pub struct Group {
    fd: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Group {
    /// A new group: unlimited queue (a full queue would silently allow access), unlimited
    /// marks, event fds opened read-write so fills can be written through them.
    pub fn new() -> io::Result<Group> {
        let flags = FAN_CLASS_PRE_CONTENT
            | FAN_CLOEXEC
            | FAN_NONBLOCK
            | FAN_UNLIMITED_QUEUE
            | FAN_UNLIMITED_MARKS;
        let ev_flags = (libc::O_RDWR | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::fanotify_init(flags, ev_flags) })?;
        Ok(Group {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wraps an inherited group descriptor (the keeper passes it to the worker).
    ///
    /// # Safety
    /// `fd` must be an open fanotify group descriptor owned by the caller.
    pub unsafe fn from_raw(fd: RawFd) -> Group {
        Group {
            fd: OwnedFd::from_raw_fd(fd),
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    fn mark(
        &self,
        flags: u32,
        mask: u64,
        dirfd: RawFd,
        path: Option<&std::ffi::CStr>,
    ) -> io::Result<()> {
        let p = path.map(|p| p.as_ptr()).unwrap_or(std::ptr::null());
        // SAFETY: valid descriptors and a NUL-terminated path or NULL.
        cvt(unsafe { libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, dirfd, p) }).map(|_| ())
    }

    /// Marks the inode behind `fd` (any open descriptor, O_PATH included).
    pub fn mark_inode(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.mark(FAN_MARK_ADD, PLACEHOLDER_MASK, fd.as_raw_fd(), None)
    }

    /// Marks `name` in directory `dir` without opening it (no event to ourselves).
    pub fn mark_at(&self, dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
        self.mark(
            FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW,
            PLACEHOLDER_MASK,
            dir.as_raw_fd(),
            Some(name),
        )
    }

    /// Removes our mark from the inode behind `fd`; a missing mark is not an error.
    pub fn unmark_inode(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match self.mark(FAN_MARK_REMOVE, PLACEHOLDER_MASK, fd.as_raw_fd(), None) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// A private, detached clone of the mount holding `dir` whose accesses this group ignores:
    /// the daemon can open marked files through it without raising events to itself.
    pub fn private_mount(&self, dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let empty = std::ffi::CString::new("").unwrap();
        // SAFETY: open_tree(2) on a valid directory fd with an empty path.
        let fd = unsafe {
            libc::syscall(
                SYS_OPEN_TREE,
                dir.as_raw_fd(),
                empty.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor from the kernel.
        let m = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let dot = std::ffi::CString::new(".").unwrap();
        self.mark(
            FAN_MARK_ADD | FAN_MARK_MOUNT | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY,
            PLACEHOLDER_MASK,
            m.as_raw_fd(),
            Some(&dot),
        )?;
        Ok(m)
    }

    /// Checks that the filesystem holding `dir` delivers pre-content events (ext4, xfs, btrfs
    /// on Linux >= 6.14), by adding and removing a mark.
    pub fn probe(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.mark(FAN_MARK_ADD, FAN_PRE_ACCESS, dir.as_raw_fd(), None)?;
        let _ = self.mark(FAN_MARK_REMOVE, FAN_PRE_ACCESS, dir.as_raw_fd(), None);
        Ok(())
    }

    /// Reads the events available now (non-blocking; empty when none).
    pub fn read_events(&self) -> io::Result<Vec<Event>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        Ok(parse_events(&buf[..n as usize]))
    }

    /// Answers a permission event by the number of its fd.
    pub fn respond_raw(&self, fd: RawFd, reply: Reply) -> io::Result<()> {
        let response = match reply {
            Reply::Allow => FAN_ALLOW,
            Reply::Deny(e) => {
                let e = if DENY_ERRNOS.contains(&e) {
                    e
                } else {
                    libc::EIO
                };
                FAN_DENY | ((e as u32 & 0xff) << 24)
            }
        };
        let r = libc::fanotify_response { fd, response };
        // SAFETY: writes a plain struct.
        let n = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&r as *const libc::fanotify_response).cast(),
                std::mem::size_of::<libc::fanotify_response>(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn respond(&self, ev: &Event, reply: Reply) -> io::Result<()> {
        self.respond_raw(ev.fd.as_raw_fd(), reply)
    }
}

/// A file handle (`name_to_handle_at`), to find a file again after a restart.
pub fn handle_of(fd: BorrowedFd<'_>) -> io::Result<(i32, Vec<u8>)> {
    let mut buf = vec![0u8; 8 + 128];
    // SAFETY: file_handle header then 128 bytes of room.
    unsafe {
        let fh = buf.as_mut_ptr() as *mut libc::file_handle;
        (*fh).handle_bytes = 128;
        let mut mnt = 0;
        let empty = std::ffi::CString::new("").unwrap();
        if libc::name_to_handle_at(
            fd.as_raw_fd(),
            empty.as_ptr(),
            fh,
            &mut mnt,
            libc::AT_EMPTY_PATH,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let n = (*fh).handle_bytes as usize;
        Ok(((*fh).handle_type, buf[8..8 + n].to_vec()))
    }
}

/// Opens a file by handle relative to `mount` (the private mount, so no event is raised).
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    htype: i32,
    bytes: &[u8],
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut buf = vec![0u8; 8 + bytes.len()];
    buf[8..].copy_from_slice(bytes);
    // SAFETY: a well-formed file_handle in buf.
    unsafe {
        let fh = buf.as_mut_ptr() as *mut libc::file_handle;
        (*fh).handle_bytes = bytes.len() as u32;
        (*fh).handle_type = htype;
        let fd = libc::open_by_handle_at(mount.as_raw_fd(), fh, flags | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Parses a buffer of events (metadata plus info records). Events without an fd (queue
/// overflow) are dropped with a log line: with an unlimited queue they do not happen.
pub fn parse_events(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    while off + meta_len <= buf.len() {
        // SAFETY: bounds checked; read_unaligned copes with alignment.
        let m: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        let ev_len = m.event_len as usize;
        if ev_len < meta_len || off + ev_len > buf.len() {
            break;
        }
        let mut access = if m.mask & FAN_OPEN_EXEC_PERM != 0 {
            Access::OpenExec
        } else if m.mask & FAN_OPEN_PERM != 0 {
            Access::Open
        } else {
            Access::Pre {
                offset: 0,
                count: 0,
            }
        };
        let mut i = off + m.metadata_len as usize;
        while i + 4 <= off + ev_len {
            let info_type = buf[i];
            let len = u16::from_ne_bytes([buf[i + 2], buf[i + 3]]) as usize;
            if len < 4 || i + len > off + ev_len {
                break;
            }
            if info_type == FAN_EVENT_INFO_TYPE_RANGE && len >= 24 && m.mask & FAN_PRE_ACCESS != 0 {
                let o = u64::from_ne_bytes(buf[i + 8..i + 16].try_into().unwrap());
                let c = u64::from_ne_bytes(buf[i + 16..i + 24].try_into().unwrap());
                access = Access::Pre {
                    offset: o,
                    count: c,
                };
            }
            i += len;
        }
        if m.fd == FAN_NOFD || m.fd < 0 {
            tracing::error!(mask = m.mask, "fanotify event without fd (queue overflow?)");
        } else {
            out.push(Event {
                access,
                // SAFETY: the kernel installed this fd for us.
                fd: unsafe { OwnedFd::from_raw_fd(m.fd) },
                pid: m.pid,
            });
        }
        off += ev_len;
    }
    out
}

//! The one adapter over the kernel's fanotify API, for both groups the daemon creates:
//! - the pre-content group ([`Group`], Linux >= 6.14): placeholder marks, permission events
//!   ([`Event`]) and their replies ([`Reply`]);
//! - the folder watcher's notification group (`sync::watch`, file-handle mode), which drives a
//!   [`Fanotify`] with its own flags and mask and reads the directory handle and name of each
//!   event ([`RawEvent::dir_fid`]);
//! - the folder gate's content group ([`FolderGroup`]) that holds a listing of a folder
//!   add-root has not filled yet (`hsm::dirgate`).
//!
//! It owns every fanotify syscall (init, mark, read, reply), the walk over a read buffer
//! ([`RawEvents`]: metadata length, info records, ownership of event descriptors), the
//! decoding of info records and of file handles. It translates kernel events into values and
//! replies into writes; no policy lives here. Constants come from the `libc` crate; the two
//! newer than it are defined here (values checked against `include/uapi/linux/fanotify.h`,
//! see `../shared/kernel-facts.md` section 1).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use libc::{FAN_ACCESS_PERM, FAN_OPEN_EXEC_PERM, FAN_OPEN_PERM, FAN_Q_OVERFLOW};

/// The pre-content access event (Linux 6.14; not in `libc` yet).
pub const FAN_PRE_ACCESS: u64 = 0x0010_0000;
/// The info record holding a pre-content event's range (Linux 6.14; not in `libc` yet).
const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;

/// The size of the buffer one read fills: many events at once, and always room for the
/// largest single event (metadata, a file handle of `MAX_HANDLE_SZ` bytes and a name).
pub const READ_BUF: usize = 64 * 1024;

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

impl Reply {
    /// The `response` word of `struct fanotify_response`: a deny carries its errno in the top
    /// byte; an errno the kernel would refuse (leaving the reader blocked) becomes EIO.
    fn response(self) -> u32 {
        match self {
            Reply::Allow => libc::FAN_ALLOW,
            Reply::Deny(e) => {
                let e = if DENY_ERRNOS.contains(&e) {
                    e
                } else {
                    libc::EIO
                };
                libc::FAN_DENY | ((e as u32 & 0xff) << 24)
            }
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The mark [`Fanotify::shield`] places: on the filesystem, an ignore mask that survives
/// modification (the kernel's condition for ignore masks there).
const SHIELD: u32 =
    libc::FAN_MARK_FILESYSTEM | libc::FAN_MARK_IGNORE | libc::FAN_MARK_IGNORED_SURV_MODIFY;

/// A fanotify group descriptor of either class: the syscalls both groups share.
#[derive(Debug)]
pub struct Fanotify {
    fd: OwnedFd,
}

impl Fanotify {
    /// `fanotify_init(2)`: `flags` (class, `FAN_REPORT_*`, queue and mark limits) and the
    /// open flags of the descriptors events carry.
    pub fn init(flags: u32, event_f_flags: u32) -> io::Result<Fanotify> {
        // SAFETY: fanotify_init takes two integers and touches no memory of ours.
        let fd = cvt(unsafe { libc::fanotify_init(flags, event_f_flags) })?;
        // SAFETY: `fd` is a descriptor the kernel has just opened for us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Fanotify { fd })
    }

    /// Wraps an inherited group descriptor.
    ///
    /// # Safety
    /// `fd` must be an open fanotify group descriptor that the caller owns and hands over.
    pub unsafe fn from_raw(fd: RawFd) -> Fanotify {
        // SAFETY: the caller hands over an open descriptor it owns (this function's contract).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Fanotify { fd }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `fanotify_mark(2)` on the object behind `dir` (`path` `None`) or on `path` relative
    /// to it.
    pub fn mark(
        &self,
        flags: u32,
        mask: u64,
        dir: BorrowedFd<'_>,
        path: Option<&CStr>,
    ) -> io::Result<()> {
        let p = path.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: both descriptors are open for the call (`self.fd` is owned, `dir` borrowed)
        // and `p` is NULL or a NUL-terminated string borrowed for the call.
        let r =
            unsafe { libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, dir.as_raw_fd(), p) };
        cvt(r).map(|_| ())
    }

    /// Waits up to `timeout_ms` for events (`poll`, level-triggered: nothing waits on the
    /// group between calls); true when some are queued.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live, initialised pollfd for the call; the fd is open (owned by `self`).
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    }

    /// Puts this permission group's own mark first in the mark list of the filesystem
    /// holding `dir`: a filesystem mark that only ignores `FAN_OPEN_EXEC` events (which no
    /// group of ours asks for), so it raises nothing and changes no file's fate. Why: a
    /// program waiting for this group's answer keeps, for that time, the marks at the head of
    /// each list its event walked, whatever their group; without a mark of ours at the head
    /// of the filesystem's list, that would be the folder watcher's filesystem mark, and
    /// closing the watcher (a worker's exit) would then wait for readers only the next worker
    /// answers. Marks are ordered by class, so ours comes before any notification group's.
    /// Idempotent.
    pub fn shield(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.mark(libc::FAN_MARK_ADD | SHIELD, libc::FAN_OPEN_EXEC, dir, None)
    }

    /// Removes [`Fanotify::shield`]'s mark from the filesystem holding `dir` (none there is
    /// not an error).
    pub fn unshield(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        match self.mark(
            libc::FAN_MARK_REMOVE | SHIELD,
            libc::FAN_OPEN_EXEC,
            dir,
            None,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Reads the events queued now into `buf` (the groups are non-blocking: nothing queued
    /// reads as no events) and walks them. `buf` should hold [`READ_BUF`] bytes.
    pub fn read<'b>(&self, buf: &'b mut [u8]) -> io::Result<RawEvents<'b>> {
        // SAFETY: `buf` is writable for `buf.len()` bytes and exclusively borrowed for the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(RawEvents { buf: &[] }),
                _ => Err(e),
            };
        }
        let buf: &'b [u8] = buf;
        // SAFETY: the kernel has just written these bytes for this read, so every descriptor
        // in them was installed for us and nothing owns it yet; this is the one walk of them.
        Ok(unsafe { RawEvents::new(&buf[..n as usize]) })
    }

    /// Answers the permission event whose descriptor has number `fd`.
    pub fn respond(&self, fd: RawFd, reply: Reply) -> io::Result<()> {
        let r = libc::fanotify_response {
            fd,
            response: reply.response(),
        };
        // SAFETY: `r` is a live, initialised `fanotify_response` and we write exactly its size
        // from its address.
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
}

/// One event of a read buffer, as the kernel wrote it.
#[derive(Debug)]
pub struct RawEvent<'b> {
    pub mask: u64,
    pub pid: i32,
    /// The event's descriptor, owned from here on (closed on drop unless taken); `None` for
    /// `FAN_NOFD` (queue overflow, and every event of a file-handle group).
    pub fd: Option<OwnedFd>,
    /// The info records after the metadata.
    info: &'b [u8],
}

impl<'b> RawEvent<'b> {
    /// The info records of the event, in order.
    pub fn info(&self) -> Infos<'b> {
        Infos { buf: self.info }
    }

    /// The range of a pre-content event (the last range record).
    pub fn range(&self) -> Option<(u64, u64)> {
        self.info().filter_map(|i| i.range()).last()
    }

    /// The directory of a file-handle event (the first well-formed DFID or DFID_NAME record).
    pub fn dir_fid(&self) -> Option<DirFid<'b>> {
        self.info().find_map(|i| i.dir_fid())
    }
}

/// The events of one read buffer, in order. Each event's descriptor is owned by the
/// [`RawEvent`] that yields it; events not walked are walked on drop, so no descriptor leaks
/// (a permission event must still be answered: walk them all).
#[derive(Debug)]
pub struct RawEvents<'b> {
    buf: &'b [u8],
}

impl<'b> RawEvents<'b> {
    /// The walk of `buf`, a buffer of events (metadata, then info records, per event).
    ///
    /// # Safety
    /// Every descriptor in `buf` that is not `FAN_NOFD` (or negative) must be open and owned
    /// by nobody else: `buf` was just read from a group and is walked once (the walk takes
    /// ownership of them).
    pub unsafe fn new(buf: &'b [u8]) -> RawEvents<'b> {
        RawEvents { buf }
    }
}

impl<'b> Iterator for RawEvents<'b> {
    type Item = RawEvent<'b>;

    fn next(&mut self) -> Option<RawEvent<'b>> {
        const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
        if self.buf.len() < META {
            return None;
        }
        // SAFETY: `META` bytes are in bounds; `read_unaligned` copes with any alignment and
        // the struct is plain integers, valid for every bit pattern.
        let m: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(self.buf.as_ptr().cast()) };
        let len = m.event_len as usize;
        if len < META || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let (ev, rest) = self.buf.split_at(len);
        self.buf = rest;
        let fd = (m.fd >= 0).then(|| {
            // SAFETY: by the contract of `RawEvents::new`, the kernel installed this
            // descriptor for us, nothing else owns it, and this walk visits each event once.
            unsafe { OwnedFd::from_raw_fd(m.fd) }
        });
        Some(RawEvent {
            mask: m.mask,
            pid: m.pid,
            fd,
            info: ev.get(m.metadata_len as usize..).unwrap_or(&[]),
        })
    }
}

impl Drop for RawEvents<'_> {
    fn drop(&mut self) {
        self.by_ref().for_each(drop);
    }
}

/// One info record of an event: its type and its bytes, header included.
#[derive(Debug, Clone, Copy)]
pub struct Info<'b> {
    pub kind: u8,
    pub bytes: &'b [u8],
}

/// A directory's file handle and, from a DFID_NAME record, the entry's name (without NUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFid<'b> {
    pub handle_type: i32,
    pub handle: &'b [u8],
    pub name: Option<&'b [u8]>,
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes(b.try_into().unwrap())
}

fn ne_u64(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b.try_into().unwrap())
}

impl<'b> Info<'b> {
    /// `fanotify_event_info_range`: header(4), padding(4), offset(8), count(8).
    pub fn range(&self) -> Option<(u64, u64)> {
        if self.kind != FAN_EVENT_INFO_TYPE_RANGE || self.bytes.len() < 24 {
            return None;
        }
        Some((ne_u64(&self.bytes[8..16]), ne_u64(&self.bytes[16..24])))
    }

    /// `fanotify_event_info_fid` of a DFID or DFID_NAME record: header(4), fsid(8),
    /// `file_handle { handle_bytes: u32, handle_type: i32, f_handle[handle_bytes] }`, then
    /// for DFID_NAME the name up to its NUL.
    pub fn dir_fid(&self) -> Option<DirFid<'b>> {
        let named = self.kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME;
        if !(named || self.kind == libc::FAN_EVENT_INFO_TYPE_DFID) || self.bytes.len() < 20 {
            return None;
        }
        let b = self.bytes;
        let hb = ne_u32(&b[12..16]) as usize;
        let handle_type = ne_u32(&b[16..20]) as i32;
        let end = 20usize.checked_add(hb)?;
        let handle = b.get(20..end)?;
        let name = named.then(|| {
            let rest = &b[end..];
            &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
        });
        Some(DirFid {
            handle_type,
            handle,
            name,
        })
    }
}

/// The info records of one event, in order; a malformed record ends the walk.
#[derive(Debug, Clone)]
pub struct Infos<'b> {
    buf: &'b [u8],
}

impl<'b> Iterator for Infos<'b> {
    type Item = Info<'b>;

    fn next(&mut self) -> Option<Info<'b>> {
        // header: info_type(1), pad(1), len(2)
        if self.buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[2], self.buf[3]]) as usize;
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let (rec, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(Info {
            kind: rec[0],
            bytes: rec,
        })
    }
}

/// `fanotify_init` flags of both groups that answer permission events: unlimited queue (a
/// full queue would silently allow access) and marks, non-blocking reads, close on exec.
const PERMISSION_GROUP: u32 =
    libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_UNLIMITED_QUEUE | libc::FAN_UNLIMITED_MARKS;

/// A pre-content fanotify group.
pub struct Group {
    raw: Fanotify,
}

impl Group {
    /// A new group: unlimited queue (a full queue would silently allow access), unlimited
    /// marks, event fds opened read-write so fills can be written through them.
    pub fn new() -> io::Result<Group> {
        let flags = libc::FAN_CLASS_PRE_CONTENT | PERMISSION_GROUP;
        let ev_flags = (libc::O_RDWR | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        Ok(Group {
            raw: Fanotify::init(flags, ev_flags)?,
        })
    }

    /// Wraps an inherited group descriptor (the keeper passes it to the worker).
    ///
    /// # Safety
    /// `fd` must be an open fanotify group descriptor owned by the caller.
    pub unsafe fn from_raw(fd: RawFd) -> Group {
        // SAFETY: the caller's guarantee (this function's contract) is `Fanotify::from_raw`'s.
        let raw = unsafe { Fanotify::from_raw(fd) };
        Group { raw }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.as_fd()
    }

    /// Marks the inode behind `fd` (any open descriptor, O_PATH included).
    /// The kernel-side gate learns of the placeholder after its mark ([`super::gate`]).
    pub fn mark_inode(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.raw
            .mark(libc::FAN_MARK_ADD, PLACEHOLDER_MASK, fd, None)?;
        super::gate::cover(fd, c"", libc::AT_EMPTY_PATH);
        Ok(())
    }

    /// Marks `name` in directory `dir` without opening it (no event to ourselves).
    pub fn mark_at(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        self.raw.mark(
            libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW,
            PLACEHOLDER_MASK,
            dir,
            Some(name),
        )?;
        super::gate::cover(dir, name, 0);
        Ok(())
    }

    /// Removes our mark from the inode behind `fd`; a missing mark is not an error. The gate
    /// forgets the file first (a complete file must open with no daemon).
    pub fn unmark_inode(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        super::gate::uncover(fd);
        match self
            .raw
            .mark(libc::FAN_MARK_REMOVE, PLACEHOLDER_MASK, fd, None)
        {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// This group's first place in the mark list of `dir`'s filesystem
    /// ([`Fanotify::shield`]), before the folder watcher puts a filesystem mark there.
    pub fn shield(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.raw.shield(dir)
    }

    /// Undoes [`Group::shield`] (the filesystem holds no root any more).
    pub fn unshield(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.raw.unshield(dir)
    }

    /// Removes every inode mark of this group at once (an orderly stop: no new event may
    /// arrive while the keeper refuses the ones still waiting).
    pub fn flush_marks(&self) -> io::Result<()> {
        self.raw
            .mark(libc::FAN_MARK_FLUSH, 0, self.raw.as_fd(), None)
    }

    /// A private, detached clone of the mount holding `dir` whose accesses this group ignores:
    /// the daemon can open marked files through it without raising events to itself.
    pub fn private_mount(&self, dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        // SAFETY: open_tree(2) reads a directory descriptor that is open for the call, a
        // NUL-terminated (empty) path and integer flags; it writes no memory of ours.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                dir.as_raw_fd(),
                c"".as_ptr(),
                libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel has just opened for us; nothing else owns it.
        let m = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        self.raw.mark(
            libc::FAN_MARK_ADD
                | libc::FAN_MARK_MOUNT
                | libc::FAN_MARK_IGNORE
                | libc::FAN_MARK_IGNORED_SURV_MODIFY,
            PLACEHOLDER_MASK,
            m.as_fd(),
            Some(c"."),
        )?;
        Ok(m)
    }

    /// Checks that the filesystem holding `dir` delivers pre-content events (ext4, xfs, btrfs
    /// on Linux >= 6.14), by adding and removing a mark.
    pub fn probe(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.raw
            .mark(libc::FAN_MARK_ADD, FAN_PRE_ACCESS, dir, None)?;
        let _ = self
            .raw
            .mark(libc::FAN_MARK_REMOVE, FAN_PRE_ACCESS, dir, None);
        Ok(())
    }

    /// Reads the events available now (non-blocking; empty when none). Events without an fd
    /// (queue overflow) are dropped with a log line: with an unlimited queue they do not
    /// happen.
    pub fn read_events(&self) -> io::Result<Vec<Event>> {
        let mut buf = vec![0u8; READ_BUF];
        let events = self.raw.read(&mut buf)?;
        Ok(events.filter_map(permission_event).collect())
    }

    /// Answers a permission event by the number of its fd.
    pub fn respond_raw(&self, fd: RawFd, reply: Reply) -> io::Result<()> {
        self.raw.respond(fd, reply)
    }

    pub fn respond(&self, ev: &Event, reply: Reply) -> io::Result<()> {
        self.respond_raw(ev.fd.as_raw_fd(), reply)
    }
}

/// The folder gate's group (content class, `FAN_ACCESS_PERM|FAN_ONDIR` on directory inodes,
/// no events on children): the kernel raises a permission event when a program reads a
/// marked folder's entries (`getdents`), and holds it until answered. `hsm::dirgate` decides.
pub struct FolderGroup {
    raw: Fanotify,
}

/// A program reading a marked folder's entries; answer it with [`FolderGroup::allow`].
#[derive(Debug)]
pub struct FolderEvent {
    /// The folder, opened by the kernel for this event (read-only).
    pub fd: OwnedFd,
    pub pid: i32,
}

const FOLDER_MASK: u64 = libc::FAN_ACCESS_PERM | libc::FAN_ONDIR;

impl FolderGroup {
    pub fn new() -> io::Result<FolderGroup> {
        let flags = libc::FAN_CLASS_CONTENT | PERMISSION_GROUP;
        let ev_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        Ok(FolderGroup {
            raw: Fanotify::init(flags, ev_flags)?,
        })
    }

    /// Marks the directory behind `dir` (an open descriptor: the kernel refuses O_PATH ones
    /// here with EBADF), after putting this group first in its filesystem's mark list
    /// ([`Fanotify::shield`]: a program it holds must not keep the folder watcher's mark).
    pub fn guard(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.raw.shield(dir)?;
        self.raw.mark(
            libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR,
            FOLDER_MASK,
            dir,
            None,
        )
    }

    /// Removes the mark of the directory behind `dir`; a missing mark is not an error.
    pub fn release(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        match self.raw.mark(libc::FAN_MARK_REMOVE, FOLDER_MASK, dir, None) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Waits up to `timeout_ms` for events; true when some are queued.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        self.raw.wait(timeout_ms)
    }

    /// The events queued now (non-blocking; events without an fd are dropped).
    pub fn read_events(&self) -> io::Result<Vec<FolderEvent>> {
        let mut buf = vec![0u8; READ_BUF];
        let events = self.raw.read(&mut buf)?;
        Ok(events
            .filter_map(|mut ev| {
                let pid = ev.pid;
                ev.fd.take().map(|fd| FolderEvent { fd, pid })
            })
            .collect())
    }

    /// Lets the program's read of the folder go on.
    pub fn allow(&self, ev: &FolderEvent) -> io::Result<()> {
        self.raw.respond(ev.fd.as_raw_fd(), Reply::Allow)
    }
}

/// What a pre-content group's event asks for.
fn access(ev: &RawEvent<'_>) -> Access {
    let base = if ev.mask & FAN_OPEN_EXEC_PERM != 0 {
        Access::OpenExec
    } else if ev.mask & FAN_OPEN_PERM != 0 {
        Access::Open
    } else {
        Access::Pre {
            offset: 0,
            count: 0,
        }
    };
    match ev.range() {
        Some((offset, count)) if ev.mask & FAN_PRE_ACCESS != 0 => Access::Pre { offset, count },
        _ => base,
    }
}

/// A pre-content group's event as the hydrator takes it; `None` (logged) without an fd.
fn permission_event(mut ev: RawEvent<'_>) -> Option<Event> {
    let access = access(&ev);
    let Some(fd) = ev.fd.take() else {
        tracing::error!(
            mask = ev.mask,
            "fanotify event without fd (queue overflow?)"
        );
        return None;
    };
    Some(Event {
        access,
        fd,
        pid: ev.pid,
    })
}

/// `struct file_handle` with room for the largest handle, aligned as the kernel expects.
#[repr(C)]
struct HandleBuf {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; libc::MAX_HANDLE_SZ as usize],
}

impl HandleBuf {
    fn new() -> HandleBuf {
        HandleBuf {
            handle_bytes: libc::MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; libc::MAX_HANDLE_SZ as usize],
        }
    }
}

/// A file handle (`name_to_handle_at`), to find a file again after a restart.
pub fn handle_of(fd: BorrowedFd<'_>) -> io::Result<(i32, Vec<u8>)> {
    handle_at(fd, c"", libc::AT_EMPTY_PATH)
}

/// The handle of `name` in directory `dir` (or of `dir` itself with `AT_EMPTY_PATH` and an
/// empty name), without opening it: no event reaches us.
pub fn handle_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<(i32, Vec<u8>)> {
    let mut h = HandleBuf::new();
    let mut mnt = 0;
    // SAFETY: `h` is a `repr(C)` `struct file_handle` (same leading fields, same alignment)
    // with `handle_bytes` bytes of room after its header; `name` is NUL-terminated; `mnt` is
    // a writable int; `dir` is open for the call.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            name.as_ptr(),
            (&mut h as *mut HandleBuf).cast(),
            &mut mnt,
            flags,
        )
    };
    cvt(r)?;
    let n = (h.handle_bytes as usize).min(h.f_handle.len());
    Ok((h.handle_type, h.f_handle[..n].to_vec()))
}

/// Opens a file by handle relative to `mount` (the private mount, so no event is raised).
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    htype: i32,
    bytes: &[u8],
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut h = HandleBuf::new();
    // Longer than any handle: the kernel would say EINVAL too.
    let Some(room) = h.f_handle.get_mut(..bytes.len()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    room.copy_from_slice(bytes);
    h.handle_bytes = bytes.len() as u32;
    h.handle_type = htype;
    // SAFETY: `h` is a well-formed `struct file_handle` (`repr(C)`, aligned, `handle_bytes`
    // bytes of handle after its header); `mount` is open for the call.
    let fd = cvt(unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut h as *mut HandleBuf).cast(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is a descriptor the kernel has just opened for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Builders of read buffers in the kernel's layout, for the decoder tests here and in
/// `sync::watch`.
#[cfg(test)]
pub(crate) mod test_buf {
    /// One event: metadata (24 bytes) carrying `fd`, then the given info records.
    pub fn event_fd(mask: u64, fd: i32, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        let len = 24 + infos.iter().map(Vec::len).sum::<usize>();
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.push(3); // FANOTIFY_METADATA_VERSION
        b.push(0);
        b.extend_from_slice(&24u16.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        for i in infos {
            b.extend_from_slice(i);
        }
        b
    }

    /// One event without a descriptor (`FAN_NOFD`).
    pub fn event(mask: u64, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        event_fd(mask, libc::FAN_NOFD, pid, infos)
    }

    fn header(kind: u8, len: usize) -> Vec<u8> {
        let mut b = vec![kind, 0];
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b
    }

    /// A pre-content range record.
    pub fn range(offset: u64, count: u64) -> Vec<u8> {
        let mut b = header(super::FAN_EVENT_INFO_TYPE_RANGE, 24);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&offset.to_ne_bytes());
        b.extend_from_slice(&count.to_ne_bytes());
        b
    }

    /// A DFID (`name` `None`) or DFID_NAME record, padded to 4 bytes as the kernel does.
    pub fn dfid(htype: i32, handle: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8; 8]; // fsid
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&htype.to_ne_bytes());
        body.extend_from_slice(handle);
        let kind = match name {
            Some(n) => {
                body.extend_from_slice(n.as_bytes());
                body.push(0);
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            }
            None => libc::FAN_EVENT_INFO_TYPE_DFID,
        };
        while (4 + body.len()) % 4 != 0 {
            body.push(0);
        }
        let mut b = header(kind, 4 + body.len());
        b.extend_from_slice(&body);
        b
    }

    /// A record of another type (`len` bytes, header included).
    pub fn other(kind: u8, len: usize) -> Vec<u8> {
        let mut b = header(kind, len);
        b.resize(len.max(4), 0);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_buf::{dfid, event, event_fd, other, range};
    use super::*;
    use std::os::fd::IntoRawFd;

    /// Mask, pid and range of each event.
    type Walked = (u64, i32, Option<(u64, u64)>);

    fn walk(buf: &[u8]) -> Vec<Walked> {
        // SAFETY: the test buffers carry no descriptor (FAN_NOFD).
        unsafe { RawEvents::new(buf) }
            .map(|e| (e.mask, e.pid, e.range()))
            .collect()
    }

    fn accesses(buf: &[u8]) -> Vec<Access> {
        // SAFETY: the test buffers carry no descriptor (FAN_NOFD).
        unsafe { RawEvents::new(buf) }.map(|e| access(&e)).collect()
    }

    #[test]
    fn access_of_each_permission_event() {
        let mut buf = event(FAN_PRE_ACCESS, 1, &[range(4096, 8192)]);
        buf.extend(event(FAN_OPEN_PERM, 2, &[]));
        buf.extend(event(FAN_OPEN_EXEC_PERM | FAN_OPEN_PERM, 3, &[]));
        buf.extend(event(FAN_PRE_ACCESS, 4, &[]));
        buf.extend(event(FAN_PRE_ACCESS, 5, &[range(1, 2), range(7, 0)]));
        // A range on anything but a pre-content event is not a range.
        buf.extend(event(FAN_OPEN_PERM, 6, &[range(1, 2)]));
        assert_eq!(
            accesses(&buf),
            vec![
                Access::Pre {
                    offset: 4096,
                    count: 8192
                },
                Access::Open,
                Access::OpenExec,
                Access::Pre {
                    offset: 0,
                    count: 0
                },
                Access::Pre {
                    offset: 7,
                    count: 0
                },
                Access::Open,
            ]
        );
    }

    #[test]
    fn the_walk_stops_at_a_malformed_or_cut_event() {
        let mut buf = event(FAN_OPEN_PERM, 1, &[]);
        let mut short = event(FAN_OPEN_PERM, 2, &[]);
        short[..4].copy_from_slice(&10u32.to_ne_bytes()); // shorter than the metadata
        buf.extend(short);
        buf.extend(event(FAN_OPEN_PERM, 3, &[]));
        assert_eq!(walk(&buf), vec![(FAN_OPEN_PERM, 1, None)]);

        let mut buf = event(FAN_OPEN_PERM, 1, &[]);
        let cut = event(FAN_PRE_ACCESS, 2, &[range(0, 1)]);
        buf.extend_from_slice(&cut[..cut.len() - 1]);
        assert_eq!(walk(&buf), vec![(FAN_OPEN_PERM, 1, None)]);
        assert!(walk(&buf[..23]).is_empty());
    }

    #[test]
    fn info_records_are_walked_by_their_length() {
        // An unknown record is skipped; a record with a bad length ends the info walk only.
        let buf = event(
            FAN_PRE_ACCESS,
            1,
            &[other(99, 12), range(5, 6), other(1, 2), range(8, 9)],
        );
        let mut two = buf.clone();
        two.extend(event(FAN_OPEN_PERM, 2, &[]));
        assert_eq!(
            walk(&two),
            vec![(FAN_PRE_ACCESS, 1, Some((5, 6))), (FAN_OPEN_PERM, 2, None)]
        );
        // A record longer than what is left of its event ends the info walk too.
        let mut long = range(5, 6);
        long[2..4].copy_from_slice(&40u16.to_ne_bytes());
        assert_eq!(
            walk(&event(FAN_PRE_ACCESS, 1, &[long])),
            vec![(FAN_PRE_ACCESS, 1, None)]
        );
    }

    #[test]
    fn directory_records_give_handle_and_name() {
        let mut bad = dfid(1, &[9; 4], Some("x"));
        bad[12..16].copy_from_slice(&100u32.to_ne_bytes()); // handle longer than the record
        let buf = event(
            libc::FAN_CREATE,
            7,
            &[
                bad,
                dfid(1, &[1, 2, 3, 4, 5, 6, 7, 8], Some("a.txt")),
                dfid(2, &[1], None),
            ],
        );
        // SAFETY: no descriptor in the buffer (FAN_NOFD).
        let ev = unsafe { RawEvents::new(&buf) }.next().unwrap();
        assert_eq!(
            ev.dir_fid(),
            Some(DirFid {
                handle_type: 1,
                handle: &[1, 2, 3, 4, 5, 6, 7, 8],
                name: Some(b"a.txt"),
            })
        );
        let buf = event(libc::FAN_DELETE_SELF, 7, &[dfid(2, &[1, 2], None)]);
        // SAFETY: no descriptor in the buffer (FAN_NOFD).
        let ev = unsafe { RawEvents::new(&buf) }.next().unwrap();
        assert_eq!(ev.dir_fid().unwrap().name, None);
        assert_eq!(ev.dir_fid().unwrap().handle, &[1, 2]);
    }

    /// A pipe whose write end goes into an event: the read end (non-blocking) reads EOF once
    /// the walk has closed it, EAGAIN while it is open.
    fn pipe() -> (std::fs::File, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(r, 0);
        // SAFETY: the read end was just opened for us; nothing else owns it.
        (unsafe { std::fs::File::from_raw_fd(fds[0]) }, fds[1])
    }

    fn write_end_closed(r: &std::fs::File) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!((&*r).read(&mut b), Ok(0))
    }

    #[test]
    fn the_walk_owns_event_descriptors() {
        // Taken by the hydrator's event.
        let (r, w) = pipe();
        let buf = event_fd(FAN_OPEN_PERM, w, 1, &[]);
        // SAFETY: `w` is ours and appears once in the buffer; the walk owns it from here on.
        let evs: Vec<Event> = unsafe { RawEvents::new(&buf) }
            .filter_map(permission_event)
            .collect();
        assert_eq!(evs.len(), 1);
        assert!(!write_end_closed(&r));
        assert_eq!(evs.into_iter().next().unwrap().fd.into_raw_fd(), w);
        // SAFETY: `w` is open and ours again (taken out of the event above).
        drop(unsafe { OwnedFd::from_raw_fd(w) });
        assert!(write_end_closed(&r));

        // Not walked: closed when the walk is dropped.
        let (r, w) = pipe();
        let mut buf = event(FAN_Q_OVERFLOW, 1, &[]);
        buf.extend(event_fd(FAN_OPEN_PERM, w, 1, &[]));
        // SAFETY: `w` is ours and appears once in the buffer; the walk owns it from here on.
        let mut evs = unsafe { RawEvents::new(&buf) };
        assert!(evs.next().unwrap().fd.is_none());
        assert!(!write_end_closed(&r));
        drop(evs);
        assert!(write_end_closed(&r));
    }

    #[test]
    fn deny_errnos_the_kernel_refuses_become_eio() {
        assert_eq!(Reply::Allow.response(), libc::FAN_ALLOW);
        assert_eq!(
            Reply::Deny(libc::ENOSPC).response(),
            libc::FAN_DENY | ((libc::ENOSPC as u32) << 24)
        );
        assert_eq!(
            Reply::Deny(libc::ENOENT).response(),
            libc::FAN_DENY | ((libc::EIO as u32) << 24)
        );
    }
}

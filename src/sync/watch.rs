//! Local change notifications: a second fanotify group (notification class, file-handle
//! mode; a pre-content group cannot report directory entries) with an inode mark on every
//! folder of every root, reporting creates, deletes and moves in it and changes of the
//! folder itself, and one filesystem mark on each filesystem holding a root, reporting
//! close-after-write and attribute changes of any file there (each event names the folder
//! and the file; events of folders that are in no root are dropped by the caller, their
//! folder being unknown). No inotify watch limits apply. This adapter only says *which
//! folder changed* (by its file handle) and who changed it; a sync pass rescans and the
//! planner decides. Events the daemon caused itself are recognised by pid. What is specific
//! to watching lives here (the group's flags, the masks, what a change is); the syscalls and
//! the event decoding are the fanotify adapter's ([`crate::hsm::fanotify`]).
//!
//! Why a filesystem mark for the files' own events: a folder mask with any event on
//! children flags every child, and each `read()` of each file in the folder then takes
//! fsnotify's parent path (warm 4 KiB reads about 0.88x native). A filesystem mark costs
//! reads nothing, but a program waiting for a permission group's answer keeps the marks at
//! the head of each list its event walked; were this mark first in its filesystem's list,
//! closing this group (a worker's exit) would wait for readers only the next worker
//! answers. So each permission group of ours puts a mark of its own first there before this
//! one goes on (`shield`, [`crate::hsm::fanotify::Fanotify::shield`]); where that fails, the
//! filesystem's folders watch their children themselves, as before (`doc/BENCHMARKS.md`,
//! "Reads of complete files with the daemon running").

use crate::fsutil;
use crate::hsm::fanotify::{self, Fanotify, RawEvent};
use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

/// What a folder mark asks for: changes of its entries and of the folder itself.
const FOLDER_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;

/// What the filesystem mark asks for, of every file and folder there.
const FILESYSTEM_MASK: u64 = libc::FAN_CLOSE_WRITE | libc::FAN_ATTRIB | libc::FAN_ONDIR;

/// A folder mark where no filesystem mark could be placed: the folder watches its children.
const FOLDER_AND_CHILDREN_MASK: u64 = FOLDER_MASK | FILESYSTEM_MASK | libc::FAN_EVENT_ON_CHILD;

/// What puts the permission groups' marks first in a filesystem's list before the
/// watcher's filesystem mark goes on (`Group::shield`).
pub type Shield<'a> = &'a dyn Fn(BorrowedFd<'_>) -> io::Result<()>;

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
        self.mask & libc::FAN_Q_OVERFLOW != 0
    }

    /// Whether only the filesystem mark can have reported this (a file written or its
    /// attributes changed): in a folder no root holds, it is none of ours.
    pub fn filesystem_wide(&self) -> bool {
        self.mask & !FILESYSTEM_MASK == 0
    }

    /// The change one event reports: its folder is the first directory record's. An event
    /// descriptor (not expected in file-handle mode) is closed with the event.
    fn from_event(ev: RawEvent<'_>) -> Change {
        let dir = ev.dir_fid();
        Change {
            pid: ev.pid,
            mask: ev.mask,
            dir: dir.map(|d| (d.handle_type, d.handle.to_vec())),
            name: dir
                .and_then(|d| d.name)
                .and_then(|n| std::str::from_utf8(n).ok())
                .map(str::to_string),
        }
    }
}

/// The folder watcher's notification group.
pub struct Watcher {
    group: Fanotify,
    /// Filesystems seen (by device number): `true` where this group's filesystem mark is,
    /// `false` where it could not be placed (their folders then watch their children).
    filesystems: Mutex<HashMap<u64, bool>>,
}

impl Watcher {
    /// A notification group in file-handle mode reporting each event's folder and name,
    /// with unlimited queue and marks (an overflow still reads as [`Change::overflow`]).
    pub fn new() -> io::Result<Watcher> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_UNLIMITED_MARKS
            | libc::FAN_REPORT_FID
            | libc::FAN_REPORT_DFID_NAME;
        let group = Fanotify::init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32)?;
        Ok(Watcher {
            group,
            filesystems: Mutex::default(),
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }

    /// Watches the folder behind `dir` (idempotent); returns its key. The first folder of a
    /// filesystem also places the filesystem mark, once `shield` has put the permission
    /// groups' marks ahead of it (see the module's notes).
    pub fn watch(&self, dir: BorrowedFd<'_>, shield: Shield<'_>) -> io::Result<DirKey> {
        let dev = fsutil::fstat(dir)?.st_dev;
        let whole = *self
            .filesystems
            .lock()
            .unwrap()
            .entry(dev)
            .or_insert_with(|| self.watch_filesystem(dir, shield));
        let mask = if whole {
            FOLDER_MASK
        } else {
            FOLDER_AND_CHILDREN_MASK
        };
        self.group.mark(libc::FAN_MARK_ADD, mask, dir, None)?;
        fanotify::handle_of(dir)
    }

    fn watch_filesystem(&self, dir: BorrowedFd<'_>, shield: Shield<'_>) -> bool {
        let placed = shield(dir).and_then(|()| {
            self.group.mark(
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                FILESYSTEM_MASK,
                dir,
                None,
            )
        });
        match placed {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the filesystem as a whole: its folders watch their files (reads there cost more)");
                false
            }
        }
    }

    /// Stops watching the filesystem holding `dir` as a whole (no root is left there); its
    /// folders' marks stay until the group closes.
    pub fn unwatch_filesystem(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        let dev = fsutil::fstat(dir)?.st_dev;
        if self.filesystems.lock().unwrap().remove(&dev) == Some(true) {
            self.group.mark(
                libc::FAN_MARK_REMOVE | libc::FAN_MARK_FILESYSTEM,
                FILESYSTEM_MASK,
                dir,
                None,
            )?;
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for changes; true when some are queued.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        self.group.wait(timeout_ms)
    }

    /// Reads what is queued (non-blocking; empty when nothing is) through `buf`, a buffer
    /// of [`fanotify::READ_BUF`] bytes the caller keeps from one read to the next.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Vec<Change>> {
        let events = self.group.read(buf)?;
        Ok(events.map(Change::from_event).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::fanotify::test_buf::{dfid, event};
    use crate::hsm::fanotify::RawEvents;

    fn changes(buf: &[u8]) -> Vec<Change> {
        // SAFETY: the test buffers carry no descriptor (FAN_NOFD).
        unsafe { RawEvents::new(buf) }
            .map(Change::from_event)
            .collect()
    }

    #[test]
    fn events_become_changes() {
        let mut buf = event(libc::FAN_CREATE, 4, &[dfid(1, &[1, 2, 3, 4], Some("a"))]);
        buf.extend(event(libc::FAN_DELETE_SELF, 5, &[dfid(1, &[5, 6], None)]));
        buf.extend(event(libc::FAN_Q_OVERFLOW, 0, &[]));
        buf.extend(event(
            libc::FAN_CREATE,
            6,
            &[dfid(1, &[7], Some("\u{fffd}"))],
        ));
        let mut bad_name = event(libc::FAN_CREATE, 6, &[dfid(1, &[7], Some("bc"))]);
        let at = bad_name.len() - 3; // the name "bc\0" ends the record (24 bytes, no padding)
        bad_name[at] = 0xff;
        buf.extend(bad_name);
        let c = changes(&buf);
        assert_eq!(
            c[0],
            Change {
                pid: 4,
                mask: libc::FAN_CREATE,
                dir: Some((1, vec![1, 2, 3, 4])),
                name: Some("a".into()),
            }
        );
        assert_eq!(c[1].dir, Some((1, vec![5, 6])));
        assert_eq!(c[1].name, None);
        assert!(!c[1].overflow());
        assert!(c[2].overflow());
        assert!(!c[0].filesystem_wide(), "a create is a folder mark's");
        let written = changes(&event(
            libc::FAN_CLOSE_WRITE | libc::FAN_ATTRIB,
            7,
            &[dfid(1, &[9], Some("f"))],
        ));
        assert!(written[0].filesystem_wide());
        assert_eq!((c[2].dir.clone(), c[2].name.clone()), (None, None));
        assert_eq!(c[3].name.as_deref(), Some("\u{fffd}"));
        // A name that is not UTF-8 is left out; the folder still counts.
        assert_eq!(
            (c[4].dir.clone(), c[4].name.clone()),
            (Some((1, vec![7])), None)
        );
        assert_eq!(c.len(), 5);
    }

    /// Against the kernel: needs root (CAP_SYS_ADMIN for the unlimited queue), so it runs
    /// with the root-only tests (`--features integration`) and fails without root.
    #[cfg(feature = "integration")]
    #[test]
    fn a_watched_folder_reports_a_new_file() {
        let w = Watcher::new().unwrap_or_else(|e| {
            panic!("fanotify_init: {e} (this test needs root: run it as scripts/test does)")
        });
        // /var/tmp is on disk (file handles work there; /tmp may be a tmpfs).
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let key = w
            .watch(std::os::fd::AsFd::as_fd(&dir), &|_| Ok(()))
            .unwrap_or_else(|e| panic!("fanotify_mark on {}: {e}", tmp.path().display()));
        let mut buf = vec![0u8; fanotify::READ_BUF];
        assert!(w.read(&mut buf).unwrap().is_empty());
        std::fs::write(tmp.path().join("new.txt"), b"x").unwrap();
        let c = w.read(&mut buf).unwrap();
        let me = std::process::id() as i32;
        assert!(
            c.iter().any(|c| c.pid == me
                && c.mask & libc::FAN_CREATE != 0
                && c.dir.as_ref() == Some(&key)
                && c.name.as_deref() == Some("new.txt")),
            "{c:?}"
        );
        assert!(
            c.iter().any(|c| c.mask & libc::FAN_CLOSE_WRITE != 0),
            "{c:?}"
        );
    }
}

//! The in-flight journal: events a worker took and had not answered, on disk, so that a
//! restarted worker finishes what its dead predecessor had taken (it refills the file through
//! a private mount and answers by fd number), and answers EIO to what it cannot finish.

use super::core::Core;
use crate::fsutil;
use crate::hsm::fanotify::{Access, Reply};
use crate::model::RelPath;
use crate::roots::RootRecord;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// An event a worker took and had not answered: enough to find the file again (handle) and
/// to answer the kernel (the fd number, which the kernel matches in the group).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub fd: i32,
    pub dev: u64,
    pub handle: Option<(i32, Vec<u8>)>,
    pub access: Access,
}

impl Pending {
    fn line(&self) -> String {
        let (t, h) = match &self.handle {
            Some((t, h)) => (*t, hex::encode(h)),
            None => (0, "-".into()),
        };
        let (k, o, c) = match self.access {
            Access::Open => ('o', 0, 0),
            Access::OpenExec => ('x', 0, 0),
            Access::Pre { offset, count } => ('p', offset, count),
        };
        format!("+{} {} {} {} {} {} {}", self.fd, self.dev, t, h, k, o, c)
    }

    fn parse(l: &str) -> Option<Pending> {
        let mut it = l.strip_prefix('+')?.split(' ');
        let fd = it.next()?.parse().ok()?;
        let parsed = (|| {
            let dev = it.next()?.parse().ok()?;
            let t: i32 = it.next()?.parse().ok()?;
            let h = hex::decode(it.next()?).ok();
            let access = match (
                it.next()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ) {
                ("o", _, _) => Access::Open,
                ("x", _, _) => Access::OpenExec,
                ("p", offset, count) => Access::Pre { offset, count },
                _ => return None,
            };
            Some((dev, h.map(|h| (t, h)), access))
        })();
        Some(match parsed {
            Some((dev, handle, access)) => Pending {
                fd,
                dev,
                handle,
                access,
            },
            None => Pending {
                fd,
                dev: 0,
                handle: None,
                access: Access::Open,
            },
        })
    }
}

/// Events read but not yet answered, on disk, so that a restarted worker can finish what its
/// dead predecessor had taken: it refills the file and answers by fd number.
pub struct Journal {
    file: Mutex<File>,
    open: Mutex<HashSet<i32>>,
}

impl Journal {
    /// Opens a fresh journal, returning what the previous worker left unanswered.
    pub fn open(path: &Path) -> io::Result<(Journal, Vec<Pending>)> {
        let mut pending: Vec<Pending> = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for l in text.lines() {
                if let Some(p) = Pending::parse(l) {
                    pending.retain(|q| q.fd != p.fd);
                    pending.push(p);
                } else if let Some(n) = l.strip_prefix('-').and_then(|n| n.parse::<i32>().ok()) {
                    pending.retain(|q| q.fd != n);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok((
            Journal {
                file: Mutex::new(file),
                open: Mutex::new(HashSet::new()),
            },
            pending,
        ))
    }

    pub fn add(&self, p: &Pending) {
        self.open.lock().unwrap().insert(p.fd);
        // One write(2) per line: a line is never torn by a crash between two writes.
        let line = format!("{}\n", p.line());
        let _ = self.file.lock().unwrap().write_all(line.as_bytes());
    }

    pub fn done(&self, fd: i32) {
        let empty = {
            let mut o = self.open.lock().unwrap();
            o.remove(&fd);
            o.is_empty()
        };
        let mut f = self.file.lock().unwrap();
        if empty && f.metadata().map(|m| m.len() > (1 << 20)).unwrap_or(false) {
            let _ = f.set_len(0);
            let _ = std::io::Seek::seek(&mut *f, std::io::SeekFrom::Start(0));
        } else {
            let _ = f.write_all(format!("-{fd}\n").as_bytes());
        }
    }
}

/// Finishes the events a dead worker had taken: refill through a private mount (no events to
/// ourselves), then answer by fd number; EIO when that is impossible.
pub async fn recover(core: &Core, pending: Vec<Pending>) {
    let journaled: HashSet<i32> = pending.iter().map(|p| p.fd).collect();
    for p in pending {
        let reply = match refill(core, &p).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(fd = p.fd, error = %e, "cannot finish an event of the previous worker; answering EIO");
                Reply::Deny(libc::EIO)
            }
        };
        match core.group.respond_raw(p.fd, reply) {
            Ok(()) => tracing::info!(
                fd = p.fd,
                ?reply,
                "answered an event of the previous worker"
            ),
            Err(e) => tracing::debug!(fd = p.fd, error = %e, "stale journal entry"),
        }
    }
    sweep_unjournaled(core, &journaled);
}

/// A worker killed between reading events and journaling them leaves those events pending in
/// the group with no record of their files; their readers would wait until the group closes.
/// This worker has read nothing yet, so every event still pending is a dead worker's: answer
/// each fd number the dead worker could have used with EIO (never allow, which would show
/// zeros). Numbers with no pending event answer ENOENT.
fn sweep_unjournaled(core: &Core, journaled: &HashSet<i32>) {
    // SAFETY: `rlimit` is plain data; getrlimit only writes into it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local struct.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as i32
    } else {
        1 << 16
    };
    let mut n = 0;
    for fd in 0..max {
        if !journaled.contains(&fd) && core.group.respond_raw(fd, Reply::Deny(libc::EIO)).is_ok() {
            n += 1;
        }
    }
    if n > 0 {
        tracing::warn!(
            events = n,
            "answered EIO to events a killed worker had read but not journaled"
        );
    }
}

/// Reopens a pending event's file by handle inside a private mount of its root and lets the
/// hydrator finish the access.
async fn refill(core: &Core, p: &Pending) -> io::Result<Reply> {
    let (htype, handle) = p
        .handle
        .as_ref()
        .ok_or_else(|| io::Error::other("no file handle recorded"))?;
    let roots: Vec<RootRecord> = core.roots.read().unwrap().clone();
    // Each root's folder opened once and verified (owner, and the folder added as the root:
    // never a symlink or a replacement); the private mount is made from that fd.
    let root = roots
        .iter()
        .filter_map(|r| core.open_root(r).ok())
        .find(|f| {
            fsutil::fstat(f.as_fd())
                .map(|s| s.st_dev == p.dev)
                .unwrap_or(false)
        })
        .ok_or_else(|| io::Error::other("no sync root on that filesystem"))?;
    let mnt = core.group.private_mount(root.as_fd())?;
    // open_by_handle_at wants a real (not O_PATH) descriptor inside the mount.
    let mdir = fsutil::open_beneath(
        mnt.as_fd(),
        &RelPath::root(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let fd = crate::hsm::fanotify::open_by_handle(mdir.as_fd(), *htype, handle, libc::O_RDWR)?;
    Ok(core
        .hydrator
        .finish(p.access, &Arc::new(File::from(fd)))
        .await)
}

//! "Free up space": turn a complete, unmodified file back into a placeholder. The file is
//! opened before it is marked (so our own punch raises no event), a write lease proves that
//! nobody else has it open or mapped (punching under a live mapping would show zeros), the
//! mark goes on before the bytes go away, and the record says "placeholder" before the punch.

use super::fanotify::Group;
use super::meta::{self, Fill, Pin};
use crate::fsutil;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

#[derive(Debug, thiserror::Error)]
pub enum EvictError {
    #[error("not a file managed by Skyfill")]
    NotManaged,
    #[error("already online-only")]
    AlreadyOnline,
    #[error("the file is pinned (always keep on this device)")]
    Pinned,
    #[error("the file has local changes that are not uploaded yet")]
    Modified,
    #[error("the file is open or mapped by another process")]
    Busy,
    #[error("the file is only partly local; open it fully first")]
    Partial,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl EvictError {
    pub fn errno(&self) -> i32 {
        match self {
            EvictError::NotManaged => libc::EINVAL,
            EvictError::AlreadyOnline => 0,
            EvictError::Pinned => libc::EPERM,
            EvictError::Modified => libc::EAGAIN,
            EvictError::Busy | EvictError::Partial => libc::EBUSY,
            EvictError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Evicts the file at `rel` below `root`. Returns the bytes freed. `root` may be a private,
/// ignore-marked mount of the root (`Group::private_mount`): then partial files are evicted
/// too, since opening them there raises no event.
pub fn evict(
    root: BorrowedFd<'_>,
    rel: &crate::model::RelPath,
    group: &Group,
    quiet: bool,
) -> Result<u64, EvictError> {
    // Reading the record by path does not open the file.
    let pfd = fsutil::open_beneath(
        root,
        &rel.parent().unwrap_or_default(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )?;
    let m = meta_at(pfd.as_fd(), rel.name(), rel.as_str())?.ok_or(EvictError::NotManaged)?;
    match (m.fill, m.pin) {
        (Fill::Placeholder, _) if !quiet => return Err(EvictError::AlreadyOnline),
        (_, Pin::Pinned) => return Err(EvictError::Pinned),
        _ => {}
    }
    // A partial file is still marked: opening it would raise an event to ourselves, and
    // its missing ranges would be fetched first. Only complete files are evicted.
    if m.fill != Fill::Complete && !quiet {
        return Err(EvictError::Partial);
    }
    let fd = fsutil::open_beneath(root, rel, libc::O_RDWR | libc::O_NOFOLLOW, 0)?;
    let st = fsutil::fstat(fd.as_fd())?;
    // A placeholder with data blocks holds bytes a killed worker wrote but never recorded:
    // never served (the record says they are missing), and freed here like any others.
    // SAFETY: lseek on our own fd.
    if m.fill == Fill::Placeholder && unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_DATA) } < 0
    {
        return Err(EvictError::AlreadyOnline);
    }
    if m.fill == Fill::Complete
        && (st.st_size as u64 != m.size || (st.st_mtime, st.st_mtime_nsec as u32) != m.mtime)
    {
        return Err(EvictError::Modified);
    }
    // SAFETY: lease calls on our own fd. SIGIO is ignored process-wide by the daemon.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) => EvictError::Busy,
            _ => EvictError::Io(e),
        });
    }
    let result = (|| -> Result<u64, EvictError> {
        group.mark_inode(fd.as_fd())?;
        let mut rec = m.clone();
        rec.fill = Fill::Placeholder;
        rec.ranges = Default::default();
        meta::write_fd(fd.as_fd(), &rec)?;
        let freed = st.st_blocks as u64 * 512;
        // SAFETY: punching our own fd; it was opened before the mark, so no event.
        let r = unsafe {
            libc::fallocate(
                fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                // Whole blocks: a partial last block would be zeroed, not freed.
                round_up(st.st_size, st.st_blksize.max(4096)),
            )
        };
        if r < 0 {
            return Err(EvictError::Io(io::Error::last_os_error()));
        }
        fsutil::set_mtime(fd.as_fd(), fsutil::mtime_of(&st))?;
        Ok(freed)
    })();
    // SAFETY: release our lease.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    result
}

fn round_up(n: i64, to: i64) -> i64 {
    (n + to - 1) / to * to
}

/// The record of `name` in directory `dir`, read without opening the file and resolved
/// against `rel`, the file's path in its root (see `FileMeta::resolve`).
pub fn meta_at(dir: BorrowedFd<'_>, name: &str, rel: &str) -> io::Result<Option<meta::FileMeta>> {
    let p = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name);
    Ok(meta::read_path(std::path::Path::new(&p))?.map(|m| m.found_at(rel)))
}

//! Safe path resolution for a root process: every open below a root goes through `openat2`
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so no name (from a server or a user) and no
//! symlink planted in a root can make Skyfill touch a file outside it.

use crate::model::RelPath;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::SystemTime;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Runs blocking filesystem work (folder scans): inside the daemon's multi-thread runtime
/// the runtime first moves its other tasks (the kernel's events, other users' requests) off
/// this thread; anywhere else it just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Opens the absolute `path` in one resolution that refuses every symlink on the way (ELOOP),
/// `O_NONBLOCK` unless `O_PATH` like [`open_beneath`].
pub fn open_no_symlinks(path: &std::path::Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    openat2(
        libc::AT_FDCWD,
        &c,
        flags,
        0,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `rel` beneath `dir` (the empty path opens `dir` itself again) without following any
/// symlink and without leaving `dir`. Every open but `O_PATH` is `O_NONBLOCK`: a FIFO or a
/// device swapped in by a user never blocks the calling thread (and a file under someone's
/// lease answers EWOULDBLOCK instead of waiting out the lease). Callers check the type.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &RelPath,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let path = if rel.is_root() { "." } else { rel.as_str() };
    openat2(
        dir.as_raw_fd(),
        &cstr(path)?,
        flags,
        mode,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// The `openat2` syscall: `O_CLOEXEC`, and `O_NONBLOCK` unless `O_PATH`.
fn openat2(dir: i32, path: &CString, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    let nonblock = if flags & libc::O_PATH == 0 {
        libc::O_NONBLOCK
    } else {
        0
    };
    how.flags = (flags | libc::O_CLOEXEC | nonblock) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = resolve;
    // EAGAIN: a concurrent rename made the kernel give up a RESOLVE_BENEATH lookup (or a lease
    // refused a non-blocking open): retried a bounded number of times.
    let mut tries = 0;
    loop {
        tries += 1;
        // SAFETY: valid pointers for the duration of the call; size matches the struct.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this new descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        if (e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR))
            || tries >= 64
        {
            return Err(e);
        }
    }
}

/// Opens the parent directory of `rel` beneath `dir` (O_PATH) and returns it with the name.
pub fn open_parent<'a>(dir: BorrowedFd<'_>, rel: &'a RelPath) -> io::Result<(OwnedFd, &'a str)> {
    let parent = rel
        .parent()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = open_beneath(dir, &parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok((fd, rel.name()))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is written by the kernel on success.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: the call succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as above.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a valid fd and a NUL-terminated name that outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &str, is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a valid fd and a NUL-terminated name that outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// `renameat2`, refusing to replace an existing target when `noreplace`.
pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
    noreplace: bool,
) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: valid fds and NUL-terminated names that outlive the call.
    check(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
            flags,
        )
    })
}

/// Sets atime and mtime of an open file.
pub fn set_mtime(fd: BorrowedFd<'_>, mtime: SystemTime) -> io::Result<()> {
    let (s, ns) = match mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
        Err(e) => (-(e.duration().as_secs() as i64), 0),
    };
    let ts = [
        libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
        libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    ];
    // SAFETY: a valid fd and a two-element timespec array that outlives the call.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
}

/// What [`each_entry`] calls per entry: its name, its type if the directory says, the
/// directory's fd.
type EntryFn<'f> = dyn FnMut(&[u8], Option<nix::dir::Type>, BorrowedFd<'_>) + 'f;

/// Calls `f(name, type, dir_fd)` for every entry of an open directory but `.` and `..`.
fn each_entry(dir: BorrowedFd<'_>, f: &mut EntryFn<'_>) -> io::Result<()> {
    let fd = open_beneath(dir, &RelPath::root(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d =
        nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).map_err(io::Error::from)?;
    // SAFETY: the directory stays open for the whole walk.
    let dfd = unsafe { BorrowedFd::borrow_raw(d.as_raw_fd()) };
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            f(n, e.file_type(), dfd);
        }
    }
    Ok(())
}

/// What [`walk`] finds.
pub enum Walked<'a> {
    /// A folder, reported before its entries.
    Dir(&'a RelPath),
    /// A regular file: the open folder it is in, its name there, its path and its stat.
    File {
        dir: BorrowedFd<'a>,
        name: &'a str,
        path: RelPath,
        st: &'a libc::stat,
    },
}

/// Walks `rel` and, for a folder, everything below it, a folder at a time, never following a
/// symlink: `f` sees each folder and regular file as it is read, so the walk holds only the
/// folders still to visit. Names that are not UTF-8 or not valid paths, and entries gone
/// meanwhile, are passed over; `rel` neither a folder nor a regular file is `EINVAL`. Returns
/// whether `rel` is a folder.
pub fn walk(
    root: BorrowedFd<'_>,
    rel: &RelPath,
    f: &mut dyn FnMut(Walked<'_>),
) -> io::Result<bool> {
    let fd = open_beneath(root, rel, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    let st = fstat(fd.as_fd())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let (dir, name) = open_parent(root, rel)?;
            f(Walked::File {
                dir: dir.as_fd(),
                name,
                path: rel.clone(),
                st: &st,
            });
            return Ok(false);
        }
        libc::S_IFDIR => {}
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
    let mut stack = vec![rel.clone()];
    while let Some(d) = stack.pop() {
        let dfd = open_beneath(root, &d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        f(Walked::Dir(&d));
        each_entry(dfd.as_fd(), &mut |raw, _, dir| {
            let Ok(name) = std::str::from_utf8(raw) else {
                return;
            };
            let Ok(path) = d.join(name) else { return };
            let Ok(st) = stat_at(dir, name) else {
                return; // gone meanwhile
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => stack.push(path),
                libc::S_IFREG => f(Walked::File {
                    dir,
                    name,
                    path,
                    st: &st,
                }),
                _ => {}
            }
        })?;
    }
    Ok(true)
}

/// Names in an open directory (without `.` and `..`), as raw bytes.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    each_entry(dir, &mut |n, _, _| out.push(n.to_vec()))?;
    Ok(out)
}

/// The names in a directory with whether each is a folder (`None`: neither a folder nor a
/// regular file), from the directory's own entry types (a stat only where the filesystem
/// does not give one).
pub fn read_dir_kinds(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Option<bool>)>> {
    use nix::dir::Type;
    let mut out = Vec::new();
    each_entry(dir, &mut |n, t, dfd| {
        let kind = match t {
            Some(Type::Directory) => Some(true),
            Some(Type::File) => Some(false),
            Some(_) => None,
            None => std::str::from_utf8(n)
                .ok()
                .and_then(|name| stat_at(dfd, name).ok())
                .and_then(|st| match st.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => Some(true),
                    libc::S_IFREG => Some(false),
                    _ => None,
                }),
        };
        out.push((n.to_vec(), kind));
    })?;
    Ok(out)
}

/// Calls `f(dir_fd, name, path)` for every regular file below `dir` (depth first), opening
/// only directories, never the files themselves (opening a placeholder raises an event).
pub fn walk_files(
    root: BorrowedFd<'_>,
    dir: &RelPath,
    f: &mut dyn FnMut(BorrowedFd<'_>, &str, &RelPath) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let dfd = open_beneath(root, &d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for raw in read_dir_names(dfd.as_fd())? {
            let Ok(name) = std::str::from_utf8(&raw) else {
                continue;
            };
            let Ok(p) = d.join(name) else { continue };
            let st = stat_at(dfd.as_fd(), name)?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => stack.push(p),
                libc::S_IFREG => f(dfd.as_fd(), name, &p)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Free bytes on the disk holding `path`, as the caller sees them (`statvfs`'s available
/// blocks: what an unprivileged user may still write).
pub fn free_space(path: &str) -> Option<u64> {
    let v = nix::sys::statvfs::statvfs(path).ok()?;
    Some(v.blocks_available().saturating_mul(v.fragment_size()))
}

pub fn mtime_of(st: &libc::stat) -> SystemTime {
    crate::model::from_unix_secs(st.st_mtime)
        + std::time::Duration::from_nanos(st.st_mtime_nsec as u64)
}

/// Reads extended attribute `name` of `fd` into `buf`: the value's length, or `None` when the
/// file has no such attribute (or the filesystem no xattrs).
pub fn get_xattr(fd: BorrowedFd<'_>, name: &str, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let c = cstr(name)?;
    // SAFETY: buf is writable for its length; c is a valid C string.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// Sets extended attribute `name` of `fd`.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &str, v: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid pointers and lengths.
    if unsafe { libc::fsetxattr(fd.as_raw_fd(), c.as_ptr(), v.as_ptr().cast(), v.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes extended attribute `name` of `fd`; a missing one is not an error.
pub fn remove_xattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid fd and C string.
    if unsafe { libc::fremovexattr(fd.as_raw_fd(), c.as_ptr()) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENODATA) {
            return Err(e);
        }
    }
    Ok(())
}

/// Starts writeback of all of `fd`'s dirty pages and waits for it to finish
/// (`sync_file_range` with WAIT_BEFORE | WRITE | WAIT_AFTER): the data is on the device, with
/// no journal commit forced.
pub fn write_out(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscall on a valid descriptor.
    if unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn symlinks_and_escapes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("root")).unwrap();
        std::fs::write(t.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink("../secret", t.path().join("root/link")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("root/abs")).unwrap();
        std::fs::write(t.path().join("root/ok"), b"y").unwrap();
        let root = std::fs::File::open(t.path().join("root")).unwrap();
        let r = root.as_fd();
        assert!(open_beneath(r, &RelPath::parse("ok").unwrap(), libc::O_RDONLY, 0).is_ok());
        let e = open_beneath(r, &RelPath::parse("link").unwrap(), libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = open_beneath(
            r,
            &RelPath::parse("abs/etc/passwd").unwrap(),
            libc::O_RDONLY,
            0,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
}

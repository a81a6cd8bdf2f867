//! Pin settings of folders (`trusted.skyfill.pin` on the directory; files carry theirs in
//! their record), the inheritance rule (nearest explicit setting up to the root wins), and
//! stripping every Skyfill attribute when a root is removed. Settings live on the files so
//! they survive restarts and a lost index; `trusted.*` keeps users from forging them.

use super::meta::{Pin, META_XATTR, USER_XATTR};
use crate::fsutil;
use crate::model::RelPath;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

pub const DIR_PIN_XATTR: &str = "trusted.skyfill.pin";

fn c(s: &str) -> CString {
    CString::new(s).expect("static name")
}

/// The setting written on a directory (`dir` must be a real, not O_PATH, descriptor).
pub fn dir_setting(dir: BorrowedFd<'_>) -> io::Result<Pin> {
    let mut buf = [0u8; 32];
    let n = match fsutil::get_xattr(dir, DIR_PIN_XATTR, &mut buf) {
        Ok(n) => n,
        // Longer than any setting we write: not ours to interpret.
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => None,
        Err(e) => return Err(e),
    };
    Ok(match n.map(|n| &buf[..n]) {
        Some(b"pinned") => Pin::Pinned,
        Some(b"online-only") => Pin::OnlineOnly,
        _ => Pin::Inherit,
    })
}

/// Writes (or, for `Inherit`, removes) a directory's setting.
pub fn set_dir_setting(dir: BorrowedFd<'_>, p: Pin) -> io::Result<()> {
    match p {
        Pin::Inherit => fsutil::remove_xattr(dir, DIR_PIN_XATTR),
        Pin::Pinned => fsutil::set_xattr(dir, DIR_PIN_XATTR, b"pinned"),
        Pin::OnlineOnly => fsutil::set_xattr(dir, DIR_PIN_XATTR, b"online-only"),
    }
}

/// The setting new children of `dir` take: the nearest explicit setting from `dir` up to the
/// root, `Inherit` when there is none.
pub fn inherited(root: BorrowedFd<'_>, dir: &RelPath) -> io::Result<Pin> {
    let mut d = Some(dir.clone());
    while let Some(cur) = d {
        let fd = fsutil::open_beneath(root, &cur, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let p = dir_setting(fd.as_fd())?;
        if p != Pin::Inherit {
            return Ok(p);
        }
        d = cur.parent();
    }
    Ok(Pin::Inherit)
}

/// Removes every Skyfill attribute of `name` in `dir` (without following a symlink).
pub fn strip_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let p = c(&format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name));
    for n in [META_XATTR, USER_XATTR, DIR_PIN_XATTR] {
        // SAFETY: valid C strings; lremovexattr does not open (or follow) the file.
        let r = unsafe { libc::lremovexattr(p.as_ptr(), c(n).as_ptr()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            ) {
                return Err(e);
            }
        }
    }
    Ok(())
}

//! Who is accessing a file: a process's executable name and uid, and whether it holds the
//! file open for writing (read from `/proc/PID` beneath one opened fd). Writers get the whole
//! file before their first write goes on; the owner's policy may refuse some programs.

use super::policy::Proc;
use crate::fsutil;
use crate::model::RelPath;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Most fds of one process whose fdinfo is read to find a writer.
const MAX_FDS_SCANNED: usize = 65_536;

/// [`proc_info`] for an access: the executable name alone is one cheap `readlink` and is read
/// here; the writer scan (one file per fd of the process) runs on a blocking thread, so it
/// never holds up the threads that answer the kernel.
pub async fn proc_info_for(pid: i32, ino: u64, want_writer: bool) -> Proc {
    if !want_writer {
        return proc_info(pid, ino, false);
    }
    tokio::task::spawn_blocking(move || proc_info(pid, ino, true))
        .await
        .unwrap_or(Proc {
            writer: true,
            ..Proc::default()
        })
}

/// Executable name, uid, and whether `pid` holds inode `ino` open for writing. `/proc/PID`
/// is opened once; everything else is read beneath that fd.
pub fn proc_info(pid: i32, ino: u64, want_writer: bool) -> Proc {
    let is_daemon = pid as u32 == std::process::id();
    let Ok(dir) = std::fs::File::open(format!("/proc/{pid}")) else {
        return Proc {
            is_daemon,
            ..Proc::default()
        };
    };
    let dfd = dir.as_fd();
    let uid = fsutil::fstat(dfd).ok().map(|st| st.st_uid);
    let mut buf = [0u8; 4096];
    // SAFETY: valid fd, NUL-terminated name, and a buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dfd.as_raw_fd(),
            c"exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let exe = if n > 0 {
        let target = &buf[..n as usize];
        let name = target.rsplit(|&b| b == b'/').next().unwrap_or(target);
        String::from_utf8_lossy(name).into_owned()
    } else {
        String::new()
    };
    let mut writer = false;
    if want_writer && !is_daemon {
        writer = holds_for_writing(dfd, ino);
    }
    Proc {
        exe,
        writer,
        is_daemon,
        uid,
    }
}

/// Whether any fd in `/proc/PID/fdinfo` (beneath `proc_dir`) is inode `ino` opened for writing.
/// A process with more than [`MAX_FDS_SCANNED`] fds counts as a writer: it gets the whole file
/// (always correct), and nobody can make the daemon scan without end.
fn holds_for_writing(proc_dir: BorrowedFd<'_>, ino: u64) -> bool {
    let Ok(rel) = RelPath::parse("fdinfo") else {
        return false;
    };
    let Ok(fdinfo) = fsutil::open_beneath(proc_dir, &rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
    else {
        return false;
    };
    let Ok(names) = fsutil::read_dir_names(fdinfo.as_fd()) else {
        return false;
    };
    if names.len() > MAX_FDS_SCANNED {
        return true;
    }
    for raw in names {
        let Ok(name) = std::str::from_utf8(&raw) else {
            continue;
        };
        let Ok(p) = RelPath::parse(name) else {
            continue;
        };
        let Ok(fd) = fsutil::open_beneath(fdinfo.as_fd(), &p, libc::O_RDONLY, 0) else {
            continue;
        };
        let mut info = String::new();
        if std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut info).is_err() {
            continue;
        }
        let mut flags = 0u32;
        let mut this = false;
        for l in info.lines() {
            if let Some(v) = l.strip_prefix("flags:") {
                flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("ino:") {
                this = v.trim().parse::<u64>().ok() == Some(ino);
            }
        }
        if this && (flags as i32 & libc::O_ACCMODE) != libc::O_RDONLY {
            return true;
        }
    }
    false
}

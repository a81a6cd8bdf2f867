//! systemd's file-descriptor store for the keeper: hand the fanotify group to the service
//! manager (`FDSTORE=1`) and take it back on the next start (`LISTEN_FDS`), so a restart of the
//! whole service — not only of the worker — keeps marks and queued events alive and readers
//! wait instead of reading zeros. Outside systemd (no `NOTIFY_SOCKET`) everything here is a
//! no-op. The wire format is the one `sd_notify(3)` and `sd_listen_fds(3)` document.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The name the keeper stores its group under (`FDNAME=`).
pub const GROUP_NAME: &str = "fanotify";

/// First descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes the descriptor stored as `name` from a previous run, if systemd passed it: checks
/// `LISTEN_PID` is us, finds `name` in `LISTEN_FDNAMES`, and checks the descriptor really is a
/// fanotify group. Every other passed descriptor is closed. Clears the variables so no child
/// inherits them.
pub fn take(name: &str) -> Option<OwnedFd> {
    take_from(name, &mut |v| {
        let x = std::env::var(v).ok();
        std::env::remove_var(v);
        x
    })
}

/// `take`, with `var(v)` reading and clearing a passed variable (the process environment
/// in `take`; tests pass their own, since changing the environment of a multi-threaded
/// process races with every thread that reads it).
fn take_from(name: &str, var: &mut dyn FnMut(&str) -> Option<String>) -> Option<OwnedFd> {
    let (pid, n, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    let (pid, names) = (pid?, names.unwrap_or_default());
    let n: RawFd = n?.parse().ok()?;
    if pid.parse::<u32>().ok()? != std::process::id() || !(0..=64).contains(&n) {
        return None;
    }
    let names: Vec<&str> = names.split(':').collect();
    let mut found = None;
    for i in 0..n {
        let fd = LISTEN_FDS_START + i;
        if !is_open(fd) {
            // A manager that counted wrong (or a descriptor closed on exec): nothing to own,
            // and wrapping it would close whatever this process opens there later.
            tracing::warn!(fd, "the fd store named a descriptor that is not open");
            continue;
        }
        // SAFETY: systemd passed descriptors LISTEN_FDS_START.. to this pid and `fd` is open.
        // (Were one of them closed at exec, a descriptor this process opened since, such as
        // the journal's socket, could sit at its number: `take` should run before anything
        // opens one; see the closing note of stop 30.)
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(fd);
        if found.is_none() && names.get(i as usize) == Some(&name) && is_fanotify(fd) {
            found = Some(owned);
        } else {
            tracing::warn!(fd, "closing an unexpected descriptor from the fd store");
        }
    }
    found
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFD);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC);
        }
    }
}

fn is_fanotify(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|l| l.as_os_str() == "anon_inode:[fanotify]")
        .unwrap_or(false)
}

/// Sends `state` (e.g. `READY=1`) to the service manager, with `fds` attached when given.
/// Returns Ok(false) when not running under a manager that listens.
pub fn notify(state: &str, fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET"), state, fds)
}

/// `notify` to the socket `NOTIFY_SOCKET` names (`None`: no manager listens).
fn notify_to(
    socket_name: Option<std::ffi::OsString>,
    state: &str,
    fds: &[BorrowedFd<'_>],
) -> io::Result<bool> {
    use nix::sys::socket::{
        sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    let Some(path) = socket_name else {
        return Ok(false);
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.first() {
        Some(b'@') => UnixAddr::new_abstract(&bytes[1..]),
        Some(b'/') => UnixAddr::new(path.as_os_str()),
        _ => {
            return Err(io::Error::other(format!(
                "NOTIFY_SOCKET {path:?} is neither a path nor an abstract name"
            )))
        }
    }
    .map_err(io::Error::from)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [io::IoSlice::new(state.as_bytes())];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)?;
    Ok(true)
}

/// Stores `fd` under `name` (needs `FileDescriptorStoreMax=` ≥ 1 in the unit).
pub fn store(fd: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    notify(&store_message(name), &[fd])
}

fn store_message(name: &str) -> String {
    format!("FDSTORE=1\nFDNAME={name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn notify_sends_state_and_rights_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        // The socket is passed, not set in the environment (other tests' threads read it).
        assert!(notify_to(Some(p.into()), &store_message("fanotify"), &[f.as_fd()]).unwrap());
        let mut buf = [0u8; 128];
        let mut cbuf = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut cbuf),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let got: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(v) => v,
                _ => vec![],
            })
            .collect();
        let n = msg.bytes;
        assert_eq!(got.len(), 1);
        // SAFETY: received just now.
        drop(unsafe { OwnedFd::from_raw_fd(got[0]) });
        assert_eq!(&buf[..n], b"FDSTORE=1\nFDNAME=fanotify");
    }

    #[test]
    fn take_ignores_descriptors_meant_for_another_pid() {
        // LISTEN_PID of another process: nothing is taken and nothing is closed.
        // Its own environment, cleared as `take` clears the process's.
        let mut env: std::collections::HashMap<&str, &str> = [
            ("LISTEN_PID", "1"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "fanotify"),
        ]
        .into();
        assert!(take_from("fanotify", &mut |v| env.remove(v).map(String::from)).is_none());
        assert!(env.is_empty(), "variables left for children: {env:?}");
        assert!(!is_fanotify(0));
    }
}

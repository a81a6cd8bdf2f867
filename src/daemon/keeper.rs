//! The keeper: a tiny process that owns the fanotify group and the socket, parks a copy of
//! the group with the service manager, and restarts the worker. When the worker dies, the
//! keeper's copy of the group keeps marks and pending events alive, so readers wait for the
//! next worker instead of reading zeros.

use super::journal::Journal;
use super::{fdstore, Options, GROUP_FD, LISTEN_FD};
use crate::hsm::fanotify::{Group, Reply};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Runs the keeper: creates the group and the socket, then runs workers until SIGTERM/SIGINT.
pub fn run_keeper(opts: &Options) -> io::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)?;
    let group = match fdstore::take(fdstore::GROUP_NAME) {
        Some(fd) => {
            tracing::info!("took the fanotify group back from the service manager's fd store");
            // SAFETY: `take` checked that the descriptor is a fanotify group and gave it to us.
            unsafe { Group::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) }
        }
        None => Group::new().map_err(|e| {
            other(format!(
                "cannot create a fanotify pre-content group ({e}); skyfilld needs root and Linux >= 6.14"
            ))
        })?,
    };
    let listener = bind_socket(&opts.socket)?;
    // Under systemd, park a copy of the group in the fd store: if this whole service dies or
    // restarts, marks and queued events survive and the next keeper answers them.
    let stored = match fdstore::store(group.as_fd(), fdstore::GROUP_NAME) {
        Ok(true) => {
            tracing::info!("fanotify group kept in the service manager's fd store");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!("cannot store the fanotify group with the service manager: {e}");
            false
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let mut child = spawn_worker(opts, group.as_fd(), listener.as_fd())?;
            tracing::info!(pid = child.id(), "worker started");
            // The socket is bound and a worker will accept on it: ready for Type=notify.
            let _ = fdstore::notify("READY=1", &[]);
            tokio::select! {
                st = child.wait() => {
                    let st = st?;
                    tracing::warn!(status = %st, "worker exited; restarting (readers wait meanwhile)");
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                _ = term.recv() => { stop(&mut child).await; fail_closed(&group, &opts.state_dir, !stored); break; }
                _ = int.recv() => { stop(&mut child).await; fail_closed(&group, &opts.state_dir, !stored); break; }
            }
        }
        let _ = std::fs::remove_file(&opts.socket);
        tracing::info!("stopped; marks are gone with the group; the kernel gate, where active, refuses placeholders until the next start (doc/SEMANTICS.md)");
        Ok::<(), io::Error>(())
    })
}

/// An orderly stop, once the worker is gone: every event still waiting (those the worker had
/// taken, by the numbers in its journal, and those never read) is refused with EAGAIN: closing
/// the group would let them through, and their readers would see zeros. With `flush` (no
/// service manager keeps a copy of the group, so it closes with us) the marks go first, so no
/// new event arrives meanwhile; under systemd the marks stay with the stored group (on a
/// restart, new readers wait for the next worker).
fn fail_closed(group: &Group, state_dir: &Path, flush: bool) {
    if flush {
        if let Err(e) = group.flush_marks() {
            tracing::warn!(error = %e, "cannot remove the marks before stopping");
        }
    }
    let refuse = Reply::Deny(libc::EAGAIN);
    let mut refused = 0usize;
    match Journal::open(&state_dir.join("inflight.log")) {
        Ok((journal, pending)) => {
            for p in pending {
                if group.respond_raw(p.fd, refuse).is_ok() {
                    refused += 1;
                }
                journal.done(p.fd);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the worker's in-flight journal"),
    }
    loop {
        match group.read_events() {
            Ok(evs) if !evs.is_empty() => {
                for ev in &evs {
                    if group.respond(ev, refuse).is_ok() {
                        refused += 1;
                    }
                }
            }
            _ => break,
        }
    }
    tracing::info!(
        refused,
        "refused the accesses still waiting (EAGAIN), so none reads zeros"
    );
}

async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

pub(super) fn bind_socket(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(other(format!(
            "another skyfilld is serving {}",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    // Anyone may connect; every request is authorized by the peer's uid. The socket is made
    // 0666 by the umask at bind (the keeper is single-threaded here), never chmodded by name.
    // SAFETY: umask only changes this process's creation mask.
    let old = unsafe { libc::umask(0o111) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    l.map_err(|e| other(format!("cannot bind {}: {e}", path.display())))
}

fn spawn_worker(
    opts: &Options,
    group: BorrowedFd<'_>,
    listener: BorrowedFd<'_>,
) -> io::Result<tokio::process::Child> {
    let exe = std::env::current_exe()?;
    let (g, l) = (group.as_raw_fd(), listener.as_raw_fd());
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--worker")
        .arg("--socket")
        .arg(&opts.socket)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(g, GROUP_FD), (l, LISTEN_FD)] {
                if from == to {
                    let fl = libc::fcntl(to, libc::F_GETFD);
                    libc::fcntl(to, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
                } else if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

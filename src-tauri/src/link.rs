//! A subscription to skyfilld's events, over the shared protocol (`skyfill::ipc`): one
//! long-lived connection, made again whenever it ends. It only announces, to the sink its
//! program gives: each daemon event and each change of the connection ([`Signal`]); the window
//! forwards them to its page (`ui/public/src/api.js`), the tray process (`panel.rs`) to its icon,
//! menu and notifications. It tells the request handle ([`Daemon`]) whether the daemon is
//! connected. On every (re)connection the secrets kept in the user's keyring are handed to the
//! daemon for roots that need sign-in.
//!
//! Connecting and the handshake have the client's default bounds
//! (`skyfill::ipc::client::Timeouts`). The subscription waits for events as long as it takes
//! (they may be rare); after [`QUIET`] without one it only checks, on a second connection,
//! that the daemon still answers.

use crate::daemon::{self, Connection, Daemon};
use skyfill::credentials;
use skyfill::ipc::client::{Client, ClientError};
use skyfill::ipc::proto::{Event, RootInfo};
use skyfill::remote::RemoteSpec;
use skyfill::t;
use std::time::Duration;

/// What the subscription announces.
#[derive(Debug, Clone)]
pub enum Signal {
    Event(Event),
    Connection(Connection),
}

/// Where the announcements go (called on the subscription's thread).
pub type Sink = Box<dyn Fn(Signal) + Send + 'static>;

pub fn spec_of(r: &RootInfo) -> RemoteSpec {
    RemoteSpec {
        url: r.remote.clone(),
        user: r.user.clone(),
        endpoint: None,
        region: None,
        path_style: false,
    }
}

/// Hands the keyring's secrets to the daemon for roots that need sign-in.
fn resend_secrets(c: &mut Client) {
    let Ok(roots) = c.roots() else {
        return;
    };
    for r in roots.iter().filter(|r| !r.signed_in) {
        match credentials::load(&spec_of(r)) {
            Ok(Some(secret)) => {
                let res = c.login(&r.local, &secret, r.secret_persisted);
                tracing::info!(root = %r.local, ok = res.is_ok(), "secret from the keyring handed to the daemon");
            }
            Ok(None) => tracing::info!(root = %r.local, "no secret in the keyring"),
            Err(e) => tracing::warn!(root = %r.local, error = %e, "keyring unavailable"),
        }
    }
}

fn set(d: &Daemon, sink: &Sink, c: Connection) {
    d.set_connection(c.clone());
    sink(Signal::Connection(c));
}

/// How long the subscription waits for an event before it checks that the daemon still
/// answers (it keeps waiting when it does).
pub const QUIET: Duration = Duration::from_secs(60);

/// What the subscription does after waiting for an event: handle it, wait on (a quiet but
/// answering daemon), or end (the daemon closed the connection or no longer answers).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Event,
    Wait,
    End,
}

/// Decides what a subscription's wait for an event means; `answers` asks the daemon.
pub fn after_wait(r: &Result<Event, ClientError>, answers: impl FnOnce() -> bool) -> Next {
    match r {
        Ok(_) => Next::Event,
        Err(ClientError::Timeout(_)) if answers() => Next::Wait,
        Err(_) => Next::End,
    }
}

/// Keeps the subscription alive for the program's whole life.
pub fn spawn(d: Daemon, sink: Sink) {
    std::thread::spawn(move || loop {
        run_once(&d, &sink);
        std::thread::sleep(Duration::from_secs(2));
    });
}

fn run_once(d: &Daemon, sink: &Sink) {
    let mut c = match daemon::connect(d.socket()) {
        Ok(c) => c,
        Err(e) => {
            set(
                d,
                sink,
                Connection {
                    connected: false,
                    message: Some(daemon::explain(&e)),
                    daemon: None,
                },
            );
            return;
        }
    };
    resend_secrets(&mut c);
    if let Err(e) = c.subscribe() {
        tracing::warn!(error = %e, "cannot subscribe");
        return;
    }
    set(
        d,
        sink,
        Connection {
            connected: true,
            message: None,
            daemon: Some(c.hello.daemon.clone()),
        },
    );
    // Events may be rare: a quiet connection is fine as long as the daemon answers.
    c.set_event_timeout(Some(QUIET));
    let hung = loop {
        let r = c.next_event();
        match after_wait(&r, || c.daemon_answers()) {
            Next::Event => {
                if let Ok(ev) = r {
                    sink(Signal::Event(ev))
                }
            }
            Next::Wait => {}
            Next::End => {
                let e = r.err();
                tracing::info!(error = ?e, "daemon connection ended");
                break matches!(e, Some(ClientError::Timeout(_)));
            }
        }
    };
    set(
        d,
        sink,
        Connection {
            connected: false,
            message: Some(if hung {
                t!("The Skyfill daemon does not answer. Restart it with: sudo systemctl restart skyfilld")
            } else {
                t!("The Skyfill daemon stopped. It restarts by itself under systemd; otherwise start it with: sudo systemctl start skyfilld")
            }),
            daemon: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_subscription_waits_while_the_daemon_answers() {
        let ev = Ok(Event::Lagged { missed: 1 });
        assert_eq!(after_wait(&ev, || panic!("no check needed")), Next::Event);
        let quiet = Err(ClientError::Timeout(QUIET));
        assert_eq!(after_wait(&quiet, || true), Next::Wait);
        assert_eq!(after_wait(&quiet, || false), Next::End);
        assert_eq!(after_wait(&Err(ClientError::Closed), || true), Next::End);
    }
}

//! The app's link to skyfilld, over the shared protocol (`skyfill::ipc`): one long-lived
//! subscription (events go to the window as "daemon" events and to the tray), and a short
//! connection per command. On every (re)connection the secrets kept in the user's keyring are
//! handed to the daemon for roots that need sign-in.
//!
//! Every connection has the client's default bounds (`skyfill::ipc::client::Timeouts`):
//! connecting, the handshake and each request give up when the daemon stays silent, so a hung
//! daemon never blocks a command for good. The subscription waits for events as long as it
//! takes (they may be rare); after [`QUIET`] without one it only checks, on a second
//! connection, that the daemon still answers.

use serde::Serialize;
use skyfill::credentials;
use skyfill::ipc::client::{Client, ClientError};
use skyfill::ipc::proto::{ErrorCode, Event, RequestBody, RootInfo, PROTOCOL_VERSION};
use skyfill::remote::RemoteSpec;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tauri::{AppHandle, Emitter, Manager};

/// What the window shows about the daemon connection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    pub connected: bool,
    /// Plain words, with how to fix it, when not connected.
    pub message: Option<String>,
    pub daemon: Option<String>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            connected: false,
            message: Some("Connecting to the Skyfill daemon…".into()),
            daemon: None,
        }
    }
}

#[derive(Default)]
pub struct Shared {
    pub conn: Mutex<Connection>,
}

/// The daemon's socket: `SKYFILL_SOCKET`, else the system one.
pub fn socket() -> PathBuf {
    std::env::var_os("SKYFILL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/skyfill/skyfill.sock"))
}

/// What to tell the user when the daemon cannot be used.
pub fn explain(e: &ClientError) -> String {
    match e {
        ClientError::Connect { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "The Skyfill daemon is not running. Start it with: sudo systemctl start skyfilld"
                    .into()
            }
            std::io::ErrorKind::PermissionDenied => {
                "You may not use the Skyfill daemon's socket. Check that it runs and that /run/skyfill is reachable.".into()
            }
            _ => format!("Cannot reach the Skyfill daemon: {source}"),
        },
        ClientError::Daemon {
            code: ErrorCode::VersionMismatch,
            message,
        } => format!(
            "The Skyfill daemon speaks another protocol version ({message}). Update Skyfill so the app and the daemon match."
        ),
        ClientError::Timeout(d) => format!(
            "The Skyfill daemon did not answer within {} s. Restart it with: sudo systemctl restart skyfilld",
            d.as_secs().max(1)
        ),
        other => format!("The Skyfill daemon: {other}"),
    }
}

/// A connection for one command; errors in plain words.
pub fn client() -> Result<Client, String> {
    let c = Client::connect(&socket(), "skyfill-tray").map_err(|e| explain(&e))?;
    if c.hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "The Skyfill daemon speaks protocol {} and this app {}. Update Skyfill so they match.",
            c.hello.version, PROTOCOL_VERSION
        ));
    }
    Ok(c)
}

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
    let Ok(v) = c.call(RequestBody::Roots) else {
        return;
    };
    let roots: Vec<RootInfo> = serde_json::from_value(v).unwrap_or_default();
    for r in roots.iter().filter(|r| !r.signed_in) {
        match credentials::load(&spec_of(r)) {
            Ok(Some(secret)) => {
                let res = c.call(RequestBody::Login {
                    local: r.local.clone(),
                    secret,
                    persist: r.secret_persisted,
                });
                tracing::info!(root = %r.local, ok = res.is_ok(), "secret from the keyring handed to the daemon");
            }
            Ok(None) => tracing::info!(root = %r.local, "no secret in the keyring"),
            Err(e) => tracing::warn!(root = %r.local, error = %e, "keyring unavailable"),
        }
    }
}

fn set(app: &AppHandle, c: Connection) {
    let st = app.state::<Shared>();
    *st.conn.lock().unwrap() = c.clone();
    let _ = app.emit("connection", &c);
    crate::tray::refresh(app);
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

/// Keeps the subscription alive for the app's whole life.
pub fn spawn(app: AppHandle) {
    std::thread::spawn(move || loop {
        run_once(&app);
        std::thread::sleep(Duration::from_secs(2));
    });
}

fn run_once(app: &AppHandle) {
    let mut c = match client() {
        Ok(c) => c,
        Err(message) => {
            set(
                app,
                Connection {
                    connected: false,
                    message: Some(message),
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
        app,
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
                    on_event(app, &ev)
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
        app,
        Connection {
            connected: false,
            message: Some(if hung {
                "The Skyfill daemon does not answer. Restart it with: sudo systemctl restart skyfilld".into()
            } else {
                "The Skyfill daemon stopped. It restarts by itself under systemd; otherwise start it with: sudo systemctl start skyfilld".into()
            }),
            daemon: None,
        },
    );
}

fn on_event(app: &AppHandle, ev: &Event) {
    let _ = app.emit("daemon", ev);
    crate::tray::on_event(app, ev);
    crate::notify::on_event(app, ev);
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

    #[test]
    fn silent_and_mismatched_daemons_are_explained() {
        let e = explain(&ClientError::Timeout(Duration::from_secs(30)));
        assert!(e.contains("did not answer within 30 s"), "{e}");
        assert!(e.contains("systemctl restart skyfilld"), "{e}");
        let e = explain(&ClientError::Daemon {
            code: ErrorCode::VersionMismatch,
            message: "daemon speaks protocol 2, client 1".into(),
        });
        assert!(e.contains("another protocol version"), "{e}");
    }
}

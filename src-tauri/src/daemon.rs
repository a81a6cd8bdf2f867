//! The app's one handle on skyfilld for requests: a long-lived connection over the shared
//! protocol (`skyfill::ipc`), re-established when the daemon went away, and the typed calls the
//! window (`commands.rs`), the tray process (`panel.rs`) and the wizard (`wizard.rs`) make. Failures are
//! [`ApiError`]s: the daemon's error code (or `unreachable`) and plain words.
//!
//! One connection is kept between calls, so a command (or a batch over many paths) costs no
//! connection and no handshake. A call made while another one holds it (a long download, say)
//! opens its own connection, dropped afterwards, so a listing never waits for a download. When
//! the kept connection turns out closed (the daemon restarted since), the call is sent once
//! more on a new connection; a call that fails on a fresh connection is reported as it is, since
//! the daemon may have done part of it. Every connection has the client's default bounds
//! (`skyfill::ipc::client::Timeouts`), so a hung daemon never blocks a call for good.
//!
//! Calls block (the client does); [`Daemon::run`] moves one off the async runtime. The
//! subscription (`link.rs`) has a connection of its own; it tells this handle whether the daemon
//! is connected ([`Connection`]). The window forwards that to its page as the [`CONNECTION`]
//! event, and daemon events as [`EVENTS`].

use serde::{Deserialize, Serialize, Serializer};
use skyfill::ipc::client::{setting_value, Client, ClientError};
use skyfill::ipc::proto::{
    AddRootResult, BatchResult, ConfigResult, ErrorCode, Page, PageOrder, PathStatus, PinSetting,
    RemoveMode, RemoveResult, RequestBody, RootInfo, SyncResult, PROTOCOL_VERSION,
};
use skyfill::remote::RemoteSpec;
use skyfill::t;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The app event carrying each daemon event (`skyfill::ipc::proto::Event`) to the window and
/// to the tray's own listeners.
pub const EVENTS: &str = "daemon";
/// The app event carrying each change of the [`Connection`].
pub const CONNECTION: &str = "connection";

/// What the window and the tray show about the daemon connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
            message: Some(t!("Connecting to the Skyfill daemon…")),
            daemon: None,
        }
    }
}

/// What a failure is about: the daemon's error code, or `unreachable` when the daemon cannot
/// be reached (not running, not answering, gone mid-request). Serialized as one string
/// (`"not_a_root"`, `"auth"`, `"unreachable"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Daemon(ErrorCode),
    Unreachable,
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Code::Daemon(c) => c.serialize(s),
            Code::Unreachable => s.serialize_str("unreachable"),
        }
    }
}

/// A failed command as the window gets it: `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: Code,
    /// Plain words, with what to do when the app knows it.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code: Code::Daemon(code),
            message: message.into(),
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        ApiError {
            code: Code::Unreachable,
            message: message.into(),
        }
    }

    /// A request the app could not even make (a bad value typed, an unknown action).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// The server failed or could not be reached (the wizard's own requests).
    pub fn remote(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Remote, message)
    }

    /// Something on this computer failed (a program that would not start, the keyring).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Daemon {
                code: ErrorCode::VersionMismatch,
                ..
            } => ApiError::new(ErrorCode::VersionMismatch, explain(&e)),
            ClientError::Daemon { code, message } => ApiError::new(code, message),
            ClientError::Decode(e) => {
                ApiError::internal(format!("unexpected answer from the daemon: {e}"))
            }
            other => ApiError::unreachable(explain(&other)),
        }
    }
}

/// What the tray app's commands return.
pub type Res<T> = Result<T, ApiError>;

/// The daemon's socket: `SKYFILL_SOCKET`, else the system one.
pub fn socket() -> PathBuf {
    std::env::var_os("SKYFILL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/skyfill/skyfill.sock"))
}

/// What to tell the user when the daemon cannot be used.
pub fn explain(e: &ClientError) -> String {
    match e {
        ClientError::Connect { error, .. } => match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                t!("The Skyfill daemon is not running. Start it with: sudo systemctl start skyfilld")
            }
            std::io::ErrorKind::PermissionDenied => {
                t!("You may not use the Skyfill daemon's socket. Check that it runs and that /run/skyfill is reachable.")
            }
            _ => t!("Cannot reach the Skyfill daemon: {error}", error = error),
        },
        ClientError::Daemon {
            code: ErrorCode::VersionMismatch,
            message,
        } => t!(
            "The Skyfill daemon speaks another protocol version ({message}). Update Skyfill so the app and the daemon match.",
            message = message
        ),
        ClientError::Timeout(d) => t!(
            "The Skyfill daemon did not answer within {s} s. Restart it with: sudo systemctl restart skyfilld",
            s = d.as_secs().max(1)
        ),
        other => t!("The Skyfill daemon: {error}", error = other),
    }
}

/// A new connection (handshake done), refused when the daemon speaks another protocol.
pub fn connect(socket: &Path) -> Result<Client, ClientError> {
    let c = Client::connect(socket, "skyfill-tray")?;
    if c.hello.version != PROTOCOL_VERSION {
        return Err(ClientError::Daemon {
            code: ErrorCode::VersionMismatch,
            message: format!(
                "the daemon speaks protocol {}, this app {PROTOCOL_VERSION}",
                c.hello.version
            ),
        });
    }
    Ok(c)
}

/// The connection was closed under the call (the daemon restarted or went away).
fn connection_lost(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(_) | ClientError::Closed)
}

/// The request for one window or tray action on one path.
pub fn action_request(action: &str, path: String) -> Res<RequestBody> {
    Ok(match action {
        "offline" => RequestBody::Pin {
            path,
            setting: PinSetting::Pinned,
            recursive: true,
        },
        "online-only" => RequestBody::Pin {
            path,
            setting: PinSetting::OnlineOnly,
            recursive: true,
        },
        "free" => RequestBody::Free {
            path,
            recursive: true,
        },
        "download" => RequestBody::Hydrate {
            path,
            recursive: true,
        },
        other => return Err(ApiError::bad_request(format!("unknown action {other}"))),
    })
}

struct Inner {
    socket: PathBuf,
    /// The connection kept between calls (taken by the call using it).
    kept: Mutex<Option<Client>>,
    conn: Mutex<Connection>,
}

/// The handle (cheap to clone; managed as Tauri state).
#[derive(Clone)]
pub struct Daemon(Arc<Inner>);

impl Daemon {
    pub fn new(socket: PathBuf) -> Self {
        Daemon(Arc::new(Inner {
            socket,
            kept: Mutex::new(None),
            conn: Mutex::new(Connection::default()),
        }))
    }

    pub fn socket(&self) -> &Path {
        &self.0.socket
    }

    /// Whether the subscription is connected, and what to say when not.
    pub fn connection(&self) -> Connection {
        self.0.conn.lock().unwrap().clone()
    }

    /// Set by the subscription (`link.rs`). When the daemon went away the kept connection is
    /// dropped too.
    pub fn set_connection(&self, c: Connection) {
        if !c.connected {
            self.0.kept.lock().unwrap().take();
        }
        *self.0.conn.lock().unwrap() = c;
    }

    /// Runs one call on the kept connection (or a new one), see the module's words on
    /// reconnection.
    pub fn call<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T, ClientError>) -> Res<T> {
        let kept = self.0.kept.lock().unwrap().take();
        let reused = kept.is_some();
        let mut c = match kept {
            Some(c) => c,
            None => connect(&self.0.socket)?,
        };
        let mut r = f(&mut c);
        if reused && matches!(&r, Err(e) if connection_lost(e)) {
            tracing::info!("the daemon closed the kept connection; reconnecting");
            c = connect(&self.0.socket)?;
            r = f(&mut c);
        }
        // A connection that answered (even with a refusal) is good for the next call.
        if matches!(&r, Ok(_) | Err(ClientError::Daemon { .. })) {
            let mut k = self.0.kept.lock().unwrap();
            if k.is_none() {
                *k = Some(c);
            }
        }
        r.map_err(ApiError::from)
    }

    /// Runs `f` off the async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Daemon) -> Res<T> + Send + 'static,
    ) -> Res<T> {
        let d = self.clone();
        tokio::task::spawn_blocking(move || f(&d))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    }

    pub fn roots(&self) -> Res<Vec<RootInfo>> {
        self.call(|c| c.roots())
    }

    pub fn status(&self, path: &str) -> Res<PathStatus> {
        self.call(|c| c.status(path))
    }

    pub fn list(&self, path: &str) -> Res<Vec<PathStatus>> {
        self.call(|c| c.list(path))
    }

    pub fn list_page(&self, path: &str, offset: u64, limit: u32, order: &PageOrder) -> Res<Page> {
        self.call(|c| c.list_page_in(path, offset, limit, order))
    }

    /// Make available offline / Free up space / Online-only / download on many files and
    /// folders, one request per path on the one connection; the results added up.
    pub fn act(&self, action: &str, paths: &[String]) -> Res<BatchResult> {
        let mut total = BatchResult::default();
        for p in paths {
            let body = action_request(action, p.clone())?;
            let r = self.call(|c| c.batch(body.clone(), &mut |_| {}))?;
            total.files += r.files;
            total.bytes += r.bytes;
            total.settings += r.settings;
            total.deferred |= r.deferred;
            total.skipped.extend(r.skipped);
        }
        Ok(total)
    }

    /// Pauses or resumes all of the user's roots.
    pub fn set_paused(&self, paused: bool) -> Res<Vec<RootInfo>> {
        self.call(|c| {
            if paused {
                c.pause(None)
            } else {
                c.resume(None)
            }
        })
    }

    pub fn sync(&self) -> Res<SyncResult> {
        self.call(|c| c.sync(None))
    }

    pub fn config_get(&self) -> Res<ConfigResult> {
        self.call(|c| c.config_get())
    }

    /// A setting as typed (`5M`, `10%`, `none`) or as the protocol's JSON (a list for
    /// never_download); `local` names the root for per-root settings.
    pub fn config_set(
        &self,
        key: &str,
        value: serde_json::Value,
        local: Option<&str>,
    ) -> Res<ConfigResult> {
        let (key, value) = match value {
            serde_json::Value::String(s) => {
                setting_value(key, &s).map_err(ApiError::bad_request)?
            }
            other => (key.replace('-', "_"), other),
        };
        self.call(|c| c.config_set(&key, value.clone(), local))
    }

    pub fn remove_root(&self, local: &str, mode: RemoveMode) -> Res<RemoveResult> {
        self.call(|c| {
            c.request(RequestBody::RemoveRoot {
                local: local.into(),
                mode,
            })
        })
    }

    /// Adds a root; the secret stays only in the daemon's memory (the app keeps it in the
    /// keyring and hands it over again on every reconnection).
    pub fn add_root(
        &self,
        local: &str,
        remote: &RemoteSpec,
        secret: Option<&str>,
    ) -> Res<AddRootResult> {
        self.call(|c| {
            c.request(RequestBody::AddRoot {
                local: local.into(),
                remote: remote.clone(),
                secret: secret.map(Into::into),
                persist_secret: false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// What a fake daemon does with one request line: answer it (`Some(line)`), or close the
    /// connection (`None`).
    type Answer = Option<serde_json::Value>;

    /// A fake daemon: `on(request, connection number)` answers each request but the hellos
    /// (answered with `version`). Returns the socket and the number of connections made.
    fn fake(
        version: u32,
        on: impl Fn(&serde_json::Value, usize) -> Answer + Send + Sync + 'static,
    ) -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("skyfill.sock");
        let l = UnixListener::bind(&p).unwrap();
        let on = Arc::new(on);
        let conns = Arc::new(AtomicUsize::new(0));
        let n = conns.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s): Result<UnixStream, _> = s else {
                    return;
                };
                let on = on.clone();
                let k = n.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::spawn(move || {
                    let r = BufReader::new(s.try_clone().unwrap());
                    for line in r.lines() {
                        let Ok(line) = line else { return };
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let out = if v["op"] == "hello" {
                            Some(serde_json::json!({"id": v["id"], "ok": true,
                                "result": {"version": version, "daemon": "fake"}}))
                        } else {
                            on(&v, k).map(|mut a| {
                                a["id"] = v["id"].clone();
                                a
                            })
                        };
                        match out {
                            Some(a) => writeln!(s, "{a}").unwrap(),
                            None => {
                                let _ = s.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        }
                    }
                });
            }
        });
        (d, p, conns)
    }

    fn ok(result: serde_json::Value) -> Answer {
        Some(serde_json::json!({"ok": true, "result": result}))
    }

    fn batch() -> serde_json::Value {
        serde_json::json!({"files": 2, "bytes": 10, "settings": 2, "skipped": []})
    }

    fn answer(v: &serde_json::Value) -> Answer {
        match v["op"].as_str() {
            Some("roots") => ok(serde_json::json!([])),
            Some("list") => ok(serde_json::json!([{"path": "/c/a", "kind": "file",
                "state": "online-only", "sync": "synced", "size": 3, "local_bytes": 0,
                "setting": "inherit"}])),
            Some("pin") | Some("free") => ok(batch()),
            Some("status") => Some(serde_json::json!({"ok": false,
                "error": {"code": "not_a_root", "message": "/x is not in a sync root"}})),
            _ => ok(serde_json::Value::Null),
        }
    }

    #[test]
    fn calls_share_one_connection() {
        let (_d, p, conns) = fake(PROTOCOL_VERSION, |v, _| answer(v));
        let d = Daemon::new(p);
        assert!(d.roots().unwrap().is_empty());
        let l = d.list("/c").unwrap();
        assert_eq!(l[0].kind, skyfill::model::Kind::File);
        let paths: Vec<String> = (0..5).map(|i| format!("/c/{i}")).collect();
        let r = d.act("offline", &paths).unwrap();
        assert_eq!((r.files, r.bytes, r.settings), (10, 50, 10));
        assert_eq!(d.act("free", &paths).unwrap().files, 10);
        // A refusal leaves the connection usable.
        let e = d.call(|c| c.status("/x")).unwrap_err();
        assert_eq!(e.code, Code::Daemon(ErrorCode::NotARoot));
        assert!(d.roots().is_ok());
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "one connection, one handshake"
        );
    }

    #[test]
    fn a_closed_connection_is_replaced_and_the_call_sent_again() {
        // The first connection is closed at its second request (the daemon restarted).
        let (_d, p, conns) = fake(PROTOCOL_VERSION, |v, conn| {
            static SEEN: AtomicUsize = AtomicUsize::new(0);
            if conn == 1 && SEEN.fetch_add(1, Ordering::SeqCst) == 1 {
                return None;
            }
            answer(v)
        });
        let d = Daemon::new(p);
        d.roots().unwrap();
        assert!(
            d.roots().unwrap().is_empty(),
            "sent again on a new connection"
        );
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        d.roots().unwrap();
        assert_eq!(
            conns.load(Ordering::SeqCst),
            2,
            "the new connection is kept"
        );
        // Told that the daemon went away, the handle drops its connection.
        d.set_connection(Connection::default());
        d.roots().unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_fresh_connection_that_fails_is_not_retried() {
        let (_d, p, conns) = fake(PROTOCOL_VERSION, |_, _| None);
        let d = Daemon::new(p);
        let e = d.roots().unwrap_err();
        assert_eq!(e.code, Code::Unreachable);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn errors_carry_the_daemons_code_or_unreachable() {
        let d = tempfile::tempdir().unwrap();
        let e = Daemon::new(d.path().join("none.sock")).roots().unwrap_err();
        assert_eq!(e.code, Code::Unreachable);
        assert!(e.message.contains("not running"), "{e}");
        assert_eq!(
            serde_json::to_value(&e).unwrap()["code"],
            serde_json::json!("unreachable")
        );
        let e = ApiError::new(ErrorCode::NotARoot, "no");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"code": "not_a_root", "message": "no"})
        );
        // A daemon speaking another protocol.
        let (_d, p, _) = fake(PROTOCOL_VERSION + 1, |v, _| answer(v));
        let e = Daemon::new(p).roots().unwrap_err();
        assert_eq!(e.code, Code::Daemon(ErrorCode::VersionMismatch));
        assert!(e.message.contains("Update Skyfill"), "{e}");
        // A value typed wrong never reaches the daemon.
        let (_d, p, conns) = fake(PROTOCOL_VERSION, |v, _| answer(v));
        let e = Daemon::new(p)
            .config_set("download_limit", serde_json::json!("lots"), None)
            .unwrap_err();
        assert_eq!(e.code, Code::Daemon(ErrorCode::BadRequest));
        assert_eq!(conns.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn actions_map_to_protocol_requests() {
        assert!(matches!(
            action_request("offline", "/c/d".into()).unwrap(),
            RequestBody::Pin {
                setting: PinSetting::Pinned,
                recursive: true,
                ..
            }
        ));
        assert!(matches!(
            action_request("free", "/c/d".into()).unwrap(),
            RequestBody::Free {
                recursive: true,
                ..
            }
        ));
        assert!(matches!(
            action_request("online-only", "/c".into()).unwrap(),
            RequestBody::Pin {
                setting: PinSetting::OnlineOnly,
                ..
            }
        ));
        assert_eq!(
            action_request("explode", "/c".into()).unwrap_err().code,
            Code::Daemon(ErrorCode::BadRequest)
        );
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

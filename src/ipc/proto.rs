//! The one IPC protocol of Skyfill, shared by the daemon, the CLI, the tray app and the
//! file-manager extensions: newline-delimited JSON over a Unix socket.
//!
//! Every connection starts with `hello` (version handshake). Each request carries an `id`
//! that its response repeats; errors are `{code, message}`. After `subscribe`, the daemon also
//! sends event lines (`{"event": ...}`) on that connection. Long requests (pin, hydrate,
//! remove_root with download) send `job` events tagged with their request id before their
//! response. See `doc/IPC.md` for an example of every message.

pub use crate::model::{Availability, Kind, PinSetting};
use crate::remote::RemoteSpec;
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; a peer with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted message line; a longer one closes the connection.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub body: RequestBody,
}

/// What `remove_root` does with files that are not safely on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RemoveMode {
    /// Refuse while any file has unsynced changes (the default).
    #[default]
    Refuse,
    /// Keep every local file (synced or not) as an ordinary file; drop online-only ones.
    KeepLocal,
    /// Download every online-only file first, then keep everything as ordinary files.
    Download,
}

/// A per-root disk budget: at most this many bytes, or keep this share of the disk free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    MaxBytes(u64),
    KeepFreePercent(u8),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RequestBody {
    Hello {
        version: u32,
        client: String,
        /// The language the client speaks to its user (`de`); the daemon's messages on this
        /// connection come in it where a translation exists. Absent: English.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
    },
    /// Start receiving events on this connection (for the caller's roots only).
    Subscribe,
    /// Bind an empty or new local directory to a remote and populate it with placeholders.
    AddRoot {
        local: String,
        remote: RemoteSpec,
        /// Password, or `ACCESS:SECRET` for S3; never logged.
        #[serde(default)]
        secret: Option<String>,
        /// Let the daemon keep a root-only copy of the secret (works after a reboot).
        #[serde(default = "yes")]
        persist_secret: bool,
    },
    /// Unbind a sync root without losing unsynced data.
    RemoveRoot {
        local: String,
        #[serde(default)]
        mode: RemoveMode,
    },
    /// The caller's sync roots.
    Roots,
    /// State of a file or directory (or, without a path, of every root of the caller).
    Status {
        #[serde(default)]
        path: Option<String>,
    },
    /// The entries of a folder, each with its state (files and folders only; sorted, folders
    /// first).
    List { path: String },
    /// One window of a folder's entries, in `list`'s order, and how many it holds: views of
    /// large folders ask for the rows they show.
    ListPage {
        path: String,
        #[serde(default)]
        offset: u64,
        limit: u32,
        /// The order and filter of the window (default: `list`'s order, every entry).
        #[serde(default, flatten)]
        order: PageOrder,
    },
    /// Set the pin setting (pinned downloads now; online-only frees now).
    Pin {
        path: String,
        setting: PinSetting,
        #[serde(default)]
        recursive: bool,
    },
    /// Free up space: turn local files back into placeholders (skipping unsynced ones).
    Free {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Download now without changing the setting ("make local").
    Hydrate {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Hand the daemon the secret of one of the caller's roots.
    Login {
        local: String,
        secret: String,
        #[serde(default = "yes")]
        persist: bool,
    },
    /// Pause background work (pin downloads, polling) of one root, or all of the caller's.
    Pause {
        #[serde(default)]
        local: Option<String>,
    },
    Resume {
        #[serde(default)]
        local: Option<String>,
    },
    /// Look for remote changes now (below `path`, or in all of the caller's roots).
    Sync {
        #[serde(default)]
        path: Option<String>,
    },
    /// The caller's settings and their roots' budgets.
    ConfigGet,
    /// Change one setting (see `doc/IPC.md` for the keys); `local` names the root for
    /// per-root settings.
    ConfigSet {
        key: String,
        value: serde_json::Value,
        #[serde(default)]
        local: Option<String>,
    },
    /// Health checks of the caller's roots, done by the daemon.
    Doctor,
    /// Transfer counters of the daemon.
    Stats,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The message before translation, when the daemon made it to be said in each client's
    /// language (`hello`'s `lang`); the socket handler renders it. Never on the wire.
    #[serde(skip)]
    pub said: Option<crate::i18n::Said>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    VersionMismatch,
    NotAuthorized,
    NotFound,
    NotARoot,
    InvalidRoot,
    Busy,
    /// The server failed or could not be reached.
    Remote,
    /// The server refused the credentials (sign in again).
    Auth,
    /// Refused because files have changes that are not on the server yet.
    Unsynced,
    /// A root's disk budget is full of files that must stay (pinned, changed or open).
    Budget,
    Internal,
}

/// Result of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    pub version: u32,
    pub daemon: String,
}

/// Result of `add_root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddRootResult {
    pub root_id: String,
    pub files: u64,
    pub dirs: u64,
    pub rejected: u64,
    pub seconds: f64,
}

/// One sync root as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    pub id: String,
    pub local: String,
    pub remote: String,
    #[serde(default)]
    pub user: Option<String>,
    pub owner: u32,
    pub paused: bool,
    /// The daemon holds usable credentials (or the server needs none).
    pub signed_in: bool,
    /// The daemon keeps a root-only copy of the secret.
    pub secret_persisted: bool,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Last error talking to the server, if the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// `last_error` before translation (see [`Reply::localize`]). Never on the wire.
    #[serde(skip)]
    pub last_error_said: Option<crate::i18n::Said>,
    /// What the root is doing, decided by the daemon (clients never read error text).
    #[serde(default)]
    pub state: RootState,
}

impl RootInfo {
    fn localize(&mut self, cat: &crate::i18n::Catalogue) {
        if let Some(s) = &self.last_error_said {
            self.last_error = Some(s.render(cat));
        }
    }
}

/// What a sync root is doing, as the tray and the CLI show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootState {
    #[default]
    UpToDate,
    /// A sync pass is running.
    Syncing,
    /// The server cannot be reached; local changes wait and sync resumes by itself.
    Offline,
    Paused,
    /// No usable credentials: sign in again.
    NeedsSignIn,
    /// The last pass failed for another reason (`last_error` says which).
    Error,
}

/// Whether a path's changes are on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    Synced,
    /// Local changes not on the server yet.
    Pending,
    Uploading,
    Conflict,
    Error,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::Pending => "pending",
            SyncState::Uploading => "uploading",
            SyncState::Conflict => "conflict",
            SyncState::Error => "error",
        }
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Down,
    Up,
}

/// Which long request a `job` event reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Pin,
    Free,
    Hydrate,
    /// `remove_root` downloading before it lets go.
    Download,
}

/// What happened to a sync root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootChange {
    Added,
    Removed,
    Paused,
    Resumed,
    SignedIn,
    /// The server answers again after failures.
    Online,
    /// `state` changed (offline, syncing, up to date, ...): re-query `roots`.
    State,
}

/// How bad a `doctor` finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// A window of a folder's entries (`list_page`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<PathStatus>,
    /// Entries in the folder (files and folders).
    pub total: u64,
}

/// How `list_page` orders and filters a folder: folders first, then by `sort` (ties by
/// name), `descending` reversing the sort within each group; `filter` keeps the entries whose
/// name contains it, ignoring case. `total` counts the entries the filter kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOrder {
    #[serde(default)]
    pub sort: SortKey,
    #[serde(default)]
    pub descending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// What `list_page` sorts by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    Name,
    /// Files by size (folders by name).
    Size,
    /// By modification time.
    Modified,
}

/// The most entries one `list_page` answer holds.
pub const MAX_PAGE: u32 = 1000;

/// State of one path as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathStatus {
    pub path: String,
    pub kind: Kind,
    /// Directories: the state of what is below.
    pub state: Availability,
    pub sync: SyncState,
    /// Size (directories: total of the files below).
    pub size: u64,
    /// Bytes on disk.
    pub local_bytes: u64,
    /// For `partial`: share of the bytes that are local, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// The setting on this path itself.
    pub setting: PinSetting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Modification time, seconds since the epoch (the server's for an online-only file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub online_only: u64,
    pub partial: u64,
    pub local: u64,
    pub pinned: u64,
}

/// A file a batch operation left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
    /// `reason` before translation (see [`Reply::localize`]). Never on the wire.
    #[serde(skip)]
    pub said: Option<crate::i18n::Said>,
}

impl Skipped {
    /// A file left alone, for a reason said in each client's language.
    pub fn said(path: impl Into<String>, reason: crate::i18n::Said) -> Skipped {
        Skipped {
            path: path.into(),
            reason: reason.english(),
            said: Some(reason),
        }
    }

    fn localize(&mut self, cat: &crate::i18n::Catalogue) {
        if let Some(s) = &self.said {
            self.reason = s.render(cat);
        }
    }
}

/// Result of `pin`, `free` and `hydrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// Files changed (downloaded or freed).
    pub files: u64,
    /// Bytes downloaded or freed.
    pub bytes: u64,
    /// Files whose setting was written.
    pub settings: u64,
    /// True when downloads wait because the root is paused.
    #[serde(default)]
    pub deferred: bool,
    pub skipped: Vec<Skipped>,
}

/// Result of `remove_root`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    /// Files kept as ordinary local files.
    pub kept: u64,
    /// Online-only (or partly downloaded) files removed.
    pub removed: u64,
    /// Kept files that had changes not on the server.
    pub unsynced_kept: Vec<String>,
}

/// Result of `sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    pub roots: u64,
    /// New placeholders created.
    pub added: u64,
    /// Files downloaded because a pinned folder holds them.
    pub downloaded: u64,
    /// Local changes uploaded.
    #[serde(default)]
    pub uploaded: u64,
    /// Conflicts kept as conflict copies.
    #[serde(default)]
    pub conflicts: u64,
    /// Other changes carried out: renames, deletes, placeholders refreshed.
    #[serde(default)]
    pub changed: u64,
    /// Local files still being written: synced once they settle.
    #[serde(default)]
    pub waiting: u64,
    pub errors: Vec<Skipped>,
}

/// A user's settings (each user has their own; they apply to that user's roots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSettings {
    /// Seconds between looks for remote changes.
    pub poll_interval_secs: u64,
    /// Bytes per second for downloads (0: unlimited).
    pub download_limit: u64,
    /// Bytes per second for uploads (0: unlimited).
    pub upload_limit: u64,
    /// Programs (executable names) that never trigger downloads in this user's roots.
    pub never_download: Vec<String>,
    /// Extra name patterns (shell globs) never synced, besides the built-in temporary names.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for UserSettings {
    fn default() -> Self {
        UserSettings {
            poll_interval_secs: 30,
            download_limit: 0,
            upload_limit: 0,
            never_download: Vec::new(),
            ignore: Vec::new(),
        }
    }
}

/// Result of `config_get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResult {
    pub settings: UserSettings,
    /// Programs the daemon's own policy never lets download (for every user).
    pub system_never_download: Vec<String>,
    pub roots: Vec<RootInfo>,
}

/// One finding of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub level: Level,
    pub what: String,
    /// What to do about it (empty for `ok`).
    #[serde(default)]
    pub fix: String,
    /// `what` and `fix` before translation (see [`Reply::localize`]). Never on the wire.
    #[serde(skip)]
    pub said: Option<(crate::i18n::Said, crate::i18n::Said)>,
}

/// Result of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorResult {
    pub daemon: String,
    pub kernel: String,
    pub checks: Vec<Check>,
    /// The kernel-side gate (absent from daemons before it: not active).
    #[serde(default)]
    pub gate: GateInfo,
}

/// Whether the kernel gate refuses placeholders while no daemon serves (`hsm::gate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateInfo {
    pub active: bool,
    /// Where it is pinned, or why it is not active.
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsBody {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub completed: u64,
    pub denied: u64,
    pub events: u64,
}

/// The typed result of each request: the daemon's handler returns one, and the wire carries
/// its value as `result`. Which variant answers which request is fixed here and in the
/// client's typed methods (`ipc::client::Client::roots` and the rest).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    AddRoot(AddRootResult),
    RemoveRoot(RemoveResult),
    /// `roots`, and `pause`/`resume` (the roots they changed).
    Roots(Vec<RootInfo>),
    /// `status` of one path.
    Status(PathStatus),
    /// `status` of every root, and `list`.
    Statuses(Vec<PathStatus>),
    /// `list_page`.
    Page(Page),
    /// `pin`, `free`, `hydrate`.
    Batch(BatchResult),
    /// `login`.
    Root(RootInfo),
    Sync(SyncResult),
    Config(ConfigResult),
    Doctor(DoctorResult),
    Stats(StatsBody),
}

impl Reply {
    /// The texts for people in `cat`'s language, where the daemon made them to be said
    /// (`said!`): skipped files' reasons and doctor's findings. The socket handler calls it
    /// with the language of the connection's `hello`.
    pub fn localize(&mut self, cat: &crate::i18n::Catalogue) {
        match self {
            Reply::Batch(b) => b.skipped.iter_mut().for_each(|s| s.localize(cat)),
            Reply::Roots(roots) => roots.iter_mut().for_each(|r| r.localize(cat)),
            Reply::Root(r) => r.localize(cat),
            Reply::Config(c) => c.roots.iter_mut().for_each(|r| r.localize(cat)),
            Reply::Sync(s) => s.errors.iter_mut().for_each(|s| s.localize(cat)),
            Reply::Doctor(d) => {
                for c in &mut d.checks {
                    if let Some((what, fix)) = &c.said {
                        c.what = what.render(cat);
                        c.fix = fix.render(cat);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An event line (after `subscribe`, or `job` lines of the caller's own long requests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A file's state changed.
    State {
        path: String,
        state: Availability,
        sync: SyncState,
        size: u64,
        local_bytes: u64,
    },
    /// Bytes of one file moving.
    Progress {
        path: String,
        direction: Direction,
        done: u64,
        total: u64,
        /// The process whose access started the download, when one did.
        #[serde(default)]
        pid: Option<i32>,
        #[serde(default)]
        app: Option<String>,
    },
    /// Progress of a long request (`request` is its id on the connection that sent it).
    Job {
        request: u64,
        job: JobKind,
        path: String,
        files_done: u64,
        files_total: u64,
        bytes_done: u64,
        bytes_total: u64,
        finished: bool,
    },
    /// Something failed that no request is waiting for.
    Error {
        #[serde(default)]
        path: Option<String>,
        code: ErrorCode,
        message: String,
        /// `message` before translation (see [`Event::localize`]). Never on the wire.
        #[serde(skip)]
        said: Option<crate::i18n::Said>,
    },
    /// Both sides changed a file; the local version was kept as `copy`.
    Conflict { path: String, copy: String },
    /// A root was added, removed, paused or resumed, or its sign-in state changed.
    Root { local: String, change: RootChange },
    /// Events were dropped because this subscriber read too slowly; re-query what you show.
    Lagged { missed: u64 },
}

impl Event {
    /// Its text for people in `cat`'s language, where the daemon made it to be said; each
    /// subscription calls it with the language of its connection's `hello`.
    pub fn localize(&mut self, cat: &crate::i18n::Catalogue) {
        if let Event::Error {
            message,
            said: Some(s),
            ..
        } = self
        {
            *message = s.render(cat);
        }
    }
}

impl Response {
    pub fn ok(id: u64, v: impl Serialize) -> Self {
        Response {
            id,
            ok: true,
            result: Some(serde_json::to_value(v).expect("serializable")),
            error: None,
        }
    }

    pub fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Response {
            id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
                said: None,
            }),
        }
    }
}

/// Why a frame could not be decoded; `id` is the request id when it could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: u64,
    pub message: String,
}

/// Decodes one frame (a line without its newline). Never panics, whatever the bytes.
pub fn decode_request(line: &[u8]) -> Result<Request, DecodeError> {
    if line.len() > MAX_LINE {
        return Err(DecodeError {
            id: 0,
            message: format!("message longer than {MAX_LINE} bytes"),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| DecodeError {
        id: 0,
        message: format!("not JSON: {e}"),
    })?;
    let id = v.get("id").and_then(|i| i.as_u64()).unwrap_or(0);
    serde_json::from_value(v).map_err(|e| DecodeError {
        id,
        message: format!("unreadable request: {e}"),
    })
}

/// One line from the daemon: a response or an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Response(Response),
    Event(Event),
}

pub fn decode_incoming(line: &str) -> Result<Incoming, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    if v.get("event").is_some() {
        Ok(Incoming::Event(serde_json::from_value(v)?))
    } else {
        Ok(Incoming::Response(serde_json::from_value(v)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_the_daemons_words_in_the_connections_language() {
        let de = crate::i18n::built_in("de");
        let root = RootInfo {
            id: "1".into(),
            local: "/c".into(),
            remote: "dav://h/".into(),
            user: None,
            owner: 0,
            paused: false,
            signed_in: true,
            secret_persisted: false,
            budget: None,
            last_error: Some(
                "server unreachable; local changes are kept and sync resumes by itself".into(),
            ),
            last_error_said: Some(crate::said!(
                "server unreachable; local changes are kept and sync resumes by itself"
            )),
            state: RootState::Offline,
        };
        let skipped = Skipped::said("/c/a", crate::said!("belongs to another sync root"));
        assert_eq!(skipped.reason, "belongs to another sync root");
        let mut replies = vec![
            Reply::Batch(BatchResult {
                skipped: vec![skipped.clone()],
                ..Default::default()
            }),
            Reply::Sync(SyncResult {
                errors: vec![skipped],
                ..Default::default()
            }),
            Reply::Roots(vec![root.clone()]),
            Reply::Root(root.clone()),
            Reply::Config(ConfigResult {
                settings: UserSettings::default(),
                system_never_download: Vec::new(),
                roots: vec![root],
            }),
        ];
        for r in &mut replies {
            r.localize(&de);
            let json = serde_json::to_string(r).unwrap();
            assert!(
                !json.contains("sync root") && !json.contains("unreachable"),
                "{json}"
            );
            assert!(
                json.contains("Synchronisationsordner") || json.contains("Server nicht erreichbar"),
                "{json}"
            );
        }
    }

    /// The file-manager extension keeps its own small Python client; it is checked against
    /// this schema here: its protocol version, every request op it sends, every state word
    /// it maps to an emblem and every event kind it reads.
    #[test]
    fn the_file_manager_extension_speaks_this_protocol() {
        let py = include_str!("../../packaging/filemanagers/skyfill_nautilus.py");
        assert!(
            py.contains(&format!("PROTOCOL_VERSION = {PROTOCOL_VERSION}\n")),
            "the extension's PROTOCOL_VERSION differs from {PROTOCOL_VERSION}"
        );
        // Ops: `call("op"` and the menu actions' `("op", {`.
        let mut ops = Vec::new();
        for pat in ["call(\"", "(\""] {
            for (i, _) in py.match_indices(pat) {
                let rest = &py[i + pat.len()..];
                let Some(end) = rest.find('"') else { continue };
                let op = &rest[..end];
                let follows = &rest[end + 1..];
                let is_call = pat.starts_with("call");
                if is_call || follows.starts_with(", {") {
                    ops.push(op.to_string());
                }
            }
        }
        for must in [
            "hello",
            "subscribe",
            "roots",
            "list",
            "status",
            "pin",
            "free",
            "hydrate",
        ] {
            assert!(ops.iter().any(|o| o == must), "{must} not found in {ops:?}");
        }
        for op in &ops {
            let e = decode_request(format!("{{\"id\":1,\"op\":\"{op}\"}}").as_bytes())
                .err()
                .map(|e| e.message)
                .unwrap_or_default();
            assert!(!e.contains("unknown variant"), "{op}: {e}");
        }
        // State words of the emblem tables: availability, and sync state.
        let words = |table: &str| -> Vec<String> {
            let t = &py[py.find(&format!("{table} = {{")).expect(table)..];
            let t = &t[..t.find('}').unwrap()];
            t.lines()
                .skip(1)
                .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
                .map(|w| format!("\"{w}\""))
                .collect()
        };
        let avail = words("EMBLEMS");
        assert_eq!(avail.len(), 4, "{avail:?}");
        for w in &avail {
            assert!(
                serde_json::from_str::<Availability>(w).is_ok(),
                "EMBLEMS: {w}"
            );
        }
        let sync = words("SYNC_EMBLEMS");
        assert!(sync.len() >= 4, "{sync:?}");
        for w in &sync {
            assert!(
                serde_json::from_str::<SyncState>(w).is_ok(),
                "SYNC_EMBLEMS: {w}"
            );
        }
        // Event kinds it reads.
        for (i, _) in py.match_indices("kind == \"") {
            let rest = &py[i + 9..];
            let kind = &rest[..rest.find('"').unwrap()];
            let e = serde_json::from_str::<Event>(&format!("{{\"event\":\"{kind}\"}}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!e.contains("unknown variant"), "event {kind}: {e}");
        }
    }

    fn round_trip(r: &Request) {
        let s = serde_json::to_string(r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(&decode_request(s.as_bytes()).unwrap(), r, "{s}");
    }

    #[test]
    fn every_request_round_trips() {
        let spec = RemoteSpec {
            url: "dav://h/p".into(),
            user: Some("u".into()),
            endpoint: None,
            region: None,
            path_style: false,
        };
        let bodies = vec![
            RequestBody::Hello {
                version: 1,
                client: "t".into(),
                lang: Some("de".into()),
            },
            RequestBody::Subscribe,
            RequestBody::AddRoot {
                local: "/l".into(),
                remote: spec,
                secret: Some("s".into()),
                persist_secret: false,
            },
            RequestBody::RemoveRoot {
                local: "/l".into(),
                mode: RemoveMode::KeepLocal,
            },
            RequestBody::Roots,
            RequestBody::Status { path: None },
            RequestBody::List { path: "/l".into() },
            RequestBody::Status {
                path: Some("/l/a".into()),
            },
            RequestBody::Pin {
                path: "/l/a".into(),
                setting: PinSetting::OnlineOnly,
                recursive: true,
            },
            RequestBody::Free {
                path: "/l".into(),
                recursive: true,
            },
            RequestBody::Hydrate {
                path: "/l".into(),
                recursive: false,
            },
            RequestBody::Login {
                local: "/l".into(),
                secret: "x".into(),
                persist: true,
            },
            RequestBody::Pause { local: None },
            RequestBody::Resume {
                local: Some("/l".into()),
            },
            RequestBody::Sync { path: None },
            RequestBody::ConfigGet,
            RequestBody::ConfigSet {
                key: "budget".into(),
                value: serde_json::json!({"max_bytes": 5}),
                local: Some("/l".into()),
            },
            RequestBody::Doctor,
            RequestBody::Stats,
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            round_trip(&Request {
                id: i as u64 + 1,
                body,
            });
        }
    }

    #[test]
    fn every_event_round_trips() {
        let evs = vec![
            Event::State {
                path: "/l/a".into(),
                state: Availability::Local,
                sync: SyncState::Synced,
                size: 3,
                local_bytes: 3,
            },
            Event::Progress {
                path: "/l/a".into(),
                direction: Direction::Down,
                done: 1,
                total: 3,
                pid: Some(5),
                app: Some("cat".into()),
            },
            Event::Job {
                request: 4,
                job: JobKind::Pin,
                path: "/l".into(),
                files_done: 1,
                files_total: 2,
                bytes_done: 3,
                bytes_total: 4,
                finished: false,
            },
            Event::Error {
                path: None,
                code: ErrorCode::Auth,
                message: "m".into(),
                said: None,
            },
            Event::Conflict {
                path: "/l/a".into(),
                copy: "/l/a (conflicted copy)".into(),
            },
            Event::Root {
                local: "/l".into(),
                change: RootChange::Paused,
            },
            Event::Lagged { missed: 3 },
        ];
        for e in evs {
            let s = serde_json::to_string(&e).unwrap();
            assert!(s.starts_with("{\"event\":"), "{s}");
            assert_eq!(decode_incoming(&s).unwrap(), Incoming::Event(e));
        }
        let r = Response::ok(3, BatchResult::default());
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(decode_incoming(&s).unwrap(), Incoming::Response(r));
    }

    #[test]
    fn wire_format_is_stable() {
        let r = Request {
            id: 7,
            body: RequestBody::Free {
                path: "/home/u/Cloud/a".into(),
                recursive: false,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"id":7,"op":"free","path":"/home/u/Cloud/a","recursive":false}"#
        );
        // Optional fields may be left out.
        assert_eq!(
            decode_request(br#"{"id":7,"op":"free","path":"/home/u/Cloud/a"}"#).unwrap(),
            r
        );
        let e = Response::err(7, ErrorCode::NotAuthorized, "no");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":7,"ok":false,"error":{"code":"not_authorized","message":"no"}}"#
        );
    }

    #[test]
    fn bad_frames_are_errors_with_the_id_when_readable() {
        assert_eq!(
            decode_request(br#"{"id":9,"op":"nope"}"#).unwrap_err().id,
            9
        );
        assert_eq!(decode_request(br#"{"op":"stats"}"#).unwrap_err().id, 0);
        assert!(decode_request(b"\xff\xfe").is_err());
        assert!(decode_request(b"").is_err());
        assert!(decode_request(br#"{"id":1,"op":"pin","path":"/a","setting":"x"}"#).is_err());
        assert!(decode_request(&vec![b' '; MAX_LINE + 1]).is_err());
    }
}

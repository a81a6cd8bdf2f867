//! The `Remote` trait: the one network boundary of Skyfill, and its error type.
//!
//! Every implementation (WebDAV, S3, local directory, in-memory, fault-injecting, retrying)
//! obeys the same contract, checked by one conformance suite (`tests/remote_conformance.rs`):
//! - paths are [`RelPath`]s relative to the remote's base; names from a server that are not
//!   valid local names are dropped with a warning and never reach a caller;
//! - `read_range` (one [`ReadRange`]) writes exactly the bytes `[offset, offset+len)` of the
//!   version asked for into `dst` at `dst_offset`, streaming (never a whole object in memory),
//!   or fails;
//! - a version change seen during a read is [`RemoteError::VersionChanged`].

pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod http;
pub mod local;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod retry;
pub mod s3;
pub mod transfer;
pub mod webdav;

use crate::model::{Kind, RelPath, RemoteEntry, Version};
use async_trait::async_trait;
use std::fs::File;
use std::time::Duration;

pub use config::{open_remote, RemoteSpec};

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// What must hold on the remote for an upload or delete to go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The object must not exist yet (`If-None-Match: *`).
    MustNotExist,
    /// The object must still be at this version (`If-Match`).
    IfMatch(Version),
}

/// Errors of the remote layer. Each carries the path it concerns and maps to an errno.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{path}: not found on the remote")]
    NotFound { path: RelPath },
    #[error("{path}: already exists on the remote")]
    AlreadyExists { path: RelPath },
    #[error("{path}: remote version changed (expected {expected}, found {found})")]
    VersionChanged {
        path: RelPath,
        expected: String,
        found: String,
    },
    #[error("{path}: precondition failed (the remote object changed)")]
    PreconditionFailed { path: RelPath },
    #[error("{path}: access denied by the server (HTTP {status}); check the credentials")]
    Auth { path: RelPath, status: u16 },
    #[error("{path}: HTTP {status} from the server{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http {
        path: RelPath,
        status: u16,
        retry_after: Option<Duration>,
        detail: Option<String>,
    },
    #[error("{path}: network error: {detail}")]
    Network { path: RelPath, detail: String },
    #[error("{path}: no data from the server for {after:?}")]
    Stalled { path: RelPath, after: Duration },
    #[error("{path}: response body ended after {got} of {want} bytes")]
    Truncated { path: RelPath, got: u64, want: u64 },
    #[error("{path}: protocol error: {detail}")]
    Protocol { path: RelPath, detail: String },
    #[error("{path}: the remote is offline (last failure {ago:?} ago: {last})")]
    Offline {
        path: RelPath,
        ago: Duration,
        last: String,
    },
    #[error("{path}: gave up after {attempts} attempts in {elapsed:?}: {last}")]
    Exhausted {
        path: RelPath,
        attempts: u32,
        elapsed: Duration,
        last: Box<RemoteError>,
    },
    #[error("{path}: local I/O error: {source}")]
    Io {
        path: RelPath,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not supported by this remote: {what}")]
    Unsupported { path: RelPath, what: String },
    #[error("invalid remote configuration: {0}")]
    Config(String),
    #[error("{path}: more than {limit} {what}; refused (raise the limit in limits.json if this is expected)")]
    TooMany {
        path: RelPath,
        limit: u64,
        what: &'static str,
    },
    #[error("{path}: the listing did not finish within {after:?}")]
    Deadline { path: RelPath, after: Duration },
}

impl RemoteError {
    /// The same text as its `Display`, to be said in a client's language (the daemon's
    /// errors reach people through it). Details from the server or the system stay as they
    /// came.
    pub fn said(&self) -> crate::i18n::Said {
        use crate::said;
        match self {
            RemoteError::NotFound { path } => said!("{path}: not found on the remote", path = path),
            RemoteError::AlreadyExists { path } => {
                said!("{path}: already exists on the remote", path = path)
            }
            RemoteError::VersionChanged {
                path,
                expected,
                found,
            } => said!(
                "{path}: remote version changed (expected {expected}, found {found})",
                path = path,
                expected = expected,
                found = found
            ),
            RemoteError::PreconditionFailed { path } => said!(
                "{path}: precondition failed (the remote object changed)",
                path = path
            ),
            RemoteError::Auth { path, status } => said!(
                "{path}: access denied by the server (HTTP {status}); check the credentials",
                path = path,
                status = status
            ),
            RemoteError::Http {
                path,
                status,
                detail: None,
                ..
            } => said!(
                "{path}: HTTP {status} from the server",
                path = path,
                status = status
            ),
            RemoteError::Http {
                path,
                status,
                detail: Some(d),
                ..
            } => said!(
                "{path}: HTTP {status} from the server: {detail}",
                path = path,
                status = status,
                detail = d
            ),
            RemoteError::Network { path, detail } => {
                said!(
                    "{path}: network error: {detail}",
                    path = path,
                    detail = detail
                )
            }
            RemoteError::Stalled { path, after } => said!(
                "{path}: no data from the server for {after}",
                path = path,
                after = format!("{after:?}")
            ),
            RemoteError::Offline { path, ago, last } => said!(
                "{path}: the remote is offline (last failure {ago} ago: {last})",
                path = path,
                ago = format!("{ago:?}"),
                last = last
            ),
            RemoteError::Exhausted {
                path,
                attempts,
                elapsed,
                last,
            } => said!(
                "{path}: gave up after {attempts} attempts in {elapsed}: ",
                path = path,
                attempts = attempts,
                elapsed = format!("{elapsed:?}")
            )
            .then(last.said()),
            RemoteError::Io { path, source } => {
                said!("{path}: local I/O error: ", path = path).then(crate::i18n::said_os(source))
            }
            other => crate::i18n::Said::text(other.to_string()),
        }
    }

    /// Worth another attempt (server hiccup, network fault, throttling, truncated body)?
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            RemoteError::Network { .. }
            | RemoteError::Stalled { .. }
            | RemoteError::Truncated { .. } => true,
            _ => false,
        }
    }

    /// Does this failure say the server cannot be reached at all (so callers may fail fast)?
    pub fn is_offline(&self) -> bool {
        match self {
            RemoteError::Network { .. }
            | RemoteError::Stalled { .. }
            | RemoteError::Offline { .. } => true,
            RemoteError::Exhausted { last, .. } => last.is_offline(),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The errno a local caller should see for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            RemoteError::NotFound { .. } => libc::ENOENT,
            RemoteError::AlreadyExists { .. } => libc::EEXIST,
            RemoteError::VersionChanged { .. } | RemoteError::PreconditionFailed { .. } => {
                libc::ESTALE
            }
            RemoteError::Auth { .. } => libc::EACCES,
            RemoteError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            RemoteError::Unsupported { .. } => libc::EOPNOTSUPP,
            RemoteError::Config(_) => libc::EINVAL,
            RemoteError::TooMany { .. } => libc::EFBIG,
            RemoteError::Deadline { .. } => libc::ETIMEDOUT,
            RemoteError::Exhausted { last, .. } => last.errno(),
            _ => libc::EIO,
        }
    }

    pub fn path(&self) -> Option<&RelPath> {
        match self {
            RemoteError::Config(_) => None,
            RemoteError::NotFound { path }
            | RemoteError::AlreadyExists { path }
            | RemoteError::VersionChanged { path, .. }
            | RemoteError::PreconditionFailed { path }
            | RemoteError::Auth { path, .. }
            | RemoteError::Http { path, .. }
            | RemoteError::Network { path, .. }
            | RemoteError::Stalled { path, .. }
            | RemoteError::Truncated { path, .. }
            | RemoteError::Protocol { path, .. }
            | RemoteError::Offline { path, .. }
            | RemoteError::Exhausted { path, .. }
            | RemoteError::Io { path, .. }
            | RemoteError::Unsupported { path, .. }
            | RemoteError::TooMany { path, .. }
            | RemoteError::Deadline { path, .. } => Some(path),
        }
    }

    pub fn io(path: &RelPath, source: std::io::Error) -> Self {
        RemoteError::Io {
            path: path.clone(),
            source,
        }
    }

    pub fn protocol(path: &RelPath, detail: impl Into<String>) -> Self {
        RemoteError::Protocol {
            path: path.clone(),
            detail: detail.into(),
        }
    }

    pub fn version_changed(path: &RelPath, expected: &Version, found: Option<&Version>) -> Self {
        RemoteError::VersionChanged {
            path: path.clone(),
            expected: expected.token(),
            found: found
                .map(|v| v.token())
                .unwrap_or_else(|| "a different object".into()),
        }
    }
}

/// Counts from one listing walk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkStats {
    pub entries: u64,
    /// Entries dropped because their name or href was hostile or outside the collection.
    pub rejected: u64,
}

/// Told of a read's bytes as they are written into its file: `(offset, len)` in the
/// object's offsets, batched; asked with `len` 0 before every other write. Lets a reader
/// waiting for the start of a large range go on before the rest arrives. Answers whether to
/// go on: `false` (the destination changed under the read, say truncated) stops the read with
/// an I/O error before its next write. Remotes that cannot tell say nothing until the range
/// is done.
#[derive(Clone, Copy)]
pub struct Landed<'a>(pub &'a (dyn Fn(u64, u64) -> bool + Send + Sync));

impl std::fmt::Debug for Landed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Landed")
    }
}

/// One ranged read: bytes `[offset, offset+len)` of `path` at `version`, written into `dst` at
/// `dst_offset`. `Copy`, so a retry or a split reuses it.
#[derive(Debug, Clone, Copy)]
pub struct ReadRange<'a> {
    pub path: &'a RelPath,
    /// The version the bytes must come from; any other is [`RemoteError::VersionChanged`].
    pub version: &'a Version,
    pub offset: u64,
    pub len: u64,
    pub dst: &'a File,
    pub dst_offset: u64,
    /// Told of bytes as they land, if anyone listens.
    pub landed: Option<Landed<'a>>,
}

impl<'a> ReadRange<'a> {
    /// `[offset, offset+len)` of `path` at `version`, written into `dst` at the same offsets.
    pub fn new(
        path: &'a RelPath,
        version: &'a Version,
        offset: u64,
        len: u64,
        dst: &'a File,
    ) -> Self {
        ReadRange {
            path,
            version,
            offset,
            len,
            dst,
            dst_offset: offset,
            landed: None,
        }
    }

    /// The same read, telling `f` of its bytes as they land.
    pub fn on_landed(self, f: &'a (dyn Fn(u64, u64) -> bool + Send + Sync)) -> Self {
        ReadRange {
            landed: Some(Landed(f)),
            ..self
        }
    }

    /// The same bytes, written into `dst` at `dst_offset` instead.
    pub fn to(self, dst_offset: u64) -> Self {
        ReadRange { dst_offset, ..self }
    }

    /// One past the last byte asked for.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// The part `[offset, offset+len)` of this range (which must lie inside it), written where
    /// this range puts those bytes.
    pub fn part(self, offset: u64, len: u64) -> Self {
        debug_assert!(offset >= self.offset && offset + len <= self.end());
        ReadRange {
            offset,
            len,
            dst_offset: self.dst_offset + (offset - self.offset),
            ..self
        }
    }
}

/// What a server said about a file it renamed. A WebDAV `MOVE` keeps the object, so its
/// version; S3 has no rename, and its copy gives the object a new ETag and time, which the
/// copy's own answer names (so no listing in between can be mistaken for them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// The ETag the object has at its new name, if the server said.
    pub etag: Option<Version>,
    /// Its modification time there, if the server said.
    pub mtime: Option<std::time::SystemTime>,
}

impl Moved {
    /// The moved file's version, in the form `old` has (the form this server's listings give:
    /// an ETag, or size and time where the listing has no ETag). `old` when the move kept the
    /// version or the server did not say. The bytes are the same, so the size is `old`'s.
    pub fn version(&self, old: &Version) -> Version {
        match (old, &self.etag, self.mtime) {
            (Version::Etag { .. }, Some(e @ Version::Etag { .. }), _) => e.clone(),
            (Version::SizeMtime { size, .. }, _, Some(t)) => Version::size_mtime(*size, t),
            _ => old.clone(),
        }
    }
}

/// Receives the entries of a walk one at a time (bounded memory). Parents come before children.
pub type Sink<'a> = &'a mut (dyn FnMut(RemoteEntry) -> Result<()> + Send);

/// The network boundary. All paths are relative to the remote's base (bucket prefix, collection).
#[async_trait]
pub trait Remote: Send + Sync {
    /// Human-readable description for logs (never contains a secret).
    fn describe(&self) -> String;

    /// Metadata of one object (file or directory). The root is always a directory.
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry>;

    /// The direct children of a directory.
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>>;

    /// Every entry below `dir` (not `dir` itself), streamed to `sink`, parents first.
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats>;

    /// Writes bytes `[offset, offset+len)` of `path` at `version` into `dst` at `dst_offset`
    /// (all in `req`). The range must lie inside the object; a shorter object is a version
    /// change.
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()>;

    /// Uploads the whole of `src` to `path`, streaming, and returns the new remote entry.
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry>;

    /// Deletes a file, or a directory with everything below it.
    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()>;

    /// Renames a file or directory; the target must not exist. For a file, says what the
    /// server told of its new version ([`Moved`]; default when it keeps the old one).
    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved>;

    /// Creates a directory (parents must exist). An existing directory is not an error.
    async fn mkdir(&self, path: &RelPath) -> Result<()>;
}

#[async_trait]
impl<R: Remote + ?Sized> Remote for std::sync::Arc<R> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        (**self).stat(path).await
    }
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        (**self).list_dir(dir).await
    }
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        (**self).walk(dir, sink).await
    }
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        (**self).read_range(req).await
    }
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        (**self).upload(path, src, pre).await
    }
    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        (**self).delete(path, kind).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        (**self).rename(from, to, kind).await
    }
    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        (**self).mkdir(path).await
    }
}

/// Same content? Compares versions of the same kind, else size and whole-second mtime.
pub fn same_version(a: &RemoteEntry, b: &RemoteEntry) -> bool {
    match (&a.version, &b.version) {
        (Version::Etag { .. }, Version::Etag { .. })
        | (Version::SizeMtime { .. }, Version::SizeMtime { .. }) => a.version.same(&b.version),
        _ => {
            a.size == b.size && crate::model::unix_secs(a.mtime) == crate::model::unix_secs(b.mtime)
        }
    }
}

/// Is `e` still at version `v`? A size+mtime version is checked against the entry's size
/// and mtime when the entry carries an ETag; an ETag never matches a size+mtime entry.
pub fn entry_matches(e: &RemoteEntry, v: &Version) -> bool {
    match (v, &e.version) {
        (Version::SizeMtime { size, mtime_secs }, Version::Etag { .. }) => {
            e.size == *size && crate::model::unix_secs(e.mtime) == *mtime_secs
        }
        _ => e.version.same(v),
    }
}

/// Logs and counts an entry refused for a hostile name or href.
pub(crate) fn reject(stats: &mut WalkStats, what: &str, why: &dyn std::fmt::Display) {
    stats.rejected += 1;
    tracing::warn!(entry = %what.escape_debug(), reason = %why, "rejected a remote entry");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn errors_say_in_english_what_they_display() {
        let p = || RelPath::parse("a/b.txt").unwrap();
        let all = vec![
            RemoteError::NotFound { path: p() },
            RemoteError::AlreadyExists { path: p() },
            RemoteError::VersionChanged {
                path: p(),
                expected: "e1".into(),
                found: "e2".into(),
            },
            RemoteError::PreconditionFailed { path: p() },
            RemoteError::Auth {
                path: p(),
                status: 401,
            },
            RemoteError::Http {
                path: p(),
                status: 503,
                retry_after: None,
                detail: None,
            },
            RemoteError::Http {
                path: p(),
                status: 500,
                retry_after: None,
                detail: Some("boom".into()),
            },
            RemoteError::Network {
                path: p(),
                detail: "refused".into(),
            },
            RemoteError::Stalled {
                path: p(),
                after: Duration::from_secs(30),
            },
            RemoteError::Offline {
                path: p(),
                ago: Duration::from_secs(3),
                last: "refused".into(),
            },
            RemoteError::Exhausted {
                path: p(),
                attempts: 4,
                elapsed: Duration::from_millis(1500),
                last: Box::new(RemoteError::Auth {
                    path: p(),
                    status: 403,
                }),
            },
            RemoteError::Io {
                path: p(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
            RemoteError::Config("x".into()),
        ];
        let de = crate::i18n::built_in("de");
        for e in all {
            let display = e.to_string().replace(" (os error 28)", "");
            assert_eq!(e.said().english(), display);
            if !matches!(e, RemoteError::Config(_)) {
                assert_ne!(e.said().render(&de), display, "no German for {display}");
            }
        }
    }

    #[test]
    fn a_moved_file_keeps_the_form_of_its_version() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let copy = Moved {
            etag: Version::from_etag("\"abc\""),
            mtime: Some(t),
        };
        let tag = Version::from_etag("\"old-2\"").unwrap();
        let sized = Version::SizeMtime {
            size: 7,
            mtime_secs: 5,
        };
        assert_eq!(copy.version(&tag), Version::from_etag("abc").unwrap());
        assert_eq!(copy.version(&sized), Version::size_mtime(7, t));
        // A move that kept the object (WebDAV), or a server that said nothing.
        assert_eq!(Moved::default().version(&tag), tag);
        assert_eq!(Moved::default().version(&sized), sized);
        // Half an answer: only what it names is taken.
        let etag_only = Moved {
            etag: None,
            mtime: Some(t),
        };
        assert_eq!(etag_only.version(&tag), tag);
    }
}

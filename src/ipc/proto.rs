//! The one IPC protocol of Skyfill, shared by the daemon, the CLI, the tray app and the
//! file-manager extensions: newline-delimited JSON over a Unix socket.
//!
//! Every connection starts with `hello` (version handshake). Each request carries an `id`
//! that its response repeats; errors are `{code, message}`. See `doc/IPC.md` for examples.

use crate::remote::RemoteSpec;
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; a peer with another major version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted message line.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RequestBody {
    Hello {
        version: u32,
        client: String,
    },
    /// Bind an empty or new local directory to a remote and populate it with placeholders.
    AddRoot {
        local: String,
        remote: RemoteSpec,
        /// Password, or `ACCESS:SECRET` for S3; never logged.
        #[serde(default)]
        secret: Option<String>,
    },
    /// The caller's sync roots.
    Roots,
    /// State of a file or directory (or, without a path, of every root of the caller).
    Status {
        #[serde(default)]
        path: Option<String>,
    },
    /// Free up space: turn complete files back into placeholders.
    Free {
        path: String,
    },
    /// Make files local now (and, with `pin`, keep them local).
    Hydrate {
        path: String,
        #[serde(default)]
        pin: bool,
    },
    /// Transfer counters of the daemon.
    Stats,
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
    Remote,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    pub id: String,
    pub local: String,
    pub remote: String,
    pub owner: u32,
}

/// State of one path as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStatus {
    pub path: String,
    pub kind: String,
    /// online-only, partial, local, pinned (files); for directories, counts below.
    pub availability: String,
    pub size: u64,
    /// Bytes of the file that are on disk.
    pub local_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub online_only: u64,
    pub partial: u64,
    pub local: u64,
    pub pinned: u64,
    pub unmanaged: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsBody {
    pub bytes_fetched: u64,
    pub requests: u64,
    pub completed: u64,
    pub denied: u64,
    pub events: u64,
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
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request {
            id: 7,
            body: RequestBody::Free {
                path: "/home/u/Cloud/a".into(),
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":7,"op":"free","path":"/home/u/Cloud/a"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let e = Response::err(7, ErrorCode::NotAuthorized, "no");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":7,"ok":false,"error":{"code":"not_authorized","message":"no"}}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"stats"}"#).is_err());
    }
}

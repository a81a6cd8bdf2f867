//! The one error type of the daemon: what a client is told (code and message), what the
//! kernel is told when the error ends an access (errno), and how loudly it is logged. Every
//! service returns it; the socket handler turns it into the protocol's `{code, message}` in
//! one place.

use crate::i18n::Said;
use crate::ipc::proto::{ErrorBody, ErrorCode};
use crate::remote::RemoteError;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The errno a reader gets when this error ends an access.
    pub errno: i32,
    /// The message to say in each client's language, when it was made with [`Error::said`].
    pub said: Option<Said>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        let errno = match code {
            ErrorCode::NotFound | ErrorCode::NotARoot => libc::ENOENT,
            ErrorCode::NotAuthorized | ErrorCode::Auth => libc::EACCES,
            ErrorCode::BadRequest | ErrorCode::InvalidRoot | ErrorCode::VersionMismatch => {
                libc::EINVAL
            }
            ErrorCode::Busy => libc::EBUSY,
            ErrorCode::Budget => libc::ENOSPC,
            ErrorCode::Remote | ErrorCode::Unsynced | ErrorCode::Internal => libc::EIO,
        };
        Error {
            code,
            message: message.into(),
            errno,
            said: None,
        }
    }

    /// An error whose message clients get in their language (`said!("…{path}…", path = p)`);
    /// the log and English clients get the English text.
    pub fn said(code: ErrorCode, said: Said) -> Error {
        let mut e = Error::new(code, said.english());
        e.said = Some(said);
        e
    }

    pub fn bad_request(m: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadRequest, m)
    }

    pub fn invalid_root(m: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidRoot, m)
    }

    pub fn not_found(m: impl Into<String>) -> Error {
        Error::new(ErrorCode::NotFound, m)
    }

    pub fn internal(e: impl fmt::Display) -> Error {
        Error::new(ErrorCode::Internal, e.to_string())
    }

    /// A failed access: the errno, and `what` (a message ending in ": ") followed by the
    /// system's words for the errno, both said in each client's language.
    pub fn errno(errno: i32, what: Said) -> Error {
        let os = std::io::Error::from_raw_os_error(errno);
        let mut e = Error::said(ErrorCode::Remote, what.then(crate::i18n::said_os(&os)));
        e.errno = errno;
        e
    }

    /// The same error with `prefix: ` before its message.
    pub fn context(mut self, prefix: impl fmt::Display) -> Error {
        self.message = format!("{prefix}: {}", self.message);
        self.said = self.said.map(|s| s.prefixed(format!("{prefix}: ")));
        self
    }

    /// The same error with `suffix` after its message.
    pub fn hint(mut self, suffix: impl fmt::Display) -> Error {
        self.message = format!("{}{suffix}", self.message);
        self.said = self.said.map(|s| s.suffixed(suffix.to_string()));
        self
    }

    /// Its message as a [`Said`]: the one it was made with, or its words as they are.
    pub fn to_said(&self) -> Said {
        self.said
            .clone()
            .unwrap_or_else(|| Said::text(self.message.clone()))
    }

    /// The same error with a message after its own (translated like it).
    pub fn hint_said(mut self, more: Said) -> Error {
        let before = self.to_said();
        self.message = format!("{}{}", self.message, more.english());
        self.said = Some(before.then(more));
        self
    }

    /// How loudly to log it: the daemon's own faults are errors; what a request or a server
    /// got wrong is a warning; refusals are routine.
    pub fn level(&self) -> tracing::Level {
        match self.code {
            ErrorCode::Internal => tracing::Level::ERROR,
            ErrorCode::Remote | ErrorCode::Auth => tracing::Level::WARN,
            _ => tracing::Level::DEBUG,
        }
    }

    /// Logs it at its level.
    pub fn log(&self, what: &str) {
        match self.level() {
            tracing::Level::ERROR => tracing::error!(code = ?self.code, "{what}: {}", self.message),
            tracing::Level::WARN => tracing::warn!(code = ?self.code, "{what}: {}", self.message),
            _ => tracing::debug!(code = ?self.code, "{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<RemoteError> for Error {
    /// A server's refusal of the credentials says how to sign in again.
    fn from(e: RemoteError) -> Error {
        let auth = match &e {
            RemoteError::Auth { .. } => true,
            RemoteError::Exhausted { last, .. } => matches!(**last, RemoteError::Auth { .. }),
            _ => false,
        };
        let errno = crate::hsm::hydrate::errno_for(&e);
        let mut out = if auth {
            Error::said(
                ErrorCode::Auth,
                e.said()
                    .then(crate::said!("; sign in again with `skyfill login`")),
            )
        } else {
            Error::said(ErrorCode::Remote, e.said())
        };
        out.errno = errno;
        out
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let mut out = Error::internal(&e);
        if let Some(n) = e.raw_os_error() {
            out.errno = n;
        }
        out
    }
}

impl From<crate::index::IndexError> for Error {
    fn from(e: crate::index::IndexError) -> Error {
        Error::internal(e)
    }
}

impl From<Error> for ErrorBody {
    fn from(e: Error) -> ErrorBody {
        ErrorBody {
            code: e.code,
            message: e.message,
            said: e.said,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_say_how_to_sign_in_and_carry_eperm() {
        let e: Error = RemoteError::Auth {
            path: crate::model::RelPath::root(),
            status: 401,
        }
        .into();
        assert_eq!(e.code, ErrorCode::Auth);
        assert!(e.message.contains("skyfill login"), "{e}");
        assert_eq!(e.errno, libc::EPERM, "what a reader gets");
        assert_eq!(e.level(), tracing::Level::WARN);
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e: Error = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(e.errno, libc::ENOSPC);
        assert_eq!(e.code, ErrorCode::Internal);
        let b: ErrorBody = Error::not_found("x: gone").context("status").into();
        assert_eq!(b.message, "status: x: gone");
        assert_eq!(b.code, ErrorCode::NotFound);
    }
}

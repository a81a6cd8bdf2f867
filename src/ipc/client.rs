//! A blocking client for the daemon socket: connect, handshake, one request at a time.

use super::proto::{Request, RequestBody, Response, PROTOCOL_VERSION};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the Skyfill daemon at {path}: {source} (is skyfilld running?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("daemon connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("daemon closed the connection")]
    Closed,
    #[error("{code:?}: {message}")]
    Daemon {
        code: super::proto::ErrorCode,
        message: String,
    },
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next: u64,
}

impl Client {
    pub fn connect(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|e| ClientError::Connect {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut c = Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next: 1,
        };
        c.call(RequestBody::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.into(),
        })?;
        Ok(c)
    }

    /// Sends one request and returns its result value.
    pub fn call(&mut self, body: RequestBody) -> Result<serde_json::Value, ClientError> {
        let id = self.next;
        self.next += 1;
        let mut line = serde_json::to_vec(&Request { id, body })?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut buf = String::new();
        loop {
            buf.clear();
            if self.reader.read_line(&mut buf)? == 0 {
                return Err(ClientError::Closed);
            }
            let v: serde_json::Value = serde_json::from_str(&buf)?;
            if v.get("event").is_some() {
                continue; // subscription traffic is not for a request
            }
            let r: Response = serde_json::from_value(v)?;
            if r.id != id {
                continue;
            }
            return match (r.ok, r.error) {
                (true, _) => Ok(r.result.unwrap_or(serde_json::Value::Null)),
                (false, Some(e)) => Err(ClientError::Daemon {
                    code: e.code,
                    message: e.message,
                }),
                (false, None) => Err(ClientError::Closed),
            };
        }
    }
}

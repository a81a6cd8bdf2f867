//! A blocking client for the daemon socket: connect, handshake, one request at a time, job
//! events of the caller's own long requests, and a subscription stream.

use super::proto::{
    decode_incoming, Event, HelloResult, Incoming, Request, RequestBody, PROTOCOL_VERSION,
};
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
    /// What the daemon said in the handshake.
    pub hello: HelloResult,
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
            hello: HelloResult {
                version: 0,
                daemon: String::new(),
            },
        };
        let h = c.call(RequestBody::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.into(),
        })?;
        c.hello = serde_json::from_value(h)?;
        Ok(c)
    }

    /// Sends one request and returns its result value.
    pub fn call(&mut self, body: RequestBody) -> Result<serde_json::Value, ClientError> {
        self.call_with(body, &mut |_| {})
    }

    /// Sends one request, passing events that arrive before its answer (its own `job`
    /// progress, subscription traffic) to `on_event`.
    pub fn call_with(
        &mut self,
        body: RequestBody,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<serde_json::Value, ClientError> {
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
            let r = match decode_incoming(&buf)? {
                Incoming::Event(e) => {
                    on_event(e);
                    continue;
                }
                Incoming::Response(r) => r,
            };
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

    /// Subscribes this connection to events; read them with [`Client::next_event`].
    pub fn subscribe(&mut self) -> Result<(), ClientError> {
        self.call(RequestBody::Subscribe).map(|_| ())
    }

    /// Blocks for the next event (after [`Client::subscribe`]).
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        let mut buf = String::new();
        loop {
            buf.clear();
            if self.reader.read_line(&mut buf)? == 0 {
                return Err(ClientError::Closed);
            }
            if let Incoming::Event(e) = decode_incoming(&buf)? {
                return Ok(e);
            }
        }
    }

    /// Bounds how long [`Client::next_event`] and calls wait (None: forever).
    pub fn set_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(t)
    }
}

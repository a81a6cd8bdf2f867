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

/// Parses `5M`, `10G`, `300k`, `1024` (bytes; K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        Some('t' | 'T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 500M or 2G)"))?;
    if v < 0.0 {
        return Err("a size cannot be negative".into());
    }
    Ok((v * mult as f64) as u64)
}

fn list_of(value: &str) -> serde_json::Value {
    serde_json::json!(value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>())
}

/// A setting as users type it (CLI, tray app) -> the protocol's key and JSON value:
/// `poll-interval 30`, `download-limit 5M`, `never-download a,b`, `ignore '*.tmp'`,
/// `budget 20G|10%|none`.
pub fn setting_value(key: &str, value: &str) -> Result<(String, serde_json::Value), String> {
    let key = key.replace('-', "_");
    Ok(match key.as_str() {
        "poll_interval" | "poll_interval_secs" => (
            "poll_interval_secs".into(),
            serde_json::json!(value
                .trim()
                .trim_end_matches('s')
                .parse::<u64>()
                .map_err(|_| "poll-interval: give seconds".to_string())?),
        ),
        "download_limit" | "upload_limit" => (key.clone(), serde_json::json!(parse_size(value)?)),
        "ignore" | "never_download" => (key.clone(), list_of(value)),
        "budget" => {
            let b = if value.trim() == "none" || value.trim().is_empty() {
                serde_json::Value::Null
            } else if let Some(p) = value.trim().strip_suffix('%') {
                serde_json::json!({"keep_free_percent": p.trim().parse::<u8>().map_err(|_| "budget: N% with N in 1..90".to_string())?})
            } else {
                serde_json::json!({"max_bytes": parse_size(value)?})
            };
            ("budget".into(), b)
        }
        k => (k.to_string(), serde_json::json!(value)),
    })
}

#[cfg(test)]
mod setting_tests {
    use super::*;

    #[test]
    fn settings_parse_as_typed() {
        assert_eq!(parse_size("5M").unwrap(), 5 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err());
        assert_eq!(
            setting_value("poll-interval", "30s").unwrap(),
            ("poll_interval_secs".into(), serde_json::json!(30))
        );
        assert_eq!(
            setting_value("budget", "10%").unwrap().1,
            serde_json::json!({"keep_free_percent": 10})
        );
        assert_eq!(
            setting_value("budget", "none").unwrap().1,
            serde_json::Value::Null
        );
        assert_eq!(
            setting_value("never-download", "a, b,").unwrap().1,
            serde_json::json!(["a", "b"])
        );
    }
}

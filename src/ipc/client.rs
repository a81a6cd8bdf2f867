//! A blocking client for the daemon socket: connect, handshake, one request at a time, job
//! events of the caller's own long requests, and a subscription stream.
//!
//! The client never waits forever on a hung daemon (see [`Timeouts`]): connecting and the
//! handshake are bounded, and so is the silence while a request is waiting for its answer.
//! Requests that may legitimately take long (add-root, pin, hydrate, sync, ...) are not cut
//! by that bound alone: after a silent period the client checks on a second connection that
//! the daemon still answers a handshake, and keeps waiting only if it does. Subscriptions
//! wait for events as long as it takes by default (events may be rare).

use super::proto::{
    decode_incoming, BatchResult, ConfigResult, DoctorResult, Event, HelloResult, Incoming, Page,
    PageOrder, PathStatus, Request, RequestBody, RootInfo, StatsBody, SyncResult, PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // The OS error is part of the message, not a `source`: callers print error chains, and
    // it would be said twice.
    #[error("cannot connect to the Skyfill daemon at {path}: {error} (is skyfilld running?)")]
    Connect { path: String, error: std::io::Error },
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
    /// The daemon stayed silent for longer than the client waits (it may be hung).
    #[error("the Skyfill daemon did not answer within {} (is it hung? `systemctl status skyfilld`, `journalctl -u skyfilld`)", secs(*.0))]
    Timeout(Duration),
}

/// `30 s`, `1.5 s`, `0.2 s`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// How long the client waits for the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting and the handshake, together.
    pub connect: Duration,
    /// The longest silence accepted while a request waits for its answer: every line from
    /// the daemon (the answer, a `job` event, any event) starts it again. For requests that
    /// may legitimately take long (see [`may_take_long`]) a silence this long only makes the
    /// client check that the daemon still answers a handshake on a second connection. `None`:
    /// wait as long as it takes.
    pub idle: Option<Duration>,
    /// How long [`Client::next_event`] waits for an event (`None`: as long as it takes).
    pub events: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            idle: Some(Duration::from_secs(30)),
            events: None,
        }
    }
}

/// Requests the daemon may legitimately work on for long without saying anything: they
/// transfer files (add-root lists the whole remote; pin/hydrate send `job` progress only
/// between files; sync sends none) or talk to servers (login, doctor). Everything else is
/// answered from the daemon's own state and gets the plain idle bound.
pub fn may_take_long(body: &RequestBody) -> bool {
    !matches!(
        body,
        RequestBody::Hello { .. }
            | RequestBody::Subscribe
            | RequestBody::Roots
            | RequestBody::Status { .. }
            | RequestBody::List { .. }
            | RequestBody::ListPage { .. }
            | RequestBody::Pause { .. }
            | RequestBody::Resume { .. }
            | RequestBody::ConfigGet
            | RequestBody::ConfigSet { .. }
            | RequestBody::Stats
    )
}

/// Connects without blocking past `deadline` (a daemon that does not accept fills its
/// listen backlog, and a plain `connect` then blocks).
fn connect_socket(path: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(Errno::EISCONN) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY) => {
                if Instant::now() >= deadline {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let s = UnixStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next: u64,
    /// What the daemon said in the handshake.
    pub hello: HelloResult,
    path: PathBuf,
    name: String,
    timeouts: Timeouts,
    /// The read timeout the socket has now (saves a system call per line).
    read_timeout: Option<Duration>,
    /// A line read in part when a wait ended (the rest follows on the next read).
    partial: Vec<u8>,
}

impl Client {
    /// Connects with the default [`Timeouts`].
    pub fn connect(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        Client::connect_with(path, client_name, Timeouts::default())
    }

    /// Connects and does the handshake, all within `timeouts.connect`.
    pub fn connect_with(
        path: &Path,
        client_name: &str,
        timeouts: Timeouts,
    ) -> Result<Client, ClientError> {
        let deadline = Instant::now() + timeouts.connect;
        let s = connect_socket(path, deadline).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ClientError::Timeout(timeouts.connect)
            } else {
                ClientError::Connect {
                    path: path.display().to_string(),
                    error: e,
                }
            }
        })?;
        // Requests are small; a daemon that does not read them is as hung as one that
        // does not answer.
        s.set_write_timeout(Some(timeouts.idle.unwrap_or(timeouts.connect)))?;
        let mut c = Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next: 1,
            hello: HelloResult {
                version: 0,
                daemon: String::new(),
            },
            path: path.to_path_buf(),
            name: client_name.into(),
            timeouts,
            read_timeout: None,
            partial: Vec::new(),
        };
        let id = c.send(RequestBody::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.into(),
            lang: Some(crate::i18n::current().lang.clone()).filter(|l| l != "en"),
        })?;
        let h = c.answer(id, &mut |_| {}, || {
            let left = deadline.saturating_duration_since(Instant::now());
            (left > Duration::ZERO).then_some(Some(left))
        });
        let h = h.map_err(|e| match e {
            ClientError::Timeout(_) => ClientError::Timeout(timeouts.connect),
            e => e,
        })?;
        c.hello = serde_json::from_value(h)?;
        Ok(c)
    }

    /// Sends one request and returns its result value.
    pub fn call(&mut self, body: RequestBody) -> Result<serde_json::Value, ClientError> {
        self.call_with(body, &mut |_| {})
    }

    /// Sends one request and decodes its result as `T` (see the typed methods below: each
    /// request's result type is fixed by the protocol).
    pub fn request<T: serde::de::DeserializeOwned>(
        &mut self,
        body: RequestBody,
    ) -> Result<T, ClientError> {
        self.request_with(body, &mut |_| {})
    }

    /// [`Client::request`], passing events that arrive meanwhile to `on_event`.
    pub fn request_with<T: serde::de::DeserializeOwned>(
        &mut self,
        body: RequestBody,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<T, ClientError> {
        Ok(serde_json::from_value(self.call_with(body, on_event)?)?)
    }

    /// The caller's sync roots.
    pub fn roots(&mut self) -> Result<Vec<RootInfo>, ClientError> {
        self.request(RequestBody::Roots)
    }

    /// State of one path.
    pub fn status(&mut self, path: &str) -> Result<PathStatus, ClientError> {
        self.request(RequestBody::Status {
            path: Some(path.into()),
        })
    }

    /// State of every root of the caller.
    pub fn status_all(&mut self) -> Result<Vec<PathStatus>, ClientError> {
        self.request(RequestBody::Status { path: None })
    }

    /// The entries of a folder.
    pub fn list(&mut self, path: &str) -> Result<Vec<PathStatus>, ClientError> {
        self.request(RequestBody::List { path: path.into() })
    }

    /// Entries `offset..offset + limit` of a folder (at most
    /// [`super::proto::MAX_PAGE`]) and how many it
    /// holds.
    pub fn list_page(&mut self, path: &str, offset: u64, limit: u32) -> Result<Page, ClientError> {
        self.list_page_in(path, offset, limit, &PageOrder::default())
    }

    /// `list_page` in another order, or filtered (`order`).
    pub fn list_page_in(
        &mut self,
        path: &str,
        offset: u64,
        limit: u32,
        order: &PageOrder,
    ) -> Result<Page, ClientError> {
        self.request(RequestBody::ListPage {
            path: path.into(),
            offset,
            limit,
            order: order.clone(),
        })
    }

    /// `pin`, `free` or `hydrate` (the body says which), with job events to `on_event`.
    pub fn batch(
        &mut self,
        body: RequestBody,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<BatchResult, ClientError> {
        self.request_with(body, on_event)
    }

    pub fn pause(&mut self, local: Option<&str>) -> Result<Vec<RootInfo>, ClientError> {
        self.request(RequestBody::Pause {
            local: local.map(Into::into),
        })
    }

    pub fn resume(&mut self, local: Option<&str>) -> Result<Vec<RootInfo>, ClientError> {
        self.request(RequestBody::Resume {
            local: local.map(Into::into),
        })
    }

    pub fn sync(&mut self, path: Option<&str>) -> Result<SyncResult, ClientError> {
        self.request(RequestBody::Sync {
            path: path.map(Into::into),
        })
    }

    pub fn login(
        &mut self,
        local: &str,
        secret: &str,
        persist: bool,
    ) -> Result<RootInfo, ClientError> {
        self.request(RequestBody::Login {
            local: local.into(),
            secret: secret.into(),
            persist,
        })
    }

    pub fn config_get(&mut self) -> Result<ConfigResult, ClientError> {
        self.request(RequestBody::ConfigGet)
    }

    pub fn config_set(
        &mut self,
        key: &str,
        value: serde_json::Value,
        local: Option<&str>,
    ) -> Result<ConfigResult, ClientError> {
        self.request(RequestBody::ConfigSet {
            key: key.into(),
            value,
            local: local.map(Into::into),
        })
    }

    pub fn doctor(&mut self) -> Result<DoctorResult, ClientError> {
        self.request(RequestBody::Doctor)
    }

    pub fn stats(&mut self) -> Result<StatsBody, ClientError> {
        self.request(RequestBody::Stats)
    }

    /// Sends one request, passing events that arrive before its answer (its own `job`
    /// progress, subscription traffic) to `on_event`. Waits at most `timeouts.idle` between
    /// two lines from the daemon; for a request that [`may_take_long`], such a silence ends
    /// the wait only when the daemon does not answer a handshake either.
    pub fn call_with(
        &mut self,
        body: RequestBody,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<serde_json::Value, ClientError> {
        let long = may_take_long(&body);
        let id = self.send(body)?;
        let idle = self.timeouts.idle;
        if !long {
            return self.answer(id, on_event, || Some(idle));
        }
        loop {
            match self.answer(id, on_event, || Some(idle)) {
                Err(ClientError::Timeout(d)) if self.daemon_answers() => {
                    tracing::debug!(
                        "no answer within {} but the daemon is alive; waiting on",
                        secs(d)
                    );
                }
                r => return r,
            }
        }
    }

    fn send(&mut self, body: RequestBody) -> Result<u64, ClientError> {
        let id = self.next;
        self.next += 1;
        let mut line = serde_json::to_vec(&Request { id, body })?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| {
            if is_timeout(&e) {
                ClientError::Timeout(self.timeouts.idle.unwrap_or(self.timeouts.connect))
            } else {
                e.into()
            }
        })?;
        Ok(id)
    }

    /// Reads until the answer to request `id`; `wait()` gives the bound for each line
    /// (outer `None`: no time left; inner `None`: no bound).
    fn answer(
        &mut self,
        id: u64,
        on_event: &mut dyn FnMut(Event),
        wait: impl Fn() -> Option<Option<Duration>>,
    ) -> Result<serde_json::Value, ClientError> {
        loop {
            let Some(w) = wait() else {
                return Err(ClientError::Timeout(Duration::ZERO));
            };
            let line = self.read_line(w)?;
            let r = match decode_incoming(&String::from_utf8_lossy(&line))? {
                Incoming::Event(e) => {
                    on_event(e);
                    continue;
                }
                Incoming::Response(r) => r,
            };
            // The daemon answers with id 0 what it cannot tie to a request (too many
            // connections, a frame it could not read): that is the answer to this one.
            let for_this = r.id == id || (r.id == 0 && !r.ok);
            if !for_this {
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

    /// One line (without its newline), waiting at most `wait` for the daemon to send
    /// something. A line cut by the wait is kept and completed by the next read.
    fn read_line(&mut self, wait: Option<Duration>) -> Result<Vec<u8>, ClientError> {
        // A zero read timeout is an error for the socket; the shortest wait is 1 ms.
        let wait = wait.map(|d| d.max(Duration::from_millis(1)));
        if wait != self.read_timeout {
            self.reader.get_ref().set_read_timeout(wait)?;
            self.read_timeout = wait;
        }
        match self.reader.read_until(b'\n', &mut self.partial) {
            Ok(_) if self.partial.last() == Some(&b'\n') => {
                let mut line = std::mem::take(&mut self.partial);
                line.pop();
                Ok(line)
            }
            // End of stream (with or without a partial line).
            Ok(_) => Err(ClientError::Closed),
            Err(e) if is_timeout(&e) => Err(ClientError::Timeout(wait.unwrap_or_default())),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the daemon still answers a handshake on a new connection within the idle
    /// bound (it may be busy with a long request on this one). Refusals count as answers.
    pub fn daemon_answers(&self) -> bool {
        let bound = self.timeouts.idle.unwrap_or(self.timeouts.connect);
        let t = Timeouts {
            connect: bound,
            idle: Some(bound),
            events: None,
        };
        match Client::connect_with(&self.path, &format!("{} (check)", self.name), t) {
            Ok(_) | Err(ClientError::Daemon { .. }) => true,
            Err(e) => {
                tracing::debug!(error = %e, "the daemon does not answer a handshake");
                false
            }
        }
    }

    /// Subscribes this connection to events; read them with [`Client::next_event`].
    pub fn subscribe(&mut self) -> Result<(), ClientError> {
        self.call(RequestBody::Subscribe).map(|_| ())
    }

    /// Blocks for the next event (after [`Client::subscribe`]), at most `timeouts.events`
    /// (by default as long as it takes). After a [`ClientError::Timeout`] the connection
    /// stays usable.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let line = self.read_line(self.timeouts.events)?;
            if let Incoming::Event(e) = decode_incoming(&String::from_utf8_lossy(&line))? {
                return Ok(e);
            }
        }
    }

    /// Bounds how long [`Client::next_event`] waits and the silence calls accept (None:
    /// forever).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> std::io::Result<()> {
        self.timeouts.idle = t;
        self.timeouts.events = t;
        Ok(())
    }

    /// Bounds how long [`Client::next_event`] waits (None: forever), calls unchanged.
    pub fn set_event_timeout(&mut self, t: Option<Duration>) {
        self.timeouts.events = t;
    }

    /// The bounds this client waits with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
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

#[cfg(test)]
mod timeout_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const T: Duration = Duration::from_millis(200);

    fn short() -> Timeouts {
        Timeouts {
            connect: T,
            idle: Some(T),
            events: None,
        }
    }

    fn answer(s: &mut UnixStream, id: &serde_json::Value, result: serde_json::Value) {
        let _ = writeln!(
            s,
            "{}",
            serde_json::json!({"id": id, "ok": true, "result": result})
        );
    }

    fn hello(s: &mut UnixStream, v: &serde_json::Value) {
        answer(
            s,
            &v["id"],
            serde_json::json!({"version": PROTOCOL_VERSION, "daemon": "fake"}),
        );
    }

    /// A fake daemon: every request of every connection goes to `on` (hello included).
    fn fake(
        on: impl Fn(&serde_json::Value, &mut UnixStream) + Send + Sync + 'static,
    ) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("skyfill.sock");
        let l = UnixListener::bind(&p).unwrap();
        let on = Arc::new(on);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let on = on.clone();
                std::thread::spawn(move || {
                    let r = BufReader::new(s.try_clone().unwrap());
                    for line in r.lines() {
                        let Ok(line) = line else { return };
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        on(&v, &mut s);
                    }
                });
            }
        });
        (d, p)
    }

    fn job_line(request: &serde_json::Value) -> String {
        serde_json::json!({"event": "job", "request": request, "job": "pin", "path": "/c",
            "files_done": 1, "files_total": 2, "bytes_done": 1, "bytes_total": 2,
            "finished": false})
        .to_string()
    }

    #[test]
    fn a_daemon_that_accepts_and_never_answers_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("skyfill.sock");
        let l = UnixListener::bind(&p).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming() {
                held.push(s);
            }
        });
        let t = Instant::now();
        let e = Client::connect_with(&p, "test", short()).err().unwrap();
        assert!(matches!(e, ClientError::Timeout(d) if d == T), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            e.to_string()
                .starts_with("the Skyfill daemon did not answer within 0.2 s"),
            "{e}"
        );
        // The default bound, as users read it.
        let d = Timeouts::default();
        assert_eq!(d.connect, Duration::from_secs(30));
        assert_eq!(d.events, None, "subscriptions wait for rare events");
        assert!(ClientError::Timeout(d.idle.unwrap())
            .to_string()
            .contains("did not answer within 30 s"));
    }

    #[test]
    fn a_daemon_that_does_not_accept_times_out_connecting() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("skyfill.sock");
        let l = UnixListener::bind(&p).unwrap();
        // The smallest backlog, never accepted: the queue fills at once.
        nix::sys::socket::listen(&l, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let mut held = Vec::new();
        let mut timed_out = false;
        for _ in 0..16 {
            let t = Instant::now();
            match connect_socket(&p, Instant::now() + T) {
                Ok(s) => held.push(s),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                    assert!(t.elapsed() < Duration::from_secs(3));
                    timed_out = true;
                    break;
                }
            }
        }
        assert!(timed_out, "connect never blocked ({} queued)", held.len());
        let e = Client::connect_with(&p, "test", short()).err().unwrap();
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
        drop(l);
    }

    #[test]
    fn a_quick_request_without_an_answer_times_out() {
        let (_d, p) = fake(|v, s| {
            if v["op"] == "hello" {
                hello(s, v)
            }
        });
        let mut c = Client::connect_with(&p, "test", short()).unwrap();
        let t = Instant::now();
        let e = c.call(RequestBody::Roots).err().unwrap();
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn every_line_restarts_the_idle_bound() {
        let (_d, p) = fake(|v, s| match v["op"].as_str() {
            Some("hello") => hello(s, v),
            _ => {
                for _ in 0..6 {
                    std::thread::sleep(T / 2);
                    let _ = writeln!(s, "{}", job_line(&v["id"]));
                }
                answer(s, &v["id"], serde_json::json!([]));
            }
        });
        let mut c = Client::connect_with(&p, "test", short()).unwrap();
        let t = Instant::now();
        let mut jobs = 0;
        // A quick request: no handshake checks, only the lines keep it going.
        let v = c
            .call_with(RequestBody::Roots, &mut |e| {
                if matches!(e, Event::Job { .. }) {
                    jobs += 1
                }
            })
            .unwrap();
        assert_eq!(v, serde_json::json!([]));
        assert_eq!(jobs, 6);
        assert!(t.elapsed() > 2 * T);
    }

    #[test]
    fn a_long_request_waits_while_the_daemon_answers() {
        let (_d, p) = fake(|v, s| match v["op"].as_str() {
            Some("hello") => hello(s, v),
            _ => {
                // Silent for five idle periods (a big file, a long listing), then done.
                std::thread::sleep(5 * T);
                answer(s, &v["id"], serde_json::json!({"done": true}));
            }
        });
        let mut c = Client::connect_with(&p, "test", short()).unwrap();
        let v = c.call(RequestBody::Sync { path: None }).unwrap();
        assert_eq!(v["done"], true);
    }

    #[test]
    fn a_long_request_ends_when_the_daemon_stops_answering() {
        let hung = Arc::new(AtomicBool::new(false));
        let h = hung.clone();
        let (_d, p) = fake(move |v, s| match v["op"].as_str() {
            Some("hello") if !h.load(Ordering::SeqCst) => hello(s, v),
            Some("hello") => {}
            _ => h.store(true, Ordering::SeqCst),
        });
        let mut c = Client::connect_with(&p, "test", short()).unwrap();
        let t = Instant::now();
        let e = c
            .call(RequestBody::Hydrate {
                path: "/c/f".into(),
                recursive: false,
            })
            .err()
            .unwrap();
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
        assert!(hung.load(Ordering::SeqCst));
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn events_wait_as_told_and_a_cut_line_survives_a_timeout() {
        let (_d, p) = fake(|v, s| match v["op"].as_str() {
            Some("hello") => hello(s, v),
            Some("subscribe") => {
                answer(s, &v["id"], serde_json::json!({"subscribed": true}));
                let e = serde_json::json!({"event": "root", "local": "/c", "change": "paused"})
                    .to_string();
                let (a, b) = e.split_at(10);
                let _ = s.write_all(a.as_bytes());
                std::thread::sleep(3 * T);
                let _ = writeln!(s, "{b}");
            }
            _ => {}
        });
        let mut c = Client::connect_with(&p, "test", short()).unwrap();
        c.subscribe().unwrap();
        c.set_event_timeout(Some(T));
        assert!(matches!(c.next_event(), Err(ClientError::Timeout(_))));
        c.set_event_timeout(None);
        assert_eq!(
            c.next_event().unwrap(),
            Event::Root {
                local: "/c".into(),
                change: super::super::proto::RootChange::Paused
            }
        );
    }

    #[test]
    fn long_requests_are_told_from_quick_ones() {
        assert!(may_take_long(&RequestBody::Sync { path: None }));
        assert!(may_take_long(&RequestBody::Doctor));
        assert!(!may_take_long(&RequestBody::Roots));
        assert!(!may_take_long(&RequestBody::ConfigGet));
    }
}

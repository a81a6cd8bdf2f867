//! The server side of the socket protocol: framing, the handshake, per-peer authorization
//! data (`SO_PEERCRED`), concurrent requests on one connection, job events for long requests
//! and the subscription stream. What a request *does* is the [`Handler`]'s business, so this
//! part is tested without root against a fake handler.

use super::proto::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};
use tracing::Instrument;

/// Who is on the other end of a connection (from `SO_PEERCRED`, never from the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// An event and the user it concerns (the owner of the root it is about).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub uid: u32,
    pub event: Event,
}

/// A refused or failed request, as the client is told.
pub type Fail = ErrorBody;

/// Where a long request reports its progress: `job` events on the requesting connection.
#[derive(Clone)]
pub struct JobSink {
    request: u64,
    tx: Option<mpsc::Sender<String>>,
}

impl JobSink {
    /// A sink that drops everything (internal callers).
    pub fn none() -> JobSink {
        JobSink {
            request: 0,
            tx: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &self,
        job: JobKind,
        path: &str,
        files_done: u64,
        files_total: u64,
        bytes_done: u64,
        bytes_total: u64,
        finished: bool,
    ) {
        if let Some(tx) = &self.tx {
            let e = Event::Job {
                request: self.request,
                job,
                path: path.into(),
                files_done,
                files_total,
                bytes_done,
                bytes_total,
                finished,
            };
            // A slow reader loses progress lines, never the response.
            let _ = tx.try_send(serde_json::to_string(&e).expect("serializable"));
        }
    }
}

#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Name and version reported in the handshake.
    fn daemon_name(&self) -> String;
    /// Carries out one request (after the handshake) for `peer`.
    async fn handle(&self, peer: Peer, body: RequestBody, jobs: JobSink) -> Result<Reply, Fail>;
    /// A receiver of the events `peer` may see (their own; root: all). The server filters
    /// by uid again.
    fn events(&self, peer: Peer) -> broadcast::Receiver<Envelope>;
}

/// Events split by the user they concern: one channel per uid, so one user's event volume
/// never makes another user's subscription lag. Root's channel gets every event.
pub struct EventHub {
    capacity: usize,
    users: std::sync::Mutex<std::collections::HashMap<u32, broadcast::Sender<Envelope>>>,
}

impl EventHub {
    pub fn new(capacity: usize) -> EventHub {
        EventHub {
            capacity,
            users: Default::default(),
        }
    }

    fn sender(&self, uid: u32) -> broadcast::Sender<Envelope> {
        self.users
            .lock()
            .unwrap()
            .entry(uid)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }

    pub fn send(&self, env: Envelope) {
        let users = self.users.lock().unwrap();
        if env.uid != 0 {
            if let Some(root) = users.get(&0) {
                let _ = root.send(env.clone());
            }
        }
        if let Some(tx) = users.get(&env.uid) {
            let _ = tx.send(env);
        }
    }

    pub fn subscribe(&self, uid: u32) -> broadcast::Receiver<Envelope> {
        self.sender(uid).subscribe()
    }
}

/// How many connections one user and all users together may hold open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub per_user: usize,
    pub total: usize,
}

/// Admission of connections under [`ConnLimits`]; a [`Ticket`] holds a place until dropped.
pub struct Admission {
    limits: ConnLimits,
    counts: std::sync::Mutex<(usize, std::collections::HashMap<u32, usize>)>,
}

pub struct Ticket {
    adm: Arc<Admission>,
    uid: u32,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.adm.counts.lock().unwrap();
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.uid);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: ConnLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Default::default(),
        })
    }

    /// A place for one more connection of `uid`, or why not.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Ticket, String> {
        let mut c = self.counts.lock().unwrap();
        let mine = c.1.get(&uid).copied().unwrap_or(0);
        if mine >= self.limits.per_user {
            return Err(format!(
                "too many connections from uid {uid} (limit {}); close some and retry",
                self.limits.per_user
            ));
        }
        if c.0 >= self.limits.total {
            return Err(format!(
                "the daemon has too many connections (limit {}); retry later",
                self.limits.total
            ));
        }
        c.0 += 1;
        *c.1.entry(uid).or_insert(0) += 1;
        Ok(Ticket {
            adm: self.clone(),
            uid,
        })
    }

    pub fn open_connections(&self) -> usize {
        self.counts.lock().unwrap().0
    }
}

/// Accepts connections for ever. A connection over its user's or the overall limit gets one
/// error line and is closed; `accept` errors (EMFILE, ENFILE, ENOMEM ...) are logged and
/// waited out, never fatal: the daemon keeps answering the kernel and the users it can.
pub async fn accept_loop<H: Handler>(
    h: Arc<H>,
    listener: tokio::net::UnixListener,
    adm: Arc<Admission>,
) {
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        let s = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if last_warn.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = adm.open_connections(), "cannot accept a connection; waiting");
                    last_warn = Some(std::time::Instant::now());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(cred) = s.peer_cred() else { continue };
        match adm.admit(cred.uid()) {
            Ok(ticket) => {
                let h = h.clone();
                tokio::spawn(async move {
                    serve(h, s).await;
                    drop(ticket);
                });
            }
            Err(why) => {
                tracing::debug!(uid = cred.uid(), "{why}");
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let r = Response::err(0, ErrorCode::Busy, why);
                    let mut line = serde_json::to_string(&r).expect("serializable");
                    line.push('\n');
                    let mut s = s;
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        s.write_all(line.as_bytes()),
                    )
                    .await;
                });
            }
        }
    }
}

/// Requests one connection may have running at once.
const IN_FLIGHT: usize = 16;

/// Serves one connection until the peer closes it or sends a bad frame.
pub async fn serve<H: Handler>(h: Arc<H>, s: tokio::net::UnixStream) {
    let Ok(cred) = s.peer_cred() else { return };
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    serve_peer(h, s, peer).await
}

/// [`serve`] for a peer already identified (tests use it to be any user while running as
/// root).
async fn serve_peer<H: Handler>(h: Arc<H>, s: tokio::net::UnixStream, peer: Peer) {
    let (rd, wr) = s.into_split();
    let mut reader = FramedRead::new(rd, LinesCodec::new_with_max_length(MAX_LINE));
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        let mut w = FramedWrite::new(wr, LinesCodec::new());
        while let Some(line) = rx.recv().await {
            if w.send(line).await.is_err() {
                break;
            }
        }
    });
    let send = |tx: &mpsc::Sender<String>, r: Response| {
        let tx = tx.clone();
        async move {
            let _ = tx
                .send(serde_json::to_string(&r).expect("serializable"))
                .await;
        }
    };
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut greeted = false;
    // The client's language, from its hello (None: English).
    let mut lang: Option<&'static crate::i18n::Catalogue> = None;
    let mut subscribed: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(line) = reader.next().await {
        let line = match line {
            Ok(l) => l,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(uid = peer.uid, "oversized frame; closing the connection");
                send(
                    &tx,
                    Response::err(
                        0,
                        ErrorCode::BadRequest,
                        format!("message longer than {MAX_LINE} bytes; closing"),
                    ),
                )
                .await;
                break;
            }
            Err(LinesCodecError::Io(_)) => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        let req = match decode_request(line.as_bytes()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(uid = peer.uid, error = %e, "malformed frame; closing the connection");
                send(
                    &tx,
                    Response::err(e.id, ErrorCode::BadRequest, format!("{e}; closing")),
                )
                .await;
                break;
            }
        };
        let id = req.id;
        match req.body {
            RequestBody::Hello {
                version, lang: l, ..
            } => {
                lang = l.as_deref().and_then(crate::i18n::shared);
                let r = if version != PROTOCOL_VERSION {
                    Response::err(
                        id,
                        ErrorCode::VersionMismatch,
                        format!(
                            "daemon speaks protocol {PROTOCOL_VERSION}, client {version}; install matching versions of skyfill and skyfilld"
                        ),
                    )
                } else {
                    greeted = true;
                    Response::ok(
                        id,
                        HelloResult {
                            version: PROTOCOL_VERSION,
                            daemon: h.daemon_name(),
                        },
                    )
                };
                send(&tx, r).await;
            }
            _ if !greeted => {
                send(
                    &tx,
                    Response::err(id, ErrorCode::BadRequest, "send hello first"),
                )
                .await;
            }
            RequestBody::Subscribe => {
                if subscribed.is_none() {
                    let mut events = h.events(peer);
                    let etx = tx.clone();
                    let lang = lang;
                    subscribed = Some(tokio::spawn(async move {
                        loop {
                            let line = match events.recv().await {
                                Ok(env) if peer.is_root() || env.uid == peer.uid => {
                                    let mut event = env.event;
                                    if let Some(cat) = lang {
                                        event.localize(cat);
                                    }
                                    serde_json::to_string(&event)
                                }
                                Ok(_) => continue,
                                Err(broadcast::error::RecvError::Lagged(n)) => {
                                    serde_json::to_string(&Event::Lagged { missed: n })
                                }
                                Err(broadcast::error::RecvError::Closed) => break,
                            };
                            if etx.send(line.expect("serializable")).await.is_err() {
                                break;
                            }
                        }
                    }));
                }
                send(
                    &tx,
                    Response::ok(id, serde_json::json!({"subscribed": true})),
                )
                .await;
            }
            body => {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (h, tx) = (h.clone(), tx.clone());
                let jobs = JobSink {
                    request: id,
                    tx: Some(tx.clone()),
                };
                let span = tracing::info_span!("request", id, uid = peer.uid);
                tokio::spawn(
                    async move {
                        let r = match h.handle(peer, body, jobs).await {
                            Ok(mut v) => {
                                if let Some(cat) = lang {
                                    v.localize(cat);
                                }
                                Response::ok(id, v)
                            }
                            Err(e) => {
                                tracing::info!(code = ?e.code, message = %e.message, "request refused");
                                let message = match (&e.said, lang) {
                                    (Some(s), Some(cat)) => s.render(cat),
                                    _ => e.message,
                                };
                                Response::err(id, e.code, message)
                            }
                        };
                        let _ = tx
                            .send(serde_json::to_string(&r).expect("serializable"))
                            .await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
    }
    if let Some(t) = subscribed {
        t.abort();
    }
    drop(tx);
    // Running requests finish and their answers are flushed before the socket closes.
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    struct Fake {
        tx: broadcast::Sender<Envelope>,
    }

    #[async_trait::async_trait]
    impl Handler for Fake {
        fn daemon_name(&self) -> String {
            "fake".into()
        }
        async fn handle(
            &self,
            peer: Peer,
            body: RequestBody,
            jobs: JobSink,
        ) -> Result<Reply, Fail> {
            match body {
                RequestBody::Stats => Ok(Reply::Stats(StatsBody {
                    requests: peer.uid.into(),
                    ..Default::default()
                })),
                RequestBody::Hydrate { path, .. } => {
                    jobs.report(JobKind::Hydrate, &path, 1, 2, 3, 4, true);
                    Ok(Reply::Batch(BatchResult::default()))
                }
                RequestBody::Doctor => {
                    let (what, fix) = (
                        crate::said!("{root} is paused", root = "/c"),
                        crate::said!("resume with `skyfill resume`"),
                    );
                    Ok(Reply::Doctor(DoctorResult {
                        daemon: "fake".into(),
                        kernel: String::new(),
                        checks: vec![Check {
                            level: Level::Warn,
                            what: what.english(),
                            fix: fix.english(),
                            said: Some((what, fix)),
                        }],
                        gate: Default::default(),
                    }))
                }
                _ => {
                    let said = crate::said!("{path} is not in one of your sync roots", path = "/x");
                    Err(ErrorBody {
                        code: ErrorCode::NotARoot,
                        message: said.english(),
                        said: Some(said),
                    })
                }
            }
        }
        fn events(&self, _peer: Peer) -> broadcast::Receiver<Envelope> {
            // Every event, so that the server's own uid filter is what the test checks.
            self.tx.subscribe()
        }
    }

    type Ends = (
        BufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
        broadcast::Sender<Envelope>,
    );

    /// A served connection to a [`Fake`] handler, as `peer` (`None`: whoever runs the test,
    /// from `SO_PEERCRED`).
    async fn connect(peer: Option<Peer>) -> Ends {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (tx, _) = broadcast::channel(16);
        let h = Arc::new(Fake { tx: tx.clone() });
        match peer {
            None => tokio::spawn(serve(h, a)),
            Some(p) => tokio::spawn(serve_peer(h, a, p)),
        };
        let (r, w) = b.into_split();
        (BufReader::new(r), w, tx)
    }

    async fn pair() -> Ends {
        connect(None).await
    }

    async fn line(r: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> serde_json::Value {
        let mut s = String::new();
        r.read_line(&mut s).await.unwrap();
        serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
    }

    #[tokio::test]
    async fn handshake_first_then_requests_with_ids() {
        let (mut r, mut w, _) = pair().await;
        w.write_all(b"{\"id\":1,\"op\":\"stats\"}\n").await.unwrap();
        let v = line(&mut r).await;
        assert_eq!(v["error"]["code"], "bad_request");
        w.write_all(b"{\"id\":2,\"op\":\"hello\",\"version\":99,\"client\":\"t\"}\n")
            .await
            .unwrap();
        assert_eq!(line(&mut r).await["error"]["code"], "version_mismatch");
        w.write_all(b"{\"id\":3,\"op\":\"hello\",\"version\":1,\"client\":\"t\"}\n")
            .await
            .unwrap();
        assert_eq!(line(&mut r).await["result"]["daemon"], "fake");
        w.write_all(b"{\"id\":4,\"op\":\"stats\"}\n").await.unwrap();
        let v = line(&mut r).await;
        assert_eq!(v["id"], 4);
        assert_eq!(v["result"]["requests"], nix::unistd::getuid().as_raw());
        w.write_all(b"{\"id\":5,\"op\":\"hydrate\",\"path\":\"/x\"}\n")
            .await
            .unwrap();
        let job = line(&mut r).await;
        assert_eq!(job["event"], "job");
        assert_eq!(job["request"], 5);
        assert_eq!(line(&mut r).await["id"], 5);
    }

    #[tokio::test]
    async fn errors_come_in_the_language_of_the_hello() {
        for (hello, want) in [
            (r#""client":"t""#, "/x is not in one of your sync roots"),
            (
                r#""client":"t","lang":"en""#,
                "/x is not in one of your sync roots",
            ),
            (
                r#""client":"t","lang":"xx""#,
                "/x is not in one of your sync roots",
            ),
            (
                r#""client":"t","lang":"de""#,
                "/x liegt in keinem Ihrer Synchronisationsordner",
            ),
        ] {
            let (mut r, mut w, tx) = pair().await;
            let msg = format!("{{\"id\":1,\"op\":\"hello\",\"version\":1,{hello}}}\n");
            w.write_all(msg.as_bytes()).await.unwrap();
            assert_eq!(line(&mut r).await["result"]["daemon"], "fake", "{hello}");
            w.write_all(b"{\"id\":2,\"op\":\"roots\"}\n").await.unwrap();
            let v = line(&mut r).await;
            assert_eq!(v["error"]["code"], "not_a_root", "{hello}");
            assert_eq!(v["error"]["message"], want, "{hello}");
            // And the texts of answers: doctor's findings.
            w.write_all(b"{\"id\":3,\"op\":\"doctor\"}\n")
                .await
                .unwrap();
            let v = line(&mut r).await;
            let what = v["result"]["checks"][0]["what"]
                .as_str()
                .unwrap()
                .to_string();
            let german = hello.contains("\"de\"");
            assert_eq!(what == "/c is paused", !german, "{hello}: {v}");
            assert_eq!(what == "/c ist pausiert", german, "{hello}: {v}");
            // And events.
            w.write_all(b"{\"id\":4,\"op\":\"subscribe\"}\n")
                .await
                .unwrap();
            assert_eq!(line(&mut r).await["result"]["subscribed"], true);
            let said = crate::said!("{path} is not in one of your sync roots", path = "/e");
            tx.send(Envelope {
                uid: nix::unistd::getuid().as_raw(),
                event: Event::Error {
                    path: None,
                    code: ErrorCode::NotARoot,
                    message: said.english(),
                    said: Some(said),
                },
            })
            .unwrap();
            let v = line(&mut r).await;
            let want = if german {
                "/e liegt in keinem Ihrer Synchronisationsordner"
            } else {
                "/e is not in one of your sync roots"
            };
            assert_eq!(v["message"], want, "{hello}: {v}");
        }
    }

    /// A connection of uid 1000 (whatever uid runs the test), its handler giving it every
    /// user's events: the server's own filter is what is checked.
    async fn pair_as_user() -> Ends {
        connect(Some(Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
        }))
        .await
    }

    #[tokio::test]
    async fn subscription_sees_only_own_events() {
        let (mut r, mut w, tx) = pair_as_user().await;
        w.write_all(
            b"{\"id\":1,\"op\":\"hello\",\"version\":1,\"client\":\"t\"}\n{\"id\":2,\"op\":\"subscribe\"}\n",
        )
        .await
        .unwrap();
        line(&mut r).await;
        assert_eq!(line(&mut r).await["result"]["subscribed"], true);
        // Another user's event first (also root's own), then one of uid 1000's.
        for other in [1001, 0] {
            tx.send(Envelope {
                uid: other,
                event: Event::Lagged { missed: 99 },
            })
            .unwrap();
        }
        tx.send(Envelope {
            uid: 1000,
            event: Event::Root {
                local: "/l".into(),
                change: RootChange::Paused,
            },
        })
        .unwrap();
        let v = line(&mut r).await;
        assert_eq!(v["event"], "root", "{v}");
    }

    /// F14: each user's events go to their own channel (root's gets all): one user's volume
    /// never makes another lag, and a user's channel never carries another user's events.
    #[tokio::test]
    async fn event_channels_are_per_user() {
        let hub = EventHub::new(4);
        let mut alice = hub.subscribe(1000);
        let mut bob = hub.subscribe(1001);
        let mut root = hub.subscribe(0);
        let ev = |uid| Envelope {
            uid,
            event: Event::Lagged { missed: uid as u64 },
        };
        for _ in 0..50 {
            hub.send(ev(1000));
        }
        hub.send(ev(1001));
        // Bob did not lag behind alice's 50 events and sees only his own.
        let got = bob.recv().await.unwrap();
        assert_eq!(got.uid, 1001);
        assert!(bob.try_recv().is_err());
        // Alice lagged on her own volume only.
        assert!(matches!(
            alice.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        while let Ok(e) = alice.try_recv() {
            assert_eq!(e.uid, 1000, "alice received another user's event");
        }
        // Root sees everybody (it lagged too, on the sum).
        let mut uids = std::collections::HashSet::new();
        loop {
            match root.try_recv() {
                Ok(e) => {
                    uids.insert(e.uid);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        assert!(uids.contains(&1001));
    }

    #[test]
    fn connection_caps_per_user_and_in_all() {
        let adm = Admission::new(ConnLimits {
            per_user: 2,
            total: 3,
        });
        let a1 = adm.admit(1000).unwrap();
        let _a2 = adm.admit(1000).unwrap();
        assert!(adm.admit(1000).err().unwrap().contains("uid 1000"));
        let _b1 = adm.admit(1001).unwrap();
        assert!(adm
            .admit(1002)
            .err()
            .unwrap()
            .contains("too many connections"));
        drop(a1);
        let _c1 = adm.admit(1002).unwrap();
        assert_eq!(adm.open_connections(), 3);
    }

    #[tokio::test]
    async fn malformed_and_oversized_frames_close_only_that_connection() {
        let (mut r, mut w, _) = pair().await;
        w.write_all(b"{\"id\":1,\"op\":\"hello\",\"version\":1,\"client\":\"t\"}\n")
            .await
            .unwrap();
        line(&mut r).await;
        w.write_all(b"{\"id\":8,\"op\":\"nope\"}\n").await.unwrap();
        let v = line(&mut r).await;
        assert_eq!(v["id"], 8);
        assert_eq!(v["error"]["code"], "bad_request");
        let mut s = String::new();
        assert_eq!(r.read_line(&mut s).await.unwrap(), 0, "connection closed");

        let (mut r, mut w, _) = pair().await;
        let big = vec![b'x'; MAX_LINE + 10];
        let _ = w.write_all(&big).await;
        let _ = w.write_all(b"\n").await;
        let v = line(&mut r).await;
        assert_eq!(v["error"]["code"], "bad_request");
    }
}

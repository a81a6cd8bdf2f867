//! A TCP proxy for fault tests: forwards to a real server, and on command drops connections,
//! stalls, cuts responses after N bytes, throttles responses, answers 503 with Retry-After, or
//! refuses connections.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Pass,
    /// Forward, but close the connection after this many response bytes.
    CutAfter(usize),
    /// Accept and never answer.
    Stall,
    /// Answer `503 Service Unavailable` with this Retry-After (seconds).
    Unavailable(u64),
    /// Answer `500 Internal Server Error`.
    Error500,
    /// Close each connection at once (a reset before any answer).
    Drop,
    /// Forward at most this many bytes a second each way on each connection (a slow link:
    /// downloads and uploads take long enough to be interrupted).
    Throttle(u64),
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// Bumped by `set`: live connections end, so pooled connections see the new mode too.
    epoch: Arc<AtomicU64>,
    /// Request bytes (client to server) still allowed; at zero every connection drops.
    up_budget: Arc<std::sync::atomic::AtomicI64>,
    /// Mode for the next `budget` connections, then Pass. (mode, budget)
    state: Arc<Mutex<(Mode, u64)>>,
    pub connections: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new((Mode::Pass, 0u64)));
        let connections = Arc::new(AtomicU64::new(0));
        let (st, conns) = (state.clone(), connections.clone());
        let epoch = Arc::new(AtomicU64::new(0));
        let up_budget = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
        let (ep, ub) = (epoch.clone(), up_budget.clone());
        tokio::spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else { return };
                conns.fetch_add(1, Ordering::SeqCst);
                if ub.load(Ordering::SeqCst) <= 0 {
                    continue; // dropped at once
                }
                let mode = {
                    let mut g = st.lock().unwrap();
                    if g.1 > 0 {
                        g.1 -= 1;
                        g.0.clone()
                    } else {
                        Mode::Pass
                    }
                };
                tokio::spawn(handle(c, target, mode, ep.clone(), ub.clone()));
            }
        });
        Proxy {
            addr,
            epoch,
            up_budget,
            state,
            connections,
        }
    }

    /// The next `n` connections get `mode` (u64::MAX: until changed).
    pub fn set(&self, mode: Mode, n: u64) {
        *self.state.lock().unwrap() = (mode, n);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// After `bytes` more request bytes, every connection (live or new) is dropped.
    pub fn cut_uploads_after(&self, bytes: i64) {
        self.up_budget.store(bytes, Ordering::SeqCst);
    }

    pub fn restore_uploads(&self) {
        self.up_budget.store(i64::MAX, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(
    mut c: TcpStream,
    target: SocketAddr,
    mode: Mode,
    epoch: Arc<AtomicU64>,
    up_budget: Arc<std::sync::atomic::AtomicI64>,
) {
    let my_epoch = epoch.load(Ordering::SeqCst);
    let canned = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n")
    };
    match mode {
        Mode::Drop => return,
        Mode::Stall => {
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
        Mode::Unavailable(ra) => {
            let mut buf = [0u8; 65536];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(
                    canned("503 Service Unavailable", &format!("Retry-After: {ra}\r\n")).as_bytes(),
                )
                .await;
            return;
        }
        Mode::Error500 => {
            let mut buf = [0u8; 65536];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(canned("500 Internal Server Error", "").as_bytes())
                .await;
            return;
        }
        _ => {}
    }
    let Ok(s) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = c.into_split();
    let (mut sr, mut sw) = s.into_split();
    let ep2 = epoch.clone();
    let rate = match mode {
        Mode::Throttle(r) => Some(r.max(1)),
        _ => None,
    };
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; if rate.is_some() { 16 * 1024 } else { 64 * 1024 }];
        let started = tokio::time::Instant::now();
        let mut forwarded = 0u64;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let left = up_budget.fetch_sub(n as i64, Ordering::SeqCst);
            if left <= n as i64 || ep2.load(Ordering::SeqCst) != my_epoch {
                break;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            forwarded += n as u64;
            if let Some(r) = rate {
                let due = started + std::time::Duration::from_secs_f64(forwarded as f64 / r as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        let _ = sw.shutdown().await;
    });
    let limit = match mode {
        Mode::CutAfter(n) => n,
        _ => usize::MAX,
    };
    let started = tokio::time::Instant::now();
    let mut sent = 0usize;
    let mut buf = vec![0u8; if rate.is_some() { 16 * 1024 } else { 64 * 1024 }];
    loop {
        let n = tokio::select! {
            r = sr.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = async {
                while epoch.load(Ordering::SeqCst) == my_epoch && !up.is_finished() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            } => break,
        };
        let take = n.min(limit - sent);
        if cw.write_all(&buf[..take]).await.is_err() {
            break;
        }
        sent += take;
        if sent >= limit {
            break;
        }
        if let Some(r) = rate {
            let due = started + std::time::Duration::from_secs_f64(sent as f64 / r as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    up.abort();
}

//! Fault injection and generic retries around any `Remote`, for tests.
//!
//! [`Faulty`] makes a share of calls fail with transient errors and makes reads stop halfway
//! (after writing part of the range, as a reset connection does). [`Retrying`] retries any
//! remote's transient failures with the shared [`RetryPolicy`]; the conformance suite runs
//! `Retrying<Faulty<Memory>>` to show that faults never turn into wrong bytes.

use super::retry::{retry, Breaker, RetryPolicy};
use super::{Moved, Precondition, ReadRange, Remote, RemoteError, Result, Sink, WalkStats};
use crate::model::{Kind, RelPath, RemoteEntry};
use async_trait::async_trait;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Faulty<R> {
    inner: R,
    /// Every `period`-th call fails (0 = never).
    period: u64,
    calls: AtomicU64,
    pub injected: AtomicU64,
}

impl<R: Remote> Faulty<R> {
    pub fn new(inner: R, period: u64) -> Self {
        Faulty {
            inner,
            period,
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    fn fault(&self, path: &RelPath) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.period > 0 && n % self.period == 0 {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let which = (n / self.period) % 3;
            return Err(match which {
                0 => RemoteError::Http {
                    path: path.clone(),
                    status: 503,
                    retry_after: None,
                    detail: Some("injected".into()),
                },
                1 => RemoteError::Network {
                    path: path.clone(),
                    detail: "injected connection reset".into(),
                },
                _ => RemoteError::Http {
                    path: path.clone(),
                    status: 429,
                    retry_after: Some(std::time::Duration::from_millis(5)),
                    detail: Some("injected".into()),
                },
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<R: Remote> Remote for Faulty<R> {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        self.fault(path)?;
        self.inner.stat(path).await
    }
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        self.fault(dir)?;
        self.inner.list_dir(dir).await
    }
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        self.fault(dir)?;
        self.inner.walk(dir, sink).await
    }
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        if let Err(e) = self.fault(req.path) {
            // Like a connection reset mid-body: half the range arrives, then the error.
            if req.len > 1 {
                self.inner
                    .read_range(ReadRange {
                        len: req.len / 2,
                        ..req
                    })
                    .await?;
            }
            return Err(e);
        }
        self.inner.read_range(req).await
    }
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        self.fault(path)?;
        self.inner.upload(path, src, pre).await
    }
    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        self.fault(path)?;
        self.inner.delete(path, kind).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        self.fault(from)?;
        self.inner.rename(from, to, kind).await
    }
    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        self.fault(path)?;
        self.inner.mkdir(path).await
    }
}

/// Retries transient failures of a remote that has no retries of its own.
pub struct Retrying<R> {
    inner: R,
    policy: RetryPolicy,
    breaker: Breaker,
}

impl<R: Remote> Retrying<R> {
    pub fn new(inner: R, policy: RetryPolicy) -> Self {
        Retrying {
            inner,
            policy,
            breaker: Breaker::default(),
        }
    }
}

#[async_trait]
impl<R: Remote> Remote for Retrying<R> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        retry(&self.policy, &self.breaker, "stat", path, |_| {
            self.inner.stat(path)
        })
        .await
    }
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        retry(&self.policy, &self.breaker, "list", dir, |_| {
            self.inner.list_dir(dir)
        })
        .await
    }
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        // A walk is not restartable once entries went out; only a failure before the first
        // entry is retried.
        let mut attempt = 0;
        loop {
            let mut emitted = 0u64;
            let res = {
                let mut counting = |e: RemoteEntry| {
                    emitted += 1;
                    sink(e)
                };
                self.inner.walk(dir, &mut counting).await
            };
            match res {
                Err(e)
                    if e.is_transient()
                        && emitted == 0
                        && attempt + 1 < self.policy.max_attempts =>
                {
                    attempt += 1;
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        retry(&self.policy, &self.breaker, "read", req.path, |_| {
            self.inner.read_range(req)
        })
        .await
    }
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        retry(&self.policy, &self.breaker, "upload", path, |_| {
            self.inner.upload(path, src, pre)
        })
        .await
    }
    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        retry(&self.policy, &self.breaker, "delete", path, |_| {
            self.inner.delete(path, kind)
        })
        .await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        retry(&self.policy, &self.breaker, "rename", from, |_| {
            self.inner.rename(from, to, kind)
        })
        .await
    }
    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        retry(&self.policy, &self.breaker, "mkdir", path, |_| {
            self.inner.mkdir(path)
        })
        .await
    }
}

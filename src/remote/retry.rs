//! Retries with exponential backoff and full jitter, `Retry-After`, a total time budget, and an
//! offline breaker so that many callers do not hammer a dead server (no retry storms).

use super::{RemoteError, Result};
use crate::model::RelPath;
use rand::Rng;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How hard to try before giving up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles each attempt up to `max_delay`, with full jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Total time after which the caller gets [`RemoteError::Exhausted`].
    pub budget: Duration,
    /// After a failure that says "offline", fail fast for this long before trying again.
    pub offline_hold: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(30),
            offline_hold: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `n+1` after `n` failures (n >= 1): full jitter in [0, cap].
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let ms = cap.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }
}

/// Shared per-remote state: when did the server last look unreachable?
#[derive(Debug, Default)]
pub struct Breaker {
    offline: Mutex<Option<(Instant, String)>>,
}

impl Breaker {
    /// Err(Offline) while a recent failure said the server is unreachable.
    pub fn check(&self, path: &RelPath, hold: Duration) -> Result<()> {
        let g = self.offline.lock().unwrap();
        if let Some((at, last)) = g.as_ref() {
            let ago = at.elapsed();
            if ago < hold {
                return Err(RemoteError::Offline {
                    path: path.clone(),
                    ago,
                    last: last.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn record(&self, ok: bool, err: Option<&RemoteError>) {
        let mut g = self.offline.lock().unwrap();
        if ok {
            *g = None;
        } else if let Some(e) = err {
            if e.is_offline() {
                *g = Some((Instant::now(), e.to_string()));
            }
        }
    }

    pub fn is_offline(&self, hold: Duration) -> bool {
        self.check(&RelPath::root(), hold).is_err()
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy's budget is spent.
/// `op` gets the attempt number (0-based) and should be idempotent.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    breaker: &Breaker,
    what: &str,
    path: &RelPath,
    mut op: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    breaker.check(path, policy.offline_hold)?;
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        let remaining = policy.budget.saturating_sub(start.elapsed());
        let res = match tokio::time::timeout(remaining, op(attempt)).await {
            Ok(r) => r,
            Err(_) => Err(RemoteError::Stalled {
                path: path.clone(),
                after: policy.budget,
            }),
        };
        attempt += 1;
        match res {
            Ok(v) => {
                breaker.record(true, None);
                return Ok(v);
            }
            Err(e) if !e.is_transient() => {
                return Err(e);
            }
            Err(e) => {
                let elapsed = start.elapsed();
                let mut delay = policy.backoff(attempt);
                if let Some(ra) = e.retry_after() {
                    delay = delay.max(ra);
                }
                let out_of_time = elapsed + delay >= policy.budget;
                if attempt >= policy.max_attempts || out_of_time {
                    tracing::warn!(%path, what, attempt, ?elapsed, error = %e, "giving up");
                    breaker.record(false, Some(&e));
                    return Err(RemoteError::Exhausted {
                        path: path.clone(),
                        attempts: attempt,
                        elapsed,
                        last: Box::new(e),
                    });
                }
                tracing::debug!(%path, what, attempt, ?delay, error = %e, "retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            budget: Duration::from_secs(5),
            offline_hold: Duration::from_millis(200),
        }
    }

    fn http(status: u16, ra: Option<Duration>) -> RemoteError {
        RemoteError::Http {
            path: RelPath::root(),
            status,
            retry_after: ra,
            detail: None,
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let n = AtomicU32::new(0);
        let b = Breaker::default();
        let v = retry(&fast(), &b, "t", &RelPath::root(), |_| async {
            if n.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(http(503, None))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let n = AtomicU32::new(0);
        let b = Breaker::default();
        let e = retry(&fast(), &b, "t", &RelPath::root(), |_| async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(http(404, None))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, RemoteError::Http { status: 404, .. }));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_breaker_fails_fast() {
        let n = AtomicU32::new(0);
        let b = Breaker::default();
        let e = retry(&fast(), &b, "t", &RelPath::root(), |_| async {
            n.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(RemoteError::Network {
                path: RelPath::root(),
                detail: "refused".into(),
            })
        })
        .await
        .unwrap_err();
        assert!(
            matches!(e, RemoteError::Exhausted { attempts: 4, .. }),
            "{e}"
        );
        assert_eq!(n.load(Ordering::SeqCst), 4);
        // Now offline: the next call fails at once without calling op.
        let e = retry(&fast(), &b, "t", &RelPath::root(), |_| async {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(matches!(e, RemoteError::Offline { .. }));
        assert_eq!(n.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_millis(250)).await;
        retry(&fast(), &b, "t", &RelPath::root(), |_| async { Ok(()) })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn retry_after_longer_than_budget_gives_up_early() {
        let mut p = fast();
        p.budget = Duration::from_millis(500);
        let b = Breaker::default();
        let t = Instant::now();
        let e = retry(&p, &b, "t", &RelPath::root(), |_| async {
            Err::<(), _>(http(429, Some(Duration::from_secs(60))))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, RemoteError::Exhausted { attempts: 1, .. }));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for f in 1..20 {
            assert!(p.backoff(f) <= p.max_delay);
        }
        assert!(p.backoff(1) <= Duration::from_millis(100));
    }
}

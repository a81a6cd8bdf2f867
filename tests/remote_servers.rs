//! The remote conformance suite and fault tests against real servers on 127.0.0.1:
//! Apache mod_dav (Depth infinity on and off, Basic auth), rclone serve webdav, s3s-fs
//! (path-style and virtual-hosted) and rclone serve s3. `scripts/test` starts the servers
//! (tests/harness/servers.sh) and exports their addresses; a missing server is a failure.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/suite.rs"]
mod suite;

use proxy::{Mode, Proxy};
use skyfill::model::{RelPath, Version};
use skyfill::remote::http::HttpConfig;
use skyfill::remote::retry::RetryPolicy;
use skyfill::remote::s3::{S3Config, S3};
use skyfill::remote::webdav::{WebDav, WebDavConfig};
use skyfill::remote::{Precondition, ReadRange, Remote, RemoteError};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use suite::{data, file_with, p};
use url::Url;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need real servers; run scripts/test, which starts them"
        )
    })
}

fn scratch() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

fn http() -> HttpConfig {
    HttpConfig::default()
}

/// A WebDAV remote rooted in a fresh collection below `base` (created with MKCOL).
async fn dav_at(base: &str, auth: bool, cfg: HttpConfig) -> WebDav {
    let (user, password) = if auth {
        (
            Some(env("SKYFILL_TEST_DAV_USER")),
            Some(env("SKYFILL_TEST_DAV_PASS")),
        )
    } else {
        (None, None)
    };
    let top = WebDav::new(WebDavConfig {
        url: Url::parse(base).unwrap(),
        user: user.clone(),
        password: password.clone(),
        http: cfg.clone(),
    })
    .unwrap();
    let s = scratch();
    top.mkdir(&p(&s))
        .await
        .unwrap_or_else(|e| panic!("MKCOL on {base}: {e}"));
    WebDav::new(WebDavConfig {
        url: Url::parse(&format!("{}/{s}/", base.trim_end_matches('/'))).unwrap(),
        user,
        password,
        http: cfg,
    })
    .unwrap()
}

fn s3_cfg(endpoint: &str, cfg: HttpConfig) -> S3Config {
    let keys = env("SKYFILL_TEST_S3_KEYS");
    let (a, k) = keys.split_once(':').unwrap();
    let mut c = S3Config::new(Url::parse(endpoint).unwrap(), "bucket");
    c.prefix = scratch();
    c.credentials = Some((a.into(), k.into()));
    c.http = cfg;
    c
}

#[tokio::test]
async fn apache_conforms() {
    let r = dav_at(
        &format!("{}/dav/", env("SKYFILL_TEST_APACHE")),
        false,
        http(),
    )
    .await;
    suite::run_all(&r).await;
}

#[tokio::test]
async fn apache_without_depth_infinity_conforms() {
    let r = dav_at(
        &format!("{}/dav1/", env("SKYFILL_TEST_APACHE")),
        false,
        http(),
    )
    .await;
    suite::run_all(&r).await;
}

#[tokio::test]
async fn apache_with_basic_auth_conforms() {
    let r = dav_at(
        &format!("{}/davauth/", env("SKYFILL_TEST_APACHE")),
        true,
        http(),
    )
    .await;
    suite::run_all(&r).await;
}

#[tokio::test]
async fn rclone_webdav_conforms() {
    let r = dav_at(&env("SKYFILL_TEST_RCLONE_DAV"), true, http()).await;
    suite::run_all(&r).await;
}

#[tokio::test]
async fn s3s_fs_conforms() {
    suite::run_all(&S3::new(s3_cfg(&env("SKYFILL_TEST_S3S"), http())).unwrap()).await;
}

#[tokio::test]
async fn s3s_fs_virtual_hosted_conforms() {
    let ep = Url::parse(&env("SKYFILL_TEST_S3S")).unwrap();
    let port = ep.port().unwrap();
    let mut cfg = http();
    cfg.resolve = vec![(
        "bucket.localhost".into(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )];
    let mut c = s3_cfg(&format!("http://localhost:{port}"), cfg);
    c.path_style = false;
    suite::run_all(&S3::new(c).unwrap()).await;
}

#[tokio::test]
async fn rclone_s3_conforms() {
    suite::run_all(&S3::new(s3_cfg(&env("SKYFILL_TEST_RCLONE_S3"), http())).unwrap()).await;
}

#[tokio::test]
async fn wrong_credentials_are_auth_errors() {
    let mut c = s3_cfg(&env("SKYFILL_TEST_S3S"), http());
    c.credentials = Some(("skyfillak".into(), "wrong".into()));
    let e = S3::new(c)
        .unwrap()
        .list_dir(&RelPath::root())
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Auth { .. }), "{e}");
    let r = WebDav::new(WebDavConfig {
        url: Url::parse(&format!("{}/davauth/", env("SKYFILL_TEST_APACHE"))).unwrap(),
        user: Some("skyuser".into()),
        password: Some("wrong".into()),
        http: http(),
    })
    .unwrap();
    let e = r.list_dir(&RelPath::root()).await.unwrap_err();
    assert!(matches!(e, RemoteError::Auth { status: 401, .. }), "{e}");
}

async fn multipart_roundtrip(endpoint: &str) {
    let state = tempfile::tempdir().unwrap();
    let mut c = s3_cfg(endpoint, http());
    c.multipart_threshold = 5 << 20;
    c.part_size = 5 << 20;
    c.state_dir = Some(state.path().to_path_buf());
    let s3 = S3::new(c).unwrap();
    let bytes = data(77, (17 << 20) + 3);
    let e = s3
        .upload(&p("big.bin"), &file_with(&bytes), &Precondition::None)
        .await
        .unwrap();
    assert_eq!(e.size, bytes.len() as u64);
    assert_eq!(s3.parts_sent.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(suite::read_all(&s3, &e).await, bytes);
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "journal removed"
    );
}

#[tokio::test]
async fn s3s_fs_multipart() {
    multipart_roundtrip(&env("SKYFILL_TEST_S3S")).await;
}

#[tokio::test]
async fn rclone_s3_multipart() {
    multipart_roundtrip(&env("SKYFILL_TEST_RCLONE_S3")).await;
}

/// An upload interrupted mid-way resumes from the parts already on the server.
async fn multipart_resume(endpoint: &str) {
    let target = Url::parse(endpoint).unwrap();
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", target.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let mut cfg = http();
    cfg.transfer.parallel = 1;
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        budget: Duration::from_secs(10),
        offline_hold: Duration::ZERO,
    };
    let mut c = s3_cfg(&proxy.url(), cfg);
    c.multipart_threshold = 5 << 20;
    c.part_size = 5 << 20;
    c.state_dir = Some(state.path().to_path_buf());
    let bytes = data(78, 26 << 20);
    let src = file_with(&bytes);
    {
        // Two 5 MiB parts (and the small requests) get through, then the network dies.
        proxy.cut_uploads_after(12 << 20);
        let s3 = S3::new(c.clone()).unwrap();
        let r = s3.upload(&p("resume.bin"), &src, &Precondition::None).await;
        let sent = s3.parts_sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(r.is_err(), "upload should fail while the network is down");
        assert_eq!(sent, 2, "parts before the cut");
        assert_eq!(
            std::fs::read_dir(state.path()).unwrap().count(),
            1,
            "journal kept"
        );
    }
    proxy.restore_uploads();
    proxy.set(Mode::Pass, 0);
    let s3 = S3::new(c).unwrap();
    let e = s3
        .upload(&p("resume.bin"), &src, &Precondition::None)
        .await
        .unwrap();
    let resent = s3.parts_sent.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        resent, 4,
        "resumed upload sends only the 4 missing parts of 6"
    );
    assert_eq!(suite::read_all(&s3, &e).await, bytes);
}

#[tokio::test]
async fn s3s_fs_multipart_resumes() {
    multipart_resume(&env("SKYFILL_TEST_S3S")).await;
}

#[tokio::test]
async fn rclone_s3_multipart_resumes() {
    multipart_resume(&env("SKYFILL_TEST_RCLONE_S3")).await;
}

fn fault_policy() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            budget: Duration::from_secs(4),
            offline_hold: Duration::from_secs(2),
        },
        ..HttpConfig::default()
    }
}

/// Faults between the client and Apache: truncated bodies, 503 + Retry-After, 500, stalls,
/// refused connections. Reads either return the exact bytes or a clear error within the
/// budget; afterwards reads work again.
#[tokio::test]
async fn faults_through_a_proxy_never_give_wrong_bytes() {
    let apache = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
    let setup = dav_at(&format!("{apache}dav/"), false, http()).await;
    let bytes = data(5, 3 << 20);
    setup
        .upload(&p("f.bin"), &file_with(&bytes), &Precondition::None)
        .await
        .unwrap();
    let base_path = setup.url_for(&RelPath::root(), true);
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", apache.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    let client = || -> &'static WebDav {
        Box::leak(Box::new(
            WebDav::new(WebDavConfig {
                url: Url::parse(&format!("{}{}", proxy.url(), base_path.path())).unwrap(),
                user: None,
                password: None,
                http: fault_policy(),
            })
            .unwrap(),
        ))
    };
    let through = client();
    // Apache serves a weak ETag for a second after a write; wait until it is strong, so the
    // reads below go out with If-Match (the conditional path is the one under test).
    let t = Instant::now();
    let e = loop {
        let e = through.stat(&p("f.bin")).await.unwrap();
        if matches!(e.version, Version::Etag { weak: false, .. }) {
            break e;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "Apache's ETag of f.bin is still weak after 20 s: {:?}",
            e.version
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read = |r: &'static WebDav| {
        let e = e.clone();
        async move {
            let f = tempfile::tempfile().unwrap();
            r.read_range(ReadRange::new(&e.path, &e.version, 0, e.size, &f))
                .await?;
            let mut v = vec![0u8; e.size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut v, 0).unwrap();
            Ok::<_, RemoteError>(v)
        }
    };
    let conns = || proxy.connections.load(Ordering::SeqCst);

    // Truncated bodies: resumed from the last byte, exact result.
    proxy.set(Mode::CutAfter(300_000), 3);
    assert_eq!(read(through).await.unwrap(), bytes);

    // 503 with Retry-After: 1 is honoured (a feature bound: not before the second is over).
    proxy.set(Mode::Unavailable(1), 2);
    let t = Instant::now();
    assert_eq!(read(through).await.unwrap(), bytes);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured: the retry came after {:?}",
        t.elapsed()
    );

    // 500s: retried.
    proxy.set(Mode::Error500, 2);
    assert_eq!(read(through).await.unwrap(), bytes);

    // A stalled server. A fresh client (no pooled connection that would fail at once), so
    // every attempt is a new connection that waits for the 1 s read timeout; the 4 s budget,
    // not the attempt count, ends it. The error must come at the budget (not before: each
    // attempt waited; not long after: the budget is enforced), after several attempts that
    // each reached the stalled server, and say the server is unreachable (EIO to a reader).
    let policy = fault_policy();
    let budget = policy.retry.budget;
    let stalled = client();
    proxy.set(Mode::Stall, u64::MAX);
    let before = conns();
    let t = Instant::now();
    let err = read(stalled).await.unwrap_err();
    let took = t.elapsed();
    let opened = Instant::now(); // the breaker opened before the error came back
    let attempts_seen = conns() - before;
    eprintln!("stall: {err} after {took:?}, {attempts_seen} connections");
    assert!(
        took >= budget - Duration::from_millis(500),
        "a stalled read gave up after {took:?}, before the {budget:?} budget: {err}"
    );
    assert!(
        took < budget + Duration::from_secs(2),
        "a stalled read took {took:?} against a {budget:?} budget: {err}"
    );
    match &err {
        RemoteError::Exhausted { attempts, last, .. } => {
            // Six attempts of 1 s each do not fit in 4 s: the budget ended it.
            assert!(
                (2..policy.retry.max_attempts).contains(attempts),
                "{attempts} attempts in a 4 s budget with a 1 s read timeout: {err}"
            );
            assert_eq!(
                u64::from(*attempts),
                attempts_seen,
                "every attempt must be a connection to the stalled server: {err}"
            );
            assert!(
                matches!(**last, RemoteError::Stalled { .. })
                    || matches!(&**last, RemoteError::Network { detail, .. } if detail.contains("timed out")),
                "the last attempt must have timed out waiting: {err}"
            );
        }
        other => panic!("a stalled server must exhaust the retry budget, got {other}"),
    }
    assert!(err.is_offline(), "{err}");
    assert_eq!(err.errno(), libc::EIO, "{err}");

    // The breaker now fails fast instead of piling up requests: no new connection at all.
    let before = conns();
    let t = Instant::now();
    let err = read(stalled).await.unwrap_err();
    assert!(matches!(err, RemoteError::Offline { .. }), "{err}");
    assert_eq!(conns(), before, "the open breaker still sent a request");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // Dropped connections (reset before any answer). Wait for the breaker to let a request
    // through again (it holds for offline_hold: 2 s); the read that reaches the proxy must
    // fail as offline.
    proxy.set(Mode::Drop, u64::MAX);
    let hold = policy.retry.offline_hold;
    let (err, reopened) = loop {
        let before = conns();
        let err = read(stalled).await.unwrap_err();
        if conns() > before {
            break (err, opened.elapsed());
        }
        assert!(
            matches!(err, RemoteError::Offline { .. }),
            "while the breaker holds, reads fail fast as offline: {err}"
        );
        assert!(
            opened.elapsed() < hold + Duration::from_secs(15),
            "the breaker still refuses requests {:?} after it opened (hold {hold:?})",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("breaker let a request through {reopened:?} after opening: {err}");
    assert!(
        reopened >= hold - Duration::from_millis(500),
        "the breaker let a request through {reopened:?} after opening (hold {hold:?})"
    );
    assert!(err.is_offline(), "{err}");
    assert!(
        matches!(&err, RemoteError::Exhausted { last, .. } if matches!(**last, RemoteError::Network { .. })),
        "dropped connections are network errors: {err}"
    );

    // Recovery: once the breaker lets requests through again, reads give the exact bytes.
    proxy.set(Mode::Pass, 0);
    let t = Instant::now();
    let got = loop {
        match read(stalled).await {
            Ok(v) => break v,
            Err(RemoteError::Offline { .. }) => {}
            Err(e) => panic!("with the proxy passing again, a read failed: {e}"),
        }
        assert!(
            t.elapsed() < hold + Duration::from_secs(15),
            "reads still fail {:?} after the server came back",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got, bytes);
    // And the first client, which never saw the stall, reads too.
    assert_eq!(read(through).await.unwrap(), bytes);
}

/// A server that is not running: a clear network error within the budget, after every
/// attempt the policy allows (refused connections fail at once, so the attempt count ends it,
/// with backoff between attempts: no retry storm).
#[tokio::test]
async fn unreachable_server_fails_within_the_budget() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let policy = fault_policy();
    let r = WebDav::new(WebDavConfig {
        url: Url::parse(&format!("http://127.0.0.1:{port}/dav/")).unwrap(),
        user: None,
        password: None,
        http: policy.clone(),
    })
    .unwrap();
    let t = Instant::now();
    let e = r.stat(&p("x")).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("unreachable: {e} after {took:?}");
    assert!(e.is_offline(), "{e}");
    assert!(e.to_string().contains("gave up"), "{e}");
    match &e {
        RemoteError::Exhausted { attempts, last, .. } => {
            assert_eq!(*attempts, policy.retry.max_attempts, "{e}");
            assert!(
                matches!(**last, RemoteError::Network { .. }),
                "a refused connection is a network error: {e}"
            );
        }
        other => panic!("expected the retries to be exhausted, got {other}"),
    }
    // Five backoffs of at least 10, 20, 40, 80 and 100 ms (half the capped exponential).
    assert!(
        took >= Duration::from_millis(250),
        "{} attempts in {took:?}: the backoff was skipped",
        policy.retry.max_attempts
    );
    assert!(
        took < policy.retry.budget,
        "giving up took {took:?}, beyond the {:?} budget",
        policy.retry.budget
    );
}

/// Names planted on the servers' disks that are not valid local names are never listed.
#[tokio::test]
async fn hostile_names_on_real_servers_are_rejected() {
    use std::os::unix::ffi::OsStrExt;
    for (base, dir, auth) in [
        (
            format!("{}/dav/", env("SKYFILL_TEST_APACHE")),
            env("SKYFILL_TEST_APACHE_DIR") + "/data",
            false,
        ),
        (
            env("SKYFILL_TEST_RCLONE_DAV"),
            env("SKYFILL_TEST_RCLONE_DAV_DIR"),
            true,
        ),
    ] {
        let r = dav_at(&base, auth, http()).await;
        let name = Url::parse(&r.describe()[7..]).unwrap();
        let seg = name
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let d = std::path::Path::new(&dir).join(&seg);
        std::fs::write(d.join("good"), b"1").unwrap();
        std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"2").unwrap();
        std::fs::write(d.join("ctl\x07char"), b"3").unwrap();
        std::fs::write(d.join("new\nline"), b"4").unwrap();
        let (seen, stats) = suite::walk_names(&r, &RelPath::root()).await;
        if auth {
            // rclone maps control characters to Unicode control pictures and drops invalid
            // UTF-8 itself; whatever it lists must still be a valid local name.
            assert!(seen.contains(&"good".to_string()), "{base}: {seen:?}");
            assert!(
                seen.iter().all(|n| !n.chars().any(char::is_control)),
                "{seen:?}"
            );
        } else {
            assert_eq!(seen, vec!["good"], "{base}");
            assert_eq!(stats.rejected, 3, "{base}: rejected {}", stats.rejected);
        }
    }
}

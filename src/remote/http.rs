//! HTTP plumbing shared by the WebDAV and S3 clients: one pooled reqwest client, timeouts,
//! status classification, `Content-Range` checks, and streaming a response body into a file
//! at an offset with an idle timeout (never buffering a whole object).

use super::retry::RetryPolicy;
use super::transfer::Transfer;
use super::{Landed, ReadRange, RemoteError, Result};
use crate::model::{RelPath, Version};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Settings common to HTTP remotes.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (headers or body).
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
    /// Transfer sizes; a remote itself uses `parallel` (parts of one multipart upload in
    /// flight at once).
    pub transfer: Transfer,
    /// Largest XML response accepted (PROPFIND, list pages).
    pub max_xml_bytes: u64,
    /// Most entries one listing (a PROPFIND answer, one folder of S3) may hold: a hostile or
    /// broken server cannot make the client hold more.
    pub max_listing_entries: u64,
    /// Overall deadline of one listing request, body included (a server dripping bytes never
    /// trips the idle timeout).
    pub listing_deadline: Duration,
    /// Extra name -> address overrides (tests use it for virtual-hosted S3 on 127.0.0.1).
    pub resolve: Vec<(String, std::net::SocketAddr)>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            transfer: Transfer::default(),
            max_xml_bytes: 1 << 30,
            max_listing_entries: 1_000_000,
            listing_deadline: Duration::from_secs(600),
            resolve: Vec::new(),
        }
    }
}

pub fn build_client(cfg: &HttpConfig) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.idle_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("skyfill/", env!("CARGO_PKG_VERSION")));
    for (host, addr) in &cfg.resolve {
        b = b.resolve(host, *addr);
    }
    b.build()
        .map_err(|e| RemoteError::Config(format!("HTTP client: {e}")))
}

/// Turns a reqwest transport error into a remote error (all transient).
pub fn net_err(path: &RelPath, e: reqwest::Error) -> RemoteError {
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    RemoteError::Network {
        path: path.clone(),
        detail,
    }
}

/// Parses `Retry-After` (seconds or an HTTP date).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = httpdate::parse_http_date(v).ok()?;
    Some(
        t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Error for a non-success status; reads a short snippet of the body for the message.
pub async fn status_error(path: &RelPath, resp: Response) -> RemoteError {
    let status = resp.status();
    let ra = retry_after(resp.headers());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Auth {
            path: path.clone(),
            status: status.as_u16(),
        },
        StatusCode::NOT_FOUND | StatusCode::GONE => RemoteError::NotFound { path: path.clone() },
        StatusCode::PRECONDITION_FAILED => RemoteError::PreconditionFailed { path: path.clone() },
        _ => {
            let detail = body_snippet(resp).await;
            RemoteError::Http {
                path: path.clone(),
                status: status.as_u16(),
                retry_after: ra,
                detail,
            }
        }
    }
}

async fn body_snippet(resp: Response) -> Option<String> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(c)) = stream.next().await {
            buf.extend_from_slice(&c);
            if buf.len() > 512 {
                break;
            }
        }
    })
    .await;
    let _ = read;
    if buf.is_empty() {
        return None;
    }
    buf.truncate(512);
    let s: String = String::from_utf8_lossy(&buf)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(s.trim().to_string())
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub total: Option<u64>,
}

pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let (s, e) = range.trim().split_once('-')?;
    let start: u64 = s.trim().parse().ok()?;
    let end: u64 = e.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if end >= t {
                return None;
            }
            Some(t)
        }
    };
    Some(ContentRange { start, end, total })
}

pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The version a GET/HEAD response describes: its ETag, else size+Last-Modified.
pub fn response_version(h: &HeaderMap, total_size: Option<u64>) -> Option<Version> {
    if let Some(v) = header_str(h, "etag").and_then(Version::from_etag) {
        return Some(v);
    }
    let lm = header_str(h, "last-modified").and_then(|s| httpdate::parse_http_date(s).ok())?;
    Some(Version::size_mtime(total_size?, lm))
}

/// Checks a response's version against the one asked for. A response without any version
/// information passes (nothing to compare); a different one is `VersionChanged`.
pub fn check_version(
    path: &RelPath,
    expected: &Version,
    h: &HeaderMap,
    total_size: Option<u64>,
) -> Result<()> {
    let etag = header_str(h, "etag").and_then(Version::from_etag);
    match (expected, etag) {
        (Version::Etag { .. }, Some(got)) => {
            if !expected.same(&got) {
                return Err(RemoteError::version_changed(path, expected, Some(&got)));
            }
        }
        (Version::SizeMtime { size, .. }, _) => {
            if let Some(t) = total_size {
                if t != *size {
                    let got = response_version(h, total_size);
                    return Err(RemoteError::version_changed(path, expected, got.as_ref()));
                }
            }
            if let Some(got @ Version::SizeMtime { .. }) = response_version_no_etag(h, total_size) {
                if !expected.same(&got) {
                    return Err(RemoteError::version_changed(path, expected, Some(&got)));
                }
            }
        }
        (Version::Etag { .. }, None) => {}
    }
    Ok(())
}

fn response_version_no_etag(h: &HeaderMap, total: Option<u64>) -> Option<Version> {
    let lm = header_str(h, "last-modified").and_then(|s| httpdate::parse_http_date(s).ok())?;
    Some(Version::size_mtime(total?, lm))
}

/// How many written bytes are told to a [`Landed`] listener at once (and at the end).
const TELL_EVERY: u64 = 256 << 10;

/// Where a body goes: `dst` at `dst_offset`, its first byte being byte `src_offset` of the
/// object, with `landed` told as bytes are written.
pub struct Sink<'a> {
    pub dst: &'a File,
    pub dst_offset: u64,
    pub src_offset: u64,
    pub landed: Option<Landed<'a>>,
}

/// Streams `resp`'s body into `to`, first discarding `skip` bytes, writing at most `want`
/// bytes. Returns how many were written (less than `want` if the body ended early).
pub async fn stream_into(
    path: &RelPath,
    resp: Response,
    mut skip: u64,
    want: u64,
    to: Sink<'_>,
    idle: Duration,
) -> Result<u64> {
    let Sink {
        dst,
        dst_offset,
        src_offset,
        landed,
    } = to;
    let mut stream = resp.bytes_stream();
    let mut written = 0u64;
    let mut told = 0u64;
    let tell = |from: u64, to: u64| landed.is_none_or(|l| (l.0)(src_offset + from, to - from));
    let stop = || {
        RemoteError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the file changed under the download",
            ),
        )
    };
    if !tell(0, 0) {
        return Err(stop());
    }
    let result = loop {
        if written >= want {
            break Ok(written);
        }
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Ok(n) => n,
            Err(_) => {
                break if written > 0 {
                    Ok(written)
                } else {
                    Err(RemoteError::Stalled {
                        path: path.clone(),
                        after: idle,
                    })
                };
            }
        };
        let chunk = match next {
            None => break Ok(written),
            Some(Ok(c)) => c,
            // A reset or truncated body: keep what arrived; the caller resumes from there.
            Some(Err(e)) => {
                tracing::debug!(%path, written, error = %e, "body ended with an error");
                break Ok(written);
            }
        };
        let mut data: &[u8] = &chunk;
        if skip > 0 {
            let s = skip.min(data.len() as u64) as usize;
            data = &data[s..];
            skip -= s as u64;
        }
        let take = (want - written).min(data.len() as u64) as usize;
        if take == 0 {
            continue;
        }
        // Told of what landed every TELL_EVERY bytes; asked before every write.
        let upto = if written - told >= TELL_EVERY {
            written
        } else {
            told
        };
        let go_on = tell(told, upto);
        told = upto;
        if !go_on {
            break Err(stop());
        }
        if let Err(e) = dst.write_all_at(&data[..take], dst_offset + written) {
            break Err(RemoteError::io(path, e));
        }
        written += take as u64;
    };
    if written > told {
        tell(told, written);
    }
    result
}

/// Reads a whole (bounded) body into memory: for XML answers only.
pub async fn bounded_body(
    path: &RelPath,
    resp: Response,
    max: u64,
    idle: Duration,
) -> Result<Vec<u8>> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| RemoteError::Stalled {
                path: path.clone(),
                after: idle,
            })?;
        match next {
            None => return Ok(buf),
            Some(Ok(c)) => {
                if buf.len() as u64 + c.len() as u64 > max {
                    return Err(RemoteError::protocol(
                        path,
                        format!("XML response larger than the {max}-byte limit"),
                    ));
                }
                buf.extend_from_slice(&c);
            }
            Some(Err(e)) => return Err(net_err(path, e)),
        }
    }
}

/// A request body streaming `len` bytes of `file` from `start` with positional reads.
pub fn file_body(file: Arc<File>, start: u64, len: u64) -> reqwest::Body {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 256 * 1024;
    let stream =
        futures_util::stream::try_unfold((file, start, start + len), |(f, pos, end)| async move {
            if pos >= end {
                return Ok::<_, std::io::Error>(None);
            }
            let n = CHUNK.min(end - pos) as usize;
            let mut buf = vec![0u8; n];
            let got = f.read_at(&mut buf, pos)?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "local file shrank during upload",
                ));
            }
            buf.truncate(got);
            Ok(Some((bytes::Bytes::from(buf), (f, pos + got as u64, end))))
        });
    reqwest::Body::wrap_stream(stream)
}

/// One ranged read over HTTP, shared by WebDAV and S3. `make(start, end_inclusive, if_match)`
/// builds a signed GET for that byte range. Handles 206, a 200 that carries a Content-Range
/// (rclone serve s3), a 200 with the whole body (skipped to the offset), 412 from servers whose
/// ETag is still weak (retried without If-Match; the response ETag is still checked), 416,
/// resets and truncated bodies (resumed from the last byte written).
pub async fn ranged_get<F>(
    client: &reqwest::Client,
    cfg: &HttpConfig,
    breaker: &super::retry::Breaker,
    req: ReadRange<'_>,
    make: F,
) -> Result<()>
where
    F: Fn(u64, u64, Option<&str>) -> Result<reqwest::Request>,
{
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let ReadRange {
        path,
        version,
        offset,
        len,
        dst,
        dst_offset,
        landed,
    } = req;
    if len == 0 {
        return Ok(());
    }
    let done = AtomicU64::new(0);
    let use_if_match = AtomicBool::new(true);
    let if_match = version.if_match();
    super::retry::retry(&cfg.retry, breaker, "GET range", path, |_| async {
        loop {
            let d = done.load(Ordering::SeqCst);
            if d >= len {
                return Ok(());
            }
            let start = offset + d;
            let end = offset + len - 1;
            let im = if use_if_match.load(Ordering::SeqCst) {
                if_match.as_deref()
            } else {
                None
            };
            let req = make(start, end, im)?;
            let resp = client.execute(req).await.map_err(|e| net_err(path, e))?;
            let status = resp.status();
            let h = resp.headers().clone();
            let cr = header_str(&h, "content-range").and_then(parse_content_range);
            let (skip, want, total) = match status {
                StatusCode::PARTIAL_CONTENT | StatusCode::OK if cr.is_some() => {
                    let cr = cr.unwrap();
                    if cr.start != start || cr.end > end {
                        return Err(RemoteError::protocol(
                            path,
                            format!(
                                "asked for bytes {start}-{end}, server sent {}-{}",
                                cr.start, cr.end
                            ),
                        ));
                    }
                    (0, cr.end - cr.start + 1, cr.total)
                }
                StatusCode::PARTIAL_CONTENT => {
                    return Err(RemoteError::protocol(
                        path,
                        "206 answer without a valid Content-Range",
                    ))
                }
                StatusCode::OK => {
                    // The server ignored Range: the body is the whole object.
                    let total = resp.content_length();
                    if let Some(t) = total {
                        if t <= end {
                            check_version(path, version, &h, Some(t))?;
                            return Err(RemoteError::version_changed(path, version, None));
                        }
                    }
                    (start, end - start + 1, total)
                }
                StatusCode::PRECONDITION_FAILED if im.is_some() => {
                    // Apache answers 412 while its ETag is still weak; the ETag of the
                    // unconditional answer is checked below, so versions never mix.
                    use_if_match.store(false, Ordering::SeqCst);
                    continue;
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    return Err(RemoteError::version_changed(path, version, None));
                }
                _ => return Err(status_error(path, resp).await),
            };
            check_version(path, version, &h, total)?;
            let got = stream_into(
                path,
                resp,
                skip,
                want,
                Sink {
                    dst,
                    dst_offset: dst_offset + d,
                    src_offset: start,
                    landed,
                },
                cfg.idle_timeout,
            )
            .await?;
            done.fetch_add(got, Ordering::SeqCst);
            if got < want {
                return Err(RemoteError::Truncated {
                    path: path.clone(),
                    got: d + got,
                    want: len,
                });
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(ContentRange {
                start: 0,
                end: 99,
                total: Some(1000)
            })
        );
        assert_eq!(parse_content_range("bytes 5-9/*").unwrap().total, None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", future.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
    }
}

//! WebDAV client (RFC 4918) on reqwest: PROPFIND walks (Depth infinity where allowed, else
//! Depth 1), ranged GET, streamed PUT, DELETE, MOVE with absolute `Destination`, MKCOL.
//!
//! Hrefs from the server are resolved against the request URL, must stay on the same origin
//! and below the collection asked for, and every decoded segment must be a valid local name;
//! anything else is dropped with a warning.

pub mod propfind;

use super::http::{self, HttpConfig};
use super::retry::{retry, Breaker};
use super::{reject, Moved, Precondition, ReadRange, RemoteError, Result, Sink, WalkStats};
use crate::model::{validate_name, Kind, RelPath, RemoteEntry, Version};
use async_trait::async_trait;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use propfind::DavEntry;
use reqwest::{Method, StatusCode};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use url::Url;

/// Characters left as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>
<d:resourcetype/><d:getcontentlength/><d:getlastmodified/><d:getetag/>
<oc:fileid/><oc:permissions/></d:prop></d:propfind>"#;

#[derive(Clone)]
pub struct WebDavConfig {
    /// The collection that is the remote's base (http or https).
    pub url: Url,
    pub user: Option<String>,
    pub password: Option<String>,
    pub http: HttpConfig,
}

/// Never shows the password (configs end up in logs and panic messages).
impl std::fmt::Debug for WebDavConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDavConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("http", &self.http)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    #[test]
    fn debug_of_a_webdav_config_hides_the_password() {
        let cfg = super::WebDavConfig {
            url: url::Url::parse("https://dav.example/files/").unwrap(),
            user: Some("me".into()),
            password: Some("hunter2-secret".into()),
            http: Default::default(),
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("hunter2-secret"), "{s}");
        assert!(s.contains("password: Some(\"<redacted>\")"), "{s}");
        assert!(s.contains("\"me\""), "{s}");
        let none = super::WebDavConfig {
            password: None,
            ..cfg
        };
        assert!(format!("{none:?}").contains("password: None"));
    }
}

/// Depth-infinity support: unknown, yes, no.
/// Entries the PROPFIND parser hands over at a time.
const ENTRY_BATCH: usize = 256;

const DI_UNKNOWN: u8 = 0;
const DI_YES: u8 = 1;
const DI_NO: u8 = 2;

pub struct WebDav {
    cfg: WebDavConfig,
    base: Url,
    base_segments: Vec<Vec<u8>>,
    client: reqwest::Client,
    breaker: Breaker,
    depth_infinity: AtomicU8,
}

impl WebDav {
    pub fn new(mut cfg: WebDavConfig) -> Result<Self> {
        if !matches!(cfg.url.scheme(), "http" | "https") {
            return Err(RemoteError::Config(format!(
                "WebDAV URL must be http or https: {}",
                cfg.url
            )));
        }
        if !cfg.url.path().ends_with('/') {
            let p = format!("{}/", cfg.url.path());
            cfg.url.set_path(&p);
        }
        cfg.url.set_query(None);
        cfg.url.set_fragment(None);
        let base = cfg.url.clone();
        let base_segments = segments(&base);
        let client = http::build_client(&cfg.http)?;
        Ok(WebDav {
            cfg,
            base,
            base_segments,
            client,
            breaker: Breaker::default(),
            depth_infinity: AtomicU8::new(DI_UNKNOWN),
        })
    }

    /// URL of `path`; collections get a trailing slash.
    pub fn url_for(&self, path: &RelPath, dir: bool) -> Url {
        let mut s = self.base.as_str().to_string();
        for (i, c) in path.components().enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.extend(utf8_percent_encode(c, SEGMENT));
        }
        if dir && !path.is_root() {
            s.push('/');
        }
        Url::parse(&s).expect("encoded URL parses")
    }

    /// Maps an href from a response to a path below the base, or says why not.
    pub fn href_to_path(&self, href: &str) -> std::result::Result<RelPath, String> {
        let url = self
            .base
            .join(href)
            .map_err(|e| format!("unparseable href: {e}"))?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err("href points to another server".into());
        }
        let segs = segments(&url);
        if segs.len() < self.base_segments.len()
            || segs[..self.base_segments.len()] != self.base_segments[..]
        {
            return Err("href is outside the collection".into());
        }
        let mut p = RelPath::root();
        for s in &segs[self.base_segments.len()..] {
            let name = validate_name(s).map_err(|e| e.to_string())?;
            p = p.join(name).map_err(|e| e.to_string())?;
        }
        Ok(p)
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, url);
        match &self.cfg.user {
            Some(u) => rb.basic_auth(u, self.cfg.password.as_deref()),
            None => rb,
        }
    }

    fn entry_from(&self, path: RelPath, d: &DavEntry) -> RemoteEntry {
        let mtime = d
            .last_modified
            .as_deref()
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .unwrap_or(UNIX_EPOCH);
        let kind = if d.is_collection {
            Kind::Dir
        } else {
            Kind::File
        };
        let size = if kind == Kind::Dir {
            0
        } else {
            d.size.unwrap_or(0)
        };
        RemoteEntry {
            path,
            kind,
            size,
            mtime,
            version: Version::from_parts(d.etag.as_deref(), size, mtime),
            file_id: d.file_id.clone(),
            mode: None,
            permissions: d.permissions.clone(),
        }
    }

    /// Sends a PROPFIND and streams the parsed responses to `on`. Returns `Ok(None)` when the
    /// server refuses the depth (403 on Depth: infinity).
    async fn propfind(
        &self,
        path: &RelPath,
        dir: bool,
        depth: &'static str,
        on: &mut (dyn FnMut(DavEntry) -> Result<()> + Send),
    ) -> Result<Option<u64>> {
        let mut url = self.url_for(path, dir);
        let resp = loop {
            let u = url.clone();
            let resp = retry(
                &self.cfg.http.retry,
                &self.breaker,
                "PROPFIND",
                path,
                |_| {
                    let u = u.clone();
                    async move {
                        let r = self
                            .request(Method::from_bytes(b"PROPFIND").unwrap(), u)
                            .header("Depth", depth)
                            .header("Content-Type", "application/xml; charset=utf-8")
                            .body(PROPFIND_BODY)
                            .send()
                            .await
                            .map_err(|e| http::net_err(path, e))?;
                        if r.status().is_server_error()
                            || r.status() == StatusCode::TOO_MANY_REQUESTS
                        {
                            return Err(http::status_error(path, r).await);
                        }
                        Ok(r)
                    }
                },
            )
            .await?;
            // A collection asked for without its slash may be redirected to it.
            if resp.status().is_redirection() && !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
                continue;
            }
            break resp;
        };
        match resp.status() {
            StatusCode::MULTI_STATUS => {}
            StatusCode::FORBIDDEN if depth == "infinity" => return Ok(None),
            s if depth == "infinity"
                && (s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_IMPLEMENTED) =>
            {
                return Ok(None)
            }
            _ => return Err(http::status_error(path, resp).await),
        }
        let max = self.cfg.http.max_xml_bytes;
        let p2 = path.clone();
        let mut seen = 0u64;
        let body = futures_util::StreamExt::map(resp.bytes_stream(), move |r| {
            let c = r.map_err(std::io::Error::other)?;
            seen += c.len() as u64;
            if seen > max {
                return Err(std::io::Error::other(format!(
                    "PROPFIND answer larger than the {max}-byte limit"
                )));
            }
            Ok(c)
        });
        let reader = tokio_util::io::StreamReader::new(body);
        // Entries cross from the parser's thread in batches: one wake-up per batch, not per
        // entry (a million-entry listing would otherwise cost a million of them).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<DavEntry>>(4);
        let parser = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let input = std::io::BufReader::with_capacity(64 * 1024, bridge);
            let mut batch = Vec::with_capacity(ENTRY_BATCH);
            let send = |batch: &mut Vec<DavEntry>| {
                let full = std::mem::replace(batch, Vec::with_capacity(ENTRY_BATCH));
                tx.blocking_send(full)
                    .map_err(|_| "listing abandoned".to_string())
            };
            let n = propfind::parse(input, |e| {
                batch.push(e);
                if batch.len() >= ENTRY_BATCH {
                    send(&mut batch)?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                send(&mut batch).map_err(propfind::ParseError::Sink)?;
            }
            Ok::<_, propfind::ParseError>(n)
        });
        let mut sink_err = None;
        'batches: while let Some(batch) = rx.recv().await {
            for e in batch {
                if let Err(err) = on(e) {
                    sink_err = Some(err);
                    rx.close();
                    break 'batches;
                }
            }
        }
        let parsed = parser
            .await
            .map_err(|e| RemoteError::protocol(&p2, format!("parser task: {e}")))?;
        if let Some(e) = sink_err {
            return Err(e);
        }
        let n = parsed.map_err(|e| RemoteError::protocol(&p2, format!("PROPFIND answer: {e}")))?;
        Ok(Some(n))
    }

    /// Lists `dir` at the given depth, handing valid entries below it (not itself) to `sink`.
    async fn list_depth(
        &self,
        dir: &RelPath,
        depth: &'static str,
        stats: &mut WalkStats,
        sink: &mut (dyn FnMut(RemoteEntry) -> Result<()> + Send),
    ) -> Result<bool> {
        let max = self.cfg.http.max_listing_entries;
        let mut seen = 0u64;
        let mut on = |d: DavEntry| -> Result<()> {
            seen += 1;
            if seen > max {
                return Err(RemoteError::TooMany {
                    path: dir.clone(),
                    limit: max,
                    what: "entries in one listing",
                });
            }
            let Some(href) = d.href.as_deref() else {
                reject(stats, "<href not UTF-8>", &"invalid UTF-8 in href");
                return Ok(());
            };
            if d.status.is_some_and(|s| !(200..300).contains(&s)) {
                return Ok(());
            }
            match self.href_to_path(href) {
                Ok(p) if p == *dir => Ok(()),
                Ok(p) if p.starts_with(dir) => {
                    stats.entries += 1;
                    sink(self.entry_from(p, &d))
                }
                Ok(p) => {
                    reject(
                        stats,
                        href,
                        &format!("outside the collection asked for ({p})"),
                    );
                    Ok(())
                }
                Err(why) => {
                    reject(stats, href, &why);
                    Ok(())
                }
            }
        };
        let deadline = self.cfg.http.listing_deadline;
        match tokio::time::timeout(deadline, self.propfind(dir, true, depth, &mut on)).await {
            Ok(r) => Ok(r?.is_some()),
            Err(_) => Err(RemoteError::Deadline {
                path: dir.clone(),
                after: deadline,
            }),
        }
    }
}

/// Decoded, non-empty path segments of a URL.
fn segments(u: &Url) -> Vec<Vec<u8>> {
    u.path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s.as_bytes()).collect())
        .collect()
}

#[async_trait]
impl super::Remote for WebDav {
    fn describe(&self) -> String {
        let mut u = self.base.clone();
        let _ = u.set_password(None);
        format!("webdav {u}")
    }

    #[tracing::instrument(level = "debug", skip(self), fields(remote = "webdav"))]
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        let mut found = None;
        let mut on = |d: DavEntry| -> Result<()> {
            if found.is_none() {
                if let Some(p) = d.href.as_deref().and_then(|h| self.href_to_path(h).ok()) {
                    if p == *path {
                        found = Some(self.entry_from(p, &d));
                    }
                }
            }
            Ok(())
        };
        self.propfind(path, path.is_root(), "0", &mut on).await?;
        let mut e = found.ok_or_else(|| RemoteError::NotFound { path: path.clone() })?;
        if path.is_root() {
            e.kind = Kind::Dir;
        }
        Ok(e)
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        let mut out = Vec::new();
        let mut stats = WalkStats::default();
        let mut sink = |e: RemoteEntry| {
            if e.path.parent().as_ref() == Some(dir) {
                out.push(e);
            }
            Ok(())
        };
        self.list_depth(dir, "1", &mut stats, &mut sink).await?;
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip(self, sink), fields(remote = "webdav"))]
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        let mut stats = WalkStats::default();
        if self.depth_infinity.load(Ordering::Relaxed) != DI_NO {
            if self.list_depth(dir, "infinity", &mut stats, sink).await? {
                self.depth_infinity.store(DI_YES, Ordering::Relaxed);
                return Ok(stats);
            }
            tracing::info!("server refuses Depth: infinity; walking with Depth: 1");
            self.depth_infinity.store(DI_NO, Ordering::Relaxed);
        }
        let mut queue = VecDeque::from([dir.clone()]);
        while let Some(d) = queue.pop_front() {
            let mut f = |e: RemoteEntry| {
                if e.path.parent().as_ref() != Some(&d) {
                    return Ok(()); // Depth 1 answers only children; ignore anything deeper.
                }
                if e.kind == Kind::Dir {
                    queue.push_back(e.path.clone());
                }
                sink(e)
            };
            self.list_depth(&d, "1", &mut stats, &mut f).await?;
        }
        Ok(stats)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(remote = "webdav", path = %req.path,
        version = ?req.version, offset = req.offset, len = req.len, dst_offset = req.dst_offset))]
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        let path = req.path;
        let url = self.url_for(path, false);
        http::ranged_get(
            &self.client,
            &self.cfg.http,
            &self.breaker,
            req,
            |s, e, im| {
                let mut rb = self
                    .request(Method::GET, url.clone())
                    .header("Range", format!("bytes={s}-{e}"));
                if let Some(im) = im {
                    rb = rb.header("If-Match", im);
                }
                rb.build().map_err(|e| http::net_err(path, e))
            },
        )
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, src), fields(remote = "webdav"))]
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        let meta = src.metadata().map_err(|e| RemoteError::io(path, e))?;
        let size = meta.len();
        // Servers differ in honouring preconditions (rclone ignores them): check first too.
        match pre {
            Precondition::None => {}
            Precondition::MustNotExist => match self.stat(path).await {
                Ok(_) => return Err(RemoteError::AlreadyExists { path: path.clone() }),
                Err(RemoteError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            },
            Precondition::IfMatch(v) => {
                let cur = self.stat(path).await?;
                if !super::entry_matches(&cur, v) {
                    return Err(RemoteError::PreconditionFailed { path: path.clone() });
                }
            }
        }
        let file = Arc::new(src.try_clone().map_err(|e| RemoteError::io(path, e))?);
        let url = self.url_for(path, false);
        let mtime_s = meta.mtime();
        retry(&self.cfg.http.retry, &self.breaker, "PUT", path, |_| {
            let file = file.clone();
            let url = url.clone();
            async move {
                let mut rb = self
                    .request(Method::PUT, url)
                    .header("Content-Length", size)
                    .header("X-OC-Mtime", mtime_s.to_string())
                    .body(http::file_body(file, 0, size));
                match pre {
                    Precondition::MustNotExist => rb = rb.header("If-None-Match", "*"),
                    Precondition::IfMatch(v) => {
                        if let Some(im) = v.if_match() {
                            rb = rb.header("If-Match", im);
                        }
                    }
                    Precondition::None => {}
                }
                let r = rb.send().await.map_err(|e| http::net_err(path, e))?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(http::status_error(path, r).await)
                }
            }
        })
        .await?;
        let e = self.stat(path).await?;
        if e.size != size {
            return Err(RemoteError::protocol(
                path,
                format!("uploaded {size} bytes but the server reports {}", e.size),
            ));
        }
        Ok(e)
    }

    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        let url = self.url_for(path, kind == Kind::Dir);
        retry(&self.cfg.http.retry, &self.breaker, "DELETE", path, |_| {
            let url = url.clone();
            async move {
                let r = self
                    .request(Method::DELETE, url)
                    .send()
                    .await
                    .map_err(|e| http::net_err(path, e))?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(http::status_error(path, r).await)
                }
            }
        })
        .await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        let dir = kind == Kind::Dir;
        let src = self.url_for(from, dir);
        let dst = self.url_for(to, dir);
        retry(&self.cfg.http.retry, &self.breaker, "MOVE", from, |_| {
            let (src, dst) = (src.clone(), dst.clone());
            async move {
                let r = self
                    .request(Method::from_bytes(b"MOVE").unwrap(), src)
                    .header("Destination", dst.as_str())
                    .header("Overwrite", "F")
                    .send()
                    .await
                    .map_err(|e| http::net_err(from, e))?;
                match r.status() {
                    // A MOVE answers with no ETag: the resource is the same one, and servers
                    // keep its ETag (Apache's comes from the inode, size and mtime).
                    s if s.is_success() => Ok(Moved::default()),
                    StatusCode::PRECONDITION_FAILED => {
                        Err(RemoteError::AlreadyExists { path: to.clone() })
                    }
                    _ => Err(http::status_error(from, r).await),
                }
            }
        })
        .await
    }

    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        if path.is_root() {
            return Ok(());
        }
        let url = self.url_for(path, true);
        let st = retry(&self.cfg.http.retry, &self.breaker, "MKCOL", path, |_| {
            let url = url.clone();
            async move {
                let r = self
                    .request(Method::from_bytes(b"MKCOL").unwrap(), url)
                    .send()
                    .await
                    .map_err(|e| http::net_err(path, e))?;
                let s = r.status();
                if s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED {
                    Ok(s)
                } else if s == StatusCode::CONFLICT {
                    Err(RemoteError::NotFound {
                        path: path.parent().unwrap_or_default(),
                    })
                } else {
                    Err(http::status_error(path, r).await)
                }
            }
        })
        .await?;
        if st == StatusCode::METHOD_NOT_ALLOWED {
            // Something exists there already: fine if it is a directory.
            let e = self.stat(path).await?;
            if e.kind != Kind::Dir {
                return Err(RemoteError::AlreadyExists { path: path.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dav(url: &str) -> WebDav {
        WebDav::new(WebDavConfig {
            url: Url::parse(url).unwrap(),
            user: None,
            password: None,
            http: HttpConfig::default(),
        })
        .unwrap()
    }

    #[test]
    fn urls_are_percent_encoded_with_collection_slashes() {
        let d = dav("http://h:8080/dav/My%20Files");
        let p = RelPath::parse("a b/ü#?%.txt").unwrap();
        assert_eq!(
            d.url_for(&p, false).as_str(),
            "http://h:8080/dav/My%20Files/a%20b/%C3%BC%23%3F%25.txt"
        );
        assert_eq!(
            d.url_for(&RelPath::parse("x").unwrap(), true).as_str(),
            "http://h:8080/dav/My%20Files/x/"
        );
    }

    #[test]
    fn hrefs_map_to_paths_or_are_rejected() {
        let d = dav("http://h:8080/dav/My%20Files/");
        let ok = |h: &str| d.href_to_path(h).map(|p| p.as_str().to_string());
        assert_eq!(ok("/dav/My%20Files/a%20b/c").unwrap(), "a b/c");
        assert_eq!(ok("/dav/My Files/a/").unwrap(), "a");
        assert_eq!(ok("http://h:8080/dav/My%20Files/%c3%bc").unwrap(), "ü");
        assert_eq!(ok("/dav/My%20Files/").unwrap(), "");
        assert!(ok("/dav/Other/x").is_err());
        assert!(ok("/dav/My%20Files/../../etc/passwd").is_err());
        assert!(ok("/dav/My%20Files/%2e%2e/x").is_err());
        assert!(ok("/dav/My%20Files/a%2Fb").is_err());
        assert!(ok("/dav/My%20Files/a%00b").is_err());
        assert!(ok("/dav/My%20Files/a%0Ab").is_err());
        assert!(ok("/dav/My%20Files/%FF%FE").is_err());
        assert!(ok(&format!("/dav/My%20Files/{}", "a".repeat(256))).is_err());
        assert!(ok("http://evil:8080/dav/My%20Files/x").is_err());
        assert!(ok("https://h:8080/dav/My%20Files/x").is_err());
    }
}

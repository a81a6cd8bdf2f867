//! S3 client on reqwest with SigV4 from `aws-sigv4`: path-style or virtual-hosted addressing,
//! custom endpoint and region, ListObjectsV2 with continuation tokens (flat for walks,
//! delimiter for one level), ranged GET (coping with 200 answers), PUT, resumable multipart
//! upload above a threshold (journaled in a state directory, aborted when abandoned),
//! copy+delete renames and directory markers.

pub mod listing;

use super::http::{self, HttpConfig};
use super::retry::{retry, Breaker};
use super::{reject, Moved, Precondition, ReadRange, RemoteError, Result, Sink, WalkStats};
use crate::model::{validate_name, Kind, RelPath, RemoteEntry, Version};
use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use url::Url;

/// Unreserved characters stay; everything else is percent-encoded (keys keep their `/`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const KEY: &AsciiSet = &QUERY.remove(b'/');

#[derive(Clone)]
pub struct S3Config {
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    /// Key prefix under which the remote lives (no leading or trailing slash).
    pub prefix: String,
    pub path_style: bool,
    /// (access key, secret key); `None` for anonymous access.
    pub credentials: Option<(String, String)>,
    pub http: HttpConfig,
    /// Objects larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Where multipart journals live, so an interrupted upload resumes.
    pub state_dir: Option<PathBuf>,
}

/// Shows the access key id, never the secret key (configs end up in logs and panic messages).
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(access, _)| (access, "<redacted>")),
            )
            .field("http", &self.http)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    #[test]
    fn debug_of_an_s3_config_hides_the_secret_key() {
        let mut cfg = super::S3Config::new(url::Url::parse("https://s3.example").unwrap(), "b");
        cfg.credentials = Some(("AKIDEXAMPLE".into(), "wJalrXUtnFEMI-secret".into()));
        let s = format!("{cfg:?}");
        assert!(!s.contains("wJalrXUtnFEMI-secret"), "{s}");
        assert!(
            s.contains("credentials: Some((\"AKIDEXAMPLE\", \"<redacted>\"))"),
            "{s}"
        );
        cfg.credentials = None;
        assert!(format!("{cfg:?}").contains("credentials: None"));
    }
}

impl S3Config {
    pub fn new(endpoint: Url, bucket: &str) -> Self {
        S3Config {
            endpoint,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            path_style: true,
            credentials: None,
            http: HttpConfig::default(),
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            state_dir: None,
        }
    }
}

const MARKERS_UNKNOWN: u8 = 0;
const MARKERS_YES: u8 = 1;
const MARKERS_NO: u8 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Journal {
    key: String,
    upload_id: String,
    part_size: u64,
    /// size:mtime_ns:inode of the source when the upload began.
    fingerprint: String,
    parts: Vec<(u32, String)>,
}

pub struct S3 {
    cfg: S3Config,
    client: reqwest::Client,
    identity: Option<Identity>,
    breaker: Breaker,
    bucket_url: Url,
    /// Whether the server keeps `dir/` marker objects (unknown until the first mkdir).
    markers: std::sync::atomic::AtomicU8,
    /// Parts sent by multipart uploads (tests check that resumed uploads skip parts).
    pub parts_sent: AtomicU64,
}

fn enc_query(pairs: &[(&str, &str)]) -> String {
    let mut v: Vec<String> = pairs
        .iter()
        .map(|(k, val)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(val, QUERY)
            )
        })
        .collect();
    v.sort();
    v.join("&")
}

impl S3 {
    pub fn new(mut cfg: S3Config) -> Result<Self> {
        if cfg.bucket.is_empty()
            || !cfg
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(RemoteError::Config(format!(
                "invalid bucket name {:?}",
                cfg.bucket
            )));
        }
        cfg.prefix = cfg.prefix.trim_matches('/').to_string();
        if !cfg.prefix.is_empty() {
            RelPath::parse(&cfg.prefix)
                .map_err(|e| RemoteError::Config(format!("invalid prefix: {e}")))?;
        }
        cfg.part_size = cfg.part_size.max(5 << 20);
        let mut bucket_url = cfg.endpoint.clone();
        bucket_url.set_query(None);
        if cfg.path_style {
            let base = bucket_url.path().trim_end_matches('/').to_string();
            bucket_url.set_path(&format!("{base}/{}/", cfg.bucket));
        } else {
            let host = bucket_url
                .host_str()
                .ok_or_else(|| RemoteError::Config("endpoint has no host".into()))?
                .to_string();
            bucket_url
                .set_host(Some(&format!("{}.{host}", cfg.bucket)))
                .map_err(|e| RemoteError::Config(format!("virtual-hosted bucket URL: {e}")))?;
            bucket_url.set_path("/");
        }
        let identity = cfg
            .credentials
            .as_ref()
            .map(|(ak, sk)| Credentials::new(ak, sk, None, None, "skyfill").into());
        let client = http::build_client(&cfg.http)?;
        Ok(S3 {
            cfg,
            client,
            identity,
            breaker: Breaker::default(),
            bucket_url,
            parts_sent: AtomicU64::new(0),
            markers: std::sync::atomic::AtomicU8::new(MARKERS_UNKNOWN),
        })
    }

    pub fn key(&self, path: &RelPath) -> String {
        match (self.cfg.prefix.is_empty(), path.is_root()) {
            (true, _) => path.as_str().to_string(),
            (false, true) => self.cfg.prefix.clone(),
            (false, false) => format!("{}/{}", self.cfg.prefix, path.as_str()),
        }
    }

    /// Prefix that lists the children of `dir` (`""` or ends with `/`).
    fn dir_prefix(&self, dir: &RelPath) -> String {
        let k = self.key(dir);
        if k.is_empty() {
            k
        } else {
            format!("{k}/")
        }
    }

    pub fn object_url(&self, key: &str, query: &[(&str, &str)]) -> Url {
        let mut s = self.bucket_url.as_str().to_string();
        s.extend(utf8_percent_encode(key, KEY));
        let mut u = Url::parse(&s).expect("encoded URL parses");
        if !query.is_empty() {
            u.set_query(Some(&enc_query(query)));
        }
        u
    }

    /// Signs a request in place (no-op for anonymous access). Small bodies are hashed; streamed
    /// bodies are sent as UNSIGNED-PAYLOAD.
    fn signed(
        &self,
        path: &RelPath,
        mut req: reqwest::Request,
        body: Option<&[u8]>,
    ) -> Result<reqwest::Request> {
        let Some(identity) = &self.identity else {
            return Ok(req);
        };
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.cfg.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| RemoteError::Config(format!("signing: {e}")))?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let sb = match body {
            Some(b) => SignableBody::Bytes(b),
            None => SignableBody::UnsignedPayload,
        };
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.url().as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            sb,
        )
        .map_err(|e| RemoteError::protocol(path, format!("signing: {e}")))?;
        let (instr, _) = sign(signable, &params)
            .map_err(|e| RemoteError::protocol(path, format!("signing: {e}")))?
            .into_parts();
        for (k, v) in instr.headers() {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| RemoteError::protocol(path, e.to_string()))?;
            let val =
                HeaderValue::from_str(v).map_err(|e| RemoteError::protocol(path, e.to_string()))?;
            req.headers_mut().insert(name, val);
        }
        Ok(req)
    }

    fn build(
        &self,
        path: &RelPath,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Request> {
        let mut rb = self.client.request(method, url);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        if let Some(b) = &body {
            rb = rb.header("Content-Length", b.len()).body(b.clone());
        }
        let req = rb.build().map_err(|e| http::net_err(path, e))?;
        self.signed(path, req, Some(body.as_deref().unwrap_or(&[])))
    }

    /// One request with retries; returns the response when its status is a success.
    async fn call(
        &self,
        what: &str,
        path: &RelPath,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        retry(&self.cfg.http.retry, &self.breaker, what, path, |_| {
            let req = self.build(path, method.clone(), url.clone(), headers, body.clone());
            async move {
                let r = self
                    .client
                    .execute(req?)
                    .await
                    .map_err(|e| http::net_err(path, e))?;
                if r.status().is_success() {
                    Ok(r)
                } else {
                    Err(http::status_error(path, r).await)
                }
            }
        })
        .await
    }

    /// Sends a request whose body is streamed (signed as UNSIGNED-PAYLOAD); one attempt.
    async fn send_streamed(
        &self,
        path: &RelPath,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let req = rb.build().map_err(|e| http::net_err(path, e))?;
        let req = self.signed(path, req, None)?;
        let r = self
            .client
            .execute(req)
            .await
            .map_err(|e| http::net_err(path, e))?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(http::status_error(path, r).await)
        }
    }

    async fn xml(&self, path: &RelPath, resp: reqwest::Response) -> Result<Vec<u8>> {
        http::bounded_body(path, resp, 64 << 20, self.cfg.http.idle_timeout).await
    }

    /// One ListObjectsV2 page. `encoding-type=url` is not requested: s3s-fs echoes it without
    /// encoding, which would decode keys twice; keys arrive XML-escaped instead.
    async fn list_page(
        &self,
        path: &RelPath,
        prefix: &str,
        delimiter: bool,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<listing::Page> {
        let mk = max_keys.map(|m| m.to_string());
        let mut q: Vec<(&str, &str)> = vec![("list-type", "2"), ("prefix", prefix)];
        if delimiter {
            q.push(("delimiter", "/"));
        }
        if let Some(t) = token {
            q.push(("continuation-token", t));
        }
        if let Some(m) = &mk {
            q.push(("max-keys", m));
        }
        let mut url = self.bucket_url.clone();
        url.set_query(Some(&enc_query(&q)));
        let resp = self.call("LIST", path, Method::GET, url, &[], None).await?;
        let body = self.xml(path, resp).await?;
        listing::parse_list(&body[..])
            .map_err(|e| RemoteError::protocol(path, format!("ListObjectsV2: {e}")))
    }

    /// Turns a key below `base_prefix` into a path, or says why not.
    fn key_to_path(
        &self,
        key: &[u8],
        base_prefix: &str,
    ) -> std::result::Result<(RelPath, bool), String> {
        let rest = key
            .strip_prefix(base_prefix.as_bytes())
            .ok_or("key outside the prefix asked for")?;
        let (rest, is_dir) = match rest.strip_suffix(b"/") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let mut p = self.prefix_path(base_prefix);
        if rest.is_empty() {
            return Ok((p, true));
        }
        for comp in rest.split(|&b| b == b'/') {
            let name = validate_name(comp).map_err(|e| e.to_string())?;
            p = p.join(name).map_err(|e| e.to_string())?;
        }
        Ok((p, is_dir))
    }

    /// The RelPath a listing prefix stands for.
    fn prefix_path(&self, base_prefix: &str) -> RelPath {
        let mut s = base_prefix.trim_end_matches('/');
        if !self.cfg.prefix.is_empty() {
            s = s.strip_prefix(self.cfg.prefix.as_str()).unwrap_or(s);
        }
        RelPath::parse(s).unwrap_or_default()
    }

    fn file_entry(path: RelPath, o: &listing::Object) -> RemoteEntry {
        let mtime = o
            .last_modified
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(UNIX_EPOCH);
        RemoteEntry {
            path,
            kind: Kind::File,
            size: o.size,
            mtime,
            version: Version::from_parts(o.etag.as_deref(), o.size, mtime),
            file_id: None,
            mode: None,
            permissions: None,
        }
    }

    fn dir_entry(path: RelPath) -> RemoteEntry {
        RemoteEntry {
            path,
            kind: Kind::Dir,
            size: 0,
            mtime: UNIX_EPOCH,
            version: Version::SizeMtime {
                size: 0,
                mtime_secs: 0,
            },
            file_id: None,
            mode: None,
            permissions: None,
        }
    }

    /// Every key below `dir` (flat listing), for deletes and renames of directories.
    async fn all_keys(&self, dir: &RelPath) -> Result<Vec<String>> {
        let prefix = self.dir_prefix(dir);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        let mut pager = Pager::new(&self.cfg.http);
        loop {
            let page = self
                .list_page(dir, &prefix, false, token.as_deref(), None)
                .await?;
            for o in page.objects {
                if let Ok(k) = String::from_utf8(o.key) {
                    keys.push(k);
                }
            }
            match pager.next(dir, page.next_token.filter(|_| page.truncated), keys.len())? {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }

    fn journal_path(&self, key: &str) -> Option<PathBuf> {
        use sha2::Digest;
        let dir = self.cfg.state_dir.as_ref()?;
        let h = sha2::Sha256::digest(format!("{}\n{}\n{}", self.bucket_url, self.cfg.bucket, key));
        Some(dir.join(format!("multipart-{}.json", hex::encode(&h[..12]))))
    }

    fn save_journal(&self, j: &Journal) {
        if let Some(p) = self.journal_path(&j.key) {
            let tmp = p.with_extension("tmp");
            let ok = serde_json::to_vec(j)
                .ok()
                .and_then(|b| std::fs::write(&tmp, b).ok())
                .and_then(|_| std::fs::rename(&tmp, &p).ok());
            if ok.is_none() {
                tracing::warn!(path = %p.display(), "could not save the multipart journal");
            }
        }
    }

    fn drop_journal(&self, key: &str) {
        if let Some(p) = self.journal_path(key) {
            let _ = std::fs::remove_file(p);
        }
    }

    async fn abort(&self, path: &RelPath, key: &str, upload_id: &str) {
        let url = self.object_url(key, &[("uploadId", upload_id)]);
        match self
            .call("ABORT", path, Method::DELETE, url, &[], None)
            .await
        {
            Ok(_) | Err(RemoteError::NotFound { .. }) => {
                tracing::info!(%path, "aborted an abandoned multipart upload")
            }
            Err(e) => tracing::warn!(%path, error = %e, "could not abort a multipart upload"),
        }
    }

    /// Parts the server already holds for an upload; `None` if the upload is gone.
    async fn server_parts(
        &self,
        path: &RelPath,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<listing::Part>>> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut q = vec![("uploadId", upload_id)];
            if let Some(m) = &marker {
                q.push(("part-number-marker", m.as_str()));
            }
            let url = self.object_url(key, &q);
            let resp = match self
                .call("LISTPARTS", path, Method::GET, url, &[], None)
                .await
            {
                Ok(r) => r,
                Err(RemoteError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let body = self.xml(path, resp).await?;
            let (parts, next) = listing::parse_parts(&body[..])
                .map_err(|e| RemoteError::protocol(path, format!("ListParts: {e}")))?;
            all.extend(parts);
            match next {
                Some(n) => marker = Some(n.to_string()),
                None => return Ok(Some(all)),
            }
        }
    }

    async fn multipart(
        &self,
        path: &RelPath,
        key: &str,
        src: Arc<File>,
        size: u64,
        fingerprint: String,
    ) -> Result<()> {
        let part_size = self.cfg.part_size;
        let mut journal: Option<Journal> = self
            .journal_path(key)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(j) = journal.take() {
            if j.fingerprint == fingerprint && j.part_size == part_size && j.key == key {
                if let Some(parts) = self.server_parts(path, key, &j.upload_id).await? {
                    let ok: Vec<(u32, String)> = parts
                        .into_iter()
                        .filter(|(n, _, s)| {
                            let start = (*n as u64 - 1) * part_size;
                            *n >= 1 && *s == part_size.min(size.saturating_sub(start))
                        })
                        .map(|(n, e, _)| (n, e))
                        .collect();
                    tracing::info!(%path, done = ok.len(), "resuming a multipart upload");
                    journal = Some(Journal { parts: ok, ..j });
                }
            } else {
                self.abort(path, &j.key, &j.upload_id).await;
                self.drop_journal(key);
            }
        }
        let journal = match journal {
            Some(j) => j,
            None => {
                let url = self.object_url(key, &[("uploads", "")]);
                let resp = self
                    .call(
                        "CREATE MULTIPART",
                        path,
                        Method::POST,
                        url,
                        &[],
                        Some(vec![]),
                    )
                    .await?;
                let body = self.xml(path, resp).await?;
                let id = listing::parse_upload_id(&body[..])
                    .map_err(|e| {
                        RemoteError::protocol(path, format!("CreateMultipartUpload: {e}"))
                    })?
                    .ok_or_else(|| {
                        RemoteError::protocol(path, "CreateMultipartUpload: no UploadId")
                    })?;
                let j = Journal {
                    key: key.to_string(),
                    upload_id: id,
                    part_size,
                    fingerprint,
                    parts: vec![],
                };
                self.save_journal(&j);
                j
            }
        };
        let upload_id = journal.upload_id.clone();
        let count = size.div_ceil(part_size).max(1) as u32;
        let done: HashSet<u32> = journal.parts.iter().map(|(n, _)| *n).collect();
        let journal = Mutex::new(journal);
        let todo: Vec<u32> = (1..=count).filter(|n| !done.contains(n)).collect();
        let result = stream::iter(todo)
            .map(|n| {
                let src = src.clone();
                let journal = &journal;
                let upload_id = upload_id.clone();
                async move {
                    let start = (n as u64 - 1) * part_size;
                    let len = part_size.min(size - start);
                    let num = n.to_string();
                    let url =
                        self.object_url(key, &[("partNumber", &num), ("uploadId", &upload_id)]);
                    let etag = retry(
                        &self.cfg.http.retry,
                        &self.breaker,
                        "UPLOAD PART",
                        path,
                        |_| {
                            let (url, src) = (url.clone(), src.clone());
                            async move {
                                let rb = self
                                    .client
                                    .put(url)
                                    .header("Content-Length", len)
                                    .body(http::file_body(src, start, len));
                                let r = self.send_streamed(path, rb).await?;
                                http::header_str(r.headers(), "etag")
                                    .map(str::to_string)
                                    .ok_or_else(|| {
                                        RemoteError::protocol(
                                            path,
                                            "UploadPart answer without ETag",
                                        )
                                    })
                            }
                        },
                    )
                    .await?;
                    self.parts_sent.fetch_add(1, Ordering::Relaxed);
                    let mut j = journal.lock().unwrap();
                    j.parts.push((n, etag));
                    self.save_journal(&j);
                    Ok::<(), RemoteError>(())
                }
            })
            .buffer_unordered(self.cfg.http.transfer.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = result {
            if !e.is_transient() && !matches!(e, RemoteError::Exhausted { .. }) {
                // Not a passing fault: nobody will resume this upload.
                self.abort(path, key, &upload_id).await;
                self.drop_journal(key);
            }
            return Err(e);
        }
        let mut parts = journal.into_inner().unwrap().parts;
        parts.sort_by_key(|p| p.0);
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, e) in &parts {
            let e = e.trim_matches('"');
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>",
                quick_xml::escape::escape(e)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let url = self.object_url(key, &[("uploadId", &upload_id)]);
        let resp = self
            .call(
                "COMPLETE MULTIPART",
                path,
                Method::POST,
                url,
                &[("Content-Type", "application/xml".into())],
                Some(xml.into_bytes()),
            )
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                if !e.is_transient() && !matches!(e, RemoteError::Exhausted { .. }) {
                    self.abort(path, key, &upload_id).await;
                    self.drop_journal(key);
                }
                return Err(e);
            }
        };
        let body = self.xml(path, resp).await?;
        if listing::is_error_document(&body) {
            self.abort(path, key, &upload_id).await;
            self.drop_journal(key);
            return Err(RemoteError::protocol(
                path,
                format!(
                    "CompleteMultipartUpload failed: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ),
            ));
        }
        self.drop_journal(key);
        Ok(())
    }

    async fn head(&self, path: &RelPath, key: &str) -> Result<Option<RemoteEntry>> {
        let url = self.object_url(key, &[]);
        match self.call("HEAD", path, Method::HEAD, url, &[], None).await {
            Ok(r) => {
                let h = r.headers();
                // reqwest's content_length() is the (empty) body's length for HEAD: read the header.
                let size = http::header_str(h, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mtime = http::header_str(h, "last-modified")
                    .and_then(|s| httpdate::parse_http_date(s).ok())
                    .unwrap_or(UNIX_EPOCH);
                Ok(Some(RemoteEntry {
                    path: path.clone(),
                    kind: Kind::File,
                    size,
                    mtime,
                    version: Version::from_parts(http::header_str(h, "etag"), size, mtime),
                    file_id: None,
                    mode: None,
                    permissions: None,
                }))
            }
            Err(RemoteError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Guards a paged listing against a server that never ends it: a continuation token seen
/// before, more entries than the listing limit, or more time than the listing deadline.
struct Pager {
    seen: HashSet<String>,
    max: u64,
    started: std::time::Instant,
    deadline: std::time::Duration,
}

impl Pager {
    fn new(http: &HttpConfig) -> Pager {
        Pager {
            seen: HashSet::new(),
            max: http.max_listing_entries,
            started: std::time::Instant::now(),
            deadline: http.listing_deadline,
        }
    }

    /// The token of the next page, `None` at the end, or why the listing must stop.
    fn next(
        &mut self,
        dir: &RelPath,
        token: Option<String>,
        held: usize,
    ) -> Result<Option<String>> {
        if held as u64 > self.max {
            return Err(RemoteError::TooMany {
                path: dir.clone(),
                limit: self.max,
                what: "entries in one listing",
            });
        }
        if self.started.elapsed() > self.deadline {
            return Err(RemoteError::Deadline {
                path: dir.clone(),
                after: self.deadline,
            });
        }
        match token {
            None => Ok(None),
            Some(t) if !self.seen.insert(t.clone()) => Err(RemoteError::Protocol {
                path: dir.clone(),
                detail: "the server repeated a continuation token; the listing would never end"
                    .into(),
            }),
            Some(t) => Ok(Some(t)),
        }
    }
}

#[async_trait]
impl super::Remote for S3 {
    fn describe(&self) -> String {
        format!("s3 {}{}", self.bucket_url, self.cfg.prefix)
    }

    #[tracing::instrument(level = "debug", skip(self), fields(remote = "s3"))]
    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        if path.is_root() {
            return Ok(Self::dir_entry(RelPath::root()));
        }
        // Listing only, never HEAD: file-backed servers answer HEAD on a directory oddly
        // (s3s-fs: 500, rclone: an empty object), and a listing gives the same version
        // fields as a walk. The key itself sorts first among keys it prefixes.
        let key = self.key(path);
        let page = self.list_page(path, &key, true, None, Some(1)).await?;
        if let Some(o) = page.objects.first().filter(|o| o.key == key.as_bytes()) {
            return Ok(Self::file_entry(path.clone(), o));
        }
        let page = self
            .list_page(path, &self.dir_prefix(path), true, None, Some(1))
            .await?;
        if !page.objects.is_empty() || !page.prefixes.is_empty() {
            return Ok(Self::dir_entry(path.clone()));
        }
        Err(RemoteError::NotFound { path: path.clone() })
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        let prefix = self.dir_prefix(dir);
        let mut out = Vec::new();
        let mut stats = WalkStats::default();
        let mut token: Option<String> = None;
        let mut pager = Pager::new(&self.cfg.http);
        loop {
            let page = self
                .list_page(dir, &prefix, true, token.as_deref(), None)
                .await?;
            for o in &page.objects {
                match self.key_to_path(&o.key, &prefix) {
                    Ok((p, _)) if p == *dir => {}
                    Ok((p, true)) => out.push(Self::dir_entry(p)),
                    Ok((p, false)) => out.push(Self::file_entry(p, o)),
                    Err(why) => reject(&mut stats, &String::from_utf8_lossy(&o.key), &why),
                }
            }
            for pf in &page.prefixes {
                match self.key_to_path(pf, &prefix) {
                    Ok((p, _)) if p != *dir => out.push(Self::dir_entry(p)),
                    Ok(_) => {}
                    Err(why) => reject(&mut stats, &String::from_utf8_lossy(pf), &why),
                }
            }
            match pager.next(dir, page.next_token.filter(|_| page.truncated), out.len())? {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        // A directory marker and a prefix can both name one directory.
        let mut seen = HashSet::new();
        out.retain(|e| seen.insert(e.path.clone()));
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip(self, sink), fields(remote = "s3"))]
    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        let prefix = self.dir_prefix(dir);
        let mut stats = WalkStats::default();
        let mut dirs: HashSet<RelPath> = HashSet::new();
        let mut token: Option<String> = None;
        let mut pager = Pager::new(&self.cfg.http);
        loop {
            let page = self
                .list_page(dir, &prefix, false, token.as_deref(), None)
                .await?;
            for o in &page.objects {
                let (p, is_dir) = match self.key_to_path(&o.key, &prefix) {
                    Ok(x) => x,
                    Err(why) => {
                        reject(&mut stats, &String::from_utf8_lossy(&o.key), &why);
                        continue;
                    }
                };
                // Emit missing parents first (S3 has no real directories).
                let mut missing = Vec::new();
                let mut anc = if is_dir { Some(p.clone()) } else { p.parent() };
                while let Some(a) = anc {
                    if a == *dir || !a.starts_with(dir) || dirs.contains(&a) {
                        break;
                    }
                    missing.push(a.clone());
                    anc = a.parent();
                }
                for a in missing.into_iter().rev() {
                    dirs.insert(a.clone());
                    stats.entries += 1;
                    sink(Self::dir_entry(a))?;
                }
                if !is_dir {
                    stats.entries += 1;
                    sink(Self::file_entry(p, o))?;
                }
            }
            match pager.next(
                dir,
                page.next_token.filter(|_| page.truncated),
                stats.entries as usize,
            )? {
                Some(t) => token = Some(t),
                None => return Ok(stats),
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(remote = "s3", path = %req.path,
        version = ?req.version, offset = req.offset, len = req.len, dst_offset = req.dst_offset))]
    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        let path = req.path;
        let url = self.object_url(&self.key(path), &[]);
        http::ranged_get(
            &self.client,
            &self.cfg.http,
            &self.breaker,
            req,
            |s, e, im| {
                let mut h = vec![("Range", format!("bytes={s}-{e}"))];
                if let Some(im) = im {
                    h.push(("If-Match", im.to_string()));
                }
                let req = self
                    .client
                    .get(url.clone())
                    .header("Range", &h[0].1)
                    .headers({
                        let mut m = reqwest::header::HeaderMap::new();
                        if let Some(im) = im {
                            m.insert(
                                "If-Match",
                                HeaderValue::from_str(im)
                                    .map_err(|e| RemoteError::protocol(path, e.to_string()))?,
                            );
                        }
                        m
                    })
                    .build()
                    .map_err(|e| http::net_err(path, e))?;
                self.signed(path, req, None)
            },
        )
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, src), fields(remote = "s3"))]
    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        let key = self.key(path);
        let meta = src.metadata().map_err(|e| RemoteError::io(path, e))?;
        let size = meta.len();
        let cond: Vec<(&str, String)> = match pre {
            Precondition::None => vec![],
            Precondition::MustNotExist => {
                if self.stat(path).await.is_ok() {
                    return Err(RemoteError::AlreadyExists { path: path.clone() });
                }
                vec![("If-None-Match", "*".into())]
            }
            Precondition::IfMatch(v) => {
                match self.stat(path).await {
                    Ok(cur) if super::entry_matches(&cur, v) => {}
                    Ok(_) | Err(RemoteError::NotFound { .. }) => {
                        return Err(RemoteError::PreconditionFailed { path: path.clone() })
                    }
                    Err(e) => return Err(e),
                }
                v.if_match()
                    .map(|m| vec![("If-Match", m)])
                    .unwrap_or_default()
            }
        };
        let file = Arc::new(src.try_clone().map_err(|e| RemoteError::io(path, e))?);
        let mtime_s = meta.mtime();
        if size > self.cfg.multipart_threshold {
            let fp = format!(
                "{}:{}.{}:{}",
                size,
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino()
            );
            self.multipart(path, &key, file, size, fp).await?;
        } else {
            let url = self.object_url(&key, &[]);
            retry(&self.cfg.http.retry, &self.breaker, "PUT", path, |_| {
                let (url, file) = (url.clone(), file.clone());
                let cond = &cond;
                async move {
                    let mut rb = self
                        .client
                        .put(url)
                        .header("Content-Length", size)
                        .header("x-amz-meta-mtime", mtime_s.to_string());
                    for (k, v) in cond {
                        rb = rb.header(*k, v);
                    }
                    self.send_streamed(path, rb.body(http::file_body(file, 0, size)))
                        .await
                        .map(|_| ())
                }
            })
            .await?;
        }
        let e = self.stat(path).await?;
        if e.size != size || e.kind != Kind::File {
            return Err(RemoteError::protocol(
                path,
                format!("uploaded {size} bytes but the server reports {}", e.size),
            ));
        }
        Ok(e)
    }

    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        let keys = match kind {
            Kind::File => {
                if self.head(path, &self.key(path)).await?.is_none() {
                    return Err(RemoteError::NotFound { path: path.clone() });
                }
                vec![self.key(path)]
            }
            Kind::Dir => {
                let mut k = self.all_keys(path).await?;
                if k.is_empty() {
                    return Err(RemoteError::NotFound { path: path.clone() });
                }
                // Children first, the marker last.
                k.sort_by_key(|s| std::cmp::Reverse(s.len()));
                k
            }
        };
        for k in keys {
            let url = self.object_url(&k, &[]);
            match self
                .call("DELETE", path, Method::DELETE, url, &[], None)
                .await
            {
                Ok(_) | Err(RemoteError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, kind: Kind) -> Result<Moved> {
        if self.stat(to).await.is_ok() {
            return Err(RemoteError::AlreadyExists { path: to.clone() });
        }
        let (src_base, dst_base) = (self.key(from), self.key(to));
        let keys = match kind {
            Kind::File => vec![src_base.clone()],
            Kind::Dir => self.all_keys(from).await?,
        };
        if keys.is_empty() {
            return Err(RemoteError::NotFound { path: from.clone() });
        }
        let mut moved = Moved::default();
        for k in &keys {
            let nk = format!("{dst_base}{}", &k[src_base.len()..]);
            let source = format!("/{}/{}", self.cfg.bucket, utf8_percent_encode(k, KEY));
            let url = self.object_url(&nk, &[]);
            let resp = self
                .call(
                    "COPY",
                    from,
                    Method::PUT,
                    url,
                    &[("x-amz-copy-source", source)],
                    None,
                )
                .await?;
            let body = self.xml(from, resp).await?;
            if listing::is_error_document(&body) {
                return Err(RemoteError::protocol(from, "CopyObject failed"));
            }
            if kind == Kind::File {
                // The copy is a new object: its ETag (a multipart upload's becomes a plain
                // MD5) and its time, as the copy's answer names them.
                let (etag, time) = listing::parse_copy_result(&body[..])
                    .map_err(|e| RemoteError::protocol(from, format!("CopyObject answer: {e}")))?;
                moved = Moved {
                    etag: etag.as_deref().and_then(Version::from_etag),
                    mtime: time.as_deref().and_then(parse_time),
                };
            }
        }
        for k in &keys {
            let url = self.object_url(k, &[]);
            match self
                .call("DELETE", from, Method::DELETE, url, &[], None)
                .await
            {
                Ok(_) | Err(RemoteError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        // S3 has no directories: a `dir/` marker object keeps an empty one visible where the
        // server supports markers; elsewhere directories exist through their contents.
        if path.is_root() || self.markers.load(Ordering::Relaxed) == MARKERS_NO {
            return Ok(());
        }
        let url = self.object_url(&self.dir_prefix(path), &[]);
        self.call("MKDIR", path, Method::PUT, url, &[], Some(vec![]))
            .await?;
        if self.markers.load(Ordering::Relaxed) == MARKERS_UNKNOWN {
            let page = self
                .list_page(path, &self.dir_prefix(path), true, None, Some(1))
                .await?;
            if !page.objects.is_empty() || !page.prefixes.is_empty() {
                self.markers.store(MARKERS_YES, Ordering::Relaxed);
                return Ok(());
            }
            tracing::info!(remote = %self.describe(), "server keeps no directory markers; directories are implicit");
            self.markers.store(MARKERS_NO, Ordering::Relaxed);
            // rclone serve s3 stores `dir/` as an empty file `dir`: remove that stray object.
            let parent = path.parent().unwrap_or_default();
            let page = self
                .list_page(path, &self.dir_prefix(&parent), true, None, None)
                .await?;
            let key = self.key(path);
            if page
                .objects
                .iter()
                .any(|o| o.key == key.as_bytes() && o.size == 0)
            {
                let url = self.object_url(&key, &[]);
                self.call("DELETE", path, Method::DELETE, url, &[], None)
                    .await?;
            }
        }
        Ok(())
    }
}

/// An S3 timestamp (`2026-01-02T03:04:05.000Z`, as listings and copy answers give it).
fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(path_style: bool, prefix: &str) -> S3 {
        let mut c = S3Config::new(Url::parse("http://127.0.0.1:9000").unwrap(), "bkt");
        c.path_style = path_style;
        c.prefix = prefix.into();
        S3::new(c).unwrap()
    }

    #[test]
    fn addressing_styles() {
        let p = s3(true, "");
        assert_eq!(
            p.object_url("a b/c+d", &[]).as_str(),
            "http://127.0.0.1:9000/bkt/a%20b/c%2Bd"
        );
        let mut c = S3Config::new(Url::parse("http://localhost:9000").unwrap(), "bkt");
        c.path_style = false;
        let v = S3::new(c).unwrap();
        assert_eq!(
            v.object_url("k", &[]).as_str(),
            "http://bkt.localhost:9000/k"
        );
        assert_eq!(
            p.object_url("k", &[("uploadId", "a/b+c="), ("partNumber", "2")])
                .query(),
            Some("partNumber=2&uploadId=a%2Fb%2Bc%3D")
        );
        assert!(S3::new(S3Config::new(Url::parse("http://h").unwrap(), "Bad_Bucket")).is_err());
    }

    #[test]
    fn keys_map_to_paths_or_are_rejected() {
        let s = s3(true, "top");
        assert_eq!(s.key(&RelPath::parse("a/b").unwrap()), "top/a/b");
        let ok = |k: &[u8]| {
            s.key_to_path(k, "top/")
                .map(|(p, d)| (p.as_str().to_string(), d))
        };
        assert_eq!(ok(b"top/a/b").unwrap(), ("a/b".into(), false));
        assert_eq!(ok(b"top/a/").unwrap(), ("a".into(), true));
        assert!(ok(b"top/../x").is_err());
        assert!(ok(b"top/a//b").is_err());
        assert!(ok(b"top/a\0b").is_err());
        assert!(ok(b"top/a\x01b").is_err());
        assert!(ok(b"top/\xff").is_err());
        assert!(ok(&[b"top/".as_slice(), &[b'x'; 256]].concat()).is_err());
        assert!(ok(b"other/x").is_err());
    }
}

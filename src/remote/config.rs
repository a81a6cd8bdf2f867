//! Parsing remote specs (`dav://`, `davs://`, `s3://`, `file://`) into a concrete remote.
//! This is the one place outside the daemon that names the concrete implementations.

use super::http::HttpConfig;
use super::local::LocalDir;
use super::s3::{S3Config, S3};
use super::webdav::{WebDav, WebDavConfig};
use super::{Remote, RemoteError, Result};
use crate::asuser::UserCreds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

/// What a user gives to `skyfill add-root` (secrets excluded: they travel separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RemoteSpec {
    /// `dav://host[:port]/path`, `davs://host/path`, `s3://bucket[/prefix]`, `file:///path`.
    pub url: String,
    #[serde(default)]
    pub user: Option<String>,
    /// S3 endpoint (default AWS for the region).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
}

/// Builds the remote for a spec. `secret` is a password, or `ACCESS:SECRET` for S3. A
/// `file://` remote is opened and used with `owner`'s credentials (the root's owner in the
/// daemon, [`UserCreds::current`] elsewhere).
pub fn open_remote(
    spec: &RemoteSpec,
    secret: Option<&str>,
    http: HttpConfig,
    state_dir: Option<PathBuf>,
    owner: Arc<UserCreds>,
) -> Result<Arc<dyn Remote>> {
    let u = Url::parse(&spec.url)
        .map_err(|e| RemoteError::Config(format!("remote URL {:?}: {e}", spec.url)))?;
    match u.scheme() {
        "dav" | "davs" | "http" | "https" => {
            let scheme = if matches!(u.scheme(), "davs" | "https") {
                "https"
            } else {
                "http"
            };
            let host = u
                .host_str()
                .ok_or_else(|| RemoteError::Config("WebDAV URL without a host".into()))?;
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let url = Url::parse(&format!("{scheme}://{host}{port}{}", u.path()))
                .map_err(|e| RemoteError::Config(e.to_string()))?;
            let user = spec
                .user
                .clone()
                .or_else(|| (!u.username().is_empty()).then(|| u.username().to_string()));
            Ok(Arc::new(WebDav::new(WebDavConfig {
                url,
                user,
                password: secret.map(str::to_string),
                http,
            })?))
        }
        "s3" => {
            let bucket = u
                .host_str()
                .ok_or_else(|| RemoteError::Config("s3:// URL without a bucket".into()))?;
            let region = spec.region.clone().unwrap_or_else(|| "us-east-1".into());
            let endpoint = match &spec.endpoint {
                Some(e) => {
                    Url::parse(e).map_err(|e| RemoteError::Config(format!("endpoint: {e}")))?
                }
                None => Url::parse(&format!("https://s3.{region}.amazonaws.com")).unwrap(),
            };
            let mut c = S3Config::new(endpoint, bucket);
            c.region = region;
            c.prefix = u.path().trim_matches('/').to_string();
            c.path_style = spec.path_style;
            c.http = http;
            c.state_dir = state_dir;
            c.credentials = match secret {
                None | Some("") => None,
                Some(s) => {
                    let (a, k) = s.split_once(':').ok_or_else(|| {
                        RemoteError::Config("S3 secret must be ACCESS_KEY:SECRET_KEY".into())
                    })?;
                    Some((a.to_string(), k.to_string()))
                }
            };
            Ok(Arc::new(S3::new(c)?))
        }
        "file" => {
            if u.host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(RemoteError::Config(
                    "file:// URLs must be local (file:///path)".into(),
                ));
            }
            let p = u
                .to_file_path()
                .map_err(|_| RemoteError::Config(format!("bad file URL {:?}", spec.url)))?;
            Ok(Arc::new(LocalDir::new(&p, owner)?))
        }
        other => Err(RemoteError::Config(format!(
            "unknown remote scheme {other:?} (use dav://, davs://, s3:// or file://)"
        ))),
    }
}

/// Seconds this machine's clock is ahead of the server's (from its `Date` header); `None`
/// when the server cannot be asked. S3 refuses requests beyond 15 minutes of skew.
pub async fn clock_skew(spec: &RemoteSpec) -> Option<i64> {
    let u = url::Url::parse(&spec.url).ok()?;
    let base = match u.scheme() {
        "dav" | "http" => format!(
            "http://{}{}/",
            u.host_str()?,
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        "davs" | "https" => format!(
            "https://{}{}/",
            u.host_str()?,
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        "s3" => spec.endpoint.clone().unwrap_or_else(|| {
            format!(
                "https://s3.{}.amazonaws.com/",
                spec.region.as_deref().unwrap_or("us-east-1")
            )
        }),
        _ => return None,
    };
    let c = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .ok()?;
    let resp = c.head(&base).send().await.ok()?;
    let date = resp.headers().get(reqwest::header::DATE)?.to_str().ok()?;
    let server = httpdate::parse_http_date(date).ok()?;
    let now = std::time::SystemTime::now();
    Some(match now.duration_since(server) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> RemoteSpec {
        RemoteSpec {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn schemes() {
        let h = HttpConfig::default;
        assert!(open_remote(
            &spec("dav://127.0.0.1:8080/dav"),
            None,
            h(),
            None,
            UserCreds::current()
        )
        .unwrap()
        .describe()
        .starts_with("webdav http://127.0.0.1:8080/dav/"));
        assert!(open_remote(
            &spec("davs://example.org/x"),
            Some("pw"),
            h(),
            None,
            UserCreds::current()
        )
        .unwrap()
        .describe()
        .contains("https://example.org/x/"));
        let mut s = spec("s3://bucket/pre/fix");
        s.endpoint = Some("http://127.0.0.1:9000".into());
        s.path_style = true;
        assert!(open_remote(&s, Some("ak:sk"), h(), None, UserCreds::current()).is_ok());
        assert!(open_remote(&s, Some("no-colon"), h(), None, UserCreds::current()).is_err());
        assert!(open_remote(&spec("file:///tmp"), None, h(), None, UserCreds::current()).is_ok());
        assert!(open_remote(&spec("ftp://x/y"), None, h(), None, UserCreds::current()).is_err());
        assert!(open_remote(
            &spec("file://otherhost/tmp"),
            None,
            h(),
            None,
            UserCreds::current()
        )
        .is_err());
    }
}

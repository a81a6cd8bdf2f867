//! The first-run wizard's work: testing a connection with a real request and saying precisely
//! what is wrong (DNS, TLS, refused, 401/403, 404 folder or bucket, clock skew); adding the
//! account (secret into the user's keyring, then handed to the daemon); Nextcloud's browser
//! login flow (Login Flow v2), which yields an app password.

use serde::{Deserialize, Serialize};
use skyfill::credentials;
use skyfill::ipc::proto::{AddRootResult, ErrorCode};
use skyfill::model::RelPath;
use skyfill::remote::{http::HttpConfig, open_remote, RemoteError, RemoteSpec};
use skyfill::t;
use skyfill_tray::daemon::{ApiError, Daemon, Res};
use std::time::Duration;

/// What the wizard collected: the remote (as `add-root` takes it) and its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Form {
    pub kind: String,
    #[serde(flatten)]
    pub remote: RemoteSpec,
    /// Password, or `ACCESS:SECRET` for S3.
    #[serde(default)]
    pub secret: Option<String>,
}

impl Form {
    /// The remote, with empty fields left out.
    pub fn spec(&self) -> RemoteSpec {
        let keep = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        RemoteSpec {
            url: self.remote.url.clone(),
            user: keep(&self.remote.user),
            endpoint: keep(&self.remote.endpoint),
            region: keep(&self.remote.region),
            path_style: self.remote.path_style,
        }
    }
}

/// Plain words for a failed test request.
pub fn explain(e: &RemoteError, host: &str) -> String {
    if let RemoteError::Exhausted { last, .. } = e {
        return explain(last, host);
    }
    let lower = e.to_string().to_lowercase();
    match e {
        RemoteError::Auth { status: 401, .. } => {
            t!("The user name or password is wrong (the server answered 401). For Nextcloud with two-factor login, use an app password.")
        }
        RemoteError::Auth { status, .. } | RemoteError::Http { status, .. }
            if *status == 403 && lower.contains("requesttimetooskewed") =>
        {
            t!("This computer's clock differs too much from the server's; set the clock (enable NTP) and try again.")
        }
        RemoteError::Auth { status, .. } if lower.contains("signature") => t!(
            "The secret key is wrong (the server answered {status}: the request signature does not match).",
            status = status
        ),
        RemoteError::Auth { status, .. } => t!(
            "Access denied (the server answered {status}): check the user, the keys and their permissions.",
            status = status
        ),
        RemoteError::NotFound { .. } | RemoteError::Http { status: 404, .. } => {
            t!("Nothing at that address (404): check the folder path, or that the bucket exists.")
        }
        _ if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("name or service not known") => {
            t!("The server name {host} cannot be found (DNS). Check the address.", host = host)
        }
        _ if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") => t!(
            "The connection to {host} is not trusted (TLS): {error}. Check the address, or the server's certificate.",
            host = host,
            error = e
        ),
        _ if lower.contains("refused") => {
            t!("Nothing answers at {host}: the server is down or the port is wrong.", host = host)
        }
        _ if e.is_offline() => t!("{host} does not answer ({error}).", host = host, error = e),
        _ => e.to_string(),
    }
}

fn host_of(form: &Form) -> String {
    let spec = form.spec();
    let u = spec.endpoint.unwrap_or(spec.url);
    url::Url::parse(&u)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or(u)
}

/// The code a failed test request reports: `auth` for refused credentials, else `remote`.
fn code_of(e: &RemoteError) -> ErrorCode {
    match e {
        RemoteError::Exhausted { last, .. } => code_of(last),
        RemoteError::Auth { .. } => ErrorCode::Auth,
        _ => ErrorCode::Remote,
    }
}

/// A real request to the server: the folder (or bucket) must exist and the credentials work.
pub async fn test_connection(form: &Form) -> Res<String> {
    let spec = form.spec();
    let host = host_of(form);
    let mut http = HttpConfig {
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(15),
        ..HttpConfig::default()
    };
    // One attempt: the user waits for this answer.
    http.retry.max_attempts = 1;
    let r = open_remote(
        &spec,
        form.secret.as_deref(),
        http,
        None,
        skyfill::asuser::UserCreds::current(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let res = r.stat(&RelPath::root()).await;
    let skew = skyfill::remote::config::clock_skew(&spec).await;
    if let Some(s) = skew.filter(|s| s.abs() > 300) {
        let said = if s > 0 {
            t!(
                "This computer's clock is {m} minutes ahead of the server's; set the clock (enable NTP) and try again.",
                m = s.abs() / 60
            )
        } else {
            t!(
                "This computer's clock is {m} minutes behind the server's; set the clock (enable NTP) and try again.",
                m = s.abs() / 60
            )
        };
        return Err(ApiError::remote(said));
    }
    match res {
        Ok(_) => Ok(t!(
            "Connected to {host}: the folder is there and the sign-in works.",
            host = host
        )),
        Err(e) => Err(ApiError::new(code_of(&e), explain(&e, &host))),
    }
}

/// Stores the secret in the keyring and adds the root (the daemon populates it at once; it
/// keeps the secret only in memory and the app hands it over again on every reconnection).
/// Blocks.
pub fn add_account(d: &Daemon, form: &Form, local: &str) -> Res<AddRootResult> {
    let spec = form.spec();
    if let Some(s) = &form.secret {
        credentials::store(&spec, s).map_err(|e| {
            ApiError::internal(t!("Cannot store the password in your keyring: {error}. Is a keyring (GNOME Keyring, KWallet) running and unlocked?", error = e))
        })?;
    }
    d.add_root(local, &spec, form.secret.as_deref())
}

/// What Nextcloud's login flow yields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppPassword {
    pub server: String,
    pub user: String,
    pub password: String,
}

#[derive(Deserialize)]
struct Flow {
    poll: Poll,
    login: String,
}

#[derive(Deserialize)]
struct Poll {
    token: String,
    endpoint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Granted {
    server: String,
    login_name: String,
    app_password: String,
}

/// Whether `u` is on the server the user typed (`base`): the same host and port, over https
/// (http only when the user typed an http server, then with the same scheme and port, or
/// upgraded to https on the default ports). No user name or password in it.
fn on_server(base: &url::Url, u: &url::Url) -> bool {
    let scheme_ok = match (base.scheme(), u.scheme()) {
        ("https", "https") | ("http", "http") => {
            u.port_or_known_default() == base.port_or_known_default()
        }
        ("http", "https") => base.port().is_none() && u.port().is_none(),
        _ => false,
    };
    scheme_ok
        && u.host().is_some()
        && u.host() == base.host()
        && u.username().is_empty()
        && u.password().is_none()
}

/// Checks an address the server sent for the login flow (`what`: the login page, the poll
/// address) before the browser opens it or the token goes there: it must be on the server
/// the user typed (see [`on_server`]); anything else (`file:`, `javascript:`, another host,
/// `https://good.example@evil.example/`) is refused.
pub fn check_flow_url(base: &str, what: &str, url: &str) -> Result<url::Url, String> {
    let b = url::Url::parse(base).map_err(|e| format!("{base} is not a server address: {e}"))?;
    let host = b.host_str().unwrap_or(base);
    let refuse = |why: &str| {
        tracing::warn!(url, what, "login flow address refused");
        format!(
            "The server sent a {what} address that {why}; Skyfill does not use it. Check the \
             server address ({host}) or sign in with an app password instead."
        )
    };
    let u = url::Url::parse(url).map_err(|_| refuse("is not a valid address"))?;
    if !matches!(u.scheme(), "https" | "http") || (u.scheme() == "http" && b.scheme() != "http") {
        return Err(refuse("is not an https address"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(refuse("carries a user name or password"));
    }
    if !on_server(&b, &u) {
        return Err(refuse(&format!("is not on {host}")));
    }
    Ok(u)
}

/// Nextcloud Login Flow v2: start it, let the user log in in the browser (`open`), then poll
/// until the server hands out an app password (at most 20 minutes, as Nextcloud allows). The
/// login page and the poll address the server sends must be on the server the user typed
/// ([`check_flow_url`]); redirects may not leave it either.
pub async fn nextcloud_login(
    server: &str,
    open: impl Fn(&str) -> Result<(), String>,
) -> Result<AppPassword, String> {
    let base = server.trim().trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("https://{base}")
    };
    let base = base
        .split("/remote.php")
        .next()
        .unwrap_or(&base)
        .trim_end_matches("/index.php")
        .to_string();
    let origin =
        url::Url::parse(&base).map_err(|e| format!("{base} is not a server address: {e}"))?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::custom(move |a| {
            if a.previous().len() >= 10 {
                a.error("too many redirects")
            } else if on_server(&origin, a.url()) {
                a.follow()
            } else {
                a.error("redirected away from the server")
            }
        }))
        .build()
        .map_err(|e| e.to_string())?;
    let flow: Flow = c
        .post(format!("{base}/index.php/login/v2"))
        .header("User-Agent", "Skyfill")
        .send()
        .await
        .map_err(|e| {
            t!(
                "{server} does not offer Nextcloud's login: {error}",
                server = base,
                error = e
            )
        })?
        .error_for_status()
        .map_err(|e| format!("{base} does not offer Nextcloud's login: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{base} answered something else than Nextcloud's login: {e}"))?;
    let login = check_flow_url(&base, "login page", &flow.login)?;
    let poll = check_flow_url(&base, "poll", &flow.poll.endpoint)?;
    open(login.as_str())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20 * 60);
    while std::time::Instant::now() < deadline {
        let r = c
            .post(poll.clone())
            .form(&[("token", flow.poll.token.as_str())])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            let g: Granted = r.json().await.map_err(|e| e.to_string())?;
            return Ok(AppPassword {
                server: g.server,
                user: g.login_name,
                password: g.app_password,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(t!("The browser login was not finished within 20 minutes."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn failures_are_explained_precisely() {
        let p = RelPath::root();
        let e = explain(
            &RemoteError::Auth {
                path: p.clone(),
                status: 401,
            },
            "h",
        );
        assert!(e.contains("user name or password"));
        let e = explain(&RemoteError::NotFound { path: p.clone() }, "h");
        assert!(e.contains("404"));
        let e = explain(
            &RemoteError::Network {
                path: p.clone(),
                detail: "error sending request: dns error: failed to lookup address".into(),
            },
            "nowhere.invalid",
        );
        assert!(e.contains("cannot be found (DNS)"), "{e}");
        let e = explain(
            &RemoteError::Network {
                path: p.clone(),
                detail: "invalid peer certificate: UnknownIssuer".into(),
            },
            "h",
        );
        assert!(e.contains("(TLS)"), "{e}");
        let e = explain(
            &RemoteError::Http {
                path: p,
                status: 403,
                retry_after: None,
                detail: Some("RequestTimeTooSkewed".into()),
            },
            "h",
        );
        assert!(e.contains("clock"), "{e}");
    }

    /// A fake HTTP server on 127.0.0.1: `respond(request line, body)` gives the status and
    /// the JSON answer. Returns the port.
    fn fake_server(
        mut respond: impl FnMut(&str, &str, u16) -> (u16, String) + Send + 'static,
    ) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let (status, out) = respond(&line, &String::from_utf8_lossy(&body), port);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
            }
        });
        port
    }

    /// A fake Nextcloud answering Login Flow v2 like the real one (documented at
    /// docs.nextcloud.com, "Login Flow v2"): 404 while the user has not logged in, then the
    /// app password. Nextcloud itself cannot be installed here.
    #[tokio::test]
    async fn nextcloud_login_flow_yields_an_app_password() {
        let mut polls = 0;
        let port = fake_server(move |line, body, port| {
            if line.starts_with("POST /index.php/login/v2 ") {
                (200, format!("{{\"poll\":{{\"token\":\"tok\",\"endpoint\":\"http://127.0.0.1:{port}/login/v2/poll\"}},\"login\":\"http://127.0.0.1:{port}/login/v2/flow/abc\"}}"))
            } else if line.starts_with("POST /login/v2/poll ") {
                assert_eq!(body, "token=tok");
                polls += 1;
                if polls < 2 {
                    (404, "[]".to_string())
                } else {
                    (200, format!("{{\"server\":\"http://127.0.0.1:{port}\",\"loginName\":\"me\",\"appPassword\":\"app-pw\"}}"))
                }
            } else {
                (404, "[]".to_string())
            }
        });
        let opened = std::sync::Mutex::new(String::new());
        // A DAV address of the server is accepted too: the flow starts at its base.
        let got = nextcloud_login(
            &format!("http://127.0.0.1:{port}/remote.php/dav/files/me"),
            |u| {
                *opened.lock().unwrap() = u.to_string();
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(got.user, "me");
        assert_eq!(got.password, "app-pw");
        assert!(opened.lock().unwrap().ends_with("/login/v2/flow/abc"));
    }

    #[test]
    fn flow_addresses_must_be_https_on_the_server_typed() {
        let b = "https://cloud.example.org";
        for ok in [
            "https://cloud.example.org/login/v2/flow/abc",
            "https://cloud.example.org:443/index.php/login/v2/poll",
            "https://CLOUD.example.org/login/v2/flow/abc",
        ] {
            let u = check_flow_url(b, "login page", ok).unwrap();
            assert_eq!(u.host_str(), Some("cloud.example.org"));
        }
        for bad in [
            // Downgrade to plain HTTP.
            "http://cloud.example.org/login/v2/flow/abc",
            // Other hosts, other ports.
            "https://evil.example/login/v2/flow/abc",
            "http://evil.example/login/v2/flow/abc",
            "https://cloud.example.org:8443/login/v2/flow/abc",
            "https://cloud.example.org.evil.example/login",
            "https://evil.example/cloud.example.org",
            // User-info tricks: the host is what follows the @.
            "https://cloud.example.org@evil.example/login",
            "https://cloud.example.org:443@evil.example/login",
            "https://me:pw@cloud.example.org/login",
            // Other schemes.
            "file:///etc/passwd",
            "javascript:alert(document.cookie)",
            "data:text/html,<script>alert(1)</script>",
            "ftp://cloud.example.org/login",
            // Not an absolute address, or an option for xdg-open.
            "/login/v2/flow/abc",
            "cloud.example.org/login",
            "--help",
            "",
        ] {
            let e = check_flow_url(b, "login page", bad).unwrap_err();
            assert!(e.contains("Skyfill does not use it"), "{bad}: {e}");
            assert!(e.starts_with("The server sent a login page address"), "{e}");
        }
        // The poll address gets the same check (the token goes there).
        let e = check_flow_url(b, "poll", "https://evil.example/poll").unwrap_err();
        assert!(
            e.contains("poll address that is not on cloud.example.org"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_only_on_the_same_plain_http_origin() {
        let b = "http://127.0.0.1:8080";
        check_flow_url(b, "login page", "http://127.0.0.1:8080/login/v2/flow/abc").unwrap();
        for bad in [
            "http://127.0.0.1:8081/login/v2/flow/abc",
            "http://127.0.0.1/login/v2/flow/abc",
            "http://localhost:8080/login/v2/flow/abc",
            "http://evil.example:8080/login/v2/flow/abc",
            "https://127.0.0.1:8081/login/v2/flow/abc",
            "http://127.0.0.1:8080@evil.example:8080/x",
            "file:///etc/passwd",
        ] {
            assert!(check_flow_url(b, "login page", bad).is_err(), "{bad}");
        }
        // From a plain-http server on the default port, the same host over https is fine.
        let b = "http://cloud.example.org";
        check_flow_url(b, "login page", "https://cloud.example.org/x").unwrap();
        check_flow_url(b, "login page", "http://cloud.example.org:80/x").unwrap();
        assert!(check_flow_url(b, "login page", "https://evil.example/x").is_err());
    }

    /// A server handing out a login page or a poll address elsewhere gets nothing opened and
    /// no token sent.
    #[tokio::test]
    async fn nextcloud_login_refuses_addresses_off_the_server() {
        for (login, poll, what) in [
            (
                "https://evil.example/login/v2/flow/abc",
                "{base}/login/v2/poll",
                "login page",
            ),
            ("javascript:alert(1)", "{base}/login/v2/poll", "login page"),
            ("file:///etc/passwd", "{base}/login/v2/poll", "login page"),
            (
                "{base}/login/v2/flow/abc",
                "http://evil.example/login/v2/poll",
                "poll",
            ),
            (
                "{base}@evil.example/x",
                "{base}/login/v2/poll",
                "login page",
            ),
        ] {
            let polled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let p = polled.clone();
            let (login, poll) = (login.to_string(), poll.to_string());
            let port = fake_server(move |line, _, port| {
                let base = format!("http://127.0.0.1:{port}");
                if line.starts_with("POST /index.php/login/v2 ") {
                    let l = login.replace("{base}", &base);
                    let q = poll.replace("{base}", &base);
                    (
                        200,
                        serde_json::json!({"poll": {"token": "tok", "endpoint": q}, "login": l})
                            .to_string(),
                    )
                } else {
                    p.store(true, std::sync::atomic::Ordering::SeqCst);
                    (404, "[]".to_string())
                }
            });
            let opened = std::sync::Mutex::new(None::<String>);
            let e = nextcloud_login(&format!("http://127.0.0.1:{port}"), |u| {
                *opened.lock().unwrap() = Some(u.to_string());
                Ok(())
            })
            .await
            .unwrap_err();
            assert!(e.contains(&format!("{what} address")), "{e}");
            assert_eq!(*opened.lock().unwrap(), None, "opened for {e}");
            assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));
        }
    }
}

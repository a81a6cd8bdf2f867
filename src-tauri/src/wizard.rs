//! The first-run wizard's work: testing a connection with a real request and saying precisely
//! what is wrong (DNS, TLS, refused, 401/403, 404 folder or bucket, clock skew); adding the
//! account (secret into the user's keyring, then handed to the daemon); Nextcloud's browser
//! login flow (Login Flow v2), which yields an app password.

use crate::commands::Form;
use crate::link::client;
use serde::{Deserialize, Serialize};
use skyfill::credentials;
use skyfill::ipc::proto::{AddRootResult, RequestBody};
use skyfill::model::RelPath;
use skyfill::remote::{http::HttpConfig, open_remote, RemoteError};
use std::time::Duration;

/// Plain words for a failed test request.
pub fn explain(e: &RemoteError, host: &str) -> String {
    if let RemoteError::Exhausted { last, .. } = e {
        return explain(last, host);
    }
    let lower = e.to_string().to_lowercase();
    match e {
        RemoteError::Auth { status: 401, .. } => {
            "The user name or password is wrong (the server answered 401). For Nextcloud with two-factor login, use an app password.".into()
        }
        RemoteError::Auth { status, .. } | RemoteError::Http { status, .. }
            if *status == 403 && lower.contains("requesttimetooskewed") =>
        {
            "This computer's clock differs too much from the server's; set the clock (enable NTP) and try again.".into()
        }
        RemoteError::Auth { status, .. } if lower.contains("signature") => format!(
            "The secret key is wrong (the server answered {status}: the request signature does not match)."
        ),
        RemoteError::Auth { status, .. } => format!(
            "Access denied (the server answered {status}): check the user, the keys and their permissions."
        ),
        RemoteError::NotFound { .. } => {
            "Nothing at that address (404): check the folder path, or that the bucket exists.".into()
        }
        RemoteError::Http { status: 404, .. } => {
            "Nothing at that address (404): check the folder path, or that the bucket exists.".into()
        }
        _ if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("name or service not known") => {
            format!("The server name {host} cannot be found (DNS). Check the address.")
        }
        _ if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") => format!(
            "The connection to {host} is not trusted (TLS): {e}. Check the address, or the server's certificate."
        ),
        _ if lower.contains("refused") => {
            format!("Nothing answers at {host}: the server is down or the port is wrong.")
        }
        _ if e.is_offline() => format!("{host} does not answer ({e})."),
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

/// A real request to the server: the folder (or bucket) must exist and the credentials work.
pub async fn test_connection(form: &Form) -> Result<String, String> {
    let spec = form.spec();
    let host = host_of(form);
    let mut http = HttpConfig {
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(15),
        ..HttpConfig::default()
    };
    // One attempt: the user waits for this answer.
    http.retry.max_attempts = 1;
    let r = open_remote(&spec, form.secret.as_deref(), http, None).map_err(|e| e.to_string())?;
    let res = r.stat(&RelPath::root()).await;
    let skew = skyfill::remote::config::clock_skew(&spec).await;
    if let Some(s) = skew.filter(|s| s.abs() > 300) {
        return Err(format!(
            "This computer's clock is {} minutes {} the server's; set the clock (enable NTP) and try again.",
            s.abs() / 60,
            if s > 0 { "ahead of" } else { "behind" }
        ));
    }
    match res {
        Ok(_) => Ok(format!(
            "Connected to {host}: the folder is there and the sign-in works."
        )),
        Err(e) => Err(explain(&e, &host)),
    }
}

/// Stores the secret in the keyring and adds the root (the daemon populates it at once).
pub async fn add_account(form: Form, local: String) -> Result<AddRootResult, String> {
    tauri::async_runtime::spawn_blocking(move || {
        let spec = form.spec();
        if let Some(s) = &form.secret {
            credentials::store(&spec, s).map_err(|e| {
                format!("Cannot store the password in your keyring: {e}. Is a keyring (GNOME Keyring, KWallet) running and unlocked?")
            })?;
        }
        let mut c = client()?;
        let v = c
            .call(RequestBody::AddRoot {
                local,
                remote: spec,
                secret: form.secret.clone(),
                // Only in the keyring: the app hands it over again on every reconnection.
                persist_secret: false,
            })
            .map_err(|e| match e {
                skyfill::ipc::client::ClientError::Daemon { message, .. } => message,
                other => crate::link::explain(&other),
            })?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
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

/// Nextcloud Login Flow v2: start it, let the user log in in the browser (`open`), then poll
/// until the server hands out an app password (at most 20 minutes, as Nextcloud allows).
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
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let flow: Flow = c
        .post(format!("{base}/index.php/login/v2"))
        .header("User-Agent", "Skyfill")
        .send()
        .await
        .map_err(|e| format!("{base} does not offer Nextcloud's login: {e}"))?
        .error_for_status()
        .map_err(|e| format!("{base} does not offer Nextcloud's login: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{base} answered something else than Nextcloud's login: {e}"))?;
    open(&flow.login)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20 * 60);
    while std::time::Instant::now() < deadline {
        let r = c
            .post(&flow.poll.endpoint)
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
    Err("The browser login was not finished within 20 minutes.".into())
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

    /// A fake Nextcloud answering Login Flow v2 like the real one (documented at
    /// docs.nextcloud.com, "Login Flow v2"): 404 while the user has not logged in, then the
    /// app password. Nextcloud itself cannot be installed here.
    #[tokio::test]
    async fn nextcloud_login_flow_yields_an_app_password() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut polls = 0;
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
                let (status, out) = if line.starts_with("POST /index.php/login/v2 ") {
                    (200, format!("{{\"poll\":{{\"token\":\"tok\",\"endpoint\":\"http://127.0.0.1:{port}/login/v2/poll\"}},\"login\":\"http://127.0.0.1:{port}/login/v2/flow/abc\"}}"))
                } else if line.starts_with("POST /login/v2/poll ") {
                    assert_eq!(String::from_utf8_lossy(&body), "token=tok");
                    polls += 1;
                    if polls < 2 {
                        (404, "[]".to_string())
                    } else {
                        (200, format!("{{\"server\":\"http://127.0.0.1:{port}\",\"loginName\":\"me\",\"appPassword\":\"app-pw\"}}"))
                    }
                } else {
                    (404, "[]".to_string())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
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
}

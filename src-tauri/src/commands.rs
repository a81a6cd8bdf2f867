//! The commands the window calls (`invoke`). Each opens a short connection to the daemon over
//! the shared protocol, off the UI thread; errors come back as plain words.

use crate::link::{self, client};
use serde::{Deserialize, Serialize};
use skyfill::ipc::proto::{
    AddRootResult, BatchResult, ConfigResult, PathStatus, PinSetting, RemoveMode, RequestBody,
    RootInfo,
};
use skyfill::remote::RemoteSpec;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tauri::async_runtime::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

fn call<T: serde::de::DeserializeOwned>(body: RequestBody) -> Result<T, String> {
    let mut c = client()?;
    let v = c.call(body).map_err(|e| match e {
        skyfill::ipc::client::ClientError::Daemon { message, .. } => message,
        other => link::explain(&other),
    })?;
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from the daemon: {e}"))
}

#[tauri::command]
pub fn connection(state: tauri::State<'_, link::Shared>) -> link::Connection {
    state.conn.lock().unwrap().clone()
}

#[tauri::command]
pub fn home_dir() -> String {
    std::env::var("HOME").unwrap_or_else(|_| "/".into())
}

#[tauri::command]
pub async fn roots() -> Result<Vec<RootInfo>, String> {
    blocking(|| call(RequestBody::Roots)).await
}

#[tauri::command]
pub async fn list(path: String) -> Result<Vec<PathStatus>, String> {
    blocking(move || call(RequestBody::List { path })).await
}

/// The request for one window action on one path.
pub fn action_request(action: &str, path: String) -> Result<RequestBody, String> {
    Ok(match action {
        "offline" => RequestBody::Pin {
            path,
            setting: PinSetting::Pinned,
            recursive: true,
        },
        "online-only" => RequestBody::Pin {
            path,
            setting: PinSetting::OnlineOnly,
            recursive: true,
        },
        "free" => RequestBody::Free {
            path,
            recursive: true,
        },
        "download" => RequestBody::Hydrate {
            path,
            recursive: true,
        },
        other => return Err(format!("unknown action {other}")),
    })
}

/// Make available offline / Free up space / Online-only on many files and folders.
#[tauri::command]
pub async fn act(action: String, paths: Vec<String>) -> Result<BatchResult, String> {
    blocking(move || {
        let mut total = BatchResult::default();
        for p in paths {
            let r: BatchResult = call(action_request(&action, p)?)?;
            total.files += r.files;
            total.bytes += r.bytes;
            total.settings += r.settings;
            total.deferred |= r.deferred;
            total.skipped.extend(r.skipped);
        }
        Ok(total)
    })
    .await
}

#[tauri::command]
pub async fn set_paused(paused: bool) -> Result<Vec<RootInfo>, String> {
    blocking(move || {
        call(if paused {
            RequestBody::Pause { local: None }
        } else {
            RequestBody::Resume { local: None }
        })
    })
    .await
}

#[tauri::command]
pub async fn sync_now() -> Result<serde_json::Value, String> {
    blocking(|| call(RequestBody::Sync { path: None })).await
}

#[tauri::command]
pub async fn config_get() -> Result<ConfigResult, String> {
    blocking(|| call(RequestBody::ConfigGet)).await
}

/// A setting as typed (`5M`, `10%`, `none`, a list for never_download).
#[tauri::command]
pub async fn config_set(
    key: String,
    value: serde_json::Value,
    root: Option<String>,
) -> Result<(), String> {
    blocking(move || {
        let (k, v) = match value {
            serde_json::Value::String(s) => skyfill::ipc::client::setting_value(&key, &s)?,
            other => (key.replace('-', "_"), other),
        };
        call::<serde_json::Value>(RequestBody::ConfigSet {
            key: k,
            value: v,
            local: root,
        })
        .map(|_| ())
    })
    .await
}

#[tauri::command]
pub async fn remove_root(local: String, mode: RemoveMode) -> Result<serde_json::Value, String> {
    blocking(move || call(RequestBody::RemoveRoot { local, mode })).await
}

fn spawn_detached(cmd: &str, args: &[&str]) -> Result<(), String> {
    std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot run {cmd}: {e}"))
}

#[tauri::command]
pub async fn open_path(path: String) -> Result<(), String> {
    spawn_detached("xdg-open", &[&path])
}

/// Shows the file selected in the file manager (org.freedesktop.FileManager1), or opens its
/// folder when no file manager offers that.
#[tauri::command]
pub async fn reveal(path: String) -> Result<(), String> {
    let uri = url::Url::from_file_path(&path)
        .map_err(|_| format!("{path} is not a full path"))?
        .to_string();
    let ok = std::process::Command::new("gdbus")
        .args([
            "call",
            "--session",
            "--dest",
            "org.freedesktop.FileManager1",
            "--object-path",
            "/org/freedesktop/FileManager1",
            "--method",
            "org.freedesktop.FileManager1.ShowItems",
            &format!("['{}']", uri.replace('\'', "%27")),
            "",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    let parent = std::path::Path::new(&path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or(path);
    spawn_detached("xdg-open", &[&parent])
}

// ------------------------------------------------------------------ wizard

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

#[tauri::command]
pub async fn test_connection(form: Form) -> Result<String, String> {
    crate::wizard::test_connection(&form).await
}

#[tauri::command]
pub async fn add_account(form: Form, local: String) -> Result<AddRootResult, String> {
    crate::wizard::add_account(form, local).await
}

#[tauri::command]
pub async fn nextcloud_login(
    app: tauri::AppHandle,
    server: String,
) -> Result<crate::wizard::AppPassword, String> {
    crate::wizard::nextcloud_login(&server, |url| {
        let _ = app;
        spawn_detached("xdg-open", &[url])
    })
    .await
}

// ------------------------------------------------------------------ start at login

fn autostart_file() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(home_dir()).join(".config"));
    base.join("autostart").join("skyfill-tray.desktop")
}

/// The XDG autostart entry (the app starts in the tray, its window hidden).
pub fn autostart_entry(exe: &str) -> String {
    format!(
        "[Desktop Entry]\nType=Application\nName=Skyfill\nComment=Files on demand: sync status and settings\nExec={exe} --hidden\nIcon=skyfill\nX-GNOME-Autostart-enabled=true\nNoDisplay=false\n"
    )
}

#[tauri::command]
pub fn autostart_enabled() -> bool {
    autostart_file().exists()
}

#[tauri::command]
pub fn set_autostart(enabled: bool) -> Result<(), String> {
    let f = autostart_file();
    if enabled {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "skyfill-tray".into());
        std::fs::create_dir_all(f.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(&f, autostart_entry(&exe)).map_err(|e| e.to_string())
    } else {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_protocol_requests() {
        assert!(matches!(
            action_request("offline", "/c/d".into()).unwrap(),
            RequestBody::Pin {
                setting: PinSetting::Pinned,
                recursive: true,
                ..
            }
        ));
        assert!(matches!(
            action_request("free", "/c/d".into()).unwrap(),
            RequestBody::Free {
                recursive: true,
                ..
            }
        ));
        assert!(matches!(
            action_request("online-only", "/c".into()).unwrap(),
            RequestBody::Pin {
                setting: PinSetting::OnlineOnly,
                ..
            }
        ));
        assert!(action_request("explode", "/c".into()).is_err());
    }

    #[test]
    fn forms_become_specs_and_autostart_entries_are_valid() {
        let f: Form = serde_json::from_value(serde_json::json!({
            "kind": "s3", "url": "s3://b/p", "endpoint": "", "region": "eu-west-1",
            "path_style": true, "user": null, "secret": "AK:SK"
        }))
        .unwrap();
        let s = f.spec();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert!(s.path_style);
        let e = autostart_entry("/usr/bin/skyfill-tray");
        assert!(
            e.starts_with("[Desktop Entry]\n")
                && e.contains("Exec=/usr/bin/skyfill-tray --hidden\n")
        );
    }

    #[test]
    fn autostart_toggles_the_xdg_entry() {
        let d = tempfile::tempdir().unwrap();
        std::env::set_var("XDG_CONFIG_HOME", d.path());
        assert!(!autostart_enabled());
        set_autostart(true).unwrap();
        assert!(autostart_enabled());
        assert!(
            std::fs::read_to_string(d.path().join("autostart/skyfill-tray.desktop"))
                .unwrap()
                .contains("--hidden")
        );
        set_autostart(false).unwrap();
        assert!(!autostart_enabled());
    }
}

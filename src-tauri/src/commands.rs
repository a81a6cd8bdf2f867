//! The commands the window calls (`invoke`, all from `ui/public/src/api.js`): each a thin
//! wrapper over the request handle (`daemon.rs`), the wizard (`wizard.rs`) or the desktop
//! (`desktop.rs`), run off the UI thread. Failures reach the window as `{code, message}`
//! ([`ApiError`]).

use crate::wizard::{self, AppPassword, Form};
use skyfill::ipc::proto::{
    AddRootResult, BatchResult, ConfigResult, Page, PageOrder, PathStatus, RemoveMode,
    RemoveResult, RootInfo, SyncResult,
};
use skyfill_tray::daemon::{ApiError, Connection, Daemon, Res};
use skyfill_tray::desktop;
use tauri::State;

/// The messages of the desktop's language for the page (`ui/public/src/i18n.js`).
#[tauri::command]
pub fn catalogue() -> serde_json::Value {
    skyfill::i18n::current().to_json()
}

#[tauri::command]
pub fn connection(d: State<'_, Daemon>) -> Connection {
    d.connection()
}

#[tauri::command]
pub fn home_dir() -> String {
    std::env::var("HOME").unwrap_or_else(|_| "/".into())
}

#[tauri::command]
pub async fn roots(d: State<'_, Daemon>) -> Res<Vec<RootInfo>> {
    d.run(|d| d.roots()).await
}

#[tauri::command]
pub async fn list(d: State<'_, Daemon>, path: String) -> Res<Vec<PathStatus>> {
    d.run(move |d| d.list(&path)).await
}

/// A window of a large folder's rows (the Files view asks for what it shows), sorted and
/// filtered as the view says (`order`; absent: by name, everything).
#[tauri::command]
pub async fn list_page(
    d: State<'_, Daemon>,
    path: String,
    offset: u64,
    limit: u32,
    order: Option<PageOrder>,
) -> Res<Page> {
    let order = order.unwrap_or_default();
    d.run(move |d| d.list_page(&path, offset, limit, &order))
        .await
}

/// A file's or folder's state (a folder's: the totals below it, for the storage overview).
#[tauri::command]
pub async fn status(d: State<'_, Daemon>, path: String) -> Res<PathStatus> {
    d.run(move |d| d.status(&path)).await
}

/// Free bytes on the disk holding `path` (for the storage overview); the user's own view
/// of the filesystem (the app runs as the user).
#[tauri::command]
pub fn free_space(path: String) -> Option<u64> {
    skyfill::fsutil::free_space(&path)
}

/// The desktop icon theme's icon for each freedesktop icon name (`image-x-generic`, ...), as a
/// data URL; a name the theme lacks is left out (the window draws its own then).
#[tauri::command]
pub async fn icons(names: Vec<String>) -> std::collections::HashMap<String, String> {
    tokio::task::spawn_blocking(move || desktop::icons(&names))
        .await
        .unwrap_or_default()
}

/// Make available offline / Free up space / Online-only on many files and folders.
#[tauri::command]
pub async fn act(d: State<'_, Daemon>, action: String, paths: Vec<String>) -> Res<BatchResult> {
    d.run(move |d| d.act(&action, &paths)).await
}

#[tauri::command]
pub async fn set_paused(d: State<'_, Daemon>, paused: bool) -> Res<Vec<RootInfo>> {
    d.run(move |d| d.set_paused(paused)).await
}

#[tauri::command]
pub async fn sync_now(d: State<'_, Daemon>) -> Res<SyncResult> {
    d.run(|d| d.sync()).await
}

#[tauri::command]
pub async fn config_get(d: State<'_, Daemon>) -> Res<ConfigResult> {
    d.run(|d| d.config_get()).await
}

/// A setting as typed (`5M`, `10%`, `none`, a list for never_download).
#[tauri::command]
pub async fn config_set(
    d: State<'_, Daemon>,
    key: String,
    value: serde_json::Value,
    root: Option<String>,
) -> Res<()> {
    d.run(move |d| d.config_set(&key, value, root.as_deref()).map(|_| ()))
        .await
}

#[tauri::command]
pub async fn remove_root(
    d: State<'_, Daemon>,
    local: String,
    mode: RemoveMode,
) -> Res<RemoveResult> {
    d.run(move |d| d.remove_root(&local, mode)).await
}

#[tauri::command]
pub async fn open_path(path: String) -> Res<()> {
    desktop::open(&path)
}

/// Shows the file selected in the file manager, or opens its folder.
#[tauri::command]
pub async fn reveal(path: String) -> Res<()> {
    desktop::reveal(&path)
}

// ------------------------------------------------------------------ wizard

#[tauri::command]
pub async fn test_connection(form: Form) -> Res<String> {
    wizard::test_connection(&form).await
}

#[tauri::command]
pub async fn add_account(d: State<'_, Daemon>, form: Form, local: String) -> Res<AddRootResult> {
    d.run(move |d| wizard::add_account(d, &form, &local)).await
}

#[tauri::command]
pub async fn nextcloud_login(server: String) -> Res<AppPassword> {
    wizard::nextcloud_login(&server, |url| desktop::open(url).map_err(|e| e.message))
        .await
        .map_err(ApiError::remote)
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
pub fn set_autostart(enabled: bool) -> Res<()> {
    let f = autostart_file();
    let failed =
        |e: std::io::Error| ApiError::internal(format!("cannot change {}: {e}", f.display()));
    if enabled {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "skyfill-tray".into());
        std::fs::create_dir_all(f.parent().unwrap()).map_err(failed)?;
        std::fs::write(&f, autostart_entry(&exe)).map_err(failed)
    } else {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// When this window process started (its first page is timed from there).
#[derive(Default)]
pub struct Opening(pub std::sync::Mutex<Option<std::time::Instant>>);

/// The page's first draw after start-up or a reopen: logs how long the window took, from
/// the moment it was asked for to a page the user can use (milliseconds; `None` when no
/// opening was timed), and the language the page shows (`lang`, the Files tab's `tab` words).
#[tauri::command]
pub fn window_ready(
    o: State<'_, Opening>,
    lang: String,
    tab: String,
    toolbar_lines: Option<u32>,
) -> Option<u64> {
    let ms =
        o.0.lock()
            .unwrap()
            .take()
            .map(|t| t.elapsed().as_millis() as u64);
    tracing::info!(ms, lang, tab, toolbar_lines, "window ready");
    ms
}

/// Closes the window (Ctrl+W): this process ends, the tray process stays.
#[tauri::command]
pub fn close_window(w: tauri::WebviewWindow) -> Res<()> {
    w.close().map_err(|e| ApiError::internal(e.to_string()))
}

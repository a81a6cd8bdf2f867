//! The tray icon (StatusNotifierItem; Tauri falls back to XEmbed) and its menu: open the sync
//! folder, the current activity, pause/resume, free up space and make available offline for
//! the whole root, open the window, quit. Icon and tooltip follow the overall state.

use crate::commands;
use skyfill::ipc::proto::{Event, RootInfo};
use std::collections::HashMap;
use std::sync::Mutex;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager};

/// The overall state shown by the tray (same order as the window's `overall()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overall {
    Error,
    Idle,
    SignIn,
    Paused,
    Offline,
    Syncing(usize),
    Ok,
}

impl Overall {
    pub fn icon(self) -> &'static [u8] {
        match self {
            Overall::Error => include_bytes!("../icons/tray-error.png"),
            Overall::Idle => include_bytes!("../icons/tray-idle.png"),
            Overall::SignIn => include_bytes!("../icons/tray-signin.png"),
            Overall::Paused => include_bytes!("../icons/tray-paused.png"),
            Overall::Offline => include_bytes!("../icons/tray-offline.png"),
            Overall::Syncing(_) => include_bytes!("../icons/tray-syncing.png"),
            Overall::Ok => include_bytes!("../icons/tray-ok.png"),
        }
    }

    pub fn tooltip(self) -> String {
        match self {
            Overall::Error => "Skyfill: a problem needs you (open the window)".into(),
            Overall::Idle => "Skyfill: no sync folder yet".into(),
            Overall::SignIn => "Skyfill: sign-in needed".into(),
            Overall::Paused => "Skyfill: paused".into(),
            Overall::Offline => "Skyfill: offline; your changes are kept".into(),
            Overall::Syncing(n) => {
                format!("Skyfill: syncing {n} file{}", if n == 1 { "" } else { "s" })
            }
            Overall::Ok => "Skyfill: up to date".into(),
        }
    }
}

/// Computes the overall state from the connection, the roots and running transfers.
pub fn overall(connected: bool, roots: &[RootInfo], active: usize) -> Overall {
    if !connected {
        return Overall::Error;
    }
    if roots.is_empty() {
        return Overall::Idle;
    }
    if roots.iter().any(|r| !r.signed_in) {
        return Overall::SignIn;
    }
    if roots.iter().all(|r| r.paused) {
        return Overall::Paused;
    }
    if roots.iter().any(|r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable"))
    }) {
        return Overall::Offline;
    }
    if active > 0 {
        return Overall::Syncing(active);
    }
    if roots.iter().any(|r| r.last_error.is_some()) {
        return Overall::Error;
    }
    Overall::Ok
}

/// A download in progress: bytes done, total, the program it is for.
pub type Transfer = (u64, u64, Option<String>);

pub struct TrayState {
    pub icon: TrayIcon,
    pub activity: MenuItem<tauri::Wry>,
    pub pause: MenuItem<tauri::Wry>,
    /// Downloads in progress: path -> (done, total, app).
    pub transfers: Mutex<HashMap<String, Transfer>>,
    pub last: Mutex<Option<Overall>>,
}

pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let open_folder = MenuItem::with_id(
        app,
        "open-folder",
        "Open the sync folder",
        true,
        None::<&str>,
    )?;
    let activity = MenuItem::with_id(app, "activity", "Up to date", false, None::<&str>)?;
    let pause = MenuItem::with_id(app, "pause", "Pause syncing", true, None::<&str>)?;
    let free = MenuItem::with_id(app, "free", "Free up space", true, None::<&str>)?;
    let offline = MenuItem::with_id(app, "offline", "Make available offline", true, None::<&str>)?;
    let window = MenuItem::with_id(app, "window", "Open Skyfill", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let sep2 = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(
        app,
        &[
            &open_folder,
            &activity,
            &sep,
            &pause,
            &free,
            &offline,
            &sep2,
            &window,
            &quit,
        ],
    )?;
    let icon = TrayIconBuilder::with_id("skyfill")
        .icon(tauri::image::Image::from_bytes(Overall::Idle.icon())?)
        .tooltip(Overall::Idle.tooltip())
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, e| {
            let app = app.clone();
            let id = e.id().as_ref().to_string();
            tauri::async_runtime::spawn(async move { menu_action(&app, &id).await });
        })
        .build(app)?;
    app.manage(TrayState {
        icon,
        activity,
        pause,
        transfers: Mutex::new(HashMap::new()),
        last: Mutex::new(None),
    });
    Ok(())
}

async fn menu_action(app: &AppHandle, id: &str) {
    let roots = commands::roots().await.unwrap_or_default();
    let res: Result<(), String> = match id {
        "open-folder" => match roots.first() {
            Some(r) => commands::open_path(r.local.clone()).await,
            None => show_window(app),
        },
        "pause" => {
            let paused = !roots.is_empty() && roots.iter().all(|r| r.paused);
            commands::set_paused(!paused).await.map(|_| ())
        }
        "free" | "offline" => {
            let action = if id == "free" { "free" } else { "offline" };
            let paths: Vec<String> = roots.iter().map(|r| r.local.clone()).collect();
            commands::act(action.into(), paths).await.map(|_| ())
        }
        "window" => show_window(app),
        "quit" => {
            app.exit(0);
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(e) = res {
        crate::notify::send(app, "Skyfill", &e);
    }
    refresh(app);
}

pub fn show_window(app: &AppHandle) -> Result<(), String> {
    let w = app
        .get_webview_window("main")
        .ok_or_else(|| "no window".to_string())?;
    w.show().map_err(|e| e.to_string())?;
    let _ = w.unminimize();
    w.set_focus().map_err(|e| e.to_string())
}

/// Re-reads the roots and updates icon, tooltip and menu words.
pub fn refresh(app: &AppHandle) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let connected = app
            .state::<crate::link::Shared>()
            .conn
            .lock()
            .unwrap()
            .connected;
        let roots = if connected {
            commands::roots().await.unwrap_or_default()
        } else {
            vec![]
        };
        let Some(t) = app.try_state::<TrayState>() else {
            return;
        };
        let (active, line) = {
            let tr = t.transfers.lock().unwrap();
            let line = match tr.iter().next() {
                None => "Up to date".to_string(),
                Some((p, (d, n, who))) => {
                    let name = p.rsplit('/').next().unwrap_or(p);
                    let by = who
                        .as_deref()
                        .map(|w| format!(" for {w}"))
                        .unwrap_or_default();
                    let pct = if *n > 0 { d * 100 / n } else { 0 };
                    if tr.len() > 1 {
                        format!("Downloading {name}{by} ({pct} %) and {} more", tr.len() - 1)
                    } else {
                        format!("Downloading {name}{by} ({pct} %)")
                    }
                }
            };
            (tr.len(), line)
        };
        let o = overall(connected, &roots, active);
        let _ = t.activity.set_text(line);
        let paused = !roots.is_empty() && roots.iter().all(|r| r.paused);
        let _ = t.pause.set_text(if paused {
            "Resume syncing"
        } else {
            "Pause syncing"
        });
        let mut last = t.last.lock().unwrap();
        if *last != Some(o) {
            if let Ok(img) = tauri::image::Image::from_bytes(o.icon()) {
                let _ = t.icon.set_icon(Some(img));
            }
            let _ = t.icon.set_tooltip(Some(o.tooltip()));
            *last = Some(o);
        }
    });
}

pub fn on_event(app: &AppHandle, ev: &Event) {
    if let Some(t) = app.try_state::<TrayState>() {
        if let Event::Progress {
            path,
            done,
            total,
            app: who,
            ..
        } = ev
        {
            let mut tr = t.transfers.lock().unwrap();
            if done >= total {
                tr.remove(path);
            } else {
                tr.insert(path.clone(), (*done, *total, who.clone()));
            }
        }
    }
    if matches!(
        ev,
        Event::Progress { .. } | Event::Root { .. } | Event::Error { .. }
    ) {
        refresh(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(signed_in: bool, paused: bool, err: Option<&str>) -> RootInfo {
        RootInfo {
            id: "1".into(),
            local: "/c".into(),
            remote: "dav://x/".into(),
            user: None,
            owner: 0,
            paused,
            signed_in,
            secret_persisted: true,
            budget: None,
            last_error: err.map(str::to_string),
        }
    }

    #[test]
    fn overall_state_in_order_of_what_matters() {
        assert_eq!(overall(false, &[], 0), Overall::Error);
        assert_eq!(overall(true, &[], 0), Overall::Idle);
        assert_eq!(
            overall(true, &[root(false, false, None)], 0),
            Overall::SignIn
        );
        assert_eq!(overall(true, &[root(true, true, None)], 0), Overall::Paused);
        assert_eq!(
            overall(
                true,
                &[root(true, false, Some("server unreachable; ..."))],
                3
            ),
            Overall::Offline
        );
        assert_eq!(
            overall(true, &[root(true, false, None)], 2),
            Overall::Syncing(2)
        );
        assert_eq!(
            overall(true, &[root(true, false, Some("HTTP 500"))], 0),
            Overall::Error
        );
        assert_eq!(overall(true, &[root(true, false, None)], 0), Overall::Ok);
        assert_eq!(Overall::Syncing(1).tooltip(), "Skyfill: syncing 1 file");
        for o in [Overall::Error, Overall::Ok, Overall::Paused] {
            assert!(tauri::image::Image::from_bytes(o.icon()).is_ok());
        }
    }
}

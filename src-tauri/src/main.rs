//! Skyfill tray app: a tray icon with the overall state and quick actions, and a window (the
//! web front end in `ui/public`) with Files, Activity and Settings views and the first-run
//! wizard. It talks to `skyfilld` only through the shared protocol (`skyfill::ipc`).
//! `--hidden` starts it in the tray only (XDG autostart).
//!
//! Modules, each using only those below it: `commands` (what the window may `invoke`) over
//! `wizard` and `desktop`; `tray` and `notify`, which follow the app events; `link` (the
//! subscription, which announces the daemon's events and the connection as app events); and
//! `daemon` (the one request connection, typed calls, errors as `{code, message}`).

mod commands;
mod daemon;
mod desktop;
mod link;
mod notify;
mod tray;
mod wizard;

use tauri::Manager;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "skyfill_tray=info".into()),
        )
        .init();
    let hidden = std::env::args().any(|a| a == "--hidden");
    tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .manage(daemon::Daemon::new(daemon::socket()))
        .invoke_handler(tauri::generate_handler![
            commands::connection,
            commands::home_dir,
            commands::roots,
            commands::list,
            commands::list_page,
            commands::status,
            commands::free_space,
            commands::icons,
            commands::act,
            commands::set_paused,
            commands::sync_now,
            commands::config_get,
            commands::config_set,
            commands::remove_root,
            commands::open_path,
            commands::reveal,
            commands::test_connection,
            commands::add_account,
            commands::nextcloud_login,
            commands::autostart_enabled,
            commands::set_autostart,
        ])
        .setup(move |app| {
            tray::build(app.handle())?;
            notify::listen(app.handle());
            if hidden {
                if let Some(w) = app.get_webview_window("main") {
                    let _ = w.hide();
                }
            }
            link::spawn(app.handle().clone());
            Ok(())
        })
        .on_window_event(|w, e| {
            // Closing the window keeps the app in the tray; Quit is in the tray menu.
            if let tauri::WindowEvent::CloseRequested { api, .. } = e {
                api.prevent_close();
                let _ = w.hide();
            }
        })
        .run(tauri::generate_context!())
        .expect("the Skyfill tray app failed to start");
}

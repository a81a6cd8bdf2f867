//! Skyfill tray app: a tray icon with the overall state and quick actions, and a window (the
//! web front end in `ui/public`) with Files, Activity and Settings views and the first-run
//! wizard. It talks to `skyfilld` only through the shared protocol (`skyfill::ipc`).
//! `--hidden` starts it in the tray only (XDG autostart).
//!
//! The window is made when it is shown and destroyed when it is closed (its WebKit processes
//! exit with it), so the app left in the tray all day costs the tray alone. Starting the app
//! again while it runs opens the running one's window (`--hidden`: nothing).
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

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "skyfill_tray=info".into());
    // SKYFILL_TRAY_LOG=FILE: the log goes there (appended), not to stderr.
    let file = std::env::var_os("SKYFILL_TRAY_LOG").and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| eprintln!("skyfill-tray: cannot log to {}: {e}", p.to_string_lossy()))
            .ok()
    });
    match file {
        Some(f) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let hidden = std::env::args().any(|a| a == "--hidden");
    tauri::Builder::default()
        // First, so a second start hands over before this one sets anything up.
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            if !argv.iter().any(|a| a == "--hidden") {
                if let Err(e) = tray::show_window(app) {
                    tracing::warn!(error = %e, "could not open the window for a second start");
                }
            }
        }))
        .plugin(tauri_plugin_notification::init())
        .manage(daemon::Daemon::new(daemon::socket()))
        .manage(commands::Opening::default())
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
            commands::window_ready,
            commands::close_window,
        ])
        .setup(move |app| {
            tray::build(app.handle())?;
            notify::listen(app.handle());
            if !hidden {
                tray::show_window(app.handle())?;
            }
            link::spawn(app.handle().clone());
            Ok(())
        })
        .on_window_event(|w, e| {
            if let tauri::WindowEvent::Destroyed = e {
                tracing::info!(
                    window = w.label(),
                    "window closed; the app stays in the tray"
                );
            }
        })
        .build(tauri::generate_context!())
        .expect("the Skyfill tray app failed to start")
        .run(|_app, e| {
            // The last window closed: the app lives on in the tray (Quit is in its menu,
            // which exits with a code).
            if let tauri::RunEvent::ExitRequested {
                code: None, api, ..
            } = e
            {
                api.prevent_exit();
            }
        });
}

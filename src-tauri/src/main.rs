//! Skyfill's window (`skyfill-tray`): Files, Activity and Settings views and the first-run
//! wizard, the web front end in `ui/public`, talking to `skyfilld` only through the shared
//! protocol (`skyfill::ipc`). The tray icon is another process, `skyfill-tray-icon`
//! (`panel.rs`), which this one starts when none runs; closing the window ends this process
//! and its WebKit processes, and the tray lives on alone.
//!
//! `--hidden` (the autostart entry of older versions): becomes the tray process alone.
//! `--window` (started by the tray): the window only. Starting the window while one is open
//! brings that one to the front.
//!
//! Modules: `commands` (what the window may `invoke`) over `wizard` and the library's
//! `desktop`, `link` (the subscription, forwarded to the page as app events) and `daemon`.

use skyfill_tray::{daemon, link};
use std::os::unix::process::CommandExt;
use tauri::{AppHandle, Emitter, Manager};

mod commands;
mod wizard;

/// The tray program, next to this one.
fn tray_program() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("skyfill-tray-icon")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "skyfill-tray-icon".into())
}

/// Starts the tray process unless one runs in this session (it checks, and exits at once
/// when one does). Its own process group, so it outlives this window.
fn ensure_tray() {
    let prog = tray_program();
    match skyfill_tray::desktop::command(&prog)
        .arg("--background")
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(mut c) => {
            std::thread::spawn(move || c.wait());
        }
        Err(e) => tracing::warn!(error = %e, program = %prog.display(), "cannot start the tray"),
    }
}

/// Brings the window up: the one open, or a new one made from the configuration. The time
/// from here to the page's first draw is logged when the page says it is ready
/// ([`commands::window_ready`]).
pub fn show_window(app: &AppHandle) -> Result<(), String> {
    let w = match app.get_webview_window("main") {
        Some(w) => w,
        None => {
            let conf = app
                .config()
                .app
                .windows
                .iter()
                .find(|w| w.label == "main")
                .ok_or_else(|| "no window in the configuration".to_string())?;
            tauri::WebviewWindowBuilder::from_config(app, conf)
                .and_then(|b| b.build())
                .map_err(|e| e.to_string())?
        }
    };
    w.show().map_err(|e| e.to_string())?;
    let _ = w.unminimize();
    w.set_focus().map_err(|e| e.to_string())
}

fn main() {
    let started = std::time::Instant::now();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--hidden") {
        let e = std::process::Command::new(tray_program())
            .arg("--background")
            .exec();
        eprintln!("skyfill-tray: cannot start the tray: {e}");
        std::process::exit(1);
    }
    // WebKitGTK's accelerated compositing costs the web process about 70 MB (release, under
    // Xvfb: 173 -> 104 MB PSS, bench/tray-memory) and this window, a list and a few forms,
    // gains nothing from it. Set before any thread starts; a value the user set (`=0` keeps
    // compositing) is kept, and the programs the window starts do not inherit ours.
    if std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none() {
        // SAFETY: no other thread exists yet (logging and Tauri start below).
        unsafe { std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1") };
        skyfill_tray::desktop::OWN_WEBKIT_SETTING.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    skyfill_tray::logging();
    if !args.iter().any(|a| a == "--window") {
        ensure_tray();
    }
    let d = daemon::Daemon::new(daemon::socket());
    tauri::Builder::default()
        // First, so a second start hands over before this one sets anything up.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            if let Err(e) = show_window(app) {
                tracing::warn!(error = %e, "could not show the window for a second start");
            }
        }))
        .manage(d.clone())
        .manage(commands::Opening(std::sync::Mutex::new(Some(started))))
        .invoke_handler(tauri::generate_handler![
            commands::catalogue,
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
            show_window(app.handle())?;
            let h = app.handle().clone();
            link::spawn(
                d,
                Box::new(move |s| {
                    let _ = match s {
                        link::Signal::Event(ev) => h.emit(daemon::EVENTS, ev),
                        link::Signal::Connection(c) => h.emit(daemon::CONNECTION, c),
                    };
                }),
            );
            Ok(())
        })
        .on_window_event(|w, e| {
            if let tauri::WindowEvent::Destroyed = e {
                tracing::info!(window = w.label(), "window closed; the tray lives on");
            }
        })
        .run(tauri::generate_context!())
        .expect("the Skyfill window failed to start");
}

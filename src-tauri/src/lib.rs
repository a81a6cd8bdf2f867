//! The tray app's two programs share this library: `skyfill-tray-icon` (the tray process:
//! icon, menu, notifications; `panel`) and `skyfill-tray` (the window: the web front end of
//! `ui/public`, the first-run wizard; `main.rs`). Neither part here uses Tauri, so the tray
//! process links no GTK and no WebKit.
//!
//! Modules, each using only those below it: `panel` (the tray process) over `status` (what the
//! tray says, pure) and `notify`; `link` (the subscription: the daemon's events and the
//! connection, to a sink); `desktop` (opening files and icons); `daemon` (the one request
//! connection, typed calls, errors as `{code, message}`).

pub mod daemon;
pub mod desktop;
pub mod link;
pub mod notify;
pub mod panel;
pub mod status;

/// Logging for both programs: `RUST_LOG` (default `info` for the app), to stderr or, with
/// `SKYFILL_TRAY_LOG=FILE`, appended to that file.
pub fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "skyfill_tray=info,skyfill_tray_icon=info".into());
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
}

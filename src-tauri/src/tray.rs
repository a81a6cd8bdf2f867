//! The tray icon (StatusNotifierItem; Tauri falls back to XEmbed) and its menu: open the sync
//! folder, the current activity, pause/resume, free up space and make available offline for
//! the whole root, open the window, quit. Icon and tooltip follow the overall state.
//!
//! The tray follows the app events the subscription (`link.rs`) announces: the connection,
//! transfers (`progress`), and root changes and errors, after which it asks the daemon for the
//! roots again (through the request handle, `daemon.rs`). Each root's state (offline, paused,
//! needs sign-in, ...) is the daemon's word; the tray never reads error text.

use crate::daemon::{self, ApiError, Connection, Daemon};
use crate::desktop;
use skyfill::ipc::proto::{Event, RootInfo, RootState};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Listener, Manager};

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
            Overall::Syncing(0) => "Skyfill: syncing".into(),
            Overall::Syncing(n) => {
                format!("Skyfill: syncing {n} file{}", if n == 1 { "" } else { "s" })
            }
            Overall::Ok => "Skyfill: up to date".into(),
        }
    }
}

/// Every root is paused (none: false).
pub fn all_paused(roots: &[RootInfo]) -> bool {
    !roots.is_empty()
        && roots
            .iter()
            .all(|r| r.paused || r.state == RootState::Paused)
}

/// Computes the overall state from the connection, the roots (their state as the daemon
/// says) and running transfers.
pub fn overall(connected: bool, roots: &[RootInfo], active: usize) -> Overall {
    let any = |s: RootState| roots.iter().any(|r| r.state == s);
    if !connected {
        return Overall::Error;
    }
    if roots.is_empty() {
        return Overall::Idle;
    }
    if any(RootState::NeedsSignIn) || roots.iter().any(|r| !r.signed_in) {
        return Overall::SignIn;
    }
    if all_paused(roots) {
        return Overall::Paused;
    }
    if any(RootState::Offline) {
        return Overall::Offline;
    }
    if active > 0 || any(RootState::Syncing) {
        return Overall::Syncing(active);
    }
    if any(RootState::Error) {
        return Overall::Error;
    }
    Overall::Ok
}

/// The menu's activity line: the first download in progress, and how many more.
/// The menu's state line: the download in progress, else the overall state in words (the
/// tooltip's, without "Skyfill: ").
pub fn activity_line(o: Overall, transfers: &HashMap<String, Transfer>) -> String {
    match transfers.iter().next() {
        None => {
            let tip = o.tooltip();
            let words = tip.strip_prefix("Skyfill: ").unwrap_or(&tip);
            let mut c = words.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
        Some((p, t)) => {
            let name = p.rsplit('/').next().unwrap_or(p);
            let by = t
                .app
                .as_deref()
                .map(|w| format!(" for {w}"))
                .unwrap_or_default();
            let pct = (t.done * 100).checked_div(t.total).unwrap_or(0);
            if transfers.len() > 1 {
                format!(
                    "Downloading {name}{by} ({pct} %) and {} more",
                    transfers.len() - 1
                )
            } else {
                format!("Downloading {name}{by} ({pct} %)")
            }
        }
    }
}

/// How long rates are averaged over: bursts of pieces are smoothed, a change of speed shows
/// within seconds (the window's `RATE_WINDOW` too).
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// A transfer in progress: bytes done, total, the program it is for, and its recent samples.
#[derive(Debug, Clone, Default)]
pub struct Transfer {
    pub done: u64,
    pub total: u64,
    pub app: Option<String>,
    /// (when, bytes done) of the last RATE_WINDOW, and the one sample before it.
    samples: VecDeque<(Instant, u64)>,
}

impl Transfer {
    /// Takes a progress sample.
    pub fn sample(&mut self, now: Instant, done: u64, total: u64, app: Option<String>) {
        self.done = done;
        self.total = total;
        if app.is_some() {
            self.app = app;
        }
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && self.samples[1].0 + RATE_WINDOW <= now {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the last seconds as of `now`: None with one sample; falling once
    /// bytes stop coming (the time since the last sample counts), never the average since the
    /// start.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        if self.samples.len() < 2 {
            return None;
        }
        // From the last sample at or before the window's start (the first, if none is).
        let (at, done) = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| *at + RATE_WINDOW <= now)
            .or(self.samples.front())
            .copied()?;
        let span = now.saturating_duration_since(at).as_secs_f64();
        (span > 0.0).then(|| self.done.saturating_sub(done) as f64 / span)
    }
}

/// The tooltip's speed words for the transfers in progress: " · 1.2 MiB/s · 5 s left", or
/// nothing while no rate is known yet.
pub fn speed_words(transfers: &HashMap<String, Transfer>, now: Instant) -> String {
    let rates: Vec<f64> = transfers.values().filter_map(|t| t.rate(now)).collect();
    if rates.is_empty() {
        return String::new();
    }
    let rate: f64 = rates.iter().sum();
    let left: u64 = transfers
        .values()
        .map(|t| t.total.saturating_sub(t.done))
        .sum();
    if rate < 1.0 {
        return " · stalled".into();
    }
    let secs = (left as f64 / rate).ceil() as u64;
    let eta = match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", (secs + 30) / 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600 + 30) / 60),
    };
    format!(
        " · {}/s · {eta} left",
        skyfill::model::human_bytes(rate as u64)
    )
}

/// What the tray knows, from the app events and the last `roots` answer.
#[derive(Default)]
pub struct View {
    pub connected: bool,
    pub roots: Vec<RootInfo>,
    /// Downloads in progress, by path.
    pub transfers: HashMap<String, Transfer>,
    /// The state the icon shows, and the tooltip.
    last: Option<(Overall, String)>,
}

pub struct TrayState {
    pub icon: TrayIcon,
    pub activity: MenuItem<tauri::Wry>,
    pub pause: MenuItem<tauri::Wry>,
    pub view: Mutex<View>,
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
        view: Mutex::new(View::default()),
    });
    let h = app.clone();
    app.listen_any(daemon::EVENTS, move |e| {
        match serde_json::from_str::<Event>(e.payload()) {
            Ok(ev) => on_event(&h, &ev),
            Err(err) => tracing::debug!(error = %err, "unreadable daemon event"),
        }
    });
    let h = app.clone();
    app.listen_any(daemon::CONNECTION, move |e| {
        if let Ok(c) = serde_json::from_str::<Connection>(e.payload()) {
            on_connection(&h, &c)
        }
    });
    Ok(())
}

async fn menu_action(app: &AppHandle, id: &str) {
    let d = app.state::<Daemon>().inner().clone();
    let roots = d.run(|d| d.roots()).await.unwrap_or_default();
    let res: Result<(), ApiError> = match id {
        "open-folder" => match roots.first() {
            Some(r) => desktop::open(&r.local),
            None => show_window(app).map_err(ApiError::internal),
        },
        "pause" => {
            let paused = all_paused(&roots);
            d.run(move |d| d.set_paused(!paused)).await.map(|_| ())
        }
        "free" | "offline" => {
            let action = if id == "free" { "free" } else { "offline" };
            let paths: Vec<String> = roots.iter().map(|r| r.local.clone()).collect();
            d.run(move |d| d.act(action, &paths)).await.map(|_| ())
        }
        "window" => show_window(app).map_err(ApiError::internal),
        "quit" => {
            app.exit(0);
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(e) = res {
        crate::notify::send(app, "Skyfill", &e.message);
    }
    reload(app);
}

/// Brings the window up: the one open, or a new one made from the configuration (a closed
/// window is destroyed, see `main`). The time from here to the page's first draw is logged
/// when the page says it is ready ([`crate::commands::window_ready`]).
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
            if let Some(t) = app.try_state::<crate::commands::Opening>() {
                *t.0.lock().unwrap() = Some(std::time::Instant::now());
            }
            tauri::WebviewWindowBuilder::from_config(app, conf)
                .and_then(|b| b.build())
                .map_err(|e| e.to_string())?
        }
    };
    w.show().map_err(|e| e.to_string())?;
    let _ = w.unminimize();
    w.set_focus().map_err(|e| e.to_string())
}

/// Asks the daemon for the roots again (when connected), then shows them.
pub fn reload(app: &AppHandle) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let Some(t) = app.try_state::<TrayState>() else {
            return;
        };
        if !t.view.lock().unwrap().connected {
            return;
        }
        let d = app.state::<Daemon>().inner().clone();
        let roots = d.run(|d| d.roots()).await.unwrap_or_default();
        t.view.lock().unwrap().roots = roots;
        render(&t);
    });
}

/// Updates icon, tooltip and menu words from what the tray knows (the view is not locked
/// while the tray is changed: that may wait for the main thread).
fn render(t: &TrayState) {
    let (o, tip, line, paused, icon_changed, tip_changed) = {
        let mut v = t.view.lock().unwrap();
        let o = overall(v.connected, &v.roots, v.transfers.len());
        let mut tip = o.tooltip();
        if matches!(o, Overall::Syncing(_)) {
            tip.push_str(&speed_words(&v.transfers, Instant::now()));
        }
        let (icon_changed, tip_changed) = match &v.last {
            Some((lo, lt)) => (*lo != o, *lt != tip),
            None => (true, true),
        };
        v.last = Some((o, tip.clone()));
        (
            o,
            tip,
            activity_line(o, &v.transfers),
            all_paused(&v.roots),
            icon_changed,
            tip_changed,
        )
    };
    let _ = t.activity.set_text(line);
    let _ = t.pause.set_text(if paused {
        "Resume syncing"
    } else {
        "Pause syncing"
    });
    if icon_changed {
        if let Ok(img) = tauri::image::Image::from_bytes(o.icon()) {
            let _ = t.icon.set_icon(Some(img));
        }
    }
    if tip_changed {
        let _ = t.icon.set_tooltip(Some(tip));
    }
}

fn on_connection(app: &AppHandle, c: &Connection) {
    let Some(t) = app.try_state::<TrayState>() else {
        return;
    };
    {
        let mut v = t.view.lock().unwrap();
        v.connected = c.connected;
        if !c.connected {
            v.roots.clear();
            v.transfers.clear();
        }
    }
    render(&t);
    reload(app);
}

fn on_event(app: &AppHandle, ev: &Event) {
    let Some(t) = app.try_state::<TrayState>() else {
        return;
    };
    match ev {
        Event::Progress {
            path,
            done,
            total,
            app: who,
            ..
        } => {
            {
                let mut v = t.view.lock().unwrap();
                if done >= total {
                    v.transfers.remove(path);
                } else {
                    v.transfers.entry(path.clone()).or_default().sample(
                        Instant::now(),
                        *done,
                        *total,
                        who.clone(),
                    );
                }
            }
            render(&t);
        }
        Event::Root { .. } | Event::Error { .. } | Event::Lagged { .. } => reload(app),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root in `state` as the daemon reports it (signed in and paused to match).
    fn root(state: RootState, err: Option<&str>) -> RootInfo {
        RootInfo {
            id: "1".into(),
            local: "/c".into(),
            remote: "dav://x/".into(),
            user: None,
            owner: 0,
            paused: state == RootState::Paused,
            signed_in: state != RootState::NeedsSignIn,
            secret_persisted: true,
            budget: None,
            last_error: err.map(str::to_string),
            state,
        }
    }

    #[test]
    fn overall_state_in_order_of_what_matters() {
        use RootState::*;
        assert_eq!(overall(false, &[], 0), Overall::Error);
        assert_eq!(overall(true, &[], 0), Overall::Idle);
        assert_eq!(
            overall(true, &[root(NeedsSignIn, None)], 0),
            Overall::SignIn
        );
        assert_eq!(overall(true, &[root(Paused, None)], 0), Overall::Paused);
        assert_eq!(
            overall(
                true,
                &[
                    root(Offline, Some("server unreachable; ...")),
                    root(UpToDate, None)
                ],
                3
            ),
            Overall::Offline
        );
        assert_eq!(
            overall(true, &[root(UpToDate, None)], 2),
            Overall::Syncing(2)
        );
        assert_eq!(
            overall(true, &[root(Syncing, None)], 0),
            Overall::Syncing(0)
        );
        assert_eq!(
            overall(true, &[root(Error, Some("HTTP 500"))], 0),
            Overall::Error
        );
        assert_eq!(overall(true, &[root(UpToDate, None)], 0), Overall::Ok);
        assert_eq!(Overall::Syncing(1).tooltip(), "Skyfill: syncing 1 file");
        assert_eq!(Overall::Syncing(0).tooltip(), "Skyfill: syncing");
        for o in [Overall::Error, Overall::Ok, Overall::Paused] {
            assert!(tauri::image::Image::from_bytes(o.icon()).is_ok());
        }
    }

    #[test]
    fn the_daemon_decides_the_state_not_the_error_text() {
        use RootState::*;
        // Error text alone says nothing: the daemon's state does.
        let r = root(Error, Some("server unreachable; retrying"));
        assert_eq!(overall(true, &[r], 0), Overall::Error);
        let r = root(UpToDate, Some("server unreachable (an old failure)"));
        assert_eq!(overall(true, &[r], 0), Overall::Ok);
        // Paused only when every root is.
        let both = [root(Paused, None), root(UpToDate, None)];
        assert!(!all_paused(&both));
        assert_eq!(overall(true, &both, 0), Overall::Ok);
        assert!(!all_paused(&[]));
    }

    #[test]
    fn the_activity_line_names_the_download() {
        let mut t = HashMap::new();
        assert_eq!(activity_line(Overall::Ok, &t), "Up to date");
        assert_eq!(activity_line(Overall::Paused, &t), "Paused");
        assert_eq!(
            activity_line(Overall::Offline, &t),
            "Offline; your changes are kept"
        );
        let now = Instant::now();
        let mut big = Transfer::default();
        big.sample(now, 25, 100, Some("cat".to_string()));
        t.insert("/c/a/big.bin".to_string(), big);
        assert_eq!(
            activity_line(Overall::Syncing(1), &t),
            "Downloading big.bin for cat (25 %)"
        );
        t.insert("/c/b".to_string(), Transfer::default());
        assert!(activity_line(Overall::Syncing(2), &t).ends_with(" and 1 more"));
    }

    #[test]
    fn rates_are_a_moving_average_and_never_zero_while_bytes_move() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let mut t = Transfer::default();
        t.sample(s(0), 0, 100 << 20, None);
        assert_eq!(t.rate(s(0)), None, "one sample: unknown, not 0 B/s");
        // 1 MiB/s for 10 s after a 20 s wait in the queue (no bytes).
        t.sample(s(20), 0, 100 << 20, None);
        for i in 1..=10 {
            t.sample(s(20 + i), i << 20, 100 << 20, None);
        }
        let r = t.rate(s(30)).unwrap();
        assert!(
            (r - (1 << 20) as f64).abs() < 1.0,
            "{r}: the average since the start would be a third of this"
        );
        // No bytes for 10 s: the rate falls to 0.
        assert!(t.rate(s(40)).unwrap() < 1.0);
        let mut all = HashMap::new();
        all.insert("/c/x".to_string(), t.clone());
        // 90 MiB left at 1 MiB/s.
        assert_eq!(speed_words(&all, s(30)), " · 1.0 MiB/s · 2 min left");
        assert_eq!(speed_words(&all, s(40)), " · stalled");
    }
}

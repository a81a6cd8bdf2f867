//! What the tray says, from what the daemon tells: the overall state (the icon, the tooltip,
//! the menu's state line), transfers in progress and their moving-average rates. Pure, shared
//! by the tray process (`panel.rs`) and its tests; the window computes the same state from the
//! same events (`ui/public/src/logic.js`, `overall()`).

use skyfill::ipc::proto::{RootInfo, RootState};
use skyfill::{t, tn};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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

    /// The state in words, as the menu's state line says it.
    pub fn words(self) -> String {
        match self {
            Overall::Error => t!("A problem needs you (open the window)"),
            Overall::Idle => t!("No sync folder yet"),
            Overall::SignIn => t!("Sign-in needed"),
            Overall::Paused => t!("Paused"),
            Overall::Offline => t!("Offline; your changes are kept"),
            Overall::Syncing(0) => t!("Syncing"),
            Overall::Syncing(n) => tn!("Syncing {n} file", "Syncing {n} files", n),
            Overall::Ok => t!("Up to date"),
        }
    }

    /// The tooltip: "Skyfill: " and the state in words.
    pub fn tooltip(self) -> String {
        t!("Skyfill: {state}", state = self.words())
    }

    /// The icon's name for the panel's accessibility (the item's title).
    pub fn kind(self) -> &'static str {
        match self {
            Overall::Error => "error",
            Overall::Idle => "idle",
            Overall::SignIn => "signin",
            Overall::Paused => "paused",
            Overall::Offline => "offline",
            Overall::Syncing(_) => "syncing",
            Overall::Ok => "ok",
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

/// The menu's state line: the download in progress, else the overall state in words (the
/// tooltip's, without "Skyfill: ").
pub fn activity_line(o: Overall, transfers: &HashMap<String, Transfer>) -> String {
    match transfers.iter().next() {
        None => o.words(),
        Some((p, t)) => {
            let name = p.rsplit('/').next().unwrap_or(p);
            let pct = (t.done * 100).checked_div(t.total).unwrap_or(0);
            let more = transfers.len() - 1;
            match (&t.app, more) {
                (Some(app), 0) => t!(
                    "Downloading {name} for {app} ({pct} %)",
                    name = name,
                    app = app,
                    pct = pct
                ),
                (None, 0) => t!("Downloading {name} ({pct} %)", name = name, pct = pct),
                (Some(app), more) => tn!(
                    "Downloading {name} for {app} ({pct} %) and {n} more",
                    "Downloading {name} for {app} ({pct} %) and {n} more",
                    more,
                    name = name,
                    app = app,
                    pct = pct
                ),
                (None, more) => tn!(
                    "Downloading {name} ({pct} %) and {n} more",
                    "Downloading {name} ({pct} %) and {n} more",
                    more,
                    name = name,
                    pct = pct
                ),
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
        return format!(" · {}", t!("stalled"));
    }
    let secs = (left as f64 / rate).ceil() as u64;
    let eta = match secs {
        0..=59 => t!("{s} s", s = secs),
        60..=3599 => t!("{m} min", m = (secs + 30) / 60),
        _ => t!(
            "{h} h {m} min",
            h = secs / 3600,
            m = (secs % 3600 + 30) / 60
        ),
    };
    format!(
        " · {}",
        t!(
            "{rate}/s · {eta} left",
            rate = skyfill::model::human_bytes(rate as u64),
            eta = eta
        )
    )
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
            last_error_said: None,
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
        assert_eq!(Overall::Syncing(1).tooltip(), "Skyfill: Syncing 1 file");
        assert_eq!(Overall::Syncing(0).tooltip(), "Skyfill: Syncing");
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

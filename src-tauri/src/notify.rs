//! Desktop notifications (org.freedesktop.Notifications through the notification plugin):
//! conflicts, sign-in needed, the disk budget reached, and "APP is downloading N files" with
//! the way to block it. They follow the daemon events the subscription (`link.rs`) announces.

use skyfill::ipc::proto::{Direction, ErrorCode, Event};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tauri::{AppHandle, Listener};
use tauri_plugin_notification::NotificationExt;

/// Per application: when its current burst began, the files it downloads, whether told.
type Burst = (Instant, HashSet<String>, bool);

/// Downloads started by each application within the last minute.
static DOWNLOADS: Mutex<Option<HashMap<String, Burst>>> = Mutex::new(None);

/// Files one application may start downloading within a minute before the user is told.
pub const BURST: usize = 5;

pub fn send(app: &AppHandle, title: &str, body: &str) {
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::info!(error = %e, "no notification service");
    }
}

/// The notification an event deserves, if any: (title, body).
pub fn message_for(ev: &Event, now: Instant) -> Option<(String, String)> {
    match ev {
        Event::Conflict { path, copy } => Some((
            "Skyfill: both versions kept".into(),
            format!(
                "{} changed here and on the server. Yours is now {}.",
                short(path),
                short(copy)
            ),
        )),
        Event::Error {
            code: ErrorCode::Auth,
            path,
            ..
        } => Some((
            "Skyfill: sign-in needed".into(),
            format!(
                "Sign in again for {} (Settings → Accounts).",
                path.as_deref().unwrap_or("your sync folder")
            ),
        )),
        Event::Error {
            code: ErrorCode::Budget,
            message,
            ..
        } => Some((
            "Skyfill: disk budget reached".into(),
            format!("{message}. Free up space or raise the budget in Settings."),
        )),
        Event::Progress {
            path,
            app: Some(who),
            direction,
            ..
        } if *direction == Direction::Down => {
            let mut g = DOWNLOADS.lock().unwrap();
            let m = g.get_or_insert_with(HashMap::new);
            let e = m
                .entry(who.clone())
                .or_insert_with(|| (now, HashSet::new(), false));
            if now.duration_since(e.0) > Duration::from_secs(60) {
                *e = (now, HashSet::new(), false);
            }
            e.1.insert(path.clone());
            if e.1.len() >= BURST && !e.2 {
                e.2 = true;
                return Some((
                    format!("Skyfill: {who} is downloading {} files", e.1.len()),
                    format!("To stop {who} from downloading online-only files, choose \"Never let {who} download\" in Activity."),
                ));
            }
            None
        }
        _ => None,
    }
}

fn short(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn on_event(app: &AppHandle, ev: &Event) {
    if let Some((t, b)) = message_for(ev, Instant::now()) {
        send(app, &t, &b);
    }
}

/// Notifies from now on about the daemon events that deserve it.
pub fn listen(app: &AppHandle) {
    let h = app.clone();
    app.listen_any(crate::daemon::EVENTS, move |e| {
        if let Ok(ev) = serde_json::from_str::<Event>(e.payload()) {
            on_event(&h, &ev)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_for_what_needs_attention() {
        let c = Event::Conflict {
            path: "/c/a.txt".into(),
            copy: "/c/a (conflicted copy 2026-11-26 101500 box).txt".into(),
        };
        let (t, b) = message_for(&c, Instant::now()).unwrap();
        assert!(t.contains("both versions") && b.contains("a (conflicted copy"));
        let auth = Event::Error {
            path: Some("/c".into()),
            code: ErrorCode::Auth,
            message: "401".into(),
        };
        assert!(message_for(&auth, Instant::now())
            .unwrap()
            .0
            .contains("sign-in"));
        let budget = Event::Error {
            path: Some("/c".into()),
            code: ErrorCode::Budget,
            message: "disk budget reached: 9 of 8 bytes used".into(),
        };
        assert!(message_for(&budget, Instant::now())
            .unwrap()
            .0
            .contains("disk budget"));
        // Decided by the code, not by the words of the message.
        let other = Event::Error {
            path: Some("/c".into()),
            code: ErrorCode::Remote,
            message: "disk budget reached (a server's words)".into(),
        };
        assert!(message_for(&other, Instant::now()).is_none_or(|m| !m.0.contains("budget")));
        let now = Instant::now();
        let mut told = 0;
        for i in 0..12 {
            let p = Event::Progress {
                path: format!("/c/f{i}"),
                direction: Direction::Down,
                done: 0,
                total: 10,
                pid: Some(7),
                app: Some("thumbnailer-x".into()),
            };
            if let Some((t, _)) = message_for(&p, now) {
                told += 1;
                assert!(t.contains("thumbnailer-x is downloading 5 files"), "{t}");
            }
        }
        assert_eq!(told, 1, "told once per burst");
        let ok = Event::Root {
            local: "/c".into(),
            change: skyfill::ipc::proto::RootChange::Online,
        };
        assert!(message_for(&ok, now).is_none());
    }
}

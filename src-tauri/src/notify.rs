//! Desktop notifications (org.freedesktop.Notifications): conflicts, sign-in needed, the disk
//! budget reached, and "APP is downloading N files" with the way to block it. The tray process
//! (`panel.rs`) sends them for the daemon events its subscription (`link.rs`) announces.

use skyfill::ipc::proto::{Direction, ErrorCode, Event};
use skyfill::{t, tn};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per application: when its current burst began, the files it downloads, whether told.
type Burst = (Instant, HashSet<String>, bool);

/// Downloads started by each application within the last minute.
static DOWNLOADS: Mutex<Option<HashMap<String, Burst>>> = Mutex::new(None);

/// Files one application may start downloading within a minute before the user is told.
pub const BURST: usize = 5;

/// Shows a notification (blocks until the notification service answered).
pub fn send(title: &str, body: &str) {
    let r = notify_rust::Notification::new()
        .appname("Skyfill")
        .icon("skyfill-tray")
        .summary(title)
        .body(body)
        .show();
    if let Err(e) = r {
        tracing::info!(error = %e, "no notification service");
    }
}

/// The notification an event deserves, if any: (title, body).
pub fn message_for(ev: &Event, now: Instant) -> Option<(String, String)> {
    match ev {
        Event::Conflict { path, copy } => Some((
            t!("Skyfill: both versions kept"),
            t!(
                "{file} changed here and on the server. Yours is now {copy}.",
                file = short(path),
                copy = short(copy)
            ),
        )),
        Event::Error {
            code: ErrorCode::Auth,
            path,
            ..
        } => Some((
            t!("Skyfill: sign-in needed"),
            match path {
                Some(p) => t!(
                    "Sign in again for {folder} (Settings → Accounts).",
                    folder = p
                ),
                None => t!("Sign in again for your sync folder (Settings → Accounts)."),
            },
        )),
        Event::Error {
            code: ErrorCode::Budget,
            message,
            ..
        } => Some((
            t!("Skyfill: disk budget reached"),
            t!(
                "{message}. Free up space or raise the budget in Settings.",
                message = message
            ),
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
                    tn!(
                        "Skyfill: {app} is downloading {n} file",
                        "Skyfill: {app} is downloading {n} files",
                        e.1.len(),
                        app = who
                    ),
                    t!(
                        "To stop {app} from downloading online-only files, choose \"Never let {app} download\" in Activity.",
                        app = who
                    ),
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
            said: None,
        };
        assert!(message_for(&auth, Instant::now())
            .unwrap()
            .0
            .contains("sign-in"));
        let budget = Event::Error {
            path: Some("/c".into()),
            code: ErrorCode::Budget,
            message: "disk budget reached: 9 of 8 bytes used".into(),
            said: None,
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
            said: None,
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

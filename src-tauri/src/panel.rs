//! The tray process (`skyfill-tray-icon`): the tray icon and its menu as a StatusNotifierItem
//! with a DBusMenu (ksni, over D-Bus; no GTK, no WebKit), the notifications, and the window
//! started as its own process (`skyfill-tray --window`) when asked for. It lives all day and
//! costs a few MiB; the window's WebKit processes exist only while the window is open.
//!
//! One tray a session: the process owns the D-Bus name [`NAME`] and serves `Open` at [`PATH`];
//! a second start asks the running one to open the window (`--background`: nothing).
//!
//! Menu choices and daemon calls run on one worker thread ([`Action`]s, in order); the
//! subscription (`link.rs`) feeds [`View`]; each change renders the icon, tooltip and menu
//! words (`status.rs`) into the ksni item, which tells the panel what changed.

use crate::daemon::{self, ApiError, Daemon};
use crate::link::{self, Signal};
use crate::status::{activity_line, all_paused, overall, speed_words, Overall, Transfer};
use crate::{desktop, notify};
use ksni::blocking::{Handle, TrayMethods};
use skyfill::ipc::proto::{Event, RootInfo};
use skyfill::t;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The tray's D-Bus name: one tray a session.
pub const NAME: &str = "org.skyfill.Tray";
/// Where it serves [`Control`].
pub const PATH: &str = "/org/skyfill/Tray";

/// What the worker thread does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    OpenFolder,
    TogglePause,
    Free,
    Offline,
    Window,
    Quit,
    /// Ask the daemon for the roots again, then render.
    Reload,
    Notify(String, String),
}

/// What the tray knows, from the subscription and the last `roots` answer.
#[derive(Default)]
pub struct View {
    pub connected: bool,
    pub roots: Vec<RootInfo>,
    /// Downloads in progress, by path.
    pub transfers: HashMap<String, Transfer>,
}

/// What the item shows: computed from a [`View`] by [`Shown::of`].
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub overall: Overall,
    pub tooltip: String,
    pub line: String,
    pub paused: bool,
}

impl Shown {
    pub fn of(v: &View, now: Instant) -> Shown {
        let o = overall(v.connected, &v.roots, v.transfers.len());
        let mut tooltip = o.tooltip();
        if matches!(o, Overall::Syncing(_)) {
            tooltip.push_str(&speed_words(&v.transfers, now));
        }
        Shown {
            overall: o,
            tooltip,
            line: activity_line(o, &v.transfers),
            paused: all_paused(&v.roots),
        }
    }
}

/// The ksni item: what it shows, and where menu choices go.
pub struct Item {
    shown: Shown,
    icon: Vec<ksni::Icon>,
    actions: Sender<Action>,
}

/// An ARGB32 (network byte order) pixmap from a PNG, as StatusNotifierItem wants it.
pub fn pixmap(png_bytes: &[u8]) -> Option<ksni::Icon> {
    let mut d = png::Decoder::new(std::io::Cursor::new(png_bytes));
    d.set_transformations(png::Transformations::normalize_to_color8());
    let mut r = d.read_info().ok()?;
    let mut buf = vec![0; r.output_buffer_size()?];
    let info = r.next_frame(&mut buf).ok()?;
    let px = &buf[..info.buffer_size()];
    let data: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => px
            .chunks_exact(4)
            .flat_map(|p| [p[3], p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Rgb => px
            .chunks_exact(3)
            .flat_map(|p| [255, p[0], p[1], p[2]])
            .collect(),
        png::ColorType::GrayscaleAlpha => px
            .chunks_exact(2)
            .flat_map(|p| [p[1], p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Grayscale => px.iter().flat_map(|g| [255, *g, *g, *g]).collect(),
        png::ColorType::Indexed => return None,
    };
    Some(ksni::Icon {
        width: info.width as i32,
        height: info.height as i32,
        data,
    })
}

impl Item {
    fn new(actions: Sender<Action>) -> Item {
        let shown = Shown::of(&View::default(), Instant::now());
        Item {
            icon: pixmap(shown.overall.icon()).into_iter().collect(),
            shown,
            actions,
        }
    }

    fn show(&mut self, s: Shown) {
        if s.overall.kind() != self.shown.overall.kind() {
            self.icon = pixmap(s.overall.icon()).into_iter().collect();
        }
        self.shown = s;
    }

    fn item(&self, label: String, a: Action) -> ksni::MenuItem<Self> {
        ksni::menu::StandardItem {
            label,
            activate: Box::new(move |me: &mut Self| {
                let _ = me.actions.send(a.clone());
            }),
            ..Default::default()
        }
        .into()
    }
}

impl ksni::Tray for Item {
    // A left click opens the menu, as a right click does.
    const MENU_ON_ACTIVATE: bool = true;

    fn id(&self) -> String {
        "skyfill".into()
    }

    fn title(&self) -> String {
        self.shown.tooltip.clone()
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::ApplicationStatus
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        self.icon.clone()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: "Skyfill".into(),
            description: self.shown.line.clone(),
            icon_name: String::new(),
            icon_pixmap: Vec::new(),
        }
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        vec![
            self.item(t!("Open the sync folder"), Action::OpenFolder),
            ksni::menu::StandardItem {
                label: self.shown.line.clone(),
                enabled: false,
                ..Default::default()
            }
            .into(),
            ksni::MenuItem::Separator,
            self.item(
                if self.shown.paused {
                    t!("Resume syncing")
                } else {
                    t!("Pause syncing")
                },
                Action::TogglePause,
            ),
            self.item(t!("Free up space"), Action::Free),
            self.item(t!("Make available offline"), Action::Offline),
            ksni::MenuItem::Separator,
            self.item(t!("Open Skyfill"), Action::Window),
            self.item(t!("Quit"), Action::Quit),
        ]
    }
}

/// The window program (`skyfill-tray`, next to this one).
pub fn window_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("skyfill-tray")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("skyfill-tray"))
}

/// Starts the window process (one window a session: a running one comes to the front),
/// remembered in `windows` while it runs.
fn open_window(windows: &Arc<Mutex<Vec<u32>>>) -> Result<(), ApiError> {
    let prog = window_program();
    let mut child = std::process::Command::new(&prog)
        .arg("--window")
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| ApiError::internal(format!("{}: {e}", prog.display())))?;
    let pid = child.id();
    tracing::info!(pid, "window process started");
    windows.lock().unwrap().push(pid);
    let windows = windows.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        windows.lock().unwrap().retain(|p| *p != pid);
        tracing::info!(pid, ?status, "window process ended");
    });
    Ok(())
}

/// The running tray's state shared by the subscription and the worker.
struct Tray {
    view: Mutex<View>,
    last: Mutex<Option<Shown>>,
    handle: Handle<Item>,
    /// A reload is queued (events after it need no other: it asks when it runs).
    reload_queued: std::sync::atomic::AtomicBool,
    /// The window processes this tray started and that still run (Quit ends them).
    windows: Arc<Mutex<Vec<u32>>>,
}

impl Tray {
    fn render(&self) {
        // `last` first, and the view read under it: two threads rendering at once write the
        // newer view last.
        let mut last = self.last.lock().unwrap();
        let s = Shown::of(&self.view.lock().unwrap(), Instant::now());
        if last.as_ref() == Some(&s) {
            return;
        }
        *last = Some(s.clone());
        self.handle.update(|i| i.show(s));
    }
}

/// The `org.skyfill.Tray` interface: what a second start asks of the running tray.
struct Control(Mutex<Sender<Action>>);

#[zbus::interface(name = "org.skyfill.Tray")]
impl Control {
    /// Opens (or brings to the front) the window.
    fn open(&self) {
        let _ = self.0.lock().unwrap().send(Action::Window);
    }
}

/// How the tray process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Also open the window (`--open`), or ask the running tray to.
    Open,
    /// The tray only; nothing when one runs (`--background`, autostart).
    Background,
}

/// Runs the tray process until Quit (or until its D-Bus session ends).
pub fn run(start: Start) -> anyhow::Result<()> {
    use zbus::fdo::{RequestNameFlags, RequestNameReply};
    // zbus is built with its tokio feature (ksni asks for it): its blocking connection then
    // starts its tasks on the tokio runtime of the caller's context, so one small runtime
    // lives as long as the process (without it, `Connection::session` panics).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _rt = rt.enter();
    let bus = zbus::blocking::Connection::session()?;
    let (tx, rx) = channel::<Action>();
    // Served before the name is taken, so an `Open` sent as soon as the name has an owner
    // finds it.
    bus.object_server()
        .at(PATH, Control(Mutex::new(tx.clone())))?;
    let owner = match bus.request_name_with_flags(NAME, RequestNameFlags::DoNotQueue.into()) {
        Ok(r) => r == RequestNameReply::PrimaryOwner,
        Err(zbus::Error::NameTaken) => false,
        Err(e) => return Err(e.into()),
    };
    if !owner {
        tracing::info!("a Skyfill tray already runs in this session");
        if start == Start::Open {
            bus.call_method(Some(NAME), PATH, Some(NAME), "Open", &())?;
        }
        return Ok(());
    }
    // The session ends (logout, the bus gone): so does the tray.
    let (bus_watch, quit) = (bus.clone(), tx.clone());
    std::thread::spawn(move || {
        for _ in zbus::blocking::MessageIterator::from(&bus_watch) {}
        tracing::info!("the D-Bus session ended");
        let _ = quit.send(Action::Quit);
    });
    let handle = Item::new(tx.clone()).assume_sni_available(true).spawn()?;
    let tray = Arc::new(Tray {
        view: Mutex::new(View::default()),
        last: Mutex::new(None),
        handle,
        reload_queued: std::sync::atomic::AtomicBool::new(false),
        windows: Arc::new(Mutex::new(Vec::new())),
    });
    let d = Daemon::new(daemon::socket());
    let (tr, sink_tx) = (tray.clone(), tx.clone());
    link::spawn(d.clone(), Box::new(move |s| on_signal(&tr, &sink_tx, s)));
    if start == Start::Open {
        let _ = tx.send(Action::Window);
    }
    for a in rx {
        if a == Action::Quit || tray.handle.is_closed() {
            break;
        }
        act(&tray, &d, a);
    }
    tracing::info!("the tray quits");
    let _ = bus.release_name(NAME);
    // The windows this tray opened go with it (Quit ends Skyfill's app).
    for pid in tray.windows.lock().unwrap().iter() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    tray.handle.shutdown().wait();
    Ok(())
}

fn on_signal(tray: &Tray, tx: &Sender<Action>, s: Signal) {
    match s {
        Signal::Connection(c) => {
            {
                let mut v = tray.view.lock().unwrap();
                v.connected = c.connected;
                if !c.connected {
                    v.roots.clear();
                    v.transfers.clear();
                }
            }
            tray.render();
            queue_reload(tray, tx);
        }
        Signal::Event(ev) => {
            if let Some((title, body)) = notify::message_for(&ev, Instant::now()) {
                let _ = tx.send(Action::Notify(title, body));
            }
            match ev {
                Event::Progress {
                    path,
                    done,
                    total,
                    app,
                    ..
                } => {
                    {
                        let mut v = tray.view.lock().unwrap();
                        if done >= total {
                            v.transfers.remove(&path);
                        } else {
                            v.transfers.entry(path).or_default().sample(
                                Instant::now(),
                                done,
                                total,
                                app,
                            );
                        }
                    }
                    tray.render();
                }
                Event::Root { .. } | Event::Error { .. } | Event::Lagged { .. } => {
                    queue_reload(tray, tx)
                }
                _ => {}
            }
        }
    }
}

/// Queues one reload unless one is queued already (a burst of events costs one `roots`).
fn queue_reload(tray: &Tray, tx: &Sender<Action>) {
    use std::sync::atomic::Ordering;
    if !tray.reload_queued.swap(true, Ordering::AcqRel) {
        let _ = tx.send(Action::Reload);
    }
}

fn act(tray: &Tray, d: &Daemon, a: Action) {
    let span = tracing::info_span!("tray action", action = ?a);
    let _g = span.enter();
    if a == Action::Reload {
        tray.reload_queued
            .store(false, std::sync::atomic::Ordering::Release);
    }
    let res: Result<(), ApiError> = match a {
        Action::OpenFolder => d.roots().and_then(|roots| match roots.first() {
            Some(r) => desktop::open(&r.local),
            None => open_window(&tray.windows),
        }),
        Action::TogglePause => d
            .roots()
            .and_then(|roots| d.set_paused(!all_paused(&roots)).map(|_| ())),
        Action::Free | Action::Offline => d.roots().and_then(|roots| {
            let action = if a == Action::Free { "free" } else { "offline" };
            let paths: Vec<String> = roots.into_iter().map(|r| r.local).collect();
            d.act(action, &paths).map(|_| ())
        }),
        Action::Window => open_window(&tray.windows),
        Action::Notify(title, body) => {
            notify::send(&title, &body);
            return;
        }
        Action::Reload | Action::Quit => Ok(()),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "tray action failed");
        notify::send("Skyfill", &e.message);
    }
    // The roots again; on a failure the ones known stay (not "no sync folder").
    if tray.view.lock().unwrap().connected {
        match d.roots() {
            Ok(r) => tray.view.lock().unwrap().roots = r,
            Err(e) => tracing::info!(error = %e, "roots not read; the last ones stay"),
        }
    }
    tray.render();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_become_argb_pixmaps() {
        for o in [Overall::Error, Overall::Ok, Overall::Paused, Overall::Idle] {
            let i = pixmap(o.icon()).expect("a PNG the tray can show");
            assert!(i.width > 0 && i.height > 0);
            assert_eq!(i.data.len(), (i.width * i.height * 4) as usize);
            assert!(
                i.data.chunks(4).any(|p| p[0] == 255),
                "some opaque pixels (alpha first)"
            );
        }
    }

    #[test]
    fn the_item_shows_the_view() {
        let v = View {
            connected: true,
            ..View::default()
        };
        let s = Shown::of(&v, Instant::now());
        assert_eq!(s.overall, Overall::Idle);
        assert_eq!(s.line, "No sync folder yet");
        assert!(!s.paused);
        let (tx, rx) = channel();
        let mut item = Item::new(tx);
        item.show(s);
        let menu = ksni::Tray::menu(&item);
        assert_eq!(menu.len(), 9);
        // Each choice goes to the worker.
        if let ksni::MenuItem::Standard(ref s) = menu[3] {
            assert_eq!(s.label, "Pause syncing");
            (s.activate)(&mut item);
        } else {
            panic!("the pause item");
        }
        assert_eq!(rx.try_recv(), Ok(Action::TogglePause));
    }
}

//! `skyfill-tray-icon`: the tray process (see `panel.rs`). `--background` (autostart): the
//! tray only, nothing when one runs; otherwise the window opens too (in the running tray
//! when there is one). `SKYFILL_TRAY_LOG=FILE` appends the log there.

fn main() -> anyhow::Result<()> {
    skyfill_tray::logging();
    let start = if std::env::args().any(|a| a == "--background") {
        skyfill_tray::panel::Start::Background
    } else {
        skyfill_tray::panel::Start::Open
    };
    skyfill_tray::panel::run(start)
}

//! What the app asks of the desktop: open a file, folder or address with the user's default
//! program (`xdg-open`), and show a file in the file manager.

use crate::daemon::{ApiError, Res};

fn spawn_detached(cmd: &str, args: &[&str]) -> Res<()> {
    std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| ApiError::internal(format!("cannot run {cmd}: {e}")))
}

/// Opens a file, a folder or an address with the default program.
pub fn open(path: &str) -> Res<()> {
    spawn_detached("xdg-open", &[path])
}

/// Shows the file selected in the file manager (org.freedesktop.FileManager1), or opens its
/// folder when no file manager offers that.
pub fn reveal(path: &str) -> Res<()> {
    let uri = url::Url::from_file_path(path)
        .map_err(|_| ApiError::bad_request(format!("{path} is not a full path")))?
        .to_string();
    let ok = std::process::Command::new("gdbus")
        .args([
            "call",
            "--session",
            "--dest",
            "org.freedesktop.FileManager1",
            "--object-path",
            "/org/freedesktop/FileManager1",
            "--method",
            "org.freedesktop.FileManager1.ShowItems",
            &format!("['{}']", uri.replace('\'', "%27")),
            "",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    let parent = std::path::Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| path.to_string());
    open(&parent)
}

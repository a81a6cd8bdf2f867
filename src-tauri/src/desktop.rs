//! What the app asks of the desktop: open a file, folder or address with the user's default
//! program (`xdg-open`), show a file in the file manager, and the icon theme's icons for file
//! types.

use crate::daemon::{ApiError, Res};
use std::sync::atomic::{AtomicBool, Ordering};

/// The window set `WEBKIT_DISABLE_COMPOSITING_MODE` for its own WebKit (the user had not):
/// the programs it starts do not inherit it.
pub static OWN_WEBKIT_SETTING: AtomicBool = AtomicBool::new(false);

/// `cmd` with the environment this process got, not the settings it made for itself.
pub fn command(cmd: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new(cmd);
    if OWN_WEBKIT_SETTING.load(Ordering::Relaxed) {
        c.env_remove("WEBKIT_DISABLE_COMPOSITING_MODE");
    }
    c
}

fn spawn_detached(cmd: &str, args: &[&str]) -> Res<()> {
    command(cmd)
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
    let ok = command("gdbus")
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

/// The icon theme's file for each freedesktop icon name, as a data URL (names it lacks are
/// left out). Looked up as the icon theme specification says, in short: the desktop's theme
/// (GTK's `gtk-icon-theme-name` setting), the themes it inherits, then Adwaita and hicolor,
/// in `$XDG_DATA_HOME/icons` and each `$XDG_DATA_DIRS/icons`, at 32 pixels or the nearest
/// size, MIME-type icons first, then places (folders).
pub fn icons(names: &[String]) -> std::collections::HashMap<String, String> {
    let bases = icon_bases();
    let themes = theme_chain(&bases);
    names
        .iter()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .filter_map(|n| {
            let f = find_icon(&bases, &themes, n)?;
            let bytes = std::fs::read(&f).ok()?;
            let mime = if f.extension().is_some_and(|e| e == "svg") {
                "image/svg+xml"
            } else {
                "image/png"
            };
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            Some((n.clone(), format!("data:{mime};base64,{b64}")))
        })
        .collect()
}

fn icon_bases() -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => v.push(std::path::PathBuf::from(d).join("icons")),
        None => v.extend(home.map(|h| h.join(".local/share/icons"))),
    }
    let dirs = std::env::var("XDG_DATA_DIRS").unwrap_or_default();
    let dirs = if dirs.is_empty() {
        "/usr/local/share:/usr/share".to_string()
    } else {
        dirs
    };
    v.extend(
        dirs.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| std::path::Path::new(d).join("icons")),
    );
    v
}

/// The desktop's theme, the themes it inherits (from its `index.theme`), then Adwaita and
/// hicolor; each once.
fn theme_chain(bases: &[std::path::PathBuf]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let mut next = vec![configured_theme().unwrap_or_else(|| "Adwaita".into())];
    while let Some(t) = next.pop() {
        if chain.contains(&t) || chain.len() > 8 || t.contains('/') {
            continue;
        }
        let inherits = bases
            .iter()
            .find_map(|b| std::fs::read_to_string(b.join(&t).join("index.theme")).ok())
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Inherits=").map(str::to_string))
            });
        chain.push(t);
        if let Some(i) = inherits {
            next.extend(i.split(',').rev().map(|x| x.trim().to_string()));
        }
    }
    for t in ["Adwaita", "hicolor"] {
        if !chain.iter().any(|c| c == t) {
            chain.push(t.into());
        }
    }
    chain
}

/// GTK's icon theme setting (`$XDG_CONFIG_HOME/gtk-3.0/settings.ini`), if the user set one.
fn configured_theme() -> Option<String> {
    let cfg = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config")))?;
    let s = std::fs::read_to_string(cfg.join("gtk-3.0/settings.ini")).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "gtk-icon-theme-name").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find_icon(
    bases: &[std::path::PathBuf],
    themes: &[String],
    name: &str,
) -> Option<std::path::PathBuf> {
    const SIZES: [&str; 6] = ["32x32", "scalable", "48x48", "24x24", "64x64", "256x256"];
    const CONTEXTS: [&str; 2] = ["mimetypes", "places"];
    for t in themes {
        for b in bases {
            let dir = b.join(t);
            if !dir.is_dir() {
                continue;
            }
            for size in SIZES {
                for ctx in CONTEXTS {
                    for ext in ["png", "svg"] {
                        let f = dir.join(size).join(ctx).join(format!("{name}.{ext}"));
                        if f.is_file() {
                            return Some(f);
                        }
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_come_from_the_theme_and_names_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let mime = d.path().join("icons/hicolor/32x32/mimetypes");
        std::fs::create_dir_all(&mime).unwrap();
        std::fs::write(mime.join("image-x-generic.png"), b"\x89PNG").unwrap();
        let bases = vec![d.path().join("icons")];
        let themes = vec!["hicolor".to_string()];
        assert_eq!(
            find_icon(&bases, &themes, "image-x-generic"),
            Some(mime.join("image-x-generic.png"))
        );
        assert_eq!(find_icon(&bases, &themes, "audio-x-generic"), None);
        // A name with a path in it is never looked up.
        assert!(icons(&["../../etc/passwd".into()]).is_empty());
    }
}

//! `skyfill status` as people read it: a folder and what is in it as a tree, each line with
//! its state in words (coloured on a terminal, never when `NO_COLOR` is set or the output is
//! a pipe), its size in the cloud and on this device. Pure: the CLI fetches the entries
//! (`Node`s) and prints the lines this module makes.

use skyfill::ipc::proto::{PathStatus, SyncState};
use skyfill::model::{human_bytes, Availability, Kind};
use skyfill::{t, tn};

/// Whether lines carry colour: only on a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (<https://no-color.org>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn new(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Style {
        Style {
            color: terminal && no_color.is_none_or(|v| v.is_empty()),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A file or folder, and (folders, when asked for) what is in it: `more` entries were left
/// out past the per-folder limit.
#[derive(Debug, Clone)]
pub struct Node {
    pub status: PathStatus,
    pub children: Vec<Node>,
    pub more: u64,
}

/// The state words of an entry, and the colour (SGR code) they take.
fn state_words(s: &PathStatus) -> (String, &'static str) {
    match s.sync {
        SyncState::Conflict => return (t!("conflict"), "1;31"),
        SyncState::Error => return (t!("sync error"), "1;31"),
        SyncState::Uploading => return (t!("uploading"), "33"),
        SyncState::Pending => return (t!("waiting to upload"), "33"),
        SyncState::Synced => {}
    }
    match s.state {
        Availability::OnlineOnly => (t!("online-only"), "36"),
        Availability::Partial => (
            match s.percent {
                Some(p) => t!("partly local {percent} %", percent = format!("{p:.0}")),
                None => t!("partly local"),
            },
            "33",
        ),
        Availability::Local => (t!("local"), "32"),
        Availability::Pinned => (t!("always local"), "1;32"),
    }
}

/// The header line of the table.
pub fn header(style: Style) -> String {
    style.paint(
        "2",
        &format!(
            "{:<20} {:>10} {:>10}  {}",
            t!("STATE"),
            t!("SIZE"),
            t!("HERE"),
            t!("NAME")
        ),
    )
}

/// One line: state, size, bytes here, then the tree's branches and the name (folders end
/// in `/`). `name` is what to call the entry (the path given, or its last component).
fn line(s: &PathStatus, branch: &str, name: &str, style: Style) -> String {
    let (words, code) = state_words(s);
    let slash = if s.kind == Kind::Dir && !name.ends_with('/') {
        "/"
    } else {
        ""
    };
    let name = if s.kind == Kind::Dir {
        style.paint("1;34", &format!("{name}{slash}"))
    } else {
        name.to_string()
    };
    format!(
        "{} {:>10} {:>10}  {}{name}",
        style.paint(code, &format!("{words:<20}")),
        human_bytes(s.size),
        human_bytes(s.local_bytes),
        style.paint("2", branch),
    )
}

/// The lines of `node` and everything below it: the node named `name`, its entries drawn as
/// a tree (`├── `, `└── `, `│   `), a folder's left-out entries as one "… and N more" line.
pub fn lines(node: &Node, name: &str, style: Style) -> Vec<String> {
    let mut out = vec![line(&node.status, "", name, style)];
    below(node, "", style, &mut out);
    out
}

fn below(node: &Node, prefix: &str, style: Style, out: &mut Vec<String>) {
    let n = node.children.len();
    for (i, c) in node.children.iter().enumerate() {
        let last = i + 1 == n && node.more == 0;
        let name = c.status.path.rsplit('/').next().unwrap_or(&c.status.path);
        let branch = format!("{prefix}{}", if last { "└── " } else { "├── " });
        out.push(line(&c.status, &branch, name, style));
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        below(c, &deeper, style, out);
    }
    if node.more > 0 {
        out.push(format!(
            "{:<20} {:>10} {:>10}  {}",
            "",
            "",
            "",
            style.paint(
                "2",
                &format!(
                    "{prefix}└── {}",
                    tn!(
                        "… and {n} more (skyfill status --limit)",
                        "… and {n} more (skyfill status --limit)",
                        node.more
                    )
                )
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyfill::ipc::proto::PinSetting;

    fn st(path: &str, kind: Kind, state: Availability, size: u64, here: u64) -> PathStatus {
        PathStatus {
            path: path.into(),
            kind,
            state,
            sync: SyncState::Synced,
            size,
            local_bytes: here,
            percent: None,
            setting: PinSetting::Inherit,
            counts: None,
            mtime: None,
        }
    }

    fn leaf(s: PathStatus) -> Node {
        Node {
            status: s,
            children: vec![],
            more: 0,
        }
    }

    #[test]
    fn a_folder_as_a_tree_with_human_sizes() {
        let docs = Node {
            status: st("/c/docs", Kind::Dir, Availability::Local, 2048, 2048),
            children: vec![leaf(st(
                "/c/docs/a.txt",
                Kind::File,
                Availability::Pinned,
                2048,
                2048,
            ))],
            more: 0,
        };
        let root = Node {
            status: st("/c", Kind::Dir, Availability::Partial, 5 << 20, 2048),
            children: vec![
                docs,
                leaf(st(
                    "/c/big.bin",
                    Kind::File,
                    Availability::OnlineOnly,
                    5 << 20,
                    0,
                )),
            ],
            more: 3,
        };
        let got = lines(&root, "~/Cloud", Style { color: false });
        let want = [
            "partly local            5.0 MiB    2.0 KiB  ~/Cloud/",
            "local                   2.0 KiB    2.0 KiB  ├── docs/",
            "always local            2.0 KiB    2.0 KiB  │   └── a.txt",
            "online-only             5.0 MiB        0 B  ├── big.bin",
            "                                            └── … and 3 more (skyfill status --limit)",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(Style::new(true, None).color);
        assert!(!Style::new(false, None).color, "a pipe gets no colour");
        assert!(!Style::new(true, Some(OsStr::new("1"))).color);
        assert!(
            Style::new(true, Some(OsStr::new(""))).color,
            "NO_COLOR= (empty) is unset"
        );
        let mut s = st("/c/x", Kind::File, Availability::Local, 1, 1);
        s.sync = SyncState::Conflict;
        let l = line(&s, "", "x", Style { color: true });
        assert!(l.starts_with("\x1b[1;31mconflict"), "{l:?}");
        assert!(!line(&s, "", "x", Style { color: false }).contains('\x1b'));
    }
}

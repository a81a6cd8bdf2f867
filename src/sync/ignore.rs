//! Names that are never synced: editor swap and lock files, other programs' partial downloads,
//! Skyfill's own temporary names, plus the user's patterns (`skyfill config set ignore ...`).
//! Patterns are shell globs matched against each path component; only paths that were never
//! synced are ignored (a synced file keeps syncing whatever its name).

use crate::model::RelPath;
use globset::{Glob, GlobSet, GlobSetBuilder};

/// Built-in patterns.
pub const DEFAULT: &[&str] = &[
    // vim, emacs, kate, gedit, LibreOffice, MS Office
    "*.swp",
    "*.swo",
    "*.swx",
    "4913",
    "*~",
    ".#*",
    "#*#",
    "*.kate-swp",
    ".~lock.*#",
    "~$*",
    ".goutputstream-*",
    // partial downloads of browsers and tools
    "*.part",
    "*.crdownload",
    "*.partial",
    "*.download",
    ".*.tmp.*",
    // filesystem and desktop droppings
    ".fuse_hidden*",
    ".nfs*",
    ".DS_Store",
    "Thumbs.db",
    ".Trash-*",
    // Skyfill's own staging names
    ".~skyfill-*",
];

#[derive(Debug, thiserror::Error)]
#[error("bad ignore pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Ignore {
    set: GlobSet,
}

impl Ignore {
    /// The defaults plus `extra`.
    pub fn new(extra: &[String]) -> Result<Ignore, PatternError> {
        let mut b = GlobSetBuilder::new();
        for p in DEFAULT
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            let g = Glob::new(p).map_err(|e| PatternError {
                pattern: p.to_string(),
                reason: e.kind().to_string(),
            })?;
            b.add(g);
        }
        let set = b.build().map_err(|e| PatternError {
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Ignore { set })
    }

    /// Whether any component of `p` matches.
    pub fn matches(&self, p: &RelPath) -> bool {
        p.components().any(|c| self.set.is_match(c))
    }
}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::new(&[]).expect("built-in patterns are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_ignored() {
        let i = Ignore::new(&["*.bak".into()]).unwrap();
        let m = |s: &str| i.matches(&RelPath::parse(s).unwrap());
        for yes in [
            "d/.notes.txt.swp",
            "report.docx~",
            "~$report.docx",
            ".~lock.sheet.ods#",
            "dl/film.mkv.part",
            "x/.~skyfill-123.tmp",
            "build/4913",
            "old.bak",
            ".Trash-1000/files/x",
        ] {
            assert!(m(yes), "{yes} should be ignored");
        }
        for no in ["notes.txt", "d/swp", "partial.txt", "tilde~x", "a/b.c"] {
            assert!(!m(no), "{no} should sync");
        }
        assert!(Ignore::new(&["[".into()]).is_err());
    }
}

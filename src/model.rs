//! Plain data shared by every layer: validated relative paths, remote entries and versions.
//!
//! Nothing here does I/O. A [`RelPath`] can only be built from components that passed
//! [`validate_name`], so a name from a server can never become `..`, an absolute path, or a
//! path with NUL or control characters.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest file name (in bytes) Linux file systems accept.
pub const NAME_MAX: usize = 255;

/// Why a name from a remote was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name is `.` or `..`")]
    Dot,
    #[error("name contains `/`")]
    Slash,
    #[error("name contains NUL")]
    Nul,
    #[error("name contains a control character")]
    Control,
    #[error("name is not valid UTF-8")]
    NotUtf8,
    #[error("name is {0} bytes, longer than NAME_MAX ({NAME_MAX})")]
    TooLong(usize),
}

/// Checks one path component received from a server (already percent-decoded).
pub fn validate_name(raw: &[u8]) -> Result<&str, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > NAME_MAX {
        return Err(NameError::TooLong(raw.len()));
    }
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    if raw.contains(&b'/') {
        return Err(NameError::Slash);
    }
    let s = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
    if s == "." || s == ".." {
        return Err(NameError::Dot);
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(NameError::Control);
    }
    Ok(s)
}

/// A validated path relative to a sync root / remote base, `/`-separated, no leading slash.
/// The empty path is the root itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// The least key of everything strictly below this path, as a range bound for sorted maps
    /// (`a/`; not itself a valid path). Entries below `a` are contiguous from there on, while
    /// siblings such as `a b` or `a.txt` sort between `a` and `a/`.
    pub fn below_start(&self) -> Self {
        if self.0.is_empty() {
            RelPath::root()
        } else {
            RelPath(format!("{}/", self.0))
        }
    }

    /// Parses `a/b/c` (leading/trailing slashes tolerated), validating every component.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut p = RelPath::root();
        for comp in s.split('/').filter(|c| !c.is_empty()) {
            p = p.join(comp)?;
        }
        Ok(p)
    }

    /// Appends one component after validating it.
    pub fn join(&self, name: &str) -> Result<Self, NameError> {
        validate_name(name.as_bytes())?;
        if self.0.is_empty() {
            Ok(RelPath(name.to_string()))
        } else {
            Ok(RelPath(format!("{}/{}", self.0, name)))
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_string()),
            None => RelPath::root(),
        })
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl TryFrom<String> for RelPath {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        RelPath::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("/")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What kind of object a remote entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
}

/// The version of a remote object: a strong ETag when the server gives one, else size+mtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Version {
    /// Opaque ETag value, without quotes and without the `W/` weakness marker.
    Etag { value: String, weak: bool },
    /// Fallback when the server has no ETag.
    SizeMtime { size: u64, mtime_secs: i64 },
}

impl Version {
    /// Normalises an ETag header or property value; `None` when it is missing or empty.
    pub fn from_etag(raw: &str) -> Option<Version> {
        let mut s = raw.trim();
        let mut weak = false;
        if let Some(rest) = s.strip_prefix("W/").or_else(|| s.strip_prefix("w/")) {
            weak = true;
            s = rest.trim();
        }
        let s = s.strip_prefix('"').unwrap_or(s);
        let s = s.strip_suffix('"').unwrap_or(s);
        // Some servers (and S3 lists) XML-escape the quotes; they arrive decoded here already.
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(Version::Etag {
            value: s.to_string(),
            weak,
        })
    }

    pub fn size_mtime(size: u64, mtime: SystemTime) -> Version {
        Version::SizeMtime {
            size,
            mtime_secs: unix_secs(mtime),
        }
    }

    /// Best version from an optional ETag and the size/mtime fallback.
    pub fn from_parts(etag: Option<&str>, size: u64, mtime: SystemTime) -> Version {
        etag.and_then(Version::from_etag)
            .unwrap_or_else(|| Version::size_mtime(size, mtime))
    }

    /// Same object version? Weakness is ignored: Apache serves `W/"x"` and then `"x"` for one
    /// unchanged file.
    pub fn same(&self, other: &Version) -> bool {
        match (self, other) {
            (Version::Etag { value: a, .. }, Version::Etag { value: b, .. }) => a == b,
            (
                Version::SizeMtime {
                    size: s1,
                    mtime_secs: m1,
                },
                Version::SizeMtime {
                    size: s2,
                    mtime_secs: m2,
                },
            ) => s1 == s2 && m1 == m2,
            _ => false,
        }
    }

    /// The value to send in `If-Match`, when this version is a strong ETag.
    pub fn if_match(&self) -> Option<String> {
        match self {
            Version::Etag { value, weak: false } => Some(format!("\"{value}\"")),
            _ => None,
        }
    }

    /// Compact text form, for xattrs and logs.
    pub fn token(&self) -> String {
        match self {
            Version::Etag { value, .. } => format!("e:{value}"),
            Version::SizeMtime { size, mtime_secs } => format!("s:{size}:{mtime_secs}"),
        }
    }

    pub fn from_token(t: &str) -> Option<Version> {
        if let Some(v) = t.strip_prefix("e:") {
            return Some(Version::Etag {
                value: v.to_string(),
                weak: false,
            });
        }
        let rest = t.strip_prefix("s:")?;
        let (s, m) = rest.split_once(':')?;
        Some(Version::SizeMtime {
            size: s.parse().ok()?,
            mtime_secs: m.parse().ok()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token())
    }
}

pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn from_unix_secs(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

/// One object in a remote listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    pub path: RelPath,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub version: Version,
    /// Stable id across renames where the server has one (Nextcloud `oc:fileid`).
    pub file_id: Option<String>,
    /// Unix mode bits where the remote carries them (local directories).
    pub mode: Option<u32>,
    /// Server permission string where present (ownCloud/Nextcloud `oc:permissions`).
    pub permissions: Option<String>,
}

/// A user's setting for a file or folder (OneDrive's rules: a folder's setting is inherited
/// by new children; an explicit child setting wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PinSetting {
    /// Take the folder's setting (the default).
    #[default]
    Inherit,
    /// Always keep on this device.
    Pinned,
    /// Keep only in the cloud: free the bytes now.
    OnlineOnly,
}

/// Where a file's bytes are, as users see it (a folder: the state of what is below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Availability {
    /// A placeholder: every byte is on the server only.
    OnlineOnly,
    /// Some bytes are local.
    Partial,
    /// Every byte is local (and may be freed again).
    Local,
    /// Every byte is local and stays ("always keep on this device").
    Pinned,
}

impl Availability {
    /// The word on the wire, in xattrs and in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::OnlineOnly => "online-only",
            Availability::Partial => "partial",
            Availability::Local => "local",
            Availability::Pinned => "pinned",
        }
    }

    /// Every byte is on this device.
    pub fn is_local(self) -> bool {
        matches!(self, Availability::Local | Availability::Pinned)
    }
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Bytes as people read them: "512 B", "3.1 MiB" (binary units, one decimal); what the CLI
/// and the tray say.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(validate_name(b""), Err(NameError::Empty));
        assert_eq!(validate_name(b".."), Err(NameError::Dot));
        assert_eq!(validate_name(b"."), Err(NameError::Dot));
        assert_eq!(validate_name(b"a/b"), Err(NameError::Slash));
        assert_eq!(validate_name(b"a\0b"), Err(NameError::Nul));
        assert_eq!(validate_name(b"a\nb"), Err(NameError::Control));
        assert_eq!(validate_name(b"a\x7fb"), Err(NameError::Control));
        assert_eq!(validate_name(b"\xff\xfe"), Err(NameError::NotUtf8));
        assert_eq!(validate_name(&[b'a'; 256]), Err(NameError::TooLong(256)));
        assert!(validate_name(&[b'a'; 255]).is_ok());
        assert_eq!(validate_name("ünï cödé 📁".as_bytes()), Ok("ünï cödé 📁"));
        assert_eq!(validate_name(b"..."), Ok("..."));
    }

    #[test]
    fn relpath_parse_and_relations() {
        let p = RelPath::parse("/a/b/c/").unwrap();
        assert_eq!(p.as_str(), "a/b/c");
        assert_eq!(p.name(), "c");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert!(p.starts_with(&RelPath::parse("a").unwrap()));
        assert!(!RelPath::parse("ab")
            .unwrap()
            .starts_with(&RelPath::parse("a").unwrap()));
        assert!(RelPath::parse("a/../b").is_err());
        assert!(serde_json::from_str::<RelPath>("\"a/../etc\"").is_err());
    }

    #[test]
    fn etags_normalise() {
        let weak = Version::from_etag("W/\"12-34\"").unwrap();
        let strong = Version::from_etag("\"12-34\"").unwrap();
        let unquoted = Version::from_etag("12-34").unwrap();
        assert!(weak.same(&strong) && strong.same(&unquoted));
        assert_eq!(weak.if_match(), None);
        assert_eq!(strong.if_match().unwrap(), "\"12-34\"");
        assert_eq!(Version::from_etag("  "), None);
        assert_eq!(Version::from_etag("\"\""), None);
        let v = Version::from_parts(None, 5, from_unix_secs(7));
        assert_eq!(Version::from_token(&v.token()), Some(v));
    }
}

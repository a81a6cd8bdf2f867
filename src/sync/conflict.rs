//! Conflict copy names: `name (conflicted copy YYYY-MM-DD HHMMSS HOST).ext`, local time.
//!
//! The tag goes before the last extension, or before a known compound one (`.tar.gz`), and
//! after the whole name for dotfiles and names without an extension. Names stay within 255
//! bytes (the stem is shortened on a character boundary).

/// Extensions kept whole.
const COMPOUND: &[&str] = &[
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tar.lz",
    ".tar.lzma",
    ".tar.lz4",
    ".tar.z",
    ".tar.br",
    ".nar.xz",
];

/// Splits `name` into stem and extension (with its dot; empty when there is none).
pub fn split_ext(name: &str) -> (&str, &str) {
    let lower = name.to_ascii_lowercase();
    for c in COMPOUND {
        if lower.ends_with(c) && name.len() > c.len() {
            let at = name.len() - c.len();
            return (&name[..at], &name[at..]);
        }
    }
    match name.rfind('.') {
        // A leading dot (".bashrc") is not an extension; neither is a trailing one.
        Some(0) | None => (name, ""),
        Some(i) if i + 1 == name.len() => (name, ""),
        Some(i) => (&name[..i], &name[i..]),
    }
}

/// Local time as `YYYY-MM-DD HHMMSS`.
pub fn local_stamp(t: std::time::SystemTime) -> String {
    let secs = crate::model::unix_secs(t) as libc::time_t;
    // SAFETY: localtime_r fills the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to locals that outlive the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return "1970-01-01 000000".into();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// This machine's hostname (short), for conflict names.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: writes at most buf.len() bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    ok.then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
        .map(|h| h.split('.').next().unwrap_or("").to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .unwrap_or_else(|| "localhost".into())
}

/// The conflict copy name for `name`; `n > 1` adds a counter for a name already taken.
pub fn conflict_name(name: &str, stamp: &str, host: &str, n: u32) -> String {
    let (stem, ext) = split_ext(name);
    let tag = if n > 1 {
        format!(" (conflicted copy {stamp} {host} {n})")
    } else {
        format!(" (conflicted copy {stamp} {host})")
    };
    let budget = 255usize.saturating_sub(tag.len() + ext.len());
    let mut cut = stem.len().min(budget);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}{}", &stem[..cut], tag, ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        let s = "2026-11-26 013500";
        let c = |n: &str| conflict_name(n, s, "box", 1);
        assert_eq!(
            c("report.pdf"),
            "report (conflicted copy 2026-11-26 013500 box).pdf"
        );
        assert_eq!(
            c("a.tar.gz"),
            "a (conflicted copy 2026-11-26 013500 box).tar.gz"
        );
        assert_eq!(
            c("A.TAR.GZ"),
            "A (conflicted copy 2026-11-26 013500 box).TAR.GZ"
        );
        assert_eq!(
            c(".bashrc"),
            ".bashrc (conflicted copy 2026-11-26 013500 box)"
        );
        assert_eq!(
            c("Makefile"),
            "Makefile (conflicted copy 2026-11-26 013500 box)"
        );
        assert_eq!(
            c("v1.2.txt"),
            "v1.2 (conflicted copy 2026-11-26 013500 box).txt"
        );
        assert_eq!(
            c("trail."),
            "trail. (conflicted copy 2026-11-26 013500 box)"
        );
        assert_eq!(
            conflict_name("x.md", s, "box", 2),
            "x (conflicted copy 2026-11-26 013500 box 2).md"
        );
        let long = "é".repeat(127) + ".txt";
        let out = c(&long);
        assert!(out.len() <= 255 && out.ends_with("box).txt"), "{out}");
        assert!(crate::model::validate_name(out.as_bytes()).is_ok());
    }

    #[test]
    fn stamp_is_well_formed() {
        let t = local_stamp(std::time::SystemTime::now());
        assert_eq!(t.len(), 17);
        assert_eq!(&t[4..5], "-");
        assert!(!hostname().is_empty());
    }
}

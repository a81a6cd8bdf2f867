//! Translations: the gettext catalogues of `po/` (one `.po` a language, built into the binary)
//! that the CLI, the tray and the window speak, and the language chosen from the environment
//! as gettext chooses it (`LANGUAGE`, then `LC_ALL`, `LC_MESSAGES`, `LANG`).
//!
//! A message's id is its English text; placeholders are `{name}`. [`t!`](crate::t) translates
//! one message, [`tn!`](crate::tn) one with a plural form (`{n}` is the count). Untranslated
//! messages, fuzzy entries and unknown languages fall back to English.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::OnceLock;

/// The catalogues built in: (language, `.po` text). `scripts/i18n check` keeps them complete.
const BUILT_IN: &[(&str, &str)] = &[("de", include_str!("../po/de.po"))];

/// How a language picks a plural form from a count (the `Plural-Forms` formulas in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plural {
    /// `n != 1` (English, German, most of Europe).
    NotOne,
    /// `n > 1` (French, Brazilian Portuguese).
    AboveOne,
    /// `0`: one form (Japanese, Chinese, ...).
    One,
}

impl Plural {
    /// The formula as the `Plural-Forms` header writes it.
    pub fn formula(self) -> &'static str {
        match self {
            Plural::NotOne => "n != 1",
            Plural::AboveOne => "n > 1",
            Plural::One => "0",
        }
    }

    fn parse(header: &str) -> Option<Plural> {
        let f = header.split("plural=").nth(1)?;
        let f: String = f
            .trim_end_matches(';')
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '(' && *c != ')' && *c != ';')
            .collect();
        match f.as_str() {
            "n!=1" => Some(Plural::NotOne),
            "n>1" => Some(Plural::AboveOne),
            "0" => Some(Plural::One),
            _ => None,
        }
    }

    /// The form for count `n`.
    pub fn index(self, n: u64) -> usize {
        match self {
            Plural::NotOne => usize::from(n != 1),
            Plural::AboveOne => usize::from(n > 1),
            Plural::One => 0,
        }
    }
}

/// A `.po` file that cannot be read: its line and what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// One language's messages: id (the English singular) to its forms.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub lang: String,
    pub plural: Plural,
    messages: HashMap<String, Vec<String>>,
}

impl Catalogue {
    /// English: no messages, every id is its own text.
    pub fn english() -> Catalogue {
        Catalogue {
            lang: "en".into(),
            plural: Plural::NotOne,
            messages: HashMap::new(),
        }
    }

    /// Parses a `.po` file. Fuzzy entries and empty translations are left out (they fall back
    /// to English); obsolete (`#~`) entries and contexts are ignored.
    pub fn parse(lang: &str, po: &str) -> Result<Catalogue, ParseError> {
        let mut cat = Catalogue {
            lang: lang.to_string(),
            plural: Plural::NotOne,
            messages: HashMap::new(),
        };
        let mut entry = Entry::default();
        // Which string the continuation lines add to.
        let mut current: Option<Field> = None;
        for (i, raw) in po.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            let err = |what: &str| ParseError {
                line: line_no,
                what: what.to_string(),
            };
            if line.is_empty() {
                cat.finish(std::mem::take(&mut entry))
                    .map_err(|w| err(&w))?;
                current = None;
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                if c.starts_with('~') {
                    continue;
                }
                if entry.started() {
                    cat.finish(std::mem::take(&mut entry))
                        .map_err(|w| err(&w))?;
                    current = None;
                }
                if let Some(flags) = c.strip_prefix(',') {
                    entry.fuzzy |= flags.split(',').any(|f| f.trim() == "fuzzy");
                }
                continue;
            }
            if line.starts_with('"') {
                let s = unquote(line).ok_or_else(|| err("bad string"))?;
                match current {
                    Some(f) => entry.field(f).push_str(&s),
                    None => return Err(err("a string outside an entry")),
                }
                continue;
            }
            let (key, rest) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| err("expected a keyword and a string"))?;
            let s = unquote(rest.trim()).ok_or_else(|| err("bad string"))?;
            let field = match key {
                "msgctxt" | "msgid" if entry.has_msgstr() => {
                    cat.finish(std::mem::take(&mut entry))
                        .map_err(|w| err(&w))?;
                    if key == "msgctxt" {
                        Field::Ctxt
                    } else {
                        Field::Id
                    }
                }
                "msgctxt" => Field::Ctxt,
                "msgid" => Field::Id,
                "msgid_plural" => Field::IdPlural,
                "msgstr" => Field::Str(0),
                k => match k
                    .strip_prefix("msgstr[")
                    .and_then(|n| n.strip_suffix(']'))
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) if n < 8 => Field::Str(n),
                    _ => return Err(err(&format!("unknown keyword {k}"))),
                },
            };
            *entry.field(field) = s;
            current = Some(field);
        }
        cat.finish(entry).map_err(|what| ParseError {
            line: po.lines().count(),
            what,
        })?;
        Ok(cat)
    }

    fn finish(&mut self, e: Entry) -> Result<(), String> {
        if !e.started() {
            return Ok(());
        }
        let id = e.id.ok_or("an entry without msgid")?;
        if e.strs.is_empty() {
            return Err(format!("no msgstr for {id:?}"));
        }
        if id.is_empty() {
            for h in e.strs[0].as_deref().unwrap_or_default().lines() {
                if let Some(v) = h.strip_prefix("Plural-Forms:") {
                    self.plural = Plural::parse(v)
                        .ok_or_else(|| format!("unsupported Plural-Forms {}", v.trim()))?;
                }
            }
            return Ok(());
        }
        let forms: Vec<String> = e.strs.into_iter().map(|s| s.unwrap_or_default()).collect();
        if e.fuzzy || forms.iter().any(|f| f.is_empty()) || e.ctxt.is_some() {
            return Ok(());
        }
        self.messages.insert(id, forms);
        Ok(())
    }

    /// The translation of `msgid`, or `msgid` itself.
    pub fn tr<'a>(&'a self, msgid: &'a str) -> &'a str {
        self.messages
            .get(msgid)
            .and_then(|f| f.first())
            .map_or(msgid, String::as_str)
    }

    /// The form of `one`/`other` for count `n`.
    pub fn trn<'a>(&'a self, one: &'a str, other: &'a str, n: u64) -> &'a str {
        match self.messages.get(one) {
            Some(forms) if forms.len() > 1 || self.plural == Plural::One => {
                let i = self.plural.index(n).min(forms.len() - 1);
                &forms[i]
            }
            _ if n == 1 => one,
            _ => other,
        }
    }

    /// How many messages are translated.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The catalogue for the window (`catalogue` command): language, plural formula, and
    /// each id with its forms.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lang": self.lang,
            "plural": self.plural.formula(),
            "messages": self.messages,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Ctxt,
    Id,
    IdPlural,
    Str(usize),
}

#[derive(Default)]
struct Entry {
    fuzzy: bool,
    ctxt: Option<String>,
    id: Option<String>,
    id_plural: Option<String>,
    strs: Vec<Option<String>>,
}

impl Entry {
    fn started(&self) -> bool {
        self.id.is_some() || self.ctxt.is_some()
    }

    fn has_msgstr(&self) -> bool {
        !self.strs.is_empty()
    }

    fn field(&mut self, f: Field) -> &mut String {
        let slot = match f {
            Field::Ctxt => &mut self.ctxt,
            Field::Id => &mut self.id,
            Field::IdPlural => &mut self.id_plural,
            Field::Str(n) => {
                if self.strs.len() <= n {
                    self.strs.resize(n + 1, None);
                }
                &mut self.strs[n]
            }
        };
        slot.get_or_insert_with(String::new)
    }
}

/// A `.po` string literal's text (`"..."` with C escapes).
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '"' => '"',
                '\\' => '\\',
                _ => return None,
            }),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The language gettext would choose, from an environment lookup: none (English) when the
/// messages locale is unset, `C` or `POSIX`; else the first of `LANGUAGE` (a colon list) and
/// then the locale itself (`de_DE.UTF-8` gives `de_DE`, then `de`) that `known` has.
pub fn choose<'a>(
    env: impl Fn(&str) -> Option<String>,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<&'a str> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let locale = set("LC_ALL")
        .or_else(|| set("LC_MESSAGES"))
        .or_else(|| set("LANG"))?;
    if locale == "C" || locale == "POSIX" || locale.starts_with("C.") {
        return None;
    }
    let language = set("LANGUAGE").unwrap_or_default();
    let wanted = language
        .split(':')
        .chain(std::iter::once(locale.as_str()))
        .filter(|l| !l.is_empty());
    for w in wanted {
        let base = w.split(['.', '@']).next().unwrap_or(w);
        let lang = base.split('_').next().unwrap_or(base);
        for cand in [base, lang] {
            if cand == "en" || cand.starts_with("en_") {
                return None;
            }
            if let Some(k) = known.clone().into_iter().find(|k| *k == cand) {
                return Some(k);
            }
        }
    }
    None
}

/// The built-in catalogue of `lang` (English when there is none).
pub fn built_in(lang: &str) -> Catalogue {
    BUILT_IN
        .iter()
        .find(|(l, _)| *l == lang)
        .and_then(|(l, po)| match Catalogue::parse(l, po) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(lang = l, error = %e, "unreadable built-in catalogue");
                None
            }
        })
        .unwrap_or_else(Catalogue::english)
}

/// The built-in catalogue of `lang` (not English), parsed once per process and shared: the
/// daemon's connections each name one in their `hello`.
pub fn shared(lang: &str) -> Option<&'static Catalogue> {
    static ALL: OnceLock<Vec<Catalogue>> = OnceLock::new();
    ALL.get_or_init(|| languages().map(built_in).collect())
        .iter()
        .find(|c| c.lang == lang)
}

/// The languages built in, besides English.
pub fn languages() -> impl Iterator<Item = &'static str> + Clone {
    BUILT_IN.iter().map(|(l, _)| *l)
}

static CURRENT: OnceLock<Catalogue> = OnceLock::new();

/// The catalogue of the environment's language, chosen once per process.
pub fn current() -> &'static Catalogue {
    CURRENT.get_or_init(|| {
        choose(|k| std::env::var(k).ok(), languages())
            .map(built_in)
            .unwrap_or_else(Catalogue::english)
    })
}

/// `msgid` in the current language.
pub fn tr(msgid: &'static str) -> &'static str {
    current().tr(msgid)
}

/// The plural form for `n` in the current language.
pub fn trn(one: &'static str, other: &'static str, n: u64) -> &'static str {
    current().trn(one, other, n)
}

/// Replaces each `{name}` of `template` with its value; other braces stay as they are.
pub fn fill(template: &str, args: &[(&str, &dyn Display)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| {
            let name = &after[..close];
            args.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (close, *v))
        });
        match hit {
            Some((close, v)) => {
                out.push_str(&v.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A message kept untranslated until its reader's language is known: the daemon's errors are
/// made once, in English for its log, and said to each client in the language it asked for
/// (`hello`'s `lang`). Made by [`said!`](crate::said); parts that are not messages (a path
/// put in front) stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Said {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Message {
        template: &'static str,
        args: Vec<(&'static str, Value)>,
    },
    /// A message with a count: its singular and plural ids, the count (`{n}`), other values.
    Count {
        one: &'static str,
        other: &'static str,
        n: u64,
        args: Vec<(&'static str, Value)>,
    },
}

/// A placeholder's value: text as it is, or a message said in the same language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Said(Box<Said>),
}

impl Value {
    fn render(&self, cat: &Catalogue) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Said(s) => s.render(cat),
        }
    }
}

fn render_args(args: &[(&'static str, Value)], cat: &Catalogue) -> Vec<(&'static str, String)> {
    args.iter().map(|(k, v)| (*k, v.render(cat))).collect()
}

impl Said {
    /// A message: its English template (the message id) and the values of its placeholders.
    pub fn new(template: &'static str, args: Vec<(&'static str, Value)>) -> Said {
        Said {
            parts: vec![Part::Message { template, args }],
        }
    }

    /// A message with a count (`{n}`), like [`tn!`](crate::tn)'s.
    pub fn count(
        one: &'static str,
        other: &'static str,
        n: u64,
        args: Vec<(&'static str, Value)>,
    ) -> Said {
        Said {
            parts: vec![Part::Count {
                one,
                other,
                n,
                args,
            }],
        }
    }

    /// Words said as they are in every language (a server's or the system's own).
    pub fn text(text: impl Into<String>) -> Said {
        Said::default().suffixed(text)
    }

    /// The same, with `value` (a message itself, said in the same language) for the
    /// placeholder `{name}` of its last message.
    pub fn with(mut self, name: &'static str, value: Said) -> Said {
        if let Some(Part::Message { args, .. } | Part::Count { args, .. }) = self.parts.last_mut() {
            args.retain(|(k, _)| *k != name);
            args.push((name, Value::Said(Box::new(value))));
        }
        self
    }

    /// The same, with `text` (not translated) before it.
    pub fn prefixed(mut self, text: impl Into<String>) -> Said {
        self.parts.insert(0, Part::Text(text.into()));
        self
    }

    /// The same, with `text` (not translated) after it.
    pub fn suffixed(mut self, text: impl Into<String>) -> Said {
        self.parts.push(Part::Text(text.into()));
        self
    }

    /// The same, with another message after it.
    pub fn then(mut self, more: Said) -> Said {
        self.parts.extend(more.parts);
        self
    }

    /// The text in `cat`'s language.
    pub fn render(&self, cat: &Catalogue) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Message { template, args } => {
                    let args = render_args(args, cat);
                    let args: Vec<(&str, &dyn Display)> =
                        args.iter().map(|(k, v)| (*k, v as &dyn Display)).collect();
                    out.push_str(&fill(cat.tr(template), &args));
                }
                Part::Count {
                    one,
                    other,
                    n,
                    args,
                } => {
                    let args = render_args(args, cat);
                    let mut all: Vec<(&str, &dyn Display)> = vec![("n", n as &dyn Display)];
                    all.extend(args.iter().map(|(k, v)| (*k, v as &dyn Display)));
                    out.push_str(&fill(cat.trn(one, other, *n), &all));
                }
            }
        }
        out
    }

    /// The English text.
    pub fn english(&self) -> String {
        self.render(&Catalogue::english())
    }
}

/// An operating-system error said in the reader's language: the common errnos are messages
/// whose English is the C library's own text (the daemon's locale is not the client's); any
/// other error keeps the system's words. Rust's " (os error N)" is left out.
pub fn said_os(e: &std::io::Error) -> Said {
    match e.raw_os_error() {
        Some(libc::ENOENT) => crate::said!("No such file or directory"),
        Some(libc::EACCES) => crate::said!("Permission denied"),
        Some(libc::EPERM) => crate::said!("Operation not permitted"),
        Some(libc::ENOTDIR) => crate::said!("Not a directory"),
        Some(libc::EISDIR) => crate::said!("Is a directory"),
        Some(libc::ENOTEMPTY) => crate::said!("Directory not empty"),
        Some(libc::ENOSPC) => crate::said!("No space left on device"),
        Some(libc::EBUSY) => crate::said!("Device or resource busy"),
        Some(libc::EROFS) => crate::said!("Read-only file system"),
        Some(libc::ELOOP) => crate::said!("Too many levels of symbolic links"),
        _ => {
            let text = e.to_string();
            let text = match text.rfind(" (os error ") {
                Some(i) if text.ends_with(')') => text[..i].to_string(),
                _ => text,
            };
            Said::text(text)
        }
    }
}

/// `{what}: {the error}`, the error said as [`said_os`] says it.
pub fn said_os_at(what: impl Display, e: &std::io::Error) -> Said {
    said_os(e).prefixed(format!("{what}: "))
}

/// A [`Said`]: `said!("{path} is not in one of your sync roots", path = p)`; the template is a
/// message id like [`t!`](crate::t)'s, the values are formatted now.
#[macro_export]
macro_rules! said {
    ($msgid:literal) => {
        $crate::i18n::Said::new($msgid, Vec::new())
    };
    ($msgid:literal, $($name:ident = $val:expr),+ $(,)?) => {
        $crate::i18n::Said::new(
            $msgid,
            vec![$((stringify!($name), $crate::i18n::Value::Text(($val).to_string()))),+],
        )
    };
}

/// A [`Said`] with a count: `said_n!("{n} file failed", "{n} files failed", k, first = p)`.
#[macro_export]
macro_rules! said_n {
    ($one:literal, $other:literal, $n:expr $(, $name:ident = $val:expr)* $(,)?) => {
        $crate::i18n::Said::count(
            $one,
            $other,
            $n as u64,
            vec![$((stringify!($name), $crate::i18n::Value::Text(($val).to_string()))),*],
        )
    };
}

/// Translates a message: `t!("Paused")`, `t!("Added {path}", path = p.display())`.
#[macro_export]
macro_rules! t {
    ($msgid:literal) => {
        $crate::i18n::tr($msgid).to_string()
    };
    ($msgid:literal, $($name:ident = $val:expr),+ $(,)?) => {
        $crate::i18n::fill(
            $crate::i18n::tr($msgid),
            &[$((stringify!($name), &$val as &dyn ::std::fmt::Display)),+],
        )
    };
}

/// Translates a message with a count: `tn!("{n} folder", "{n} folders", k)`; `{n}` is the
/// count, other placeholders follow as in [`t!`](crate::t).
#[macro_export]
macro_rules! tn {
    ($one:literal, $other:literal, $n:expr $(, $name:ident = $val:expr)* $(,)?) => {{
        let n = $n as u64;
        $crate::i18n::fill(
            $crate::i18n::trn($one, $other, n),
            &[("n", &n as &dyn ::std::fmt::Display) $(, (stringify!($name), &$val as &dyn ::std::fmt::Display))*],
        )
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_messages_render_in_each_language_and_keep_their_parts() {
        let de = built_in("de");
        let s = crate::said!("{path} is not in one of your sync roots", path = "/c/x")
            .prefixed("pin: ")
            .then(crate::said!("; sign in again with `skyfill login`"))
            .suffixed("!");
        assert_eq!(
            s.english(),
            "pin: /c/x is not in one of your sync roots; sign in again with `skyfill login`!"
        );
        let german = s.render(&de);
        assert!(german.starts_with("pin: /c/x "), "{german}");
        assert!(
            german.ends_with('!') && !german.contains("sync roots"),
            "{german}"
        );
        // The system's errors: the C library's English, in the reader's language.
        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(said_os(&enoent).english(), "No such file or directory");
        assert_ne!(said_os(&enoent).render(&de), "No such file or directory");
        let odd = std::io::Error::from_raw_os_error(libc::ENOLINK);
        assert_eq!(said_os(&odd).render(&de), "Link has been severed");
        // A message as a placeholder's value is said in the same language.
        let nested = crate::said!("{root}: last sync failed: {error}", root = "/c", error = "")
            .with("error", said_os(&enoent));
        assert_eq!(
            nested.english(),
            "/c: last sync failed: No such file or directory"
        );
        let german = nested.render(&de);
        assert!(
            german.contains("Datei oder Verzeichnis nicht gefunden"),
            "{german}"
        );
        assert!(!german.contains("No such file"), "{german}");
        // Counts choose their form in each language.
        let one = crate::said_n!(
            "{n} file failed: {first}",
            "{n} files failed: {first}",
            1u64,
            first = "a"
        );
        let two = crate::said_n!(
            "{n} file failed: {first}",
            "{n} files failed: {first}",
            2u64,
            first = "a"
        );
        assert_eq!(one.english(), "1 file failed: a");
        assert_eq!(two.english(), "2 files failed: a");
    }

    const PO: &str = r#"# A comment
msgid ""
msgstr ""
"Language: de\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

#: src/x.rs:1
msgid "Paused"
msgstr "Pausiert"

msgid "Added {path}"
msgstr ""
"{path} "
"hinzugefügt"

#, fuzzy
msgid "Quit"
msgstr "Beenden"

msgid "Untranslated"
msgstr ""

msgid "{n} folder"
msgid_plural "{n} folders"
msgstr[0] "{n} Ordner"
msgstr[1] "{n} Ordner (viele)"

msgid "say \"hi\"\n"
msgstr "sag \"hallo\"\n"

#~ msgid "Old"
#~ msgstr "Alt"
"#;

    #[test]
    fn parses_entries_plurals_escapes_and_skips_fuzzy_and_empty() {
        let c = Catalogue::parse("de", PO).unwrap();
        assert_eq!(c.plural, Plural::NotOne);
        assert_eq!(c.tr("Paused"), "Pausiert");
        assert_eq!(c.tr("Added {path}"), "{path} hinzugefügt");
        assert_eq!(c.tr("Quit"), "Quit", "fuzzy falls back");
        assert_eq!(c.tr("Untranslated"), "Untranslated");
        assert_eq!(c.tr("Old"), "Old", "obsolete entries are ignored");
        assert_eq!(c.tr("say \"hi\"\n"), "sag \"hallo\"\n");
        assert_eq!(c.trn("{n} folder", "{n} folders", 1), "{n} Ordner");
        assert_eq!(c.trn("{n} folder", "{n} folders", 0), "{n} Ordner (viele)");
        assert_eq!(c.trn("{x} a", "{x} b", 2), "{x} b");
        assert_eq!(c.len(), 4);
        let j = c.to_json();
        assert_eq!(j["lang"], "de");
        assert_eq!(j["plural"], "n != 1");
        assert_eq!(j["messages"]["Paused"][0], "Pausiert");
    }

    #[test]
    fn bad_files_say_the_line() {
        let e = Catalogue::parse("de", "msgid \"a\"\nmsgstr \"b\nx").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Catalogue::parse("de", "msgid \"a\"\nmsgfoo \"b\"\n").unwrap_err();
        assert!(e.what.contains("msgfoo"), "{e}");
        let e = Catalogue::parse(
            "xx",
            "msgid \"\"\nmsgstr \"Plural-Forms: nplurals=3; plural=n%10==1;\\n\"\n",
        )
        .unwrap_err();
        assert!(e.what.contains("Plural-Forms"), "{e}");
    }

    #[test]
    fn the_language_is_chosen_as_gettext_does() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let known = ["de", "fr"];
        assert_eq!(choose(env(&[("LANG", "de_DE.UTF-8")]), known), Some("de"));
        assert_eq!(choose(env(&[("LANG", "de_AT@euro")]), known), Some("de"));
        assert_eq!(choose(env(&[("LANG", "C.UTF-8")]), known), None);
        assert_eq!(choose(env(&[]), known), None);
        assert_eq!(choose(env(&[("LANG", "it_IT.UTF-8")]), known), None);
        // LC_ALL wins over LANG; LANGUAGE wins over both, but not over C.
        assert_eq!(
            choose(env(&[("LANG", "en_US.UTF-8"), ("LC_ALL", "fr_FR")]), known),
            Some("fr")
        );
        assert_eq!(
            choose(
                env(&[("LANG", "en_US.UTF-8"), ("LANGUAGE", "it:de:fr")]),
                known
            ),
            Some("de")
        );
        assert_eq!(
            choose(env(&[("LC_ALL", "C"), ("LANGUAGE", "de")]), known),
            None
        );
        // English listed first in LANGUAGE means English.
        assert_eq!(
            choose(
                env(&[("LANG", "de_DE.UTF-8"), ("LANGUAGE", "en_GB:de")]),
                known
            ),
            None
        );
    }

    #[test]
    fn placeholders_are_filled_by_name() {
        let n = 3;
        assert_eq!(
            fill("{n} of {total} in {dir}", &[("n", &n), ("total", &"7")]),
            "3 of 7 in {dir}"
        );
        assert_eq!(fill("a {", &[]), "a {");
        assert_eq!(t!("Paused"), "Paused");
        assert_eq!(tn!("{n} file", "{n} files", 1usize), "1 file");
        assert_eq!(
            tn!("{n} file in {d}", "{n} files in {d}", 2, d = "x"),
            "2 files in x"
        );
    }

    #[test]
    fn the_built_in_catalogues_parse() {
        for (lang, po) in BUILT_IN {
            let c = Catalogue::parse(lang, po).unwrap_or_else(|e| panic!("po/{lang}.po: {e}"));
            assert!(!c.is_empty(), "po/{lang}.po has no translations");
        }
    }
}

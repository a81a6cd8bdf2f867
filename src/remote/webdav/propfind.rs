//! Streaming parser for WebDAV `207 Multi-Status` PROPFIND answers (RFC 4918), with the
//! ownCloud/Nextcloud extras (`oc:fileid`, `oc:permissions`).
//!
//! It reads from any `BufRead` (a socket bridge in production, a byte slice in tests and the
//! fuzzer), hands out one [`DavEntry`] per `<response>`, and keeps memory bounded: text longer
//! than [`MAX_TEXT`] or nesting deeper than [`MAX_DEPTH`] is an error, not an allocation.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use std::io::BufRead;

pub const MAX_TEXT: usize = 32 * 1024;
pub const MAX_DEPTH: usize = 64;

const DAV: &[u8] = b"DAV:";
const OC: &[u8] = b"http://owncloud.org/ns";

/// One `<response>` with the properties of its successful `<propstat>`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavEntry {
    /// Raw href text (still percent-encoded); `None` if it was not valid UTF-8.
    pub href: Option<String>,
    pub is_collection: bool,
    pub size: Option<u64>,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
    pub file_id: Option<String>,
    pub permissions: Option<String>,
    /// Response-level `<status>` (e.g. `HTTP/1.1 404 Not Found`), if any.
    pub status: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed XML at byte {pos}: {msg}")]
    Xml { pos: u64, msg: String },
    #[error("XML text longer than {MAX_TEXT} bytes at byte {0}")]
    TextTooLong(u64),
    #[error("XML nested deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(u64),
    #[error("not a DAV multistatus document")]
    NotMultistatus,
    #[error("{0}")]
    Sink(String),
}

/// The elements whose children matter, told apart without keeping their names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tag {
    Multistatus,
    Response,
    Propstat,
    Prop,
    Resourcetype,
    Other,
}

impl Tag {
    fn of(local: &[u8]) -> Tag {
        match local {
            b"multistatus" => Tag::Multistatus,
            b"response" => Tag::Response,
            b"propstat" => Tag::Propstat,
            b"prop" => Tag::Prop,
            b"resourcetype" => Tag::Resourcetype,
            _ => Tag::Other,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Href,
    Status,
    PropstatStatus,
    Length,
    Modified,
    Etag,
    FileId,
    Permissions,
    Other,
}

fn status_code(s: &str) -> Option<u16> {
    // "HTTP/1.1 200 OK"
    s.split_whitespace().nth(1)?.parse().ok()
}

/// Parses a multistatus document, calling `sink` for each response.
pub fn parse<R: BufRead>(
    input: R,
    mut sink: impl FnMut(DavEntry) -> Result<(), String>,
) -> Result<u64, ParseError> {
    let mut reader = NsReader::from_reader(input);
    reader.config_mut().trim_text(false);
    reader.config_mut().expand_empty_elements = true;
    let mut buf = Vec::new();
    // Stack of (namespace is DAV/OC/other, which element) of open elements.
    let mut stack: Vec<(u8, Tag)> = Vec::new();
    let mut seen_root = false;
    let mut count = 0u64;
    let mut entry: Option<DavEntry> = None;
    // Properties of the current propstat, applied only if its status is 2xx.
    let mut ps: Option<DavEntry> = None;
    let mut ps_status: Option<u16> = None;
    let mut field = Field::Other;
    let mut text: Vec<u8> = Vec::new();
    loop {
        let pos = reader.buffer_position();
        let (ns, ev) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| ParseError::Xml {
                pos,
                msg: e.to_string(),
            })?;
        let nsk = match ns {
            ResolveResult::Bound(Namespace(n)) if n == DAV => 1,
            ResolveResult::Bound(Namespace(n)) if n == OC => 2,
            _ => 0,
        };
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep(pos));
                }
                let name = e.local_name();
                let local = name.as_ref();
                if stack.is_empty() {
                    if !(nsk == 1 && local == b"multistatus") {
                        return Err(ParseError::NotMultistatus);
                    }
                    seen_root = true;
                }
                let parent = stack.last().copied();
                match (nsk, local, parent) {
                    (1, b"response", Some((1, Tag::Multistatus))) => {
                        entry = Some(DavEntry::default());
                    }
                    (1, b"href", Some((1, Tag::Response))) => field = Field::Href,
                    (1, b"status", Some((1, Tag::Response))) => field = Field::Status,
                    (1, b"propstat", Some((1, Tag::Response))) => {
                        ps = Some(DavEntry::default());
                        ps_status = None;
                    }
                    (1, b"status", Some((1, Tag::Propstat))) => field = Field::PropstatStatus,
                    (1, b"getcontentlength", Some((1, Tag::Prop))) => field = Field::Length,
                    (1, b"getlastmodified", Some((1, Tag::Prop))) => field = Field::Modified,
                    (1, b"getetag", Some((1, Tag::Prop))) => field = Field::Etag,
                    (2, b"fileid", Some((1, Tag::Prop))) => field = Field::FileId,
                    (2, b"permissions", Some((1, Tag::Prop))) => field = Field::Permissions,
                    (1, b"collection", Some((1, Tag::Resourcetype))) => {
                        if let Some(p) = ps.as_mut() {
                            p.is_collection = true;
                        }
                    }
                    _ => field = Field::Other,
                }
                text.clear();
                stack.push((nsk, Tag::of(local)));
            }
            Event::Text(t) if field != Field::Other => {
                let raw = t.into_inner();
                if text.len() + raw.len() > MAX_TEXT {
                    return Err(ParseError::TextTooLong(pos));
                }
                text.extend_from_slice(&raw);
            }
            Event::CData(t) if field != Field::Other => {
                let raw = t.into_inner();
                if text.len() + raw.len() > MAX_TEXT {
                    return Err(ParseError::TextTooLong(pos));
                }
                // CDATA is literal: escape it so the common unescape below is a no-op on it.
                let s = String::from_utf8_lossy(&raw);
                text.extend_from_slice(quick_xml::escape::escape(s.as_ref()).as_bytes());
            }
            Event::End(_) => {
                let Some((n, local)) = stack.pop() else {
                    return Err(ParseError::Xml {
                        pos,
                        msg: "unbalanced end tag".into(),
                    });
                };
                if field != Field::Other {
                    let value = std::str::from_utf8(&text)
                        .ok()
                        .and_then(|s| quick_xml::escape::unescape(s).ok());
                    let value_trim = value.as_deref().map(str::trim);
                    match field {
                        Field::Href => {
                            if let Some(e) = entry.as_mut() {
                                e.href = value_trim.map(str::to_string);
                            }
                        }
                        Field::Status => {
                            if let Some(e) = entry.as_mut() {
                                e.status = value_trim.and_then(status_code);
                            }
                        }
                        Field::PropstatStatus => ps_status = value_trim.and_then(status_code),
                        f => {
                            if let (Some(p), Some(v)) = (ps.as_mut(), value_trim) {
                                match f {
                                    Field::Length => p.size = v.parse().ok(),
                                    Field::Modified => p.last_modified = Some(v.to_string()),
                                    Field::Etag => p.etag = Some(v.to_string()),
                                    Field::FileId => p.file_id = Some(v.to_string()),
                                    Field::Permissions => p.permissions = Some(v.to_string()),
                                    _ => {}
                                }
                            }
                        }
                    }
                    field = Field::Other;
                    text.clear();
                }
                match (n, local) {
                    (1, Tag::Propstat) => {
                        if let (Some(p), Some(e)) = (ps.take(), entry.as_mut()) {
                            if ps_status.is_some_and(|s| (200..300).contains(&s)) {
                                e.is_collection |= p.is_collection;
                                e.size = p.size.or(e.size);
                                e.last_modified = p.last_modified.or(e.last_modified.take());
                                e.etag = p.etag.or(e.etag.take());
                                e.file_id = p.file_id.or(e.file_id.take());
                                e.permissions = p.permissions.or(e.permissions.take());
                            }
                        }
                    }
                    (1, Tag::Response) if stack.len() == 1 => {
                        if let Some(e) = entry.take() {
                            count += 1;
                            sink(e).map_err(ParseError::Sink)?;
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => {
                if !seen_root {
                    return Err(ParseError::NotMultistatus);
                }
                if !stack.is_empty() {
                    return Err(ParseError::Xml {
                        pos,
                        msg: "document ended inside an element".into(),
                    });
                }
                return Ok(count);
            }
            Event::DocType(_) => {
                return Err(ParseError::Xml {
                    pos,
                    msg: "DOCTYPE is not allowed in a DAV answer".into(),
                })
            }
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(doc: &str) -> Result<Vec<DavEntry>, ParseError> {
        let mut v = Vec::new();
        parse(doc.as_bytes(), |e| {
            v.push(e);
            Ok(())
        })?;
        Ok(v)
    }

    #[test]
    fn apache_style() {
        let doc = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/a%20b/</D:href>
<D:propstat><D:prop><lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Wed, 25 Nov 2026 10:00:00 GMT</lp1:getlastmodified>
<lp1:getetag>"1000-5f"</lp1:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><ns0:getcontentlength/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response>
<D:response><D:href>/dav/a%20b/f&amp;g.txt</D:href>
<D:propstat><D:prop><D:resourcetype/><D:getcontentlength>12</D:getcontentlength>
<D:getetag>W/"c-5f"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
</D:response></D:multistatus>"#;
        let v = all(doc).unwrap();
        assert_eq!(v.len(), 2);
        assert!(v[0].is_collection);
        assert_eq!(v[0].size, None);
        assert_eq!(v[1].href.as_deref(), Some("/dav/a%20b/f&g.txt"));
        assert_eq!(v[1].size, Some(12));
        assert_eq!(v[1].etag.as_deref(), Some("W/\"c-5f\""));
        assert!(!v[1].is_collection);
    }

    #[test]
    fn nextcloud_props_and_default_namespace() {
        let doc = r#"<multistatus xmlns="DAV:" xmlns:oc="http://owncloud.org/ns">
<response><href>/remote.php/dav/files/u/x</href><propstat><prop>
<getetag>&quot;abc&quot;</getetag><oc:fileid>00000042</oc:fileid><oc:permissions>RGDNVW</oc:permissions>
<getcontentlength>3</getcontentlength></prop><status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#;
        let v = all(doc).unwrap();
        assert_eq!(v[0].file_id.as_deref(), Some("00000042"));
        assert_eq!(v[0].permissions.as_deref(), Some("RGDNVW"));
        assert_eq!(v[0].etag.as_deref(), Some("\"abc\""));
    }

    #[test]
    fn malformed_and_hostile_documents_fail_cleanly() {
        assert!(all("").is_err());
        assert!(all("<html>nope</html>").is_err());
        assert!(all("<D:multistatus xmlns:D=\"DAV:\"><D:response>").is_err());
        assert!(all("<D:multistatus xmlns:D=\"DAV:\"></D:response>").is_err());
        let deep = format!(
            "<D:multistatus xmlns:D=\"DAV:\">{}",
            "<a>".repeat(MAX_DEPTH + 2)
        );
        assert!(matches!(all(&deep), Err(ParseError::TooDeep(_))));
        let long = format!(
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{}</D:href></D:response></D:multistatus>",
            "a".repeat(MAX_TEXT + 1)
        );
        assert!(matches!(all(&long), Err(ParseError::TextTooLong(_))));
        let bomb = r#"<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><D:multistatus xmlns:D="DAV:"/>"#;
        assert!(all(bomb).is_err());
    }

    #[test]
    fn invalid_utf8_href_is_reported_as_none() {
        let mut doc = b"<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/x/".to_vec();
        doc.extend_from_slice(b"\xff\xfe");
        doc.extend_from_slice(b"</D:href></D:response></D:multistatus>");
        let mut v = Vec::new();
        parse(&doc[..], |e| {
            v.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(v[0].href, None);
    }
}

//! Parser for S3 `ListObjectsV2` answers (one page of at most a few thousand keys), plus the
//! small XML answers of multipart uploads. Bounded like the PROPFIND parser; namespaces are
//! ignored because S3-compatible servers disagree on them.

use quick_xml::events::Event;
use quick_xml::Reader;
use std::io::BufRead;

pub const MAX_TEXT: usize = 16 * 1024;
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    /// Raw key bytes after XML unescaping (and URL-decoding when the server used it);
    /// may be invalid UTF-8, which the caller rejects.
    pub key: Vec<u8>,
    pub size: u64,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub objects: Vec<Object>,
    pub prefixes: Vec<Vec<u8>>,
    pub truncated: bool,
    pub next_token: Option<String>,
    pub url_encoded: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed XML at byte {pos}: {msg}")]
    Xml { pos: u64, msg: String },
    #[error("XML text longer than {MAX_TEXT} bytes at byte {0}")]
    TextTooLong(u64),
    #[error("XML nested deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(u64),
    #[error("expected a <{expected}> document, got <{got}>")]
    WrongRoot { expected: &'static str, got: String },
    #[error("truncated listing without a continuation token")]
    NoToken,
}

/// Walks a document calling `on(path_of_local_names, text)` for every text-bearing element.
fn walk<R: BufRead>(
    input: R,
    roots: &[&'static str],
    mut on: impl FnMut(&[Vec<u8>], Option<Vec<u8>>),
) -> Result<(), ParseError> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().expand_empty_elements = true;
    let mut buf = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    let mut seen_root = false;
    loop {
        let pos = reader.buffer_position();
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| ParseError::Xml {
                pos,
                msg: e.to_string(),
            })?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep(pos));
                }
                let local = e.local_name().as_ref().to_vec();
                if stack.is_empty() {
                    if !roots.iter().any(|r| local == r.as_bytes()) {
                        return Err(ParseError::WrongRoot {
                            expected: roots[0],
                            got: String::from_utf8_lossy(&local).into_owned(),
                        });
                    }
                    seen_root = true;
                }
                stack.push(local);
                text.clear();
            }
            Event::Text(t) => {
                let raw = t.into_inner();
                if text.len() + raw.len() > MAX_TEXT {
                    return Err(ParseError::TextTooLong(pos));
                }
                text.extend_from_slice(&raw);
            }
            Event::CData(t) => {
                let raw = t.into_inner();
                if text.len() + raw.len() > MAX_TEXT {
                    return Err(ParseError::TextTooLong(pos));
                }
                let s = String::from_utf8_lossy(&raw);
                text.extend_from_slice(quick_xml::escape::escape(s.as_ref()).as_bytes());
            }
            Event::End(_) => {
                if stack.is_empty() {
                    return Err(ParseError::Xml {
                        pos,
                        msg: "unbalanced end tag".into(),
                    });
                }
                if !text.is_empty() {
                    let v = unescape_bytes(&text).ok_or_else(|| ParseError::Xml {
                        pos,
                        msg: "bad character reference".into(),
                    })?;
                    on(&stack, Some(v));
                    text.clear();
                }
                on(&stack, None);
                stack.pop();
            }
            Event::Eof => {
                if !seen_root {
                    return Err(ParseError::WrongRoot {
                        expected: roots[0],
                        got: "nothing".into(),
                    });
                }
                if !stack.is_empty() {
                    return Err(ParseError::Xml {
                        pos,
                        msg: "document ended inside an element".into(),
                    });
                }
                return Ok(());
            }
            Event::DocType(_) => {
                return Err(ParseError::Xml {
                    pos,
                    msg: "DOCTYPE is not allowed".into(),
                })
            }
            _ => {}
        }
        buf.clear();
    }
}

/// XML-unescapes raw text bytes without requiring UTF-8 (keys may be arbitrary bytes).
fn unescape_bytes(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'&' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let end = raw[i..].iter().position(|&b| b == b';')? + i;
        let ent = &raw[i + 1..end];
        match ent {
            b"lt" => out.push(b'<'),
            b"gt" => out.push(b'>'),
            b"amp" => out.push(b'&'),
            b"quot" => out.push(b'"'),
            b"apos" => out.push(b'\''),
            _ => {
                let s = std::str::from_utf8(ent).ok()?;
                let cp = if let Some(h) = s.strip_prefix("#x").or_else(|| s.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    s.strip_prefix('#')?.parse().ok()?
                };
                let c = char::from_u32(cp)?;
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
        i = end + 1;
    }
    Some(out)
}

fn url_decode(b: &[u8]) -> Vec<u8> {
    // encoding-type=url uses form encoding for keys: '+' is a space.
    let plus: Vec<u8> = b
        .iter()
        .map(|&c| if c == b'+' { b' ' } else { c })
        .collect();
    percent_encoding::percent_decode(&plus).collect()
}

/// Does the open-element stack match `path`? The root element (already checked by `walk`)
/// is not compared: servers disagree on its name (rclone: `InitiateMultipartUpload`).
fn is(stack: &[Vec<u8>], path: &[&str]) -> bool {
    stack.len() == path.len()
        && stack
            .iter()
            .zip(path)
            .skip(1)
            .all(|(a, b)| a == b.as_bytes())
}

pub fn parse_list<R: BufRead>(input: R) -> Result<Page, ParseError> {
    let mut page = Page::default();
    let mut cur = Object::default();
    let mut done: Vec<Object> = Vec::new();
    walk(input, &["ListBucketResult"], |st, v| {
        let Some(v) = v else {
            if is(st, &["ListBucketResult", "Contents"]) {
                done.push(std::mem::take(&mut cur));
            }
            return;
        };
        let s = || String::from_utf8_lossy(&v).trim().to_string();
        if is(st, &["ListBucketResult", "Contents", "Key"]) {
            cur.key = v.clone();
        } else if is(st, &["ListBucketResult", "Contents", "Size"]) {
            cur.size = s().parse().unwrap_or(0);
        } else if is(st, &["ListBucketResult", "Contents", "LastModified"]) {
            cur.last_modified = Some(s());
        } else if is(st, &["ListBucketResult", "Contents", "ETag"]) {
            cur.etag = Some(s());
        } else if is(st, &["ListBucketResult", "CommonPrefixes", "Prefix"]) {
            page.prefixes.push(v.clone());
        } else if is(st, &["ListBucketResult", "IsTruncated"]) {
            page.truncated = s().eq_ignore_ascii_case("true");
        } else if is(st, &["ListBucketResult", "NextContinuationToken"]) {
            page.next_token = Some(s());
        } else if is(st, &["ListBucketResult", "EncodingType"]) {
            page.url_encoded = s().eq_ignore_ascii_case("url");
        }
    })?;
    page.objects = done;
    if page.url_encoded {
        for o in &mut page.objects {
            o.key = url_decode(&o.key);
        }
        for p in &mut page.prefixes {
            *p = url_decode(p);
        }
    }
    if page.truncated && page.next_token.as_deref().unwrap_or("").is_empty() {
        return Err(ParseError::NoToken);
    }
    Ok(page)
}

/// `UploadId` of an `InitiateMultipartUploadResult`.
pub fn parse_upload_id<R: BufRead>(input: R) -> Result<Option<String>, ParseError> {
    let mut id = None;
    walk(
        input,
        &["InitiateMultipartUploadResult", "InitiateMultipartUpload"],
        |st, v| {
            if let Some(v) = v.filter(|_| is(st, &["InitiateMultipartUploadResult", "UploadId"])) {
                id = Some(String::from_utf8_lossy(&v).trim().to_string());
            }
        },
    )?;
    Ok(id)
}

/// One uploaded part: (number, etag, size).
pub type Part = (u32, String, u64);

/// Parts of a `ListPartsResult`, and the marker of the next page if truncated.
pub fn parse_parts<R: BufRead>(input: R) -> Result<(Vec<Part>, Option<u32>), ParseError> {
    let mut parts = Vec::new();
    let (mut n, mut e, mut s) = (0u32, String::new(), 0u64);
    let mut next = None;
    let mut truncated = false;
    walk(input, &["ListPartsResult"], |st, v| {
        let Some(v) = v else {
            if is(st, &["ListPartsResult", "Part"]) {
                parts.push((n, std::mem::take(&mut e), s));
            }
            return;
        };
        let t = String::from_utf8_lossy(&v).trim().to_string();
        if is(st, &["ListPartsResult", "Part", "PartNumber"]) {
            n = t.parse().unwrap_or(0);
        } else if is(st, &["ListPartsResult", "Part", "ETag"]) {
            e = t;
        } else if is(st, &["ListPartsResult", "Part", "Size"]) {
            s = t.parse().unwrap_or(0);
        } else if is(st, &["ListPartsResult", "IsTruncated"]) {
            truncated = t.eq_ignore_ascii_case("true");
        } else if is(st, &["ListPartsResult", "NextPartNumberMarker"]) {
            next = t.parse().ok();
        }
    })?;
    Ok((parts, if truncated { next } else { None }))
}

/// `ETag` and `LastModified` of a `CopyObjectResult` (the copy's new version), as given.
pub fn parse_copy_result<R: BufRead>(
    input: R,
) -> Result<(Option<String>, Option<String>), ParseError> {
    let (mut etag, mut time) = (None, None);
    walk(input, &["CopyObjectResult"], |st, v| {
        let Some(v) = v else { return };
        let t = String::from_utf8_lossy(&v).trim().to_string();
        if is(st, &["CopyObjectResult", "ETag"]) {
            etag = Some(t);
        } else if is(st, &["CopyObjectResult", "LastModified"]) {
            time = Some(t);
        }
    })?;
    Ok((etag, time))
}

/// Whether a `CompleteMultipartUpload` 200 answer is really an `<Error>` (S3 does that).
pub fn is_error_document(body: &[u8]) -> bool {
    walk(body, &["Error"], |_, _| {}).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pages_with_prefixes_and_tokens() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
<NextContinuationToken>tok==</NextContinuationToken>
<Contents><Key>p/a&amp;b.txt</Key><LastModified>2026-11-25T10:00:00.000Z</LastModified>
<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>0</Size></Contents>
<Contents><Key>p/c</Key><Size>12</Size></Contents>
<CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
        let p = parse_list(doc.as_bytes()).unwrap();
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].key, b"p/a&b.txt");
        assert_eq!(
            p.objects[0].etag.as_deref(),
            Some("\"d41d8cd98f00b204e9800998ecf8427e\"")
        );
        assert_eq!(p.objects[1].size, 12);
        assert_eq!(p.objects[1].etag, None);
        assert_eq!(p.prefixes, vec![b"p/d/".to_vec()]);
        assert!(p.truncated);
        assert_eq!(p.next_token.as_deref(), Some("tok=="));
    }

    #[test]
    fn url_encoded_keys_are_decoded_to_raw_bytes() {
        let doc = "<ListBucketResult><EncodingType>url</EncodingType>\
<Contents><Key>a%2F..%00%FF+b</Key><Size>1</Size></Contents></ListBucketResult>";
        let p = parse_list(doc.as_bytes()).unwrap();
        assert_eq!(p.objects[0].key, b"a/..\0\xff b");
    }

    #[test]
    fn broken_documents_fail() {
        assert!(parse_list(&b""[..]).is_err());
        assert!(parse_list(&b"<Error><Code>AccessDenied</Code></Error>"[..]).is_err());
        assert!(parse_list(&b"<ListBucketResult><Contents>"[..]).is_err());
        assert_eq!(
            parse_list(
                &b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"[..]
            ),
            Err(ParseError::NoToken)
        );
        assert!(
            parse_list(&b"<ListBucketResult><Key>&#xD800;</Key></ListBucketResult>"[..]).is_err()
        );
        assert!(is_error_document(
            b"<Error><Code>InternalError</Code></Error>"
        ));
        assert!(!is_error_document(b"<CompleteMultipartUploadResult/>"));
    }

    #[test]
    fn copy_results_name_the_new_etag_and_time() {
        let x = br#"<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>"#;
        let (etag, time) = parse_copy_result(&x[..]).unwrap();
        assert_eq!(
            etag.as_deref(),
            Some("\"9b2cf535f27731c974343645a3985328\"")
        );
        assert_eq!(time.as_deref(), Some("2026-01-02T03:04:05.000Z"));
        assert_eq!(
            parse_copy_result(&b"<CopyObjectResult/>"[..]).unwrap(),
            (None, None)
        );
        assert!(parse_copy_result(&b"<Error><Code>NoSuchKey</Code></Error>"[..]).is_err());
    }
}

//! The pieces of the compact binary records (index records, the sync base, the per-file
//! record in the inode): LEB128 unsigned integers, zigzag signed ones, byte strings, and
//! version tokens (ETags of lowercase hex packed two digits a byte).

pub fn put(v: &mut Vec<u8>, mut x: u64) {
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            v.push(b);
            return;
        }
        v.push(b | 0x80);
    }
}

pub fn get(c: &mut &[u8]) -> Option<u64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = c.split_first()?;
        *c = rest;
        x |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}

pub fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

pub fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

/// A length, then the bytes.
pub fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    put(v, b.len() as u64);
    v.extend_from_slice(b);
}

pub fn get_bytes<'a>(c: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(get(c)?).ok()?;
    if c.len() < n {
        return None;
    }
    let (a, rest) = c.split_at(n);
    *c = rest;
    Some(a)
}

fn get_byte(c: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = c.split_first()?;
    *c = rest;
    Some(b)
}

/// Version token forms.
const V_RAW: u8 = 0;
const V_SIZE_MTIME: u8 = 1;
const V_ETAG_HEX: u8 = 2;
const V_ETAG: u8 = 3;

/// Lowercase hex digits, in `-`-separated non-empty groups (S3, Apache, Nextcloud ETags).
fn hex_groups(s: &str) -> Option<Vec<&str>> {
    let g: Vec<&str> = s.split('-').collect();
    let ok = g.len() < 16
        && g.iter().all(|p| {
            !p.is_empty()
                && p.len() < 256
                && p.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        });
    ok.then_some(g)
}

/// A version token (`Version::token`): ETags of hex digits packed, size+mtime as numbers.
pub fn put_token(v: &mut Vec<u8>, token: &str) {
    if let Some(rest) = token.strip_prefix("s:") {
        if let Some((size, secs)) = rest.split_once(':') {
            if let (Ok(size), Ok(secs)) = (size.parse::<u64>(), secs.parse::<i64>()) {
                if format!("s:{size}:{secs}") == token {
                    v.push(V_SIZE_MTIME);
                    put(v, size);
                    put(v, zigzag(secs));
                    return;
                }
            }
        }
    }
    if let Some(etag) = token.strip_prefix("e:") {
        if let Some(groups) = hex_groups(etag) {
            v.push(V_ETAG_HEX);
            v.push(groups.len() as u8);
            for g in groups {
                v.push(g.len() as u8);
                let digits: Vec<u8> = g
                    .bytes()
                    .map(|c| if c <= b'9' { c - b'0' } else { c - b'a' + 10 })
                    .collect();
                v.extend(
                    digits
                        .chunks(2)
                        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0)),
                );
            }
            return;
        }
        v.push(V_ETAG);
        put_bytes(v, etag.as_bytes());
        return;
    }
    v.push(V_RAW);
    put_bytes(v, token.as_bytes());
}

pub fn get_token(c: &mut &[u8]) -> Option<String> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some(match get_byte(c)? {
        V_RAW => text(get_bytes(c)?)?,
        V_SIZE_MTIME => {
            let s = get(c)?;
            format!("s:{s}:{}", unzigzag(get(c)?))
        }
        V_ETAG => format!("e:{}", text(get_bytes(c)?)?),
        V_ETAG_HEX => {
            let groups = get_byte(c)?;
            let mut out = String::from("e:");
            for i in 0..groups {
                if i > 0 {
                    out.push('-');
                }
                let digits = get_byte(c)? as usize;
                let n = digits.div_ceil(2);
                if c.len() < n {
                    return None;
                }
                let (packed, rest) = c.split_at(n);
                *c = rest;
                for d in 0..digits {
                    let nib = if d % 2 == 0 {
                        packed[d / 2] >> 4
                    } else {
                        packed[d / 2] & 15
                    };
                    out.push(char::from_digit(u32::from(nib), 16)?);
                }
            }
            out
        }
        _ => return None,
    })
}

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
const V_ETAG_HEX_SEP: u8 = 4;

/// Lowercase hex digits, in non-empty groups separated by `-` or `.` (the ETags of S3,
/// Apache, Nextcloud, and the `ino-size-mtime.nsec` ones of local folders), each with
/// whether a `.` comes before it.
fn hex_groups(s: &str) -> Option<Vec<(bool, &str)>> {
    let mut out = Vec::new();
    let mut dot = false;
    for part in s.split_inclusive(['-', '.']) {
        let (g, next_dot) = match part.strip_suffix('.') {
            Some(g) => (g, true),
            None => (part.strip_suffix('-').unwrap_or(part), false),
        };
        out.push((dot, g));
        dot = next_dot;
    }
    if s.ends_with(['-', '.']) {
        return None; // an empty last group
    }
    let ok = out.len() < 16
        && out.iter().all(|(_, p)| {
            !p.is_empty()
                && p.len() < 128
                && p.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        });
    ok.then_some(out)
}

fn put_hex(v: &mut Vec<u8>, g: &str) {
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
            // Dashes only: each group's digit count in a byte. With dots: the byte's high
            // bit says a dot (not a dash) comes before the group.
            let dots = groups.iter().any(|(d, _)| *d);
            v.push(if dots { V_ETAG_HEX_SEP } else { V_ETAG_HEX });
            v.push(groups.len() as u8);
            for (dot, g) in groups {
                v.push(g.len() as u8 | if dot { 0x80 } else { 0 });
                put_hex(v, g);
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
        tag @ (V_ETAG_HEX | V_ETAG_HEX_SEP) => {
            let groups = get_byte(c)?;
            let mut out = String::from("e:");
            for i in 0..groups {
                let mut digits = get_byte(c)? as usize;
                let dot = tag == V_ETAG_HEX_SEP && digits & 0x80 != 0;
                if tag == V_ETAG_HEX_SEP {
                    digits &= 0x7f;
                }
                if i > 0 {
                    out.push(if dot { '.' } else { '-' });
                }
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

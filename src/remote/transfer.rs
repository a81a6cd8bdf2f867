//! Transfer sizes, defined once, and large reads split into pieces fetched in parallel over one
//! remote (one connection pool), each written at its own offset. Hydration fetches through
//! [`fetch`]; [`download`] reads one whole range the same way. Generic over [`Remote`].

use super::{ReadRange, Remote, Result};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// How much to move per request and how many requests at once: the one definition of the
/// transfer sizes. Part of `policy.json` (its keys sit at the top level there) and of
/// [`HttpConfig`](super::http::HttpConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transfer {
    /// Fetch granularity: ranges are aligned to it, and a read is split into pieces of a
    /// multiple of it (at least 4 KiB).
    pub chunk: u64,
    /// Requests in flight at once: range requests for one file, parts of one multipart upload.
    pub parallel: usize,
    /// First read-ahead window of a sequential reader (doubled with every fetch).
    pub readahead: u64,
    /// Largest read-ahead window (never below `readahead`).
    pub max_readahead: u64,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            chunk: 1 << 20,
            parallel: 4,
            readahead: 4 << 20,
            max_readahead: 512 << 20,
        }
    }
}

impl Transfer {
    /// The pieces `ranges` (sorted, disjoint `[start, end)`) are fetched in, one request each:
    /// chunk-sized, or for a large window one piece per connection (fewer requests, each
    /// streaming longer). Piece boundaries are multiples of the piece size.
    pub fn split(&self, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        let base = self.chunk.max(4096);
        let piece = (total / self.parallel.max(1) as u64).div_ceil(base).max(1) * base;
        let mut pieces = Vec::new();
        for &(a, b) in ranges {
            let mut o = a;
            while o < b {
                let n = (o / piece + 1) * piece;
                pieces.push((o, n.min(b)));
                o = n.min(b);
            }
        }
        pieces
    }

    /// The pieces `ranges` are fetched in when each should be about `piece` bytes (0: as
    /// [`Transfer::split`] does): each range cut into equal parts of at most `piece`
    /// (rounded up to whole chunks), so a window of a sequential reader costs
    /// `len / piece` requests, not one per chunk.
    pub fn split_into(&self, ranges: &[(u64, u64)], piece: u64) -> Vec<(u64, u64)> {
        if piece == 0 {
            return self.split(ranges);
        }
        let chunk = self.chunk.max(4096);
        let mut pieces = Vec::new();
        for &(a, b) in ranges {
            if a >= b {
                continue;
            }
            let n = (b - a).div_ceil(piece);
            let each = (b - a).div_ceil(n).div_ceil(chunk) * chunk;
            let mut o = a;
            while o < b {
                pieces.push((o, (o + each).min(b)));
                o = (o + each).min(b);
            }
        }
        pieces
    }
}

/// Fetches `pieces` (each inside `whole`) of `whole`, up to `parallel` requests at once, and
/// yields each piece with its result as it lands. `before(start, end)` runs before each
/// request (rate limits, counters).
pub fn fetch<'a, R, B, F>(
    remote: &'a R,
    whole: ReadRange<'a>,
    pieces: Vec<(u64, u64)>,
    parallel: usize,
    before: B,
) -> impl Stream<Item = (u64, u64, Result<()>)> + 'a
where
    R: Remote + ?Sized,
    B: Fn(u64, u64) -> F + 'a,
    F: Future<Output = ()> + 'a,
{
    stream::iter(pieces)
        .map(move |(a, b)| {
            let gate = before(a, b);
            async move {
                gate.await;
                (a, b, remote.read_range(whole.part(a, b - a)).await)
            }
        })
        .buffer_unordered(parallel.max(1))
}

/// Reads all of `req`, split and fetched in parallel as `t` says. Returns the number of
/// requests made; the first failure (after every request has ended) if any failed.
pub async fn download<R: Remote + ?Sized>(
    remote: &R,
    req: ReadRange<'_>,
    t: &Transfer,
) -> Result<u64> {
    let pieces = t.split(&[(req.offset, req.end())]);
    let n = pieces.len() as u64;
    let mut results = std::pin::pin!(fetch(remote, req, pieces, t.parallel, |_, _| async {}));
    let mut first = None;
    while let Some((_, _, r)) = results.next().await {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_chunks_or_one_per_connection() {
        let t = Transfer::default();
        let mib = 1 << 20;
        // A small window: chunk-sized pieces on chunk boundaries.
        assert_eq!(t.split(&[(0, 10)]), [(0, 10)]);
        assert_eq!(
            t.split(&[(mib / 2, 2 * mib + 5)]),
            [(mib / 2, mib), (mib, 2 * mib), (2 * mib, 2 * mib + 5)]
        );
        // A large window: one piece per connection, rounded up to whole chunks.
        assert_eq!(
            t.split(&[(0, 6 * mib)]),
            [(0, 2 * mib), (2 * mib, 4 * mib), (4 * mib, 6 * mib)]
        );
        assert_eq!(t.split(&[(0, 64 * mib)]).len(), 4);
        // Several missing ranges share one piece size.
        assert_eq!(
            t.split(&[(0, mib), (3 * mib, 8 * mib + 1)]),
            [
                (0, mib),
                (3 * mib, 4 * mib),
                (4 * mib, 6 * mib),
                (6 * mib, 8 * mib),
                (8 * mib, 8 * mib + 1)
            ]
        );
        assert!(t.split(&[]).is_empty());
    }

    #[test]
    fn windows_are_cut_into_equal_pieces_of_whole_chunks() {
        let t = Transfer::default();
        let mib = 1 << 20;
        assert_eq!(
            t.split_into(&[(mib, 6 * mib)], 4 * mib),
            [(mib, 4 * mib), (4 * mib, 6 * mib)]
        );
        assert_eq!(t.split_into(&[(0, 192 * mib)], 64 * mib).len(), 3);
        assert_eq!(t.split_into(&[(0, 10)], 4 * mib), [(0, 10)]);
        assert!(t.split_into(&[(5, 5)], mib).is_empty());
        assert_eq!(t.split_into(&[(0, 6 * mib)], 0), t.split(&[(0, 6 * mib)]));
    }

    #[test]
    fn policy_keys_keep_their_names() {
        let t: Transfer = serde_json::from_str(r#"{"chunk": 65536}"#).unwrap();
        assert_eq!(
            t,
            Transfer {
                chunk: 65536,
                ..Transfer::default()
            }
        );
    }
}

//! Large reads split into aligned chunks fetched in parallel over one remote (one connection
//! pool), each written at its own offset. Generic over [`Remote`].

use super::{Remote, Result};
use crate::model::{RelPath, Version};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use std::fs::File;

#[allow(clippy::too_many_arguments)]
/// Reads `[offset, offset+len)` of `path` into `dst` at the same offsets, `chunk` bytes per
/// request, up to `parallel` requests at once. Returns the number of requests made.
pub async fn download<R: Remote + ?Sized>(
    remote: &R,
    path: &RelPath,
    version: &Version,
    offset: u64,
    len: u64,
    dst: &File,
    chunk: u64,
    parallel: usize,
) -> Result<u64> {
    let chunk = chunk.max(4096);
    let end = offset + len;
    let mut ranges = Vec::new();
    let mut o = offset;
    while o < end {
        // Chunk boundaries are aligned to `chunk` so concurrent callers share them.
        let next = ((o / chunk) + 1) * chunk;
        let e = next.min(end);
        ranges.push((o, e - o));
        o = e;
    }
    let n = ranges.len() as u64;
    stream::iter(ranges)
        .map(|(o, l)| remote.read_range(path, version, o, l, dst, o))
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}

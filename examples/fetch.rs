//! Downloads one object through the `Remote` client (parallel aligned range requests, split as
//! hydration splits them) into a file and prints the throughput, to compare with curl.
//! Usage: fetch REMOTE_URL PATH OUT [CHUNK_MIB] [PARALLEL] (default: the transfer defaults)

use skyfill::model::RelPath;
use skyfill::remote::transfer::Transfer;
use skyfill::remote::{self, ReadRange};

#[path = "common/remote.rs"]
mod common;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 4,
        "usage: fetch REMOTE_URL PATH OUT [CHUNK_MIB] [PARALLEL]"
    );
    let d = Transfer::default();
    let sizes = Transfer {
        chunk: a
            .get(4)
            .map(|s| s.parse::<u64>())
            .transpose()?
            .map_or(d.chunk, |m| m << 20),
        parallel: a
            .get(5)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(d.parallel),
        ..d
    };
    let r = common::open(&a[1])?;
    let path = RelPath::parse(&a[2])?;
    let e = r.stat(&path).await?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&a[3])?;
    out.set_len(e.size)?;
    let t = std::time::Instant::now();
    let n = remote::transfer::download(
        &*r,
        ReadRange::new(&path, &e.version, 0, e.size, &out),
        &sizes,
    )
    .await?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{} bytes in {s:.3} s = {:.1} MB/s ({n} requests)",
        e.size,
        e.size as f64 / s / 1e6
    );
    Ok(())
}

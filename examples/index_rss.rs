//! Opens an index (a copy, with no daemon using it) and prints the process's resident memory
//! after the open, after walking every status record and base entry of a root as a full pass
//! does, and after giving freed memory back: where the worker's memory at rest goes.
//! Usage: index_rss INDEX_DIR ROOT_ID

use skyfill::index::{Index, SledIndex};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() == 3, "usage: index_rss INDEX_DIR ROOT_ID");
    println!("start: {:.1} MiB", rss_mib());
    let ix = SledIndex::open(std::path::Path::new(&a[1]))?;
    println!("opened: {:.1} MiB", rss_mib());
    let (mut records, mut base) = (0u64, 0u64);
    ix.record_paths(&a[2], &mut |_| records += 1)?;
    println!("{records} status records walked: {:.1} MiB", rss_mib());
    ix.base_paths(&a[2], &mut |_| base += 1)?;
    println!("{base} base entries walked: {:.1} MiB", rss_mib());
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    println!("after malloc_trim: {:.1} MiB", rss_mib());
    drop(ix);
    // SAFETY: as above.
    unsafe { libc::malloc_trim(0) };
    println!("index closed: {:.1} MiB", rss_mib());
    Ok(())
}

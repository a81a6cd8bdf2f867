//! Opens an index (a copy, with no daemon using it) and prints the process's resident memory
//! after the open, after walking every status record and base entry of a root as a full pass
//! does, and after giving freed memory back: where the worker's memory at rest goes.
//! With `--fill N` it first writes a new index of N online-only files (a status record and a
//! base entry each, in batches of 256 as add-root writes them, paths 1-8 folders deep) and
//! prints the time that took and the bytes on disk per file. With `INDEX_RSS_UPDATE=N` it
//! then rewrites N records and base entries one at a time, each written out, as a pass's
//! uploads do: what the index's writes cost in memory.
//! Usage: index_rss INDEX_DIR ROOT_ID [--fill N]

use skyfill::index::{BaseEntry, Index, Record, SledIndex};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => n += disk_bytes(&e.path()),
            Ok(m) => n += m.len(),
            Err(_) => {}
        }
    }
    n
}

/// The `i`th file's path: 1-8 folders deep, about 40 files a folder.
fn path_of(i: u64) -> String {
    let depth = 1 + (i / 40) % 8;
    let mut p = String::new();
    let mut x = i / 40;
    for d in 0..depth {
        p.push_str(&format!("folder-{:02}-{}/", x % 17, d));
        x /= 3;
    }
    p.push_str(&format!("document {i:07}.pdf"));
    p
}

fn fill(dir: &std::path::Path, root: &str, n: u64) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let ix = SledIndex::open(dir)?;
    let version = |i: u64| format!("e:{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15);
    let mut i = 0;
    while i < n {
        let end = (i + 256).min(n);
        let recs: Vec<(String, Record)> = (i..end)
            .map(|j| {
                let rec = Record {
                    availability: skyfill::model::Availability::OnlineOnly,
                    size: 1000 + j,
                    version: version(j),
                    local_bytes: 0,
                };
                (path_of(j), rec)
            })
            .collect();
        ix.put_new(root, &recs)?;
        let base: Vec<(String, BaseEntry)> = (i..end)
            .map(|j| {
                let b = BaseEntry {
                    kind: skyfill::model::Kind::File,
                    version: version(j),
                    size: 1000 + j,
                    file_id: None,
                };
                (path_of(j), b)
            })
            .collect();
        ix.base_put_many(root, &base)?;
        i = end;
    }
    ix.flush()?;
    println!("written: {:.1} MiB", rss_mib());
    drop(ix);
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    println!("closed after writing: {:.1} MiB", rss_mib());
    println!(
        "filled {n} files in {:.1} s; {:.0} bytes a file on disk",
        t.elapsed().as_secs_f64(),
        disk_bytes(dir) as f64 / n as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 3 || (a.len() == 5 && a[3] == "--fill"),
        "usage: index_rss INDEX_DIR ROOT_ID [--fill N]"
    );
    let dir = std::path::Path::new(&a[1]);
    if a.len() == 5 {
        fill(dir, &a[2], a[4].parse()?)?;
    }
    println!("start: {:.1} MiB", rss_mib());
    let ix = SledIndex::open(dir)?;
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
    if let Some(n) = std::env::var("INDEX_RSS_UPDATE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let ix = SledIndex::open(dir)?;
        ix.record_paths(&a[2], &mut |_| records += 1)?;
        ix.base_paths(&a[2], &mut |_| base += 1)?;
        println!("reopened and walked: {:.1} MiB", rss_mib());
        let t = std::time::Instant::now();
        let mut peak = 0f64;
        for j in 0..n {
            let i = 500_000 + j;
            let rec = Record {
                availability: skyfill::model::Availability::Local,
                size: 13,
                version: format!("e:{:032x}", u128::from(i) * 7),
                local_bytes: 13,
            };
            ix.put(&a[2], &path_of(i), &rec)?;
            let b = BaseEntry {
                kind: skyfill::model::Kind::File,
                version: format!("e:{:032x}", u128::from(i) * 7),
                size: 13,
                file_id: None,
            };
            ix.base_put(&a[2], &path_of(i), &b)?;
            ix.flush()?;
            if j % 1000 == 0 {
                peak = peak.max(rss_mib());
            }
        }
        println!(
            "{n} records and base entries rewritten one by one with a flush each in {:.1} s: {:.1} MiB (peak seen {peak:.1})",
            t.elapsed().as_secs_f64(),
            rss_mib()
        );
        ix.release()?;
        // SAFETY: as above.
        unsafe { libc::malloc_trim(0) };
        println!("released: {:.1} MiB", rss_mib());
    }
    if std::env::var_os("INDEX_RSS_CYCLES").is_some() {
        for round in 0..3 {
            let t = std::time::Instant::now();
            let ix = SledIndex::open(dir)?;
            let opened = t.elapsed().as_secs_f64();
            ix.record_paths(&a[2], &mut |_| records += 1)?;
            ix.base_paths(&a[2], &mut |_| base += 1)?;
            let walked = rss_mib();
            drop(ix);
            // SAFETY: as above.
            unsafe { libc::malloc_trim(0) };
            println!(
                "cycle {round}: opened in {opened:.2} s, walked {walked:.1} MiB, closed {:.1} MiB",
                rss_mib()
            );
        }
    }
    Ok(())
}

//! Lists a remote tree through the `Remote` client (what add-root and a poll read) and prints
//! the entries, the wall time and this process's CPU time, to compare with curl reading the
//! same listing. Usage: walk REMOTE_URL [DIR] [RUNS] (a secret from SKYFILL_SECRET).

use skyfill::model::RelPath;

#[path = "common/remote.rs"]
mod common;

/// User and system CPU seconds this process has used.
fn cpu() -> (f64, f64) {
    // SAFETY: an all-zero rusage is valid, and getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 2, "usage: walk REMOTE_URL [DIR] [RUNS]");
    let r = common::open(&a[1])?;
    let dir = RelPath::parse(a.get(2).map_or("", String::as_str))?;
    let runs: u32 = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    for _ in 0..runs {
        let (u0, s0) = cpu();
        let t = std::time::Instant::now();
        let mut n = 0u64;
        let st = r
            .walk(&dir, &mut |_| {
                n += 1;
                Ok(())
            })
            .await?;
        let (u1, s1) = cpu();
        println!(
            "{n} entries ({} rejected) in {:.3} s; CPU user {:.3} s, system {:.3} s",
            st.rejected,
            t.elapsed().as_secs_f64(),
            u1 - u0,
            s1 - s0
        );
    }
    Ok(())
}

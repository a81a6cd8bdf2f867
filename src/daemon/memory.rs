//! The worker's memory allocator: its options and giving memory back when the worker goes
//! idle.
//!
//! skyfilld allocates with jemalloc (`#[global_allocator]` in `src/bin/skyfilld.rs`, options
//! in [`MALLOC_CONF`]). glibc's allocator left a million-file worker holding about three
//! times its live heap after a pass (small long-lived blocks scattered through its main
//! arena, which `malloc_trim` cannot give back): 42 MiB at rest against 30-32 with jemalloc
//! (doc/BENCHMARKS.md, "Giving back what a pass read").

/// jemalloc's options, read at its first allocation (exported by `skyfilld` under the name
/// jemalloc looks for): two arenas (a worker has a few busy threads, each would otherwise
/// take its own), no per-thread caches (they keep freed blocks per thread), unused pages
/// returned after about a second, at once when purged ([`give_back`]).
pub const MALLOC_CONF: &[u8; 60] = b"narenas:2,tcache:false,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Returns the pages the allocator holds unused to the system now: jemalloc purges only as
/// it allocates, so an idle worker would otherwise keep a pass's peak.
pub fn give_back() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena; 4096 is MALLCTL_ARENAS_ALL.
    // SAFETY: a mallctl that reads and writes nothing (null pointers and zero lengths).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    // What C code allocated from glibc, and what the core holds when a test runs it under
    // the system allocator.
    // SAFETY: plain glibc call.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    /// The options are one NUL-terminated string, as jemalloc reads them.
    #[test]
    fn the_options_are_one_c_string() {
        let c = std::ffi::CStr::from_bytes_with_nul(super::MALLOC_CONF).unwrap();
        assert!(c.to_str().unwrap().split(',').all(|kv| kv.contains(':')));
    }
}

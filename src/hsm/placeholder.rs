//! Populating a sync root from a remote listing: directories and sparse placeholders with the
//! remote's name, size, mtime and mode, owned by the root's user. Each placeholder is built as
//! an anonymous `O_TMPFILE` inode (size, xattr record, mtime, fanotify mark) and only then
//! linked into its directory, so no process can open it before its mark exists.

use super::dirgate::DirGate;
use super::fanotify::Group;
use super::meta::{self, FileMeta, Fill, Pin};
use crate::fsutil;
use crate::index::{Index, Record};
use crate::model::{Availability, Kind, RelPath, RemoteEntry};
use crate::remote::{self, Remote, RemoteError};
use crate::sync::BaseEntry;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::UNIX_EPOCH;

/// Who owns the files of a root.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PopulateStats {
    pub files: u64,
    pub dirs: u64,
    pub skipped: u64,
}

pub struct Populator<'a> {
    root: BorrowedFd<'a>,
    root_id: String,
    owner: Owner,
    group: &'a Group,
    /// The last parent directory opened (listings come grouped by directory).
    cached: Option<(RelPath, OwnedFd)>,
    /// Settings new files take, per directory (folder pin inheritance).
    pins: std::collections::HashMap<RelPath, Pin>,
    /// The root started empty: skip the "is the name taken?" check (linkat still refuses
    /// a taken name).
    fresh: bool,
    /// Add-root's folder gate: each folder made is held until filled.
    gate: Option<&'a DirGate>,
    pub stats: PopulateStats,
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cname(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl<'a> Populator<'a> {
    pub fn new(root: BorrowedFd<'a>, root_id: &str, owner: Owner, group: &'a Group) -> Self {
        Populator {
            root,
            root_id: root_id.to_string(),
            owner,
            group,
            cached: None,
            pins: Default::default(),
            fresh: false,
            gate: None,
            stats: PopulateStats::default(),
        }
    }

    /// Each folder made is guarded by `gate` until it is filled.
    pub fn gated(mut self, gate: &'a DirGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// For a root that started empty (add-root): fewer checks per file.
    pub fn fresh(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// A directory fd for `dir`, creating it (and its parents) if needed.
    fn dir_fd(&mut self, dir: &RelPath) -> io::Result<BorrowedFd<'_>> {
        if self.cached.as_ref().map(|(p, _)| p != dir).unwrap_or(true) {
            let fd =
                match fsutil::open_beneath(self.root, dir, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        self.make_dir(dir, None)?;
                        fsutil::open_beneath(self.root, dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?
                    }
                    Err(e) => return Err(e),
                };
            self.cached = Some((dir.clone(), fd));
        }
        Ok(self.cached.as_ref().unwrap().1.as_fd())
    }

    fn make_dir(&mut self, dir: &RelPath, mode: Option<u32>) -> io::Result<()> {
        if dir.is_root() {
            return Ok(());
        }
        let parent = dir.parent().unwrap_or_default();
        let pfd =
            match fsutil::open_beneath(self.root, &parent, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.make_dir(&parent, None)?;
                    fsutil::open_beneath(self.root, &parent, libc::O_PATH | libc::O_DIRECTORY, 0)?
                }
                Err(e) => return Err(e),
            };
        // Made as the owner (never chowned by name): the folder is theirs from the start.
        // The owner keeps rwx on folders made for them, or they could not add to them.
        let mode = (mode.unwrap_or(0o755) | 0o700) & 0o777;
        let creds = crate::asuser::UserCreds::of(self.owner.uid, self.owner.gid);
        let made =
            crate::asuser::with_creds(&creds, || fsutil::mkdir_at(pfd.as_fd(), dir.name(), mode))
                .and_then(|r| r);
        match made {
            Ok(()) => {
                self.stats.dirs += 1;
                // Whoever makes a folder guards it (a folder found made is someone else's).
                // Between the mkdir and the mark a listing is not held.
                if let Some(gate) = self.gate {
                    guard(gate, self.root, dir);
                }
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates one entry; an existing local name is left alone (counted as skipped).
    pub fn add(&mut self, e: &RemoteEntry) -> io::Result<()> {
        match e.kind {
            Kind::Dir => self.make_dir(&e.path, e.mode),
            Kind::File => self.add_file(e),
        }
    }

    /// The setting a new file in `dir` takes.
    fn inherited(&mut self, dir: &RelPath) -> io::Result<Pin> {
        if let Some(p) = self.pins.get(dir) {
            return Ok(*p);
        }
        let p = super::pins::inherited(self.root, dir)?;
        self.pins.insert(dir.clone(), p);
        Ok(p)
    }

    /// Replaces the file at `e.path` by a placeholder of `e` (a new remote version of a clean
    /// file), with the given setting and mode. The new inode is complete (record, mark) before
    /// it takes the name, in one rename: readers see the old file or the new one, never a
    /// half-made one, and processes that have the old one open keep it.
    pub fn replace(&mut self, e: &RemoteEntry, pin: Pin, mode: u32) -> io::Result<()> {
        let parent = e.path.parent().unwrap_or_default();
        let file = self.build(e, pin, mode)?;
        let dir = self.dir_fd(&parent)?;
        let tmp = format!(".~skyfill-{:016x}.tmp", rand::random::<u64>());
        let (ctmp, empty) = (cname(&tmp)?, cname("")?);
        // SAFETY: links our anonymous inode under a fresh temporary name.
        cvt(unsafe {
            libc::linkat(
                file.as_raw_fd(),
                empty.as_ptr(),
                dir.as_raw_fd(),
                ctmp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })?;
        if let Err(err) = fsutil::rename_at(dir, &tmp, dir, e.path.name(), false) {
            let _ = fsutil::unlink_at(dir, &tmp, false);
            return Err(err);
        }
        Ok(())
    }

    /// An anonymous, marked placeholder inode for `e` in its directory.
    fn build(&mut self, e: &RemoteEntry, pin: Pin, mode: u32) -> io::Result<std::fs::File> {
        let parent = e.path.parent().unwrap_or_default();
        let owner = self.owner;
        let (secs, nanos) = match e.mtime.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(_) => (0, 0),
        };
        let record = FileMeta {
            v: 1,
            root: self.root_id.clone(),
            path: e.path.as_str().to_string(),
            version: e.version.token(),
            size: e.size,
            mtime: (secs, nanos),
            fill: if e.size == 0 {
                Fill::Complete
            } else {
                Fill::Placeholder
            },
            ranges: Default::default(),
            pin,
            at: meta::Place::Here,
        };
        let group = self.group;
        let dir = self.dir_fd(&parent)?;
        let dot = cname(".")?;
        // SAFETY: valid directory fd and path.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                dot.as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor from the kernel.
        let f = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let file = std::fs::File::from(f);
        file.set_len(e.size)?;
        // SAFETY: plain syscalls on our own fd.
        cvt(unsafe { libc::fchown(file.as_raw_fd(), owner.uid, owner.gid) })?;
        // Never setuid/setgid: a server's mode bits do not make a privileged program.
        // SAFETY: a plain syscall on our own open fd.
        cvt(unsafe { libc::fchmod(file.as_raw_fd(), mode & 0o1777) })?;
        meta::write_fd(file.as_fd(), &record)?;
        fsutil::set_mtime(file.as_fd(), e.mtime)?;
        if record.fill != Fill::Complete {
            group.mark_inode(file.as_fd())?;
        }
        Ok(file)
    }

    fn add_file(&mut self, e: &RemoteEntry) -> io::Result<()> {
        let parent = e.path.parent().unwrap_or_default();
        let name = cname(e.path.name())?;
        let pin = self.inherited(&parent)?;
        let mode = e.mode.map(|m| m & 0o7777).unwrap_or(0o644);
        // Cheap check first: re-populating an existing root finds most names taken.
        if !self.fresh && fsutil::stat_at(self.dir_fd(&parent)?, e.path.name()).is_ok() {
            self.stats.skipped += 1;
            return Ok(());
        }
        // An anonymous inode in the target directory: invisible until linked.
        let file = self.build(e, pin, mode)?;
        let dir = self.dir_fd(&parent)?;
        let empty = cname("")?;
        // SAFETY: links our anonymous inode under `name`; fails with EEXIST if taken.
        let r = unsafe {
            libc::linkat(
                file.as_raw_fd(),
                empty.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                self.stats.skipped += 1;
                return Ok(());
            }
            return Err(err);
        }
        self.stats.files += 1;
        Ok(())
    }
}
/// Holds listings of folder `dir` (below `root`) until `gate` has it filled; false (logged)
/// when it cannot, and listings of it then show what is made so far.
fn guard(gate: &DirGate, root: BorrowedFd<'_>, dir: &RelPath) -> bool {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    match fsutil::open_beneath(root, dir, flags, 0).and_then(|fd| gate.guard(fd.as_fd(), dir)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(folder = %dir, error = %e, "cannot hold listings of a folder until it is filled");
            false
        }
    }
}

/// Index records written per transaction while a root is populated.
const INDEX_BATCH: usize = 256;

/// The index record of a placeholder just made for `e`.
fn new_record(e: &RemoteEntry) -> (String, Record) {
    let availability = if e.size == 0 {
        Availability::Local
    } else {
        Availability::OnlineOnly
    };
    (
        e.path.as_str().to_string(),
        Record {
            availability,
            size: e.size,
            version: e.version.token(),
            local_bytes: 0,
        },
    )
}

/// Makes `entries` with `pop`, recording each new file in the index and each entry made in
/// the sync base (in batches): both sides hold what the listing said, so the first pass
/// after add-root finds nothing to do.
fn make_entries<E: std::borrow::Borrow<RemoteEntry>>(
    pop: &mut Populator<'_>,
    index: &dyn Index,
    id: &str,
    entries: impl IntoIterator<Item = E>,
) -> remote::Result<()> {
    let mut batch: Vec<(String, Record)> = Vec::with_capacity(INDEX_BATCH);
    let mut base: Vec<(String, BaseEntry)> = Vec::with_capacity(INDEX_BATCH);
    let flush = |batch: &mut Vec<(String, Record)>, base: &mut Vec<(String, BaseEntry)>| {
        // The status records first: a base entry names a file whose record exists.
        let _ = index.put_new(id, batch);
        let _ = index.base_put_many(id, base);
        batch.clear();
        base.clear();
    };
    for e in entries {
        let e = e.borrow();
        let before = pop.stats.files;
        pop.add(e).map_err(|err| RemoteError::io(&e.path, err))?;
        // Only the one that linked the name records it (a name found taken was made by the
        // other side of add-root: the background listing or a folder filled on demand).
        // A folder is the same whoever made it: recorded either way.
        match e.kind {
            Kind::File if pop.stats.files > before => {
                batch.push(new_record(e));
                base.push((e.path.as_str().to_string(), BaseEntry::of(e)));
            }
            Kind::Dir => base.push((e.path.as_str().to_string(), BaseEntry::of(e))),
            Kind::File => {}
        }
        if batch.len() >= INDEX_BATCH || base.len() >= INDEX_BATCH {
            flush(&mut batch, &mut base);
        }
    }
    flush(&mut batch, &mut base);
    Ok(())
}

fn add_stats(total: &mut PopulateStats, st: &PopulateStats) {
    total.files += st.files;
    total.dirs += st.dirs;
    total.skipped += st.skipped;
}

/// How much more CPU the thread filling a folder on demand gets than the creators it competes
/// with (a nice value below theirs): a program is waiting on that folder, nobody on the rest.
const ON_DEMAND_NICE: i32 = -10;

/// Raises the calling thread's scheduling priority to [`ON_DEMAND_NICE`]. Needs root (the
/// daemon is); elsewhere (unit tests) the thread keeps its priority.
fn favour_this_thread() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, ON_DEMAND_NICE)
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "folders filled on demand keep the default priority");
    }
}

/// Creates placeholders for everything the remote lists below `below`, in a root that
/// started empty, and records each new file in the index. Returns what was made and how
/// many entries the listing rejected (hostile names).
///
/// Listing and creating overlap: the walk runs on the caller's runtime while creator threads
/// make the placeholders as entries arrive (bounded queues), so adding a large root takes
/// about as long as the slowest part rather than the sum. Entries are spread over the
/// creators by folder (a file goes where its folder is made), so each folder is filled by
/// one thread. More than `max_entries` entries stop the walk.
///
/// Folders are filled on demand meanwhile (`hsm::dirgate`): `below` and every folder made
/// are held against listings until filled; a program listing one the walk has not filled
/// yet waits while a thread lists that folder alone and makes its entries first.
#[allow(clippy::too_many_arguments)]
pub fn populate(
    root: BorrowedFd<'_>,
    id: &str,
    owner: Owner,
    group: &Group,
    index: &dyn Index,
    rem: &dyn Remote,
    below: &RelPath,
    max_entries: u64,
) -> Result<(PopulateStats, u64), RemoteError> {
    use std::hash::{Hash, Hasher};
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let rt = tokio::runtime::Handle::current();
    // Without the gate (no fanotify content class?) folders fill in listing order only.
    let gate = match DirGate::new() {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(error = %e, "folders cannot be filled on demand during add-root");
            None
        }
    };
    let gate = gate.as_ref();
    let held = gate.is_some_and(|g| guard(g, root, below));
    tracing::info!(folder = %below, on_demand = held, "populating (on_demand: a folder listed meanwhile is filled first)");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (created, walked, on_demand) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            // Folders listed while the root fills: each is listed alone and made first.
            let server = gate.and_then(|g| {
                let (rt, done) = (rt.clone(), &done);
                let filler = std::thread::Builder::new().name("fill-on-demand".into());
                filler
                    .spawn_scoped(s, move || {
                        favour_this_thread();
                        let mut made = PopulateStats::default();
                        let mut fill = |dir: &RelPath| -> remote::Result<()> {
                            let entries = rt.block_on(rem.list_dir(dir))?;
                            let mut pop = Populator::new(root.as_fd(), id, owner, group).gated(g);
                            let r = make_entries(&mut pop, index, id, &entries);
                            add_stats(&mut made, &pop.stats);
                            r
                        };
                        g.serve(done, &mut fill);
                        made
                    })
                    .map_err(|e| tracing::warn!(error = %e, "no thread to fill folders on demand"))
                    .ok()
            });
            let mut senders = Vec::new();
            let mut creators = Vec::new();
            for _ in 0..threads {
                let (tx, rx) = std::sync::mpsc::sync_channel::<RemoteEntry>(2048);
                senders.push(tx);
                let creator = std::thread::Builder::new().name("populate".into());
                creators.push(creator.spawn_scoped(s, move || -> remote::Result<_> {
                    let mut pop = Populator::new(root.as_fd(), id, owner, group).fresh();
                    if let Some(g) = gate {
                        pop = pop.gated(g);
                    }
                    make_entries(&mut pop, index, id, rx).map(|()| pop.stats)
                }));
            }
            let mut seen = 0u64;
            let mut sink = |e: RemoteEntry| -> remote::Result<()> {
                seen += 1;
                if seen > max_entries {
                    return Err(RemoteError::TooMany {
                        path: RelPath::root(),
                        limit: max_entries,
                        what: "entries in the sync root",
                    });
                }
                let folder = match e.kind {
                    Kind::Dir => e.path.clone(),
                    Kind::File => e.path.parent().unwrap_or_default(),
                };
                let mut h = std::collections::hash_map::DefaultHasher::new();
                folder.as_str().hash(&mut h);
                senders[(h.finish() % senders.len() as u64) as usize]
                    .send(e)
                    .map_err(|_| RemoteError::Config("placeholder creation stopped".into()))
            };
            let walked = rt.block_on(rem.walk(below, &mut sink));
            drop(senders);
            let mut total = PopulateStats::default();
            let mut first_err = None;
            for c in creators {
                let Ok(c) = c else {
                    first_err.get_or_insert(RemoteError::Config(
                        "cannot start a placeholder thread".into(),
                    ));
                    continue;
                };
                match c.join() {
                    Ok(Ok(st)) => add_stats(&mut total, &st),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(RemoteError::Config(
                            "placeholder thread panicked".into(),
                        ));
                    }
                }
            }
            // Every folder is made: reads still held are answered, then the gate closes.
            done.store(true, std::sync::atomic::Ordering::Release);
            let on_demand = server.and_then(|t| t.join().ok()).unwrap_or_default();
            (first_err.map_or(Ok(total), Err), walked, on_demand)
        })
    });
    // A creator's error explains a walk stopped by it; report that one first.
    let mut stats = created?;
    if on_demand.files + on_demand.dirs > 0 {
        tracing::info!(
            files = on_demand.files,
            dirs = on_demand.dirs,
            "made on demand for folders listed during add-root"
        );
    }
    // (Names either side found made by the other count as skipped.)
    add_stats(&mut stats, &on_demand);
    Ok((stats, walked?.rejected))
}

//! The kernel-side gate: a BPF LSM program on `file_open` (`bpf/gate.bpf.c`, compiled by
//! `build.rs`) that refuses, with `EAGAIN`, to open a placeholder no pre-content watcher
//! covers: with the daemon stopped or killed (its group closed, its marks gone) a program
//! gets an errno instead of zeros. The program and the map of placeholders (inode number and
//! generation) are pinned in bpffs, so they outlive the daemon; each worker start loads the
//! program again and puts it in place of the old one (no moment without a gate). The marks
//! of [`super::fanotify::Group`] keep the map: a key is added after a placeholder's mark and
//! removed before a complete file's mark goes. Where the kernel lacks the BPF LSM the daemon
//! works as without it, and `skyfill doctor` says so. The pin folder is opened once and
//! checked (bpffs, root's, writable by root alone); pins, renames and unlinks go through its
//! descriptor, never its path again.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the gate is pinned (bpffs; pin names may not contain dots). `SKYFILL_GATE_DIR`
/// overrides it (tests pin each daemon's gate apart); `off` disables the gate.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/skyfill_v1";
/// The map's name in the object and its pin's name.
const MAP: &str = "skyfill_placeholders";
/// The program's name in the object.
const PROGRAM: &str = "skyfill_gate";

/// The compiled program (empty when the build found no clang: the gate is then unsupported).
#[cfg(skyfill_gate)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gate.bpf.o"));

/// The map's key, as `struct key` in `bpf/gate.bpf.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub ino: u64,
    pub gen: u32,
    pub pad: u32,
}

// SAFETY: a `repr(C)` struct of integers with no padding (8 + 4 + 4 bytes).
unsafe impl aya::Pod for Key {}

/// The inode generation a file handle carries, for the handle types of the filesystems that
/// deliver pre-content events: ext4 and xfs (`FILEID_INO32_GEN`: inode, generation), xfs
/// with 64-bit inode numbers (inode as 8 bytes, generation), btrfs (object id, root id,
/// generation). `None` for any other.
pub fn generation(htype: i32, handle: &[u8]) -> Option<u32> {
    let at = match htype {
        0x01 => 4,
        0x81 => 8,
        0x4d..=0x4f => 16,
        _ => return None,
    };
    let b = handle.get(at..at + 4)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

/// What `skyfill doctor` reports.
#[derive(Debug, Clone)]
pub enum Status {
    /// Loaded and pinned at this directory.
    Active(PathBuf),
    /// Not loaded: why (disabled, unsupported kernel, built without clang, an error).
    Inactive(String),
}

struct Gate {
    map: Mutex<aya::maps::HashMap<aya::maps::MapData, Key, u8>>,
    dir: PathBuf,
}

static GATE: OnceLock<Gate> = OnceLock::new();
static STATUS: Mutex<Option<String>> = Mutex::new(None);

/// The gate's state in this process.
pub fn status() -> Status {
    match GATE.get() {
        Some(g) => Status::Active(g.dir.clone()),
        None => Status::Inactive(
            STATUS
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "not loaded".into()),
        ),
    }
}

/// Loads the gate (once per process) where `SKYFILL_GATE_DIR` or [`DEFAULT_DIR`] says; on
/// failure the daemon goes on without it (logged, and kept for `doctor`).
pub fn install_from_env() {
    let dir = std::env::var("SKYFILL_GATE_DIR").unwrap_or_else(|_| DEFAULT_DIR.into());
    let r = if dir == "off" {
        Err("disabled (SKYFILL_GATE_DIR=off)".to_string())
    } else {
        install(Path::new(&dir)).map_err(|e| e.to_string())
    };
    match r {
        Ok(()) => tracing::info!(
            dir,
            "kernel gate active: placeholders refuse opens while no daemon serves"
        ),
        Err(e) => {
            if dir != "off" {
                discard_attempt(Path::new(&dir));
            }
            tracing::warn!(error = %e, "kernel gate not active; with the daemon stopped, placeholders read zeros (doc/SEMANTICS.md)");
            *STATUS.lock().unwrap() = Some(e);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("this build has no gate program (clang was missing when it was built)")]
    NotBuilt,
    #[error("the kernel's active LSMs do not include bpf ({0})")]
    NoBpfLsm(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {msg}")]
    Bpf { what: &'static str, msg: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GateError {
    let what = what.into();
    move |source| GateError::Io { what, source }
}

fn bpf_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> GateError {
    move |e| GateError::Bpf {
        what,
        msg: e.to_string(),
    }
}

/// The LSMs the kernel runs (securityfs, mounted here if it is not).
fn active_lsms() -> Result<String, GateError> {
    let f = Path::new("/sys/kernel/security/lsm");
    if !f.exists() {
        mount_fs("securityfs", "/sys/kernel/security")?;
    }
    std::fs::read_to_string(f).map_err(io_err(f.display().to_string()))
}

fn mount_fs(fstype: &str, at: &str) -> Result<(), GateError> {
    nix::mount::mount(
        Some(fstype),
        at,
        Some(fstype),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| GateError::Io {
        what: format!("mounting {fstype} at {at}"),
        source: e.into(),
    })
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `openat(dir, name, O_DIRECTORY|O_NOFOLLOW)`, read-only.
fn open_dir_at(dir: Option<BorrowedFd<'_>>, name: &CStr) -> std::io::Result<OwnedFd> {
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `name` is NUL-terminated; `at` is open for the call (or AT_FDCWD).
    let fd = cvt(unsafe {
        libc::openat(
            at,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a descriptor the kernel has just opened for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the directory behind `fd` is on bpffs.
fn on_bpffs(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(fd).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// The gate's pin directory, opened once and verified (on bpffs, a directory owned by root
/// that nobody else may write): every pin, rename and unlink goes through its descriptor
/// (pins by `/proc/self/fd/N/NAME`, the rest with `*at` calls), never its path again.
struct PinDir {
    parent: OwnedFd,
    name: std::ffi::CString,
    fd: OwnedFd,
}

impl PinDir {
    /// Opens `dir` (made when `create`; bpffs mounted on its parent first if it is not
    /// there). `None`: without `create`, no such directory on bpffs.
    fn open(dir: &Path, create: bool) -> Result<Option<PinDir>, GateError> {
        use std::os::unix::ffi::OsStrExt;
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(GateError::Io {
                what: format!("{}: not a folder below bpffs", dir.display()),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        };
        let cpath = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
        let (pc, name) = match (cpath(parent), std::ffi::CString::new(name.as_bytes())) {
            (Ok(p), Ok(n)) => (p, n),
            _ => {
                return Err(GateError::Io {
                    what: format!("{}: a NUL in the path", dir.display()),
                    source: std::io::ErrorKind::InvalidInput.into(),
                })
            }
        };
        let what = |w: &str| io_err(format!("{w} {}", dir.display()));
        let mut pfd = open_dir_at(None, &pc).map_err(what("opening the parent of"))?;
        if !on_bpffs(pfd.as_fd()) {
            if !create {
                return Ok(None);
            }
            mount_fs("bpf", &parent.to_string_lossy())?;
            pfd = open_dir_at(None, &pc).map_err(what("opening the parent of"))?;
            if !on_bpffs(pfd.as_fd()) {
                return Err(GateError::Io {
                    what: format!("{} is not on bpffs", parent.display()),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            }
        }
        if create {
            // SAFETY: `name` is NUL-terminated; `pfd` is open for the call.
            let r = cvt(unsafe { libc::mkdirat(pfd.as_raw_fd(), name.as_ptr(), 0o700) });
            match r {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(what("making")(e)),
                _ => {}
            }
        }
        let fd = match open_dir_at(Some(pfd.as_fd()), &name) {
            Err(e) if !create && e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            r => r.map_err(what("opening"))?,
        };
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| what("checking")(e.into()))?;
        if !on_bpffs(fd.as_fd()) || st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return Err(GateError::Io {
                what: format!(
                    "{}: not a root-only folder on bpffs (owner {}, mode {:o})",
                    dir.display(),
                    st.st_uid,
                    st.st_mode & 0o7777
                ),
                source: std::io::ErrorKind::PermissionDenied.into(),
            });
        }
        Ok(Some(PinDir {
            parent: pfd,
            name,
            fd,
        }))
    }

    /// A path naming `entry` of this directory through its descriptor (for the bpf(2) pin
    /// calls, which take paths).
    #[cfg_attr(not(skyfill_gate), allow(dead_code))]
    fn path(&self, entry: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{entry}", self.fd.as_raw_fd()))
    }

    fn has(&self, entry: &CStr) -> bool {
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            entry,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Unlinks `entry`; one that is not there is no error.
    fn unlink(&self, entry: &CStr) -> std::io::Result<()> {
        // SAFETY: `entry` is NUL-terminated; our descriptor is open for the call.
        match cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), entry.as_ptr(), 0) }) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Unpins everything in it, then the directory itself.
    fn remove(self) -> std::io::Result<()> {
        for n in [c"gate", c"gate_new", c"placeholders"] {
            self.unlink(n)?;
        }
        // SAFETY: as in `unlink`, on the parent's descriptor.
        cvt(unsafe {
            libc::unlinkat(
                self.parent.as_raw_fd(),
                self.name.as_ptr(),
                libc::AT_REMOVEDIR,
            )
        })
        .map(|_| ())
    }
}

/// Loads, attaches and pins the gate at `dir` (on bpffs), reusing the pinned map of an
/// earlier start so the placeholders it names stay covered.
pub fn install(dir: &Path) -> Result<(), GateError> {
    #[cfg(not(skyfill_gate))]
    {
        let _ = dir;
        Err(GateError::NotBuilt)
    }
    #[cfg(skyfill_gate)]
    {
        if GATE.get().is_some() {
            return Ok(());
        }
        let lsms = active_lsms()?;
        if !lsms.split(',').any(|l| l.trim() == "bpf") {
            return Err(GateError::NoBpfLsm(lsms.trim().to_string()));
        }
        let pins = PinDir::open(dir, true)?.ok_or_else(|| GateError::Io {
            what: dir.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let mut bpf = aya::EbpfLoader::new()
            .map_pin_path(MAP, pins.path("placeholders"))
            .load(OBJECT)
            .map_err(bpf_err("loading the gate program"))?;
        let btf = aya::Btf::from_sys_fs().map_err(bpf_err("reading the kernel's BTF"))?;
        let prog: &mut aya::programs::Lsm = bpf
            .program_mut(PROGRAM)
            .ok_or(GateError::Bpf {
                what: "the gate object",
                msg: format!("no program {PROGRAM}"),
            })?
            .try_into()
            .map_err(bpf_err("the gate program's type"))?;
        prog.load("file_open", &btf)
            .map_err(bpf_err("verifying the gate program"))?;
        let id = prog.attach().map_err(bpf_err("attaching the gate"))?;
        let link: aya::programs::links::FdLink = prog
            .take_link(id)
            .map_err(bpf_err("taking the gate's link"))?
            .into();
        // Pinned under a new name, then renamed over the old pin: the old program runs until
        // the new one does (both refusing is harmless), then goes with its last reference.
        pins.unlink(c"gate_new")
            .map_err(io_err("removing an old gate_new"))?;
        link.pin(pins.path("gate_new"))
            .map_err(bpf_err("pinning the gate"))?;
        let d = pins.fd.as_raw_fd();
        // SAFETY: both names are NUL-terminated; the descriptor is open for the call.
        cvt(unsafe { libc::renameat(d, c"gate_new".as_ptr(), d, c"gate".as_ptr()) })
            .map_err(io_err("putting the gate in place"))?;
        let map = bpf.take_map(MAP).ok_or(GateError::Bpf {
            what: "the gate object",
            msg: format!("no map {MAP}"),
        })?;
        let map = aya::maps::HashMap::try_from(map).map_err(bpf_err("the gate's map"))?;
        let _ = GATE.set(Gate {
            map: Mutex::new(map),
            dir: dir.to_path_buf(),
        });
        Ok(())
    }
}

/// Removes the gate pinned at `dir`: its program stops with the last reference (the package's
/// removal and the tests call this; the daemon never does, the gate is for when it is gone).
pub fn remove(dir: &Path) -> std::io::Result<()> {
    match PinDir::open(dir, false) {
        Ok(Some(pins)) => pins.remove(),
        Ok(None) => Ok(()),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// After a failed [`install`]: what the attempt pinned goes (a map is pinned before the
/// program is refused), unless an earlier start's gate runs from there.
fn discard_attempt(dir: &Path) {
    if let Ok(Some(pins)) = PinDir::open(dir, false) {
        if !pins.has(c"gate") {
            let _ = pins.remove();
        }
    }
}

/// The key of `name` in `dir` (or of `dir` itself with `AT_EMPTY_PATH`), read without
/// opening the file.
fn key_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> std::io::Result<Option<Key>> {
    let (htype, handle) = super::fanotify::handle_at(dir, name, flags)?;
    let Some(gen) = generation(htype, &handle) else {
        return Ok(None);
    };
    let st = nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::from_bits_truncate(flags) | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)?;
    Ok(Some(Key {
        ino: st.st_ino,
        gen,
        pad: 0,
    }))
}

/// The file (as [`key_at`] names it) is a placeholder the daemon marked: the gate refuses
/// to open it while no mark covers it. Failures are logged: the file is then covered only
/// while the daemon runs, as without a gate.
pub fn cover(dir: BorrowedFd<'_>, name: &CStr, flags: i32) {
    let Some(g) = GATE.get() else { return };
    match key_at(dir, name, flags) {
        Ok(Some(k)) => {
            if let Err(e) = g.map.lock().unwrap().insert(k, 1, 0) {
                tracing::warn!(name = ?name, error = %e, "kernel gate: cannot add a placeholder");
            }
        }
        Ok(None) => {
            tracing::debug!(name = ?name, "kernel gate: no inode generation in this filesystem's handles")
        }
        Err(e) => {
            tracing::warn!(name = ?name, error = %e, "kernel gate: cannot name a placeholder")
        }
    }
}

/// The file behind `fd` is complete (or no longer ours): the gate lets it open.
pub fn uncover(fd: BorrowedFd<'_>) {
    let Some(g) = GATE.get() else { return };
    if let Ok(Some(k)) = key_at(fd, c"", libc::AT_EMPTY_PATH) {
        // A key that is not there (never added, or removed before) is no error.
        let _ = g.map.lock().unwrap().remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_come_from_each_filesystems_handle() {
        let h = [1u8, 0, 0, 0, 7, 0, 0, 0];
        assert_eq!(generation(1, &h), Some(u32::from_ne_bytes([7, 0, 0, 0])));
        let h = [0u8; 12];
        assert_eq!(generation(0x81, &h), Some(0));
        let mut h = [0u8; 20];
        h[16] = 9;
        assert_eq!(generation(0x4d, &h), Some(u32::from_ne_bytes([9, 0, 0, 0])));
        assert_eq!(generation(0x4d, &h[..18]), None, "a short handle");
        assert_eq!(generation(0xff, &h), None, "an unknown filesystem");
    }

    #[test]
    fn the_key_is_the_programs_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
    }
}

//! The daemon's one rule for work done on behalf of a user: it runs with that user's
//! credentials. [`with_creds`] switches the calling thread's filesystem uid, gid and
//! supplementary groups (`setfsuid`, `setfsgid`, the raw per-thread `setgroups` syscall), runs
//! the work, and switches back; [`run_as`] does the same on a blocking thread. The kernel then
//! refuses whatever the user could not do themselves (a symlink swapped to a root-only folder,
//! a folder of another user), whatever check we forgot. Root's own work never goes through
//! here. See `doc/SECURITY.md`.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// (uid, gid) -> (when looked up, credentials).
type CredCache = HashMap<(u32, u32), (Instant, Arc<UserCreds>)>;

/// Whose credentials a piece of work runs with.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// False for "the credentials this process already has" (the CLI, root's own work):
    /// nothing is switched.
    switch: bool,
}

impl std::fmt::Debug for UserCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uid {} gid {} groups {:?}",
            self.uid, self.gid, self.groups
        )
    }
}

impl UserCreds {
    /// The process's own credentials: [`with_creds`] changes nothing.
    pub fn current() -> Arc<UserCreds> {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Arc::new(UserCreds {
            uid,
            gid,
            groups: vec![],
            switch: false,
        })
    }

    /// The credentials of local user `uid` with primary group `gid` and the supplementary
    /// groups the user database gives them (cached for a minute). A uid without a passwd
    /// entry gets only `gid`. For uid 0 nothing is switched.
    pub fn of(uid: u32, gid: u32) -> Arc<UserCreds> {
        if uid == 0 {
            return Self::current_root(gid);
        }
        // SAFETY: plain getter.
        if uid == unsafe { libc::geteuid() } {
            // An unprivileged process acting for itself (tests, the CLI): nothing to switch.
            return Self::current();
        }
        static CACHE: OnceLock<Mutex<CredCache>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some((t, c)) = cache.lock().unwrap().get(&(uid, gid)) {
            if t.elapsed() < Duration::from_secs(60) {
                return c.clone();
            }
        }
        let groups = group_list(uid, gid);
        let c = Arc::new(UserCreds {
            uid,
            gid,
            groups,
            switch: true,
        });
        let mut m = cache.lock().unwrap();
        if m.len() > 4096 {
            m.clear();
        }
        m.insert((uid, gid), (Instant::now(), c.clone()));
        c
    }

    fn current_root(gid: u32) -> Arc<UserCreds> {
        Arc::new(UserCreds {
            uid: 0,
            gid,
            groups: vec![],
            switch: false,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Supplementary groups of `uid` from the user database (`getgrouplist`), always with `gid`.
fn group_list(uid: u32, gid: u32) -> Vec<u32> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `passwd` is plain data (integers and pointers); all zeroes is a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid for the call; `out` is null or points into `pw`.
    let r = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pw,
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        return vec![gid];
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_owned();
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let want = n;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most that many.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            if !groups.contains(&gid) {
                groups.push(gid);
            }
            return groups;
        }
        if n <= want {
            n = want * 2;
        }
        if n > 65536 {
            return vec![gid];
        }
    }
}

fn raw_setgroups(groups: &[u32]) -> io::Result<()> {
    // The raw syscall changes only this thread; glibc's setgroups() would change them all.
    // SAFETY: the pointer and length describe `groups`.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn raw_getgroups() -> io::Result<Vec<u32>> {
    let mut v = vec![0u32; 65536];
    // SAFETY: `v` has room for the kernel's maximum.
    let r = unsafe { libc::syscall(libc::SYS_getgroups, v.len(), v.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    v.truncate(r as usize);
    Ok(v)
}

fn fsuid_now() -> u32 {
    // SAFETY: -1 is invalid, so this only reads the current value.
    unsafe { libc::setfsuid(u32::MAX) as u32 }
}

fn fsgid_now() -> u32 {
    // SAFETY: as above.
    unsafe { libc::setfsgid(u32::MAX) as u32 }
}

/// Puts a thread back to the process's own credentials when dropped (also on panic); a
/// thread that cannot be put back must not run anything else, so the process aborts.
struct Restore {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain syscalls on this thread.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
        if raw_setgroups(&self.groups).is_err()
            || fsuid_now() != self.uid
            || fsgid_now() != self.gid
        {
            tracing::error!("cannot restore a thread's credentials; aborting");
            std::process::abort();
        }
    }
}

/// Runs `f` on this thread with `c`'s filesystem credentials, then switches back. Fails with
/// EPERM, without running `f`, when the switch does not take (no CAP_SETUID/CAP_SETGID).
pub fn with_creds<T>(c: &UserCreds, f: impl FnOnce() -> T) -> io::Result<T> {
    if !c.switch {
        return Ok(f());
    }
    let restore = Restore {
        uid: fsuid_now(),
        gid: fsgid_now(),
        groups: raw_getgroups()?,
    };
    // Groups first: setgroups needs CAP_SETGID, which a thread keeps while its fsuid is 0.
    raw_setgroups(&c.groups)?;
    // SAFETY: plain syscalls on this thread.
    unsafe {
        libc::setfsgid(c.gid);
        libc::setfsuid(c.uid);
    }
    if fsuid_now() != c.uid || fsgid_now() != c.gid {
        drop(restore);
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let out = f();
    drop(restore);
    Ok(out)
}

/// Runs `f` as `c` on a blocking thread (never on the threads that answer the kernel).
pub async fn run_as<T: Send + 'static>(
    c: Arc<UserCreds>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(move || with_creds(&c, f))
        .await
        .map_err(|e| io::Error::other(format!("worker thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "integration")]
    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn current_switches_nothing() {
        let c = UserCreds::current();
        let before = (fsuid_now(), fsgid_now());
        assert_eq!(
            with_creds(&c, || (fsuid_now(), fsgid_now())).unwrap(),
            before
        );
    }

    /// As root: work run as nobody is refused a root-only file by the kernel, the thread is
    /// root again afterwards, and a panic inside still restores it.
    #[cfg(feature = "integration")]
    #[test]
    fn the_kernel_refuses_what_the_user_could_not_do() {
        assert!(
            root(),
            "this test needs root (CAP_SETUID to switch credentials); run scripts/test"
        );
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let nobody = UserCreds::of(65534, 65534);
        let r = with_creds(&nobody, || std::fs::read(&secret)).unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied,
            "nobody read a root-only file"
        );
        assert_eq!((fsuid_now(), fsgid_now()), (0, 0));
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
        let p = std::panic::catch_unwind(|| {
            with_creds(&nobody, || panic!("inside")).unwrap();
        });
        assert!(p.is_err());
        assert_eq!((fsuid_now(), fsgid_now()), (0, 0));
        // Files made as the user belong to the user: no chown needed (checked on the fd).
        std::fs::File::open(t.path())
            .unwrap()
            .set_permissions(std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let made = with_creds(&nobody, || std::fs::File::create(t.path().join("made")))
            .unwrap()
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(made.metadata().unwrap().uid(), 65534);
        // Other threads were never switched.
        let other = std::thread::spawn(|| {
            with_creds(&UserCreds::of(65534, 65534), || {
                std::thread::sleep(Duration::from_millis(50))
            })
        });
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
        other.join().unwrap().unwrap();
    }
}

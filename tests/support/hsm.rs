//! Fixtures for hydration tests (root only): loop-mounted ext4/xfs/btrfs images, a running
//! `skyfilld` (keeper + worker) with its own socket and state dir, the CLI, and helpers to
//! run real programs. Everything is torn down on drop (daemon, mounts, loop devices).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn require_root() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root (loop devices, mounts, fanotify): run scripts/test as root");
    }
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub struct LoopFs {
    pub mnt: PathBuf,
    dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn new(fstype: &str, size_mb: u64) -> LoopFs {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("skyfill-fs")
            .tempdir_in("/var/tmp")
            .unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh_ok(&format!("truncate -s {size_mb}M {}", img.display()));
        let mkfs = match fstype {
            "ext4" => "mkfs.ext4 -q",
            "xfs" => "mkfs.xfs -q -f",
            "btrfs" => "mkfs.btrfs -q -f",
            other => panic!("unknown fs {other}"),
        };
        sh_ok(&format!("{mkfs} {}", img.display()));
        sh_ok(&format!(
            "mount -o loop {} {}",
            img.display(),
            mnt.display()
        ));
        LoopFs { mnt, dir }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        for _ in 0..50 {
            let o = sh(&format!("umount {}", self.mnt.display()));
            if o.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dir.path();
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state: PathBuf,
    /// This daemon's kernel gate (bpffs), apart from every other test's; removed on drop.
    pub gate: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `skyfilld` with an optional policy.json.
    pub fn start(policy: Option<serde_json::Value>) -> Daemon {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("skyfilld")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        if let Some(p) = policy {
            std::fs::write(state.join("policy.json"), p.to_string()).unwrap();
        }
        let socket = dir.path().join("sock");
        let gate = PathBuf::from(format!(
            "/sys/fs/bpf/skyfill_test_{}_{}",
            std::process::id(),
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "_")
        ));
        let mut d = Daemon {
            child: None,
            socket,
            state,
            gate,
            _dir: dir,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        self.spawn_with(&|c| c);
    }

    /// Starts the keeper through `wrap` (which may add environment, inherited descriptors or
    /// a wrapper program), then waits until it serves.
    pub fn spawn_with(&mut self, wrap: &dyn Fn(Command) -> Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("daemon.log"))
            .unwrap();
        // SKYFILL_DAEMON_UNDER_TEST runs the same tests against another build of the daemon
        // (how the security review's findings were shown on the code before the fixes).
        let bin = std::env::var("SKYFILL_DAEMON_UNDER_TEST")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_skyfilld").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .env("SKYFILL_GATE_DIR", &self.gate);
        let child = wrap(cmd).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        self.wait_ready(None);
    }

    /// Waits until a worker (other than `old`) answers on the socket.
    pub fn wait_ready(&self, old: Option<u32>) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Some(p) = self.worker_pid() {
                if Some(p) != old && self.try_cli(&["stats"]).status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("skyfilld did not become ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("daemon.log")).unwrap_or_default()
    }

    pub fn worker_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state.join("worker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn try_cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skyfill"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> serde_json::Value {
        let o = self.try_cli(args);
        assert!(
            o.status.success(),
            "skyfill {args:?} failed: {}{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout),
            self.log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> serde_json::Value {
        let o = self.try_cli_stdin(args, stdin);
        assert!(
            o.status.success(),
            "skyfill {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn try_cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut c = Command::new(env!("CARGO_BIN_EXE_skyfill"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    pub fn stats(&self) -> serde_json::Value {
        self.cli(&["stats"])
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = self.worker_pid() {
            // SAFETY: make sure no worker survives its keeper.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }

    /// kill -9 of keeper and worker at once, as systemd does when the main process dies.
    pub fn kill_all(&mut self) {
        let worker = self.worker_pid();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = worker {
            // SAFETY: killing the worker on purpose.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
            wait_dead(p);
        }
        let _ = std::fs::remove_file(self.state.join("worker.pid"));
    }

    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.state.join("worker.pid"));
        self.spawn();
    }
}

/// Plays systemd's part for the packaged unit (`Type=notify`, `FileDescriptorStoreMax=1`): a
/// `NOTIFY_SOCKET` that receives the keeper's `READY=1` and the fanotify group it parks with
/// `FDSTORE=1`, and, on the next start, that group handed back at fd 3 with `LISTEN_FDS`.
pub struct FdStore {
    notify: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// The group the keeper parked (what keeps readers waiting while no keeper runs).
    pub fd: Option<std::os::fd::OwnedFd>,
}

impl FdStore {
    pub fn new() -> FdStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        FdStore {
            notify,
            path,
            _dir: dir,
            fd: None,
        }
    }

    /// Starts `d`'s keeper as systemd would: with `NOTIFY_SOCKET`, and with the stored group
    /// at fd 3 if there is one; returns once the keeper said `READY=1` and has stored a group.
    pub fn spawn(&mut self, d: &mut Daemon) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let np = self.path.clone();
        let raw = self.fd.as_ref().map(|f| f.as_raw_fd());
        d.spawn_with(&move |c| {
            let prog = c.get_program().to_owned();
            let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
                .arg(prog)
                .args(args)
                .env("NOTIFY_SOCKET", &np);
            for (k, v) in c.get_envs() {
                if let Some(v) = v {
                    sh.env(k, v);
                }
            }
            if let Some(raw) = raw {
                sh.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "fanotify");
                // SAFETY: dup2/fcntl between fork and exec.
                unsafe {
                    sh.pre_exec(move || {
                        // dup2 onto itself keeps close-on-exec set: when the stored group
                        // already is fd 3 here, clear the flag instead (the CI failure of
                        // stop 29: the keeper found fd 3 closed).
                        let r = if raw == 3 {
                            libc::fcntl(3, libc::F_SETFD, 0)
                        } else {
                            libc::dup2(raw, 3)
                        };
                        if r < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            } else {
                sh.env_remove("LISTEN_FDS");
            }
            sh
        });
        let mut ready = false;
        let mut stored = false;
        while !ready || (!stored && self.fd.is_none()) {
            let (text, fds) = self.recv();
            ready |= text.contains("READY=1");
            if text.contains("FDSTORE=1") {
                assert!(text.contains("FDNAME=fanotify"), "{text}");
                assert_eq!(fds.len(), 1, "FDSTORE without exactly one descriptor");
                self.fd = fds.into_iter().next();
                stored = true;
            }
        }
        let fd = self.fd.as_ref().unwrap();
        assert_eq!(
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .to_string_lossy(),
            "anon_inode:[fanotify]",
            "the keeper stored something other than a fanotify group"
        );
    }

    fn recv(&self) -> (String, Vec<std::os::fd::OwnedFd>) {
        use std::os::fd::{AsRawFd, FromRawFd};
        let mut buf = [0u8; 256];
        let mut cbuf = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            self.notify.as_raw_fd(),
            &mut iov,
            Some(&mut cbuf),
            // Close-on-exec: a reader this test starts must not inherit the group (it would
            // keep the group alive while blocked on it; see doc/SEMANTICS.md).
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("no message from skyfilld on NOTIFY_SOCKET within 20 s");
        let fds: Vec<std::os::fd::OwnedFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(v) => v,
                _ => vec![],
            })
            // SAFETY: received just now, owned by nobody else.
            .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
            .collect();
        let n = msg.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
    }
}

/// Waits until process `pid` has really died: every thread gone and every descriptor closed
/// (a zombie leader whose other threads still run keeps the socket and the group open). An
/// orphan may stay a zombie here (pid 1 need not reap), so the test is on its descriptors.
pub fn wait_dead(pid: u32) {
    let t = Instant::now();
    loop {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Threads:")
                        .map(|v| v.trim().parse::<u32>().unwrap_or(0))
                })
            })
            .unwrap_or(0);
        if open == 0 && threads <= 1 {
            let zombie_or_gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with(['Z', 'X'])
                })
                .unwrap_or(true);
            if zombie_or_gone {
                return;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "process {pid} still alive 30 s after SIGKILL ({threads} threads, {open} fds)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until process `pid` is blocked in the kernel on a fanotify permission event (its
/// kernel stack names fanotify): the access happened and is held, not answered.
pub fn wait_blocked_in_fanotify(pid: u32, what: &str) {
    let t = Instant::now();
    loop {
        let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
        if stack.contains("fanotify") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: never blocked on a fanotify event within 60 s; kernel stack:\n{stack}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = skyfill::hsm::gate::remove(&self.gate) {
            eprintln!("cannot remove the test's gate {}: {e}", self.gate.display());
        }
    }
}

pub fn sha256(p: &Path) -> std::io::Result<String> {
    let o = Command::new("sha256sum").arg(p).output()?;
    if !o.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string())
}

pub fn sha256_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Allocated bytes of a file (st_blocks * 512).
pub fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

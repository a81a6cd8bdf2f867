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
        let mut d = Daemon {
            child: None,
            socket,
            state,
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
            .arg(&self.state);
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
            "skyfill {args:?} failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&o.stderr),
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
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                match std::fs::read_to_string(format!("/proc/{p}/stat")) {
                    Ok(s)
                        if !s
                            .rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z') =>
                    {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
        let _ = std::fs::remove_file(self.state.join("worker.pid"));
    }

    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.state.join("worker.pid"));
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
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

/// Most bytes a placeholder may have allocated without holding data: ext4 keeps a record
/// that does not fit in a 256-byte inode in one xattr block; xfs and btrfs keep it inline.
/// (Measured with st_blocks: opening the file to look for data would hydrate it.)
pub fn xattr_overhead(fstype: &str) -> u64 {
    if fstype == "ext4" {
        4096
    } else {
        0
    }
}

//! Throwaway Unix users for tests that act as somebody else than root (created with useradd,
//! removed with their processes on drop), and the CLI copied where they can run it.

#![allow(dead_code)]

use crate::hsm::{sh, sh_ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn create(tag: &str) -> User {
        let name = format!("skyt{tag}{:05}", rand::random::<u32>() % 100_000);
        sh_ok(&format!(
            "useradd --no-create-home --user-group --shell /usr/sbin/nologin {name}"
        ));
        let uid = sh_ok(&format!("id -u {name}")).trim().parse().unwrap();
        let gid = sh_ok(&format!("id -g {name}")).trim().parse().unwrap();
        User { name, uid, gid }
    }

    /// `cmd` as this user (real and effective ids, no supplementary groups).
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .args(cmd);
        c
    }

    pub fn run(&self, cmd: &[&str]) -> Output {
        self.command(cmd).output().unwrap()
    }

    /// A shell command line as this user; panics with its output when it fails.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.run(&["sh", "-c", script]);
        assert!(
            o.status.success(),
            "as {}: `{script}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Makes `p` (a new directory) this user's.
    pub fn own_dir(&self, p: &Path) {
        std::fs::create_dir(p).unwrap();
        std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid)).unwrap();
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "pkill -KILL -u {} ; userdel {}",
            self.uid, self.name
        ));
    }
}

/// The CLI copied into a directory every user can enter (the build tree may be private).
pub struct SharedCli {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SharedCli {
    pub fn new() -> SharedCli {
        let dir = tempfile::Builder::new()
            .prefix("skyfill-bin")
            .tempdir_in("/var/tmp")
            .unwrap();
        sh_ok(&format!("chmod 755 '{}'", dir.path().display()));
        let path = dir.path().join("skyfill");
        std::fs::copy(env!("CARGO_BIN_EXE_skyfill"), &path).unwrap();
        SharedCli { path, _dir: dir }
    }

    /// `skyfill --socket SOCK --json ARGS` as `u`, ready to run.
    pub fn command(&self, u: &User, sock: &Path, args: &[&str]) -> Command {
        let mut a = vec![
            self.path.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--json",
        ];
        a.extend_from_slice(args);
        u.command(&a)
    }

    pub fn run(&self, u: &User, sock: &Path, args: &[&str]) -> Output {
        self.command(u, sock, args).output().unwrap()
    }

    /// The same with `stdin` fed to the CLI.
    pub fn run_stdin(&self, u: &User, sock: &Path, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut c = self
            .command(u, sock, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    /// `add-root LOCAL file://SHARE` as `u`; panics with the output when refused.
    pub fn add_share_root(&self, u: &User, sock: &Path, local: &Path, share: &Path) {
        let url = format!("file://{}", share.display());
        let o = self.run(u, sock, &["add-root", local.to_str().unwrap(), &url]);
        assert!(
            o.status.success(),
            "add-root {}: {}",
            local.display(),
            out(&o)
        );
    }
}

pub fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

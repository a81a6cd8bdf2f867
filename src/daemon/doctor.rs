//! `doctor`: health checks of the caller's roots as the daemon sees them (filesystem,
//! credentials, server reachability, clock skew, limits reached), each with what to do.

use super::core::Core;
use super::error::Error;
use crate::ipc::proto::*;
use crate::ipc::server::Peer;
use crate::model::RelPath;
use crate::remote;
use std::os::fd::AsFd;
use std::time::Duration;

/// Names of filesystems by `statfs` magic.
fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x794C_7630 => "overlayfs".into(),
        m => format!("type {m:#x}"),
    }
}

/// Runs every check for `peer`'s roots.
pub async fn doctor(core: &Core, peer: Peer) -> DoctorResult {
    let mut checks = Vec::new();
    let mut add = |level: Level, what: String, fix: &str| {
        checks.push(Check {
            level,
            what,
            fix: fix.into(),
        })
    };
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let roots = core.mine(peer);
    if roots.is_empty() {
        add(
            Level::Warn,
            "you have no sync roots".into(),
            "add one with `skyfill add-root ~/Cloud dav://server/path` or the tray app",
        );
    }
    for r in roots {
        let l = r.local.display().to_string();
        match core.open_root(&r) {
            Err(e) => add(
                Level::Fail,
                e.message,
                "restore the folder, or remove the root with `skyfill remove-root`",
            ),
            Ok(root) => {
                let fs = nix::sys::statfs::fstatfs(&root)
                    .map(|s| fs_name(s.filesystem_type().0))
                    .unwrap_or_else(|_| "unknown".into());
                match core.group.probe(root.as_fd()) {
                    Ok(()) => add(
                        Level::Ok,
                        format!("{l} is on {fs}, which delivers pre-content events"),
                        "",
                    ),
                    Err(e) => add(
                        Level::Fail,
                        format!("{l} is on {fs}, which refuses pre-content events ({e})"),
                        "move the root to ext4, xfs or btrfs on Linux >= 6.14",
                    ),
                }
            }
        }
        if r.paused {
            add(
                Level::Warn,
                format!("{l} is paused"),
                "resume with `skyfill resume`",
            );
        }
        let last = core.last_error.lock().unwrap().get(&r.id).cloned();
        if let Some(e) = last.map(|e| e.message) {
            if e.contains("limits.json") {
                add(
                    Level::Fail,
                    format!("{l}: a configured limit was reached: {e}"),
                    "if the server really holds that much, raise the limit in limits.json in the daemon's state directory (doc/SECURITY.md)",
                );
            } else {
                add(Level::Warn, format!("{l}: last sync failed: {e}"), "");
            }
        }
        let Some(rem) = core.hydrator.remote(&r.id) else {
            add(
                Level::Fail,
                format!("{l}: no credentials (needs sign-in)"),
                "run `skyfill login` (or sign in from the tray app)",
            );
            continue;
        };
        add(
            Level::Ok,
            format!(
                "{l}: credentials present{}",
                if r.persist_secret {
                    " (kept by the daemon)"
                } else if r.has_secret {
                    " (from your keyring; re-sent after each daemon start)"
                } else {
                    " (anonymous server)"
                }
            ),
            "",
        );
        match tokio::time::timeout(Duration::from_secs(15), rem.stat(&RelPath::root())).await {
            Ok(Ok(_)) => add(
                Level::Ok,
                format!("{l}: server reachable ({})", rem.describe()),
                "",
            ),
            Ok(Err(e)) => {
                let e = Error::from(e);
                add(
                    Level::Fail,
                    format!("{l}: {}", e.message),
                    if e.code == ErrorCode::Auth {
                        "sign in again with `skyfill login`"
                    } else {
                        "check the network and the server address"
                    },
                );
            }
            Err(_) => add(
                Level::Fail,
                format!("{l}: the server did not answer within 15 s"),
                "check the network and the server address",
            ),
        }
        if let Some(skew) = remote::config::clock_skew(&r.remote).await {
            let s = skew.abs();
            let limit = if r.remote.url.starts_with("s3:") {
                300
            } else {
                900
            };
            if s > limit {
                add(
                    Level::Fail,
                    format!("{l}: this machine's clock is {skew} s off the server's"),
                    "turn on time synchronisation (timedatectl set-ntp true); S3 refuses requests signed more than 15 minutes off",
                );
            } else {
                add(
                    Level::Ok,
                    format!("{l}: clock within {s} s of the server's"),
                    "",
                );
            }
        }
    }
    let gate = match crate::hsm::gate::status() {
        crate::hsm::gate::Status::Active(dir) => GateInfo {
            active: true,
            detail: dir.display().to_string(),
        },
        crate::hsm::gate::Status::Inactive(why) => GateInfo {
            active: false,
            detail: why,
        },
    };
    if gate.active {
        checks.push(Check {
            level: Level::Ok,
            what: format!(
                "the kernel gate is active ({}): while the daemon is stopped, online-only files refuse to open (EAGAIN) instead of reading zeros",
                gate.detail
            ),
            fix: String::new(),
        });
    } else {
        checks.push(Check {
            level: Level::Warn,
            what: format!(
                "the kernel gate is not active ({}): while the daemon is stopped, online-only files read as zeros",
                gate.detail
            ),
            fix: "keep skyfilld running; the gate needs a kernel with the BPF LSM active (`bpf` in /sys/kernel/security/lsm, e.g. boot with lsm=...,bpf)".into(),
        });
    }
    DoctorResult {
        daemon: super::daemon_name(),
        kernel,
        checks,
        gate,
    }
}

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

/// Runs every check for `peer`'s roots. Findings are made with `said!`, so each client reads
/// them in its language.
pub async fn doctor(core: &Core, peer: Peer) -> DoctorResult {
    use crate::i18n::Said;
    use crate::said;
    let mut checks = Vec::new();
    let mut add = |level: Level, what: Said, fix: Said| {
        checks.push(Check {
            level,
            what: what.english(),
            fix: fix.english(),
            said: Some((what, fix)),
        })
    };
    let none = Said::default;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let roots = core.mine(peer);
    if roots.is_empty() {
        add(
            Level::Warn,
            said!("you have no sync roots"),
            said!("add one with `skyfill add-root ~/Cloud dav://server/path` or the tray app"),
        );
    }
    for r in roots {
        let l = r.local.display().to_string();
        match core.open_root(&r) {
            Err(e) => add(
                Level::Fail,
                e.to_said(),
                said!("restore the folder, or remove the root with `skyfill remove-root`"),
            ),
            Ok(root) => {
                let fs = nix::sys::statfs::fstatfs(&root)
                    .map(|s| fs_name(s.filesystem_type().0))
                    .unwrap_or_else(|_| "unknown".into());
                match core.group.probe(root.as_fd()) {
                    Ok(()) => add(
                        Level::Ok,
                        said!(
                            "{root} is on {fs}, which delivers pre-content events",
                            root = l,
                            fs = fs
                        ),
                        none(),
                    ),
                    Err(e) => add(
                        Level::Fail,
                        said!(
                            "{root} is on {fs}, which refuses pre-content events ({error})",
                            root = l,
                            fs = fs,
                            error = e
                        ),
                        said!("move the root to ext4, xfs or btrfs on Linux >= 6.14"),
                    ),
                }
            }
        }
        if r.paused {
            add(
                Level::Warn,
                said!("{root} is paused", root = l),
                said!("resume with `skyfill resume`"),
            );
        }
        let last = core.last_error.lock().unwrap().get(&r.id).cloned();
        if let Some(last) = last {
            let e = last
                .said
                .clone()
                .unwrap_or_else(|| Said::text(last.message.clone()));
            if last.message.contains("limits.json") {
                add(
                    Level::Fail,
                    said!("{root}: a configured limit was reached: {error}", root = l, error = "")
                        .with("error", e),
                    said!("if the server really holds that much, raise the limit in limits.json in the daemon's state directory (doc/SECURITY.md)"),
                );
            } else {
                add(
                    Level::Warn,
                    said!("{root}: last sync failed: {error}", root = l, error = "")
                        .with("error", e),
                    none(),
                );
            }
        }
        let Some(rem) = core.hydrator.remote(&r.id) else {
            add(
                Level::Fail,
                said!("{root}: no credentials (needs sign-in)", root = l),
                said!("run `skyfill login` (or sign in from the tray app)"),
            );
            continue;
        };
        add(
            Level::Ok,
            if r.persist_secret {
                said!("{root}: credentials present (kept by the daemon)", root = l)
            } else if r.has_secret {
                said!(
                    "{root}: credentials present (from your keyring; re-sent after each daemon start)",
                    root = l
                )
            } else {
                said!("{root}: credentials present (anonymous server)", root = l)
            },
            none(),
        );
        match tokio::time::timeout(Duration::from_secs(15), rem.stat(&RelPath::root())).await {
            Ok(Ok(_)) => add(
                Level::Ok,
                said!(
                    "{root}: server reachable ({server})",
                    root = l,
                    server = rem.describe()
                ),
                none(),
            ),
            Ok(Err(e)) => {
                let e = Error::from(e);
                add(
                    Level::Fail,
                    e.to_said().prefixed(format!("{l}: ")),
                    if e.code == ErrorCode::Auth {
                        said!("sign in again with `skyfill login`")
                    } else {
                        said!("check the network and the server address")
                    },
                );
            }
            Err(_) => add(
                Level::Fail,
                said!("{root}: the server did not answer within 15 s", root = l),
                said!("check the network and the server address"),
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
                    said!("{root}: this machine's clock is {skew} s off the server's", root = l, skew = skew),
                    said!("turn on time synchronisation (timedatectl set-ntp true); S3 refuses requests signed more than 15 minutes off"),
                );
            } else {
                add(
                    Level::Ok,
                    said!(
                        "{root}: clock within {s} s of the server's",
                        root = l,
                        s = s
                    ),
                    none(),
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
        add(
            Level::Ok,
            said!(
                "the kernel gate is active ({detail}): while the daemon is stopped, online-only files refuse to open (EAGAIN) instead of reading zeros",
                detail = gate.detail
            ),
            none(),
        );
    } else {
        add(
            Level::Warn,
            said!(
                "the kernel gate is not active ({detail}): while the daemon is stopped, online-only files read as zeros",
                detail = gate.detail
            ),
            said!("keep skyfilld running; the gate needs a kernel with the BPF LSM active (`bpf` in /sys/kernel/security/lsm, e.g. boot with lsm=...,bpf)"),
        );
    }
    DoctorResult {
        daemon: super::daemon_name(),
        kernel,
        checks,
        gate,
    }
}

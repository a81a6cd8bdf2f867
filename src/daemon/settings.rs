//! Settings and sign-in: each user's preferences (poll interval, bandwidth, programs that
//! never download, ignore patterns, per-root budgets) applied to that user's roots, handing
//! the daemon a root's secret, and pausing or resuming roots.

use super::core::Core;
use super::error::{Error, Result};
use crate::hsm::hydrate::{Bucket, RootPolicy};
use crate::ipc::proto::*;
use crate::ipc::server::Peer;
use crate::model::RelPath;
use std::sync::Arc;

/// Settings and sign-in: a view of the daemon's state with this one job.
pub struct Settings<'a>(pub &'a Core);

impl std::ops::Deref for Settings<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        self.0
    }
}

impl Settings<'_> {
    /// Applies the owner's settings (per-application policy, bandwidth) to their roots.
    pub fn apply_user_policy(&self, uid: u32) {
        let s = self.registry.settings(uid);
        let bucket = (s.download_limit > 0).then(|| Arc::new(Bucket::new(s.download_limit)));
        for r in self.roots.read().unwrap().iter().filter(|r| r.uid == uid) {
            self.hydrator.set_root_policy(
                &r.id,
                RootPolicy {
                    never_download: s.never_download.clone(),
                    download_limit: bucket.clone(),
                    budget: r.budget.is_some(),
                },
            );
        }
    }

    /// Checks a root's secret with its server and hands it to the hydrator.
    pub async fn login(
        &self,
        peer: Peer,
        local: &str,
        secret: &str,
        persist: bool,
    ) -> Result<RootInfo> {
        let r = self.root_at(peer, local)?;
        let rem = self.open_remote(&r, Some(secret)).map_err(Error::from)?;
        rem.stat(&RelPath::root()).await.map_err(Error::from)?;
        if persist {
            self.registry
                .save_secret(&r.id, secret)
                .map_err(Error::internal)?;
        } else {
            self.registry
                .delete_secret(&r.id)
                .map_err(Error::internal)?;
        }
        self.hydrator.set_remote(&r.id, rem);
        let r = self.update_root(&r.id, |x| {
            x.has_secret = true;
            x.persist_secret = persist;
        })?;
        self.set_error(&r, None);
        self.emit_root(&r, RootChange::SignedIn);
        tracing::info!(root = %r.local.display(), persist, "signed in");
        Ok(self.root_info(&r))
    }

    /// Pauses or resumes one root, or all of the caller's.
    pub fn set_paused(
        &self,
        peer: Peer,
        local: Option<&str>,
        paused: bool,
    ) -> Result<Vec<RootInfo>> {
        let targets = match local {
            Some(l) => vec![self.root_at(peer, l)?],
            None => self.mine(peer),
        };
        let mut out = Vec::new();
        for r in targets {
            let r = self.update_root(&r.id, |x| x.paused = paused)?;
            let change = if paused {
                RootChange::Paused
            } else {
                RootChange::Resumed
            };
            self.emit_root(&r, change);
            if !paused {
                // Due now: catch up with the server and with pinned files.
                self.sync.due_now(&r.id);
            }
            out.push(self.root_info(&r));
        }
        Ok(out)
    }

    /// The caller's settings and roots.
    pub fn config_get(&self, peer: Peer) -> ConfigResult {
        ConfigResult {
            settings: self.registry.settings(peer.uid),
            system_never_download: self.hydrator.policy.never_download.clone(),
            roots: self.mine(peer).iter().map(|r| self.root_info(r)).collect(),
        }
    }

    /// Changes one setting of the caller (or, for `budget`, of one of their roots).
    pub fn config_set(
        &self,
        peer: Peer,
        key: &str,
        value: serde_json::Value,
        local: Option<&str>,
    ) -> Result<()> {
        let bad = |m: crate::i18n::Said| Error::said(ErrorCode::BadRequest, m);
        let num = |v: &serde_json::Value| {
            v.as_u64()
                .ok_or_else(|| bad(crate::said!("{key}: give a whole number", key = key)))
        };
        if key == "budget" {
            let l = local.ok_or_else(|| bad(crate::said!("budget is per root: name the root")))?;
            let r = self.root_at(peer, l)?;
            let b: Option<Budget> = serde_json::from_value(value).map_err(|e| {
                bad(crate::said!(
                    "budget: {error}; use null, {max} or {keep}",
                    error = e,
                    max = "{\"max_bytes\": N}",
                    keep = "{\"keep_free_percent\": N}"
                ))
            })?;
            if let Some(Budget::KeepFreePercent(p)) = b {
                if p == 0 || p > 90 {
                    return Err(bad(crate::said!("keep_free_percent must be 1..90")));
                }
            }
            self.update_root(&r.id, |x| x.budget = b)?;
            self.apply_user_policy(r.uid);
            return Ok(());
        }
        let mut s = self.registry.settings(peer.uid);
        match key {
            "poll_interval_secs" => {
                let n = num(&value)?;
                if !(5..=86_400).contains(&n) {
                    return Err(bad(crate::said!("poll_interval_secs must be 5..86400")));
                }
                s.poll_interval_secs = n;
            }
            "download_limit" => s.download_limit = num(&value)?,
            "upload_limit" => s.upload_limit = num(&value)?,
            "never_download" => {
                let v: Vec<String> = serde_json::from_value(value)
                    .map_err(|e| {
                        bad(crate::said!(
                            "never_download: a list of program names ({error})",
                            error = e
                        ))
                    })?;
                for x in &v {
                    if x.is_empty() || x.len() > 255 || x.contains('/') || x.contains('\0') {
                        return Err(bad(crate::said!(
                            "never_download: {name} is not a program name (no paths)",
                            name = format!("{x:?}")
                        )));
                    }
                }
                s.never_download = v;
            }
            "ignore" => {
                let v: Vec<String> = serde_json::from_value(value)
                    .map_err(|e| {
                        bad(crate::said!(
                            "ignore: a list of name patterns ({error})",
                            error = e
                        ))
                    })?;
                crate::sync::ignore::Ignore::new(&v)
                    .map_err(|e| bad(crate::i18n::Said::text(format!("ignore: {e}"))))?;
                s.ignore = v;
            }
            k => {
                return Err(bad(crate::said!(
                    "unknown setting {name}; known: {known}",
                    name = format!("{k:?}"),
                    known = "poll_interval_secs, download_limit, upload_limit, never_download, ignore, budget"
                )))
            }
        }
        self.registry
            .save_settings(peer.uid, &s)
            .map_err(Error::internal)?;
        self.apply_user_policy(peer.uid);
        Ok(())
    }
}

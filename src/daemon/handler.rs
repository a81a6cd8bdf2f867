//! The socket handler: maps each typed request to the service that carries it out and its
//! typed result, and turns the daemon's errors into the protocol's `{code, message}`. Every
//! request is authorized by the peer's uid inside the services (a user acts on their own
//! roots, root on all).

use super::core::Core;
use super::doctor;
use super::error::{Error, Result};
use super::files::Action;
use super::Daemon;
use crate::fsutil;
use crate::hsm::meta::Pin;
use crate::ipc::proto::*;
use crate::ipc::server::{Envelope, Fail, Handler, JobSink, Peer};

#[async_trait::async_trait]
impl Handler for Daemon {
    fn daemon_name(&self) -> String {
        super::daemon_name()
    }

    fn events(&self, peer: Peer) -> tokio::sync::broadcast::Receiver<Envelope> {
        self.core.events.subscribe(peer.uid)
    }

    async fn handle(&self, peer: Peer, body: RequestBody, jobs: JobSink) -> Result<Reply, Fail> {
        dispatch(&self.core, peer, body, jobs)
            .await
            .map_err(Fail::from)
    }
}

async fn dispatch(core: &Core, peer: Peer, body: RequestBody, jobs: JobSink) -> Result<Reply> {
    let files = core.files();
    if matches!(
        body,
        RequestBody::Status { .. } | RequestBody::List { .. } | RequestBody::ListPage { .. }
    ) {
        // Folder states come from the index: what the kernel's events just changed is in.
        core.flush_notices().await;
    }
    Ok(match body {
        RequestBody::Hello { .. } | RequestBody::Subscribe => {
            return Err(Error::bad_request("handled by the connection"))
        }
        RequestBody::AddRoot {
            local,
            remote,
            secret,
            persist_secret,
        } => Reply::AddRoot(
            core.lifecycle()
                .add_root(peer, &local, remote, secret, persist_secret)
                .await?,
        ),
        RequestBody::RemoveRoot { local, mode } => Reply::RemoveRoot(
            core.lifecycle()
                .remove_root(peer, &local, mode, &jobs)
                .await?,
        ),
        RequestBody::Roots => {
            Reply::Roots(core.mine(peer).iter().map(|r| core.root_info(r)).collect())
        }
        // Folder scans are blocking filesystem work: the runtime moves its other tasks (the
        // kernel's events, other users) off this thread meanwhile.
        RequestBody::Status { path: Some(p) } => {
            Reply::Status(fsutil::blocking(|| files.status(peer, &p))?)
        }
        RequestBody::List { path } => {
            Reply::Statuses(fsutil::blocking(|| files.list(peer, &path))?)
        }
        RequestBody::ListPage {
            path,
            offset,
            limit,
            order,
        } => Reply::Page(fsutil::blocking(|| {
            files.list_page(peer, &path, offset, limit, &order)
        })?),
        RequestBody::Status { path: None } => Reply::Statuses(fsutil::blocking(|| {
            core.mine(peer)
                .iter()
                .map(|r| files.status(peer, &r.local.display().to_string()))
                .collect::<Result<Vec<_>>>()
        })?),
        RequestBody::Pin {
            path,
            setting,
            recursive,
        } => {
            let action = match setting {
                Pin::Pinned => Action::Download,
                Pin::OnlineOnly => Action::Evict,
                Pin::Inherit => Action::Nothing,
            };
            Reply::Batch(
                files
                    .batch(
                        peer,
                        &path,
                        recursive,
                        Some(setting),
                        action,
                        JobKind::Pin,
                        &jobs,
                    )
                    .await?,
            )
        }
        RequestBody::Free { path, recursive } => Reply::Batch(
            files
                .batch(
                    peer,
                    &path,
                    recursive,
                    None,
                    Action::Evict,
                    JobKind::Free,
                    &jobs,
                )
                .await?,
        ),
        RequestBody::Hydrate { path, recursive } => Reply::Batch(
            files
                .batch(
                    peer,
                    &path,
                    recursive,
                    None,
                    Action::Download,
                    JobKind::Hydrate,
                    &jobs,
                )
                .await?,
        ),
        RequestBody::Login {
            local,
            secret,
            persist,
        } => Reply::Root(
            core.settings()
                .login(peer, &local, &secret, persist)
                .await?,
        ),
        RequestBody::Pause { local } => {
            Reply::Roots(core.settings().set_paused(peer, local.as_deref(), true)?)
        }
        RequestBody::Resume { local } => {
            Reply::Roots(core.settings().set_paused(peer, local.as_deref(), false)?)
        }
        RequestBody::Sync { path } => {
            Reply::Sync(core.passes().sync_now(peer, path.as_deref()).await?)
        }
        RequestBody::ConfigGet => Reply::Config(core.settings().config_get(peer)),
        RequestBody::ConfigSet { key, value, local } => {
            core.settings()
                .config_set(peer, &key, value, local.as_deref())?;
            Reply::Config(core.settings().config_get(peer))
        }
        RequestBody::Doctor => Reply::Doctor(doctor::doctor(core, peer).await),
        RequestBody::Stats => {
            let s = &core.hydrator.stats;
            // Root sees the daemon's totals; a user the sums over their own roots.
            let x = if peer.is_root() {
                s.total()
            } else {
                core.mine(peer)
                    .iter()
                    .map(|r| s.of_root(&r.id))
                    .fold(Default::default(), |a, b| a + b)
            };
            Reply::Stats(StatsBody {
                bytes_fetched: x.bytes_fetched,
                requests: x.requests,
                completed: x.completed,
                denied: x.denied,
                events: x.events,
            })
        }
    })
}

//! The one place sync operations happen: [`Executor::run`] carries out a plan against a
//! `Remote`, a `LocalFs` and the base in the index. Each op re-checks what it relies on
//! (preconditions on uploads, versions before deletes, stamps before local replacements), so
//! a plan made from a listing that went stale meanwhile never overwrites or deletes a change
//! it did not see; a failed op is retried by the next pass. Durable order of every op: remote
//! effect, then the file's record, then the base, so a crash at any point is recognised by the
//! next pass (identical content on both sides is adopted, never duplicated).

use super::conflict;
use super::local::LocalFs;
use super::{same_version, BaseEntry, Op, Stamp};
use crate::index::{Index, IndexError};
use crate::model::{Kind, RelPath, RemoteEntry, Version};
use crate::remote::{Precondition, Remote, RemoteError};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicI64, Ordering};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Test hook: the simulated crash point was reached.
    #[error("simulated crash")]
    Crashed,
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{path}: {source}")]
    Io {
        path: RelPath,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{path}: {what}")]
    Skipped { path: RelPath, what: String },
}

impl ExecError {
    pub fn errno(&self) -> i32 {
        match self {
            ExecError::Remote(e) => e.errno(),
            ExecError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ExecError::Skipped { .. } => libc::ESTALE,
            _ => libc::EIO,
        }
    }
}

fn io_at(path: &RelPath) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.clone(),
        source,
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub done: u64,
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    pub placeholders: u64,
    pub refreshed: u64,
    pub renamed: u64,
    pub deleted: u64,
    /// (original path, conflict copy).
    pub conflicts: Vec<(RelPath, RelPath)>,
    pub errors: Vec<(RelPath, String)>,
    /// The server was unreachable: the pass stopped, to be resumed when it is back.
    pub offline: bool,
    /// Each move aside of this pass, by temporary name: the version the move was planned
    /// from, and the one the server has there now (on S3 a new one), which the move from
    /// there expects.
    pub aside: std::collections::HashMap<RelPath, (String, String)>,
    /// Each rename on the server of this pass that gave the file a new version (S3's copy),
    /// by new name: the version it was planned with and the one it has now. A later step of
    /// the pass holding the listing's entry for that name takes the new version from here.
    pub moved: std::collections::HashMap<RelPath, (String, String)>,
}

impl Report {
    /// Adds the report of another batch of the same pass to this one.
    pub fn absorb(&mut self, r: Report) {
        let Report {
            done,
            uploaded,
            uploaded_bytes,
            placeholders,
            refreshed,
            renamed,
            deleted,
            conflicts,
            errors,
            offline,
            aside,
            moved,
        } = r;
        self.done += done;
        self.uploaded += uploaded;
        self.uploaded_bytes += uploaded_bytes;
        self.placeholders += placeholders;
        self.refreshed += refreshed;
        self.renamed += renamed;
        self.deleted += deleted;
        self.conflicts.extend(conflicts);
        self.errors.extend(errors);
        self.offline |= offline;
        self.aside.extend(aside);
        self.moved.extend(moved);
    }

    /// `entry` as the server has it now: with the version a rename of this pass gave the
    /// file, if the entry names the version the rename was planned with.
    fn current<'e>(&self, entry: &'e RemoteEntry) -> std::borrow::Cow<'e, RemoteEntry> {
        match self.moved.get(&entry.path) {
            Some((was, now)) if entry.version.token() == *was => {
                let mut e = entry.clone();
                e.version = Version::from_token(now).unwrap_or_else(|| e.version.clone());
                std::borrow::Cow::Owned(e)
            }
            _ => std::borrow::Cow::Borrowed(entry),
        }
    }
}

pub struct Executor<'a> {
    pub root: &'a str,
    pub remote: &'a dyn Remote,
    pub local: &'a dyn LocalFs,
    pub index: &'a dyn Index,
    /// Host name for conflict copies.
    pub host: String,
    /// Test hook: side-effect steps left before a simulated crash.
    pub crash_after: Option<&'a AtomicI64>,
}

/// An anonymous scratch file for comparing remote bytes.
pub fn scratch() -> io::Result<File> {
    // SAFETY: plain syscall with a static name.
    let fd = unsafe { libc::memfd_create(c"skyfill-compare".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A fresh staging name next to `p` (ignored by sync: `.~skyfill-*`).
fn temp_beside(p: &RelPath) -> Result<RelPath, ExecError> {
    p.parent()
        .unwrap_or_default()
        .join(&format!(".~skyfill-{:x}.tmp", rand::random::<u64>()))
        .map_err(|e| ExecError::Skipped {
            path: p.clone(),
            what: e.to_string(),
        })
}

impl Executor<'_> {
    fn step(&self) -> Result<(), ExecError> {
        match self.crash_after {
            Some(c) if c.fetch_sub(1, Ordering::SeqCst) <= 0 => Err(ExecError::Crashed),
            _ => Ok(()),
        }
    }

    fn base_put(&self, p: &RelPath, e: &RemoteEntry) -> Result<(), ExecError> {
        self.index
            .base_put(self.root, p.as_str(), &BaseEntry::of(e))?;
        Ok(())
    }

    /// Whether the base holds version `was` for `from` (the bytes both sides agreed on).
    fn base_names(&self, from: &RelPath, was: &str) -> Result<bool, ExecError> {
        let Some(old) = Version::from_token(was) else {
            return Ok(false);
        };
        let base = self.index.base_get(self.root, from.as_str())?;
        Ok(base.is_some_and(|b| same_version(&b.version, &old)))
    }

    /// Fails (skipped) unless the server still has `version` at `p`, or the version a move
    /// aside of this pass left there (`aside`: on S3 a new one). Returns the version the
    /// file was planned from (before that move aside, if there was one).
    async fn still_at(
        &self,
        p: &RelPath,
        version: &str,
        aside: &std::collections::HashMap<RelPath, (String, String)>,
    ) -> Result<String, ExecError> {
        let cur = self.remote.stat(p).await?;
        if same_version(version, &cur.version) {
            return Ok(version.to_string());
        }
        match aside.get(p) {
            Some((planned, there)) if same_version(there, &cur.version) => Ok(planned.clone()),
            _ => Err(ExecError::Skipped {
                path: p.clone(),
                what: "changed on the server since it was listed".into(),
            }),
        }
    }

    /// Moves the base entry of `from` to `to`, with the new version a move gave it, if any.
    fn base_move(
        &self,
        from: &RelPath,
        to: &RelPath,
        version: Option<&str>,
    ) -> Result<(), ExecError> {
        if let Some(mut b) = self.index.base_get(self.root, from.as_str())? {
            if let Some(v) = version {
                b.version = v.to_string();
            }
            self.index.base_put(self.root, to.as_str(), &b)?;
        }
        self.index.base_remove(self.root, from.as_str())?;
        Ok(())
    }

    /// Runs `ops` in order. Errors of single ops are reported and the pass goes on; an
    /// unreachable server stops it. `Err` only for the simulated crash.
    pub async fn run(&self, ops: &[Op]) -> Result<Report, ExecError> {
        let mut rep = Report::default();
        let mut failed: Vec<RelPath> = Vec::new();
        for op in ops {
            // A folder is removed only if nothing below it failed.
            if let Op::RemoteDelete {
                path,
                kind: Kind::Dir,
                ..
            }
            | Op::LocalDelete {
                path,
                kind: Kind::Dir,
                ..
            } = op
            {
                if failed.iter().any(|f| f.starts_with(path)) {
                    continue;
                }
            }
            let span = tracing::info_span!("sync", op = op.verb(), path = %op.path());
            match self.one(op, &mut rep).instrument(span).await {
                Ok(()) => rep.done += 1,
                Err(ExecError::Crashed) => return Err(ExecError::Crashed),
                Err(ExecError::Remote(e)) if e.is_offline() => {
                    tracing::info!(error = %e, "server unreachable; sync resumes when it is back");
                    rep.offline = true;
                    rep.errors.push((op.path().clone(), e.to_string()));
                    break;
                }
                Err(e) => {
                    tracing::warn!(op = op.verb(), path = %op.path(), error = %e, "sync step failed; retried next pass");
                    failed.push(op.path().clone());
                    if let Op::LocalRename { from, .. }
                    | Op::RemoteRename { from, .. }
                    | Op::RemoteAside { from, .. } = op
                    {
                        failed.push(from.clone());
                    }
                    rep.errors.push((op.path().clone(), e.to_string()));
                }
            }
        }
        let _ = self.index.flush();
        Ok(rep)
    }

    async fn one(&self, op: &Op, rep: &mut Report) -> Result<(), ExecError> {
        match op {
            Op::LocalMkdir { entry } => {
                self.local.mkdir(&entry.path).map_err(io_at(&entry.path))?;
                self.step()?;
                self.base_put(&entry.path, entry)
            }
            Op::RemoteMkdir { path } => {
                self.step()?;
                self.mkdir_p(path).await?;
                let e = match self.remote.stat(path).await {
                    Ok(e) => e,
                    // Folders are implicit on S3 servers without markers: an empty one
                    // exists only here (and is created again each pass, harmlessly).
                    Err(RemoteError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                if e.kind != Kind::Dir {
                    return Err(ExecError::Skipped {
                        path: path.clone(),
                        what: "a file took this name on the server".into(),
                    });
                }
                self.step()?;
                self.base_put(path, &e)
            }
            Op::LocalRename { from, to, base } => {
                self.local_move(from, to)?;
                rep.renamed += 1;
                // The record learns its new path before the base does: after a crash in
                // between, the next pass finds the rename done and moves the base (Rebase).
                self.step()?;
                self.local.set_origin(to, to, None).map_err(io_at(to))?;
                self.step()?;
                self.base_move(base, to, None)
            }
            Op::RemoteRename { from, to, version } => {
                let at = self.still_at(from, version, &rep.aside).await?;
                self.step()?;
                let moved = if to.starts_with(from) {
                    // Moved below its own old name (`mv a x; mkdir a; mv x a/b`): the old
                    // name must become a folder on the server too, so step aside first.
                    let tmp = temp_beside(from)?;
                    self.remote.rename(from, &tmp, Kind::File).await?;
                    self.mkdir_p(&to.parent().unwrap_or_default()).await?;
                    self.remote.rename(&tmp, to, Kind::File).await?
                } else {
                    match self.remote.rename(from, to, Kind::File).await {
                        Ok(m) => m,
                        Err(e) => match (e, to.parent().filter(|p| !p.is_root())) {
                            // The target folder went away on the server meanwhile.
                            (RemoteError::NotFound { path }, Some(parent)) if &path != from => {
                                self.mkdir_p(&parent).await?;
                                self.remote.rename(from, to, Kind::File).await?
                            }
                            (e, _) => return Err(e.into()),
                        },
                    }
                };
                rep.renamed += 1;
                // The version the move gave the file, if a new one (S3's copy). The record
                // and later steps of this pass learn it (even after an upload a crash left
                // unconfirmed); the base only where it held the planned version: where the
                // server had changed the file since, the base keeps its version, so the next
                // pass sees that change.
                let after = Version::from_token(&at)
                    .map(|v| moved.version(&v).token())
                    .filter(|a| *a != at);
                if let Some(a) = &after {
                    rep.moved.insert(to.clone(), (version.clone(), a.clone()));
                }
                let now = match &after {
                    Some(a) if self.base_names(from, &at)? => Some(a.as_str()),
                    _ => None,
                };
                self.step()?;
                // The record still names the version the pass planned from (a move aside
                // left it alone).
                let record = after.as_deref().map(|n| (version.as_str(), n));
                self.local.set_origin(to, to, record).map_err(io_at(to))?;
                self.step()?;
                self.base_move(from, to, now)?;
                self.index.flush()?;
                Ok(())
            }
            Op::RemoteAside { from, to, version } => {
                let at = self.still_at(from, version, &rep.aside).await?;
                self.step()?;
                let moved = self.remote.rename(from, to, Kind::File).await?;
                let there = Version::from_token(&at).map(|v| moved.version(&v).token());
                rep.aside.insert(
                    to.clone(),
                    (at.clone(), there.unwrap_or_else(|| at.clone())),
                );
                // The local record still names `from` and its version, and so does the base
                // at `to` (not the new version a copy gave it on S3): after a crash here
                // the next pass finds the file there by that version, and replays the rename
                // from there (on S3 also a change on the server: the record is refreshed).
                self.step()?;
                self.base_move(from, to, None)?;
                self.index.flush()?;
                Ok(())
            }
            Op::Upload { path, expect } => self.upload(path, expect.as_deref(), rep).await,
            Op::Placeholder { entry } => {
                self.local
                    .create_placeholder(entry)
                    .map_err(io_at(&entry.path))?;
                rep.placeholders += 1;
                self.step()?;
                self.base_put(&entry.path, entry)
            }
            Op::Refresh { entry, expect } => {
                let entry = &*rep.current(entry);
                self.local
                    .refresh(entry, expect)
                    .map_err(io_at(&entry.path))?;
                rep.refreshed += 1;
                self.step()?;
                self.base_put(&entry.path, entry)
            }
            Op::Rebase { from, entry } => {
                match self.local.set_origin(&entry.path, &entry.path, None) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_at(&entry.path)(e))
                    }
                    _ => {}
                }
                self.step()?;
                self.index.base_remove(self.root, from.as_str())?;
                self.base_put(&entry.path, entry)
            }
            Op::Adopt { path, entry } => {
                let entry = &*rep.current(entry);
                if entry.kind == Kind::File {
                    self.local
                        .set_origin(path, path, None)
                        .map_err(io_at(path))?;
                }
                self.step()?;
                self.base_put(path, entry)
            }
            Op::Resolve { path, entry } => self.resolve(path, entry, rep).await,
            Op::Rematch {
                from,
                origin,
                entry,
            } => {
                let (file, stamp) = self.local.open_upload(from).map_err(io_at(from))?;
                if self.same_content(&entry.path, &file, entry).await? {
                    tracing::info!(path = %entry.path, "an interrupted upload was confirmed");
                    if from != &entry.path {
                        self.local_move(from, &entry.path)?;
                        rep.renamed += 1;
                    }
                    self.step()?;
                    self.local
                        .mark_synced(&entry.path, entry, stamp)
                        .map_err(io_at(&entry.path))?;
                    self.step()?;
                    self.index.base_remove(self.root, origin.as_str())?;
                    self.base_put(&entry.path, entry)?;
                } else {
                    self.step()?;
                    self.index.base_remove(self.root, origin.as_str())?;
                }
                self.index.flush()?;
                Ok(())
            }
            Op::SetAside {
                path,
                keep_record,
                origin,
            } => {
                let aside = self.aside_name(path)?;
                if let Some(o) = origin {
                    self.local.set_origin(path, o, None).map_err(io_at(path))?;
                }
                self.step()?;
                self.local
                    .set_aside(path, &aside, *keep_record)
                    .map_err(io_at(path))?;
                self.step()?;
                self.index.base_remove(self.root, path.as_str())?;
                rep.conflicts.push((path.clone(), aside));
                Ok(())
            }
            Op::LocalDelete { path, kind, expect } => {
                // The base goes first: after a crash in between, the file is a new one to
                // upload again, never a stale agreement a later edit would be uploaded over.
                self.step()?;
                self.index.base_remove(self.root, path.as_str())?;
                self.index.flush()?;
                self.step()?;
                self.local
                    .remove(path, *kind, expect.as_deref())
                    .map_err(io_at(path))?;
                rep.deleted += 1;
                Ok(())
            }
            Op::RemoteDelete { path, kind, expect } => {
                match (kind, expect) {
                    // No DELETE precondition is portable: compare just before.
                    (Kind::File, Some(v)) => match self.remote.stat(path).await {
                        Ok(cur) if !same_version(v, &cur.version) => {
                            return Err(ExecError::Skipped {
                                path: path.clone(),
                                what: "changed on the server; not deleting it".into(),
                            })
                        }
                        Ok(_) | Err(RemoteError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    },
                    // A folder only when empty: servers delete folders recursively.
                    (Kind::Dir, _) => match self.remote.list_dir(path).await {
                        Ok(v) if !v.is_empty() => {
                            return Err(ExecError::Skipped {
                                path: path.clone(),
                                what: "the server folder is not empty; not deleting it".into(),
                            })
                        }
                        Ok(_) | Err(RemoteError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    },
                    _ => {}
                }
                self.step()?;
                match self.remote.delete(path, *kind).await {
                    Ok(()) | Err(RemoteError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                rep.deleted += 1;
                self.step()?;
                self.index.base_remove(self.root, path.as_str())?;
                self.index.flush()?;
                Ok(())
            }
            Op::Forget { path } => {
                self.index.base_remove(self.root, path.as_str())?;
                Ok(())
            }
        }
    }

    /// Renames a local file, also below its own old name (the server made a folder of it):
    /// then it steps aside under a temporary name first.
    fn local_move(&self, from: &RelPath, to: &RelPath) -> Result<(), ExecError> {
        if !to.starts_with(from) {
            return self.local.rename(from, to).map_err(io_at(to));
        }
        let tmp = temp_beside(from)?;
        self.local.rename(from, &tmp).map_err(io_at(from))?;
        if let Some(parent) = to.parent() {
            self.local.mkdir(&parent).map_err(io_at(&parent))?;
        }
        self.local.rename(&tmp, to).map_err(io_at(to))
    }

    /// Creates a remote folder and any missing parents.
    async fn mkdir_p(&self, path: &RelPath) -> Result<(), ExecError> {
        let mut todo = vec![path.clone()];
        let mut cur = path.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            match self.remote.stat(&p).await {
                Ok(_) => break,
                Err(RemoteError::NotFound { .. }) => todo.push(p.clone()),
                Err(e) => return Err(e.into()),
            }
            cur = p.parent();
        }
        for p in todo.iter().rev() {
            match self.remote.mkdir(p).await {
                Ok(()) | Err(RemoteError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn upload(
        &self,
        path: &RelPath,
        expect: Option<&str>,
        rep: &mut Report,
    ) -> Result<(), ExecError> {
        let (file, stamp) = self.local.open_upload(path).map_err(io_at(path))?;
        let pre = match expect.and_then(Version::from_token) {
            Some(v) => Precondition::IfMatch(v),
            None => Precondition::MustNotExist,
        };
        // Intent first: after a crash the uploaded object is recognised (by size, then
        // bytes) even if it was renamed on the server meanwhile, and never uploaded twice.
        {
            if pre == Precondition::MustNotExist {
                self.local.mark_pending(path, stamp).map_err(io_at(path))?;
            }
            self.step()?;
            self.index.base_put(
                self.root,
                path.as_str(),
                &BaseEntry {
                    kind: Kind::File,
                    version: String::new(),
                    size: stamp.0,
                    file_id: None,
                },
            )?;
            self.index.flush()?;
        }
        self.step()?;
        let mut res = self.remote.upload(path, &file, &pre).await;
        if let Err(RemoteError::NotFound { .. }) = res {
            // The folder went away on the server meanwhile.
            if let Some(parent) = path.parent().filter(|p| !p.is_root()) {
                self.mkdir_p(&parent).await?;
                res = self.remote.upload(path, &file, &pre).await;
            }
        }
        match res {
            Ok(e) => self.uploaded(path, &e, stamp, rep),
            Err(RemoteError::PreconditionFailed { .. } | RemoteError::AlreadyExists { .. }) => {
                tracing::info!(path = %path, "changed on the server meanwhile: resolving");
                let cur = self.remote.stat(path).await?;
                self.resolve(path, &cur, rep).await
            }
            Err(e) => Err(e.into()),
        }
    }

    fn uploaded(
        &self,
        path: &RelPath,
        e: &RemoteEntry,
        stamp: Stamp,
        rep: &mut Report,
    ) -> Result<(), ExecError> {
        rep.uploaded += 1;
        rep.uploaded_bytes += stamp.0;
        self.step()?;
        self.local
            .mark_synced(path, e, stamp)
            .map_err(io_at(path))?;
        self.step()?;
        self.base_put(path, e)?;
        self.index.flush()?;
        Ok(())
    }

    /// Both sides have content at `path`: adopt it if identical, otherwise keep the remote
    /// version at the name and the local one as an uploaded conflict copy.
    async fn resolve(
        &self,
        path: &RelPath,
        entry: &RemoteEntry,
        rep: &mut Report,
    ) -> Result<(), ExecError> {
        if entry.kind != Kind::File {
            return Box::pin(self.one(
                &Op::SetAside {
                    path: path.clone(),
                    keep_record: false,
                    origin: None,
                },
                rep,
            ))
            .await;
        }
        let (file, stamp) = self.local.open_upload(path).map_err(io_at(path))?;
        if self.same_content(path, &file, entry).await? {
            tracing::info!(path = %path, "same content on both sides: adopted");
            self.step()?;
            self.local
                .mark_synced(path, entry, stamp)
                .map_err(io_at(path))?;
            self.step()?;
            return self.base_put(path, entry);
        }
        let aside = self.aside_name(path)?;
        tracing::warn!(path = %path, copy = %aside, "conflict: both sides changed; keeping both");
        self.step()?;
        self.local
            .set_aside(path, &aside, false)
            .map_err(io_at(path))?;
        rep.conflicts.push((path.clone(), aside.clone()));
        self.step()?;
        self.local.create_placeholder(entry).map_err(io_at(path))?;
        self.step()?;
        self.base_put(path, entry)?;
        // The conflict copy goes up now (a failure leaves it to the next pass).
        let (file, stamp) = self.local.open_upload(&aside).map_err(io_at(&aside))?;
        self.step()?;
        let e = self
            .remote
            .upload(&aside, &file, &Precondition::MustNotExist)
            .await?;
        self.uploaded(&aside, &e, stamp, rep)
    }

    fn aside_name(&self, path: &RelPath) -> Result<RelPath, ExecError> {
        // The root's clock (the one its mtimes are written with).
        let now = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(self.local.now_secs().max(0) as u64);
        let stamp = conflict::local_stamp(now);
        let parent = path.parent().unwrap_or_default();
        for n in 1..1000 {
            let name = conflict::conflict_name(path.name(), &stamp, &self.host, n);
            let p = parent.join(&name).map_err(|e| ExecError::Skipped {
                path: path.clone(),
                what: format!("no conflict name: {e}"),
            })?;
            // Free here and, as far as the base knows, on the server (a copy made earlier in
            // the same second may still be there although it is gone here).
            if !self.local.exists(&p) && self.index.base_get(self.root, p.as_str())?.is_none() {
                return Ok(p);
            }
        }
        Err(ExecError::Skipped {
            path: path.clone(),
            what: "no free conflict name".into(),
        })
    }

    async fn same_content(
        &self,
        path: &RelPath,
        local: &File,
        entry: &RemoteEntry,
    ) -> Result<bool, ExecError> {
        let size = local.metadata().map_err(io_at(path))?.len();
        if size != entry.size {
            return Ok(false);
        }
        let buf = scratch().map_err(io_at(path))?;
        // Compared one transfer-sized piece at a time.
        let chunk = crate::remote::transfer::Transfer::default().chunk;
        let mut a = vec![0u8; chunk as usize];
        let mut b = vec![0u8; chunk as usize];
        let mut off = 0;
        while off < size {
            let n = chunk.min(size - off);
            self.remote
                .read_range(crate::remote::ReadRange::new(path, &entry.version, off, n, &buf).to(0))
                .await?;
            buf.read_exact_at(&mut a[..n as usize], 0)
                .map_err(io_at(path))?;
            local
                .read_exact_at(&mut b[..n as usize], off)
                .map_err(io_at(path))?;
            if a[..n as usize] != b[..n as usize] {
                return Ok(false);
            }
            off += n;
        }
        Ok(true)
    }
}

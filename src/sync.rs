//! Two-way sync: the states it compares and the operations it produces.
//!
//! Three views of a root meet here: the **base** (what both sides last agreed on, kept in the
//! index), the **local** tree (a scan of the files and their xattr records) and the **remote**
//! listing. [`plan::plan`] is a pure function of the three that returns [`Op`]s;
//! [`execute::Executor`] is the one place that carries them out, against any [`Remote`] and any
//! [`local::LocalFs`] (the real sync root in the daemon, an in-memory tree in property tests).
//!
//! [`Remote`]: crate::remote::Remote

pub mod budget;
pub mod conflict;
pub mod execute;
pub mod ignore;
pub mod local;
#[cfg(any(test, feature = "testing"))]
pub mod memlocal;
pub mod plan;
pub mod remote_scan;
pub mod watch;

use crate::hsm::meta::{Fill, Pin};
use crate::model::{Kind, RelPath, RemoteEntry, Version};
use std::collections::{BTreeMap, HashMap};

/// A local file's identity for change detection: size and mtime (seconds, nanoseconds).
pub type Stamp = (u64, i64, u32);

pub use crate::index::BaseEntry;

/// The xattr record of a local file, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    /// The remote path the record was written for (differs from the file's path after a
    /// local rename or move: the record travels with the inode).
    pub origin: RelPath,
    pub version: String,
    pub fill: Fill,
    pub pin: Pin,
    /// Size and mtime when last in sync.
    pub size: u64,
    pub mtime: (i64, u32),
    /// Set when the record keeps only a hash of its remote path and the file is not at the
    /// path with that hash (renamed here since): `origin` is then unknown until
    /// [`resolve_origins`] finds the path among the base's and the server's.
    pub origin_hash: Option<u64>,
}

/// Gives records that name their remote path by a hash (see `LocalRecord::origin_hash`)
/// the candidate path with that hash. A record none matches names a path that is in
/// neither the base nor the listing (a crash left it, or the server renamed it too): it
/// gets a stand-in origin under Skyfill's own ignored prefix, which no base or listing holds,
/// and the planner treats it as it treats any origin that exists nowhere. Returns the paths
/// of those files.
pub fn resolve_origins<'a>(
    local: &mut LocalMap,
    candidates: impl IntoIterator<Item = &'a RelPath>,
) -> Vec<RelPath> {
    let mut want: HashMap<u64, Vec<RelPath>> = HashMap::new();
    for (p, e) in local.iter() {
        if let Some(h) = e.record.as_ref().and_then(|r| r.origin_hash) {
            want.entry(h).or_default().push(p.clone());
        }
    }
    if want.is_empty() {
        return Vec::new();
    }
    for c in candidates {
        if let Some(files) = want.remove(&crate::hsm::meta::path_hash(c.as_str())) {
            for f in files {
                if let Some(r) = local.get_mut(&f).and_then(|e| e.record.as_mut()) {
                    r.origin = c.clone();
                    r.origin_hash = None;
                }
            }
            if want.is_empty() {
                break;
            }
        }
    }
    let mut lost = Vec::new();
    for (h, files) in want {
        let stand_in = RelPath::parse(&format!(".~skyfill-origin-{h:016x}")).expect("valid name");
        for f in files {
            if let Some(r) = local.get_mut(&f).and_then(|e| e.record.as_mut()) {
                r.origin = stand_in.clone();
                r.origin_hash = None;
            }
            lost.push(f);
        }
    }
    lost
}

/// One entry of a local scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub kind: Kind,
    pub size: u64,
    pub mtime: (i64, u32),
    /// Present for files Skyfill manages in this root.
    pub record: Option<LocalRecord>,
}

impl LocalEntry {
    pub fn stamp(&self) -> Stamp {
        (self.size, self.mtime.0, self.mtime.1)
    }

    /// Content differs from what the record describes (or there is no record). Only complete
    /// files can differ: writers are given the whole file before their first write.
    pub fn modified(&self) -> bool {
        match &self.record {
            None => self.kind == Kind::File,
            // An empty version marks an upload that was started but not confirmed.
            Some(r) => {
                r.fill == Fill::Complete
                    && (r.version.is_empty() || (self.size, self.mtime) != (r.size, r.mtime))
            }
        }
    }

    /// Some bytes are not local (a placeholder or partial file).
    pub fn incomplete(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.fill != Fill::Complete)
    }

    /// Unchanged since it was last in sync *at this path*.
    pub fn clean_at(&self, p: &RelPath) -> bool {
        self.kind == Kind::File
            && !self.modified()
            && self.record.as_ref().is_some_and(|r| &r.origin == p)
    }

    /// The remote version this file's content was based on, if it was ever in sync at `p`.
    pub fn known_version(&self, p: &RelPath) -> Option<&str> {
        self.record
            .as_ref()
            .filter(|r| &r.origin == p)
            .map(|r| r.version.as_str())
    }
}

/// One step of a plan. The executor runs them in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a local directory for a remote one.
    LocalMkdir { entry: RemoteEntry },
    /// Create a remote directory for a local one.
    RemoteMkdir { path: RelPath },
    /// A remote rename, replayed locally (the file keeps its bytes and settings).
    /// `base`: the path the base knew the file under (`from`, unless the file had also been
    /// renamed locally).
    LocalRename {
        from: RelPath,
        to: RelPath,
        base: RelPath,
    },
    /// A local rename or move, replayed remotely (`MOVE`, or copy+delete on S3).
    RemoteRename {
        from: RelPath,
        to: RelPath,
        version: String,
    },
    /// The first half of a remote rename into a folder that another rename's file leaves in
    /// the same pass: the file steps aside to a temporary name (`to`), and a `RemoteRename`
    /// from there follows once that folder exists (see `plan`).
    RemoteAside {
        from: RelPath,
        to: RelPath,
        version: String,
    },
    /// Upload local content; `expect` is the remote version it was based on (`If-Match`), or
    /// `None` for a new file (`If-None-Match: *`).
    Upload {
        path: RelPath,
        expect: Option<String>,
    },
    /// A new remote file becomes a placeholder.
    Placeholder { entry: RemoteEntry },
    /// A remote change to a clean local file: the placeholder takes the new size, mtime and
    /// version (pinned files download again, others go back to online-only).
    Refresh { entry: RemoteEntry, expect: String },
    /// A remote file that may be the confirmation of an upload interrupted by a crash (the
    /// base knows only its size): identical bytes make `from` that file (renamed to its
    /// remote name); different bytes drop the unconfirmed base entry at `origin`.
    Rematch {
        from: RelPath,
        origin: RelPath,
        entry: RemoteEntry,
    },
    /// The base entry at `from` now lives at `entry.path`: renamed the same way on both sides,
    /// or a rename replayed before a crash (the file's record follows where it is there).
    Rebase { from: RelPath, entry: RemoteEntry },
    /// Both sides already agree: record it.
    Adopt { path: RelPath, entry: RemoteEntry },
    /// Both sides changed (or were created): identical content is adopted, different content
    /// keeps the remote version at the name and the local one as a conflict copy.
    Resolve { path: RelPath, entry: RemoteEntry },
    /// Move a local entry aside under a conflict name: one in the way of a remote entry of
    /// the other kind, or a renamed file whose new name was taken on the server meanwhile
    /// (`keep_record`: it then travels as a rename on the next pass).
    /// `origin`: the remote path the file's record must name first, when it was inferred.
    SetAside {
        path: RelPath,
        keep_record: bool,
        origin: Option<RelPath>,
    },
    /// Remote deletion of a clean local entry.
    LocalDelete {
        path: RelPath,
        kind: Kind,
        expect: Option<String>,
    },
    /// Local deletion of an unchanged remote entry.
    RemoteDelete {
        path: RelPath,
        kind: Kind,
        expect: Option<String>,
    },
    /// Gone on both sides.
    Forget { path: RelPath },
}

impl Op {
    /// The path the op is about (for logs and errors).
    pub fn path(&self) -> &RelPath {
        match self {
            Op::LocalMkdir { entry }
            | Op::Placeholder { entry }
            | Op::Refresh { entry, .. }
            | Op::Rematch { entry, .. }
            | Op::Rebase { entry, .. } => &entry.path,
            Op::RemoteMkdir { path }
            | Op::Upload { path, .. }
            | Op::Adopt { path, .. }
            | Op::Resolve { path, .. }
            | Op::SetAside { path, .. }
            | Op::LocalDelete { path, .. }
            | Op::RemoteDelete { path, .. }
            | Op::Forget { path } => path,
            Op::LocalRename { to, .. }
            | Op::RemoteRename { to, .. }
            | Op::RemoteAside { to, .. } => to,
        }
    }

    /// Short verb for logs and progress.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::LocalMkdir { .. } => "mkdir-local",
            Op::RemoteMkdir { .. } => "mkdir-remote",
            Op::LocalRename { .. } => "rename-local",
            Op::RemoteRename { .. } => "rename-remote",
            Op::RemoteAside { .. } => "aside-remote",
            Op::Upload { .. } => "upload",
            Op::Placeholder { .. } => "placeholder",
            Op::Refresh { .. } => "refresh",
            Op::Adopt { .. } => "adopt",
            Op::Rematch { .. } => "rematch",
            Op::Rebase { .. } => "rebase",
            Op::Resolve { .. } => "resolve",
            Op::SetAside { .. } => "set-aside",
            Op::LocalDelete { .. } => "delete-local",
            Op::RemoteDelete { .. } => "delete-remote",
            Op::Forget { .. } => "forget",
        }
    }
}

pub type BaseMap = BTreeMap<RelPath, BaseEntry>;
pub type LocalMap = BTreeMap<RelPath, LocalEntry>;
pub type RemoteMap = BTreeMap<RelPath, RemoteEntry>;

/// Versions compare by token (weakness ignored, as [`Version::same`]).
pub fn same_version(token: &str, v: &Version) -> bool {
    Version::from_token(token).is_some_and(|t| t.same(v))
}

/// Everything one sync pass needs.
pub struct Pass<'a> {
    pub root: &'a str,
    pub remote: &'a dyn crate::remote::Remote,
    pub local: &'a dyn local::LocalFs,
    pub index: &'a dyn crate::index::Index,
    pub ignore: &'a ignore::Ignore,
    pub settle_secs: i64,
    pub host: String,
    /// The previous remote listing (incremental listing where folder ETags allow).
    pub prev: Option<&'a remote_scan::Snapshot>,
    /// Most remote entries the root may have (configuration, not the server, decides).
    pub max_entries: u64,
    /// Test hook: simulated crash after this many side effects.
    pub crash_after: Option<&'a std::sync::atomic::AtomicI64>,
    /// Most folders one pass over changed folders holds at once ([`MAX_FOLDERS`] in the
    /// daemon); more are synced in batches of this many ([`Pass::run_batched`]).
    pub folders_per_pass: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("listing the server: {0}")]
    Remote(#[from] crate::remote::RemoteError),
    #[error("scanning the sync root: {0}")]
    Scan(std::io::Error),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Exec(#[from] execute::ExecError),
}

#[cfg(test)]
#[test]
fn pass_errors_say_in_english_what_they_display() {
    let e = PassError::Remote(crate::remote::RemoteError::Network {
        path: crate::model::RelPath::root(),
        detail: "refused".into(),
    });
    assert_eq!(e.said().english(), e.to_string());
    let e = PassError::Scan(std::io::Error::from_raw_os_error(libc::EACCES));
    assert_eq!(
        e.said().english(),
        e.to_string().replace(" (os error 13)", "")
    );
}

impl PassError {
    /// The same text as its `Display`, to be said in a client's language.
    pub fn said(&self) -> crate::i18n::Said {
        match self {
            PassError::Remote(e) => crate::said!("listing the server: ").then(e.said()),
            PassError::Scan(e) => {
                crate::said!("scanning the sync root: ").then(crate::i18n::said_os(e))
            }
            other => crate::i18n::Said::text(other.to_string()),
        }
    }

    pub fn is_offline(&self) -> bool {
        matches!(self, PassError::Remote(e) if e.is_offline())
    }
}

/// The outcome of a pass.
#[derive(Debug, Default)]
pub struct Outcome {
    pub plan: plan::Plan,
    pub report: execute::Report,
    pub snapshot: remote_scan::Snapshot,
    /// Passes over changed folders this outcome adds up ([`Pass::run_batched`]).
    pub batches: u32,
}

/// A folder read failed because it is no longer there (or no longer a folder).
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Entries of one folder, as [`Pass::remote_changes`] and [`Pass::local_changes`] count
/// them: how many and the sum of their paths' hashes (a keyed hash, so a listing cannot be
/// made to match a base it does not hold).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    entries: u64,
    hashes: u64,
}

impl Tally {
    fn add(&mut self, hash: u64) {
        self.entries += 1;
        self.hashes = self.hashes.wrapping_add(hash);
    }
}

/// What [`Pass::remote_changes`] found.
#[derive(Debug, Default)]
pub struct RemoteChanges {
    /// The folders where the server differs from the base (None: too many).
    pub folders: Option<std::collections::BTreeSet<RelPath>>,
    /// The root's ETag read before the listing, where folder ETags propagate (the server
    /// gives file ids: Nextcloud, ownCloud, as [`remote_scan::list`] tells).
    pub root: Option<Version>,
}

/// What [`Pass::run_changed`] did.
#[derive(Debug, Default)]
pub struct Changed {
    pub outcome: Outcome,
    /// A full pass ran: the changes needed one (see [`Pass::run_folders`]), or the server
    /// differs from the base in too many folders.
    pub full: bool,
    /// The full pass was [`Pass::run_full`]'s comparisons and a pass over the folders they
    /// found: the whole tree was never held, and the snapshot keeps no listing.
    pub streamed: bool,
    /// The comparison with the server, when one ran: the folders found to differ (`None`:
    /// more than [`MAX_COMPARED`]) and how long it took.
    pub compared: Option<(
        Option<std::collections::BTreeSet<RelPath>>,
        std::time::Duration,
    )>,
    /// After a limited pass, the server's version at which it is known to match the base
    /// (the next comparison's short-cut, [`remote_scan::Snapshot::base_version`]): kept only
    /// when nothing changed the base since it was seen.
    pub base_version: Option<Version>,
}

/// Most folders one pass over changed folders holds at once; more are synced in batches.
pub const MAX_FOLDERS: usize = 256;

/// Most folders a comparison with the base reports; past it (nearly every folder of a
/// very large root differs) the whole tree goes through one pass.
pub const MAX_COMPARED: usize = 1 << 16;

/// Why a folder scope cannot be synced alone (a full pass must look).
fn needs_full(why: &str, p: &RelPath) -> Result<Option<Outcome>, PassError> {
    tracing::debug!(path = %p, why, "the changed folders need a full pass");
    Ok(None)
}

impl Outcome {
    /// Adds the outcome of another batch of the same pass to this one.
    pub fn absorb(&mut self, o: Outcome) {
        self.plan.ops.extend(o.plan.ops);
        self.plan.waiting.extend(o.plan.waiting);
        self.report.absorb(o.report);
        self.snapshot.listed_dirs += o.snapshot.listed_dirs;
        self.batches += o.batches;
    }

    /// The pass left nothing that only a full pass finds: no file still being written, no
    /// error, no conflict, nothing set aside or rematched (their follow-ups are the daemon's
    /// own changes, which the folder watcher does not report). After a pass that is not
    /// settled, the next one looks at the whole root.
    pub fn settled(&self) -> bool {
        self.plan.waiting.is_empty()
            && self.report.errors.is_empty()
            && !self.report.offline
            && !self.plan.ops.iter().any(|o| {
                matches!(
                    o,
                    Op::SetAside { .. }
                        | Op::Resolve { .. }
                        | Op::Rematch { .. }
                        | Op::Rebase { .. }
                )
            })
    }
}

impl Pass<'_> {
    /// Scan, list, plan, execute: the whole root held in memory at once. The daemon's full
    /// passes go through [`Pass::run_full`], which comes here only when the changes need it.
    pub async fn run(&self) -> Result<Outcome, PassError> {
        let (plan, snapshot) = self.full_plan().await?;
        let report = self.execute(&plan).await?;
        let mut out = Outcome {
            plan,
            report,
            snapshot,
            batches: 0,
        };
        // The server is what the base says only if the plan neither acts nor waits: a file
        // still being written waits whatever the server did to it meanwhile (found by the
        // sync model: a remote delete under a local edit left the base behind the server).
        out.snapshot.base_version = (out.plan.ops.is_empty() && out.plan.waiting.is_empty())
            .then(|| out.snapshot.root_version.clone())
            .flatten();
        Ok(out)
    }

    /// What a full pass would do, with no side effect: the whole local scan, the whole
    /// listing and the whole base, planned together ([`Pass::run`]'s first half; the sync
    /// model's reference for what [`Pass::run_full`]'s comparisons must find).
    pub async fn full_plan(&self) -> Result<(plan::Plan, remote_scan::Snapshot), PassError> {
        let mut local = self.local.scan().map_err(PassError::Scan)?;
        let snapshot = remote_scan::list(self.remote, self.prev, self.max_entries).await?;
        let base: BaseMap = self
            .index
            .base_all(self.root)?
            .into_iter()
            .filter_map(|(p, b)| Some((RelPath::parse(&p).ok()?, b)))
            .collect();
        for p in resolve_origins(&mut local, base.keys().chain(snapshot.entries.keys())) {
            tracing::debug!(path = %p, "renamed here from a path neither in the base nor on the server");
        }
        // The listing stays in the snapshot (the next pass lists from it where it can).
        let plan = self.plan(base, local, snapshot.entries.clone());
        Ok((plan, snapshot))
    }

    /// A full pass (after a start, a lost event queue or a pass that left work) that holds
    /// one folder at a time where it can: the local tree is compared with the base a folder
    /// at a time ([`Pass::local_changes`]), the listing streams past the base
    /// ([`Pass::remote_changes`]), and the folders where either differs get passes of their
    /// own, in batches ([`Pass::run_batched`]). Only when that cannot describe the changes (a
    /// folder made, removed or renamed, a remote rename, more than [`MAX_COMPARED`] folders)
    /// does the whole tree go through [`Pass::run`]. `matched_at` as for [`Pass::run_changed`].
    pub async fn run_full(&self, matched_at: Option<Version>) -> Result<Changed, PassError> {
        let t = std::time::Instant::now();
        let mut streamed = None;
        if let Some(mut dirs) = self.local_changes(MAX_COMPARED)? {
            let c = self
                .remote_changes(MAX_COMPARED, matched_at.as_ref())
                .await?;
            let compared = Some((c.folders.clone(), t.elapsed()));
            if let Some(theirs) = c.folders {
                let unchanged_there = theirs.is_empty();
                dirs.extend(theirs);
                let limited = if dirs.is_empty() {
                    Some(Outcome::default())
                } else {
                    self.run_batched(dirs).await?
                };
                if let Some(mut outcome) = limited {
                    // No listing is kept (its entries are what this pass does without),
                    // only whether folder ETags propagate and where the server matched.
                    outcome.snapshot.propagating = c.root.is_some();
                    outcome.snapshot.base_version = c
                        .root
                        .filter(|_| unchanged_there && outcome.plan.ops.is_empty());
                    streamed = Some((outcome, compared));
                }
            }
        }
        Ok(match streamed {
            Some((outcome, compared)) => Changed {
                outcome,
                full: true,
                streamed: true,
                compared,
                base_version: None,
            },
            None => Changed {
                outcome: self.run().await?,
                full: true,
                streamed: false,
                compared: None,
                base_version: None,
            },
        })
    }

    /// The folders where the local tree differs from the sync base, found a folder at a
    /// time (its entries and its base children, every local folder gone into): an entry on
    /// one side only, of another kind, or a file not clean at its path at the base's version.
    /// `None`: more than `limit` folders differ.
    pub fn local_changes(
        &self,
        limit: usize,
    ) -> Result<Option<std::collections::BTreeSet<RelPath>>, PassError> {
        let mut changed = std::collections::BTreeSet::new();
        let mut todo = vec![RelPath::root()];
        let hasher = std::collections::hash_map::RandomState::new();
        let hash = |p: &str| std::hash::BuildHasher::hash_one(&hasher, p);
        while let Some(d) = todo.pop() {
            // Each local entry is looked up in the base as it is read, and those the base
            // knows are tallied; the base's children of the folder are then tallied too: a
            // difference is an entry gone here. Neither side is held (a folder of 100,000
            // files costs its names). Every local folder is gone into: the base may know
            // what is below one it does not know itself (a pass stopped midway); one only
            // here and ignored is not.
            let (mut here, mut differs, mut failed) = (Tally::default(), false, None);
            let read = self.local.scan_dir_each(&d, &mut |p, le| {
                if failed.is_some() {
                    return;
                }
                let b = match self.index.base_get(self.root, p.as_str()) {
                    Ok(b) => b,
                    Err(e) => return failed = Some(e),
                };
                let Some(b) = b else {
                    if !self.ignore.matches(&p) {
                        differs = true;
                        if le.kind == Kind::Dir {
                            todo.push(p);
                        }
                    }
                    return;
                };
                here.add(hash(p.as_str()));
                let same = b.kind == le.kind
                    && (le.kind == Kind::Dir
                        || (le.clean_at(&p)
                            && le.record.as_ref().is_none_or(|r| r.origin_hash.is_none())
                            && le.known_version(&p) == Some(b.version.as_str())));
                differs |= !same;
                if le.kind == Kind::Dir {
                    todo.push(p);
                }
            });
            match read {
                Ok(()) => {}
                // Gone or replaced since its parent was read: the parent changed.
                Err(e) if gone(&e) => {
                    changed.insert(d.parent().unwrap_or_default());
                    continue;
                }
                Err(e) => return Err(PassError::Scan(e)),
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            if !differs {
                let mut base = Tally::default();
                self.index
                    .base_children_each(self.root, d.as_str(), &mut |p, _| base.add(hash(p)))?;
                differs = base != here;
            }
            if differs {
                changed.insert(d);
                if changed.len() > limit {
                    return Ok(None);
                }
            }
        }
        Ok(Some(changed))
    }

    /// A background pass: over `dirs` (the folders the watcher reported) and, when `remote`,
    /// the folders where the server differs from the base (`remote_changes`), each looked
    /// at alone (`run_folders`); a full pass where that cannot describe the changes.
    /// `matched_at` is the previous pass's [`Changed::base_version`] (or a full pass's
    /// snapshot's), taken: until this pass ends with nothing done, the base may no longer be
    /// what the server was at that version.
    pub async fn run_changed(
        &self,
        mut dirs: Vec<RelPath>,
        remote: bool,
        matched_at: Option<Version>,
    ) -> Result<Changed, PassError> {
        let (mut seen_at, mut compared) = (None, None);
        let more = if remote {
            let t = std::time::Instant::now();
            let c = self
                .remote_changes(MAX_COMPARED, matched_at.as_ref())
                .await?;
            if c.folders.as_ref().is_some_and(|f| f.is_empty()) {
                seen_at = c.root;
            }
            compared = Some((c.folders.clone(), t.elapsed()));
            c.folders
        } else {
            seen_at = matched_at;
            Some(Default::default())
        };
        let limited = match more {
            Some(more) => {
                let dirs: std::collections::BTreeSet<RelPath> =
                    dirs.drain(..).chain(more).collect();
                if dirs.is_empty() {
                    Some(Outcome::default())
                } else {
                    self.run_batched(dirs).await?
                }
            }
            None => None,
        };
        Ok(match limited {
            Some(outcome) => Changed {
                base_version: seen_at.filter(|_| outcome.plan.ops.is_empty()),
                outcome,
                full: false,
                streamed: false,
                compared,
            },
            None => Changed {
                outcome: self.run().await?,
                full: true,
                streamed: false,
                compared,
                base_version: None,
            },
        })
    }

    /// A pass over only the folders in `dirs` (those the folder watcher reported): each
    /// one's entries on both sides and in the base, plus the new local folders below them
    /// and the folders that files moved in from. Its cost is that of the folders, not of the
    /// root. It handles changes to files; `Ok(None)` says a full pass must run instead: a
    /// folder created, removed or renamed on either side, a remote rename, a folder gone,
    /// or more than [`Pass::folders_per_pass`] folders. The outcome's snapshot holds no
    /// entries, only the number of folders looked at.
    pub async fn run_folders(&self, dirs: &[RelPath]) -> Result<Option<Outcome>, PassError> {
        self.run_folders_within(dirs, self.folders_per_pass).await
    }

    /// [`Pass::run_folders`] holding at most `limit` folders (those of `dirs`, the new
    /// local folders below them and the folders files moved in from).
    async fn run_folders_within(
        &self,
        dirs: &[RelPath],
        limit: usize,
    ) -> Result<Option<Outcome>, PassError> {
        let mut todo: std::collections::BTreeSet<RelPath> = dirs.iter().cloned().collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut new_here = std::collections::BTreeSet::new();
        let (mut base, mut local, mut remote) = (BaseMap::new(), LocalMap::new(), RemoteMap::new());
        while let Some(d) = todo.pop_first() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if seen.len() > limit {
                return needs_full("too many folders", &d);
            }
            let Some((l, b)) = self.folder_here(&d)? else {
                return needs_full("folder gone", &d);
            };
            let r: RemoteMap = match self.remote.list_dir(&d).await {
                Ok(v) => v
                    .into_iter()
                    .filter(|e| e.path.parent().as_ref() == Some(&d))
                    .map(|e| (e.path.clone(), e))
                    .collect(),
                // A folder made here since the last pass is not on the server yet.
                Err(crate::remote::RemoteError::NotFound { .. }) if new_here.contains(&d) => {
                    RemoteMap::new()
                }
                Err(crate::remote::RemoteError::NotFound { .. }) => {
                    return needs_full("the folder is not on the server", &d)
                }
                Err(e) => return Err(e.into()),
            };
            let paths: std::collections::BTreeSet<&RelPath> =
                b.keys().chain(l.keys()).chain(r.keys()).collect();
            for p in paths {
                let kinds = [
                    b.get(p).map(|e| e.kind),
                    l.get(p).map(|e| e.kind),
                    r.get(p).map(|e| e.kind),
                ];
                if kinds.contains(&Some(Kind::Dir)) {
                    let all_dirs = kinds.iter().all(|k| k.is_none_or(|k| k == Kind::Dir));
                    let kept = kinds[0].is_none() || (kinds[1].is_some() && kinds[2].is_some());
                    if !all_dirs || !kept {
                        return needs_full("a folder changed", p);
                    }
                    match kinds {
                        // New here: look inside it too (its own changes raise no events yet).
                        [None, Some(_), _] => {
                            todo.insert(p.clone());
                            new_here.insert(p.clone());
                        }
                        [None, None, Some(_)] => return needs_full("a new remote folder", p),
                        _ => {}
                    }
                }
                if let Some(e) = r.get(p) {
                    if e.file_id.is_some() && !b.contains_key(p) && !l.contains_key(p) {
                        // Maybe renamed on the server from a folder not looked at.
                        return needs_full("a new remote file with an id", p);
                    }
                }
                // A file moved in: its old folder is part of the change. (One whose record
                // keeps only a hash is looked for among all the folders' paths below.)
                if let Some(rec) = l.get(p).and_then(|e| e.record.as_ref()) {
                    if &rec.origin != p && rec.origin_hash.is_none() {
                        if let Some(o) = rec.origin.parent() {
                            if !seen.contains(&o) {
                                todo.insert(o);
                            }
                        }
                    }
                }
            }
            base.extend(b);
            local.extend(l);
            remote.extend(r);
        }
        if let Some(p) = resolve_origins(&mut local, base.keys().chain(remote.keys())).first() {
            return needs_full("a file renamed here from a folder not looked at", p);
        }
        let plan = self.plan(base, local, remote);
        tracing::debug!(
            folders = seen.len(),
            ops = plan.ops.len(),
            "pass over changed folders"
        );
        let report = self.execute(&plan).await?;
        Ok(Some(Outcome {
            batches: 1,
            plan,
            report,
            snapshot: remote_scan::Snapshot {
                listed_dirs: seen.len() as u64,
                ..Default::default()
            },
        }))
    }

    /// The changed folders `dirs` synced in batches of about [`Pass::folders_per_pass`]
    /// folders, one [`Pass::run_folders`] each, so a pass holds one batch, not the tree.
    /// A file moved from one folder to another is seen from both (gone from one, in the other
    /// with a record naming where it came from), so such folders always share a batch
    /// ([`Pass::batches`]): apart, the first would plan the move as a delete. `Ok(None)` as
    /// for `run_folders` (a batch needs a full pass; the batches before it are done).
    pub async fn run_batched(
        &self,
        dirs: std::collections::BTreeSet<RelPath>,
    ) -> Result<Option<Outcome>, PassError> {
        if dirs.len() > MAX_COMPARED {
            return needs_full("too many folders differ", &RelPath::root());
        }
        let per = self.folders_per_pass.max(1);
        if dirs.len() <= per {
            let dirs: Vec<RelPath> = dirs.into_iter().collect();
            return self.run_folders_within(&dirs, per).await;
        }
        let Some(batches) = self.batches(dirs, per)? else {
            return Ok(None);
        };
        tracing::debug!(batches = batches.len(), "changed folders synced in batches");
        let mut total = Outcome::default();
        for b in batches {
            // Room for the new folders below and the origins that run_folders adds.
            let limit = 2 * b.len().max(per);
            let Some(o) = self.run_folders_within(&b, limit).await? else {
                return Ok(None);
            };
            total.absorb(o);
            if total.report.offline {
                break;
            }
        }
        Ok(Some(total))
    }

    /// `dirs` in batches of about `per` folders, the folders a file
    /// moved between in the same batch: each folder's moved-in files (their records name the
    /// origin, or its hash) are matched with the base paths of the other folders (and of
    /// the new local folders below each). `None`: a moved file's origin is in no folder
    /// here (the folder passes would ask for a full pass).
    fn batches(
        &self,
        dirs: std::collections::BTreeSet<RelPath>,
        per: usize,
    ) -> Result<Option<Vec<Vec<RelPath>>>, PassError> {
        let mut folders: Vec<RelPath> = dirs.into_iter().collect();
        let mut at: BTreeMap<RelPath, usize> = folders
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i))
            .collect();
        let mut wanted: Vec<(u64, usize)> = Vec::new();
        let mut held: HashMap<u64, usize> = HashMap::new();
        let mut named: Vec<(usize, RelPath)> = Vec::new();
        let mut same: Vec<(usize, usize)> = Vec::new();
        for (i, d) in folders.iter().enumerate() {
            let mut todo = vec![d.clone()];
            while let Some(f) = todo.pop() {
                // A new local folder is looked at by the pass over the folder above it: an
                // origin there belongs to that batch, and so does the folder itself if it
                // differs too.
                if &f != d {
                    match at.get(&f) {
                        Some(&j) => same.push((i, j)),
                        None => {
                            at.insert(f.clone(), i);
                        }
                    }
                }
                // A folder gone is left to its pass (which asks for a full one).
                let Some((l, b)) = self.folder_here(&f)? else {
                    continue;
                };
                for (p, e) in &l {
                    // New here, or a file in the base that became a folder: its files may
                    // have moved in from other folders too.
                    if e.kind == Kind::Dir
                        && b.get(p).is_none_or(|b| b.kind != Kind::Dir)
                        && !self.ignore.matches(p)
                    {
                        todo.push(p.clone());
                    }
                    if let Some(r) = &e.record {
                        match r.origin_hash {
                            Some(h) => wanted.push((h, i)),
                            None if &r.origin != p => {
                                named.extend(r.origin.parent().map(|o| (i, o)))
                            }
                            None => {}
                        }
                    }
                }
                for p in b.keys() {
                    held.insert(crate::hsm::meta::path_hash(p.as_str()), i);
                }
            }
        }
        let mut up: Vec<usize> = (0..folders.len()).collect();
        fn find(up: &mut [usize], mut i: usize) -> usize {
            while up[i] != i {
                up[i] = up[up[i]];
                i = up[i];
            }
            i
        }
        fn join(up: &mut [usize], a: usize, b: usize) {
            let (a, b) = (find(up, a), find(up, b));
            if a != b {
                up[a.max(b)] = a.min(b);
            }
        }
        for (i, j) in same {
            join(&mut up, i, j);
        }
        for (h, i) in wanted {
            let Some(&j) = held.get(&h) else {
                tracing::debug!(folder = %folders[i], "a file moved here from a folder not compared");
                return Ok(None);
            };
            join(&mut up, i, j);
        }
        for (i, o) in named {
            let j = *at.entry(o.clone()).or_insert_with(|| {
                folders.push(o);
                up.push(folders.len() - 1);
                folders.len() - 1
            });
            join(&mut up, i, j);
        }
        let mut groups: BTreeMap<usize, Vec<RelPath>> = BTreeMap::new();
        for (i, d) in folders.into_iter().enumerate() {
            let g = find(&mut up, i);
            groups.entry(g).or_default().push(d);
        }
        let mut batches: Vec<Vec<RelPath>> = Vec::new();
        for g in groups.into_values() {
            match batches.last_mut() {
                Some(b) if b.len() + g.len() <= per => b.extend(g),
                _ => batches.push(g),
            }
        }
        Ok(Some(batches))
    }

    /// Folder `d`'s local entries and its base children; `None` when the folder is not
    /// there (gone, or no longer a folder).
    fn folder_here(&self, d: &RelPath) -> Result<Option<(LocalMap, BaseMap)>, PassError> {
        let l = match self.local.scan_dir(d) {
            Ok(l) => l,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(PassError::Scan(e)),
        };
        let b: BaseMap = self
            .index
            .base_children(self.root, d.as_str())?
            .into_iter()
            .filter_map(|(p, b)| Some((RelPath::parse(&p).ok()?, b)))
            .collect();
        Ok(Some((l, b)))
    }

    /// The folders where the server differs from the sync base, found without holding
    /// either in memory: the listing streams past the base (one lookup per entry), and the
    /// base's paths then stream past what was listed of it, per folder: how many entries and
    /// the sum of their paths' hashes ([`Tally`]; a folder where the base holds more, or
    /// others, lost an entry on the server). Memory grows with the folders, not the files.
    /// The root is read first; where folder ETags propagate (the last pass saw file ids, or
    /// the root has one), an ETag equal to `matched_at` (see
    /// [`remote_scan::Snapshot::base_version`]) says nothing changed.
    /// `folders: None`: more than `limit` folders differ (a full pass is the better tool).
    pub async fn remote_changes(
        &self,
        limit: usize,
        matched_at: Option<&Version>,
    ) -> Result<RemoteChanges, PassError> {
        use std::hash::BuildHasher;
        let mut changed = std::collections::BTreeSet::new();
        let top = self.remote.stat(&RelPath::root()).await?;
        let known = self.prev.is_some_and(|p| p.propagating) || top.file_id.is_some();
        if known && matched_at.is_some_and(|m| m.same(&top.version)) {
            return Ok(RemoteChanges {
                folders: Some(changed),
                root: Some(top.version),
            });
        }
        let mut ids = known;
        let hasher = std::collections::hash_map::RandomState::new();
        let hash = |p: &str| hasher.hash_one(p);
        // Per folder (its path's hash): the listed entries the base knows.
        let mut listed: HashMap<u64, Tally> = HashMap::new();
        let mut too_many = false;
        let mut failed = None;
        let mut entries = 0u64;
        let max = self.max_entries;
        let mut sink = |e: RemoteEntry| -> crate::remote::Result<()> {
            entries += 1;
            if entries > max {
                return Err(crate::remote::RemoteError::TooMany {
                    path: RelPath::root(),
                    limit: max,
                    what: "entries in the sync root",
                });
            }
            ids |= e.file_id.is_some();
            if self.ignore.matches(&e.path) {
                return Ok(());
            }
            if too_many || failed.is_some() {
                return Ok(());
            }
            let same = match self.index.base_get(self.root, e.path.as_str()) {
                Ok(Some(b)) => {
                    let dir = e.path.parent().unwrap_or_default();
                    listed
                        .entry(hash(dir.as_str()))
                        .or_default()
                        .add(hash(e.path.as_str()));
                    b.kind == e.kind
                        && (e.kind == Kind::Dir || same_version(&b.version, &e.version))
                }
                Ok(None) => false,
                Err(err) => {
                    failed = Some(err);
                    return Ok(());
                }
            };
            if !same {
                changed.insert(e.path.parent().unwrap_or_default());
                too_many = changed.len() > limit;
            }
            Ok(())
        };
        self.remote.walk(&RelPath::root(), &mut sink).await?;
        if let Some(err) = failed {
            return Err(err.into());
        }
        let root = ids.then_some(top.version);
        if too_many {
            return Ok(RemoteChanges {
                folders: None,
                root,
            });
        }
        // Per folder: its path and the base's entries in it.
        let mut base: HashMap<u64, (RelPath, Tally)> = HashMap::new();
        self.index.base_paths(self.root, &mut |p| {
            let Ok(p) = RelPath::parse(p) else {
                return;
            };
            if self.ignore.matches(&p) {
                return;
            }
            let dir = p.parent().unwrap_or_default();
            base.entry(hash(dir.as_str()))
                .or_insert_with(|| (dir, Tally::default()))
                .1
                .add(hash(p.as_str()));
        })?;
        for (h, (dir, tally)) in base {
            if changed.len() > limit {
                break;
            }
            if listed.get(&h) != Some(&tally) {
                changed.insert(dir);
            }
        }
        Ok(RemoteChanges {
            folders: (changed.len() <= limit).then_some(changed),
            root,
        })
    }

    /// The plan for the three sides, which it consumes.
    fn plan(&self, base: BaseMap, local: LocalMap, remote: RemoteMap) -> plan::Plan {
        let now = self.local.now_secs();
        let ignore = |p: &RelPath| self.ignore.matches(p);
        plan::plan(plan::Inputs {
            base,
            local,
            remote,
            now_secs: now,
            settle_secs: self.settle_secs,
            ignored: &ignore,
        })
    }

    async fn execute(&self, plan: &plan::Plan) -> Result<execute::Report, PassError> {
        let ex = execute::Executor {
            root: self.root,
            remote: self.remote,
            local: self.local,
            index: self.index,
            host: self.host.clone(),
            crash_after: self.crash_after,
        };
        if !plan.ops.is_empty() {
            let ops: Vec<(&str, String)> = plan
                .ops
                .iter()
                .map(|o| (o.verb(), o.path().to_string()))
                .collect();
            tracing::debug!(?ops, waiting = plan.waiting.len(), "plan");
        }
        Ok(ex.run(&plan.ops).await?)
    }
}

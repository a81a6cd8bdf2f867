//! The pure planning function: (base, local, remote) -> operations. No I/O, no clock: the
//! caller passes "now". Decisions, in order:
//! 1. renames: a remote file gone from its base path and found, unique, at a new path (same
//!    file id, or same version and size) is a remote rename; a local file whose record names
//!    another base path that is gone locally is a local rename;
//! 2. every path, one at a time, from what changed on each side since the base;
//! 3. folders deleted on one side are deleted on the other only when nothing below them
//!    survives there (no byte is deleted that the deleting side never saw).

use super::{BaseMap, LocalMap, Op, RemoteMap};
use crate::model::{Kind, RelPath};
use std::collections::{BTreeSet, HashSet};

/// What a plan is made from. The three sides are given, not lent: the planner works on them
/// in place (renames move entries), so a pass holds each side once, not twice.
pub struct Inputs<'a> {
    pub base: BaseMap,
    pub local: LocalMap,
    pub remote: RemoteMap,
    /// Seconds since the epoch, and how long a local file must be left alone before it is
    /// uploaded (files still being written settle first).
    pub now_secs: i64,
    pub settle_secs: i64,
    /// Temporary and excluded names (only paths never synced are ignored).
    pub ignored: &'a dyn Fn(&RelPath) -> bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Local files still being written: planned again once they settle.
    pub waiting: Vec<RelPath>,
}

fn below<'m, V>(
    map: &'m std::collections::BTreeMap<RelPath, V>,
    dir: &'m RelPath,
) -> impl Iterator<Item = &'m RelPath> + 'm {
    map.range(dir.below_start()..)
        .map(|(p, _)| p)
        .skip_while(move |p| *p == dir)
        .take_while(move |p| p.starts_with(dir))
}

/// The remote entry at a file's new name, with the version and size the base knew: a file
/// edited as well as renamed on the server is moved in the base only, and its new content is
/// then seen as a change (refreshed, or a conflict with a local edit), never taken as synced.
fn as_base_knew(r: &crate::model::RemoteEntry, b: &super::BaseEntry) -> crate::model::RemoteEntry {
    let mut e = r.clone();
    if let Some(v) = crate::model::Version::from_token(&b.version) {
        if !v.same(&r.version) {
            e.version = v;
            e.size = b.size;
        }
    }
    e
}

/// Whether `q` is a name our executor moves a file from `o` aside to (beside it,
/// `.~skyfill-….tmp`). After a crash between such a move and its base write, on a server
/// whose renames give new versions (S3's copy), the file is found there by its size alone.
fn aside_of(o: &RelPath, q: &RelPath) -> bool {
    q.parent() == o.parent() && q.name().starts_with(".~skyfill-") && q.name().ends_with(".tmp")
}

fn moved<V>(map: &mut std::collections::BTreeMap<RelPath, V>, from: &RelPath, to: &RelPath) {
    if let Some(v) = map.remove(from) {
        map.insert(to.clone(), v);
    }
}

pub fn plan(inp: Inputs<'_>) -> Plan {
    let Inputs {
        mut base,
        mut local,
        mut remote,
        now_secs,
        settle_secs,
        ignored,
    } = inp;
    // The listed paths that remote renames below move away (with `remote`, every path the
    // server had or will have this pass).
    let mut left_on_server: HashSet<RelPath> = HashSet::new();
    let mut renames = Vec::new();

    // --- Records whose rename was replayed but not yet written back (a crash in between):
    // the base already has the file at its new path with the record's version.
    let mut repairs = Vec::new();
    for (p, l) in local.iter_mut() {
        let Some(rec) = l.record.as_mut() else {
            continue;
        };
        if &rec.origin != p
            && !base.contains_key(&rec.origin)
            && base
                .get(p)
                .is_some_and(|b| b.kind == Kind::File && b.version == rec.version)
        {
            rec.origin = p.clone();
            if let Some(r) = remote.get(p) {
                repairs.push(Op::Adopt {
                    path: p.clone(),
                    entry: r.clone(),
                });
            }
        }
    }

    // --- Remote renames.
    let gone: Vec<RelPath> = base
        .iter()
        .filter(|(p, b)| {
            b.kind == Kind::File && remote.get(*p).is_none_or(|r| r.kind != Kind::File)
        })
        .map(|(p, _)| p.clone())
        .collect();
    let mut fresh: BTreeSet<RelPath> = remote
        .iter()
        .filter(|(p, r)| r.kind == Kind::File && !base.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    let same = |b: &super::BaseEntry, r: &crate::model::RemoteEntry| match (&b.file_id, &r.file_id)
    {
        (Some(a), Some(c)) => a == c,
        // An unconfirmed upload (crash): its version is unknown; sizes must agree and the
        // executor compares bytes before believing it.
        _ if b.version.is_empty() => r.size == b.size,
        _ => r.size == b.size && super::same_version(&b.version, &r.version),
    };
    let mut skip: HashSet<RelPath> = HashSet::new();
    for o in &gone {
        let b = base[o].clone();
        let hits: Vec<RelPath> = fresh
            .iter()
            .filter(|q| same(&b, &remote[*q]) || (aside_of(o, q) && remote[*q].size == b.size))
            .cloned()
            .collect();
        if hits.len() != 1 {
            continue;
        }
        let q = hits[0].clone();
        if b.file_id.is_none()
            && gone
                .iter()
                .filter(|o2| *o2 != o)
                .any(|o2| base.get(o2).is_some_and(|b2| same(b2, &remote[&q])))
        {
            continue;
        }
        // The local file: still at o, or renamed locally too (remote's name wins).
        let src = if local.get(o).is_some_and(|l| l.known_version(o).is_some()) {
            Some(o.clone())
        } else {
            local
                .iter()
                .find(|(p, l)| {
                    !base.contains_key(*p) && l.record.as_ref().is_some_and(|r| &r.origin == o)
                })
                .map(|(p, _)| p.clone())
        };
        let Some(src) = src else {
            // Already replayed locally before a crash (its record names q): only the base
            // has to follow. A local rename since then is replayed from there.
            if !b.version.is_empty()
                && local.values().any(|l| {
                    l.record
                        .as_ref()
                        .is_some_and(|r| r.origin == q && r.version == b.version)
                })
            {
                renames.push(Op::Rebase {
                    from: o.clone(),
                    entry: as_base_knew(&remote[&q], &b),
                });
                moved(&mut base, o, &q);
                fresh.remove(&q);
            }
            continue;
        };
        // Nowhere to put it while a file holds a folder name on its way (a swap): the
        // per-path rules resolve that without losing a byte.
        let file_in_way = |m: &super::LocalMap, q: &RelPath| {
            let mut a = q.parent();
            while let Some(d) = a.filter(|d| !d.is_root()) {
                if m.get(&d).is_some_and(|l| l.kind == Kind::File) && !q.starts_with(&src) {
                    return true;
                }
                a = d.parent();
            }
            false
        };
        if src != q && (local.contains_key(&q) || file_in_way(&local, &q)) {
            continue;
        }
        if b.version.is_empty() {
            // Matched by comparing bytes: a file with holes has none to compare (the per-path
            // rules take it).
            if local.get(&src).is_some_and(|l| l.incomplete()) {
                continue;
            }
            renames.push(Op::Rematch {
                from: src.clone(),
                origin: o.clone(),
                entry: remote[&q].clone(),
            });
            skip.extend([src, o.clone(), q.clone()]);
            fresh.remove(&q);
            continue;
        }
        if src != q {
            renames.push(Op::LocalRename {
                from: src.clone(),
                to: q.clone(),
                base: o.clone(),
            });
            moved(&mut local, &src, &q);
        } else {
            // Renamed the same way on both sides: record and base learn the new path.
            renames.push(Op::Rebase {
                from: o.clone(),
                entry: as_base_knew(&remote[&q], &b),
            });
        }
        if let Some(rec) = local.get_mut(&q).and_then(|l| l.record.as_mut()) {
            if &rec.origin == o {
                rec.origin = q.clone();
            }
        }
        moved(&mut base, o, &q);
        fresh.remove(&q);
    }

    // --- Local renames.
    // A record names its old path; or, when a crash came between writing the record's new
    // path and moving the base, the base has the file under one other path with its version.
    let unclaimed = |v: &str| -> Vec<RelPath> {
        base.iter()
            .filter(|(o, b)| {
                b.kind == Kind::File
                    && b.version == v
                    && local.get(*o).is_none_or(|x| x.known_version(o).is_none())
            })
            .map(|(o, _)| o.clone())
            .collect()
    };
    let candidates: Vec<(RelPath, RelPath)> = local
        .iter()
        .filter(|(_, l)| l.kind == Kind::File)
        .filter_map(|(p, l)| {
            let r = l.record.as_ref()?;
            if base.contains_key(&r.origin) {
                return (&r.origin != p).then(|| (r.origin.clone(), p.clone()));
            }
            // The base does not know the record's path (a crash between the two writes).
            let fallback = (&r.origin != p).then(|| (r.origin.clone(), p.clone()));
            if r.version.is_empty() {
                return fallback;
            }
            match unclaimed(&r.version).as_slice() {
                [o] if o != p => Some((o.clone(), p.clone())),
                _ => fallback,
            }
        })
        .collect();
    let mut inferred: std::collections::HashMap<RelPath, RelPath> = Default::default();
    for (o, p) in candidates {
        let from_record = local
            .get(&p)
            .and_then(|l| l.record.as_ref())
            .is_some_and(|r| r.origin == o);
        if !from_record {
            // Seen from here on as the record will say once the rename is replayed.
            if let Some(rec) = local.get_mut(&p).and_then(|l| l.record.as_mut()) {
                rec.origin = o.clone();
            }
            inferred.insert(p.clone(), o.clone());
        }
        if base.contains_key(&p)
            || remote.contains_key(&p)
            || skip.contains(&o)
            || skip.contains(&p)
            // Still there with its own record: `p` is a copy or a hard link, not a move.
            || local.get(&o).is_some_and(|x| x.known_version(&o).is_some())
            || ignored(&p)
            || base.get(&o).map(|b| b.kind) != Some(Kind::File)
        {
            continue;
        }
        let Some(r) = remote.get(&o).filter(|r| r.kind == Kind::File) else {
            continue;
        };
        let mut a = p.parent();
        let mut in_way = false;
        while let Some(d) = a.filter(|d| !d.is_root()) {
            // A server file above the new name is in the way, unless it is a synced file
            // replaced here by a folder (it is deleted first, and the folder made).
            let replaced = local.get(&d).is_some_and(|x| x.kind == Kind::Dir)
                && base.get(&d).is_some_and(|b| {
                    b.kind == Kind::File
                        && remote
                            .get(&d)
                            .is_some_and(|e| super::same_version(&b.version, &e.version))
                });
            in_way |= d != o && !replaced && remote.get(&d).is_some_and(|e| e.kind == Kind::File);
            a = d.parent();
        }
        if in_way {
            continue;
        }
        renames.push(Op::RemoteRename {
            from: o.clone(),
            to: p.clone(),
            version: r.version.token(),
        });
        moved(&mut base, &o, &p);
        if let Some(mut e) = remote.remove(&o) {
            e.path = p.clone();
            remote.insert(p.clone(), e);
            left_on_server.insert(o.clone());
        }
        if let Some(rec) = local.get_mut(&p).and_then(|l| l.record.as_mut()) {
            rec.origin = p.clone();
        }
    }

    // --- Each path.
    let keys: BTreeSet<RelPath> = base
        .keys()
        .chain(local.keys())
        .chain(remote.keys())
        .cloned()
        .collect();
    let mut mkdirs = Vec::new();
    let mut main = Vec::new();
    let mut deletes = Vec::new();
    let mut forget = Vec::new();
    let mut waiting = Vec::new();
    let mut local_going: HashSet<RelPath> = HashSet::new();
    let mut remote_going: HashSet<RelPath> = HashSet::new();
    // Deleted remotely, still here.
    let mut local_dir_gone = Vec::new();
    // Deleted here, still remote.
    let mut remote_dir_gone = Vec::new();
    // Written within the last `settle_secs`. An mtime in the future was set, not written now
    // (a copy keeping a skewed server's time, `touch -d`): waiting for it would hold the file
    // back until that time.
    let settling = |l: &super::LocalEntry| (0..settle_secs).contains(&(now_secs - l.mtime.0));
    // Placeholders away from their path (moved, or hard-linked) whose move could not be
    // replayed: their bytes exist only on the remote, at the path the record names. That
    // path is neither deleted nor overwritten there while such a file refers to it.
    let mut referenced: HashSet<RelPath> = HashSet::new();
    // Origins of placeholders set aside this pass: their rename is replayed next pass.
    let mut blocked: HashSet<RelPath> = HashSet::new();
    let mut stray: std::collections::HashMap<RelPath, Op> = Default::default();
    for (p, l) in &local {
        if skip.contains(p) {
            continue;
        }
        // (A record with no version is an upload a crash left unconfirmed: the server's
        // file at its origin is not known to be this one's, and nothing else has its bytes.)
        let Some(o) = l
            .record
            .as_ref()
            .filter(|r| !r.version.is_empty() || l.incomplete())
            .map(|r| &r.origin)
            .filter(|o| *o != p)
        else {
            continue;
        };
        if l.kind != Kind::File {
            continue;
        }
        let original_here = local.get(o).is_some_and(|x| x.known_version(o).is_some());
        let alive = remote.get(o).is_some_and(|r| r.kind == Kind::File);
        // A move that could not be replayed (not a move over a synced file, which uploads
        // over it, nor to an ignored name): the origin stays on the server until it can be.
        if alive && !original_here && !base.contains_key(p) && !ignored(p) {
            referenced.insert(o.clone());
        }
        // A rename whose new name was created on the server meanwhile: move it aside under
        // a conflict name; the rename is replayed from there next pass.
        // A placeholder's bytes exist only at its origin: whatever blocked its rename, keep
        // it (and so its origin) until the rename can be replayed.
        if alive
            && !original_here
            && base.get(o).is_some_and(|b| b.kind == Kind::File)
            && (l.incomplete() || (remote.contains_key(p) && !base.contains_key(p)))
            && !ignored(p)
        {
            referenced.insert(o.clone());
            blocked.insert(o.clone());
            stray.insert(
                p.clone(),
                Op::SetAside {
                    path: p.clone(),
                    keep_record: true,
                    origin: inferred.get(p).cloned(),
                },
            );
        } else if l.incomplete() {
            if alive && !original_here {
                referenced.insert(o.clone());
            }
            stray.insert(
                p.clone(),
                Op::LocalDelete {
                    path: p.clone(),
                    kind: Kind::File,
                    expect: l.record.as_ref().map(|r| r.version.clone()),
                },
            );
        }
    }
    for p in &keys {
        let (b, l, r) = (base.get(p), local.get(p), remote.get(p));
        if skip.contains(p) {
            continue;
        }
        if let Some(op) = stray.remove(p) {
            if matches!(op, Op::LocalDelete { .. }) {
                local_going.insert(p.clone());
                deletes.push(op);
            } else {
                main.push(op);
            }
            continue;
        }
        if b.is_none() && ignored(p) {
            continue;
        }
        if referenced.contains(p) && !l.is_some_and(|l| l.clean_at(p)) {
            match (l, r) {
                (None, Some(r)) if !blocked.contains(p) => {
                    main.push(Op::Placeholder { entry: r.clone() })
                }
                _ => waiting.push(p.clone()),
            }
            continue;
        }
        match (l, r) {
            (None, None) => forget.push(Op::Forget { path: p.clone() }),
            (Some(l), None) => match (l.kind, b) {
                (Kind::Dir, None) => mkdirs.push(Op::RemoteMkdir { path: p.clone() }),
                (Kind::Dir, Some(_)) => local_dir_gone.push(p.clone()),
                // In sync at p, now deleted remotely. Without a base entry, only a placeholder
                // (a complete file is uploaded again rather than trusted to a stale record).
                (Kind::File, b) if l.clean_at(p) && (b.is_some() || l.incomplete()) => {
                    local_going.insert(p.clone());
                    deletes.push(Op::LocalDelete {
                        path: p.clone(),
                        kind: Kind::File,
                        expect: l.known_version(p).map(str::to_string),
                    });
                }
                (Kind::File, _) if settling(l) => waiting.push(p.clone()),
                (Kind::File, _) => main.push(Op::Upload {
                    path: p.clone(),
                    expect: None,
                }),
            },
            (None, Some(r)) => match (r.kind, b) {
                (Kind::Dir, None) => mkdirs.push(Op::LocalMkdir { entry: r.clone() }),
                (Kind::Dir, Some(b)) if b.kind == Kind::Dir => remote_dir_gone.push(p.clone()),
                (Kind::Dir, _) => mkdirs.push(Op::LocalMkdir { entry: r.clone() }),
                (Kind::File, Some(b))
                    if b.kind == Kind::File && super::same_version(&b.version, &r.version) =>
                {
                    remote_going.insert(p.clone());
                    deletes.push(Op::RemoteDelete {
                        path: p.clone(),
                        kind: Kind::File,
                        expect: Some(b.version.clone()),
                    });
                }
                (Kind::File, _) => main.push(Op::Placeholder { entry: r.clone() }),
            },
            (Some(l), Some(r)) => match (l.kind, r.kind) {
                (Kind::Dir, Kind::Dir) => {
                    if b.map(|b| b.kind) != Some(Kind::Dir) {
                        main.push(Op::Adopt {
                            path: p.clone(),
                            entry: r.clone(),
                        });
                    }
                }
                (Kind::File, Kind::File) if l.clean_at(p) => {
                    let known = l.known_version(p).unwrap_or_default();
                    if super::same_version(known, &r.version) {
                        if b.is_none_or(|b| b.kind != Kind::File || b.version != known) {
                            main.push(Op::Adopt {
                                path: p.clone(),
                                entry: r.clone(),
                            });
                        }
                    } else if l.incomplete()
                        || b.is_some_and(|b| b.kind == Kind::File && b.version == known)
                    {
                        main.push(Op::Refresh {
                            entry: r.clone(),
                            expect: known.to_string(),
                        });
                    } else {
                        // The server never agreed to replace these bytes (their base is gone:
                        // deleted there, or a crash): compare before anything is replaced.
                        main.push(Op::Resolve {
                            path: p.clone(),
                            entry: r.clone(),
                        });
                    }
                }
                (Kind::File, Kind::File) => {
                    if settling(l) {
                        waiting.push(p.clone());
                        continue;
                    }
                    let known = l.known_version(p).map(str::to_string).or_else(|| {
                        b.filter(|b| b.kind == Kind::File)
                            .map(|b| b.version.clone())
                    });
                    match known {
                        Some(k) if super::same_version(&k, &r.version) => main.push(Op::Upload {
                            path: p.clone(),
                            expect: Some(k),
                        }),
                        _ => main.push(Op::Resolve {
                            path: p.clone(),
                            entry: r.clone(),
                        }),
                    }
                }
                (Kind::Dir, Kind::File)
                    if b.is_some_and(|b| {
                        b.kind == Kind::File && super::same_version(&b.version, &r.version)
                    }) =>
                {
                    // A synced file, unchanged on the server, replaced here by a folder: the
                    // server's file goes (the delete runs first) and the folder goes up.
                    remote_going.insert(p.clone());
                    deletes.push(Op::RemoteDelete {
                        path: p.clone(),
                        kind: Kind::File,
                        expect: b.map(|b| b.version.clone()),
                    });
                    mkdirs.push(Op::RemoteMkdir { path: p.clone() });
                }
                _ if l.clean_at(p) => {
                    local_going.insert(p.clone());
                    deletes.push(Op::LocalDelete {
                        path: p.clone(),
                        kind: Kind::File,
                        expect: l.known_version(p).map(str::to_string),
                    });
                }
                _ => {
                    if settling(l) {
                        waiting.push(p.clone());
                    } else {
                        main.push(Op::SetAside {
                            path: p.clone(),
                            keep_record: false,
                            origin: None,
                        });
                    }
                }
            },
        }
    }
    // Folders, deepest first: delete only what is empty once its own deletions are done.
    let mut dir_ops = Vec::new();
    for p in remote_dir_gone.iter().rev() {
        if below(&remote, p).all(|c| remote_going.contains(c)) {
            remote_going.insert(p.clone());
            dir_ops.push((
                p.clone(),
                Op::RemoteDelete {
                    path: p.clone(),
                    kind: Kind::Dir,
                    expect: None,
                },
            ));
        } else {
            mkdirs.push(Op::LocalMkdir {
                entry: remote[p].clone(),
            });
        }
    }
    for p in local_dir_gone.iter().rev() {
        if below(&local, p).all(|c| local_going.contains(c)) {
            local_going.insert(p.clone());
            dir_ops.push((
                p.clone(),
                Op::LocalDelete {
                    path: p.clone(),
                    kind: Kind::Dir,
                    expect: None,
                },
            ));
        } else {
            mkdirs.push(Op::RemoteMkdir { path: p.clone() });
        }
    }
    dir_ops.sort_by(|a, b| b.0.cmp(&a.0));
    mkdirs.sort_by(|a, b| a.path().cmp(b.path()));
    // What lies below a local path set aside this pass has moved with it: those steps are
    // planned again next pass, at the new name.
    let aside: Vec<RelPath> = main
        .iter()
        .filter(|o| matches!(o, Op::SetAside { .. }))
        .map(|o| o.path().clone())
        .collect();
    let moved = |o: &Op| {
        let from = match o {
            Op::LocalRename { from, .. } | Op::RemoteRename { from, .. } => Some(from),
            _ => None,
        };
        aside.iter().any(|a| {
            [Some(o.path()), from]
                .into_iter()
                .flatten()
                .any(|p| p != a && p.starts_with(a))
        })
    };
    if !aside.is_empty() {
        // And a rename from there is not made: nothing arrives at its new name, so no step
        // there either (an adoption there would record a file that is not there, whose
        // absence the next pass takes for a delete).
        let unmade: Vec<RelPath> = renames
            .iter()
            .filter(|o| moved(o))
            .map(|o| o.path().clone())
            .collect();
        let moved = |o: &Op| moved(o) || unmade.iter().any(|t| o.path().starts_with(t));
        mkdirs.retain(|o| !moved(o));
        renames.retain(|o| !moved(o));
        main.retain(|o| !moved(o));
        deletes.retain(|o| !moved(o));
        dir_ops.retain(|(_, o)| !moved(o));
    }
    // Nothing is made below a file that stays this pass (one still being written, or a
    // change of kind not resolved yet): it would fail; it is planned again next pass.
    {
        let gone: HashSet<(usize, RelPath)> = deletes
            .iter()
            .chain(main.iter().filter(|o| matches!(o, Op::SetAside { .. })))
            .filter_map(|o| match o {
                Op::LocalDelete { path, .. } | Op::SetAside { path, .. } => Some((0, path.clone())),
                Op::RemoteDelete { path, .. } => Some((1, path.clone())),
                _ => None,
            })
            .collect();
        let is_file = |side: usize, p: &RelPath| {
            if side == 0 {
                local.get(p).is_some_and(|l| l.kind != Kind::Dir)
            } else {
                remote.get(p).is_some_and(|r| r.kind != Kind::Dir)
            }
        };
        let blocked = |o: &Op| {
            let sides: &[usize] = match o {
                Op::LocalMkdir { .. } | Op::Placeholder { .. } | Op::LocalRename { .. } => &[0],
                Op::RemoteMkdir { .. } | Op::Upload { .. } | Op::RemoteRename { .. } => &[1],
                _ => &[],
            };
            sides.iter().any(|&i| {
                let mut a = o.path().parent();
                while let Some(d) = a.filter(|d| !d.is_root()) {
                    if is_file(i, &d) && !gone.contains(&(i, d.clone())) {
                        return true;
                    }
                    a = d.parent();
                }
                false
            })
        };
        mkdirs.retain(|o| !blocked(o));
        renames.retain(|o| !blocked(o));
        main.retain(|o| !blocked(o));
    }
    // A change of kind: what is deleted on one side must go before what is made there at
    // the same path or below it (a file that became a folder, a folder that became a file).
    let early = {
        let mut makes: [HashSet<RelPath>; 2] = Default::default();
        let mut above: [HashSet<RelPath>; 2] = Default::default();
        for o in mkdirs.iter().chain(&renames).chain(&main) {
            let sides: &[usize] = match o {
                Op::LocalMkdir { .. } | Op::Placeholder { .. } | Op::LocalRename { .. } => &[0],
                Op::RemoteMkdir { .. } | Op::Upload { .. } | Op::RemoteRename { .. } => &[1],
                Op::Resolve { .. } => &[0, 1],
                _ => &[],
            };
            for &i in sides {
                makes[i].insert(o.path().clone());
                let mut a = o.path().parent();
                while let Some(d) = a.filter(|d| !d.is_root()) {
                    if !above[i].insert(d.clone()) {
                        break;
                    }
                    a = d.parent();
                }
            }
        }
        move |o: &Op| {
            let i = match o {
                Op::LocalDelete { .. } => 0,
                Op::RemoteDelete { .. } => 1,
                _ => return false,
            };
            let p = o.path();
            if above[i].contains(p) {
                return true;
            }
            let mut a = Some(p.clone());
            while let Some(d) = a.filter(|d| !d.is_root()) {
                if makes[i].contains(&d) {
                    return true;
                }
                a = d.parent();
            }
            false
        }
    };
    let (first_files, deletes): (Vec<Op>, Vec<Op>) = deletes.into_iter().partition(&early);
    let (first_dirs, dir_ops): (Vec<_>, Vec<_>) = dir_ops.into_iter().partition(|(_, o)| early(o));
    // A folder made where a rename moves something away goes after that rename, and so
    // does one made where a rename takes its base record from (the folder's record would
    // be moved to the file's new name instead).
    let (after_renames, mkdirs): (Vec<Op>, Vec<Op>) = mkdirs.into_iter().partition(|m| {
        renames.iter().any(|r| match (m, r) {
            (Op::LocalMkdir { .. }, Op::LocalRename { from, .. })
            | (Op::RemoteMkdir { .. }, Op::RemoteRename { from, .. }) => m.path().starts_with(from),
            _ => false,
        } || match r {
            Op::LocalRename { base, .. } => m.path() == base,
            Op::Rebase { from, .. } => m.path() == from,
            _ => false,
        })
    });
    let (renames, through) = through_vacated(renames, &|t| {
        remote.contains_key(t) || left_on_server.contains(t)
    });
    let mut ops = repairs;
    ops.extend(first_files);
    ops.extend(first_dirs.into_iter().map(|(_, o)| o));
    ops.extend(mkdirs);
    ops.extend(renames);
    ops.extend(after_renames);
    ops.extend(through);
    ops.extend(main);
    ops.extend(deletes);
    ops.extend(dir_ops.into_iter().map(|(_, o)| o));
    ops.extend(forget);
    Plan { ops, waiting }
}

/// Remote renames into a folder that another rename's file leaves this pass (`mv h d/c/g`
/// where `d/c`, a synced file, moved to `h` and a folder took its name) cannot run before
/// that rename and the folder made in its place, and such renames may form a cycle that no
/// order replays (every pass would fail the same way). Each one is split: the file steps
/// aside to a temporary name among the renames, and takes its new name from there after
/// them and after the folders made where they leave (the second list).
/// A temporary name is one `on_server` does not know (the server as listed, or as this plan
/// leaves it) and no rename of this pass leaves (a file left at one by an interrupted pass).
fn through_vacated(renames: Vec<Op>, on_server: &dyn Fn(&RelPath) -> bool) -> (Vec<Op>, Vec<Op>) {
    let leaving: Vec<RelPath> = renames
        .iter()
        .filter_map(|o| match o {
            Op::RemoteRename { from, .. } => Some(from.clone()),
            _ => None,
        })
        .collect();
    let mut taken: HashSet<RelPath> = HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for o in renames {
        let Op::RemoteRename { from, to, version } = &o else {
            now.push(o);
            continue;
        };
        let below_leaving = leaving
            .iter()
            .any(|l| l != from && to != l && to.starts_with(l));
        let dir = from.parent().unwrap_or_default();
        let tmp = below_leaving
            .then(|| {
                (0..64)
                    .filter_map(|n| dir.join(&format!(".~skyfill-move-{n}.tmp")).ok())
                    .find(|t| !on_server(t) && !taken.contains(t) && !leaving.contains(t))
            })
            .flatten();
        let Some(tmp) = tmp else {
            now.push(o);
            continue;
        };
        taken.insert(tmp.clone());
        now.push(Op::RemoteAside {
            from: from.clone(),
            to: tmp.clone(),
            version: version.clone(),
        });
        later.push(Op::RemoteRename {
            from: tmp,
            to: to.clone(),
            version: version.clone(),
        });
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Siblings like `d (1)` and `d.txt` sort between `d` and `d/`: they neither end nor join
    /// the walk below `d` (a folder deleted because it looked empty would lose files).
    #[test]
    fn below_skips_siblings_that_sort_inside_the_folder() {
        let m: std::collections::BTreeMap<RelPath, ()> = [
            "d",
            "d (conflicted copy)",
            "d.txt",
            "d-2",
            "d/a",
            "d/b/c",
            "e",
            "d (x)/y",
        ]
        .iter()
        .map(|p| (RelPath::parse(p).unwrap(), ()))
        .collect();
        let d = RelPath::parse("d").unwrap();
        let got: Vec<&str> = below(&m, &d).map(|p| p.as_str()).collect();
        assert_eq!(got, ["d/a", "d/b/c"]);
        let root = RelPath::root();
        let all: Vec<&str> = below(&m, &root).map(|p| p.as_str()).collect();
        assert_eq!(all.len(), m.len());
    }
    use crate::hsm::meta::{Fill, Pin};
    use crate::model::{RemoteEntry, Version};
    use crate::sync::{BaseEntry, LocalEntry, LocalRecord};
    use std::time::{Duration, UNIX_EPOCH};

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }
    fn rfile(path: &str, tag: &str, size: u64) -> RemoteEntry {
        RemoteEntry {
            path: p(path),
            kind: Kind::File,
            size,
            mtime: UNIX_EPOCH + Duration::from_secs(100),
            version: Version::Etag {
                value: tag.into(),
                weak: false,
            },
            file_id: None,
            mode: None,
            permissions: None,
        }
    }
    fn rdir(path: &str) -> RemoteEntry {
        RemoteEntry {
            kind: Kind::Dir,
            size: 0,
            ..rfile(path, "d", 0)
        }
    }
    fn base(e: &RemoteEntry) -> BaseEntry {
        BaseEntry::of(e)
    }
    /// A local file in sync with `e` (recorded for `origin`), optionally edited.
    fn lfile(origin: &str, e: &RemoteEntry, edited: bool) -> LocalEntry {
        LocalEntry {
            kind: Kind::File,
            size: e.size + edited as u64,
            mtime: (if edited { 500 } else { 100 }, 0),
            record: Some(LocalRecord {
                origin: p(origin),
                version: e.version.token(),
                fill: Fill::Complete,
                pin: Pin::Inherit,
                size: e.size,
                mtime: (100, 0),
                origin_hash: None,
            }),
        }
    }
    fn new_local(size: u64) -> LocalEntry {
        LocalEntry {
            kind: Kind::File,
            size,
            mtime: (500, 0),
            record: None,
        }
    }
    fn run(b: &BaseMap, l: &LocalMap, r: &RemoteMap) -> Plan {
        plan(Inputs {
            base: b.clone(),
            local: l.clone(),
            remote: r.clone(),
            now_secs: 1000,
            settle_secs: 2,
            ignored: &|p: &RelPath| p.name().ends_with(".swp"),
        })
    }

    #[test]
    fn one_sided_changes() {
        let a = rfile("a", "1", 3);
        let a2 = rfile("a", "2", 4);
        let b = rfile("b", "1", 3);
        let bm: BaseMap = [(p("a"), base(&a)), (p("b"), base(&b))].into();
        // Remote edit of a clean file: refresh. Local delete of b: remote delete.
        let l: LocalMap = [(p("a"), lfile("a", &a, false))].into();
        let r: RemoteMap = [(p("a"), a2.clone()), (p("b"), b.clone())].into();
        let plan = run(&bm, &l, &r);
        assert_eq!(
            plan.ops,
            vec![
                Op::Refresh {
                    entry: a2.clone(),
                    expect: a.version.token()
                },
                Op::RemoteDelete {
                    path: p("b"),
                    kind: Kind::File,
                    expect: Some(b.version.token())
                }
            ]
        );
        // Local edit: upload with If-Match; new local file: If-None-Match; swap file ignored.
        let l: LocalMap = [
            (p("a"), lfile("a", &a, true)),
            (p("b"), lfile("b", &b, false)),
            (p("c"), new_local(2)),
            (p(".c.swp"), new_local(2)),
        ]
        .into();
        let r: RemoteMap = [(p("a"), a.clone()), (p("b"), b.clone())].into();
        assert_eq!(
            run(&bm, &l, &r).ops,
            vec![
                Op::Upload {
                    path: p("a"),
                    expect: Some(a.version.token())
                },
                Op::Upload {
                    path: p("c"),
                    expect: None
                }
            ]
        );
    }

    #[test]
    fn both_changed_is_resolved_and_deletes_never_lose_edits() {
        let a = rfile("a", "1", 3);
        let a2 = rfile("a", "2", 4);
        let bm: BaseMap = [(p("a"), base(&a))].into();
        let l: LocalMap = [(p("a"), lfile("a", &a, true))].into();
        let r: RemoteMap = [(p("a"), a2.clone())].into();
        assert_eq!(
            run(&bm, &l, &r).ops,
            vec![Op::Resolve {
                path: p("a"),
                entry: a2.clone()
            }]
        );
        // Remote deleted a locally edited file: upload it again.
        let r = RemoteMap::new();
        assert_eq!(
            run(&bm, &l, &r).ops,
            vec![Op::Upload {
                path: p("a"),
                expect: None
            }]
        );
        // Local deleted a remotely edited file: it comes back.
        let l = LocalMap::new();
        let r: RemoteMap = [(p("a"), a2.clone())].into();
        assert_eq!(run(&bm, &l, &r).ops, vec![Op::Placeholder { entry: a2 }]);
    }

    #[test]
    fn renames_travel_as_renames() {
        let a = rfile("d/a", "1", 3);
        let moved_remote = RemoteEntry {
            path: p("e/a"),
            ..a.clone()
        };
        let bm: BaseMap = [(p("d"), base(&rdir("d"))), (p("d/a"), base(&a))].into();
        let ldir = LocalEntry {
            kind: Kind::Dir,
            size: 0,
            mtime: (1, 0),
            record: None,
        };
        // Remote moved d/a to e/a.
        let l: LocalMap = [(p("d"), ldir.clone()), (p("d/a"), lfile("d/a", &a, false))].into();
        let r: RemoteMap = [
            (p("d"), rdir("d")),
            (p("e"), rdir("e")),
            (p("e/a"), moved_remote.clone()),
        ]
        .into();
        assert_eq!(
            run(&bm, &l, &r).ops,
            vec![
                Op::LocalMkdir { entry: rdir("e") },
                Op::LocalRename {
                    from: p("d/a"),
                    to: p("e/a"),
                    base: p("d/a")
                },
            ]
        );
        // Local moved d/a to e/a (the record still names d/a), and removed d.
        let l: LocalMap = [(p("e"), ldir.clone()), (p("e/a"), lfile("d/a", &a, false))].into();
        let r: RemoteMap = [(p("d"), rdir("d")), (p("d/a"), a.clone())].into();
        assert_eq!(
            run(&bm, &l, &r).ops,
            vec![
                Op::RemoteMkdir { path: p("e") },
                Op::RemoteRename {
                    from: p("d/a"),
                    to: p("e/a"),
                    version: a.version.token()
                },
                Op::RemoteDelete {
                    path: p("d"),
                    kind: Kind::Dir,
                    expect: None
                },
            ]
        );
    }

    /// A change of kind: the file that goes is deleted before the folder at its name (and
    /// what is below it) is made, on either side.
    #[test]
    fn a_file_replaced_by_a_folder_goes_first() {
        let f = rfile("d", "1", 3);
        let c = rfile("d/c", "2", 3);
        let bm: BaseMap = [(p("d"), base(&f))].into();
        // The server replaced file d by a folder with d/c; here d is still the synced file.
        let l: LocalMap = [(p("d"), lfile("d", &f, false))].into();
        let r: RemoteMap = [(p("d"), rdir("d")), (p("d/c"), c.clone())].into();
        let ops = run(&bm, &l, &r).ops;
        let at = |want: &dyn Fn(&Op) -> bool| ops.iter().position(want);
        let del = at(&|o| matches!(o, Op::LocalDelete { path, .. } if *path == p("d")))
            .expect("the local file goes");
        let mk = at(&|o| matches!(o, Op::LocalMkdir { entry } if entry.path == p("d")));
        let ph = at(&|o| matches!(o, Op::Placeholder { entry } if entry.path == p("d/c")))
            .expect("its file arrives");
        assert!(del < ph && mk.is_none_or(|m| del < m && m < ph), "{ops:?}");
        // Here the synced file d became a folder with a new file: the server's file goes
        // first, then the folder and the file go up.
        let l: LocalMap = [
            (
                p("d"),
                LocalEntry {
                    kind: Kind::Dir,
                    size: 0,
                    mtime: (100, 0),
                    record: None,
                },
            ),
            (p("d/c"), new_local(3)),
        ]
        .into();
        let r: RemoteMap = [(p("d"), f.clone())].into();
        let ops = run(&bm, &l, &r).ops;
        let at = |want: &dyn Fn(&Op) -> bool| ops.iter().position(want);
        let del = at(&|o| matches!(o, Op::RemoteDelete { path, .. } if *path == p("d")))
            .expect("the server's file goes");
        let mk = at(&|o| matches!(o, Op::RemoteMkdir { path } if *path == p("d")))
            .expect("the folder goes up");
        let up = at(&|o| matches!(o, Op::Upload { path, .. } if *path == p("d/c")))
            .expect("its file goes up");
        assert!(del < mk && mk < up, "{ops:?}");
    }

    #[test]
    fn folder_deletes_spare_unseen_children_and_writers_settle() {
        let a = rfile("d/a", "1", 3);
        let n = rfile("d/new", "9", 3);
        let bm: BaseMap = [(p("d"), base(&rdir("d"))), (p("d/a"), base(&a))].into();
        // Deleted locally while a new remote file appeared inside: the folder stays.
        let r: RemoteMap = [
            (p("d"), rdir("d")),
            (p("d/a"), a.clone()),
            (p("d/new"), n.clone()),
        ]
        .into();
        let ops = run(&bm, &LocalMap::new(), &r).ops;
        assert!(ops.contains(&Op::LocalMkdir { entry: rdir("d") }));
        assert!(ops.contains(&Op::Placeholder { entry: n }));
        assert!(!ops.iter().any(|o| matches!(
            o,
            Op::RemoteDelete {
                kind: Kind::Dir,
                ..
            }
        )));
        // A file written a moment ago waits.
        let mut fresh = new_local(1);
        fresh.mtime = (999, 0);
        let l: LocalMap = [(p("x"), fresh)].into();
        let pl = run(&BaseMap::new(), &l, &RemoteMap::new());
        assert!(pl.ops.is_empty());
        assert_eq!(pl.waiting, vec![p("x")]);
        // One whose mtime lies ahead (set, not written now) does not wait for that time.
        let mut ahead = new_local(1);
        ahead.mtime = (1_000_000, 0);
        let l: LocalMap = [(p("x"), ahead)].into();
        let pl = run(&BaseMap::new(), &l, &RemoteMap::new());
        assert!(pl.waiting.is_empty());
        assert!(matches!(&pl.ops[..], [Op::Upload { .. }]), "{:?}", pl.ops);
    }
}

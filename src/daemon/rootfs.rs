//! The real `LocalFs` of a sync root. Everything goes through the root's private,
//! ignore-marked mount (`Group::private_mount`): the daemon raises no pre-content event to
//! itself, and its directory changes are told apart from users' by pid. Paths resolve with
//! `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`; only regular files and folders owned by the
//! root's owner are synced (a symlink, device or someone else's file is skipped, never read).

use super::record_of;
use crate::fsutil;
use crate::hsm::evict::meta_at;
use crate::hsm::fanotify::Group;
use crate::hsm::meta::{self, FileMeta, Fill, Pin};
use crate::hsm::placeholder::{Owner, Populator};
use crate::index::Index;
use crate::model::{Kind, RelPath, RemoteEntry};
use crate::sync::local::LocalFs;
use crate::sync::watch::{DirKey, Watcher};
use crate::sync::{LocalEntry, LocalMap, LocalRecord, Stamp};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

pub struct RootFs<'a> {
    pub id: String,
    /// The private mount of the root.
    pub q: OwnedFd,
    pub owner: Owner,
    pub group: &'a Group,
    pub index: &'a dyn Index,
    /// Folders seen by the scan are watched for changes; their keys (with the root and
    /// path) go into the watcher's map at once, so a change right after the scan is known.
    pub watcher: Option<&'a Watcher>,
    pub watched: &'a Mutex<HashMap<DirKey, (String, RelPath)>>,
    /// Records changed by the pass (for state events).
    pub touched: Mutex<Vec<FileMeta>>,
}

fn stamp_of(st: &libc::stat) -> Stamp {
    (st.st_size as u64, st.st_mtime, st.st_mtime_nsec as u32)
}

impl RootFs<'_> {
    fn q(&self) -> BorrowedFd<'_> {
        self.q.as_fd()
    }

    fn parent(&self, p: &RelPath) -> io::Result<(OwnedFd, String)> {
        let (fd, name) = fsutil::open_parent(self.q(), p)?;
        Ok((fd, name.to_string()))
    }

    fn open_file(&self, p: &RelPath, flags: i32) -> io::Result<File> {
        let fd = fsutil::open_beneath(self.q(), p, flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0)?;
        let st = fsutil::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        if st.st_uid != self.owner.uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{p}: not owned by the sync root's owner; not synced"),
            ));
        }
        Ok(File::from(fd))
    }

    fn write_meta(&self, f: &File, m: &FileMeta) -> io::Result<()> {
        meta::write_fd(f.as_fd(), m)?;
        let _ = self.index.put(&m.root, &m.path, &record_of(m));
        self.touched.lock().unwrap().push(m.clone());
        Ok(())
    }

    fn populator(&self) -> Populator<'_> {
        Populator::new(self.q(), &self.id, self.owner, self.group)
    }

    fn mkdir_p(&self, p: &RelPath) -> io::Result<()> {
        let mut todo = vec![];
        let mut cur = Some(p.clone());
        while let Some(d) = cur.filter(|d| !d.is_root()) {
            match fsutil::open_beneath(self.q(), &d, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => todo.push(d.clone()),
                Err(e) => return Err(e),
            }
            cur = d.parent();
        }
        for d in todo.iter().rev() {
            let (pfd, name) = self.parent(d)?;
            // Made as the owner (never chowned by name): the folder is theirs from the start.
            let creds = crate::asuser::UserCreds::of(self.owner.uid, self.owner.gid);
            match crate::asuser::with_creds(&creds, || fsutil::mkdir_at(pfd.as_fd(), &name, 0o755))
                .and_then(|r| r)
            {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The record of the file at `p`, read without opening it.
    fn meta(&self, p: &RelPath) -> io::Result<Option<FileMeta>> {
        let (pfd, name) = self.parent(p)?;
        meta_at(pfd.as_fd(), &name, p.as_str())
    }
}

impl RootFs<'_> {
    /// Gives the entries of folder `d` to `out` (and its subfolders to `stack`, for a full
    /// scan), in the directory's order, and watches it for changes.
    fn scan_folder(
        &self,
        d: &RelPath,
        out: &mut dyn FnMut(RelPath, LocalEntry),
        mut stack: Option<&mut Vec<RelPath>>,
    ) -> io::Result<()> {
        let dfd = fsutil::open_beneath(self.q(), d, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        if let Some(w) = self.watcher {
            match w.watch(dfd.as_fd(), &|fd| self.group.shield(fd)) {
                Ok(k) => {
                    self.watched
                        .lock()
                        .unwrap()
                        .insert(k, (self.id.clone(), d.clone()));
                }
                Err(e) => tracing::warn!(dir = %d, error = %e, "cannot watch folder"),
            }
        }
        for raw in fsutil::read_dir_names(dfd.as_fd())? {
            let Ok(name) = crate::model::validate_name(&raw) else {
                tracing::debug!(dir = %d, "skipping a name that cannot be synced");
                continue;
            };
            let Ok(p) = d.join(name) else { continue };
            let st = match fsutil::stat_at(dfd.as_fd(), name) {
                Ok(st) => st,
                Err(_) => continue, // gone meanwhile
            };
            if st.st_uid != self.owner.uid {
                continue;
            }
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    out(
                        p.clone(),
                        LocalEntry {
                            kind: Kind::Dir,
                            size: 0,
                            mtime: (0, 0),
                            record: None,
                        },
                    );
                    if let Some(s) = stack.as_mut() {
                        s.push(p);
                    }
                }
                libc::S_IFREG => {
                    let record = meta_at(dfd.as_fd(), name, p.as_str())
                        .ok()
                        .flatten()
                        .and_then(|m| {
                            if m.root != self.id {
                                // Another root's file (moved in): its bytes count only if all
                                // are here; a record naming another root is not ours.
                                return None;
                            }
                            // A record that keeps only a hash, of a file renamed here since it
                            // was written: the pass finds its remote path (`resolve_origins`).
                            let origin_hash = m.unknown_hash();
                            Some(LocalRecord {
                                origin: if origin_hash.is_some() {
                                    p.clone()
                                } else {
                                    RelPath::parse(&m.path).ok()?
                                },
                                origin_hash,
                                version: m.version,
                                fill: m.fill,
                                pin: m.pin,
                                size: m.size,
                                mtime: m.mtime,
                            })
                        });
                    out(
                        p,
                        LocalEntry {
                            kind: Kind::File,
                            size: st.st_size as u64,
                            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
                            record,
                        },
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl LocalFs for RootFs<'_> {
    fn scan(&self) -> io::Result<LocalMap> {
        // A scan is blocking filesystem work: tell the runtime, so the threads that answer
        // the kernel and the socket keep running meanwhile.
        fsutil::blocking(|| {
            let mut out = LocalMap::new();
            let mut stack = vec![RelPath::root()];
            while let Some(d) = stack.pop() {
                self.scan_folder(&d, &mut |p, e| drop(out.insert(p, e)), Some(&mut stack))?;
            }
            Ok(out)
        })
    }

    fn scan_dir(&self, dir: &RelPath) -> io::Result<LocalMap> {
        fsutil::blocking(|| {
            let mut out = LocalMap::new();
            self.scan_folder(dir, &mut |p, e| drop(out.insert(p, e)), None)?;
            Ok(out)
        })
    }

    fn scan_dir_each(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(RelPath, LocalEntry),
    ) -> io::Result<()> {
        fsutil::blocking(|| self.scan_folder(dir, f, None))
    }

    fn open_upload(&self, p: &RelPath) -> io::Result<(File, Stamp)> {
        let f = self.open_file(p, libc::O_RDONLY)?;
        if let Some(m) = meta::read_fd(f.as_fd())? {
            // Whatever root it came from: holes are not content.
            if m.fill != Fill::Complete {
                return Err(io::Error::other(format!(
                    "{p}: not all bytes are local; refusing to upload holes"
                )));
            }
        }
        let st = fsutil::fstat(f.as_fd())?;
        Ok((f, stamp_of(&st)))
    }

    fn mark_synced(&self, p: &RelPath, e: &RemoteEntry, stamp: Stamp) -> io::Result<()> {
        let f = self.open_file(p, libc::O_RDONLY)?;
        let old = meta::read_fd(f.as_fd())?.filter(|m| m.root == self.id);
        let m = FileMeta {
            v: 1,
            root: self.id.clone(),
            path: p.as_str().to_string(),
            version: e.version.token(),
            size: stamp.0,
            mtime: (stamp.1, stamp.2),
            fill: Fill::Complete,
            ranges: Default::default(),
            pin: old.map(|m| m.pin).unwrap_or(Pin::Inherit),
            at: meta::Place::Here,
        };
        self.write_meta(&f, &m)
    }

    fn mark_pending(&self, p: &RelPath, stamp: Stamp) -> io::Result<()> {
        let f = self.open_file(p, libc::O_RDONLY)?;
        if meta::read_fd(f.as_fd())?.is_some_and(|m| m.root == self.id) {
            return Ok(());
        }
        let pin = crate::hsm::pins::inherited(self.q(), &p.parent().unwrap_or_default())
            .unwrap_or_default();
        let m = FileMeta {
            v: 1,
            root: self.id.clone(),
            path: p.as_str().to_string(),
            version: String::new(),
            size: stamp.0,
            mtime: (stamp.1, stamp.2),
            fill: Fill::Complete,
            ranges: Default::default(),
            pin: if pin == Pin::Pinned {
                pin
            } else {
                Pin::Inherit
            },
            at: meta::Place::Here,
        };
        self.write_meta(&f, &m)
    }

    fn set_origin(
        &self,
        p: &RelPath,
        origin: &RelPath,
        version: Option<(&str, &str)>,
    ) -> io::Result<()> {
        let f = self.open_file(p, libc::O_RDONLY)?;
        let Some(mut m) = meta::read_fd(f.as_fd())?
            .map(|m| m.found_at(p.as_str()))
            .filter(|m| m.root == self.id)
        else {
            return Ok(());
        };
        let new_version = version
            .filter(|(was, now)| *was == m.version && now != was)
            .map(|(_, now)| now);
        if m.path != origin.as_str() || new_version.is_some() {
            if m.path != origin.as_str() && origin == p && m.resolved() {
                let _ = self.index.remove(&self.id, &m.path);
            }
            m.path = origin.as_str().to_string();
            m.at = if origin == p {
                meta::Place::Here
            } else {
                meta::Place::Elsewhere
            };
            if let Some(v) = new_version {
                m.version = v.to_string();
            }
            self.write_meta(&f, &m)?;
        }
        Ok(())
    }

    fn create_placeholder(&self, e: &RemoteEntry) -> io::Result<()> {
        if let Some(parent) = e.path.parent() {
            self.mkdir_p(&parent)?;
        }
        let mut pop = self.populator();
        pop.add(e)?;
        if pop.stats.files == 0 && e.kind == Kind::File {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if let Some(m) = self.meta(&e.path)? {
            let _ = self.index.put(&m.root, &m.path, &record_of(&m));
            self.touched.lock().unwrap().push(m);
        }
        Ok(())
    }

    fn refresh(&self, e: &RemoteEntry, expect: &str) -> io::Result<()> {
        let (pfd, name) = self.parent(&e.path)?;
        let m = meta_at(pfd.as_fd(), &name, e.path.as_str())?
            .filter(|m| m.root == self.id && m.version == expect)
            .ok_or_else(|| crate::sync::local::stale(&e.path))?;
        let st = fsutil::stat_at(pfd.as_fd(), &name)?;
        if m.fill == Fill::Complete
            && (st.st_size as u64, (st.st_mtime, st.st_mtime_nsec as u32)) != (m.size, m.mtime)
        {
            return Err(crate::sync::local::stale(&e.path));
        }
        // Keep the user's setting and mode; a pinned file downloads again after the pass.
        self.populator().replace(e, m.pin, st.st_mode & 0o7777)?;
        if let Some(m) = self.meta(&e.path)? {
            let _ = self.index.put(&m.root, &m.path, &record_of(&m));
            self.touched.lock().unwrap().push(m);
        }
        Ok(())
    }

    fn mkdir(&self, p: &RelPath) -> io::Result<()> {
        self.mkdir_p(p)
    }

    fn remove(&self, p: &RelPath, kind: Kind, expect: Option<&str>) -> io::Result<()> {
        let (pfd, name) = self.parent(p)?;
        let st = match fsutil::stat_at(pfd.as_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        if kind == Kind::Dir {
            return fsutil::unlink_at(pfd.as_fd(), &name, true);
        }
        let m = meta_at(pfd.as_fd(), &name, p.as_str())?
            .filter(|m| m.root == self.id)
            .ok_or_else(|| crate::sync::local::stale(p))?;
        let modified = m.fill == Fill::Complete
            && (st.st_size as u64, (st.st_mtime, st.st_mtime_nsec as u32)) != (m.size, m.mtime);
        if modified || expect.is_some_and(|v| v != m.version) {
            return Err(crate::sync::local::stale(p));
        }
        fsutil::unlink_at(pfd.as_fd(), &name, false)?;
        let _ = self.index.remove(&self.id, &m.path);
        Ok(())
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> io::Result<()> {
        if let Some(parent) = to.parent() {
            self.mkdir_p(&parent)?;
        }
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        fsutil::rename_at(a.as_fd(), &an, b.as_fd(), &bn, true)
    }

    fn set_aside(&self, from: &RelPath, to: &RelPath, keep_record: bool) -> io::Result<()> {
        let (a, an) = self.parent(from)?;
        let st = fsutil::stat_at(a.as_fd(), &an)?;
        if !keep_record && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let f = self.open_file(from, libc::O_RDONLY)?;
            if let Some(m) = meta::read_fd(f.as_fd())?.map(|m| m.found_at(from.as_str())) {
                if m.fill == Fill::Complete {
                    fsutil::remove_xattr(f.as_fd(), meta::META_XATTR)?;
                    let _ = fsutil::remove_xattr(f.as_fd(), meta::USER_XATTR);
                    if m.resolved() {
                        let _ = self.index.remove(&m.root, &m.path);
                    }
                }
            }
        }
        let (b, bn) = self.parent(to)?;
        fsutil::rename_at(a.as_fd(), &an, b.as_fd(), &bn, true)
    }

    fn exists(&self, p: &RelPath) -> bool {
        self.parent(p)
            .and_then(|(fd, n)| fsutil::stat_at(fd.as_fd(), &n))
            .is_ok()
    }
}

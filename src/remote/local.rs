//! `file:///path` remote: a local or mounted (NFS/SMB) directory used as the "cloud". The
//! README demo runs on it with no server; it obeys the same conformance suite as WebDAV/S3.
//!
//! All access goes through [`crate::fsutil`] (openat2 beneath the base, no symlinks), so a
//! symlink in the served tree can never lead outside it; symlinks and special files are not
//! listed. Versions are strong tags built from inode, size and nanosecond mtime.
//!
//! In the daemon the directory belongs to a user, and every filesystem call of this remote
//! (the first open, listing, reading, writing) runs with that user's credentials
//! ([`crate::asuser`]) on a blocking thread: the kernel refuses what the user could not do,
//! and uploads are created as the user. The base is opened once, as the user, and must be a
//! directory the user owns; every re-open (restart, login) checks that again. Opens of
//! files use `O_NONBLOCK` and are type-checked, so a FIFO swapped in never blocks a thread.

use super::{reject, Moved, Precondition, ReadRange, RemoteError, Result, Sink, WalkStats};
use crate::asuser::{self, UserCreds};
use crate::fsutil;
use crate::model::{validate_name, Kind, RelPath, RemoteEntry, Version};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct LocalDir {
    path: PathBuf,
    root: Arc<OwnedFd>,
    creds: Arc<UserCreds>,
}

impl LocalDir {
    /// Opens `path` as `creds` (the kernel checks every component with the user's rights) and
    /// keeps the directory fd. Unless `creds` is root, the directory must be the user's own.
    pub fn new(path: &Path, creds: Arc<UserCreds>) -> Result<Self> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| RemoteError::Config("file:// path contains NUL".into()))?;
        let opened = asuser::with_creds(&creds, || {
            // SAFETY: valid C string; the fd is owned below.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK,
                )
            };
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: fresh descriptor from the kernel.
                Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            }
        })
        .and_then(|r| r)
        .map_err(|e| {
            RemoteError::Config(format!("cannot open local remote {}: {e}", path.display()))
        })?;
        let st = fsutil::fstat(opened.as_fd())
            .map_err(|e| RemoteError::Config(format!("{}: {e}", path.display())))?;
        if !creds.is_root() && st.st_uid != creds.uid {
            return Err(RemoteError::Config(format!(
                "{} is not your directory; a file:// remote must be",
                path.display()
            )));
        }
        Ok(LocalDir {
            path: path.to_path_buf(),
            root: Arc::new(opened),
            creds,
        })
    }

    /// Runs `f` on a blocking thread with the owner's credentials.
    async fn blocking<T: Send + 'static>(
        &self,
        path: &RelPath,
        f: impl FnOnce(&OwnedFd) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let root = self.root.clone();
        asuser::run_as(self.creds.clone(), move || f(&root))
            .await
            .map_err(|e| RemoteError::io(path, e))?
    }
}

/// Opens a regular file beneath the base (`O_NONBLOCK`: a FIFO never blocks the open), and
/// refuses anything else.
fn open_regular(root: &OwnedFd, path: &RelPath) -> Result<(File, libc::stat)> {
    let fd = fsutil::open_beneath(
        root.as_fd(),
        path,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| map_io(path, e))?;
    let st = fsutil::fstat(fd.as_fd()).map_err(|e| RemoteError::io(path, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RemoteError::NotFound { path: path.clone() });
    }
    Ok((File::from(fd), st))
}

fn entry_from(path: RelPath, st: &libc::stat) -> Option<RemoteEntry> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        _ => return None,
    };
    let size = if kind == Kind::File {
        st.st_size as u64
    } else {
        0
    };
    let mtime = fsutil::mtime_of(st);
    Some(RemoteEntry {
        path,
        kind,
        size,
        mtime,
        version: Version::Etag {
            value: format!(
                "{:x}-{:x}-{:x}.{:x}",
                st.st_ino, size, st.st_mtime, st.st_mtime_nsec
            ),
            weak: false,
        },
        file_id: Some(st.st_ino.to_string()),
        // Never setuid/setgid/sticky: a share's special bits do not reach placeholders.
        mode: Some(st.st_mode & 0o777),
        permissions: None,
    })
}

fn stat_path(root: &OwnedFd, path: &RelPath) -> Result<RemoteEntry> {
    let fd =
        fsutil::open_beneath(root.as_fd(), path, libc::O_PATH, 0).map_err(|e| map_io(path, e))?;
    let st = fsutil::fstat(fd.as_fd()).map_err(|e| RemoteError::io(path, e))?;
    entry_from(path.clone(), &st).ok_or_else(|| RemoteError::NotFound { path: path.clone() })
}

fn map_io(path: &RelPath, e: std::io::Error) -> RemoteError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => RemoteError::NotFound { path: path.clone() },
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
            RemoteError::AlreadyExists { path: path.clone() }
        }
        _ => RemoteError::io(path, e),
    }
}

fn list_one(root: &OwnedFd, dir: &RelPath, stats: &mut WalkStats) -> Result<Vec<RemoteEntry>> {
    let dfd = fsutil::open_beneath(root.as_fd(), dir, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| map_io(dir, e))?;
    let names = fsutil::read_dir_names(dfd.as_fd()).map_err(|e| RemoteError::io(dir, e))?;
    let mut out = Vec::with_capacity(names.len());
    for raw in names {
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let name = match validate_name(&raw) {
            Ok(n) => n,
            Err(e) => {
                reject(stats, &shown, &e);
                continue;
            }
        };
        if name.starts_with(".skyfill-upload-") {
            continue;
        }
        let p = dir.join(name).expect("validated");
        let st = match fsutil::stat_at(dfd.as_fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(RemoteError::io(&p, e)),
        };
        match entry_from(p, &st) {
            Some(e) => {
                stats.entries += 1;
                out.push(e)
            }
            None => reject(
                stats,
                &shown,
                &"not a regular file or directory (symlink or special)",
            ),
        }
    }
    Ok(out)
}

fn version_of(st: &libc::stat, path: &RelPath) -> Version {
    entry_from(path.clone(), st)
        .map(|e| e.version)
        .unwrap_or(Version::SizeMtime {
            size: 0,
            mtime_secs: 0,
        })
}

fn same(expected: &Version, st: &libc::stat, path: &RelPath) -> bool {
    match expected {
        Version::Etag { .. } => expected.same(&version_of(st, path)),
        Version::SizeMtime { size, mtime_secs } => {
            st.st_size as u64 == *size && st.st_mtime == *mtime_secs
        }
    }
}

#[async_trait]
impl super::Remote for LocalDir {
    fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }

    async fn stat(&self, path: &RelPath) -> Result<RemoteEntry> {
        let p = path.clone();
        self.blocking(path, move |root| stat_path(root, &p)).await
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<RemoteEntry>> {
        let d = dir.clone();
        self.blocking(dir, move |root| {
            list_one(root, &d, &mut WalkStats::default())
        })
        .await
    }

    async fn walk(&self, dir: &RelPath, sink: Sink<'_>) -> Result<WalkStats> {
        let mut stats = WalkStats::default();
        let mut queue = VecDeque::from([dir.clone()]);
        while let Some(d) = queue.pop_front() {
            let dd = d.clone();
            let (entries, st) = self
                .blocking(&d, move |root| {
                    let mut st = WalkStats::default();
                    list_one(root, &dd, &mut st).map(|v| (v, st))
                })
                .await?;
            stats.entries += st.entries;
            stats.rejected += st.rejected;
            for e in entries {
                if e.kind == Kind::Dir {
                    queue.push_back(e.path.clone());
                }
                sink(e)?;
            }
        }
        Ok(stats)
    }

    async fn read_range(&self, req: ReadRange<'_>) -> Result<()> {
        let ReadRange {
            path,
            version,
            offset,
            len,
            dst,
            dst_offset,
            ..
        } = req;
        let dst = dst.try_clone().map_err(|e| RemoteError::io(path, e))?;
        let (p, version) = (path.clone(), version.clone());
        self.blocking(path, move |root| -> Result<()> {
            let path = p;
            let (src, st) = open_regular(root, &path)?;
            if !same(&version, &st, &path) || (st.st_size as u64) < offset + len {
                return Err(RemoteError::version_changed(
                    &path,
                    &version,
                    Some(&version_of(&st, &path)),
                ));
            }
            let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
            let mut done = 0u64;
            while done < len {
                let n = buf.len().min((len - done) as usize);
                let got = src
                    .read_at(&mut buf[..n], offset + done)
                    .map_err(|e| RemoteError::io(&path, e))?;
                if got == 0 {
                    return Err(RemoteError::version_changed(&path, &version, None));
                }
                dst.write_all_at(&buf[..got], dst_offset + done)
                    .map_err(|e| RemoteError::io(&path, e))?;
                done += got as u64;
            }
            let st2 = fsutil::fstat(src.as_fd()).map_err(|e| RemoteError::io(&path, e))?;
            if !same(&version, &st2, &path) {
                return Err(RemoteError::version_changed(
                    &path,
                    &version,
                    Some(&version_of(&st2, &path)),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn upload(&self, path: &RelPath, src: &File, pre: &Precondition) -> Result<RemoteEntry> {
        let src = src.try_clone().map_err(|e| RemoteError::io(path, e))?;
        let (p, pre) = (path.clone(), pre.clone());
        self.blocking(path, move |root| -> Result<RemoteEntry> {
            let path = p;
            let (pfd, name) =
                fsutil::open_parent(root.as_fd(), &path).map_err(|e| map_io(&path, e))?;
            match &pre {
                Precondition::None => {}
                Precondition::MustNotExist => {
                    if fsutil::stat_at(pfd.as_fd(), name).is_ok() {
                        return Err(RemoteError::AlreadyExists { path: path.clone() });
                    }
                }
                Precondition::IfMatch(v) => match fsutil::stat_at(pfd.as_fd(), name) {
                    Ok(st) if same(v, &st, &path) => {}
                    _ => return Err(RemoteError::PreconditionFailed { path: path.clone() }),
                },
            }
            let tmp_name = format!(".skyfill-upload-{:016x}", rand::random::<u64>());
            let tmp_rel = path
                .parent()
                .unwrap_or_default()
                .join(&tmp_name)
                .expect("valid");
            let sst = fsutil::fstat(src.as_fd()).map_err(|e| RemoteError::io(&path, e))?;
            let tfd = fsutil::open_beneath(
                root.as_fd(),
                &tmp_rel,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                sst.st_mode & 0o777,
            )
            .map_err(|e| RemoteError::io(&path, e))?;
            let tmp = File::from(tfd);
            let result = (|| -> std::io::Result<()> {
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                let size = sst.st_size as u64;
                while off < size {
                    let n = buf.len().min((size - off) as usize);
                    let got = src.read_at(&mut buf[..n], off)?;
                    if got == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "source shrank during upload",
                        ));
                    }
                    tmp.write_all_at(&buf[..got], off)?;
                    off += got as u64;
                }
                tmp.sync_all()?;
                fsutil::set_mtime(tmp.as_fd(), fsutil::mtime_of(&sst))?;
                let noreplace = pre == Precondition::MustNotExist;
                fsutil::rename_at(pfd.as_fd(), &tmp_name, pfd.as_fd(), name, noreplace)
            })();
            if let Err(e) = result {
                let _ = fsutil::unlink_at(pfd.as_fd(), &tmp_name, false);
                return Err(map_io(&path, e));
            }
            stat_path(root, &path)
        })
        .await
    }

    async fn delete(&self, path: &RelPath, kind: Kind) -> Result<()> {
        if path.is_root() {
            return Err(RemoteError::Unsupported {
                path: path.clone(),
                what: "deleting the remote root".into(),
            });
        }
        fn rm(root: &OwnedFd, p: &RelPath, kind: Kind) -> Result<()> {
            if kind == Kind::Dir {
                for e in list_one(root, p, &mut WalkStats::default())? {
                    rm(root, &e.path, e.kind)?;
                }
            }
            let (pfd, name) = fsutil::open_parent(root.as_fd(), p).map_err(|e| map_io(p, e))?;
            fsutil::unlink_at(pfd.as_fd(), name, kind == Kind::Dir).map_err(|e| map_io(p, e))
        }
        let p = path.clone();
        self.blocking(path, move |root| rm(root, &p, kind)).await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath, _kind: Kind) -> Result<Moved> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(&from.clone(), move |root| {
            let (a, an) = fsutil::open_parent(root.as_fd(), &from).map_err(|e| map_io(&from, e))?;
            let (b, bn) = fsutil::open_parent(root.as_fd(), &to).map_err(|e| map_io(&to, e))?;
            fsutil::rename_at(a.as_fd(), an, b.as_fd(), bn, true).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::EEXIST) => RemoteError::AlreadyExists { path: to.clone() },
                    _ => map_io(&from, e),
                }
            })
        })
        .await?;
        Ok(Moved::default()) // rename(2) keeps the inode, so the size and mtime
    }

    async fn mkdir(&self, path: &RelPath) -> Result<()> {
        if path.is_root() {
            return Ok(());
        }
        let path = path.clone();
        self.blocking(&path.clone(), move |root| {
            let (pfd, name) =
                fsutil::open_parent(root.as_fd(), &path).map_err(|e| map_io(&path, e))?;
            match fsutil::mkdir_at(pfd.as_fd(), name, 0o755) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match stat_path(root, &path)? {
                    e if e.kind == Kind::Dir => Ok(()),
                    _ => Err(RemoteError::AlreadyExists { path: path.clone() }),
                },
                Err(e) => Err(map_io(&path, e)),
            }
        })
        .await
    }
}

//! Finding the remote path of a file whose record keeps only that path's hash
//! (`hsm::meta::Place`) when the kernel asks for its bytes: first the place the file is at in
//! its root (the common case: nothing was renamed), then, for a file renamed or moved here
//! since its record was written, the sync base (its own folder first, then the whole base).
//! Every candidate is checked against the hash, so a wrong guess is never used.

use super::core::Core;
use crate::fsutil;
use crate::hsm::meta::path_hash;
use crate::model::RelPath;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

/// The root-relative path of `file` in root `root` whose hash is `hash`, if any is found.
pub fn find(core: &Core, root: &str, file: BorrowedFd<'_>, hash: u64) -> Option<String> {
    let r = core.root_by_id(root)?;
    let _span = tracing::debug_span!("origin", root = %root).entered();
    // 1. The path the file was opened by, when it is below the root as the owner sees it;
    //    else 2. its place in the root as the root's own view shows it (a file opened
    //    through a bind mount elsewhere, or in another mount namespace). The second costs a
    //    private mount, so it is looked for only when the first says nothing.
    let place = link(file)
        .and_then(|l| below(&r.local, &l))
        .or_else(|| place_in_root(core, &r, file));
    if let Some(p) = place.as_ref().filter(|p| path_hash(p) == hash) {
        return Some(p.clone());
    }
    // 3. Renamed here since its record was written: the index has its old path (its status
    //    record, or the sync base). Its current folder first (a rename in place), then
    //    every path of the root (a move; until the next pass records it).
    if let Some(p) = &place {
        let dir = RelPath::parse(p)
            .ok()
            .and_then(|p| p.parent())
            .unwrap_or_default();
        let from = if dir.is_root() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let siblings = core
            .index
            .next_in_folder(root, &from, usize::MAX / 64)
            .unwrap_or_default()
            .into_iter()
            .map(|(p, _)| p);
        let base = core
            .index
            .base_children(root, dir.as_str())
            .unwrap_or_default()
            .into_iter()
            .map(|(p, _)| p);
        if let Some(p) = siblings.chain(base).find(|p| path_hash(p) == hash) {
            return Some(p);
        }
    }
    let mut found: Option<String> = None;
    {
        let mut look = |p: &str| {
            if found.is_none() && path_hash(p) == hash {
                found = Some(p.to_string());
            }
        };
        let _ = core.index.record_paths(root, &mut look);
        let _ = core.index.base_paths(root, &mut look);
    }
    tracing::debug!(
        found = found.is_some(),
        "looked for a renamed file's remote path in the index"
    );
    found
}

fn link(fd: BorrowedFd<'_>) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()?
        .into_os_string()
        .into_string()
        .ok()
}

fn below(root: &Path, link: &str) -> Option<String> {
    let rest = Path::new(link).strip_prefix(root).ok()?;
    let rel = rest.to_str()?;
    RelPath::parse(rel)
        .ok()
        .filter(|p| !p.is_root())
        .map(|p| p.as_str().to_string())
}

/// The file's path in the root's private mount, reached by its handle.
fn place_in_root(
    core: &Core,
    r: &crate::roots::RootRecord,
    file: BorrowedFd<'_>,
) -> Option<String> {
    let (htype, handle) = crate::hsm::fanotify::handle_of(file).ok()?;
    let root = core.open_root(r).ok()?;
    let q = core.quiet(&root).ok()?;
    let fd = crate::hsm::fanotify::open_by_handle(q.as_fd(), htype, &handle, libc::O_PATH).ok()?;
    let st = fsutil::fstat(fd.as_fd()).ok()?;
    let mine = fsutil::fstat(file).ok()?;
    if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino) {
        return None;
    }
    let l = link(fd.as_fd())?;
    // A detached mount shows its paths from its own top ("/a/b"); one that is attached
    // shows where it is mounted.
    below(&r.local, &l).or_else(|| {
        let rel = l.strip_prefix('/')?;
        RelPath::parse(rel)
            .ok()
            .filter(|p| !p.is_root())
            .map(|p| p.as_str().to_string())
    })
}

//! Listing a remote tree for a sync pass. Servers whose folder ETags change when anything
//! below them changes (Nextcloud, ownCloud: recognised by their file ids) are listed
//! incrementally: an unchanged root ETag means nothing changed, and only folders whose ETag
//! changed are listed again. Every other server (Apache mod_dav, rclone, S3) is walked in full
//! and the planner diffs the listing.

use super::RemoteMap;
use crate::model::{Kind, RelPath, RemoteEntry, Version};
use crate::remote::{Remote, RemoteError};

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub entries: RemoteMap,
    pub root_version: Option<Version>,
    /// Folder ETags propagate (listing was incremental).
    pub propagating: bool,
    /// Folders listed to make this snapshot (for tests and logs).
    pub listed_dirs: u64,
    /// A root ETag at which the server was seen to be what the sync base says (a full pass
    /// with nothing to do, or a comparison that found no difference), the base unchanged
    /// since: the server's root showing it again means nothing changed.
    pub base_version: Option<Version>,
}

fn subtree(map: &RemoteMap, dir: &RelPath) -> Vec<(RelPath, RemoteEntry)> {
    map.range(dir.below_start()..)
        .skip_while(|(p, _)| *p == dir)
        .take_while(|(p, _)| p.starts_with(dir))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

fn too_many(max: u64) -> RemoteError {
    RemoteError::TooMany {
        path: RelPath::root(),
        limit: max,
        what: "entries in the sync root",
    }
}

/// Lists everything below the remote's base, reusing `prev` where folder ETags allow it;
/// more than `max` entries end the listing with [`RemoteError::TooMany`].
pub async fn list(
    remote: &dyn Remote,
    prev: Option<&Snapshot>,
    max: u64,
) -> Result<Snapshot, RemoteError> {
    let root = remote.stat(&RelPath::root()).await?;
    let prev_prop = prev.filter(|p| p.propagating);
    if let Some(p) = prev_prop {
        if p.root_version
            .as_ref()
            .is_some_and(|v| v.same(&root.version))
        {
            let mut s = p.clone();
            s.listed_dirs = 0;
            return Ok(s);
        }
    }
    let first = remote.list_dir(&RelPath::root()).await?;
    let propagating = root.file_id.is_some() || first.iter().any(|e| e.file_id.is_some());
    if !propagating {
        let mut entries = RemoteMap::new();
        let mut sink = |e: RemoteEntry| -> crate::remote::Result<()> {
            if entries.len() as u64 >= max {
                return Err(too_many(max));
            }
            entries.insert(e.path.clone(), e);
            Ok(())
        };
        remote.walk(&RelPath::root(), &mut sink).await?;
        return Ok(Snapshot {
            entries,
            root_version: Some(root.version),
            propagating: false,
            listed_dirs: 1,
            base_version: None,
        });
    }
    let mut out = Snapshot {
        root_version: Some(root.version),
        propagating: true,
        listed_dirs: 1,
        ..Default::default()
    };
    let mut queue: Vec<Vec<RemoteEntry>> = vec![first];
    while let Some(children) = queue.pop() {
        for e in children {
            if e.kind == Kind::Dir {
                let unchanged = prev_prop
                    .and_then(|p| p.entries.get(&e.path))
                    .is_some_and(|old| old.kind == Kind::Dir && old.version.same(&e.version));
                if unchanged {
                    out.entries
                        .extend(subtree(&prev_prop.unwrap().entries, &e.path));
                } else {
                    out.listed_dirs += 1;
                    queue.push(remote.list_dir(&e.path).await?);
                }
            }
            out.entries.insert(e.path.clone(), e);
            if out.entries.len() as u64 > max {
                return Err(too_many(max));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::Memory;
    use crate::remote::{Precondition, Sink, WalkStats};
    use async_trait::async_trait;
    use std::fs::File;

    /// Memory with Nextcloud's behaviour: file ids, and folder ETags that hash everything below.
    struct Propagating(Memory);

    impl Propagating {
        async fn tag(&self, dir: &RelPath) -> Version {
            let mut acc = String::new();
            let mut sink = |e: RemoteEntry| -> crate::remote::Result<()> {
                acc.push_str(&format!("{}={};", e.path, e.version.token()));
                Ok(())
            };
            let _ = self.0.walk(dir, &mut sink).await;
            Version::Etag {
                value: format!("{:x}", md5ish(&acc)),
                weak: false,
            }
        }
        async fn dress(&self, mut e: RemoteEntry) -> RemoteEntry {
            e.file_id = Some(format!("id-{}", e.path));
            if e.kind == Kind::Dir {
                e.version = self.tag(&e.path).await;
            }
            e
        }
    }

    fn md5ish(s: &str) -> u64 {
        s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }

    #[async_trait]
    impl Remote for Propagating {
        fn describe(&self) -> String {
            "propagating".into()
        }
        async fn stat(&self, path: &RelPath) -> crate::remote::Result<RemoteEntry> {
            let e = self.0.stat(path).await?;
            Ok(self.dress(e).await)
        }
        async fn list_dir(&self, dir: &RelPath) -> crate::remote::Result<Vec<RemoteEntry>> {
            let mut out = vec![];
            for e in self.0.list_dir(dir).await? {
                out.push(self.dress(e).await);
            }
            Ok(out)
        }
        async fn walk(&self, _dir: &RelPath, _sink: Sink<'_>) -> crate::remote::Result<WalkStats> {
            unreachable!("a propagating server is listed folder by folder")
        }
        async fn read_range(&self, r: crate::remote::ReadRange<'_>) -> crate::remote::Result<()> {
            self.0.read_range(r).await
        }
        async fn upload(
            &self,
            p: &RelPath,
            s: &File,
            pre: &Precondition,
        ) -> crate::remote::Result<RemoteEntry> {
            self.0.upload(p, s, pre).await
        }
        async fn delete(&self, p: &RelPath, k: Kind) -> crate::remote::Result<()> {
            self.0.delete(p, k).await
        }
        async fn rename(
            &self,
            f: &RelPath,
            t: &RelPath,
            k: Kind,
        ) -> crate::remote::Result<crate::remote::Moved> {
            self.0.rename(f, t, k).await
        }
        async fn mkdir(&self, p: &RelPath) -> crate::remote::Result<()> {
            self.0.mkdir(p).await
        }
    }

    #[tokio::test]
    async fn only_changed_folders_are_listed_again() {
        let m = Memory::new();
        for d in ["a", "b", "c"] {
            for f in 0..3 {
                m.put(&format!("{d}/x/f{f}"), b"1");
            }
        }
        let r = Propagating(m);
        let s1 = list(&r, None, u64::MAX).await.unwrap();
        assert!(s1.propagating);
        assert_eq!(s1.entries.len(), 3 * 5);
        assert_eq!(s1.listed_dirs, 7);
        // Nothing changed: no folder listed.
        let s2 = list(&r, Some(&s1), u64::MAX).await.unwrap();
        assert_eq!(s2.listed_dirs, 0);
        assert_eq!(s2.entries, s1.entries);
        // One change deep in b: root, b and b/x are listed again.
        r.0.put("b/x/f1", b"22");
        let s3 = list(&r, Some(&s2), u64::MAX).await.unwrap();
        assert_eq!(s3.listed_dirs, 3);
        assert_eq!(s3.entries.len(), 15);
        let p = RelPath::parse("b/x/f1").unwrap();
        assert_eq!(s3.entries[&p].size, 2);
        // A plain server is walked in full.
        let plain = Memory::new();
        plain.put("a/b", b"1");
        let s = list(&plain, None, u64::MAX).await.unwrap();
        assert!(!s.propagating);
        assert_eq!(s.entries.len(), 2);
    }
}

//! Conformance suite against the remotes that need no server: in-memory, fault-injecting
//! (wrapped in retries), and the local-directory remote. Server runs: `remote_servers.rs`.

#[path = "support/suite.rs"]
mod suite;

use skyfill::remote::faulty::{Faulty, Retrying};
use skyfill::remote::local::LocalDir;
use skyfill::remote::memory::Memory;
use skyfill::remote::retry::RetryPolicy;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn memory_conforms() {
    suite::run_all(&Memory::new()).await;
}

/// The reference model renaming as S3 does (a copy: moved files get new versions).
#[tokio::test]
async fn memory_renaming_by_copy_conforms() {
    suite::run_all(&Memory::copying()).await;
}

#[tokio::test]
async fn faulty_memory_with_retries_conforms() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        budget: Duration::from_secs(20),
        offline_hold: Duration::ZERO,
    };
    let faulty = std::sync::Arc::new(Faulty::new(Memory::new(), 3));
    suite::run_all(&Retrying::new(faulty.clone(), policy)).await;
    assert!(
        faulty.injected.load(Ordering::SeqCst) > 10,
        "faults were injected"
    );
}

#[tokio::test]
async fn faults_without_retries_surface_as_typed_errors() {
    use skyfill::remote::{Precondition, Remote};
    let faulty = Faulty::new(Memory::new(), 2);
    let mut errors = 0;
    for i in 0..20 {
        match faulty
            .upload(
                &suite::p(&format!("f{i}")),
                &suite::file_with(b"abc"),
                &Precondition::None,
            )
            .await
        {
            Ok(e) => assert_eq!(e.size, 3),
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 10);
}

#[tokio::test]
async fn local_dir_conforms() {
    let t = tempfile::tempdir().unwrap();
    suite::run_all(&LocalDir::new(t.path(), skyfill::asuser::UserCreds::current()).unwrap()).await;
}

#[tokio::test]
async fn local_dir_rejects_hostile_names_and_symlinks() {
    use skyfill::model::RelPath;
    use skyfill::remote::Remote;
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::fs::write(t.path().join("ok"), b"1").unwrap();
    std::fs::write(
        t.path().join(std::ffi::OsStr::from_bytes(b"bad\xffutf8")),
        b"2",
    )
    .unwrap();
    std::fs::write(t.path().join("ctrl\x01char"), b"3").unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
    let r = LocalDir::new(t.path(), skyfill::asuser::UserCreds::current()).unwrap();
    let (seen, stats) = suite::walk_names(&r, &RelPath::root()).await;
    assert_eq!(seen, vec!["ok"]);
    assert_eq!(stats.rejected, 3);
    assert!(r.stat(&suite::p("link/secret")).await.is_err());
}

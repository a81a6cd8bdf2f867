//! Test data on the real servers `scripts/test` starts: where they are (environment), a
//! fresh scratch place per test, uploads, and `skyfill add-root` arguments for each server.

#![allow(dead_code)]

use crate::hsm::Daemon;
use crate::suite::{file_with, p};
use skyfill::remote::webdav::{WebDav, WebDavConfig};
use skyfill::remote::{Precondition, ReadRange, Remote};
use std::collections::BTreeMap;
use std::path::Path;
use url::Url;

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test, which starts the servers"))
}

pub fn scratch() -> String {
    format!("h{:016x}", rand::random::<u64>())
}

pub enum Server {
    Apache,
    S3s,
}

/// Uploads `files` to a fresh place on the server; returns add-root arguments and secret.
pub async fn upload(
    server: &Server,
    files: &BTreeMap<String, Vec<u8>>,
) -> (Vec<String>, Option<String>) {
    let s = scratch();
    let args = match server {
        Server::Apache => {
            let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
            let port = u.port().unwrap();
            dav_at(&format!("http://127.0.0.1:{port}/dav/"))
                .mkdir(&p(&s))
                .await
                .unwrap();
            (
                vec![
                    format!("dav://127.0.0.1:{port}/dav/{s}"),
                    "--no-keyring".into(),
                ],
                None,
            )
        }
        Server::S3s => (
            vec![
                format!("s3://bucket/{s}"),
                "--endpoint".into(),
                env("SKYFILL_TEST_S3S"),
                "--path-style".into(),
                "--secret-stdin".into(),
                "--no-keyring".into(),
            ],
            Some(env("SKYFILL_TEST_S3_KEYS")),
        ),
    };
    upload_into(server, &args.0, files).await;
    args
}

fn dav_at(base: &str) -> WebDav {
    WebDav::new(WebDavConfig {
        url: Url::parse(base).unwrap(),
        user: None,
        password: None,
        http: Default::default(),
    })
    .unwrap()
}

pub fn add_root(
    d: &Daemon,
    local: &Path,
    args: &[String],
    secret: &Option<String>,
) -> serde_json::Value {
    let mut a: Vec<&str> = vec!["add-root", local.to_str().unwrap()];
    a.extend(args.iter().map(String::as_str));
    match secret {
        Some(s) => d.cli_stdin(&a, s),
        None => d.cli(&a),
    }
}

/// A client for the place an earlier `upload` made (given its add-root arguments).
pub fn client(server: &Server, args: &[String]) -> Box<dyn Remote> {
    let scratch = args[0].rsplit('/').next().unwrap().to_string();
    match server {
        Server::Apache => {
            let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
            Box::new(dav_at(&format!(
                "http://127.0.0.1:{}/dav/{scratch}/",
                u.port().unwrap()
            )))
        }
        Server::S3s => {
            let keys = env("SKYFILL_TEST_S3_KEYS");
            let (a, k) = keys.split_once(':').unwrap();
            let mut c = skyfill::remote::s3::S3Config::new(
                Url::parse(&env("SKYFILL_TEST_S3S")).unwrap(),
                "bucket",
            );
            c.prefix = scratch;
            c.credentials = Some((a.into(), k.into()));
            Box::new(skyfill::remote::s3::S3::new(c).unwrap())
        }
    }
}

/// Every file on the server below that place, with its bytes.
pub async fn server_files(server: &Server, args: &[String]) -> BTreeMap<String, Vec<u8>> {
    let r = client(server, args);
    let mut entries = Vec::new();
    let mut sink = |e: skyfill::model::RemoteEntry| -> skyfill::remote::Result<()> {
        entries.push(e);
        Ok(())
    };
    r.walk(&skyfill::model::RelPath::root(), &mut sink)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for e in entries {
        if e.kind != skyfill::model::Kind::File {
            continue;
        }
        let f = tempfile::tempfile().unwrap();
        if e.size > 0 {
            r.read_range(ReadRange::new(&e.path, &e.version, 0, e.size, &f))
                .await
                .unwrap();
        }
        out.insert(
            e.path.to_string(),
            std::fs::read(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&f)
            ))
            .unwrap(),
        );
    }
    out
}

/// Uploads more files into the place an earlier `upload` made (given its add-root arguments).
pub async fn upload_into(server: &Server, args: &[String], files: &BTreeMap<String, Vec<u8>>) {
    let scratch = args[0].rsplit('/').next().unwrap().to_string();
    match server {
        Server::Apache => {
            let u = Url::parse(&env("SKYFILL_TEST_APACHE")).unwrap();
            let base = format!("http://127.0.0.1:{}/dav/{scratch}/", u.port().unwrap());
            let dav = dav_at(&base);
            for (k, v) in files {
                let path = p(k);
                let mut anc = Vec::new();
                let mut a = path.parent();
                while let Some(x) = a.filter(|x| !x.is_root()) {
                    anc.push(x.clone());
                    a = x.parent();
                }
                for d in anc.into_iter().rev() {
                    let _ = dav.mkdir(&d).await;
                }
                dav.upload(&p(k), &file_with(v), &Precondition::None)
                    .await
                    .unwrap();
            }
        }
        Server::S3s => {
            let s3 = client(server, args);
            for (kk, v) in files {
                s3.upload(&p(kk), &file_with(v), &Precondition::None)
                    .await
                    .unwrap();
            }
        }
    }
}

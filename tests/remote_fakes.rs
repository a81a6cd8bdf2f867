//! Answers no real server here gives, from a fake HTTP server in the test: hostile names and
//! hrefs, malformed and oversized XML, Nextcloud properties, servers that ignore Range or
//! If-Match. (Nextcloud/ownCloud cannot be installed here, so their documented answers are
//! imitated.) Real-server tests live in `remote_servers.rs`.

#[path = "support/fake_http.rs"]
mod fake_http;

use fake_http::{response, serve, Req};
use skyfill::model::{Kind, RelPath, RemoteEntry, Version};
use skyfill::remote::http::HttpConfig;
use skyfill::remote::retry::RetryPolicy;
use skyfill::remote::s3::{S3Config, S3};
use skyfill::remote::webdav::{WebDav, WebDavConfig};
use skyfill::remote::{ReadRange, Remote, RemoteError};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

fn quick() -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_secs(5),
            offline_hold: Duration::ZERO,
        },
        ..HttpConfig::default()
    }
}

fn dav(base: &str, http: HttpConfig) -> WebDav {
    WebDav::new(WebDavConfig {
        url: Url::parse(&format!("{base}/remote.php/dav/files/u/")).unwrap(),
        user: Some("u".into()),
        password: Some("app-password".into()),
        http,
    })
    .unwrap()
}

fn multistatus(responses: &[String]) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\" xmlns:oc=\"http://owncloud.org/ns\">{}</d:multistatus>",
        responses.concat()
    )
    .into_bytes()
}

fn resp(href: &str, dir: bool, size: u64, etag: &str) -> String {
    let rt = if dir { "<d:collection/>" } else { "" };
    format!(
        "<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype>{rt}</d:resourcetype>\
<d:getcontentlength>{size}</d:getcontentlength><d:getetag>{etag}</d:getetag>\
<d:getlastmodified>Wed, 25 Nov 2026 10:00:00 GMT</d:getlastmodified>\
<oc:fileid>{size}7</oc:fileid><oc:permissions>RGDNVW</oc:permissions>\
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
    )
}

async fn walk(r: &dyn Remote) -> Result<(Vec<RemoteEntry>, u64), RemoteError> {
    let mut v = Vec::new();
    let st = r
        .walk(&RelPath::root(), &mut |e| {
            v.push(e);
            Ok(())
        })
        .await?;
    Ok((v, st.rejected))
}

#[tokio::test]
async fn hostile_hrefs_are_rejected_and_nextcloud_props_kept() {
    let b = "/remote.php/dav/files/u";
    let long = "a".repeat(256);
    let body = multistatus(&[
        resp(&format!("{b}/"), true, 0, "\"root\""),
        resp(&format!("{b}/good.txt"), false, 5, "\"e1\""),
        resp(&format!("{b}/Sub%20Dir/"), true, 0, "\"folder-etag\""),
        resp(&format!("{b}/Sub%20Dir/inner"), false, 3, "W/\"weak\""),
        resp(&format!("{b}/../../../etc/passwd"), false, 1, "x"),
        resp(&format!("{b}/%2e%2e/x"), false, 1, "x"),
        resp(&format!("{b}/a%2Fb"), false, 1, "x"),
        resp(&format!("{b}/nul%00byte"), false, 1, "x"),
        resp(&format!("{b}/ctl%07"), false, 1, "x"),
        resp(&format!("{b}/new%0Aline"), false, 1, "x"),
        resp(&format!("{b}/bad%FFutf8"), false, 1, "x"),
        resp(&format!("{b}/{long}"), false, 1, "x"),
        resp("/remote.php/dav/files/other/x", false, 1, "x"),
        resp(
            "http://evil.example/remote.php/dav/files/u/x",
            false,
            1,
            "x",
        ),
        resp(&format!("{b}/noetag"), false, 9, ""),
    ]);
    let base = serve(Arc::new(move |r: &Req| {
        assert_eq!(r.method, "PROPFIND");
        assert!(r.header("authorization").unwrap().starts_with("Basic "));
        response(
            "207 Multi-Status",
            &[("Content-Type", "application/xml".into())],
            &body,
        )
    }))
    .await;
    let (entries, rejected) = walk(&dav(&base, quick())).await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        vec!["good.txt", "Sub Dir", "Sub Dir/inner", "noetag"]
    );
    assert_eq!(rejected, 10);
    let good = &entries[0];
    assert_eq!(good.file_id.as_deref(), Some("57"));
    assert_eq!(good.permissions.as_deref(), Some("RGDNVW"));
    assert_eq!(good.kind, Kind::File);
    assert_eq!(entries[1].kind, Kind::Dir);
    assert_eq!(
        entries[1].version,
        Version::Etag {
            value: "folder-etag".into(),
            weak: false
        }
    );
    assert!(matches!(
        entries[2].version,
        Version::Etag { weak: true, .. }
    ));
    assert!(matches!(
        entries[3].version,
        Version::SizeMtime { size: 9, .. }
    ));
}

#[tokio::test]
async fn malformed_and_oversized_xml_is_a_clear_error() {
    for (body, want) in [
        (
            b"<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>".to_vec(),
            "PROPFIND answer",
        ),
        (
            b"<html>Login required</html>".to_vec(),
            "not a DAV multistatus",
        ),
        (vec![b'<'; 10], "PROPFIND answer"),
    ] {
        let base = serve(Arc::new(move |_r: &Req| {
            response("207 Multi-Status", &[], &body)
        }))
        .await;
        let e = walk(&dav(&base, quick())).await.unwrap_err();
        assert!(matches!(e, RemoteError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    // 5 MiB of valid entries against a 1 MiB limit.
    let many: Vec<String> = (0..40_000)
        .map(|i| resp(&format!("/remote.php/dav/files/u/f{i}"), false, 1, "\"e\""))
        .collect();
    let body = multistatus(&many);
    assert!(body.len() > 5 << 20);
    let base = serve(Arc::new(move |_r: &Req| {
        response("207 Multi-Status", &[], &body)
    }))
    .await;
    let mut h = quick();
    h.max_xml_bytes = 1 << 20;
    let e = walk(&dav(&base, h)).await.unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

#[tokio::test]
async fn depth_infinity_refused_falls_back_to_depth_one() {
    let base = serve(Arc::new(|r: &Req| {
        let b = "/remote.php/dav/files/u";
        match (r.header("depth"), r.path.as_str()) {
            (Some("infinity"), _) => response(
                "403 Forbidden",
                &[],
                b"<d:error xmlns:d=\"DAV:\"><d:propfind-finite-depth/></d:error>",
            ),
            (Some("1"), p) if p == format!("{b}/") => response(
                "207 Multi-Status",
                &[],
                &multistatus(&[
                    resp(&format!("{b}/"), true, 0, "r"),
                    resp(&format!("{b}/d/"), true, 0, "d"),
                ]),
            ),
            (Some("1"), p) if p == format!("{b}/d/") => response(
                "207 Multi-Status",
                &[],
                &multistatus(&[
                    resp(&format!("{b}/d/"), true, 0, "d"),
                    resp(&format!("{b}/d/f"), false, 2, "f"),
                ]),
            ),
            _ => response("404 Not Found", &[], b""),
        }
    }))
    .await;
    let (entries, _) = walk(&dav(&base, quick())).await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, vec!["d", "d/f"]);
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A server that ignores Range and sends the whole body without Content-Range: the client
/// skips to the offset. A server that ignores If-Match and serves another version: the
/// client notices by the ETag and never mixes versions.
#[tokio::test]
async fn servers_that_ignore_range_or_if_match() {
    let content = data(100_000);
    let c2 = content.clone();
    let base = serve(Arc::new(move |r: &Req| {
        if r.path.ends_with("/whole") {
            response("200 OK", &[("ETag", "\"v1\"".into())], &c2)
        } else {
            // Ignores If-Match: serves version 2 whatever was asked.
            response("200 OK", &[("ETag", "\"v2\"".into())], &c2)
        }
    }))
    .await;
    let r = dav(&base, quick());
    let v1 = Version::from_etag("\"v1\"").unwrap();
    let f = tempfile::tempfile().unwrap();
    let whole = RelPath::parse("whole").unwrap();
    r.read_range(ReadRange::new(&whole, &v1, 40_000, 1000, &f).to(0))
        .await
        .unwrap();
    let mut got = vec![0u8; 1000];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, content[40_000..41_000]);
    let e = r
        .read_range(ReadRange::new(
            &RelPath::parse("other").unwrap(),
            &v1,
            0,
            1000,
            &f,
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::VersionChanged { .. }), "{e}");
}

/// S3: hostile keys in ListObjectsV2, continuation tokens, and a 200 answer carrying only
/// the range plus Content-Range (rclone serve s3 style).
#[tokio::test]
async fn s3_listing_tokens_hostile_keys_and_200_ranges() {
    let content = data(50_000);
    let c2 = content.clone();
    let base = serve(Arc::new(move |r: &Req| {
        if r.path.starts_with("/bkt?") || r.path.starts_with("/bkt/?") {
            let page2 = r.path.contains("continuation-token=tok%2B1%2F");
            let body = if page2 {
                "<ListBucketResult><IsTruncated>false</IsTruncated>\
<Contents><Key>pre/b/c.txt</Key><Size>3</Size><ETag>abc</ETag><LastModified>2026-11-25T10:00:00.000Z</LastModified></Contents>\
<Contents><Key>pre/../escape</Key><Size>1</Size></Contents>\
<Contents><Key>pre/ctl&#x7;x</Key><Size>1</Size></Contents>\
<Contents><Key>pre/a//b</Key><Size>1</Size></Contents></ListBucketResult>"
                    .to_string()
            } else {
                "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>tok+1/</NextContinuationToken>\
<Contents><Key>pre/a.txt</Key><Size>50000</Size><ETag>&quot;e1&quot;</ETag></Contents></ListBucketResult>"
                    .to_string()
            };
            return response("200 OK", &[], body.as_bytes());
        }
        let range = r.header("range").unwrap_or("");
        let (s, e) = range
            .trim_start_matches("bytes=")
            .split_once('-')
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        response(
            "200 OK",
            &[
                ("ETag", "\"e1\"".into()),
                ("Content-Range", format!("bytes {s}-{e}/{}", c2.len())),
            ],
            &c2[s..=e],
        )
    }))
    .await;
    let mut c = S3Config::new(Url::parse(&base).unwrap(), "bkt");
    c.prefix = "pre".into();
    c.http = quick();
    let s3 = S3::new(c).unwrap();
    let (entries, rejected) = walk(&s3).await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, vec!["a.txt", "b", "b/c.txt"]);
    assert_eq!(rejected, 3);
    let a = &entries[0];
    let f = tempfile::tempfile().unwrap();
    s3.read_range(ReadRange::new(&a.path, &a.version, 12_345, 20_000, &f).to(0))
        .await
        .unwrap();
    let mut got = vec![0u8; 20_000];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, content[12_345..32_345]);
}

/// 100,000 entries stream through the PROPFIND parser (Depth: infinity) one at a time.
#[tokio::test]
async fn a_hundred_thousand_entries_stream_through() {
    let many: Vec<String> = (0..100_000)
        .map(|i| {
            resp(
                &format!("/remote.php/dav/files/u/d{}/f{i}", i % 100),
                false,
                i,
                "\"e\"",
            )
        })
        .collect();
    let body = Arc::new(multistatus(&many));
    let base = serve(Arc::new(move |_r: &Req| {
        response("207 Multi-Status", &[], &body)
    }))
    .await;
    let r = dav(&base, quick());
    let mut n = 0u64;
    let st = r
        .walk(&RelPath::root(), &mut |e| {
            assert_eq!(e.kind, Kind::File);
            n += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(st.entries, 100_000);
}

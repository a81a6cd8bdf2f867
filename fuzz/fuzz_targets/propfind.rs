//! Fuzz target: the streaming PROPFIND parser and href mapping never panic, and every entry
//! that maps to a path is a valid relative path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use skyfill::remote::http::HttpConfig;
use skyfill::remote::webdav::{propfind, WebDav, WebDavConfig};
use std::sync::OnceLock;

/// One client for every input: building one (an HTTP client with its TLS roots) costs far more
/// than parsing, and it holds no state that an input could change.
fn dav() -> &'static WebDav {
    static DAV: OnceLock<WebDav> = OnceLock::new();
    DAV.get_or_init(|| {
        WebDav::new(WebDavConfig {
            url: url::Url::parse("http://h/dav/").unwrap(),
            user: None,
            password: None,
            http: HttpConfig::default(),
        })
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let dav = dav();
    let _ = propfind::parse(data, |e| {
        if let Some(h) = e.href.as_deref() {
            if let Ok(p) = dav.href_to_path(h) {
                assert!(skyfill::model::RelPath::parse(p.as_str()).is_ok());
                assert!(!p.as_str().split('/').any(|c| c == ".." || c == "."));
            }
        }
        Ok(())
    });
});

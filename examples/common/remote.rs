//! What the examples share: a `Remote` client for a URL, with the secret from
//! `SKYFILL_SECRET` and default HTTP settings, as the current user.

use skyfill::remote::{self, http::HttpConfig, Remote, RemoteSpec};
use std::sync::Arc;

pub fn open(url: &str) -> anyhow::Result<Arc<dyn Remote>> {
    let spec = RemoteSpec {
        url: url.to_string(),
        ..Default::default()
    };
    let secret = std::env::var("SKYFILL_SECRET").ok();
    Ok(remote::open_remote(
        &spec,
        secret.as_deref(),
        HttpConfig::default(),
        None,
        skyfill::asuser::UserCreds::current(),
    )?)
}

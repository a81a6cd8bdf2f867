//! The user's keyring (Secret Service, through the `keyring` crate), used by the user-side
//! clients (CLI, tray app): secrets are stored there per remote and handed to the daemon over
//! the socket. The daemon never calls this (it runs as root, outside any user session).

use crate::remote::RemoteSpec;

/// The keyring service name of every Skyfill entry.
pub const SERVICE: &str = "skyfill";

#[derive(Debug, thiserror::Error)]
#[error("keyring ({account}): {source}")]
pub struct CredError {
    pub account: String,
    #[source]
    pub source: keyring::Error,
}

/// The account name of a remote's entry: `user@url` (or the URL for S3 keys and anonymous).
pub fn account(spec: &RemoteSpec) -> String {
    match &spec.user {
        Some(u) => format!("{u}@{}", spec.url),
        None => spec.url.clone(),
    }
}

fn entry(spec: &RemoteSpec) -> Result<keyring::Entry, CredError> {
    let account = account(spec);
    keyring::Entry::new(SERVICE, &account).map_err(|source| CredError { account, source })
}

pub fn store(spec: &RemoteSpec, secret: &str) -> Result<(), CredError> {
    let e = entry(spec)?;
    e.set_password(secret).map_err(|source| CredError {
        account: account(spec),
        source,
    })
}

/// The stored secret, `None` when there is no entry.
pub fn load(spec: &RemoteSpec) -> Result<Option<String>, CredError> {
    let e = entry(spec)?;
    match e.get_password() {
        Ok(s) => Ok(Some(s)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(source) => Err(CredError {
            account: account(spec),
            source,
        }),
    }
}

pub fn delete(spec: &RemoteSpec) -> Result<(), CredError> {
    let e = entry(spec)?;
    match e.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(source) => Err(CredError {
            account: account(spec),
            source,
        }),
    }
}

//! Inter-process communication: the shared protocol ([`proto`]) and a small blocking client
//! ([`client`]) used by the CLI and tests. The server side lives in the daemon.

pub mod client;
pub mod proto;

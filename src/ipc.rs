//! Inter-process communication: the shared protocol ([`proto`]), the server side that the
//! daemon plugs its handler into ([`server`]), and a small blocking client ([`client`]) used by
//! the CLI, the tray app and tests.

pub mod client;
pub mod proto;
#[cfg(feature = "daemon")]
pub mod server;

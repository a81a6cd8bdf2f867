//! Skyfill core crate: files on demand for Linux.
//!
//! Crate map (see `ARCHITECTURE.md` for the one-line-per-module view):
//! - [`model`]: the plain data types every layer shares (paths, entries, versions).
//! - [`remote`]: the `Remote` trait at the network boundary and its implementations
//!   (WebDAV, S3, local directory, in-memory, fault-injecting, retrying).
//!
//! - [`asuser`]: work done for a user runs with that user's credentials (one place).
//! - [`fsutil`]: openat2-confined path resolution for a root process.
//! - [`hsm`]: placeholders and on-demand hydration through fanotify pre-content events.
//! - [`index`]: the rebuildable cache of file states (sled).
//! - [`roots`]: the registry of sync roots and their secrets.
//! - [`credentials`]: the user's keyring, for the user-side clients.
//! - [`i18n`]: translations (gettext catalogues of `po/`), shared by CLI, tray and window.
//! - [`ipc`]: the socket protocol shared by daemon, CLI, tray and extensions.
//! - [`sync`]: two-way sync: scans, the pure planner, the executor, conflicts, budget.
//! - [`daemon`]: keeper and worker processes, wiring everything; the only place that names
//!   concrete types.
//!
//! Cargo features: `daemon` (default) adds `hsm`, `index`, `roots`, `sync`, `daemon` and the
//! socket server; without it the crate is the client side that the tray app uses. `testing`
//! adds the test doubles (in-memory and faulty remotes, in-memory root and index).
//!
//! Dependency direction: `model` <- `remote`, `index` <- `hsm` <- `daemon`; `ipc::proto` is
//! shared by every peer.

pub mod asuser;
pub mod credentials;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod fsutil;
#[cfg(feature = "daemon")]
pub mod hsm;
pub mod i18n;
#[cfg(feature = "daemon")]
pub mod index;
pub mod ipc;
pub mod model;
pub mod remote;
#[cfg(feature = "daemon")]
pub mod roots;
#[cfg(feature = "daemon")]
pub mod sync;
#[cfg(feature = "daemon")]
pub mod varint;

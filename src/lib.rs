//! Skyfill core crate: files on demand for Linux.
//!
//! Crate map (see `ARCHITECTURE.md` for the one-line-per-module view):
//! - [`model`]: the plain data types every layer shares (paths, entries, versions).
//! - [`remote`]: the `Remote` trait at the network boundary and its implementations
//!   (WebDAV, S3, local directory, in-memory, fault-injecting, retrying).
//!
//! Dependency direction: `model` <- `remote` <- (hydration, sync, daemon).

pub mod fsutil;
pub mod model;
pub mod remote;

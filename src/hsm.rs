//! Hierarchical storage management: placeholders filled on demand by fanotify pre-content
//! events.
//! - [`fanotify`]: the thin kernel adapter (group, marks, events, replies);
//! - [`meta`]: the per-file xattr record (fill state, ranges, version, pin);
//! - [`policy`]: the pure decision of what an access needs;
//! - [`hydrate`]: fetching ranges through the event fd in the background, answering each
//!   access when its own bytes land;
//! - [`flow`]: one file's downloads: what landed, what is in flight, where its reader is;
//! - [`procinfo`]: who accesses a file (program, uid, writer);
//! - [`stats`]: transfer counters;
//! - [`pins`]: folder pin settings and their inheritance;
//! - [`placeholder`]: populating a root from a listing (mark before visible);
//! - [`dirgate`]: folders listed during add-root filled first;
//! - [`evict`]: freeing space safely (write lease, mark before punch);
//! - [`gate`]: the BPF LSM gate that refuses to open a placeholder while no daemon serves.

pub mod dirgate;
pub mod evict;
pub mod fanotify;
pub mod flow;
pub mod gate;
pub mod hydrate;
pub mod meta;
pub mod pins;
pub mod placeholder;
pub mod policy;
pub mod procinfo;
pub mod stats;

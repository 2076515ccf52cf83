//! Garbage collection: a retention policy over environment images, and a mark-and-sweep of
//! the blobs nothing live references — locally and in registries.

pub mod local;
mod mark;
mod policy;
pub mod registry;
mod retain;
mod rootfs;
pub mod run;
mod scan;

pub use policy::{GcPolicy, GcSection, PolicyError, TagPattern};

//! Garbage collection: a retention policy over environment images, and a mark-and-sweep of
//! the blobs nothing live references — locally and in registries.

pub mod local;
pub mod mark;
pub mod policy;
pub mod registry;
pub mod retain;
pub mod rootfs;
pub mod run;
pub mod scan;

pub use policy::{GcPolicy, GcSection, PolicyError, TagPattern};

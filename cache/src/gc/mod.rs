//! Garbage collection: a retention policy over environment images, and a mark-and-sweep of
//! the blobs nothing live references — locally and in registries.

pub mod policy;

pub use policy::{GcPolicy, GcSection, PolicyError, TagPattern};

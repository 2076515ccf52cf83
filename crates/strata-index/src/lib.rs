//! What strata knows about the images in its store, kept in `strata.db`: the env and layer
//! indexes, usage records, leases that keep content alive, verification stamps, and the
//! catalog that lists images for people.

pub mod catalog;
pub mod collect;
pub mod index;
pub mod lease;
pub mod pushes;
pub mod verify;

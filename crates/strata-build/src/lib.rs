//! The build pipeline: a spec in, a layered OCI image in the store out (hit, lock-hit or
//! miss), and the moves of whole images between the store and registries.

pub mod additions;
pub mod base;
pub mod build;
pub mod error;
pub mod explain;
pub mod home;
pub mod image;
pub mod layers;
pub mod progress;
pub mod publish;

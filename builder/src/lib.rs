//! strata's builder: Python environments in, layered OCI images out.

pub mod additions;
pub mod base;
pub mod build;
pub mod collect;
pub mod error;
pub mod explain;
pub mod fetch;
pub mod home;
pub mod image;
pub mod install;
pub mod layer;
pub mod layers;
pub mod lock;
pub mod name;
pub mod progress;
pub mod publish;
pub mod resolve;
pub mod spec;
pub mod target;
pub mod wheel_name;

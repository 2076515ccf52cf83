//! strata's builder: Python environments in, layered OCI images out.

pub mod fetch;
pub mod install;
pub mod layer;
pub mod lock;
pub mod name;
pub mod resolve;
pub mod spec;
pub mod target;
pub mod wheel_name;

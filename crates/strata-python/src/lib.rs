//! Python packaging: requirement specs and their canonical form, names, wheel file names,
//! targets (Python version and platform), locks, resolution with uv, and the verified wheel
//! cache.

pub mod fetch;
pub mod lock;
pub mod name;
pub mod resolve;
pub mod spec;
pub mod target;
pub mod wheel_name;

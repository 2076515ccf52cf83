//! One module per command (or family of commands).

pub mod build;
pub mod config;
pub mod deploy;
pub mod detect;
pub mod explain;
pub mod gc;
pub mod images;
pub mod jobs;
pub mod lock;
pub mod server;
pub mod shell;
pub mod sync;
pub mod verify;

use strata_build::Home;

use crate::output::Failure;

/// Opens `$STRATA_HOME`.
pub fn open_home() -> Result<Home, Failure> {
    let root = Home::default_root().map_err(Failure::home)?;
    Home::open(&root).map_err(Failure::home)
}

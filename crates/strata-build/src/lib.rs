//! The build pipeline: a spec in, a layered OCI image in the store out (hit, lock-hit or
//! miss), and the moves of whole images between the store and registries.

mod additions;
mod background;
mod base;
mod build;
mod credentials;
mod defaults;
mod error;
mod explain;
mod home;
mod image;
mod layers;
mod lock_image;
mod overlap;
mod progress;
mod publish;
mod registry_layers;
mod remote_cache;
mod verify;

pub use base::{BaseError, BaseRef};
pub use build::CacheOutcome;
pub use build::{
    build, build_checked, explain, lock_env, prepare, spec_identity, BuildOptions, Built,
};
pub use credentials::CredentialFiles;
pub use defaults::{BuildDefaults, CacheDefaults};
pub use error::BuildError;
pub use explain::Explanation;
pub use home::{Home, HomeError};
pub use layers::{hold, DEFAULT_LAYER_LIMIT};
pub use progress::{Progress, Silent};
pub use publish::{image_digests, pull, PushTarget, Pushed};
pub use remote_cache::{CacheSource, DamagedBlob, RegistryCache, RegistryImage};
pub use verify::{verify, VerifyError, VerifyOptions};
pub use verify::{Compared, LayerCheck, LayerKind, ServedBytes, Verification};

//! The OCI registry client: blobs (HEAD, mount, streamed upload and verified download),
//! manifests (HEAD, pull, push, delete), tags, and whole-image pushes that send only what the
//! registry lacks.
//!
//! Plain HTTP is used only for loopback registries or when the caller says `insecure`;
//! everything else is HTTPS. Access is anonymous for now (see [`Credentials`]).

mod blobs;
mod client;
mod error;
mod manifests;
mod push;
mod reference;

pub use client::{is_loopback, scheme_for, Credentials, Registry, RetryPolicy, Scheme};
pub use error::RegistryError;
pub use manifests::PulledManifest;
pub use push::{push_image, ImageUpload, PushOptions, PushReport};
pub use reference::{ImageRef, ManifestRef, ReferenceError, RegistryRepo, Tag};

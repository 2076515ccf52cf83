//! The OCI registry client: blobs (HEAD, mount, streamed upload and verified download),
//! manifests (HEAD, pull, push, delete), tags, and whole-image pushes that send only what the
//! registry lacks.
//!
//! Plain HTTP is used only for loopback registries or when the caller says `insecure`;
//! everything else is HTTPS. Credentials come from the auth files `skopeo login` and `docker
//! login` write ([`AuthSources`]); registries that want Basic credentials or bearer tokens are
//! both served.

mod auth;
mod authorized;
mod blobs;
mod challenge;
mod client;
mod error;
mod layer_entry;
mod lock_tag;
mod manifests;
mod push;
mod reference;
mod token;
mod usage;

pub use auth::{AuthError, AuthSources, Credentials, Password};
pub use client::{is_loopback, scheme_for, Registry, RetryPolicy, Scheme};
pub use error::{Refusal, RegistryError, TokenError};
pub use layer_entry::{
    is_layer_entry_tag, layer_entry_tag, EntryWrite, FoundLayer, LayerEntry, LayerEntryKey,
};
pub use lock_tag::lock_tag;
pub use manifests::PulledManifest;
pub use push::{push_image, tag_pushed_manifest, ImageUpload, PushOptions, PushReport};
pub use reference::{ImageRef, ManifestRef, NameError, ReferenceError, RegistryRepo, Tag};
pub use usage::{is_usage_tag, usage_tag, UsageRecord, UsageUpdate};

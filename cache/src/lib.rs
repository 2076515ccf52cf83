//! strata's content-addressed cache: blobs, manifests and indexes, locally (an OCI image
//! layout) and in OCI registries. It knows nothing about Python.

pub mod catalog;
pub mod descriptor;
pub mod digest;
pub mod gc;
pub mod index;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod registry;
pub mod sqlite;
pub mod verify;

pub use descriptor::{BlobDescriptor, LayerDescriptor};
pub use digest::{Digest, DigestParseError, HashingWriter};

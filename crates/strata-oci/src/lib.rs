//! OCI content: digests, descriptors, manifests, and the local OCI image layout store
//! (ingest, commit, read with verification). It knows nothing about Python or jobs.

pub mod descriptor;
pub mod digest;
pub mod layout;
pub mod manifest;

pub use descriptor::{BlobDescriptor, LayerDescriptor};
pub use digest::{Digest, DigestParseError, HashingWriter};

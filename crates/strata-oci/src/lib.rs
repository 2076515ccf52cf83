//! OCI content: digests, descriptors, manifests, and the local OCI image layout store
//! (ingest, commit, read with verification). It knows nothing about Python or jobs.

mod descriptor;
mod digest;
mod layout;
mod manifest;

pub use descriptor::{
    BlobDescriptor, LayerDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_MANIFEST,
};
pub use digest::{Digest, DigestParseError, HashingWriter};
pub use layout::{
    DownloadSlot, IndexEntry, PrehashedBlobWriter, StagedBlob, Store, StoreError, REF_NAME,
    SCRATCH_DIR_PREFIX,
};
pub use manifest::{Descriptor, Manifest, ManifestDocument, MAX_DOCUMENT_BYTES};

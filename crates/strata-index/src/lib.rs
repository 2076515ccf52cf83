//! What strata knows about the images in its store, kept in `strata.db`: the env and layer
//! indexes, usage records, leases that keep content alive, verification stamps, and the
//! catalog that lists images for people.

mod catalog;
mod collect;
mod index;
mod lease;
mod pushes;
mod verify;

pub use catalog::{Catalog, CatalogError, CatalogImage};
pub use collect::{ImageRow, PrunedRows};
pub use index::{now, EnvRecord, EnvRow, Index, IndexError, LayerKey};
pub use lease::{Lease, LeaseId, LeaseOwner};
pub use pushes::{PushRecord, PushUsage};
pub use verify::{check_blob, mark_verified, BlobState, VerifyError};

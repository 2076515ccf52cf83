//! Mark: everything reachable from the roots (tagged manifests, leased digests), walking
//! image indexes to manifests and manifests to their config and layers.
//!
//! Manifests are content-addressed and immutable, so a manifest walked once never needs
//! walking again: the sweep's re-check reuses the plan's marker and only walks roots that
//! appeared since.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::Serialize;

use strata_oci::Digest;
use strata_oci::ManifestDocument;
use strata_oci::Store;

/// Manifests and indexes are small: a bigger leased blob is a layer and is not read.
const MAX_DOCUMENT: u64 = strata_oci::MAX_DOCUMENT_BYTES;

/// A root or index child whose manifest could not be read or parsed. The plan reports it
/// (a dry run lists them all); a sweep refuses to run while there is one, because what such
/// a manifest references is unknown and must not be taken for garbage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub digest: Digest,
    /// The tag that led to it, if it was a tagged root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub error: String,
}

/// How a digest is reached, which decides whether its bytes must be a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A manifest or index (a tag, an index's child): failing to read it is reported.
    Document,
    /// Any blob (a lease): read as a document only if it looks like one.
    Any,
}

#[derive(Debug, Clone, Default)]
pub struct Marker {
    /// Everything reachable so far.
    pub marked: HashSet<Digest>,
    /// Digests read already: documents whose children are all in `marked`, blobs that are
    /// not documents, documents that failed (reported once).
    done: HashSet<Digest>,
    pub unreadable: Vec<Unreadable>,
}

impl Marker {
    pub fn new() -> Marker {
        Marker::default()
    }

    /// Marks `root` and all it references; returns the digests newly marked.
    pub fn mark(
        &mut self,
        store: &Store,
        root: &Digest,
        kind: RootKind,
        tag: Option<&str>,
    ) -> Vec<Digest> {
        let mut added = Vec::new();
        let mut stack = vec![(root.clone(), kind)];
        while let Some((digest, kind)) = stack.pop() {
            if self.marked.insert(digest.clone()) {
                added.push(digest.clone());
            }
            if !self.done.insert(digest.clone()) {
                continue;
            }
            let doc = match read_document(store, &digest, kind) {
                Ok(Found::Document(doc)) => doc,
                Ok(Found::NotDocument) => continue,
                Ok(Found::Absent) => {
                    // A leased digest not written yet: look again if asked again.
                    self.done.remove(&digest);
                    continue;
                }
                Err(error) => {
                    self.unreadable.push(Unreadable {
                        digest: digest.clone(),
                        tag: tag.map(str::to_owned),
                        error: error.to_string(),
                    });
                    continue;
                }
            };
            match *doc {
                ManifestDocument::Image(m) => {
                    for child in m.blobs() {
                        if self.marked.insert(child.digest.clone()) {
                            added.push(child.digest.clone());
                        }
                    }
                }
                ManifestDocument::Index(index) => {
                    for child in index.manifests {
                        stack.push((child.digest, RootKind::Document));
                    }
                }
            }
        }
        added
    }
}

enum Found {
    Document(Box<ManifestDocument>),
    /// Only for `RootKind::Any`: a blob that is not a manifest or index.
    NotDocument,
    /// Only for `RootKind::Any`: no such blob (yet).
    Absent,
}

/// Why a manifest or index that must be read (a tag's, an index child's) could not be.
#[derive(Debug, thiserror::Error)]
enum DocumentError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a manifest or index: {source}", path.display())]
    NotDocument {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The parsed document, or why a document could not be read. The bytes are not verified against the digest here: a
/// corrupt manifest that still parses marks what it names, which can only keep more.
fn read_document(store: &Store, digest: &Digest, kind: RootKind) -> Result<Found, DocumentError> {
    let path = store.blob_path(digest);
    let file = match File::open(&path) {
        Ok(file) => file,
        // A leased digest not written yet; any other failure is an unreadable root.
        Err(e) if kind == RootKind::Any && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::Absent)
        }
        Err(source) => return Err(DocumentError::Open { path, source }),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if kind == RootKind::Any && len > MAX_DOCUMENT {
        return Ok(Found::NotDocument);
    }
    let mut bytes = Vec::new();
    if let Err(source) = file.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes) {
        return Err(DocumentError::Read { path, source });
    }
    if kind == RootKind::Any && bytes.first() != Some(&b'{') {
        return Ok(Found::NotDocument);
    }
    match ManifestDocument::parse(&bytes) {
        Ok(doc) => Ok(Found::Document(Box::new(doc))),
        Err(_) if kind == RootKind::Any => Ok(Found::NotDocument),
        Err(source) => Err(DocumentError::NotDocument { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_document_that_cannot_be_read_says_why() {
        let (_dir, store) = store();
        let missing = Digest::of(b"never stored");
        let err = read_document(&store, &missing, RootKind::Document).err();
        assert!(matches!(err, Some(DocumentError::Open { .. })), "{err:?}");
        let absent = read_document(&store, &missing, RootKind::Any);
        assert!(matches!(absent, Ok(Found::Absent)));

        let junk = store.put_bytes(b"{ not json").unwrap();
        let err = read_document(&store, &junk, RootKind::Document).err();
        assert!(
            matches!(&err, Some(DocumentError::NotDocument { path, .. }) if *path == store.blob_path(&junk)),
            "{err:?}"
        );
        let not_document = read_document(&store, &junk, RootKind::Any);
        assert!(matches!(not_document, Ok(Found::NotDocument)));

        // A directory where the blob should be opens, but cannot be read.
        let dir_digest = Digest::of(b"a directory");
        std::fs::create_dir_all(store.blob_path(&dir_digest)).unwrap();
        let err = read_document(&store, &dir_digest, RootKind::Document).err();
        assert!(matches!(err, Some(DocumentError::Read { .. })), "{err:?}");
    }

    #[test]
    fn an_unreadable_root_is_reported_with_its_tag_and_reason() {
        let (_dir, store) = store();
        let junk = store.put_bytes(b"[]").unwrap();
        let mut marker = Marker::new();
        let added = marker.mark(&store, &junk, RootKind::Document, Some("v1"));
        assert_eq!(added, vec![junk.clone()]);
        assert_eq!(marker.unreadable.len(), 1);
        let report = &marker.unreadable[0];
        assert_eq!(
            (report.digest.clone(), report.tag.as_deref()),
            (junk, Some("v1"))
        );
        assert!(
            report.error.contains("is not a manifest or index: "),
            "{}",
            report.error
        );
    }
}

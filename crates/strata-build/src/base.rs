//! The base image an environment is built on: found by reference, pinned by digest, and
//! searched for its Python interpreter.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::read::GzDecoder;
use strata_oci::Digest;
use strata_oci::{Descriptor, Manifest, ManifestDocument};
use strata_oci::{Store, StoreError, REF_NAME};

use strata_python::{Platform, PythonVersion};

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("invalid base image reference {0:?}: expected oci:PATH[:TAG|@sha256:DIGEST] or REGISTRY/REPO[:TAG|@sha256:DIGEST]")]
    BadReference(String),
    #[error("base image layout {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("base image {reference}: no manifest tagged {tag:?} in {path}/index.json")]
    UnknownTag {
        reference: String,
        tag: String,
        path: PathBuf,
    },
    #[error("base image {reference}: {detail}")]
    Invalid { reference: String, detail: String },
    #[error("base image {reference} has no manifest for {platform}")]
    NoPlatform {
        reference: String,
        platform: Platform,
    },
    #[error("base image {reference}: no Python interpreter found (looked for usr/bin/python3.N and usr/local/bin/python3.N{wanted}); pass --python X.Y for an image that has one")]
    NoInterpreter { reference: String, wanted: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a base image comes from, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    /// `oci:PATH[:TAG|@DIGEST]`: an OCI image layout on disk.
    Layout { path: PathBuf, reference: Selector },
    /// `REGISTRY/REPO[:TAG|@DIGEST]`.
    Registry(String),
}

/// A tag or a digest inside a repository or layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Tag(String),
    Digest(Digest),
}

impl FromStr for BaseRef {
    type Err = BaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BaseError::BadReference(s.to_string());
        let Some(rest) = s.strip_prefix("oci:") else {
            if s.is_empty() || s.contains(char::is_whitespace) {
                return Err(bad());
            }
            return Ok(BaseRef::Registry(s.to_string()));
        };
        if let Some((path, digest)) = rest.split_once('@') {
            let digest = digest.parse().map_err(|_| bad())?;
            return Ok(BaseRef::Layout {
                path: PathBuf::from(path),
                reference: Selector::Digest(digest),
            });
        }
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => (path, tag),
            _ => (rest, "latest"),
        };
        if path.is_empty() {
            return Err(bad());
        }
        Ok(BaseRef::Layout {
            path: PathBuf::from(path),
            reference: Selector::Tag(tag.to_string()),
        })
    }
}

/// A base image resolved to one platform manifest, pinned by its digest.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The user's reference, for messages.
    pub reference: String,
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: serde_json::Value,
    /// Directories holding the blobs (`…/blobs/sha256`) of the source, searched in order.
    blobs: Vec<PathBuf>,
}

/// The interpreter found in a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// Absolute path inside the image, e.g. `/usr/bin/python3.11`.
    pub path: String,
    pub version: PythonVersion,
    /// The full version (`3.11.2`) where the image says it, else `X.Y`.
    pub full_version: String,
}

impl BaseImage {
    /// Opens a base image from an OCI layout on disk.
    pub fn from_layout(
        path: &Path,
        selector: &Selector,
        platform: Platform,
    ) -> Result<BaseImage, BaseError> {
        let reference = display_layout_ref(path, selector);
        let blobs = path.join("blobs").join("sha256");
        let digest = match selector {
            Selector::Digest(d) => d.clone(),
            Selector::Tag(tag) => layout_tag(path, tag, &reference)?,
        };
        let dirs = vec![blobs];
        let src = BlobSource {
            blobs: &dirs,
            reference: &reference,
        };
        let (digest, manifest_bytes) = src.platform_manifest(digest, platform)?;
        let manifest = match ManifestDocument::parse(&manifest_bytes) {
            Ok(ManifestDocument::Image(m)) => m,
            _ => return Err(invalid(&reference, "manifest is not an image manifest")),
        };
        let config_bytes = src.read(&manifest.config.digest)?;
        let config = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&reference, &format!("config is not JSON: {e}")))?;
        Ok(BaseImage {
            reference,
            digest,
            manifest,
            config,
            blobs: dirs,
        })
    }

    /// Opens a base image that an earlier build imported into the store.
    pub fn from_store(
        store: &Store,
        digest: &Digest,
        reference: &str,
    ) -> Result<BaseImage, BaseError> {
        BaseImage::from_blobs(store.root(), digest, reference)
    }

    /// Opens a base image manifest by digest from a directory laid out as an OCI layout's
    /// (`blobs/sha256/…`), verifying what it reads.
    pub fn from_blobs(
        root: &Path,
        digest: &Digest,
        reference: &str,
    ) -> Result<BaseImage, BaseError> {
        BaseImage::from_blobs_in(&[root], digest, reference)
    }

    /// Like [`BaseImage::from_blobs`], looking for each blob in several layouts in turn.
    pub fn from_blobs_in(
        roots: &[&Path],
        digest: &Digest,
        reference: &str,
    ) -> Result<BaseImage, BaseError> {
        let blobs: Vec<PathBuf> = roots
            .iter()
            .map(|r| r.join("blobs").join("sha256"))
            .collect();
        let src = BlobSource {
            blobs: &blobs,
            reference,
        };
        let manifest_bytes = src.read(digest)?;
        let manifest = match ManifestDocument::parse(&manifest_bytes) {
            Ok(ManifestDocument::Image(m)) => m,
            _ => return Err(invalid(reference, "manifest is not an image manifest")),
        };
        let config_bytes = src.read(&manifest.config.digest)?;
        let config = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(reference, &format!("config is not JSON: {e}")))?;
        Ok(BaseImage {
            reference: reference.to_string(),
            digest: digest.clone(),
            manifest,
            config,
            blobs,
        })
    }

    /// The base image's layers, in order.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// A value of the config's `Env`, e.g. `PATH`.
    pub fn env(&self, key: &str) -> Option<String> {
        self.config["config"]["Env"].as_array().and_then(|env| {
            env.iter()
                .filter_map(|v| v.as_str())
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(String::from))
        })
    }

    /// The Python version the image declares (`PYTHON_VERSION` in its env), if any.
    pub fn declared_python(&self) -> Option<PythonVersion> {
        let full = self.env("PYTHON_VERSION")?;
        let mut parts = full.split('.');
        let xy = format!("{}.{}", parts.next()?, parts.next()?);
        xy.parse().ok()
    }

    /// Where a blob of the image is (the first directory that has it).
    fn blob_file(&self, digest: &Digest) -> PathBuf {
        find_blob(&self.blobs, digest)
    }

    /// The base's manifest, config and layers.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut digests = vec![self.digest.clone(), self.manifest.config.digest.clone()];
        digests.extend(self.manifest.layers.iter().map(|l| l.digest.clone()));
        digests
    }

    /// Copies every blob of the image into the store, verifying each one.
    pub fn import_into(&self, store: &Store) -> Result<(), BaseError> {
        for digest in self.blob_digests() {
            if store.has_blob(&digest) {
                continue;
            }
            store.import_file(&self.blob_file(&digest), &digest)?;
        }
        Ok(())
    }

    /// Finds the interpreter by listing the image's layers: `python3.N` in `/usr/bin` or
    /// `/usr/local/bin`, the one matching `wanted` if given, else the declared or newest.
    pub fn find_interpreter(
        &self,
        wanted: Option<PythonVersion>,
    ) -> Result<Interpreter, BaseError> {
        let mut found: Vec<(String, PythonVersion)> = Vec::new();
        for layer in &self.manifest.layers {
            self.scan_layer(layer, &mut found)?;
        }
        let wanted = wanted.or_else(|| self.declared_python());
        let chosen = match wanted {
            Some(v) => found.into_iter().filter(|(_, fv)| *fv == v).min(),
            None => found
                .into_iter()
                .max_by_key(|(p, v)| (*v, std::cmp::Reverse(p.clone()))),
        };
        let Some((path, version)) = chosen else {
            return Err(BaseError::NoInterpreter {
                reference: self.reference.clone(),
                wanted: wanted.map(|v| format!(" for {v}")).unwrap_or_default(),
            });
        };
        let full_version = self
            .env("PYTHON_VERSION")
            .filter(|full| full.starts_with(&format!("{version}.")) || *full == version.to_string())
            .unwrap_or_else(|| version.to_string());
        Ok(Interpreter {
            path: format!("/{path}"),
            version,
            full_version,
        })
    }

    fn scan_layer(
        &self,
        layer: &Descriptor,
        found: &mut Vec<(String, PythonVersion)>,
    ) -> Result<(), BaseError> {
        let path = self.blob_file(&layer.digest);
        let file = std::fs::File::open(&path).map_err(|source| BaseError::Io {
            path: path.clone(),
            source,
        })?;
        let reader: Box<dyn Read> = if layer.media_type.ends_with("gzip") {
            Box::new(GzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|source| BaseError::Io {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| BaseError::Io {
                path: path.clone(),
                source,
            })?;
            let name = entry.path().map(|p| p.to_string_lossy().into_owned());
            let Ok(name) = name else { continue };
            let name = name.trim_start_matches("./").to_string();
            apply_entry(&name, found);
        }
        Ok(())
    }
}

/// Adds an interpreter path, or removes one that a whiteout deletes.
fn apply_entry(name: &str, found: &mut Vec<(String, PythonVersion)>) {
    let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
    if !matches!(dir, "usr/bin" | "usr/local/bin") {
        return;
    }
    if let Some(deleted) = file.strip_prefix(".wh.") {
        let gone = format!("{dir}/{deleted}");
        found.retain(|(p, _)| *p != gone);
        return;
    }
    let Some(version) = file.strip_prefix("python") else {
        return;
    };
    let Ok(version) = version.parse::<PythonVersion>() else {
        return;
    };
    if !found.iter().any(|(p, _)| p == name) {
        found.push((name.to_string(), version));
    }
}

fn find_blob(dirs: &[PathBuf], digest: &Digest) -> PathBuf {
    let candidates = dirs.iter().map(|d| d.join(digest.hex()));
    let fallback = dirs
        .first()
        .map(|d| d.join(digest.hex()))
        .unwrap_or_default();
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or(fallback)
}

struct BlobSource<'a> {
    blobs: &'a [PathBuf],
    reference: &'a str,
}

impl BlobSource<'_> {
    fn read(&self, digest: &Digest) -> Result<Vec<u8>, BaseError> {
        let path = find_blob(self.blobs, digest);
        let bytes = std::fs::read(&path).map_err(|source| BaseError::Io {
            path: path.clone(),
            source,
        })?;
        if &Digest::of(&bytes) != digest {
            return Err(invalid(
                self.reference,
                &format!("blob {digest} is corrupt"),
            ));
        }
        Ok(bytes)
    }

    /// Follows an image index down to the manifest for `platform`.
    fn platform_manifest(
        &self,
        digest: Digest,
        platform: Platform,
    ) -> Result<(Digest, Vec<u8>), BaseError> {
        let bytes = self.read(&digest)?;
        let doc = ManifestDocument::parse(&bytes)
            .map_err(|e| invalid(self.reference, &format!("manifest {digest}: {e}")))?;
        let ManifestDocument::Index(index) = doc else {
            return Ok((digest, bytes));
        };
        let arch = platform.arch.oci_name();
        let entry = index.manifests.iter().find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        });
        let Some(entry) = entry else {
            return Err(BaseError::NoPlatform {
                reference: self.reference.to_string(),
                platform,
            });
        };
        let bytes = self.read(&entry.digest)?;
        Ok((entry.digest.clone(), bytes))
    }
}

fn layout_tag(path: &Path, tag: &str, reference: &str) -> Result<Digest, BaseError> {
    let index_path = path.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|source| BaseError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(reference, &format!("index.json: {e}")))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag));
    let Some(entry) = entry else {
        return Err(BaseError::UnknownTag {
            reference: reference.to_string(),
            tag: tag.to_string(),
            path: path.to_path_buf(),
        });
    };
    entry["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| invalid(reference, "index.json entry has no valid digest"))
}

fn display_layout_ref(path: &Path, selector: &Selector) -> String {
    match selector {
        Selector::Tag(tag) => format!("oci:{}:{tag}", path.display()),
        Selector::Digest(d) => format!("oci:{}@{d}", path.display()),
    }
}

fn invalid(reference: &str, detail: &str) -> BaseError {
    BaseError::Invalid {
        reference: reference.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout_and_registry_references() {
        let r: BaseRef = "oci:/x/y:3.11".parse().unwrap();
        assert_eq!(
            r,
            BaseRef::Layout {
                path: "/x/y".into(),
                reference: Selector::Tag("3.11".into())
            }
        );
        let r: BaseRef = "oci:rel/dir".parse().unwrap();
        assert!(matches!(r, BaseRef::Layout { reference: Selector::Tag(t), .. } if t == "latest"));
        let d = Digest::of(b"m");
        let r: BaseRef = format!("oci:/x@{d}").parse().unwrap();
        assert!(matches!(r, BaseRef::Layout { reference: Selector::Digest(x), .. } if x == d));
        assert!("oci:/x@sha256:zz".parse::<BaseRef>().is_err());
        assert!("oci:".parse::<BaseRef>().is_err());
        assert_eq!(
            "127.0.0.1:5000/py:3.11".parse::<BaseRef>().unwrap(),
            BaseRef::Registry("127.0.0.1:5000/py:3.11".into())
        );
    }

    #[test]
    fn interpreter_scan_honours_whiteouts() {
        let mut found = Vec::new();
        apply_entry("usr/bin/python3.11", &mut found);
        apply_entry("usr/bin/python3.11-config", &mut found);
        apply_entry("usr/local/bin/python3.12", &mut found);
        apply_entry("usr/lib/python3.10", &mut found);
        assert_eq!(found.len(), 2);
        apply_entry("usr/local/bin/.wh.python3.12", &mut found);
        assert_eq!(
            found,
            vec![("usr/bin/python3.11".to_string(), PythonVersion::new(3, 11))]
        );
    }
}

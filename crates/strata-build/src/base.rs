//! The base image an environment is built on: found by reference, pinned by digest, and
//! searched for its Python interpreter.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use strata_index::Index;
use strata_oci::Digest;
use strata_oci::{Descriptor, Manifest, ManifestDocument, MAX_DOCUMENT_BYTES};
use strata_oci::{StagedBlob, Store, StoreError, REF_NAME};

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
    /// A single-platform base of another architecture than the target: the image would say
    /// one platform and hold wheels of the other.
    #[error("base image {reference} is {found}, the target is {platform}: give a base image for {platform} (or an index with one), or build with --platform {found}")]
    OtherPlatform {
        reference: String,
        found: String,
        platform: Platform,
    },
    #[error("base image {reference}: no Python interpreter found (looked for usr/bin/python3.N and usr/local/bin/python3.N{wanted}); pass --python X.Y for an image that has one")]
    NoInterpreter { reference: String, wanted: String },
    /// The target's Python is not the base image's: the environment's venv runs the base's
    /// interpreter, so wheels and `lib/pythonX.Y` for another version would not be imported.
    #[error("the target is Python {asked} (--python or [build] python), but base image {reference} has Python {found} ({path}): give a base image with Python {asked} (--base), or build for {found} (--python {found}, or leave --python out)")]
    OtherPython {
        reference: String,
        asked: PythonVersion,
        found: PythonVersion,
        path: String,
    },
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

/// Records a scan's answer; the index failing only costs a scan next time.
fn remember_scan(index: &Index, key: &Digest, found: &Interpreter) {
    let Ok(json) = serde_json::to_string(found) else {
        return;
    };
    if let Err(e) = index.record_base_scan(key, &json) {
        tracing::debug!(error = %e, "could not remember a base image's interpreter");
    }
}

/// The interpreter found in a base image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interpreter {
    /// Absolute path inside the image, e.g. `/usr/bin/python3.11`.
    pub path: String,
    pub version: PythonVersion,
    /// The full version (`3.11.2`): the one the image declares (`PYTHON_VERSION`), else the
    /// one its own files show (the interpreter binary's version string, Debian's package
    /// database), else `X.Y` when nothing in the image tells.
    pub full_version: String,
}

impl BaseImage {
    /// Refuses a base whose config names another OS/architecture than `platform` (a config
    /// that names none is taken as it is).
    pub fn check_platform(&self, platform: Platform) -> Result<(), BaseError> {
        let field = |key: &str| self.config.get(key).and_then(|v| v.as_str());
        let (os, arch) = (field("os"), field("architecture"));
        let matches = os.is_none_or(|os| os == "linux")
            && arch.is_none_or(|arch| arch == platform.arch.oci_name());
        if matches {
            return Ok(());
        }
        Err(BaseError::OtherPlatform {
            reference: self.reference.clone(),
            found: format!("{}/{}", os.unwrap_or("linux"), arch.unwrap_or("?")),
            platform,
        })
    }

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
        let staged = self.stage_missing(store)?;
        store.commit_all(staged)?;
        Ok(())
    }

    /// Copies (and verifies) into the store's work directory every blob of the image the
    /// store lacks, to commit with the image that uses them ([`Store::commit_all`]).
    pub fn stage_missing(&self, store: &Store) -> Result<Vec<StagedBlob>, BaseError> {
        let mut staged = Vec::new();
        for digest in self.blob_digests() {
            if store.has_blob(&digest) {
                continue;
            }
            staged.push(store.stage_file(&self.blob_file(&digest), &digest)?);
        }
        Ok(staged)
    }

    /// Whether the image has Python `version`: declared in its config, else found by a scan
    /// of its layers ([`Self::find_interpreter_in`]).
    pub fn has_python(&self, index: &Index, version: PythonVersion) -> bool {
        self.declared_python() == Some(version)
            || self.find_interpreter_in(index, Some(version)).is_ok()
    }

    /// Refuses a target Python the image does not have, naming the one it has. Checked before
    /// anything is resolved or written, so the refusal leaves the store as it was.
    pub fn check_python(&self, index: &Index, asked: PythonVersion) -> Result<(), BaseError> {
        if self.has_python(index, asked) {
            return Ok(());
        }
        // No interpreter at all is the scan's own error, which says so.
        let found = self.find_interpreter_in(index, None)?;
        Err(BaseError::OtherPython {
            reference: self.reference.clone(),
            asked,
            found: found.version,
            path: found.path,
        })
    }

    /// [`Self::find_interpreter`], remembered in `index`: listing the layers inflates them
    /// all (a fifth of a second for a slim Python image), and what it finds is a function of
    /// the config and layer digests, so a build on a base scanned before reads the answer.
    /// The index failing only costs the scan.
    pub fn find_interpreter_in(
        &self,
        index: &Index,
        wanted: Option<PythonVersion>,
    ) -> Result<Interpreter, BaseError> {
        let key = self.scan_key(wanted);
        let known = index.base_scan(&key).ok().flatten();
        if let Some(found) = known.and_then(|json| serde_json::from_str(&json).ok()) {
            return Ok(found);
        }
        let found = self.find_interpreter(wanted)?;
        remember_scan(index, &key, &found);
        Ok(found)
    }

    /// Runs `work` while another thread looks for the interpreter of `wanted` (unless `index`
    /// knows it), and remembers what it finds for [`Self::find_interpreter_in`]. A cold build
    /// needs the interpreter only for its last layer, and listing the base's layers keeps one
    /// core busy for a fifth of a second, which resolution (mostly waiting for uv) leaves idle.
    /// A scan that fails is not reported here: the build's own lookup scans again and says why.
    pub fn find_interpreter_during<T>(
        &self,
        index: &Index,
        wanted: PythonVersion,
        work: impl FnOnce() -> T,
    ) -> T {
        let key = self.scan_key(Some(wanted));
        if matches!(index.base_scan(&key), Ok(Some(_))) {
            return work();
        }
        let (out, scanned) = std::thread::scope(|s| {
            let scan = s.spawn(|| {
                crate::background::lower_priority();
                self.find_interpreter(Some(wanted))
            });
            let out = work();
            (out, scan.join())
        });
        if let Ok(Ok(found)) = scanned {
            remember_scan(index, &key, &found);
        }
        out
    }

    /// What names a scan for the interpreter: the blobs it reads (config and layers) and the
    /// version asked for.
    fn scan_key(&self, wanted: Option<PythonVersion>) -> Digest {
        let mut text = format!(
            "strata base interpreter scan 1\nwanted {}\nconfig {}\n",
            wanted.map(|v| v.to_string()).unwrap_or_default(),
            self.manifest.config.digest
        );
        for layer in &self.manifest.layers {
            text.push_str(&format!("layer {}\n", layer.digest));
        }
        Digest::of(text.as_bytes())
    }

    /// Finds the interpreter by listing the image's layers: `python3.N` in `/usr/bin` or
    /// `/usr/local/bin`, the one matching `wanted` if given, else the declared or newest.
    pub fn find_interpreter(
        &self,
        wanted: Option<PythonVersion>,
    ) -> Result<Interpreter, BaseError> {
        let mut found: Vec<(String, PythonVersion)> = Vec::new();
        let mut evidence = VersionEvidence::default();
        for layer in &self.manifest.layers {
            self.scan_layer(layer, &mut found, &mut evidence)?;
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
            .or_else(|| evidence.full_version(&path, version))
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
        evidence: &mut VersionEvidence,
    ) -> Result<(), BaseError> {
        let path = self.blob_file(&layer.digest);
        let file = std::fs::File::open(&path).map_err(|source| BaseError::Io {
            path: path.clone(),
            source,
        })?;
        let reader: Box<dyn Read> = if layer.media_type.ends_with("gzip") {
            Box::new(MultiGzDecoder::new(BufReader::new(file)))
        } else if layer.media_type.ends_with("zstd") {
            let decoder =
                zstd::stream::read::Decoder::new(file).map_err(|source| BaseError::Io {
                    path: path.clone(),
                    source,
                })?;
            Box::new(decoder)
        } else {
            Box::new(BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|source| BaseError::Io {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let io_err = |source| BaseError::Io {
                path: path.clone(),
                source,
            };
            let mut entry = entry.map_err(io_err)?;
            let name = entry.path().map(|p| p.to_string_lossy().into_owned());
            let Ok(name) = name else { continue };
            let name = name.trim_start_matches("./").to_string();
            apply_entry(&name, found);
            evidence.read_entry(&name, &mut entry).map_err(io_err)?;
        }
        Ok(())
    }
}

/// The biggest interpreter binary read for its version string, and the biggest dpkg
/// status file: what is bigger is skipped (the version then comes from elsewhere).
const MAX_INTERPRETER: u64 = 256 << 20;
const MAX_DPKG_STATUS: u64 = 64 << 20;
const DPKG_STATUS: &str = "var/lib/dpkg/status";

/// What an image's own files say about its Python's full version, for images that do not
/// declare `PYTHON_VERSION` (Debian, Ubuntu, CUDA images with an apt-installed Python).
/// Later layers replace what earlier ones said.
#[derive(Debug, Default)]
struct VersionEvidence {
    /// `X.Y.Z` found in each interpreter binary (CPython's `PY_VERSION` string), by path.
    binaries: HashMap<String, String>,
    /// Package → upstream version, from `/var/lib/dpkg/status`.
    dpkg: HashMap<String, String>,
}

impl VersionEvidence {
    fn read_entry(&mut self, name: &str, entry: &mut impl Read) -> io::Result<()> {
        if name == DPKG_STATUS {
            let mut text = String::new();
            entry.take(MAX_DPKG_STATUS).read_to_string(&mut text)?;
            self.dpkg = dpkg_versions(&text);
            return Ok(());
        }
        let Some(version) = interpreter_version(name) else {
            return Ok(());
        };
        self.binaries.remove(name);
        let mut bytes = Vec::new();
        entry.take(MAX_INTERPRETER).read_to_end(&mut bytes)?;
        if let Some(full) = version_in_binary(&bytes, version) {
            self.binaries.insert(name.to_string(), full);
        }
        Ok(())
    }

    /// The full version of the interpreter at `path` (relative, `usr/bin/python3.11`).
    fn full_version(&self, path: &str, version: PythonVersion) -> Option<String> {
        if let Some(full) = self.binaries.get(path) {
            return Some(full.clone());
        }
        // Debian's packages install /usr/bin/python3.X, not /usr/local.
        if !path.starts_with("usr/bin/") {
            return None;
        }
        [
            format!("python{version}-minimal"),
            format!("libpython{version}-minimal"),
            format!("python{version}"),
        ]
        .iter()
        .find_map(|package| self.dpkg.get(package))
        .filter(|full| is_release_of(full, version))
        .cloned()
    }
}

/// `python3.N` in `usr/bin` or `usr/local/bin`: its version.
fn interpreter_version(name: &str) -> Option<PythonVersion> {
    let (dir, file) = name.rsplit_once('/')?;
    if !matches!(dir, "usr/bin" | "usr/local/bin") {
        return None;
    }
    file.strip_prefix("python")?.parse().ok()
}

/// `3.11.2`, `3.11.0rc1`, `3.11.4+` for 3.11.
fn is_release_of(full: &str, version: PythonVersion) -> bool {
    let Some(rest) = full.strip_prefix(&format!("{version}.")) else {
        return false;
    };
    let rest = rest.strip_suffix('+').unwrap_or(rest);
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let pre = &rest[digits..];
    let pre_ok = pre.is_empty()
        || ["a", "b", "rc"].iter().any(|tag| {
            pre.strip_prefix(tag)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    digits > 0 && pre_ok
}

/// The one `X.Y.Z` string (NUL-terminated on both sides, as C string constants are) a
/// binary holds for `version`; none if it holds none or several different ones.
fn version_in_binary(bytes: &[u8], version: PythonVersion) -> Option<String> {
    let prefix = format!("{version}.");
    let prefix = prefix.as_bytes();
    let mut found = std::collections::BTreeSet::new();
    for (start, window) in bytes.windows(prefix.len()).enumerate() {
        if window != prefix || (start > 0 && bytes[start - 1] != 0) {
            continue;
        }
        let rest = &bytes[start..];
        let Some(end) = rest.iter().take(24).position(|&b| b == 0) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&rest[..end]) else {
            continue;
        };
        if is_release_of(text, version) {
            found.insert(text.to_string());
        }
    }
    if found.len() != 1 {
        return None;
    }
    found.pop_first()
}

/// Installed packages of a dpkg status file and their upstream versions
/// (`3.11.2-6+deb12u6` → `3.11.2`, `1:3.12.0~rc1-1` → `3.12.0rc1`).
fn dpkg_versions(status: &str) -> HashMap<String, String> {
    let mut versions = HashMap::new();
    for stanza in status.split("\n\n") {
        let (mut package, mut version, mut installed) = (None, None, false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                package = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(package), Some(version), true) = (package, version, installed) {
            versions.insert(package.to_string(), upstream_version(version));
        }
    }
    versions
}

fn upstream_version(debian: &str) -> String {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let upstream = no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u);
    let upstream = upstream.split('+').next().unwrap_or(upstream);
    // `~rc1` sorts before the release in Debian; in Python it is written `rc1`.
    upstream.replace('~', "")
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
    /// A document blob (index, manifest, config): at most [`MAX_DOCUMENT_BYTES`], verified.
    fn read(&self, digest: &Digest) -> Result<Vec<u8>, BaseError> {
        let path = find_blob(self.blobs, digest);
        let io_error = |source| BaseError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|file| file.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(invalid(
                self.reference,
                &format!("blob {digest} is named as a manifest or config but is larger than {MAX_DOCUMENT_BYTES} bytes"),
            ));
        }
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
        let Some(entry) = index.manifest_for("linux", platform.arch.oci_name()) else {
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
    fn full_version_from_the_binary_or_dpkg() {
        let v = PythonVersion::new(3, 11);
        let binary = b"\x7fELF\x003.11\x003.11.2\x00%.80s (%.80s)\x00x3.11.9\x00";
        assert_eq!(version_in_binary(binary, v).as_deref(), Some("3.11.2"));
        assert_eq!(version_in_binary(b"\x003.11.2\x003.11.3\x00", v), None);
        assert_eq!(version_in_binary(b"\x003.12.2\x00", v), None);
        let status = "Package: python3.11-minimal\nStatus: install ok installed\nVersion: 3.11.2-6+deb12u6\n\n\
                      Package: python3.12-minimal\nStatus: deinstall ok config-files\nVersion: 3.12.1-1\n";
        let dpkg = dpkg_versions(status);
        assert_eq!(
            dpkg.get("python3.11-minimal").map(String::as_str),
            Some("3.11.2")
        );
        assert!(!dpkg.contains_key("python3.12-minimal"));
        assert_eq!(upstream_version("1:3.12.0~rc1-1ubuntu2"), "3.12.0rc1");
        assert_eq!(upstream_version("3.10.12-1~22.04.3"), "3.10.12");
        let evidence = VersionEvidence {
            binaries: HashMap::new(),
            dpkg,
        };
        assert_eq!(
            evidence.full_version("usr/bin/python3.11", v).as_deref(),
            Some("3.11.2")
        );
        assert_eq!(evidence.full_version("usr/local/bin/python3.11", v), None);
        assert!(is_release_of("3.11.4+", v) && is_release_of("3.11.0rc1", v));
        assert!(!is_release_of("3.11", v) && !is_release_of("3.11.x", v));
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

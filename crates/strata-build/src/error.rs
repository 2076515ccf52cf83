//! The builder's errors: each variant names what failed and carries its cause.

use std::io;

use strata_index::IndexError;
use strata_oci::StoreError;
use strata_registry::RegistryError;

use crate::base::BaseError;
use crate::home::{Home, HomeError};
use strata_install::InstallError;
use strata_python::FetchError;
use strata_python::ResolveError;
use strata_python::SpecError;

/// Why a command-line option of a build cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// `--max-layers` leaves no room for package layers next to the base's and the env layer.
    #[error("the base image alone has {base_layers} layers; at least {} are needed", base_layers + 2)]
    TooFewLayers { base_layers: usize },
    #[error(transparent)]
    FindLinks(#[from] strata_python::SourceError),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Format(#[from] strata_python::FormatError),
    #[error("invalid option {option}: {reason}")]
    BadOption {
        option: String,
        #[source]
        reason: OptionError,
    },
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("resolution failed")]
    Resolve(#[from] ResolveError),
    #[error("fetching wheels failed")]
    Fetch(#[from] FetchError),
    #[error("wheel {wheel} of {package} hashes to {actual}, which is not among the hashes the requirements pin ({expected})")]
    PinnedHash {
        package: String,
        wheel: String,
        expected: String,
        actual: String,
    },
    #[error("{}: every package is pinned with --hash, but the pins need {packages}, which the file does not pin; add them with their --hash (or lock again)", file.display())]
    UnpinnedDependency {
        file: std::path::PathBuf,
        packages: String,
    },
    #[error("installing wheel {wheel} failed")]
    Install {
        wheel: String,
        #[source]
        source: InstallError,
    },
    /// Two wheels of one image install one path with other content (or a file where the
    /// other has a directory), in one layer or in two.
    #[error("wheels {first} and {second} both install {path:?}, with other content")]
    Overlap {
        path: String,
        first: String,
        second: String,
    },
    #[error("writing the environment layer failed")]
    EnvLayer {
        #[source]
        source: InstallError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Verify(#[from] strata_index::VerifyError),
    #[error(transparent)]
    Config(#[from] strata_config::ConfigError),
    #[error("local garbage collection failed")]
    Gc(#[from] strata_gc::local::GcError),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("image {image} in the local store is damaged: blob {blob} is missing, or was corrupt and is now in quarantine")]
    DamagedImage {
        image: strata_oci::Digest,
        blob: strata_oci::Digest,
    },
    #[error("{digest} in the local store is an image index or another document, not an image manifest: push or run one of its images")]
    NotAnImage { digest: strata_oci::Digest },
    #[error("not pushed to {target}: it serves damaged bytes for blob {} ({}; first read from {}), and an image naming it would not pull", .blob.layer.digest, .blob.what, .blob.repository)]
    DamagedRegistryBlob {
        target: String,
        blob: Box<crate::remote_cache::DamagedBlob>,
    },
    /// A layer index entry claims a layer far larger than its wheels could make: not
    /// downloaded (a registry could fill the disk up to what it claims).
    #[error("its layer index entry claims a layer of {claimed} bytes, more than wheels of {wheels} bytes make (at most {limit})")]
    ImplausibleLayerSize {
        claimed: u64,
        wheels: u64,
        limit: u64,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl BuildError {
    /// An I/O error while writing temporary files under the store.
    pub fn tmp_io(home: &Home) -> impl FnOnce(io::Error) -> BuildError + '_ {
        move |source| BuildError::Io {
            what: format!("writing temporary files in {}", home.tmp().display()),
            source,
        }
    }

    /// A short hint for the user: what to do about this error.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            BuildError::Spec(SpecError::Io { .. }) => None,
            BuildError::Spec(_) => Some("fix the requirements file at the line shown"),
            BuildError::Format(strata_python::FormatError::Missing { .. }) => Some(
                "-r takes an environment file (requirements.txt, pyproject.toml, pylock.toml, uv.lock, environment.yml) or a project directory",
            ),
            BuildError::Config(_) => {
                Some("fix the configuration key shown (strata.toml or $STRATA_HOME/config.toml)")
            }
            BuildError::Resolve(ResolveError::UnknownPackage { .. }) => {
                Some("check the package name, or add --find-links / --index-url where it lives")
            }
            BuildError::Resolve(ResolveError::NoWheel { .. }) => Some(
                "the package has neither a wheel for the target nor an sdist to build one from: pin a version that has one",
            ),
            BuildError::Resolve(ResolveError::Conflict { .. }) => {
                Some("relax one of the conflicting pins")
            }
            BuildError::Resolve(ResolveError::Unauthorized { .. })
            | BuildError::Fetch(FetchError::Unauthorized { .. }) => Some(
                "check the index credentials: the URL's user info (or ${VAR}), $NETRC or ~/.netrc, or the registry auth files",
            ),
            BuildError::UnpinnedDependency { .. } => {
                Some("a hash-pinned file must pin every package the environment needs")
            }
            BuildError::PinnedHash { .. } => Some(
                "the wheel is not the one the requirements pin: check its source, or update the --hash",
            ),
            BuildError::Fetch(_) => Some(
                "the wheel's bytes differ from what was resolved; re-run to resolve again, or check the source",
            ),
            BuildError::Overlap { .. } => Some(
                "the later wheel would silently replace the other's file: drop one of the two \
                 packages, or pin versions that agree; nothing was written to the store",
            ),
            BuildError::Install { .. } => {
                Some("the wheel is corrupt or unsafe to install; nothing was written to the store")
            }
            BuildError::Base(BaseError::OtherPython { .. }) => Some(
                "an environment is built for its base image's Python; nothing was written to the store",
            ),
            BuildError::Base(_) => Some("check --base: oci:PATH:TAG or REGISTRY/REPO:TAG"),
            BuildError::DamagedImage { .. } => {
                Some("run the same `strata build` (or `strata pull`) again to repair it")
            }
            BuildError::DamagedRegistryBlob { .. } => Some(
                "a registry keeps the bytes it has for a digest on a new upload: its storage must get the blob's right bytes back (this store has them) before `strata push` can publish the image; images there naming the blob do not pull either (`strata verify` finds them)",
            ),
            BuildError::Registry(e) => Some(e.hint()),
            _ => None,
        }
    }
}

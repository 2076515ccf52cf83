//! Environment specs: what a user asked for, in canonical form, and its digest.
//!
//! Two spec files that mean the same produce the same [`EnvSpec`] and so the same
//! [`SpecDigest`]; any change of meaning changes it.
//!
//! Layout: `lines` (physical -> logical lines, comments), `requirements` (options, includes),
//! `pep508` (one requirement), `direct_url` (what `name @ URL` may be), `specifier` + `version` (PEP 440), `marker` (PEP 508 markers),
//! `sources` (index URLs, find-links), `canonical` (merging, digest, uv input files).

mod canonical;
mod direct_url;
mod error;
mod expand;
mod lines;
mod local;
mod marker;
mod pep508;
mod requirements;
mod sources;
mod specifier;
mod version;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;

pub use direct_url::DirectUrlError;
pub use error::{InvalidRequirement, OptionError, SpecError, Unsupported};
pub use lines::ShellSplitError;
pub use local::LocalPathError;
pub use marker::{evaluate_marker, MarkerEnvironment, MarkerError, MarkerToken};
pub use pep508::RequirementError;
pub use requirements::{
    parse_requirements_file, parse_requirements_str, parse_requirements_with_vars, HashError,
    RequirementsFile,
};
pub use sources::{normalise_find_links, SourceError};
pub use specifier::SpecifierError;
pub(crate) use specifier::{clause_matches, parse_clauses};
pub use version::{Version, VersionError};

use crate::name::PackageName;
use crate::target::Target;

/// One requirement in canonical form (PEP 508).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    pub name: PackageName,
    /// Normalised extra names, sorted and deduplicated.
    pub extras: Vec<String>,
    /// Normalised specifier clauses joined by `,` in a canonical order; empty for any version.
    pub specifier: String,
    /// A direct URL (`name @ url`), if given.
    pub url: Option<String>,
    /// The canonical marker expression, if any.
    pub marker: Option<String>,
    /// Allowed artifact hashes (`sha256:<hex>`), sorted and deduplicated. Part of the meaning:
    /// they restrict which files may be installed.
    pub hashes: Vec<String>,
}

/// Where packages may come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub index_url: Option<String>,
    /// Sorted and deduplicated.
    pub extra_index_urls: Vec<String>,
    /// Find-links URLs (`http(s)://`): a named, shared source like an index URL. Sorted and
    /// deduplicated.
    pub find_links: Vec<String>,
    pub no_index: bool,
    /// Find-links on this machine (directories as absolute paths, `file://` URLs): given to
    /// the resolver but not part of the spec's identity. Where the wheels lie on one machine
    /// says nothing about the environment (the lock pins every wheel by sha256), so the same
    /// requirements fed from two wheel directories are one spec, one tag and one image.
    #[serde(skip)]
    pub local_find_links: Vec<String>,
}

/// The version of the canonical spec's form, the first field of its serialisation. Bumped
/// when what a spec means changes, so that no old key answers for a new meaning.
/// 2: local find-links are no longer part of a spec, and the image a spec names carries no
/// spec-specific annotations (an image is a function of its content).
pub const SPEC_VERSION: u32 = 2;

/// A canonical environment spec: requirements, constraints, sources, base image and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// [`SPEC_VERSION`] when made by this strata.
    pub version: u32,
    /// Sorted by (name, marker, url); requirements with the same key merged.
    pub requirements: Vec<Requirement>,
    /// From `-c` files; same canonical form.
    pub constraints: Vec<Requirement>,
    pub sources: Sources,
    /// The base image, always by digest (never a moving tag).
    pub base: Digest,
    pub target: Target,
    /// For a lock file (pylock.toml, uv.lock): the digest of the canonical lock it gives
    /// for the target, which is its whole meaning (requirements and sources are then empty).
    /// Absent otherwise, so the specs of requirement files keep their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Digest>,
}

/// sha256 of an [`EnvSpec`]'s canonical serialisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecDigest(pub Digest);

impl std::fmt::Display for SpecDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

//! Canonicalisation of a parsed requirements file into an [`EnvSpec`], and its digest.

use std::collections::BTreeMap;

use strata_oci::Digest;

use super::specifier::{join_clauses, split_clauses};
use super::{EnvSpec, Requirement, RequirementsFile, SpecDigest};
use crate::name::PackageName;
use crate::target::Target;

impl EnvSpec {
    /// The canonical spec of `file` on the base image `base` for `target`: duplicates merged,
    /// everything sorted, so that files meaning the same give equal specs.
    pub fn new(file: RequirementsFile, base: Digest, target: Target) -> EnvSpec {
        EnvSpec {
            version: super::SPEC_VERSION,
            requirements: merge(file.requirements),
            constraints: merge(file.constraints),
            sources: file.sources.canonical(),
            base,
            target,
            lock: None,
        }
    }

    /// The spec of a lock file: its canonical lock (not the file's bytes, so any file
    /// pinning the same wheels names the same environment).
    pub fn locked(lock: &crate::lock::Lock, base: Digest) -> EnvSpec {
        EnvSpec {
            version: super::SPEC_VERSION,
            requirements: Vec::new(),
            constraints: Vec::new(),
            sources: super::Sources::default(),
            base,
            target: lock.target,
            lock: Some(lock.digest().0),
        }
    }

    /// Whether every requirement pins one version with `==` and carries `--hash`es: a lock
    /// written as a requirements file (pip's hash-checking mode needs every package so).
    pub fn pins_every_package(&self) -> bool {
        !self.requirements.is_empty()
            && self.constraints.is_empty()
            && self.requirements.iter().all(|r| {
                r.url.is_none()
                    && !r.hashes.is_empty()
                    && r.specifier.starts_with("==")
                    && !r.specifier.contains([',', '*'])
                    && !r.specifier.starts_with("===")
            })
    }

    /// Compact JSON of the spec: field order fixed by the struct, every list already sorted.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising strings, bools, numbers and lists into memory cannot fail.
        serde_json::to_vec(self).expect("EnvSpec is plain data and always serialises")
    }

    pub fn digest(&self) -> SpecDigest {
        SpecDigest(Digest::of(&self.canonical_bytes()))
    }

    /// The requirements as a file uv reads (one PEP 508 line each, with `--hash=` options).
    pub fn requirements_txt(&self) -> String {
        to_txt(&self.requirements)
    }

    /// The constraints as a file for uv's `--constraint`.
    pub fn constraints_txt(&self) -> String {
        to_txt(&self.constraints)
    }
}

fn to_txt(requirements: &[Requirement]) -> String {
    requirements
        .iter()
        .map(|r| r.to_requirements_line() + "\n")
        .collect()
}

impl Requirement {
    /// Sorts and deduplicates extras, clauses and hashes (idempotent on parsed requirements;
    /// protects the digest from hand-built ones).
    pub fn canonicalise(mut self) -> Requirement {
        self.extras.sort();
        self.extras.dedup();
        self.specifier = join_clauses(split_clauses(&self.specifier).map(String::from).collect());
        self.hashes.sort();
        self.hashes.dedup();
        self
    }

    /// Folds `other` (same name, marker and URL) into `self`: both must hold, so extras and
    /// hashes are united and clauses concatenated.
    fn absorb(&mut self, other: Requirement) {
        self.extras.extend(other.extras);
        self.specifier = [self.specifier.as_str(), other.specifier.as_str()].join(",");
        self.hashes.extend(other.hashes);
    }
}

type MergeKey = (PackageName, Option<String>, Option<String>);

/// Merges requirements with the same (name, marker, URL), sorted by that key.
fn merge(requirements: Vec<Requirement>) -> Vec<Requirement> {
    let mut merged: BTreeMap<MergeKey, Requirement> = BTreeMap::new();
    for requirement in requirements {
        let key = (
            requirement.name.clone(),
            requirement.marker.clone(),
            requirement.url.clone(),
        );
        match merged.get_mut(&key) {
            Some(existing) => existing.absorb(requirement),
            None => {
                merged.insert(key, requirement);
            }
        }
    }
    merged
        .into_values()
        .map(Requirement::canonicalise)
        .collect()
}

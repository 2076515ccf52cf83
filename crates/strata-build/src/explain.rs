//! Why a build was or was not a cache hit: the cached environment nearest to a spec and
//! exactly what differs between them.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_index::EnvRow;

use strata_python::{EnvSpec, Requirement, SpecDigest};

/// One difference between the spec being built and a cached one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    Added {
        requirement: String,
    },
    Removed {
        requirement: String,
    },
    Changed {
        name: String,
        cached: String,
        now: String,
    },
    ConstraintAdded {
        requirement: String,
    },
    ConstraintRemoved {
        requirement: String,
    },
    Base {
        cached: String,
        now: String,
    },
    Python {
        cached: String,
        now: String,
    },
    Platform {
        cached: String,
        now: String,
    },
    Sources {
        cached: String,
        now: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Added { requirement } => write!(f, "added {requirement}"),
            Difference::Removed { requirement } => write!(f, "removed {requirement}"),
            Difference::Changed { name, cached, now } => {
                write!(f, "changed {name}: {cached} -> {now}")
            }
            Difference::ConstraintAdded { requirement } => {
                write!(f, "added constraint {requirement}")
            }
            Difference::ConstraintRemoved { requirement } => {
                write!(f, "removed constraint {requirement}")
            }
            Difference::Base { cached, now } => write!(f, "base image {cached} -> {now}"),
            Difference::Python { cached, now } => write!(f, "Python {cached} -> {now}"),
            Difference::Platform { cached, now } => write!(f, "platform {cached} -> {now}"),
            Difference::Sources { cached, now } => write!(f, "package sources {cached} -> {now}"),
        }
    }
}

/// The answer to "why (not) a hit?".
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub spec_digest: String,
    /// The entry the spec hits, if any.
    pub hit: Option<Candidate>,
    /// Otherwise the nearest cached environment and what differs.
    pub nearest: Option<Candidate>,
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub tag: String,
    pub name: String,
    pub spec_digest: String,
    pub manifest: String,
    /// When the spec was last resolved (unix seconds): a hit answers with that resolution
    /// until `strata build --refresh`.
    pub resolved_at: i64,
    /// The commits its lock built git packages from (`name @ git+URL@branch`): what the
    /// branch or tag meant when the spec was resolved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub git: Vec<GitPin>,
}

/// A package of the lock built from a git commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitPin {
    pub name: String,
    pub commit: String,
}

impl Candidate {
    fn of(row: &EnvRow) -> Candidate {
        Candidate {
            tag: row.record.tag.clone(),
            name: row.record.name.clone(),
            spec_digest: row.record.spec.to_string(),
            manifest: row.record.manifest.to_string(),
            resolved_at: row.resolved_at,
            git: Vec::new(),
        }
    }

    /// Fills [`Candidate::git`] from the candidate's lock.
    pub fn with_lock(mut self, lock: &strata_python::Lock) -> Candidate {
        self.git = lock
            .wheels
            .iter()
            .filter_map(|w| {
                let commit = w.built_from.as_ref()?.commit.clone()?;
                Some(GitPin {
                    name: w.name.to_string(),
                    commit,
                })
            })
            .collect();
        self
    }
}

/// `identity` is what the build is keyed on (the spec's digest, or that and the layer
/// compression).
pub fn explain(env: &EnvSpec, identity: &SpecDigest, cached: &[EnvRow]) -> Explanation {
    let spec_digest = identity.0.clone();
    let mut explanation = Explanation {
        spec_digest: spec_digest.to_string(),
        hit: None,
        nearest: None,
        differences: Vec::new(),
    };
    if let Some(row) = cached.iter().find(|r| r.record.spec == spec_digest) {
        explanation.hit = Some(Candidate::of(row));
        return explanation;
    }
    let nearest = cached
        .iter()
        .filter_map(|row| {
            let other: EnvSpec = serde_json::from_str(&row.record.spec_json).ok()?;
            Some((differences(&other, env), row))
        })
        // Fewest differences; among equals the most recently used.
        .min_by_key(|(diffs, row)| (diffs.len(), std::cmp::Reverse(row.last_used_at)));
    if let Some((diffs, row)) = nearest {
        explanation.nearest = Some(Candidate::of(row));
        explanation.differences = diffs;
    }
    explanation
}

/// What changed from `cached` to `now`.
pub fn differences(cached: &EnvSpec, now: &EnvSpec) -> Vec<Difference> {
    let mut out = requirement_changes(&cached.requirements, &now.requirements, false);
    out.extend(requirement_changes(
        &cached.constraints,
        &now.constraints,
        true,
    ));
    if cached.base != now.base {
        out.push(Difference::Base {
            cached: cached.base.to_string(),
            now: now.base.to_string(),
        });
    }
    if cached.target.python != now.target.python {
        out.push(Difference::Python {
            cached: cached.target.python.to_string(),
            now: now.target.python.to_string(),
        });
    }
    if cached.target.platform != now.target.platform || cached.target.glibc != now.target.glibc {
        out.push(Difference::Platform {
            cached: cached.target.uv_python_platform(),
            now: now.target.uv_python_platform(),
        });
    }
    // Compared as serialised: machine-local find-links are not part of a spec.
    let show = |s: &strata_python::Sources| serde_json::to_string(s).unwrap_or_default();
    let (cached_sources, now_sources) = (show(&cached.sources), show(&now.sources));
    if cached_sources != now_sources {
        out.push(Difference::Sources {
            cached: cached_sources,
            now: now_sources,
        });
    }
    out
}

fn requirement_changes(
    cached: &[Requirement],
    now: &[Requirement],
    constraints: bool,
) -> Vec<Difference> {
    let key = |r: &Requirement| (r.name.to_string(), r.marker.clone());
    let before: BTreeMap<_, &Requirement> = cached.iter().map(|r| (key(r), r)).collect();
    let after: BTreeMap<_, &Requirement> = now.iter().map(|r| (key(r), r)).collect();
    let mut out = Vec::new();
    for (k, old) in &before {
        match after.get(k) {
            None if constraints => out.push(Difference::ConstraintRemoved {
                requirement: old.to_requirements_line(),
            }),
            None => out.push(Difference::Removed {
                requirement: old.to_requirements_line(),
            }),
            Some(new) if new != old => out.push(Difference::Changed {
                name: old.name.to_string(),
                cached: old.to_requirements_line(),
                now: new.to_requirements_line(),
            }),
            Some(_) => {}
        }
    }
    for (k, new) in &after {
        if before.contains_key(k) {
            continue;
        }
        let requirement = new.to_requirements_line();
        out.push(if constraints {
            Difference::ConstraintAdded { requirement }
        } else {
            Difference::Added { requirement }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use strata_oci::Digest;
    use strata_python::parse_requirements_str;
    use strata_python::{PythonVersion, Target};

    fn spec(text: &str, python: u8) -> EnvSpec {
        let file = parse_requirements_str(text, Path::new("r.txt")).unwrap();
        let target = Target::new(
            PythonVersion::new(3, python),
            "linux/amd64".parse().unwrap(),
        );
        EnvSpec::new(file, Digest::of(b"base"), target)
    }

    #[test]
    fn names_added_removed_and_changed_requirements() {
        let cached = spec("alpha==1.0\nbeta\ngamma>=1\n", 11);
        let now = spec("alpha==1.1\ngamma>=1\ndelta\n", 12);
        let diffs: Vec<String> = differences(&cached, &now)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            diffs,
            vec![
                "changed alpha: alpha==1.0 -> alpha==1.1",
                "removed beta",
                "added delta",
                "Python 3.11 -> 3.12",
            ]
        );
        assert!(differences(&cached, &cached).is_empty());
    }
}

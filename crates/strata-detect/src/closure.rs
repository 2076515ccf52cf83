//! From the distributions the imports name to everything they need, as installed: each
//! installed `Requires-Dist` whose marker holds in the environment (with the extras asked of
//! that distribution) is followed, so the set is what ran.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use strata_python::{evaluate_marker, MarkerEnvironment, Requirement, Version};

use crate::detection::{DetectedRequirement, Detection, LocalPackage, Source};
use crate::installed::Installed;

/// A distribution the closure reached.
#[derive(Default)]
struct Reached {
    extras: BTreeSet<String>,
    sources: Vec<Source>,
}

/// Closes `direct` (installed distribution -> the imports naming it) over `Requires-Dist`
/// and puts the result in `detection`: pins, and local packages apart.
pub fn close(
    installed: &Installed,
    markers: &MarkerEnvironment,
    direct: BTreeMap<usize, Vec<Source>>,
    detection: &mut Detection,
) {
    let mut reached: BTreeMap<usize, Reached> = BTreeMap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (id, sources) in direct {
        reached.entry(id).or_default().sources.extend(sources);
        queue.push_back(id);
    }
    while let Some(id) = queue.pop_front() {
        let dist = &installed.dists[id];
        let extras: Vec<String> = reached[&id].extras.iter().cloned().collect();
        for raw in &dist.requires {
            let Some(requirement) = applicable(raw, &extras, markers, dist, detection) else {
                continue;
            };
            let Some(dep) = installed.get(&requirement.name) else {
                detection.warn(
                    Some(dist.dist_info.join("METADATA")),
                    None,
                    format!(
                        "{} requires {raw:?}, and {} is not installed: the environment is incomplete",
                        dist.name, requirement.name
                    ),
                );
                continue;
            };
            let is_new = !reached.contains_key(&dep);
            let entry = reached.entry(dep).or_default();
            let source = Source::RequiredBy {
                dist: dist.name.clone(),
                requirement: raw.clone(),
            };
            if !entry.sources.contains(&source) {
                entry.sources.push(source);
            }
            let before = entry.extras.len();
            entry.extras.extend(requirement.extras);
            if is_new || entry.extras.len() > before {
                queue.push_back(dep);
            }
        }
    }
    for (id, found) in reached {
        let dist = &installed.dists[id];
        match &dist.local {
            Some(origin) => detection.local_packages.push(LocalPackage {
                name: dist.name.clone(),
                version: dist.version.clone(),
                path: origin.path.clone(),
                editable: origin.editable,
                sources: found.sources,
            }),
            None => detection.requirements.push(DetectedRequirement::new(
                pin(dist),
                Some(dist.version.clone()),
                found.sources,
            )),
        }
    }
}

/// `raw` parsed, when its marker holds; a requirement that does not parse is a warning.
fn applicable(
    raw: &str,
    extras: &[String],
    markers: &MarkerEnvironment,
    dist: &crate::installed::Dist,
    detection: &mut Detection,
) -> Option<Requirement> {
    let metadata = dist.dist_info.join("METADATA");
    let requirement: Requirement = match raw.parse() {
        Ok(r) => r,
        Err(e) => {
            detection.warn(
                Some(metadata),
                None,
                format!("Requires-Dist {raw:?} skipped: {e}"),
            );
            return None;
        }
    };
    let Some(marker) = &requirement.marker else {
        return Some(requirement);
    };
    match evaluate_marker(marker, markers, extras) {
        Ok(true) => Some(requirement),
        Ok(false) => None,
        Err(e) => {
            detection.warn(
                Some(metadata),
                None,
                format!("Requires-Dist {raw:?} skipped: {e}"),
            );
            None
        }
    }
}

/// `name==version`; `===version` for a version that is not PEP 440 (exact text match).
fn pin(dist: &crate::installed::Dist) -> Requirement {
    let op = if Version::parse(&dist.version).is_ok() {
        "=="
    } else {
        "==="
    };
    Requirement {
        name: dist.name.clone(),
        extras: Vec::new(),
        specifier: format!("{op}{}", dist.version),
        url: None,
        marker: None,
        hashes: Vec::new(),
    }
}

//! The retention decision: which environment images a [`GcPolicy`] keeps, and why. Pure (no
//! I/O), so the local and the registry collectors decide the same way.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::policy::GcPolicy;
use strata_oci::Digest;

const DAY: i64 = 86_400;

/// An environment image the policy decides about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub tag: String,
    pub manifest: Digest,
    /// Environment name; `""` groups the unnamed ones together.
    pub name: String,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// Why an image is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// Used within the policy's `keep_days`; `days` is how many whole days ago.
    RecentlyUsed { days: i64 },
    /// Among the newest `keep_newest` of its name (rank 1 is the newest).
    NewestOfName { name: String, rank: u32 },
    /// Its tag matches a `keep_tags` pattern.
    TagPattern { pattern: String },
    /// A live lease holds its manifest (a build, a pull or a job uses it).
    Leased,
    /// A tag strata did not make (not in the environment index): never deleted.
    NotAnEnvironment,
}

/// The decision for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Empty when the image goes.
    pub reasons: Vec<KeepReason>,
    /// Its rank among the images of its name (1 = newest).
    pub rank: u32,
    /// Whole days since it was last used.
    pub unused_days: i64,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Decides for each candidate (same order as given).
pub fn decide(
    policy: &GcPolicy,
    now: i64,
    candidates: &[Candidate],
    leased: &HashSet<Digest>,
) -> Vec<Decision> {
    let ranks = ranks_by_name(candidates);
    candidates
        .iter()
        .zip(ranks)
        .map(|(c, rank)| {
            let age = now.saturating_sub(c.last_used_at).max(0);
            let mut reasons = Vec::new();
            if policy.keep_days > 0 && age < i64::from(policy.keep_days) * DAY {
                reasons.push(KeepReason::RecentlyUsed { days: age / DAY });
            }
            if rank <= policy.keep_newest {
                reasons.push(KeepReason::NewestOfName {
                    name: c.name.clone(),
                    rank,
                });
            }
            if let Some(p) = policy.keep_tags.iter().find(|p| p.matches(&c.tag)) {
                reasons.push(KeepReason::TagPattern {
                    pattern: p.as_str().to_string(),
                });
            }
            if leased.contains(&c.manifest) {
                reasons.push(KeepReason::Leased);
            }
            Decision {
                reasons,
                rank,
                unused_days: age / DAY,
            }
        })
        .collect()
}

/// 1-based rank of each candidate within its name: last used first, then created, then
/// by tag so that ties break the same way on every run.
fn ranks_by_name(candidates: &[Candidate]) -> Vec<u32> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(c.name.as_str()).or_default().push(i);
    }
    let mut ranks = vec![0u32; candidates.len()];
    for members in groups.values_mut() {
        members.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            b.last_used_at
                .cmp(&a.last_used_at)
                .then(b.created_at.cmp(&a.created_at))
                .then(a.tag.cmp(&b.tag))
        });
        for (rank, &i) in members.iter().enumerate() {
            ranks[i] = u32::try_from(rank + 1).unwrap_or(u32::MAX);
        }
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TagPattern;

    fn candidate(tag: &str, name: &str, last_used: i64) -> Candidate {
        Candidate {
            tag: tag.into(),
            manifest: Digest::of(tag.as_bytes()),
            name: name.into(),
            created_at: 0,
            last_used_at: last_used,
        }
    }

    #[test]
    fn each_rule_keeps_and_the_rest_go() {
        let now = 100 * DAY;
        let policy = GcPolicy {
            keep_days: 7,
            keep_newest: 1,
            keep_tags: vec![TagPattern::new("rel-*").unwrap()],
            ..GcPolicy::default()
        };
        let cs = vec![
            candidate("recent", "a", now - DAY),
            candidate("old-a", "a", now - 30 * DAY),
            candidate("newest-b", "b", now - 40 * DAY),
            candidate("older-b", "b", now - 50 * DAY),
            candidate("rel-1", "b", now - 60 * DAY),
            candidate("leased", "b", now - 70 * DAY),
        ];
        let leased = HashSet::from([Digest::of(b"leased")]);
        let d = decide(&policy, now, &cs, &leased);
        assert_eq!(
            d[0].reasons,
            vec![
                KeepReason::RecentlyUsed { days: 1 },
                KeepReason::NewestOfName {
                    name: "a".into(),
                    rank: 1
                }
            ]
        );
        assert!(!d[1].keep());
        assert_eq!(d[1].rank, 2);
        assert_eq!(d[1].unused_days, 30);
        assert_eq!(
            d[2].reasons,
            vec![KeepReason::NewestOfName {
                name: "b".into(),
                rank: 1
            }]
        );
        assert!(!d[3].keep());
        assert_eq!(
            d[4].reasons,
            vec![KeepReason::TagPattern {
                pattern: "rel-*".into()
            }]
        );
        assert_eq!(d[5].reasons, vec![KeepReason::Leased]);
    }

    #[test]
    fn ties_break_by_creation_then_tag() {
        let mut a = candidate("a", "", 5);
        let b = candidate("b", "", 5);
        a.created_at = 1;
        let d = decide(
            &GcPolicy {
                keep_days: 0,
                keep_newest: 1,
                ..GcPolicy::default()
            },
            10,
            &[b, a],
            &HashSet::new(),
        );
        assert_eq!(d[0].rank, 2);
        assert_eq!(d[1].rank, 1);
    }
}

//! Registry garbage collection: a retention policy over the environment images of one
//! repository, enforced by deleting manifests by digest through the registry API.
//!
//! The plan lists the repository's tags, resolves each to a manifest digest, reads every
//! distinct manifest (its strata annotations and its blobs) and decides per digest, because a
//! CNCF registry deletes a manifest together with every tag that points at it: a digest with one
//! kept tag is kept whole. Usage (pushed, last used) comes from the `pushes` table of
//! `strata.db`, plus the local `env_index` use of the same manifest.
//!
//! Deleting manifests frees no storage by itself; the registry's own blob collection
//! (`registry garbage-collect`, with the registry read-only or stopped) removes the blobs no
//! manifest references any more. `bytes_freed` is what that run will free, counting only
//! blobs of this repository that no kept manifest shares (manifest bytes are not counted).
//!
//! Images are grouped by environment name for `keep_newest`: the `dev.strata.name`
//! annotation, else the name recorded with the push, else no name — all unnamed images form
//! one group. A tag prefix is not used: strata's own tags are `env-<spec digest>`, so every
//! prefix would be `env` anyway, and a user's tag says nothing reliable about the environment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::policy::GcPolicy;
use strata_index::PushUsage;
use strata_index::{Index, IndexError};
use strata_oci::Digest;
use strata_oci::ManifestDocument;
use strata_registry::{ManifestRef, Registry, RegistryError, RegistryRepo, Tag};

/// The annotations strata writes on the images it builds (see `strata-builder`'s image module).
pub const ANNOTATION_SPEC: &str = "dev.strata.spec-digest";
pub const ANNOTATION_LOCK: &str = "dev.strata.lock-digest";
pub const ANNOTATION_NAME: &str = "dev.strata.name";

/// Registry requests in flight at once while planning.
const CONCURRENCY: usize = 8;
/// Deletes in flight at once. A CNCF registry walks every tag of the repository for each
/// manifest delete (to drop the tags pointing at it), so deletes are the slow part.
const DELETE_CONCURRENCY: usize = 4;
const DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum RegistryGcError {
    #[error(transparent)]
    Registry(#[from] RegistryError),

    #[error(transparent)]
    Index(#[from] IndexError),

    #[error("registry gc of {target} stopped after deleting {} of {planned} manifests", .report.counts.deleted)]
    Delete {
        target: String,
        planned: usize,
        /// What was deleted before the failure.
        report: Box<RegistryGcReport>,
        #[source]
        source: RegistryError,
    },

    #[error("the plan is for {plan_target}, not {target}")]
    WrongPlan { plan_target: String, target: String },
}

/// Why a manifest is kept. A manifest usually has several reasons; all are reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// Not built by strata (no `dev.strata.spec-digest`): strata never deletes it.
    NotStrata,
    /// One of its tags matches a `keep_tags` pattern.
    TagPattern { tag: String, pattern: String },
    /// Pushed or used within `keep_days`.
    Recent { last_active_at: i64, keep_days: u32 },
    /// Among the newest `keep_newest` (by push time) of its environment name.
    Newest {
        name: Option<String>,
        rank: usize,
        keep_newest: u32,
    },
    /// A live lease (queued or running job, build in flight) references it.
    Leased { digest: Digest },
    /// A strata image this database has no push record of: its age is unknown.
    NoUsageRecord,
    /// Used again between the plan and the delete.
    UsedSincePlan { last_active_at: i64 },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotStrata => write!(f, "not a strata image"),
            KeepReason::TagPattern { tag, pattern } => {
                write!(f, "tag {tag} matches keep pattern {pattern}")
            }
            KeepReason::Recent { keep_days, .. } => write!(f, "used within {keep_days} days"),
            KeepReason::Newest {
                name,
                rank,
                keep_newest,
            } => write!(
                f,
                "newest {rank} of {keep_newest} kept for {}",
                name.as_deref().unwrap_or("unnamed environments")
            ),
            KeepReason::Leased { digest } => write!(f, "leased ({digest})"),
            KeepReason::NoUsageRecord => write!(f, "no push record, age unknown"),
            KeepReason::UsedSincePlan { .. } => write!(f, "used since the plan was made"),
        }
    }
}

/// Why a manifest is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DeleteReason {
    /// Idle longer than `keep_days`, with `newer` images of the same name pushed after it.
    Expired {
        last_active_at: i64,
        idle_days: i64,
        keep_days: u32,
        newer: usize,
        keep_newest: u32,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::Expired {
                idle_days,
                keep_days,
                newer,
                ..
            } => write!(
                f,
                "idle {idle_days} days (keep {keep_days}), {newer} newer of its name"
            ),
        }
    }
}

/// One manifest of the repository, as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    pub digest: Digest,
    /// Every tag that pointed at it; deleting the digest removes them all.
    pub tags: Vec<String>,
    pub name: Option<String>,
    pub spec_digest: Option<Digest>,
    pub lock_digest: Option<Digest>,
    pub pushed_at: Option<i64>,
    /// The latest of push, use recorded with the push, and local use of the same manifest.
    pub last_active_at: Option<i64>,
    /// Bytes of the blobs it references, shared ones included.
    pub size: u64,
    /// (digest, size) of every blob it references: config and layers (and, for an index, those
    /// of its children).
    #[serde(skip)]
    blobs: Vec<(Digest, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptManifest {
    #[serde(flatten)]
    pub manifest: ManifestEntry,
    pub reasons: Vec<KeepReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedManifest {
    #[serde(flatten)]
    pub manifest: ManifestEntry,
    pub why: DeleteReason,
}

/// The policy in force, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub keep_days: u32,
    pub keep_newest: u32,
    pub keep_tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcCounts {
    pub tags: usize,
    pub manifests: usize,
    pub kept: usize,
    pub deleted: usize,
    pub tags_deleted: usize,
}

/// What a run would do. Deleting is by manifest digest; `deleted` is oldest first, the order
/// [`apply_registry`] deletes in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryGcPlan {
    /// `REGISTRY/REPO`.
    pub target: String,
    pub now: i64,
    pub policy: PolicySummary,
    pub kept: Vec<KeptManifest>,
    pub deleted: Vec<DeletedManifest>,
    /// Bytes of blobs referenced only by deleted manifests.
    pub bytes_freed: u64,
    pub counts: GcCounts,
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryGcReport {
    pub dry_run: bool,
    pub target: String,
    pub now: i64,
    pub policy: PolicySummary,
    pub kept: Vec<KeptManifest>,
    pub deleted: Vec<DeletedManifest>,
    pub bytes_freed: u64,
    pub counts: GcCounts,
}

impl RegistryGcPlan {
    /// The report of a dry run: what would be kept and deleted.
    pub fn into_report(self) -> RegistryGcReport {
        RegistryGcReport {
            dry_run: true,
            target: self.target,
            now: self.now,
            policy: self.policy,
            kept: self.kept,
            deleted: self.deleted,
            bytes_freed: self.bytes_freed,
            counts: self.counts,
        }
    }

    /// Activity at or after this time keeps an image.
    fn recent_since(&self) -> i64 {
        recent_since(self.now, self.policy.keep_days)
    }
}

fn recent_since(now: i64, keep_days: u32) -> i64 {
    now.saturating_sub(i64::from(keep_days).saturating_mul(DAY))
}

/// Plans a registry GC of `repo`: nothing is changed. `protected` holds the digests live
/// leases reference (manifests, or spec digests); `now` is seconds since the epoch.
pub async fn plan_registry(
    registry: &Registry,
    repo: &RegistryRepo,
    index: &Index,
    policy: &GcPolicy,
    protected: &HashSet<Digest>,
    now: i64,
) -> Result<RegistryGcPlan, RegistryGcError> {
    let target = repo.to_string();
    let tags = registry.list_tags(repo).await?;
    let by_digest = resolve_tags(registry, repo, &tags).await?;
    let observed = inspect_all(registry, repo, by_digest).await?;
    let usage = index.registry_pushes(&target)?;
    let rules = Rules {
        policy,
        protected,
        now,
    };
    let (kept, deleted) = rules.decide(observed, &usage);
    let bytes_freed = bytes_freed(&kept, &deleted);
    let counts = counts(tags.len(), &kept, &deleted);
    Ok(RegistryGcPlan {
        target,
        now,
        policy: PolicySummary {
            keep_days: policy.keep_days,
            keep_newest: policy.keep_newest,
            keep_tags: policy
                .keep_tags
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        },
        kept,
        deleted,
        bytes_freed,
        counts,
    })
}

/// Deletes what `plan` says, oldest first, a few at a time, and forgets the deleted pushes in
/// `index`. An image used again since the plan (its push record says so) is kept. The first
/// failed delete stops the run: no new delete starts, those in flight finish, and the error
/// carries the report of what was deleted.
pub async fn apply_registry(
    registry: &Registry,
    repo: &RegistryRepo,
    index: &Index,
    plan: &RegistryGcPlan,
) -> Result<RegistryGcReport, RegistryGcError> {
    let target = repo.to_string();
    if plan.target != target {
        return Err(RegistryGcError::WrongPlan {
            plan_target: plan.target.clone(),
            target,
        });
    }
    let since = plan.recent_since();
    let mut kept = plan.kept.clone();
    let mut deleted = Vec::new();
    let mut failure = None;
    let mut pending = plan.deleted.iter();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while failure.is_none() && in_flight.len() < DELETE_CONCURRENCY {
            let Some(entry) = pending.next() else { break };
            // Checked just before the delete: a build hit or a push since the plan makes the
            // image recent again.
            let fresh = index.registry_push(&target, &entry.manifest.digest)?;
            if let Some(active) = fresh.map(|u| u.last_active_at()).filter(|t| *t >= since) {
                kept.push(KeptManifest {
                    manifest: entry.manifest.clone(),
                    reasons: vec![KeepReason::UsedSincePlan {
                        last_active_at: active,
                    }],
                });
                continue;
            }
            in_flight.push(async move {
                let result = delete_one(registry, repo, &entry.manifest.digest).await;
                (entry, result)
            });
        }
        let Some((entry, result)) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(()) => {
                index.forget_registry_push(&target, &entry.manifest.digest)?;
                deleted.push(entry.clone());
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    // Completion order varies; the report keeps the plan's order.
    oldest_first(&mut deleted);
    let report = report_of(plan, kept, deleted);
    match failure {
        None => Ok(report),
        Some(source) => Err(RegistryGcError::Delete {
            target,
            planned: plan.deleted.len(),
            report: Box::new(report),
            source,
        }),
    }
}

fn oldest_first(deleted: &mut [DeletedManifest]) {
    deleted.sort_by(|a, b| {
        (a.manifest.last_active_at, &a.manifest.digest)
            .cmp(&(b.manifest.last_active_at, &b.manifest.digest))
    });
}

/// Deletes one manifest; one that is already gone counts as deleted.
async fn delete_one(
    registry: &Registry,
    repo: &RegistryRepo,
    digest: &Digest,
) -> Result<(), RegistryError> {
    match registry.delete_manifest(repo, digest).await {
        Err(e) if e.status() == Some(404) => Ok(()),
        other => other,
    }
}

fn report_of(
    plan: &RegistryGcPlan,
    kept: Vec<KeptManifest>,
    deleted: Vec<DeletedManifest>,
) -> RegistryGcReport {
    RegistryGcReport {
        dry_run: false,
        target: plan.target.clone(),
        now: plan.now,
        policy: plan.policy.clone(),
        bytes_freed: bytes_freed(&kept, &deleted),
        counts: counts(plan.counts.tags, &kept, &deleted),
        kept,
        deleted,
    }
}

fn counts(tags: usize, kept: &[KeptManifest], deleted: &[DeletedManifest]) -> GcCounts {
    GcCounts {
        tags,
        manifests: kept.len() + deleted.len(),
        kept: kept.len(),
        deleted: deleted.len(),
        tags_deleted: deleted.iter().map(|d| d.manifest.tags.len()).sum(),
    }
}

/// Sizes of the blobs that only deleted manifests reference, each counted once.
fn bytes_freed(kept: &[KeptManifest], deleted: &[DeletedManifest]) -> u64 {
    let kept_blobs: HashSet<&Digest> = kept
        .iter()
        .flat_map(|k| k.manifest.blobs.iter().map(|(d, _)| d))
        .collect();
    let freed: HashMap<&Digest, u64> = deleted
        .iter()
        .flat_map(|d| d.manifest.blobs.iter())
        .filter(|(d, _)| !kept_blobs.contains(d))
        .map(|(d, size)| (d, *size))
        .collect();
    freed.values().sum()
}

// ---- Reading the registry ----

/// Tag → digest by HEAD, several at once, grouped by digest (tags sorted). A tag that
/// vanished since the listing is left out.
async fn resolve_tags(
    registry: &Registry,
    repo: &RegistryRepo,
    tags: &[String],
) -> Result<BTreeMap<Digest, Vec<String>>, RegistryError> {
    // Built up front, as in `push`: a closure in the stream would make the future lose `Send`.
    let heads: Vec<_> = tags
        .iter()
        .map(|t| resolve_tag(registry, repo, t))
        .collect();
    let resolved: Vec<(String, Option<Digest>)> = futures_util::stream::iter(heads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (tag, digest) in resolved {
        if let Some(digest) = digest {
            by_digest.entry(digest).or_default().push(tag);
        }
    }
    for tags in by_digest.values_mut() {
        tags.sort();
    }
    Ok(by_digest)
}

async fn resolve_tag(
    registry: &Registry,
    repo: &RegistryRepo,
    tag: &str,
) -> Result<(String, Option<Digest>), RegistryError> {
    // A tag the registry lists but strata cannot address fails the plan rather than being
    // skipped: its manifest might be one a pattern should keep.
    let reference = ManifestRef::Tag(tag.parse::<Tag>()?);
    let digest = registry.manifest_exists(repo, &reference).await?;
    Ok((tag.to_string(), digest))
}

/// A manifest as read from the registry.
struct Observed {
    digest: Digest,
    tags: Vec<String>,
    annotations: BTreeMap<String, String>,
    blobs: Vec<(Digest, u64)>,
}

async fn inspect_all(
    registry: &Registry,
    repo: &RegistryRepo,
    by_digest: BTreeMap<Digest, Vec<String>>,
) -> Result<Vec<Observed>, RegistryError> {
    let pulls: Vec<_> = by_digest
        .into_iter()
        .map(|(digest, tags)| inspect(registry, repo, digest, tags))
        .collect();
    let observed: Vec<Option<Observed>> = futures_util::stream::iter(pulls)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(observed.into_iter().flatten().collect())
}

/// Pulls a manifest by digest (verified) and reads its annotations and blobs. `None`: it was
/// deleted since the tags were resolved.
async fn inspect(
    registry: &Registry,
    repo: &RegistryRepo,
    digest: Digest,
    tags: Vec<String>,
) -> Result<Option<Observed>, RegistryError> {
    let Some(bytes) = pull(registry, repo, &digest).await? else {
        return Ok(None);
    };
    let (annotations, blobs) = match ManifestDocument::parse(&bytes) {
        Ok(ManifestDocument::Image(m)) => {
            let blobs = m.blobs().map(|d| (d.digest.clone(), d.size)).collect();
            (m.annotations, blobs)
        }
        // Never a strata image; its children's blobs count as kept for `bytes_freed`.
        Ok(ManifestDocument::Index(i)) => {
            let children: Vec<Digest> = i.manifests.iter().map(|d| d.digest.clone()).collect();
            (
                BTreeMap::new(),
                child_blobs(registry, repo, &children).await?,
            )
        }
        // Something strata cannot read is not something strata made: kept, blobs unknown.
        Err(_) => (BTreeMap::new(), Vec::new()),
    };
    Ok(Some(Observed {
        digest,
        tags,
        annotations,
        blobs,
    }))
}

async fn pull(
    registry: &Registry,
    repo: &RegistryRepo,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let reference = ManifestRef::Digest(digest.clone());
    match registry.pull_manifest(repo, &reference).await {
        Ok(pulled) => Ok(Some(pulled.bytes)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The blobs of an index's image manifests, one level down (indexes of indexes are rare and
/// only make `bytes_freed` an overestimate).
async fn child_blobs(
    registry: &Registry,
    repo: &RegistryRepo,
    children: &[Digest],
) -> Result<Vec<(Digest, u64)>, RegistryError> {
    let mut blobs = Vec::new();
    for child in children {
        let Some(bytes) = pull(registry, repo, child).await? else {
            continue;
        };
        blobs.push((child.clone(), bytes.len() as u64));
        if let Ok(ManifestDocument::Image(m)) = ManifestDocument::parse(&bytes) {
            blobs.extend(m.blobs().map(|d| (d.digest.clone(), d.size)));
        }
    }
    Ok(blobs)
}

// ---- The policy ----

struct Rules<'a> {
    policy: &'a GcPolicy,
    protected: &'a HashSet<Digest>,
    now: i64,
}

impl Rules<'_> {
    fn decide(
        &self,
        observed: Vec<Observed>,
        usage: &HashMap<Digest, PushUsage>,
    ) -> (Vec<KeptManifest>, Vec<DeletedManifest>) {
        let entries: Vec<(ManifestEntry, bool)> =
            observed.into_iter().map(|o| entry_of(o, usage)).collect();
        let ranks = newest_ranks(&entries);
        let mut kept = Vec::new();
        let mut deleted = Vec::new();
        for (entry, is_strata) in entries {
            let newer = ranks.get(&entry.digest).copied();
            let reasons = self.keep_reasons(&entry, is_strata, newer);
            if !reasons.is_empty() {
                kept.push(KeptManifest {
                    manifest: entry,
                    reasons,
                });
                continue;
            }
            let why = self.delete_reason(&entry, newer.unwrap_or(0));
            deleted.push(DeletedManifest {
                manifest: entry,
                why,
            });
        }
        kept.sort_by(|a, b| a.manifest.tags.cmp(&b.manifest.tags));
        oldest_first(&mut deleted);
        (kept, deleted)
    }

    /// `newer`: how many images of the same name were pushed after this one (`None`: it has
    /// no push record).
    fn keep_reasons(
        &self,
        entry: &ManifestEntry,
        is_strata: bool,
        newer: Option<usize>,
    ) -> Vec<KeepReason> {
        let mut reasons = Vec::new();
        if !is_strata {
            reasons.push(KeepReason::NotStrata);
        }
        for tag in &entry.tags {
            if let Some(p) = self.policy.keep_tags.iter().find(|p| p.matches(tag)) {
                reasons.push(KeepReason::TagPattern {
                    tag: tag.clone(),
                    pattern: p.as_str().to_string(),
                });
            }
        }
        let leased = std::iter::once(&entry.digest)
            .chain(entry.spec_digest.iter())
            .find(|d| self.protected.contains(*d));
        if let Some(d) = leased {
            reasons.push(KeepReason::Leased { digest: d.clone() });
        }
        let Some(last_active_at) = entry.last_active_at else {
            if is_strata {
                reasons.push(KeepReason::NoUsageRecord);
            }
            return reasons;
        };
        if last_active_at >= recent_since(self.now, self.policy.keep_days) {
            reasons.push(KeepReason::Recent {
                last_active_at,
                keep_days: self.policy.keep_days,
            });
        }
        if let Some(newer) = newer.filter(|n| (*n as u64) < u64::from(self.policy.keep_newest)) {
            reasons.push(KeepReason::Newest {
                name: entry.name.clone(),
                rank: newer + 1,
                keep_newest: self.policy.keep_newest,
            });
        }
        reasons
    }

    fn delete_reason(&self, entry: &ManifestEntry, newer: usize) -> DeleteReason {
        let last_active_at = entry.last_active_at.unwrap_or(0);
        DeleteReason::Expired {
            last_active_at,
            idle_days: self.now.saturating_sub(last_active_at) / DAY,
            keep_days: self.policy.keep_days,
            newer,
            keep_newest: self.policy.keep_newest,
        }
    }
}

/// The entry of an observed manifest, and whether strata built it.
fn entry_of(o: Observed, usage: &HashMap<Digest, PushUsage>) -> (ManifestEntry, bool) {
    let is_strata = o.annotations.contains_key(ANNOTATION_SPEC);
    let annotated = |key: &str| o.annotations.get(key).and_then(|v| v.parse().ok());
    let record = usage.get(&o.digest);
    let name = o
        .annotations
        .get(ANNOTATION_NAME)
        .filter(|n| !n.is_empty())
        .cloned()
        .or_else(|| {
            record
                .map(|u| u.record.name.clone())
                .filter(|n| !n.is_empty())
        });
    let entry = ManifestEntry {
        spec_digest: annotated(ANNOTATION_SPEC)
            .or_else(|| record.and_then(|u| u.record.spec.clone())),
        lock_digest: annotated(ANNOTATION_LOCK),
        digest: o.digest,
        tags: o.tags,
        name,
        pushed_at: record.map(|u| u.record.pushed_at),
        last_active_at: record.map(PushUsage::last_active_at),
        size: o.blobs.iter().map(|(_, s)| s).sum(),
        blobs: o.blobs,
    };
    (entry, is_strata)
}

/// For each strata image with a push record: how many images of its name were pushed after
/// it (ties broken by digest, so the ranking is the same on every run).
fn newest_ranks(entries: &[(ManifestEntry, bool)]) -> HashMap<Digest, usize> {
    let mut groups: HashMap<Option<&str>, Vec<(i64, &Digest)>> = HashMap::new();
    for (entry, is_strata) in entries {
        if let (true, Some(pushed_at)) = (*is_strata, entry.pushed_at) {
            groups
                .entry(entry.name.as_deref())
                .or_default()
                .push((pushed_at, &entry.digest));
        }
    }
    let mut ranks = HashMap::new();
    for mut members in groups.into_values() {
        members.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        for (rank, (_, digest)) in members.into_iter().enumerate() {
            ranks.insert(digest.clone(), rank);
        }
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TagPattern;
    use strata_index::PushRecord;

    fn observed(seed: &str, tags: &[&str], strata: bool, blobs: &[(&str, u64)]) -> Observed {
        let mut annotations = BTreeMap::new();
        if strata {
            annotations.insert(
                ANNOTATION_SPEC.to_string(),
                Digest::of(seed.as_bytes()).to_string(),
            );
        }
        Observed {
            digest: Digest::of(format!("manifest {seed}").as_bytes()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            annotations,
            blobs: blobs
                .iter()
                .map(|(b, s)| (Digest::of(b.as_bytes()), *s))
                .collect(),
        }
    }

    fn usage(o: &Observed, name: &str, pushed_at: i64) -> (Digest, PushUsage) {
        let u = PushUsage {
            record: PushRecord {
                manifest: o.digest.clone(),
                tag: None,
                pushed_at,
                last_used_at: 0,
                name: name.to_string(),
                spec: None,
            },
            local_used_at: None,
        };
        (o.digest.clone(), u)
    }

    fn deleted_tags(deleted: &[DeletedManifest]) -> Vec<String> {
        deleted
            .iter()
            .flat_map(|d| d.manifest.tags.clone())
            .collect()
    }

    #[test]
    fn policy_keeps_recent_newest_patterns_leases_and_foreign_images() {
        let now = 1_000 * DAY;
        let old = now - 30 * DAY;
        let all = vec![
            observed("recent", &["recent"], true, &[]),
            observed("a1", &["a1"], true, &[]),
            observed("a2", &["a2"], true, &[]),
            observed("a3", &["a3"], true, &[]),
            observed("rel", &["release-1", "x"], true, &[]),
            observed("leased", &["leased"], true, &[]),
            observed("foreign", &["base"], false, &[]),
            observed("unknown", &["unknown"], true, &[]),
        ];
        let usage: HashMap<_, _> = [
            usage(&all[0], "r", now - DAY),
            usage(&all[1], "a", old - 3),
            usage(&all[2], "a", old - 2),
            usage(&all[3], "a", old - 1),
            usage(&all[4], "rel", old - 10),
            usage(&all[5], "l", old - 10),
            usage(&all[6], "f", old - 10),
        ]
        .into_iter()
        .collect();
        let protected: HashSet<Digest> = [all[5].digest.clone()].into_iter().collect();
        let policy = GcPolicy {
            keep_days: 14,
            keep_newest: 2,
            keep_tags: vec![TagPattern::new("release-*").unwrap()],
            ..GcPolicy::default()
        };
        let rules = Rules {
            policy: &policy,
            protected: &protected,
            now,
        };
        // Each of "rel" and "l" is the newest of its own name: keep_newest 0 shows the other
        // reasons alone.
        let (_, deleted) = rules.decide(all, &usage);
        assert_eq!(deleted_tags(&deleted), vec!["a1"]);
        let strict = GcPolicy {
            keep_newest: 0,
            ..policy.clone()
        };
        let rules = Rules {
            policy: &strict,
            ..rules
        };
        let again = vec![
            observed("a3", &["a3"], true, &[]),
            observed("rel", &["release-1", "x"], true, &[]),
            observed("leased", &["leased"], true, &[]),
            observed("foreign", &["base"], false, &[]),
            observed("unknown", &["unknown"], true, &[]),
        ];
        let (kept, deleted) = rules.decide(again, &usage);
        assert_eq!(deleted_tags(&deleted), vec!["a3"]);
        let reasons: Vec<&KeepReason> = kept.iter().flat_map(|k| &k.reasons).collect();
        assert!(reasons.contains(&&KeepReason::NotStrata));
        assert!(reasons.contains(&&KeepReason::NoUsageRecord));
        assert!(reasons
            .iter()
            .any(|r| matches!(r, KeepReason::Leased { .. })));
        assert!(reasons
            .iter()
            .any(|r| matches!(r, KeepReason::TagPattern { tag, .. } if tag == "release-1")));
    }

    #[test]
    fn shared_blobs_are_not_freed() {
        let now = 1_000 * DAY;
        let gone = observed("gone", &["gone"], true, &[("shared", 100), ("own", 7)]);
        let gone2 = observed("gone2", &["gone2"], true, &[("own", 7), ("own2", 5)]);
        let stays = observed("stays", &["stays"], false, &[("shared", 100)]);
        let usage: HashMap<_, _> = [usage(&gone, "", 1), usage(&gone2, "", 2)]
            .into_iter()
            .collect();
        let policy = GcPolicy {
            keep_newest: 0,
            ..GcPolicy::default()
        };
        let protected = HashSet::new();
        let rules = Rules {
            policy: &policy,
            protected: &protected,
            now,
        };
        let (kept, deleted) = rules.decide(vec![gone, gone2, stays], &usage);
        assert_eq!(deleted.len(), 2);
        assert_eq!(bytes_freed(&kept, &deleted), 12);
    }
}

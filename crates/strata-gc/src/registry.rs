//! Registry garbage collection: a retention policy over the environment images of one
//! repository, enforced by deleting manifests by digest through the registry API.
//!
//! The plan lists the repository's tags, resolves each to a manifest digest, reads every
//! distinct manifest (its strata annotations and its blobs) and decides per digest, because a
//! CNCF registry deletes a manifest together with every tag that points at it: a digest with one
//! kept tag is kept whole.
//!
//! What is never deleted:
//! - a manifest strata did not build (no `dev.strata.lock-digest`, nor the older
//!   `dev.strata.spec-digest`), and everything an image
//!   index (OCI index, Docker manifest list) of the repository references, nested indexes
//!   included, while the index is kept;
//! - a manifest carrying any tag strata did not make (`foreign_tag`). strata's own tags are
//!   `env-<first 16 hex of the spec digest>` (a build's tag, checked against the spec of the
//!   push record, or an older image's own `dev.strata.spec-digest`: images of one lock are
//!   shared by specs and name none), `lock-<16 hex>` (the lock's tag a push sets, recomputed
//!   from the image's lock, base and layer format annotations: `strata_registry::lock_tag`),
//!   `job-<first 16 hex of the manifest digest>` (the Kubernetes
//!   launcher's push), and any tag a push record of this manifest names (`strata push --tag`),
//!   locally or in the registry's usage record. Everything else (`prod` added with `skopeo
//!   copy`, `latest`, a tag that merely looks like strata's but names another spec) is a
//!   person's, and deleting the digest would delete it;
//! - a manifest live leases reference, one matching `keep_tags`, one used within `keep_days`,
//!   the newest `keep_newest` of each environment name.
//!
//! Usage (pushed, last used) is read from two places and the latest wins: the `pushes` table of
//! this machine's `strata.db` (with the local `env_index` use of the same manifest), and the
//! usage records kept in the registry itself under `strata-usage-<manifest hex>` (see
//! `strata_registry::usage`), which every push and every Kubernetes launch, from any machine,
//! updates (a build hit with `--push` that finds its tag in place sends one HEAD and writes
//! nothing: local use is the local store's business). So a GC run from one machine keeps what another pushed or launched within
//! `keep_days`. Usage records are never environments: they are left out of the plan, and one
//! is deleted only after the image it describes was deleted.
//!
//! Just before each delete, the tags pointing at the digest are resolved again (the tag list
//! is read again and every tag that was the image's, is new, or is not strata's is HEADed),
//! the live leases and both usage records are read again: a new tag, a new lease or a use
//! since the plan keeps the image.
//!
//! Deleting manifests frees no storage by itself; the registry's own blob collection
//! (`registry garbage-collect`, with the registry read-only or stopped) removes the blobs no
//! manifest references any more. `bytes_freed` is what that run will free, counting only
//! blobs of this repository that no kept manifest shares and no layer index entry names
//! (entries are manifests too: the collector keeps their blobs; manifest bytes are not
//! counted).
//!
//! Images are grouped by environment name for `keep_newest`: the `dev.strata.name`
//! annotation, else the name recorded with the push, else no name — all unnamed images form
//! one group. A tag prefix is not used: strata's own tags are `env-<spec digest>`, so every
//! prefix would be `env` anyway, and a user's tag says nothing reliable about the environment.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::policy::GcPolicy;
use strata_index::PushUsage;
use strata_index::{Index, IndexError};
use strata_oci::Digest;
use strata_oci::LayerDescriptor;
use strata_oci::ManifestDocument;
use strata_registry::{
    is_layer_entry_tag, is_usage_tag, ManifestRef, Registry, RegistryError, RegistryRepo, Tag,
    UsageRecord,
};

/// The annotations strata writes on the images it builds (see `strata-build`'s image module).
/// An image carries no spec (specs of one lock share it): the spec digest is only on images
/// built before spec version 2, and read here to know those as strata's.
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
    /// Not built by strata (no `dev.strata.lock-digest` or `dev.strata.spec-digest`): strata
    /// never deletes it.
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
    /// A strata image with no push record here and no usage record in the registry: its age
    /// is unknown.
    NoUsageRecord,
    /// Used again between the plan and the delete.
    UsedSincePlan { last_active_at: i64 },
    /// It carries `tag`, which strata did not make: deleting the digest would delete it.
    ForeignTag { tag: String },
    /// A kept image index (or manifest list) references it.
    InIndex { index: Digest },
    /// `tag` was put on it between the plan and the delete.
    TaggedSincePlan { tag: String },
    /// A lease taken between the plan and the delete references it.
    LeasedSincePlan { digest: Digest },
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
            KeepReason::NoUsageRecord => write!(f, "no usage record, age unknown"),
            KeepReason::UsedSincePlan { .. } => write!(f, "used since the plan was made"),
            KeepReason::ForeignTag { tag } => write!(f, "tag {tag} was not made by strata"),
            KeepReason::InIndex { index } => write!(f, "referenced by image index {index}"),
            KeepReason::TaggedSincePlan { tag } => write!(f, "tagged {tag} since the plan"),
            KeepReason::LeasedSincePlan { digest } => {
                write!(f, "leased since the plan ({digest})")
            }
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
    /// The layer blobs the repository's layer index entries name: kept by the entries.
    #[serde(skip)]
    pub entry_blobs: BTreeSet<Digest>,
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
    // Layer index entries are not environments: left out of the plan, and left alone (each
    // holds its layer blob for the builds that reuse it, so those blobs are not freed).
    let (entry_tags, tags): (Vec<String>, Vec<String>) = registry
        .list_tags(repo)
        .await?
        .into_iter()
        .partition(|t| is_layer_entry_tag(t));
    let (usage_tags, tags): (Vec<String>, Vec<String>) =
        tags.into_iter().partition(|t| is_usage_tag(t));
    let entry_blobs = read_entry_blobs(registry, repo, &entry_tags).await?;
    let by_digest = resolve_tags(registry, repo, &tags).await?;
    let observed = inspect_all(registry, repo, by_digest).await?;
    let usage = Usage {
        local: index.registry_pushes(&target)?,
        shared: read_usage_records(registry, repo, &usage_tags).await?,
    };
    let rules = Rules {
        policy,
        protected,
        now,
    };
    let (kept, deleted) = rules.decide(observed, &usage);
    let bytes_freed = bytes_freed(&kept, &deleted, &entry_blobs);
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
        entry_blobs,
    })
}

/// Deletes what `plan` says, oldest first, a few at a time, and forgets the deleted pushes in
/// `index` and their usage records in the registry. Just before each delete the image's tags,
/// the live leases and its usage (here and in the registry) are read again: an image tagged,
/// leased or used since the plan is kept. The first failed delete stops the run: no new delete
/// starts, those in flight finish, and the error carries the report of what was deleted.
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
    let check = Recheck {
        registry,
        repo,
        index,
        target: &target,
        since: plan.recent_since(),
        planned_tags: plan
            .kept
            .iter()
            .map(|k| &k.manifest)
            .chain(plan.deleted.iter().map(|d| &d.manifest))
            .flat_map(|m| m.tags.iter().cloned())
            .collect(),
    };
    let mut kept = plan.kept.clone();
    let mut deleted = Vec::new();
    let mut failure = None;
    let mut pending = plan.deleted.iter();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while failure.is_none() && in_flight.len() < DELETE_CONCURRENCY {
            let Some(entry) = pending.next() else { break };
            let check = &check;
            in_flight.push(async move { (entry, check.delete_unless_changed(entry).await) });
        }
        let Some((entry, result)) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(Outcome::Kept(reasons)) => kept.push(KeptManifest {
                manifest: entry.manifest.clone(),
                reasons,
            }),
            Ok(Outcome::Deleted { record }) => {
                index.forget_registry_push(&target, &entry.manifest.digest)?;
                deleted.push(entry.clone());
                if let Err(e) = record {
                    failure.get_or_insert(e);
                }
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
        Some(RegistryGcError::Registry(source)) => Err(RegistryGcError::Delete {
            target: plan.target.clone(),
            planned: plan.deleted.len(),
            report: Box::new(report),
            source,
        }),
        Some(other) => Err(other),
    }
}

/// What became of one planned delete.
enum Outcome {
    /// Changed since the plan: kept, for these reasons.
    Kept(Vec<KeepReason>),
    /// Deleted; `record` is the deletion of its usage record.
    Deleted { record: Result<(), RegistryGcError> },
}

/// The re-reads done just before each delete.
struct Recheck<'a> {
    registry: &'a Registry,
    repo: &'a RegistryRepo,
    index: &'a Index,
    target: &'a str,
    since: i64,
    /// Every tag the plan saw, on any manifest.
    planned_tags: HashSet<String>,
}

impl Recheck<'_> {
    async fn delete_unless_changed(
        &self,
        entry: &DeletedManifest,
    ) -> Result<Outcome, RegistryGcError> {
        let manifest = &entry.manifest;
        let mut reasons = self.new_tags(manifest).await?;
        reasons.extend(self.used_since(manifest).await?);
        // Read last, right before the delete: a job admitted a moment ago holds a lease.
        let leases = self.index.live_lease_refs()?;
        let leased = std::iter::once(&manifest.digest)
            .chain(manifest.spec_digest.iter())
            .find(|d| leases.contains(*d));
        if let Some(d) = leased {
            reasons.push(KeepReason::LeasedSincePlan { digest: d.clone() });
        }
        if !reasons.is_empty() {
            return Ok(Outcome::Kept(reasons));
        }
        delete_one(self.registry, self.repo, &manifest.digest).await?;
        let record = self
            .registry
            .delete_usage(self.repo, &manifest.digest)
            .await
            .map_err(RegistryGcError::from);
        Ok(Outcome::Deleted { record })
    }

    /// Tags pointing at the manifest now that the plan did not see on it. Every tag that was
    /// the manifest's, is new, or is not named like strata's is resolved again (a person may
    /// have moved `prod` onto it); strata's own tags of other images never move.
    async fn new_tags(&self, manifest: &ManifestEntry) -> Result<Vec<KeepReason>, RegistryError> {
        let tags: Vec<String> = self
            .registry
            .list_tags(self.repo)
            .await?
            .into_iter()
            .filter(|t| !is_usage_tag(t) && !is_layer_entry_tag(t))
            .filter(|t| {
                manifest.tags.contains(t) || !self.planned_tags.contains(t) || !named_like_strata(t)
            })
            .collect();
        let now = resolve_tags(self.registry, self.repo, &tags).await?;
        let Some(current) = now.get(&manifest.digest) else {
            return Ok(Vec::new());
        };
        Ok(current
            .iter()
            .filter(|t| !manifest.tags.contains(t))
            .map(|t| KeepReason::TaggedSincePlan { tag: t.clone() })
            .collect())
    }

    /// A push or use since the plan, recorded here or in the registry.
    async fn used_since(
        &self,
        manifest: &ManifestEntry,
    ) -> Result<Option<KeepReason>, RegistryGcError> {
        let local = self
            .index
            .registry_push(self.target, &manifest.digest)?
            .map(|u| u.last_active_at());
        let shared = self
            .registry
            .read_usage(self.repo, &manifest.digest)
            .await?
            .map(|r| r.last_active_at());
        let active = local.max(shared).filter(|t| *t >= self.since);
        Ok(active.map(|last_active_at| KeepReason::UsedSincePlan { last_active_at }))
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
        bytes_freed: bytes_freed(&kept, &deleted, &plan.entry_blobs),
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
fn bytes_freed(
    kept: &[KeptManifest],
    deleted: &[DeletedManifest],
    entry_blobs: &BTreeSet<Digest>,
) -> u64 {
    let kept_blobs: HashSet<&Digest> = kept
        .iter()
        .flat_map(|k| k.manifest.blobs.iter().map(|(d, _)| d))
        .chain(entry_blobs)
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
    /// For an index: every manifest it references, nested indexes' included.
    children: Vec<Digest>,
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
    let mut observed = Observed {
        digest,
        tags,
        annotations: BTreeMap::new(),
        blobs: Vec::new(),
        children: Vec::new(),
    };
    match ManifestDocument::parse(&bytes) {
        Ok(ManifestDocument::Image(m)) => {
            observed.blobs = m.blobs().map(|d| (d.digest.clone(), d.size)).collect();
            observed.annotations = m.annotations;
        }
        // Never a strata image; everything it references is kept with it, and its children's
        // blobs count as kept for `bytes_freed`.
        Ok(ManifestDocument::Index(i)) => {
            let children: Vec<Digest> = i.manifests.iter().map(|d| d.digest.clone()).collect();
            let walked = walk_index(registry, repo, children).await?;
            observed.blobs = walked.blobs;
            observed.children = walked.manifests;
        }
        // Something strata cannot read is not something strata made: kept, blobs unknown.
        Err(_) => {}
    }
    Ok(Some(observed))
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

/// Nested indexes deeper than this are not followed (their manifests would still be kept by
/// being untagged or not strata's; only `bytes_freed` would overestimate).
const MAX_INDEX_DEPTH: usize = 8;

/// Everything below an index.
#[derive(Default)]
struct Walked {
    manifests: Vec<Digest>,
    blobs: Vec<(Digest, u64)>,
}

/// The manifests an index references, nested indexes followed, and their blobs.
async fn walk_index(
    registry: &Registry,
    repo: &RegistryRepo,
    children: Vec<Digest>,
) -> Result<Walked, RegistryError> {
    let mut walked = Walked::default();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut level = children;
    for _ in 0..MAX_INDEX_DEPTH {
        let mut next = Vec::new();
        for child in level {
            if !seen.insert(child.clone()) {
                continue;
            }
            walked.manifests.push(child.clone());
            let Some(bytes) = pull(registry, repo, &child).await? else {
                continue;
            };
            walked.blobs.push((child.clone(), bytes.len() as u64));
            match ManifestDocument::parse(&bytes) {
                Ok(ManifestDocument::Image(m)) => {
                    walked
                        .blobs
                        .extend(m.blobs().map(|d| (d.digest.clone(), d.size)));
                }
                Ok(ManifestDocument::Index(i)) => {
                    next.extend(i.manifests.iter().map(|d| d.digest.clone()));
                }
                Err(_) => {}
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Ok(walked)
}

/// The usage records in the registry (`strata-usage-*` tags), by the manifest they describe.
/// The layer blobs the entries under `tags` name (a malformed or vanished entry names none).
async fn read_entry_blobs(
    registry: &Registry,
    repo: &RegistryRepo,
    tags: &[String],
) -> Result<BTreeSet<Digest>, RegistryError> {
    let reads: Vec<_> = tags
        .iter()
        .map(|t| registry.read_layer_entry_tag(repo, t))
        .collect();
    let layers: Vec<Option<LayerDescriptor>> = futures_util::stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(layers.into_iter().flatten().map(|l| l.digest).collect())
}

async fn read_usage_records(
    registry: &Registry,
    repo: &RegistryRepo,
    tags: &[String],
) -> Result<HashMap<Digest, UsageRecord>, RegistryError> {
    let reads: Vec<_> = tags
        .iter()
        .map(|t| registry.read_usage_tag(repo, t))
        .collect();
    let records: Vec<Option<UsageRecord>> = futures_util::stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(records
        .into_iter()
        .flatten()
        .map(|r| (r.manifest.clone(), r))
        .collect())
}

// ---- The policy ----

/// What is known of the images' usage: this machine's push records and the registry's usage
/// records (written by every machine).
struct Usage {
    local: HashMap<Digest, PushUsage>,
    shared: HashMap<Digest, UsageRecord>,
}

impl Usage {
    /// Tags a push record of `digest` names: strata pushed the image under them.
    fn recorded_tags(&self, digest: &Digest) -> HashSet<&str> {
        let local = self.local.get(digest).and_then(|u| u.record.tag.as_deref());
        let shared = self
            .shared
            .get(digest)
            .into_iter()
            .flat_map(|r| r.tags.iter().map(String::as_str));
        local.into_iter().chain(shared).collect()
    }
}

/// Whether a tag has the shape of one strata makes (`env-` or `job-` and 16 hex digits).
fn named_like_strata(tag: &str) -> bool {
    let hex16 = |rest: &str| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit());
    tag.strip_prefix("env-").is_some_and(hex16) || tag.strip_prefix("job-").is_some_and(hex16)
}

/// Whether strata made `tag` on this image: its build tag (from the image's own spec digest),
/// its Kubernetes launch tag (from its manifest digest), or a tag a push record names.
fn made_by_strata(
    tag: &str,
    digest: &Digest,
    spec: Option<&Digest>,
    recorded: &HashSet<&str>,
) -> bool {
    if recorded.contains(tag) {
        return true;
    }
    if let Some(rest) = tag.strip_prefix("env-") {
        return spec.is_some_and(|s| named_like_strata(tag) && s.short(16) == rest);
    }
    tag.strip_prefix("job-")
        .is_some_and(|rest| named_like_strata(tag) && digest.short(16) == rest)
}

/// The `lock-` tag a build pushes next to an image's `env-` tag, recomputed from the image's
/// own annotations (lock, base, layer format): a tag that merely looks like one stays a
/// person's.
fn lock_tag_of(annotations: &BTreeMap<String, String>) -> Option<String> {
    let digest = |key: &str| annotations.get(key)?.parse::<Digest>().ok();
    let lock = digest(ANNOTATION_LOCK)?;
    let base = digest("org.opencontainers.image.base.digest")?;
    let format = annotations.get("dev.strata.layer-format")?;
    Some(
        strata_registry::lock_tag(&lock, &base, format)
            .as_str()
            .to_string(),
    )
}

struct Rules<'a> {
    policy: &'a GcPolicy,
    protected: &'a HashSet<Digest>,
    now: i64,
}

impl Rules<'_> {
    fn decide(
        &self,
        observed: Vec<Observed>,
        usage: &Usage,
    ) -> (Vec<KeptManifest>, Vec<DeletedManifest>) {
        let entries: Vec<Judged> = observed.into_iter().map(|o| entry_of(o, usage)).collect();
        let ranks = newest_ranks(&entries);
        let mut kept = Vec::new();
        let mut deleted = Vec::new();
        let mut children: Vec<(Digest, Vec<Digest>)> = Vec::new();
        for judged in entries {
            let newer = ranks.get(&judged.entry.digest).copied();
            let reasons = self.keep_reasons(&judged, newer);
            if !reasons.is_empty() {
                if !judged.children.is_empty() {
                    children.push((judged.entry.digest.clone(), judged.children));
                }
                kept.push(KeptManifest {
                    manifest: judged.entry,
                    reasons,
                });
                continue;
            }
            let why = self.delete_reason(&judged.entry, newer.unwrap_or(0));
            deleted.push(DeletedManifest {
                manifest: judged.entry,
                why,
            });
        }
        keep_index_children(&children, &mut kept, &mut deleted);
        kept.sort_by(|a, b| a.manifest.tags.cmp(&b.manifest.tags));
        oldest_first(&mut deleted);
        (kept, deleted)
    }

    /// `newer`: how many images of the same name were pushed after this one (`None`: it has
    /// no push record).
    fn keep_reasons(&self, judged: &Judged, newer: Option<usize>) -> Vec<KeepReason> {
        let (entry, is_strata) = (&judged.entry, judged.is_strata);
        let mut reasons = Vec::new();
        if !is_strata {
            reasons.push(KeepReason::NotStrata);
        }
        for tag in &judged.foreign_tags {
            reasons.push(KeepReason::ForeignTag { tag: tag.clone() });
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

/// Moves every planned delete a kept index references to the kept ones: deleting it would
/// break the index.
fn keep_index_children(
    indexes: &[(Digest, Vec<Digest>)],
    kept: &mut Vec<KeptManifest>,
    deleted: &mut Vec<DeletedManifest>,
) {
    let parent_of: HashMap<&Digest, &Digest> = indexes
        .iter()
        .flat_map(|(index, children)| children.iter().map(move |c| (c, index)))
        .collect();
    for d in std::mem::take(deleted) {
        match parent_of.get(&d.manifest.digest) {
            Some(index) => kept.push(KeptManifest {
                manifest: d.manifest,
                reasons: vec![KeepReason::InIndex {
                    index: (*index).clone(),
                }],
            }),
            None => deleted.push(d),
        }
    }
}

/// An observed manifest with what the policy needs beside its entry.
struct Judged {
    entry: ManifestEntry,
    /// Built by strata (it carries `dev.strata.lock-digest`, or the older spec digest).
    is_strata: bool,
    /// Its tags strata did not make.
    foreign_tags: Vec<String>,
    /// For an index: what it references.
    children: Vec<Digest>,
}

/// The entry of an observed manifest, its usage merged from both sources (the latest
/// activity, the first push).
fn entry_of(o: Observed, usage: &Usage) -> Judged {
    // The lock digest marks strata's images; the spec digest its images of before version 2.
    let is_strata =
        o.annotations.contains_key(ANNOTATION_LOCK) || o.annotations.contains_key(ANNOTATION_SPEC);
    let annotated = |key: &str| o.annotations.get(key).and_then(|v| v.parse().ok());
    let local = usage.local.get(&o.digest);
    let shared = usage.shared.get(&o.digest);
    let name = o
        .annotations
        .get(ANNOTATION_NAME)
        .cloned()
        .into_iter()
        .chain(local.map(|u| u.record.name.clone()))
        .chain(shared.map(|r| r.name.clone()))
        .find(|n| !n.is_empty());
    let spec_digest: Option<Digest> =
        annotated(ANNOTATION_SPEC).or_else(|| local.and_then(|u| u.record.spec.clone()));
    let pushed_at = [
        local.map(|u| u.record.pushed_at),
        shared.map(|r| r.pushed_at),
    ]
    .into_iter()
    .flatten()
    .min();
    let last_active_at = local
        .map(PushUsage::last_active_at)
        .max(shared.map(UsageRecord::last_active_at));
    let recorded = usage.recorded_tags(&o.digest);
    // Only said of strata images: any other is kept whole anyway.
    let foreign_tags = o
        .tags
        .iter()
        .filter(|_| is_strata)
        .filter(|t| !made_by_strata(t, &o.digest, spec_digest.as_ref(), &recorded))
        .filter(|t| lock_tag_of(&o.annotations).as_deref() != Some(t.as_str()))
        .cloned()
        .collect();
    let entry = ManifestEntry {
        spec_digest,
        lock_digest: annotated(ANNOTATION_LOCK),
        digest: o.digest,
        tags: o.tags,
        name,
        pushed_at,
        last_active_at,
        size: o.blobs.iter().map(|(_, s)| s).sum(),
        blobs: o.blobs,
    };
    Judged {
        entry,
        is_strata,
        foreign_tags,
        children: o.children,
    }
}

/// For each strata image with a push record: how many images of its name were pushed after
/// it (ties broken by digest, so the ranking is the same on every run).
fn newest_ranks(entries: &[Judged]) -> HashMap<Digest, usize> {
    let mut groups: HashMap<Option<&str>, Vec<(i64, &Digest)>> = HashMap::new();
    for judged in entries {
        if let (true, Some(pushed_at)) = (judged.is_strata, judged.entry.pushed_at) {
            groups
                .entry(judged.entry.name.as_deref())
                .or_default()
                .push((pushed_at, &judged.entry.digest));
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
            children: Vec::new(),
        }
    }

    fn usage(o: &Observed, name: &str, pushed_at: i64) -> (Digest, PushUsage) {
        let u = PushUsage {
            record: PushRecord {
                manifest: o.digest.clone(),
                // Recorded as pushed by strata under its first tag.
                tag: o.tags.first().cloned(),
                pushed_at,
                last_used_at: 0,
                name: name.to_string(),
                spec: None,
            },
            local_used_at: None,
        };
        (o.digest.clone(), u)
    }

    fn local_usage(records: impl IntoIterator<Item = (Digest, PushUsage)>) -> Usage {
        Usage {
            local: records.into_iter().collect(),
            shared: HashMap::new(),
        }
    }

    #[test]
    fn strata_tags_are_told_from_foreign_ones() {
        let digest = Digest::of(b"manifest");
        let spec = Digest::of(b"spec");
        let none = HashSet::new();
        let env = format!("env-{}", spec.short(16));
        let job = format!("job-{}", digest.short(16));
        assert!(made_by_strata(&env, &digest, Some(&spec), &none));
        assert!(made_by_strata(&job, &digest, Some(&spec), &none));
        // Shaped like strata's, but not this image's.
        let other = format!("env-{}", digest.short(16));
        assert!(named_like_strata(&other));
        assert!(!made_by_strata(&other, &digest, Some(&spec), &none));
        assert!(!made_by_strata(&env, &digest, None, &none));
        assert!(!made_by_strata("prod", &digest, Some(&spec), &none));
        let recorded: HashSet<&str> = ["custom"].into();
        assert!(made_by_strata("custom", &digest, None, &recorded));
        assert!(!named_like_strata("env-xyz"));
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
        let usage = local_usage([
            usage(&all[0], "r", now - DAY),
            usage(&all[1], "a", old - 3),
            usage(&all[2], "a", old - 2),
            usage(&all[3], "a", old - 1),
            usage(&all[4], "rel", old - 10),
            usage(&all[5], "l", old - 10),
            usage(&all[6], "f", old - 10),
        ]);
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
        let usage = local_usage([usage(&gone, "", 1), usage(&gone2, "", 2)]);
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
        assert_eq!(bytes_freed(&kept, &deleted, &BTreeSet::new()), 12);
        // A blob a layer index entry names stays with the entry.
        let entries = BTreeSet::from([Digest::of(b"own2")]);
        assert_eq!(bytes_freed(&kept, &deleted, &entries), 7);
    }
}

//! Local GC of the OCI layout store, containerd style: decide which environment images the
//! policy keeps, mark everything reachable from the kept tags and live leases, and sweep the
//! unreachable blobs older than the grace period.
//!
//! [`plan`] changes nothing but collecting dead leases; it is the dry run. [`sweep`] carries a
//! plan out in an order that is safe to kill at any point:
//!
//! 1. `index.json` is rewritten (atomic rename) without the pruned tags — only those still
//!    pointing at the planned manifest. A crash before: nothing happened. After: the pruned
//!    images are untagged; their index rows are stale and the next plan prunes them.
//! 2. Their `env_index` rows (and the `lock_index` rows of manifests nothing keeps) go in one
//!    transaction: all or nothing.
//! 3. Under the exclusive GC lock the live leases are re-read, the current tags re-marked
//!    (cheap: only manifests the plan did not walk are read), and each candidate blob is
//!    deleted unless it is now leased, reachable, or was modified since planning. Manifests
//!    of pruned images go first, so that no manifest outlives its layers. Every candidate is
//!    unreachable from every kept tag, so whatever subset was deleted when the process died,
//!    every kept image is still complete; the next run deletes the rest.
//!
//! Unpacked layers of the local launcher (`$STRATA_HOME/rootfs/<hex>/`, given to
//! [`plan_in`]) go with the blobs, under the same lock and by the same rule: a layer
//! directory no kept image and no live lease reaches, older than the grace, is removed —
//! unless a mount uses it (`/proc/self/mountinfo`) or a launch is unpacking it.
//!
//! Stale temporary files of the store's work directory older than the grace go last.
//!
//! A root that cannot be read (a tag whose manifest is missing or not a manifest, an index
//! row or lease with an invalid digest) stops the sweep before it deletes anything: what
//! such a root references is unknown, so nothing may be called garbage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use crate::mark::{Marker, RootKind, Unreadable};
use crate::policy::GcPolicy;
/// Why the local collector keeps an image (the registry collector has its own reasons).
pub use crate::retain::KeepReason;
use crate::retain::{self, Candidate};
use crate::rootfs::{self, Mounts, Removed, UnpackedLayer};
use crate::scan::{self, metadata_if_exists, mtime_secs};
use strata_index::LeaseId;
use strata_index::{ImageRow, PrunedRows};
use strata_index::{Index, IndexError};
use strata_oci::Digest;
use strata_oci::{IndexEntry, Store, StoreError, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("listing {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("deleting {path}: {source}")]
    Delete {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Roots whose manifests could not be read: nothing was deleted.
    #[error("{}; nothing was deleted (repair or remove the tag, then run gc again)", describe_unreadable(.0))]
    UnreadableRoots(Vec<Unreadable>),
    /// The index rows or leases (roots) could not be read: nothing was deleted.
    #[error("cannot read the GC roots in {what}; nothing was deleted: {source}")]
    UnreadableIndex {
        what: &'static str,
        #[source]
        source: IndexError,
    },
}

fn describe_unreadable(roots: &[Unreadable]) -> String {
    let each: Vec<String> = roots
        .iter()
        .map(|u| match &u.tag {
            Some(tag) => format!("tag {tag:?} (manifest {}): {}", u.digest, u.error),
            None => format!("{}: {}", u.digest, u.error),
        })
        .collect();
    format!("cannot read GC roots: {}", each.join("; "))
}

/// Reading roots from the index: a failure names which roots.
fn roots_err(what: &'static str) -> impl FnOnce(IndexError) -> GcError {
    move |source| GcError::UnreadableIndex { what, source }
}

/// An image the plan keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptImage {
    /// Empty for an `index.json` entry without a tag.
    pub tag: String,
    pub manifest: Digest,
    /// Environment name; `None` for tags strata did not make.
    pub name: Option<String>,
    /// Bytes of the image as its index row records them; for a foreign tag, of its manifest.
    pub size: u64,
    pub last_used_at: Option<i64>,
    pub reasons: Vec<KeepReason>,
}

/// Why an image goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PruneReason {
    /// No rule of the policy keeps it.
    Policy { unused_days: i64, rank: u32 },
    /// Its index row names a tag that `index.json` no longer gives that manifest.
    Untagged,
}

/// An image the plan deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedImage {
    pub tag: String,
    pub manifest: Digest,
    pub name: String,
    pub size: u64,
    pub last_used_at: i64,
    pub why: PruneReason,
    /// The `env_index` rows (spec digests) that go with it.
    pub specs: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobToDelete {
    pub digest: Digest,
    pub size: u64,
    /// Modification time seen when planning (unix seconds).
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempToDelete {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    /// Tags in `index.json` that strata made (have an index row).
    pub images: usize,
    pub kept: usize,
    pub pruned: usize,
    /// Tags strata did not make (kept).
    pub foreign_tags: usize,
    pub blobs: usize,
    pub blobs_marked: usize,
    /// Unreachable blobs spared because they are younger than the grace period.
    pub blobs_in_grace: usize,
    pub blobs_to_delete: usize,
    pub temp_files_to_delete: usize,
    /// Unpacked layer directories under `rootfs/`.
    pub rootfs_layers: usize,
    pub rootfs_layers_to_delete: usize,
}

/// What a GC would do: the dry run's answer and the sweep's input.
#[derive(Debug, Clone, Serialize)]
pub struct GcPlan {
    pub now: i64,
    /// Blobs and temp files modified at or after this time (now − grace) are never deleted.
    pub cutoff: i64,
    pub pruned: Vec<PrunedImage>,
    pub kept: Vec<KeptImage>,
    /// In deletion order: pruned manifests first.
    pub blobs: Vec<BlobToDelete>,
    pub temp_files: Vec<TempToDelete>,
    /// Unpacked layer directories nothing kept reaches, older than the cutoff.
    pub rootfs: Vec<UnpackedLayer>,
    /// `.gc-*` directories of an interrupted removal.
    pub rootfs_leftovers: Vec<PathBuf>,
    /// `$STRATA_HOME/rootfs`, when the plan covers unpacked layers.
    pub rootfs_dir: Option<PathBuf>,
    /// Blobs, temporary files and unpacked layers.
    pub bytes_freed: u64,
    pub unreadable: Vec<Unreadable>,
    pub counts: PlanCounts,
    #[serde(skip)]
    marker: Marker,
}

/// Why the sweep left something of the plan alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A lease taken since planning holds it.
    Leased,
    /// Used (its index row touched) since planning.
    UsedSincePlanning,
    /// A tag added since planning reaches it.
    Referenced,
    /// Written again since planning (younger than the cutoff now).
    Modified,
    /// An unpacked layer a mount uses (a running container's overlay).
    Mounted,
    /// An unpacked layer a launch holds the unpack lock of.
    Unpacking,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// A tag (images) or a digest (blobs).
    pub what: String,
    pub why: SkipReason,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub deleted_images: Vec<PrunedImage>,
    pub kept: Vec<KeptImage>,
    pub deleted_blobs: u64,
    pub deleted_blob_bytes: u64,
    pub deleted_blob_digests: Vec<Digest>,
    pub deleted_temp_files: u64,
    pub deleted_temp_bytes: u64,
    /// Unpacked layer directories removed from `rootfs/`, and their bytes.
    pub deleted_rootfs_layers: u64,
    pub deleted_rootfs_bytes: u64,
    pub deleted_rootfs_digests: Vec<Digest>,
    /// Blobs, temporary files and unpacked layers.
    pub bytes_freed: u64,
    pub skipped_images: Vec<Skipped>,
    pub skipped_blobs: Vec<Skipped>,
    /// Unpacked layers the plan would remove that the sweep left (by layer digest).
    pub skipped_rootfs: Vec<Skipped>,
    /// Candidates already gone (another GC, or a previous interrupted run).
    pub already_gone: u64,
    pub unreadable: Vec<Unreadable>,
    /// False when the observer stopped the sweep early.
    pub completed: bool,
}

/// A durable step of the sweep, shown to the observer of [`sweep_observed`] right after it
/// happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepStep {
    TagsRemoved(Vec<String>),
    RowsDeleted,
    BlobDeleted(Digest),
    RootfsDeleted(Digest),
    TempFileDeleted(PathBuf),
}

/// One `env_index` row, as GC needs it.
/// Decides what a GC at time `now` would delete. Changes nothing except removing dead
/// leases from the index. Unpacked layers are left alone (see [`plan_in`]).
pub fn plan(store: &Store, index: &Index, policy: &GcPolicy, now: i64) -> Result<GcPlan, GcError> {
    plan_in(store, index, policy, now, None)
}

/// [`plan`], also covering the unpacked layers under `rootfs` (`$STRATA_HOME/rootfs`).
pub fn plan_in(
    store: &Store,
    index: &Index,
    policy: &GcPolicy,
    now: i64,
    rootfs: Option<&std::path::Path>,
) -> Result<GcPlan, GcError> {
    let entries = store.entries()?;
    let rows = index
        .image_rows()
        .map_err(roots_err("the environment index"))?;
    let leased = index.live_lease_refs().map_err(roots_err("the leases"))?;
    let cutoff = now.saturating_sub(policy.grace.as_secs() as i64);

    let images = Images::group(&entries, &rows);
    let (mut kept, pruned) = images.decide(policy, now, &leased, cutoff);
    kept.extend(foreign_tags(&entries, &images));

    let pruned_tags: HashSet<(&str, &Digest)> = pruned
        .iter()
        .map(|p| (p.tag.as_str(), &p.manifest))
        .collect();
    let mut marker = Marker::new();
    for entry in &entries {
        let tag = entry.annotations.get(REF_NAME).map(String::as_str);
        let pruned_here = tag.is_some_and(|t| pruned_tags.contains(&(t, &entry.digest)));
        if !pruned_here {
            marker.mark(store, &entry.digest, RootKind::Document, tag);
        }
    }
    for digest in &leased {
        marker.mark(store, digest, RootKind::Any, None);
    }

    let blobs = scan::list_blobs(store).map_err(list_err(store.root().join("blobs")))?;
    let temps = scan::list_temp_files(store).map_err(list_err(store.work_dir().to_path_buf()))?;
    let mut counts = PlanCounts {
        images: images.tags.len(),
        kept: kept.len(),
        pruned: pruned.len(),
        foreign_tags: kept.len() - images.kept_count(&kept),
        blobs: blobs.len(),
        ..PlanCounts::default()
    };
    let mut candidates = Vec::new();
    for blob in blobs {
        if marker.marked.contains(&blob.digest) {
            counts.blobs_marked += 1;
        } else if blob.mtime >= cutoff {
            counts.blobs_in_grace += 1;
        } else {
            candidates.push(BlobToDelete {
                digest: blob.digest,
                size: blob.size,
                mtime: blob.mtime,
            });
        }
    }
    order_for_deletion(&mut candidates, &pruned);
    let temp_files: Vec<TempToDelete> = temps
        .into_iter()
        .filter(|t| t.mtime < cutoff)
        // A pull in flight holds its staged blobs (named by digest) with its lease.
        .filter(|t| !staged_and_held(t, &marker))
        .map(|t| TempToDelete {
            path: t.path,
            size: t.size,
            mtime: t.mtime,
        })
        .collect();
    let (unpacked, rootfs_leftovers) = match rootfs {
        Some(dir) => rootfs::list(dir).map_err(list_err(dir.to_path_buf()))?,
        None => (Vec::new(), Vec::new()),
    };
    counts.rootfs_layers = unpacked.len();
    let unpacked: Vec<UnpackedLayer> = unpacked
        .into_iter()
        .filter(|u| !marker.marked.contains(&u.layer) && u.mtime < cutoff)
        .collect();
    counts.blobs_to_delete = candidates.len();
    counts.temp_files_to_delete = temp_files.len();
    counts.rootfs_layers_to_delete = unpacked.len();
    let bytes_freed = candidates.iter().map(|b| b.size).sum::<u64>()
        + temp_files.iter().map(|t| t.size).sum::<u64>()
        + unpacked.iter().map(|u| u.size).sum::<u64>();
    Ok(GcPlan {
        now,
        cutoff,
        pruned,
        kept,
        blobs: candidates,
        temp_files,
        rootfs: unpacked,
        rootfs_leftovers,
        rootfs_dir: rootfs.map(std::path::Path::to_path_buf),
        bytes_freed,
        unreadable: marker.unreadable.clone(),
        counts,
        marker,
    })
}

/// What a sweep would keep right now, leaving out what lease `own` holds: everything the
/// tags, the environment index and the other live leases reach. Read only (dead leases are
/// skipped, not deleted), so it works on a full disk. Hold the exclusive GC lock while the
/// answer is used, so nothing new is reached meanwhile.
pub fn reachable_except(
    store: &Store,
    index: &Index,
    own: &LeaseId,
) -> Result<HashSet<Digest>, GcError> {
    let mut marker = Marker::new();
    for entry in store.entries()? {
        let tag = entry.annotations.get(REF_NAME).map(String::as_str);
        marker.mark(store, &entry.digest, RootKind::Document, tag);
    }
    for row in index.image_rows()? {
        marker.mark(store, &row.manifest, RootKind::Document, None);
    }
    for digest in index.live_digests_except(own)? {
        marker.mark(store, &digest, RootKind::Any, None);
    }
    Ok(marker.marked)
}

/// Carries out a plan (see the module docs for the order and why it is crash-safe).
pub fn sweep(store: &Store, index: &Index, plan: &GcPlan) -> Result<GcReport, GcError> {
    sweep_observed(store, index, plan, &mut |_| true)
}

/// [`sweep`], calling `observer` after each durable step; when it returns false the sweep
/// stops right there, as if the process had been killed (tests use this to check every
/// intermediate state).
pub fn sweep_observed(
    store: &Store,
    index: &Index,
    plan: &GcPlan,
    observer: &mut dyn FnMut(&SweepStep) -> bool,
) -> Result<GcReport, GcError> {
    if !plan.unreadable.is_empty() {
        return Err(GcError::UnreadableRoots(plan.unreadable.clone()));
    }
    let mut report = GcReport {
        kept: plan.kept.clone(),
        ..GcReport::default()
    };
    let pruned = still_prunable(index, plan, &mut report)?;

    // 1. Untag.
    let tags: Vec<(String, Digest)> = pruned
        .iter()
        .map(|p| (p.tag.clone(), p.manifest.clone()))
        .collect();
    let removed = store.remove_tags(&tags)?;
    if !observer(&SweepStep::TagsRemoved(removed)) {
        return Ok(report);
    }

    // 2. Forget their index rows.
    delete_rows(index, &pruned, &plan.marker)?;
    report.deleted_images = pruned;
    if !observer(&SweepStep::RowsDeleted) {
        return Ok(report);
    }

    // 3. Delete blobs, holding off new leases.
    let _gc = store.gc_lock_exclusive()?;
    let (protected, marker) = recheck(store, index, plan)?;
    if !marker.unreadable.is_empty() {
        return Err(GcError::UnreadableRoots(marker.unreadable));
    }
    for blob in &plan.blobs {
        if let Some(why) = protected.get(&blob.digest) {
            report.skipped_blobs.push(Skipped {
                what: blob.digest.to_string(),
                why: why.clone(),
            });
            continue;
        }
        let path = store.blob_path(&blob.digest);
        match delete_if_old(&path, plan.cutoff)? {
            Deleted::Yes => {}
            Deleted::Gone => {
                report.already_gone += 1;
                continue;
            }
            Deleted::Young => {
                report.skipped_blobs.push(Skipped {
                    what: blob.digest.to_string(),
                    why: SkipReason::Modified,
                });
                continue;
            }
        }
        report.deleted_blobs += 1;
        report.deleted_blob_bytes += blob.size;
        report.deleted_blob_digests.push(blob.digest.clone());
        if !observer(&SweepStep::BlobDeleted(blob.digest.clone())) {
            return Ok(finish(report, false));
        }
    }

    if !sweep_rootfs(plan, &marker, &protected, &mut report, observer)? {
        return Ok(finish(report, false));
    }

    for temp in &plan.temp_files {
        if delete_if_old(&temp.path, plan.cutoff)? != Deleted::Yes {
            continue;
        }
        report.deleted_temp_files += 1;
        report.deleted_temp_bytes += temp.size;
        if !observer(&SweepStep::TempFileDeleted(temp.path.clone())) {
            return Ok(finish(report, false));
        }
    }
    Ok(finish(report, true))
}

fn finish(mut report: GcReport, completed: bool) -> GcReport {
    report.bytes_freed =
        report.deleted_blob_bytes + report.deleted_temp_bytes + report.deleted_rootfs_bytes;
    report.completed = completed;
    report
}

fn list_err(path: PathBuf) -> impl FnOnce(io::Error) -> GcError {
    move |source| GcError::List { path, source }
}

/// The tagged images strata made, by tag, with their index rows.
struct Images<'a> {
    tags: BTreeMap<&'a str, ImageRows<'a>>,
    /// Rows whose tag `index.json` no longer gives their manifest.
    stale: Vec<&'a ImageRow>,
}

struct ImageRows<'a> {
    manifest: &'a Digest,
    rows: Vec<&'a ImageRow>,
}

impl<'a> Images<'a> {
    fn group(entries: &'a [IndexEntry], rows: &'a [ImageRow]) -> Images<'a> {
        let by_tag: HashMap<&str, &Digest> = entries
            .iter()
            .filter_map(|e| Some((e.annotations.get(REF_NAME)?.as_str(), &e.digest)))
            .collect();
        let mut images = Images {
            tags: BTreeMap::new(),
            stale: Vec::new(),
        };
        for row in rows {
            match by_tag.get_key_value(row.tag.as_str()) {
                Some((&tag, &manifest)) if *manifest == row.manifest => {
                    images
                        .tags
                        .entry(tag)
                        .or_insert_with(|| ImageRows {
                            manifest,
                            rows: Vec::new(),
                        })
                        .rows
                        .push(row);
                }
                _ => images.stale.push(row),
            }
        }
        images
    }

    fn kept_count(&self, kept: &[KeptImage]) -> usize {
        kept.iter()
            .filter(|k| self.tags.contains_key(k.tag.as_str()))
            .count()
    }

    /// Applies the policy to the tagged images; stale rows older than the grace go too.
    fn decide(
        &self,
        policy: &GcPolicy,
        now: i64,
        leased: &HashSet<Digest>,
        cutoff: i64,
    ) -> (Vec<KeptImage>, Vec<PrunedImage>) {
        let candidates: Vec<Candidate> = self
            .tags
            .iter()
            .map(|(tag, image)| {
                let newest = image.newest_row();
                Candidate {
                    tag: tag.to_string(),
                    manifest: image.manifest.clone(),
                    name: newest.name.clone(),
                    created_at: image.rows.iter().map(|r| r.created_at).max().unwrap_or(0),
                    last_used_at: newest.last_used_at,
                }
            })
            .collect();
        let decisions = retain::decide(policy, now, &candidates, leased);
        let mut kept = Vec::new();
        let mut pruned = Vec::new();
        for ((candidate, decision), image) in candidates
            .into_iter()
            .zip(decisions)
            .zip(self.tags.values())
        {
            let size = image.rows.iter().map(|r| r.size).max().unwrap_or(0);
            if decision.keep() {
                kept.push(KeptImage {
                    tag: candidate.tag,
                    manifest: candidate.manifest,
                    name: Some(candidate.name),
                    size,
                    last_used_at: Some(candidate.last_used_at),
                    reasons: decision.reasons,
                });
                continue;
            }
            pruned.push(PrunedImage {
                tag: candidate.tag,
                manifest: candidate.manifest,
                name: candidate.name,
                size,
                last_used_at: candidate.last_used_at,
                why: PruneReason::Policy {
                    unused_days: decision.unused_days,
                    rank: decision.rank,
                },
                specs: image.rows.iter().map(|r| r.spec.clone()).collect(),
            });
        }
        for row in self.stale.iter().filter(|r| r.last_used_at < cutoff) {
            pruned.push(PrunedImage {
                tag: row.tag.clone(),
                manifest: row.manifest.clone(),
                name: row.name.clone(),
                size: row.size,
                last_used_at: row.last_used_at,
                why: PruneReason::Untagged,
                specs: vec![row.spec.clone()],
            });
        }
        (kept, pruned)
    }
}

impl ImageRows<'_> {
    fn newest_row(&self) -> &ImageRow {
        // `rows` is never empty: an entry is created with its first row.
        self.rows
            .iter()
            .max_by_key(|r| (r.last_used_at, r.created_at))
            .copied()
            .unwrap_or(self.rows[0])
    }
}

/// `index.json` entries that are not images strata made: kept, always.
fn foreign_tags(entries: &[IndexEntry], images: &Images) -> Vec<KeptImage> {
    entries
        .iter()
        .filter_map(|e| {
            let tag = e.annotations.get(REF_NAME).cloned().unwrap_or_default();
            if images.tags.contains_key(tag.as_str()) {
                return None;
            }
            Some(KeptImage {
                tag,
                manifest: e.digest.clone(),
                name: None,
                size: e.size,
                last_used_at: None,
                reasons: vec![KeepReason::NotAnEnvironment],
            })
        })
        .collect()
}

/// Pruned manifests first (a crash then never leaves a manifest without its layers), then
/// the rest by digest.
fn order_for_deletion(blobs: &mut [BlobToDelete], pruned: &[PrunedImage]) {
    let manifests: HashSet<&Digest> = pruned.iter().map(|p| &p.manifest).collect();
    blobs.sort_by(|a, b| {
        let (ma, mb) = (manifests.contains(&a.digest), manifests.contains(&b.digest));
        mb.cmp(&ma).then(a.digest.cmp(&b.digest))
    });
}

/// The pruned images that nothing claimed since planning: not leased, not used again.
fn still_prunable(
    index: &Index,
    plan: &GcPlan,
    report: &mut GcReport,
) -> Result<Vec<PrunedImage>, GcError> {
    if plan.pruned.is_empty() {
        return Ok(Vec::new());
    }
    let leased = index.live_lease_refs().map_err(roots_err("the leases"))?;
    let last_used: HashMap<Digest, i64> = index
        .image_rows()
        .map_err(roots_err("the environment index"))?
        .into_iter()
        .map(|r| (r.spec, r.last_used_at))
        .collect();
    let mut keep = Vec::new();
    for image in &plan.pruned {
        let used = image
            .specs
            .iter()
            .any(|s| last_used.get(s).is_some_and(|&t| t > image.last_used_at));
        let why = if leased.contains(&image.manifest) {
            SkipReason::Leased
        } else if used {
            SkipReason::UsedSincePlanning
        } else {
            keep.push(image.clone());
            continue;
        };
        report.skipped_images.push(Skipped {
            what: image.tag.clone(),
            why,
        });
    }
    Ok(keep)
}

/// Step 2: the rows of the pruned images (only as planned: a row rebuilt or used since is
/// left), and the lock rows of their manifests when nothing keeps those manifests.
fn delete_rows(index: &Index, pruned: &[PrunedImage], marker: &Marker) -> Result<(), GcError> {
    if pruned.is_empty() {
        return Ok(());
    }
    let rows: Vec<PrunedRows<'_>> = pruned
        .iter()
        .map(|p| PrunedRows {
            specs: &p.specs,
            manifest: &p.manifest,
            last_used_at: p.last_used_at,
        })
        .collect();
    let unkept: HashSet<&Digest> = pruned
        .iter()
        .filter(|p| !marker.marked.contains(&p.manifest))
        .map(|p| &p.manifest)
        .collect();
    index.delete_pruned(&rows, &unkept)?;
    Ok(())
}

/// Under the exclusive GC lock: the candidates (blobs and unpacked layers) that became live
/// since planning, leased or reachable from a tag added since (or from a pruned tag the
/// sweep left); and everything now marked.
fn recheck(
    store: &Store,
    index: &Index,
    plan: &GcPlan,
) -> Result<(HashMap<Digest, SkipReason>, Marker), GcError> {
    let candidates: HashSet<&Digest> = plan
        .blobs
        .iter()
        .map(|b| &b.digest)
        .chain(plan.rootfs.iter().map(|u| &u.layer))
        .collect();
    let mut marker = plan.marker.clone();
    let mut protected = HashMap::new();
    for digest in index.live_lease_refs().map_err(roots_err("the leases"))? {
        for added in marker.mark(store, &digest, RootKind::Any, None) {
            if candidates.contains(&added) {
                protected.insert(added, SkipReason::Leased);
            }
        }
    }
    for entry in store.entries()? {
        let tag = entry.annotations.get(REF_NAME).map(String::as_str);
        for added in marker.mark(store, &entry.digest, RootKind::Document, tag) {
            if candidates.contains(&added) {
                protected.entry(added).or_insert(SkipReason::Referenced);
            }
        }
    }
    Ok((protected, marker))
}

/// Step 3, unpacked layers: each planned directory goes unless it became live since
/// planning, a mount uses it, or a launch is unpacking it. False if the observer stopped
/// the sweep.
fn sweep_rootfs(
    plan: &GcPlan,
    marker: &Marker,
    protected: &HashMap<Digest, SkipReason>,
    report: &mut GcReport,
    observer: &mut dyn FnMut(&SweepStep) -> bool,
) -> Result<bool, GcError> {
    let Some(dir) = &plan.rootfs_dir else {
        return Ok(true);
    };
    for leftover in &plan.rootfs_leftovers {
        rootfs::remove_leftover(leftover).map_err(|source| GcError::Delete {
            path: leftover.clone(),
            source,
        })?;
    }
    if plan.rootfs.is_empty() {
        return Ok(true);
    }
    // Read under the lock, after the leases: a container started since planning holds a
    // lease, and this is the second safety for one that does not.
    let mounts = Mounts::read().map_err(list_err(PathBuf::from("/proc/self/mountinfo")))?;
    for layer in &plan.rootfs {
        let skip = |why| Skipped {
            what: layer.layer.to_string(),
            why,
        };
        if marker.marked.contains(&layer.layer) {
            let why = protected
                .get(&layer.layer)
                .cloned()
                .unwrap_or(SkipReason::Referenced);
            report.skipped_rootfs.push(skip(why));
            continue;
        }
        if mounts.uses(&layer.path) {
            report.skipped_rootfs.push(skip(SkipReason::Mounted));
            continue;
        }
        let removed = rootfs::remove(dir, &layer.layer).map_err(|source| GcError::Delete {
            path: layer.path.clone(),
            source,
        })?;
        match removed {
            Removed::Yes => {}
            Removed::Gone => {
                report.already_gone += 1;
                continue;
            }
            Removed::Busy => {
                report.skipped_rootfs.push(skip(SkipReason::Unpacking));
                continue;
            }
        }
        report.deleted_rootfs_layers += 1;
        report.deleted_rootfs_bytes += layer.size;
        report.deleted_rootfs_digests.push(layer.layer.clone());
        if !observer(&SweepStep::RootfsDeleted(layer.layer.clone())) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Debug, PartialEq, Eq)]
enum Deleted {
    Yes,
    Gone,
    Young,
}

/// Whether `temp` is a blob of the pull staging area that a kept image or a lease reaches.
fn staged_and_held(temp: &scan::TempFile, marker: &Marker) -> bool {
    temp.path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| Digest::from_hex(n).ok())
        .is_some_and(|d| marker.marked.contains(&d))
}

/// Deletes a file (or a scratch directory) unless it was modified at or after `cutoff`.
fn delete_if_old(path: &std::path::Path, cutoff: i64) -> Result<Deleted, GcError> {
    let delete_err = |source| GcError::Delete {
        path: path.to_path_buf(),
        source,
    };
    let Some(meta) = metadata_if_exists(path).map_err(delete_err)? else {
        return Ok(Deleted::Gone);
    };
    // A scratch directory goes whole (remove_dir_all does not follow symlinks) when nothing
    // in it is young; anything else that is a directory now is not what was planned, and
    // remove_file refuses it.
    let scratch = meta.is_dir()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(strata_oci::SCRATCH_DIR_PREFIX));
    let mtime = match scratch {
        true => scan::scratch_tree(path).newest,
        false => mtime_secs(&meta),
    };
    if mtime >= cutoff {
        return Ok(Deleted::Young);
    }
    let removed = match scratch {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    };
    match removed {
        Ok(()) => Ok(Deleted::Yes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Deleted::Gone),
        Err(e) => Err(delete_err(e)),
    }
}

//! Running garbage collection with the policy in force: the `[gc]` section of the
//! configuration files, overridden by flags. The collectors are [`crate::local`] and
//! [`crate::registry`]; this module puts the policy, the store, the index and the registry
//! client together.

use std::path::Path;

use serde::Serialize;
use strata_config::{Config, ConfigError};
use strata_index::{now, Index, IndexError};
use strata_oci::Store;
use strata_registry::{Registry, RegistryError, RegistryRepo};

use crate::local::{self, GcError, GcPlan, GcReport};
use crate::registry::{apply_registry, plan_registry, RegistryGcError, RegistryGcReport};
use crate::{GcPolicy, GcSection, PolicyError};

/// Why a collection could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Local(#[from] GcError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Boxed: the error carries the partial report and would make every `Result` large.
    #[error(transparent)]
    RegistryGc(Box<RegistryGcError>),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<RegistryGcError> for RunError {
    fn from(e: RegistryGcError) -> Self {
        RunError::RegistryGc(Box::new(e))
    }
}

/// Policy values given on the command line; they win over the files.
#[derive(Debug, Clone, Default)]
pub struct PolicyOverrides {
    pub keep_days: Option<u32>,
    pub keep_newest: Option<u32>,
    pub keep_tags: Vec<String>,
    pub grace: Option<String>,
}

/// The policy: defaults < `$STRATA_HOME/config.toml` < `PROJECT/strata.toml` < flags.
pub fn policy(
    home: &Path,
    project: &Path,
    overrides: &PolicyOverrides,
) -> Result<GcPolicy, RunError> {
    let config = Config::load(project, home)?;
    let mut section: GcSection = config.section("gc")?;
    if overrides.keep_days.is_some() {
        section.keep_days = overrides.keep_days;
    }
    if overrides.keep_newest.is_some() {
        section.keep_newest = overrides.keep_newest;
    }
    if !overrides.keep_tags.is_empty() {
        let mut tags = section.keep_tags.unwrap_or_default();
        tags.extend(overrides.keep_tags.iter().cloned());
        section.keep_tags = Some(tags);
    }
    if overrides.grace.is_some() {
        section.grace = overrides.grace.clone();
    }
    Ok(GcPolicy::from_section(&section)?)
}

/// The outcome of a local GC: the plan (dry run) or what the sweep did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LocalOutcome {
    Planned(GcPlan),
    Swept(GcReport),
}

/// GC of the local store, and of the unpacked layers under `rootfs` (`$STRATA_HOME/rootfs`)
/// when given.
pub fn collect_local(
    store: &Store,
    index: &Index,
    rootfs: Option<&Path>,
    policy: &GcPolicy,
    dry_run: bool,
) -> Result<LocalOutcome, RunError> {
    let plan = local::plan_in(store, index, policy, now(), rootfs)?;
    if dry_run {
        return Ok(LocalOutcome::Planned(plan));
    }
    Ok(LocalOutcome::Swept(local::sweep(store, index, &plan)?))
}

/// GC of `REGISTRY/REPO`: deletes, by manifest digest, the environment images the policy
/// does not keep. Images referenced by live leases (builds in flight, queued or running
/// jobs) are always kept.
pub fn collect_registry(
    index: &Index,
    target: &str,
    insecure: bool,
    policy: &GcPolicy,
    dry_run: bool,
) -> Result<RegistryGcReport, RunError> {
    let repo: RegistryRepo = target.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&repo.registry, insecure)?;
    let protected = index.live_lease_refs()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async {
        let plan = plan_registry(&registry, &repo, index, policy, &protected, now()).await?;
        if dry_run {
            return Ok(plan.into_report());
        }
        Ok(apply_registry(&registry, &repo, index, &plan).await?)
    })
}

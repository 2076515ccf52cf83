//! Running garbage collection with the policy in force: the `[gc]` section of the
//! configuration files, overridden by flags. The collectors themselves live in
//! `strata_gc`; this module only puts the policy, the store, the index and the
//! registry client together.

use std::path::Path;

use serde::Serialize;
use strata_config::Config;
use strata_gc::local::{self, GcPlan, GcReport};
use strata_gc::registry::{apply_registry, plan_registry, RegistryGcReport};
use strata_gc::{GcPolicy, GcSection};
use strata_index::index::now;
use strata_registry::{Registry, RegistryError, RegistryRepo};

use crate::error::BuildError;
use crate::home::Home;

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
    home: &Home,
    project: &Path,
    overrides: &PolicyOverrides,
) -> Result<GcPolicy, BuildError> {
    let config = Config::load(project, &home.root)?;
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

pub fn collect_local(
    home: &Home,
    policy: &GcPolicy,
    dry_run: bool,
) -> Result<LocalOutcome, BuildError> {
    let plan = local::plan(&home.store, &home.index, policy, now())?;
    if dry_run {
        return Ok(LocalOutcome::Planned(plan));
    }
    Ok(LocalOutcome::Swept(local::sweep(
        &home.store,
        &home.index,
        &plan,
    )?))
}

/// GC of `REGISTRY/REPO`: deletes, by manifest digest, the environment images the policy
/// does not keep. Images referenced by live leases (builds in flight, queued or running
/// jobs) are always kept.
pub fn collect_registry(
    home: &Home,
    target: &str,
    insecure: bool,
    policy: &GcPolicy,
    dry_run: bool,
) -> Result<RegistryGcReport, BuildError> {
    let repo: RegistryRepo = target.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&repo.registry, insecure)?;
    let protected = home.index.live_lease_refs()?;
    crate::publish::runtime()?.block_on(async {
        let plan = plan_registry(&registry, &repo, &home.index, policy, &protected, now()).await?;
        if dry_run {
            return Ok(plan.into_report());
        }
        Ok(apply_registry(&registry, &repo, &home.index, &plan).await?)
    })
}

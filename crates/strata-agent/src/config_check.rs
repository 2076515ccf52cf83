//! `strata config check`: one configuration file read the way every part of strata reads it,
//! so that a mistake shows up before a build or an agent trips on it.

use std::path::Path;

use strata_build::{BuildDefaults, CacheDefaults};
use strata_config::{Config, ConfigError};
use strata_gc::{GcPolicy, GcSection, PolicyError};
use strata_kube::{KubeSettings, KubeSettingsError};
use strata_queue::{SchedulerConfig, SchedulerConfigError};
use strata_runc::LauncherSettings;

/// The top-level tables strata reads; any other is refused.
pub const SECTIONS: &[&str] = &[
    "build",
    "cache",
    "gc",
    "launcher",
    "outputs",
    "tiers",
    "pools",
    "queues",
    "scheduler",
    "kubernetes",
    // Read by strata-server (`strata config check` checks it there).
    "server",
];

/// Reads `file` as strata.toml (or `$STRATA_HOME/config.toml`) and checks every section;
/// returns the sections it sets. Every error names the file, and the line where it can.
pub fn check_config(file: &Path) -> Result<Vec<String>, ConfigError> {
    let config = Config::from_file(file)?;
    config.check_sections(SECTIONS)?;
    BuildDefaults::from_config(&config)?;
    CacheDefaults::from_config(&config)?;
    let gc: GcSection = config.section("gc")?;
    GcPolicy::from_section(&gc).map_err(|e| match e {
        PolicyError::Grace(_) => config.invalid("gc.grace", e.to_string()),
        PolicyError::Pattern(_) => config.invalid("gc.keep_tags", e.to_string()),
    })?;
    LauncherSettings::from_config(&config)?;
    crate::output_limits(&config)?;
    SchedulerConfig::from_config(&config).map_err(|e| match e {
        SchedulerConfigError::File(e) => e,
        SchedulerConfigError::Invalid { key, detail } => config.invalid(&key, detail),
    })?;
    KubeSettings::from_config(&config).map_err(|e| match e {
        KubeSettingsError::File(e) => e,
        KubeSettingsError::Invalid { key, detail } => config.invalid(&key, detail),
    })?;
    Ok(config.sections().map(str::to_string).collect())
}

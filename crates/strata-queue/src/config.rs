//! The scheduler's configuration from `strata.toml`: `[tiers.NAME]` (see [`crate::tier`]),
//! `[pools.NAME]` (see [`crate::pool`]), `[queues.NAME]` and `[scheduler]`.
//!
//! ```toml
//! [queues.team-a]
//! priority = 10               # default priority of its jobs (default 0)
//! tiers = ["cpu", "gpu1"]     # tiers it may use (default: all)
//! network = true              # jobs get a network (default false)
//! max_running = 4             # at most 4 of its jobs run at once (default: no limit)
//! timeout = "2h"              # default time limit of its jobs (default: none)
//! retries = 2                 # default retries (default 0) ...
//! retry_exit_codes = [75]     # ... for these exit codes ...
//! retry_on_oom = true         # ... and after an OOM kill (default false)
//! retry_backoff = "30s"       # first retry delay, doubled per attempt (default 30s, at most 1h)
//! team = "vision"            # the team whose tokens reach it through `strata server` (default: none)
//!
//! [scheduler]
//! reserve_after = "60s"        # a tier's first job waiting this long gets a reservation
//! fairshare_half_life = "24h"  # usage counts half after this long
//! ```
//!
//! Without any `[queues]` section there is one queue, `default`, allowing every tier.
//! Unknown keys are rejected and every error names its key (`queues.team-a.tiers`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use strata_config::{parse_duration, Config, ConfigError};

use crate::pool::{resolve_pools, this_machine, Pool, PoolSection};
use crate::tier::{resolve_tiers, Resources, TierSection};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerConfigError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("invalid `{key}` in the configuration: {detail}")]
    Invalid { key: String, detail: String },
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> SchedulerConfigError {
    SchedulerConfigError::Invalid {
        key: key.into(),
        detail: detail.into(),
    }
}

/// When and how often a failed job is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retried).
    pub retries: u32,
    /// Exit codes that mean "try again".
    pub exit_codes: Vec<i32>,
    /// Retry a job killed for running out of memory.
    pub on_oom: bool,
    /// Delay before the first retry; doubled per attempt, capped at [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            exit_codes: Vec::new(),
            on_oom: false,
            backoff: Duration::from_secs(30),
        }
    }
}

/// A queue: who submits where, and the defaults of its jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    pub priority: i64,
    /// Allowed tiers, sorted.
    pub tiers: Vec<String>,
    pub network: bool,
    pub max_running: Option<u32>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// The team it belongs to: through `strata server`, only that team's tokens see it; a
    /// queue without a team is reachable on this machine only.
    pub team: Option<String>,
}

/// Scheduling parameters (`[scheduler]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulingParams {
    /// How long the first job of a tier waits without fitting before it reserves a node.
    pub reserve_after: Duration,
    /// Half-life of recorded usage in fair share.
    pub fairshare_half_life: Duration,
}

impl Default for SchedulingParams {
    fn default() -> Self {
        SchedulingParams {
            reserve_after: Duration::from_secs(60),
            fairshare_half_life: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything the scheduler needs to know from the configuration files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub tiers: BTreeMap<String, Resources>,
    pub pools: Vec<Pool>,
    pub queues: BTreeMap<String, QueueConfig>,
    pub params: SchedulingParams,
}

impl Default for SchedulerConfig {
    /// Built-in tiers, this machine as pool `local`, one queue `default`.
    fn default() -> Self {
        let tiers = resolve_tiers(BTreeMap::new());
        let queues = default_queues(&tiers);
        SchedulerConfig {
            pools: crate::pool::default_pools(this_machine()),
            tiers,
            queues,
            params: SchedulingParams::default(),
        }
    }
}

/// A duration in a config file: `"90s"`, `"15m"`, `"2h"`, `"14d"`, or whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(DurationValue(Duration::from_secs(s))),
            Raw::Text(text) => parse_duration(&text)
                .map(DurationValue)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSection {
    priority: Option<i64>,
    tiers: Option<Vec<String>>,
    network: Option<bool>,
    max_running: Option<u32>,
    timeout: Option<DurationValue>,
    retries: Option<u32>,
    retry_exit_codes: Option<Vec<i32>>,
    retry_on_oom: Option<bool>,
    retry_backoff: Option<DurationValue>,
    team: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerSection {
    reserve_after: Option<DurationValue>,
    fairshare_half_life: Option<DurationValue>,
}

impl SchedulerConfig {
    /// Reads `[tiers]`, `[pools]`, `[queues]` and `[scheduler]` and checks that they agree.
    pub fn from_config(config: &Config) -> Result<SchedulerConfig, SchedulerConfigError> {
        let tiers = resolve_tiers(config.section::<BTreeMap<String, TierSection>>("tiers")?);
        let pool_sections = config.section::<BTreeMap<String, PoolSection>>("pools")?;
        let pools =
            resolve_pools(pool_sections, this_machine()).map_err(|p| invalid(p.key, p.detail))?;
        let queue_sections = config.section::<BTreeMap<String, QueueSection>>("queues")?;
        let queues = resolve_queues(queue_sections, &tiers)?;
        let params = resolve_params(config.section::<SchedulerSection>("scheduler")?)?;
        let resolved = SchedulerConfig {
            tiers,
            pools,
            queues,
            params,
        };
        resolved.check_tier_limits()?;
        Ok(resolved)
    }

    /// The queue named `name`, or an error listing the queues there are.
    pub fn queue(&self, name: &str) -> Result<&QueueConfig, UnknownName> {
        self.queues.get(name).ok_or_else(|| UnknownName {
            what: "queue",
            name: name.to_string(),
            valid: self.queues.keys().cloned().collect(),
        })
    }

    /// The resources of tier `name`, or an error listing the tiers there are.
    pub fn tier(&self, name: &str) -> Result<Resources, UnknownName> {
        self.tiers.get(name).copied().ok_or_else(|| UnknownName {
            what: "tier",
            name: name.to_string(),
            valid: self.tiers.keys().cloned().collect(),
        })
    }

    /// Every node of every pool, in configuration order.
    pub fn nodes(&self) -> impl Iterator<Item = &crate::pool::Node> {
        self.pools.iter().flat_map(|p| p.nodes.iter())
    }

    fn check_tier_limits(&self) -> Result<(), SchedulerConfigError> {
        for node in self.nodes() {
            for tier in node.tier_limits.keys() {
                if !self.tiers.contains_key(tier) {
                    let key = if node.name == node.pool {
                        format!("pools.{}.tier_limits.{tier}", node.pool)
                    } else {
                        format!("pools.{}.nodes.{}.tier_limits.{tier}", node.pool, node.name)
                    };
                    return Err(invalid(key, unknown_tier_detail(tier, &self.tiers)));
                }
            }
        }
        Ok(())
    }
}

/// A name that is not configured; the message lists the names that are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}`; the {what}s are: {}", valid.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub valid: Vec<String>,
}

fn unknown_tier_detail(tier: &str, tiers: &BTreeMap<String, Resources>) -> String {
    let names: Vec<&str> = tiers.keys().map(String::as_str).collect();
    format!("unknown tier `{tier}`; the tiers are: {}", names.join(", "))
}

fn default_queues(tiers: &BTreeMap<String, Resources>) -> BTreeMap<String, QueueConfig> {
    let queue = QueueConfig {
        name: "default".into(),
        priority: 0,
        tiers: tiers.keys().cloned().collect(),
        network: false,
        max_running: None,
        timeout: None,
        retry: RetryPolicy::default(),
        team: None,
    };
    BTreeMap::from([("default".to_string(), queue)])
}

fn resolve_queues(
    sections: BTreeMap<String, QueueSection>,
    tiers: &BTreeMap<String, Resources>,
) -> Result<BTreeMap<String, QueueConfig>, SchedulerConfigError> {
    if sections.is_empty() {
        return Ok(default_queues(tiers));
    }
    let mut queues = BTreeMap::new();
    for (name, section) in sections {
        let queue = resolve_queue(&name, section, tiers)?;
        queues.insert(name, queue);
    }
    Ok(queues)
}

fn resolve_queue(
    name: &str,
    section: QueueSection,
    tiers: &BTreeMap<String, Resources>,
) -> Result<QueueConfig, SchedulerConfigError> {
    let allowed = match section.tiers {
        None => tiers.keys().cloned().collect(),
        Some(list) => {
            for tier in &list {
                if !tiers.contains_key(tier) {
                    return Err(invalid(
                        format!("queues.{name}.tiers"),
                        unknown_tier_detail(tier, tiers),
                    ));
                }
            }
            let mut list = list;
            list.sort();
            list.dedup();
            list
        }
    };
    if allowed.is_empty() {
        return Err(invalid(
            format!("queues.{name}.tiers"),
            "a queue must allow at least one tier",
        ));
    }
    if section.max_running == Some(0) {
        return Err(invalid(
            format!("queues.{name}.max_running"),
            "0 would never run a job; leave it out for no limit",
        ));
    }
    if let Some(team) = section
        .team
        .as_deref()
        .filter(|t| !strata_db::tokens::is_team_name(t))
    {
        return Err(invalid(
            format!("queues.{name}.team"),
            format!("{team:?} is not a team name: 1 to 63 lowercase letters, digits or '-', not at either end (as `strata token create --team` takes)"),
        ));
    }
    let defaults = RetryPolicy::default();
    Ok(QueueConfig {
        name: name.to_string(),
        priority: section.priority.unwrap_or(0),
        tiers: allowed,
        network: section.network.unwrap_or(false),
        max_running: section.max_running,
        timeout: section.timeout.map(|d| d.0),
        retry: RetryPolicy {
            retries: section.retries.unwrap_or(defaults.retries),
            exit_codes: section.retry_exit_codes.unwrap_or(defaults.exit_codes),
            on_oom: section.retry_on_oom.unwrap_or(defaults.on_oom),
            backoff: section
                .retry_backoff
                .map(|d| d.0)
                .unwrap_or(defaults.backoff),
        },
        team: section.team,
    })
}

fn resolve_params(section: SchedulerSection) -> Result<SchedulingParams, SchedulerConfigError> {
    let defaults = SchedulingParams::default();
    let half_life = section
        .fairshare_half_life
        .map(|d| d.0)
        .unwrap_or(defaults.fairshare_half_life);
    if half_life.is_zero() {
        return Err(invalid(
            "scheduler.fairshare_half_life",
            "must be longer than 0s",
        ));
    }
    Ok(SchedulingParams {
        reserve_after: section
            .reserve_after
            .map(|d| d.0)
            .unwrap_or(defaults.reserve_after),
        fairshare_half_life: half_life,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<SchedulerConfig, SchedulerConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, text).unwrap();
        SchedulerConfig::from_config(&Config::from_file(&file).unwrap())
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = load("").unwrap();
        assert_eq!(
            config.tiers.keys().collect::<Vec<_>>(),
            ["cpu", "gpu1", "gpu2", "gpu8"]
        );
        assert_eq!(config.queues["default"].tiers.len(), 4);
        assert_eq!(config.pools[0].name, "local");
        assert_eq!(config.pools[0].nodes[0].capacity.gpus, 0);
        assert_eq!(config.params.reserve_after, Duration::from_secs(60));
    }

    #[test]
    fn a_team_is_a_team_name() {
        let err = load("[queues.q]\nteam = \"Vision\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("queues.q.team") && err.contains("Vision"),
            "{err}"
        );
    }

    #[test]
    fn full_file_is_read() {
        let config = load(
            r#"
[tiers.gpu1]
cpus = 4
[pools.local]
cpus = 32
memory = "256G"
gpus = 8
tier_limits = { cpu = 4 }
[queues.team-a]
priority = 5
tiers = ["gpu1", "cpu"]
network = true
max_running = 3
timeout = "2h"
retries = 2
retry_exit_codes = [75]
retry_on_oom = true
team = "vision"
[queues.solo]
[scheduler]
reserve_after = "5m"
"#,
        )
        .unwrap();
        assert_eq!(config.tiers["gpu1"].millicpus, 4000);
        assert_eq!(config.pools[0].nodes[0].capacity.gpus, 8);
        assert_eq!(config.pools[0].nodes[0].tier_limits["cpu"], 4);
        let q = &config.queues["team-a"];
        assert_eq!(q.tiers, ["cpu", "gpu1"]);
        assert!(q.network);
        assert_eq!(q.retry.exit_codes, [75]);
        assert_eq!(q.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(q.team.as_deref(), Some("vision"));
        assert_eq!(config.queues["solo"].team, None);
        assert_eq!(config.params.reserve_after, Duration::from_secs(300));
    }
}

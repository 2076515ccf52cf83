//! The `[kubernetes]` section of `strata.toml`: how to reach the cluster and how strata's
//! pools, tiers and queues map onto it.
//!
//! ```toml
//! [kubernetes]
//! kubeconfig = "/etc/strata/kubeconfig"   # or: in_cluster = true; neither: $KUBECONFIG (files merged) / ~/.kube/config
//! context = "prod"                        # default: the kubeconfig's current context
//! registry = "registry.example.com/ml/envs"  # where job images are pushed (REG/REPO)
//! ttl_seconds_after_finished = 3600       # finished Jobs are removed by the cluster after this
//!
//! [kubernetes.pools.gpu]                  # strata pool `gpu` = the nodes with these labels
//! node_selector = { "strata.dev/pool" = "gpu" }
//!
//! [kubernetes.tiers.gpu1]                 # requests/limits come from [tiers.gpu1]
//! node_selector = { "nvidia.com/gpu.present" = "true" }
//! tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
//! priority_class_name = "batch-low"
//!
//! [kubernetes.queues.team-a]
//! namespace = "ml-team-a"                 # default: the queue's name
//! outputs_pvc = "team-a-outputs"          # a PersistentVolumeClaim in that namespace: each
//!                                         # --output DIR is mounted from it at DIR, one
//!                                         # sub-directory per job (see deploy/README.md)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Toleration;
use serde::Deserialize;
use strata_config::{Config, ConfigError};

/// Default time a finished Job stays in the cluster before its TTL controller removes it.
pub const DEFAULT_TTL_SECONDS: i32 = 3600;

/// How the agent authenticates to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// A kubeconfig file; `None`: the files of `$KUBECONFIG` merged, else `~/.kube/config`
    /// (see [`crate::connect`]). `context: None`: the kubeconfig's `current-context`.
    Kubeconfig {
        path: Option<PathBuf>,
        context: Option<String>,
    },
    /// The pod's ServiceAccount token and the cluster CA mounted by Kubernetes.
    InCluster,
}

/// Where a tier's pods may go, beyond their resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TierPlacement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
}

/// The resolved `[kubernetes]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeSettings {
    pub connection: Connection,
    /// `REG/REPO`: job images are `REG/REPO@sha256:...`.
    pub registry: Option<String>,
    pub ttl_seconds_after_finished: i32,
    /// Pool name → node label selector (all labels must match).
    pub pools: BTreeMap<String, BTreeMap<String, String>>,
    pub tiers: BTreeMap<String, TierPlacement>,
    /// Queue name → namespace, for queues not living in the namespace of their name.
    pub namespaces: BTreeMap<String, String>,
    /// Queue name → the PersistentVolumeClaim (in the queue's namespace) that holds its
    /// jobs' outputs.
    pub outputs_claims: BTreeMap<String, String>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            connection: Connection::Kubeconfig {
                path: None,
                context: None,
            },
            registry: None,
            ttl_seconds_after_finished: DEFAULT_TTL_SECONDS,
            pools: BTreeMap::new(),
            tiers: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            outputs_claims: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeSettingsError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("invalid `{key}` in the configuration: {detail}")]
    Invalid { key: String, detail: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    #[serde(default)]
    in_cluster: bool,
    registry: Option<String>,
    ttl_seconds_after_finished: Option<i64>,
    #[serde(default)]
    pools: BTreeMap<String, PoolSection>,
    #[serde(default)]
    tiers: BTreeMap<String, TierSection>,
    #[serde(default)]
    queues: BTreeMap<String, QueueSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSection {
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSection {
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<TolerationSection>,
    priority_class_name: Option<String>,
}

/// A toleration as written in TOML (snake_case keys, checked).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TolerationSection {
    key: Option<String>,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    toleration_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSection {
    namespace: Option<String>,
    outputs_pvc: Option<String>,
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> KubeSettingsError {
    KubeSettingsError::Invalid {
        key: key.into(),
        detail: detail.into(),
    }
}

impl KubeSettings {
    /// Reads `[kubernetes]` (absent: the defaults).
    pub fn from_config(config: &Config) -> Result<KubeSettings, KubeSettingsError> {
        resolve(config.section::<Section>("kubernetes")?)
    }

    /// The namespace of a queue's jobs.
    pub fn namespace<'a>(&'a self, queue: &'a str) -> &'a str {
        self.namespaces
            .get(queue)
            .map(String::as_str)
            .unwrap_or(queue)
    }

    /// The namespaces of these queues, each once.
    pub fn namespaces_of<'a>(
        &'a self,
        queues: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        queues
            .into_iter()
            .map(|q| self.namespace(q).to_string())
            .collect()
    }

    /// The claim holding the outputs of a queue's jobs, if the queue names one.
    pub fn outputs_claim(&self, queue: &str) -> Option<&str> {
        self.outputs_claims.get(queue).map(String::as_str)
    }

    /// The placement of a tier's pods (empty when the tier has no section).
    pub fn tier(&self, tier: &str) -> TierPlacement {
        self.tiers.get(tier).cloned().unwrap_or_default()
    }
}

fn resolve(section: Section) -> Result<KubeSettings, KubeSettingsError> {
    let connection = match (section.in_cluster, section.kubeconfig) {
        (true, Some(_)) => {
            return Err(invalid(
                "kubernetes.in_cluster",
                "set either `kubeconfig` or `in_cluster = true`, not both",
            ))
        }
        (true, None) => Connection::InCluster,
        (false, path) => Connection::Kubeconfig {
            path,
            context: section.context,
        },
    };
    let ttl = section
        .ttl_seconds_after_finished
        .unwrap_or(i64::from(DEFAULT_TTL_SECONDS));
    let ttl = i32::try_from(ttl).ok().filter(|t| *t >= 0).ok_or_else(|| {
        invalid(
            "kubernetes.ttl_seconds_after_finished",
            format!(
                "{ttl} is not a number of seconds between 0 and {}",
                i32::MAX
            ),
        )
    })?;
    if let Some(registry) = &section.registry {
        check_registry(registry)?;
    }
    let mut pools = BTreeMap::new();
    for (name, pool) in section.pools {
        if pool.node_selector.is_empty() {
            return Err(invalid(
                format!("kubernetes.pools.{name}.node_selector"),
                "a pool needs at least one node label, e.g. { \"strata.dev/pool\" = \"gpu\" }",
            ));
        }
        pools.insert(name, pool.node_selector);
    }
    let mut tiers = BTreeMap::new();
    for (name, tier) in section.tiers {
        tiers.insert(name.clone(), resolve_tier(&name, tier)?);
    }
    let mut namespaces = BTreeMap::new();
    let mut outputs_claims = BTreeMap::new();
    for (queue, q) in section.queues {
        if let Some(claim) = q.outputs_pvc {
            if !is_dns_subdomain(&claim) {
                return Err(invalid(
                    format!("kubernetes.queues.{queue}.outputs_pvc"),
                    format!("{claim:?} is not a PersistentVolumeClaim name (lowercase letters, digits, '-' and '.', at most 253)"),
                ));
            }
            outputs_claims.insert(queue.clone(), claim);
        }
        if let Some(ns) = q.namespace {
            if !is_dns_label(&ns) {
                return Err(invalid(
                    format!("kubernetes.queues.{queue}.namespace"),
                    format!("{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"),
                ));
            }
            namespaces.insert(queue, ns);
        }
    }
    Ok(KubeSettings {
        connection,
        registry: section.registry,
        ttl_seconds_after_finished: ttl,
        pools,
        tiers,
        namespaces,
        outputs_claims,
    })
}

fn resolve_tier(name: &str, tier: TierSection) -> Result<TierPlacement, KubeSettingsError> {
    let mut tolerations = Vec::new();
    for (i, t) in tier.tolerations.into_iter().enumerate() {
        if let Some(op) = &t.operator {
            if op != "Exists" && op != "Equal" {
                return Err(invalid(
                    format!("kubernetes.tiers.{name}.tolerations[{i}].operator"),
                    format!("{op:?}: expected \"Exists\" or \"Equal\""),
                ));
            }
        }
        tolerations.push(Toleration {
            key: t.key,
            operator: t.operator,
            value: t.value,
            effect: t.effect,
            toleration_seconds: t.toleration_seconds,
        });
    }
    Ok(TierPlacement {
        node_selector: tier.node_selector,
        tolerations,
        priority_class_name: tier.priority_class_name,
    })
}

/// `REGISTRY/REPOSITORY` without a digest: where job images go (`[kubernetes] registry`).
pub fn is_registry_repository(registry: &str) -> bool {
    registry.contains('/')
        && !registry.contains('@')
        && !registry.ends_with('/')
        && !registry.chars().any(char::is_whitespace)
}

fn check_registry(registry: &str) -> Result<(), KubeSettingsError> {
    if is_registry_repository(registry) {
        return Ok(());
    }
    Err(invalid(
        "kubernetes.registry",
        format!("{registry:?}: expected REGISTRY/REPOSITORY without tag or digest, e.g. registry.example.com/ml/envs"),
    ))
}

/// An RFC 1123 subdomain: what most object names (a claim's) must be.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// An RFC 1123 label: what a namespace name must be.
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(section: &str) -> Result<KubeSettings, KubeSettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        let text = section.replace("[pools", "[kubernetes.pools");
        let text = text
            .replace("[tiers", "[kubernetes.tiers")
            .replace("[queues", "[kubernetes.queues");
        std::fs::write(&file, format!("[kubernetes]\n{text}")).unwrap();
        KubeSettings::from_config(&Config::from_file(&file).unwrap())
    }

    #[test]
    fn full_section_is_read() {
        let settings = from_toml(
            r#"
kubeconfig = "/etc/kc"
registry = "reg.example.com/ml/envs"
ttl_seconds_after_finished = 600
[pools.gpu]
node_selector = { "strata.dev/pool" = "gpu" }
[tiers.gpu1]
node_selector = { "gpu" = "a100" }
tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
priority_class_name = "batch"
[queues.team-a]
namespace = "ml-a"
outputs_pvc = "team-a-outputs"
"#,
        )
        .unwrap();
        assert_eq!(settings.outputs_claim("team-a"), Some("team-a-outputs"));
        assert_eq!(settings.outputs_claim("team-b"), None);
        assert_eq!(settings.ttl_seconds_after_finished, 600);
        assert_eq!(settings.namespace("team-a"), "ml-a");
        assert_eq!(settings.namespace("team-b"), "team-b");
        assert_eq!(settings.pools["gpu"]["strata.dev/pool"], "gpu");
        let tier = settings.tier("gpu1");
        assert_eq!(tier.tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(tier.priority_class_name.as_deref(), Some("batch"));
        assert_eq!(settings.tier("cpu"), TierPlacement::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "in_cluster = true\nkubeconfig = \"x\"",
                "kubernetes.in_cluster",
            ),
            ("registry = \"reg:5000\"", "kubernetes.registry"),
            (
                "ttl_seconds_after_finished = -1",
                "kubernetes.ttl_seconds_after_finished",
            ),
            (
                "[queues.q]\nnamespace = \"Team_A\"",
                "kubernetes.queues.q.namespace",
            ),
            (
                "[queues.q]\noutputs_pvc = \"Out/Claim\"",
                "kubernetes.queues.q.outputs_pvc",
            ),
            (
                "[pools.p]\nnode_selector = {}",
                "kubernetes.pools.p.node_selector",
            ),
            (
                "[tiers.t]\ntolerations = [{ operator = \"Maybe\" }]",
                "kubernetes.tiers.t.tolerations[0].operator",
            ),
        ] {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}

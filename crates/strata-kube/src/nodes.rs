//! The capacity of a pool's nodes: the cluster's Nodes selected by the pool's labels, each
//! with its allocatable CPUs, memory and `nvidia.com/gpu`. What strata's own running jobs
//! hold is subtracted by the [`strata_queue::Scheduler`]; nothing else is (other workloads on the
//! same nodes are the platform team's to keep off strata's pools, e.g. with taints).
//! Cordoned and not-Ready nodes count as empty (nothing new should go there).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node as K8sNode;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::objects::GPU_RESOURCE;
use strata_queue::Resources;
use strata_queue::{Node, Pool};

/// `a=x,b=y` from a pool's labels.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A strata node from a cluster Node of pool `pool`.
pub fn pool_node(pool: &str, node: &K8sNode) -> Node {
    let name = node.metadata.name.clone().unwrap_or_default();
    let capacity = if usable(node) {
        allocatable(node)
    } else {
        Resources::default()
    };
    Node {
        pool: pool.to_string(),
        name,
        capacity,
        tier_limits: BTreeMap::new(),
    }
}

/// Gives each node to one pool: a node matched by two pools' labels belongs to the first
/// (in `pools` order), as a node is in one pool. Nodes are sorted by name within a pool.
pub fn assign(mut pools: Vec<Pool>) -> Vec<Pool> {
    let mut seen = BTreeSet::new();
    for pool in &mut pools {
        pool.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        pool.nodes.retain(|n| seen.insert(n.name.clone()));
    }
    pools
}

/// Not cordoned and Ready.
pub fn usable(node: &K8sNode) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    !cordoned && ready
}

/// The node's allocatable CPUs, memory and GPUs (what is unreadable counts as 0).
pub fn allocatable(node: &K8sNode) -> Resources {
    let empty = BTreeMap::new();
    let amounts = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .unwrap_or(&empty);
    let get = |name: &str| amounts.get(name).map(|q: &Quantity| q.0.as_str());
    Resources {
        millicpus: get("cpu").and_then(parse_millicpus).unwrap_or(0),
        memory: get("memory").and_then(parse_bytes).unwrap_or(0),
        gpus: get(GPU_RESOURCE)
            .and_then(parse_bytes)
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0),
    }
}

/// A CPU quantity in millicores: `4` → 4000, `500m` → 500, `1.5` → 1500.
pub fn parse_millicpus(text: &str) -> Option<u64> {
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse().ok();
    }
    let value = parse_decimal(text)?;
    let milli = value * 1000.0;
    (milli.is_finite() && milli >= 0.0).then_some(milli.floor() as u64)
}

/// A quantity as a plain number: `16Gi`, `16G`, `1024Ki`, `1e9`, `4` (rounded down).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    let value = parse_decimal(number)? * factor;
    (value.is_finite() && value >= 0.0).then_some(value.floor() as u64)
}

fn parse_decimal(text: &str) -> Option<f64> {
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_millicpus("4"), Some(4000));
        assert_eq!(parse_millicpus("500m"), Some(500));
        assert_eq!(parse_millicpus("1.5"), Some(1500));
        assert_eq!(parse_bytes("16Gi"), Some(16 << 30));
        assert_eq!(parse_bytes("1024Ki"), Some(1 << 20));
        assert_eq!(parse_bytes("2G"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes("8"), Some(8));
        for bad in ["", "x", "-1", "4Zi"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_capacity_is_allocatable_when_usable() {
        let node: K8sNode = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"pool": "gpu"}},
            "status": {
                "allocatable": {"cpu": "32", "memory": "128Gi", "nvidia.com/gpu": "4"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap();
        let strata = pool_node("gpu", &node);
        assert_eq!(strata.name, "n1");
        assert_eq!(strata.capacity, Resources::new(32.0, 128 << 30, 4));
        let mut cordoned = node.clone();
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(pool_node("gpu", &cordoned).capacity, Resources::default());
    }
}

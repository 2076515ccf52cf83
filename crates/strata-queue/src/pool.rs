//! Pools of capacity and the nodes they are made of. A job runs on one node: its tier's CPUs,
//! memory and GPUs must all be free on that node at once.
//!
//! ```toml
//! [pools.local]                 # a pool of one node (named like the pool)
//! cpus = 16
//! memory = "64G"
//! gpus = 4                      # GPU indices 0..4
//! tier_limits = { cpu = 6 }     # at most 6 cpu-tier jobs at once on this node
//!
//! [pools.lab.nodes.gpu-a]       # or a pool of several nodes
//! gpus = 8
//! ```
//!
//! Left out, `cpus` and `memory` are this machine's (from `/proc`), `gpus` is 0. Without any
//! `[pools]` section there is one pool `local` with one node `localhost` of this machine's
//! CPUs and memory and no GPUs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tier::{Cpus, Memory, Resources};

/// The most GPUs a node may have (their indices are kept in a 64-bit set).
pub const MAX_GPUS_PER_NODE: u32 = 64;

/// One node: where jobs are placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub pool: String,
    pub name: String,
    pub capacity: Resources,
    /// At most this many running jobs of the tier on this node (absent: no limit).
    pub tier_limits: BTreeMap<String, u32>,
}

/// A named group of nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub nodes: Vec<Node>,
}

/// "pool gpu: a (8 CPUs, 32 GiB and 4 GPUs), b (nothing: cordoned or not Ready)" for logs.
pub fn describe_pools(pools: &[Pool]) -> String {
    let describe_node = |n: &Node| {
        if n.capacity == Resources::default() {
            format!("{} (nothing: cordoned or not Ready)", n.name)
        } else {
            format!("{} ({})", n.name, n.capacity)
        }
    };
    pools
        .iter()
        .map(|p| {
            let nodes: Vec<String> = p.nodes.iter().map(describe_node).collect();
            let nodes = if nodes.is_empty() {
                "no node".to_string()
            } else {
                nodes.join(", ")
            };
            format!("pool {}: {nodes}", p.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A node's keys as written (`[pools.P]` itself, or `[pools.P.nodes.N]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub cpus: Option<Cpus>,
    pub memory: Option<Memory>,
    pub gpus: Option<u32>,
    #[serde(default)]
    pub tier_limits: BTreeMap<String, u32>,
}

/// One `[pools.NAME]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub cpus: Option<Cpus>,
    pub memory: Option<Memory>,
    pub gpus: Option<u32>,
    #[serde(default)]
    pub tier_limits: BTreeMap<String, u32>,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeSection>,
}

impl PoolSection {
    /// The pool's own keys, for a pool of one node.
    fn inline_node(&self) -> NodeSection {
        NodeSection {
            cpus: self.cpus,
            memory: self.memory,
            gpus: self.gpus,
            tier_limits: self.tier_limits.clone(),
        }
    }
}

/// A problem in a pool section that serde cannot see; `key` is the full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProblem {
    pub key: String,
    pub detail: String,
}

/// Where the agent publishes the pools it schedules on (`$STRATA_HOME/agent-pools.json`).
pub fn published_pools_path(home: &std::path::Path) -> std::path::PathBuf {
    home.join("agent-pools.json")
}

/// Publishes the pools the agent schedules on, so that the other commands explain waits
/// against them: with `--backend kubernetes` they are the cluster's nodes, which
/// `strata.toml` does not list. Written whole (temporary file, rename).
pub fn publish_pools(home: &std::path::Path, pools: &[Pool]) -> std::io::Result<()> {
    let path = published_pools_path(home);
    let text = serde_json::to_vec_pretty(pools).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// The pools the last agent published, if any (unreadable counts as none).
pub fn published_pools(home: &std::path::Path) -> Option<Vec<Pool>> {
    let bytes = std::fs::read(published_pools_path(home)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// This machine's CPUs and memory, read from the system (`/proc/meminfo`).
pub fn this_machine() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or(0);
    Resources::new(cpus as f64, memory, 0)
}

/// `MemTotal:  16318504 kB` → bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The pool used when the file has none.
pub fn default_pools(machine: Resources) -> Vec<Pool> {
    vec![Pool {
        name: "local".into(),
        nodes: vec![Node {
            pool: "local".into(),
            name: "localhost".into(),
            capacity: machine,
            tier_limits: BTreeMap::new(),
        }],
    }]
}

/// Turns the sections into pools, filling missing keys from `machine`.
pub fn resolve_pools(
    sections: BTreeMap<String, PoolSection>,
    machine: Resources,
) -> Result<Vec<Pool>, PoolProblem> {
    if sections.is_empty() {
        return Ok(default_pools(machine));
    }
    let mut pools = Vec::new();
    let mut seen_nodes: BTreeMap<String, String> = BTreeMap::new();
    for (name, section) in sections {
        let nodes = pool_nodes(&name, section, machine)?;
        for node in &nodes {
            if let Some(other) = seen_nodes.insert(node.name.clone(), name.clone()) {
                return Err(PoolProblem {
                    key: format!("pools.{name}.nodes.{}", node.name),
                    detail: format!("node name already used in pool `{other}`"),
                });
            }
        }
        pools.push(Pool { name, nodes });
    }
    Ok(pools)
}

fn pool_nodes(
    pool: &str,
    section: PoolSection,
    machine: Resources,
) -> Result<Vec<Node>, PoolProblem> {
    let inline = section.inline_node();
    let has_inline = inline.cpus.is_some()
        || inline.memory.is_some()
        || inline.gpus.is_some()
        || !inline.tier_limits.is_empty();
    if has_inline && !section.nodes.is_empty() {
        return Err(PoolProblem {
            key: format!("pools.{pool}.nodes"),
            detail: "a pool is either one node (cpus/memory/gpus on the pool) or a table of nodes, not both".into(),
        });
    }
    if section.nodes.is_empty() {
        let key = format!("pools.{pool}");
        return Ok(vec![node(pool, pool, &key, inline, machine)?]);
    }
    section
        .nodes
        .into_iter()
        .map(|(name, n)| {
            let key = format!("pools.{pool}.nodes.{name}");
            node(pool, &name, &key, n, machine)
        })
        .collect()
}

fn node(
    pool: &str,
    name: &str,
    key: &str,
    section: NodeSection,
    machine: Resources,
) -> Result<Node, PoolProblem> {
    let gpus = section.gpus.unwrap_or(0);
    if gpus > MAX_GPUS_PER_NODE {
        return Err(PoolProblem {
            key: format!("{key}.gpus"),
            detail: format!("{gpus} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported"),
        });
    }
    let millicpus = section
        .cpus
        .map(|c| Resources::new(c.0, 0, 0).millicpus)
        .unwrap_or(machine.millicpus);
    Ok(Node {
        pool: pool.to_string(),
        name: name.to_string(),
        capacity: Resources {
            millicpus,
            memory: section.memory.map(|m| m.0).unwrap_or(machine.memory),
            gpus,
        },
        tier_limits: section.tier_limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_pools_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(published_pools(dir.path()), None);
        let mut pools = default_pools(Resources::new(4.0, 1 << 30, 2));
        publish_pools(dir.path(), &pools).unwrap();
        assert_eq!(published_pools(dir.path()), Some(pools.clone()));
        pools[0].name = "gpu".into();
        publish_pools(dir.path(), &pools).unwrap();
        assert_eq!(published_pools(dir.path()), Some(pools));
        std::fs::write(published_pools_path(dir.path()), "not json").unwrap();
        assert_eq!(published_pools(dir.path()), None);
    }

    #[test]
    fn reads_total_memory_from_meminfo() {
        let text = "MemTotal:       16318504 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(text), Some(16318504 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert!(this_machine().millicpus >= 1000);
    }

    #[test]
    fn missing_keys_come_from_the_machine() {
        let machine = Resources::new(4.0, 1 << 34, 0);
        let section = PoolSection {
            gpus: Some(4),
            ..PoolSection::default()
        };
        let pools = resolve_pools(BTreeMap::from([("local".into(), section)]), machine).unwrap();
        assert_eq!(pools[0].nodes[0].name, "local");
        assert_eq!(pools[0].nodes[0].capacity, Resources::new(4.0, 1 << 34, 4));
        assert_eq!(
            resolve_pools(BTreeMap::new(), machine).unwrap(),
            default_pools(machine)
        );
    }
}

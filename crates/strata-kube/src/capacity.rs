//! The pools' capacity, kept current while the agent runs: one kube-runtime watcher per
//! pool (its label selector) over the cluster's Nodes. A node that joins (the autoscaler
//! added it), leaves, is cordoned or stops being Ready changes what the agent admits,
//! without a restart. A node whose labels stop matching leaves the pool: the API server
//! reports it to a label-selected watch as deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use crate::nodes::{assign, label_selector, pool_node};
use crate::watch::{spawn_watch, Change, Relist};
use strata_queue::{Node, Pool};

/// What the node watchers have seen, per pool.
pub struct PoolWatch {
    /// Pool names in configuration order: a node matched by two pools is the first's.
    order: Vec<String>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per pool, its nodes by name, once its first listing is complete.
    listed: BTreeMap<String, BTreeMap<String, Node>>,
    /// Per pool, its watcher's listing in progress: the previous listing stays in use until
    /// it is complete.
    relists: BTreeMap<String, Relist<K8sNode>>,
}

impl PoolWatch {
    pub fn new(pools: impl IntoIterator<Item = String>) -> PoolWatch {
        PoolWatch {
            order: pools.into_iter().collect(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one event of pool `pool`'s watcher.
    pub fn apply(&self, pool: &str, event: Event<K8sNode>) {
        let mut inner = self.lock();
        let relist = inner.relists.entry(pool.to_string()).or_default();
        match relist.apply(event) {
            None => {}
            Some(Change::Listed(listed)) => {
                let nodes = listed
                    .iter()
                    .map(|node| (node.name_any(), pool_node(pool, node)))
                    .collect();
                inner.listed.insert(pool.to_string(), nodes);
            }
            Some(Change::Applied(node)) => {
                if let Some(nodes) = inner.listed.get_mut(pool) {
                    nodes.insert(node.name_any(), pool_node(pool, &node));
                }
            }
            Some(Change::Deleted(node)) => {
                if let Some(nodes) = inner.listed.get_mut(pool) {
                    nodes.remove(&node.name_any());
                }
            }
        }
    }

    /// The pools as last seen; `None` until every pool has been listed once.
    pub fn pools(&self) -> Option<Vec<Pool>> {
        let inner = self.lock();
        let pools = self
            .order
            .iter()
            .map(|name| {
                let nodes = inner.listed.get(name)?;
                Some(Pool {
                    name: name.clone(),
                    nodes: nodes.values().cloned().collect(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(assign(pools))
    }
}

/// Starts one Node watcher per pool of `selectors` (pool → labels) on the current tokio
/// runtime, feeding `watch`.
pub fn spawn_pool_watchers(
    client: &Client,
    selectors: &BTreeMap<String, BTreeMap<String, String>>,
    watch: &Arc<PoolWatch>,
) -> Vec<tokio::task::JoinHandle<()>> {
    selectors
        .iter()
        .map(|(pool, labels)| {
            let api: Api<K8sNode> = Api::all(client.clone());
            let config = watcher::Config::default().labels(&label_selector(labels));
            let (name, watch) = (pool.clone(), Arc::clone(watch));
            let failing = pool.clone();
            spawn_watch(
                api,
                config,
                move |event| watch.apply(&name, event),
                move |e| tracing::warn!("watching the nodes of pool {failing}: {e}"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use strata_queue::Resources;

    fn node(name: &str, gpus: u32, ready: bool) -> K8sNode {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": gpus.to_string()},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .unwrap()
    }

    fn gpus(pools: &[Pool]) -> Vec<(String, String, u32)> {
        pools
            .iter()
            .flat_map(|p| {
                p.nodes
                    .iter()
                    .map(|n| (p.name.clone(), n.name.clone(), n.capacity.gpus))
            })
            .collect()
    }

    #[test]
    fn pools_follow_nodes_that_join_change_and_leave() {
        let watch = PoolWatch::new(["gpu".to_string(), "cpu".to_string()]);
        watch.apply("gpu", Event::Init);
        watch.apply("gpu", Event::InitApply(node("a", 4, true)));
        watch.apply("gpu", Event::InitDone);
        assert_eq!(watch.pools(), None, "pool cpu not listed yet");
        watch.apply("cpu", Event::Init);
        watch.apply("cpu", Event::InitDone);
        let listed = watch.pools().unwrap();
        assert_eq!(gpus(&listed), [("gpu".into(), "a".into(), 4)]);
        assert_eq!(listed[1].nodes, []);

        watch.apply("gpu", Event::Apply(node("b", 8, true)));
        watch.apply("gpu", Event::Apply(node("a", 4, false)));
        assert_eq!(
            gpus(&watch.pools().unwrap()),
            [("gpu".into(), "a".into(), 0), ("gpu".into(), "b".into(), 8)]
        );
        watch.apply("gpu", Event::Delete(node("b", 8, true)));
        assert_eq!(
            gpus(&watch.pools().unwrap()),
            [("gpu".into(), "a".into(), 0)]
        );
        assert_eq!(
            watch.pools().unwrap()[0].nodes[0].capacity,
            Resources::default()
        );
    }

    #[test]
    fn a_relisting_replaces_the_pool_only_when_complete() {
        let watch = PoolWatch::new(["gpu".to_string()]);
        watch.apply("gpu", Event::Init);
        watch.apply("gpu", Event::InitApply(node("a", 4, true)));
        watch.apply("gpu", Event::InitDone);
        // The watch broke and lists again: until it is done, the old listing holds.
        watch.apply("gpu", Event::Init);
        watch.apply("gpu", Event::InitApply(node("c", 2, true)));
        assert_eq!(
            gpus(&watch.pools().unwrap()),
            [("gpu".into(), "a".into(), 4)]
        );
        watch.apply("gpu", Event::InitDone);
        assert_eq!(
            gpus(&watch.pools().unwrap()),
            [("gpu".into(), "c".into(), 2)]
        );
    }

    #[test]
    fn a_node_in_two_pools_belongs_to_the_first() {
        let watch = PoolWatch::new(["gpu".to_string(), "cpu".to_string()]);
        for pool in ["gpu", "cpu"] {
            watch.apply(pool, Event::Init);
            watch.apply(pool, Event::InitApply(node("shared", 4, true)));
            watch.apply(pool, Event::InitDone);
        }
        let pools = watch.pools().unwrap();
        assert_eq!(gpus(&pools), [("gpu".into(), "shared".into(), 4)]);
    }
}

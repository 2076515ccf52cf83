//! Admission with Kubernetes nodes: strata's Scheduler over the pools' nodes as the cluster
//! reports them (allocatable), jobs of many queues in many namespaces, and an agent restart
//! that rebuilds its view from the job store and the cluster's Jobs. No cluster needed: the
//! Node and Job objects are the API's JSON form.

mod kube_support;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Node as K8sNode;
use serde_json::json;
use strata_config::Config;
use strata_kube::nodes::{parse_bytes, parse_millicpus, pool_node};
use strata_kube::objects::{job_object, JobObjectParams, LABEL_JOB};
use strata_kube::{KubeSettings, TierPlacement};
use strata_oci::Digest;
use strata_queue::pool::Pool;
use strata_queue::{JobFilter, JobState, JobStore, NewJob, Resources, Scheduler, SchedulerConfig};

fn node(name: &str, gpus: u32) -> K8sNode {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"strata.dev/pool": "gpu"}},
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .unwrap()
}

const QUEUES: [&str; 5] = ["team-a", "team-b", "team-c", "team-d", "team-e"];

struct World {
    _dir: tempfile::TempDir,
    store: JobStore,
    config: SchedulerConfig,
    settings: KubeSettings,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    let mut text = String::new();
    for q in QUEUES {
        text.push_str(&format!("[queues.{q}]\n"));
    }
    text.push_str("[kubernetes]\nregistry = \"reg.example.com/ml/envs\"\n[kubernetes.pools.gpu]\nnode_selector = { \"strata.dev/pool\" = \"gpu\" }\n");
    for q in QUEUES {
        text.push_str(&format!(
            "[kubernetes.queues.{q}]\nnamespace = \"ml-{q}\"\n"
        ));
    }
    std::fs::write(&file, text).unwrap();
    let file_config = Config::from_file(&file).unwrap();
    let mut config = SchedulerConfig::from_config(&file_config).unwrap();
    let settings = KubeSettings::from_config(&file_config).unwrap();
    // The pool's nodes come from the cluster: 4 + 4 + 8 GPUs.
    let nodes = [node("gpu-a", 4), node("gpu-b", 4), node("gpu-c", 8)];
    config.pools = vec![Pool {
        name: "gpu".into(),
        nodes: nodes.iter().map(|n| pool_node("gpu", n)).collect(),
    }];
    let store = JobStore::open(&dir.path().join("strata.db")).unwrap();
    World {
        _dir: dir,
        store,
        config,
        settings,
    }
}

impl World {
    fn submit(&self, queue: &str, tier: &str, now: i64) {
        let job = NewJob {
            queue: queue.into(),
            tier: tier.into(),
            user: Some("ana".into()),
            image_digest: Some(Digest::of(b"image")),
            command: vec!["python".into(), "train.py".into()],
            ..NewJob::default()
        };
        self.store.submit(&self.config, job, now).unwrap();
    }

    /// What the agent does after each admission: creates the Job (here: the object).
    fn create_jobs(&self, cluster: &mut Vec<K8sJob>) {
        let running = self
            .store
            .list(&JobFilter {
                states: vec![JobState::Running],
                ..JobFilter::default()
            })
            .unwrap();
        for job in running {
            let name = format!("strata-{}-a{}", job.id, job.attempt);
            if cluster
                .iter()
                .any(|j| j.metadata.name.as_deref() == Some(name.as_str()))
            {
                continue; // adopted, not created twice
            }
            let digest = job.image_digest.clone().unwrap();
            let image = format!("{}@{digest}", self.settings.registry.as_deref().unwrap());
            let namespace = self.settings.namespace(&job.queue).to_string();
            let tier = TierPlacement::default();
            let params = JobObjectParams {
                namespace: &namespace,
                image: &image,
                digest: &digest,
                tier: &tier,
                pool_selector: self.settings.pools.get("gpu"),
                node: job.node.as_deref(),
                ttl_seconds_after_finished: self.settings.ttl_seconds_after_finished,
                network: false,
            };
            cluster.push(job_object(&job, &params));
        }
    }
}

/// What the cluster would have to place on each node: the requests of the pinned pods.
fn load_per_node(cluster: &[K8sJob]) -> HashMap<String, Resources> {
    let mut load: HashMap<String, Resources> = HashMap::new();
    for job in cluster {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let affinity = pod.affinity.as_ref().expect("admitted pods are pinned");
        let term = &affinity
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let node = term.match_fields.as_ref().unwrap()[0]
            .values
            .as_ref()
            .unwrap()[0]
            .clone();
        let requests = pod.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        let need = Resources {
            millicpus: parse_millicpus(&requests["cpu"].0).unwrap(),
            memory: parse_bytes(&requests["memory"].0).unwrap(),
            gpus: requests
                .get("nvidia.com/gpu")
                .map(|q| parse_bytes(&q.0).unwrap() as u32)
                .unwrap_or(0),
        };
        let entry = load.entry(node).or_default();
        *entry = entry.plus(&need);
    }
    load
}

fn assert_fits(world: &World, cluster: &[K8sJob]) {
    let capacity: BTreeMap<&str, Resources> = world.config.pools[0]
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.capacity))
        .collect();
    for (node, load) in load_per_node(cluster) {
        assert!(
            load.fits_in(&capacity[node.as_str()]),
            "node {node} over-committed: {load} > {}",
            capacity[node.as_str()]
        );
    }
}

#[test]
fn admission_fits_one_node_across_namespaces_and_survives_a_restart() {
    let w = world();
    assert_eq!(
        w.config.pools[0]
            .nodes
            .iter()
            .map(|n| n.capacity.gpus)
            .collect::<Vec<_>>(),
        [4, 4, 8]
    );
    let mut now = 1_000;
    // 2 gpu8 jobs (only gpu-c can ever hold one), 12 gpu1, 4 gpu2, spread over 5 queues.
    for i in 0..18 {
        let tier = match i {
            0 | 9 => "gpu8",
            _ if i % 4 == 0 => "gpu2",
            _ => "gpu1",
        };
        w.submit(QUEUES[i % QUEUES.len()], tier, now);
        now += 1;
    }
    let mut scheduler = Scheduler::load(&w.store, w.config.clone(), now).unwrap();
    let mut cluster = Vec::new();
    let admitted = scheduler.admit(&w.store, now).unwrap();
    assert!(!admitted.is_empty());
    w.create_jobs(&mut cluster);
    assert_eq!(
        cluster.len(),
        admitted.len(),
        "one Job per admitted job, none for queued ones"
    );
    assert_fits(&w, &cluster);
    let gpu8_running = admitted
        .iter()
        .filter(|a| w.store.get(&a.job_id).unwrap().unwrap().tier == "gpu8")
        .count();
    assert!(gpu8_running <= 1, "one 8-GPU node, at most one gpu8 job");
    let namespaces: std::collections::BTreeSet<_> = cluster
        .iter()
        .map(|j| j.metadata.namespace.clone().unwrap())
        .collect();
    assert!(
        namespaces.len() >= 3,
        "jobs land in their queues' namespaces: {namespaces:?}"
    );
    for ns in &namespaces {
        assert!(ns.starts_with("ml-team-"), "{ns}");
    }
    let queued = w
        .store
        .list(&JobFilter {
            states: vec![JobState::Ready],
            ..JobFilter::default()
        })
        .unwrap();
    assert!(
        !queued.is_empty(),
        "the rest waits in strata, not in the cluster"
    );

    // Agent restart: a new scheduler from the store; the cluster's Jobs are adopted (same
    // names), nothing is created twice and nothing new fits until something ends.
    drop(scheduler);
    now += 10;
    let mut scheduler = Scheduler::load(&w.store, w.config.clone(), now).unwrap();
    assert_eq!(scheduler.running_len(), cluster.len());
    assert!(
        scheduler.admit(&w.store, now).unwrap().is_empty(),
        "full before and after"
    );
    let before = cluster.len();
    w.create_jobs(&mut cluster);
    assert_eq!(cluster.len(), before, "restart creates nothing twice");

    // One job ends (its Job reported an outcome): its node's room goes to the next job.
    let done_name = cluster[0].metadata.name.clone().unwrap();
    let done_id = cluster[0].metadata.labels.as_ref().unwrap()[LABEL_JOB]
        .parse()
        .unwrap();
    w.store
        .finish(
            &done_id,
            strata_queue::EndCause::Exited,
            Default::default(),
            now,
        )
        .unwrap();
    cluster.retain(|j| j.metadata.name.as_deref() != Some(done_name.as_str()));
    now += 1;
    let next = scheduler.admit(&w.store, now).unwrap();
    assert!(!next.is_empty(), "freed capacity is used");
    w.create_jobs(&mut cluster);
    assert_fits(&w, &cluster);
}

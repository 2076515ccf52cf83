//! Admission with Kubernetes nodes, against the test cluster: strata's Scheduler over the
//! pool's nodes as the backend's Node watcher reports them, jobs of many queues in many
//! namespaces launched through the backend, and an agent restart that rebuilds its view from
//! the job store and the cluster's Jobs. What is checked is what the code decided (the
//! Scheduler's admissions, the backend's launches and adoptions) and what the cluster holds
//! (its Jobs, and where its own scheduler bound their pods: a pod pinned to a node without
//! room for it stays unbound, Unschedulable).

mod kube_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strata_config::Config;
use strata_kube::objects::managed_selector;
use strata_kube::{connect, AttemptStatus, Connection, KubeBackend, KubeSettings};
use strata_oci::Digest;
use strata_queue::Pool;
use strata_queue::{
    Admission, Job, JobFilter, JobId, JobState, JobStore, NewJob, Scheduler, SchedulerConfig,
};

use kube_support::{add_node, cluster, namespace, unique};

const WAIT: Duration = Duration::from_secs(60);
const QUEUES: [&str; 5] = ["team-a", "team-b", "team-c", "team-d", "team-e"];
const POOL_LABEL: &str = "strata-admission/pool";

struct World {
    dir: tempfile::TempDir,
    store: JobStore,
    config: SchedulerConfig,
    settings: KubeSettings,
    client: Client,
    /// Queue → its namespace.
    namespaces: BTreeMap<String, String>,
    /// The pool's nodes by name, with their GPUs.
    nodes: BTreeMap<String, u32>,
}

/// Three nodes of 4, 4 and 8 GPUs in a pool of their own, a namespace per queue, and the
/// project's `strata.toml` mapping them.
async fn world() -> World {
    let kc = cluster();
    let connection = Connection::Kubeconfig {
        path: Some(kc),
        context: None,
    };
    let client = connect(&connection)
        .await
        .expect("connect to the test cluster");
    let label = unique("adm");
    let mut nodes = BTreeMap::new();
    for (prefix, gpus) in [("adm-a", 4), ("adm-b", 4), ("adm-c", 8)] {
        let name = unique(prefix);
        add_node(&client, &name, gpus, &[(POOL_LABEL, &label)]).await;
        nodes.insert(name, gpus);
    }
    let mut namespaces = BTreeMap::new();
    for q in QUEUES {
        namespaces.insert(q.to_string(), namespace(&client, &format!("adm-{q}")).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, strata_toml(&label, &namespaces)).unwrap();
    let file_config = Config::from_file(&file).unwrap();
    let config = SchedulerConfig::from_config(&file_config).unwrap();
    let settings = KubeSettings::from_config(&file_config).unwrap();
    let store = JobStore::open(&dir.path().join("strata.db")).unwrap();
    World {
        dir,
        store,
        config,
        settings,
        client,
        namespaces,
        nodes,
    }
}

fn strata_toml(label: &str, namespaces: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for q in namespaces.keys() {
        text.push_str(&format!("[queues.{q}]\n"));
    }
    text.push_str(&format!(
        "[kubernetes]\nregistry = \"reg.example.com/ml/envs\"\n[kubernetes.pools.gpu]\nnode_selector = {{ \"{POOL_LABEL}\" = \"{label}\" }}\n"
    ));
    for (q, ns) in namespaces {
        text.push_str(&format!("[kubernetes.queues.{q}]\nnamespace = \"{ns}\"\n"));
    }
    text
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

    fn jobs_in(&self, state: JobState) -> Vec<Job> {
        let filter = JobFilter {
            states: vec![state],
            ..JobFilter::default()
        };
        self.store.list(&filter).unwrap()
    }

    fn job(&self, id: &JobId) -> Job {
        self.store.get(id).unwrap().expect("job in the store")
    }

    /// A backend watching the queues' namespaces and the pool's nodes, as the agent starts
    /// one.
    fn backend(&self) -> KubeBackend {
        let home = self.dir.path().join("home");
        let backend = KubeBackend::new(self.client.clone(), self.settings.clone(), home);
        backend.start(&self.namespaces.values().cloned().collect());
        backend
    }

    /// The pools as the backend's Node watcher reports them, once it reports every node.
    async fn watched_pools(&self, backend: &KubeBackend) -> Vec<Pool> {
        let start = std::time::Instant::now();
        loop {
            let pools = backend.watched_pools();
            let seen: Option<BTreeMap<String, u32>> = pools.as_ref().map(|p| {
                p.iter()
                    .flat_map(|pool| &pool.nodes)
                    .map(|n| (n.name.clone(), n.capacity.gpus))
                    .collect()
            });
            if seen.as_ref() == Some(&self.nodes) {
                return pools.unwrap_or_default();
            }
            assert!(
                start.elapsed() < WAIT,
                "the Node watcher reports {seen:?}, expected {:?}",
                self.nodes
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Strata's Jobs in the queues' namespaces: (name, uid, job id).
    async fn cluster_jobs(&self) -> BTreeSet<(String, String, String)> {
        let mut found = BTreeSet::new();
        for ns in self.namespaces.values() {
            let api: Api<K8sJob> = Api::namespaced(self.client.clone(), ns);
            let list = api
                .list(&ListParams::default().labels(&managed_selector()))
                .await
                .expect("list Jobs");
            for job in list {
                let id = job.labels()["strata.dev/job"].clone();
                found.insert((job.name_any(), job.uid().unwrap_or_default(), id));
            }
        }
        found
    }

    /// Plays the kubelet: the pod's container exited 0.
    async fn pod_succeeds(&self, job: &Job, pod: &str) {
        let ns = self.settings.namespace(&job.queue);
        let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:00Z"}}}]}});
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("patch pod status");
    }
}

/// What the agent does with each admission: launches the job's Job through the backend.
/// Returns whether each was adopted (it existed already).
async fn launch(w: &World, backend: &KubeBackend, admitted: &[JobId]) -> Vec<bool> {
    let mut adopted = Vec::new();
    for id in admitted {
        let job = w.job(id);
        let image = backend
            .image_ref(job.image_digest.as_ref().unwrap())
            .unwrap();
        let launched = backend.launch(&job, &image, false).await.expect("launch");
        adopted.push(launched.adopted);
    }
    adopted
}

/// Waits until the attempt's pod is bound by the cluster's scheduler; (node, pod). Fails if
/// the cluster finds no room for it (Unschedulable) or does not bind it in time.
async fn bound(backend: &KubeBackend, job: &Job) -> (String, String) {
    let status = backend
        .wait_status(job, WAIT, |s| !matches!(s, AttemptStatus::Waiting))
        .await;
    match status {
        Some(AttemptStatus::Scheduled { node, pod })
        | Some(AttemptStatus::Running { node, pod }) => (node, pod),
        other => panic!("job {} ({}) was not bound: {other:?}", job.id, job.tier),
    }
}

/// Every admitted job's pod is bound by the cluster to the node the Scheduler chose.
async fn assert_bound_where_admitted(w: &World, backend: &KubeBackend, admitted: &[Admission]) {
    for a in admitted {
        let (node, _) = bound(backend, &w.job(&a.job_id)).await;
        assert_eq!(
            node, a.node,
            "job {} bound elsewhere than admitted",
            a.job_id
        );
    }
}

fn ids(admitted: &[Admission]) -> Vec<JobId> {
    admitted.iter().map(|a| a.job_id.clone()).collect()
}

fn job_ids(jobs: &BTreeSet<(String, String, String)>) -> BTreeSet<String> {
    jobs.iter().map(|(_, _, id)| id.clone()).collect()
}

fn id_strings(ids: &[JobId]) -> BTreeSet<String> {
    ids.iter().map(JobId::to_string).collect()
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn admission_on_the_watched_nodes_creates_what_fits_and_survives_a_restart() {
    let mut w = world().await;
    let backend = w.backend();
    w.config.pools = w.watched_pools(&backend).await;
    let mut now = 1_000;
    // 2 gpu8 jobs (only the 8-GPU node can ever hold one), 12 gpu1, 4 gpu2, over 5 queues:
    // 30 GPUs asked of 16.
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
    let admitted = scheduler.admit(&w.store, now).unwrap();
    assert!(!admitted.is_empty());
    assert!(
        !w.jobs_in(JobState::Ready).is_empty(),
        "not everything fits"
    );
    let adopted = launch(&w, &backend, &ids(&admitted)).await;
    assert!(adopted.iter().all(|a| !a), "created, not adopted");

    // The cluster holds a Job for each admitted job and none for the queued ones, in the
    // namespaces of their queues; its scheduler binds each pod where strata placed it.
    let created = w.cluster_jobs().await;
    assert_eq!(created.len(), admitted.len(), "one Job per admitted job");
    assert_eq!(job_ids(&created), id_strings(&ids(&admitted)));
    let namespaces: BTreeSet<String> = admitted
        .iter()
        .map(|a| w.settings.namespace(&w.job(&a.job_id).queue).to_string())
        .collect();
    assert!(
        namespaces.len() >= 3,
        "jobs of several queues ran: {namespaces:?}"
    );
    assert_bound_where_admitted(&w, &backend, &admitted).await;

    // Agent restart: a new Scheduler from the store, a new backend watching the cluster. The
    // Jobs are adopted (the same objects), nothing new fits until something ends.
    drop(scheduler);
    drop(backend);
    now += 10;
    let backend = w.backend();
    let mut scheduler = Scheduler::load(&w.store, w.config.clone(), now).unwrap();
    assert_eq!(scheduler.running_len(), admitted.len());
    assert!(scheduler.admit(&w.store, now).unwrap().is_empty(), "full");
    let running: Vec<JobId> = w
        .jobs_in(JobState::Running)
        .into_iter()
        .map(|j| j.id)
        .collect();
    let adopted = launch(&w, &backend, &running).await;
    assert!(adopted.iter().all(|a| *a), "adopted, not created again");
    assert_eq!(w.cluster_jobs().await, created, "the same Job objects");
    assert_bound_where_admitted(&w, &backend, &admitted).await;

    // One job ends (its pod succeeded; the agent records the outcome the backend saw): its
    // room on its node goes to jobs waiting, and the cluster binds them there.
    let done = w.job(&admitted[0].job_id);
    let (_, pod) = bound(&backend, &done).await;
    w.pod_succeeds(&done, &pod).await;
    let end = backend.wait(&done, WAIT).await.expect("the end is seen");
    assert_eq!(end.outcome.exit_code, Some(0), "{end:?}");
    w.store
        .finish(&done.id, end.end_cause(), end.outcome, now)
        .unwrap();
    backend.forget(&done);
    now += 1;
    let next = scheduler.admit(&w.store, now).unwrap();
    assert!(!next.is_empty(), "freed capacity is used");
    assert!(
        next.iter().all(|a| a.node == admitted[0].node),
        "only the freed node has room: {next:?}"
    );
    launch(&w, &backend, &ids(&next)).await;
    assert_bound_where_admitted(&w, &backend, &next).await;
    let all: Vec<JobId> = ids(&admitted).into_iter().chain(ids(&next)).collect();
    assert_eq!(job_ids(&w.cluster_jobs().await), id_strings(&all));
    cleanup(&backend, &w, &all).await;
}

/// Deletes the test's Jobs (their pods hold the nodes' room in the shared cluster).
async fn cleanup(backend: &KubeBackend, w: &World, ids: &[JobId]) {
    for id in ids {
        backend
            .cancel(&w.job(id), Duration::from_secs(0))
            .await
            .expect("cancel");
    }
}

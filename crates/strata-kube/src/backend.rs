//! The Kubernetes backend: creates one Job per attempt (adopting one that already exists),
//! knows how each attempt is doing from the watchers, cancels with the pods confirmed gone,
//! lists what strata has in the cluster (for adoption after a restart) and reads the pools'
//! node capacity.
//!
//! Admission stays in strata: nothing is created for a queued job; the agent calls
//! [`KubeBackend::launch`] only for a job the [`strata_queue::Scheduler`] placed on one node (see
//! [`KubeBackend::pools`] for the nodes it places on). Errors name what to fix
//! ([`KubeError`]); a failed launch creates nothing, so the job can stay queued.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use strata_oci::Digest;

use crate::attempts::{Expected, PodStarted, WatchState};
use crate::capacity::{spawn_pool_watchers, PoolWatch};
use crate::classify::{AttemptStatus, EndKind, KubeOutcome};
use crate::config::KubeSettings;
use crate::nodes::{assign, label_selector, pool_node};
use crate::objects::{
    job_object, managed_selector, AttemptKey, JobObjectParams, MANAGED_BY, MANAGER,
};
use crate::watch::{spawn_watchers, Change, Relist};
use strata_queue::Pool;
use strata_queue::{Job, JobId, Outcome};

/// How long cancel waits for the pods to be gone after forcing their deletion.
const FORCED_GONE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot start the async runtime of the Kubernetes backend: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("kubeconfig {files}: no context `{context}` (its contexts: {known}); name one of them with `kubernetes.context`")]
    NoContext {
        files: String,
        context: String,
        known: String,
    },
    #[error("in-cluster configuration: {0}; run the agent in a pod with a ServiceAccount (`strata deploy`) or set `kubernetes.kubeconfig`")]
    InCluster(String),
    #[error("the Kubernetes API server {server} (from {source_desc}) did not answer: {detail}; check that the cluster is up and that `server:` is right")]
    Unreachable {
        server: String,
        source_desc: String,
        detail: String,
    },
    #[error("the Kubernetes API server {server} (from {source_desc}) refused our credentials: {detail}; the token or client certificate is wrong or expired")]
    Unauthorized {
        server: String,
        source_desc: String,
        detail: String,
    },
    #[error("namespace `{namespace}` (of queue `{queue}`) does not exist: create it (`strata deploy --teams` creates it with its Role) or map the queue to an existing namespace with [kubernetes.queues.{queue}] namespace = \"...\"")]
    NamespaceMissing { namespace: String, queue: String },
    #[error("forbidden: {user} may not {verb} {resource} in namespace {namespace}; grant it with the Role `strata deploy` renders for {namespace}, bound to that ServiceAccount. The API said: {message}")]
    Forbidden {
        user: String,
        verb: String,
        resource: String,
        namespace: String,
        message: String,
    },
    #[error("{namespace}/{name} exists but is not this attempt's Job (labels {found:?}); delete it or rename it")]
    NameTaken {
        namespace: String,
        name: String,
        found: BTreeMap<String, String>,
    },
    #[error("{namespace}/{name}, the Job of an earlier try of this attempt, is still being deleted; the start is tried again")]
    StillDeleting { namespace: String, name: String },
    #[error("job {job}: the image {image:?} is not a digest reference (REG/REPO@sha256:...); jobs run by digest")]
    NotByDigest { job: String, image: String },
    #[error("job {job} has no image digest; resolve its environment before launching")]
    NoDigest { job: String },
    #[error("`kubernetes.registry` is not set: say where job images are pushed (REG/REPO)")]
    NoRegistry,
    #[error("unknown pool `{0}`: add [kubernetes.pools.{0}] node_selector = {{ ... }}")]
    UnknownPool(String),
    #[error("{verb} {resource} in namespace {namespace}: {source}")]
    Api {
        verb: String,
        resource: String,
        namespace: String,
        /// Boxed: kube's error is large and would make every Result large.
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cancel {namespace}/{name}: pods {pods:?} are still there after {waited:?}")]
    NotGone {
        namespace: String,
        name: String,
        pods: Vec<String>,
        waited: Duration,
    },
}

/// One API call, for turning its failure into a [`KubeError`].
struct Call<'a> {
    verb: &'a str,
    resource: &'a str,
    namespace: &'a str,
    queue: Option<&'a str>,
}

impl Call<'_> {
    fn error(&self, source: kube::Error) -> KubeError {
        if let kube::Error::Api(status) = &source {
            if status.code == 403 {
                return KubeError::Forbidden {
                    user: forbidden_user(&status.message),
                    verb: self.verb.into(),
                    resource: self.resource.into(),
                    namespace: self.namespace.into(),
                    message: status.message.clone(),
                };
            }
            let ns_missing = status.code == 404
                && (status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.kind == "namespaces")
                    || status.message.starts_with("namespaces \""));
            if ns_missing {
                return KubeError::NamespaceMissing {
                    namespace: self.namespace.into(),
                    queue: self.queue.unwrap_or(self.namespace).into(),
                };
            }
        }
        KubeError::Api {
            verb: self.verb.into(),
            resource: self.resource.into(),
            namespace: self.namespace.into(),
            source: Box::new(source),
        }
    }
}

/// `User "system:serviceaccount:a:b" cannot ...` → `system:serviceaccount:a:b`.
pub fn forbidden_user(message: &str) -> String {
    message
        .split_once("User \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(user, _)| format!("user `{user}`"))
        .unwrap_or_else(|| "this agent's user".into())
}

/// A strata Job found in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterJob {
    pub namespace: String,
    pub name: String,
    pub job_id: JobId,
    pub attempt: u32,
    /// The attempt's key as text (`j-...-a1`), as the agent keys its attempts.
    pub key: String,
    /// Its Job has a Complete or Failed condition.
    pub finished: bool,
    /// The Job's uid: a Job deleted and created again under the same name has another.
    pub uid: Option<String>,
}

/// The result of a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launched {
    pub namespace: String,
    pub name: String,
    pub key: AttemptKey,
    /// The Job already existed (created before an agent restart) and was adopted.
    pub adopted: bool,
    /// The uid the API server gave the Job: recorded, so that a restarted agent follows
    /// this object only.
    pub uid: Option<String>,
}

/// The Kubernetes backend.
#[derive(Clone)]
pub struct KubeBackend {
    client: Client,
    settings: Arc<KubeSettings>,
    state: Arc<WatchState>,
    capacity: Arc<PoolWatch>,
    home: PathBuf,
}

impl KubeBackend {
    /// A backend on `client`; job logs go to `home/logs/<job>.log`. Call
    /// [`KubeBackend::start`] on a tokio runtime to begin watching.
    pub fn new(client: Client, settings: KubeSettings, home: PathBuf) -> KubeBackend {
        let capacity = Arc::new(PoolWatch::new(settings.pools.keys().cloned()));
        KubeBackend {
            client,
            settings: Arc::new(settings),
            state: Arc::new(WatchState::default()),
            capacity,
            home,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    pub fn state(&self) -> &Arc<WatchState> {
        &self.state
    }

    /// Starts the Job and Pod watchers of these namespaces, the Node watchers of the pools
    /// and the log streamer. Must run inside a tokio runtime; the tasks run until the
    /// runtime stops.
    pub fn start(&self, namespaces: &BTreeSet<String>) -> Vec<tokio::task::JoinHandle<()>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state.on_pod_started(tx);
        let mut tasks: Vec<_> = namespaces
            .iter()
            .flat_map(|ns| spawn_watchers(&self.client, ns, &self.state))
            .collect();
        tasks.extend(spawn_pool_watchers(
            &self.client,
            &self.settings.pools,
            &self.capacity,
        ));
        tasks.push(tokio::spawn(stream_logs(
            self.client.clone(),
            self.home.clone(),
            rx,
        )));
        tasks
    }

    /// The namespace of a job's queue.
    pub fn namespace_of(&self, job: &Job) -> String {
        self.settings.namespace(&job.queue).to_string()
    }

    /// `REG/REPO@sha256:...` of an image in the configured registry.
    pub fn image_ref(&self, digest: &Digest) -> Result<String, KubeError> {
        let registry = self
            .settings
            .registry
            .as_deref()
            .ok_or(KubeError::NoRegistry)?;
        Ok(crate::objects::image_ref(registry, digest))
    }

    /// The Job object for the job's current attempt; `network`: whether its queue gives it
    /// a network.
    pub fn job_object(&self, job: &Job, image: &str, network: bool) -> Result<K8sJob, KubeError> {
        let digest = job_digest(job)?;
        if !image.ends_with(&format!("@{digest}")) {
            return Err(KubeError::NotByDigest {
                job: job.id.to_string(),
                image: image.to_string(),
            });
        }
        let namespace = self.namespace_of(job);
        let tier = self.settings.tier(&job.tier);
        let params = JobObjectParams {
            namespace: &namespace,
            image,
            digest,
            tier: &tier,
            pool_selector: job.pool.as_ref().and_then(|p| self.settings.pools.get(p)),
            node: job.node.as_deref(),
            ttl_seconds_after_finished: self.settings.ttl_seconds_after_finished,
            network,
            outputs_claim: self.settings.outputs_claim(&job.queue),
        };
        if !job.outputs.is_empty() && params.outputs_claim.is_none() {
            tracing::warn!(
                "job {}: queue {} names no outputs_pvc: its --output directories are not kept",
                job.id,
                job.queue
            );
        }
        Ok(job_object(job, &params))
    }

    /// Creates the Job of the job's current attempt, or adopts the one that exists (created
    /// before a restart). `image` is `REG/REPO@sha256:...` (see [`KubeBackend::image_ref`]).
    pub async fn launch(
        &self,
        job: &Job,
        image: &str,
        network: bool,
    ) -> Result<Launched, KubeError> {
        let object = self.job_object(job, image, network)?;
        let namespace = self.namespace_of(job);
        let key = AttemptKey::of(job);
        let name = key.object_name();
        let api: Api<K8sJob> = Api::namespaced(self.client.clone(), &namespace);
        let call = Call {
            verb: "create",
            resource: "jobs",
            namespace: &namespace,
            queue: Some(&job.queue),
        };
        let (adopted, uid) = match api.create(&PostParams::default(), &object).await {
            Ok(created) => (false, created.uid()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api.get(&name).await.map_err(|e| {
                    Call {
                        verb: "get",
                        ..call
                    }
                    .error(e)
                })?;
                let labels = existing.labels();
                let ours = AttemptKey::from_labels(labels).as_ref() == Some(&key)
                    && labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGER);
                if !ours {
                    return Err(KubeError::NameTaken {
                        namespace,
                        name,
                        found: labels.clone(),
                    });
                }
                // The Job of an earlier try of this attempt (cancelled after Unschedulable)
                // that is still going: adopting it would follow a Job about to vanish.
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(KubeError::StillDeleting { namespace, name });
                }
                (true, existing.uid())
            }
            Err(e) => return Err(call.error(e)),
        };
        // From now on only this Job (and its pods) is the attempt's: a Job carrying the
        // same labels elsewhere, or under another name, is not.
        self.state.expect(
            &key,
            Expected {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: uid.clone(),
            },
        );
        Ok(Launched {
            namespace,
            name,
            key,
            adopted,
            uid,
        })
    }

    /// How the job's current attempt is doing, as last seen by the watchers (`None`:
    /// nothing seen yet). Never blocks.
    pub fn status(&self, job: &Job) -> Option<AttemptStatus> {
        self.state.status(&self.followed(job))
    }

    /// The job's attempt key, making sure the watchers know which Job is its. An agent
    /// that restarted follows attempts it did not launch: their Job is the one in the
    /// job's namespace under the name strata gives, with the uid recorded at its creation
    /// ([`Job::kube_uid`]; by name only when none was recorded).
    fn followed(&self, job: &Job) -> AttemptKey {
        let key = AttemptKey::of(job);
        self.state.expect_if_unknown(
            &key,
            Expected {
                namespace: self.namespace_of(job),
                name: key.object_name(),
                uid: job.kube_uid.clone(),
            },
        );
        key
    }

    /// The end of the job's current attempt once it ended. Never blocks.
    pub fn poll(&self, job: &Job) -> Option<KubeOutcome> {
        self.state.outcome(&self.followed(job))
    }

    /// Waits (on watch events, no polling) until the attempt ended or `timeout` passed.
    pub async fn wait(&self, job: &Job, timeout: Duration) -> Option<KubeOutcome> {
        let key = self.followed(job);
        self.state.wait_for(timeout, |s| s.outcome(&key)).await
    }

    /// Waits until the attempt's status satisfies `check`, or `timeout` passed.
    pub async fn wait_status(
        &self,
        job: &Job,
        timeout: Duration,
        mut check: impl FnMut(&AttemptStatus) -> bool,
    ) -> Option<AttemptStatus> {
        let key = self.followed(job);
        self.state
            .wait_for(timeout, |s| s.status(&key).filter(|st| check(st)))
            .await
    }

    /// Forgets the attempt once its outcome is recorded (the cluster removes the finished
    /// Job after `ttl_seconds_after_finished`).
    pub fn forget(&self, job: &Job) {
        self.state.forget(&AttemptKey::of(job));
    }

    /// Cancels the job's current attempt: deletes its Job (Foreground: the garbage collector
    /// deletes the pods first), asks the pods to stop within `grace` (the kubelet's SIGTERM,
    /// grace, SIGKILL), then deletes what is left with grace 0, and returns once no pod of
    /// the attempt remains. The outcome is what was seen before the deletion, or
    /// "cancelled".
    pub async fn cancel(&self, job: &Job, grace: Duration) -> Result<KubeOutcome, KubeError> {
        let namespace = self.namespace_of(job);
        let key = AttemptKey::of(job);
        let name = key.object_name();
        let selector = key.selector();
        let before = self.poll(job);
        let jobs: Api<K8sJob> = Api::namespaced(self.client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let foreground = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        match jobs.delete(&name, &foreground).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(self.call("delete", "jobs", &namespace).error(e)),
        }
        let graceful = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        self.delete_pods(&pods, &namespace, &selector, &graceful)
            .await?;
        let mut left = self.pods_gone(&pods, &selector, grace).await?;
        if !left.is_empty() {
            // Without a kubelet to confirm (node gone, or none at all) a pod stays
            // Terminating: force it, as the kubelet would have after the grace period.
            let force = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            self.delete_pods(&pods, &namespace, &selector, &force)
                .await?;
            left = self.pods_gone(&pods, &selector, FORCED_GONE_WAIT).await?;
        }
        if !left.is_empty() {
            return Err(KubeError::NotGone {
                namespace,
                name,
                pods: left,
                waited: grace + FORCED_GONE_WAIT,
            });
        }
        let outcome = before.unwrap_or_else(|| KubeOutcome {
            kind: EndKind::Exited,
            outcome: Outcome {
                reason: Some("cancelled".into()),
                ..Outcome::default()
            },
            node: None,
        });
        Ok(outcome)
    }

    fn call<'a>(&self, verb: &'a str, resource: &'a str, namespace: &'a str) -> Call<'a> {
        Call {
            verb,
            resource,
            namespace,
            queue: None,
        }
    }

    async fn delete_pods(
        &self,
        pods: &Api<Pod>,
        namespace: &str,
        selector: &str,
        params: &DeleteParams,
    ) -> Result<(), KubeError> {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| self.call("list", "pods", namespace).error(e))?;
        for pod in list {
            match pods.delete(&pod.name_any(), params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.call("delete", "pods", namespace).error(e)),
            }
        }
        Ok(())
    }

    /// Watches the attempt's pods until none is left or `timeout` passed; returns the names
    /// still there.
    async fn pods_gone(
        &self,
        pods: &Api<Pod>,
        selector: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, KubeError> {
        let config = watcher::Config::default().labels(selector);
        let mut stream = watcher::watcher(pods.clone(), config).boxed();
        let mut relist = Relist::default();
        let mut present: BTreeSet<String> = BTreeSet::new();
        let mut synced = false;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let Ok(Some(event)) = next else {
                break;
            };
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!("watching pods {selector}: {e}");
                    continue;
                }
            };
            match relist.apply(event) {
                None => {}
                Some(Change::Listed(listed)) => {
                    present = listed.iter().map(|p| p.name_any()).collect();
                    synced = true;
                }
                Some(Change::Applied(p)) => {
                    present.insert(p.name_any());
                }
                Some(Change::Deleted(p)) => {
                    present.remove(&p.name_any());
                }
            }
            if synced && present.is_empty() {
                return Ok(Vec::new());
            }
        }
        Ok(present.into_iter().collect())
    }

    /// Every strata Job in these namespaces (for adoption after a restart).
    pub async fn list(&self, namespaces: &BTreeSet<String>) -> Result<Vec<ClusterJob>, KubeError> {
        let mut found = Vec::new();
        for namespace in namespaces {
            let api: Api<K8sJob> = Api::namespaced(self.client.clone(), namespace);
            let list = api
                .list(&ListParams::default().labels(&managed_selector()))
                .await
                .map_err(|e| self.call("list", "jobs", namespace).error(e))?;
            found.extend(list.into_iter().filter_map(|j| cluster_job(namespace, &j)));
        }
        Ok(found)
    }

    /// The pools as the Node watchers last saw them (`None` until each is listed once).
    pub fn watched_pools(&self) -> Option<Vec<Pool>> {
        self.capacity.pools()
    }

    /// The nodes of every configured pool with their allocatable capacity.
    pub async fn pools(&self) -> Result<Vec<Pool>, KubeError> {
        let mut pools = Vec::new();
        for name in self.settings.pools.keys() {
            pools.push(self.pool(name).await?);
        }
        Ok(assign(pools))
    }

    /// The nodes of one pool (by its label selector) with their allocatable capacity.
    pub async fn pool(&self, name: &str) -> Result<Pool, KubeError> {
        let labels = self
            .settings
            .pools
            .get(name)
            .ok_or_else(|| KubeError::UnknownPool(name.to_string()))?;
        let api: Api<K8sNode> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(&label_selector(labels)))
            .await
            .map_err(|e| self.call("list", "nodes", "(cluster scope)").error(e))?;
        let mut nodes: Vec<_> = list.iter().map(|n| pool_node(name, n)).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Pool {
            name: name.to_string(),
            nodes,
        })
    }
}

/// The digest of the job's image, resolved before admission.
pub fn job_digest(job: &Job) -> Result<&Digest, KubeError> {
    job.image_digest
        .as_ref()
        .ok_or_else(|| KubeError::NoDigest {
            job: job.id.to_string(),
        })
}

fn cluster_job(namespace: &str, job: &K8sJob) -> Option<ClusterJob> {
    let key = AttemptKey::from_labels(job.labels())?;
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    Some(ClusterJob {
        namespace: namespace.to_string(),
        name: job.name_any(),
        key: key.to_string(),
        job_id: key.job,
        attempt: key.attempt,
        finished,
        uid: job.uid(),
    })
}

/// Streams the logs of each pod that starts into its job's log file, one task per pod.
async fn stream_logs(
    client: Client,
    home: PathBuf,
    mut started: tokio::sync::mpsc::UnboundedReceiver<PodStarted>,
) {
    while let Some(pod) = started.recv().await {
        let path = strata_queue::log_path(&home, &pod.key.job);
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        tokio::spawn(async move {
            let result =
                crate::logs::stream_pod_logs(&api, &pod.namespace, &pod.pod, &path, true).await;
            if let Err(e) = result {
                tracing::warn!("job {}: {e}", pod.key);
            }
        });
    }
}

//! What strata's Jobs and pods are doing, from kube-runtime watchers (one per namespace and
//! kind, selected by `app.kubernetes.io/managed-by=strata`; no polling), and how an attempt
//! ended, from its Job's conditions and its pod's status ([`classify`]).
//!
//! The outcome of an attempt is kept once seen, so that the TTL controller (or anyone)
//! deleting the finished Job does not lose it before the agent has recorded it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::objects::{managed_selector, AttemptKey, CONTAINER};
use strata_queue::job::{EndCause, Outcome};

/// How an attempt ended, in Kubernetes' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// The container exited (any code).
    Exited,
    /// The container was killed for exceeding its memory limit.
    OomKilled,
    /// The kubelet evicted the pod (node pressure).
    Evicted,
    /// `activeDeadlineSeconds` ran out: the job's time limit.
    DeadlineExceeded,
    /// The image could not be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName).
    ImagePull,
    /// No node can take the pod (PodScheduled=False, reason Unschedulable).
    Unschedulable,
    /// The Job and its pods are gone without a recorded end (deleted by someone).
    Lost,
}

/// The end of an attempt: its kind and the outcome to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeOutcome {
    pub kind: EndKind,
    pub outcome: Outcome,
    /// The node its pod was bound to, if any.
    pub node: Option<String>,
}

impl KubeOutcome {
    fn new(kind: EndKind, outcome: Outcome, node: Option<String>) -> KubeOutcome {
        KubeOutcome {
            kind,
            outcome,
            node,
        }
    }

    /// Why it stopped, for the job store.
    pub fn end_cause(&self) -> EndCause {
        match self.kind {
            EndKind::DeadlineExceeded => EndCause::TimedOut,
            _ => EndCause::Exited,
        }
    }

    /// Nothing of the job ran and nothing is wrong with the job itself: it may wait in the
    /// queue again (the cluster's capacity was not what strata saw).
    pub fn nothing_ran(&self) -> bool {
        self.kind == EndKind::Unschedulable
    }
}

/// Where an attempt is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AttemptStatus {
    /// The Job exists; no pod is bound yet.
    Waiting,
    /// Its pod is bound to a node and not running yet.
    Scheduled { node: String, pod: String },
    /// Its container runs.
    Running { node: String, pod: String },
    /// It ended.
    Finished(KubeOutcome),
}

const IMAGE_PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// The registry host of an image reference (`docker.io` when it names none).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn job_condition<'a>(
    job: &'a K8sJob,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

/// How one attempt is doing, from its Job (if still there) and its pods.
pub fn classify(job: Option<&K8sJob>, pods: &[&Pod]) -> AttemptStatus {
    let node = pods.iter().find_map(|p| node_of(p));
    if let Some(c) = job.and_then(|j| job_condition(j, "Failed")) {
        if c.reason.as_deref() == Some("DeadlineExceeded") {
            let outcome = Outcome {
                reason: Some(format!(
                    "timed out: {}",
                    c.message
                        .as_deref()
                        .unwrap_or("the job ran longer than its time limit")
                )),
                ..Outcome::default()
            };
            return AttemptStatus::Finished(KubeOutcome::new(
                EndKind::DeadlineExceeded,
                outcome,
                node,
            ));
        }
    }
    for pod in pods {
        if let Some(end) = pod_end(pod) {
            return AttemptStatus::Finished(end);
        }
    }
    for pod in pods {
        if let Some(end) = image_pull_failure(pod) {
            return AttemptStatus::Finished(end);
        }
        if let Some(end) = unschedulable(pod) {
            return AttemptStatus::Finished(end);
        }
    }
    let live = pods
        .iter()
        .find(|p| !matches!(phase(p), "Succeeded" | "Failed"));
    // The Job's condition is the end only when no pod is seen live: the Job and Pod
    // watchers are separate streams, so the Job controller's "Failed" may arrive before the
    // pod's own end, and settling on it then would lose the exit code for good.
    if live.is_none() {
        if let Some(end) = job.and_then(|j| job_end_without_pods(j, node.clone())) {
            return AttemptStatus::Finished(end);
        }
    }
    match live {
        Some(pod) => {
            let name = pod.name_any();
            match (phase(pod), node_of(pod)) {
                ("Running", Some(node)) => AttemptStatus::Running { node, pod: name },
                (_, Some(node)) => AttemptStatus::Scheduled { node, pod: name },
                _ => AttemptStatus::Waiting,
            }
        }
        None => AttemptStatus::Waiting,
    }
}

/// A pod whose container terminated, or that the kubelet failed or evicted.
fn pod_end(pod: &Pod) -> Option<KubeOutcome> {
    let node = node_of(pod);
    let status = pod.status.as_ref();
    let pod_reason = status.and_then(|s| s.reason.as_deref());
    let pod_message = status.and_then(|s| s.message.clone());
    if phase(pod) == "Failed" && pod_reason == Some("Evicted") {
        let outcome = Outcome {
            reason: Some(format!(
                "evicted by the node: {}",
                pod_message.as_deref().unwrap_or("no message")
            )),
            ..Outcome::default()
        };
        return Some(KubeOutcome::new(EndKind::Evicted, outcome, node));
    }
    let terminated = container_status(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(t) = terminated {
        let oom = t.reason.as_deref() == Some("OOMKilled");
        let reason = if oom {
            Some("killed: out of memory (OOMKilled)".to_string())
        } else {
            t.message.clone()
        };
        let outcome = Outcome {
            exit_code: Some(t.exit_code),
            signal: t.signal,
            oom_killed: oom,
            reason,
        };
        let kind = if oom {
            EndKind::OomKilled
        } else {
            EndKind::Exited
        };
        return Some(KubeOutcome::new(kind, outcome, node));
    }
    match phase(pod) {
        // A pod that ended without its container's state (status patched, or lost).
        "Succeeded" => Some(KubeOutcome::new(
            EndKind::Exited,
            Outcome {
                exit_code: Some(0),
                ..Outcome::default()
            },
            node,
        )),
        "Failed" => {
            let reason = [pod_reason.map(str::to_string), pod_message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let outcome = Outcome {
                reason: Some(if reason.is_empty() {
                    "the pod failed without an exit code".into()
                } else {
                    reason
                }),
                ..Outcome::default()
            };
            Some(KubeOutcome::new(EndKind::Exited, outcome, node))
        }
        _ => None,
    }
}

fn image_pull_failure(pod: &Pod) -> Option<KubeOutcome> {
    let status = container_status(pod)?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !IMAGE_PULL_REASONS.contains(&reason) {
        return None;
    }
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| status.image.clone());
    let detail = waiting
        .message
        .as_deref()
        .unwrap_or("no message from the kubelet");
    let outcome = Outcome {
        reason: Some(format!(
            "{reason}: image {image} could not be pulled from registry {}: {detail}; check that it was pushed there (strata build --push) and that the cluster's nodes may pull from it",
            registry_of(&image)
        )),
        ..Outcome::default()
    };
    Some(KubeOutcome::new(EndKind::ImagePull, outcome, node_of(pod)))
}

fn unschedulable(pod: &Pod) -> Option<KubeOutcome> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    if condition.status != "False" || condition.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let outcome = Outcome {
        reason: Some(format!(
            "unschedulable: {}",
            condition
                .message
                .as_deref()
                .unwrap_or("no node can take the pod")
        )),
        ..Outcome::default()
    };
    Some(KubeOutcome::new(EndKind::Unschedulable, outcome, None))
}

/// A Job that finished while its pods are already gone.
fn job_end_without_pods(job: &K8sJob, node: Option<String>) -> Option<KubeOutcome> {
    if job_condition(job, "Complete").is_some() {
        let outcome = Outcome {
            exit_code: Some(0),
            ..Outcome::default()
        };
        return Some(KubeOutcome::new(EndKind::Exited, outcome, node));
    }
    let failed = job_condition(job, "Failed")?;
    let outcome = Outcome {
        reason: Some(format!(
            "{}: {}",
            failed.reason.as_deref().unwrap_or("Failed"),
            failed.message.as_deref().unwrap_or("the job failed")
        )),
        ..Outcome::default()
    };
    Some(KubeOutcome::new(EndKind::Exited, outcome, node))
}

/// A pod that started running, for the log streamer.
#[derive(Clone, Debug)]
pub struct PodStarted {
    pub key: AttemptKey,
    pub namespace: String,
    pub pod: String,
}

#[derive(Debug, Default)]
struct Tracked {
    job: Option<K8sJob>,
    /// The uid of the Job this entry follows: a launch retried under the same attempt key
    /// (after Unschedulable) creates a new Job of the same name, which must not inherit the
    /// end, pods or `forgotten` of the old one.
    job_uid: Option<String>,
    pods: BTreeMap<String, Pod>,
    /// Kept once seen: the end survives the deletion of the objects.
    ended: Option<KubeOutcome>,
    /// Pods whose logs are being streamed.
    streaming: std::collections::BTreeSet<String>,
    /// The agent recorded its end: dropped once its Job and pods are gone.
    forgotten: bool,
}

impl Tracked {
    fn droppable(&self) -> bool {
        self.forgotten && self.job.is_none() && self.pods.is_empty()
    }

    /// Starts following the Job with `uid`; what belonged to another Job is dropped, except
    /// pods the new Job owns (the pod watcher may have seen them first).
    fn follow(&mut self, uid: &str) {
        match &self.job_uid {
            Some(current) if current == uid => return,
            None => {
                self.job_uid = Some(uid.to_string());
                return;
            }
            Some(_) => {}
        }
        let pods = std::mem::take(&mut self.pods);
        *self = Tracked {
            job_uid: Some(uid.to_string()),
            pods: pods
                .into_iter()
                .filter(|(_, p)| owner_uid(p).as_deref() == Some(uid))
                .collect(),
            ..Tracked::default()
        };
    }

    /// The pods of the followed Job (all of them while its uid is not known).
    fn current_pods(&self) -> Vec<&Pod> {
        self.pods
            .values()
            .filter(|p| match (&self.job_uid, owner_uid(p)) {
                (Some(job), Some(owner)) => *job == owner,
                _ => true,
            })
            .collect()
    }
}

/// The uid of the Job that owns a pod (its controller owner reference).
fn owner_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Job")
        .map(|o| o.uid.clone())
}

#[derive(Debug, Default)]
struct Inner {
    attempts: HashMap<AttemptKey, Tracked>,
    /// Objects listed since the last `Init` of a (namespace, kind) watcher.
    init_jobs: HashMap<String, Vec<K8sJob>>,
    init_pods: HashMap<String, Vec<Pod>>,
    /// The last error of each watcher (namespace/kind), e.g. forbidden.
    errors: BTreeMap<String, String>,
}

impl Inner {
    /// Drops the attempt if it was forgotten and nothing of it is left in the cluster.
    fn prune(&mut self, key: &AttemptKey) {
        if self.attempts.get(key).is_some_and(Tracked::droppable) {
            self.attempts.remove(key);
        }
    }
}

/// The watched state of every attempt, shared between the watchers and the backend.
#[derive(Debug)]
pub struct WatchState {
    inner: Mutex<Inner>,
    generation: watch::Sender<u64>,
    started: Mutex<Option<mpsc::UnboundedSender<PodStarted>>>,
}

impl Default for WatchState {
    fn default() -> Self {
        WatchState {
            inner: Mutex::new(Inner::default()),
            generation: watch::channel(0).0,
            started: Mutex::new(None),
        }
    }
}

impl WatchState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (each update is one insert).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pods that start running are sent here (for log streaming).
    pub fn on_pod_started(&self, tx: mpsc::UnboundedSender<PodStarted>) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// The status of an attempt; `None` when nothing of it was seen.
    pub fn status(&self, key: &AttemptKey) -> Option<AttemptStatus> {
        let inner = self.lock();
        let tracked = inner.attempts.get(key)?;
        if let Some(end) = &tracked.ended {
            return Some(AttemptStatus::Finished(end.clone()));
        }
        let pods: Vec<&Pod> = tracked.current_pods();
        Some(classify(tracked.job.as_ref(), &pods))
    }

    /// The end of an attempt, once it ended.
    pub fn outcome(&self, key: &AttemptKey) -> Option<KubeOutcome> {
        match self.status(key)? {
            AttemptStatus::Finished(end) => Some(end),
            _ => None,
        }
    }

    /// Forgets an attempt (its outcome was recorded). It is dropped now if its Job and
    /// pods are gone, or else when they go (the TTL controller deletes them later): removed
    /// at once, the deletion events would bring it back, and the agent would keep an entry
    /// for every job it ever ran.
    pub fn forget(&self, key: &AttemptKey) {
        let mut inner = self.lock();
        if let Some(tracked) = inner.attempts.get_mut(key) {
            tracked.forgotten = true;
        }
        inner.prune(key);
    }

    /// How many attempts are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().attempts.len()
    }

    /// Pods of the attempt currently seen.
    pub fn pods(&self, key: &AttemptKey) -> Vec<String> {
        self.lock()
            .attempts
            .get(key)
            .map(|t| t.pods.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The watchers' last errors by `namespace/kind`.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.lock().errors.clone()
    }

    /// Waits until `check` gives a value or `timeout` passes; woken by every change.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&WatchState) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(value) = check(self) {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return check(self);
            }
        }
    }

    fn settle(&self, inner: &mut Inner, key: &AttemptKey) {
        let Some(tracked) = inner.attempts.get_mut(key) else {
            return;
        };
        if tracked.ended.is_some() {
            return;
        }
        let (status, bound) = {
            let pods = tracked.current_pods();
            let bound = pods
                .iter()
                .find(|p| node_of(p).is_some())
                .map(|p| p.name_any());
            (classify(tracked.job.as_ref(), &pods), bound)
        };
        let started = match &status {
            AttemptStatus::Finished(end) => {
                tracked.ended = Some(end.clone());
                // A pod that ran and ended before we saw it running: fetch its logs too.
                bound
            }
            AttemptStatus::Running { pod, .. } => Some(pod.clone()),
            _ => None,
        };
        let Some(pod) = started else {
            return;
        };
        if !tracked.streaming.insert(pod.clone()) {
            return;
        }
        let namespace = tracked
            .pods
            .get(&pod)
            .and_then(|p| p.namespace())
            .unwrap_or_default();
        let tx = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = tx {
            let _ = tx.send(PodStarted {
                key: key.clone(),
                namespace,
                pod,
            });
        }
    }

    /// Applies one Job watcher event of `namespace`.
    pub fn apply_job_event(&self, namespace: &str, event: Event<K8sJob>) {
        let mut inner = self.lock();
        match event {
            Event::Apply(job) => self.put_job(&mut inner, job),
            Event::Delete(job) => {
                let Some(key) = AttemptKey::from_labels(job.labels()) else {
                    return;
                };
                self.put_job(&mut inner, job);
                if let Some(t) = inner.attempts.get_mut(&key) {
                    t.job = None;
                }
                inner.prune(&key);
            }
            Event::Init => {
                inner.init_jobs.insert(namespace.to_string(), Vec::new());
            }
            Event::InitApply(job) => inner
                .init_jobs
                .entry(namespace.to_string())
                .or_default()
                .push(job),
            Event::InitDone => {
                let listed = inner.init_jobs.remove(namespace).unwrap_or_default();
                for t in inner.attempts.values_mut() {
                    if t.job.as_ref().and_then(|j| j.namespace()).as_deref() == Some(namespace) {
                        t.job = None;
                    }
                }
                for job in listed {
                    self.put_job(&mut inner, job);
                }
                inner.attempts.retain(|_, t| !t.droppable());
            }
        }
        inner.errors.remove(&format!("{namespace}/jobs"));
        drop(inner);
        self.bump();
    }

    fn put_job(&self, inner: &mut Inner, job: K8sJob) {
        let Some(key) = AttemptKey::from_labels(job.labels()) else {
            return;
        };
        let tracked = inner.attempts.entry(key.clone()).or_default();
        if let Some(uid) = job.uid() {
            tracked.follow(&uid);
        }
        tracked.job = Some(job);
        self.settle(inner, &key);
    }

    /// Applies one Pod watcher event of `namespace`.
    pub fn apply_pod_event(&self, namespace: &str, event: Event<Pod>) {
        let mut inner = self.lock();
        match event {
            Event::Apply(pod) => self.put_pod(&mut inner, pod),
            Event::Delete(pod) => {
                let Some(key) = AttemptKey::from_labels(pod.labels()) else {
                    return;
                };
                let name = pod.name_any();
                // Settle on its last state first: a deleted pod's end is still its end.
                self.put_pod(&mut inner, pod);
                if let Some(t) = inner.attempts.get_mut(&key) {
                    t.pods.remove(&name);
                }
                inner.prune(&key);
            }
            Event::Init => {
                inner.init_pods.insert(namespace.to_string(), Vec::new());
            }
            Event::InitApply(pod) => inner
                .init_pods
                .entry(namespace.to_string())
                .or_default()
                .push(pod),
            Event::InitDone => {
                let listed = inner.init_pods.remove(namespace).unwrap_or_default();
                for t in inner.attempts.values_mut() {
                    t.pods
                        .retain(|_, p| p.namespace().as_deref() != Some(namespace));
                }
                for pod in listed {
                    self.put_pod(&mut inner, pod);
                }
                inner.attempts.retain(|_, t| !t.droppable());
            }
        }
        inner.errors.remove(&format!("{namespace}/pods"));
        drop(inner);
        self.bump();
    }

    fn put_pod(&self, inner: &mut Inner, pod: Pod) {
        let Some(key) = AttemptKey::from_labels(pod.labels()) else {
            return;
        };
        let name = pod.name_any();
        inner
            .attempts
            .entry(key.clone())
            .or_default()
            .pods
            .insert(name, pod);
        self.settle(inner, &key);
    }

    fn record_error(&self, what: String, error: String) {
        self.lock().errors.insert(what, error);
        self.bump();
    }
}

/// Starts the Job and Pod watchers of `namespace` on the current tokio runtime.
pub fn spawn_watchers(
    client: &Client,
    namespace: &str,
    state: &Arc<WatchState>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let config = watcher::Config::default().labels(&managed_selector());
    let jobs: Api<K8sJob> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (ns1, st1) = (namespace.to_string(), state.clone());
    let (ns2, st2) = (namespace.to_string(), state.clone());
    let config2 = config.clone();
    vec![
        tokio::spawn(async move {
            let mut stream = watcher::watcher(jobs, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => st1.apply_job_event(&ns1, event),
                    Err(e) => {
                        tracing::warn!("watching strata's Jobs in namespace {ns1}: {e}");
                        st1.record_error(format!("{ns1}/jobs"), e.to_string());
                    }
                }
            }
        }),
        tokio::spawn(async move {
            let mut stream = watcher::watcher(pods, config2).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => st2.apply_pod_event(&ns2, event),
                    Err(e) => {
                        tracing::warn!("watching strata's pods in namespace {ns2}: {e}");
                        st2.record_error(format!("{ns2}/pods"), e.to_string());
                    }
                }
            }
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "strata-j-abcdefghij-a1-x7k2p", "namespace": "team-a",
                         "labels": {"strata.dev/job": "j-abcdefghij", "strata.dev/attempt": "1"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "job", "image": "img"}]},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_job_waits_for_its_pods_end_to_keep_the_exit_code() {
        let failed: K8sJob = serde_json::from_value(json!({
            "metadata": {"name": "strata-j-abcdefghij-a1"},
            "status": {"conditions": [{"type": "Failed", "status": "True",
                                       "reason": "BackoffLimitExceeded"}]}
        }))
        .unwrap();
        // The pod watcher has not delivered the pod's end yet: not finished.
        let running = pod(json!({"phase": "Running"}));
        assert!(matches!(
            classify(Some(&failed), &[&running]),
            AttemptStatus::Running { .. }
        ));
        let ended = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}));
        match classify(Some(&failed), &[&ended]) {
            AttemptStatus::Finished(end) => assert_eq!(end.outcome.exit_code, Some(3)),
            other => panic!("expected an end, got {other:?}"),
        }
        // Its pods gone, the Job's condition is the end.
        assert!(matches!(
            classify(Some(&failed), &[]),
            AttemptStatus::Finished(_)
        ));
    }

    fn finished_objects() -> (K8sJob, Pod) {
        let job: K8sJob = serde_json::from_value(json!({
            "metadata": {"name": "strata-j-abcdefghij-a1", "namespace": "team-a",
                         "labels": {"strata.dev/job": "j-abcdefghij", "strata.dev/attempt": "1"}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .unwrap();
        let ended = pod(json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        (job, ended)
    }

    #[test]
    fn a_forgotten_attempt_is_dropped_when_its_objects_are_deleted() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        let state = WatchState::default();
        let (job, pod) = finished_objects();
        state.apply_job_event("team-a", Event::Apply(job.clone()));
        state.apply_pod_event("team-a", Event::Apply(pod.clone()));
        assert!(state.outcome(key).is_some());
        state.forget(key);
        // Its Job and pod are still in the cluster: their deletion events must find it.
        assert_eq!(state.tracked(), 1);
        state.apply_job_event("team-a", Event::Delete(job));
        state.apply_pod_event("team-a", Event::Delete(pod));
        assert_eq!(state.tracked(), 0, "deletion events brought it back");
    }

    #[test]
    fn an_end_not_yet_recorded_survives_the_deletion_of_its_objects() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        let state = WatchState::default();
        let (job, pod) = finished_objects();
        state.apply_pod_event("team-a", Event::Apply(pod.clone()));
        state.apply_job_event("team-a", Event::Delete(job));
        state.apply_pod_event("team-a", Event::Delete(pod));
        let end = state.outcome(key).expect("the end is kept until recorded");
        assert_eq!(end.outcome.exit_code, Some(0));
        state.forget(key);
        assert_eq!(state.tracked(), 0);
    }

    fn job_with_uid(uid: &str) -> K8sJob {
        serde_json::from_value(json!({
            "metadata": {"name": "strata-j-abcdefghij-a1", "namespace": "team-a", "uid": uid,
                         "labels": {"strata.dev/job": "j-abcdefghij", "strata.dev/attempt": "1"}}
        }))
        .unwrap()
    }

    fn pod_of(name: &str, job_uid: &str, status: serde_json::Value) -> Pod {
        let mut p = pod(status);
        p.metadata.name = Some(name.into());
        p.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: "strata-j-abcdefghij-a1".into(),
                uid: job_uid.into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        p
    }

    #[test]
    fn a_new_job_under_the_same_attempt_does_not_inherit_the_old_end() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        let state = WatchState::default();
        let unschedulable = json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available"}]});
        let mut unbound = pod_of("old-pod", "uid-a", unschedulable);
        unbound.spec.as_mut().unwrap().node_name = None;
        state.apply_job_event("team-a", Event::Apply(job_with_uid("uid-a")));
        state.apply_pod_event("team-a", Event::Apply(unbound.clone()));
        let end = state.outcome(key).expect("unschedulable is an end");
        assert_eq!(end.kind, EndKind::Unschedulable);
        state.forget(key);

        // Launched again under the same name: a new Job (new uid); the old pod's events
        // may still arrive.
        state.apply_job_event("team-a", Event::Apply(job_with_uid("uid-b")));
        state.apply_pod_event("team-a", Event::Apply(unbound.clone()));
        assert_eq!(state.status(key), Some(AttemptStatus::Waiting));
        state.apply_pod_event("team-a", Event::Delete(unbound));
        let running = pod_of("new-pod", "uid-b", json!({"phase": "Running"}));
        state.apply_pod_event("team-a", Event::Apply(running));
        assert!(matches!(
            state.status(key),
            Some(AttemptStatus::Running { pod, .. }) if pod == "new-pod"
        ));
        // Not forgotten: its end, when it comes, is kept for the agent.
        state.apply_job_event("team-a", Event::Delete(job_with_uid("uid-b")));
        assert_eq!(state.tracked(), 1);
    }
}

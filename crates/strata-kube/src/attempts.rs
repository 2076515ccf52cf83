//! The watched state of every attempt: its Job and pods as the watchers last saw them, and
//! its end once seen ([`crate::classify`]). The end is kept, so that the TTL controller (or
//! anyone) deleting the finished Job does not lose it before the agent has recorded it; an
//! attempt is dropped once the agent forgot it and its objects are gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use tokio::sync::{mpsc, watch};

use crate::classify::{classify, node_of, AttemptStatus, KubeOutcome};
use crate::objects::AttemptKey;
use crate::watch::{Change, Relist};

/// A pod that started running, for the log streamer.
#[derive(Clone, Debug)]
pub struct PodStarted {
    pub key: AttemptKey,
    pub namespace: String,
    pub pod: String,
}

/// What strata created for an attempt: its Job's namespace, name and (once known) uid.
/// Only objects that match are the attempt's: anyone able to create a Job in a watched
/// namespace can copy strata's labels, and must not write another team's outcome or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub namespace: String,
    pub name: String,
    /// The uid the API server gave the Job strata created (or adopted by name).
    pub uid: Option<String>,
}

impl Expected {
    fn accepts_job(&self, job: &K8sJob) -> bool {
        if job.namespace().as_deref() != Some(self.namespace.as_str())
            || job.name_any() != self.name
        {
            return false;
        }
        match (&self.uid, job.uid()) {
            (Some(want), Some(got)) => *want == got,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// A pod of the attempt: in its namespace, controlled by its Job (by uid once known).
    fn accepts_pod(&self, pod: &Pod) -> bool {
        if pod.namespace().as_deref() != Some(self.namespace.as_str()) {
            return false;
        }
        let Some(owner) = job_owner(pod) else {
            return false;
        };
        owner.name == self.name && self.uid.as_ref().is_none_or(|uid| owner.uid == *uid)
    }
}

#[derive(Debug, Default)]
struct Tracked {
    /// Set by the backend when it created (or adopted) the attempt's Job; until then
    /// nothing seen counts (no status, no end, no log).
    expected: Option<Expected>,
    /// Jobs carrying the attempt's labels seen before `expected`, by namespace and name:
    /// the one that matches is claimed then.
    unclaimed: BTreeMap<(String, String), K8sJob>,
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
        (self.forgotten || self.expected.is_none())
            && self.job.is_none()
            && self.pods.is_empty()
            && self.unclaimed.is_empty()
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
            expected: self.expected.take(),
            unclaimed: std::mem::take(&mut self.unclaimed),
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

/// The Job that owns a pod (its owner reference of kind Job).
fn job_owner(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Job")
}

/// The uid of the Job that owns a pod.
fn owner_uid(pod: &Pod) -> Option<String> {
    job_owner(pod).map(|o| o.uid.clone())
}

#[derive(Debug, Default)]
struct Inner {
    attempts: HashMap<AttemptKey, Tracked>,
    /// The listings in progress of each namespace's Job and Pod watchers.
    relist_jobs: HashMap<String, Relist<K8sJob>>,
    relist_pods: HashMap<String, Relist<Pod>>,
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

    /// Follows the attempt's Job as strata created it (see [`Expected`]): what was seen of
    /// other objects carrying its labels is dropped, and only matching ones count from now.
    pub fn expect(&self, key: &AttemptKey, expected: Expected) {
        let mut inner = self.lock();
        let tracked = inner.attempts.entry(key.clone()).or_default();
        if tracked.expected.as_ref() != Some(&expected) {
            if let Some(uid) = &expected.uid {
                tracked.follow(uid);
            }
            let claimed = std::mem::take(&mut tracked.unclaimed)
                .into_values()
                .find(|j| expected.accepts_job(j));
            if tracked
                .job
                .as_ref()
                .is_some_and(|j| !expected.accepts_job(j))
            {
                tracked.job = None;
            }
            if claimed.is_some() {
                tracked.job = claimed;
            }
            tracked.pods.retain(|_, p| expected.accepts_pod(p));
            tracked.expected = Some(expected);
        }
        self.settle(&mut inner, key);
        drop(inner);
        self.bump();
    }

    /// Like [`WatchState::expect`], unless the attempt already has an expectation: for an
    /// agent that restarted and follows attempts it did not launch itself.
    pub fn expect_if_unknown(&self, key: &AttemptKey, expected: Expected) {
        let known = self
            .lock()
            .attempts
            .get(key)
            .is_some_and(|t| t.expected.is_some());
        if !known {
            self.expect(key, expected);
        }
    }

    /// The status of an attempt; `None` when nothing of it was seen, or strata has not
    /// said which Job is its (see [`WatchState::expect`]).
    pub fn status(&self, key: &AttemptKey) -> Option<AttemptStatus> {
        let inner = self.lock();
        let tracked = inner.attempts.get(key)?;
        tracked.expected.as_ref()?;
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
        if tracked.ended.is_some() || tracked.expected.is_none() {
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
        let relist = inner.relist_jobs.entry(namespace.to_string()).or_default();
        match relist.apply(event) {
            None => {}
            Some(Change::Applied(job)) => {
                self.put_job(&mut inner, job);
            }
            Some(Change::Deleted(job)) => self.delete_job(&mut inner, job),
            Some(Change::Listed(listed)) => {
                for t in inner.attempts.values_mut() {
                    if t.job.as_ref().and_then(|j| j.namespace()).as_deref() == Some(namespace) {
                        t.job = None;
                    }
                    t.unclaimed.retain(|(ns, _), _| ns != namespace);
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

    fn delete_job(&self, inner: &mut Inner, job: K8sJob) {
        let Some(key) = AttemptKey::from_labels(job.labels()) else {
            return;
        };
        let slot = (job.namespace().unwrap_or_default(), job.name_any());
        if self.put_job(inner, job) {
            if let Some(t) = inner.attempts.get_mut(&key) {
                t.job = None;
            }
        } else if let Some(t) = inner.attempts.get_mut(&key) {
            t.unclaimed.remove(&slot);
        }
        inner.prune(&key);
    }

    /// Takes in a Job carrying an attempt's labels; returns whether it is the attempt's
    /// (see [`Expected`]). Before the backend said which Job is the attempt's, it is kept
    /// aside, unclaimed.
    fn put_job(&self, inner: &mut Inner, job: K8sJob) -> bool {
        let Some(key) = AttemptKey::from_labels(job.labels()) else {
            return false;
        };
        let tracked = inner.attempts.entry(key.clone()).or_default();
        match &tracked.expected {
            None => {
                let slot = (job.namespace().unwrap_or_default(), job.name_any());
                tracked.unclaimed.insert(slot, job);
                return false;
            }
            Some(expected) if !expected.accepts_job(&job) => {
                tracing::debug!(
                    "ignoring Job {}/{} labelled as {key}: strata created {}/{}",
                    job.namespace().unwrap_or_default(),
                    job.name_any(),
                    expected.namespace,
                    expected.name
                );
                return false;
            }
            Some(_) => {}
        }
        if let Some(uid) = job.uid() {
            tracked.follow(&uid);
        }
        tracked.job = Some(job);
        self.settle(inner, &key);
        true
    }

    /// Applies one Pod watcher event of `namespace`.
    pub fn apply_pod_event(&self, namespace: &str, event: Event<Pod>) {
        let mut inner = self.lock();
        let relist = inner.relist_pods.entry(namespace.to_string()).or_default();
        match relist.apply(event) {
            None => {}
            Some(Change::Applied(pod)) => {
                self.put_pod(&mut inner, pod);
            }
            Some(Change::Deleted(pod)) => self.delete_pod(&mut inner, pod),
            Some(Change::Listed(listed)) => {
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

    fn delete_pod(&self, inner: &mut Inner, pod: Pod) {
        let Some(key) = AttemptKey::from_labels(pod.labels()) else {
            return;
        };
        let name = pod.name_any();
        // Settle on its last state first: a deleted pod's end is still its end.
        if self.put_pod(inner, pod) {
            if let Some(t) = inner.attempts.get_mut(&key) {
                t.pods.remove(&name);
            }
        }
        inner.prune(&key);
    }

    /// Takes in a pod carrying an attempt's labels; returns whether it is kept: always
    /// before the attempt's Job is known (sorted out by [`WatchState::expect`]), after
    /// that only a pod of that Job.
    fn put_pod(&self, inner: &mut Inner, pod: Pod) -> bool {
        let Some(key) = AttemptKey::from_labels(pod.labels()) else {
            return false;
        };
        let tracked = inner.attempts.entry(key.clone()).or_default();
        if tracked
            .expected
            .as_ref()
            .is_some_and(|expected| !expected.accepts_pod(&pod))
        {
            return false;
        }
        tracked.pods.insert(pod.name_any(), pod);
        self.settle(inner, &key);
        true
    }

    pub(crate) fn record_error(&self, what: String, error: String) {
        self.lock().errors.insert(what, error);
        self.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::EndKind;
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

    /// What the backend tells the state when it created the Job with `uid`.
    fn expected(uid: &str) -> Expected {
        Expected {
            namespace: "team-a".into(),
            name: "strata-j-abcdefghij-a1".into(),
            uid: Some(uid.into()),
        }
    }

    fn finished_objects() -> (K8sJob, Pod) {
        let job: K8sJob = serde_json::from_value(json!({
            "metadata": {"name": "strata-j-abcdefghij-a1", "namespace": "team-a", "uid": "uid-a",
                         "labels": {"strata.dev/job": "j-abcdefghij", "strata.dev/attempt": "1"}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .unwrap();
        let ended = pod(json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        (job, owned_by(ended, "uid-a"))
    }

    #[test]
    fn a_forgotten_attempt_is_dropped_when_its_objects_are_deleted() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        let state = WatchState::default();
        state.expect(key, expected("uid-a"));
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
        state.expect(key, expected("uid-a"));
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
        owned_by(p, job_uid)
    }

    fn owned_by(mut p: Pod, job_uid: &str) -> Pod {
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
        state.expect(key, expected("uid-a"));
        state.apply_job_event("team-a", Event::Apply(job_with_uid("uid-a")));
        state.apply_pod_event("team-a", Event::Apply(unbound.clone()));
        let end = state.outcome(key).expect("unschedulable is an end");
        assert_eq!(end.kind, EndKind::Unschedulable);
        state.forget(key);

        // Launched again under the same name: a new Job (new uid); the old pod's events
        // may still arrive.
        state.expect(key, expected("uid-b"));
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

    /// Jobs and pods carrying another attempt's labels: `other` namespace or `name`, uid
    /// `uid`, failed with exit code 66.
    fn impostor(namespace: &str, name: &str, uid: &str) -> (K8sJob, Pod) {
        let (mut job, pod) = finished_objects();
        job.metadata.namespace = Some(namespace.into());
        job.metadata.name = Some(name.into());
        job.metadata.uid = Some(uid.into());
        job.status =
            serde_json::from_value(json!({"conditions": [{"type": "Failed", "status": "True"}]}))
                .unwrap();
        let mut pod = owned_by(pod, uid);
        pod.metadata.namespace = Some(namespace.into());
        pod.metadata.name = Some(format!("{name}-x1"));
        if let Some(refs) = pod.metadata.owner_references.as_mut() {
            refs[0].name = name.into();
        }
        pod.status = serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [{
            "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 66, "reason": "Error"}}}]}))
        .unwrap();
        (job, pod)
    }

    #[test]
    fn jobs_labelled_as_an_attempt_elsewhere_are_not_its_outcome() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        for (namespace, name) in [("team-b", "strata-j-abcdefghij-a1"), ("team-a", "evil")] {
            let state = WatchState::default();
            let (fake_job, fake_pod) = impostor(namespace, name, "uid-evil");
            // Before strata said which Job is the attempt's, and after.
            state.apply_job_event(namespace, Event::Apply(fake_job.clone()));
            state.apply_pod_event(namespace, Event::Apply(fake_pod.clone()));
            assert_eq!(state.status(key), None);
            state.expect(key, expected("uid-a"));
            state.apply_job_event(namespace, Event::Apply(fake_job));
            state.apply_pod_event(namespace, Event::Apply(fake_pod));
            assert_eq!(state.outcome(key), None, "{namespace}/{name} taken");
            assert!(state.pods(key).is_empty(), "{:?}", state.pods(key));
            // The real one still counts.
            let (job, pod) = finished_objects();
            state.apply_job_event("team-a", Event::Apply(job));
            state.apply_pod_event("team-a", Event::Apply(pod));
            let end = state.outcome(key).expect("the real Job's end");
            assert_eq!(end.outcome.exit_code, Some(0));
        }
    }

    #[test]
    fn a_job_of_the_same_name_with_another_uid_is_not_the_attempt() {
        let key = &AttemptKey::new("j-abcdefghij".parse().unwrap(), 1);
        let state = WatchState::default();
        let (fake_job, _) = impostor("team-a", "strata-j-abcdefghij-a1", "uid-evil");
        state.apply_job_event("team-a", Event::Apply(fake_job));
        state.expect(key, expected("uid-a"));
        assert_eq!(state.outcome(key), None);
    }
}

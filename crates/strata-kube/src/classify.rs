//! How an attempt is doing, from its Job's conditions and its pods' status: the one place
//! that reads Kubernetes' objects into strata's terms (an exit code, OOM, eviction, the time
//! limit, an image that cannot be pulled, no node to take the pod).

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Serialize;

use crate::objects::CONTAINER;
use strata_queue::{EndCause, Outcome};

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

pub(crate) fn node_of(pod: &Pod) -> Option<String> {
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
}

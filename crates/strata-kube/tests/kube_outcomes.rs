//! How an attempt ended, from Job and Pod status as the API returns them (fixtures in the
//! API's JSON form).

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use strata_kube::{classify, registry_of};
use strata_kube::{AttemptStatus, EndKind, KubeOutcome};
use strata_queue::EndCause;

const IMAGE: &str = "registry.example.com:5000/ml/envs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pod(node: Option<&str>, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "strata-j-abcdefghij-a1-x7k2p", "namespace": "team-a",
                     "labels": {"strata.dev/job": "j-abcdefghij", "strata.dev/attempt": "1"}},
        "spec": {"nodeName": node, "containers": [{"name": "job", "image": IMAGE}]},
        "status": status
    }))
    .unwrap()
}

fn job(conditions: Value) -> K8sJob {
    serde_json::from_value(json!({
        "metadata": {"name": "strata-j-abcdefghij-a1"},
        "status": {"conditions": conditions}
    }))
    .unwrap()
}

fn terminated(code: i32, reason: &str) -> Value {
    json!([{"name": "job", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}}])
}

fn finished(status: AttemptStatus) -> KubeOutcome {
    match status {
        AttemptStatus::Finished(end) => end,
        other => panic!("expected an end, got {other:?}"),
    }
}

#[test]
fn exit_codes_come_from_the_terminated_container() {
    let ok = pod(
        Some("n1"),
        json!({"phase": "Succeeded", "containerStatuses": terminated(0, "Completed")}),
    );
    let end = finished(classify(None, &[&ok]));
    assert_eq!(
        (end.kind, end.outcome.exit_code),
        (EndKind::Exited, Some(0))
    );
    assert_eq!(end.node.as_deref(), Some("n1"));
    assert_eq!(end.end_cause(), EndCause::Exited);

    let three = pod(
        Some("n1"),
        json!({"phase": "Failed", "containerStatuses": terminated(3, "Error")}),
    );
    let end = finished(classify(None, &[&three]));
    assert_eq!(
        (end.kind, end.outcome.exit_code),
        (EndKind::Exited, Some(3))
    );
    assert!(!end.outcome.oom_killed);
}

#[test]
fn oom_kill_is_recognised() {
    let oom = pod(
        Some("n1"),
        json!({"phase": "Failed", "containerStatuses": terminated(137, "OOMKilled")}),
    );
    let end = finished(classify(None, &[&oom]));
    assert_eq!(end.kind, EndKind::OomKilled);
    assert!(end.outcome.oom_killed);
    assert_eq!(end.outcome.exit_code, Some(137));
}

#[test]
fn eviction_says_why() {
    let evicted = pod(
        Some("n1"),
        json!({"phase": "Failed", "reason": "Evicted",
               "message": "The node was low on resource: memory. Container job was using 30Gi."}),
    );
    let end = finished(classify(None, &[&evicted]));
    assert_eq!(end.kind, EndKind::Evicted);
    assert!(end
        .outcome
        .reason
        .unwrap()
        .contains("low on resource: memory"));
}

#[test]
fn deadline_exceeded_is_a_timeout() {
    let j = job(
        json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                        "message": "Job was active longer than specified deadline"}]),
    );
    // The kubelet's kill of the running container does not hide the reason.
    let killed = pod(
        Some("n1"),
        json!({"phase": "Failed", "containerStatuses": terminated(137, "Error")}),
    );
    let end = finished(classify(Some(&j), &[&killed]));
    assert_eq!(end.kind, EndKind::DeadlineExceeded);
    assert_eq!(end.end_cause(), EndCause::TimedOut);
    assert!(end
        .outcome
        .reason
        .unwrap()
        .contains("longer than specified deadline"));
    let end = finished(classify(Some(&j), &[]));
    assert_eq!(end.kind, EndKind::DeadlineExceeded, "pods already deleted");
}

#[test]
fn image_pull_failures_name_the_image_and_registry() {
    for reason in ["ErrImagePull", "ImagePullBackOff"] {
        let p = pod(
            Some("n1"),
            json!({"phase": "Pending", "containerStatuses": [{"name": "job", "image": IMAGE, "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "manifest unknown"}}}]}),
        );
        let end = finished(classify(None, &[&p]));
        assert_eq!(end.kind, EndKind::ImagePull);
        let text = end.outcome.reason.unwrap();
        assert!(text.contains(reason), "{text}");
        assert!(text.contains(IMAGE), "{text}");
        assert!(
            text.contains("registry registry.example.com:5000"),
            "{text}"
        );
        assert!(text.contains("manifest unknown"), "{text}");
    }
    assert_eq!(registry_of("python:3.11"), "docker.io");
    assert_eq!(registry_of("localhost/x@sha256:1"), "localhost");
}

#[test]
fn unschedulable_pods_end_without_running() {
    let p = pod(
        None,
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
               "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}),
    );
    let end = finished(classify(None, &[&p]));
    assert_eq!(end.kind, EndKind::Unschedulable);
    assert!(end.nothing_ran());
    assert!(end
        .outcome
        .reason
        .unwrap()
        .contains("Insufficient nvidia.com/gpu"));
}

#[test]
fn live_attempts_are_not_finished() {
    assert_eq!(classify(Some(&job(json!([]))), &[]), AttemptStatus::Waiting);
    let pending = pod(None, json!({"phase": "Pending"}));
    assert_eq!(classify(None, &[&pending]), AttemptStatus::Waiting);
    let bound = pod(Some("n1"), json!({"phase": "Pending"}));
    assert!(
        matches!(classify(None, &[&bound]), AttemptStatus::Scheduled { node, .. } if node == "n1")
    );
    let running = pod(Some("n1"), json!({"phase": "Running"}));
    assert!(matches!(
        classify(None, &[&running]),
        AttemptStatus::Running { .. }
    ));
    // Pods gone after success (TTL or Background deletion): the Job's condition tells.
    let complete = job(json!([{"type": "Complete", "status": "True"}]));
    assert_eq!(
        finished(classify(Some(&complete), &[])).outcome.exit_code,
        Some(0)
    );
}

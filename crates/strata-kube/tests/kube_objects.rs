//! The Job objects strata creates, for every built-in tier, against golden files in
//! `tests/golden/` (JSON). `STRATA_BLESS=1 cargo test -p strata-scheduler --test kube_objects`
//! rewrites them after an intended change; review the diff.

mod kube_support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Toleration;
use strata_kube::objects::{job_object, AttemptKey, JobObjectParams};
use strata_kube::TierPlacement;
use strata_queue::SchedulerConfig;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn placement(tier: &str) -> TierPlacement {
    if tier == "cpu" {
        return TierPlacement::default();
    }
    TierPlacement {
        node_selector: BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())]),
        tolerations: vec![Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }],
        priority_class_name: (tier == "gpu8").then(|| "batch-large".to_string()),
    }
}

#[test]
fn job_objects_match_the_golden_files() {
    let config = SchedulerConfig::default();
    let bless = std::env::var("STRATA_BLESS").as_deref() == Ok("1");
    let pool = BTreeMap::from([("strata.dev/pool".to_string(), "gpu".to_string())]);
    let mut mismatches = Vec::new();
    for (tier, resources) in &config.tiers {
        let mut job = kube_support::job("j-abcdefghij", "Team A", tier, *resources);
        job.pool = Some("gpu".into());
        job.node = Some("gpu-node-1".into());
        let digest = job.image_digest.clone().unwrap();
        let image = format!("registry.example.com/ml/envs@{digest}");
        let tier_placement = placement(tier);
        let params = JobObjectParams {
            namespace: "team-a",
            image: &image,
            digest: &digest,
            tier: &tier_placement,
            pool_selector: Some(&pool),
            node: job.node.as_deref(),
            ttl_seconds_after_finished: 3600,
            network: false,
            outputs_claim: None,
        };
        let object = job_object(&job, &params);
        let text = serde_json::to_string_pretty(&object).unwrap() + "\n";
        let path = golden_dir().join(format!("job-{tier}.json"));
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with STRATA_BLESS=1 to create it",
                path.display()
            )
        });
        if expected != text {
            mismatches.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "Job objects differ from the golden files (STRATA_BLESS=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn the_object_has_what_v1_20_needs_and_nothing_newer() {
    let config = SchedulerConfig::default();
    let job = kube_support::job("j-abcdefghij", "team-a", "gpu8", config.tiers["gpu8"]);
    let digest = job.image_digest.clone().unwrap();
    let image = format!("reg.example.com/ml/envs@{digest}");
    let tier = TierPlacement::default();
    let params = JobObjectParams {
        namespace: "team-a",
        image: &image,
        digest: &digest,
        tier: &tier,
        pool_selector: None,
        node: None,
        ttl_seconds_after_finished: 60,
        network: true,
        outputs_claim: None,
    };
    let value = serde_json::to_value(job_object(&job, &params)).unwrap();
    let spec = &value["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 7200);
    assert_eq!(spec["ttlSecondsAfterFinished"], 60);
    assert!(spec.get("suspend").is_none(), "v1.20 has no suspend");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(
        pod_labels.get("strata.dev/network").is_none(),
        "a job with a network is not cut off: {pod_labels}"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], image.as_str());
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "8");
    assert_eq!(container["resources"]["requests"]["cpu"], "64000m");
    assert_eq!(container["workingDir"], "/work");
    assert_eq!(container["env"][0]["name"], "SEED");
    assert!(pod.get("affinity").is_none(), "no node: no pin");
    let labels = &value["metadata"]["labels"];
    assert_eq!(labels, &spec["template"]["metadata"]["labels"]);
    assert_eq!(
        labels["strata.dev/env"].as_str().unwrap(),
        &digest.hex()[..32]
    );
}

#[test]
fn the_attempt_is_read_back_from_the_objects_labels() {
    let config = SchedulerConfig::default();
    let mut job = kube_support::job("j-abcdefghij", "team-a", "cpu", config.tiers["cpu"]);
    job.attempt = 12;
    let digest = job.image_digest.clone().unwrap();
    let image = format!("reg.example.com/ml/envs@{digest}");
    let tier = TierPlacement::default();
    let params = JobObjectParams {
        namespace: "team-a",
        image: &image,
        digest: &digest,
        tier: &tier,
        pool_selector: None,
        node: None,
        ttl_seconds_after_finished: 60,
        network: false,
        outputs_claim: None,
    };
    let object = job_object(&job, &params);
    let key = AttemptKey::of(&job);
    assert_eq!(
        object.metadata.name.as_deref(),
        Some("strata-j-abcdefghij-a12")
    );
    let job_labels = object.metadata.labels.as_ref().unwrap();
    assert_eq!(AttemptKey::from_labels(job_labels), Some(key.clone()));
    let pod_labels = object
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(AttemptKey::from_labels(pod_labels), Some(key));
}

//! The batch/v1 Job strata creates for one attempt of one job.
//!
//! Named from the attempt (`strata-j-abcdefghij-a1`), so that creating it again after an
//! agent crash finds the first one instead of starting a second run. Only fields a v1.20
//! server knows are set (no `suspend`, no pod failure policy): `backoffLimit: 0` because
//! strata does its own retries, `activeDeadlineSeconds` from the job's time limit,
//! `ttlSecondsAfterFinished` so the cluster removes finished Jobs, `restartPolicy: Never`.
//! The pod is pinned to the node strata's admission chose (node affinity on
//! `metadata.name`, as DaemonSets do), so that strata's view of each node's free capacity
//! is the cluster's and no pod waits Pending for room that is not there.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job as K8sJob, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strata_oci::Digest;

use crate::config::TierPlacement;
use strata_queue::Resources;
use strata_queue::{Job, JobId};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "strata";
pub const LABEL_JOB: &str = "strata.dev/job";
pub const LABEL_ATTEMPT: &str = "strata.dev/attempt";
pub const LABEL_QUEUE: &str = "strata.dev/queue";
pub const LABEL_TIER: &str = "strata.dev/tier";
pub const LABEL_ENV: &str = "strata.dev/env";
/// On the pods of jobs whose queue gives no network (`network = false`), with the value
/// [`NO_NETWORK`]: the NetworkPolicy of `strata deploy` selects them and denies all traffic. strata
/// cannot create the policy itself: the team Role grants jobs and pods only.
pub const LABEL_NETWORK: &str = "strata.dev/network";
pub const NO_NETWORK: &str = "none";
/// Exact values of what labels carry sanitised.
pub const ANNOTATION_QUEUE: &str = "strata.dev/queue";
pub const ANNOTATION_TIER: &str = "strata.dev/tier";
pub const ANNOTATION_IMAGE: &str = "strata.dev/image";
pub const ANNOTATION_USER: &str = "strata.dev/user";
pub const ANNOTATION_NAME: &str = "strata.dev/name";
/// The job's container.
pub const CONTAINER: &str = "job";
/// The pod volume of the queue's outputs claim.
pub const OUTPUTS_VOLUME: &str = "strata-outputs";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Hex characters of the image digest in the `strata.dev/env` label.
const ENV_LABEL_HEX: usize = 32;

/// `app.kubernetes.io/managed-by=strata`: every object strata creates carries it.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// One attempt of one job: what the backend follows, as kube-rs follows an object by its
/// `ObjectRef`. Shown as `j-abcdefghij-a1`; read back from an object's labels, never parsed
/// from that text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptKey {
    pub job: JobId,
    pub attempt: u32,
}

impl AttemptKey {
    pub fn new(job: JobId, attempt: u32) -> AttemptKey {
        AttemptKey { job, attempt }
    }

    /// The job's current attempt.
    pub fn of(job: &Job) -> AttemptKey {
        AttemptKey::new(job.id.clone(), job.attempt)
    }

    /// The attempt an object belongs to, from its [`LABEL_JOB`] and [`LABEL_ATTEMPT`]
    /// labels; `None` when either is missing or not what strata writes.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<AttemptKey> {
        let job = labels.get(LABEL_JOB)?.parse().ok()?;
        let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
        Some(AttemptKey::new(job, attempt))
    }

    /// The name of its Job: `strata-j-abcdefghij-a1` (a DNS-1123 label).
    pub fn object_name(&self) -> String {
        format!("strata-{self}")
    }

    /// The label selector of its Job and pods.
    pub fn selector(&self) -> String {
        format!(
            "{},{LABEL_JOB}={},{LABEL_ATTEMPT}={}",
            managed_selector(),
            self.job,
            self.attempt
        )
    }
}

impl std::fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-a{}", self.job, self.attempt)
    }
}

/// The Job's name: `strata-j-abcdefghij-a1` (see [`AttemptKey::object_name`]).
pub fn object_name(id: &JobId, attempt: u32) -> String {
    AttemptKey::new(id.clone(), attempt).object_name()
}

/// The label selector of one attempt's Job and pods (see [`AttemptKey::selector`]).
pub fn attempt_selector(id: &JobId, attempt: u32) -> String {
    AttemptKey::new(id.clone(), attempt).selector()
}

/// Makes `text` a valid label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with a letter or digit; anything else becomes `_`... then trimmed. Empty stays
/// empty (a valid value).
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The `strata.dev/env` label of an image: the first hex characters of its digest.
pub fn env_label(digest: &Digest) -> String {
    let text = digest.to_string();
    let hex = text.split_once(':').map(|(_, h)| h).unwrap_or(&text);
    label_value(&hex[..hex.len().min(ENV_LABEL_HEX)])
}

/// `REG/REPO@sha256:...`: jobs run by digest, never by tag.
pub fn image_ref(registry: &str, digest: &Digest) -> String {
    format!("{registry}@{digest}")
}

/// The labels of an attempt's Job and pods.
pub fn labels(job: &Job, digest: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_JOB.to_string(), job.id.to_string()),
        (LABEL_ATTEMPT.to_string(), job.attempt.to_string()),
        (LABEL_QUEUE.to_string(), label_value(&job.queue)),
        (LABEL_TIER.to_string(), label_value(&job.tier)),
        (LABEL_ENV.to_string(), env_label(digest)),
    ])
}

/// Everything [`job_object`] needs beyond the job itself.
#[derive(Clone, Debug)]
pub struct JobObjectParams<'a> {
    pub namespace: &'a str,
    /// `REG/REPO@sha256:...`.
    pub image: &'a str,
    pub digest: &'a Digest,
    pub tier: &'a TierPlacement,
    /// Node labels of the job's pool.
    pub pool_selector: Option<&'a BTreeMap<String, String>>,
    /// The node admission chose.
    pub node: Option<&'a str>,
    pub ttl_seconds_after_finished: i32,
    /// Whether the job's queue gives it a network.
    pub network: bool,
    /// The PersistentVolumeClaim of the job's queue that holds outputs (`outputs_pvc`).
    pub outputs_claim: Option<&'a str>,
}

/// The Job for the job's current attempt.
pub fn job_object(job: &Job, params: &JobObjectParams<'_>) -> K8sJob {
    let labels = labels(job, params.digest);
    let mut annotations = BTreeMap::from([
        (ANNOTATION_QUEUE.to_string(), job.queue.clone()),
        (ANNOTATION_TIER.to_string(), job.tier.clone()),
        (ANNOTATION_IMAGE.to_string(), params.image.to_string()),
        (ANNOTATION_USER.to_string(), job.user.clone()),
    ]);
    if let Some(name) = &job.name {
        annotations.insert(ANNOTATION_NAME.to_string(), name.clone());
    }
    let meta = |annotations: &BTreeMap<String, String>| ObjectMeta {
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };
    let mut pod_meta = meta(&annotations);
    if !params.network {
        pod_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_NETWORK.to_string(), NO_NETWORK.to_string());
    }
    let mut job_meta = meta(&annotations);
    job_meta.name = Some(AttemptKey::of(job).object_name());
    job_meta.namespace = Some(params.namespace.to_string());
    K8sJob {
        metadata: job_meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: job
                .timeout_secs
                .and_then(|t| i64::try_from(t).ok())
                .filter(|t| *t > 0),
            ttl_seconds_after_finished: Some(params.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(pod_spec(job, params)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(job: &Job, params: &JobObjectParams<'_>) -> PodSpec {
    let mut node_selector = params.pool_selector.cloned().unwrap_or_default();
    node_selector.extend(params.tier.node_selector.clone());
    let outputs = params.outputs_claim.filter(|_| !job.outputs.is_empty());
    let mut container = container(job, params.image);
    if outputs.is_some() {
        container.volume_mounts = Some(output_mounts(job));
    }
    PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        volumes: outputs.map(|claim| vec![outputs_volume(claim)]),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!params.tier.tolerations.is_empty()).then(|| params.tier.tolerations.clone()),
        priority_class_name: params.tier.priority_class_name.clone(),
        affinity: params.node.map(pin_to_node),
        // Jobs do not talk to the API: no token in them, and no service env noise.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The queue's outputs claim as a pod volume.
fn outputs_volume(claim: &str) -> Volume {
    Volume {
        name: OUTPUTS_VOLUME.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: None,
        }),
        ..Volume::default()
    }
}

/// Each `--output DIR` is the claim's `<job id>/<DIR>` (without a leading `/`), mounted at
/// DIR in the container (relative to the job's working directory, `/` without one): the
/// claim holds one sub-directory per job, laid out as `$STRATA_HOME/outputs/<job>/files/`
/// is locally. Every attempt of a retried job writes into the same directory.
pub fn output_mounts(job: &Job) -> Vec<VolumeMount> {
    let cwd = job.working_dir.as_deref().unwrap_or("/");
    job.outputs
        .iter()
        .map(|o| VolumeMount {
            name: OUTPUTS_VOLUME.into(),
            mount_path: o.in_container(cwd).display().to_string(),
            sub_path: Some(format!("{}/{}", job.id, o.stored_as().display())),
            ..VolumeMount::default()
        })
        .collect()
}

fn container(job: &Job, image: &str) -> Container {
    let env: Vec<EnvVar> = job
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    Container {
        name: CONTAINER.into(),
        image: Some(image.to_string()),
        // An empty command keeps the image's Entrypoint + Cmd.
        command: (!job.command.is_empty()).then(|| job.command.clone()),
        env: (!env.is_empty()).then_some(env),
        working_dir: job.working_dir.clone(),
        resources: Some(resources(&job.resources)),
        security_context: Some(security_context()),
        ..Container::default()
    }
}

/// The job's container gets no way up: no privilege escalation (setuid binaries, file
/// capabilities), no capabilities at all, and the runtime's default seccomp profile (the
/// same confinement as a local job, see `strata-runc`'s `seccomp`). `runAsNonRoot` is not
/// set: images built on common bases run as root, and the kubelet would refuse them
/// (`CreateContainerConfigError`); with no capabilities, root in the container cannot
/// override file permissions or do anything privileged.
pub fn security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        privileged: Some(false),
        ..SecurityContext::default()
    }
}

/// Requests = limits = the tier: the pod is Guaranteed, as a local job's cgroup is.
pub fn resources(tier: &Resources) -> ResourceRequirements {
    let mut amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{}m", tier.millicpus))),
        ("memory".to_string(), Quantity(tier.memory.to_string())),
    ]);
    if tier.gpus > 0 {
        amounts.insert(GPU_RESOURCE.to_string(), Quantity(tier.gpus.to_string()));
    }
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    }
}

fn pin_to_node(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.to_string()]),
                    }]),
                    match_expressions: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("team-a"), "team-a");
        assert_eq!(label_value("Team A/ß"), "Team_A");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(""), "");
        let long = label_value(&"a".repeat(100));
        assert_eq!(long.len(), 63);
        assert_eq!(
            label_value(&format!("{}.-", "b".repeat(62))),
            "b".repeat(62)
        );
    }

    #[test]
    fn a_key_is_read_back_from_labels_not_from_its_text() {
        let id: JobId = "j-abcdefghij".parse().unwrap();
        let mut labels = BTreeMap::from([
            (LABEL_JOB.to_string(), id.to_string()),
            (LABEL_ATTEMPT.to_string(), "12".to_string()),
        ]);
        assert_eq!(
            AttemptKey::from_labels(&labels),
            Some(AttemptKey::new(id.clone(), 12))
        );
        labels.insert(LABEL_ATTEMPT.into(), "x".into());
        assert_eq!(AttemptKey::from_labels(&labels), None);
        labels.insert(LABEL_ATTEMPT.into(), "1".into());
        labels.insert(LABEL_JOB.into(), "not-a-job".into());
        assert_eq!(AttemptKey::from_labels(&labels), None);
        labels.remove(LABEL_JOB);
        assert_eq!(AttemptKey::from_labels(&labels), None);
    }

    #[test]
    fn names_are_dns_labels() {
        let id: JobId = "j-abcdefghij".parse().unwrap();
        assert_eq!(object_name(&id, 1), "strata-j-abcdefghij-a1");
        assert!(crate::config::is_dns_label(&object_name(&id, 999)));
        let digest = Digest::of(b"x");
        let key = AttemptKey::new(id.clone(), 3);
        assert_eq!(key.to_string(), "j-abcdefghij-a3");
        assert_eq!(key.object_name(), object_name(&id, 3));
        let env = env_label(&digest);
        assert_eq!(env.len(), 32);
        assert!(digest.to_string().contains(&env));
    }
}

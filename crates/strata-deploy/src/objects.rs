//! One function per Kubernetes object strata runs with. Every object carries
//! `app.kubernetes.io/managed-by=strata`; the permissions are the least the agent uses (see
//! `deploy/README.md`): Jobs, their pods and pod logs in each team namespace, nodes read-only
//! cluster-wide, and nothing else (no Secrets anywhere).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::Label;

/// The label every object strata creates or installs carries (as strata's Jobs do).
const MANAGED_BY: (&str, &str) = (
    strata_kube::objects::MANAGED_BY,
    strata_kube::objects::MANAGER,
);
/// The label naming strata's own pod.
const APP: (&str, &str) = ("app.kubernetes.io/name", "strata");
/// The ServiceAccount the agent runs as.
pub const AGENT_ACCOUNT: &str = "strata-agent";
/// strata's home in its pod: the queue database, logs, metrics and `config.toml`.
const HOME: &str = "/var/lib/strata";
/// The user strata's image runs as (no shell, no root).
pub const RUN_AS_USER: i64 = 65532;
/// The Role (one per team namespace) and its binding.
pub const TEAM_ROLE: &str = "strata-jobs";
/// The NetworkPolicy isolating jobs of queues without a network (one per team namespace).
pub const NO_NETWORK_POLICY: &str = "strata-no-network";

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    [MANAGED_BY]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str, namespace: Option<&Label>, extra: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(Label::to_string),
        labels: Some(labels(extra)),
        ..ObjectMeta::default()
    }
}

pub fn namespace(name: &Label, team: Option<&Label>) -> Namespace {
    let extra: Vec<(&str, &str)> = team
        .map(|t| ("strata.dev/team", t.as_str()))
        .into_iter()
        .collect();
    Namespace {
        metadata: meta(name.as_str(), None, &extra),
        ..Namespace::default()
    }
}

pub fn service_account(namespace: &Label) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(AGENT_ACCOUNT, Some(namespace), &[]),
        ..ServiceAccount::default()
    }
}

pub fn config_map(namespace: &Label, config_toml: String) -> ConfigMap {
    ConfigMap {
        metadata: meta("strata-config", Some(namespace), &[]),
        data: Some(BTreeMap::from([("config.toml".to_string(), config_toml)])),
        ..ConfigMap::default()
    }
}

pub fn home_claim(namespace: &Label, storage: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta("strata-home", Some(namespace), &[]),
        spec: Some(PersistentVolumeClaimSpec {
            // One pod (Recreate) uses it: ReadWriteOnce is enough and every provisioner has it.
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.to_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The port `strata server` listens on in its container (TLS).
pub const SERVER_PORT: i32 = 8443;
/// The Secret (type kubernetes.io/tls) holding the server's certificate and key.
pub const TLS_SECRET: &str = "strata-tls";
const TLS_DIR: &str = "/etc/strata/tls";

/// One of strata's containers: the image, as the unprivileged user, read-only root
/// filesystem, no capabilities, sharing the home volume (the queue database) and the config.
fn strata_container(name: &str, image: &str, args: &[&str]) -> Container {
    Container {
        name: name.to_string(),
        image: Some(image.to_string()),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        env: Some(vec![
            env("STRATA_HOME", HOME),
            env("TMPDIR", "/tmp"),
            env("NO_COLOR", "1"),
        ]),
        volume_mounts: Some(vec![
            mount("home", HOME, None),
            mount(
                "config",
                &format!("{HOME}/config.toml"),
                Some("config.toml"),
            ),
            mount("tmp", "/tmp", None),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "250m"), ("memory", "256Mi")])),
            limits: Some(quantities(&[("memory", "1Gi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The agent and the team service in one pod (they share `strata.db` on the home volume;
/// nothing else opens it): one replica, recreated (never two at once, not even during a
/// rollout), as a non-root user with a read-only root filesystem and no capabilities.
pub fn deployment(namespace: &Label, image: &str) -> Deployment {
    let selector = BTreeMap::from([(APP.0.to_string(), APP.1.to_string())]);
    let agent = strata_container(
        "agent",
        image,
        &["agent", "--backend", "kubernetes", "--in-cluster"],
    );
    let listen = format!("0.0.0.0:{SERVER_PORT}");
    let cert = format!("{TLS_DIR}/tls.crt");
    let key = format!("{TLS_DIR}/tls.key");
    let mut server = strata_container(
        "server",
        image,
        &[
            "server",
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    server.ports = Some(vec![ContainerPort {
        name: Some("https".to_string()),
        container_port: SERVER_PORT,
        // Server-side apply keys ports by port and protocol: say it.
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }]);
    if let Some(mounts) = server.volume_mounts.as_mut() {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount("tls", TLS_DIR, None)
        });
    }
    let pod = PodSpec {
        service_account_name: Some(AGENT_ACCOUNT.to_string()),
        containers: vec![agent, server],
        security_context: Some(PodSecurityContext {
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "home".to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "strata-home".to_string(),
                    ..PersistentVolumeClaimVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "strata-config".to_string(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tls".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(TLS_SECRET.to_string()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta("strata", Some(namespace), &[APP]),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                ..DeploymentStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[APP])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The team service inside the cluster: `https://strata.NAMESPACE.svc` on port 443. Teams
/// reach it through an Ingress or LoadBalancer of the platform's choosing, or
/// `kubectl port-forward` (see deploy/README.md).
pub fn service(namespace: &Label) -> Service {
    Service {
        metadata: meta("strata", Some(namespace), &[APP]),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(APP.0.to_string(), APP.1.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("https".to_string()),
                port: 443,
                protocol: Some("TCP".to_string()),
                target_port: Some(IntOrString::String("https".to_string())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, sub_path: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        sub_path: sub_path.map(str::to_string),
        read_only: sub_path.map(|_| true),
        ..VolumeMount::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

fn agent_subject(namespace: &Label) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_string(),
        name: AGENT_ACCOUNT.to_string(),
        namespace: Some(namespace.to_string()),
        ..Subject::default()
    }]
}

/// The cluster-wide part, named after strata's namespace so that two installations (two
/// namespaces) do not take each other's binding.
pub fn cluster_role_name(namespace: &Label) -> String {
    format!("strata-{namespace}-read-nodes")
}

/// Read-only access to nodes: the agent admits a job only when its tier fits on one node.
pub fn cluster_role(namespace: &Label) -> ClusterRole {
    ClusterRole {
        metadata: meta(&cluster_role_name(namespace), None, &[]),
        rules: Some(vec![rule("", &["nodes"], &["get", "list", "watch"])]),
        ..ClusterRole::default()
    }
}

pub fn cluster_role_binding(namespace: &Label) -> ClusterRoleBinding {
    let name = cluster_role_name(namespace);
    ClusterRoleBinding {
        metadata: meta(&name, None, &[]),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name,
        },
        subjects: Some(agent_subject(namespace)),
    }
}

/// In a team namespace: Jobs (create, watch, cancel), their pods (watch, delete on cancel)
/// and pod logs. Nothing else.
pub fn team_role(team: &Label) -> Role {
    Role {
        metadata: meta(TEAM_ROLE, Some(team), &[]),
        rules: Some(vec![
            rule(
                "batch",
                &["jobs"],
                &["create", "get", "list", "watch", "delete"],
            ),
            rule("", &["pods"], &["get", "list", "watch", "delete"]),
            rule("", &["pods/log"], &["get"]),
        ]),
    }
}

pub fn team_role_binding(team: &Label, namespace: &Label) -> RoleBinding {
    RoleBinding {
        metadata: meta(TEAM_ROLE, Some(team), &[]),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: TEAM_ROLE.to_string(),
        },
        subjects: Some(agent_subject(namespace)),
    }
}

/// Nothing in or out of the pods strata labels `strata.dev/network=none` (jobs of queues
/// without `network = true`). It takes a network plugin that enforces NetworkPolicy.
pub fn no_network_policy(team: &Label) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(NO_NETWORK_POLICY, Some(team), &[]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                // The label strata-kube puts on the pods of queues without a network.
                match_labels: Some(BTreeMap::from([(
                    strata_kube::objects::LABEL_NETWORK.to_string(),
                    strata_kube::objects::NO_NETWORK.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ..NetworkPolicySpec::default()
        }),
    }
}

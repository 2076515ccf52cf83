//! The Kubernetes objects that run strata for a set of teams (`strata deploy`): strata's
//! namespace with its agent and team service (one Deployment, its ServiceAccount, its
//! configuration, the volume holding the queue, the Service in front of `strata server`), the read-only access to nodes the agent needs cluster-wide, and for each
//! team a namespace with the Role the agent uses there and the NetworkPolicy isolating jobs
//! without a network. Rendered as typed objects ([`Manifests`]) and printed as YAML
//! ([`Manifests::to_yaml`]) that `kubectl apply -f -` (or server-side apply) takes as it is.

mod names;
pub mod objects;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;

pub use names::{Label, NameError};

/// strata's own namespace unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "strata";
/// The size of the volume holding `strata.db`, logs and metrics unless said otherwise.
pub const DEFAULT_STORAGE: &str = "5Gi";

/// What to render.
#[derive(Clone, Debug)]
pub struct Options {
    /// strata's namespace (the agent, its volume and configuration).
    pub namespace: Label,
    /// One namespace, one queue and one Role per team.
    pub teams: Vec<Label>,
    /// `REGISTRY/REPO` job images are pulled from (`[kubernetes] registry`).
    pub registry: String,
    /// strata's own image (see `scripts/build-image`).
    pub image: String,
    /// The size of the home volume (a Kubernetes quantity, `5Gi`).
    pub storage: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no teams: name at least one with --teams (each becomes a namespace and a queue)")]
    NoTeams,
    #[error("team `{0}` is named twice")]
    DuplicateTeam(Label),
    #[error("team `{0}` has the name of strata's own namespace; give strata another --namespace")]
    TeamIsStrataNamespace(Label),
    #[error("`{0}` is not a registry repository (REGISTRY/REPO, without a tag or digest)")]
    Registry(String),
    #[error("cannot write the objects as YAML: {0}")]
    Yaml(String),
}

/// The objects of one team namespace.
#[derive(Clone, Debug)]
pub struct TeamObjects {
    pub namespace: Namespace,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub no_network: NetworkPolicy,
}

/// Every object, typed, in the order they are applied (namespaces before what they hold,
/// roles before their bindings).
#[derive(Clone, Debug)]
pub struct Manifests {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub config: ConfigMap,
    pub home: PersistentVolumeClaim,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub teams: Vec<TeamObjects>,
    pub deployment: Deployment,
    pub service: Service,
}

/// Renders the objects of `options`.
pub fn render(options: &Options) -> Result<Manifests, DeployError> {
    check(options)?;
    let ns = &options.namespace;
    let teams = options
        .teams
        .iter()
        .map(|team| TeamObjects {
            namespace: objects::namespace(team, Some(team)),
            role: objects::team_role(team),
            role_binding: objects::team_role_binding(team, ns),
            no_network: objects::no_network_policy(team),
        })
        .collect();
    Ok(Manifests {
        namespace: objects::namespace(ns, None),
        service_account: objects::service_account(ns),
        config: objects::config_map(ns, agent_config(options)),
        home: objects::home_claim(ns, &options.storage),
        cluster_role: objects::cluster_role(ns),
        cluster_role_binding: objects::cluster_role_binding(ns),
        teams,
        deployment: objects::deployment(ns, &options.image),
        service: objects::service(ns),
    })
}

fn check(options: &Options) -> Result<(), DeployError> {
    if options.teams.is_empty() {
        return Err(DeployError::NoTeams);
    }
    let mut seen = std::collections::BTreeSet::new();
    for team in &options.teams {
        if !seen.insert(team) {
            return Err(DeployError::DuplicateTeam(team.clone()));
        }
        if team == &options.namespace {
            return Err(DeployError::TeamIsStrataNamespace(team.clone()));
        }
    }
    let registry = &options.registry;
    let repository = registry.split_once('/').map(|(_, repo)| repo);
    let bad = repository.is_none_or(str::is_empty)
        || registry.contains('@')
        || repository.is_some_and(|r| r.contains(':'))
        || registry
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(DeployError::Registry(registry.clone()));
    }
    Ok(())
}

/// The agent's and the server's `config.toml`: in the cluster, pulling from the registry, one
/// queue per team, belonging to the team (its tokens reach it) and running its jobs in the
/// team's namespace; each team's laptops push to its repository under the registry.
fn agent_config(options: &Options) -> String {
    let mut kubernetes = toml::Table::new();
    kubernetes.insert("in_cluster".into(), true.into());
    kubernetes.insert("registry".into(), options.registry.clone().into());
    let mut kube_queues = toml::Table::new();
    let mut queues = toml::Table::new();
    for team in &options.teams {
        let mut queue = toml::Table::new();
        queue.insert("namespace".into(), team.to_string().into());
        kube_queues.insert(team.to_string(), queue.into());
        let mut queue = toml::Table::new();
        queue.insert("team".into(), team.to_string().into());
        queues.insert(team.to_string(), queue.into());
    }
    kubernetes.insert("queues".into(), kube_queues.into());
    let mut config = toml::Table::new();
    config.insert("kubernetes".into(), kubernetes.into());
    config.insert("queues".into(), queues.into());
    // Laptops push their jobs' images to REGISTRY/REPO/TEAM (`strata submit -r`).
    let mut server = toml::Table::new();
    server.insert("registry".into(), options.registry.clone().into());
    config.insert("server".into(), server.into());
    let body = toml::to_string(&config).expect("a TOML table always serializes");
    format!("# Rendered by `strata deploy`; see deploy/README.md for the other settings.\n{body}")
}

impl Manifests {
    /// Every object as JSON, in apply order.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut values = vec![
            value(&self.namespace),
            value(&self.service_account),
            value(&self.config),
            value(&self.home),
            value(&self.cluster_role),
            value(&self.cluster_role_binding),
        ];
        for team in &self.teams {
            values.push(value(&team.namespace));
            values.push(value(&team.role));
            values.push(value(&team.role_binding));
            values.push(value(&team.no_network));
        }
        values.push(value(&self.deployment));
        values.push(value(&self.service));
        values
    }

    /// Every object as one YAML stream (documents separated by `---`).
    pub fn to_yaml(&self) -> Result<String, DeployError> {
        let mut out = String::new();
        for object in self.to_values() {
            let doc =
                serde_saphyr::to_string(&object).map_err(|e| DeployError::Yaml(e.to_string()))?;
            out.push_str("---\n");
            out.push_str(&doc);
            if !doc.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

fn value<T: Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).expect("Kubernetes objects always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(teams: &[&str]) -> Options {
        Options {
            namespace: "strata".parse().unwrap(),
            teams: teams.iter().map(|t| t.parse().unwrap()).collect(),
            registry: "registry.example.com/ml/envs".into(),
            image: "registry.example.com/strata:0.1.0".into(),
            storage: DEFAULT_STORAGE.into(),
        }
    }

    /// The rendered config.toml is read by the same code the agent uses, and maps each team
    /// to a queue running in the team's namespace.
    #[test]
    fn the_agent_reads_the_rendered_configuration() {
        let manifests = render(&options(&["vision", "nlp"])).unwrap();
        let toml = &manifests.config.data.as_ref().unwrap()["config.toml"];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, toml).unwrap();
        let config = strata_config::Config::from_file(&file).unwrap();
        let kube = strata_kube::KubeSettings::from_config(&config).unwrap();
        assert_eq!(kube.connection, strata_kube::Connection::InCluster);
        assert_eq!(
            kube.registry.as_deref(),
            Some("registry.example.com/ml/envs")
        );
        assert_eq!(kube.namespace("vision"), "vision");
        let server: toml::Table = config.section("server").unwrap();
        assert_eq!(
            server["registry"].as_str(),
            Some("registry.example.com/ml/envs")
        );
        assert_eq!(kube.namespace("nlp"), "nlp");
        let scheduler = strata_queue::SchedulerConfig::from_config(&config).unwrap();
        let queues: Vec<&String> = scheduler.queues.keys().collect();
        assert_eq!(queues, ["nlp", "vision"]);
        for (name, queue) in &scheduler.queues {
            assert_eq!(
                queue.team.as_deref(),
                Some(name.as_str()),
                "queue {name}'s team"
            );
        }
    }

    #[test]
    fn each_team_gets_a_namespace_a_role_a_binding_and_a_network_policy() {
        let manifests = render(&options(&["vision", "nlp"])).unwrap();
        assert_eq!(manifests.teams.len(), 2);
        for (team, objects) in ["vision", "nlp"].iter().zip(&manifests.teams) {
            assert_eq!(objects.namespace.metadata.name.as_deref(), Some(*team));
            assert_eq!(objects.role.metadata.namespace.as_deref(), Some(*team));
            let subjects = objects.role_binding.subjects.as_ref().unwrap();
            assert_eq!(subjects[0].namespace.as_deref(), Some("strata"));
            assert_eq!(subjects[0].name, objects::AGENT_ACCOUNT);
            assert_eq!(
                objects.no_network.metadata.namespace.as_deref(),
                Some(*team)
            );
        }
        // No rule anywhere names secrets, a wildcard or a verb the agent does not use.
        let roles = manifests
            .teams
            .iter()
            .flat_map(|t| t.role.rules.clone().unwrap());
        let cluster = manifests.cluster_role.rules.clone().unwrap();
        for rule in roles.chain(cluster) {
            let resources = rule.resources.unwrap();
            assert!(!resources.iter().any(|r| r == "secrets" || r == "*"));
            assert!(!rule
                .verbs
                .iter()
                .any(|v| v == "*" || v == "escalate" || v == "bind"));
        }
    }

    #[test]
    fn the_yaml_stream_reads_back_as_the_objects() {
        let manifests = render(&options(&["vision"])).unwrap();
        let yaml = manifests.to_yaml().unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&yaml).unwrap();
        assert_eq!(docs, manifests.to_values());
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ConfigMap",
                "PersistentVolumeClaim",
                "ClusterRole",
                "ClusterRoleBinding",
                "Namespace",
                "Role",
                "RoleBinding",
                "NetworkPolicy",
                "Deployment",
                "Service"
            ]
        );
        assert!(!yaml.contains("REGISTRY/") && !yaml.contains("VERSION"));
    }

    #[test]
    fn the_agent_runs_unprivileged() {
        let manifests = render(&options(&["vision"])).unwrap();
        let pod = manifests.deployment.spec.unwrap().template.spec.unwrap();
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_ne!(security.run_as_user, Some(0));
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["agent", "server"]);
        for container in &pod.containers {
            assert_eq!(
                container.image.as_deref(),
                Some("registry.example.com/strata:0.1.0")
            );
            let context = container.security_context.as_ref().unwrap();
            assert_eq!(context.allow_privilege_escalation, Some(false));
            assert_eq!(context.read_only_root_filesystem, Some(true));
        }
        // The server serves TLS only: its certificate comes from the strata-tls Secret.
        let args = pod.containers[1].args.clone().unwrap().join(" ");
        assert!(
            args.contains("--tls-cert") && args.contains("--tls-key"),
            "{args}"
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_culprit() {
        let err = render(&options(&[])).unwrap_err();
        assert!(err.to_string().contains("--teams"), "{err}");
        let err = render(&options(&["vision", "vision"])).unwrap_err();
        assert!(err.to_string().contains("`vision` is named twice"), "{err}");
        let err = render(&options(&["strata"])).unwrap_err();
        assert!(err.to_string().contains("--namespace"), "{err}");
        for registry in [
            "registry.example.com",
            "reg/repo:tag",
            "reg/repo@sha256:00",
            "reg/",
        ] {
            let mut bad = options(&["vision"]);
            bad.registry = registry.into();
            let err = render(&bad).unwrap_err();
            assert!(err.to_string().contains(registry), "{err}");
        }
    }
}

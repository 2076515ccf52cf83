//! `strata deploy`: the manifests of `deploy/` rendered for one agent namespace and a set of
//! team namespaces, so that they apply as they are. `deploy/` stays the one source: its files
//! are compiled in and only the names that differ per installation are set here.

use serde_json::{json, Value};

use crate::config::is_dns_label;

const AGENT: (&str, &str) = ("agent.yaml", include_str!("../../../deploy/agent.yaml"));
const NODES: (&str, &str) = (
    "rbac-nodes.yaml",
    include_str!("../../../deploy/rbac-nodes.yaml"),
);
const TEAM: (&str, &str) = (
    "rbac-team.yaml",
    include_str!("../../../deploy/rbac-team.yaml"),
);
const NETWORK: (&str, &str) = (
    "networkpolicy.yaml",
    include_str!("../../../deploy/networkpolicy.yaml"),
);

/// What deploy/'s files write where the agent's namespace goes.
const AGENT_NAMESPACE: &str = "AGENT-NAMESPACE";
/// The Deployment's container that runs strata.
const AGENT_CONTAINER: &str = "agent";

/// One installation: where the agent runs, the teams' namespaces, strata's image.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The agent's namespace (ServiceAccount, Deployment).
    pub namespace: String,
    /// One namespace per team: jobs run there.
    pub teams: Vec<String>,
    /// Where strata's image was pushed: `REGISTRY[/PATH]`; the image is `REGISTRY/strata`.
    pub registry: String,
    /// The tag (strata's version), or a digest (`sha256:...`) to pin the bytes.
    pub version: ImageVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageVersion {
    Tag(String),
    Digest(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "{what} {name:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
    )]
    Namespace { what: &'static str, name: String },
    #[error("team {0:?} is given twice")]
    DuplicateTeam(String),
    #[error("no team given: jobs need at least one team namespace")]
    NoTeams,
    #[error("team {0:?} is the agent's namespace: give the agent a namespace of its own")]
    TeamIsAgent(String),
    #[error("registry {0:?}: expected REGISTRY[/PATH] without scheme, tag or digest, e.g. registry.example.com/ml")]
    Registry(String),
    #[error("digest {0:?}: expected sha256: and 64 hex digits")]
    Digest(String),
    /// deploy/'s files are compiled in: this is a bug, caught by the tests.
    #[error("deploy/{file}: {detail}")]
    Manifest { file: &'static str, detail: String },
}

impl DeployOptions {
    fn check(&self) -> Result<(), DeployError> {
        if !is_dns_label(&self.namespace) {
            return Err(DeployError::Namespace {
                what: "agent namespace",
                name: self.namespace.clone(),
            });
        }
        if self.teams.is_empty() {
            return Err(DeployError::NoTeams);
        }
        for (i, team) in self.teams.iter().enumerate() {
            if !is_dns_label(team) {
                return Err(DeployError::Namespace {
                    what: "team",
                    name: team.clone(),
                });
            }
            if self.teams[..i].contains(team) {
                return Err(DeployError::DuplicateTeam(team.clone()));
            }
            if *team == self.namespace {
                return Err(DeployError::TeamIsAgent(team.clone()));
            }
        }
        let r = &self.registry;
        let bad = r.is_empty()
            || r.contains("://")
            || r.contains('@')
            || r.ends_with('/')
            || r.starts_with('/')
            || r.chars().any(|c| c.is_whitespace() || c.is_ascii_uppercase())
            // A tag on the last component (a port is on the first, which has no '/').
            || r.rsplit_once('/').is_some_and(|(_, last)| last.contains(':'));
        if bad {
            return Err(DeployError::Registry(r.clone()));
        }
        if let ImageVersion::Digest(d) = &self.version {
            let hex = d.strip_prefix("sha256:").unwrap_or("");
            let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err(DeployError::Digest(d.clone()));
            }
        }
        Ok(())
    }

    /// strata's image reference, as the Deployment names it.
    pub fn image(&self) -> String {
        match &self.version {
            ImageVersion::Tag(tag) => format!("{}/strata:{tag}", self.registry),
            ImageVersion::Digest(digest) => format!("{}/strata@{digest}", self.registry),
        }
    }
}

/// The objects to apply, in an order `kubectl apply` accepts in one go: namespaces first,
/// then the agent, the cluster-wide read of nodes, and each team's Role, RoleBinding and
/// NetworkPolicy.
pub fn render(options: &DeployOptions) -> Result<Vec<Value>, DeployError> {
    options.check()?;
    let ns = options.namespace.as_str();
    let mut objects = vec![namespace(ns)];
    objects.extend(options.teams.iter().map(|t| namespace(t)));

    for mut doc in documents(AGENT, ns)? {
        doc["metadata"]["namespace"] = json!(ns);
        if doc["kind"] == "Deployment" {
            set_image(&mut doc, &options.image())?;
        }
        objects.push(doc);
    }
    objects.extend(documents(NODES, ns)?);
    for team in &options.teams {
        for file in [TEAM, NETWORK] {
            for mut doc in documents(file, ns)? {
                doc["metadata"]["namespace"] = json!(team);
                objects.push(doc);
            }
        }
    }
    Ok(objects)
}

/// The objects as one YAML stream (`---` between documents).
pub fn to_yaml(objects: &[Value]) -> Result<String, DeployError> {
    serde_saphyr::to_string_multiple(objects).map_err(|e| DeployError::Manifest {
        file: "(rendered)",
        detail: e.to_string(),
    })
}

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/managed-by": "strata" },
        },
    })
}

/// A file's documents, with the agent's namespace filled in.
fn documents(
    (file, text): (&'static str, &str),
    agent_ns: &str,
) -> Result<Vec<Value>, DeployError> {
    let text = text.replace(AGENT_NAMESPACE, agent_ns);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| DeployError::Manifest {
            file,
            detail: e.to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn set_image(deployment: &mut Value, image: &str) -> Result<(), DeployError> {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array_mut();
    let agent = containers
        .into_iter()
        .flatten()
        .find(|c| c["name"] == AGENT_CONTAINER)
        .ok_or(DeployError::Manifest {
            file: AGENT.0,
            detail: format!("the Deployment has no container {AGENT_CONTAINER:?}"),
        })?;
    agent["image"] = json!(image);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use serde::de::DeserializeOwned;

    fn options() -> DeployOptions {
        DeployOptions {
            namespace: "strata".into(),
            teams: vec!["vision".into(), "nlp".into()],
            registry: "registry.example.com/ml".into(),
            version: ImageVersion::Tag("0.1.0".into()),
        }
    }

    /// The rendered objects of one kind, typed; the YAML is parsed back, as kubectl would.
    fn of_kind<T: DeserializeOwned>(yaml: &str, kind: &str) -> Vec<(Option<String>, T)> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
        docs.into_iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| {
                let ns = d["metadata"]["namespace"].as_str().map(str::to_string);
                (ns, serde_json::from_value(d).unwrap())
            })
            .collect()
    }

    #[test]
    fn renders_every_object_for_the_teams() {
        let yaml = to_yaml(&render(&options()).unwrap()).unwrap();
        assert!(!yaml.contains(AGENT_NAMESPACE), "{yaml}");

        let namespaces: Vec<(_, Namespace)> = of_kind(&yaml, "Namespace");
        let names: Vec<_> = namespaces
            .iter()
            .map(|(_, n)| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["strata", "vision", "nlp"]);

        let deployments: Vec<(_, Deployment)> = of_kind(&yaml, "Deployment");
        assert_eq!(deployments.len(), 1);
        let (ns, deployment) = &deployments[0];
        assert_eq!(ns.as_deref(), Some("strata"));
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("strata-agent"));
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.example.com/ml/strata:0.1.0")
        );
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(65532));
        assert_eq!(
            of_kind::<Value>(&yaml, "ServiceAccount")[0].0.as_deref(),
            Some("strata")
        );

        for team in ["vision", "nlp"] {
            let roles: Vec<(_, Role)> = of_kind(&yaml, "Role");
            let (_, role) = roles
                .iter()
                .find(|(ns, _)| ns.as_deref() == Some(team))
                .unwrap_or_else(|| panic!("no Role in {team}"));
            for rule in role.rules.iter().flatten() {
                let resources = rule.resources.clone().unwrap_or_default();
                assert!(
                    resources
                        .iter()
                        .all(|r| ["jobs", "pods", "pods/log"].contains(&r.as_str())),
                    "{team}: {resources:?}"
                );
                assert!(!rule.verbs.contains(&"*".to_string()), "{team}: {rule:?}");
            }
            let bindings: Vec<(_, RoleBinding)> = of_kind(&yaml, "RoleBinding");
            let (_, binding) = bindings
                .iter()
                .find(|(ns, _)| ns.as_deref() == Some(team))
                .unwrap_or_else(|| panic!("no RoleBinding in {team}"));
            let subject = &binding.subjects.as_ref().unwrap()[0];
            assert_eq!(
                (
                    subject.kind.as_str(),
                    subject.name.as_str(),
                    subject.namespace.as_deref()
                ),
                ("ServiceAccount", "strata-agent", Some("strata"))
            );
            assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
            let policies: Vec<(_, NetworkPolicy)> = of_kind(&yaml, "NetworkPolicy");
            assert!(
                policies.iter().any(|(ns, _)| ns.as_deref() == Some(team)),
                "{team}"
            );
        }
        assert_eq!(of_kind::<Role>(&yaml, "Role").len(), 2);

        let cluster_roles: Vec<(_, ClusterRole)> = of_kind(&yaml, "ClusterRole");
        assert_eq!(cluster_roles.len(), 1);
        let rules = cluster_roles[0].1.rules.clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["nodes".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        let (ns, binding) = &of_kind::<ClusterRoleBinding>(&yaml, "ClusterRoleBinding")[0];
        assert_eq!(*ns, None);
        assert_eq!(
            binding.subjects.as_ref().unwrap()[0].namespace.as_deref(),
            Some("strata")
        );
        // Nothing in the rendering grants secrets.
        assert!(!yaml.contains("secrets"), "{yaml}");
    }

    #[test]
    fn a_digest_pins_the_image() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let mut o = options();
        o.version = ImageVersion::Digest(digest.clone());
        let yaml = to_yaml(&render(&o).unwrap()).unwrap();
        let (_, deployment) = &of_kind::<Deployment>(&yaml, "Deployment")[0];
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(format!("registry.example.com/ml/strata@{digest}").as_str())
        );
    }

    #[test]
    fn bad_names_are_refused() {
        type Change = fn(&mut DeployOptions);
        let cases: Vec<(Change, &str)> = vec![
            (
                |o| o.teams = vec!["Vision".into()],
                "\"Vision\" is not a namespace name",
            ),
            (|o| o.teams = vec!["a".into(), "a".into()], "given twice"),
            (|o| o.teams = vec![], "no team"),
            (|o| o.teams = vec!["strata".into()], "the agent's namespace"),
            (|o| o.namespace = "a_b".into(), "agent namespace \"a_b\""),
            (|o| o.registry = "https://r.example".into(), "registry"),
            (|o| o.registry = "r.example/ml/strata:1".into(), "registry"),
            (|o| o.registry = "r.example/".into(), "registry"),
            (
                |o| o.version = ImageVersion::Digest("sha256:12".into()),
                "digest",
            ),
        ];
        for (change, expected) in cases {
            let mut o = options();
            change(&mut o);
            let err = render(&o).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let mut o = options();
        o.registry = "localhost:5000".into();
        let yaml = to_yaml(&render(&o).unwrap()).unwrap();
        assert!(
            yaml.contains("image: localhost:5000/strata:0.1.0"),
            "{yaml}"
        );
    }
}

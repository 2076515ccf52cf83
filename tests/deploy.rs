//! `strata deploy` against the real v1.20 control plane of `scripts/testcluster`: the objects
//! it prints for two teams are applied as they are (server-side apply, with the kube client),
//! and what the agent's ServiceAccount may do is asked of the API server's own authorizer
//! (`SubjectAccessReview`), not read from the YAML. Built with `STRATA_SKIP_K8S=1`, the cluster
//! test is ignored; otherwise it fails without the cluster.

#[path = "../crates/strata-kube/tests/kube_support/mod.rs"]
mod kube_support;

use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::Value;
use strata_kube::{connect, Connection};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run strata")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The objects `strata deploy` prints, parsed.
fn rendered(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["deploy"];
    all.extend_from_slice(args);
    let out = strata(&all);
    assert!(
        out.status.success(),
        "strata deploy failed: {}",
        stderr(&out)
    );
    let yaml = String::from_utf8(out.stdout).expect("YAML is UTF-8");
    serde_saphyr::from_str_multiple(&yaml).expect("strata deploy prints YAML documents")
}

#[test]
fn bad_teams_and_registries_are_refused_naming_them() {
    // A value that is not a name is refused while parsing the command line (clap's exit
    // code 2); options that parse but do not agree, by strata (3, bad input).
    for (args, culprit, code) in [
        (
            vec!["--teams", "Vision", "--registry", "r.example/ml"],
            "Vision",
            2,
        ),
        (
            vec!["--teams", "a,a", "--registry", "r.example/ml"],
            "`a` is named twice",
            3,
        ),
        (
            vec!["--teams", "a", "--registry", "r.example"],
            "r.example",
            3,
        ),
        (
            vec!["--teams", "strata", "--registry", "r.example/ml"],
            "--namespace",
            3,
        ),
    ] {
        let mut all = vec!["deploy"];
        all.extend(args);
        let out = strata(&all);
        assert_eq!(out.status.code(), Some(code), "{all:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(culprit), "{all:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{all:?} printed objects");
    }
}

/// Applies one rendered object with server-side apply.
async fn apply(client: &Client, object: &Value) {
    let gvk = GroupVersionKind::try_from(
        &serde_json::from_value::<kube::core::TypeMeta>(object.clone()).expect("typed object"),
    )
    .expect("apiVersion and kind");
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
    let name = object["metadata"]["name"].as_str().expect("a name");
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("strata-deploy-test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("server-side apply of {} {name}: {e}", gvk.kind));
}

/// Whether the agent's ServiceAccount may do `verb` on `resource` (in `namespace`, or
/// cluster-wide), as the API server's authorizer answers.
async fn may(
    client: &Client,
    account_ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{account_ns}:strata-agent")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{account_ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create a SubjectAccessReview");
    answer.status.expect("a review has a status").allowed
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn rendered_objects_apply_and_grant_the_agent_least_privilege() {
    let kubeconfig = kube_support::cluster();
    let ns = kube_support::unique("strata");
    let vision = kube_support::unique("vision");
    let nlp = kube_support::unique("nlp");
    let teams = format!("{vision},{nlp}");
    let objects = rendered(&[
        "--teams",
        &teams,
        "--registry",
        "127.0.0.1:5000/ml/envs",
        "--namespace",
        &ns,
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let connection = Connection::Kubeconfig {
            path: Some(kubeconfig),
            context: None,
        };
        let client = connect(&connection).await.expect("connect");
        for object in &objects {
            apply(&client, object).await;
        }

        // The objects are there, in their namespaces.
        let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("strata")
            .await
            .expect("the Deployment");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["agent", "server"], "the agent and the team service");
        for container in &pod.containers {
            let image = container.image.clone().unwrap();
            assert_eq!(
                image,
                format!("127.0.0.1:5000/strata:{}", env!("CARGO_PKG_VERSION"))
            );
        }
        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get("strata")
            .await
            .expect("the team service's Service");
        let port = &service.spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.port, 443);
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .get("strata-home")
            .await
            .expect("the home volume claim");
        let cluster_role = format!("strata-{ns}-read-nodes");
        Api::<ClusterRole>::all(client.clone())
            .get(&cluster_role)
            .await
            .expect("the ClusterRole");
        Api::<ClusterRoleBinding>::all(client.clone())
            .get(&cluster_role)
            .await
            .expect("the ClusterRoleBinding");
        for team in [&vision, &nlp] {
            Api::<Namespace>::all(client.clone())
                .get(team)
                .await
                .expect("the team namespace");
            Api::<Role>::namespaced(client.clone(), team)
                .get("strata-jobs")
                .await
                .expect("the team Role");
            Api::<RoleBinding>::namespaced(client.clone(), team)
                .get("strata-jobs")
                .await
                .expect("the team RoleBinding");
            Api::<NetworkPolicy>::namespaced(client.clone(), team)
                .get("strata-no-network")
                .await
                .expect("the team NetworkPolicy");
        }

        // What the agent may do, asked of the authorizer.
        let allowed: &[(&str, &str, &str, Option<&str>)] = &[
            ("create", "batch", "jobs", Some(&vision)),
            ("create", "batch", "jobs", Some(&nlp)),
            ("watch", "batch", "jobs", Some(&nlp)),
            ("delete", "batch", "jobs", Some(&vision)),
            ("delete", "", "pods", Some(&vision)),
            ("get", "", "pods/log", Some(&nlp)),
            ("list", "", "nodes", None),
            ("watch", "", "nodes", None),
        ];
        for (verb, group, resource, namespace) in allowed {
            assert!(
                may(&client, &ns, verb, group, resource, *namespace).await,
                "the agent may not {verb} {resource} in {namespace:?}"
            );
        }
        let denied: &[(&str, &str, &str, Option<&str>)] = &[
            ("get", "", "secrets", Some(&vision)),
            ("list", "", "secrets", Some(&nlp)),
            ("list", "", "secrets", Some(&ns)),
            ("list", "", "secrets", None),
            ("get", "", "configmaps", Some(&vision)),
            ("create", "batch", "jobs", Some("default")),
            ("create", "batch", "jobs", Some(&ns)),
            ("create", "", "pods", Some(&vision)),
            ("create", "", "pods/exec", Some(&vision)),
            (
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                Some(&vision),
            ),
            ("patch", "", "nodes", None),
            ("delete", "", "namespaces", None),
            ("create", "batch", "jobs", None),
        ];
        for (verb, group, resource, namespace) in denied {
            assert!(
                !may(&client, &ns, verb, group, resource, *namespace).await,
                "the agent may {verb} {resource} in {namespace:?}"
            );
        }

        // Best effort: the cluster is shared by the tests of one run.
        for name in [&ns, &vision, &nlp] {
            let _ = Api::<Namespace>::all(client.clone())
                .delete(name, &DeleteParams::default())
                .await;
        }
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&cluster_role, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(client.clone())
            .delete(&cluster_role, &DeleteParams::default())
            .await;
    });
}

/// deploy/strata.yaml, the example a platform team reads first, is what `strata deploy` prints
/// for it: regenerate it with the command below when the objects change.
#[test]
fn the_example_in_deploy_is_what_strata_deploy_prints() {
    let args = [
        "deploy",
        "--teams",
        "team-a,team-b",
        "--registry",
        "registry.example.com/ml/envs",
    ];
    let out = strata(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/strata.yaml");
    let example = std::fs::read_to_string(path).expect("deploy/strata.yaml");
    assert!(
        example == String::from_utf8_lossy(&out.stdout),
        "deploy/strata.yaml is stale: run `strata {} > deploy/strata.yaml`",
        args.join(" ")
    );
}

//! The wired agent on Kubernetes, end to end: `strata submit` and a real
//! `strata agent --backend kubernetes` (a child process, configured by the project's
//! `strata.toml`) against the v1.20 test control plane of `scripts/testcluster` and a
//! real `docker-registry`, both on 127.0.0.1. Everything is checked from outside strata:
//! the Kubernetes API (Jobs, pods, bindings) and the registry's HTTP API. There is no
//! kubelet: the tests play it by patching pod status. Each test has its own STRATA_HOME,
//! registry, namespace and node (a unique pool label), so they run in parallel.
//! Built with `STRATA_SKIP_K8S=1`, they are ignored; otherwise they fail without the cluster.

mod common;
#[path = "../crates/strata-kube/tests/kube_support/mod.rs"]
mod kube_support;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{requirements, sha256_hex, stderr, World};
use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use registry::TestRegistry;
use serde_json::{json, Value};
use strata_kube::objects::{
    attempt_selector, object_name, LABEL_ATTEMPT, LABEL_ENV, LABEL_JOB, LABEL_QUEUE, LABEL_TIER,
    MANAGED_BY, MANAGER,
};
use strata_kube::{connect, Connection};
use strata_queue::JobId;

/// Bound of every wait (the cluster binds in well under a second; builds take longer).
const WAIT: Duration = Duration::from_secs(90);
const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled", "timed_out"];
/// The pool label key of the test nodes (the value is unique per test).
const POOL_LABEL: &str = "strata-e2e/pool";
const QUEUE: &str = "team";

/// A running `strata agent --backend kubernetes`, SIGKILLed on drop.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent has connected and says it runs (bounded).
    fn wait_started(&mut self) {
        let start = Instant::now();
        while !self.log().contains("strata agent: running") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited with {status}: {}", self.log());
            }
            assert!(start.elapsed() < WAIT, "agent not started: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: a project dir with its strata.toml, a STRATA_HOME holding a built
/// environment image, a registry, a namespace for queue `team`, a node of 4 GPUs in pool
/// `gpu` (selected by a label only this test's node has).
struct Setup {
    world: World,
    kubeconfig: PathBuf,
    registry: TestRegistry,
    /// `127.0.0.1:PORT/ml/envs`.
    repo: String,
    runtime: tokio::runtime::Runtime,
    client: Client,
    namespace: String,
    /// The value of `POOL_LABEL` that puts a node in pool `gpu`.
    label: String,
    node: String,
    /// The environment image's tag in the local store, and its digest.
    tag: String,
    digest: String,
    agents: usize,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        let kubeconfig = kube_support::cluster();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let connection = Connection::Kubeconfig {
            path: Some(kubeconfig.clone()),
            context: None,
        };
        let client = runtime
            .block_on(connect(&connection))
            .expect("connect to the test cluster");
        let namespace = kube_support::unique(prefix);
        runtime.block_on(create_namespace(&client, &namespace));
        let label = kube_support::unique("pool");
        let node = kube_support::unique(&format!("{prefix}-node"));
        runtime.block_on(kube_support::add_node(
            &client,
            &node,
            4,
            &[(POOL_LABEL, &label)],
        ));
        let registry = TestRegistry::start();
        let repo = format!("{}/ml/envs", registry.addr());
        let world = World::new();
        fs::write(
            world.dir.path().join("strata.toml"),
            strata_toml(Some(&kubeconfig), &repo, &label, &namespace),
        )
        .expect("write strata.toml");
        let built = world.build_ok(&requirements("shared-a.txt"), &[]);
        let tag = built["tag"].as_str().expect("tag").to_string();
        let digest = built["digest"].as_str().expect("digest").to_string();
        Setup {
            world,
            kubeconfig,
            registry,
            repo,
            runtime,
            client,
            namespace,
            label,
            node,
            tag,
            digest,
            agents: 0,
        }
    }

    /// Starts `strata agent --backend kubernetes` in the project dir; `extra` flags added.
    fn agent(&mut self, extra: &[&str]) -> AgentProcess {
        self.agents += 1;
        let log = self
            .world
            .dir
            .path()
            .join(format!("agent-{}.log", self.agents));
        let file = fs::File::create(&log).expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["agent", "--backend", "kubernetes", "--grace", "1"])
            .args(["--tick-ms", "50"])
            .args(extra)
            .env("STRATA_HOME", &self.world.home)
            .env("STRATA_LOG", "strata=debug,info")
            .current_dir(self.world.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the agent");
        AgentProcess { child, log }
    }

    /// `strata submit --image TAG` of a job in queue `team`; its id.
    fn submit(&self, tier: &str, command: &[&str]) -> String {
        let mut args = vec![
            "submit", "--json", "--queue", QUEUE, "--tier", tier, "--image", &self.tag, "--",
        ];
        args.extend_from_slice(command);
        let out = self.world.strata(&args);
        assert!(out.status.success(), "submit failed: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("submit --json");
        v["id"].as_str().expect("id").to_string()
    }

    fn status(&self, id: &str) -> Value {
        let out = self.world.strata(&["status", id, "--json"]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status --json")
    }

    /// Polls `strata status` until the job is in one of `states` (bounded).
    fn wait_state(&self, agent: &AgentProcess, id: &str, states: &[&str]) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status(id);
            if states.contains(&s["state"].as_str().unwrap_or("")) {
                return s;
            }
            assert!(
                start.elapsed() < WAIT,
                "job {id} never reached {states:?}: {s}\nagent log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// strata's Jobs of job `id` (any attempt) in the test namespace.
    fn jobs_of(&self, id: &str) -> Vec<K8sJob> {
        let api: Api<K8sJob> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&format!("{LABEL_JOB}={id}"));
        self.runtime
            .block_on(api.list(&params))
            .expect("list Jobs")
            .items
    }

    fn pods_of(&self, id: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&format!("{LABEL_JOB}={id}"));
        self.runtime
            .block_on(api.list(&params))
            .expect("list pods")
            .items
    }

    /// Waits until the first attempt's pod is bound by the cluster's scheduler to the
    /// test's node; its name.
    fn bound_pod(&self, agent: &AgentProcess, id: &str) -> String {
        self.bound_pod_on(agent, id, &self.node)
    }

    /// Waits until the first attempt's pod is bound to `expected_node`; its name.
    fn bound_pod_on(&self, agent: &AgentProcess, id: &str, expected_node: &str) -> String {
        let selector = attempt_selector(&id.parse::<JobId>().expect("job id"), 1);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let start = Instant::now();
        loop {
            let pods = self
                .runtime
                .block_on(api.list(&ListParams::default().labels(&selector)))
                .expect("list pods")
                .items;
            let bound = pods.iter().find_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((p.name_any(), node))
            });
            if let Some((pod, node)) = bound {
                assert_eq!(node, expected_node, "bound to the pool's node");
                assert_eq!(pods.len(), 1, "one pod per attempt");
                return pod;
            }
            assert!(
                start.elapsed() < WAIT,
                "no pod of {id} was bound within {WAIT:?}: {pods:?}\nagent log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Plays the kubelet: patches the pod's status.
    fn kubelet(&self, pod: &str, status: Value) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = Patch::Merge(json!({ "status": status }));
        self.runtime
            .block_on(api.patch_status(pod, &PatchParams::default(), &patch))
            .unwrap_or_else(|e| panic!("patch the status of pod {pod}: {e}"));
    }

    /// Waits until neither a Job nor a pod of job `id` is left in the cluster.
    fn wait_gone(&self, id: &str) {
        let start = Instant::now();
        loop {
            let (jobs, pods) = (self.jobs_of(id), self.pods_of(id));
            if jobs.is_empty() && pods.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "job {id} left {} Job(s) and pods {:?} in the cluster",
                jobs.len(),
                pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The manifest `digest` as the test registry serves it: (HTTP status line, body).
    fn registry_manifest(&self, digest: &str) -> (String, Vec<u8>) {
        let path = format!("/v2/ml/envs/manifests/{digest}");
        http_get(&self.registry.addr(), &path)
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// The project's configuration; `kubeconfig: None` leaves the agent to find it
/// (`$KUBECONFIG`).
fn strata_toml(
    kubeconfig: Option<&std::path::Path>,
    repo: &str,
    label: &str,
    namespace: &str,
) -> String {
    let kubeconfig = kubeconfig
        .map(|k| format!("kubeconfig = \"{}\"\n", k.display()))
        .unwrap_or_default();
    format!(
        r#"[queues.{QUEUE}]
tiers = ["cpu", "gpu8"]

[kubernetes]
{kubeconfig}registry = "{repo}"

[kubernetes.pools.gpu]
node_selector = {{ "{POOL_LABEL}" = "{label}" }}

[kubernetes.queues.{QUEUE}]
namespace = "{namespace}"
"#
    )
}

/// A plain HTTP/1.0 GET on loopback (the registry serves manifests with a length).
fn http_get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body)
}

fn container_status(state: Value) -> Value {
    json!([{
        "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
        "state": state
    }])
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": container_status(
        json!({"running": {"startedAt": "2024-01-01T00:00:00Z"}})
    )})
}

fn exited(phase: &str, code: i32, reason: &str) -> Value {
    json!({"phase": phase, "containerStatuses": container_status(json!({"terminated": {
        "exitCode": code, "reason": reason,
        "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:00Z"
    }}))})
}

fn label<'a>(job: &'a K8sJob, key: &str) -> Option<&'a str> {
    job.labels().get(key).map(String::as_str)
}

fn image_of(job: &K8sJob) -> String {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The number of events of the job's history in `state`.
fn events_in(status: &Value, state: &str) -> usize {
    status["history"]
        .as_array()
        .map(|h| h.iter().filter(|e| e["state"] == state).count())
        .unwrap_or(0)
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_cpu_job_runs_as_one_job_on_the_pool_node_from_the_pushed_image() {
    let mut setup = Setup::new("e2e-run");
    let agent = setup.agent(&[]);
    let id = setup.submit("cpu", &["sh", "-c", "echo hello"]);
    setup.wait_state(&agent, &id, &["running"]);
    let pod = setup.bound_pod(&agent, &id);

    let jobs = setup.jobs_of(&id);
    assert_eq!(jobs.len(), 1, "one Job per attempt");
    let job = &jobs[0];
    let parsed: JobId = id.parse().expect("job id");
    assert_eq!(job.name_any(), object_name(&parsed, 1));
    assert_eq!(label(job, MANAGED_BY), Some(MANAGER));
    assert_eq!(label(job, LABEL_JOB), Some(id.as_str()));
    assert_eq!(label(job, LABEL_ATTEMPT), Some("1"));
    assert_eq!(label(job, LABEL_QUEUE), Some(QUEUE));
    assert_eq!(label(job, LABEL_TIER), Some("cpu"));
    let hex = setup.digest.trim_start_matches("sha256:");
    assert_eq!(label(job, LABEL_ENV), Some(&hex[..32]));
    // Run by digest, from the configured registry, and the agent pushed it there.
    assert_eq!(image_of(job), format!("{}@{}", setup.repo, setup.digest));
    assert_eq!(setup.status(&id)["image_digest"], setup.digest.as_str());
    let (status_line, body) = setup.registry_manifest(&setup.digest);
    assert!(status_line.contains(" 200 "), "{status_line}");
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), setup.digest);
    // The launch is a use, recorded in the registry where registry GC on any machine reads it.
    let usage_record = || {
        let (status_line, body) = setup.registry_manifest(&format!("strata-usage-{hex}"));
        assert!(status_line.contains(" 200 "), "{status_line}");
        let record: Value = serde_json::from_slice(&body).unwrap();
        let usage = record["annotations"]["dev.strata.usage"].as_str().unwrap();
        serde_json::from_str::<Value>(usage).unwrap()
    };
    let usage = usage_record();
    assert_eq!(usage["manifest"], setup.digest.as_str(), "{usage}");
    let launch_tag = format!("job-{}", &hex[..16]);
    assert!(usage["tags"].to_string().contains(&launch_tag), "{usage}");

    setup.kubelet(&pod, running());
    setup.kubelet(&pod, exited("Succeeded", 0, "Completed"));
    let s = setup.wait_state(&agent, &id, TERMINAL);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["exit_code"], 0, "{s}");
    assert_eq!(s["node"], setup.node.as_str(), "{s}");
    assert_eq!(setup.jobs_of(&id).len(), 1, "never a second Job");

    // A pod that fails with exit code 3 fails its job with that code. Its launch finds the
    // image in the registry already, and still counts as a use.
    std::thread::sleep(Duration::from_millis(1100));
    let second_launch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let failing = setup.submit("cpu", &["sh", "-c", "exit 3"]);
    setup.wait_state(&agent, &failing, &["running"]);
    let pod = setup.bound_pod(&agent, &failing);
    let usage = usage_record();
    assert!(
        usage["last_used_at"].as_u64().unwrap() >= second_launch,
        "{usage}"
    );
    setup.kubelet(&pod, running());
    setup.kubelet(&pod, exited("Failed", 3, "Error"));
    let s = setup.wait_state(&agent, &failing, TERMINAL);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3, "{s}");
    assert_eq!(setup.jobs_of(&failing).len(), 1, "no retry, no second Job");
}

/// A job with shipped code runs, by digest, the one manifest of its environment's layers
/// plus the code layer, pushed to the cluster's registry.
#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_job_with_code_runs_one_pushed_manifest_of_env_and_code_layers() {
    let mut setup = Setup::new("e2e-code");
    let agent = setup.agent(&[]);
    let project = setup.world.dir.path().join("project");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("main.py"),
        "print('hello from the code layer')\n",
    )
    .unwrap();
    let code = project.display().to_string();
    let out = setup.world.strata(&[
        "submit", "--json", "--queue", QUEUE, "--tier", "cpu", "--image", &setup.tag, "--code",
        &code, "--", "python", "main.py",
    ]);
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = submitted["id"].as_str().unwrap().to_string();
    let code_layer = submitted["code"]["layer"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    setup.wait_state(&agent, &id, &["running"]);
    setup.bound_pod(&agent, &id);
    let status = setup.status(&id);
    let digest = status["image_digest"].as_str().unwrap().to_string();
    assert_ne!(digest, setup.digest, "the job runs the composed image");
    let jobs = setup.jobs_of(&id);
    assert_eq!(image_of(&jobs[0]), format!("{}@{}", setup.repo, digest));

    let layers = |digest: &str| -> Vec<String> {
        let (status_line, body) = setup.registry_manifest(digest);
        assert!(status_line.contains(" 200 "), "{status_line}");
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let job_layers = layers(&digest);
    let (last, env_part) = job_layers.split_last().unwrap();
    assert_eq!(last, &code_layer);
    let env_layers = setup.world.manifest_layers(&setup.digest);
    assert_eq!(
        env_part,
        &env_layers[..],
        "the environment's layers are shared"
    );
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_job_too_big_for_any_node_creates_nothing_says_why_and_runs_when_a_node_joins() {
    let mut setup = Setup::new("e2e-big");
    let agent = setup.agent(&[]);
    let big = setup.submit("gpu8", &["sh", "-c", "echo never"]);
    // A job submitted after it runs: the agent has had its rounds over the big one.
    let small = setup.submit("cpu", &["sh", "-c", "echo small"]);
    setup.wait_state(&agent, &small, &["running"]);
    setup.bound_pod(&agent, &small);

    assert_eq!(setup.status(&big)["state"], "ready");
    assert!(setup.jobs_of(&big).is_empty(), "a Job exists for {big}");
    assert!(setup.pods_of(&big).is_empty(), "a pod exists for {big}");
    let out = setup.world.strata(&["jobs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let views: Value = serde_json::from_slice(&out.stdout).expect("jobs --json");
    let view = views
        .as_array()
        .and_then(|v| v.iter().find(|j| j["id"] == big.as_str()))
        .unwrap_or_else(|| panic!("{big} not in {views}"));
    let reason = view["reason"].as_str().unwrap_or_default();
    // Explained against the cluster's pool (its node has 4 GPUs), not this machine.
    assert_eq!(
        reason, "needs 8 GPUs on one node; no node of pool gpu has more than 4",
        "{view}"
    );
    let text = setup.world.strata(&["jobs"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("needs 8 GPUs on one node"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // The cluster grows (an autoscaler, the platform team): the running agent sees the
    // new node and starts the job there, without a restart.
    let big_node = kube_support::unique("e2e-big8-node");
    setup.runtime.block_on(kube_support::add_node(
        &setup.client,
        &big_node,
        8,
        &[(POOL_LABEL, &setup.label)],
    ));
    setup.wait_state(&agent, &big, &["running"]);
    setup.bound_pod_on(&agent, &big, &big_node);
    assert!(
        agent.log().contains("the pools changed"),
        "the agent logs the new capacity: {}",
        agent.log()
    );
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn cancel_deletes_the_job_and_its_pods() {
    let mut setup = Setup::new("e2e-cancel");
    let agent = setup.agent(&[]);
    let id = setup.submit("cpu", &["sh", "-c", "sleep 600"]);
    setup.wait_state(&agent, &id, &["running"]);
    let pod = setup.bound_pod(&agent, &id);
    setup.kubelet(&pod, running());

    let out = setup.world.strata(&["cancel", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = setup.wait_state(&agent, &id, TERMINAL);
    assert_eq!(s["state"], "cancelled", "{s}");
    setup.wait_gone(&id);
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_restarted_agent_adopts_the_running_job_and_finishes_it_once() {
    let mut setup = Setup::new("e2e-restart");
    let mut first = setup.agent(&[]);
    let id = setup.submit("cpu", &["sh", "-c", "sleep 600"]);
    setup.wait_state(&first, &id, &["running"]);
    let pod = setup.bound_pod(&first, &id);
    setup.kubelet(&pod, running());
    let before = setup.jobs_of(&id);
    assert_eq!(before.len(), 1);
    let uid = before[0].uid();
    first.kill();

    // The second agent is told the kubeconfig by flag (the file also names it).
    let kubeconfig = setup.kubeconfig.display().to_string();
    let mut second = setup.agent(&["--kubeconfig", &kubeconfig]);
    second.wait_started();
    assert_eq!(setup.status(&id)["state"], "running");
    setup.kubelet(&pod, exited("Succeeded", 0, "Completed"));
    let s = setup.wait_state(&second, &id, TERMINAL);
    assert_eq!(s["state"], "succeeded", "{s}\n{}", second.log());
    assert_eq!(s["attempt"], 1, "{s}");
    assert_eq!(events_in(&s, "succeeded"), 1, "finished once: {s}");
    let after = setup.jobs_of(&id);
    assert_eq!(after.len(), 1, "adopted, not created twice");
    assert_eq!(after[0].uid(), uid, "the same Job object");
    assert_eq!(setup.pods_of(&id).len(), 1, "no second pod");
}

/// Someone deletes the Job strata created while no agent runs and creates another under
/// the same name, with strata's labels: the restarted agent must not take it for the
/// attempt (its end and log would become the job's). The job fails, saying so, and the
/// other Job is left alone.
#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_restarted_agent_does_not_adopt_a_job_replaced_under_its_name() {
    let mut setup = Setup::new("e2e-replaced");
    let mut first = setup.agent(&[]);
    let id = setup.submit("cpu", &["sh", "-c", "sleep 600"]);
    setup.wait_state(&first, &id, &["running"]);
    let pod = setup.bound_pod(&first, &id);
    let original = setup.jobs_of(&id).remove(0);
    let original_uid = original.uid().expect("the Job's uid");
    // The uid the API server gave is recorded with the attempt.
    let jobs = strata_queue::JobStore::open(&setup.world.home.join("strata.db")).unwrap();
    let job_id: JobId = id.parse().unwrap();
    let start = Instant::now();
    while jobs.get(&job_id).unwrap().unwrap().kube_uid.is_none() {
        assert!(start.elapsed() < WAIT, "no uid recorded: {}", first.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        jobs.get(&job_id).unwrap().unwrap().kube_uid,
        Some(original_uid.clone())
    );
    first.kill();

    let api: Api<K8sJob> = Api::namespaced(setup.client.clone(), &setup.namespace);
    let name = original.name_any();
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), &setup.namespace);
    setup.runtime.block_on(async {
        api.delete(&name, &DeleteParams::background())
            .await
            .expect("delete the Job");
        // No kubelet here to confirm a graceful delete.
        pods.delete(&pod, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete its pod");
    });
    let start = Instant::now();
    while !setup.jobs_of(&id).is_empty() {
        assert!(start.elapsed() < WAIT, "the deleted Job is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    let replacement = setup
        .runtime
        .block_on(api.create(&PostParams::default(), &copy_of(&original)))
        .expect("create the replacement Job");
    let replacement_uid = replacement.uid().expect("uid");
    assert_ne!(replacement_uid, original_uid);

    let second = setup.agent(&[]);
    let s = setup.wait_state(&second, &id, TERMINAL);
    assert_eq!(s["state"], "failed", "{s}\n{}", second.log());
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("outcome lost: Job replaced")
            && reason.contains(&replacement_uid)
            && reason.contains(&original_uid),
        "{s}"
    );
    assert_eq!(events_in(&s, "failed"), 1, "finished once: {s}");
    // Not strata's: neither deleted nor followed.
    let after = setup.jobs_of(&id);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].uid(), Some(replacement_uid));
    assert!(after[0].metadata.deletion_timestamp.is_none());
}

/// A new Job object with the name, labels and pod template of `job` (without what the API
/// server and the Job controller filled in).
fn copy_of(job: &K8sJob) -> K8sJob {
    let mut spec = job.spec.clone().expect("spec");
    spec.selector = None;
    spec.manual_selector = None;
    if let Some(labels) = spec
        .template
        .metadata
        .as_mut()
        .and_then(|m| m.labels.as_mut())
    {
        labels.retain(|k, _| k != "controller-uid" && k != "job-name");
        labels.retain(|k, _| !k.starts_with("batch.kubernetes.io/"));
    }
    K8sJob {
        metadata: kube::api::ObjectMeta {
            name: job.metadata.name.clone(),
            namespace: job.metadata.namespace.clone(),
            labels: job.metadata.labels.clone(),
            annotations: job.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Runs `strata agent --backend kubernetes` in a project with this `strata.toml`, expecting
/// it to refuse to start; its stderr.
fn agent_refuses(strata_toml: &str, extra: &[&str]) -> String {
    agent_refuses_in(&World::new(), strata_toml, extra, None)
}

/// [`agent_refuses`] in `world`, with `$KUBECONFIG` set to `kubeconfig_env` if given.
fn agent_refuses_in(
    world: &World,
    strata_toml: &str,
    extra: &[&str],
    kubeconfig_env: Option<&OsStr>,
) -> String {
    fs::write(world.dir.path().join("strata.toml"), strata_toml).expect("write strata.toml");
    let mut args = vec!["agent", "--backend", "kubernetes"];
    args.extend_from_slice(extra);
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    if let Some(value) = kubeconfig_env {
        command.env("KUBECONFIG", value);
    }
    let mut child = command
        .args(&args)
        .env("STRATA_HOME", &world.home)
        .current_dir(world.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the agent") {
            break status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the agent started with {strata_toml}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    assert!(!status.success(), "{text}");
    text
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn the_agent_refuses_a_cluster_without_pools_and_keeps_the_configured_context() {
    let kubeconfig = kube_support::cluster();
    let kc = kubeconfig.display().to_string();
    let no_pools =
        format!("[kubernetes]\nkubeconfig = \"{kc}\"\nregistry = \"127.0.0.1:1/ml/envs\"\n");
    let err = agent_refuses(&no_pools, &[]);
    assert!(err.contains("[kubernetes.pools]"), "{err}");

    // `--kubeconfig` replaces the file, not the context the configuration names.
    let context = format!(
        "[kubernetes]\ncontext = \"no-such-context\"\n[kubernetes.pools.gpu]\nnode_selector = {{ \"{POOL_LABEL}\" = \"none\" }}\n"
    );
    let err = agent_refuses(&context, &["--kubeconfig", &kc]);
    assert!(err.contains("no-such-context"), "{err}");
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn the_agent_finds_the_cluster_through_a_kubeconfig_list() {
    let kubeconfig = kube_support::cluster();
    let world = World::new();
    let (clusters, contexts) = kube_support::split_kubeconfig(&kubeconfig, world.dir.path());
    // No `kubeconfig` in strata.toml: `$KUBECONFIG` lists the two halves, merged.
    let label = kube_support::unique("pool");
    let toml = strata_toml(None, "127.0.0.1:1/ml/envs", &label, "default");
    let listed = std::env::join_paths([&clusters, &contexts]).expect("join paths");
    fs::write(world.dir.path().join("strata.toml"), &toml).expect("write strata.toml");
    let log = world.dir.path().join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["agent", "--backend", "kubernetes"])
        .env("KUBECONFIG", &listed)
        .env("STRATA_HOME", &world.home)
        .current_dir(world.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log).expect("agent log")))
        .spawn()
        .expect("start the agent");
    let mut agent = AgentProcess { child, log };
    agent.wait_started();
    agent.kill();

    // The first half alone names no context: refused, naming the file.
    let err = agent_refuses_in(&world, &toml, &[], Some(clusters.as_os_str()));
    assert!(err.contains(&clusters.display().to_string()), "{err}");
    assert!(err.contains("current-context"), "{err}");
}

#[test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
fn a_refused_launch_keeps_the_job_queued_until_the_cluster_allows_it() {
    let mut setup = Setup::new("e2e-refused");
    // The queue's namespace does not exist yet: the cluster refuses the Job.
    let later = format!("{}-later", setup.namespace);
    let toml_path = setup.world.dir.path().join("strata.toml");
    let toml = fs::read_to_string(&toml_path).expect("strata.toml");
    let toml = toml.replace(
        &format!("namespace = \"{}\"", setup.namespace),
        &format!("namespace = \"{later}\""),
    );
    fs::write(&toml_path, toml).expect("write strata.toml");
    setup.namespace = later.clone();
    let agent = setup.agent(&[]);
    let id = setup.submit("cpu", &["true"]);
    let s = setup.wait_state(&agent, &id, &["retrying"]);
    let reason = s["reason"].as_str().unwrap_or("").to_string();
    assert!(
        reason.contains(&later),
        "the reason names the namespace: {s}"
    );
    assert!(setup.jobs_of(&id).is_empty());

    // Once the namespace exists the job runs, once.
    setup
        .runtime
        .block_on(create_namespace(&setup.client, &later));
    let start = Instant::now();
    let pod = loop {
        let bound = setup.pods_of(&id).into_iter().find_map(|p| {
            p.spec.as_ref()?.node_name.as_ref()?;
            Some(p.name_any())
        });
        if let Some(pod) = bound {
            break pod;
        }
        assert!(
            start.elapsed() < WAIT,
            "never started: {}\n{}",
            setup.status(&id),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    setup.kubelet(&pod, running());
    setup.kubelet(&pod, exited("Succeeded", 0, "Completed"));
    let s = setup.wait_state(&agent, &id, TERMINAL);
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(setup.jobs_of(&id).len(), 1);
}

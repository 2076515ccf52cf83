//! The agent loop over a fake [`Launcher`] and the real SQLite job store: what the agent
//! decides (retry or fail, re-queue or re-adopt) without runc or a cluster.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_agent::{attempt_key, Attempt, Ended, Found, LaunchError, Launcher, Started};
use strata_agent::{Agent, AgentOptions};
use strata_config::Config;
use strata_oci::Digest;
use strata_queue::Pool;
use strata_queue::{now, Change, JobStore};
use strata_queue::{EndCause, Job, JobId, JobState, NewJob, Outcome, SchedulerConfig};

/// One node with room for every job of these tests; a queue that retries OOM kills and one
/// that has retries too, but not for OOM kills.
const CONFIG: &str = r#"
[pools.local.nodes.n1]
cpus = 64
memory = "256G"
gpus = 0

[queues.oom-retried]
retries = 1
retry_on_oom = true
retry_backoff = "1s"

[queues.plain]
retries = 1
retry_backoff = "1s"

# One at a time: the others wait, with a position and a reason.
[queues.capped]
max_running = 1
"#;

/// Far more than any step takes; a step that never happens fails the test.
const WAIT: Duration = Duration::from_secs(20);

/// What the fake launcher was asked, and what it reports.
#[derive(Default)]
struct FakeState {
    /// What `attempts` reports (recovery).
    attempts: HashMap<String, Found>,
    /// Attempt keys launched, in order.
    launched: Vec<String>,
    /// Ends reported by `poll`, by attempt key.
    ends: HashMap<String, Ended>,
    /// Attempt keys cleaned up after their end was recorded.
    cleaned: Vec<String>,
    /// Keys cleaned up as leftovers (recovery).
    cleaned_keys: Vec<String>,
    /// Outputs collected: attempt key, destination, and the job's state in the store at
    /// that moment (its end must not be recorded yet).
    collected: Vec<(String, std::path::PathBuf, JobState)>,
    /// The job store, to read a job's state when its outputs are collected.
    db: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct FakeLauncher(Mutex<FakeState>);

impl FakeLauncher {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }

    fn launches_of(&self, key: &str) -> usize {
        self.state().launched.iter().filter(|k| *k == key).count()
    }
}

impl Launcher for FakeLauncher {
    fn attempts(&self) -> Result<HashMap<String, Found>, LaunchError> {
        Ok(self.state().attempts.clone())
    }

    fn launch(&self, _root: &Path, job: &Job, _network: bool) -> Result<Started, LaunchError> {
        let key = attempt_key(job);
        self.state().launched.push(key.clone());
        Ok(Started {
            container: format!("fake-{key}"),
            kube_uid: Some(format!("uid-{key}")),
        })
    }

    fn poll(&self, job: &Job) -> Option<Ended> {
        self.state().ends.get(&attempt_key(job)).cloned()
    }

    fn cancel(&self, _job: &Job, cause: EndCause, _grace: Duration) -> Result<Ended, LaunchError> {
        Ok(Ended {
            cause,
            outcome: Outcome::default(),
            not_started: false,
        })
    }

    fn collect_outputs(
        &self,
        job: &Job,
        dest: &Path,
    ) -> Result<Option<strata_runc::Collected>, LaunchError> {
        let db = self.state().db.clone().expect("the test sets the store");
        let state = JobStore::open(&db)
            .unwrap()
            .get(&job.id)
            .unwrap()
            .unwrap()
            .state;
        self.state()
            .collected
            .push((attempt_key(job), dest.to_path_buf(), state));
        Ok(Some(strata_runc::Collected::default()))
    }

    fn cleanup(&self, job: &Job) {
        self.state().cleaned.push(attempt_key(job));
    }

    fn current_pools(&self) -> Option<Vec<Pool>> {
        None
    }

    fn cleanup_key(&self, key: &str) {
        self.state().cleaned_keys.push(key.to_string());
    }
}

struct World {
    dir: tempfile::TempDir,
    config: SchedulerConfig,
    fake: Arc<FakeLauncher>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, CONFIG).unwrap();
        let config = SchedulerConfig::from_config(&Config::from_file(&file).unwrap()).unwrap();
        // The store and index exist before the job tables, as with the CLI.
        strata_build::Home::open(dir.path()).unwrap();
        World {
            dir,
            config,
            fake: Arc::new(FakeLauncher::default()),
        }
    }

    fn jobs(&self) -> JobStore {
        JobStore::open(&self.dir.path().join("strata.db")).unwrap()
    }

    fn agent(&self) -> Agent {
        let options = AgentOptions {
            tick: Duration::from_millis(10),
            grace: Duration::from_secs(1),
            ..AgentOptions::default()
        };
        self.fake.state().db = Some(self.dir.path().join("strata.db"));
        let launcher: Arc<dyn Launcher> = self.fake.clone();
        Agent::with_launcher(self.dir.path(), self.config.clone(), options, launcher).unwrap()
    }

    /// A job whose image is known: Ready at once.
    fn submit(&self, queue: &str) -> JobId {
        self.submit_with_outputs(queue, &[])
    }

    fn submit_with_outputs(&self, queue: &str, outputs: &[&str]) -> JobId {
        let job = NewJob {
            outputs: outputs.iter().map(|o| o.parse().unwrap()).collect(),
            queue: queue.into(),
            tier: "cpu".into(),
            user: Some("ana".into()),
            image_digest: Some(Digest::of(b"image")),
            command: vec!["python".into(), "train.py".into()],
            ..NewJob::default()
        };
        self.jobs().submit(&self.config, job, now()).unwrap()
    }

    fn job(&self, id: &JobId) -> Job {
        self.jobs().get(id).unwrap().unwrap()
    }
}

/// Ticks the agent until `done` holds (launches and stops run on worker threads).
fn tick_until(agent: &mut Agent, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        agent.tick().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How the runc launcher reports a container the kernel killed for its memory.
fn oom_killed() -> Ended {
    Ended {
        cause: EndCause::Exited,
        outcome: Outcome {
            exit_code: None,
            signal: Some(9),
            oom_killed: true,
            reason: Some("killed: out of memory".into()),
        },
        not_started: false,
    }
}

fn key(id: &JobId, attempt: u32) -> String {
    format!("{id}-a{attempt}")
}

#[test]
fn retry_on_oom() {
    let world = World::new();
    let mut agent = world.agent();
    let retried = world.submit("oom-retried");
    let plain = world.submit("plain");
    let (retried_a1, plain_a1) = (key(&retried, 1), key(&plain, 1));

    // Both start: the agent records what runs them.
    tick_until(&mut agent, "both launches to be recorded", WAIT, || {
        [&retried, &plain]
            .iter()
            .all(|id| world.job(id).container_id.is_some())
    });
    assert_eq!(
        world.job(&retried).container_id,
        Some(format!("fake-{retried_a1}"))
    );

    // The kernel kills both for their memory.
    {
        let mut state = world.fake.state();
        state.ends.insert(retried_a1.clone(), oom_killed());
        state.ends.insert(plain_a1.clone(), oom_killed());
    }
    tick_until(&mut agent, "both ends to be recorded", WAIT, || {
        [&retried, &plain]
            .iter()
            .all(|id| world.job(id).state != JobState::Running)
    });

    // Its queue retries OOM kills: a second attempt, after the backoff.
    let job = world.job(&retried);
    assert_eq!(job.state, JobState::Retrying, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert!(job.outcome.oom_killed);
    assert_eq!(job.outcome.reason.as_deref(), Some("killed: out of memory"));
    assert!(job.not_before.is_some_and(|t| t > job.started_at.unwrap()));
    // The other queue has retries left too, but not for an OOM kill: it fails.
    let job = world.job(&plain);
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!(job.attempt, 1);
    assert!(job.outcome.oom_killed);
    // Each ended attempt is cleaned up once its end is recorded.
    let cleaned = world.fake.state().cleaned.clone();
    assert!(
        cleaned.contains(&retried_a1) && cleaned.contains(&plain_a1),
        "{cleaned:?}"
    );

    // The retry runs as a new attempt; killed again, with no retry left, it fails.
    let retried_a2 = key(&retried, 2);
    tick_until(&mut agent, "the retry to start", WAIT, || {
        world.job(&retried).container_id == Some(format!("fake-{retried_a2}"))
    });
    world
        .fake
        .state()
        .ends
        .insert(retried_a2.clone(), oom_killed());
    tick_until(&mut agent, "the retry's end to be recorded", WAIT, || {
        world.job(&retried).state != JobState::Running
    });
    let job = world.job(&retried);
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert_eq!(world.fake.launches_of(&retried_a1), 1);
    assert_eq!(world.fake.launches_of(&retried_a2), 1);
    assert_eq!(world.fake.launches_of(&plain_a1), 1);
    assert_eq!(world.fake.launches_of(&key(&plain, 2)), 0);
}

/// Outputs are collected for every attempt that ran, whatever its end (a failure, a cancel
/// alike), before that end is recorded and before cleanup; a job without outputs is not asked.
#[test]
fn outputs_are_collected_whatever_the_end_before_it_is_recorded() {
    let world = World::new();
    let mut agent = world.agent();
    let failed = world.submit_with_outputs("plain", &["outputs"]);
    let cancelled = world.submit_with_outputs("plain", &["outputs"]);
    let without = world.submit("plain");
    let ids = [&failed, &cancelled, &without];
    tick_until(&mut agent, "the launches", WAIT, || {
        ids.iter().all(|id| world.job(id).container_id.is_some())
    });
    let failure = Ended {
        cause: EndCause::Exited,
        outcome: Outcome {
            exit_code: Some(1),
            ..Outcome::default()
        },
        not_started: false,
    };
    {
        let mut state = world.fake.state();
        state.ends.insert(key(&failed, 1), failure.clone());
        state.ends.insert(key(&without, 1), failure);
    }
    world.jobs().request_cancel(&cancelled, now()).unwrap();
    tick_until(&mut agent, "the ends", WAIT, || {
        ids.iter().all(|id| world.job(id).state.is_terminal())
    });
    assert_eq!(world.job(&failed).state, JobState::Failed);
    assert_eq!(world.job(&cancelled).state, JobState::Cancelled);
    let state = world.fake.state();
    let mut collected: Vec<&str> = state.collected.iter().map(|(k, _, _)| k.as_str()).collect();
    collected.sort();
    let mut expected = [key(&failed, 1), key(&cancelled, 1)];
    expected.sort();
    assert_eq!(collected, expected);
    for (k, dest, job_state) in &state.collected {
        assert_eq!(
            *job_state,
            JobState::Running,
            "{k}: collected after its end was recorded"
        );
        assert!(
            dest.starts_with(world.dir.path().join("outputs")),
            "{}",
            dest.display()
        );
        assert!(state.cleaned.contains(k), "{k} not cleaned up");
    }
}

/// The agent was killed after recording admissions (Ready → Running) and before, or while,
/// launching them. At its next start, those jobs wait again (nothing of them ran) and are
/// launched once, under the same attempt key; a started job is left running; a started job
/// whose container vanished is recorded as lost, never run twice.
#[test]
fn admitted_never_started_jobs_wait_again_at_agent_start() {
    let world = World::new();
    let jobs = world.jobs();
    let admit = |id: &JobId| {
        let start = Change::Start {
            pool: "local".into(),
            node: "n1".into(),
            gpus: vec![],
        };
        assert!(jobs.transition(id, JobState::Ready, start, now()).unwrap());
    };
    // Admitted; the agent died before launching: nothing of it exists.
    let nothing = world.submit("plain");
    admit(&nothing);
    // Admitted; the launch was cut short: a leftover that never ran.
    let leftover = world.submit("plain");
    admit(&leftover);
    // Admitted and started: its container runs.
    let running = world.submit("plain");
    admit(&running);
    assert!(jobs
        .set_container(&running, "fake-running", Some("uid-running"))
        .unwrap());
    // Admitted and started, and its container disappeared while no agent ran.
    let vanished = world.submit("plain");
    admit(&vanished);
    assert!(jobs
        .set_container(&vanished, "fake-vanished", None)
        .unwrap());
    // Admitted and started; its Job was deleted and created again under its name by
    // someone else while no agent ran (another uid).
    let replaced = world.submit("plain");
    admit(&replaced);
    assert!(jobs
        .set_container(&replaced, "team/strata-replaced", Some("uid-ours"))
        .unwrap());
    // An attempt of a job that is not running any more.
    let stale = "j-aaaaaaaaaa-a1".to_string();
    {
        let mut state = world.fake.state();
        state
            .attempts
            .insert(key(&leftover, 1), Attempt::NeverStarted.into());
        let running_found = Found {
            state: Attempt::Running,
            kube_uid: Some("uid-running".into()),
        };
        state.attempts.insert(key(&running, 1), running_found);
        state.attempts.insert(stale.clone(), Attempt::Ended.into());
        let impostor = Found {
            state: Attempt::Ended,
            kube_uid: Some("uid-theirs".into()),
        };
        state.attempts.insert(key(&replaced, 1), impostor);
    }

    let mut agent = world.agent();
    agent.recover().unwrap();

    for id in [&nothing, &leftover] {
        let job = world.job(id);
        assert_eq!(job.state, JobState::Ready, "{job:?}");
        assert_eq!(job.attempt, 1, "not a retry: nothing ran");
        assert_eq!((job.pool, job.node, job.started_at), (None, None, None));
        assert!(job.ready_at.is_some());
    }
    let job = world.job(&running);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.container_id.as_deref(), Some("fake-running"));
    let job = world.job(&vanished);
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(
        job.outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("outcome lost")),
        "{job:?}"
    );
    let job = world.job(&replaced);
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let reason = job.outcome.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("outcome lost: Job replaced")
            && reason.contains("uid-theirs")
            && reason.contains("uid-ours"),
        "{job:?}"
    );
    // The leftover is removed before its key is used again; so is the stale attempt; the
    // running job's container is not touched.
    let cleaned_keys = world.fake.state().cleaned_keys.clone();
    assert!(
        cleaned_keys.contains(&key(&leftover, 1)),
        "{cleaned_keys:?}"
    );
    assert!(cleaned_keys.contains(&stale), "{cleaned_keys:?}");
    assert!(
        !cleaned_keys.contains(&key(&running, 1)),
        "{cleaned_keys:?}"
    );
    assert!(
        !cleaned_keys.contains(&key(&replaced, 1)),
        "someone else's Job is left alone: {cleaned_keys:?}"
    );
    assert!(
        !cleaned_keys.contains(&key(&nothing, 1)),
        "{cleaned_keys:?}"
    );
    assert!(
        world.fake.state().launched.is_empty(),
        "recovery launches nothing"
    );

    // The next rounds launch each waiting job once, under the same attempt key.
    tick_until(&mut agent, "the re-queued jobs to start", WAIT, || {
        [&nothing, &leftover]
            .iter()
            .all(|id| world.job(id).container_id.is_some())
    });
    for id in [&nothing, &leftover] {
        assert_eq!(world.fake.launches_of(&key(id, 1)), 1);
        assert_eq!(world.job(id).state, JobState::Running);
    }
    assert_eq!(world.fake.launches_of(&key(&running, 1)), 0);
    assert_eq!(world.fake.launches_of(&key(&vanished, 1)), 0);
}

/// The views a server keeps by syncing one scheduler and its copy of the unfinished jobs
/// with the job events are the views a fresh load gives, whatever happened since: jobs
/// submitted, started, cancelled, ended.
#[test]
fn views_kept_by_syncing_are_the_views_of_a_fresh_load() {
    let world = World::new();
    let client = strata_agent::Client::open(world.dir.path(), world.dir.path()).unwrap();
    let first: Vec<JobId> = (0..3).map(|_| world.submit("capped")).collect();
    let mut kept = client.kept_scheduler().unwrap();
    let mut agent = world.agent();
    tick_until(&mut agent, "the first job to start", WAIT, || {
        world.job(&first[0]).container_id.is_some()
    });
    let later: Vec<JobId> = (0..3).map(|_| world.submit("capped")).collect();
    world.jobs().request_cancel(&later[0], now()).unwrap();
    world.fake.state().ends.insert(
        key(&first[0], 1),
        Ended {
            cause: EndCause::Exited,
            outcome: Outcome {
                exit_code: Some(0),
                ..Outcome::default()
            },
            not_started: false,
        },
    );
    tick_until(&mut agent, "the second job to start", WAIT, || {
        world.job(&first[1]).container_id.is_some()
    });
    assert!(world.job(&first[0]).state.is_terminal());

    let by_id = |mut views: Vec<strata_queue::JobView>| {
        views.sort_by(|a, b| a.id.cmp(&b.id));
        serde_json::to_value(views).unwrap()
    };
    // Two calls can straddle a second, which waiting reasons count in: equal once in three.
    let mut last = None;
    for _ in 0..3 {
        let synced = by_id(client.synced_views(&mut kept, None).unwrap());
        let loaded = by_id(client.views(None, false).unwrap());
        if synced == loaded {
            assert_eq!(synced.as_array().unwrap().len(), 4, "{synced}");
            return;
        }
        last = Some((synced, loaded));
    }
    let (synced, loaded) = last.unwrap();
    assert_eq!(synced, loaded, "kept views differ from a fresh load");
}

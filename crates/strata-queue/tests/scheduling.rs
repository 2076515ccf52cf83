//! Ordering, admission, explanations and durability of the scheduler, against a real SQLite
//! `strata.db` in a temporary directory. Time is simulated: every call takes `now`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use strata_config::Config;
use strata_oci::Digest;
use strata_queue::human_duration;
use strata_queue::{CancelResult, StoredReservation};
use strata_queue::{
    Change, EndCause, Environment, JobFilter, JobId, JobState, JobStore, NewJob, Outcome,
    Resources, Scheduler, SchedulerConfig, SubmitError,
};

struct World {
    _dir: tempfile::TempDir,
    db: PathBuf,
    store: JobStore,
    config: SchedulerConfig,
}

fn world(toml: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, toml).unwrap();
    let config = SchedulerConfig::from_config(&Config::from_file(&file).unwrap()).unwrap();
    let db = dir.path().join("strata.db");
    let store = JobStore::open(&db).unwrap();
    World {
        _dir: dir,
        db,
        store,
        config,
    }
}

/// A job whose image is known, so it is Ready at once.
fn ready_job(queue: &str, tier: &str, user: &str) -> NewJob {
    NewJob {
        queue: queue.into(),
        tier: tier.into(),
        user: Some(user.into()),
        image_digest: Some(Digest::of(b"image")),
        command: vec!["python".into(), "train.py".into()],
        ..NewJob::default()
    }
}

fn exited(code: i32) -> Outcome {
    Outcome {
        exit_code: Some(code),
        ..Outcome::default()
    }
}

impl World {
    fn submit(&self, job: NewJob, now: i64) -> JobId {
        self.store.submit(&self.config, job, now).unwrap()
    }

    fn scheduler(&self, now: i64) -> Scheduler {
        Scheduler::load(&self.store, self.config.clone(), now).unwrap()
    }

    fn finish_ok(&self, id: &JobId, now: i64) {
        let state = self
            .store
            .finish(id, EndCause::Exited, exited(0), now)
            .unwrap();
        assert_eq!(state, Some(JobState::Succeeded));
    }
}

// ---------------------------------------------------------------------------------------
// The scripted scenario.

const SCENARIO: &str = r#"
[pools.local.nodes.cpu-box]
cpus = 4
memory = "16G"
[pools.local.nodes.gpu-box]
cpus = 64
memory = "256G"
gpus = 8
tier_limits = { cpu = 0 }
[queues.prod]
priority = 10
[queues.research]
priority = 0
[scheduler]
fairshare_half_life = "1h"
reserve_after = "1000d"
"#;

/// (round submitted, queue, user, tier, how many, priority override).
type Line = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    usize,
    Option<i64>,
);

const SCRIPT: &[Line] = &[
    (0, "prod", "ana", "cpu", 3, None),
    (0, "prod", "bo", "gpu1", 2, None),
    (0, "prod", "ana", "gpu8", 1, None),
    (0, "research", "ana", "cpu", 4, None),
    (0, "research", "bo", "cpu", 4, None),
    (0, "research", "cy", "cpu", 4, None),
    (0, "research", "ana", "gpu1", 3, None),
    (0, "research", "bo", "gpu1", 3, None),
    (0, "research", "cy", "gpu2", 3, None),
    (0, "research", "cy", "gpu8", 1, None),
    (0, "research", "bo", "gpu2", 2, None),
    (1, "research", "ana", "gpu2", 2, None),
    (1, "research", "bo", "gpu1", 2, None),
    (2, "research", "cy", "gpu1", 4, None),
    (2, "research", "ana", "cpu", 2, None),
    (2, "research", "bo", "gpu8", 1, Some(20)),
    (2, "prod", "bo", "cpu", 3, None),
    (3, "research", "cy", "cpu", 4, None),
];

const ROUND_SECS: i64 = 60;

/// Runs the script: every round (a minute), the jobs started in the previous round finish,
/// the round's jobs are submitted, and the agent admits. Returns the names admitted, per
/// round, in admission order.
fn run_scenario() -> Vec<Vec<String>> {
    let w = world(SCENARIO);
    let mut scheduler = w.scheduler(0);
    let mut names: HashMap<JobId, String> = HashMap::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    let mut running: Vec<JobId> = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..40 {
        let now = round * ROUND_SECS;
        for id in running.drain(..) {
            w.finish_ok(&id, now);
        }
        for (at, queue, user, tier, count, priority) in SCRIPT {
            if *at != round {
                continue;
            }
            for _ in 0..*count {
                let prefix = format!("{user}-{}-{tier}", &queue[..1]);
                let n = counters.entry(prefix.clone()).or_default();
                *n += 1;
                let mut job = ready_job(queue, tier, user);
                job.priority = *priority;
                job.timeout = Some(std::time::Duration::from_secs(ROUND_SECS as u64));
                let id = w.submit(job, now);
                names.insert(id, format!("{prefix}{n}"));
            }
        }
        let admitted = scheduler.admit(&w.store, now).unwrap();
        running.extend(admitted.iter().map(|a| a.job_id.clone()));
        rounds.push(admitted.iter().map(|a| names[&a.job_id].clone()).collect());
        if round > 3 && scheduler.waiting_len() == 0 && running.is_empty() {
            break;
        }
    }
    let all: usize = rounds.iter().map(Vec::len).sum();
    assert_eq!(all, names.len(), "every job ran once");
    rounds.retain(|r: &Vec<String>| !r.is_empty());
    rounds
}

/// The documented order, rule by rule, the slow way: in each round, take the best job of
/// all tiers' best jobs (priority, then usage of its (queue, user), then submission time,
/// then submission order); put it on the node where it fits leaving the fewest GPUs, then
/// CPUs, then memory; a tier whose best job does not fit is done for the round.
fn reference_order() -> Vec<Vec<String>> {
    #[derive(Clone)]
    struct J {
        name: String,
        seq: usize,
        round: i64,
        queue: String,
        user: String,
        tier: String,
        priority: i64,
    }
    let config = world(SCENARIO).config;
    let nodes: Vec<_> = config.nodes().cloned().collect();
    let half_life = config.params.fairshare_half_life.as_secs_f64();
    let mut jobs = Vec::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (at, queue, user, tier, count, priority) in SCRIPT {
        for _ in 0..*count {
            let prefix = format!("{user}-{}-{tier}", &queue[..1]);
            let n = counters.entry(prefix.clone()).or_default();
            *n += 1;
            jobs.push(J {
                name: format!("{prefix}{n}"),
                seq: jobs.len(),
                round: *at,
                queue: queue.to_string(),
                user: user.to_string(),
                tier: tier.to_string(),
                priority: priority.unwrap_or(config.queues[*queue].priority),
            });
        }
    }
    // (queue, user) → [(charge, at)]
    let mut charges: HashMap<(String, String), Vec<(f64, i64)>> = HashMap::new();
    let mut done: HashSet<usize> = HashSet::new();
    let mut rounds = Vec::new();
    for round in 0..40 {
        let now = round * ROUND_SECS;
        let usage = |j: &J| -> f64 {
            charges
                .get(&(j.queue.clone(), j.user.clone()))
                .map_or(0.0, |list| {
                    list.iter()
                        .map(|(c, at)| c * 0.5f64.powf((now - at) as f64 / half_life))
                        .sum()
                })
        };
        let mut free: Vec<Resources> = nodes.iter().map(|n| n.capacity).collect();
        let mut count: Vec<HashMap<String, u32>> = vec![HashMap::new(); nodes.len()];
        let mut blocked: HashSet<String> = HashSet::new();
        let mut admitted: Vec<J> = Vec::new();
        loop {
            let mut waiting: Vec<&J> = jobs
                .iter()
                .filter(|j| j.round <= round && !done.contains(&j.seq))
                .filter(|j| !blocked.contains(&j.tier))
                .collect();
            waiting.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(usage(a).total_cmp(&usage(b)))
                    .then(a.round.cmp(&b.round))
                    .then(a.seq.cmp(&b.seq))
            });
            let Some(best) = waiting.first().map(|j| (*j).clone()) else {
                break;
            };
            let need = config.tiers[&best.tier];
            let node = (0..nodes.len())
                .filter(|i| need.fits_in(&free[*i]))
                .filter(|i| {
                    let limit = nodes[*i].tier_limits.get(&best.tier).copied();
                    limit.is_none_or(|l| count[*i].get(&best.tier).copied().unwrap_or(0) < l)
                })
                .min_by_key(|i| {
                    let left = free[*i].minus(&need);
                    (left.gpus, left.millicpus, left.memory, *i)
                });
            match node {
                Some(i) => {
                    free[i] = free[i].minus(&need);
                    *count[i].entry(best.tier.clone()).or_default() += 1;
                    done.insert(best.seq);
                    admitted.push(best);
                }
                None => {
                    blocked.insert(best.tier.clone());
                }
            }
        }
        for j in &admitted {
            let charge = ROUND_SECS as f64 * config.tiers[&j.tier].charge_rate();
            charges
                .entry((j.queue.clone(), j.user.clone()))
                .or_default()
                .push((charge, now + ROUND_SECS));
        }
        if !admitted.is_empty() {
            rounds.push(admitted.into_iter().map(|j| j.name).collect());
        }
    }
    rounds
}

/// The admission order of the script, round by round. Round 0: prod (priority 10) first:
/// ana's cpu jobs fill the cpu box (2), bo's gpu1 jobs take 2 GPUs, so ana's gpu8 does not
/// fit and gpu8 is done for the round — the research gpu1/gpu2 jobs still fill the other 6
/// GPUs (a job that cannot fit blocks no other tier). Round 1: the gpu box is empty and
/// ana-p-gpu8 is the best-ranked GPU job, so it takes all 8 GPUs. In research, users with
/// less usage go first (fair share): after round 0, cy (who ran nothing yet) leads on cpu.
/// bo's gpu8 at priority 20 (round 2) jumps every research job.
const EXPECTED: &[&[&str]] = &[
    &[
        "ana-p-cpu1",
        "ana-p-cpu2",
        "bo-p-gpu11",
        "bo-p-gpu12",
        "ana-r-gpu11",
        "ana-r-gpu12",
        "ana-r-gpu13",
        "bo-r-gpu11",
        "bo-r-gpu12",
        "bo-r-gpu13",
    ],
    &["ana-p-cpu3", "ana-p-gpu81", "cy-r-cpu1"],
    &["bo-r-gpu81", "bo-p-cpu1", "bo-p-cpu2"],
    &[
        "bo-p-cpu3",
        "cy-r-cpu2",
        "cy-r-gpu21",
        "cy-r-gpu22",
        "cy-r-gpu23",
        "cy-r-gpu11",
        "cy-r-gpu12",
    ],
    &[
        "ana-r-cpu1",
        "ana-r-cpu2",
        "ana-r-gpu21",
        "ana-r-gpu22",
        "cy-r-gpu13",
        "cy-r-gpu14",
        "bo-r-gpu21",
    ],
    &["ana-r-cpu3", "ana-r-cpu4", "cy-r-gpu81"],
    &[
        "ana-r-cpu5",
        "ana-r-cpu6",
        "bo-r-gpu22",
        "bo-r-gpu14",
        "bo-r-gpu15",
    ],
    &["bo-r-cpu1", "bo-r-cpu2"],
    &["bo-r-cpu3", "bo-r-cpu4"],
    &["cy-r-cpu3", "cy-r-cpu4"],
    &["cy-r-cpu5", "cy-r-cpu6"],
    &["cy-r-cpu7", "cy-r-cpu8"],
];

#[test]
fn scripted_scenario_is_admitted_in_the_documented_order() {
    let actual = run_scenario();
    let reference = reference_order();
    assert_eq!(actual, reference, "the engine follows the documented rules");
    let expected: Vec<Vec<String>> = EXPECTED
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(actual, expected);
}

// ---------------------------------------------------------------------------------------
// Starvation, blocking, explanations.

const EIGHT_GPUS: &str = r#"
[pools.local]
cpus = 64
memory = "256G"
gpus = 8
"#;

/// A gpu8 job waits behind a node kept busy by a stream of gpu1 jobs (2 arrive every 10 s,
/// each freed GPU is taken by the next one). Returns when it started, if it did in 200 steps.
fn gpu8_under_a_stream_of_gpu1(reserve_after: &str) -> Option<i64> {
    let w = world(&format!(
        "{EIGHT_GPUS}[scheduler]\nreserve_after = \"{reserve_after}\"\n"
    ));
    let mut scheduler = w.scheduler(0);
    let mut ends: HashMap<JobId, i64> = HashMap::new();
    for i in 0..8 {
        let id = w.submit(ready_job("default", "gpu1", "small"), 0);
        ends.insert(id, 30 + i * 20);
    }
    for a in scheduler.admit(&w.store, 0).unwrap() {
        assert!(ends.contains_key(&a.job_id));
    }
    let big = w.submit(ready_job("default", "gpu8", "big"), 1);
    let mut stream: Vec<JobId> = Vec::new();
    let mut reserved_explained = false;
    for step in 1..=200 {
        let now = step * 10;
        let due: Vec<JobId> = ends
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            ends.remove(&id);
            w.finish_ok(&id, now);
        }
        for _ in 0..2 {
            stream.push(w.submit(ready_job("default", "gpu1", "small"), now));
        }
        for a in scheduler.admit(&w.store, now).unwrap() {
            if a.job_id == big {
                assert_eq!(a.gpus, [0, 1, 2, 3, 4, 5, 6, 7]);
                assert!(reserved_explained, "a GPU stayed free for the reservation");
                eprintln!("gpu8 started at {now}");
                return Some(now);
            }
            ends.insert(a.job_id, now + 100);
        }
        if !reserved_explained && !scheduler.reservations().is_empty() {
            // A gpu1 job that would fit in a free GPU is told why it waits.
            let views = scheduler
                .views(&w.store, &JobFilter::unfinished(), now)
                .unwrap();
            let head = views
                .iter()
                .find(|v| v.tier == "gpu1" && v.position == Some(1))
                .unwrap();
            let reason = head.reason.as_deref().unwrap();
            if !reason.starts_with("needs 1 GPU") {
                let expected = format!(
                    "capacity is reserved for job {big} (gpu8, waiting {})",
                    human_duration(now - 1)
                );
                assert_eq!(reason, expected);
                reserved_explained = true;
            }
        }
    }
    None
}

#[test]
fn gpu8_is_not_starved_by_a_stream_of_gpu1_jobs() {
    let started = gpu8_under_a_stream_of_gpu1("60s").expect("gpu8 started");
    // Reserved at the first round 60 s after it became ready (t = 70); the gpu1 jobs
    // running then end by t = 70 + 100 at the latest.
    assert!(started <= 180, "started at {started}");
    // Without a reservation it never gets 8 GPUs at once: the test can tell.
    assert_eq!(gpu8_under_a_stream_of_gpu1("1000d"), None);
}

#[test]
fn a_job_that_cannot_fit_blocks_no_other_tier() {
    let w = world(
        r#"
[pools.local]
cpus = 64
memory = "256G"
gpus = 4
[scheduler]
reserve_after = "1s"
"#,
    );
    let mut scheduler = w.scheduler(0);
    let mut big = ready_job("default", "gpu8", "ana");
    big.priority = Some(100);
    let big = w.submit(big, 0);
    let small: Vec<JobId> = (0..3)
        .map(|_| w.submit(ready_job("default", "gpu1", "bo"), 0))
        .chain((0..2).map(|_| w.submit(ready_job("default", "cpu", "bo"), 0)))
        .collect();
    let admitted: Vec<JobId> = scheduler
        .admit(&w.store, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.job_id)
        .collect();
    assert_eq!(admitted, small);
    assert!(scheduler.reservations().is_empty(), "no node could hold it");
    let view = &scheduler
        .views(&w.store, &JobFilter::unfinished(), 100)
        .unwrap()
        .into_iter()
        .find(|v| v.id == big)
        .unwrap();
    assert_eq!(view.position, Some(1));
    assert_eq!(
        view.reason.as_deref(),
        Some("needs 8 GPUs on one node; no node of pool local has more than 4")
    );
    assert_eq!(view.estimated_start, None);
}

#[test]
fn a_stored_reservation_on_a_node_that_left_the_pool_is_dropped() {
    let w = world(
        r#"
[pools.local]
cpus = 64
memory = "256G"
gpus = 4
"#,
    );
    let big = w.submit(ready_job("default", "gpu8", "ana"), 0);
    // Saved while the pool had a node that has gone since (a cluster node removed).
    let stale = StoredReservation {
        tier: "gpu8".into(),
        job: big,
        pool: "local".into(),
        node: "gone".into(),
        since: 0,
    };
    w.store.save_reservations(&[stale]).unwrap();
    let mut scheduler = w.scheduler(1);
    assert!(scheduler.reservations().is_empty());
    assert!(scheduler.admit(&w.store, 2).unwrap().is_empty());
    assert_eq!(
        w.store.reservations().unwrap(),
        [],
        "the stale row would come back if the node did"
    );
}

#[test]
fn a_waiting_job_is_explained_in_words() {
    let w = world(
        r#"
[pools.local.nodes.a]
cpus = 64
memory = "256G"
gpus = 8
[pools.local.nodes.b]
cpus = 16
memory = "64G"
gpus = 2
"#,
    );
    let mut scheduler = w.scheduler(0);
    let with_timeout = |mut job: NewJob, secs: u64| {
        job.timeout = Some(std::time::Duration::from_secs(secs));
        job
    };
    for _ in 0..6 {
        w.submit(with_timeout(ready_job("default", "gpu1", "bo"), 600), 0);
    }
    let placed = scheduler.admit(&w.store, 0).unwrap();
    let nodes: Vec<&str> = placed.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(nodes, ["b", "b", "a", "a", "a", "a"], "best fit");
    for _ in 0..2 {
        let mut job = with_timeout(ready_job("default", "gpu8", "cy"), 3600);
        job.priority = Some(5);
        w.submit(job, 1);
    }
    let mine = w.submit(with_timeout(ready_job("default", "gpu8", "ana"), 3600), 1);
    let mut building = ready_job("default", "cpu", "ana");
    building.image_digest = None;
    building.environment = Some(Environment::Requirements {
        path: "requirements.txt".into(),
        spec_digest: None,
        options: Default::default(),
    });
    let building = w.submit(building, 2);
    assert!(scheduler.admit(&w.store, 10).unwrap().is_empty());

    let views = scheduler
        .views(&w.store, &JobFilter::unfinished(), 10)
        .unwrap();
    let view = |id: &JobId| views.iter().find(|v| &v.id == id).unwrap().clone();
    let mine = view(&mine);
    assert_eq!(mine.state, JobState::Ready);
    assert_eq!(mine.position, Some(3));
    assert_eq!(
        mine.reason.as_deref(),
        Some(
            "needs 8 GPUs on one node; at most 4 free on any node of pool local; \
             2 jobs ahead with higher priority"
        )
    );
    // Node a frees at 600; the two gpu8 jobs ahead run an hour each.
    assert_eq!(mine.estimated_start, Some(600 + 3600 + 3600));
    let json = serde_json::to_value(&mine).unwrap();
    assert_eq!(json["state"], "ready");
    assert_eq!(json["position"], 3);

    let building = view(&building);
    assert_eq!(
        building.reason.as_deref(),
        Some("waiting for its environment to be resolved")
    );
    assert!(w
        .store
        .transition(&building.id, JobState::Queued, Change::Resolving, 11)
        .unwrap());
    let again = scheduler
        .views(&w.store, &JobFilter::unfinished(), 12)
        .unwrap();
    let building = again.iter().find(|v| v.id == building.id).unwrap();
    assert_eq!(
        building.reason.as_deref(),
        Some("waiting for its environment to build")
    );
}

#[test]
fn queue_limits_hold_jobs_and_say_so() {
    let w = world(
        r#"
[queues.team-a]
max_running = 1
[pools.local]
cpus = 16
memory = "64G"
"#,
    );
    let mut scheduler = w.scheduler(0);
    let first = w.submit(ready_job("team-a", "cpu", "ana"), 0);
    let second = w.submit(ready_job("team-a", "cpu", "ana"), 0);
    let admitted = scheduler.admit(&w.store, 1).unwrap();
    assert_eq!(admitted.len(), 1);
    assert_eq!(admitted[0].job_id, first);
    let views = scheduler
        .views(&w.store, &JobFilter::unfinished(), 1)
        .unwrap();
    let waiting = views.iter().find(|v| v.id == second).unwrap();
    assert_eq!(
        waiting.reason.as_deref(),
        Some("queue team-a is at its limit of 1 running job")
    );
    w.finish_ok(&first, 2);
    let admitted = scheduler.admit(&w.store, 2).unwrap();
    assert_eq!(admitted[0].job_id, second);
}

// ---------------------------------------------------------------------------------------
// Fair share.

const ONE_CPU_JOB: &str = r#"
[pools.local]
cpus = 2
memory = "8G"
"#;

#[test]
fn a_heavy_user_goes_after_a_light_one_at_equal_priority() {
    let w = world(ONE_CPU_JOB);
    let now = 10 * 86_400;
    w.store
        .record_usage("heavy", "default", "gpu8", 50_000.0, now - 3600)
        .unwrap();
    w.store
        .record_usage("light", "default", "cpu", 100.0, now - 3600)
        .unwrap();
    let heavy = w.submit(ready_job("default", "cpu", "heavy"), now - 10);
    let light = w.submit(ready_job("default", "cpu", "light"), now - 5);
    let mut scheduler = w.scheduler(now);
    let first = scheduler.admit(&w.store, now).unwrap();
    assert_eq!(
        first[0].job_id, light,
        "less usage first, though submitted later"
    );
    w.finish_ok(&light, now + 1);
    let second = scheduler.admit(&w.store, now + 1).unwrap();
    assert_eq!(second[0].job_id, heavy);
}

#[test]
fn usage_decays_with_its_half_life() {
    let w = world(ONE_CPU_JOB);
    let now = 30 * 86_400;
    // 50,000 ten days (ten half-lives) ago is about 49 now: less than 100 an hour ago.
    w.store
        .record_usage("old", "default", "gpu8", 50_000.0, now - 10 * 86_400)
        .unwrap();
    w.store
        .record_usage("recent", "default", "cpu", 100.0, now - 3600)
        .unwrap();
    let recent = w.submit(ready_job("default", "cpu", "recent"), now - 10);
    let old = w.submit(ready_job("default", "cpu", "old"), now - 5);
    let mut scheduler = w.scheduler(now);
    let first = scheduler.admit(&w.store, now).unwrap();
    assert_eq!(first[0].job_id, old);
    let _ = recent;
}

// ---------------------------------------------------------------------------------------
// Durability: compare-and-set, other processes, cancel, retries.

#[test]
fn two_agents_starting_the_same_jobs_start_each_once() {
    let w = world("");
    let ids: Vec<JobId> = (0..50)
        .map(|_| w.submit(ready_job("default", "cpu", "ana"), 0))
        .collect();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|agent| {
            let db = w.db.clone();
            let ids = ids.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let store = JobStore::open(&db).unwrap();
                barrier.wait();
                ids.iter()
                    .filter(|id| {
                        let start = Change::Start {
                            pool: "local".into(),
                            node: format!("agent-{agent}"),
                            gpus: vec![],
                        };
                        store.transition(id, JobState::Ready, start, 1).unwrap()
                    })
                    .cloned()
                    .collect::<Vec<JobId>>()
            })
        })
        .collect();
    let won: Vec<Vec<JobId>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all: Vec<&JobId> = won.iter().flatten().collect();
    assert_eq!(all.len(), ids.len(), "every job started exactly once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), ids.len());
    for id in &ids {
        let starts = w
            .store
            .events(id)
            .unwrap()
            .iter()
            .filter(|(state, _, _)| state == "running")
            .count();
        assert_eq!(starts, 1);
    }
}

#[test]
fn two_schedulers_admitting_concurrently_never_run_a_job_twice() {
    let w = world("[pools.local]\ncpus = 400\nmemory = \"1T\"\n");
    for _ in 0..100 {
        w.submit(ready_job("default", "cpu", "ana"), 0);
    }
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let db = w.db.clone();
            let config = w.config.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let store = JobStore::open(&db).unwrap();
                let mut scheduler = Scheduler::load(&store, config, 0).unwrap();
                barrier.wait();
                scheduler.admit(&store, 1).unwrap()
            })
        })
        .collect();
    let started: Vec<JobId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|a| a.job_id)
        .collect();
    let unique: HashSet<&JobId> = started.iter().collect();
    assert_eq!(started.len(), 100);
    assert_eq!(unique.len(), 100);
}

#[test]
fn changes_by_other_processes_are_seen_and_cancel_frees_capacity_at_once() {
    let w = world(ONE_CPU_JOB);
    let mut scheduler = w.scheduler(0);
    let first = w.submit(ready_job("default", "cpu", "ana"), 0);
    assert_eq!(scheduler.admit(&w.store, 1).unwrap()[0].job_id, first);

    // Another `strata submit` process.
    let other = JobStore::open(&w.db).unwrap();
    let second = other
        .submit(&w.config, ready_job("default", "cpu", "bo"), 2)
        .unwrap();
    let third = other
        .submit(&w.config, ready_job("default", "cpu", "cy"), 2)
        .unwrap();
    assert!(scheduler.admit(&w.store, 3).unwrap().is_empty(), "full");

    // `strata cancel` of a waiting job: it never starts.
    assert_eq!(
        other.request_cancel(&second, 4).unwrap(),
        CancelResult::Cancelled
    );
    // `strata cancel` of the running one: the agent stops it and records it.
    assert_eq!(
        other.request_cancel(&first, 4).unwrap(),
        CancelResult::Requested
    );
    let outcome = Outcome {
        signal: Some(15),
        reason: Some("cancelled by user".into()),
        ..Outcome::default()
    };
    let state = w
        .store
        .finish(&first, EndCause::Cancelled, outcome.clone(), 5)
        .unwrap();
    assert_eq!(state, Some(JobState::Cancelled));
    assert_eq!(
        w.store
            .finish(&first, EndCause::Cancelled, outcome, 6)
            .unwrap(),
        None,
        "finished exactly once"
    );
    let admitted = scheduler.admit(&w.store, 5).unwrap();
    assert_eq!(admitted.len(), 1);
    assert_eq!(
        admitted[0].job_id, third,
        "same second, capacity already free"
    );

    // A fresh scheduler (agent restart) sees the same state.
    let mut restarted = w.scheduler(6);
    assert_eq!(restarted.running_len(), 1);
    assert_eq!(restarted.waiting_len(), 0);
    assert!(restarted.admit(&w.store, 6).unwrap().is_empty());
}

#[test]
fn retryable_failures_wait_for_their_backoff() {
    let w = world(&format!(
        "{ONE_CPU_JOB}[queues.default]\nretries = 1\nretry_exit_codes = [75]\nretry_backoff = \"30s\"\n"
    ));
    let mut scheduler = w.scheduler(0);
    let id = w.submit(ready_job("default", "cpu", "ana"), 0);
    assert_eq!(
        scheduler.admit(&w.store, 0).unwrap()[0].from,
        JobState::Ready
    );
    let state = w
        .store
        .finish(&id, EndCause::Exited, exited(75), 10)
        .unwrap();
    assert_eq!(state, Some(JobState::Retrying));
    assert!(scheduler.admit(&w.store, 20).unwrap().is_empty(), "backoff");
    let views = scheduler
        .views(&w.store, &JobFilter::unfinished(), 20)
        .unwrap();
    assert_eq!(
        views[0].reason.as_deref(),
        Some("attempt 2 of 2 after exit code 75; next try in 20s")
    );
    let again = scheduler.admit(&w.store, 40).unwrap();
    assert_eq!(again[0].from, JobState::Retrying);
    let state = w
        .store
        .finish(&id, EndCause::Exited, exited(75), 50)
        .unwrap();
    assert_eq!(state, Some(JobState::Failed), "no attempt left");
}

// ---------------------------------------------------------------------------------------
// Bad input.

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, toml).unwrap();
    SchedulerConfig::from_config(&Config::from_file(&file).unwrap())
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_configuration_names_the_key() {
    let cases = [
        (
            "[queues.a]\ntiers = [\"gpu3\"]\n",
            &["queues.a.tiers", "gpu3", "cpu, gpu1, gpu2, gpu8"][..],
        ),
        ("[queues.a]\npriorty = 3\n", &["queues.a", "priorty"][..]),
        ("[tiers.gpu1]\ncpu = 3\n", &["tiers.gpu1", "cpu"][..]),
        (
            "[tiers.gpu1]\nmemory = \"lots\"\n",
            &["tiers.gpu1.memory", "lots"][..],
        ),
        ("[tiers.gpu1]\ncpus = -1\n", &["tiers.gpu1.cpus"][..]),
        (
            "[pools.local]\ngpus = \"four\"\n",
            &["pools.local.gpus"][..],
        ),
        (
            "[pools.local]\ntier_limits = { gpu9 = 1 }\n",
            &["pools.local.tier_limits.gpu9", "gpu9"][..],
        ),
        (
            "[pools.local]\ncpus = 4\n[pools.local.nodes.x]\ncpus = 4\n",
            &["pools.local.nodes"][..],
        ),
        (
            "[scheduler]\nreserve_after = \"soon\"\n",
            &["scheduler.reserve_after", "soon"][..],
        ),
        (
            "[queues.a]\nmax_running = 0\n",
            &["queues.a.max_running"][..],
        ),
    ];
    for (toml, needles) in cases {
        let err = config_error(toml);
        for needle in needles {
            assert!(err.contains(needle), "{toml:?}: {err:?} lacks {needle:?}");
        }
    }
}

#[test]
fn unknown_queue_or_tier_at_submit_lists_the_valid_names_and_stores_nothing() {
    let w = world("[queues.team-a]\ntiers = [\"cpu\", \"gpu1\"]\n[queues.team-b]\n");
    let err = w
        .store
        .submit(&w.config, ready_job("team-c", "cpu", "ana"), 0)
        .unwrap_err();
    assert!(matches!(err, SubmitError::UnknownQueue(_)));
    assert_eq!(
        err.to_string(),
        "unknown queue `team-c`; the queues are: team-a, team-b"
    );
    let err = w
        .store
        .submit(&w.config, ready_job("team-a", "gpu4", "ana"), 0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown tier `gpu4`; the tiers are: cpu, gpu1, gpu2, gpu8"
    );
    let err = w
        .store
        .submit(&w.config, ready_job("team-a", "gpu8", "ana"), 0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "queue `team-a` does not allow tier `gpu8`; it allows: cpu, gpu1"
    );
    let mut empty = ready_job("team-a", "cpu", "ana");
    empty.command.clear();
    assert!(matches!(
        w.store.submit(&w.config, empty, 0).unwrap_err(),
        SubmitError::EmptyCommand
    ));
    assert!(w.store.list(&JobFilter::default()).unwrap().is_empty());
}

//! Admission cost per decision, as the queue and the number of users grow.
//!
//! `cargo run --release -p strata-queue --example bench_admit`
//!
//! A decision is a waiting job that a round looked at and either admitted (placed on a node)
//! or refused (it fits nowhere now): [`Scheduler::decisions`]. A round with nothing to
//! decide counts for nothing, so rounds that find the cluster full do not dilute the cost.
//!
//! For each queue length (1,000 / 10,000 / 100,000 waiting jobs) and number of users (60 /
//! 1,000 / 10,000; fair share keeps one account per queue and user, so twice as many
//! accounts): the jobs are submitted to a fresh `strata.db`; the load of the scheduler's
//! in-memory state is timed; then the agent's steady state is timed: one running job ends,
//! the next admission round runs — first on the in-memory engine alone (the ended job is
//! queued again so the queue length stays put), then through the store
//! (`Scheduler::admit`: sync from the database, decide, compare-and-set to Running, while a
//! job is submitted and one finishes per round, untimed). The cluster: 16 nodes of 64 CPUs,
//! 512 GiB and 8 GPUs; jobs in 4 tiers, 3 priorities, 2 queues, with time limits.
//!
//! The baseline is measured in the same run: the smallest case (1,000 jobs, 60 users), run
//! first. Every case's cost per decision is printed as a ratio to it; the baseline is run
//! again at the end, and its ratio to the first run shows the run-to-run noise.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use strata_config::Config;
use strata_oci::Digest;
use strata_queue::{
    EndCause, Job, JobFilter, JobId, JobState, JobStore, NewJob, Outcome, Scheduler,
    SchedulerConfig,
};

const NODES: usize = 16;
const QUEUED: [usize; 3] = [1_000, 10_000, 100_000];
const USERS: [u64; 3] = [60, 1_000, 10_000];
const ENGINE_DECISIONS: u64 = 20_000;
const STORE_DECISIONS: u64 = 2_000;
/// Rounds without a decision in a row before the benchmark gives up (the queue emptied).
const MAX_IDLE_ROUNDS: u32 = 1_000;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A small deterministic generator (no dependency for a benchmark's dice).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn config(dir: &std::path::Path) -> BenchResult<SchedulerConfig> {
    let mut toml = String::from(
        "[queues.a]\npriority = 0\n[queues.b]\npriority = 5\n[scheduler]\nreserve_after = \"60s\"\n",
    );
    for n in 0..NODES {
        toml.push_str(&format!(
            "[pools.bench.nodes.n{n:02}]\ncpus = 64\nmemory = \"512G\"\ngpus = 8\n"
        ));
    }
    let file = dir.join("strata.toml");
    std::fs::write(&file, toml)?;
    Ok(SchedulerConfig::from_config(&Config::from_file(&file)?)?)
}

fn random_job(rng: &mut Lcg, users: u64) -> NewJob {
    let tier = match rng.next(20) {
        0 => "gpu8",
        1..=3 => "gpu2",
        4..=9 => "gpu1",
        _ => "cpu",
    };
    NewJob {
        queue: if rng.next(2) == 0 { "a" } else { "b" }.into(),
        tier: tier.into(),
        user: Some(format!("user{}", rng.next(users))),
        priority: Some([0, 5, 10][rng.next(3) as usize]),
        image_digest: Some(Digest::of(b"bench")),
        command: vec!["python".into(), "train.py".into()],
        timeout: Some(Duration::from_secs(600 + rng.next(3000))),
        ..NewJob::default()
    }
}

/// Decisions made and the time they took.
#[derive(Clone, Copy)]
struct Cost {
    decisions: u64,
    time: Duration,
}

impl Cost {
    fn micros_per_decision(self) -> f64 {
        self.time.as_secs_f64() * 1e6 / self.decisions.max(1) as f64
    }
}

struct Figures {
    queued: usize,
    users: u64,
    submit: Duration,
    load: Duration,
    engine: Cost,
    store: Cost,
}

fn run(queued: usize, users: u64) -> BenchResult<Figures> {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path())?;
    let store = JobStore::open(&dir.path().join("strata.db"))?;
    let mut rng = Lcg(42);
    let t0 = 1_000_000;

    let started = Instant::now();
    for i in 0..queued {
        store.submit(
            &config,
            random_job(&mut rng, users),
            t0 - 1000 + (i as i64 % 1000),
        )?;
    }
    let submit = started.elapsed();

    let started = Instant::now();
    let mut scheduler = Scheduler::load(&store, config.clone(), t0)?;
    let load = started.elapsed();

    let engine = engine_steady_state(&mut scheduler, &store, t0)?;
    let store_cost = store_steady_state(&store, config, users, t0 + 1_000_000)?;
    Ok(Figures {
        queued,
        users,
        submit,
        load,
        engine,
        store: store_cost,
    })
}

/// Counts the rounds in a row that decided nothing; fails when the queue seems empty.
struct IdleGuard(u32);

impl IdleGuard {
    fn record(&mut self, decided: u64) -> BenchResult<()> {
        self.0 = if decided == 0 { self.0 + 1 } else { 0 };
        if self.0 > MAX_IDLE_ROUNDS {
            return Err(format!("{MAX_IDLE_ROUNDS} rounds in a row decided nothing").into());
        }
        Ok(())
    }
}

/// In memory: one job ends, one round runs; the ended job queues again.
fn engine_steady_state(scheduler: &mut Scheduler, store: &JobStore, t0: i64) -> BenchResult<Cost> {
    let jobs: HashMap<JobId, Job> = store
        .list(&JobFilter {
            states: vec![JobState::Ready],
            ..JobFilter::default()
        })?
        .into_iter()
        .map(|j| (j.id.clone(), j))
        .collect();
    let mut running: VecDeque<JobId> = scheduler
        .next_admissions(t0)
        .into_iter()
        .map(|a| a.job_id)
        .collect();
    let first = scheduler.decisions().total();
    let mut idle = IdleGuard(0);
    let mut now = t0;
    let started = Instant::now();
    while scheduler.decisions().total() - first < ENGINE_DECISIONS {
        now += 1;
        if let Some(done) = running.pop_front() {
            scheduler.release(&done);
            if let Some(job) = jobs.get(&done) {
                scheduler.apply(job);
            }
        }
        let before = scheduler.decisions().total();
        let admitted = scheduler.next_admissions(now);
        idle.record(scheduler.decisions().total() - before)?;
        running.extend(admitted.into_iter().map(|a| a.job_id));
    }
    Ok(Cost {
        decisions: scheduler.decisions().total() - first,
        time: started.elapsed(),
    })
}

/// Through the database: a job is submitted and one ends (untimed), then the agent admits
/// (timed: sync, decide, compare-and-set). A decision counts when the job was started
/// (its compare-and-set won) or refused.
fn store_steady_state(
    store: &JobStore,
    config: SchedulerConfig,
    users: u64,
    t0: i64,
) -> BenchResult<Cost> {
    let mut rng = Lcg(7);
    let mut scheduler = Scheduler::load(store, config.clone(), t0)?;
    let mut running: VecDeque<JobId> = scheduler
        .admit(store, t0)?
        .into_iter()
        .map(|a| a.job_id)
        .collect();
    let ok = Outcome {
        exit_code: Some(0),
        ..Outcome::default()
    };
    let mut decisions = 0;
    let mut idle = IdleGuard(0);
    let mut now = t0;
    let mut timed = Duration::ZERO;
    while decisions < STORE_DECISIONS {
        now += 1;
        store.submit(&config, random_job(&mut rng, users), now)?;
        if let Some(done) = running.pop_front() {
            store.finish(&done, EndCause::Exited, ok.clone(), now)?;
        }
        let refused = scheduler.decisions().refused;
        let started = Instant::now();
        let admitted = scheduler.admit(store, now)?;
        timed += started.elapsed();
        let decided = admitted.len() as u64 + (scheduler.decisions().refused - refused);
        idle.record(decided)?;
        decisions += decided;
        running.extend(admitted.into_iter().map(|a| a.job_id));
    }
    Ok(Cost {
        decisions,
        time: timed,
    })
}

fn header() {
    println!(
        "{:>8} {:>6} {:>8} {:>8} | {:>7} {:>9} {:>6} | {:>7} {:>9} {:>6}",
        "queued",
        "users",
        "submit",
        "load",
        "engine",
        "µs/dec",
        "×base",
        "+store",
        "µs/dec",
        "×base"
    );
    println!(
        "{:>8} {:>6} {:>8} {:>8} | {:>7} {:>9} {:>6} | {:>7} {:>9} {:>6}",
        "", "", "", "", "decided", "", "", "decided", "", ""
    );
}

fn print_row(f: &Figures, base: &Figures, label: &str) {
    let (engine, store) = (
        f.engine.micros_per_decision(),
        f.store.micros_per_decision(),
    );
    println!(
        "{:>8} {:>6} {:>7.2}s {:>7.3}s | {:>7} {:>9.2} {:>6.2} | {:>7} {:>9.1} {:>6.2}{label}",
        f.queued,
        f.users,
        f.submit.as_secs_f64(),
        f.load.as_secs_f64(),
        f.engine.decisions,
        engine,
        engine / base.engine.micros_per_decision(),
        f.store.decisions,
        store,
        store / base.store.micros_per_decision(),
    );
}

fn main() -> BenchResult<()> {
    header();
    let base = run(QUEUED[0], USERS[0])?;
    print_row(&base, &base, "  (baseline)");
    for queued in QUEUED {
        for users in USERS {
            if (queued, users) == (QUEUED[0], USERS[0]) {
                continue;
            }
            print_row(&run(queued, users)?, &base, "");
        }
    }
    let again = run(QUEUED[0], USERS[0])?;
    print_row(&again, &base, "  (baseline again: noise)");
    Ok(())
}

//! Admission speed with 1,000 / 10,000 / 100,000 queued jobs.
//!
//! `cargo run --release -p strata-scheduler --example bench_admit`
//!
//! For each queue length: the jobs are submitted to a fresh `strata.db`; the load of the
//! scheduler's in-memory state from it is timed; then the agent's steady state is timed:
//! one running job ends, the next admission round runs and starts one job — first on the
//! in-memory engine alone (the ended job is queued again so the queue length stays put),
//! then through the store (`Scheduler::admit`: sync from the database, decide, compare-and-set
//! to Running). The cluster: 16 nodes of 64 CPUs, 512 GiB and 8 GPUs; jobs in 4 tiers, 3
//! priorities, 2 queues, 30 users, with time limits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use strata_config::Config;
use strata_oci::Digest;
use strata_queue::{
    EndCause, Job, JobFilter, JobId, JobState, JobStore, NewJob, Outcome, Scheduler,
    SchedulerConfig,
};

const NODES: usize = 16;
const ENGINE_DECISIONS: usize = 20_000;
const STORE_DECISIONS: usize = 2_000;

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

fn config(dir: &std::path::Path) -> Result<SchedulerConfig, Box<dyn std::error::Error>> {
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

fn random_job(rng: &mut Lcg) -> NewJob {
    let tier = match rng.next(20) {
        0 => "gpu8",
        1..=3 => "gpu2",
        4..=9 => "gpu1",
        _ => "cpu",
    };
    NewJob {
        queue: if rng.next(2) == 0 { "a" } else { "b" }.into(),
        tier: tier.into(),
        user: Some(format!("user{}", rng.next(30))),
        priority: Some([0, 5, 10][rng.next(3) as usize]),
        image_digest: Some(Digest::of(b"bench")),
        command: vec!["python".into(), "train.py".into()],
        timeout: Some(Duration::from_secs(600 + rng.next(3000))),
        ..NewJob::default()
    }
}

struct Figures {
    queued: usize,
    submit: Duration,
    load: Duration,
    engine: (usize, Duration),
    store: (usize, Duration),
}

fn run(queued: usize) -> Result<Figures, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = config(dir.path())?;
    let store = JobStore::open(&dir.path().join("strata.db"))?;
    let mut rng = Lcg(42);
    let t0 = 1_000_000;

    let started = Instant::now();
    for i in 0..queued {
        store.submit(&config, random_job(&mut rng), t0 - 1000 + (i as i64 % 1000))?;
    }
    let submit = started.elapsed();

    let started = Instant::now();
    let mut scheduler = Scheduler::load(&store, config.clone(), t0)?;
    let load = started.elapsed();

    let engine = engine_steady_state(&mut scheduler, &store, t0)?;
    let store_figures = store_steady_state(&store, config, t0 + 1_000_000)?;
    Ok(Figures {
        queued,
        submit,
        load,
        engine,
        store: store_figures,
    })
}

/// In memory: one job ends, one round runs; the ended job queues again.
fn engine_steady_state(
    scheduler: &mut Scheduler,
    store: &JobStore,
    t0: i64,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
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
    let mut decisions = 0;
    let mut now = t0;
    let started = Instant::now();
    while decisions < ENGINE_DECISIONS {
        now += 1;
        if let Some(done) = running.pop_front() {
            scheduler.release(&done);
            if let Some(job) = jobs.get(&done) {
                scheduler.apply(job);
            }
        }
        let admitted = scheduler.next_admissions(now);
        decisions += admitted.len().max(1);
        running.extend(admitted.into_iter().map(|a| a.job_id));
    }
    Ok((decisions, started.elapsed()))
}

/// Through the database: a job is submitted and one ends (untimed), then the agent admits
/// (timed: sync, decide, compare-and-set).
fn store_steady_state(
    store: &JobStore,
    config: SchedulerConfig,
    t0: i64,
) -> Result<(usize, Duration), Box<dyn std::error::Error>> {
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
    let mut now = t0;
    let mut timed = Duration::ZERO;
    while decisions < STORE_DECISIONS {
        now += 1;
        store.submit(&config, random_job(&mut rng), now)?;
        if let Some(done) = running.pop_front() {
            store.finish(&done, EndCause::Exited, ok.clone(), now)?;
        }
        let started = Instant::now();
        let admitted = scheduler.admit(store, now)?;
        timed += started.elapsed();
        decisions += admitted.len().max(1);
        running.extend(admitted.into_iter().map(|a| a.job_id));
    }
    Ok((decisions, timed))
}

fn per_decision(figures: (usize, Duration)) -> (f64, f64) {
    let (n, time) = figures;
    let secs = time.as_secs_f64().max(1e-9);
    (n as f64 / secs, secs * 1e6 / n as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:>8} {:>10} {:>10} | {:>14} {:>12} | {:>14} {:>12}",
        "queued", "submit", "load", "engine dec/s", "µs/decision", "+store dec/s", "µs/decision"
    );
    for queued in [1_000, 10_000, 100_000] {
        let f = run(queued)?;
        let (engine_rate, engine_us) = per_decision(f.engine);
        let (store_rate, store_us) = per_decision(f.store);
        println!(
            "{:>8} {:>9.2}s {:>9.3}s | {:>14.0} {:>12.1} | {:>14.0} {:>12.1}",
            f.queued,
            f.submit.as_secs_f64(),
            f.load.as_secs_f64(),
            engine_rate,
            engine_us,
            store_rate,
            store_us
        );
    }
    Ok(())
}

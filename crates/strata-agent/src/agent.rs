//! The local agent: a long-running loop that turns queued jobs into running containers and
//! records how they end. Each tick it
//! 1. resolves environments: a requirements job is built once per spec however many jobs
//!    ask (builds run on a worker thread; the loop goes on), an image job is looked up in
//!    the store; either way the job holds a lease on its image until it ends;
//! 2. admits jobs ([`Scheduler::admit`]) and launches them through the [`Launcher`] (runc
//!    or Kubernetes) on worker threads;
//! 3. watches running jobs: cancel requests and time limits (SIGTERM, grace, SIGKILL), exits
//!    (exit code, OOM), metrics from their logs; the outcome is recorded before anything is
//!    cleaned up, and a job finishes exactly once (compare-and-set in the job store).
//!
//! Killing the agent loses nothing: containers run detached under their own supervisor
//! (or as cluster Jobs);
//! [`Agent::recover`] re-adopts running ones, records the outcome of those that ended
//! meanwhile, and puts back jobs that were admitted but never started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use strata_build::BuildError;
use strata_build::Home;
use strata_build::Silent;
use strata_build::DEFAULT_LAYER_LIMIT;
use strata_build::{build, BuildOptions};
use strata_build::{BaseError, BaseRef};
use strata_code::{compose, CodeError, CodeRef};
use strata_errors::chain;
use strata_index::Catalog;
use strata_index::Lease;
use strata_index::LeaseOwner;
use strata_oci::Digest;
use strata_oci::ManifestDocument;

use crate::launcher::{attempt_key, Attempt, Ended, Found, LaunchError, Launcher, Started};
use strata_kube::{BlockingKube, KubeError, KubeSettings, KubeSettingsError};
use strata_metrics::MetricsStore;
use strata_python::TargetError;
use strata_queue::describe_pools;
use strata_queue::Scheduler;
use strata_queue::SchedulerConfig;
use strata_queue::ShippedCode;
use strata_queue::{log_path, outputs_dir};
use strata_queue::{now, Change, JobFilter, JobStore};
use strata_queue::{EndCause, EnvOptions, Environment, Job, JobId, JobState, Outcome};
use strata_runc::{LauncherSettings, LocalLauncher, OutputLimits};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Home(#[from] strata_build::HomeError),
    #[error(transparent)]
    Jobs(#[from] strata_queue::StoreError),
    /// This machine's launcher could not be set up.
    #[error(transparent)]
    Launch(Box<strata_runc::LaunchError>),
    #[error(transparent)]
    Metrics(#[from] strata_metrics::MetricsError),
    #[error(transparent)]
    Index(#[from] strata_index::IndexError),
    #[error(transparent)]
    Store(#[from] strata_oci::StoreError),
    #[error(transparent)]
    Hold(#[from] HoldError),
    #[error("kubernetes backend: no pool in `[kubernetes.pools]`: add e.g. `[kubernetes.pools.gpu]` with `node_selector = {{ \"strata.dev/pool\" = \"gpu\" }}` to say which nodes run strata's jobs")]
    NoPools,
    #[error("kubernetes backend")]
    KubeSettings(#[from] KubeSettingsError),
    #[error("kubernetes backend")]
    Kube(#[source] Box<KubeError>),
    /// The attempts that exist could not be listed (recovery).
    #[error("listing the jobs' containers or cluster Jobs")]
    Attempts(#[source] LaunchError),
}

impl AgentError {
    /// Whether the cluster (its settings, connection or answers) is at fault, rather than
    /// this machine.
    pub fn is_kube(&self) -> bool {
        match self {
            AgentError::NoPools | AgentError::KubeSettings(_) | AgentError::Kube(_) => true,
            AgentError::Attempts(e) => e.is_kube(),
            _ => false,
        }
    }
}

impl From<strata_runc::LaunchError> for AgentError {
    fn from(e: strata_runc::LaunchError) -> Self {
        // Boxed: a launch error is large and would make every Result of the loop large.
        AgentError::Launch(Box::new(e))
    }
}

impl From<KubeError> for AgentError {
    fn from(e: KubeError) -> Self {
        AgentError::Kube(Box::new(e))
    }
}

/// A job's image could not be leased.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Store(#[from] strata_oci::StoreError),
    #[error(transparent)]
    Index(#[from] strata_index::IndexError),
}

/// The build options a requirements job was submitted with are not valid.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Python(TargetError),
    #[error(transparent)]
    Platform(TargetError),
}

/// A `--env` that is not `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --env {0:?}: expected KEY=VALUE")]
pub struct EnvVarError(pub String);

/// Why a requirements job's environment could not be built.
#[derive(Debug, thiserror::Error)]
enum EnvBuildError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Build(#[from] Box<BuildError>),
}

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Time between ticks.
    pub tick: Duration,
    /// Between SIGTERM and SIGKILL when a job is cancelled or times out.
    pub grace: Duration,
    /// How much each job's collected outputs may hold (local jobs).
    pub output_limits: OutputLimits,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            tick: Duration::from_millis(50),
            grace: Duration::from_secs(10),
            output_limits: OutputLimits::default(),
        }
    }
}

/// How long a job whose start the cluster refused waits before the next try.
const LAUNCH_RETRY: Duration = Duration::from_secs(10);

/// Publishes the pools for `strata jobs`; a failure only costs explanations, so it warns.
fn publish_pools(root: &Path, pools: &[strata_queue::Pool]) {
    if let Err(e) = strata_queue::publish_pools(root, pools) {
        tracing::warn!(
            "publishing the agent's pools under {}: {}",
            root.display(),
            chain(&e)
        );
    }
}

/// Why the Kubernetes Job found under the attempt's name is not the one strata created for
/// it (deleted and created again by someone else), if it is not: its uid differs from the one
/// recorded at creation. An attempt recorded without a uid (created by an older strata, or
/// cut short before the uid was recorded) is taken by its name.
fn replaced(job: &Job, found: &Found) -> Option<String> {
    let (Some(recorded), Some(seen)) = (&job.kube_uid, &found.kube_uid) else {
        return None;
    };
    (recorded != seen).then(|| {
        format!(
            "outcome lost: Job replaced: {} now has uid {seen}, not {recorded} as strata created it; it is left alone",
            job.container_id.as_deref().unwrap_or("the attempt's Job"),
        )
    })
}

/// The lease holder name of a job: its image is kept from GC while it is unfinished.
pub fn lease_holder(id: &JobId) -> String {
    format!("job:{id}")
}

enum Event {
    Built {
        key: String,
        result: Result<BuiltEnv, EnvBuildError>,
    },
    /// An image pulled from a registry (`REGISTRY/REPO@DIGEST`) into the store.
    Pulled {
        reference: String,
        result: Result<Digest, Box<BuildError>>,
    },
    Launched {
        id: JobId,
        result: Result<Started, LaunchError>,
    },
    Stopped {
        id: JobId,
        result: Result<Ended, LaunchError>,
        /// The attempt never ran (the cluster could not place it): it waits again.
        requeue: bool,
    },
}

/// Which launcher runs the containers.
pub enum BackendChoice {
    /// This machine, through runc, as `[launcher]` says.
    Local(LauncherSettings),
    Kubernetes(KubeSettings),
}

pub struct Agent {
    root: PathBuf,
    home: Home,
    jobs: JobStore,
    scheduler: Scheduler,
    config: SchedulerConfig,
    launcher: Arc<dyn Launcher>,
    metrics: MetricsStore,
    options: AgentOptions,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    /// Environment keys being built.
    building: HashSet<String>,
    /// Registry references being pulled.
    pulling: HashSet<String>,
    /// Jobs whose container is being started or stopped by a worker thread.
    busy: HashSet<JobId>,
}

impl Agent {
    /// An agent whose jobs run as `choice` says; with Kubernetes, the pools are the
    /// cluster's nodes (the configured ones are replaced).
    pub fn new(
        root: &Path,
        mut config: SchedulerConfig,
        options: AgentOptions,
        choice: BackendChoice,
    ) -> Result<Agent, AgentError> {
        let launcher: Arc<dyn Launcher> = match choice {
            BackendChoice::Local(settings) => {
                let home = Home::open(root)?;
                let launcher = LocalLauncher::with_settings(root, home.store.clone(), &settings)?;
                Arc::new(launcher.with_output_limits(options.output_limits))
            }
            BackendChoice::Kubernetes(settings) => {
                // Without a pool no node is capacity: every job would wait, unexplained.
                if settings.pools.is_empty() {
                    return Err(AgentError::NoPools);
                }
                let queues = config.queues.keys().map(String::as_str);
                let namespaces = settings.namespaces_of(queues);
                let kube = BlockingKube::start(settings, root.to_path_buf(), namespaces)?;
                // The cluster's nodes (allocatable, selected by pool label) are the capacity.
                config.pools = kube.pools()?;
                Arc::new(kube)
            }
        };
        Agent::with_launcher(root, config, options, launcher)
    }

    /// An agent whose jobs run through `launcher`, on the pools of `config`.
    pub fn with_launcher(
        root: &Path,
        config: SchedulerConfig,
        options: AgentOptions,
        launcher: Arc<dyn Launcher>,
    ) -> Result<Agent, AgentError> {
        let home = Home::open(root)?;
        let db = root.join("strata.db");
        let jobs = JobStore::open(&db)?;
        publish_pools(root, &config.pools);
        let scheduler = Scheduler::load(&jobs, config.clone(), now())?;
        let metrics = MetricsStore::open(&db)?;
        let (events_tx, events_rx) = channel();
        Ok(Agent {
            root: root.to_path_buf(),
            home,
            jobs,
            scheduler,
            config,
            launcher,
            metrics,
            options,
            events_tx,
            events_rx,
            building: HashSet::new(),
            pulling: HashSet::new(),
            busy: HashSet::new(),
        })
    }

    /// After a restart: builds in flight were lost (their jobs go back to the queue);
    /// containers are matched with their jobs; admitted jobs that never started wait again.
    pub fn recover(&mut self) -> Result<(), AgentError> {
        let t = now();
        for job in self.jobs.list(&JobFilter::unfinished())? {
            if job.state == JobState::Resolving {
                self.jobs
                    .transition(&job.id, JobState::Resolving, Change::Requeue, t)?;
            }
        }
        let attempts: HashMap<String, Found> =
            self.launcher.attempts().map_err(AgentError::Attempts)?;
        let mut known = HashSet::new();
        for job in self.jobs.list(&JobFilter::unfinished())? {
            if job.state != JobState::Running {
                continue;
            }
            let key = attempt_key(&job);
            known.insert(key.clone());
            let found = attempts.get(&key);
            if let Some(reason) = found.and_then(|f| replaced(&job, f)) {
                // Not ours: it is left alone, and what it does is not this job's outcome.
                self.lose(&job, reason, t)?;
                continue;
            }
            match found.map(|f| f.state) {
                // It was started (its container or Job was recorded) and is gone without a
                // recorded end (e.g. removed by the cluster's TTL while no agent ran):
                // running it again could run it twice, so its end is recorded as lost.
                None if job.container_id.is_some() => {
                    let reason =
                        "outcome lost: its container or Job disappeared while no agent was running";
                    self.lose(&job, reason.into(), t)?;
                }
                None | Some(Attempt::NeverStarted) => {
                    // Admitted, never started (at most the leftovers of a launch cut short
                    // before its supervisor existed): nothing ran, so it waits again, under
                    // the same attempt key, which must be free for its launch.
                    if attempts.contains_key(&key) {
                        self.launcher.cleanup_key(&key);
                    }
                    self.jobs
                        .transition(&job.id, JobState::Running, Change::NotStarted, t)?;
                }
                Some(_) => {}
            }
        }
        // Attempts of jobs that already ended (or that nobody knows): clean them up.
        for key in attempts.keys().filter(|k| !known.contains(*k)) {
            self.launcher.cleanup_key(key);
        }
        self.scheduler.sync(&self.jobs)?;
        Ok(())
    }

    /// Records the end of a started attempt whose outcome cannot be known, and releases
    /// the job's image.
    fn lose(&mut self, job: &Job, reason: String, t: i64) -> Result<(), AgentError> {
        let outcome = Outcome {
            reason: Some(reason),
            ..Outcome::default()
        };
        self.jobs.finish(&job.id, EndCause::Exited, outcome, t)?;
        self.home.index.release_leases_of(&lease_holder(&job.id))?;
        Ok(())
    }

    /// Runs until `stop` says so.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) -> Result<(), AgentError> {
        self.recover()?;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.tick()?;
            std::thread::sleep(self.options.tick);
        }
        Ok(())
    }

    /// One round of resolve, admit, watch.
    pub fn tick(&mut self) -> Result<(), AgentError> {
        self.drain_events()?;
        self.refresh_pools()?;
        self.resolve()?;
        self.admit()?;
        self.watch()?;
        Ok(())
    }

    fn drain_events(&mut self) -> Result<(), AgentError> {
        while let Ok(event) = self.events_rx.try_recv() {
            match event {
                Event::Built { key, result } => self.on_built(&key, result)?,
                Event::Pulled { reference, result } => self.on_pulled(&reference, result)?,
                Event::Launched { id, result } => self.on_launched(&id, result)?,
                Event::Stopped {
                    id,
                    result,
                    requeue,
                } => self.on_stopped(&id, result, requeue)?,
            }
        }
        Ok(())
    }

    /// Takes in the pools' new capacity when the launcher reports a change (a node joined,
    /// left, was cordoned or is not Ready): the scheduler is reloaded from the store over
    /// the new nodes, and the pools are published again for `strata jobs`.
    fn refresh_pools(&mut self) -> Result<(), AgentError> {
        let Some(pools) = self.launcher.current_pools() else {
            return Ok(());
        };
        if pools == self.config.pools {
            return Ok(());
        }
        tracing::info!("the pools changed: {}", describe_pools(&pools));
        let config = SchedulerConfig {
            pools,
            ..self.config.clone()
        };
        // Loaded first: if it fails, config and scheduler both stay on the old pools.
        self.scheduler = Scheduler::load(&self.jobs, config.clone(), now())?;
        self.config = config;
        publish_pools(&self.root, &self.config.pools);
        Ok(())
    }

    /// A job whose environment could not be had fails with `reason`, and lets go of what
    /// it held (its code layer).
    fn fail_resolving(&self, id: &JobId, reason: String) -> Result<(), AgentError> {
        self.fail(id, JobState::Resolving, reason)
    }

    fn fail(&self, id: &JobId, from: JobState, reason: String) -> Result<(), AgentError> {
        if self
            .jobs
            .transition(id, from, Change::Fail { reason }, now())?
        {
            self.home.index.release_leases_of(&lease_holder(id))?;
        }
        Ok(())
    }

    // ---- 1. environments ----

    fn resolve(&mut self) -> Result<(), AgentError> {
        let queued: Vec<Job> = self
            .jobs
            .list(&JobFilter::unfinished())?
            .into_iter()
            .filter(|j| j.state == JobState::Queued)
            .collect();
        for job in queued {
            match &job.environment {
                Environment::Image { reference } => match registry_digest(reference) {
                    Some(digest) => self.resolve_registry_image(&job, reference, &digest)?,
                    None => self.resolve_image(&job, reference)?,
                },
                Environment::Requirements {
                    path,
                    options,
                    spec_digest,
                } => {
                    let key = env_key(path, options, spec_digest.as_ref());
                    if self
                        .jobs
                        .transition(&job.id, JobState::Queued, Change::Resolving, now())?
                    {
                        self.start_build(key, path.clone(), options.clone());
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve_image(&mut self, job: &Job, reference: &str) -> Result<(), AgentError> {
        let catalog = Catalog::load(&self.home.store, &self.home.index);
        let digest = catalog
            .ok()
            .and_then(|c| c.find(reference).map(|i| i.digest.clone()));
        match digest {
            Some(digest) => self.resolved(job, JobState::Queued, &digest),
            None => {
                let reason =
                    format!("no image {reference:?} in the local store (strata pull it first)");
                self.fail(&job.id, JobState::Queued, reason)
            }
        }
    }

    /// An image of a registry (`REGISTRY/REPO@DIGEST`, as a submit through `strata server`
    /// names it): run from the store when it is there, else pulled first on a worker thread
    /// (the job is Resolving meanwhile; a restarted agent queues it again).
    fn resolve_registry_image(
        &mut self,
        job: &Job,
        reference: &str,
        digest: &Digest,
    ) -> Result<(), AgentError> {
        if self.home.store.has_blob(digest) {
            return self.resolved(job, JobState::Queued, digest);
        }
        if !self
            .jobs
            .transition(&job.id, JobState::Queued, Change::Resolving, now())?
        {
            return Ok(());
        }
        if !self.pulling.insert(reference.to_string()) {
            return Ok(());
        }
        let root = self.root.clone();
        let tx = self.events_tx.clone();
        let reference = reference.to_string();
        std::thread::spawn(move || {
            let result = pull_image(&root, &reference);
            let _ = tx.send(Event::Pulled { reference, result });
        });
        Ok(())
    }

    fn on_pulled(
        &mut self,
        reference: &str,
        result: Result<Digest, Box<BuildError>>,
    ) -> Result<(), AgentError> {
        self.pulling.remove(reference);
        let waiting: Vec<Job> = self
            .jobs
            .list(&JobFilter::unfinished())?
            .into_iter()
            .filter(|j| j.state == JobState::Resolving)
            .filter(
                |j| matches!(&j.environment, Environment::Image { reference: r } if r == reference),
            )
            .collect();
        for job in waiting {
            match &result {
                Ok(digest) => self.resolved(&job, JobState::Resolving, digest)?,
                Err(e) => {
                    let reason = format!("pulling {reference}: {}", chain(e));
                    self.fail_resolving(&job.id, reason)?;
                }
            }
        }
        Ok(())
    }

    /// Builds one environment on a worker thread, unless a build of it is in flight.
    fn start_build(&mut self, key: String, path: PathBuf, options: EnvOptions) {
        if !self.building.insert(key.clone()) {
            return;
        }
        let root = self.root.clone();
        let tx = self.events_tx.clone();
        std::thread::spawn(move || {
            let result = build_env(&root, &path, &options);
            let _ = tx.send(Event::Built { key, result });
        });
    }

    fn on_built(
        &mut self,
        key: &str,
        result: Result<BuiltEnv, EnvBuildError>,
    ) -> Result<(), AgentError> {
        self.building.remove(key);
        let waiting: Vec<Job> = self
            .jobs
            .list(&JobFilter::unfinished())?
            .into_iter()
            .filter(|j| j.state == JobState::Resolving)
            .filter(|j| matches!(&j.environment, Environment::Requirements { path, options, spec_digest } if env_key(path, options, spec_digest.as_ref()) == key))
            .collect();
        for job in waiting {
            let submitted = match &job.environment {
                Environment::Requirements { spec_digest, .. } => spec_digest.clone(),
                Environment::Image { .. } => None,
            };
            match &result {
                // The file changed since the job was submitted: it would not run what was asked.
                Ok(built) if submitted.as_ref().is_some_and(|s| *s != built.spec) => {
                    let reason = format!(
                        "the requirements file changed after the job was submitted (spec {} then, {} now): submit again",
                        submitted.as_ref().map(|d| d.short(12)).unwrap_or_default(),
                        built.spec.short(12)
                    );
                    self.fail_resolving(&job.id, reason)?;
                }
                Ok(built) => self.resolved(&job, JobState::Resolving, &built.image)?,
                Err(e) => {
                    let reason = format!("environment build failed: {}", chain(e));
                    self.fail_resolving(&job.id, reason)?;
                }
            }
        }
        Ok(())
    }

    /// The job holds its image (manifest, config, layers) until it ends, then is Ready. A
    /// job with code runs on its environment with the code layer on top.
    fn resolved(&mut self, job: &Job, from: JobState, env: &Digest) -> Result<(), AgentError> {
        let id = &job.id;
        // Holds the new image until the job's own lease does.
        let compose_lease = self
            .home
            .index
            .lease("compose", LeaseOwner::current_process())?;
        let digest = match &job.code {
            None => env.clone(),
            Some(code) => match job_image(&self.home, &compose_lease, env, code) {
                Ok(digest) => digest,
                Err(e) => {
                    let reason = format!("adding the code to the environment: {}", chain(&e));
                    return self.fail(id, from, reason);
                }
            },
        };
        let digest = &digest;
        hold_image(&self.home, id, digest)?;
        compose_lease.release()?;
        let change = Change::Resolved {
            image: digest.clone(),
        };
        if !self.jobs.transition(id, from, change, now())? {
            self.home.index.release_leases_of(&lease_holder(id))?;
        }
        Ok(())
    }

    // ---- 2. admission and launch ----

    fn admit(&mut self) -> Result<(), AgentError> {
        for admission in self.scheduler.admit(&self.jobs, now())? {
            let Some(job) = self.jobs.get(&admission.job_id)? else {
                continue;
            };
            self.launch(job);
        }
        Ok(())
    }

    fn launch(&mut self, job: Job) {
        let Some(image) = job.image_digest.clone() else {
            return;
        };
        // A launch is a use: retention keeps images that jobs run on.
        if let Err(e) = self.home.index.touch_manifest(&image) {
            tracing::warn!("recording the use of {image}: {}", chain(&e));
        }
        let network = self
            .config
            .queue(&job.queue)
            .map(|q| q.network)
            .unwrap_or(false);
        self.busy.insert(job.id.clone());
        let launcher = Arc::clone(&self.launcher);
        let tx = self.events_tx.clone();
        let root = self.root.clone();
        std::thread::spawn(move || {
            let result = launcher.launch(&root, &job, network);
            let _ = tx.send(Event::Launched {
                id: job.id.clone(),
                result,
            });
        });
    }

    fn on_launched(
        &mut self,
        id: &JobId,
        result: Result<Started, LaunchError>,
    ) -> Result<(), AgentError> {
        self.busy.remove(id);
        match result {
            Ok(started) => {
                self.jobs
                    .set_container(id, &started.container, started.kube_uid.as_deref())?;
            }
            // The cluster refused (RBAC, a missing namespace, a dead connection): nothing was
            // created, so the job stays queued and is tried again later, never lost.
            Err(e) if e.retry() => {
                let outcome = Outcome {
                    reason: Some(format!(
                        "could not start, trying again in {}s: {}",
                        LAUNCH_RETRY.as_secs(),
                        chain(&e)
                    )),
                    ..Outcome::default()
                };
                let change = Change::Retry {
                    not_before: now() + LAUNCH_RETRY.as_secs() as i64,
                    outcome,
                };
                self.jobs.transition(id, JobState::Running, change, now())?;
                self.scheduler.release(id);
                self.scheduler.sync(&self.jobs)?;
            }
            Err(e) => {
                let outcome = Outcome {
                    reason: Some(format!("could not start: {}", chain(&e))),
                    ..Outcome::default()
                };
                self.end(id, EndCause::Exited, outcome)?;
            }
        }
        Ok(())
    }

    // ---- 3. running jobs ----

    fn watch(&mut self) -> Result<(), AgentError> {
        let running: Vec<Job> = self
            .jobs
            .list(&JobFilter::unfinished())?
            .into_iter()
            .filter(|j| j.state == JobState::Running && !self.busy.contains(&j.id))
            .collect();
        let t = now();
        for job in running {
            let log = log_path(&self.root, &job.id);
            if log.exists() {
                self.metrics.ingest_log(job.id.as_str(), &log)?;
            }
            if job.cancel_requested {
                self.stop(&job, EndCause::Cancelled, false);
                continue;
            }
            if job.deadline().is_some_and(|d| t >= d) {
                self.stop(&job, EndCause::TimedOut, false);
                continue;
            }
            match self.launcher.poll(&job) {
                // The cluster could not place it: take it back; it waits again.
                Some(ended) if ended.not_started => self.stop(&job, EndCause::Cancelled, true),
                Some(ended) => self.ended(&job, ended),
                None => {}
            }
        }
        Ok(())
    }

    /// Stops a job on a worker thread (SIGTERM, grace, SIGKILL, confirmed gone), then
    /// collects its outputs (unless it never ran and waits again).
    fn stop(&mut self, job: &Job, cause: EndCause, requeue: bool) {
        self.busy.insert(job.id.clone());
        let launcher = Arc::clone(&self.launcher);
        let tx = self.events_tx.clone();
        let (job, grace, root) = (job.clone(), self.options.grace, self.root.clone());
        std::thread::spawn(move || {
            let result = launcher.cancel(&job, cause, grace);
            if result.is_ok() && !requeue {
                collect_outputs(launcher.as_ref(), &root, &job);
            }
            let _ = tx.send(Event::Stopped {
                id: job.id.clone(),
                result,
                requeue,
            });
        });
    }

    /// A job whose process ended by itself: its outputs are collected on a worker thread
    /// (a large copy does not hold up the loop), then its end is recorded.
    fn ended(&mut self, job: &Job, ended: Ended) {
        self.busy.insert(job.id.clone());
        let launcher = Arc::clone(&self.launcher);
        let tx = self.events_tx.clone();
        let (job, root) = (job.clone(), self.root.clone());
        std::thread::spawn(move || {
            collect_outputs(launcher.as_ref(), &root, &job);
            let _ = tx.send(Event::Stopped {
                id: job.id.clone(),
                result: Ok(ended),
                requeue: false,
            });
        });
    }

    fn on_stopped(
        &mut self,
        id: &JobId,
        result: Result<Ended, LaunchError>,
        requeue: bool,
    ) -> Result<(), AgentError> {
        self.busy.remove(id);
        let Some(job) = self.jobs.get(id)? else {
            return Ok(());
        };
        let log = log_path(&self.root, id);
        if log.exists() {
            self.metrics.ingest_log(id.as_str(), &log)?;
        }
        if requeue && result.is_ok() {
            self.launcher.cleanup(&job);
            self.jobs
                .transition(id, JobState::Running, Change::NotStarted, now())?;
            self.scheduler.release(id);
            self.scheduler.sync(&self.jobs)?;
            return Ok(());
        }
        let (cause, outcome) = match result {
            Ok(ended) => (ended.cause, ended.outcome),
            // Not confirmed gone: it still counts as running (capacity, lease); the next
            // round tries again (a cancel request or time limit is still there).
            Err(e) => {
                tracing::warn!("stopping job {id} failed, will retry: {}", chain(&e));
                return Ok(());
            }
        };
        // The outcome is recorded first; only then is the container removed.
        self.end(id, cause, outcome)?;
        self.launcher.cleanup(&job);
        Ok(())
    }

    /// Records the end of an attempt; a terminal job gives its capacity and lease back.
    fn end(&mut self, id: &JobId, cause: EndCause, outcome: Outcome) -> Result<(), AgentError> {
        let state = self.jobs.finish(id, cause, outcome, now())?;
        self.scheduler.release(id);
        if state.is_some_and(JobState::is_terminal) {
            self.home.index.release_leases_of(&lease_holder(id))?;
        }
        self.scheduler.sync(&self.jobs)?;
        Ok(())
    }
}

/// Collects the outputs of the job's ended attempt into `$STRATA_HOME/outputs/<job>/`,
/// before its end is recorded: an agent killed in between collects them again (the copy
/// replaces the first) rather than recording an end whose outputs were never taken. A
/// failure costs the outputs, not the job's outcome: it is logged.
fn collect_outputs(launcher: &dyn Launcher, root: &Path, job: &Job) {
    if job.outputs.is_empty() {
        return;
    }
    let dest = outputs_dir(root, &job.id);
    match launcher.collect_outputs(job, &dest) {
        Ok(Some(c)) if c.truncated => tracing::warn!(
            "job {}: outputs collected only in part ({} files, {} bytes; strata outputs {} says what was left)",
            job.id,
            c.files,
            c.bytes,
            job.id
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("job {}: collecting its outputs: {}", job.id, chain(&e)),
    }
}

/// Leases a job's image (manifest, config, layers) for as long as the job is unfinished:
/// GC, local or in a registry, never takes it. Replaces an earlier lease of the job.
pub fn hold_image(home: &Home, id: &JobId, digest: &Digest) -> Result<(), HoldError> {
    let digests = match home
        .store
        .read_blob(digest)
        .map(|b| ManifestDocument::parse(&b))
    {
        Ok(Ok(ManifestDocument::Image(m))) => strata_build::image_digests(digest, &m),
        _ => vec![digest.clone()],
    };
    hold_for_job(home, id, &digests)
}

/// Leases `digests` for job `id` until it ends, replacing an earlier lease of the job (a
/// queued job holds its code layer before its image exists).
pub fn hold_for_job(home: &Home, id: &JobId, digests: &[Digest]) -> Result<(), HoldError> {
    let holder = lease_holder(id);
    let _gc = home.store.gc_lock_shared()?;
    home.index.release_leases_of(&holder)?;
    let lease = home.index.create_lease(&holder, LeaseOwner::Manual)?;
    home.index.add_lease_refs(&lease, digests)?;
    Ok(())
}

/// The image a job with code runs on: `env` with the code layer on top, written to the
/// store and held by `lease` until the job's own lease holds it ([`hold_image`]).
pub fn job_image(
    home: &Home,
    lease: &Lease,
    env: &Digest,
    code: &ShippedCode,
) -> Result<Digest, CodeError> {
    let code = CodeRef {
        layer: &code.layer,
        dest: &code.dest,
    };
    compose(&home.store, lease, env, &code)
}

/// Jobs of one spec share one build (the spec digest computed at submit, else the file and
/// its options).
fn env_key(path: &Path, options: &EnvOptions, spec: Option<&Digest>) -> String {
    if let Some(spec) = spec {
        // A --refresh build must not be answered by a plain build of the spec in flight.
        return match options.refresh {
            true => format!("{spec}\nrefresh"),
            false => spec.to_string(),
        };
    }
    let options = serde_json::to_string(options).unwrap_or_default();
    format!("{}\n{options}", path.display())
}

/// A built environment: its image, and the spec digest it was built from.
struct BuiltEnv {
    image: Digest,
    spec: Digest,
}

/// The build options a requirements job was submitted with.
pub fn build_options(
    path: &Path,
    options: &EnvOptions,
    jobs: usize,
) -> Result<BuildOptions, OptionsError> {
    let base: BaseRef = options.base.parse()?;
    let python = match &options.python {
        Some(p) => Some(p.parse().map_err(OptionsError::Python)?),
        None => None,
    };
    let platform = options
        .platform
        .as_deref()
        .unwrap_or("linux/amd64")
        .parse()
        .map_err(OptionsError::Platform)?;
    Ok(BuildOptions {
        requirements: path.to_path_buf(),
        selection: strata_python::Selection {
            extras: options.extras.clone(),
            groups: options.groups.clone(),
            project: options.install_project,
        },
        base,
        python,
        platform,
        find_links: options.find_links.clone(),
        no_index: options.no_index,
        jobs,
        name: options.name.clone(),
        layer_limit: DEFAULT_LAYER_LIMIT,
        // Jobs' environments stay gzip: every runtime reads them.
        compression: Default::default(),
        compile: false,
        // The agent builds from its own store only: a job needs every blob here anyway.
        registry_cache: Default::default(),
        refresh: options.refresh,
    })
}

/// Builds (or finds in the cache) the environment of a requirements job.
fn build_env(root: &Path, path: &Path, options: &EnvOptions) -> Result<BuiltEnv, EnvBuildError> {
    let home = Home::open(root).map_err(|e| Box::new(BuildError::from(e)))?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let build_options = build_options(path, options, jobs)?;
    let built = build(&home, &build_options, &Silent).map_err(Box::new)?;
    Ok(BuiltEnv {
        image: built.digest,
        spec: built.spec_digest.0,
    })
}

/// The digest of a registry reference by digest (`REGISTRY/REPO@sha256:...`); `None` for
/// a name of the local store (a tag, a digest, an environment name: none has a '/').
pub fn registry_digest(reference: &str) -> Option<Digest> {
    if !reference.contains('/') {
        return None;
    }
    let image: strata_registry::ImageRef = reference.parse().ok()?;
    image.reference?.digest().cloned()
}

/// Pulls a registry image into the store (the blobs it lacks); its manifest digest.
fn pull_image(root: &Path, reference: &str) -> Result<Digest, Box<BuildError>> {
    let home = Home::open(root).map_err(|e| Box::new(BuildError::from(e)))?;
    let platform = "linux/amd64"
        .parse()
        .expect("linux/amd64 is a platform strata knows");
    let pulled =
        strata_build::pull(&home, reference, false, platform, &Silent).map_err(Box::new)?;
    Ok(pulled.digest)
}

/// Env vars as given on the command line (`K=V`).
pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, EnvVarError> {
    pairs
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(EnvVarError(kv.clone())),
        })
        .collect()
}

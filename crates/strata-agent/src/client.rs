//! What the job commands (`submit`, `jobs`, `status`, `cancel`, `logs`, `metrics`) ask of
//! the scheduler, for a process that is not the agent: they share `strata.db` with it.

use std::collections::HashMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_build::prepare;
use strata_build::BuildError;
use strata_build::{Home, HomeError};
use strata_config::Config;
use strata_index::IndexError;
use strata_index::LeaseOwner;
use strata_index::{Catalog, CatalogError};
use strata_oci::Digest;

use strata_queue::log_path;
use strata_queue::Scheduler;

use crate::agent::registry_digest;
use crate::agent::{build_options, hold_for_job, hold_image, job_image, HoldError, OptionsError};
use strata_code::{CodeError, CodeLayer, PackOptions};
use strata_metrics::plot::{Chart, PlotSeries};
use strata_metrics::{sparkline, MetricsStore};
use strata_queue::JobView;
use strata_queue::SchedulerConfig;
use strata_queue::{now, CancelResult, JobFilter, JobStore};
use strata_queue::{EnvOptions, Environment, Job, JobId, JobState, NewJob, ShippedCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] strata_config::ConfigError),
    #[error(transparent)]
    SchedulerConfig(#[from] strata_queue::SchedulerConfigError),
    #[error(transparent)]
    Submit(#[from] strata_queue::SubmitError),
    #[error(transparent)]
    Jobs(#[from] strata_queue::StoreError),
    #[error(transparent)]
    Metrics(#[from] strata_metrics::MetricsError),
    #[error(transparent)]
    Plot(#[from] strata_metrics::plot::PlotError),
    #[error("environment of the job")]
    Environment(#[source] EnvironmentError),
    #[error("no job {0}")]
    NoSuchJob(String),
    #[error(transparent)]
    Outputs(#[from] crate::outputs::OutputsError),
    /// The working tree could not be shipped (refused secrets, too large, unreadable).
    #[error("shipping the code")]
    Code(#[source] CodeError),
    /// A job's image could not be sent to the team's registry (submit through a server).
    #[error("pushing the job's image to {repository}")]
    Push {
        repository: String,
        #[source]
        source: Box<BuildError>,
    },
    #[error("reading the log of job {id} at {path}: {source}")]
    Log {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a job's environment could not be had at submit (or the store holding it opened).
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no image {reference:?} in the local store (strata images lists them; strata pull fetches one)")]
    NoImage { reference: String },
    #[error("image {digest} left the local store while submitting: try again")]
    Left { digest: Digest },
    /// The submit's own lease, which bridges the lookup and the job's lease.
    #[error(transparent)]
    Lease(#[from] IndexError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Holding the image, or reading the requirements file and base image.
    #[error(transparent)]
    Build(#[from] Box<BuildError>),
    #[error(transparent)]
    Hold(#[from] HoldError),
}

/// For `map_err`: an error about the job's environment.
fn env_err(e: impl Into<EnvironmentError>) -> ClientError {
    ClientError::Environment(e.into())
}

/// For `map_err`: a build error about the job's environment.
fn build_err(e: BuildError) -> ClientError {
    env_err(Box::new(e))
}

/// The scheduler's view of `$STRATA_HOME`, with the configuration of `project`.
pub struct Client {
    root: PathBuf,
    config: SchedulerConfig,
    jobs: JobStore,
}

/// A scheduler and the unfinished jobs, kept between views of the queue and brought up to
/// date from the job events; see [`Client::kept_scheduler`].
pub struct KeptScheduler {
    scheduler: Scheduler,
    unfinished: HashMap<JobId, Job>,
}

impl Client {
    pub fn open(root: &Path, project: &Path) -> Result<Client, ClientError> {
        let mut config = SchedulerConfig::from_config(&Config::load(project, root)?)?;
        // The agent's pools (a cluster's nodes with --backend kubernetes) are where jobs
        // run: waits are explained against them.
        if let Some(pools) = strata_queue::published_pools(root) {
            config.pools = pools;
        }
        // The store, index and their migrations exist before the job tables refer to them.
        Home::open(root).map_err(env_err)?;
        let jobs = JobStore::open(&root.join("strata.db"))?;
        Ok(Client {
            root: root.to_path_buf(),
            config,
            jobs,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a job. A requirements file is parsed (and its spec digest computed) now, so a
    /// malformed one is refused at once; it is built later by the agent, once per spec.
    pub fn submit(&self, job: NewJob) -> Result<JobId, ClientError> {
        Ok(self.submit_with_code(job, None)?.id)
    }

    /// [`Client::submit`], shipping the code under `code.0` packed as `code.1` says: the
    /// tree is packed now (what is submitted is the tree as it is now), the job holds the
    /// layer from the start and runs on its environment with the code on top, in the code's
    /// directory unless the job names another.
    pub fn submit_with_code(
        &self,
        mut job: NewJob,
        code: Option<(&Path, &PackOptions)>,
    ) -> Result<Submitted, ClientError> {
        if job.user.is_none() {
            job.user = current_user();
        }
        if let Some(Environment::Requirements {
            path,
            spec_digest,
            options,
        }) = &mut job.environment
        {
            let absolute = std::path::absolute(&*path).unwrap_or_else(|_| path.clone());
            *path = absolute;
            *spec_digest = Some(self.spec_digest(path, options)?);
        }
        let home = Home::open(&self.root).map_err(env_err)?;
        // Held from before the job exists until the job's own lease replaces it, so a GC
        // between the lookup (or the pack) and the submit cannot take the image or the code.
        let bridge = home
            .index
            .lease("submit", LeaseOwner::current_process())
            .map_err(env_err)?;
        let packed = match code {
            Some((root, options)) => {
                let packed = strata_code::pack(root, options, &home.store, &bridge)
                    .map_err(ClientError::Code)?;
                job.code = Some(shipped(&packed));
                job.working_dir.get_or_insert_with(|| packed.dest.clone());
                Some(packed)
            }
            None => None,
        };
        // An image job is resolved now: it is Ready at once and holds its image from the
        // start (a queued job keeps what it references from GC).
        let registry = match &job.environment {
            Some(Environment::Image { reference }) => registry_digest(reference),
            _ => None,
        };
        if let Some(digest) = registry {
            // A registry image the store has runs at once; else the agent pulls it first.
            if home.store.has_blob(&digest) {
                job.image_digest = Some(digest);
            }
        } else if let Some(Environment::Image { reference }) = &job.environment {
            let catalog = Catalog::load(&home.store, &home.index).map_err(env_err)?;
            let Some(image) = catalog.find(reference) else {
                return Err(env_err(EnvironmentError::NoImage {
                    reference: reference.clone(),
                }));
            };
            job.image_digest = Some(image.digest.clone());
        }
        let digest = job.image_digest.clone();
        if let Some(digest) = &digest {
            strata_build::hold(&home, &bridge, std::slice::from_ref(digest)).map_err(build_err)?;
            if !home.store.has_blob(digest) {
                return Err(env_err(EnvironmentError::Left {
                    digest: digest.clone(),
                }));
            }
        }
        let digest = match (&digest, &job.code) {
            (Some(env), Some(code)) => {
                let composed = job_image(&home, &bridge, env, code).map_err(ClientError::Code)?;
                job.image_digest = Some(composed.clone());
                Some(composed)
            }
            _ => digest,
        };
        let id = self.jobs.submit(&self.config, job.clone(), now())?;
        match (&digest, &job.code) {
            (Some(digest), _) => hold_image(&home, &id, digest).map_err(env_err)?,
            // Built later: until then the job holds its code.
            (None, Some(code)) => {
                hold_for_job(&home, &id, std::slice::from_ref(&code.layer.digest))
                    .map_err(env_err)?
            }
            (None, None) => {}
        }
        bridge.release().map_err(env_err)?;
        Ok(Submitted { id, code: packed })
    }

    fn spec_digest(&self, path: &Path, options: &EnvOptions) -> Result<Digest, ClientError> {
        let home = Home::open(&self.root).map_err(env_err)?;
        let build_options = build_options(path, options, 1).map_err(env_err)?;
        let (env, _) = prepare(&home, &build_options).map_err(build_err)?;
        Ok(env.digest().0)
    }

    /// The job `user` submitted with idempotency key `key`, if any.
    pub fn job_by_idempotency_key(
        &self,
        user: &str,
        key: &str,
    ) -> Result<Option<JobId>, ClientError> {
        Ok(self.jobs.by_idempotency_key(user, key)?)
    }

    /// A job's image for a server that cannot read this machine's files: the environment of
    /// requirements file `path` built here, the code under `code.0` (packed as `code.1` says)
    /// on top, pushed to `repository` (`REGISTRY/REPO`, the team's) with only the blobs it
    /// lacks. The server runs it by the digest it answers with.
    pub fn publish(
        &self,
        path: &Path,
        options: &EnvOptions,
        code: Option<(&Path, &PackOptions)>,
        repository: &str,
        progress: &dyn strata_build::Progress,
    ) -> Result<Published, ClientError> {
        let home = Home::open(&self.root).map_err(env_err)?;
        // Holds the environment and the composed image until they are pushed.
        let lease = home
            .index
            .lease("publish", LeaseOwner::current_process())
            .map_err(env_err)?;
        let push_err = |source: BuildError| ClientError::Push {
            repository: repository.to_string(),
            source: Box::new(source),
        };
        let target = strata_build::PushTarget::new(repository, false).map_err(push_err)?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let build_options = build_options(path, options, jobs).map_err(env_err)?;
        // On a miss the registry is asked first: one that does not answer fails the submit
        // before the build.
        let unreachable = std::cell::Cell::new(false);
        let check = || target.check().inspect_err(|_| unreachable.set(true));
        let built =
            strata_build::build_checked(&home, &build_options, progress, check).map_err(|e| {
                match unreachable.get() {
                    true => push_err(e),
                    false => build_err(e),
                }
            })?;
        strata_build::hold(&home, &lease, std::slice::from_ref(&built.digest))
            .map_err(build_err)?;
        let (image, packed) = match code {
            Some((root, pack)) => {
                let packed = strata_code::pack(root, pack, &home.store, &lease)
                    .map_err(ClientError::Code)?;
                let composed = job_image(&home, &lease, &built.digest, &shipped(&packed))
                    .map_err(ClientError::Code)?;
                (composed, Some(packed))
            }
            None => (built.digest.clone(), None),
        };
        let tag = format!("job-{}", image.short(12));
        let pushed = target
            .push(&home, &image, &tag, progress)
            .map_err(push_err)?;
        for warning in &pushed.warnings {
            tracing::warn!("{warning}");
        }
        lease.release().map_err(env_err)?;
        Ok(Published {
            image: pushed.image,
            code: packed,
        })
    }

    /// Views of the jobs (`all` includes finished ones), in submission order.
    pub fn views(&self, queue: Option<&str>, all: bool) -> Result<Vec<JobView>, ClientError> {
        let t = now();
        let scheduler = Scheduler::load(&self.jobs, self.config.clone(), t)?;
        let filter = if all {
            JobFilter::default()
        } else {
            JobFilter::unfinished()
        };
        let mut views = scheduler.views(&self.jobs, &filter, t)?;
        if let Some(queue) = queue {
            views.retain(|v| v.queue == queue);
        }
        Ok(views)
    }

    pub fn status(&self, id: &str) -> Result<JobStatus, ClientError> {
        let job = self.job(id)?;
        self.status_seen(job, None)
    }

    /// A scheduler to keep views with ([`Client::synced_views`]): loaded once with every
    /// unfinished job, then only what changed is read (the events since).
    pub fn kept_scheduler(&self) -> Result<KeptScheduler, ClientError> {
        let scheduler = Scheduler::load(&self.jobs, self.config.clone(), now())?;
        // Listed after the scheduler read its event counter: a change in between is
        // applied again by the first sync, which is harmless.
        let unfinished = self
            .jobs
            .list(&JobFilter::unfinished())?
            .into_iter()
            .map(|job| (job.id.clone(), job))
            .collect();
        Ok(KeptScheduler {
            scheduler,
            unfinished,
        })
    }

    /// The views of `jobs`, or of every unfinished job if `None`, after syncing `kept`
    /// with what changed since its last sync: the same as [`Client::views`] gives, without
    /// reading every job again.
    pub fn synced_views(
        &self,
        kept: &mut KeptScheduler,
        jobs: Option<&[Job]>,
    ) -> Result<Vec<JobView>, ClientError> {
        for job in kept.scheduler.sync_changed(&self.jobs)? {
            if job.state.is_terminal() {
                kept.unfinished.remove(&job.id);
            } else {
                kept.unfinished.insert(job.id.clone(), job);
            }
        }
        let t = now();
        Ok(match jobs {
            Some(jobs) => kept.scheduler.views_of(jobs, t),
            None => kept.scheduler.views_of(kept.unfinished.values(), t),
        })
    }

    /// [`Client::status`] of `job` as just read (the server reads it to check the caller's
    /// team), taking its position and reason from `known` (a recent view of the queue, as a
    /// server keeps for its many callers) when it shows the job in the state its row has now,
    /// instead of ranking the whole queue again.
    pub fn status_seen(&self, job: Job, known: Option<&JobView>) -> Result<JobStatus, ClientError> {
        let id = job.id.clone();
        let view = match known.filter(|v| v.id == id && v.state == job.state) {
            Some(view) => view.clone(),
            None => {
                let t = now();
                let scheduler = Scheduler::load(&self.jobs, self.config.clone(), t)?;
                scheduler
                    .views_of(std::slice::from_ref(&job), t)
                    .into_iter()
                    .next()
                    .ok_or_else(|| ClientError::NoSuchJob(id.to_string()))?
            }
        };
        let history = self
            .jobs
            .events(&id)?
            .into_iter()
            .map(|(state, at, detail)| Event { state, at, detail })
            .collect();
        Ok(JobStatus {
            view,
            command: job.command,
            code: job.code,
            log: log_path(&self.root, &id),
            history,
        })
    }

    pub fn cancel(&self, id: &str) -> Result<CancelResult, ClientError> {
        let id = self.job_id(id)?;
        let result = self.jobs.request_cancel(&id, now())?;
        // Cancelled before it ran: nothing else ends it, so its image and code go now (a
        // running one lets go when the agent records its end).
        if result == CancelResult::Cancelled {
            let home = Home::open(&self.root).map_err(env_err)?;
            home.index
                .release_leases_of(&crate::agent::lease_holder(&id))
                .map_err(env_err)?;
        }
        Ok(result)
    }

    pub fn job_id(&self, id: &str) -> Result<JobId, ClientError> {
        id.parse()
            .map_err(|_| ClientError::NoSuchJob(id.to_string()))
    }

    /// What the job's `--output` directories held when it ended, as collected.
    pub fn outputs(&self, id: &str) -> Result<crate::outputs::JobOutputs, ClientError> {
        let job = self.job(id)?;
        Ok(crate::outputs::JobOutputs::of(&self.root, &job)?)
    }

    /// Removes a finished job's collected outputs; whether there were any.
    pub fn delete_outputs(&self, id: &str) -> Result<bool, ClientError> {
        let job = self.job(id)?;
        Ok(crate::outputs::delete(&self.root, &job)?)
    }

    /// The stored job (the server checks its queue and user before anything else).
    pub fn job(&self, id: &str) -> Result<strata_queue::Job, ClientError> {
        let id = self.job_id(id)?;
        self.jobs
            .get(&id)?
            .ok_or_else(|| ClientError::NoSuchJob(id.to_string()))
    }

    /// The job's log, from byte `offset`; and whether the job has finished.
    pub fn log(&self, id: &str, offset: u64) -> Result<(Vec<u8>, bool), ClientError> {
        use std::io::{Read, Seek, SeekFrom};
        let id = self.job_id(id)?;
        let job = self
            .jobs
            .get(&id)?
            .ok_or_else(|| ClientError::NoSuchJob(id.to_string()))?;
        let path = log_path(&self.root, &id);
        let log_err = |source| ClientError::Log {
            id: id.to_string(),
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut file) => {
                file.seek(SeekFrom::Start(offset)).map_err(log_err)?;
                file.read_to_end(&mut bytes).map_err(log_err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(log_err(e)),
        }
        Ok((bytes, job.state.is_terminal()))
    }

    /// Metrics of jobs: last values and the series (all names, or `name` only).
    pub fn metrics(
        &self,
        ids: &[String],
        name: Option<&str>,
    ) -> Result<Vec<JobMetrics>, ClientError> {
        let metrics = MetricsStore::open(&self.root.join("strata.db"))?;
        let mut out = Vec::new();
        for id in ids {
            let id = self.job_id(id)?;
            if self.jobs.get(&id)?.is_none() {
                return Err(ClientError::NoSuchJob(id.to_string()));
            }
            let names = match name {
                Some(n) => vec![n.to_string()],
                None => metrics.names(id.as_str())?,
            };
            let mut series = Vec::new();
            for n in names {
                let samples = metrics.series(id.as_str(), &n)?;
                let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
                series.push(Series {
                    name: n,
                    last: values.last().copied(),
                    count: values.len(),
                    sparkline: sparkline(&values, 40),
                    points: samples
                        .iter()
                        .map(|s| Point {
                            step: s.step,
                            value: s.value,
                        })
                        .collect(),
                });
            }
            out.push(JobMetrics {
                job: id.to_string(),
                series,
            });
        }
        Ok(out)
    }

    /// A PNG chart comparing the jobs' series, written to `path`.
    pub fn plot(&self, metrics: &[JobMetrics], path: &Path) -> Result<(), ClientError> {
        let (series, names) = self.chart_series(metrics)?;
        Ok(Chart::new(&series).job_names(names).write_png(path)?)
    }

    /// The same chart as PNG bytes (the team service's pages).
    pub fn chart_png(&self, metrics: &[JobMetrics]) -> Result<Vec<u8>, ClientError> {
        let (series, names) = self.chart_series(metrics)?;
        Ok(Chart::new(&series).job_names(names).png()?)
    }

    /// The series to draw, and the legend's job names (where jobs have one).
    fn chart_series(
        &self,
        metrics: &[JobMetrics],
    ) -> Result<(Vec<PlotSeries>, JobNames), ClientError> {
        let series: Vec<PlotSeries> = metrics
            .iter()
            .flat_map(|m| {
                m.series.iter().map(|s| PlotSeries {
                    job_id: m.job.clone(),
                    name: s.name.clone(),
                    points: s
                        .points
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (p.step.unwrap_or(i as i64) as f64, p.value))
                        .collect(),
                })
            })
            .collect();
        let mut names = Vec::new();
        for m in metrics {
            if let Some(name) = self.jobs.get(&self.job_id(&m.job)?)?.and_then(|j| j.name) {
                names.push((m.job.clone(), name));
            }
        }
        Ok((series, names))
    }

    /// Every tier, the nodes that could run it and how many more of it fit now.
    pub fn capacity(&self) -> Result<Vec<strata_queue::TierCapacity>, ClientError> {
        let scheduler = Scheduler::load(&self.jobs, self.config.clone(), now())?;
        Ok(scheduler.capacity())
    }

    /// The images of the local store.
    pub fn images(&self) -> Result<Catalog, ClientError> {
        let home = Home::open(&self.root).map_err(env_err)?;
        Catalog::load(&home.store, &home.index).map_err(env_err)
    }

    /// The images of the local store that jobs of `queues` run (or ran) on, or name.
    pub fn images_of_queues(&self, queues: &[String]) -> Result<Catalog, ClientError> {
        let catalog = self.images()?;
        let mut used: HashSet<Digest> = HashSet::new();
        for queue in queues {
            let filter = JobFilter {
                queue: Some(queue.clone()),
                ..JobFilter::default()
            };
            for job in self.jobs.list(&filter)? {
                used.extend(job.image_digest.clone());
                if let Environment::Image { reference } = &job.environment {
                    let named = match registry_digest(reference) {
                        Some(digest) => Some(digest),
                        None => catalog.find(reference).map(|i| i.digest.clone()),
                    };
                    used.extend(named);
                }
            }
        }
        Ok(catalog.only(|image| used.contains(&image.digest)))
    }

    /// Whether a job has finished (for `logs -f`).
    pub fn finished(&self, id: &JobId) -> Result<bool, ClientError> {
        Ok(self
            .jobs
            .get(id)?
            .is_some_and(|j| j.state.is_terminal() || j.state == JobState::Retrying))
    }
}

/// Job names by job id, for a chart's legend.
type JobNames = Vec<(String, String)>;

/// A queued job, and the code shipped with it.
#[derive(Debug, Serialize)]
pub struct Submitted {
    pub id: JobId,
    pub code: Option<CodeLayer>,
}

/// A job's image pushed to a registry, and the code in it.
#[derive(Debug, Serialize)]
pub struct Published {
    /// `REGISTRY/REPO@sha256:...`
    pub image: String,
    pub code: Option<CodeLayer>,
}

/// What the job record keeps of a packed tree.
fn shipped(packed: &CodeLayer) -> ShippedCode {
    ShippedCode {
        layer: packed.layer.clone(),
        dest: packed.dest.clone(),
        files: packed.files,
        bytes: packed.bytes,
        git_commit: packed.git.as_ref().and_then(|g| g.commit.clone()),
        git_dirty: packed.git.as_ref().map(|g| g.dirty),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub view: JobView,
    pub command: Vec<String>,
    /// The code shipped with the job.
    pub code: Option<ShippedCode>,
    pub log: PathBuf,
    pub history: Vec<Event>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    pub state: String,
    pub at: i64,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JobMetrics {
    pub job: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub last: Option<f64>,
    pub count: usize,
    pub sparkline: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Point {
    pub step: Option<i64>,
    pub value: f64,
}

/// The submitting user: `$USER`, `$LOGNAME`, else the name of the process's uid.
fn current_user() -> Option<String> {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    if from_env.is_some() {
        return from_env;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2) == Some(&uid.to_string().as_str())).then(|| fields[0].to_string())
    })
}

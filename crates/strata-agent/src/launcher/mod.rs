//! Where the agent runs jobs: this machine through runc ([`runc`]), or a Kubernetes cluster
//! ([`kube`]). One trait over both, so the agent loop (resolve, admit, watch, record, clean
//! up) is the same whichever runs the containers, and tests can drive it with a fake.

pub mod kube;
pub mod runc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_queue::Pool;
use strata_queue::{EndCause, Job, JobId, Outcome};
use strata_runc::Collected;

/// How an attempt ended, as the agent records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub cause: EndCause,
    pub outcome: Outcome,
    /// Nothing ran (the cluster could not place it): the job waits again rather than failing.
    pub not_started: bool,
}

/// What an attempt found at recovery is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Runs (or its end is being recorded by its supervisor).
    Running,
    /// Ended; its outcome waits to be recorded.
    Ended,
    /// A launch cut short before anything ran (leftovers only).
    NeverStarted,
}

/// An attempt found at recovery: what it is doing and, for a Kubernetes Job, its uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub state: Attempt,
    /// The uid of the Kubernetes Job found under the attempt's name; `None` locally.
    pub kube_uid: Option<String>,
}

impl From<Attempt> for Found {
    fn from(state: Attempt) -> Found {
        Found {
            state,
            kube_uid: None,
        }
    }
}

/// What a launch started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The id of what runs the attempt: a container, a `namespace/name` Job.
    pub container: String,
    /// The uid the API server gave the Kubernetes Job; `None` locally.
    pub kube_uid: Option<String>,
}

/// The name of one attempt of a job (a retry is a new container or Job).
pub fn attempt_key(job: &Job) -> String {
    format!("{}-a{}", job.id, job.attempt)
}

/// Why a launcher could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The job was never resolved to an image (nothing to run).
    #[error("job {0} has no image")]
    NoImage(JobId),
    #[error("creating {}", path.display())]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// runc on this machine. Boxed: it is large and would make every result large.
    #[error(transparent)]
    Runc(Box<strata_runc::LaunchError>),
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Kube(Box<strata_kube::KubeError>),
    /// The job's image could not be pushed to the registry the cluster pulls from.
    #[error("pushing the job's image to {registry}")]
    Push {
        registry: String,
        #[source]
        source: Box<strata_build::BuildError>,
    },
}

impl LaunchError {
    /// For a failed launch: whether trying again later may help (the cluster refused or
    /// could not be reached, the registry did not take the image) or not (the job itself
    /// is wrong: no image, no such command; this machine cannot run it).
    pub fn retry(&self) -> bool {
        match self {
            LaunchError::Kube(_) | LaunchError::Push { .. } => true,
            LaunchError::NoImage(_) | LaunchError::LogDir { .. } | LaunchError::Runc(_) => false,
        }
    }

    /// Whether the error comes from the cluster (for the hint the CLI gives).
    pub fn is_kube(&self) -> bool {
        matches!(self, LaunchError::Kube(_) | LaunchError::Push { .. })
    }
}

impl From<strata_runc::LaunchError> for LaunchError {
    fn from(e: strata_runc::LaunchError) -> Self {
        LaunchError::Runc(Box::new(e))
    }
}

impl From<strata_kube::KubeError> for LaunchError {
    fn from(e: strata_kube::KubeError) -> Self {
        LaunchError::Kube(Box::new(e))
    }
}

/// What runs the agent's containers. Blocking calls (`launch`, `cancel`) are made from
/// worker threads; `poll` is made from the loop and must not block.
pub trait Launcher: Send + Sync {
    /// The attempts that exist, by [`attempt_key`], and what each is doing (recovery).
    fn attempts(&self) -> Result<HashMap<String, Found>, LaunchError>;

    /// Starts the job's current attempt; returns what runs it (see [`Started`]). `root` is
    /// `$STRATA_HOME`; `network`: the queue gives one.
    fn launch(&self, root: &Path, job: &Job, network: bool) -> Result<Started, LaunchError>;

    /// The end of the job's current attempt, if it has ended (never blocks).
    fn poll(&self, job: &Job) -> Option<Ended>;

    /// Stops the attempt (SIGTERM or a Job delete, `grace`, SIGKILL) and confirms that
    /// nothing of it is left; the end is recorded with `cause`.
    fn cancel(&self, job: &Job, cause: EndCause, grace: Duration) -> Result<Ended, LaunchError>;

    /// Copies the outputs of the job's ended attempt (its `--output` directories) into
    /// `dest`, replacing what an earlier attempt left there; called once the attempt has
    /// ended, whatever its outcome (failed, timed out and cancelled attempts too), and
    /// before [`Launcher::cleanup`]. `None`: nothing to collect here, e.g. on a cluster,
    /// where a queue's volume holds the outputs instead.
    fn collect_outputs(&self, _job: &Job, _dest: &Path) -> Result<Option<Collected>, LaunchError> {
        Ok(None)
    }

    /// Removes what is left of an ended attempt (after its outcome is recorded).
    fn cleanup(&self, job: &Job);

    /// The pools as they are now, where they change while the agent runs (a cluster's
    /// nodes); `None` when they do not change or are not known yet.
    fn current_pools(&self) -> Option<Vec<Pool>> {
        None
    }

    /// Removes an attempt no unfinished job owns (recovery), by its key.
    fn cleanup_key(&self, key: &str);
}

//! Where the agent runs jobs: this machine through runc, or a Kubernetes cluster. One
//! interface over both, so the agent loop (resolve, admit, watch, record, clean up) is the
//! same whichever runs the containers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_build::home::Home;
use strata_build::progress::Silent;
use strata_build::publish::PushTarget;

use strata_errors::chain;
use strata_kube::{BlockingKube, EndKind, KubeOutcome};
use strata_queue::job::log_path;
use strata_queue::job::{EndCause, Job, Outcome};
use strata_queue::pool::Pool;
use strata_runc::{ExitOutcome, LaunchRequest, Limits, LocalLauncher};

/// How an attempt ended, as the agent records it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub cause: EndCause,
    pub outcome: Outcome,
    /// Nothing ran (the cluster could not place it): the job waits again rather than failing.
    pub not_started: bool,
}

/// Why an attempt could not start, and whether trying again later may help (the cluster
/// refused or could not be reached) or not (the job itself is wrong: no such command).
#[derive(Debug, Clone)]
pub struct LaunchFailure {
    pub reason: String,
    pub retry: bool,
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

#[derive(Clone)]
pub enum Backend {
    Local(Arc<LocalLauncher>),
    Kube(Arc<BlockingKube>),
}

/// The name of one attempt of a job (a retry is a new container or Job).
pub fn attempt_key(job: &Job) -> String {
    format!("{}-a{}", job.id, job.attempt)
}

impl Backend {
    /// The attempts that exist, and what each is doing.
    pub fn attempts(&self) -> Result<HashMap<String, Attempt>, String> {
        use strata_runc::ContainerState as C;
        match self {
            Backend::Local(l) => Ok(l
                .list()
                .map_err(|e| chain(&e))?
                .into_iter()
                .map(|c| {
                    let state = match c.state {
                        C::Exited(_) => Attempt::Ended,
                        C::Absent => Attempt::NeverStarted,
                        _ => Attempt::Running,
                    };
                    (c.job_id, state)
                })
                .collect()),
            Backend::Kube(k) => Ok(k
                .list()
                .map_err(|e| chain(&e))?
                .into_iter()
                .map(|j| {
                    let state = if j.finished {
                        Attempt::Ended
                    } else {
                        Attempt::Running
                    };
                    (j.key, state)
                })
                .collect()),
        }
    }

    /// Starts an attempt (blocking: call from a worker thread). Kubernetes pulls images
    /// from a registry, so the image is pushed there first (nothing is sent if it is there).
    pub fn launch(&self, root: &Path, job: &Job, network: bool) -> Result<String, LaunchFailure> {
        let fatal = |reason: String| LaunchFailure {
            reason,
            retry: false,
        };
        let retry = |reason: String| LaunchFailure {
            reason,
            retry: true,
        };
        match self {
            Backend::Local(l) => {
                let request = local_request(root, job, network).map_err(fatal)?;
                l.launch(&request)
                    .map(|r| r.container_id)
                    .map_err(|e| fatal(chain(&e)))
            }
            Backend::Kube(k) => {
                push_for_cluster(root, k, job).map_err(retry)?;
                k.launch(job, network)
                    .map(|l| format!("{}/{}", l.namespace, l.name))
                    .map_err(|e| retry(chain(&e)))
            }
        }
    }

    /// The end of an attempt, if it has ended (never blocks).
    pub fn poll(&self, job: &Job) -> Option<Ended> {
        match self {
            Backend::Local(l) => match l.poll(&attempt_key(job)) {
                Ok(Some(exit)) => Some(local_ended(&exit, EndCause::Exited, job)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!("polling job {}: {e}", job.id);
                    None
                }
            },
            Backend::Kube(k) => k.poll(job).map(|o| kube_ended(o, EndCause::Exited)),
        }
    }

    /// Stops an attempt: SIGTERM (or a Job delete), the grace period, SIGKILL, and confirms
    /// that nothing of it is left.
    pub fn cancel(&self, job: &Job, cause: EndCause, grace: Duration) -> Result<Ended, String> {
        match self {
            Backend::Local(l) => l
                .cancel(&attempt_key(job), grace)
                .map(|exit| local_ended(&exit, cause, job))
                .map_err(|e| chain(&e)),
            Backend::Kube(k) => k
                .cancel(job, grace)
                .map(|o| kube_ended(o, cause))
                .map_err(|e| chain(&e)),
        }
    }

    /// Removes what is left of an ended attempt (after its outcome is recorded).
    pub fn cleanup(&self, job: &Job) {
        match self {
            Backend::Local(l) => {
                if let Err(e) = l.cleanup(&attempt_key(job)) {
                    tracing::warn!("cleaning up job {}: {e}", job.id);
                }
            }
            Backend::Kube(k) => k.forget(job),
        }
    }

    /// The pools as they are now, where they change while the agent runs (a cluster's
    /// nodes); `None` when they do not change or are not known yet.
    pub fn current_pools(&self) -> Option<Vec<Pool>> {
        match self {
            Backend::Local(_) => None,
            Backend::Kube(k) => k.watched_pools(),
        }
    }

    /// Removes an attempt nobody knows (recovery); only the local backend leaves any.
    pub fn cleanup_key(&self, key: &str) {
        if let Backend::Local(l) = self {
            if let Err(e) = l.cleanup(key) {
                tracing::warn!("cleaning up leftover container {key}: {e}");
            }
        }
    }
}

fn local_request(root: &Path, job: &Job, network: bool) -> Result<LaunchRequest, String> {
    let image = job
        .image_digest
        .clone()
        .ok_or_else(|| format!("job {} has no image", job.id))?;
    let log: PathBuf = log_path(root, &job.id);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    Ok(LaunchRequest {
        job_id: attempt_key(job),
        image,
        command: job.command.clone(),
        env: job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: job.working_dir.clone(),
        limits: Limits {
            millicpus: Some(job.resources.millicpus),
            memory_bytes: Some(job.resources.memory),
            pids: Some(4096),
        },
        gpus: job.gpus.clone(),
        network,
        log_path: log,
    })
}

/// Pushes the job's image to the cluster's registry (`[kubernetes] registry`).
fn push_for_cluster(root: &Path, kube: &BlockingKube, job: &Job) -> Result<(), String> {
    let digest = job
        .image_digest
        .as_ref()
        .ok_or_else(|| format!("job {} has no image", job.id))?;
    let registry = kube.backend().settings().registry.clone().ok_or_else(|| {
        "[kubernetes] registry is not set: the cluster pulls images from a registry".to_string()
    })?;
    let home = Home::open(root).map_err(|e| chain(&e))?;
    let target = PushTarget::new(&registry, false).map_err(|e| chain(&e))?;
    let tag = format!("job-{}", digest.short(16));
    target
        .push(&home, digest, &tag, &Silent)
        .map(|_| ())
        .map_err(|e| chain(&e))
}

fn local_ended(exit: &ExitOutcome, cause: EndCause, job: &Job) -> Ended {
    let reason = match cause {
        EndCause::Cancelled => Some("cancelled".to_string()),
        EndCause::TimedOut => Some(format!(
            "timed out after {}",
            strata_queue::explain::human_duration(job.timeout_secs.unwrap_or(0) as i64)
        )),
        EndCause::Exited if exit.oom_killed => Some("killed: out of memory".to_string()),
        EndCause::Exited if !exit.status_known => Some("exit status lost".to_string()),
        EndCause::Exited => None,
    };
    Ended {
        cause,
        outcome: Outcome {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            reason,
        },
        not_started: false,
    }
}

fn kube_ended(o: KubeOutcome, asked: EndCause) -> Ended {
    let cause = match (asked, o.kind) {
        (EndCause::Exited, EndKind::DeadlineExceeded) => EndCause::TimedOut,
        (asked, _) => asked,
    };
    Ended {
        cause,
        not_started: o.kind == EndKind::Unschedulable && asked == EndCause::Exited,
        outcome: o.outcome,
    }
}

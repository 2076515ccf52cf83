//! A Kubernetes cluster: one batch/v1 Job per attempt ([`BlockingKube`]); the cluster pulls
//! the job's image from a registry, so it is pushed there first.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use strata_build::Home;
use strata_build::PushTarget;
use strata_build::Silent;
use strata_kube::job_digest;
use strata_kube::{BlockingKube, EndKind, KubeError, KubeOutcome};
use strata_queue::Pool;
use strata_queue::{EndCause, Job};

use super::{Attempt, Ended, Found, LaunchError, Launcher, Started};

impl Launcher for BlockingKube {
    fn attempts(&self) -> Result<HashMap<String, Found>, LaunchError> {
        let jobs = self.list()?;
        Ok(jobs
            .into_iter()
            .map(|j| {
                let state = if j.finished {
                    Attempt::Ended
                } else {
                    Attempt::Running
                };
                let found = Found {
                    state,
                    kube_uid: j.uid,
                };
                (j.key, found)
            })
            .collect())
    }

    fn launch(&self, root: &Path, job: &Job, network: bool) -> Result<Started, LaunchError> {
        let home = push_for_cluster(root, self, job)?;
        let job = with_outputs_cwd(&home, job)?;
        let launched = BlockingKube::launch(self, &job, network)?;
        Ok(Started {
            container: format!("{}/{}", launched.namespace, launched.name),
            kube_uid: launched.uid,
        })
    }

    fn poll(&self, job: &Job) -> Option<Ended> {
        BlockingKube::poll(self, job).map(|o| ended(o, EndCause::Exited))
    }

    fn cancel(&self, job: &Job, cause: EndCause, grace: Duration) -> Result<Ended, LaunchError> {
        let outcome = BlockingKube::cancel(self, job, grace)?;
        Ok(ended(outcome, cause))
    }

    fn cleanup(&self, job: &Job) {
        self.forget(job);
    }

    fn current_pools(&self) -> Option<Vec<Pool>> {
        self.watched_pools()
    }

    /// Nothing to do: the cluster removes finished Jobs itself (their TTL).
    fn cleanup_key(&self, _key: &str) {}
}

/// Pushes the job's image to the cluster's registry (`[kubernetes] registry`); nothing is
/// sent that is there already. A launch is a use: the image's usage record in that registry is
/// updated even when the image was there already, so a registry GC run from any machine keeps
/// an image launched within `keep_days`.
fn push_for_cluster(root: &Path, kube: &BlockingKube, job: &Job) -> Result<Home, LaunchError> {
    let digest = job_digest(job)?;
    let registry = kube
        .backend()
        .settings()
        .registry
        .clone()
        .ok_or(KubeError::NoRegistry)?;
    let push_err = |source| LaunchError::Push {
        registry: registry.clone(),
        source: Box::new(source),
    };
    let home = Home::open(root).map_err(|e| push_err(e.into()))?;
    let target = PushTarget::new(&registry, false).map_err(push_err)?;
    let tag = format!("job-{}", digest.short(16));
    let pushed = target
        .push(&home, digest, &tag, &Silent)
        .map_err(push_err)?;
    // The job runs either way; a layer index not written costs later builds only.
    for warning in &pushed.warnings {
        tracing::warn!("{warning}");
    }
    target.record_use(&home, digest, &tag).map_err(push_err)?;
    Ok(home)
}

/// A job with outputs and no working directory runs in its image's `WorkingDir`: that is
/// set on the container explicitly (the same directory), so the outputs' mount paths,
/// relative to it, are known.
fn with_outputs_cwd(home: &Home, job: &Job) -> Result<Job, LaunchError> {
    let mut job = job.clone();
    if job.outputs.is_empty() || job.working_dir.is_some() {
        return Ok(job);
    }
    let digest = job_digest(&job)?.clone();
    job.working_dir = strata_runc::image_working_dir(&home.store, &digest)?;
    Ok(job)
}

/// How the cluster says an attempt ended, as the agent records it: a Job past its deadline
/// timed out; a pod the cluster could not place never started (it waits again).
fn ended(o: KubeOutcome, asked: EndCause) -> Ended {
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

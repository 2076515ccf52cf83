//! Running strata's jobs as Kubernetes Jobs, without handing scheduling to the cluster:
//! strata admits (a job is created only when its tier fits on one node of its pool, see
//! [`nodes`]), Kubernetes runs. One batch/v1 Job per attempt ([`objects`]), watched
//! ([`watch`]) into the state of each attempt ([`attempts`]), read in strata's terms
//! ([`classify`]), logs streamed into strata's log files ([`logs`]), cancelled with its pods
//! confirmed gone ([`backend`]), on the capacity of the pools' nodes as watched
//! ([`capacity`]); the mapping of pools, tiers and queues is the
//! `[kubernetes]` section ([`config`]), the kubeconfig is found and read as kubectl does
//! ([`connect`]).
//!
//! [`backend::KubeBackend`] is async (kube-rs); [`BlockingKube`] wraps it with its own tokio
//! runtime for the agent's synchronous loop: the watchers run on that runtime's threads
//! and `poll` only reads what they saw.

mod attempts;
mod backend;
mod capacity;
mod classify;
mod config;
mod connect;
mod logs;
mod nodes;
pub mod objects;
mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

pub use backend::{job_digest, ClusterJob, KubeBackend, KubeError, Launched};
pub use classify::{classify, registry_of, AttemptStatus, EndKind, KubeOutcome};
pub use config::{
    is_dns_label, is_registry_repository, Connection, KubeSettings, KubeSettingsError,
    TierPlacement,
};
pub use connect::{connect, connect_to, files_from, from_kubeconfig};
pub use logs::{stream_pod_logs, LogError};
pub use objects::AttemptKey;

use strata_queue::Job;
use strata_queue::Pool;

/// [`KubeBackend`] for synchronous callers: owns a tokio runtime on which the watchers and
/// log streams run.
pub struct BlockingKube {
    runtime: tokio::runtime::Runtime,
    backend: KubeBackend,
    namespaces: BTreeSet<String>,
}

impl BlockingKube {
    /// Connects (checking the server answers), and starts watching `namespaces` (the
    /// namespaces of every queue: [`KubeSettings::namespaces_of`]).
    pub fn start(
        settings: KubeSettings,
        home: PathBuf,
        namespaces: BTreeSet<String>,
    ) -> Result<BlockingKube, KubeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("strata-kube")
            .build()
            .map_err(KubeError::Runtime)?;
        let client = runtime.block_on(connect(&settings.connection))?;
        let backend = KubeBackend::new(client, settings, home);
        {
            let _guard = runtime.enter();
            backend.start(&namespaces);
        }
        Ok(BlockingKube {
            runtime,
            backend,
            namespaces,
        })
    }

    pub fn backend(&self) -> &KubeBackend {
        &self.backend
    }

    /// See [`KubeBackend::launch`]; the image is `kubernetes.registry@digest`.
    pub fn launch(&self, job: &Job, network: bool) -> Result<Launched, KubeError> {
        let image = self.backend.image_ref(backend::job_digest(job)?)?;
        self.runtime
            .block_on(self.backend.launch(job, &image, network))
    }

    pub fn status(&self, job: &Job) -> Option<AttemptStatus> {
        self.backend.status(job)
    }

    pub fn poll(&self, job: &Job) -> Option<KubeOutcome> {
        self.backend.poll(job)
    }

    pub fn forget(&self, job: &Job) {
        self.backend.forget(job)
    }

    pub fn cancel(&self, job: &Job, grace: Duration) -> Result<KubeOutcome, KubeError> {
        self.runtime.block_on(self.backend.cancel(job, grace))
    }

    /// Strata's Jobs in the watched namespaces.
    pub fn list(&self) -> Result<Vec<ClusterJob>, KubeError> {
        self.runtime.block_on(self.backend.list(&self.namespaces))
    }

    pub fn pools(&self) -> Result<Vec<Pool>, KubeError> {
        self.runtime.block_on(self.backend.pools())
    }

    /// See [`KubeBackend::watched_pools`].
    pub fn watched_pools(&self) -> Option<Vec<Pool>> {
        self.backend.watched_pools()
    }
}

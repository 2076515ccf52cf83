//! Queues and admission: which job starts where, and the durable job store.
//!
//! Configuration ([`config`], [`tier`], [`pool`]) says what may run where; the job store
//! ([`jobstore`]) holds every job durably in `strata.db` and moves it through its states with
//! compare-and-set transitions; the [`admit::Scheduler`] keeps the waiting jobs in memory,
//! ordered ([`order`], [`fairshare`]), and decides which start on which node; [`explain`]
//! turns its view of a waiting job into words.

mod admit;
mod config;
mod explain;
mod fairshare;
mod job;
mod jobstore;
mod order;
mod outputs;
mod pool;
mod tier;

pub use admit::{Admission, Decisions, Scheduler, TierCapacity};
pub use config::{QueueConfig, RetryPolicy, SchedulerConfig, SchedulerConfigError};
pub use explain::{human_duration, JobView};
pub use job::{
    log_path, EndCause, EnvOptions, Environment, Job, JobId, JobIdError, JobState, NewJob, Outcome,
    ShippedCode,
};
pub use jobstore::{
    now, CancelResult, Change, JobFilter, JobStore, StoreError, StoredReservation, SubmitError,
};
pub use outputs::{outputs_dir, OutputPath, OutputPathError};
pub use pool::{describe_pools, publish_pools, published_pools, Node, Pool};
pub use tier::{parse_memory, Memory, MemoryError, Resources};

//! Queues and admission: which job starts where, and the durable job store.
//!
//! Configuration ([`config`], [`tier`], [`pool`]) says what may run where; the job store
//! ([`jobstore`]) holds every job durably in `strata.db` and moves it through its states with
//! compare-and-set transitions; the [`admit::Scheduler`] keeps the waiting jobs in memory,
//! ordered ([`order`], [`fairshare`]), and decides which start on which node; [`explain`]
//! turns its view of a waiting job into words.

pub mod admit;
pub mod config;
pub mod explain;
pub mod fairshare;
pub mod job;
pub mod jobstore;
pub mod order;
pub mod pool;
pub mod tier;

pub use admit::{Admission, Decisions, Scheduler};
pub use config::{QueueConfig, RetryPolicy, SchedulerConfig, SchedulerConfigError};
pub use explain::JobView;
pub use job::{EndCause, EnvOptions, Environment, Job, JobId, JobState, NewJob, Outcome};
pub use jobstore::{Change, JobFilter, JobStore, StoreError, SubmitError};
pub use tier::Resources;

//! The agent: resolves queued jobs to images, admits them, launches them through a
//! [`launcher::Launcher`] (runc here, or Kubernetes), watches them and records how they end;
//! and the local client calls the CLI makes (submit, list, cancel, logs).

mod agent;
mod client;
mod launcher;

pub use agent::{job_image, parse_env, Agent, AgentError, AgentOptions, BackendChoice};
pub use client::{Client, ClientError, JobMetrics, JobStatus, Submitted};
pub use launcher::{attempt_key, Attempt, Ended, LaunchError, Launcher};

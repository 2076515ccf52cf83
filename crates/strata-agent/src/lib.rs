//! The agent: resolves queued jobs to images, admits them, launches them through a
//! [`launcher::Launcher`] (runc here, or Kubernetes), watches them and records how they end;
//! and the local client calls the CLI makes (submit, list, cancel, logs, outputs).

mod agent;
mod client;
mod config_check;
mod detected;
mod launcher;
mod outputs;

pub use agent::{
    job_image, parse_env, registry_digest, Agent, AgentError, AgentOptions, BackendChoice,
};
pub use client::{
    Client, ClientError, EnvironmentError, JobMetrics, JobStatus, KeptScheduler, Published,
    Submitted,
};
pub use config_check::{check_config, SECTIONS};
pub use detected::{detect_environment, DetectedEnvironment, DetectedError};
pub use launcher::{attempt_key, Attempt, Ended, Found, LaunchError, Launcher, Started};
pub use outputs::{output_limits, JobOutputs, OutputFile, OutputsError, OutputsState};
pub use strata_runc::{Collected, LauncherSettings, OutputLimits};

//! The agent: resolves queued jobs to images, admits them, launches them through a
//! [`launcher::Launcher`] (runc here, or Kubernetes), watches them and records how they end;
//! and the local client calls the CLI makes (submit, list, cancel, logs).

pub mod agent;
pub mod client;
pub mod launcher;

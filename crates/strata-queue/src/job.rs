//! A job: what to run, in which environment, on which tier, and where it is in its life.
//!
//! ```text
//! Queued ─► Resolving ─► Ready ─► Running ─► Succeeded | Failed | Cancelled | TimedOut
//!    │          │          ▲ │       │
//!    │          │          │ │       └─► Retrying ─► Ready (after its not-before time)
//!    └──────────┴──► Failed (environment did not build), Cancelled (before it ran)
//! ```
//! A job whose image digest is known at submit goes straight from Queued to Ready.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_oci::{Digest, LayerDescriptor};

use crate::outputs::OutputPath;
use crate::tier::Resources;

/// `j-` and 10 base32 characters (50 random bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const ID_CHARS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {0:?}: expected j- and 10 letters or digits 2-7, e.g. j-abcde23456")]
pub struct JobIdError(pub String);

/// The operating system's random source failed (no job id can be made without it).
#[derive(Debug, thiserror::Error)]
#[error("no random bytes from the operating system for a job id")]
pub struct RandomIdError(#[source] getrandom::Error);

impl JobId {
    /// A fresh id: 50 bits from the operating system's random source, so that ids made by
    /// different processes (submits, agents) at the same moment do not collide.
    pub fn generate() -> Result<JobId, RandomIdError> {
        let mut bits = getrandom::u64().map_err(RandomIdError)?;
        let mut text = String::with_capacity(2 + ID_CHARS);
        text.push_str("j-");
        for _ in 0..ID_CHARS {
            text.push(BASE32[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        Ok(JobId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || JobIdError(text.to_string());
        let rest = text.strip_prefix("j-").ok_or_else(err)?;
        if rest.len() != ID_CHARS || !rest.bytes().all(|b| BASE32.contains(&b)) {
            return Err(err());
        }
        Ok(JobId(text.to_string()))
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Resolving,
    Ready,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct JobStateError(pub String);

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Resolving,
        JobState::Ready,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Resolving => "resolving",
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    /// Finished for good: nothing moves it again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// Not yet running and not finished.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Resolving | JobState::Ready | JobState::Retrying
        )
    }

    /// The edges of the state machine.
    pub fn can_go_to(self, to: JobState) -> bool {
        use JobState::*;
        match self {
            Queued => matches!(to, Resolving | Ready | Failed | Cancelled),
            // Back to Queued when the resolver died mid-way (agent restart).
            Resolving => matches!(to, Queued | Ready | Failed | Cancelled),
            Ready => matches!(to, Running | Cancelled),
            Running => matches!(
                to,
                Retrying | Succeeded | Failed | Cancelled | TimedOut | Ready
            ),
            Retrying => matches!(to, Ready | Running | Cancelled),
            Succeeded | Failed | Cancelled | TimedOut => false,
        }
    }
}

impl FromStr for JobState {
    type Err = JobStateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| JobStateError(text.to_string()))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job runs in: a Python environment to build (or find), or an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Environment {
    /// A requirements file; `spec_digest` once its canonical spec is known.
    Requirements {
        path: PathBuf,
        spec_digest: Option<Digest>,
        /// How to build it (base image, target, sources), as given at submit.
        #[serde(default)]
        options: EnvOptions,
    },
    /// An image reference (a tag or a digest) to resolve to a digest.
    Image { reference: String },
}

/// The build options of a requirements environment, kept with the job so that the agent
/// builds exactly what was submitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvOptions {
    /// `oci:PATH:TAG` or `REGISTRY/REPO:TAG`.
    pub base: String,
    pub python: Option<String>,
    pub platform: Option<String>,
    pub find_links: Vec<String>,
    pub no_index: bool,
    pub name: Option<String>,
    /// `--extra` and `--group` of a pyproject.toml, uv.lock or poetry.lock (absent in jobs
    /// stored before they existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extras: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `--install-project`: the project itself too (absent, false, in older jobs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub install_project: bool,
    /// `strata submit --refresh`: resolve the environment again when the job's build starts,
    /// even if its spec was built before (absent, false, in older jobs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
}

/// How a run ended, as the launcher saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Words for a person: the build error, "cancelled by user", "timed out after 1h".
    pub reason: Option<String>,
}

/// Why a running job stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// The process ended by itself (any exit code or signal, OOM kills included).
    Exited,
    /// Killed after its time limit.
    TimedOut,
    /// Killed because someone cancelled it.
    Cancelled,
}

/// A job as submitted; unset fields take the queue's defaults.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    pub queue: String,
    pub tier: String,
    /// Default: `$USER` (or "unknown").
    pub user: Option<String>,
    pub priority: Option<i64>,
    pub name: Option<String>,
    pub environment: Option<Environment>,
    /// The image digest when already known (skips resolution).
    pub image_digest: Option<Digest>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// Directories collected when the job ends, whatever its outcome.
    pub outputs: Vec<OutputPath>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub retry_exit_codes: Option<Vec<i32>>,
    pub retry_on_oom: Option<bool>,
    /// The working tree shipped with the job (its layer is in the local store).
    pub code: Option<ShippedCode>,
    /// The client's key for this submit (`Idempotency-Key`): unique per user.
    pub idempotency_key: Option<String>,
}

/// The code shipped with a job: one layer unpacked at `dest` on top of its environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedCode {
    pub layer: LayerDescriptor,
    /// Absolute path of the code in the job's image (its working directory by default).
    pub dest: String,
    /// Files and symlinks, and bytes of the files.
    pub files: usize,
    pub bytes: u64,
    /// The commit the tree was at; `None` outside a git work tree or before the first commit.
    pub git_commit: Option<String>,
    /// Whether the tree differed from that commit; `None` outside a git work tree.
    pub git_dirty: Option<bool>,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// Insertion order in the store: breaks ties between jobs submitted in the same second.
    pub seq: i64,
    pub queue: String,
    pub tier: String,
    pub user: String,
    pub priority: i64,
    pub name: Option<String>,
    pub environment: Environment,
    pub image_digest: Option<Digest>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// Directories collected when the job ends, whatever its outcome (see
    /// [`crate::outputs`]).
    pub outputs: Vec<OutputPath>,
    pub timeout_secs: Option<u64>,
    /// What the job was admitted with: the tier's resources when it was submitted.
    pub resources: Resources,
    pub network: bool,
    pub retries: u32,
    pub retry_exit_codes: Vec<i32>,
    pub retry_on_oom: bool,
    pub retry_backoff_secs: u64,
    /// 1 for the first run, 2 for the first retry...
    pub attempt: u32,
    pub state: JobState,
    /// A retrying job is not started before this time.
    pub not_before: Option<i64>,
    pub outcome: Outcome,
    pub pool: Option<String>,
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    pub container_id: Option<String>,
    /// The uid the API server gave the Kubernetes Job of the current attempt, recorded at
    /// its creation: a restarted agent adopts only that object, not one recreated under
    /// the same name by someone else. `None` for local jobs.
    pub kube_uid: Option<String>,
    pub submitted_at: i64,
    /// When it last became ready to run (waiting for capacity since).
    pub ready_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub cancel_requested: bool,
    pub code: Option<ShippedCode>,
}

impl Job {
    /// When its time limit runs out, if it is running and has one.
    pub fn deadline(&self) -> Option<i64> {
        let started = self.started_at?;
        let timeout = i64::try_from(self.timeout_secs?).ok()?;
        Some(started.saturating_add(timeout))
    }

    /// Whether this outcome of this attempt earns another attempt.
    pub fn is_retryable(&self, outcome: &Outcome) -> bool {
        if self.attempt > self.retries {
            return false;
        }
        let by_code = outcome
            .exit_code
            .is_some_and(|code| code != 0 && self.retry_exit_codes.contains(&code));
        by_code || (outcome.oom_killed && self.retry_on_oom)
    }

    /// The delay before the next attempt: the backoff doubled per attempt already made,
    /// capped at an hour, and never less than a second (no tight loop).
    pub fn retry_delay(&self) -> u64 {
        let doublings = self.attempt.saturating_sub(1).min(20);
        let max = crate::config::MAX_BACKOFF.as_secs();
        self.retry_backoff_secs
            .max(1)
            .saturating_mul(1u64 << doublings)
            .min(max)
    }
}

/// Where a job's stdout and stderr go (all attempts, appended), under `$STRATA_HOME`.
pub fn log_path(home: &std::path::Path, id: &JobId) -> std::path::PathBuf {
    home.join("logs").join(format!("{id}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_distinct_and_parse_back() {
        let a = JobId::generate().unwrap();
        let b = JobId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 12);
        assert_eq!(a.as_str().parse::<JobId>().unwrap(), a);
        for bad in ["", "j-", "x-abcdefghij", "j-ABCDEFGHIJ", "j-abcdefghi1"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_character_of_an_id_is_random() {
        // A clock or a counter would leave some positions (nearly) constant; uniform random
        // bits give each position most of the 32 characters over 1,000 ids.
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::generate().unwrap()).collect();
        let distinct: std::collections::HashSet<&JobId> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for position in 2..2 + ID_CHARS {
            let seen: std::collections::HashSet<u8> = ids
                .iter()
                .map(|id| id.as_str().as_bytes()[position])
                .collect();
            assert!(seen.len() >= 24, "position {position}: only {seen:?}");
        }
    }

    #[test]
    fn states_round_trip_and_terminal_states_are_final() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            if state.is_terminal() {
                assert!(JobState::ALL.iter().all(|to| !state.can_go_to(*to)));
            }
        }
        assert!(!JobState::Ready.can_go_to(JobState::Succeeded));
        assert!(JobState::Running.can_go_to(JobState::Retrying));
    }
}

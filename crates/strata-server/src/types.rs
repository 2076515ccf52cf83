//! The bodies of the API that both the server and the CLI's client read and write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_queue::TierCapacity;

/// `POST /api/v1/jobs`: a job on an image of the server's store (a tag, a digest or an
/// environment name) or of the team's registry repository, by digest
/// (`REGISTRY/REPO@sha256:...`). The user is the token's; unknown fields are refused (a path
/// of the client's machine has no field to travel in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub queue: String,
    pub tier: String,
    pub image: String,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Directories collected when the job ends (in the container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// A time limit: `30m`, `2h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_exit: Vec<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_on_oom: bool,
}

/// The answer to a submit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub id: String,
}

/// `GET /api/v1/capacity`: "your cluster": the team's queues and every tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityResponse {
    pub team: String,
    pub queues: Vec<String>,
    pub tiers: Vec<TierCapacity>,
}

/// `GET /api/v1/registry`: where the caller's team pushes its jobs' images; `None` when the
/// server names no registry (`[server] registry`): then only its own store's images run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryResponse {
    pub team: String,
    pub repository: Option<String>,
}

/// `GET /api/v1/whoami`: who the token is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: String,
    pub team: String,
    pub admin: bool,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

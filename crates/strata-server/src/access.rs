//! Who may do what: a token acts for one user in one team. A queue belongs to the team that
//! `[queues.NAME] team` names; a queue without a team is not reachable through the server.
//! Anything outside the caller's team answers exactly as a job or queue that does not exist
//! (404), so another team's job ids do not leak, not even by a different error.

use std::collections::HashSet;

use strata_agent::Client;
use strata_db::tokens::Identity;
use strata_queue::{Job, JobId, SchedulerConfig};

use crate::error::ApiError;

/// A request's caller and the scheduler's view it acts on.
pub struct Caller {
    pub who: Identity,
    pub client: Client,
}

/// The queues of `team`, by name.
pub fn team_queues(config: &SchedulerConfig, team: &str) -> Vec<String> {
    config
        .queues
        .values()
        .filter(|q| q.team.as_deref() == Some(team))
        .map(|q| q.name.clone())
        .collect()
}

impl Caller {
    pub fn queues(&self) -> Vec<String> {
        team_queues(self.client.config(), &self.who.team)
    }

    /// The queue, if it is the caller's team's; else 404 as for a queue that does not exist.
    pub fn queue(&self, name: &str) -> Result<(), ApiError> {
        if self.queues().iter().any(|q| q == name) {
            return Ok(());
        }
        Err(ApiError::not_found(format!("no queue {name:?}")))
    }

    /// The job, if it is in one of the caller's team's queues; a malformed id is a 400 (it
    /// names nothing, so it tells nothing).
    pub fn job(&self, id: &str) -> Result<Job, ApiError> {
        let id: JobId = id
            .parse()
            .map_err(|e: strata_queue::JobIdError| ApiError::bad_request(e.to_string()))?;
        let missing = || ApiError::not_found(format!("no job {id}"));
        let job = match self.client.job(id.as_str()) {
            Ok(job) => job,
            Err(strata_agent::ClientError::NoSuchJob(_)) => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        if self.queue(&job.queue).is_err() {
            return Err(missing());
        }
        Ok(job)
    }

    /// Changing a job (cancelling it, deleting its outputs): one's own job, or any of the
    /// team's as its admin. The job is visible to the caller (same team), so this is a 403,
    /// not a 404. `action` says what, for the message ("cancel").
    pub fn may_change(&self, job: &Job, action: &str) -> Result<(), ApiError> {
        if self.who.admin || job.user == self.who.user {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "job {} is {}'s: only its owner or an admin of team {} may {action} it",
                job.id, job.user, self.who.team
            ),
        ))
    }
}

/// A reason as the caller may read it: the ids of jobs they cannot see (a reservation held
/// by another team's job) become "of another team".
pub fn scrub_reason(reason: &str, visible: &HashSet<String>) -> String {
    const ID_LEN: usize = 12;
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(at) = rest.find("j-") {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + ID_LEN).unwrap_or("");
        let is_id = candidate.parse::<JobId>().is_ok();
        if is_id && !visible.contains(candidate) {
            out.push_str("of another team");
            rest = &rest[at + ID_LEN..];
        } else {
            out.push_str("j-");
            rest = &rest[at + 2..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_hide_the_ids_of_jobs_the_caller_cannot_see() {
        let visible = HashSet::from(["j-aaaaaaaaaa".to_string()]);
        assert_eq!(
            scrub_reason(
                "capacity is reserved for job j-bbbbbbbbbb (gpu8); behind j-aaaaaaaaaa",
                &visible
            ),
            "capacity is reserved for job of another team (gpu8); behind j-aaaaaaaaaa"
        );
        assert_eq!(scrub_reason("no-j- here j-", &visible), "no-j- here j-");
    }
}

//! Why a job waits, in words: what `strata jobs` and `strata status` print.
//!
//! For a job ready to run the reason is built from what stops it, in this order, joined by
//! "; ": its queue's running limit, the capacity it needs and what is free ("needs 8 GPUs on
//! one node; at most 4 free on any node of pool local"), a reservation held for another job,
//! a reservation held for it, and the jobs ahead of it in its tier ("2 jobs ahead with higher
//! priority"). Its position is its rank among the waiting jobs of its tier (1 = next).
//!
//! The estimated start comes from the time limits of running jobs: the tier's waiting jobs
//! are started in rank order, in a simulation, at the earliest moment one node has room as
//! running jobs reach their limits (and started ones theirs). It ignores other tiers, so it
//! is a lower bound; a job behind a job without a time limit gets none.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::admit::Scheduler;
use crate::job::{Job, JobId, JobState, Outcome};
use crate::jobstore::{JobFilter, JobStore, StoreError};
use crate::order::{RankKey, Waiting};
use crate::tier::{cpus_phrase, format_cpus, format_memory, gpus_phrase, Resources};

/// How far down a tier the start times are simulated.
const ESTIMATE_DEPTH: usize = 100;

/// A job as people see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub name: Option<String>,
    pub queue: String,
    pub tier: String,
    pub user: String,
    pub priority: i64,
    pub state: JobState,
    /// Rank among the waiting jobs of its tier, 1 = next.
    pub position: Option<usize>,
    /// Why it waits, or how it ended.
    pub reason: Option<String>,
    /// Earliest start (Unix seconds) that the running jobs' time limits allow.
    pub estimated_start: Option<i64>,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub cancel_requested: bool,
    pub image_digest: Option<String>,
}

/// "45s", "5m", "1h 5m", "2d 3h".
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ if s % 86_400 / 3600 == 0 => format!("{}d", s / 86_400),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The waiting jobs of one tier in rank order, and their simulated starts.
struct TierRanking {
    order: Vec<(JobId, RankKey)>,
    position: HashMap<JobId, usize>,
    starts: HashMap<JobId, i64>,
}

impl Scheduler {
    /// Views of the jobs in the store that match `filter`.
    pub fn views(
        &self,
        store: &JobStore,
        filter: &JobFilter,
        now: i64,
    ) -> Result<Vec<JobView>, StoreError> {
        Ok(self.views_of(&store.list(filter)?, now))
    }

    /// Views of these jobs.
    pub fn views_of<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>, now: i64) -> Vec<JobView> {
        let mut rankings: BTreeMap<String, TierRanking> = BTreeMap::new();
        jobs.into_iter()
            .map(|job| {
                if self.waiting.get(&job.id).is_some() && !rankings.contains_key(&job.tier) {
                    rankings.insert(job.tier.clone(), self.rank_tier(&job.tier, now));
                }
                self.view(job, rankings.get(&job.tier), now)
            })
            .collect()
    }

    fn rank_tier(&self, tier: &str, now: i64) -> TierRanking {
        let ranked = self.waiting.ranked(tier, |a| self.usage(a, now));
        let starts = self.simulate_starts(tier, &ranked, now);
        let order: Vec<(JobId, RankKey)> = ranked
            .iter()
            .map(|(job, key)| (job.id.clone(), *key))
            .collect();
        let position = order
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i + 1))
            .collect();
        TierRanking {
            order,
            position,
            starts,
        }
    }

    fn view(&self, job: &Job, ranking: Option<&TierRanking>, now: i64) -> JobView {
        let waiting = self.waiting.get(&job.id);
        let (position, reason, estimated_start) = match (job.state, waiting, ranking) {
            (_, Some(w), Some(r)) => {
                let position = r.position.get(&job.id).copied();
                let reason = self.waiting_reason(w, r, position.unwrap_or(1), now);
                (position, Some(reason), r.starts.get(&job.id).copied())
            }
            (state, _, _) => (None, self.state_reason(job, state, now), None),
        };
        JobView {
            id: job.id.clone(),
            name: job.name.clone(),
            queue: job.queue.clone(),
            tier: job.tier.clone(),
            user: job.user.clone(),
            priority: job.priority,
            state: job.state,
            position,
            reason,
            estimated_start,
            submitted_at: job.submitted_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            node: job.node.clone(),
            gpus: job.gpus.clone(),
            attempt: job.attempt,
            exit_code: job.outcome.exit_code,
            signal: job.outcome.signal,
            oom_killed: job.outcome.oom_killed,
            cancel_requested: job.cancel_requested,
            image_digest: job.image_digest.as_ref().map(|d| d.to_string()),
        }
    }

    /// Words for a job that is not waiting for capacity.
    fn state_reason(&self, job: &Job, state: JobState, now: i64) -> Option<String> {
        match state {
            JobState::Queued => Some("waiting for its environment to be resolved".into()),
            JobState::Resolving => Some("waiting for its environment to build".into()),
            JobState::Ready => Some("ready; the scheduler has not seen it yet".into()),
            JobState::Retrying => {
                let after = describe_outcome(&job.outcome);
                let next = job
                    .not_before
                    .map_or("soon".into(), |t| format!("in {}", human_duration(t - now)));
                // A start the cluster refused says why in words of its own.
                if job.outcome.exit_code.is_none() && job.outcome.signal.is_none() {
                    if let Some(reason) = &job.outcome.reason {
                        return Some(format!("{reason} (next try {next})"));
                    }
                }
                Some(format!(
                    "attempt {} of {} after {after}; next try {next}",
                    job.attempt,
                    job.retries + 1
                ))
            }
            JobState::Running if job.cancel_requested => Some("cancelling".into()),
            JobState::Running => None,
            JobState::Succeeded => None,
            JobState::Failed | JobState::Cancelled | JobState::TimedOut => Some(
                job.outcome
                    .reason
                    .clone()
                    .unwrap_or_else(|| describe_outcome(&job.outcome)),
            ),
        }
    }

    fn waiting_reason(
        &self,
        job: &Waiting,
        ranking: &TierRanking,
        position: usize,
        now: i64,
    ) -> String {
        let mut parts = Vec::new();
        if !self.queue_has_room(&job.queue) {
            let limit = self
                .config
                .queues
                .get(&job.queue)
                .and_then(|q| q.max_running)
                .unwrap_or(0);
            parts.push(format!(
                "queue {} is at its limit of {}",
                job.queue,
                plural(limit as usize, "running job", "running jobs")
            ));
        }
        if let Some(capacity) = self.capacity_phrase(&job.tier, &job.resources) {
            parts.push(capacity);
        } else if let Some(reserved) = self.reserved_phrase(job, now) {
            parts.push(reserved);
        }
        if let Some(own) = self.reservations.get(&job.tier).filter(|r| r.job == job.id) {
            let node = self
                .nodes
                .get(own.node)
                .map_or("?", |n| n.node.name.as_str());
            parts.push(format!(
                "node {node} is reserved for it (waiting {})",
                human_duration(now - own.waiting_since)
            ));
        }
        parts.extend(ahead_phrase(job, ranking, position));
        if parts.is_empty() {
            return "fits now; starts at the next admission round".into();
        }
        parts.join("; ")
    }

    fn pools_phrase(&self) -> String {
        let names: Vec<&str> = self.config.pools.iter().map(|p| p.name.as_str()).collect();
        if names.len() == 1 {
            format!("pool {}", names[0])
        } else {
            format!("pools {}", names.join(", "))
        }
    }

    /// What capacity is missing, or None if the job fits on some node now.
    fn capacity_phrase(&self, tier: &str, need: &Resources) -> Option<String> {
        if self.fits_now_anywhere(tier, need) {
            return None;
        }
        let pools = self.pools_phrase();
        let max_capacity = self
            .nodes
            .iter()
            .fold(Resources::default(), |m, n| max_each(&m, &n.node.capacity));
        if !self.nodes.iter().any(|n| n.could_hold(tier, need)) {
            return Some(never_fits(tier, need, &max_capacity, &pools));
        }
        let max_free = self
            .nodes
            .iter()
            .fold(Resources::default(), |m, n| max_each(&m, &n.free()));
        if need.gpus > max_free.gpus {
            let free = match max_free.gpus {
                0 => "no GPU free".to_string(),
                n => format!("at most {n} free"),
            };
            return Some(format!(
                "needs {} on one node; {free} on any node of {pools}",
                gpus_phrase(need.gpus)
            ));
        }
        if need.millicpus > max_free.millicpus {
            return Some(format!(
                "needs {} on one node; at most {} free on any node of {pools}",
                cpus_phrase(need.millicpus),
                format_cpus(max_free.millicpus)
            ));
        }
        if need.memory > max_free.memory {
            return Some(format!(
                "needs {} of memory on one node; at most {} free on any node of {pools}",
                format_memory(need.memory),
                format_memory(max_free.memory)
            ));
        }
        let room = self.nodes.iter().any(|n| need.fits_in(&n.free()));
        if room {
            return Some(format!(
                "every node of {pools} with room already runs its limit of {tier} jobs"
            ));
        }
        Some(format!(
            "needs {} on one node; no node of {pools} has all of it free at once",
            need.describe()
        ))
    }

    /// When the job fits only on nodes reserved for another job: which job.
    fn reserved_phrase(&self, job: &Waiting, now: i64) -> Option<String> {
        let fitting: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].fits_now(&job.tier, &job.resources))
            .collect();
        if fitting.iter().any(|i| self.reservation_allows(*i, job)) {
            return None;
        }
        let blocking = self
            .reservations
            .values()
            .find(|r| fitting.contains(&r.node) && r.job != job.id)?;
        Some(format!(
            "capacity is reserved for job {} ({}, waiting {})",
            blocking.job,
            blocking.tier,
            human_duration(now - blocking.waiting_since)
        ))
    }

    /// Start times of the first jobs of `tier` (see the module documentation).
    fn simulate_starts(
        &self,
        tier: &str,
        ranked: &[(&Waiting, RankKey)],
        now: i64,
    ) -> HashMap<JobId, i64> {
        let mut free: Vec<(Resources, u32)> = self
            .nodes
            .iter()
            .map(|n| {
                let running = n.tier_running.get(tier).copied().unwrap_or(0);
                let slots = n
                    .node
                    .tier_limits
                    .get(tier)
                    .map_or(u32::MAX, |l| l.saturating_sub(running));
                (n.free(), slots)
            })
            .collect();
        // (time, node, resources, same tier) of every known release, earliest first.
        let mut releases: Vec<(i64, usize, Resources, bool)> = self
            .running
            .values()
            .filter_map(|r| Some((r.deadline?, r.node?, r.resources, r.tier == tier)))
            .collect();
        releases.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut starts = HashMap::new();
        let mut clock = now;
        for (job, _) in ranked.iter().take(ESTIMATE_DEPTH) {
            let placed = loop {
                let fit = free
                    .iter()
                    .position(|(room, slots)| job.resources.fits_in(room) && *slots > 0);
                if let Some(node) = fit {
                    break Some(node);
                }
                let Some((time, node, resources, same)) = releases.pop() else {
                    break None;
                };
                clock = clock.max(time);
                if let Some((room, slots)) = free.get_mut(node) {
                    *room = room.plus(&resources);
                    if same {
                        *slots = slots.saturating_add(1);
                    }
                }
            };
            let Some(node) = placed else {
                break;
            };
            starts.insert(job.id.clone(), clock);
            if let Some((room, slots)) = free.get_mut(node) {
                *room = room.minus(&job.resources);
                *slots = slots.saturating_sub(1);
            }
            if let Some(end) = job
                .timeout_secs
                .and_then(|t| i64::try_from(t).ok())
                .map(|t| clock.saturating_add(t))
            {
                let at = releases.partition_point(|r| r.0 > end);
                releases.insert(at, (end, node, job.resources, true));
            }
        }
        starts
    }
}

fn max_each(a: &Resources, b: &Resources) -> Resources {
    Resources {
        millicpus: a.millicpus.max(b.millicpus),
        memory: a.memory.max(b.memory),
        gpus: a.gpus.max(b.gpus),
    }
}

/// The job is bigger than any node, or its tier is allowed on none.
fn never_fits(tier: &str, need: &Resources, largest: &Resources, pools: &str) -> String {
    if need.gpus > largest.gpus {
        let has = match largest.gpus {
            0 => "has any GPU".to_string(),
            n => format!("has more than {n}"),
        };
        return format!(
            "needs {} on one node; no node of {pools} {has}",
            gpus_phrase(need.gpus)
        );
    }
    if need.millicpus > largest.millicpus {
        return format!(
            "needs {} on one node; no node of {pools} has more than {}",
            cpus_phrase(need.millicpus),
            format_cpus(largest.millicpus)
        );
    }
    if need.memory > largest.memory {
        return format!(
            "needs {} of memory on one node; no node of {pools} has more than {}",
            format_memory(need.memory),
            format_memory(largest.memory)
        );
    }
    format!("tier {tier} may not run on any node of {pools} (tier_limits)")
}

/// "2 jobs ahead with higher priority; 1 job ahead at the same priority".
fn ahead_phrase(job: &Waiting, ranking: &TierRanking, position: usize) -> Vec<String> {
    let ahead = position.saturating_sub(1);
    let higher = ranking.order[..ahead.min(ranking.order.len())]
        .iter()
        .filter(|(_, key)| key.priority > job.priority)
        .count();
    let same = ahead - higher;
    let mut parts = Vec::new();
    if higher > 0 {
        parts.push(format!(
            "{} ahead with higher priority",
            plural(higher, "job", "jobs")
        ));
    }
    if same > 0 {
        parts.push(format!(
            "{} ahead at the same priority",
            plural(same, "job", "jobs")
        ));
    }
    parts
}

fn describe_outcome(outcome: &Outcome) -> String {
    if outcome.oom_killed {
        return "an out-of-memory kill".into();
    }
    match (outcome.exit_code, outcome.signal) {
        (_, Some(signal)) => format!("signal {signal}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "an unknown ending".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_words() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3900), "1h 5m");
        assert_eq!(human_duration(7200), "2h");
        assert_eq!(human_duration(2 * 86_400 + 3 * 3600), "2d 3h");
    }

    #[test]
    fn outcomes_are_described() {
        let oom = Outcome {
            oom_killed: true,
            ..Outcome::default()
        };
        assert_eq!(describe_outcome(&oom), "an out-of-memory kill");
        let code = Outcome {
            exit_code: Some(3),
            ..Outcome::default()
        };
        assert_eq!(describe_outcome(&code), "exit code 3");
    }
}

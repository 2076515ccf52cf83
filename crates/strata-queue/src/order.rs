//! The order of waiting jobs: priority first (higher first), then fair share (the account
//! with less usage first; accounts are (queue, user), see [`crate::fairshare`]), then
//! submission time, then submission order.
//!
//! Jobs wait per tier, per priority, per account in FIFO buckets (a B-tree by submission
//! time). Within a bucket priority and account are equal, so the bucket's first job is its
//! best; the best job of a tier is the best of the bucket heads at the highest priority that
//! has an eligible one (eligibility is judged by queue: a queue at its running limit). Each
//! bucket keeps its first job's key inline, so picking the best costs O(accounts at that
//! priority) without touching any job or tree; inserting or removing a job costs O(log n).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};

use crate::fairshare::AccountId;
use crate::job::{JobId, JobState};
use crate::tier::Resources;

/// A job waiting for capacity, as the scheduler keeps it in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub id: JobId,
    pub seq: i64,
    pub tier: String,
    pub queue: String,
    pub user: String,
    pub account: AccountId,
    pub priority: i64,
    pub submitted_at: i64,
    /// Waiting for capacity since.
    pub ready_at: i64,
    pub resources: Resources,
    pub timeout_secs: Option<u64>,
    /// Ready, or Retrying with its not-before time passed.
    pub state: JobState,
}

/// Where a job stands: compare two keys to know which goes first (smaller first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankKey {
    pub priority: i64,
    pub usage: f64,
    pub submitted_at: i64,
    pub seq: i64,
}

impl RankKey {
    pub fn of(job: &Waiting, usage: f64) -> RankKey {
        RankKey {
            priority: job.priority,
            usage,
            submitted_at: job.submitted_at,
            seq: job.seq,
        }
    }
}

impl Eq for RankKey {}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| self.usage.total_cmp(&other.usage))
            .then_with(|| self.submitted_at.cmp(&other.submitted_at))
            .then_with(|| self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The jobs of one account at one priority in one tier, oldest first. The first job's key
/// is kept beside the tree so that comparing bucket heads reads no tree and no job.
#[derive(Clone, Debug)]
struct Bucket {
    queue: String,
    head: (i64, i64),
    head_id: JobId,
    jobs: BTreeMap<(i64, i64), JobId>,
}

impl Bucket {
    fn refresh_head(&mut self) {
        if let Some((key, id)) = self.jobs.first_key_value() {
            self.head = *key;
            self.head_id = id.clone();
        }
    }
}

#[derive(Clone, Debug, Default)]
struct TierQueue {
    levels: BTreeMap<Reverse<i64>, HashMap<AccountId, Bucket>>,
}

/// Every waiting job, by tier.
#[derive(Clone, Debug, Default)]
pub struct WaitingJobs {
    tiers: BTreeMap<String, TierQueue>,
    jobs: HashMap<JobId, Waiting>,
}

impl WaitingJobs {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn get(&self, id: &JobId) -> Option<&Waiting> {
        self.jobs.get(id)
    }

    /// Tiers that have waiting jobs.
    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.tiers.keys().map(String::as_str)
    }

    /// Adds (or replaces) a waiting job.
    pub fn insert(&mut self, job: Waiting) {
        self.remove(&job.id);
        let key = (job.submitted_at, job.seq);
        let bucket = self
            .tiers
            .entry(job.tier.clone())
            .or_default()
            .levels
            .entry(Reverse(job.priority))
            .or_default()
            .entry(job.account)
            .or_insert_with(|| Bucket {
                queue: job.queue.clone(),
                head: key,
                head_id: job.id.clone(),
                jobs: BTreeMap::new(),
            });
        bucket.jobs.insert(key, job.id.clone());
        if key <= bucket.head {
            bucket.head = key;
            bucket.head_id = job.id.clone();
        }
        self.jobs.insert(job.id.clone(), job);
    }

    /// Takes a job out (it started, or was cancelled).
    pub fn remove(&mut self, id: &JobId) -> Option<Waiting> {
        let job = self.jobs.remove(id)?;
        let Some(tier) = self.tiers.get_mut(&job.tier) else {
            return Some(job);
        };
        let level_key = Reverse(job.priority);
        if let Some(level) = tier.levels.get_mut(&level_key) {
            if let Some(bucket) = level.get_mut(&job.account) {
                let key = (job.submitted_at, job.seq);
                bucket.jobs.remove(&key);
                if bucket.jobs.is_empty() {
                    level.remove(&job.account);
                } else if bucket.head == key {
                    bucket.refresh_head();
                }
            }
            if level.is_empty() {
                tier.levels.remove(&level_key);
            }
        }
        if tier.levels.is_empty() {
            self.tiers.remove(&job.tier);
        }
        Some(job)
    }

    /// The best job of `tier` whose queue `eligible` accepts, and its key.
    pub fn best(
        &self,
        tier: &str,
        usage: impl Fn(AccountId) -> f64,
        eligible: impl Fn(&str) -> bool,
    ) -> Option<(&Waiting, RankKey)> {
        let queue = self.tiers.get(tier)?;
        for (Reverse(priority), level) in &queue.levels {
            let best = level
                .iter()
                .filter(|(_, bucket)| eligible(&bucket.queue))
                .map(|(account, bucket)| {
                    let key = RankKey {
                        priority: *priority,
                        usage: usage(*account),
                        submitted_at: bucket.head.0,
                        seq: bucket.head.1,
                    };
                    (&bucket.head_id, key)
                })
                .min_by(|a, b| a.1.cmp(&b.1));
            if let Some((id, key)) = best {
                return self.jobs.get(id).map(|job| (job, key));
            }
        }
        None
    }

    /// All jobs of `tier`, best first (for explanations; O(n log n)).
    pub fn ranked(&self, tier: &str, usage: impl Fn(AccountId) -> f64) -> Vec<(&Waiting, RankKey)> {
        let Some(queue) = self.tiers.get(tier) else {
            return Vec::new();
        };
        let mut all: Vec<(&Waiting, RankKey)> = queue
            .levels
            .values()
            .flat_map(|level| level.values())
            .flat_map(|bucket| bucket.jobs.values())
            .filter_map(|id| self.jobs.get(id))
            .map(|job| (job, RankKey::of(job, usage(job.account))))
            .collect();
        all.sort_by_key(|a| a.1);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: i64, priority: i64, account: AccountId, submitted_at: i64) -> Waiting {
        Waiting {
            id: JobId::generate().unwrap(),
            seq,
            tier: "cpu".into(),
            queue: format!("q{account}"),
            user: format!("u{account}"),
            account,
            priority,
            submitted_at,
            ready_at: submitted_at,
            resources: Resources::default(),
            timeout_secs: None,
            state: JobState::Ready,
        }
    }

    #[test]
    fn priority_then_usage_then_submission() {
        let mut waiting = WaitingJobs::default();
        let jobs = [
            job(1, 0, 0, 10),
            job(2, 5, 1, 20),
            job(3, 5, 0, 30),
            job(4, 0, 1, 5),
        ];
        for j in &jobs {
            waiting.insert(j.clone());
        }
        // Account 0 used more than account 1.
        let usage = |a: AccountId| if a == 0 { 100.0 } else { 1.0 };
        let order: Vec<i64> = waiting
            .ranked("cpu", usage)
            .iter()
            .map(|(j, _)| j.seq)
            .collect();
        assert_eq!(order, [2, 3, 4, 1]);
        assert_eq!(waiting.best("cpu", usage, |_| true).unwrap().0.seq, 2);
        // Account 1 not eligible (say its queue is full): the best of the rest.
        let best = waiting.best("cpu", usage, |q| q != "q1").unwrap();
        assert_eq!(best.0.seq, 3);
        waiting.remove(&jobs[1].id);
        waiting.remove(&jobs[2].id);
        assert_eq!(waiting.best("cpu", usage, |_| true).unwrap().0.seq, 4);
        assert_eq!(waiting.len(), 2);
        waiting.remove(&jobs[0].id);
        waiting.remove(&jobs[3].id);
        assert!(waiting.is_empty());
        assert_eq!(waiting.tiers().count(), 0);
    }
}

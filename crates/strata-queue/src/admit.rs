//! Admission: which waiting jobs start now, on which node, with which GPUs.
//!
//! Each round ([`Scheduler::next_admissions`]) repeatedly takes the best-ranked waiting job
//! among the tiers' first jobs (see [`crate::order`]) and places it on one node where its
//! tier's CPUs, memory and GPUs are all free (8 GPUs free as 4 + 4 on two nodes do not fit
//! an 8-GPU job) and the node's per-tier limit allows. When a tier's first job does not fit,
//! that tier is done for the round, and the others go on: a job that cannot fit never blocks
//! another tier. Among the nodes that fit, the one left with the fewest free GPUs, then CPUs,
//! is taken (best fit), which keeps whole GPU nodes free for big jobs.
//!
//! **Starvation: reservation, not ageing.** Ageing raises a waiting job's rank, but rank is not
//! what a big job lacks: a gpu8 job of infinite priority still needs 8 GPUs free *at once on
//! one node*, and as long as every GPU freed by a finishing gpu1 job is taken by the next
//! gpu1 job (which other tiers are allowed to do), that moment never comes. So when a tier's
//! first job has waited longer than `reserve_after` (default 60 s) without fitting, it
//! reserves one node: the one where it would fit soonest by the time limits of the jobs
//! running there (else the one missing the least). From then on, nothing of lower or equal
//! priority starts on that node unless it would still leave room for the reserved job once
//! everything else there is gone (`new + reserved + started since the reservation ≤
//! capacity`). The node drains, the big job starts on it, the reservation ends. At most one
//! reservation per tier, at most one per node; jobs of strictly higher priority ignore it
//! (priority comes first). Reservations are stored so `strata jobs` can explain them.
//!
//! Capacity is derived from the running jobs (their node, resources and GPU indices), never
//! from counters kept apart from them: the moment a job leaves Running, for whatever reason
//! (finished, cancelled, timed out), its capacity is free for the next round.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::fairshare::{AccountId, FairShare};
use crate::job::{Job, JobId, JobState};
use crate::jobstore::{Change, JobFilter, JobStore, StoreError, StoredReservation};
use crate::order::{RankKey, Waiting, WaitingJobs};
use crate::pool::Node;
use crate::tier::Resources;

/// A decision: start this job on this node with these GPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Admission {
    pub job_id: JobId,
    pub pool: String,
    pub node: String,
    /// GPU indices on the node, ascending.
    pub gpus: Vec<u32>,
    /// The state it starts from (Ready, or Retrying after its backoff).
    pub from: JobState,
}

/// What admission rounds decided since the scheduler was made: each time a tier's best job
/// was looked at, it was either admitted (placed on a node) or refused (it fits nowhere
/// now, and its tier is done for the round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub admitted: u64,
    pub refused: u64,
}

impl Decisions {
    pub fn total(&self) -> u64 {
        self.admitted + self.refused
    }
}

/// A node and what runs on it.
#[derive(Clone, Debug)]
pub(crate) struct NodeState {
    pub(crate) node: Node,
    pub(crate) used: Resources,
    pub(crate) gpus_used: u64,
    pub(crate) tier_running: HashMap<String, u32>,
    /// The running jobs placed here.
    pub(crate) jobs: HashSet<JobId>,
}

impl NodeState {
    fn new(node: Node) -> NodeState {
        NodeState {
            node,
            used: Resources::default(),
            gpus_used: 0,
            tier_running: HashMap::new(),
            jobs: HashSet::new(),
        }
    }

    pub(crate) fn free(&self) -> Resources {
        self.node.capacity.minus(&self.used)
    }

    fn tier_limit(&self, tier: &str) -> Option<u32> {
        self.node.tier_limits.get(tier).copied()
    }

    fn tier_slots_left(&self, tier: &str) -> u32 {
        let running = self.tier_running.get(tier).copied().unwrap_or(0);
        self.tier_limit(tier)
            .map_or(u32::MAX, |limit| limit.saturating_sub(running))
    }

    /// Whether a job of this size could ever run here (empty node).
    pub(crate) fn could_hold(&self, tier: &str, need: &Resources) -> bool {
        need.fits_in(&self.node.capacity) && self.tier_limit(tier) != Some(0)
    }

    pub(crate) fn fits_now(&self, tier: &str, need: &Resources) -> bool {
        need.fits_in(&self.free()) && self.tier_slots_left(tier) > 0
    }

    /// The lowest `n` free GPU indices.
    fn pick_gpus(&self, n: u32) -> Vec<u32> {
        (0..self.node.capacity.gpus)
            .filter(|i| self.gpus_used & (1u64 << i) == 0)
            .take(n as usize)
            .collect()
    }

    fn gpu_mask(gpus: &[u32]) -> u64 {
        gpus.iter()
            .filter(|i| **i < 64)
            .fold(0, |mask, i| mask | (1u64 << i))
    }
}

/// A job holding capacity.
#[derive(Clone, Debug)]
pub(crate) struct RunningJob {
    pub(crate) tier: String,
    pub(crate) queue: String,
    pub(crate) account: AccountId,
    pub(crate) resources: Resources,
    pub(crate) node: Option<usize>,
    pub(crate) gpus: Vec<u32>,
    pub(crate) started_at: i64,
    pub(crate) deadline: Option<i64>,
}

/// One tier as a team sees the cluster: how big its jobs are, how many nodes could ever run
/// one, and how many more could start now on the free capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCapacity {
    pub tier: String,
    pub resources: Resources,
    pub nodes: usize,
    pub free: u64,
}

impl NodeState {
    /// How many more jobs of this size fit here now (each dimension, and the tier's limit).
    fn room_for(&self, tier: &str, need: &Resources) -> u64 {
        if !self.could_hold(tier, need) {
            return 0;
        }
        let free = self.free();
        let per = |have: u64, want: u64| (want > 0).then(|| have / want);
        [
            per(free.millicpus, need.millicpus),
            per(free.memory, need.memory),
            per(u64::from(free.gpus), u64::from(need.gpus)),
        ]
        .into_iter()
        .flatten()
        .chain([u64::from(self.tier_slots_left(tier))])
        .min()
        .unwrap_or(0)
    }
}

/// A node held for the first job of a tier.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub tier: String,
    pub job: JobId,
    pub node: usize,
    pub since: i64,
    pub priority: i64,
    pub resources: Resources,
    /// Waiting for capacity since.
    pub waiting_since: i64,
}

/// The waiting and running jobs in memory, and the decisions taken on them.
pub struct Scheduler {
    pub(crate) config: SchedulerConfig,
    pub(crate) nodes: Vec<NodeState>,
    node_ids: HashMap<(String, String), usize>,
    pub(crate) waiting: WaitingJobs,
    /// Retrying jobs before their not-before time: (not_before, seq) → job.
    delayed: BTreeMap<(i64, i64), Waiting>,
    delayed_keys: HashMap<JobId, (i64, i64)>,
    pub(crate) running: HashMap<JobId, RunningJob>,
    pub(crate) queue_running: HashMap<String, u32>,
    pub(crate) fairshare: FairShare,
    pub(crate) reservations: BTreeMap<String, Reservation>,
    reservations_saved: bool,
    last_event: i64,
    last_usage: i64,
    decisions: Decisions,
}

/// Usage older than this many half-lives is below 0.0001% of its value: not loaded.
const USAGE_HORIZON_HALF_LIVES: i64 = 20;

impl Scheduler {
    /// An empty scheduler over the configured nodes.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let nodes: Vec<NodeState> = config.nodes().cloned().map(NodeState::new).collect();
        let node_ids = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ((n.node.pool.clone(), n.node.name.clone()), i))
            .collect();
        let half_life = config.params.fairshare_half_life.as_secs_f64();
        Scheduler {
            config,
            nodes,
            node_ids,
            waiting: WaitingJobs::default(),
            delayed: BTreeMap::new(),
            delayed_keys: HashMap::new(),
            running: HashMap::new(),
            queue_running: HashMap::new(),
            fairshare: FairShare::new(half_life),
            reservations: BTreeMap::new(),
            reservations_saved: true,
            last_event: 0,
            last_usage: 0,
            decisions: Decisions::default(),
        }
    }

    /// Loads the waiting and running jobs, recent usage and reservations from the store.
    pub fn load(
        store: &JobStore,
        config: SchedulerConfig,
        now: i64,
    ) -> Result<Scheduler, StoreError> {
        let mut scheduler = Scheduler::new(config);
        // Read the event counter first: changes made while loading are applied again by the
        // next sync, which is harmless (applying a job's current row is idempotent).
        let upto = store.last_event()?;
        let filter = JobFilter {
            states: vec![JobState::Ready, JobState::Retrying, JobState::Running],
            ..JobFilter::default()
        };
        for job in store.list(&filter)? {
            scheduler.apply(&job);
        }
        scheduler.last_event = upto;
        let half_life = scheduler.config.params.fairshare_half_life.as_secs() as i64;
        let horizon = now.saturating_sub(half_life.saturating_mul(USAGE_HORIZON_HALF_LIVES));
        scheduler.add_usage(store, horizon)?;
        for stored in store.reservations()? {
            scheduler.restore_reservation(stored);
        }
        Ok(scheduler)
    }

    /// Applies what other processes changed since the last load or sync. Returns how many
    /// jobs changed.
    pub fn sync(&mut self, store: &JobStore) -> Result<usize, StoreError> {
        Ok(self.sync_changed(store)?.len())
    }

    /// [`Scheduler::sync`], returning the jobs that changed, as they are stored now (for a
    /// caller that keeps its own copy of the unfinished jobs).
    pub fn sync_changed(&mut self, store: &JobStore) -> Result<Vec<Job>, StoreError> {
        let (jobs, upto) = store.changed_since(self.last_event)?;
        for job in &jobs {
            self.apply(job);
        }
        self.last_event = upto;
        self.add_usage(store, 0)?;
        Ok(jobs)
    }

    fn add_usage(&mut self, store: &JobStore, since: i64) -> Result<(), StoreError> {
        for record in store.usage_since(self.last_usage, since)? {
            let account = self.fairshare.account(&record.queue, &record.user);
            self.fairshare
                .add(account, record.resource_seconds, record.at);
            self.last_usage = self.last_usage.max(record.seq);
        }
        Ok(())
    }

    fn restore_reservation(&mut self, stored: StoredReservation) {
        let node = self
            .node_ids
            .get(&(stored.pool.clone(), stored.node.clone()))
            .copied();
        let (Some(node), Some(job)) = (node, self.waiting.get(&stored.job)) else {
            // Its node left the pool or its job stopped waiting: the stored row is stale and
            // must go at the next save, or a later load could bring it back.
            self.reservations_saved = false;
            return;
        };
        let reservation = Reservation {
            tier: stored.tier.clone(),
            job: stored.job,
            node,
            since: stored.since,
            priority: job.priority,
            resources: job.resources,
            waiting_since: job.ready_at,
        };
        self.reservations.insert(stored.tier, reservation);
    }

    /// Puts a job where its state says it belongs (waiting, delayed, running or nowhere).
    pub fn apply(&mut self, job: &Job) {
        self.forget(&job.id);
        match job.state {
            JobState::Ready => {
                let waiting = self.waiting_of(job, JobState::Ready);
                self.waiting.insert(waiting);
            }
            JobState::Retrying => {
                let waiting = self.waiting_of(job, JobState::Retrying);
                let key = (job.not_before.unwrap_or(0), job.seq);
                self.delayed_keys.insert(job.id.clone(), key);
                self.delayed.insert(key, waiting);
            }
            JobState::Running => self.add_running(job),
            _ => {}
        }
    }

    fn waiting_of(&mut self, job: &Job, state: JobState) -> Waiting {
        Waiting {
            id: job.id.clone(),
            seq: job.seq,
            tier: job.tier.clone(),
            queue: job.queue.clone(),
            user: job.user.clone(),
            account: self.fairshare.account(&job.queue, &job.user),
            priority: job.priority,
            submitted_at: job.submitted_at,
            ready_at: job.ready_at.unwrap_or(job.submitted_at),
            resources: job.resources,
            timeout_secs: job.timeout_secs,
            state,
        }
    }

    fn add_running(&mut self, job: &Job) {
        let node = match (&job.pool, &job.node) {
            (Some(pool), Some(node)) => self.node_ids.get(&(pool.clone(), node.clone())).copied(),
            _ => None,
        };
        let running = RunningJob {
            tier: job.tier.clone(),
            queue: job.queue.clone(),
            account: self.fairshare.account(&job.queue, &job.user),
            resources: job.resources,
            node,
            gpus: job.gpus.clone(),
            started_at: job.started_at.unwrap_or(job.submitted_at),
            deadline: job.deadline(),
        };
        self.hold(job.id.clone(), running);
    }

    /// Takes capacity for a running job.
    fn hold(&mut self, id: JobId, running: RunningJob) {
        if let Some(state) = running.node.and_then(|n| self.nodes.get_mut(n)) {
            state.used = state.used.plus(&running.resources);
            state.gpus_used |= NodeState::gpu_mask(&running.gpus);
            *state.tier_running.entry(running.tier.clone()).or_default() += 1;
            state.jobs.insert(id.clone());
        }
        *self.queue_running.entry(running.queue.clone()).or_default() += 1;
        self.fairshare.start_run(
            running.account,
            running.resources.charge_rate(),
            running.started_at,
        );
        self.running.insert(id, running);
    }

    /// Forgets a running job: its capacity is free at once. True if it was running.
    pub fn release(&mut self, id: &JobId) -> bool {
        let Some(running) = self.running.remove(id) else {
            return false;
        };
        if let Some(state) = running.node.and_then(|n| self.nodes.get_mut(n)) {
            state.used = state.used.minus(&running.resources);
            state.gpus_used &= !NodeState::gpu_mask(&running.gpus);
            if let Some(count) = state.tier_running.get_mut(&running.tier) {
                *count = count.saturating_sub(1);
            }
            state.jobs.remove(id);
        }
        if let Some(count) = self.queue_running.get_mut(&running.queue) {
            *count = count.saturating_sub(1);
        }
        self.fairshare.end_run(
            running.account,
            running.resources.charge_rate(),
            running.started_at,
        );
        true
    }

    /// Removes a job from wherever it is in memory.
    fn forget(&mut self, id: &JobId) {
        self.waiting.remove(id);
        if let Some(key) = self.delayed_keys.remove(id) {
            self.delayed.remove(&key);
        }
        self.release(id);
    }

    /// How many jobs wait for capacity (retrying ones included).
    /// Every tier with the nodes that could run it and how many more of it fit now.
    pub fn capacity(&self) -> Vec<TierCapacity> {
        self.config
            .tiers
            .iter()
            .map(|(tier, need)| TierCapacity {
                tier: tier.clone(),
                resources: *need,
                nodes: self
                    .nodes
                    .iter()
                    .filter(|n| n.could_hold(tier, need))
                    .count(),
                free: self.nodes.iter().map(|n| n.room_for(tier, need)).sum(),
            })
            .collect()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len() + self.delayed.len()
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// What the rounds so far decided.
    pub fn decisions(&self) -> Decisions {
        self.decisions
    }

    /// The reservations held: (tier, job, pool, node, since).
    pub fn reservations(&self) -> Vec<StoredReservation> {
        self.reservations
            .values()
            .filter_map(|r| {
                let node = &self.nodes.get(r.node)?.node;
                Some(StoredReservation {
                    tier: r.tier.clone(),
                    job: r.job.clone(),
                    pool: node.pool.clone(),
                    node: node.name.clone(),
                    since: r.since,
                })
            })
            .collect()
    }

    /// The account's fair-share usage at `now`.
    pub(crate) fn usage(&self, account: AccountId, now: i64) -> f64 {
        self.fairshare.usage(account, now)
    }

    /// Whether the job's queue may start another job.
    pub(crate) fn queue_has_room(&self, queue: &str) -> bool {
        let Some(limit) = self.config.queues.get(queue).and_then(|q| q.max_running) else {
            return true;
        };
        self.queue_running.get(queue).copied().unwrap_or(0) < limit
    }

    /// Whether the queue has a running limit (admitting from it can change other tiers'
    /// best jobs).
    fn queue_is_limited(&self, queue: &str) -> bool {
        self.config
            .queues
            .get(queue)
            .is_some_and(|q| q.max_running.is_some())
    }

    fn best_in_tier(&self, tier: &str, usage: &[f64]) -> Option<(&Waiting, RankKey)> {
        self.waiting.best(
            tier,
            |account| usage.get(account).copied().unwrap_or(0.0),
            |queue| self.queue_has_room(queue),
        )
    }

    /// The best job of each of these tiers.
    fn heads<'a>(
        &self,
        tiers: impl Iterator<Item = &'a str>,
        usage: &[f64],
    ) -> BTreeMap<String, (RankKey, JobId)> {
        tiers
            .filter_map(|tier| {
                let (job, key) = self.best_in_tier(tier, usage)?;
                Some((tier.to_string(), (key, job.id.clone())))
            })
            .collect()
    }

    /// Decides what starts now, and updates memory as if it had started. The caller moves
    /// each job to Running in the store (see [`Scheduler::admit`], which does).
    ///
    /// The best job of each tier is computed once per round and again only for the tier
    /// that just started one (all tiers when a queue limit was involved): a decision costs
    /// O(tiers + accounts), whatever the number of waiting jobs.
    pub fn next_admissions(&mut self, now: i64) -> Vec<Admission> {
        self.release_due_retries(now);
        let all: Vec<String> = self.waiting.tiers().map(str::to_string).collect();
        // Usage does not change within a round: a run started now has cost nothing yet.
        let usage = self.fairshare.snapshot(now);
        let mut heads = self.heads(all.iter().map(String::as_str), &usage);
        self.refresh_reservations(now, &heads);
        let mut admissions = Vec::new();
        while let Some(tier) = heads
            .iter()
            .min_by(|a, b| (a.1).0.cmp(&(b.1).0))
            .map(|(tier, _)| tier.clone())
        {
            let Some((_, id)) = heads.remove(&tier) else {
                break;
            };
            let Some(job) = self.waiting.get(&id).cloned() else {
                continue;
            };
            // A tier whose best job does not fit is done for the round: not put back.
            let Some((node, gpus)) = self.place(&job) else {
                self.decisions.refused += 1;
                continue;
            };
            let limited = self.queue_is_limited(&job.queue);
            self.decisions.admitted += 1;
            admissions.push(self.start(job, node, gpus, now));
            let mut again: Vec<String> = vec![tier];
            if limited {
                again.extend(heads.keys().cloned());
            }
            let fresh = self.heads(again.iter().map(String::as_str), &usage);
            for tier in &again {
                heads.remove(tier);
            }
            heads.extend(fresh);
        }
        admissions
    }

    /// Runs a round and records it: each admitted job is moved to Running with a
    /// compare-and-set; a job that moved meanwhile (cancelled) is dropped from the result.
    pub fn admit(&mut self, store: &JobStore, now: i64) -> Result<Vec<Admission>, StoreError> {
        self.sync(store)?;
        let mut started = Vec::new();
        for admission in self.next_admissions(now) {
            let change = Change::Start {
                pool: admission.pool.clone(),
                node: admission.node.clone(),
                gpus: admission.gpus.clone(),
            };
            if store.transition(&admission.job_id, admission.from, change, now)? {
                started.push(admission);
            } else {
                self.release(&admission.job_id);
            }
        }
        if !self.reservations_saved {
            store.save_reservations(&self.reservations())?;
            self.reservations_saved = true;
        }
        self.sync(store)?;
        Ok(started)
    }

    fn start(&mut self, job: Waiting, node: usize, gpus: Vec<u32>, now: i64) -> Admission {
        self.waiting.remove(&job.id);
        if self
            .reservations
            .get(&job.tier)
            .is_some_and(|r| r.job == job.id)
        {
            self.reservations.remove(&job.tier);
            self.reservations_saved = false;
        }
        let running = RunningJob {
            tier: job.tier.clone(),
            queue: job.queue.clone(),
            account: job.account,
            resources: job.resources,
            node: Some(node),
            gpus: gpus.clone(),
            started_at: now,
            deadline: job
                .timeout_secs
                .and_then(|t| i64::try_from(t).ok())
                .map(|t| now.saturating_add(t)),
        };
        self.hold(job.id.clone(), running);
        let node = &self.nodes[node].node;
        Admission {
            job_id: job.id,
            pool: node.pool.clone(),
            node: node.name.clone(),
            gpus,
            from: job.state,
        }
    }

    fn release_due_retries(&mut self, now: i64) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.delayed_keys.remove(&job.id);
            self.waiting.insert(job);
        }
    }

    /// The node for `job`: among those where it fits now and no reservation forbids it, the
    /// one left with the fewest free GPUs, then CPUs, then memory.
    fn place(&self, job: &Waiting) -> Option<(usize, Vec<u32>)> {
        let best = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.fits_now(&job.tier, &job.resources))
            .filter(|(i, _)| self.reservation_allows(*i, job))
            .min_by_key(|(i, n)| {
                let left = n.free().minus(&job.resources);
                (left.gpus, left.millicpus, left.memory, *i)
            })?;
        Some((best.0, best.1.pick_gpus(job.resources.gpus)))
    }

    /// Whether the reservations on node `index` let `job` start there.
    pub(crate) fn reservation_allows(&self, index: usize, job: &Waiting) -> bool {
        self.reservations
            .values()
            .filter(|r| r.node == index && r.job != job.id)
            .all(|r| job.priority > r.priority || self.leaves_room(r, &job.resources))
    }

    /// `extra` plus the reserved job plus whatever started on the node since the
    /// reservation still fit the node: `extra` does not delay the reserved job.
    fn leaves_room(&self, reservation: &Reservation, extra: &Resources) -> bool {
        let Some(node) = self.nodes.get(reservation.node) else {
            return true;
        };
        let since = node
            .jobs
            .iter()
            .filter_map(|id| self.running.get(id))
            .filter(|r| r.started_at >= reservation.since)
            .fold(Resources::default(), |sum, r| sum.plus(&r.resources));
        extra
            .plus(&reservation.resources)
            .plus(&since)
            .fits_in(&node.node.capacity)
    }

    /// Whether a job of this size fits on some node right now (reservations aside).
    pub(crate) fn fits_now_anywhere(&self, tier: &str, need: &Resources) -> bool {
        self.nodes.iter().any(|n| n.fits_now(tier, need))
    }

    /// The earliest time a job of this size fits on node `index`, from the time limits of
    /// the jobs running there (None: it depends on a job without a time limit, or never).
    pub(crate) fn earliest_fit(
        &self,
        index: usize,
        tier: &str,
        need: &Resources,
        now: i64,
    ) -> Option<i64> {
        let state = self.nodes.get(index)?;
        if !state.could_hold(tier, need) {
            return None;
        }
        if state.fits_now(tier, need) {
            return Some(now);
        }
        let mut ends: Vec<(i64, &RunningJob)> = state
            .jobs
            .iter()
            .filter_map(|id| self.running.get(id))
            .filter_map(|r| r.deadline.map(|d| (d, r)))
            .collect();
        ends.sort_by_key(|(deadline, _)| *deadline);
        let mut free = state.free();
        let mut slots = state.tier_slots_left(tier);
        for (deadline, job) in ends {
            free = free.plus(&job.resources);
            if job.tier == tier {
                slots = slots.saturating_add(1);
            }
            if need.fits_in(&free) && slots > 0 {
                return Some(deadline.max(now));
            }
        }
        None
    }

    /// Gives the first job of each tier that has waited `reserve_after` without fitting a
    /// node to drain (keeping the node it already has while that node can still hold it).
    fn refresh_reservations(&mut self, now: i64, heads: &BTreeMap<String, (RankKey, JobId)>) {
        let reserve_after = self.config.params.reserve_after.as_secs() as i64;
        let mut heads: Vec<(RankKey, &Waiting)> = heads
            .values()
            .filter_map(|(key, id)| Some((*key, self.waiting.get(id)?)))
            .collect();
        // The longest waiting choose first.
        heads.sort_by(|a, b| a.1.ready_at.cmp(&b.1.ready_at).then(a.0.cmp(&b.0)));
        let mut kept: BTreeMap<String, Reservation> = BTreeMap::new();
        for (_, head) in heads {
            let held = self
                .reservations
                .get(&head.tier)
                .filter(|r| r.job == head.id);
            let taken: HashSet<usize> = kept.values().map(|r| r.node).collect();
            if let Some(r) = held {
                let node_ok = self
                    .nodes
                    .get(r.node)
                    .is_some_and(|n| n.could_hold(&head.tier, &head.resources));
                if node_ok && !taken.contains(&r.node) {
                    kept.insert(head.tier.clone(), r.clone());
                    continue;
                }
            }
            if self.fits_now_anywhere(&head.tier, &head.resources)
                || now - head.ready_at < reserve_after
            {
                continue;
            }
            if let Some(node) = self.node_to_reserve(head, &taken, now) {
                let reservation = Reservation {
                    tier: head.tier.clone(),
                    job: head.id.clone(),
                    node,
                    since: now,
                    priority: head.priority,
                    resources: head.resources,
                    waiting_since: head.ready_at,
                };
                kept.insert(head.tier.clone(), reservation);
            }
        }
        if kept != self.reservations {
            self.reservations = kept;
            self.reservations_saved = false;
        }
    }

    /// The node where `job` would fit soonest by the known time limits; without any, the
    /// one missing the fewest GPUs, then CPUs, then memory.
    fn node_to_reserve(&self, job: &Waiting, taken: &HashSet<usize>, now: i64) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| !taken.contains(i) && n.could_hold(&job.tier, &job.resources))
            .min_by_key(|(i, n)| {
                let eta = self
                    .earliest_fit(*i, &job.tier, &job.resources, now)
                    .unwrap_or(i64::MAX);
                let missing = job.resources.minus(&n.free());
                (eta, missing.gpus, missing.millicpus, missing.memory, *i)
            })
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;
    use std::collections::BTreeMap as Map;

    fn config(gpus_per_node: &[u32]) -> SchedulerConfig {
        let nodes = gpus_per_node
            .iter()
            .enumerate()
            .map(|(i, g)| Node {
                pool: "local".into(),
                name: format!("n{i}"),
                capacity: Resources::new(64.0, 1 << 40, *g),
                tier_limits: Map::new(),
            })
            .collect();
        SchedulerConfig {
            pools: vec![Pool {
                name: "local".into(),
                nodes,
            }],
            ..SchedulerConfig::default()
        }
    }

    fn job(seq: i64, tier: &str, config: &SchedulerConfig) -> Job {
        Job {
            id: JobId::generate().unwrap(),
            seq,
            queue: "default".into(),
            tier: tier.into(),
            user: "ana".into(),
            priority: 0,
            name: None,
            environment: crate::job::Environment::Image {
                reference: "x".into(),
            },
            image_digest: None,
            command: vec!["true".into()],
            env: Map::new(),
            working_dir: None,
            outputs: vec![],
            timeout_secs: None,
            resources: config.tiers[tier],
            network: false,
            retries: 0,
            retry_exit_codes: vec![],
            retry_on_oom: false,
            retry_backoff_secs: 30,
            attempt: 1,
            state: JobState::Ready,
            not_before: None,
            outcome: Default::default(),
            pool: None,
            node: None,
            gpus: vec![],
            container_id: None,
            kube_uid: None,
            submitted_at: seq,
            ready_at: Some(seq),
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            code: None,
        }
    }

    #[test]
    fn gpus_must_be_free_on_one_node() {
        let config = config(&[4, 4]);
        let mut scheduler = Scheduler::new(config.clone());
        let big = job(1, "gpu8", &config);
        scheduler.apply(&big);
        assert!(scheduler.next_admissions(100).is_empty(), "4 + 4 is not 8");
        let small = job(2, "gpu2", &config);
        scheduler.apply(&small);
        let admitted = scheduler.next_admissions(100);
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].job_id, small.id);
        assert_eq!(admitted[0].gpus, [0, 1]);
        let next = job(3, "gpu2", &config);
        scheduler.apply(&next);
        let admitted = scheduler.next_admissions(100);
        assert_eq!(
            (admitted[0].node.as_str(), admitted[0].gpus.as_slice()),
            ("n0", &[2u32, 3][..]),
            "best fit fills the node already in use"
        );
    }

    #[test]
    fn decisions_count_admitted_and_refused_jobs_only() {
        let config = config(&[1]);
        let mut scheduler = Scheduler::new(config.clone());
        assert!(scheduler.next_admissions(0).is_empty());
        assert_eq!(
            scheduler.decisions(),
            Decisions::default(),
            "nothing to decide"
        );
        scheduler.apply(&job(1, "gpu1", &config));
        scheduler.apply(&job(2, "gpu1", &config));
        scheduler.apply(&job(3, "gpu2", &config));
        assert_eq!(scheduler.next_admissions(1).len(), 1);
        // gpu1: one admitted, then the second refused; gpu2: refused (never fits).
        let expected = Decisions {
            admitted: 1,
            refused: 2,
        };
        assert_eq!(scheduler.decisions(), expected);
        assert_eq!(scheduler.decisions().total(), 3);
    }

    #[test]
    fn capacity_counts_what_fits_now_on_each_node() {
        let config = config(&[4, 4]);
        let mut scheduler = Scheduler::new(config.clone());
        let free = |s: &Scheduler| -> Vec<(String, usize, u64)> {
            s.capacity()
                .into_iter()
                .map(|t| (t.tier, t.nodes, t.free))
                .collect()
        };
        let row = |t: &str, n: usize, f: u64| (t.to_string(), n, f);
        // 64 CPUs and 4 GPUs a node: CPUs bound cpu jobs, GPUs the others; 8 GPUs fit on none.
        assert_eq!(
            free(&scheduler),
            [
                row("cpu", 2, 64),
                row("gpu1", 2, 8),
                row("gpu2", 2, 4),
                row("gpu8", 0, 0)
            ]
        );
        scheduler.apply(&job(1, "gpu2", &config));
        assert_eq!(scheduler.next_admissions(1).len(), 1);
        assert_eq!(
            free(&scheduler),
            [
                row("cpu", 2, 24 + 32),
                row("gpu1", 2, 2 + 4),
                row("gpu2", 2, 1 + 2),
                row("gpu8", 0, 0)
            ]
        );
    }

    #[test]
    fn releasing_frees_capacity_at_once() {
        let config = config(&[1]);
        let mut scheduler = Scheduler::new(config.clone());
        let a = job(1, "gpu1", &config);
        let b = job(2, "gpu1", &config);
        scheduler.apply(&a);
        scheduler.apply(&b);
        assert_eq!(scheduler.next_admissions(0)[0].job_id, a.id);
        assert!(scheduler.next_admissions(1).is_empty());
        assert!(scheduler.release(&a.id));
        assert_eq!(scheduler.next_admissions(2)[0].job_id, b.id);
    }
}

//! Fair share between the users of a queue: a user's usage is what their runs cost
//! (seconds × the tier's [`charge_rate`](crate::tier::Resources::charge_rate)), halved every
//! half-life (default 24 h). Among jobs of equal priority, the user with less usage in the
//! queue goes first.
//!
//! Each account (queue, user) keeps its finished usage as one number decayed to a reference
//! time, plus the runs in progress: their cost so far is `Σ rate × (now − start)`, kept as
//! two sums so that reading an account's usage costs O(1) whatever it runs. Runs in progress
//! are counted undecayed until they end (they are recent by definition).

use std::collections::HashMap;

/// An interned (queue, user): cheap to copy and compare.
pub type AccountId = usize;

#[derive(Clone, Debug, Default)]
struct Account {
    /// Finished usage, decayed to `as_of`.
    decayed: f64,
    as_of: i64,
    /// Σ rate and Σ rate × start of runs in progress.
    running_rate: f64,
    running_rate_start: f64,
}

/// Usage per account.
#[derive(Clone, Debug)]
pub struct FairShare {
    half_life_secs: f64,
    ids: HashMap<(String, String), AccountId>,
    names: Vec<(String, String)>,
    accounts: Vec<Account>,
}

/// `value` after `seconds` of decay with this half-life.
pub fn decay(value: f64, seconds: i64, half_life_secs: f64) -> f64 {
    if seconds <= 0 {
        return value;
    }
    value * 0.5f64.powf(seconds as f64 / half_life_secs)
}

impl FairShare {
    pub fn new(half_life_secs: f64) -> FairShare {
        FairShare {
            half_life_secs: half_life_secs.max(1.0),
            ids: HashMap::new(),
            names: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// The id of (queue, user), created on first use.
    pub fn account(&mut self, queue: &str, user: &str) -> AccountId {
        let key = (queue.to_string(), user.to_string());
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.accounts.len();
        self.ids.insert(key.clone(), id);
        self.names.push(key);
        self.accounts.push(Account::default());
        id
    }

    /// (queue, user) of an account.
    #[cfg(test)]
    pub fn name(&self, id: AccountId) -> Option<(&str, &str)> {
        self.names.get(id).map(|(q, u)| (q.as_str(), u.as_str()))
    }

    /// Adds a finished run's cost, charged at time `at`.
    pub fn add(&mut self, id: AccountId, resource_seconds: f64, at: i64) {
        let half_life = self.half_life_secs;
        let Some(account) = self.accounts.get_mut(id) else {
            return;
        };
        if at >= account.as_of {
            account.decayed = decay(account.decayed, at - account.as_of, half_life);
            account.decayed += resource_seconds;
            account.as_of = at;
        } else {
            account.decayed += decay(resource_seconds, account.as_of - at, half_life);
        }
    }

    /// A run of `rate` per second started at `start`.
    pub fn start_run(&mut self, id: AccountId, rate: f64, start: i64) {
        if let Some(account) = self.accounts.get_mut(id) {
            account.running_rate += rate;
            account.running_rate_start += rate * start as f64;
        }
    }

    /// The run started with [`start_run`](Self::start_run) ended (its cost comes back
    /// through [`add`](Self::add) from the usage records).
    pub fn end_run(&mut self, id: AccountId, rate: f64, start: i64) {
        if let Some(account) = self.accounts.get_mut(id) {
            account.running_rate -= rate;
            account.running_rate_start -= rate * start as f64;
            if account.running_rate.abs() < 1e-9 {
                account.running_rate = 0.0;
                account.running_rate_start = 0.0;
            }
        }
    }

    /// Every account's usage at `now`, indexed by account (one decay per account per round
    /// instead of one per comparison).
    pub fn snapshot(&self, now: i64) -> Vec<f64> {
        (0..self.accounts.len())
            .map(|id| self.usage(id, now))
            .collect()
    }

    /// The account's usage at `now`: finished runs decayed, plus runs in progress so far.
    pub fn usage(&self, id: AccountId, now: i64) -> f64 {
        let Some(account) = self.accounts.get(id) else {
            return 0.0;
        };
        let finished = decay(account.decayed, now - account.as_of, self.half_life_secs);
        let running = account.running_rate * now as f64 - account.running_rate_start;
        finished + running.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_halves_every_half_life() {
        let mut share = FairShare::new(100.0);
        let a = share.account("q", "ana");
        share.add(a, 80.0, 0);
        assert!((share.usage(a, 100) - 40.0).abs() < 1e-9);
        assert!((share.usage(a, 200) - 20.0).abs() < 1e-9);
        // A record older than the account's reference time is decayed on the way in.
        share.add(a, 80.0, 0);
        assert!((share.usage(a, 100) - 80.0).abs() < 1e-9);
    }

    #[test]
    fn runs_in_progress_count_until_they_end() {
        let mut share = FairShare::new(3600.0);
        let b = share.account("q", "bo");
        assert_eq!(share.account("q", "bo"), b);
        share.start_run(b, 2.0, 10);
        assert_eq!(share.usage(b, 20), 20.0);
        share.end_run(b, 2.0, 10);
        assert_eq!(share.usage(b, 20), 0.0);
        assert_eq!(share.name(b), Some(("q", "bo")));
    }
}

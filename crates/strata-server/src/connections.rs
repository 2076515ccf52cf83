//! Connections kept between requests. Opening a `Client` reads the configuration, opens the
//! store and runs each component's migration check in a write transaction; doing that per
//! request would take `strata.db`'s write lock several times for every read, against the
//! agent. Idle clients are reused for a few seconds only, so a change of `strata.toml` or of
//! the pools the agent publishes is seen soon after.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_agent::Client;
use strata_db::tokens::Tokens;
use strata_queue::JobView;

use crate::error::ApiError;

/// How long an opened client is reused.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Idle connections kept, of each kind.
const KEEP: usize = 32;
/// How old the kept views of the queue may be when a status answers from them.
const VIEWS_FRESH: Duration = Duration::from_millis(250);
/// A job missing from the kept views makes them be computed again, at most this often.
const VIEWS_MIN_AGE: Duration = Duration::from_millis(25);

/// The views (position, reason) of every unfinished job, by job id, and when they were made.
type Views = (Instant, Arc<HashMap<String, JobView>>);

pub struct Connections {
    root: PathBuf,
    project: PathBuf,
    clients: Mutex<Vec<(Instant, Client)>>,
    tokens: Mutex<Vec<Tokens>>,
    /// Held by each submit: the server's writers queue here, in order, rather than in
    /// SQLite's busy handler, whose sleeps grow while others hold the write lock (a submit
    /// under load waited seconds there).
    writes: Mutex<()>,
    /// Ranking a tier's queue is the cost of a status; under many callers it is done once
    /// per [`VIEWS_FRESH`] for all of them.
    views: Mutex<KeptViews>,
}

#[derive(Default)]
struct KeptViews {
    views: Option<Views>,
    /// A request is computing them again.
    refreshing: bool,
}

impl Connections {
    pub fn new(root: PathBuf, project: PathBuf) -> Connections {
        Connections {
            root,
            project,
            clients: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            writes: Mutex::new(()),
            views: Mutex::new(KeptViews::default()),
        }
    }

    /// A fresh client, with when it was opened (to give back with [`Connections::give_client`]).
    pub fn client(&self) -> Result<(Instant, Client), ApiError> {
        let idle = self.clients.lock().ok().and_then(|mut c| c.pop());
        if let Some((opened, client)) = idle {
            if opened.elapsed() < FRESH_FOR {
                return Ok((opened, client));
            }
        }
        Ok((Instant::now(), self.open_client()?))
    }

    /// A client of its own (a followed log keeps one for as long as it streams).
    pub fn open_client(&self) -> Result<Client, ApiError> {
        Ok(Client::open(&self.root, &self.project)?)
    }

    pub fn give_client(&self, client: (Instant, Client)) {
        if client.0.elapsed() >= FRESH_FOR {
            return;
        }
        if let Ok(mut idle) = self.clients.lock() {
            if idle.len() < KEEP {
                idle.push(client);
            }
        }
    }

    /// A recent view of job `id` (at most [`VIEWS_FRESH`] old). The views of the queue are
    /// computed again by the one request that finds them stale (or, at most every
    /// [`VIEWS_MIN_AGE`], without the job), while the others answer from the ones kept.
    /// `None`: the job is finished or newer than the views; the caller computes its own.
    pub fn recent_view(&self, client: &Client, id: &str) -> Result<Option<JobView>, ApiError> {
        let (kept, refresh) = {
            let mut slot = self.views.lock().unwrap_or_else(|p| p.into_inner());
            let kept = slot.views.clone();
            let stale = match &kept {
                None => true,
                Some((at, views)) => {
                    at.elapsed() >= VIEWS_FRESH
                        || (!views.contains_key(id) && at.elapsed() >= VIEWS_MIN_AGE)
                }
            };
            let refresh = stale && !slot.refreshing;
            slot.refreshing |= refresh;
            (kept, refresh)
        };
        if !refresh {
            return Ok(kept.and_then(|(_, views)| views.get(id).cloned()));
        }
        let computed = client.views(None, false).map(|views| {
            let by_id: HashMap<String, JobView> =
                views.into_iter().map(|v| (v.id.to_string(), v)).collect();
            (Instant::now(), Arc::new(by_id))
        });
        let mut slot = self.views.lock().unwrap_or_else(|p| p.into_inner());
        slot.refreshing = false;
        let (at, views) = computed?;
        let view = views.get(id).cloned();
        slot.views = Some((at, views));
        Ok(view)
    }

    /// The server's turn to write to `strata.db` (the agent still takes SQLite's lock).
    pub fn write_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn tokens(&self) -> Result<Tokens, ApiError> {
        if let Some(tokens) = self.tokens.lock().ok().and_then(|mut t| t.pop()) {
            return Ok(tokens);
        }
        Tokens::open(&self.root.join("strata.db")).map_err(|e| ApiError::internal(e.to_string()))
    }

    pub fn give_tokens(&self, tokens: Tokens) {
        if let Ok(mut idle) = self.tokens.lock() {
            if idle.len() < KEEP {
                idle.push(tokens);
            }
        }
    }
}

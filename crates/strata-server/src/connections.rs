//! Connections kept between requests. Opening a `Client` reads the configuration, opens the
//! store and runs each component's migration check in a write transaction; doing that per
//! request would take `strata.db`'s write lock several times for every read, against the
//! agent. Idle clients are reused for a few seconds only, so a change of `strata.toml` or of
//! the pools the agent publishes is seen soon after.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use strata_agent::Client;
use strata_db::tokens::Tokens;
use strata_queue::{Job, JobView};

use crate::error::ApiError;

/// How long an opened client is reused.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Idle connections kept, of each kind.
const KEEP: usize = 32;
/// How often the kept views of the queue are computed again while statuses are asked for.
const VIEWS_EVERY: Duration = Duration::from_millis(250);
/// The priority of the thread that views the whole queue (`nice`), below the requests'.
const ALL_VIEWS_NICE: i32 = 5;
/// With no status asked for this long, the thread that keeps the views stops.
const VIEWS_IDLE: Duration = Duration::from_secs(5);
/// The longest a status waits for views that include its job before it computes its own.
const VIEWS_WAIT: Duration = Duration::from_secs(2);

/// The views (position, reason) of every unfinished job, by job id, and when their
/// computation started (a job submitted before that is in them, if it is unfinished).
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
    /// Ranking a tier's queue is the cost of a status (tens of milliseconds for thousands
    /// of queued jobs): threads of their own do it for all callers ([`Keeping`]), so that
    /// no status request ranks the queue itself.
    views: Arc<ViewKeeper>,
}

#[derive(Default)]
struct ViewKeeper {
    kept: Mutex<KeptViews>,
    /// New views were kept, or a status wants them now.
    changed: Condvar,
}

#[derive(Default)]
struct KeptViews {
    views: Option<Views>,
    /// Views of jobs newer than `views`, computed for the statuses that asked for them, and
    /// when each was kept.
    newer: HashMap<String, (Instant, JobView)>,
    /// Jobs newer than `views` whose statuses wait for their views.
    pending: Vec<Job>,
    /// The threads that compute them run.
    running: bool,
    /// Which start of the threads is the current one: threads of an earlier one end.
    generation: u64,
    /// When a status last asked for them.
    last_asked: Option<Instant>,
}

impl KeptViews {
    fn get(&self, id: &str) -> Option<&JobView> {
        let kept = self.views.as_ref().and_then(|(_, views)| views.get(id));
        kept.or_else(|| self.newer.get(id).map(|(_, view)| view))
    }

    /// Ends the current threads (their next look at `generation`) and drops the views.
    fn stop(&mut self) {
        *self = KeptViews {
            generation: self.generation + 1,
            ..KeptViews::default()
        };
    }
}

/// What a keeping thread computes: every unfinished job's views, every [`VIEWS_EVERY`] (or
/// less often for a long queue); or the views of the jobs statuses wait for, at once. Two
/// threads, so that a job just submitted never waits behind the whole queue's views.
#[derive(Clone, Copy)]
enum Keeping {
    All,
    Newer,
}

impl Connections {
    pub fn new(root: PathBuf, project: PathBuf) -> Connections {
        Connections {
            root,
            project,
            clients: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            writes: Mutex::new(()),
            views: Arc::default(),
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

    /// A recent view of `job` (its position and reason at most [`VIEWS_EVERY`] and one
    /// ranking old), from the views kept by the keeping threads. An unfinished job newer
    /// than the views waits for its own, which one of them computes at once from its synced
    /// scheduler. `None`: the job is finished, or its view could not be had in time; the
    /// caller computes its own.
    pub fn recent_view(&self, job: &Job) -> Option<JobView> {
        let keeper = &self.views;
        let mut kept = keeper.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.last_asked = Some(Instant::now());
        if !kept.running {
            kept.running = true;
            kept.generation += 1;
            self.start_keepers(kept.generation);
        }
        let id = job.id.as_str();
        if let Some(view) = kept.get(id) {
            return Some(view.clone());
        }
        if job.state.is_terminal() {
            return None;
        }
        kept.pending.push(job.clone());
        keeper.changed.notify_all();
        let (kept, _) = keeper
            .changed
            .wait_timeout_while(kept, VIEWS_WAIT, |k| k.running && k.get(id).is_none())
            .unwrap_or_else(|p| p.into_inner());
        kept.get(id).cloned()
    }

    /// Whether views are kept (statuses were asked for lately): only then is a new job's
    /// worth computing ahead ([`Connections::expect_view`]).
    pub fn keeps_views(&self) -> bool {
        self.views
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
    }

    /// A job just submitted, whose status its submitter will ask for next: its view is
    /// computed now, while the answer to the submit travels (only while views are kept).
    pub fn expect_view(&self, job: Job) {
        let mut kept = self.views.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.running {
            kept.pending.push(job);
            self.views.changed.notify_all();
        }
    }

    /// The threads that keep the views, until no status has asked for them for
    /// [`VIEWS_IDLE`].
    fn start_keepers(&self, generation: u64) {
        for keeping in [Keeping::All, Keeping::Newer] {
            let keeper = self.views.clone();
            let (root, project) = (self.root.clone(), self.project.clone());
            let spawned = std::thread::Builder::new()
                .name("strata-views".into())
                .spawn(move || keep_views(&keeper, &root, &project, keeping, generation));
            if let Err(e) = spawned {
                tracing::warn!("cannot start a thread that keeps the queue's views: {e}");
                let mut kept = self.views.kept.lock().unwrap_or_else(|p| p.into_inner());
                kept.stop();
                return;
            }
        }
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

fn keep_views(keeper: &ViewKeeper, root: &Path, project: &Path, keeping: Keeping, generation: u64) {
    // The views of a job just submitted are waited for; those of the whole queue are not.
    if let Keeping::All = keeping {
        crate::writers::lower_priority(ALL_VIEWS_NICE);
    }
    let mut source: Option<ViewSource> = None;
    let mut next_all = Instant::now();
    loop {
        let Some(pending) = next_work(keeper, keeping, generation, next_all) else {
            return;
        };
        let started = Instant::now();
        if source
            .as_ref()
            .is_none_or(|s| s.opened.elapsed() >= FRESH_FOR)
        {
            source = ViewSource::open(root, project);
        }
        let jobs = match keeping {
            Keeping::All => None,
            Keeping::Newer => Some(pending.as_slice()),
        };
        let computed = source.as_mut().and_then(|s| s.views(jobs));
        let mut kept = keeper.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.generation != generation {
            return;
        }
        let Some(views) = computed else {
            // The statuses waiting compute their own.
            kept.stop();
            keeper.changed.notify_all();
            return;
        };
        let views = views.into_iter().map(|v| (v.id.to_string(), v));
        match keeping {
            Keeping::All => {
                kept.views = Some((started, Arc::new(views.collect())));
                // Those kept before this started are in the views (or finished).
                kept.newer.retain(|_, (at, _)| *at > started);
                // At most a fifth of a core: a long queue is viewed less often.
                next_all = started + VIEWS_EVERY.max(started.elapsed() * 4);
            }
            Keeping::Newer => {
                let now = Instant::now();
                kept.newer.extend(views.map(|(id, v)| (id, (now, v))));
            }
        }
        keeper.changed.notify_all();
    }
}

/// Waits for the next thing `keeping` has to do: the jobs to view (none for all), or `None`
/// when no status has asked for a while (the views are dropped) or the threads were
/// started again.
fn next_work(
    keeper: &ViewKeeper,
    keeping: Keeping,
    generation: u64,
    next_all: Instant,
) -> Option<Vec<Job>> {
    let mut kept = keeper.kept.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if kept.generation != generation {
            return None;
        }
        if kept.last_asked.is_none_or(|t| t.elapsed() >= VIEWS_IDLE) {
            kept.stop();
            keeper.changed.notify_all();
            return None;
        }
        let now = Instant::now();
        let wait = match keeping {
            Keeping::All if now >= next_all => return Some(Vec::new()),
            Keeping::All => next_all - now,
            Keeping::Newer if !kept.pending.is_empty() => {
                return Some(std::mem::take(&mut kept.pending))
            }
            Keeping::Newer => VIEWS_IDLE,
        };
        kept = keeper
            .changed
            .wait_timeout(kept, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// A client and the scheduler kept in sync with it; opened again every [`FRESH_FOR`], so a
/// change of `strata.toml` or of the agent's pools is seen.
struct ViewSource {
    opened: Instant,
    client: Client,
    scheduler: strata_agent::KeptScheduler,
}

impl ViewSource {
    fn open(root: &Path, project: &Path) -> Option<ViewSource> {
        let opened = Instant::now();
        let open = || -> Result<ViewSource, strata_agent::ClientError> {
            let client = Client::open(root, project)?;
            let scheduler = client.kept_scheduler()?;
            Ok(ViewSource {
                opened,
                client,
                scheduler,
            })
        };
        open()
            .map_err(|e| tracing::warn!("views of the queue: {e}"))
            .ok()
    }

    /// The views of `jobs`, or of every unfinished job.
    fn views(&mut self, jobs: Option<&[Job]>) -> Option<Vec<JobView>> {
        self.client
            .synced_views(&mut self.scheduler, jobs)
            .map_err(|e| tracing::warn!("views of the queue: {e}"))
            .ok()
    }
}

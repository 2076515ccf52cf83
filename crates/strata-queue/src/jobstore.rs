//! Jobs, their history and usage records, durable in `strata.db` next to the cache's indexes.
//!
//! Many `strata submit` processes and one agent share the file (WAL, busy timeout). Every
//! change of state is a compare-and-set, `UPDATE jobs ... WHERE id = ? AND state = ?`, inside
//! an immediate transaction that also appends to `job_events`: of two processes moving the
//! same job out of the same state exactly one succeeds, so a job is started once and finished
//! once. `job_events.seq` grows in commit order (SQLite has one writer at a time), which lets
//! the scheduler follow changes made by other processes by reading the events after the last
//! one it saw.
//!
//! The scheduler's tables carry their own migration counter (`scheduler_schema`); the cache's
//! `PRAGMA user_version` is left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::config::{SchedulerConfig, UnknownName};
use crate::job::{EndCause, Environment, Job, JobId, JobState, NewJob, Outcome, ShippedCode};
use crate::outputs::OutputPath;
use crate::tier::Resources;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job database {path}: job {id} has an unreadable {column}: {detail}")]
    Corrupt {
        path: PathBuf,
        id: String,
        column: &'static str,
        detail: String,
    },
    #[error("job {id} cannot go from {from} to {to}")]
    IllegalTransition {
        id: JobId,
        from: JobState,
        to: JobState,
    },
    #[error("no job {0}")]
    NoSuchJob(JobId),
    #[error(transparent)]
    RandomId(#[from] crate::job::RandomIdError),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    UnknownQueue(UnknownName),
    #[error(transparent)]
    UnknownTier(UnknownName),
    #[error("queue `{queue}` does not allow tier `{tier}`; it allows: {}", allowed.join(", "))]
    TierNotAllowed {
        queue: String,
        tier: String,
        allowed: Vec<String>,
    },
    #[error("no command given: put the command after `--`")]
    EmptyCommand,
    #[error("no environment given: pass a requirements file or an image")]
    NoEnvironment,
    #[error("--output {outer} and --output {inner} overlap: give only {outer}")]
    OverlappingOutputs { outer: String, inner: String },
    /// The user's idempotency key names an earlier job: this submit is a retry of it.
    #[error("idempotency key {key:?} already names job {job}")]
    Repeated { key: String, job: JobId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A move of one job from one state to the next, with what the move records.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Queued → Resolving: a resolver took the job.
    Resolving,
    /// Queued | Resolving → Ready: the environment is an image digest now.
    Resolved { image: strata_oci::Digest },
    /// Ready | Retrying → Running on a node with these GPU indices.
    Start {
        pool: String,
        node: String,
        gpus: Vec<u32>,
    },
    /// Running → a terminal state.
    Finish { state: JobState, outcome: Outcome },
    /// Running → Retrying: tried again not before `not_before`.
    Retry { not_before: i64, outcome: Outcome },
    /// Retrying → Ready.
    Release,
    /// Queued | Resolving | Ready | Retrying → Cancelled.
    Cancel { reason: String },
    /// Queued | Resolving → Failed: the environment could not be resolved or built.
    Fail { reason: String },
    /// Resolving → Queued: the resolver went away (agent restart).
    Requeue,
    /// Running → Ready: the agent died after admitting the job and before starting its
    /// container; nothing ran, so it waits for capacity again.
    NotStarted,
}

impl Change {
    /// The state this change leads to.
    pub fn target(&self) -> JobState {
        match self {
            Change::Resolving => JobState::Resolving,
            Change::Resolved { .. } | Change::Release => JobState::Ready,
            Change::Start { .. } => JobState::Running,
            Change::Finish { state, .. } => *state,
            Change::Retry { .. } => JobState::Retrying,
            Change::Cancel { .. } => JobState::Cancelled,
            Change::Fail { .. } => JobState::Failed,
            Change::Requeue => JobState::Queued,
            Change::NotStarted => JobState::Ready,
        }
    }

    /// The states this change may start from.
    fn sources(&self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Change::Resolving => &[Queued],
            Change::Resolved { .. } => &[Queued, Resolving],
            Change::Start { .. } => &[Ready, Retrying],
            Change::Finish { .. } | Change::Retry { .. } => &[Running],
            Change::Release => &[Retrying],
            Change::Cancel { .. } => &[Queued, Resolving, Ready, Retrying],
            Change::Fail { .. } => &[Queued, Resolving],
            Change::Requeue => &[Resolving],
            Change::NotStarted => &[Running],
        }
    }

    /// Columns to set (besides `state`), and SQL expressions that need no parameter.
    fn assignments(&self, now: i64) -> (Vec<(&'static str, Value)>, &'static str) {
        let text = |s: &str| Value::Text(s.to_string());
        let opt_int = |v: Option<i32>| v.map_or(Value::Null, |v| Value::Integer(v.into()));
        let outcome_cols = |o: &Outcome| {
            vec![
                ("exit_code", opt_int(o.exit_code)),
                ("signal", opt_int(o.signal)),
                ("oom_killed", Value::Integer(o.oom_killed.into())),
                ("reason", o.reason.as_deref().map_or(Value::Null, text)),
            ]
        };
        match self {
            Change::Resolving | Change::Requeue => (vec![], ""),
            Change::Resolved { image } => (
                vec![
                    ("image_digest", text(&image.to_string())),
                    ("ready_at", Value::Integer(now)),
                ],
                "",
            ),
            Change::Start { pool, node, gpus } => (
                vec![
                    ("pool", text(pool)),
                    ("node", text(node)),
                    ("gpu_indices", text(&json(gpus))),
                    ("started_at", Value::Integer(now)),
                    ("container_id", Value::Null),
                    ("kube_uid", Value::Null),
                    ("exit_code", Value::Null),
                    ("signal", Value::Null),
                    ("oom_killed", Value::Integer(0)),
                    ("reason", Value::Null),
                    ("not_before", Value::Null),
                ],
                "",
            ),
            Change::Finish { outcome, .. } => {
                let mut cols = outcome_cols(outcome);
                cols.push(("finished_at", Value::Integer(now)));
                (cols, "")
            }
            Change::Retry {
                not_before,
                outcome,
            } => {
                let mut cols = outcome_cols(outcome);
                cols.push(("not_before", Value::Integer(*not_before)));
                (cols, ", attempt = attempt + 1, cancel_requested = 0")
            }
            Change::Release => (
                vec![
                    ("ready_at", Value::Integer(now)),
                    ("not_before", Value::Null),
                ],
                "",
            ),
            Change::NotStarted => (
                vec![
                    ("pool", Value::Null),
                    ("node", Value::Null),
                    ("gpu_indices", text("[]")),
                    ("started_at", Value::Null),
                    ("container_id", Value::Null),
                    ("kube_uid", Value::Null),
                    ("ready_at", Value::Integer(now)),
                ],
                "",
            ),
            Change::Cancel { reason } | Change::Fail { reason } => (
                vec![
                    ("reason", text(reason)),
                    ("finished_at", Value::Integer(now)),
                ],
                "",
            ),
        }
    }

    /// Words for the job's history.
    fn detail(&self) -> Option<String> {
        match self {
            Change::Resolved { image } => Some(image.to_string()),
            Change::Start { pool, node, gpus } if gpus.is_empty() => Some(format!("{pool}/{node}")),
            Change::Start { pool, node, gpus } => Some(format!("{pool}/{node} gpus {gpus:?}")),
            Change::Finish { outcome, .. } | Change::Retry { outcome, .. } => {
                outcome.reason.clone()
            }
            Change::Cancel { reason } | Change::Fail { reason } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// What `request_cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelResult {
    /// It had not started: it is Cancelled now.
    Cancelled,
    /// It runs: the agent was asked to stop it.
    Requested,
    /// It had already finished, in this state.
    AlreadyFinished(JobState),
}

/// Which jobs `list` returns (all of them when empty), in submission order.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub queue: Option<String>,
    pub user: Option<String>,
    pub tier: Option<String>,
}

impl JobFilter {
    /// Jobs not finished yet.
    pub fn unfinished() -> JobFilter {
        JobFilter {
            states: JobState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect(),
            ..JobFilter::default()
        }
    }
}

/// One usage record: what a run cost its user, for fair share.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRecord {
    pub seq: i64,
    pub user: String,
    pub queue: String,
    pub tier: String,
    /// Seconds × [`Resources::charge_rate`].
    pub resource_seconds: f64,
    pub at: i64,
}

/// A node held for the first job of a tier (see [`crate::admit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReservation {
    pub tier: String,
    pub job: JobId,
    pub pool: String,
    pub node: String,
    pub since: i64,
}

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    queue              TEXT NOT NULL,
    tier               TEXT NOT NULL,
    user               TEXT NOT NULL,
    priority           INTEGER NOT NULL,
    name               TEXT,
    environment        TEXT NOT NULL,
    image_digest       TEXT,
    command            TEXT NOT NULL,
    env                TEXT NOT NULL,
    working_dir        TEXT,
    timeout_secs       INTEGER,
    millicpus          INTEGER NOT NULL,
    memory             INTEGER NOT NULL,
    gpus               INTEGER NOT NULL,
    network            INTEGER NOT NULL,
    retries            INTEGER NOT NULL,
    retry_exit_codes   TEXT NOT NULL,
    retry_on_oom       INTEGER NOT NULL,
    retry_backoff_secs INTEGER NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 1,
    state              TEXT NOT NULL,
    not_before         INTEGER,
    exit_code          INTEGER,
    signal             INTEGER,
    oom_killed         INTEGER NOT NULL DEFAULT 0,
    reason             TEXT,
    pool               TEXT,
    node               TEXT,
    gpu_indices        TEXT NOT NULL DEFAULT '[]',
    container_id       TEXT,
    submitted_at       INTEGER NOT NULL,
    ready_at           INTEGER,
    started_at         INTEGER,
    finished_at        INTEGER,
    cancel_requested   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs(state);
CREATE TABLE job_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    at     INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX job_events_job ON job_events(job_id);
CREATE TABLE usage (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    user             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    tier             TEXT NOT NULL,
    resource_seconds REAL NOT NULL,
    at               INTEGER NOT NULL
);
CREATE INDEX usage_at ON usage(at);
CREATE TABLE reservations (
    tier   TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    pool   TEXT NOT NULL,
    node   TEXT NOT NULL,
    since  INTEGER NOT NULL
);
"#,
    // 2: the uid of an attempt's Kubernetes Job, recorded at its creation.
    "ALTER TABLE jobs ADD COLUMN kube_uid TEXT;",
    // 3: the directories collected when a job ends (a JSON list of output paths).
    "ALTER TABLE jobs ADD COLUMN outputs TEXT NOT NULL DEFAULT '[]';",
    // 4: the code shipped with a job (`ShippedCode` as JSON): its layer, where it is, the git
    // commit and whether the tree was dirty.
    "ALTER TABLE jobs ADD COLUMN code TEXT;",
    // 5: the key a client sent with its submit (`Idempotency-Key`): a retried submit of one
    // user with the same key is the same job.
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
     CREATE UNIQUE INDEX jobs_idempotency ON jobs(user, idempotency_key)
         WHERE idempotency_key IS NOT NULL;",
];

const JOB_COLUMNS: &str = "seq, id, queue, tier, user, priority, name, environment, image_digest, \
    command, env, working_dir, timeout_secs, millicpus, memory, gpus, network, retries, \
    retry_exit_codes, retry_on_oom, retry_backoff_secs, attempt, state, not_before, exit_code, \
    signal, oom_killed, reason, pool, node, gpu_indices, container_id, submitted_at, ready_at, \
    started_at, finished_at, cancel_requested, kube_uid, outputs, code";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn json<T: Serialize>(value: &T) -> String {
    // Serialising plain vectors and maps of strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The jobs table and friends in one SQLite file.
pub struct JobStore {
    conn: Connection,
    path: PathBuf,
}

impl JobStore {
    /// Opens (creating and migrating) the scheduler's tables in the database at `path`.
    pub fn open(path: &Path) -> Result<JobStore, StoreError> {
        let schema = strata_db::Schema {
            counter: strata_db::Counter::Table("scheduler_schema"),
            migrations: MIGRATIONS,
        };
        let conn =
            strata_db::open_migrated(path, &schema).map_err(|source| StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(JobStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// A write transaction that takes the lock at once, so that what it reads is still true
    /// when it writes.
    fn immediate(&self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err())
    }

    /// Checks `job` against the configuration and queues it; returns its id at once.
    pub fn submit(
        &self,
        config: &SchedulerConfig,
        job: NewJob,
        now: i64,
    ) -> Result<JobId, SubmitError> {
        let queue = config
            .queue(&job.queue)
            .map_err(SubmitError::UnknownQueue)?;
        let resources = config.tier(&job.tier).map_err(SubmitError::UnknownTier)?;
        if !queue.tiers.contains(&job.tier) {
            return Err(SubmitError::TierNotAllowed {
                queue: queue.name.clone(),
                tier: job.tier.clone(),
                allowed: queue.tiers.clone(),
            });
        }
        if job.command.is_empty() {
            return Err(SubmitError::EmptyCommand);
        }
        let environment = match (&job.environment, &job.image_digest) {
            (Some(env), _) => env.clone(),
            (None, Some(digest)) => Environment::Image {
                reference: digest.to_string(),
            },
            (None, None) => return Err(SubmitError::NoEnvironment),
        };
        check_outputs(&job.outputs)?;
        let user = job
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
        let state = if job.image_digest.is_some() {
            JobState::Ready
        } else {
            JobState::Queued
        };
        if let Some(key) = &job.idempotency_key {
            if let Some(earlier) = self.by_idempotency_key(&user, key)? {
                return Err(SubmitError::Repeated {
                    key: key.clone(),
                    job: earlier,
                });
            }
        }
        let timeout = job.timeout.or(queue.timeout).map(|d| d.as_secs() as i64);
        let values: Vec<Value> = vec![
            Value::Text(job.queue.clone()),
            Value::Text(job.tier.clone()),
            Value::Text(user),
            Value::Integer(job.priority.unwrap_or(queue.priority)),
            job.name.clone().map_or(Value::Null, Value::Text),
            Value::Text(json(&environment)),
            job.image_digest
                .as_ref()
                .map_or(Value::Null, |d| Value::Text(d.to_string())),
            Value::Text(json(&job.command)),
            Value::Text(json(&job.env)),
            job.working_dir.clone().map_or(Value::Null, Value::Text),
            timeout.map_or(Value::Null, Value::Integer),
            Value::Integer(resources.millicpus as i64),
            Value::Integer(resources.memory as i64),
            Value::Integer(resources.gpus.into()),
            Value::Integer(queue.network.into()),
            Value::Integer(job.retries.unwrap_or(queue.retry.retries).into()),
            Value::Text(json(
                job.retry_exit_codes
                    .as_ref()
                    .unwrap_or(&queue.retry.exit_codes),
            )),
            Value::Integer(job.retry_on_oom.unwrap_or(queue.retry.on_oom).into()),
            Value::Integer(queue.retry.backoff.as_secs() as i64),
            Value::Text(state.as_str().into()),
            Value::Integer(now),
            if state == JobState::Ready {
                Value::Integer(now)
            } else {
                Value::Null
            },
            Value::Text(json(&dedup(&job.outputs))),
            job.code
                .as_ref()
                .map_or(Value::Null, |c| Value::Text(json(c))),
            job.idempotency_key.clone().map_or(Value::Null, Value::Text),
        ];
        Ok(self.insert(values, state, now)?)
    }

    /// Inserts under a fresh id (another on the rare clash).
    fn insert(&self, values: Vec<Value>, state: JobState, now: i64) -> Result<JobId, StoreError> {
        const SQL: &str = "INSERT INTO jobs (id, queue, tier, user, priority, name, environment, \
            image_digest, command, env, working_dir, timeout_secs, millicpus, memory, gpus, \
            network, retries, retry_exit_codes, retry_on_oom, retry_backoff_secs, state, \
            submitted_at, ready_at, outputs, code, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, \
            ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, \
            ?24, ?25, ?26)";
        let mut attempts = 0;
        loop {
            let id = JobId::generate()?;
            let mut all = vec![Value::Text(id.to_string())];
            all.extend(values.iter().cloned());
            let tx = self.immediate()?;
            match tx.execute(SQL, params_from_iter(all)) {
                Ok(_) => {
                    record_event(&tx, &id, state, now, None).map_err(self.err())?;
                    tx.commit().map_err(self.err())?;
                    return Ok(id);
                }
                Err(e) if is_unique_violation(&e) && attempts < 5 => attempts += 1,
                Err(e) => return Err(self.err()(e)),
            }
        }
    }

    /// The job `user` submitted with idempotency key `key`, if any.
    pub fn by_idempotency_key(&self, user: &str, key: &str) -> Result<Option<JobId>, StoreError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM jobs WHERE user = ?1 AND idempotency_key = ?2",
                [user, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    /// The job with this id.
    pub fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        let row = self
            .conn
            .query_row(&sql, [id.as_str()], RawJob::read)
            .optional()
            .map_err(self.err())?;
        row.map(|raw| raw.parse(&self.path)).transpose()
    }

    /// Jobs matching `filter`, in submission order.
    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        if !filter.states.is_empty() {
            let marks: Vec<String> = filter
                .states
                .iter()
                .map(|s| {
                    values.push(Value::Text(s.as_str().into()));
                    format!("?{}", values.len())
                })
                .collect();
            clauses.push(format!("state IN ({})", marks.join(", ")));
        }
        for (column, wanted) in [
            ("queue", &filter.queue),
            ("user", &filter.user),
            ("tier", &filter.tier),
        ] {
            if let Some(wanted) = wanted {
                values.push(Value::Text(wanted.clone()));
                clauses.push(format!("{column} = ?{}", values.len()));
            }
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs{filter_sql} ORDER BY seq");
        self.query_jobs(&sql, values)
    }

    fn query_jobs(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Job>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let raws = stmt
            .query_map(params_from_iter(values), RawJob::read)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        raws.into_iter().map(|r| r.parse(&self.path)).collect()
    }

    /// Moves job `id` from `from` by `change` if it is still in `from`: true if this call
    /// made the move, false if the job was elsewhere (someone else moved it first).
    pub fn transition(
        &self,
        id: &JobId,
        from: JobState,
        change: Change,
        now: i64,
    ) -> Result<bool, StoreError> {
        let to = change.target();
        if !change.sources().contains(&from) || !from.can_go_to(to) {
            return Err(StoreError::IllegalTransition {
                id: id.clone(),
                from,
                to,
            });
        }
        let (columns, raw) = change.assignments(now);
        let mut values = vec![
            Value::Text(to.as_str().into()),
            Value::Text(id.to_string()),
            Value::Text(from.as_str().into()),
        ];
        let mut sets = String::new();
        for (column, value) in columns {
            values.push(value);
            sets.push_str(&format!(", {column} = ?{}", values.len()));
        }
        let sql = format!("UPDATE jobs SET state = ?1{sets}{raw} WHERE id = ?2 AND state = ?3");
        let tx = self.immediate()?;
        let changed = tx
            .execute(&sql, params_from_iter(values))
            .map_err(self.err())?;
        if changed == 0 {
            return Ok(false);
        }
        if from == JobState::Running {
            record_usage(&tx, id, now).map_err(self.err())?;
        }
        record_event(&tx, id, to, now, change.detail()).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(true)
    }

    /// Records the end of a running job's attempt, choosing its next state: Cancelled,
    /// TimedOut, Succeeded (exit 0), Retrying (a retryable failure with attempts left, after
    /// a backoff) or Failed. Returns the new state, or None if the job was not running (it
    /// was finished already: a job finishes exactly once).
    pub fn finish(
        &self,
        id: &JobId,
        cause: EndCause,
        outcome: Outcome,
        now: i64,
    ) -> Result<Option<JobState>, StoreError> {
        let job = self
            .get(id)?
            .ok_or_else(|| StoreError::NoSuchJob(id.clone()))?;
        if job.state != JobState::Running {
            return Ok(None);
        }
        let change = match cause {
            EndCause::Cancelled => Change::Finish {
                state: JobState::Cancelled,
                outcome,
            },
            EndCause::TimedOut => Change::Finish {
                state: JobState::TimedOut,
                outcome,
            },
            EndCause::Exited if outcome.exit_code == Some(0) && !outcome.oom_killed => {
                Change::Finish {
                    state: JobState::Succeeded,
                    outcome,
                }
            }
            EndCause::Exited if job.is_retryable(&outcome) && !job.cancel_requested => {
                Change::Retry {
                    not_before: now.saturating_add(job.retry_delay() as i64),
                    outcome,
                }
            }
            EndCause::Exited => Change::Finish {
                state: JobState::Failed,
                outcome,
            },
        };
        let to = change.target();
        let moved = self.transition(id, JobState::Running, change, now)?;
        Ok(moved.then_some(to))
    }

    /// Cancels a job that has not started, or asks the agent to stop a running one.
    pub fn request_cancel(&self, id: &JobId, now: i64) -> Result<CancelResult, StoreError> {
        // A few rounds: the job may move (e.g. start) between the read and the write.
        for _ in 0..8 {
            let job = self
                .get(id)?
                .ok_or_else(|| StoreError::NoSuchJob(id.clone()))?;
            if job.state.is_terminal() {
                return Ok(CancelResult::AlreadyFinished(job.state));
            }
            if job.state == JobState::Running {
                if self.mark_cancel_requested(id, now)? {
                    return Ok(CancelResult::Requested);
                }
                continue;
            }
            let change = Change::Cancel {
                reason: "cancelled before it started".into(),
            };
            if self.transition(id, job.state, change, now)? {
                return Ok(CancelResult::Cancelled);
            }
        }
        let state = self
            .get(id)?
            .map(|j| j.state)
            .ok_or_else(|| StoreError::NoSuchJob(id.clone()))?;
        Ok(CancelResult::AlreadyFinished(state))
    }

    fn mark_cancel_requested(&self, id: &JobId, now: i64) -> Result<bool, StoreError> {
        let tx = self.immediate()?;
        let changed = tx
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                [id.as_str()],
            )
            .map_err(self.err())?;
        if changed == 0 {
            return Ok(false);
        }
        record_event(
            &tx,
            id,
            JobState::Running,
            now,
            Some("cancel requested".into()),
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(true)
    }

    /// Remembers the container of a running job, and the uid of its Kubernetes Job (for
    /// re-adoption after a restart).
    pub fn set_container(
        &self,
        id: &JobId,
        container_id: &str,
        kube_uid: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE jobs SET container_id = ?1, kube_uid = ?2 WHERE id = ?3 AND state = 'running'",
                params![container_id, kube_uid, id.as_str()],
            )
            .map_err(self.err())?;
        Ok(changed == 1)
    }

    /// The newest event's sequence number (0 when there is none).
    pub(crate) fn last_event(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM job_events", [], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    /// Jobs with events after `after`, up to the newest event; and that event's number.
    pub(crate) fn changed_since(&self, after: i64) -> Result<(Vec<Job>, i64), StoreError> {
        let upto = self.last_event()?;
        if upto <= after {
            return Ok((Vec::new(), after));
        }
        // A join driven by the event range (the events' primary key), then each job by its
        // unique id: the cost follows the number of changes, not the number of jobs.
        let columns: String = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("j.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM job_events e CROSS JOIN jobs j ON j.id = e.job_id \
             WHERE e.seq > ?1 AND e.seq <= ?2 ORDER BY e.seq"
        );
        let mut jobs = self.query_jobs(&sql, vec![Value::Integer(after), Value::Integer(upto)])?;
        // A job with several events appears once, as it is now.
        let mut seen = std::collections::HashSet::new();
        jobs.retain(|job| seen.insert(job.id.clone()));
        Ok((jobs, upto))
    }

    /// Usage records after `after` and no older than `since`.
    pub fn usage_since(&self, after: i64, since: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, user, queue, tier, resource_seconds, at FROM usage \
                 WHERE seq > ?1 AND at + 0 >= ?2 ORDER BY seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([after, since], |r| {
                Ok(UsageRecord {
                    seq: r.get(0)?,
                    user: r.get(1)?,
                    queue: r.get(2)?,
                    tier: r.get(3)?,
                    resource_seconds: r.get(4)?,
                    at: r.get(5)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Adds a usage record directly (imported history, tests).
    pub fn record_usage(
        &self,
        user: &str,
        queue: &str,
        tier: &str,
        resource_seconds: f64,
        at: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO usage (user, queue, tier, resource_seconds, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user, queue, tier, resource_seconds, at],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The reservations the agent holds.
    pub fn reservations(&self) -> Result<Vec<StoredReservation>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT tier, job_id, pool, node, since FROM reservations ORDER BY tier")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        rows.into_iter()
            .map(|(tier, job, pool, node, since)| {
                let job = job
                    .parse()
                    .map_err(|e: crate::job::JobIdError| StoreError::Corrupt {
                        path: self.path.clone(),
                        id: job.clone(),
                        column: "reservations.job_id",
                        detail: e.to_string(),
                    })?;
                Ok(StoredReservation {
                    tier,
                    job,
                    pool,
                    node,
                    since,
                })
            })
            .collect()
    }

    /// Replaces the stored reservations.
    pub fn save_reservations(&self, all: &[StoredReservation]) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        tx.execute("DELETE FROM reservations", [])
            .map_err(self.err())?;
        for r in all {
            tx.execute(
                "INSERT INTO reservations (tier, job_id, pool, node, since) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.tier, r.job.as_str(), r.pool, r.node, r.since],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    /// The history of a job: (state, at, detail), oldest first.
    pub fn events(&self, id: &JobId) -> Result<Vec<(String, i64, Option<String>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, at, detail FROM job_events WHERE job_id = ?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

fn record_event(
    conn: &Connection,
    id: &JobId,
    state: JobState,
    at: i64,
    detail: Option<String>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO job_events (job_id, state, at, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id.as_str(), state.as_str(), at, detail],
    )?;
    Ok(())
}

/// Charges the run that just ended to its user: seconds run × the tier's charge rate.
fn record_usage(conn: &Connection, id: &JobId, now: i64) -> rusqlite::Result<()> {
    let (user, queue, tier, started, millicpus, memory, gpus): (
        String,
        String,
        String,
        Option<i64>,
        i64,
        i64,
        i64,
    ) = conn.query_row(
        "SELECT user, queue, tier, started_at, millicpus, memory, gpus FROM jobs WHERE id = ?1",
        [id.as_str()],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )?;
    let seconds = (now - started.unwrap_or(now)).max(0) as f64;
    let resources = Resources {
        millicpus: millicpus.max(0) as u64,
        memory: memory.max(0) as u64,
        gpus: u32::try_from(gpus).unwrap_or(0),
    };
    let charge = seconds * resources.charge_rate();
    conn.execute(
        "INSERT INTO usage (user, queue, tier, resource_seconds, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user, queue, tier, charge, now],
    )?;
    Ok(())
}

/// The output paths once each, in the order given.
fn dedup(outputs: &[OutputPath]) -> Vec<OutputPath> {
    let mut seen = Vec::new();
    for path in outputs {
        if !seen.contains(path) {
            seen.push(path.clone());
        }
    }
    seen
}

/// Two outputs where one is inside the other would be collected twice (and on Kubernetes
/// mounted over each other): refused. Relative and absolute paths are compared among
/// themselves (the working directory may come from the image).
fn check_outputs(outputs: &[OutputPath]) -> Result<(), SubmitError> {
    for outer in outputs {
        for inner in outputs {
            let nested = outer.is_absolute() == inner.is_absolute()
                && outer != inner
                && Path::new(inner.as_str()).starts_with(outer.as_str());
            if nested {
                return Err(SubmitError::OverlappingOutputs {
                    outer: outer.to_string(),
                    inner: inner.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A row as SQLite gives it; [`RawJob::parse`] checks the parts that can be malformed.
struct RawJob {
    seq: i64,
    id: String,
    queue: String,
    tier: String,
    user: String,
    priority: i64,
    name: Option<String>,
    environment: String,
    image_digest: Option<String>,
    command: String,
    env: String,
    working_dir: Option<String>,
    timeout_secs: Option<i64>,
    millicpus: i64,
    memory: i64,
    gpus: i64,
    network: bool,
    retries: i64,
    retry_exit_codes: String,
    retry_on_oom: bool,
    retry_backoff_secs: i64,
    attempt: i64,
    state: String,
    not_before: Option<i64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    oom_killed: bool,
    reason: Option<String>,
    pool: Option<String>,
    node: Option<String>,
    gpu_indices: String,
    container_id: Option<String>,
    submitted_at: i64,
    ready_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    cancel_requested: bool,
    kube_uid: Option<String>,
    outputs: String,
    code: Option<String>,
}

impl RawJob {
    fn read(r: &Row<'_>) -> rusqlite::Result<RawJob> {
        Ok(RawJob {
            seq: r.get(0)?,
            id: r.get(1)?,
            queue: r.get(2)?,
            tier: r.get(3)?,
            user: r.get(4)?,
            priority: r.get(5)?,
            name: r.get(6)?,
            environment: r.get(7)?,
            image_digest: r.get(8)?,
            command: r.get(9)?,
            env: r.get(10)?,
            working_dir: r.get(11)?,
            timeout_secs: r.get(12)?,
            millicpus: r.get(13)?,
            memory: r.get(14)?,
            gpus: r.get(15)?,
            network: r.get(16)?,
            retries: r.get(17)?,
            retry_exit_codes: r.get(18)?,
            retry_on_oom: r.get(19)?,
            retry_backoff_secs: r.get(20)?,
            attempt: r.get(21)?,
            state: r.get(22)?,
            not_before: r.get(23)?,
            exit_code: r.get(24)?,
            signal: r.get(25)?,
            oom_killed: r.get(26)?,
            reason: r.get(27)?,
            pool: r.get(28)?,
            node: r.get(29)?,
            gpu_indices: r.get(30)?,
            container_id: r.get(31)?,
            submitted_at: r.get(32)?,
            ready_at: r.get(33)?,
            started_at: r.get(34)?,
            finished_at: r.get(35)?,
            cancel_requested: r.get(36)?,
            kube_uid: r.get(37)?,
            outputs: r.get(38)?,
            code: r.get(39)?,
        })
    }

    fn parse(self, path: &Path) -> Result<Job, StoreError> {
        let corrupt = |column: &'static str, detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            id: self.id.clone(),
            column,
            detail,
        };
        let id: JobId = self.id.parse().map_err(|e| corrupt("id", format!("{e}")))?;
        let state: JobState = self
            .state
            .parse()
            .map_err(|e| corrupt("state", format!("{e}")))?;
        let environment: Environment = serde_json::from_str(&self.environment)
            .map_err(|e| corrupt("environment", e.to_string()))?;
        let image_digest = self
            .image_digest
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt("image_digest", format!("{e}")))?;
        let command: Vec<String> =
            serde_json::from_str(&self.command).map_err(|e| corrupt("command", e.to_string()))?;
        let env: BTreeMap<String, String> =
            serde_json::from_str(&self.env).map_err(|e| corrupt("env", e.to_string()))?;
        let retry_exit_codes: Vec<i32> = serde_json::from_str(&self.retry_exit_codes)
            .map_err(|e| corrupt("retry_exit_codes", e.to_string()))?;
        let gpus: Vec<u32> = serde_json::from_str(&self.gpu_indices)
            .map_err(|e| corrupt("gpu_indices", e.to_string()))?;
        let outputs: Vec<OutputPath> =
            serde_json::from_str(&self.outputs).map_err(|e| corrupt("outputs", e.to_string()))?;
        let code: Option<ShippedCode> = self
            .code
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("code", e.to_string()))?;
        Ok(Job {
            id,
            seq: self.seq,
            queue: self.queue,
            tier: self.tier,
            user: self.user,
            priority: self.priority,
            name: self.name,
            environment,
            image_digest,
            command,
            env,
            working_dir: self.working_dir,
            outputs,
            timeout_secs: self.timeout_secs.map(|t| t.max(0) as u64),
            resources: Resources {
                millicpus: self.millicpus.max(0) as u64,
                memory: self.memory.max(0) as u64,
                gpus: u32::try_from(self.gpus).unwrap_or(0),
            },
            network: self.network,
            retries: u32::try_from(self.retries).unwrap_or(0),
            retry_exit_codes,
            retry_on_oom: self.retry_on_oom,
            retry_backoff_secs: self.retry_backoff_secs.max(0) as u64,
            attempt: u32::try_from(self.attempt).unwrap_or(1),
            state,
            not_before: self.not_before,
            outcome: Outcome {
                exit_code: self.exit_code,
                signal: self.signal,
                oom_killed: self.oom_killed,
                reason: self.reason,
            },
            pool: self.pool,
            node: self.node,
            gpus,
            container_id: self.container_id,
            kube_uid: self.kube_uid,
            submitted_at: self.submitted_at,
            ready_at: self.ready_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            cancel_requested: self.cancel_requested,
            code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, JobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("strata.db")).unwrap();
        (dir, store)
    }

    fn new_job() -> NewJob {
        NewJob {
            queue: "default".into(),
            tier: "cpu".into(),
            user: Some("ana".into()),
            environment: Some(Environment::Image {
                reference: "python:3.11".into(),
            }),
            command: vec!["python".into(), "train.py".into()],
            ..NewJob::default()
        }
    }

    #[test]
    fn outputs_are_stored_once_each_and_may_not_overlap() {
        let (_dir, store) = store();
        let config = SchedulerConfig::default();
        let path = |t: &str| t.parse::<OutputPath>().unwrap();
        let mut job = new_job();
        job.outputs = vec![path("outputs/"), path("./outputs"), path("/data/out")];
        let id = store.submit(&config, job, 100).unwrap();
        let stored = store.get(&id).unwrap().unwrap().outputs;
        assert_eq!(stored, [path("outputs"), path("/data/out")]);
        assert!(store
            .get(&store.submit(&config, new_job(), 100).unwrap())
            .unwrap()
            .unwrap()
            .outputs
            .is_empty());

        let mut job = new_job();
        job.outputs = vec![path("out/a"), path("out")];
        let err = store.submit(&config, job, 100).unwrap_err();
        assert!(
            matches!(&err, SubmitError::OverlappingOutputs { outer, inner } if outer == "out" && inner == "out/a"),
            "{err}"
        );
        // `outputs` and `outputs2` are apart (whole components are compared).
        let mut job = new_job();
        job.outputs = vec![path("outputs"), path("outputs2")];
        store.submit(&config, job, 100).unwrap();
    }

    #[test]
    fn submit_get_and_walk_the_state_machine() {
        let (_dir, store) = store();
        let config = SchedulerConfig::default();
        let id = store.submit(&config, new_job(), 100).unwrap();
        let job = store.get(&id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.user, "ana");
        assert_eq!(job.command, ["python", "train.py"]);
        assert_eq!(job.resources, config.tiers["cpu"]);

        let digest = strata_oci::Digest::of(b"image");
        assert!(store
            .transition(
                &id,
                JobState::Queued,
                Change::Resolved {
                    image: digest.clone()
                },
                101
            )
            .unwrap());
        let start = Change::Start {
            pool: "local".into(),
            node: "localhost".into(),
            gpus: vec![],
        };
        assert!(store
            .transition(&id, JobState::Ready, start.clone(), 102)
            .unwrap());
        assert!(!store.transition(&id, JobState::Ready, start, 102).unwrap());
        let outcome = Outcome {
            exit_code: Some(0),
            ..Outcome::default()
        };
        assert_eq!(
            store
                .finish(&id, EndCause::Exited, outcome.clone(), 112)
                .unwrap(),
            Some(JobState::Succeeded)
        );
        assert_eq!(
            store.finish(&id, EndCause::Exited, outcome, 113).unwrap(),
            None
        );
        let job = store.get(&id).unwrap().unwrap();
        assert_eq!(job.image_digest, Some(digest));
        assert_eq!((job.started_at, job.finished_at), (Some(102), Some(112)));
        let usage = store.usage_since(0, 0).unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].resource_seconds, 20.0); // 10 s × 2 CPUs
        assert_eq!(store.events(&id).unwrap().len(), 4);
    }

    #[test]
    fn illegal_moves_are_refused() {
        let (_dir, store) = store();
        let id = store
            .submit(&SchedulerConfig::default(), new_job(), 1)
            .unwrap();
        let err = store
            .transition(&id, JobState::Queued, Change::Release, 2)
            .unwrap_err();
        assert!(matches!(err, StoreError::IllegalTransition { .. }), "{err}");
    }

    #[test]
    fn retryable_failures_come_back_after_a_backoff() {
        let (_dir, store) = store();
        let mut job = new_job();
        job.retries = Some(1);
        job.retry_exit_codes = Some(vec![75]);
        job.image_digest = Some(strata_oci::Digest::of(b"i"));
        let id = store.submit(&SchedulerConfig::default(), job, 0).unwrap();
        let start = || Change::Start {
            pool: "local".into(),
            node: "localhost".into(),
            gpus: vec![],
        };
        let fail = Outcome {
            exit_code: Some(75),
            ..Outcome::default()
        };
        assert!(store.transition(&id, JobState::Ready, start(), 1).unwrap());
        let state = store
            .finish(&id, EndCause::Exited, fail.clone(), 5)
            .unwrap();
        assert_eq!(state, Some(JobState::Retrying));
        let job = store.get(&id).unwrap().unwrap();
        assert_eq!((job.attempt, job.not_before), (2, Some(35)));
        assert!(store
            .transition(&id, JobState::Retrying, start(), 40)
            .unwrap());
        let state = store.finish(&id, EndCause::Exited, fail, 41).unwrap();
        assert_eq!(state, Some(JobState::Failed), "no attempts left");
    }

    #[test]
    fn cancel_before_and_during_the_run() {
        let (_dir, store) = store();
        let config = SchedulerConfig::default();
        let waiting = store.submit(&config, new_job(), 0).unwrap();
        assert_eq!(
            store.request_cancel(&waiting, 1).unwrap(),
            CancelResult::Cancelled
        );
        assert_eq!(
            store.request_cancel(&waiting, 2).unwrap(),
            CancelResult::AlreadyFinished(JobState::Cancelled)
        );
        let mut job = new_job();
        job.image_digest = Some(strata_oci::Digest::of(b"i"));
        let running = store.submit(&config, job, 0).unwrap();
        let start = Change::Start {
            pool: "local".into(),
            node: "localhost".into(),
            gpus: vec![],
        };
        assert!(store
            .transition(&running, JobState::Ready, start, 1)
            .unwrap());
        assert_eq!(
            store.request_cancel(&running, 2).unwrap(),
            CancelResult::Requested
        );
        assert!(store.get(&running).unwrap().unwrap().cancel_requested);
    }

    #[test]
    fn the_shipped_code_is_kept_with_the_job() {
        let (_dir, store) = store();
        let config = SchedulerConfig::default();
        let code = ShippedCode {
            layer: strata_oci::LayerDescriptor {
                digest: strata_oci::Digest::of(b"layer"),
                diff_id: strata_oci::Digest::of(b"tar"),
                size: 5,
                media_type: strata_oci::MEDIA_TYPE_LAYER_GZIP.into(),
            },
            dest: "/work".into(),
            files: 3,
            bytes: 120,
            git_commit: Some("0123abcd".into()),
            git_dirty: Some(true),
        };
        let with = store
            .submit(
                &config,
                NewJob {
                    code: Some(code.clone()),
                    ..new_job()
                },
                1,
            )
            .unwrap();
        let without = store.submit(&config, new_job(), 1).unwrap();
        assert_eq!(store.get(&with).unwrap().unwrap().code, Some(code));
        assert_eq!(store.get(&without).unwrap().unwrap().code, None);
    }

    #[test]
    fn an_idempotency_key_names_one_job_per_user() {
        let (_dir, store) = store();
        let config = SchedulerConfig::default();
        let keyed = |user: &str| NewJob {
            user: Some(user.into()),
            idempotency_key: Some("k-1".into()),
            ..new_job()
        };
        let id = store.submit(&config, keyed("ana"), 100).unwrap();
        assert_eq!(
            store.by_idempotency_key("ana", "k-1").unwrap(),
            Some(id.clone())
        );
        assert_eq!(store.by_idempotency_key("ana", "k-2").unwrap(), None);
        // Another user's key is theirs.
        assert_eq!(store.by_idempotency_key("bo", "k-1").unwrap(), None);
        let other = store.submit(&config, keyed("bo"), 100).unwrap();
        assert_eq!(store.by_idempotency_key("bo", "k-1").unwrap(), Some(other));
        // The same user's key twice is refused by the store itself, naming the first job.
        let err = store.submit(&config, keyed("ana"), 100).unwrap_err();
        assert!(
            matches!(&err, SubmitError::Repeated { job, .. } if *job == id),
            "{err}"
        );
        assert_eq!(store.list(&JobFilter::default()).unwrap().len(), 2);
    }

    #[test]
    fn reopening_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let first = JobStore::open(&path).unwrap();
        let id = first
            .submit(&SchedulerConfig::default(), new_job(), 0)
            .unwrap();
        let second = JobStore::open(&path).unwrap();
        assert!(second.get(&id).unwrap().is_some());
        let user_version: i64 = second
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(user_version, 0, "the cache's counter is not ours");
    }

    /// A database made before the Kubernetes Job's uid was recorded: migrated in place,
    /// its jobs kept; the uid is then recorded with the container and reset by a new start.
    #[test]
    fn the_kube_uid_column_is_added_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let first_only = strata_db::Schema {
            counter: strata_db::Counter::Table("scheduler_schema"),
            migrations: &MIGRATIONS[..1],
        };
        let old = strata_db::open_migrated(&path, &first_only).unwrap();
        drop(old);
        let store = JobStore::open(&path).unwrap();
        let config = SchedulerConfig::default();
        let mut job = new_job();
        job.image_digest = Some(strata_oci::Digest::of(b"image"));
        let id = store.submit(&config, job, 0).unwrap();
        let start = || Change::Start {
            pool: "local".into(),
            node: "localhost".into(),
            gpus: vec![],
        };
        assert!(store.transition(&id, JobState::Ready, start(), 1).unwrap());
        assert!(store
            .set_container(&id, "team-a/strata-j-a1", Some("uid-1"))
            .unwrap());
        let job = store.get(&id).unwrap().unwrap();
        assert_eq!(job.kube_uid.as_deref(), Some("uid-1"));
        assert_eq!(job.container_id.as_deref(), Some("team-a/strata-j-a1"));
        assert!(store
            .transition(&id, JobState::Running, Change::NotStarted, 2)
            .unwrap());
        assert_eq!(store.get(&id).unwrap().unwrap().kube_uid, None);
    }
}

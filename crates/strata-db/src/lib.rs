//! How every strata process opens `strata.db`, which the CLI, builds and the agent share.
//!
//! WAL mode lets readers run beside one writer, and the busy timeout makes a writer wait
//! for another instead of failing. One case escapes the busy timeout: switching a new
//! database into WAL mode needs an exclusive lock, and SQLite reports `SQLITE_BUSY` at once
//! (without calling the busy handler) when another connection holds any lock. Two
//! processes that open a new `strata.db` together (an agent and a `strata submit`) hit
//! exactly that, so the switch is retried here until the timeout.
//!
//! Each component (the cache's index, the job store, the metric store) keeps its own tables
//! and its own schema version in the one file; [`open_migrated`] opens the file and applies
//! the component's missing migrations in one immediate transaction, so two processes opening
//! a new database together do not both migrate it.

pub mod tokens;

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// How long a connection waits for the database to be free before it reports it busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the database at `path` (creating it), in WAL mode, with the busy timeout set.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    enter_wal(&conn, BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Where a component keeps the number of its migrations applied.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// `PRAGMA user_version` (one component per database may use it: the cache's index).
    UserVersion,
    /// A table of its own with one `version` column; the largest value counts.
    Table(&'static str),
}

/// A component's schema: its migrations, applied in order, and where their count is kept.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub counter: Counter,
    pub migrations: &'static [&'static str],
}

/// [`open`], then the migrations of `schema` that are not applied yet.
pub fn open_migrated(path: &Path, schema: &Schema) -> rusqlite::Result<Connection> {
    let mut conn = open(path)?;
    migrate(&mut conn, schema)?;
    Ok(conn)
}

/// Applies the missing migrations. The count is read inside a write transaction taken at
/// once, so that of two processes only the first migrates. A database that has them all
/// (every open but the first) is only read: opening a connection must not wait for the
/// write lock that a busy writer holds (the server opens connections under load).
fn migrate(conn: &mut Connection, schema: &Schema) -> rusqlite::Result<()> {
    if applied_if_counted(conn, schema.counter)? == Some(schema.migrations.len()) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied = applied(&tx, schema.counter)?;
    for (n, sql) in schema.migrations.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        record(&tx, schema.counter, n + 1)?;
    }
    tx.commit()
}

/// The migrations applied, read without writing; `None` when nothing counts them yet.
fn applied_if_counted(conn: &Connection, counter: Counter) -> rusqlite::Result<Option<usize>> {
    let Counter::Table(table) = counter else {
        return applied(conn, counter).map(Some);
    };
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [table],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    largest_version(conn, table).map(Some)
}

fn applied(conn: &Connection, counter: Counter) -> rusqlite::Result<usize> {
    let version: i64 = match counter {
        Counter::UserVersion => conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
        Counter::Table(table) => {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)"
            ))?;
            return largest_version(conn, table);
        }
    };
    Ok(usize::try_from(version).unwrap_or(0))
}

fn largest_version(conn: &Connection, table: &str) -> rusqlite::Result<usize> {
    let version: i64 = conn.query_row(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(version).unwrap_or(0))
}

fn record(conn: &Connection, counter: Counter, version: usize) -> rusqlite::Result<()> {
    match counter {
        Counter::UserVersion => conn.pragma_update(None, "user_version", version),
        Counter::Table(table) => {
            conn.execute(&format!("DELETE FROM {table}"), [])?;
            conn.execute(
                &format!("INSERT INTO {table} (version) VALUES (?1)"),
                [version as i64],
            )?;
            Ok(())
        }
    }
}

/// Puts the database in WAL mode (a persistent property of the file), retrying while
/// another connection holds a lock that the switch cannot wait for itself.
fn enter_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match set_wal(conn) {
            Err(e) if is_busy(&e) && start.elapsed() < timeout => {
                sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let mode =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    // SQLite answers with the mode it kept when it cannot switch (an in-memory database,
    // say): sharing it between processes would not be safe.
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
        Some(format!(
            "cannot use WAL mode (the database stays in {mode} mode)"
        )),
    ))
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(ErrorCode::DatabaseBusy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Many connections opening one new database at the same moment all succeed. Before
    /// the retry, about one round in five failed with "database is locked".
    #[test]
    fn connections_opening_a_new_database_together_all_succeed() {
        const ROUNDS: usize = 40;
        const OPENERS: usize = 6;
        for _ in 0..ROUNDS {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().join("strata.db"));
            let barrier = Arc::new(Barrier::new(OPENERS));
            let openers: Vec<_> = (0..OPENERS)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        let conn = open(&path)?;
                        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x)")?;
                        conn.execute("INSERT INTO t (x) VALUES (1)", [])?;
                        conn.pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0))
                    })
                })
                .collect();
            for opener in openers {
                let mode = opener.join().unwrap().expect("open while others open");
                assert_eq!(mode, "wal");
            }
        }
    }

    const FIRST: &[&str] = &["CREATE TABLE a (x)"];
    const BOTH: &[&str] = &["CREATE TABLE a (x)", "CREATE TABLE b (y)"];

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    /// Migrations run once each, in order, and a later open applies only the new ones; two
    /// components in one file count separately.
    #[test]
    fn migrations_apply_once_per_component() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let pragma = |migrations| Schema {
            counter: Counter::UserVersion,
            migrations,
        };
        open_migrated(&path, &pragma(FIRST)).unwrap();
        let conn = open_migrated(&path, &pragma(BOTH)).unwrap();
        assert_eq!(tables(&conn), ["a", "b"]);
        // Applying "CREATE TABLE a" twice would fail: a reopen must not.
        open_migrated(&path, &pragma(BOTH)).unwrap();

        let other = Schema {
            counter: Counter::Table("other_schema"),
            migrations: &["CREATE TABLE c (z)"],
        };
        let conn = open_migrated(&path, &other).unwrap();
        open_migrated(&path, &other).unwrap();
        assert_eq!(tables(&conn), ["a", "b", "c", "other_schema"]);
        let version: i64 = conn
            .query_row("SELECT version FROM other_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1);
        let user_version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(user_version, 2);
    }

    /// Opening a database whose migrations are all applied takes no write lock: it does not
    /// wait for a writer that holds one (before, every open waited out the writer).
    #[test]
    fn opening_a_migrated_database_does_not_wait_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let schemas = [
            Schema {
                counter: Counter::UserVersion,
                migrations: FIRST,
            },
            Schema {
                counter: Counter::Table("other_schema"),
                migrations: &["CREATE TABLE c (z)"],
            },
        ];
        for schema in &schemas {
            open_migrated(&path, schema).unwrap();
        }
        let writer = open(&path).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (done, opened) = std::sync::mpsc::channel();
        let opener_path = path.clone();
        std::thread::spawn(move || {
            let result = schemas
                .iter()
                .try_for_each(|schema| open_migrated(&opener_path, schema).map(drop));
            let _ = done.send(result);
        });
        let result = opened.recv_timeout(Duration::from_secs(5));
        writer.execute_batch("COMMIT").unwrap();
        result
            .expect("open_migrated waited for the writer's lock")
            .unwrap();
    }

    /// A counter table written by an older strata with one row per migration is read as the
    /// largest row.
    #[test]
    fn a_counter_table_with_a_row_per_migration_counts_its_largest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let conn = open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE old_schema (version INTEGER NOT NULL);
             INSERT INTO old_schema VALUES (1); INSERT INTO old_schema VALUES (2);
             CREATE TABLE a (x); CREATE TABLE b (y);",
        )
        .unwrap();
        let schema = Schema {
            counter: Counter::Table("old_schema"),
            migrations: &[
                "CREATE TABLE a (x)",
                "CREATE TABLE b (y)",
                "CREATE TABLE c (z)",
            ],
        };
        let conn = open_migrated(&path, &schema).unwrap();
        assert_eq!(tables(&conn), ["a", "b", "c", "old_schema"]);
    }

    #[test]
    fn a_database_that_cannot_use_wal_is_refused() {
        let err = open(Path::new(":memory:")).unwrap_err();
        assert!(err.to_string().contains("cannot use WAL mode"), "{err}");
    }
}

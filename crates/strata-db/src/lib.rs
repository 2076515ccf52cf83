//! How every strata process opens `strata.db`, which the CLI, builds and the agent share.
//!
//! WAL mode lets readers run beside one writer, and the busy timeout makes a writer wait
//! for another instead of failing. One case escapes the busy timeout: switching a new
//! database into WAL mode needs an exclusive lock, and SQLite reports `SQLITE_BUSY` at once
//! (without calling the busy handler) when another connection holds any lock. Two
//! processes that open a new `strata.db` together (an agent and a `strata submit`) hit
//! exactly that, so the switch is retried here until the timeout.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

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

    #[test]
    fn a_database_that_cannot_use_wal_is_refused() {
        let err = open(Path::new(":memory:")).unwrap_err();
        assert!(err.to_string().contains("cannot use WAL mode"), "{err}");
    }
}

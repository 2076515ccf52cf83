//! User metrics: jobs print `strata:metric {"name": "loss", "value": 0.31, "step": 100}`
//! lines (the same protocol works on Kubernetes, where only logs come back); strata reads
//! the log incrementally and keeps the points as time series in `strata.db`.
//!
//! Ingestion is exactly-once: the points of a chunk and the log offset after it are
//! committed in one transaction, and only complete lines are read, so an agent killed at
//! any moment re-reads from where the last commit left off.

pub mod plot;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The prefix of a metric line.
pub const METRIC_PREFIX: &str = "strata:metric ";
/// Read at most this much log per transaction.
const CHUNK: usize = 4 << 20;

/// The metric tables' schema; `launcher_schema` records how many migrations were applied
/// (the cache's `PRAGMA user_version` is not ours to touch).
const SCHEMA: strata_db::Schema = strata_db::Schema {
    counter: strata_db::Counter::Table("launcher_schema"),
    migrations: MIGRATIONS,
};

/// Schema changes of the metric tables, applied in order.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE job_metrics (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        name   TEXT NOT NULL,
        step   INTEGER,
        value  REAL NOT NULL,
        time   REAL
    );
    CREATE INDEX job_metrics_by_name ON job_metrics(job_id, name, seq);
    CREATE TABLE job_metric_offsets (
        job_id TEXT PRIMARY KEY,
        offset INTEGER NOT NULL
    );
"#];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("log of job {job} at {path}: {source}")]
    Log {
        job: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One metric point as printed by a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// Seconds since the epoch, if the job gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// Why a line that starts like a metric was not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricLineError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("\"name\" must be a non-empty string")]
    BadName,
    #[error("\"value\" must be a finite number")]
    BadValue,
    #[error("\"step\" must be an integer")]
    BadStep,
    #[error("\"time\" must be a number")]
    BadTime,
}

/// Parses one log line: `None` when it is not a metric line at all; an error when it
/// starts with the prefix but its JSON is not a valid metric. Leading whitespace and a
/// carriage-return progress bar before the prefix are tolerated.
pub fn parse_metric_line(line: &str) -> Option<Result<MetricPoint, MetricLineError>> {
    let line = line.rsplit('\r').next().unwrap_or(line).trim_start();
    let json = line.strip_prefix(METRIC_PREFIX)?;
    Some(parse_metric_json(json.trim()))
}

fn parse_metric_json(json: &str) -> Result<MetricPoint, MetricLineError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| MetricLineError::NotJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| MetricLineError::NotJson("not an object".into()))?;
    let name = obj
        .get("name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or(MetricLineError::BadName)?;
    let v = obj
        .get("value")
        .and_then(|v| v.as_f64())
        .filter(|v| v.is_finite())
        .ok_or(MetricLineError::BadValue)?;
    let step = match obj.get("step") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => Some(s.as_i64().ok_or(MetricLineError::BadStep)?),
    };
    let time = match obj.get("time") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => Some(t.as_f64().ok_or(MetricLineError::BadTime)?),
    };
    Ok(MetricPoint {
        name: name.to_string(),
        value: v,
        step,
        time,
    })
}

/// A stored point of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Order of arrival, increasing within a job.
    pub seq: i64,
    pub step: Option<i64>,
    pub value: f64,
    pub time: Option<f64>,
}

/// The latest value of one metric of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastValue {
    pub name: String,
    pub value: f64,
    pub step: Option<i64>,
    /// How many points the series has.
    pub count: u64,
}

/// What one [`MetricsStore::ingest_log`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub points: usize,
    /// Lines with the prefix whose JSON was not a valid metric (skipped).
    pub malformed: usize,
    /// The log offset now recorded.
    pub offset: u64,
}

/// The metric tables of `strata.db`.
pub struct MetricsStore {
    conn: Connection,
    path: PathBuf,
}

impl MetricsStore {
    /// Opens `strata.db` (creating and migrating the metric tables). WAL mode and a busy
    /// timeout let the agent and CLI processes share it.
    pub fn open(path: &Path) -> Result<MetricsStore, MetricsError> {
        let db = |source| MetricsError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = strata_db::open_migrated(path, &SCHEMA).map_err(db)?;
        Ok(MetricsStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn db(&self) -> impl FnOnce(rusqlite::Error) -> MetricsError + '_ {
        move |source| MetricsError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads the job's log from where the last call stopped, stores every complete metric
    /// line after it and the new offset, in one transaction.
    pub fn ingest_log(&mut self, job_id: &str, log: &Path) -> Result<IngestReport, MetricsError> {
        let mut report = IngestReport::default();
        loop {
            let chunk = self.ingest_chunk(job_id, log)?;
            report.points += chunk.points;
            report.malformed += chunk.malformed;
            let done = chunk.offset == report.offset;
            report.offset = chunk.offset;
            if done {
                return Ok(report);
            }
        }
    }

    fn ingest_chunk(&mut self, job_id: &str, log: &Path) -> Result<IngestReport, MetricsError> {
        let offset = self.offset(job_id)?;
        let bytes = read_complete_lines(log, offset).map_err(|source| MetricsError::Log {
            job: job_id.to_string(),
            path: log.to_path_buf(),
            source,
        })?;
        let mut report = IngestReport {
            offset,
            ..Default::default()
        };
        if bytes.is_empty() {
            return Ok(report);
        }
        let path = self.path.clone();
        let db = |source| MetricsError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO job_metrics (job_id, name, step, value, time) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                match parse_metric_line(line) {
                    None => {}
                    Some(Err(_)) => report.malformed += 1,
                    Some(Ok(p)) => {
                        insert
                            .execute(params![job_id, p.name, p.step, p.value, p.time])
                            .map_err(db)?;
                        report.points += 1;
                    }
                }
            }
        }
        report.offset = offset + bytes.len() as u64;
        tx.execute(
            "INSERT INTO job_metric_offsets (job_id, offset) VALUES (?1, ?2)
             ON CONFLICT(job_id) DO UPDATE SET offset = excluded.offset",
            params![job_id, report.offset as i64],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(report)
    }

    /// The log offset up to which the job's metrics are stored.
    pub fn offset(&self, job_id: &str) -> Result<u64, MetricsError> {
        let offset: Option<i64> = self
            .conn
            .query_row(
                "SELECT offset FROM job_metric_offsets WHERE job_id = ?1",
                [job_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db())?;
        Ok(offset.unwrap_or(0).max(0) as u64)
    }

    /// Stores points directly (e.g. metrics that came from elsewhere than a local log).
    pub fn record(&mut self, job_id: &str, points: &[MetricPoint]) -> Result<(), MetricsError> {
        let path = self.path.clone();
        let db = |source| MetricsError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        for p in points {
            tx.execute(
                "INSERT INTO job_metrics (job_id, name, step, value, time) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job_id, p.name, p.step, p.value, p.time],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Metric names of a job, sorted.
    pub fn names(&self, job_id: &str) -> Result<Vec<String>, MetricsError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT name FROM job_metrics WHERE job_id = ?1 ORDER BY name")
            .map_err(self.db())?;
        let rows = stmt.query_map([job_id], |r| r.get(0)).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The last value of each metric of a job, sorted by name.
    pub fn last_values(&self, job_id: &str) -> Result<Vec<LastValue>, MetricsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.name, m.value, m.step, c.n
                 FROM (SELECT name, MAX(seq) AS last, COUNT(*) AS n
                       FROM job_metrics WHERE job_id = ?1 GROUP BY name) c
                 JOIN job_metrics m ON m.seq = c.last
                 ORDER BY m.name",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok(LastValue {
                    name: r.get(0)?,
                    value: r.get(1)?,
                    step: r.get(2)?,
                    count: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The whole series of one metric of a job, in the order the job printed it.
    pub fn series(&self, job_id: &str, name: &str) -> Result<Vec<Sample>, MetricsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, step, value, time FROM job_metrics
                 WHERE job_id = ?1 AND name = ?2 ORDER BY seq",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![job_id, name], |r| {
                Ok(Sample {
                    seq: r.get(0)?,
                    step: r.get(1)?,
                    value: r.get(2)?,
                    time: r.get(3)?,
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Forgets a job's metrics and offset.
    pub fn delete_job(&mut self, job_id: &str) -> Result<(), MetricsError> {
        let path = self.path.clone();
        let db = |source| MetricsError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute("DELETE FROM job_metrics WHERE job_id = ?1", [job_id])
            .map_err(db)?;
        tx.execute("DELETE FROM job_metric_offsets WHERE job_id = ?1", [job_id])
            .map_err(db)?;
        tx.commit().map_err(db)
    }
}

/// The bytes from `offset` up to and including the last newline (at most [`CHUNK`]),
/// so a line the job is still writing is read next time, whole. A log shorter than
/// `offset` (truncated) yields nothing: re-reading it would duplicate points.
fn read_complete_lines(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len <= offset {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(offset))?;
    let want = usize::try_from(len - offset)
        .unwrap_or(usize::MAX)
        .min(CHUNK);
    let mut buf = vec![0; want];
    let n = read_full(&mut file, &mut buf)?;
    buf.truncate(n);
    match buf.iter().rposition(|&b| b == b'\n') {
        Some(last) => buf.truncate(last + 1),
        // A single line longer than a chunk: take it as is rather than stall forever.
        None if n == CHUNK => {}
        None => buf.clear(),
    }
    Ok(buf)
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A terminal sparkline of `values` in at most `width` characters (each one the mean of
/// its share of the points), scaled from the series' minimum to its maximum.
pub fn sparkline(values: &[f64], width: usize) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || width == 0 {
        return String::new();
    }
    let buckets = finite.len().min(width);
    let means: Vec<f64> = (0..buckets)
        .map(|b| {
            let start = b * finite.len() / buckets;
            let end = ((b + 1) * finite.len() / buckets).max(start + 1);
            let part = &finite[start..end];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let min = means.iter().copied().fold(f64::INFINITY, f64::min);
    let max = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = max - min;
    means
        .iter()
        .map(|v| {
            if span <= 0.0 {
                return BARS[3];
            }
            let level = ((v - min) / span * (BARS.len() - 1) as f64).round() as usize;
            BARS[level.min(BARS.len() - 1)]
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn parses_metric_lines() {
        let p = parse_metric_line(r#"strata:metric {"name": "loss", "value": 0.31, "step": 100}"#)
            .unwrap()
            .unwrap();
        assert_eq!(p.name, "loss");
        assert_eq!(p.value, 0.31);
        assert_eq!(p.step, Some(100));
        assert!(parse_metric_line("epoch 1 done").is_none());
        let bar = "\r 50%|#####\rstrata:metric {\"name\":\"acc\",\"value\":1,\"time\":1.5}";
        assert_eq!(parse_metric_line(bar).unwrap().unwrap().time, Some(1.5));
        for (bad, err) in [
            (r#"strata:metric {"value": 1}"#, MetricLineError::BadName),
            (
                r#"strata:metric {"name": "x", "value": "1"}"#,
                MetricLineError::BadValue,
            ),
            (
                r#"strata:metric {"name": "x", "value": 1, "step": 1.5}"#,
                MetricLineError::BadStep,
            ),
        ] {
            assert_eq!(parse_metric_line(bad).unwrap().unwrap_err(), err);
        }
        assert!(matches!(
            parse_metric_line("strata:metric {oops").unwrap(),
            Err(MetricLineError::NotJson(_))
        ));
    }

    #[test]
    fn sparkline_spans_min_to_max() {
        assert_eq!(
            sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8),
            "▁▂▃▄▅▆▇█"
        );
        assert_eq!(sparkline(&[5.0, 5.0], 10), "▄▄");
        assert_eq!(
            sparkline(&(0..1000).map(f64::from).collect::<Vec<_>>(), 20)
                .chars()
                .count(),
            20
        );
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn ingestion_is_incremental_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("j.log");
        let mut store = MetricsStore::open(&dir.path().join("strata.db")).unwrap();
        std::fs::write(
            &log,
            "hello\nstrata:metric {\"name\":\"loss\",\"value\":1.0,\"step\":1}\nstrata:metric {\"name\":\"loss\",\"val",
        )
        .unwrap();
        let r = store.ingest_log("j", &log).unwrap();
        assert_eq!((r.points, r.malformed), (1, 0));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"ue\":0.5,\"step\":2}\nstrata:metric {bad}\n")
            .unwrap();
        let r = store.ingest_log("j", &log).unwrap();
        assert_eq!((r.points, r.malformed), (1, 1));
        assert_eq!(store.ingest_log("j", &log).unwrap().points, 0);
        let series = store.series("j", "loss").unwrap();
        assert_eq!(
            series.iter().map(|s| s.value).collect::<Vec<_>>(),
            [1.0, 0.5]
        );
        let last = store.last_values("j").unwrap();
        assert_eq!(last[0].value, 0.5);
        assert_eq!(last[0].count, 2);
        // Reopening does not re-run migrations or re-read the log.
        drop(store);
        let mut store = MetricsStore::open(&dir.path().join("strata.db")).unwrap();
        assert_eq!(store.ingest_log("j", &log).unwrap().points, 0);
        assert_eq!(store.series("j", "loss").unwrap().len(), 2);
    }
}

//! Pod logs into strata's log file (`$STRATA_HOME/logs/<job>.log`), so that `strata logs`
//! and `strata metrics` (which reads `strata:metric` lines from that file) work as they do
//! for local jobs.
//!
//! Logs are requested with timestamps: each line comes as `RFC3339NANO TEXT`. The timestamp
//! is stripped before writing, and the last one written is kept beside the log
//! (`<job>.log.kube-cursor`) so that a restarted agent, streaming the same pod again, skips
//! the lines it already has instead of writing them twice.
//!
//! Both files are opened without following symbolic links, and must be regular files of
//! this user with one link (a new one is created exclusively, mode 0600, in a 0700
//! directory): the agent may run as root, and a link planted at a log's path must not make
//! it write, or read, anywhere else.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use futures_util::io::AsyncBufReadExt;
use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::LogParams;
use kube::Api;

use crate::objects::CONTAINER;

/// One line of a pod's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub at: Option<Timestamp>,
    pub text: &'a str,
}

/// Splits `2024-05-01T10:00:00.123456789Z text` into its timestamp and text. A line without
/// a valid leading timestamp is kept whole (the kubelet always sends one, but a proxy or an
/// old runtime may not).
pub fn parse_log_line(line: &str) -> LogLine<'_> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some((first, rest)) = line.split_once(' ') {
        if let Ok(at) = first.parse::<Timestamp>() {
            return LogLine {
                at: Some(at),
                text: rest,
            };
        }
    }
    if let Ok(at) = line.parse::<Timestamp>() {
        // An empty line: only the timestamp.
        return LogLine {
            at: Some(at),
            text: "",
        };
    }
    LogLine {
        at: None,
        text: line,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The pod has no container to read from yet (or any more); try when it runs.
    #[error("logs of pod {namespace}/{pod} are not available: {message}")]
    NotAvailable {
        namespace: String,
        pod: String,
        message: String,
    },
    #[error("reading the logs of pod {namespace}/{pod}: {source}")]
    Api {
        namespace: String,
        pod: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading the logs of pod {namespace}/{pod}: {source}")]
    Stream {
        namespace: String,
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing job log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something other than a log of ours is at the log's path (or its directory): a
    /// symbolic link, a device or fifo, a hard link, another user's file. Nothing is
    /// written through it.
    #[error("refusing to write job log {path}: it is {what}, not a log strata created; remove it")]
    NotALog { path: PathBuf, what: String },
}

/// Opens `path` for appending (`append`) or for reading and rewriting in place (the
/// cursor), never through a symbolic link: a new file is created exclusively with mode
/// 0600; an existing one must be a regular file of this user with one link.
fn open_private(path: &Path, append: bool) -> Result<File, LogError> {
    let werr = |source| LogError::Write {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |what: String| LogError::NotALog {
        path: path.to_path_buf(),
        what,
    };
    let mut options = std::fs::OpenOptions::new();
    if append {
        options.append(true);
    } else {
        options.read(true).write(true);
    }
    // O_CREAT|O_EXCL fails on any existing entry, a dangling symbolic link included.
    match options
        .clone()
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(werr(e)),
    }
    // O_NONBLOCK: opening a fifo planted there must not hang the agent.
    let file = match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse("a symbolic link".into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(refuse("a fifo".into())),
        Err(e) => return Err(werr(e)),
    };
    let meta = file.metadata().map_err(werr)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(refuse(format!("a file with {} hard links", meta.nlink())));
    }
    if meta.uid() != euid {
        return Err(refuse(format!("owned by uid {}", meta.uid())));
    }
    Ok(file)
}

/// Creates the logs directory (mode 0700) where missing, and makes it private; a symbolic
/// link there is refused.
fn private_dir(dir: &Path) -> Result<(), LogError> {
    let werr = |source| LogError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(werr)?;
    let meta = std::fs::symlink_metadata(dir).map_err(werr)?;
    if !meta.is_dir() {
        return Err(LogError::NotALog {
            path: dir.to_path_buf(),
            what: "not a directory (a symbolic link?)".into(),
        });
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(werr)
}

/// The longest cursor read (an RFC 3339 timestamp is about 30 bytes).
const CURSOR_MAX: u64 = 64;

/// Appends lines to a job's log, skipping those at or before the cursor.
pub struct LogWriter {
    path: PathBuf,
    cursor_path: PathBuf,
    cursor: Option<Timestamp>,
    file: File,
    /// The cursor file, rewritten in place after each line.
    cursor_file: File,
    pub lines_written: u64,
}

impl LogWriter {
    pub fn open(path: &Path) -> Result<LogWriter, LogError> {
        let werr = |source| LogError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let file = open_private(path, true)?;
        let cursor_path = cursor_path(path);
        let mut cursor_file = open_private(&cursor_path, false)?;
        let mut text = String::new();
        (&mut cursor_file)
            .take(CURSOR_MAX)
            .read_to_string(&mut text)
            .map_err(werr)?;
        let cursor = text.trim().parse::<Timestamp>().ok();
        Ok(LogWriter {
            path: path.to_path_buf(),
            cursor_path,
            cursor,
            file,
            cursor_file,
            lines_written: 0,
        })
    }

    /// Writes one raw line as received from the API (with its timestamp).
    pub fn write_raw(&mut self, raw: &str) -> Result<(), LogError> {
        let line = parse_log_line(raw);
        if let (Some(at), Some(cursor)) = (line.at, self.cursor) {
            if at <= cursor {
                return Ok(());
            }
        }
        let werr = |source| LogError::Write {
            path: self.path.clone(),
            source,
        };
        writeln!(self.file, "{}", line.text).map_err(werr)?;
        self.lines_written += 1;
        if let Some(at) = line.at {
            self.cursor = Some(at);
            let cerr = |source| LogError::Write {
                path: self.cursor_path.clone(),
                source,
            };
            let text = at.to_string();
            self.cursor_file
                .write_all_at(text.as_bytes(), 0)
                .and_then(|()| self.cursor_file.set_len(text.len() as u64))
                .map_err(cerr)?;
        }
        Ok(())
    }
}

fn cursor_path(log: &Path) -> PathBuf {
    let mut name = log
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".kube-cursor");
    log.with_file_name(name)
}

/// The API's answers that mean "no running container to read from" (said by the kubelet,
/// or by the API server when it cannot reach one).
fn not_available(error: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    (status.code == 400 || status.code == 404 || status.code >= 500).then(|| status.message.clone())
}

/// Why a pod's container has no logs to read yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the pod is not scheduled to a node yet")]
    NotScheduled,
    #[error("container {CONTAINER} has not been created (pod phase {phase})")]
    NotCreated { phase: String },
    #[error("container {CONTAINER} is waiting to start: {reason} (pod phase {phase})")]
    Waiting { reason: String, phase: String },
}

/// Whether `pod`'s container has logs to read: it runs or has terminated. Asking the API for
/// the logs of any other pod is pointless, and makes it contact a kubelet (resolving the
/// node's address) only to be told that the container is waiting. `Err` says why not.
pub fn container_readable(pod: &Pod) -> Result<(), Unreadable> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
    {
        return Err(Unreadable::NotScheduled);
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref());
    let Some(state) = state else {
        return Err(Unreadable::NotCreated { phase });
    };
    if state.running.is_some() || state.terminated.is_some() {
        return Ok(());
    }
    let reason = state
        .waiting
        .as_ref()
        .and_then(|w| w.reason.clone())
        .unwrap_or_else(|| "no reason given".into());
    Err(Unreadable::Waiting { reason, phase })
}

/// Streams the logs of `pod` (following them while it runs) into the log at `path`.
/// Returns how many lines were written. Only a pod whose container runs or has terminated
/// is asked for logs (see [`container_readable`]); any other is `NotAvailable`.
pub async fn stream_pod_logs(
    pods: &Api<Pod>,
    namespace: &str,
    pod: &str,
    path: &Path,
    follow: bool,
) -> Result<u64, LogError> {
    let api_error = |source: kube::Error| match not_available(&source) {
        Some(message) => LogError::NotAvailable {
            namespace: namespace.into(),
            pod: pod.into(),
            message,
        },
        None => LogError::Api {
            namespace: namespace.into(),
            pod: pod.into(),
            source: Box::new(source),
        },
    };
    let current = pods.get(pod).await.map_err(api_error)?;
    if let Err(why) = container_readable(&current) {
        return Err(LogError::NotAvailable {
            namespace: namespace.into(),
            pod: pod.into(),
            message: why.to_string(),
        });
    }
    let mut writer = LogWriter::open(path)?;
    let params = LogParams {
        container: Some(CONTAINER.into()),
        follow,
        timestamps: true,
        since_time: writer.cursor,
        ..LogParams::default()
    };
    let reader = pods.log_stream(pod, &params).await.map_err(api_error)?;
    let mut lines = reader.lines();
    while let Some(line) = lines.try_next().await.map_err(|source| LogError::Stream {
        namespace: namespace.into(),
        pod: pod.into(),
        source,
    })? {
        writer.write_raw(&line)?;
    }
    Ok(writer.lines_written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_timestamp_and_text() {
        let line = parse_log_line("2024-05-01T10:00:00.123456789Z epoch 1 loss=0.3\n");
        assert_eq!(line.text, "epoch 1 loss=0.3");
        assert_eq!(
            line.at.unwrap().to_string(),
            "2024-05-01T10:00:00.123456789Z"
        );
        let metric = parse_log_line(
            "2024-05-01T10:00:01Z strata:metric {\"name\": \"loss\", \"value\": 0.31}",
        );
        assert_eq!(
            metric.text,
            "strata:metric {\"name\": \"loss\", \"value\": 0.31}"
        );
        assert_eq!(parse_log_line("2024-05-01T10:00:02Z").text, "");
        let plain = parse_log_line("no timestamp here");
        assert_eq!((plain.at, plain.text), (None, "no timestamp here"));
        assert_eq!(
            parse_log_line("2024-05-01T10:00:03Z  two spaces").text,
            " two spaces"
        );
    }

    fn pod(node: Option<&str>, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": node, "containers": [{"name": CONTAINER, "image": "img"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn with_state(phase: &str, state: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"phase": phase, "containerStatuses": [{
            "name": CONTAINER, "image": "img", "imageID": "", "ready": false,
            "restartCount": 0, "state": state,
        }]})
    }

    #[test]
    fn only_running_or_terminated_containers_are_read() {
        let running = with_state("Running", serde_json::json!({"running": {}}));
        assert_eq!(container_readable(&pod(Some("n"), running)), Ok(()));
        let ended = with_state("Failed", serde_json::json!({"terminated": {"exitCode": 3}}));
        assert_eq!(container_readable(&pod(Some("n"), ended)), Ok(()));

        let unbound = container_readable(&pod(None, serde_json::json!({"phase": "Pending"})));
        assert_eq!(unbound, Err(Unreadable::NotScheduled));
        let created = container_readable(&pod(Some("n"), serde_json::json!({"phase": "Pending"})));
        let err = created.unwrap_err().to_string();
        assert!(
            err.contains("has not been created (pod phase Pending)"),
            "{err}"
        );
        let pulling = with_state(
            "Pending",
            serde_json::json!({"waiting": {"reason": "ErrImagePull"}}),
        );
        let err = container_readable(&pod(Some("n"), pulling)).unwrap_err();
        assert!(
            err.to_string().contains("waiting to start: ErrImagePull"),
            "{err}"
        );
        // Another container running does not make ours readable.
        let mut other = with_state("Running", serde_json::json!({"running": {}}));
        other["containerStatuses"][0]["name"] = "sidecar".into();
        assert!(container_readable(&pod(Some("n"), other)).is_err());
    }

    #[test]
    fn writer_skips_lines_it_already_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/j-abcdefghij.log");
        let mut w = LogWriter::open(&log).unwrap();
        w.write_raw("2024-05-01T10:00:00Z one").unwrap();
        w.write_raw("2024-05-01T10:00:01Z two").unwrap();
        drop(w);
        // A restarted agent streams the same pod from the start again.
        let mut w = LogWriter::open(&log).unwrap();
        for raw in [
            "2024-05-01T10:00:00Z one",
            "2024-05-01T10:00:01Z two",
            "2024-05-01T10:00:02Z three",
        ] {
            w.write_raw(raw).unwrap();
        }
        assert_eq!(w.lines_written, 1);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn a_new_log_is_private_in_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/j-abcdefghij.log");
        let mut w = LogWriter::open(&log).unwrap();
        w.write_raw("2024-05-01T10:00:00Z one").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(&cursor_path(&log)), 0o600);
        assert_eq!(mode(log.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_symlink_at_the_log_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let log = logs.join("j-abcdefghij.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let err = LogWriter::open(&log).err().expect("refused");
        assert!(matches!(&err, LogError::NotALog { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("j-abcdefghij.log"), "{text}");
        assert!(text.contains("symbolic link"), "{text}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        // A dangling link is not followed to create its target either.
        std::fs::remove_file(&log).unwrap();
        let target = dir.path().join("created-through-link");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(matches!(
            LogWriter::open(&log),
            Err(LogError::NotALog { .. })
        ));
        assert!(!target.exists());
    }

    #[test]
    fn a_symlink_at_the_cursor_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/j-abcdefghij.log");
        std::fs::create_dir(log.parent().unwrap()).unwrap();
        // Read through, /dev/zero would never end; written through, the victim is lost.
        for target in [Path::new("/dev/zero"), &dir.path().join("victim")] {
            let _ = std::fs::remove_file(cursor_path(&log));
            std::fs::write(dir.path().join("victim"), "precious\n").unwrap();
            std::os::unix::fs::symlink(target, cursor_path(&log)).unwrap();
            let err = LogWriter::open(&log).err().expect("refused");
            assert!(matches!(&err, LogError::NotALog { .. }), "{err}");
            assert!(err.to_string().contains("kube-cursor"), "{err}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("victim")).unwrap(),
            "precious\n"
        );
    }

    #[test]
    fn a_hard_link_or_fifo_at_the_log_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/j-abcdefghij.log");
        std::fs::create_dir(log.parent().unwrap()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::hard_link(&victim, &log).unwrap();
        let err = LogWriter::open(&log).err().expect("refused");
        assert!(err.to_string().contains("2 hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        std::fs::remove_file(&log).unwrap();
        let path = std::ffi::CString::new(log.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let err = LogWriter::open(&log)
            .err()
            .expect("refused, without hanging");
        assert!(matches!(&err, LogError::NotALog { .. }), "{err}");
    }
}

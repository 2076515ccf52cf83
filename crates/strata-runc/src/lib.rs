//! The local launcher: runs a job on this machine with runc, in its image, from an OCI
//! runtime bundle.
//!
//! Layout under `$STRATA_HOME`:
//! - `rootfs/<layer hex>/` layers unpacked once, shared by all jobs ([`rootfs`]);
//! - `run/runc/` runc's state root (strata's containers apart from anyone else's);
//! - `run/jobs/<job id>/` one job: `config.json`, the overlay (`l/`, `upper/`, `work/`,
//!   `rootfs/`), `job.json`, runc's pid file and log, `status`, written by the job's
//!   supervisor when the container's process ends (see [`runc::spawn_supervised`]), and
//!   `supervisor.lock`, locked for as long as that supervisor lives.
//!
//! A job's outcome is "lost" only when its supervisor is gone without having written the
//! status; while the supervisor lives, a job whose process ended is [`ContainerState::Pending`]
//! however long the status takes, whichever process asks (the launching agent or a
//! restarted one, to which the supervisor is no child).
//!
//! Container ids are `strata-<job id>`. The agent records a job's outcome (from
//! [`LocalLauncher::poll`] or [`LocalLauncher::cancel`]) before calling
//! [`LocalLauncher::cleanup`], which deletes the job directory with the status in it.

pub mod bundle;
pub mod image;
pub mod overlay;
pub mod rootfs;
pub mod runc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_oci::layout::Store;
use strata_oci::Digest;

pub use bundle::{HostDevice, Limits};
pub use rootfs::LayerCache;

use bundle::BundleSpec;
use overlay::OverlayDirs;
use runc::{Runc, SuperviseFiles, SupervisorState};

/// Prefix of the runc ids of strata's containers.
pub const CONTAINER_PREFIX: &str = "strata-";
const POLL: Duration = Duration::from_millis(25);
/// How long a container may take to die after SIGKILL before we call it stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid job id {0:?}: use 1-100 letters, digits, '_', '.', '-', starting with a letter or digit")]
    BadJobId(String),
    #[error("job {0} already has a container or a job directory; clean it up first")]
    AlreadyExists(String),
    #[error("job {job}: the image has no Entrypoint/Cmd and the job gave no command")]
    NoCommand { job: String },
    #[error("job {job}: {source}")]
    Image {
        job: String,
        #[source]
        source: image::ImageError,
    },
    #[error("job {job}: {source}")]
    Rootfs {
        job: String,
        #[source]
        source: rootfs::RootfsError,
    },
    #[error("job {job}: {source}")]
    Overlay {
        job: String,
        #[source]
        source: overlay::OverlayError,
    },
    #[error("job {job}: {source}")]
    User {
        job: String,
        #[source]
        source: image::UserError,
    },
    #[error("job {job}: {source}")]
    Bundle {
        job: String,
        #[source]
        source: bundle::BundleError,
    },
    #[error("job {job}: {source}")]
    Runc {
        job: String,
        #[source]
        source: runc::RuncError,
    },
    #[error("job {job} did not start: {message}")]
    StartFailed { job: String, message: String },
    #[error("job {job}: {path}: {source}")]
    Io {
        job: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job {job}: after cleanup {what} is still there")]
    NotGone { job: String, what: String },
}

/// One job to start.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// Unique among live jobs of this machine; use a new id per attempt of a retried job.
    pub job_id: String,
    /// The image manifest digest (in the local store).
    pub image: Digest,
    /// The command; empty means the image's Entrypoint + Cmd.
    pub command: Vec<String>,
    /// Added to (and overriding) the image's Env.
    pub env: Vec<(String, String)>,
    /// Working directory; `None` means the image's WorkingDir, else `/`.
    pub cwd: Option<String>,
    pub limits: Limits,
    /// GPU indexes to expose; those absent on this machine are skipped (see `Running`).
    pub gpus: Vec<u32>,
    /// Share the host's network; otherwise the job has only a loopback interface.
    pub network: bool,
    /// Where the job's stdout and stderr go (appended).
    pub log_path: PathBuf,
}

/// A started job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub job_id: String,
    pub container_id: String,
    /// The container's init process on the host.
    pub pid: i32,
    pub log_path: PathBuf,
    /// GPU indexes actually exposed.
    pub gpus: Vec<u32>,
    /// GPU indexes asked for but absent on this machine.
    pub missing_gpus: Vec<u32>,
    /// How many layers this launch had to unpack (0 when the env was already unpacked).
    pub layers_extracted: usize,
}

/// How a job's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitOutcome {
    /// The exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The job's memory cgroup recorded an OOM kill.
    pub oom_killed: bool,
    /// False when the status was lost (the supervisor died with the job still running,
    /// e.g. at a reboot); then `exit_code` and `signal` are `None`.
    pub status_known: bool,
}

impl ExitOutcome {
    /// Shell convention: the exit code, or 128 + signal.
    pub fn code(&self) -> Option<i32> {
        self.exit_code.or(self.signal.map(|s| 128 + s))
    }

    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// What the launcher knows about a job's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Its process runs.
    Running { pid: i32 },
    /// Its supervisor lives but has not recorded an outcome yet: the container is being
    /// created, or its process just ended and the status is being written. Ask again.
    Pending,
    /// Its process ended; the outcome is known (or marked unknown). Clean it up.
    Exited(ExitOutcome),
    /// No container and no supervisor exist; at most a job directory of a launch that was
    /// cut short before its supervisor started (nothing ran). Clean it up.
    Absent,
}

/// A container (or leftover job directory) strata started, for re-adoption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub job_id: String,
    pub container_id: String,
    pub state: ContainerState,
}

/// Recorded in the job directory at launch, for a restarted agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    job_id: String,
    supervisor: i32,
    pid: i32,
    /// The init's start time (/proc/PID/stat field 22), so a reused pid is not mistaken
    /// for the job.
    start_time: u64,
    log_path: PathBuf,
}

/// Runs jobs on this machine with runc.
#[derive(Debug)]
pub struct LocalLauncher {
    store: Store,
    layers: LayerCache,
    runc: Runc,
    jobs_dir: PathBuf,
    dev_dir: PathBuf,
}

impl LocalLauncher {
    /// `home` is `$STRATA_HOME`; `store` the local OCI layout the images are in.
    pub fn new(home: &Path, store: Store) -> Result<LocalLauncher, LaunchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::Io {
                job: "-".into(),
                path,
                source,
            }
        };
        let layers =
            LayerCache::open(&home.join("rootfs")).map_err(|source| LaunchError::Rootfs {
                job: "-".into(),
                source,
            })?;
        let run_root = home.join("run").join("runc");
        let jobs_dir = home.join("run").join("jobs");
        std::fs::create_dir_all(&run_root).map_err(io(&run_root))?;
        std::fs::create_dir_all(&jobs_dir).map_err(io(&jobs_dir))?;
        Ok(LocalLauncher {
            store,
            layers,
            runc: Runc::new(&run_root),
            jobs_dir,
            dev_dir: PathBuf::from("/dev"),
        })
    }

    pub fn layer_cache(&self) -> &LayerCache {
        &self.layers
    }

    /// Layer extractions ever done under this home (for "nothing unpacked twice").
    pub fn extraction_count(&self) -> Result<usize, LaunchError> {
        self.layers
            .extraction_count()
            .map_err(|source| LaunchError::Rootfs {
                job: "-".into(),
                source,
            })
    }

    pub fn container_id(job_id: &str) -> String {
        format!("{CONTAINER_PREFIX}{job_id}")
    }

    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.jobs_dir.join(job_id)
    }

    /// Starts the job detached and returns once its process runs (or failed to start).
    pub fn launch(&self, req: &LaunchRequest) -> Result<Running, LaunchError> {
        let job = req.job_id.as_str();
        validate_job_id(job)?;
        let dir = self.job_dir(job);
        let cid = Self::container_id(job);
        if dir.exists() || self.runc_state(job, &cid)?.is_some() {
            return Err(LaunchError::AlreadyExists(job.to_string()));
        }
        let image =
            image::load_image(&self.store, &req.image).map_err(|source| LaunchError::Image {
                job: job.into(),
                source,
            })?;
        let mut layer_dirs = Vec::with_capacity(image.layers.len());
        let mut extracted = 0;
        for digest in &image.layers {
            let layer = self
                .layers
                .ensure_for(&self.store, &req.image, digest)
                .map_err(|source| LaunchError::Rootfs {
                    job: job.into(),
                    source,
                })?;
            extracted += usize::from(layer.extracted);
            layer_dirs.push(layer.dir);
        }
        std::fs::create_dir_all(&dir).map_err(|source| LaunchError::Io {
            job: job.into(),
            path: dir.clone(),
            source,
        })?;
        let started = self.prepare_and_start(req, &image, &layer_dirs, extracted);
        if started.is_err() {
            // Leave nothing behind: unmount and remove what this launch created.
            let _ = self.cleanup(job);
        }
        started
    }

    fn prepare_and_start(
        &self,
        req: &LaunchRequest,
        image: &image::ImageInfo,
        layer_dirs: &[PathBuf],
        layers_extracted: usize,
    ) -> Result<Running, LaunchError> {
        let job = req.job_id.as_str();
        let dir = self.job_dir(job);
        let cid = Self::container_id(job);
        let dirs = OverlayDirs::under(&dir);
        overlay::mount_overlay(&dirs, layer_dirs).map_err(|source| LaunchError::Overlay {
            job: job.into(),
            source,
        })?;
        let user =
            image::resolve_user(image.config.user.as_deref(), &dirs.target).map_err(|source| {
                LaunchError::User {
                    job: job.into(),
                    source,
                }
            })?;
        let args = if req.command.is_empty() {
            let mut a = image.config.entrypoint.clone().unwrap_or_default();
            a.extend(image.config.cmd.clone().unwrap_or_default());
            a
        } else {
            req.command.clone()
        };
        if args.is_empty() {
            return Err(LaunchError::NoCommand { job: job.into() });
        }
        let cwd = req
            .cwd
            .clone()
            .or_else(|| image.config.working_dir.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let (devices, missing_gpus) = bundle::probe_gpu_devices(&self.dev_dir, &req.gpus);
        if !missing_gpus.is_empty() {
            tracing::warn!(job, ?missing_gpus, "GPUs asked for are not on this machine");
        }
        let gpus: Vec<u32> = req
            .gpus
            .iter()
            .copied()
            .filter(|g| !missing_gpus.contains(g))
            .collect();
        let spec = bundle::runtime_spec(&BundleSpec {
            rootfs: dirs.target.clone(),
            args,
            env: merge_env(
                image.config.env.as_deref().unwrap_or(&[]),
                &user.home,
                &req.env,
            ),
            cwd,
            uid: user.uid,
            gid: user.gid,
            hostname: cid.clone(),
            cgroups_path: format!("/strata/{cid}"),
            limits: req.limits,
            devices,
            network: req.network,
            swap_accounting: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists(),
            open_files: bundle::open_files_limit(),
        })
        .map_err(|source| LaunchError::Bundle {
            job: job.into(),
            source,
        })?;
        let config = dir.join("config.json");
        spec.save(&config).map_err(|e| LaunchError::Io {
            job: job.into(),
            path: config.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let files = self.files(job, &req.log_path);
        let started = runc::spawn_supervised(&self.runc, &dir, &cid, &files).map_err(|source| {
            LaunchError::Runc {
                job: job.into(),
                source,
            }
        })?;
        if started.runc_status != 0 || started.container_pid <= 0 {
            runc::reap(started.supervisor);
            let message = runc::last_runc_error(&files.runc_log)
                .unwrap_or_else(|| format!("runc exited with wait status {}", started.runc_status));
            return Err(LaunchError::StartFailed {
                job: job.into(),
                message,
            });
        }
        let record = JobRecord {
            job_id: job.into(),
            supervisor: started.supervisor,
            pid: started.container_pid,
            start_time: proc_start_time(started.container_pid).unwrap_or(0),
            log_path: req.log_path.clone(),
        };
        let record_path = dir.join("job.json");
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        std::fs::write(&record_path, bytes).map_err(|source| LaunchError::Io {
            job: job.into(),
            path: record_path,
            source,
        })?;
        Ok(Running {
            job_id: job.into(),
            container_id: cid,
            pid: started.container_pid,
            log_path: req.log_path.clone(),
            gpus,
            missing_gpus,
            layers_extracted,
        })
    }

    fn files(&self, job: &str, log: &Path) -> SuperviseFiles {
        let dir = self.job_dir(job);
        SuperviseFiles {
            log: log.to_path_buf(),
            pid_file: dir.join("init.pid"),
            status: dir.join("status"),
            status_tmp: dir.join("status.tmp"),
            runc_log: dir.join("runc.log"),
            lock: dir.join("supervisor.lock"),
        }
    }

    fn runc_state(&self, job: &str, cid: &str) -> Result<Option<runc::RuncState>, LaunchError> {
        self.runc.state(cid).map_err(|source| LaunchError::Runc {
            job: job.into(),
            source,
        })
    }

    fn record(&self, job: &str) -> Option<JobRecord> {
        let bytes = std::fs::read(self.job_dir(job).join("job.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The job's state, asking the job directory, runc and the supervisor's lock. Never
    /// blocks: a process that ended before its supervisor wrote the status is `Pending`.
    pub fn state(&self, job_id: &str) -> Result<ContainerState, LaunchError> {
        validate_job_id(job_id)?;
        if let Some(outcome) = self.read_status(job_id) {
            return Ok(ContainerState::Exited(outcome));
        }
        let cid = Self::container_id(job_id);
        let runc_state = self.runc_state(job_id, &cid)?;
        if let Some(s) = &runc_state {
            if s.status != "stopped" && s.pid > 0 {
                let pid = i32::try_from(s.pid).unwrap_or(0);
                return Ok(ContainerState::Running { pid });
            }
        }
        match self.supervisor_state(job_id)? {
            SupervisorState::Alive => Ok(ContainerState::Pending),
            // Read again: the supervisor may have written the status and exited since the
            // first read; once its lock is free, the status file is final.
            SupervisorState::Gone => Ok(ContainerState::Exited(
                self.read_status(job_id)
                    .unwrap_or_else(|| lost_outcome(oom_killed(&cid))),
            )),
            // A container nobody supervised (not one of ours, or from before the lock).
            SupervisorState::Never if runc_state.is_some() => {
                Ok(ContainerState::Exited(lost_outcome(oom_killed(&cid))))
            }
            SupervisorState::Never => Ok(ContainerState::Absent),
        }
    }

    fn supervisor_state(&self, job_id: &str) -> Result<SupervisorState, LaunchError> {
        let lock = self.job_dir(job_id).join("supervisor.lock");
        runc::supervisor_state(&lock).map_err(|source| LaunchError::Io {
            job: job_id.into(),
            path: lock,
            source,
        })
    }

    /// The outcome once the job's process has ended and its status is recorded, `None`
    /// while it runs (or its supervisor is still writing the status).
    pub fn poll(&self, job_id: &str) -> Result<Option<ExitOutcome>, LaunchError> {
        match self.state(job_id)? {
            ContainerState::Running { .. } | ContainerState::Pending => Ok(None),
            ContainerState::Exited(outcome) => Ok(Some(outcome)),
            ContainerState::Absent => Ok(Some(lost_outcome(false))),
        }
    }

    /// Waits up to `timeout` for the job to end; `None` if it still runs.
    pub fn wait(
        &self,
        job_id: &str,
        timeout: Duration,
    ) -> Result<Option<ExitOutcome>, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.read_status(job_id) {
                return Ok(Some(outcome));
            }
            // The /proc check is cheap; ask runc and the lock only once the process is gone.
            if !self.process_alive(job_id) {
                if let Some(outcome) = self.poll(job_id)? {
                    return Ok(Some(outcome));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM to every process of the job, up to `grace` for them to end, then SIGKILL;
    /// then records the outcome and cleans up (container, mount, directories), confirming
    /// that nothing is left. Returns the outcome (what a timeout or cancel should record).
    pub fn cancel(&self, job_id: &str, grace: Duration) -> Result<ExitOutcome, LaunchError> {
        validate_job_id(job_id)?;
        let cid = Self::container_id(job_id);
        let runc_err = |source| LaunchError::Runc {
            job: job_id.into(),
            source,
        };
        if let ContainerState::Running { .. } | ContainerState::Pending = self.state(job_id)? {
            self.runc.kill_all(&cid, "TERM").map_err(runc_err)?;
            if self.wait(job_id, grace)?.is_none() {
                self.runc.kill_all(&cid, "KILL").map_err(runc_err)?;
                if self.wait(job_id, KILL_WAIT)?.is_none() {
                    return Err(LaunchError::NotGone {
                        job: job_id.into(),
                        what: format!("container {cid} (alive {KILL_WAIT:?} after SIGKILL)"),
                    });
                }
            }
        }
        let outcome = self.poll(job_id)?.unwrap_or(lost_outcome(false));
        self.cleanup(job_id)?;
        Ok(outcome)
    }

    /// Removes everything of an ended (or cancelled) job: `runc delete --force`, the
    /// overlay mount, the upper/work directories and the job directory, then checks from
    /// outside that the container, its process and its mount are gone.
    pub fn cleanup(&self, job_id: &str) -> Result<(), LaunchError> {
        validate_job_id(job_id)?;
        let cid = Self::container_id(job_id);
        let dir = self.job_dir(job_id);
        let record = self.record(job_id);
        self.runc
            .delete_force(&cid)
            .map_err(|source| LaunchError::Runc {
                job: job_id.into(),
                source,
            })?;
        let target = OverlayDirs::under(&dir).target;
        overlay::unmount(&target).map_err(|source| LaunchError::Overlay {
            job: job_id.into(),
            source,
        })?;
        // Never delete through a still-mounted root: that would be the job's view, not ours.
        if overlay::is_mounted(&target) {
            return Err(LaunchError::NotGone {
                job: job_id.into(),
                what: format!("mount {}", target.display()),
            });
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| LaunchError::Io {
                job: job_id.into(),
                path: dir.clone(),
                source,
            })?;
        }
        if let Some(r) = &record {
            runc::reap(r.supervisor);
        }
        self.confirm_gone(job_id, &cid, record.as_ref(), &target)
    }

    fn confirm_gone(
        &self,
        job_id: &str,
        cid: &str,
        record: Option<&JobRecord>,
        target: &Path,
    ) -> Result<(), LaunchError> {
        let not_gone = |what: String| {
            Err(LaunchError::NotGone {
                job: job_id.into(),
                what,
            })
        };
        if self.runc_state(job_id, cid)?.is_some() {
            return not_gone(format!("runc container {cid}"));
        }
        if let Some(r) = record {
            if pid_is(r.pid, r.start_time) {
                return not_gone(format!("process {}", r.pid));
            }
        }
        if overlay::is_mounted(target) {
            return not_gone(format!("mount {}", target.display()));
        }
        Ok(())
    }

    /// Every job with a container or a job directory under this home: what a restarted
    /// agent re-adopts (Running) or records and cleans up (Exited).
    pub fn list(&self) -> Result<Vec<ContainerInfo>, LaunchError> {
        let mut ids: Vec<String> = self
            .runc
            .list()
            .map_err(|source| LaunchError::Runc {
                job: "-".into(),
                source,
            })?
            .into_iter()
            .filter_map(|c| c.id.strip_prefix(CONTAINER_PREFIX).map(str::to_string))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.jobs_dir) {
            ids.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string)),
            );
        }
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter(|id| validate_job_id(id).is_ok())
            .map(|job_id| {
                Ok(ContainerInfo {
                    container_id: Self::container_id(&job_id),
                    state: self.state(&job_id)?,
                    job_id,
                })
            })
            .collect()
    }

    fn process_alive(&self, job_id: &str) -> bool {
        match self.record(job_id) {
            Some(r) => pid_is(r.pid, r.start_time),
            None => false,
        }
    }

    fn read_status(&self, job_id: &str) -> Option<ExitOutcome> {
        let text = std::fs::read_to_string(self.job_dir(job_id).join("status")).ok()?;
        let mut parts = text.split_whitespace();
        let kind = parts.next()?;
        let n = parts.next().and_then(|n| n.parse::<i32>().ok());
        let oom_killed = oom_killed(&Self::container_id(job_id));
        Some(match kind {
            "exited" => ExitOutcome {
                exit_code: n,
                signal: None,
                oom_killed,
                status_known: true,
            },
            "signaled" => ExitOutcome {
                exit_code: None,
                signal: n,
                oom_killed,
                status_known: true,
            },
            _ => lost_outcome(oom_killed),
        })
    }
}

fn lost_outcome(oom_killed: bool) -> ExitOutcome {
    ExitOutcome {
        exit_code: None,
        signal: None,
        oom_killed,
        status_known: false,
    }
}

fn validate_job_id(id: &str) -> Result<(), LaunchError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LaunchError::BadJobId(id.to_string()))
    }
}

/// Image Env, then HOME if the image does not set it, then the job's variables, a later
/// value replacing an earlier one of the same name.
fn merge_env(image: &[String], home: &str, job: &[(String, String)]) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    for kv in image {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    if !image.iter().any(|kv| kv.starts_with("HOME=")) {
        set("HOME", home);
    }
    for (k, v) in job {
        set(k, v);
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Whether the memory cgroup of container `cid` saw an OOM kill (cgroup v1
/// `memory.oom_control` `oom_kill`, or v2 `memory.events`). Read before `runc delete`
/// removes the cgroup.
fn oom_killed(cid: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/memory/strata/{cid}/memory.oom_control");
    let v2 = format!("/sys/fs/cgroup/strata/{cid}/memory.events");
    [v1, v2].iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state), so field 22 is index 19.
    fields.get(19)?.parse().ok()
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Whether `pid` is alive (not a zombie) and is the process started at `start_time`.
fn pid_is(pid: i32, start_time: u64) -> bool {
    if pid <= 0 || proc_state(pid).is_none_or(|s| s == 'Z' || s == 'X') {
        return false;
    }
    start_time == 0 || proc_start_time(pid) == Some(start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_env_overrides_image_env_and_home_defaults() {
        let env = merge_env(
            &["PATH=/usr/bin".into(), "LANG=C".into()],
            "/root",
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("LR".into(), "0.1".into()),
            ],
        );
        assert_eq!(
            env,
            ["PATH=/usr/bin", "LANG=C.UTF-8", "HOME=/root", "LR=0.1"]
        );
    }

    #[test]
    fn job_ids_are_checked() {
        assert!(validate_job_id("j-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "..", "a b"] {
            assert!(validate_job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcome_codes_follow_the_shell() {
        let killed = ExitOutcome {
            exit_code: None,
            signal: Some(9),
            oom_killed: true,
            status_known: true,
        };
        assert_eq!(killed.code(), Some(137));
        assert!(!killed.success());
    }

    #[test]
    fn reads_our_own_start_time() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).unwrap();
        assert!(pid_is(me, t));
        assert!(!pid_is(me, t + 1));
    }
}

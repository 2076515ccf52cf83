//! The local launcher: runs a job on this machine with runc, in its image, from an OCI
//! runtime bundle.
//!
//! Layout under `$STRATA_HOME`:
//! - `rootfs/<layer hex>/` layers unpacked once, shared by all jobs ([`rootfs`]);
//! - `run/runc/` runc's state root (strata's containers apart from anyone else's);
//! - `run/jobs/<job id>/` one job: `config.json`, the overlay (`l/`, `upper/`, `work/`,
//!   `rootfs/`), `job.json`, runc's pid file and log, `status`, written by the job's
//!   supervisor when the container's process ends (see [`supervisor::spawn_supervised`]), and
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

mod bundle;
mod idmap;
mod image;
mod outputs;
mod overlay;
mod rootfs;
mod runc;
mod seccomp;
mod settings;
mod supervisor;

mod cleanup;
mod launch;
mod procfs;
mod state;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_oci::Digest;
use strata_oci::Store;

pub use bundle::{HostDevice, Limits};
pub use idmap::IdRange;
pub use outputs::{collect_from_upper, Collected, OutputDir, OutputLimits, OutputsError};
pub use outputs::{FILES_DIR, REPORT_FILE};
pub use rootfs::{LayerCache, LayerLimits};
pub use settings::{LauncherSettings, SubidFiles};

use runc::Runc;
use supervisor::SuperviseFiles;

/// Prefix of the runc ids of strata's containers.
pub const CONTAINER_PREFIX: &str = "strata-";

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
    #[error("job {job}: {source}")]
    IdMap {
        job: String,
        #[source]
        source: idmap::IdMapError,
    },
    #[error("job {job}: {source}")]
    Outputs {
        job: String,
        #[source]
        source: outputs::OutputsError,
    },
    #[error("job {job} asks for network, which needs pasta (Debian package passt) on PATH")]
    NoPasta { job: String },
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
    /// Outbound network through pasta, in the job's own network namespace; otherwise the
    /// job has only a loopback interface. Never the host's namespace.
    pub network: bool,
    /// Where the job's stdout and stderr go (appended).
    pub log_path: PathBuf,
    /// Directories collected when the job ends ([`LocalLauncher::collect_outputs`]).
    pub outputs: Vec<OutputDir>,
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
    /// Where GPU device nodes are looked for (`/dev`; see [`LocalLauncher::with_dev_dir`]).
    dev_dir: PathBuf,
    /// The host ids jobs' user namespaces map to.
    ids: IdRange,
    /// `pasta`, found on PATH, for jobs with network.
    pasta: Option<PathBuf>,
    /// Where jobs' root filesystems are mounted (see [`MOUNTS_ROOT`]).
    mounts_dir: PathBuf,
    /// How much a job's outputs may hold.
    output_limits: OutputLimits,
}

/// Jobs' root filesystems are mounted under `/run/strata/<home hash>/<job>`, not under
/// `$STRATA_HOME`: runc 1.1 mounts the root from inside the job's user namespace, as the
/// job's root (an unprivileged host uid), which must be able to walk every directory above
/// it, and `$STRATA_HOME` usually sits in a private home directory (`/root` is 0700).
/// `/run/strata` is 0711 (walk, not list); each home's directory is 0710 to the group of
/// its jobs' root.
pub const MOUNTS_ROOT: &str = "/run/strata";

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
        let run = home.join("run");
        let run_root = run.join("runc");
        let jobs_dir = run.join("jobs");
        let logs = home.join("logs");
        for dir in [&run_root, &jobs_dir, &logs] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let ids = IdRange::DEFAULT;
        // Other host users reach none of it: unpacked layers, runc state, jobs' upper
        // layers and logs are 0700.
        for dir in [
            layers.dir(),
            run.as_path(),
            run_root.as_path(),
            jobs_dir.as_path(),
            logs.as_path(),
        ] {
            private_dir(dir, 0o700, None).map_err(io(dir))?;
        }
        let mounts_root = Path::new(MOUNTS_ROOT);
        let absolute = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
        let mounts_dir =
            mounts_root.join(Digest::of(absolute.as_os_str().as_encoded_bytes()).short(16));
        std::fs::create_dir_all(&mounts_dir).map_err(io(&mounts_dir))?;
        private_dir(mounts_root, 0o711, None).map_err(io(mounts_root))?;
        private_dir(&mounts_dir, 0o710, Some(ids.gid)).map_err(io(&mounts_dir))?;
        Ok(LocalLauncher {
            store,
            layers,
            runc: Runc::new(&run_root),
            jobs_dir,
            dev_dir: PathBuf::from("/dev"),
            ids,
            pasta: find_on_path("pasta"),
            mounts_dir,
            output_limits: OutputLimits::default(),
        })
    }

    /// A launcher as `[launcher]` says (see [`LauncherSettings`]).
    pub fn with_settings(
        home: &Path,
        store: Store,
        settings: &LauncherSettings,
    ) -> Result<LocalLauncher, LaunchError> {
        LocalLauncher::new(home, store)?.with_id_range(settings.ids)
    }

    /// Maps jobs' ids to `ids` instead of [`IdRange::DEFAULT`].
    pub fn with_id_range(mut self, ids: IdRange) -> Result<LocalLauncher, LaunchError> {
        private_dir(&self.mounts_dir, 0o710, Some(ids.gid)).map_err(|source| LaunchError::Io {
            job: "-".into(),
            path: self.mounts_dir.clone(),
            source,
        })?;
        self.ids = ids;
        Ok(self)
    }

    /// Caps the outputs collected of each job at `limits` instead of the defaults.
    pub fn with_output_limits(mut self, limits: OutputLimits) -> LocalLauncher {
        self.output_limits = limits;
        self
    }

    pub fn id_range(&self) -> IdRange {
        self.ids
    }

    /// Looks for GPU device nodes (`nvidia<i>`, `nvidiactl`, `nvidia-uvm`...) under `dir`
    /// instead of `/dev`. They still appear under `/dev` in the container, with the
    /// major/minor numbers of the nodes found; tests make fake nodes in a temporary
    /// directory.
    pub fn with_dev_dir(mut self, dir: &Path) -> LocalLauncher {
        self.dev_dir = dir.to_path_buf();
        self
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

    /// Where the job's root filesystem is mounted (see [`MOUNTS_ROOT`]).
    pub fn mount_target(&self, job_id: &str) -> PathBuf {
        self.mounts_dir.join(job_id)
    }

    /// The job's overlay: layers, upper and work in its job directory, mounted at
    /// [`LocalLauncher::mount_target`].
    fn overlay_dirs(&self, job_id: &str) -> overlay::OverlayDirs {
        let mut dirs = overlay::OverlayDirs::under(&self.job_dir(job_id));
        dirs.target = self.mount_target(job_id);
        dirs
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
}

/// The working directory an image gives its processes (its config's `WorkingDir`), where a
/// job that names none runs: what its relative `--output` paths are relative to.
pub fn image_working_dir(store: &Store, image: &Digest) -> Result<Option<String>, LaunchError> {
    let info = image::load_image(store, image).map_err(|source| LaunchError::Image {
        job: "-".into(),
        source,
    })?;
    Ok(info.config.working_dir.filter(|d| !d.is_empty()))
}

/// Sets `dir`'s mode, and its group when given (the owner stays root).
fn private_dir(dir: &Path, mode: u32, group: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(gid) = group {
        std::os::unix::fs::lchown(dir, None, Some(gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

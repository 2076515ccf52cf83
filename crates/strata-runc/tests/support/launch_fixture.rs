//! The fixture base image in a private store, and a launcher on a private `STRATA_HOME`,
//! for tests that run real containers with runc.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use strata_oci::Store;
use strata_oci::{BlobDescriptor, Digest};
use strata_runc::{LaunchRequest, Limits, LocalLauncher};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The fixture base layout, built once (the script is fast when up to date).
pub fn base_layout() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        if let Some(dir) = std::env::var_os("STRATA_TEST_BASE_OCI") {
            return PathBuf::from(dir);
        }
        let out = repo_root().join("fixtures/base-image/out");
        let status = Command::new("bash")
            .arg(repo_root().join("fixtures/base-image/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run fixtures/base-image/build.sh");
        assert!(status.success(), "fixtures/base-image/build.sh failed");
        out.join("oci")
    })
}

/// Containers need root (runc, overlay mounts, cgroups). A test that needs them fails
/// without root: run such tests as root, or set `STRATA_SKIP_ROOT=1` at build time to
/// have them ignored (they carry `cfg_attr(skip_root, ignore)`).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test runs containers and needs root (runc, overlay mounts, cgroups), but runs \
         as uid {euid}; run it as root, or set STRATA_SKIP_ROOT=1 to have it ignored"
    );
}

pub struct Env {
    pub home: tempfile::TempDir,
    pub image: Digest,
}

impl Env {
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn store(&self) -> Store {
        Store::open(&self.home().join("oci"), &self.home().join("tmp")).expect("open store")
    }

    pub fn launcher(&self) -> LocalLauncher {
        LocalLauncher::new(self.home(), self.store()).expect("launcher")
    }

    pub fn log(&self, job: &str) -> PathBuf {
        self.home().join("logs").join(format!("{job}.log"))
    }

    pub fn request(&self, job: &str, command: &[&str]) -> LaunchRequest {
        std::fs::create_dir_all(self.home().join("logs")).expect("logs dir");
        LaunchRequest {
            job_id: job.to_string(),
            image: self.image.clone(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: None,
            limits: Limits {
                millicpus: Some(1000),
                memory_bytes: Some(512 << 20),
                pids: Some(256),
            },
            gpus: vec![],
            network: false,
            log_path: self.log(job),
            outputs: vec![],
        }
    }

    pub fn runc_root(&self) -> PathBuf {
        self.home().join("run").join("runc")
    }
}

/// A private home whose store holds the fixture base image, tagged `base`.
/// Panics unless root (see [`require_root`]).
pub fn env() -> Env {
    require_root();
    let layout = base_layout();
    let home = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&home.path().join("oci"), &home.path().join("tmp")).expect("store");
    let blobs = layout.join("blobs").join("sha256");
    for entry in std::fs::read_dir(&blobs).expect("fixture blobs") {
        let entry = entry.expect("entry");
        let hex = entry.file_name().to_string_lossy().to_string();
        let digest = Digest::from_hex(&hex).expect("blob name");
        store.import_file(&entry.path(), &digest).expect("import");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("index json");
    let manifest = &index["manifests"][0];
    let image: Digest = manifest["digest"]
        .as_str()
        .expect("digest")
        .parse()
        .expect("digest");
    let desc = BlobDescriptor {
        media_type: manifest["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        digest: image.clone(),
        size: manifest["size"].as_u64().unwrap_or(0),
    };
    store
        .tag("base", &desc, Default::default())
        .expect("tag base");
    Env { home, image }
}

/// Checks from outside strata (runc itself, /proc, mountinfo) that a job left nothing.
pub fn assert_gone(env: &Env, job: &str, pid: i32) {
    let cid = LocalLauncher::container_id(job);
    let state = Command::new("runc")
        .arg("--root")
        .arg(env.runc_root())
        .args(["state", &cid])
        .output()
        .expect("run runc state");
    assert!(!state.status.success(), "runc still knows {cid}");
    if Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        panic!("process {pid} of {job} still exists: {stat}");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let home = env.home().to_string_lossy().to_string();
    let left: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(&home) && l.contains(job))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(!env.home().join("run/jobs").join(job).exists());
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub const LONG: Duration = Duration::from_secs(60);

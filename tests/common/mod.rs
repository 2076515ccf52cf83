//! Shared harness of the end-to-end tests: fixtures (base image, wheels), the `strata`
//! binary with a private `STRATA_HOME`, and independent checks with skopeo, umoci and runc.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub mod server;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture base image layout (built once by `fixtures/base-image/build.sh`, which is
/// idempotent and fast when the image is up to date).
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

pub fn base_ref() -> String {
    format!("oci:{}:3.11", base_layout().display())
}

/// `oci:DIR/X.Y/oci:X.Y`, the fixture base of Python `version` (3.10 Ubuntu jammy, 3.12
/// Ubuntu noble, 3.13 Debian trixie) under `STRATA_TEST_BASES_DIR`, by default
/// `fixtures/base-image/out/bases` where `scripts/setup` builds them
/// (`fixtures/base-image/build.sh --python X.Y`). Fails the calling test when the base is
/// missing: tests that call it carry `#[cfg_attr(skip_bases, ignore = "...")]`, the only way
/// to not run them.
pub fn base_ref_for(version: &str) -> String {
    let dir = std::env::var_os("STRATA_TEST_BASES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("fixtures/base-image/out/bases"));
    let layout = dir.join(version).join("oci");
    assert!(
        layout.join("index.json").is_file(),
        "no base image for Python {version} at {}: run fixtures/base-image/build.sh --python \
         {version} {}",
        layout.display(),
        layout.parent().unwrap().display()
    );
    format!("oci:{}:{version}", layout.display())
}

/// A fresh directory of the fixture wheels (a `--find-links` dir), one per call so that
/// tests may tamper with theirs.
pub fn wheels(dir: &Path) -> PathBuf {
    let out = dir.join("wheels");
    let status = Command::new("python3")
        .arg(repo_root().join("fixtures/wheels/make_wheels.py"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run make_wheels.py");
    assert!(status.success(), "make_wheels.py failed");
    out
}

/// Fails the calling test, naming `what` needs root, unless this process is root. Tests that
/// call it carry `#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]`: the only
/// way to not run them is to say so, never a silent pass.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{what} needs root (running as uid {euid}); run as root, or set STRATA_SKIP_ROOT=1 \
         to mark the root-only tests as ignored"
    );
}

pub fn requirements(name: &str) -> PathBuf {
    repo_root().join("fixtures/requirements").join(name)
}

/// One test's world: a private STRATA_HOME and wheel dir.
pub struct World {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub wheels: PathBuf,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let wheels = wheels(dir.path());
        World { dir, home, wheels }
    }

    /// Another STRATA_HOME sharing this world's wheels.
    pub fn with_home(&self, name: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        World {
            home: dir.path().join(name),
            dir,
            wheels: self.wheels.clone(),
        }
    }

    /// `strata ARGS` in this world (its STRATA_HOME, run in its project directory), for the
    /// caller to adjust before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("STRATA_HOME", &self.home)
            .env_remove("STRATA_BASE")
            .env_remove("STRATA_JOBS")
            // The job commands go to a server when one is set or logged in to: never here
            // unless a test says so (it sets STRATA_SERVER or logs in under this directory).
            .env_remove("STRATA_SERVER")
            .env_remove("STRATA_TOKEN")
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        command
    }

    pub fn strata(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run strata")
    }

    /// `strata build --json` of a requirement file on `base`, offline against the wheels,
    /// with `extra` flags: a command to adjust before running.
    pub fn build_command(&self, requirements: &Path, base: &str, extra: &[&str]) -> Command {
        let req = requirements.to_string_lossy().into_owned();
        let wheels = self.wheels.to_string_lossy().into_owned();
        let mut command = self.command(&["build", "-r", &req, "--base", base]);
        command
            .args(["--find-links", &wheels, "--no-index", "--json"])
            .args(extra);
        command
    }

    /// `strata build --json` of a fixture requirement file, offline against the wheels.
    pub fn build(&self, requirements: &Path, extra: &[&str]) -> Output {
        self.build_command(requirements, &base_ref(), extra)
            .output()
            .expect("run strata")
    }

    /// Like [`World::build`], asserting success and parsing the JSON.
    /// `python -c script` in the image `built` (as `build_ok` answers) unpacked into the
    /// bundle `DIR/bundle`, run by runc; asserts it succeeds and returns its stdout, trimmed.
    pub fn python_in(&self, built: &Value, bundle: &str, script: &str) -> String {
        let bundle = self.dir.path().join(bundle);
        umoci_unpack(&self.oci(), built["tag"].as_str().unwrap(), &bundle);
        let (code, stdout, err) = runc_run(&bundle, &["python", "-c", script]);
        assert_eq!(code, 0, "python in the image failed: {err}");
        stdout.trim().to_string()
    }

    pub fn build_ok(&self, requirements: &Path, extra: &[&str]) -> Value {
        let out = self.build(requirements, extra);
        assert!(
            out.status.success(),
            "strata build failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The flags naming fixture environment `file` offline:
    /// `-r FILE --base BASE -f WHEELS --no-index`.
    pub fn env_args(&self, file: &str) -> Vec<String> {
        let req = requirements(file).display().to_string();
        let wheels = self.wheels.display().to_string();
        [
            "-r",
            &req,
            "--base",
            &base_ref(),
            "-f",
            &wheels,
            "--no-index",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `strata status JOB --json`, asserting success.
    pub fn status(&self, id: &str) -> Value {
        let out = self.strata(&["status", id, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls `strata status` until the job is in one of `states`; fails after `limit`.
    pub fn wait_for(&self, id: &str, states: &[&str], limit: std::time::Duration) -> Value {
        let start = std::time::Instant::now();
        loop {
            let s = self.status(id);
            if states.contains(&s["state"].as_str().unwrap()) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} never reached {states:?}: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The layer digests of a manifest in this world's store.
    pub fn manifest_layers(&self, digest: &str) -> Vec<String> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let bytes = fs::read(self.oci().join("blobs/sha256").join(hex)).unwrap();
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn oci(&self) -> PathBuf {
        self.home.join("oci")
    }

    /// Every file of the store and the rows of the database's index tables: what "the store
    /// is unchanged" compares.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut snap = BTreeMap::new();
        let oci = self.oci();
        if oci.exists() {
            for entry in walk(&oci) {
                let rel = entry
                    .strip_prefix(&self.home)
                    .unwrap()
                    .display()
                    .to_string();
                let bytes = fs::read(&entry).unwrap_or_default();
                snap.insert(rel, sha256_hex(&bytes));
            }
        }
        let db = self.home.join("strata.db");
        if db.exists() {
            for table in ["env_index", "lock_index", "layer_index", "pushes"] {
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(sorted(c.execute('SELECT * FROM '+sys.argv[2]).fetchall()))",
                    ])
                    .arg(&db)
                    .arg(table)
                    .output()
                    .expect("python3 sqlite3");
                assert!(
                    out.status.success(),
                    "reading {table} of {}: {}",
                    db.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                snap.insert(
                    format!("db:{table}"),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                );
            }
        }
        snap
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The states a job ends in.
pub const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled", "timed_out"];

/// The `[build-system]` of a fixture project or sdist: the fixture backend, a wheel of the
/// fixture wheels (installed from there into the isolated build environment, offline).
pub const FIXTURE_BACKEND: &str =
    "[build-system]\nrequires = [\"strata-fixture-backend\"]\nbuild-backend = \"strata_fixture_backend\"\n";

/// `git ARGS` in `dir` with a test identity, asserting success; its output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir))
    .trim()
    .to_string()
}

/// A git work tree `ROOT/NAME-src` of package `name` (built by the fixture backend; its
/// first commit sets `NAME.VALUE = 'one'`) and the bare repository `ROOT/NAME.git` it pushes
/// to, which requirements and locks name: (work tree, bare repository).
pub fn git_project(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let work = root.join(format!("{name}-src"));
    fs::create_dir_all(work.join(name)).unwrap();
    fs::write(
        work.join("pyproject.toml"),
        format!("{FIXTURE_BACKEND}\n[project]\nname = \"{name}\"\nversion = \"1.0\"\n"),
    )
    .unwrap();
    git(
        root,
        &["init", "--quiet", "-b", "main", &format!("{name}-src")],
    );
    git_commit_value(&work, name, "one");
    let bare = root.join(format!("{name}.git"));
    git(
        root,
        &[
            "clone",
            "--quiet",
            "--bare",
            &format!("{name}-src"),
            &format!("{name}.git"),
        ],
    );
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    (work, bare)
}

/// Commits `NAME.VALUE = value` in `work` (a [`git_project`]); the commit id.
pub fn git_commit_value(work: &Path, name: &str, value: &str) -> String {
    fs::write(
        work.join(name).join("__init__.py"),
        format!("VALUE = '{value}'\n"),
    )
    .unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "--quiet", "-m", value]);
    git(work, &["rev-parse", "HEAD"])
}

/// Runs a command, asserting success, returning stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks an image with umoci (independently of strata) into a runtime bundle.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    // Without root umoci cannot restore owners (`--rootless` would hide that difference).
    require_root("umoci unpack");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle));
}

/// Runs `args` in a bundle with runc and returns (exit code, stdout, stderr).
pub fn runc_run(bundle: &Path, args: &[&str]) -> (i32, String, String) {
    require_root("runc run");
    let config_path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["args"] = serde_json::json!(args);
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let state = tempfile::tempdir().unwrap();
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "strata-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let out = Command::new("runc")
        .arg("--root")
        .arg(state.path())
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("run runc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The digests of the layers of a build's JSON output that were not reused.
pub fn rebuilt_layers(built: &Value) -> Vec<Value> {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["reused"] == Value::Bool(false))
        .cloned()
        .collect()
}

/// A running `strata agent` of a world, killed on drop.
pub struct AgentProcess(Child);

impl AgentProcess {
    /// Starts the agent; fails the test at once when not root (the agent runs jobs with
    /// runc and overlay mounts).
    pub fn start(world: &World) -> AgentProcess {
        AgentProcess::start_with_grace(world, 2)
    }

    /// [`AgentProcess::start`] with the grace period of a cancel, in seconds.
    pub fn start_with_grace(world: &World, grace: u32) -> AgentProcess {
        require_root("the agent (runc, overlay mounts)");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["agent", "--grace", &grace.to_string(), "--tick-ms", "50"])
            .env("STRATA_HOME", &world.home)
            .current_dir(world.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        AgentProcess(child)
    }

    pub fn kill(self) {}
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `NAME-VERSION.tar.gz` into `dir`: a pyproject.toml naming `backend` (with its
/// `backend-path`, if any) and a module `NAME` setting `VALUE`, plus `extra` files.
pub fn write_sdist(dir: &Path, name: &str, build_system: &str, extra: &[(&str, &str)]) -> PathBuf {
    let base = format!("{name}-1.0");
    let pyproject = format!("{build_system}\n[project]\nname = \"{name}\"\nversion = \"1.0\"\n");
    let pkg_info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
    let module = format!("VALUE = \"{name} built from its sdist\"\n");
    let mut files = vec![
        (format!("{base}/PKG-INFO"), pkg_info),
        (format!("{base}/pyproject.toml"), pyproject),
        (format!("{base}/{name}/__init__.py"), module),
    ];
    for (path, content) in extra {
        files.push((format!("{base}/{path}"), content.to_string()));
    }
    let path = dir.join(format!("{base}.tar.gz"));
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (entry, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, entry, content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    path
}

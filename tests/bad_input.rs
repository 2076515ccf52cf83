//! Bad input gets a clear error naming the culprit, a documented exit code, and leaves the
//! store exactly as it was.

mod common;

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};

use common::*;

const EXIT_BAD_INPUT: i32 = 3;

/// Builds something first so that "unchanged" compares a non-empty store.
fn world_with_a_build() -> World {
    let world = World::new();
    world.build_ok(&requirements("shared-a.txt"), &[]);
    world
}

/// Runs a failing build and checks its exit code, that stderr names every culprit, and
/// that the store did not change.
fn assert_rejected(
    world: &World,
    requirements: &std::path::Path,
    extra: &[&str],
    culprits: &[&str],
) {
    let before = world.snapshot();
    let out = world.build(requirements, extra);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "stderr: {err}");
    for culprit in culprits {
        assert!(
            err.contains(culprit),
            "error does not name {culprit:?}: {err}"
        );
    }
    assert!(out.stdout.is_empty(), "nothing on stdout for a failure");
    assert_eq!(before, world.snapshot(), "the store changed: {err}");
}

#[test]
fn unknown_package_is_named() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-unknown.txt"),
        &[],
        &["nosuchpkg"],
    );
}

#[test]
fn conflicting_pins_are_named() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-conflict.txt"),
        &[],
        &["conflict-a", "conflict-b", "gamma"],
    );
}

#[test]
fn sdist_only_package_is_named_with_the_target() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-sdistonly.txt"),
        &[],
        &["sdistonly", "wheel"],
    );
}

#[test]
fn wheels_escaping_the_venv_are_rejected() {
    let world = world_with_a_build();
    for (file, culprit) in [
        ("evil-dotdot.txt", "../../../../tmp/evil.txt"),
        ("evil-abs.txt", "/etc/evil.txt"),
        ("evil-link.txt", "evil_link/escape"),
    ] {
        let wheel = file.trim_end_matches(".txt").replace('-', "_");
        assert_rejected(&world, &requirements(file), &[], &[culprit, &wheel]);
    }
}

#[test]
fn malformed_line_is_named_with_its_number() {
    let world = world_with_a_build();
    let req = world.dir.path().join("requirements.txt");
    fs::write(&req, "alpha==1.0.0\n# fine\nbeta>=\ngamma\n").unwrap();
    assert_rejected(&world, &req, &[], &["requirements.txt:3", "beta>="]);
}

/// Lines uv would refuse with a message about its own temporary file and a byte position are
/// refused by strata first, naming the user's file and line, and nothing reaches uv.
#[test]
fn lines_uv_would_refuse_are_named_by_strata_first() {
    let world = world_with_a_build();
    let req = world.dir.path().join("requirements.txt");
    for bad in [
        "beta===<<1",
        "beta ; python_version >= '3.x'",
        "beta @ https://h/alpha-1.0-py3-none-any.whl",
    ] {
        fs::write(&req, format!("alpha==1.0.0\n{bad}\n")).unwrap();
        assert_rejected(&world, &req, &[], &["requirements.txt:2", bad]);
        let err = stderr(&world.build(&req, &[]));
        assert!(!err.contains("position"), "uv's message leaked: {err}");
    }
}

#[test]
fn wheel_bytes_that_differ_from_the_pinned_hash_are_refused() {
    let world = world_with_a_build();
    let req = world.dir.path().join("hashed.txt");
    let wrong = "0".repeat(64);
    fs::write(&req, format!("gamma==0.3.0 --hash=sha256:{wrong}\n")).unwrap();
    assert_rejected(&world, &req, &[], &["gamma"]);
}

#[test]
fn unreachable_registry_is_named_and_nothing_is_built() {
    let world = world_with_a_build();
    let before = world.snapshot();
    let out = world.build(
        &requirements("basic.txt"),
        &["--push", "127.0.0.1:1/team/env"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert_eq!(before, world.snapshot(), "{err}");
}

/// A tmpfs mounted on a directory, unmounted on drop. Only root may mount one.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` on `path`. Only root may: anyone else fails here, and as
    /// root a failed mount fails too (it is a broken machine, not a reason to skip).
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        require_root("a full disk (a tmpfs mount)");
        fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} failed as root: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Fills the disk but for `spare` bytes.
    fn fill_leaving(&self, spare: u64) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("run df");
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output");
        let size = avail.saturating_sub(spare);
        let chunk = vec![0u8; 1 << 20];
        let mut file = fs::File::create(&filler).unwrap();
        let mut written = 0u64;
        while written < size {
            let n = (size - written).min(chunk.len() as u64) as usize;
            use std::io::Write;
            if file.write_all(&chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_full_disk_is_named_and_leaves_the_store_as_it_was() {
    let world = World::new();
    let disk = SmallDisk::mount(&world.home, "96m");
    world.build_ok(&requirements("shared-a.txt"), &[]);
    // Ever more room, so the disk fills at different stages (uv's cache, the wheel cache,
    // layers, the database) until the build fits.
    let mut failures = 0;
    for spare in (1..=16).map(|k| k * (64 << 10)) {
        let filler = disk.fill_leaving(spare);
        let before = world.snapshot();
        let out = world.build(&requirements("basic.txt"), &[]);
        fs::remove_file(filler).unwrap();
        if out.status.success() {
            break;
        }
        failures += 1;
        let err = stderr(&out);
        eprintln!("full disk, {spare} bytes spare: {err}");
        assert!(
            err.contains("No space left on device") || err.contains("disk is full"),
            "the error says the disk is full: {err}"
        );
        assert!(
            err.contains(&world.home.display().to_string()),
            "the error names where it was writing: {err}"
        );
        assert_eq!(before, world.snapshot(), "the store changed: {err}");
    }
    assert!(
        failures > 0,
        "the disk was never full enough to fail a build"
    );

    // Room again: the same build succeeds and gives the image a roomy store gives.
    let built = world.build_ok(&requirements("basic.txt"), &[]);
    let elsewhere = world
        .with_home("roomy")
        .build_ok(&requirements("basic.txt"), &[]);
    assert_eq!(built["digest"], elsewhere["digest"]);
}

/// Every blob of the store hashes to its name, and every tagged image is complete: its
/// manifest, config and layers are all there (skopeo reads each manifest too).
fn assert_store_whole(world: &World) {
    let blobs = world.oci().join("blobs/sha256");
    for entry in fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "blob {name} does not match its name"
        );
    }
    let blob = |digest: &str| blobs.join(digest.trim_start_matches("sha256:"));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(world.oci().join("index.json")).unwrap()).unwrap();
    for entry in index["manifests"].as_array().unwrap() {
        let tag = entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(blob(entry["digest"].as_str().unwrap())).unwrap())
                .unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        for d in std::iter::once(&manifest["config"]).chain(layers) {
            let digest = d["digest"].as_str().unwrap();
            assert!(blob(digest).is_file(), "{tag}: blob {digest} is missing");
        }
        let inspect = std::process::Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{tag}", world.oci().display()))
            .output()
            .unwrap();
        assert!(inspect.status.success(), "skopeo cannot read {tag}");
    }
}

/// Path → size of every file under the home but the database: what a build's work changes
/// (uv's cache, the wheel cache, temporary files, the store). Without uv's cache with
/// `store_only`: what a build writes once it has resolved.
fn home_files(world: &World, store_only: bool) -> std::collections::BTreeMap<String, u64> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![world.home.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(&world.home)
                .unwrap()
                .display()
                .to_string();
            if rel.starts_with("strata.db") || (store_only && rel == "uv-cache") {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue; // Removed while we looked.
            };
            if meta.is_dir() {
                dirs.push(path);
            } else {
                files.insert(rel, meta.len());
            }
        }
    }
    files
}

fn is_tagged(world: &World, tag: &str) -> bool {
    let images = world.strata(&["images", "--json"]);
    assert!(images.status.success(), "{}", stderr(&images));
    let listed: serde_json::Value = serde_json::from_slice(&images.stdout).unwrap();
    listed["images"].to_string().contains(tag)
}

/// When a round's kill is sent.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start.
    Start(u64),
    /// This long after the build first wrote to the wheel cache, its temporary files or the
    /// store (after resolving, a build is mostly silent: uv, hashing the base), whatever the
    /// machine's load.
    FirstWrite(u64),
}

/// Waits (bounded) until the build wrote past its resolution or exited.
fn wait_for_first_write(world: &World, child: &mut std::process::Child) {
    let before = home_files(world, true);
    let start = std::time::Instant::now();
    while home_files(world, true) == before && child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the build wrote nothing in two minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_build_killed_at_random_points_leaves_a_whole_store() {
    let world = world_with_a_build();
    let reference = world
        .with_home("reference")
        .build_ok(&requirements("basic.txt"), &[]);
    let tag = reference["tag"].as_str().unwrap();
    let req = requirements("basic.txt");
    let mut mid_build = 0;
    // An early kill (resolution), then kills spread over the short stretch where a build
    // writes: wheels, layers, blobs, index, tag (about 100 ms here, after resolving and
    // hashing), then one later from the start. A build a kill missed is tagged and ends the
    // rounds, so the late kill, which a fast build outruns, comes last.
    let rounds = [
        KillAt::Start(30),
        KillAt::FirstWrite(0),
        KillAt::FirstWrite(20),
        KillAt::FirstWrite(40),
        KillAt::FirstWrite(70),
        KillAt::FirstWrite(110),
        KillAt::FirstWrite(200),
        KillAt::Start(300),
    ];
    for at in rounds {
        let before = home_files(&world, false);
        // In its own process group, so that the uv it runs is killed with it.
        let mut child = world
            .build_command(&req, &base_ref(), &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let delay_ms = match at {
            KillAt::Start(ms) => ms,
            KillAt::FirstWrite(ms) => {
                wait_for_first_write(&world, &mut child);
                ms
            }
        };
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let status = child.wait().unwrap();
        // In the middle of the build, judged from outside: the OS says the kill ended it
        // (it had not exited), it had written something, and its image is not tagged.
        let killed = status.signal() == Some(libc::SIGKILL);
        let after = home_files(&world, false);
        let wrote: Vec<&str> = after
            .iter()
            .filter(|(path, size)| before.get(*path) != Some(size))
            .map(|(path, _)| path.split('/').next().unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let tagged = is_tagged(&world, tag);
        if killed && !wrote.is_empty() && !tagged {
            mid_build += 1;
        }
        eprintln!("killed at {at:?}: {status}; wrote in {wrote:?}; tagged: {tagged}");
        assert_store_whole(&world);
        // Start afresh for the next round, keeping what the killed builds committed.
        if tagged {
            break;
        }
    }
    assert!(
        mid_build >= 1,
        "no kill landed in the middle of a build (running, something written, not tagged)"
    );
    let built = world.build_ok(&requirements("basic.txt"), &[]);
    assert_eq!(built["digest"], reference["digest"]);
    assert_store_whole(&world);
}

/// A copy of the test base's OCI layout in `world`'s directory, to tamper with.
fn copy_of_the_base(world: &World) -> std::path::PathBuf {
    let base = world.dir.path().join("base");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(base_layout())
        .arg(&base)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -r of the base layout");
    base
}

/// Builds basic.txt on the base layout `base` (tag 3.11), which must be refused with the
/// store left as it was; returns the error output.
fn refused_on(world: &World, base: &std::path::Path) -> String {
    let before = world.snapshot();
    let out = world
        .build_command(
            &requirements("basic.txt"),
            &format!("oci:{}:3.11", base.display()),
            &[],
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "built on a bad base: {err}");
    assert_eq!(before, world.snapshot(), "the store changed: {err}");
    err
}

/// A base image whose layer no longer hashes to its digest: the build names the blob and
/// adds nothing to the store (the base's blobs are copied while uv resolves and committed
/// only with the image), and leaves no temporary copy behind.
#[test]
fn a_tampered_base_layer_is_named_and_nothing_is_added() {
    let world = World::new();
    // An empty store, none of the base's blobs in it.
    assert!(world.strata(&["images"]).status.success());
    let base = copy_of_the_base(&world);
    let blobs = base.join("blobs/sha256");
    let largest = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&largest, bytes).unwrap();

    let err = refused_on(&world, &base);
    let name = largest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "the error names the blob: {err}");
    let left: Vec<_> = fs::read_dir(world.home.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn a_base_manifest_too_large_to_be_one_is_refused_unread() {
    use sha2::Digest as _;
    let world = World::new();
    assert!(world.strata(&["images"]).status.success());
    let base = copy_of_the_base(&world);
    // The tag's manifest, padded past 4 MiB with whitespace: still valid JSON, and named by
    // its own digest, so only its size is wrong.
    let index_path = base.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = &mut index["manifests"][0];
    let old = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let mut padded = fs::read(base.join("blobs/sha256").join(old)).unwrap();
    padded.extend(std::iter::repeat_n(b' ', 5 << 20));
    let hex = hex::encode(sha2::Sha256::digest(&padded));
    fs::write(base.join("blobs/sha256").join(&hex), &padded).unwrap();
    entry["digest"] = serde_json::Value::String(format!("sha256:{hex}"));
    entry["size"] = serde_json::json!(padded.len());
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let err = refused_on(&world, &base);
    assert!(err.contains(&hex) && err.contains("larger than"), "{err}");
}

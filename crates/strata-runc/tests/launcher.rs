//! The local launcher against real runc, overlay and cgroups, on the fixture base image.

#[path = "support/launch_fixture.rs"]
mod fixture;

use std::time::Duration;

use fixture::{assert_gone, env, read_log, LONG};
use strata_runc::{ContainerState, LaunchError, Limits};

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_prints_and_exits_zero_then_leaves_nothing() {
    let env = env();
    let launcher = env.launcher();
    let mut req = env.request(
        "ok1",
        &[
            "sh",
            "-c",
            "echo hello from $PWD; echo oops >&2; echo \"lr=$LR\"",
        ],
    );
    req.env = vec![("LR".into(), "0.1".into())];
    req.cwd = Some("/tmp".into());
    let running = launcher.launch(&req).unwrap();
    assert!(running.pid > 0);
    let outcome = launcher.wait("ok1", LONG).unwrap().expect("job ended");
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert!(!outcome.oom_killed);
    let log = read_log(&req.log_path);
    assert!(log.contains("hello from /tmp"), "{log}");
    assert!(log.contains("oops"), "{log}");
    assert!(log.contains("lr=0.1"), "{log}");
    launcher.cleanup("ok1").unwrap();
    assert_gone(&env, "ok1", running.pid);
    assert_eq!(launcher.state("ok1").unwrap(), ContainerState::Absent);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn exit_code_is_recorded() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request("exit3", &["sh", "-c", "exit 3"]))
        .unwrap();
    let outcome = launcher.wait("exit3", LONG).unwrap().expect("ended");
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.code(), Some(3));
    assert!(outcome.status_known);
    // The outcome stays readable until cleanup.
    assert_eq!(
        launcher.state("exit3").unwrap(),
        ContainerState::Exited(outcome)
    );
    launcher.cleanup("exit3").unwrap();
    assert_gone(&env, "exit3", running.pid);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn two_jobs_on_one_image_unpack_its_layers_once() {
    let env = env();
    let launcher = env.launcher();
    assert_eq!(launcher.extraction_count().unwrap(), 0);
    let first = launcher
        .launch(&env.request("twice-a", &["python3", "-c", "print('a')"]))
        .unwrap();
    assert!(first.layers_extracted > 0);
    let after_first = launcher.extraction_count().unwrap();
    assert_eq!(after_first, first.layers_extracted);
    let second = launcher
        .launch(&env.request("twice-b", &["python3", "-c", "print('b')"]))
        .unwrap();
    assert_eq!(second.layers_extracted, 0);
    assert_eq!(launcher.extraction_count().unwrap(), after_first);
    for job in ["twice-a", "twice-b"] {
        let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
        assert_eq!(
            outcome.exit_code,
            Some(0),
            "{job}: {}",
            read_log(&env.log(job))
        );
        launcher.cleanup(job).unwrap();
    }
    assert_eq!(read_log(&env.log("twice-b")).trim(), "b");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_write_in_one_job_is_not_seen_by_the_next() {
    let env = env();
    let launcher = env.launcher();
    launcher
        .launch(&env.request("w1", &["sh", "-c", "echo x > /etc/marker; rm /bin/ls"]))
        .unwrap();
    assert_eq!(
        launcher.wait("w1", LONG).unwrap().unwrap().exit_code,
        Some(0)
    );
    launcher.cleanup("w1").unwrap();
    launcher
        .launch(&env.request(
            "w2",
            &["sh", "-c", "test ! -e /etc/marker && test -e /bin/ls"],
        ))
        .unwrap();
    let outcome = launcher.wait("w2", LONG).unwrap().unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{}", read_log(&env.log("w2")));
    launcher.cleanup("w2").unwrap();
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn cancel_of_a_sleeping_job_leaves_no_process_mount_or_container() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request("sleepy", &["sleep", "600"]))
        .unwrap();
    assert!(matches!(
        launcher.state("sleepy").unwrap(),
        ContainerState::Running { .. }
    ));
    let outcome = launcher.cancel("sleepy", Duration::from_secs(2)).unwrap();
    // `sleep` as the container's PID 1 has no SIGTERM handler, so only SIGKILL ends it.
    assert!(outcome.signal.is_some(), "{outcome:?}");
    assert_gone(&env, "sleepy", running.pid);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn cancel_escalates_to_sigkill_when_sigterm_is_ignored() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request("stubborn", &["sh", "-c", "trap '' TERM; sleep 600"]))
        .unwrap();
    let started = std::time::Instant::now();
    let grace = Duration::from_secs(1);
    let outcome = launcher.cancel("stubborn", grace).unwrap();
    assert!(started.elapsed() >= grace);
    assert_eq!(outcome.signal, Some(9), "{outcome:?}");
    assert_eq!(outcome.code(), Some(137));
    assert_gone(&env, "stubborn", running.pid);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn cancel_lets_a_job_that_handles_sigterm_exit_by_itself() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request(
            "polite",
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 42' TERM; sleep 600 & wait",
            ],
        ))
        .unwrap();
    // Let the shell install its trap.
    std::thread::sleep(Duration::from_millis(300));
    let outcome = launcher.cancel("polite", Duration::from_secs(20)).unwrap();
    assert_eq!(outcome.exit_code, Some(42), "{outcome:?}");
    assert!(read_log(&env.log("polite")).contains("bye"));
    assert_gone(&env, "polite", running.pid);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn memory_limit_kills_a_hungry_job_and_records_oom() {
    let env = env();
    let launcher = env.launcher();
    let mut req = env.request(
        "hungry",
        &["python3", "-c", "b = b'x' * (500 << 20); print(len(b))"],
    );
    req.limits = Limits {
        millicpus: Some(1000),
        memory_bytes: Some(64 << 20),
        pids: Some(64),
    };
    let running = launcher.launch(&req).unwrap();
    let outcome = launcher.wait("hungry", LONG).unwrap().expect("ended");
    assert!(
        outcome.oom_killed,
        "{outcome:?} {}",
        read_log(&req.log_path)
    );
    assert_eq!(outcome.signal, Some(9));
    launcher.cleanup("hungry").unwrap();
    assert_gone(&env, "hungry", running.pid);
}

// The network tests (host loopback out of reach with or without network) are in
// tests/isolation.rs.

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_survives_its_launcher_and_is_readopted() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request("durable", &["sh", "-c", "sleep 2; echo finished; exit 5"]))
        .unwrap();
    drop(launcher);

    let agent = env.launcher();
    let listed = agent.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].job_id, "durable");
    assert_eq!(listed[0].container_id, "strata-durable");
    assert_eq!(
        listed[0].state,
        ContainerState::Running { pid: running.pid }
    );
    let outcome = agent.wait("durable", LONG).unwrap().expect("ended");
    assert_eq!(outcome.exit_code, Some(5));
    assert!(read_log(&env.log("durable")).contains("finished"));
    let listed = agent.list().unwrap();
    assert!(matches!(listed[0].state, ContainerState::Exited(o) if o.exit_code == Some(5)));
    agent.cleanup("durable").unwrap();
    assert!(agent.list().unwrap().is_empty());
    assert_gone(&env, "durable", running.pid);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_command_missing_from_the_image_is_a_clear_error_and_leaves_nothing() {
    let env = env();
    let launcher = env.launcher();
    let err = launcher
        .launch(&env.request("nocmd", &["no-such-program", "--flag"]))
        .unwrap_err();
    assert!(matches!(err, LaunchError::StartFailed { .. }), "{err}");
    assert!(err.to_string().contains("no-such-program"), "{err}");
    assert!(launcher.list().unwrap().is_empty());
    assert_gone(&env, "nocmd", 0);
    // The id is free again.
    launcher.launch(&env.request("nocmd", &["true"])).unwrap();
    launcher.wait("nocmd", LONG).unwrap().unwrap();
    launcher.cleanup("nocmd").unwrap();
}

/// A stand-in for `/dev` with fake NVIDIA device nodes, numbered as the driver numbers
/// them: `nvidia<i>` (for each of `gpus`) and `nvidiactl` on major 195, `nvidia-uvm` and
/// `nvidia-uvm-tools` on a dynamic major. `regular` names plain files that look like GPUs
/// but are not device nodes. No driver answers for them, which is fine: the launcher only
/// reads their numbers.
fn fake_dev(gpus: &[u32], regular: &[&str]) -> tempfile::TempDir {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // Searchable by the job's root, as /dev is: runc binds the nodes from inside the job's
    // user namespace.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut nodes: Vec<(String, u32, u32)> = gpus
        .iter()
        .map(|&i| (format!("nvidia{i}"), 195, i))
        .collect();
    nodes.push(("nvidiactl".into(), 195, 255));
    nodes.push(("nvidia-uvm".into(), 511, 0));
    nodes.push(("nvidia-uvm-tools".into(), 511, 1));
    for (name, major, minor) in nodes {
        let path = std::ffi::CString::new(dir.path().join(&name).as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod on a NUL-terminated path inside our own temporary directory.
        let made = unsafe {
            libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        assert_eq!(made, 0, "mknod {name}: {}", std::io::Error::last_os_error());
    }
    for name in regular {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    dir
}

/// Lists the `/dev/nvidia*` nodes the job sees (name, type, major, minor) and tries to open
/// `/dev/nvidia0`: with no driver the kernel says ENXIO (6) once the device cgroup lets the
/// open through, EPERM (1) when the cgroup denies it, ENOENT (2) when there is no node.
const SHOW_GPUS: &str = r#"
import os, stat
for n in sorted(os.listdir('/dev')):
    if n.startswith('nvidia'):
        st = os.stat('/dev/' + n)
        kind = 'c' if stat.S_ISCHR(st.st_mode) else '?'
        print('dev', n, kind, os.major(st.st_rdev), os.minor(st.st_rdev))
try:
    open('/dev/nvidia0', 'rb').close()
    print('open ok')
except OSError as e:
    print('open errno', e.errno)
"#;

/// The devices and device cgroup rules of a job's runtime spec: `(path, major, minor)` of
/// the device nodes bound under `/dev`, and `(major, minor)` of the allowing rules.
fn spec_devices(launcher: &strata_runc::LocalLauncher, job: &str) -> SpecDevices {
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(launcher.job_dir(job).join("config.json")).expect("config.json"),
    )
    .expect("config.json is JSON");
    let linux = &config["linux"];
    // Device nodes are bind-mounted from the host (the job runs in a user namespace, where
    // runc cannot make nodes): their numbers are the bound node's.
    let nodes = config["mounts"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|m| m["type"] == "bind" && m["destination"].as_str().unwrap().starts_with("/dev/"))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            let rdev = std::fs::metadata(m["source"].as_str().unwrap())
                .expect("bound device node")
                .rdev();
            (
                m["destination"].as_str().unwrap().to_string(),
                i64::from(libc::major(rdev)),
                i64::from(libc::minor(rdev)),
            )
        })
        .collect();
    let allowed = linux["resources"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["allow"] == true)
        .map(|r| (r["major"].as_i64().unwrap(), r["minor"].as_i64().unwrap()))
        .collect();
    (nodes, allowed)
}

type SpecDevices = (Vec<(String, i64, i64)>, Vec<(i64, i64)>);

/// Runs `SHOW_GPUS` as a job asking for `gpus` and returns what it reported, the spec's
/// devices and the launch's view of present and missing GPUs.
fn run_gpu_job(
    env: &fixture::Env,
    launcher: &strata_runc::LocalLauncher,
    job: &str,
    gpus: &[u32],
) -> (Vec<String>, SpecDevices, strata_runc::Running) {
    let mut req = env.request(job, &["python3", "-c", SHOW_GPUS]);
    req.gpus = gpus.to_vec();
    let running = launcher.launch(&req).unwrap();
    let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
    let log = read_log(&req.log_path);
    assert_eq!(outcome.exit_code, Some(0), "{log}");
    let spec = spec_devices(launcher, job);
    launcher.cleanup(job).unwrap();
    let lines = log.lines().map(str::to_string).collect();
    (lines, spec, running)
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_gets_exactly_the_gpus_it_asked_for_and_their_control_devices() {
    let env = env();
    // GPU 2 is on the machine but not asked for.
    let dev = fake_dev(&[0, 1, 2], &[]);
    let launcher = env.launcher().with_dev_dir(dev.path());

    let (seen, (nodes, allowed), running) = run_gpu_job(&env, &launcher, "gpu01", &[0, 1]);
    assert_eq!(running.gpus, [0, 1]);
    assert!(running.missing_gpus.is_empty(), "{running:?}");
    let expected = [
        ("/dev/nvidia0", 195, 0),
        ("/dev/nvidia1", 195, 1),
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-uvm", 511, 0),
        ("/dev/nvidia-uvm-tools", 511, 1),
    ];
    let expected_nodes: Vec<(String, i64, i64)> = expected
        .iter()
        .map(|(p, ma, mi)| (p.to_string(), *ma, *mi))
        .collect();
    assert_eq!(nodes, expected_nodes);
    let expected_rules: Vec<(i64, i64)> = expected.iter().map(|(_, ma, mi)| (*ma, *mi)).collect();
    assert_eq!(allowed, expected_rules);
    assert_eq!(
        seen,
        [
            "dev nvidia-uvm c 511 0",
            "dev nvidia-uvm-tools c 511 1",
            "dev nvidia0 c 195 0",
            "dev nvidia1 c 195 1",
            "dev nvidiactl c 195 255",
            // The device cgroup let the open reach the (absent) driver.
            "open errno 6",
        ]
    );

    let (seen, (nodes, allowed), running) = run_gpu_job(&env, &launcher, "gpu-none", &[]);
    assert!(running.gpus.is_empty() && running.missing_gpus.is_empty());
    assert!(nodes.is_empty(), "{nodes:?}");
    assert!(allowed.is_empty(), "{allowed:?}");
    assert_eq!(seen, ["open errno 2"]);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn gpus_absent_on_this_machine_are_reported_not_exposed() {
    let env = env();
    // GPU 0 is there; "nvidia1" is a plain file, not a device node; GPU 2 is not there.
    let dev = fake_dev(&[0], &["nvidia1"]);
    let launcher = env.launcher().with_dev_dir(dev.path());
    let (seen, (nodes, allowed), running) = run_gpu_job(&env, &launcher, "gpu-absent", &[1, 2]);
    assert!(running.gpus.is_empty(), "{running:?}");
    assert_eq!(running.missing_gpus, [1, 2]);
    // Without a GPU, the control devices are not exposed either.
    assert!(nodes.is_empty(), "{nodes:?}");
    assert!(allowed.is_empty(), "{allowed:?}");
    assert_eq!(seen, ["open errno 2"]);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_second_launch_of_a_live_job_is_refused() {
    let env = env();
    let launcher = env.launcher();
    let running = launcher
        .launch(&env.request("dup", &["sleep", "600"]))
        .unwrap();
    let err = launcher.launch(&env.request("dup", &["true"])).unwrap_err();
    assert!(matches!(err, LaunchError::AlreadyExists(_)), "{err}");
    launcher.cancel("dup", Duration::from_millis(200)).unwrap();
    assert_gone(&env, "dup", running.pid);
}

mod layers {
    //! Hand-made layers on top of the base image: whiteouts, opaque directories, unsafe
    //! paths and corrupt blobs.

    use super::fixture::{env, read_log, Env, LONG};
    use strata_oci::Digest;
    use strata_runc::LaunchError;

    fn gzip_tar(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            let is_dir = path.ends_with(b"/");
            header.set_entry_type(if is_dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            header.set_mode(if is_dir { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            // Written raw so that even unsafe names ("../x") reach the archive.
            let name = &mut header.as_gnu_mut().unwrap().name;
            name[..path.len()].copy_from_slice(path);
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// The base image plus `extra` layers; returns the new manifest digest and the
    /// extra layers' digests.
    fn image_with(env: &Env, extra: &[Vec<u8>]) -> (Digest, Vec<Digest>) {
        let store = env.store();
        let base: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&env.image).unwrap()).unwrap();
        let mut manifest = base.clone();
        let mut digests = Vec::new();
        for layer in extra {
            let d = store.put_bytes(layer).unwrap();
            manifest["layers"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d.to_string(),
                    "size": layer.len(),
                }));
            digests.push(d);
        }
        let digest = store
            .put_bytes(&serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        (digest, digests)
    }

    #[test]
    #[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
    fn whiteouts_and_opaque_directories_hide_lower_files() {
        let env = env();
        let lower = gzip_tar(&[
            (b"opt/", b""),
            (b"opt/keep", b"k"),
            (b"opt/gone", b"g"),
            (b"srv/", b""),
            (b"srv/old", b"o"),
        ]);
        let upper = gzip_tar(&[
            (b"opt/.wh.gone", b""),
            (b"srv/.wh..wh..opq", b""),
            (b"srv/new", b"n"),
        ]);
        let (image, _) = image_with(&env, &[lower, upper]);
        let launcher = env.launcher();
        let mut req = env.request(
            "wh",
            &["sh", "-c", "test -e /opt/keep && test ! -e /opt/gone && test ! -e /srv/old && test -e /srv/new && ls /srv"],
        );
        req.image = image;
        launcher.launch(&req).unwrap();
        let outcome = launcher.wait("wh", LONG).unwrap().unwrap();
        assert_eq!(outcome.exit_code, Some(0), "{}", read_log(&req.log_path));
        assert_eq!(read_log(&req.log_path).trim(), "new");
        launcher.cleanup("wh").unwrap();
    }

    #[test]
    #[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
    fn unsafe_paths_and_corrupt_blobs_are_refused_and_leave_no_layer() {
        let env = env();
        let evil = gzip_tar(&[(b"../escaped", b"x")]);
        let (image, digests) = image_with(&env, &[evil]);
        let launcher = env.launcher();
        let mut req = env.request("evil", &["true"]);
        req.image = image;
        let err = launcher.launch(&req).unwrap_err();
        assert!(matches!(err, LaunchError::Rootfs { .. }), "{err}");
        assert!(err.to_string().contains("escaped"), "{err}");
        assert!(!launcher.layer_cache().layer_dir(&digests[0]).exists());
        assert!(!env.home().join("rootfs/../escaped").exists());
        assert!(!env.home().join("escaped").exists());

        let good = gzip_tar(&[(b"data", b"payload")]);
        let (image, digests) = image_with(&env, &[good]);
        let store = env.store();
        let path = store.blob_path(&digests[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // the gzip trailer: the tar still reads, the digest does not match
        std::fs::write(&path, bytes).unwrap();
        req.image = image;
        req.job_id = "corrupt".into();
        let err = launcher.launch(&req).unwrap_err();
        assert!(matches!(err, LaunchError::Rootfs { .. }), "{err}");
        assert!(!launcher.layer_cache().layer_dir(&digests[0]).exists());
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn concurrent_extractions_of_one_layer_unpack_it_once() {
    let env = env();
    let store = env.store();
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&env.image).unwrap()).unwrap();
    let layer: strata_oci::Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cache = strata_runc::LayerCache::open(&env.home().join("rootfs")).unwrap();
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| cache.ensure(&env.store(), &layer).unwrap().extracted))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|e| **e).count(), 1, "{results:?}");
    assert_eq!(cache.extraction_count().unwrap(), 1);
    assert!(cache.layer_dir(&layer).join("usr/bin").is_dir());
}

// ---- crash recovery: an outcome is lost only when the supervisor itself is gone ----

/// Set in the environment of a copy of this test binary that plays the agent.
const CHILD_ROLE: &str = "STRATA_TEST_LAUNCHING_AGENT";

/// The "agent" of the crash tests: this test binary again, running only the calling test
/// `test` (by name), in which [`play_launching_agent`] launches one job on `env`'s home and
/// returns (its process exits) or is killed mid-launch. The job's supervisor is then no
/// child of the test.
fn launching_agent(
    env: &fixture::Env,
    test: &str,
    job: &str,
    command: &[&str],
) -> std::process::Command {
    let req = env.request(job, command);
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "1")
        .env("STRATA_TEST_CHILD_HOME", env.home())
        .env("STRATA_TEST_CHILD_IMAGE", env.image.to_string())
        .env("STRATA_TEST_CHILD_JOB", job)
        .env(
            "STRATA_TEST_CHILD_COMMAND",
            serde_json::to_string(&req.command).expect("json"),
        )
        .stdout(std::process::Stdio::null());
    cmd
}

/// In the copy of the test binary started by [`launching_agent`]: launches the job its
/// environment describes and returns true (the test is then done: it played the agent).
/// False in a normal test run.
fn play_launching_agent() -> bool {
    if std::env::var_os(CHILD_ROLE).is_none() {
        return false;
    }
    let var = |name: &str| std::env::var(name).expect(name);
    let home = std::path::PathBuf::from(var("STRATA_TEST_CHILD_HOME"));
    let store = strata_oci::Store::open(&home.join("oci"), &home.join("tmp")).expect("open store");
    let launcher = strata_runc::LocalLauncher::new(&home, store).expect("launcher");
    let job = var("STRATA_TEST_CHILD_JOB");
    let req = strata_runc::LaunchRequest {
        job_id: job.clone(),
        image: var("STRATA_TEST_CHILD_IMAGE").parse().expect("digest"),
        command: serde_json::from_str(&var("STRATA_TEST_CHILD_COMMAND")).expect("command"),
        env: vec![],
        cwd: None,
        limits: Limits::default(),
        gpus: vec![],
        network: false,
        log_path: home.join("logs").join(format!("{job}.log")),
        outputs: vec![],
    };
    launcher.launch(&req).expect("launch");
    true
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn proc_state(pid: i32) -> Option<char> {
    Some(procfs::process::Process::new(pid).ok()?.stat().ok()?.state)
}

/// The race seen after an agent restart: the job's process has ended (a zombie, runc says
/// "stopped") but its supervisor, no child of the asking process, has not written the
/// status yet. That is not a lost status: the job is Pending until the status is there.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_that_ended_before_its_status_was_written_is_pending_not_lost() {
    if play_launching_agent() {
        return;
    }
    let env = env();
    let job = "late-status";
    // The job ends when the test says so, by creating /go in its root.
    let script = "while [ ! -e /go ]; do sleep 0.02; done; exit 7";
    let status = launching_agent(
        &env,
        "a_job_that_ended_before_its_status_was_written_is_pending_not_lost",
        job,
        &["sh", "-c", script],
    )
    .status()
    .expect("run the launching agent");
    assert!(status.success(), "the launching agent failed: {status}");
    let dir = env.home().join("run/jobs").join(job);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("job.json")).expect("job.json"))
            .expect("job.json is JSON");
    let supervisor = record["supervisor"].as_i64().expect("supervisor pid") as i32;
    let pid = record["pid"].as_i64().expect("job pid") as i32;

    // Hold the supervisor between the job's exit and its status write.
    // SAFETY: kill(2) on a pid read from the job record of the job this test started.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGSTOP) }, 0);
    eventually("the supervisor to stop", || {
        proc_state(supervisor) == Some('T')
    });
    let root = env.launcher().mount_target(job);
    std::fs::write(root.join("go"), b"").expect("write /go into the job's root");
    eventually("the job's process to end", || {
        matches!(proc_state(pid), Some('Z') | None)
    });

    let launcher = env.launcher();
    assert_eq!(launcher.state(job).unwrap(), ContainerState::Pending);
    assert_eq!(launcher.poll(job).unwrap(), None);
    let listed = launcher.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, ContainerState::Pending);

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGCONT) }, 0);
    let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
    assert!(outcome.status_known, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(7));
    launcher.cleanup(job).unwrap();
    assert_gone(&env, job, pid);
}

/// The agent is killed while `runc run` creates the container: the supervisor reports into
/// a pipe nobody reads any more. It must live on (no SIGPIPE death) and record the status.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_agent_killed_mid_launch_loses_no_exit_status() {
    if play_launching_agent() {
        return;
    }
    let env = env();
    let job = "cut-short";
    // A runc that waits at `run` until the test opens the gate.
    let gate = env.home().join("gate");
    let wrapper = env.home().join("runc-gated");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = run ]; then\n    touch '{g}.waiting'\n    while [ ! -e '{g}.open' ]; do sleep 0.02; done\n  fi\ndone\nexec runc \"$@\"\n",
            g = gate.display()
        ),
    )
    .expect("write the runc wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the runc wrapper");
    let mut agent = launching_agent(
        &env,
        "an_agent_killed_mid_launch_loses_no_exit_status",
        job,
        &["sh", "-c", "echo ran; exit 7"],
    )
    .env("STRATA_RUNC", &wrapper)
    .spawn()
    .expect("start the launching agent");
    let waiting = gate.with_extension("waiting");
    eventually("runc run to start", || waiting.exists());
    agent.kill().expect("SIGKILL the launching agent");
    agent.wait().expect("reap the launching agent");
    std::fs::write(gate.with_extension("open"), b"").expect("open the gate");

    let launcher = env.launcher();
    let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
    assert!(outcome.status_known, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(7));
    assert!(read_log(&env.log(job)).contains("ran"));
    launcher.cleanup(job).unwrap();
    assert_gone(&env, job, 0);
}

/// A launch cut short before its supervisor existed leaves a job directory and nothing
/// else: nothing ran, so it is Absent (not a job whose status was lost), and cleanup frees
/// the id.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_directory_without_a_supervisor_is_absent_and_cleaned_up() {
    let env = env();
    let launcher = env.launcher();
    std::fs::create_dir_all(env.home().join("run/jobs/half")).unwrap();
    let listed = launcher.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, ContainerState::Absent);
    launcher.cleanup("half").unwrap();
    assert!(launcher.list().unwrap().is_empty());
    launcher
        .launch(&env.request("half", &["true"]))
        .expect("the id is free again");
    assert_eq!(
        launcher.wait("half", LONG).unwrap().unwrap().exit_code,
        Some(0)
    );
    launcher.cleanup("half").unwrap();
}

//! A job cannot reach the host (issue 9, part 4): its root is an unprivileged host uid,
//! it runs under a seccomp profile with the engines' capabilities, its log cannot be
//! redirected by a symlink, and the host's loopback is out of its reach with or without
//! network. Against real runc, overlay and pasta, on the fixture base image.

#[path = "support/launch_fixture.rs"]
mod fixture;

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use fixture::{assert_gone, env, read_log, Env, LONG};
use strata_config::Config;
use strata_runc::{IdRange, LaunchError, LauncherSettings, LocalLauncher};

/// Runs `command` to its end and returns its log; the job is left for the caller to
/// inspect and clean up.
fn run(env: &Env, launcher: &LocalLauncher, job: &str, network: bool, command: &[&str]) -> String {
    let mut req = env.request(job, command);
    req.network = network;
    launcher.launch(&req).unwrap();
    let outcome = launcher.wait(job, LONG).unwrap().expect("job ended");
    let log = read_log(&req.log_path);
    assert_eq!(outcome.exit_code, Some(0), "{job}: {outcome:?}\n{log}");
    log
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn root_in_the_job_is_an_unprivileged_uid_on_the_host() {
    let env = env();
    // STRATA_HOME is usually in a private home directory (/root is 0700): the job's root,
    // an unprivileged host uid, cannot walk it.
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let launcher = env.launcher();
    let ids = IdRange::DEFAULT;
    let log = run(
        &env,
        &launcher,
        "userns",
        false,
        &[
            "sh",
            "-c",
            "echo uid=$(id -u); cat /proc/self/uid_map; echo hi > /made-by-job",
        ],
    );
    assert!(log.contains("uid=0"), "{log}");
    let map: Vec<&str> = log
        .lines()
        .find(|l| l.split_whitespace().count() == 3)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "100000", "65536"], "{log}");
    // The file the job made as its root is the range's root on the host.
    let made = env.home().join("run/jobs/userns/upper/made-by-job");
    let meta = std::fs::symlink_metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (ids.uid, ids.gid));
    launcher.cleanup("userns").unwrap();

    // Other host users reach none of the launcher's directories.
    for dir in ["rootfs", "logs", "run", "run/runc", "run/jobs"] {
        let mode = std::fs::metadata(env.home().join(dir)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{dir} is {mode:o}");
    }
    // The job's root is mounted where its root can walk to (runc mounts it from inside
    // the user namespace), reachable by that group only.
    let mounts = launcher.mount_target("userns");
    let meta = std::fs::metadata(mounts.parent().unwrap()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o710);
    assert_eq!((meta.uid(), meta.gid()), (0, ids.gid));
    assert!(!mounts.exists(), "the mount point is removed at cleanup");
}

/// The `Uid:` and `Gid:` lines of a host process (real, effective, saved, fs ids).
fn host_ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (ids("Uid:"), ids("Gid:"))
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_configured_id_range_is_what_the_job_runs_as() {
    let env = env();
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A first job in the default range: the image's layers are unpacked and shifted into
    // it, and stay cached.
    let default = env.launcher();
    run(&env, &default, "default-range", false, &["true"]);
    default.cleanup("default-range").unwrap();
    let unpacked = default.extraction_count().unwrap();

    // strata.toml gives jobs another range, with gids apart from uids.
    let project = tempfile::tempdir().unwrap();
    let toml = project.path().join("strata.toml");
    std::fs::write(&toml, "[launcher]\nid_range = \"300000:400000:65536\"\n").unwrap();
    let settings = LauncherSettings::from_config(&Config::from_file(&toml).unwrap()).unwrap();
    let want = IdRange {
        uid: 300_000,
        gid: 400_000,
        size: 65_536,
    };
    assert_eq!(settings.ids, want);
    let launcher = LocalLauncher::with_settings(env.home(), env.store(), &settings).unwrap();
    assert_eq!(launcher.id_range(), want);

    // Seen from the host, the job's processes are the range's root.
    let req = env.request("ranged-live", &["sleep", "600"]);
    let running = launcher.launch(&req).unwrap();
    let (uids, gids) = host_ids(running.pid);
    launcher
        .cancel("ranged-live", Duration::from_secs(1))
        .unwrap();
    launcher.cleanup("ranged-live").unwrap();
    assert_eq!(uids, [want.uid; 4], "host uids of the job's init");
    assert_eq!(gids, [want.gid; 4], "host gids of the job's init");

    // The layers shifted for the default range were shifted again: the image's files
    // belong to the job's root, not to the overflow id of unmapped owners.
    let script = "import os\n\
        print('uid', os.getuid())\n\
        print('map', open('/proc/self/uid_map').read().split())\n\
        s = os.stat('/usr/bin')\n\
        print('owner', s.st_uid, s.st_gid)\n\
        open('/made-by-job', 'w').write('hi')\n";
    let log = run(&env, &launcher, "ranged", false, &["python3", "-c", script]);
    assert!(log.contains("uid 0\n"), "{log}");
    assert!(log.contains("map ['0', '300000', '65536']"), "{log}");
    assert!(log.contains("owner 0 0\n"), "{log}");
    let made = env.home().join("run/jobs/ranged/upper/made-by-job");
    let meta = std::fs::symlink_metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (want.uid, want.gid));
    launcher.cleanup("ranged").unwrap();

    // On disk, every cached layer is in the new range, and its stamp says so.
    let rootfs = env.home().join("rootfs");
    let mut layers = 0;
    for entry in std::fs::read_dir(&rootfs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (want.uid, want.gid), "{name}");
        let stamp = std::fs::read_to_string(rootfs.join(format!(".{name}.ids"))).unwrap();
        assert_eq!(stamp.trim(), want.stamp(), "{name}");
        layers += 1;
    }
    assert!(layers > 0, "no layer under {}", rootfs.display());
    assert_eq!(
        launcher.extraction_count().unwrap(),
        unpacked,
        "shifted in place, not unpacked again"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_symlink_at_the_log_path_is_refused() {
    let env = env();
    let launcher = env.launcher();
    let victim = env.home().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let req = env.request("evil-log", &["sh", "-c", "echo overwritten"]);
    std::os::unix::fs::symlink(&victim, &req.log_path).unwrap();
    let err = launcher.launch(&req).unwrap_err();
    assert!(
        matches!(
            err,
            LaunchError::Runc { .. } | LaunchError::StartFailed { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("evil-log"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // A dangling symlink is not followed to create its target either.
    let target = env.home().join("created-through-link");
    let req = env.request("evil-log2", &["sh", "-c", "echo created"]);
    std::os::unix::fs::symlink(&target, &req.log_path).unwrap();
    assert!(launcher.launch(&req).is_err());
    assert!(!target.exists());

    // A new log is created private; a later attempt appends to it.
    let req = env.request("fine-log", &["sh", "-c", "echo one"]);
    launcher.launch(&req).unwrap();
    launcher.wait("fine-log", LONG).unwrap().expect("ended");
    launcher.cleanup("fine-log").unwrap();
    let mode = std::fs::metadata(&req.log_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = env.request("fine-log", &["sh", "-c", "echo two"]);
    launcher.launch(&again).unwrap();
    launcher.wait("fine-log", LONG).unwrap().expect("ended");
    launcher.cleanup("fine-log").unwrap();
    assert_eq!(read_log(&req.log_path), "one\ntwo\n");
}

/// Each probe prints `NAME errno=E`: the errno of the call, or `ok` when it succeeded.
const SYSCALL_PROBES: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, call):
    ctypes.set_errno(0)
    rc = call()
    e = ctypes.get_errno()
    if rc == 0 and name == "clone-newuser":
        os._exit(0)  # the child, had it been allowed
    print(name, "errno=" + (errno.errorcode.get(e, str(e)) if rc < 0 else "ok"), flush=True)
probe("unshare-newuser", lambda: libc.unshare(0x10000000))
probe("clone-newuser", lambda: libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))
probe("keyctl", lambda: libc.syscall(250, 0, -1, 0, 0, 0))
probe("bpf", lambda: libc.syscall(321, 0, 0, 0))
probe("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
probe("ptrace", lambda: libc.ptrace(16, 1, 0, 0))
cap_eff = int([l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1], 16)
print("cap_sys_admin", "yes" if cap_eff & (1 << 21) else "no")
"#;

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn seccomp_and_capabilities_refuse_namespaces_keyrings_bpf_mount_ptrace() {
    let env = env();
    let launcher = env.launcher();
    let log = run(
        &env,
        &launcher,
        "seccomp",
        false,
        &["python3", "-c", SYSCALL_PROBES],
    );
    for name in [
        "unshare-newuser",
        "clone-newuser",
        "keyctl",
        "bpf",
        "mount",
        "ptrace",
    ] {
        let line = format!("{name} errno=EPERM");
        assert!(log.lines().any(|l| l == line), "want {line:?} in\n{log}");
    }
    assert!(log.contains("cap_sys_admin no"), "{log}");
    launcher.cleanup("seccomp").unwrap();
}

/// Tries the host's loopback listener at `port` from the job: at 127.0.0.1 and at the
/// default gateway (which pasta maps to the host's loopback unless told not to). Prints
/// the interfaces, the gateway and what each attempt did.
fn reach_script(port: u16) -> String {
    format!(
        r#"
import os, socket
gw = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(bytes.fromhex(f[2])[::-1])
print("ifaces", ",".join(sorted(os.listdir("/sys/class/net"))))
print("gateway", gw)
for target in ["127.0.0.1"] + ([gw] if gw else []):
    try:
        socket.create_connection((target, {port}), timeout=3)
        print("REACHED", target)
    except OSError as e:
        print("unreachable", target, type(e).__name__)
"#
    )
}

fn assert_never_accepted(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the job reached the host's loopback: {other:?}"),
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn the_host_loopback_is_out_of_reach_with_or_without_network() {
    let env = env();
    let launcher = env.launcher();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = reach_script(port);

    let offline = run(
        &env,
        &launcher,
        "offline",
        false,
        &["python3", "-c", &script],
    );
    assert!(!offline.contains("REACHED"), "{offline}");
    assert!(offline.contains("ifaces lo\n"), "{offline}");
    assert!(offline.contains("gateway None"), "{offline}");
    launcher.cleanup("offline").unwrap();
    assert_never_accepted(&listener);

    let online = run(&env, &launcher, "online", true, &["python3", "-c", &script]);
    assert!(!online.contains("REACHED"), "{online}");
    // Its own interface and a default route (outbound beyond this host cannot be tested
    // without internet).
    let ifaces = online
        .lines()
        .find_map(|l| l.strip_prefix("ifaces "))
        .unwrap_or_default();
    assert!(ifaces.split(',').any(|i| i != "lo"), "{online}");
    assert!(!online.contains("gateway None"), "{online}");
    let pasta_pid: i32 = std::fs::read_to_string(env.home().join("run/jobs/online/pasta.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    launcher.cleanup("online").unwrap();
    assert_never_accepted(&listener);
    // pasta goes with the job (a zombie counts as gone: PID 1 here may not reap).
    let start = std::time::Instant::now();
    while alive(pasta_pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pasta {pasta_pid} outlived its job"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_gone(&env, "online", 0);
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

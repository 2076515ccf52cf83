//! The OCI runtime spec (`config.json`) of one job, built with `oci-spec`'s runtime types.
//!
//! Pure: everything the spec depends on (the rootfs path, the devices found on the host,
//! whether the kernel has swap accounting) is an input, so the spec for a two-GPU job can
//! be checked on a machine without GPUs.

use std::path::{Path, PathBuf};

use crate::idmap::IdRange;
use crate::seccomp;

use oci_spec::runtime::{
    HookBuilder, Hooks, HooksBuilder, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// The period of the CFS quota; a job with 2500 millicpus gets 250 ms of CPU per 100 ms.
const CPU_PERIOD_US: u64 = 100_000;
/// Open files a job may have, capped by the hard limit runc itself runs under (the
/// container cannot raise it above that once its capabilities are dropped).
const OPEN_FILES: u64 = 65_536;

#[derive(Debug, thiserror::Error)]
#[error("building the runtime spec: {0}")]
pub struct BundleError(#[from] oci_spec::OciSpecError);

/// Cgroup limits of a job (from its tier). `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Thousandths of a CPU (the tier's `millicpus`).
    pub millicpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
}

/// A device node on the host to expose in the container under the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Where the job sees it (`/dev/<name>`).
    pub path: PathBuf,
    /// The node on the host, bind-mounted at `path`: in a user namespace runc cannot make
    /// device nodes, so it binds them (as rootless engines do); the device cgroup still
    /// decides what may be opened.
    pub host_path: PathBuf,
    pub major: i64,
    pub minor: i64,
}

/// Everything a job's runtime spec is made of.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// Absolute path of the job's (overlay-mounted) root filesystem.
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// Relative to the cgroup mount points, e.g. `/strata/strata-job1`.
    pub cgroups_path: String,
    pub limits: Limits,
    /// Device nodes to expose (GPUs and their control devices), already probed.
    pub devices: Vec<HostDevice>,
    /// Outbound network through `pasta` in the job's own network namespace; otherwise
    /// the job has only a loopback interface. The host's network namespace is never shared.
    pub network: bool,
    /// How `pasta` is run for a `network` job (see [`PastaHook`]).
    pub pasta: Option<PastaHook>,
    /// The host ids the job's user namespace maps to (see [`crate::idmap`]).
    pub ids: IdRange,
    /// Whether the kernel accounts swap (cgroup v1 `memory.memsw.*`): then memory+swap is
    /// limited too, so a job cannot dodge its memory limit by swapping.
    pub swap_accounting: bool,
    /// RLIMIT_NOFILE of the process (see [`open_files_limit`]).
    pub open_files: u64,
}

/// `pasta` (Debian package `passt`) connects a job's network namespace to the outside:
/// run by runc as a `createRuntime` hook, once the namespaces exist and before the job's
/// process starts, it configures the job's interface, default route and DNS from the
/// host's, then forks to the background (its pid in `pid_file`, killed at cleanup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastaHook {
    pub program: PathBuf,
    pub pid_file: PathBuf,
    /// pasta's own messages (the hook's output is runc's, and a daemon holding runc's
    /// pipe would stall it).
    pub log: PathBuf,
}

/// Options that keep the host's loopback out of the job's reach: no remapping of the
/// gateway address to the host's loopback (`--no-map-gw`), no forwarding of the job's
/// loopback ports to the host's (`-T none -U none`), and none of the job's ports exposed
/// on the host (`-t none -u none`).
pub const PASTA_ISOLATION: &[&str] = &[
    "--no-map-gw",
    "-t",
    "none",
    "-u",
    "none",
    "-T",
    "none",
    "-U",
    "none",
];

/// The hook script: the runtime state (JSON on stdin) gives the container's pid. The
/// script (root with every capability, as runc runs hooks) opens that process's user and
/// network namespaces and hands them to pasta as descriptors: pasta drops its
/// capabilities before it joins, and could not open them itself (the container's init is
/// not dumpable). `--runas 0` keeps the identity that may enter them (otherwise pasta
/// becomes `nobody` first); pasta still sandboxes itself.
const PASTA_SCRIPT: &str = r#"IFS= read -r state || true
pid=${state#*\"pid\":}; pid=${pid%%[!0-9]*}
[ -n "$pid" ] || { echo "strata: no pid in the runtime state" >&2; exit 1; }
p=$1 pidfile=$2 log=$3; shift 3
exec "$p" --quiet --config-net --runas 0 -P "$pidfile" --userns /proc/self/fd/3 \
  --netns /proc/self/fd/4 "$@" 3<"/proc/$pid/ns/user" 4<"/proc/$pid/ns/net" \
  </dev/null >>"$log" 2>&1
"#;

fn pasta_hooks(p: &PastaHook) -> Result<Hooks, BundleError> {
    let mut args = vec![
        "sh".to_string(),
        "-c".to_string(),
        PASTA_SCRIPT.to_string(),
        "strata-net".to_string(),
        p.program.to_string_lossy().into_owned(),
        p.pid_file.to_string_lossy().into_owned(),
        p.log.to_string_lossy().into_owned(),
    ];
    args.extend(PASTA_ISOLATION.iter().map(|s| s.to_string()));
    let hook = HookBuilder::default()
        .path("/bin/sh")
        .args(args)
        .timeout(30i64)
        .build()?;
    Ok(HooksBuilder::default().create_runtime(vec![hook]).build()?)
}

fn id_mapping(host: u32, size: u32) -> Result<LinuxIdMapping, BundleError> {
    Ok(LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host)
        .size(size)
        .build()?)
}

/// The open-files limit to give a job: [`OPEN_FILES`], or less if this process's hard
/// limit (which runc inherits) is lower.
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    OPEN_FILES.min(lim.rlim_max)
}

/// The spec runc will run.
pub fn runtime_spec(b: &BundleSpec) -> Result<Spec, BundleError> {
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(b.uid).gid(b.gid).build()?)
        .args(b.args.clone())
        .env(b.env.clone())
        .cwd(b.cwd.clone())
        .no_new_privileges(true)
        .capabilities(seccomp::default_capabilities()?)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(b.open_files)
            .soft(b.open_files)
            .build()?])
        .build()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces()?)
        .uid_mappings(vec![id_mapping(b.ids.uid, b.ids.size)?])
        .gid_mappings(vec![id_mapping(b.ids.gid, b.ids.size)?])
        .seccomp(seccomp::default_profile()?)
        .cgroups_path(PathBuf::from(&b.cgroups_path))
        .resources(resources(b)?)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(b.rootfs.clone())
                .readonly(false)
                .build()?,
        )
        .hostname(b.hostname.clone())
        .mounts(mounts(b)?)
        .process(process)
        .linux(linux)
        .build()?;
    if let (true, Some(pasta)) = (b.network, &b.pasta) {
        spec.set_hooks(Some(pasta_hooks(pasta)?));
    }
    Ok(spec)
}

/// Every job has its own namespaces, a user namespace included (root in the job is not
/// root on the host) and a network namespace (only a loopback interface, unless pasta
/// adds one): the host's loopback services are never in reach.
fn namespaces() -> Result<Vec<LinuxNamespace>, BundleError> {
    [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| Ok(LinuxNamespaceBuilder::default().typ(typ).build()?))
    .collect()
}

fn resources(b: &BundleSpec) -> Result<oci_spec::runtime::LinuxResources, BundleError> {
    // Deny every device, then allow the exposed ones; runc adds its standard allow list
    // (null, zero, random, tty, pts...) on top.
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?];
    for d in &b.devices {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(d.major)
                .minor(d.minor)
                .access("rwm")
                .build()?,
        );
    }
    let mut builder = LinuxResourcesBuilder::default().devices(rules);
    if let Some(millicpus) = b.limits.millicpus.filter(|m| *m > 0) {
        let quota = i64::try_from(millicpus * CPU_PERIOD_US / 1000).unwrap_or(i64::MAX);
        builder = builder.cpu(
            LinuxCpuBuilder::default()
                .period(CPU_PERIOD_US)
                .quota(quota.max(1_000))
                .build()?,
        );
    }
    if let Some(limit) = b.limits.memory_bytes {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut memory = LinuxMemoryBuilder::default().limit(limit);
        if b.swap_accounting {
            memory = memory.swap(limit);
        }
        builder = builder.memory(memory.build()?);
    }
    if let Some(pids) = b.limits.pids {
        builder = builder.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    Ok(builder.build()?)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn mounts(b: &BundleSpec) -> Result<Vec<Mount>, BundleError> {
    // Data loaders put batches in /dev/shm: give it room, within the job's memory limit
    // (tmpfs pages are charged to the job's cgroup anyway).
    let shm = b
        .limits
        .memory_bytes
        .map(|m| (m / 2).max(64 << 20))
        .unwrap_or(1 << 30);
    let shm_size = format!("size={}k", shm >> 10);
    let mut list = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])?,
    ];
    for d in &b.devices {
        let dest = d.path.to_string_lossy();
        let source = d.host_path.to_string_lossy();
        list.push(mount(&dest, "bind", &source, &["bind", "nosuid"])?);
    }
    if b.network {
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(file).exists() {
                list.push(mount(
                    file,
                    "bind",
                    file,
                    &["rbind", "ro", "nosuid", "nodev"],
                )?);
            }
        }
    }
    Ok(list)
}

/// The device nodes for GPUs `gpus` under `dev` (normally `/dev`): `nvidia<i>` for each
/// index present, plus `nvidiactl`, `nvidia-uvm` and `nvidia-uvm-tools` when at least one
/// GPU is. Returns the devices and the indexes that were asked for but are absent.
pub fn probe_gpu_devices(dev: &Path, gpus: &[u32]) -> (Vec<HostDevice>, Vec<u32>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for &i in gpus {
        match char_device(&dev.join(format!("nvidia{i}"))) {
            Some(d) => found.push(d),
            None => missing.push(i),
        }
    }
    if !found.is_empty() {
        for name in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] {
            found.extend(char_device(&dev.join(name)));
        }
    }
    (found, missing)
}

/// A character device node, reported under its `/dev/...` name inside the container.
fn char_device(path: &Path) -> Option<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_char_device() {
        return None;
    }
    let rdev = meta.rdev();
    let name = path.file_name()?;
    Some(HostDevice {
        path: Path::new("/dev").join(name),
        host_path: path.to_path_buf(),
        major: i64::from(libc::major(rdev)),
        minor: i64::from(libc::minor(rdev)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(network: bool, devices: Vec<HostDevice>) -> BundleSpec {
        BundleSpec {
            rootfs: "/home/s/run/jobs/j1/rootfs".into(),
            args: vec!["python3".into(), "train.py".into()],
            env: vec!["PATH=/usr/bin".into(), "LR=0.1".into()],
            cwd: "/work".into(),
            uid: 0,
            gid: 0,
            hostname: "strata-j1".into(),
            cgroups_path: "/strata/strata-j1".into(),
            limits: Limits {
                millicpus: Some(2500),
                memory_bytes: Some(1 << 30),
                pids: Some(512),
            },
            devices,
            network,
            pasta: Some(PastaHook {
                program: "/usr/bin/pasta".into(),
                pid_file: "/home/s/run/jobs/j1/pasta.pid".into(),
                log: "/home/s/run/jobs/j1/pasta.log".into(),
            }),
            ids: IdRange::DEFAULT,
            swap_accounting: true,
            open_files: 1024,
        }
    }

    fn gpu(i: i64) -> HostDevice {
        HostDevice {
            path: format!("/dev/nvidia{i}").into(),
            host_path: format!("/dev/nvidia{i}").into(),
            major: 195,
            minor: i,
        }
    }

    #[test]
    fn two_gpu_job_gets_its_devices_limits_and_no_network() {
        let ctl = HostDevice {
            path: "/dev/nvidiactl".into(),
            host_path: "/dev/nvidiactl".into(),
            major: 195,
            minor: 255,
        };
        let spec = runtime_spec(&sample(false, vec![gpu(0), gpu(1), ctl])).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let linux = &json["linux"];
        // Bound from the host (a user namespace cannot make device nodes).
        let binds: Vec<(&str, &str)> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["type"] == "bind" && m["destination"].as_str().unwrap().starts_with("/dev/")
            })
            .map(|m| {
                (
                    m["destination"].as_str().unwrap(),
                    m["source"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("/dev/nvidia0", "/dev/nvidia0"),
                ("/dev/nvidia1", "/dev/nvidia1"),
                ("/dev/nvidiactl", "/dev/nvidiactl")
            ]
        );
        let rules = linux["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false);
        assert_eq!(rules[1]["major"], 195);
        assert_eq!(rules[2]["minor"], 1);
        assert_eq!(rules[2]["allow"], true);
        assert_eq!(linux["resources"]["cpu"]["quota"], 250_000);
        assert_eq!(linux["resources"]["cpu"]["period"], 100_000);
        assert_eq!(linux["resources"]["memory"]["limit"], 1i64 << 30);
        assert_eq!(linux["resources"]["memory"]["swap"], 1i64 << 30);
        assert_eq!(linux["resources"]["pids"]["limit"], 512);
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(ns.contains(&"network"), "{ns:?}");
        assert_eq!(json["process"]["args"][1], "train.py");
        assert_eq!(json["process"]["cwd"], "/work");
        assert_eq!(json["process"]["terminal"], false);
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(!dests.contains(&"/etc/resolv.conf"));
        assert!(dests.contains(&"/tmp") && dests.contains(&"/proc"));
    }

    fn namespace_types(json: &serde_json::Value) -> Vec<String> {
        json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn network_job_has_its_own_namespace_joined_by_pasta() {
        let spec = runtime_spec(&sample(true, vec![])).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let ns = namespace_types(&json);
        assert!(ns.iter().any(|n| n == "network"), "{ns:?}");
        assert!(json["linux"]["devices"].is_null());
        let hook = &json["hooks"]["createRuntime"][0];
        assert_eq!(hook["path"], "/bin/sh");
        let args: Vec<&str> = hook["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[4], "/usr/bin/pasta");
        for isolation in PASTA_ISOLATION {
            assert!(
                args.contains(isolation),
                "{isolation} missing from {args:?}"
            );
        }
        // A job without network has no hook.
        let offline = serde_json::to_value(runtime_spec(&sample(false, vec![])).unwrap()).unwrap();
        assert!(offline["hooks"].is_null());
    }

    #[test]
    fn root_in_the_job_is_an_unprivileged_range_on_the_host() {
        let json = serde_json::to_value(runtime_spec(&sample(false, vec![])).unwrap()).unwrap();
        assert!(namespace_types(&json).iter().any(|n| n == "user"));
        for key in ["uidMappings", "gidMappings"] {
            let map = &json["linux"][key][0];
            assert_eq!(map["containerID"], 0);
            assert_eq!(map["hostID"], 100_000);
            assert_eq!(map["size"], 65_536);
        }
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{caps:?}");
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"), "{caps:?}");
    }

    #[test]
    fn probing_reports_absent_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let (found, missing) = probe_gpu_devices(dir.path(), &[0, 1]);
        assert!(found.is_empty());
        assert_eq!(missing, [0, 1]);
        // /dev/null stands in for a present device node.
        let (found, _) = probe_gpu_devices(Path::new("/dev"), &[]);
        assert!(found.is_empty());
    }
}

//! The confinement every job runs under, whatever its image: the system calls it may not
//! make (seccomp) and the capabilities it keeps. Pure data in `oci-spec` types.
//!
//! The seccomp profile is a deny-list of what Docker's and containerd's default profile
//! leaves out for a container without `CAP_SYS_ADMIN`/`CAP_SYS_PTRACE`/...: everything else
//! is allowed. A denied call fails with `EPERM` (not a kill), so programs that probe for a
//! feature carry on without it. `clone3` fails with `ENOSYS` instead, as in those engines:
//! its flags are in memory seccomp cannot read, and libc then falls back to `clone`, whose
//! namespace flags are checked.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};

use crate::bundle::BundleError;

/// System calls a job may never make: kernel keyrings, BPF, module loading, kexec,
/// mounting and namespaces, tracing other processes, file handles that bypass path checks
/// (`open_by_handle_at`, the "shocker" escape), clock and system settings, swap, accounting.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// `clone` flags that make a new namespace; a `clone` with any of them is refused.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The default seccomp profile of a job (see the module documentation).
pub fn default_profile() -> Result<LinuxSeccomp, BundleError> {
    let eperm = libc::EPERM as u32;
    let mut rules = vec![LinuxSyscallBuilder::default()
        .names(
            DENIED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(eperm)
        .build()?];
    // One rule per flag: the conditions of one rule are ANDed, and any one flag is enough
    // to refuse. `clone`'s flags are its first argument on x86 and x86-64.
    for &flag in NAMESPACE_FLAGS {
        rules.push(clone_with_flag_denied(flag, eperm)?);
    }
    rules.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    );
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(rules)
        .build()?)
}

fn clone_with_flag_denied(flag: u64, errno: u32) -> Result<LinuxSyscall, BundleError> {
    Ok(LinuxSyscallBuilder::default()
        .names(vec!["clone".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?])
        .build()?)
}

/// The capabilities container engines give a container by default: no `CAP_SYS_ADMIN`,
/// `CAP_SYS_PTRACE`, `CAP_NET_ADMIN`, `CAP_SYS_MODULE`... Without an explicit set runc
/// would leave the job every capability (of its user namespace).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// [`DEFAULT_CAPABILITIES`] as bounding, effective and permitted sets; none inheritable
/// or ambient, so a job running as a non-root user has none after exec.
pub fn default_capabilities() -> Result<LinuxCapabilities, BundleError> {
    let set: Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_denies_what_engines_deny_and_allows_the_rest() {
        let json = serde_json::to_value(default_profile().unwrap()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = json["syscalls"].as_array().unwrap();
        let denied = rules[0]["names"].as_array().unwrap();
        for name in ["keyctl", "bpf", "mount", "unshare", "ptrace", "kexec_load"] {
            assert!(denied.iter().any(|n| n == name), "{name} not denied");
        }
        assert!(denied
            .iter()
            .any(|n| n == "open_by_handle_at" || n == "init_module"));
        assert_eq!(rules[0]["errnoRet"], libc::EPERM);
        let user_ns = rules
            .iter()
            .find(|r| r["args"][0]["value"] == libc::CLONE_NEWUSER as u64)
            .expect("clone with CLONE_NEWUSER refused");
        assert_eq!(user_ns["names"][0], "clone");
        assert_eq!(user_ns["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = rules.iter().find(|r| r["names"][0] == "clone3").unwrap();
        assert_eq!(clone3["errnoRet"], libc::ENOSYS);
    }

    #[test]
    fn capabilities_are_explicit_and_without_sys_admin() {
        let caps = default_capabilities().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(!bounding.contains(&Capability::SysPtrace));
        assert!(!bounding.contains(&Capability::NetAdmin));
        assert!(bounding.contains(&Capability::Chown));
        assert!(caps.ambient().as_ref().unwrap().is_empty());
    }
}

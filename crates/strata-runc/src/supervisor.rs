//! The supervisor of a job: a forked process that runs `runc run --detach`, stays the
//! parent (subreaper) of the container's init, and records its exit status; and the lock
//! that tells whether it still lives.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::runc::{Runc, RuncError};

/// Where a supervised container's results go.
#[derive(Debug, Clone)]
pub struct SuperviseFiles {
    /// Opened for append; the container's stdout and stderr (runc's own errors too).
    pub log: PathBuf,
    /// runc writes the container's host pid here.
    pub pid_file: PathBuf,
    /// The supervisor writes `exited N` / `signaled N` / `unknown` here when the
    /// container's process ends (via `status_tmp` and a rename).
    pub status: PathBuf,
    pub status_tmp: PathBuf,
    /// runc's own log (`--log`), JSON lines, read to explain a failed start.
    pub runc_log: PathBuf,
    /// Locked (`flock`) by the supervisor from before it exists until it exits: see
    /// [`supervisor_state`].
    pub lock: PathBuf,
}

/// Whether a job's supervisor can still record its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorState {
    /// No supervisor was ever started for this job (no lock file).
    Never,
    /// It runs: the status is either written already or will be.
    Alive,
    /// It exited (or was killed): whatever status it wrote is all there will be.
    Gone,
}

/// Asks the supervisor's lock. Unlike a pid, the lock cannot be mistaken for another
/// process, is not fooled by a zombie, and works whether or not the supervisor is a child
/// of this process (it is not after an agent restart, and PID 1 may never reap it). The
/// kernel drops the lock when the supervisor's last descriptor closes, i.e. at its exit,
/// after the status was renamed into place.
pub fn supervisor_state(lock: &Path) -> io::Result<SupervisorState> {
    let file = match std::fs::File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SupervisorState::Never),
        Err(e) => return Err(e),
    };
    // Shared, so that two processes asking at once do not see each other as the supervisor.
    // std's try_lock_shared is flock(LOCK_SH | LOCK_NB): the same lock the supervisor holds.
    // Dropping `file` releases our probe lock.
    match file.try_lock_shared() {
        Ok(()) => Ok(SupervisorState::Gone),
        Err(std::fs::TryLockError::WouldBlock) => Ok(SupervisorState::Alive),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Creates and locks the supervisor's lock file. The descriptor is inherited by the forked
/// supervisor, so the lock is held without a gap from before the fork until it exits.
fn take_lock(path: &Path) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // flock(LOCK_EX | LOCK_NB): the lock belongs to the open file description, so the
    // forked supervisor's copy of the descriptor holds it.
    file.try_lock().map_err(io::Error::from)?;
    Ok(OwnedFd::from(file))
}

/// Opens a job's log for appending, never through a symlink and never a file someone
/// else placed: an existing log (an earlier attempt's) must be a regular file of ours
/// with one link; a new one is created exclusively (mode 0600). A symlink at the path
/// fails with `ELOOP` (existing) or `EEXIST` (create).
pub fn open_log(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let existing = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match existing {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.nlink() != 1 || meta.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a log of ours (a regular file owned by uid {euid} with one link)",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// What the supervisor reported once `runc run --detach` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The supervisor's pid (a child of this process until it exits).
    pub supervisor: i32,
    /// `runc run`'s wait status; 0 when the container started.
    pub runc_status: i32,
    /// The container's init on the host, 0 if runc did not write it.
    pub container_pid: i32,
}

/// Everything the forked supervisor touches, prepared before `fork` so that the child
/// only makes system calls (no allocation, no locks: the parent may have other threads).
struct Plan {
    runc: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    pid_file: CString,
    status: CString,
    status_tmp: CString,
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

fn cpath(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

/// Starts `runc run --detach --bundle BUNDLE ID` under a supervisor process and waits
/// until runc returned.
///
/// The exit-status design: runc does not report the exit status of a detached container,
/// and the agent must be free to die and restart while jobs run. So a supervisor (a forked
/// child of this process, in its own session) makes itself a child subreaper
/// (`PR_SET_CHILD_SUBREAPER`) and runs `runc run --detach`. When runc returns, the
/// container's init is orphaned and re-parented to the supervisor, which `waitpid`s it and
/// writes its status to `files.status` atomically. This is how containerd's shim gets exit
/// codes. The container's stdout/stderr are the log file itself (runc passes its stdio
/// through in detached, non-terminal mode), so output never depends on a living agent or
/// supervisor; only the status file needs the supervisor.
pub fn spawn_supervised(
    runc: &Runc,
    bundle: &Path,
    id: &str,
    files: &SuperviseFiles,
) -> Result<Started, RuncError> {
    let sup_err = |source| RuncError::Supervisor {
        id: id.to_string(),
        source,
    };
    let plan = plan(runc, bundle, id, files).map_err(sup_err)?;
    let log = open_log(&files.log).map_err(sup_err)?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(sup_err)?;
    let lock = take_lock(&files.lock).map_err(sup_err)?;
    // Both ends are close-on-exec (std makes pipes with O_CLOEXEC): runc and the job never
    // inherit them; the supervisor dups the write end to REPORT_FD, close-on-exec again.
    let (mut reader, write_end) = std::io::pipe().map_err(sup_err)?;
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: the child runs only `supervise`, which makes async-signal-safe system calls
    // on data prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sup_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        unsafe {
            supervise(
                &plan,
                &argv,
                &envp,
                devnull.as_raw_fd(),
                log.as_raw_fd(),
                write_end.as_raw_fd(),
                lock.as_raw_fd(),
            )
        }
    }
    drop(write_end);
    // The supervisor's copy keeps the lock (flock belongs to the open file description).
    drop(lock);
    let mut report = [0u8; 8];
    if let Err(source) = reader.read_exact(&mut report) {
        reap(pid);
        return Err(sup_err(source));
    }
    Ok(Started {
        supervisor: pid,
        runc_status: i32::from_ne_bytes([report[0], report[1], report[2], report[3]]),
        container_pid: i32::from_ne_bytes([report[4], report[5], report[6], report[7]]),
    })
}

fn plan(runc: &Runc, bundle: &Path, id: &str, files: &SuperviseFiles) -> io::Result<Plan> {
    let args: Vec<&OsStr> = vec![
        runc.binary.as_os_str(),
        OsStr::new("--root"),
        runc.root.as_os_str(),
        OsStr::new("--log"),
        files.runc_log.as_os_str(),
        OsStr::new("--log-format"),
        OsStr::new("json"),
        OsStr::new("run"),
        OsStr::new("--detach"),
        OsStr::new("--bundle"),
        bundle.as_os_str(),
        OsStr::new("--pid-file"),
        files.pid_file.as_os_str(),
        OsStr::new(id),
    ];
    Ok(Plan {
        runc: cpath(&runc.binary)?,
        argv: args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<_>>()?,
        envp: std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect(),
        pid_file: cpath(&files.pid_file)?,
        status: cpath(&files.status)?,
        status_tmp: cpath(&files.status_tmp)?,
    })
}

/// Collects an exited supervisor so it does not linger as a zombie; non-blocking.
/// Returns true when the pid is no longer our child (reaped now or before).
pub fn reap(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    let mut status = 0;
    // SAFETY: plain waitpid on a pid; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || r < 0
}

const REPORT_FD: i32 = 3;
const LOCK_FD: i32 = 4;

/// The supervisor. Runs in the forked child; never returns.
///
/// # Safety
/// Only async-signal-safe calls on memory prepared before the fork.
unsafe fn supervise(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    devnull: i32,
    log: i32,
    report: i32,
    lock: i32,
) -> ! {
    libc::setsid();
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    // Standard descriptors: stdin /dev/null, stdout and stderr the job's log. Then the
    // report pipe at 3, the lock at 4 and nothing else: the agent's other files (its
    // database, sockets) must not stay open for as long as the job runs.
    // First copy every source above the targets, so that no dup2 below overwrites a
    // source not yet moved, whatever numbers the descriptors had.
    let [devnull, log, report, lock] =
        [devnull, log, report, lock].map(|fd| libc::fcntl(fd, libc::F_DUPFD, LOCK_FD + 1));
    libc::dup2(devnull, 0);
    libc::dup2(log, 1);
    libc::dup2(log, 2);
    libc::dup2(report, REPORT_FD);
    libc::dup2(lock, LOCK_FD);
    libc::syscall(libc::SYS_close_range, LOCK_FD + 1, u32::MAX, 0);
    libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    // runc and the job must not hold the lock: it says "the supervisor lives".
    libc::fcntl(LOCK_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    // Rust ignores SIGPIPE and a runtime may block signals; the job must not inherit that.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);

    let runc_pid = libc::fork();
    if runc_pid == 0 {
        libc::execve(plan.runc.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127);
    }
    // From here on the agent may be gone (killed while runc ran): reporting into its closed
    // pipe must fail with EPIPE, not kill the supervisor by SIGPIPE, or the job would run
    // on with nobody to record its status. Set after the fork: the job keeps SIG_DFL.
    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    let mut runc_status: i32 = if runc_pid < 0 { 127 << 8 } else { 0 };
    if runc_pid > 0 {
        while libc::waitpid(runc_pid, &mut runc_status, 0) < 0 && errno() == libc::EINTR {}
    }
    let container = if runc_status == 0 {
        read_pid(&plan.pid_file)
    } else {
        0
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&runc_status.to_ne_bytes());
    msg[4..].copy_from_slice(&container.to_ne_bytes());
    libc::write(REPORT_FD, msg.as_ptr().cast(), msg.len());
    libc::close(REPORT_FD);
    if runc_status != 0 {
        libc::_exit(0);
    }
    loop {
        let mut status = 0;
        let r = libc::waitpid(-1, &mut status, 0);
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r < 0 {
            // No children left and the container was never ours to reap.
            write_status(plan, b"unknown", -1);
            libc::_exit(0);
        }
        if r == container {
            if libc::WIFSIGNALED(status) {
                write_status(plan, b"signaled ", libc::WTERMSIG(status));
            } else {
                write_status(plan, b"exited ", libc::WEXITSTATUS(status));
            }
            libc::_exit(0);
        }
    }
}

unsafe fn errno() -> i32 {
    *libc::__errno_location()
}

unsafe fn read_pid(path: &CString) -> i32 {
    let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 32];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    let mut pid: i32 = 0;
    for &b in buf.iter().take(n.max(0) as usize) {
        if !b.is_ascii_digit() {
            break;
        }
        pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
    }
    pid
}

/// Writes `word` followed by `n` (when n >= 0) and a newline, then renames into place.
unsafe fn write_status(plan: &Plan, word: &[u8], n: i32) {
    let mut buf = [0u8; 48];
    let mut len = 0;
    for &b in word {
        buf[len] = b;
        len += 1;
    }
    if n >= 0 {
        let mut digits = [0u8; 12];
        let mut d = 0;
        let mut v = n;
        loop {
            digits[d] = b'0' + (v % 10) as u8;
            d += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while d > 0 {
            d -= 1;
            buf[len] = digits[d];
            len += 1;
        }
    }
    buf[len] = b'\n';
    len += 1;
    let fd = libc::open(
        plan.status_tmp.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
        0o644,
    );
    if fd < 0 {
        return;
    }
    libc::write(fd, buf.as_ptr().cast(), len);
    libc::fsync(fd);
    libc::close(fd);
    libc::rename(plan.status_tmp.as_ptr(), plan.status.as_ptr());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_tells_a_live_supervisor_from_a_gone_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.lock");
        assert_eq!(supervisor_state(&path).unwrap(), SupervisorState::Never);
        let held = take_lock(&path).unwrap();
        // A second open is another open file description: it sees the lock as taken.
        assert_eq!(supervisor_state(&path).unwrap(), SupervisorState::Alive);
        assert!(take_lock(&path).is_err());
        drop(held);
        assert_eq!(supervisor_state(&path).unwrap(), SupervisorState::Gone);
    }

    #[test]
    fn the_report_pipe_is_close_on_exec() {
        // spawn_supervised relies on it: runc and the job must not inherit either end.
        let (reader, writer) = std::io::pipe().unwrap();
        for fd in [reader.as_raw_fd(), writer.as_raw_fd()] {
            // SAFETY: F_GETFD on a descriptor we own.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    }
}

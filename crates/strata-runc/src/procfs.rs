//! A job's process as /proc shows it (through the `procfs` crate): alive, not a zombie,
//! and started when the job record says, so that a reused pid is not mistaken for the job.

/// The process's `/proc/PID/stat`, if it exists.
fn proc_stat(pid: i32) -> Option<::procfs::process::Stat> {
    ::procfs::process::Process::new(pid).ok()?.stat().ok()
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
pub(crate) fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.starttime)
}

/// Whether `pid` is alive (not a zombie) and is the process started at `start_time`.
pub(crate) fn pid_is(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Some(stat) = proc_stat(pid) else {
        return false;
    };
    if matches!(stat.state, 'Z' | 'X') {
        return false;
    }
    start_time == 0 || stat.starttime == start_time
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).unwrap();
        assert!(pid_is(me, t));
        assert!(!pid_is(me, t + 1));
    }
}

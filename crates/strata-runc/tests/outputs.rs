//! A job's outputs collected out of its upper layer after it ends, against real runc on the
//! fixture base image: whatever the exit, never through the job's symlinks, capped.

#[path = "support/launch_fixture.rs"]
mod fixture;

use std::path::Path;
use std::time::Duration;

use fixture::{env, LONG};
use strata_runc::{Collected, OutputDir, OutputLimits, FILES_DIR};

fn outputs_dir() -> Vec<OutputDir> {
    vec![OutputDir {
        path: "outputs".into(),
        stored_as: "outputs".into(),
    }]
}

/// Writes two files (one in a sub-directory), then exits with `code`.
fn writer(code: i32) -> String {
    format!(
        "mkdir -p outputs/run && echo model > outputs/model.txt && \
         seq 1 1000 > outputs/run/metrics.csv && exit {code}"
    )
}

fn read(dest: &Path, rel: &str) -> String {
    std::fs::read_to_string(dest.join(FILES_DIR).join("outputs").join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn outputs_of_a_failed_job_are_collected_as_those_of_a_successful_one() {
    let env = env();
    let launcher = env.launcher();
    let dests = tempfile::tempdir().unwrap();
    let mut collected = Vec::new();
    for (job, code) in [("out-ok", 0), ("out-fail", 1)] {
        let mut req = env.request(job, &["sh", "-c", &writer(code)]);
        req.cwd = Some("/work".into());
        req.outputs = outputs_dir();
        launcher.launch(&req).unwrap();
        let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
        assert_eq!(outcome.exit_code, Some(code));
        let dest = dests.path().join(job);
        let c = launcher
            .collect_outputs(job, &dest)
            .unwrap()
            .expect("asked");
        launcher.cleanup(job).unwrap();
        assert_eq!(read(&dest, "model.txt"), "model\n");
        collected.push((read(&dest, "run/metrics.csv"), c));
    }
    assert_eq!(collected[0], collected[1]);
    let (metrics, c) = &collected[0];
    assert_eq!(metrics.lines().count(), 1000);
    assert_eq!((c.files, c.truncated), (2, false), "{c:?}");
    // The copies are the agent's, not the job's shifted uid's.
    let meta = std::fs::metadata(dests.path().join("out-ok/files/outputs/model.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_planted_symlink_is_not_followed_and_a_huge_file_is_capped() {
    let env = env();
    let limits = OutputLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let launcher = env.launcher().with_output_limits(limits);
    let script = "mkdir -p outputs && echo kept > outputs/small.txt && \
                  ln -s /etc outputs/evil && ln -s /etc/shadow outputs/shadow && \
                  head -c 2097152 /dev/zero > outputs/big.bin && \
                  truncate -s 5G outputs/sparse.bin && mkfifo outputs/pipe";
    let mut req = env.request("out-evil", &["sh", "-c", script]);
    req.cwd = Some("/work".into());
    req.outputs = outputs_dir();
    launcher.launch(&req).unwrap();
    let outcome = launcher.wait("out-evil", LONG).unwrap().expect("ended");
    assert_eq!(
        outcome.exit_code,
        Some(0),
        "{}",
        fixture::read_log(&req.log_path)
    );
    let dests = tempfile::tempdir().unwrap();
    let dest = dests.path().join("out-evil");
    let c: Collected = launcher
        .collect_outputs("out-evil", &dest)
        .unwrap()
        .unwrap();
    launcher.cleanup("out-evil").unwrap();
    let files = dest.join(FILES_DIR).join("outputs");
    assert_eq!(read(&dest, "small.txt"), "kept\n");
    for absent in ["evil", "shadow", "big.bin", "sparse.bin", "pipe"] {
        assert!(
            files.join(absent).symlink_metadata().is_err(),
            "{absent} was copied"
        );
    }
    assert!(c.truncated, "{c:?}");
    assert_eq!((c.files, c.bytes), (1, 5), "{c:?}");
    for expected in [
        "evil: a symlink (-> /etc)",
        "big.bin: 2097152 bytes",
        "sparse.bin: 5368709120",
    ] {
        assert!(
            c.notes.iter().any(|n| n.contains(expected)),
            "{expected}: {:?}",
            c.notes
        );
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_stopped_job_keeps_its_files_until_its_outputs_are_collected() {
    let env = env();
    let launcher = env.launcher();
    let script = "mkdir -p outputs && echo partial > outputs/checkpoint && echo ready && sleep 600";
    let mut req = env.request("out-stop", &["sh", "-c", script]);
    req.cwd = Some("/work".into());
    req.outputs = outputs_dir();
    launcher.launch(&req).unwrap();
    let start = std::time::Instant::now();
    while !fixture::read_log(&req.log_path).contains("ready") {
        assert!(start.elapsed() < LONG, "never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dest = tempfile::tempdir().unwrap();
    assert!(
        launcher.collect_outputs("out-stop", dest.path()).is_err(),
        "collected from a running job"
    );
    let outcome = launcher.stop("out-stop", Duration::from_secs(1)).unwrap();
    assert!(!outcome.success(), "{outcome:?}");
    let dest = dest.path().join("out-stop");
    launcher
        .collect_outputs("out-stop", &dest)
        .unwrap()
        .unwrap();
    launcher.cleanup("out-stop").unwrap();
    assert_eq!(read(&dest, "checkpoint"), "partial\n");
    // Once cleaned up there is nothing left to collect, and that is not an error.
    assert!(launcher
        .collect_outputs("out-stop", &dest)
        .unwrap()
        .is_none());
}

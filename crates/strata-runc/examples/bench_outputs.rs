//! What collecting a job's outputs adds to the end of the job: 100 files, 10 MB in all (one
//! sub-directory level, sizes from 4 KiB to ~200 KiB), in a directory laid out as a job's
//! overlay upper layer (`work/outputs/...`), copied by [`collect_from_upper`] into a fresh
//! destination (the agent's path at the end of every job with `--output`), next to a plain
//! `cp -r` of the same directory in the same run, both on warm page cache, alternating.
//! The figure is the median of each, and their ratio.
//!
//! ```text
//! cargo run --release -p strata-runc --example bench_outputs               # 30 rounds
//! cargo run --release -p strata-runc --example bench_outputs -- 100        # 100 rounds
//! ```
//! Needs no root (the walk is the same as on a real upper layer; only ownership differs).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_runc::{collect_from_upper, OutputDir, OutputLimits};

const FILES: usize = 100;
const TOTAL: usize = 10 * 1000 * 1000;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("rounds: a number"))
        .unwrap_or(30);
    let work = tempfile::tempdir().expect("tempdir");
    let upper = work.path().join("upper");
    let outputs = upper.join("work/outputs");
    let bytes = write_outputs(&outputs);
    let asked = [OutputDir {
        path: "outputs".into(),
        stored_as: "outputs".into(),
    }];
    let mut strata = Vec::with_capacity(rounds);
    let mut cp = Vec::with_capacity(rounds);
    // One untimed round of each: the page cache holds the sources from here on.
    for round in 0..=rounds {
        let dest = work.path().join(format!("strata-{round}"));
        let start = Instant::now();
        let c = collect_from_upper(&upper, &asked, "/work", &dest, OutputLimits::default())
            .expect("collect");
        let took = start.elapsed();
        assert_eq!(
            (c.files, c.bytes, c.truncated),
            (FILES as u64, bytes, false)
        );
        let copy = work.path().join(format!("cp-{round}"));
        let start = Instant::now();
        let status = Command::new("cp")
            .arg("-r")
            .arg(&outputs)
            .arg(&copy)
            .status()
            .expect("cp");
        let cp_took = start.elapsed();
        assert!(status.success());
        if round > 0 {
            strata.push(took);
            cp.push(cp_took);
        }
        std::fs::remove_dir_all(&dest).expect("remove");
        std::fs::remove_dir_all(&copy).expect("remove");
    }
    let (s, c) = (median(&mut strata), median(&mut cp));
    println!(
        "outputs: {FILES} files, {:.1} MB, {rounds} rounds (medians)",
        bytes as f64 / 1e6
    );
    println!("  strata collect_outputs: {:>8.2} ms", ms(s));
    println!("  cp -r (same run):       {:>8.2} ms", ms(c));
    println!(
        "  ratio strata / cp -r:   {:>8.2}",
        s.as_secs_f64() / c.as_secs_f64()
    );
}

/// 100 files in `dir` and `dir/sub`, sizes rising linearly, 10 MB in all; returns the bytes.
fn write_outputs(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    // Sizes k * step for k = 1..=100 sum to step * 5050.
    let step = TOTAL / 5050;
    let mut total = 0;
    for k in 1..=FILES {
        let size = k * step;
        let content: Vec<u8> = (0..size).map(|i| (i * 31 + k) as u8).collect();
        let name = if k % 2 == 0 {
            dir.join("sub").join(format!("part-{k:03}.bin"))
        } else {
            dir.join(format!("part-{k:03}.bin"))
        };
        std::fs::write(name, content).expect("write");
        total += size as u64;
    }
    total
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

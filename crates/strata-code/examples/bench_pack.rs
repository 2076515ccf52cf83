//! Packing a 1,000-file, 20 MB tree: cold (nothing cached), unchanged (the stat cache), one
//! file changed, and unchanged right after writing (every file racy, so read again).
//!
//! `cargo run --release -p strata-code --example bench_pack [FILES] [MB]`

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_code::{pack, CodeLayer, PackOptions};
use strata_index::{Index, LeaseOwner};
use strata_oci::Store;

/// Text that compresses like source code (not random bytes, not zeros).
fn content(i: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 80);
    let mut n = i as u64 * 2_654_435_761;
    while out.len() < size {
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let line = format!(
            "def f_{i}_{}(x):\n    return x * {} + {}  # step {}\n",
            out.len(),
            n % 997,
            (n >> 20) % 10_007,
            (n >> 40) % 31
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(size);
    out
}

fn make_tree(root: &Path, files: usize, bytes: usize) {
    let per_file = bytes / files;
    for i in 0..files {
        let dir = root.join(format!("pkg{:02}", i % 40));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("mod_{i:04}.py")), content(i, per_file)).unwrap();
    }
}

/// Sets every file's times two minutes back: a tree nobody wrote in the last moments,
/// whose stat the cache may trust (see the racy case for the other).
fn age(root: &Path) {
    let old = filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 120, 0);
    for entry in walk(root) {
        filetime::set_file_times(&entry, old, old).unwrap();
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// CPU time of this process (all threads): on a shared machine, wall time also counts the
/// other processes' turns.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn timed(label: &str, f: impl FnOnce() -> CodeLayer) -> (Duration, CodeLayer) {
    let (start, cpu) = (Instant::now(), cpu_time());
    let code = f();
    let took = start.elapsed();
    let cpu = cpu_time() - cpu;
    println!(
        "{label:<34} {:>8.1} ms wall {:>8.1} ms cpu  {} files, {:.1} MB -> {:.1} MB, reused: {}",
        took.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0,
        code.files,
        code.bytes as f64 / 1e6,
        code.layer.size as f64 / 1e6,
        code.reused
    );
    (took, code)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let files: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mb: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    make_tree(&root, files, mb * 1_000_000);
    age(&root);
    let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let lease = index.lease("bench", LeaseOwner::current_process()).unwrap();
    let options = PackOptions {
        cache_dir: Some(dir.path().join("code-cache")),
        ..PackOptions::default()
    };
    let run = || pack(&root, &options, &store, &lease).unwrap();
    println!(
        "tree: {files} files, {mb} MB (gzip level {})",
        strata_code::CODE_GZIP_LEVEL
    );
    let (cold, first) = timed("cold pack", run);
    let (unchanged, again) = timed("unchanged (stat cache)", run);
    assert!(again.reused && again.layer == first.layer);
    let one = root.join("pkg00/mod_0000.py");
    fs::write(&one, content(999_999, mb * 1_000_000 / files)).unwrap();
    let (changed, third) = timed("one file changed", run);
    assert!(!third.reused && third.layer != first.layer);
    // Every file written just now: racy, so the cache reads them all to be sure.
    let fresh = dir.path().join("fresh");
    make_tree(&fresh, files, mb * 1_000_000);
    let fresh_run = || pack(&fresh, &options, &store, &lease).unwrap();
    timed("cold pack, files just written", fresh_run);
    let (racy, _) = timed("unchanged, files just written", fresh_run);
    println!(
        "targets: cold < 300 ms ({}), unchanged < 50 ms ({}); one changed {:.1} ms; racy unchanged {:.1} ms",
        if cold < Duration::from_millis(300) { "met" } else { "MISSED" },
        if unchanged < Duration::from_millis(50) { "met" } else { "MISSED" },
        changed.as_secs_f64() * 1000.0,
        racy.as_secs_f64() * 1000.0,
    );
}

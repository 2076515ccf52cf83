//! `strata detect` on a generated 5,000-file repository, against `pipreqs` on the same tree in
//! the same run.
//!
//!     cargo run --release -p strata-detect --example bench_detect -- [ENV_PREFIX]
//!
//! ENV_PREFIX is the environment to map imports through (default: the active one, as
//! `strata detect` finds it). `pipreqs` is looked up as `$ENV_PREFIX/bin/pipreqs`, then on
//! PATH; put it in a throwaway environment (it is no dependency of strata's):
//!
//!     uv venv /tmp/pipreqs-venv && VIRTUAL_ENV=/tmp/pipreqs-venv uv pip install pipreqs
//!     cargo run --release -p strata-detect --example bench_detect -- /tmp/pipreqs-venv
//!
//! pipreqs runs with `--use-local` (installed metadata only, no PyPI) and `--print`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_detect::{DetectOptions, EnvOrigin, PythonEnv};

const PACKAGES: usize = 100;
const MODULES_PER_PACKAGE: usize = 50;
const RUNS: usize = 5;

/// Third-party imports the generated modules draw from: some installed in a typical
/// environment, some not (those are warnings, as in a real repository).
const THIRD_PARTY: [&str; 12] = [
    "requests",
    "yaml",
    "jinja2",
    "dateutil.parser",
    "IPython.display",
    "bs4",
    "tornado.web",
    "numpy",
    "pandas",
    "sklearn.linear_model",
    "PIL.Image",
    "docopt",
];

fn main() {
    let prefix = std::env::args().nth(1).map(PathBuf::from);
    let env = match &prefix {
        Some(prefix) => PythonEnv::at_prefix(prefix, EnvOrigin::Explicit),
        None => PythonEnv::discover(),
    }
    .unwrap_or_else(|e| panic!("no environment: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let files = generate(&root);
    println!(
        "repository: {files} Python files in {} packages (environment {}, Python {})",
        PACKAGES,
        env.prefix.display(),
        env.version
    );

    let options = DetectOptions::default();
    let mut detect_times = Vec::new();
    let mut found = 0;
    let cpu_before = cpu_time();
    for _ in 0..RUNS {
        let start = Instant::now();
        let detection = strata_detect::from_imports(&root, &env, &options).expect("detect");
        detect_times.push(start.elapsed());
        found = detection.requirements.len();
    }
    let cpu = cpu_time().map(|after| (after - cpu_before.unwrap_or_default()) / RUNS as u32);
    breakdown(&root, &env);
    if let Some(cpu) = cpu {
        println!(
            "strata-detect: {:.1} ms of CPU time per run (all threads)",
            ms(cpu)
        );
    }
    // What `strata detect` adds: asking the interpreter what it is (once per run).
    let start = Instant::now();
    PythonEnv::probe(&env.python, EnvOrigin::Explicit).expect("probe");
    let probe = start.elapsed();
    let detect = median(&mut detect_times);
    println!(
        "strata-detect: median {:.1} ms of {RUNS} runs ({found} requirements), plus {:.1} ms \
         asking the interpreter: {:.1} ms in all (target: under 1000 ms)",
        ms(detect),
        ms(probe),
        ms(detect + probe)
    );

    let Some(pipreqs) = find_pipreqs(prefix.as_deref()) else {
        println!("pipreqs: not found (see this example's header to install it): no ratio");
        return;
    };
    let start = Instant::now();
    let out = Command::new(&pipreqs)
        .args(["--use-local", "--print"])
        .arg(&root)
        .output()
        .expect("run pipreqs");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "pipreqs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    println!(
        "pipreqs ({}): {:.1} ms ({lines} requirements)",
        pipreqs.display(),
        ms(elapsed)
    );
    println!(
        "ratio: strata-detect is {:.1}x faster than pipreqs",
        elapsed.as_secs_f64() / (detect + probe).as_secs_f64()
    );
}

/// The phases of a detection, one run each: walk, parse, reading the environment.
fn breakdown(root: &Path, env: &PythonEnv) {
    let start = Instant::now();
    let files = strata_detect::project::python_files(root).expect("walk");
    let walk = start.elapsed();
    let start = Instant::now();
    for file in &files {
        let text = fs::read_to_string(file).expect("read");
        strata_detect::imports::imports_of(&text).expect("parse");
    }
    let parse = start.elapsed();
    let start = Instant::now();
    let (installed, _) = strata_detect::installed::Installed::scan(&env.site_packages);
    let scan = start.elapsed();
    println!(
        "  phases: walk {:.1} ms, read and parse {:.1} ms (one thread), environment \
         ({} distributions) {:.1} ms",
        ms(walk),
        ms(parse),
        installed.dists.len(),
        ms(scan)
    );
}

/// CPU time this process has had, all threads (user + system, `/proc/self/stat`, in clock
/// ticks of 1/100 s).
fn cpu_time() -> Option<Duration> {
    let text = fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn find_pipreqs(prefix: Option<&Path>) -> Option<PathBuf> {
    let in_env = prefix
        .map(|p| p.join("bin/pipreqs"))
        .filter(|p| p.is_file());
    in_env.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("pipreqs"))
            .find(|p| p.is_file())
    })
}

/// Writes the repository; returns how many Python files it has.
fn generate(root: &Path) -> usize {
    let mut count = 0;
    for p in 0..PACKAGES {
        let package = root.join(format!("pkg{p:03}"));
        fs::create_dir_all(&package).expect("mkdir");
        fs::write(package.join("__init__.py"), "").expect("write");
        count += 1;
        for m in 1..MODULES_PER_PACKAGE {
            fs::write(package.join(format!("mod{m:03}.py")), module(p, m)).expect("write");
            count += 1;
        }
    }
    count
}

/// About 60 lines: imports at the top and inside functions, an optional import, classes.
fn module(p: usize, m: usize) -> String {
    let third = THIRD_PARTY[(p * 7 + m) % THIRD_PARTY.len()];
    let other = THIRD_PARTY[(p + m * 3) % THIRD_PARTY.len()];
    let sibling = (m % (MODULES_PER_PACKAGE - 1)) + 1;
    let neighbour = (p + 1) % PACKAGES;
    let mut text = format!(
        "\"\"\"Module {m} of package {p}.\"\"\"\n\
         import os\nimport sys\nimport json\nfrom collections import defaultdict\n\
         import {third}\n\
         from pkg{neighbour:03} import mod{sibling:03}\n\
         from . import mod{sibling:03} as sibling\n\n\
         try:\n    import ujson as fastjson\nexcept ImportError:\n    fastjson = json\n\n"
    );
    for f in 0..8 {
        text.push_str(&format!(
            "\ndef function_{f}(values, scale={f}):\n    \
             import {other}\n    \
             total = sum(v * scale for v in values if v is not None)\n    \
             table = defaultdict(list)\n    \
             for i, v in enumerate(values):\n        table[i % 3].append(v)\n    \
             return {{\"total\": total, \"table\": dict(table), \"path\": os.sep}}\n"
        ));
    }
    text.push_str(
        "\n\nclass Model:\n    def __init__(self, name):\n        self.name = name\n\n    \
         def run(self):\n        return function_0([1, 2, 3]), sys.argv\n",
    );
    text
}

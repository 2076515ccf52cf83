//! Test skips, decided for the whole project: `STRATA_SKIP_ROOT=1` marks the tests that need
//! root as ignored (`cfg(skip_root)`), `STRATA_SKIP_K8S=1` those that need the test cluster
//! (`cfg(skip_k8s)`), `STRATA_SKIP_BASES=1` those that need the Python 3.10, 3.12 and 3.13
//! fixture bases (`cfg(skip_bases)`, `STRATA_TEST_BASES_DIR`). Without them such a test runs
//! and fails if its precondition is missing.
//!
//! Also the commit `strata --version` shows (`STRATA_COMMIT`): `STRATA_BUILD_COMMIT` when set
//! (a packager building from a tarball), else git's HEAD, else "unknown commit".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_root)");
    println!("cargo::rustc-check-cfg=cfg(skip_k8s)");
    println!("cargo::rustc-check-cfg=cfg(skip_bases)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_ROOT");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_K8S");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_BASES");
    if std::env::var_os("STRATA_SKIP_ROOT").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_root");
    }
    if std::env::var_os("STRATA_SKIP_K8S").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_k8s");
    }
    if std::env::var_os("STRATA_SKIP_BASES").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_bases");
    }
    println!("cargo::rustc-env=STRATA_COMMIT={}", commit());
}

fn commit() -> String {
    println!("cargo::rerun-if-env-changed=STRATA_BUILD_COMMIT");
    if let Some(commit) = std::env::var("STRATA_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        return commit;
    }
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown commit".to_string();
    };
    // Built again when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    for path in [
        Some("HEAD".to_string()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            if Path::new(&file).exists() {
                println!("cargo::rerun-if-changed={file}");
            }
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        if Path::new(&packed).exists() {
            println!("cargo::rerun-if-changed={packed}");
        }
    }
    head
}

/// One line of git's output, or None when git is missing or this is not a checkout.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}

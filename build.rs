//! Test skips, decided for the whole project: `STRATA_SKIP_ROOT=1` marks the tests that need
//! root as ignored (`cfg(skip_root)`), `STRATA_SKIP_K8S=1` those that need the test cluster
//! (`cfg(skip_k8s)`). Without them such a test runs and fails if its precondition is missing.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_root)");
    println!("cargo::rustc-check-cfg=cfg(skip_k8s)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_ROOT");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_K8S");
    if std::env::var_os("STRATA_SKIP_ROOT").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_root");
    }
    if std::env::var_os("STRATA_SKIP_K8S").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_k8s");
    }
}

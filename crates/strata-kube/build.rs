//! `STRATA_SKIP_K8S=1` sets cfg `skip_k8s`: the tests that need the test cluster
//! (`scripts/testcluster`) are then ignored, with the reason. Without it they run, and fail
//! if the cluster cannot start.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_k8s)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_K8S");
    if std::env::var_os("STRATA_SKIP_K8S").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_k8s");
    }
}

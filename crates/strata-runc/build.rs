//! `STRATA_SKIP_ROOT=1` marks the tests that need root as ignored (`cfg(skip_root)`);
//! without it such a test runs and fails when not root.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_root)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_ROOT");
    if std::env::var_os("STRATA_SKIP_ROOT").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_root");
    }
}

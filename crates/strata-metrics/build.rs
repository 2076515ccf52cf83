//! `STRATA_SKIP_ROOT=1` sets cfg `skip_root`: the tests that need root (runc, overlay
//! mounts, cgroups) are then ignored, with the reason, instead of failing.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_root)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_ROOT");
    if std::env::var_os("STRATA_SKIP_ROOT").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=skip_root");
    }
}

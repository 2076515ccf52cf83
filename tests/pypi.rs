//! Opt-in tests against the real PyPI (issue 12, "What must hold" 4). They need the network,
//! so they are ignored (listed as such by `cargo test`); run them with
//! `cargo test --test pypi -- --ignored --nocapture` (as root: the result runs in runc).
//!
//! 1. numpy, pandas and scikit-learn locked by `uv lock` into a `uv.lock`, built by strata
//!    from that lock (no resolution), imported in runc. numpy's extension modules need
//!    `libstdc++.so.6`, which the fixture base lacks: give a base that has it in
//!    `STRATA_TEST_PYPI_BASE` (e.g. an `oci:PATH:TAG` of `python:3.11-slim`).
//! 2. What `--compile` gains: `import sympy` (pure Python, so any base) timed in runc from a
//!    plain and a compiled image, with `python -B` so the plain one cannot write its pycs
//!    during the first run and win the later ones.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A project asking for `dependencies`, locked by uv against PyPI for CPython 3.11.
fn locked_project(world: &World, dependencies: &[&str]) -> PathBuf {
    let dir = world.dir.path().join("datascience");
    fs::create_dir_all(&dir).unwrap();
    let list: Vec<String> = dependencies.iter().map(|d| format!("\"{d}\"")).collect();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"datascience\"\nversion = \"0.1\"\n\
             requires-python = \">=3.11,<3.12\"\ndependencies = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    run(Command::new("uv")
        .args(["lock", "--quiet", "--python", "3.11"])
        .current_dir(&dir)
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_NO_INDEX")
        .env_remove("UV_OFFLINE"));
    dir.join("uv.lock")
}

/// `$STRATA_TEST_PYPI_BASE`, else the fixture base.
fn pypi_base() -> String {
    std::env::var("STRATA_TEST_PYPI_BASE")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(base_ref)
}

/// `strata build -r FILE --json` against PyPI (no find-links, an index).
fn build_from_pypi(world: &World, file: &Path, extra: &[&str]) -> Value {
    let out = world
        .command(&[
            "build",
            "-r",
            file.to_str().unwrap(),
            "--base",
            &pypi_base(),
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata build failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs network access to PyPI; run with `cargo test --test pypi -- --ignored`"]
fn numpy_pandas_and_scikit_learn_from_a_uv_lock_import_in_runc() {
    require_root("runc");
    let world = World::new();
    let lock = locked_project(&world, &["numpy", "pandas", "scikit-learn"]);
    let built = build_from_pypi(&world, &lock, &[]);
    assert_eq!(built["cache"], "miss", "{built}");
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let check = "import numpy, pandas, sklearn\n\
                 from sklearn.linear_model import LinearRegression\n\
                 x = numpy.arange(10.0).reshape(-1, 1)\n\
                 frame = pandas.DataFrame({'x': x[:, 0], 'y': 2 * x[:, 0] + 1})\n\
                 model = LinearRegression().fit(frame[['x']], frame['y'])\n\
                 print(round(float(model.coef_[0]), 6), numpy.__version__, pandas.__version__, sklearn.__version__)";
    let (code, stdout, err) = runc_run(&bundle, &["python", "-c", check]);
    assert_eq!(
        code, 0,
        "imports failed in runc (numpy needs libstdc++.so.6 in the base: STRATA_TEST_PYPI_BASE): {err}"
    );
    assert!(stdout.starts_with("2.0 "), "{stdout}");
    // The same lock again is answered from the cache.
    let again = build_from_pypi(&world, &lock, &[]);
    assert_eq!(again["cache"], "hit");
    assert_eq!(again["digest"], built["digest"]);
}

/// Seconds for `python -B -c "import sympy"` in the image of `built`, best of `runs`.
fn import_seconds(world: &World, built: &Value, name: &str, runs: usize) -> f64 {
    let bundle = world.dir.path().join(name);
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let timing =
        "import time; t = time.perf_counter(); import sympy; print(time.perf_counter() - t)";
    (0..runs)
        .map(|_| {
            // -B: the plain image must not write pycs on the first run and win the later ones.
            let (code, stdout, err) = runc_run(&bundle, &["python", "-B", "-c", timing]);
            assert_eq!(code, 0, "{err}");
            stdout.trim().parse::<f64>().unwrap()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "needs network access to PyPI; run with `cargo test --test pypi -- --ignored`"]
fn compile_makes_importing_sympy_faster() {
    require_root("runc");
    let world = World::new();
    let lock = locked_project(&world, &["sympy"]);
    let plain = build_from_pypi(&world, &lock, &[]);
    let compiled = build_from_pypi(&world, &lock, &["--compile"]);
    assert_ne!(plain["digest"], compiled["digest"]);
    let without = import_seconds(&world, &plain, "plain", 5);
    let with = import_seconds(&world, &compiled, "compiled", 5);
    println!("import sympy in runc: {without:.3}s without --compile, {with:.3}s with (best of 5)");
    assert!(
        with < without,
        "--compile did not make the import faster: {with} >= {without}"
    );
}

//! End-to-end tests of `strata build` against real components: uv resolving offline from
//! fixture wheels, the fixture base image, and the image checked by skopeo, umoci and runc.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use serde_json::Value;

const PACKAGES: &[(&str, &str)] = &[
    ("alpha", "alpha"),
    ("beta", "beta"),
    ("cext", "cext"),
    ("datapkg", "datapkg"),
    ("gamma", "gamma"),
    ("nsa", "nsp.a"),
    ("nsb", "nsp.b"),
    ("tools", "tools"),
    ("zeta-util", "zeta_util"),
];

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn build_runs_in_runc_and_agrees_with_its_lock() {
    let world = World::new();
    let built = world.build_ok(&requirements("basic.txt"), &[]);
    assert_eq!(built["cache"], "miss");
    let tag = built["tag"].as_str().unwrap();
    assert!(tag.starts_with("env-"), "{tag}");

    // skopeo reads the store without strata's code.
    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", world.oci().display())));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], built["digest"]);

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), tag, &bundle);
    let lock: Value =
        serde_json::from_slice(&fs::read(bundle.join("rootfs/opt/venv/strata-lock.json")).unwrap())
            .unwrap();

    let imports: Vec<&str> = PACKAGES.iter().map(|(_, module)| *module).collect();
    let script = format!(
        "import json, importlib, importlib.metadata as m\n\
         for mod in {imports:?}: importlib.import_module(mod)\n\
         import cext; assert cext.answer() == 42\n\
         print(json.dumps({{d.metadata['Name'].lower(): d.version for d in m.distributions()}}))"
    );
    let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", &script]);
    assert_eq!(code, 0, "python in the image failed: {stderr}");
    let installed: Value = serde_json::from_str(stdout.trim()).unwrap();
    let wheels = lock["wheels"].as_array().expect("lock lists wheels");
    assert_eq!(wheels.len(), PACKAGES.len());
    for wheel in wheels {
        let name = wheel["name"].as_str().unwrap();
        assert_eq!(
            installed[name.replace('-', "_").as_str()]
                .as_str()
                .or(installed[name].as_str()),
            wheel["version"].as_str(),
            "version of {name} in the image differs from the lock"
        );
    }

    let (code, stdout, stderr) = runc_run(&bundle, &["tools-hello"]);
    assert_eq!(code, 0, "console script failed: {stderr}");
    assert_eq!(stdout.trim(), "hello from tools");
    let (code, _, stderr) = runc_run(&bundle, &["datapkg-run"]);
    assert_eq!(code, 0, ".data script failed: {stderr}");
    assert!(bundle
        .join("rootfs/opt/venv/share/datapkg/data.txt")
        .is_file());
}

#[test]
fn second_build_is_a_cache_hit_that_resolves_nothing() {
    let world = World::new();
    let first = world.build_ok(&requirements("basic.txt"), &[]);
    // Without wheels or uv the hit must still answer: it reads neither.
    fs::remove_dir_all(&world.wheels).unwrap();
    fs::create_dir_all(&world.wheels).unwrap();
    let out = world
        .build_command(&requirements("basic.txt"), &base_ref(), &[])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(second["cache"], "hit");
    assert_eq!(second["digest"], first["digest"]);
    assert!(second["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["reused"] == Value::Bool(true)));
}

#[test]
fn same_lock_gives_same_manifest_across_stores_threads_and_mtimes() {
    let world = World::new();
    let first = world.build_ok(&requirements("basic.txt"), &["--jobs", "1"]);
    // Touch every wheel to a new mtime: layer bytes must not depend on it.
    for entry in fs::read_dir(&world.wheels).unwrap().flatten() {
        let file = fs::File::options().append(true).open(entry.path()).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
    }
    let other = world.with_home("second");
    let second = other.build_ok(&requirements("basic.txt"), &["--jobs", "4"]);
    assert_eq!(second["cache"], "miss", "a fresh store must build");
    assert_eq!(first["digest"], second["digest"]);
    assert_eq!(first["lock_digest"], second["lock_digest"]);
}

#[test]
fn equivalent_requirements_share_a_spec_digest_and_changes_do_not() {
    let world = World::new();
    let a = world.build_ok(&requirements("basic.txt"), &[]);
    let b = world.build_ok(&requirements("basic-reformatted.txt"), &[]);
    assert_eq!(a["spec_digest"], b["spec_digest"]);
    assert_eq!(b["cache"], "hit");
    let c = world.build_ok(&requirements("changed-one.txt"), &[]);
    assert_ne!(a["spec_digest"], c["spec_digest"]);
    assert_ne!(a["lock_digest"], c["lock_digest"]);
}

#[test]
fn changing_one_pin_rebuilds_one_package_layer_and_the_env_layer() {
    let world = World::new();
    let first = world.build_ok(&requirements("basic.txt"), &[]);
    let second = world.build_ok(&requirements("changed-one.txt"), &[]);
    assert_eq!(second["cache"], "miss");
    let rebuilt = rebuilt_layers(&second);
    assert_eq!(
        rebuilt.len(),
        2,
        "expected alpha and the env layer: {rebuilt:?}"
    );
    assert_eq!(rebuilt[0]["packages"], serde_json::json!(["alpha==1.1.0"]));
    assert_eq!(rebuilt[1]["packages"], serde_json::json!([]));
    let layers = |v: &Value| v["layers"].as_array().unwrap().len();
    assert_eq!(layers(&first), layers(&second));
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn past_the_layer_limit_the_smallest_wheels_share_a_layer_whatever_the_store_built_before() {
    let world = World::new();
    // basic.txt has 9 wheels; 6 layers = base + 4 package layers + env layer.
    let built = world.build_ok(&requirements("basic.txt"), &["--max-layers", "6"]);
    let layers = built["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 6);
    let merged = layers
        .iter()
        .find(|l| l["packages"].as_array().unwrap().len() > 1)
        .expect("one merged layer");
    assert_eq!(merged["packages"].as_array().unwrap().len(), 6);
    let again = world
        .with_home("again")
        .build_ok(&requirements("basic.txt"), &["--max-layers", "6"]);
    assert_eq!(again["digest"], built["digest"]);
    // A store that built another environment first (every wheel but alpha 1.0.0 in common)
    // gives the same image: which wheels merge depends on the lock, not on the history.
    let seasoned = world.with_home("seasoned");
    seasoned.build_ok(&requirements("changed-one.txt"), &[]);
    let after_history = seasoned.build_ok(&requirements("basic.txt"), &["--max-layers", "6"]);
    assert_eq!(after_history["digest"], built["digest"]);
    // The wheels that keep their own layer are the largest.
    let size_of = |name: &str| {
        let wheel = fs::read_dir(&world.wheels)
            .unwrap()
            .flatten()
            .find(|e| {
                let file = e.file_name().to_string_lossy().to_lowercase();
                file.starts_with(&format!("{}-", name.replace('-', "_"))) && file.ends_with(".whl")
            })
            .unwrap_or_else(|| panic!("no wheel of {name}"));
        wheel.metadata().unwrap().len()
    };
    let own_layer_sizes: Vec<u64> = layers
        .iter()
        .filter_map(|l| match l["packages"].as_array().unwrap().as_slice() {
            [one] => Some(size_of(one.as_str().unwrap().split("==").next().unwrap())),
            _ => None,
        })
        .collect();
    let merged_sizes: Vec<u64> = merged["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| size_of(p.as_str().unwrap().split("==").next().unwrap()))
        .collect();
    assert!(
        own_layer_sizes.iter().min() >= merged_sizes.iter().max(),
        "own layers {own_layer_sizes:?}, merged {merged_sizes:?}"
    );

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let imports: Vec<&str> = PACKAGES.iter().map(|(_, module)| *module).collect();
    let script =
        format!("import importlib\nfor m in {imports:?}: importlib.import_module(m)\nprint('ok')");
    let (code, stdout, err) = runc_run(&bundle, &["python", "-c", &script]);
    assert_eq!((code, stdout.trim()), (0, "ok"), "{err}");

    let out = world.build(&requirements("basic.txt"), &["--max-layers", "2"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-layers 2"), "{}", stderr(&out));
}

/// `[build]` in the project's strata.toml gives the base and the wheel sources when no flag
/// does (relative paths from the file), and the result is the flags' build; a flag wins.
#[test]
fn build_defaults_come_from_strata_toml() {
    let world = World::new();
    let flags = world.build_ok(&requirements("basic.txt"), &[]);
    let wheels = world.dir.path().join("wheel-dir");
    std::os::unix::fs::symlink(&world.wheels, &wheels).unwrap();
    std::fs::write(
        world.dir.path().join("strata.toml"),
        format!(
            "[build]\nbase = \"{}\"\nfind_links = [\"wheel-dir\"]\nno_index = true\n",
            base_ref()
        ),
    )
    .unwrap();
    let req = requirements("basic.txt").display().to_string();
    let out = world.strata(&["build", "-r", &req, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let defaults: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(defaults["lock_digest"], flags["lock_digest"]);
    // The wheel directory is reached by another path, but a local find-links directory is
    // not part of the spec (issue 11): the same spec, a hit on the flags' image.
    assert_eq!(defaults["cache"], "hit", "{defaults}");
    assert_eq!(defaults["spec_digest"], flags["spec_digest"]);
    assert_eq!(defaults["digest"], flags["digest"]);

    std::fs::write(
        world.dir.path().join("strata.toml"),
        "[build]\nfind_links = [\"wheel-dir\"]\n",
    )
    .unwrap();
    let out = world.strata(&["build", "-r", &req, "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[build]"), "{}", stderr(&out));
}

/// A wrapper of uv that appends its arguments to `$UV_LOG`, and with `$SPOIL_PINS` set adds
/// a direct reference to the plain pins it writes (which strata then cannot take).
fn logging_uv(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("uv-logging");
    fs::write(
        &script,
        "#!/bin/sh\necho \"$*\" >> \"$UV_LOG\"\nuv \"$@\" || exit $?\n\
         case \"$*\" in *'--format requirements.txt'*)\n\
           [ -n \"$SPOIL_PINS\" ] && echo 'spoiled @ file:///nowhere/spoiled-1.0-py3-none-any.whl' >> pins.txt ;;\n\
         esac\nexit 0\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn wheels_of_local_directories_are_hashed_by_strata_not_by_uv() {
    let world = World::new();
    let uv = logging_uv(world.dir.path());
    let log = world.dir.path().join("uv.log");
    let out = world
        .build_command(&requirements("basic.txt"), &base_ref(), &[])
        .env("STRATA_UV", &uv)
        .env("UV_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pins: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = fs::read_to_string(&log).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
    assert!(
        runs.contains("--format requirements.txt") && !runs.contains("pylock"),
        "uv was asked for a pylock.toml, which hashes every wheel of the directory: {runs}"
    );

    // Pins strata cannot take (a direct reference) go through uv's pylock.toml, as before:
    // the same lock and the same image either way.
    let other = world.with_home("pylock");
    fs::remove_file(&log).unwrap();
    let out = other
        .build_command(&requirements("basic.txt"), &base_ref(), &[])
        .env("STRATA_UV", &uv)
        .env("UV_LOG", &log)
        .env("SPOIL_PINS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pylock: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = fs::read_to_string(&log).unwrap();
    assert_eq!(runs.lines().count(), 2, "{runs}");
    assert!(
        runs.lines()
            .nth(1)
            .unwrap()
            .contains("--format pylock.toml"),
        "{runs}"
    );
    assert_eq!(pins["lock_digest"], pylock["lock_digest"]);
    assert_eq!(pins["digest"], pylock["digest"]);
}

#[test]
fn a_base_image_is_scanned_for_its_interpreter_once() {
    let world = World::new();
    let layout = world.dir.path().join("base");
    run(Command::new("cp").arg("-r").arg(base_layout()).arg(&layout));
    let base = format!("oci:{}:3.11", layout.display());
    let build = |file: &str| {
        world
            .build_command(&requirements(file), &base, &[])
            .output()
            .unwrap()
    };
    let out = build("basic.txt");
    assert!(out.status.success(), "{}", stderr(&out));
    // Every large blob of the layout (its layers) becomes garbage: a scan for the interpreter
    // would fail to read it. The store has its own verified copy of the base from the first
    // build, so a build that does not scan again goes on.
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap().flatten() {
        if entry.metadata().unwrap().len() > 4096 {
            fs::write(entry.path(), b"not a layer").unwrap();
        }
    }
    let out = build("changed-one.txt");
    assert!(
        out.status.success(),
        "the base was scanned again: {}",
        stderr(&out)
    );
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(second["cache"], "miss");
}

//! The hard edges of wheels, with one rule whether the wheels get a layer each or share one
//! (past the layer limit): namespace packages split across wheels (PEP 420 and pkgutil-style),
//! `.pth` files, scripts with `#!python`, `#!/usr/bin/python` and `#!/usr/bin/env python3`,
//! and two wheels writing one file with other content (refused, naming both).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const EXIT_BAD_INPUT: i32 = 3;

/// The fixture wheels of these tests, made with the fixture wheel builder into `out`.
fn edge_wheels(out: &Path) -> PathBuf {
    let script = r##"
import sys
sys.path.insert(0, sys.argv[1])
from make_wheels import build_wheel, EXECUTABLE
out = sys.argv[2]
pkgutil_init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
script = "import edgens.one, edgens.two, sys\nprint(sys.argv[0].rsplit('/', 1)[-1], edgens.one.NAME, edgens.two.NAME, sys.prefix)\n"
build_wheel(out, "edge-nsone", "1.0", {"edgens/one/__init__.py": 'NAME = "one"\n'})
build_wheel(out, "edge-nstwo", "1.0", {"edgens/two/__init__.py": 'NAME = "two"\n'})
build_wheel(out, "edge-pka", "1.0", {"edgepk/__init__.py": pkgutil_init, "edgepk/a.py": "A = 'a'\n"})
build_wheel(out, "edge-pkb", "1.0", {"edgepk/__init__.py": pkgutil_init, "edgepk/b.py": "B = 'b'\n"})
build_wheel(out, "edge-pth", "1.0", {
    "edge_pth.pth": "edge_pth_src\n",
    "edge_pth_src/pthmod.py": "WHERE = 'via .pth'\n",
})
build_wheel(out, "edge-scripts", "1.0", {
    "edge_scripts/__init__.py": "",
    "edge_scripts-1.0.data/scripts/edge-placeholder": ("#!python\n" + script, EXECUTABLE),
    "edge_scripts-1.0.data/scripts/edge-usr": ("#!/usr/bin/python\n" + script, EXECUTABLE),
    "edge_scripts-1.0.data/scripts/edge-env": ("#!/usr/bin/env python3\n" + script, EXECUTABLE),
})
build_wheel(out, "edge-clash-a", "1.0", {"edgeclash/__init__.py": "WHO = 'a'\n"})
build_wheel(out, "edge-clash-b", "1.0", {"edgeclash/__init__.py": "WHO = 'b'\n"})
"##;
    fs::create_dir_all(out).unwrap();
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("fixtures/wheels"))
        .arg(out));
    out.to_path_buf()
}

fn edge_world() -> World {
    let mut world = World::new();
    world.wheels = edge_wheels(&world.dir.path().join("edge-wheels"));
    world
}

/// The layer limit that puts every wheel into one merged layer: the fixture base's one
/// layer, the merged layer and the env layer.
const ALL_MERGED: &str = "3";

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn namespaces_pth_files_and_scripts_work_in_a_layer_each_and_merged() {
    let world = edge_world();
    let req = world.dir.path().join("edges.txt");
    fs::write(
        &req,
        "edge-nsone==1.0\nedge-nstwo==1.0\nedge-pka==1.0\nedge-pkb==1.0\n\
         edge-pth==1.0\nedge-scripts==1.0\n",
    )
    .unwrap();
    for (mode, extra) in [
        ("a layer each", vec![]),
        ("merged", vec!["--max-layers", ALL_MERGED]),
    ] {
        let built = world.build_ok(&req, &extra);
        let layers = built["layers"].as_array().unwrap();
        let want_layers = if extra.is_empty() { 1 + 6 + 1 } else { 3 };
        assert_eq!(layers.len(), want_layers, "{mode}: {built}");
        let bundle = world
            .dir
            .path()
            .join(format!("bundle-{}", mode.replace(' ', "-")));
        umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);

        let check = "import edgens.one, edgens.two, edgepk.a, edgepk.b, pthmod\n\
                     print(edgens.one.NAME, edgens.two.NAME, edgepk.a.A, edgepk.b.B, pthmod.WHERE)";
        let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", check]);
        assert_eq!(code, 0, "{mode}: imports failed: {stderr}");
        assert_eq!(stdout.trim(), "one two a b via .pth", "{mode}");

        for script in ["edge-placeholder", "edge-usr", "edge-env"] {
            let path = bundle.join("rootfs/opt/venv/bin").join(script);
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("#!/opt/venv/bin/python\n"),
                "{mode}: {script} keeps its shebang: {text}"
            );
            let (code, stdout, stderr) = runc_run(&bundle, &[script]);
            assert_eq!(code, 0, "{mode}: {script} failed: {stderr}");
            assert_eq!(
                stdout.trim(),
                format!("{script} one two /opt/venv"),
                "{mode}"
            );
        }
    }
}

#[test]
fn wheels_writing_one_file_are_refused_in_a_layer_each_and_merged() {
    let world = edge_world();
    // Something built first, so that "unchanged" compares a store that holds an image.
    let first = world.dir.path().join("first.txt");
    fs::write(&first, "edge-nsone==1.0\n").unwrap();
    world.build_ok(&first, &[]);
    let req = world.dir.path().join("clash.txt");
    fs::write(
        &req,
        "edge-clash-a==1.0\nedge-clash-b==1.0\nedge-nsone==1.0\n",
    )
    .unwrap();
    for extra in [vec![], vec!["--max-layers", ALL_MERGED]] {
        let before = world.snapshot();
        let out = world.build(&req, &extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{extra:?}: {err}");
        for culprit in [
            "edge_clash_a-1.0-py3-none-any.whl",
            "edge_clash_b-1.0-py3-none-any.whl",
            "site-packages/edgeclash/__init__.py",
        ] {
            assert!(err.contains(culprit), "{extra:?}: no {culprit:?} in {err}");
        }
        assert_eq!(
            before,
            world.snapshot(),
            "{extra:?}: the store changed: {err}"
        );
    }
}

/// A layer indexed before strata kept layer paths is read from its blob, once.
#[test]
fn layers_indexed_without_paths_are_read_from_their_blob() {
    let world = edge_world();
    let first = world.dir.path().join("first.txt");
    fs::write(&first, "edge-clash-a==1.0\n").unwrap();
    world.build_ok(&first, &[]);
    let forget = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  n = db.execute('DELETE FROM layer_paths').rowcount\n\
                  db.commit()\n\
                  print(n)";
    let db = world.home.join("strata.db");
    let forgotten = run(Command::new("python3").arg("-c").arg(forget).arg(&db));
    assert_ne!(forgotten.trim(), "0", "the build kept no layer paths");
    let req = world.dir.path().join("clash.txt");
    fs::write(&req, "edge-clash-a==1.0\nedge-clash-b==1.0\n").unwrap();
    let out = world.build(&req, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    assert!(
        err.contains("wheels edge_clash_a-1.0-py3-none-any.whl and edge_clash_b-1.0-py3-none-any.whl both install")
            && err.contains("site-packages/edgeclash/__init__.py"),
        "{err}"
    );
}

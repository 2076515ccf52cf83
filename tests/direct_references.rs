//! Direct references: `name @ file:///abs/x.whl`, a project directory named by path (`./pkg`)
//! or by `name @ file:///abs/pkg`, `-e ./pkg` (installed as a regular package, with a
//! warning), and `name @ http://.../x.whl` (its sha256 recorded in the lock; a wrong pinned
//! hash refused).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

const EXIT_BAD_INPUT: i32 = 3;

/// Wheels outside the find-links directory, made with the fixture wheel builder.
fn direct_wheels(out: &Path) -> PathBuf {
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from make_wheels import build_wheel
out = sys.argv[2]
build_wheel(out, "edge-direct", "1.0", {"edgedirect/__init__.py": "WHERE = 'from a wheel file'\n"})
build_wheel(out, "edge-remote", "1.0", {"edgeremote/__init__.py": "WHERE = 'from a URL'\n"})
"#;
    fs::create_dir_all(out).unwrap();
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("fixtures/wheels"))
        .arg(out));
    out.to_path_buf()
}

/// A project directory built by the fixture backend (a wheel in the find-links directory).
fn project(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    fs::create_dir_all(root.join(name)).unwrap();
    fs::write(
        root.join("pyproject.toml"),
        format!(
            "[build-system]\nrequires = [\"strata-fixture-backend\"]\n\
             build-backend = \"strata_fixture_backend\"\n\n\
             [project]\nname = \"{name}\"\nversion = \"0.1.0\"\n"
        ),
    )
    .unwrap();
    fs::write(
        root.join(name).join("__init__.py"),
        format!("WHERE = '{name} from its directory'\n"),
    )
    .unwrap();
    root
}

/// A project directory is built again at every build (it has no digest to cache by); with a
/// backend that stamps the build time into the wheel (as setuptools and flit do, and the
/// fixture backend), the builds agree because strata gives them a fixed SOURCE_DATE_EPOCH.
/// A changed file is a new lock: the directory is built, not remembered.
#[test]
fn a_project_directory_built_again_gives_the_same_image() {
    let world = World::new();
    project(world.dir.path(), "stamped");
    let req = world.dir.path().join("stamped.txt");
    fs::write(&req, "./stamped\n").unwrap();
    let build = || {
        let out = world
            .build_command(&req, &base_ref(), &["--refresh"])
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = build();
    // Past the two-second resolution of a zip entry's time.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let again = build();
    assert_eq!(first["lock_digest"], again["lock_digest"]);
    assert_eq!(first["digest"], again["digest"]);

    let module = world.dir.path().join("stamped/stamped/__init__.py");
    fs::write(&module, "WHERE = 'changed'\n").unwrap();
    let changed = build();
    assert_ne!(first["lock_digest"], changed["lock_digest"]);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn wheel_files_project_paths_and_editables_run_in_runc() {
    require_root("runc");
    let world = World::new();
    let dist = direct_wheels(&world.dir.path().join("dist"));
    project(world.dir.path(), "edgeproj");
    project(world.dir.path(), "edgeedit");
    let byurl = project(world.dir.path(), "edgebyurl");
    let backend = "[build-system]\nrequires = [\"strata-fixture-backend\"]\nbuild-backend = \"strata_fixture_backend\"\n";
    let sdist = write_sdist(&dist, "edgesdisturl", backend, &[]);
    let req = world.dir.path().join("direct.txt");
    fs::write(
        &req,
        format!(
            "edge-direct @ file://{}\n./edgeproj\n-e ./edgeedit\nedgebyurl @ file://{}\n\
             edgesdisturl @ file://{}\n",
            dist.join("edge_direct-1.0-py3-none-any.whl").display(),
            byurl.display(),
            sdist.display()
        ),
    )
    .unwrap();
    let out = world.build(&req, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "build failed: {err}");
    assert!(
        err.contains("warning: ")
            && err.contains("-e ./edgeedit: edgeedit is installed as a regular package"),
        "no warning for -e: {err}"
    );
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let check = "import edgedirect, edgeproj, edgeedit, edgebyurl, edgesdisturl\n\
                 for m in (edgedirect, edgeproj, edgeedit, edgebyurl): print(m.WHERE, m.__file__)\n\
                 print(edgesdisturl.VALUE, edgesdisturl.__file__)";
    let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", check]);
    assert_eq!(code, 0, "imports failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (line, want) in lines.iter().zip([
        "from a wheel file",
        "edgeproj from its directory",
        "edgeedit from its directory",
        "edgebyurl from its directory",
        "edgesdisturl built from its sdist",
    ]) {
        assert!(line.starts_with(want), "{line}");
        assert!(
            line.contains(" /opt/venv/lib/"),
            "not installed in the venv: {line}"
        );
    }
    // The editable project is installed, not linked: no .pth file points at the host.
    let site = bundle.join("rootfs/opt/venv/lib/python3.11/site-packages");
    for entry in fs::read_dir(&site).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pth") {
            let text = fs::read_to_string(entry.path()).unwrap();
            assert!(
                !text.contains(&world.dir.path().display().to_string()),
                "{name} links to the host: {text}"
            );
        }
    }
}

#[test]
fn a_path_that_is_no_project_is_named_with_its_line() {
    let world = World::new();
    fs::create_dir_all(world.dir.path().join("empty")).unwrap();
    // A store with an image in it: each refusal leaves it as it was.
    let first = world.dir.path().join("first.txt");
    fs::write(&first, "alpha\n").unwrap();
    world.build_ok(&first, &[]);
    let before = world.snapshot();
    let req = world.dir.path().join("paths.txt");
    for (text, culprit) in [
        ("alpha\n./empty\n", "paths.txt:2: local path \"./empty\" cannot be installed: a directory needs a pyproject.toml"),
        ("-e ./missing\n", "paths.txt:1: local path \"./missing\" cannot be installed: it does not exist"),
    ] {
        fs::write(&req, text).unwrap();
        let out = world.build(&req, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
        assert!(err.contains(culprit), "no {culprit:?} in {err}");
        assert_eq!(before, world.snapshot(), "the store changed: {err}");
    }
}

/// `python3 -m http.server` on a free port, serving `dir`; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let script = "import http.server, functools, sys\n\
                      h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
                      s = http.server.HTTPServer(('127.0.0.1', 0), h)\n\
                      print(s.server_address[1], flush=True)\n\
                      s.serve_forever()";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Server {
            port: line.trim().parse().unwrap(),
            child,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock_json(world: &World) -> String {
    run(Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(''.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT lock_json FROM lock_index')))")
        .arg(world.home.join("strata.db")))
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_wheel_url_is_recorded_by_hash_and_a_wrong_pin_is_refused() {
    require_root("runc");
    let world = World::new();
    let dist = direct_wheels(&world.dir.path().join("dist"));
    let wheel = "edge_remote-1.0-py3-none-any.whl";
    let sha = sha256_hex(&fs::read(dist.join(wheel)).unwrap());
    let server = Server::start(&dist);
    let url = format!("http://127.0.0.1:{}/{wheel}", server.port);

    // No hash given: the lock records the one of the bytes resolved.
    let req = world.dir.path().join("remote.txt");
    fs::write(&req, format!("edge-remote @ {url}\n")).unwrap();
    let built = world.build_ok(&req, &[]);
    let lock = lock_json(&world);
    assert!(
        lock.contains(&format!("sha256:{sha}")) && lock.contains(&url),
        "the lock does not record the wheel's sha256 and URL: {lock}"
    );
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let (code, stdout, run_err) = runc_run(
        &bundle,
        &["python", "-c", "import edgeremote; print(edgeremote.WHERE)"],
    );
    assert_eq!(code, 0, "import failed: {run_err}");
    assert_eq!(stdout.trim(), "from a URL");

    // A pinned hash that is not the wheel's: refused, naming the package, store unchanged.
    let wrong = "0".repeat(64);
    let pinned = world.dir.path().join("pinned.txt");
    fs::write(
        &pinned,
        format!("edge-remote @ {url} --hash=sha256:{wrong}\n"),
    )
    .unwrap();
    let before = world.snapshot();
    let out = world.build(&pinned, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    assert!(
        err.contains("edge-remote") || err.contains("edge_remote"),
        "{err}"
    );
    assert_eq!(before, world.snapshot(), "the store changed: {err}");

    // The right pin builds the same image.
    fs::write(
        &pinned,
        format!("edge-remote @ {url} --hash=sha256:{sha}\n"),
    )
    .unwrap();
    let again = world.build_ok(&pinned, &[]);
    assert_eq!(again["digest"], built["digest"]);
}

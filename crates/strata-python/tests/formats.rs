//! Reading environment files: recognition by name and content, `-r DIR`, uv.lock's
//! dependency graph and markers, pylock.toml's relative paths.

use std::fs;
use std::path::Path;

use strata_python::{
    format_of, project_file, read_env, EnvFile, Format, PinnedSet, PythonVersion, Selection, Target,
};

fn target(arch: &str) -> Target {
    Target::new(PythonVersion::new(3, 11), arch.parse().unwrap())
}

const SHA_A: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
const SHA_B: &str = "bb00000000000000000000000000000000000000000000000000000000000000";

#[test]
fn files_are_recognised_by_name_then_content() {
    let p = Path::new;
    assert_eq!(format_of(p("x/pyproject.toml"), ""), Format::Pyproject);
    assert_eq!(format_of(p("uv.lock"), ""), Format::UvLock);
    assert_eq!(format_of(p("pylock.toml"), ""), Format::Pylock);
    assert_eq!(format_of(p("pylock.gpu.toml"), ""), Format::Pylock);
    assert_eq!(format_of(p("env.yaml"), ""), Format::CondaEnvironment);
    assert_eq!(
        format_of(p("requirements-dev.txt"), "[project]\n"),
        Format::Requirements
    );
    // Names that say nothing: the content decides.
    assert_eq!(
        format_of(p("deps"), "lock-version = \"1.0\"\n"),
        Format::Pylock
    );
    assert_eq!(
        format_of(p("deps"), "version = 1\n[[package]]\nname = \"a\"\n"),
        Format::UvLock
    );
    assert_eq!(
        format_of(p("deps"), "[project]\nname = \"a\"\n"),
        Format::Pyproject
    );
    assert_eq!(
        format_of(p("deps"), "name: x\ndependencies:\n  - pip\n"),
        Format::CondaEnvironment
    );
    assert_eq!(format_of(p("deps"), "alpha==1.0\n"), Format::Requirements);
}

#[test]
fn a_directory_means_its_first_project_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(project_file(d)
        .unwrap_err()
        .to_string()
        .contains("has none of the files"));
    for name in [
        "requirements.txt",
        "pyproject.toml",
        "uv.lock",
        "pylock.toml",
    ] {
        fs::write(d.join(name), "").unwrap();
        assert_eq!(project_file(d).unwrap(), d.join(name), "{name}");
    }
}

fn pinned(path: &Path, text: &str, selection: &Selection) -> PinnedSet {
    fs::write(path, text).unwrap();
    match read_env(path, selection).unwrap() {
        EnvFile::Pinned(set) => set,
        other => panic!("{other:?}"),
    }
}

#[test]
fn uv_lock_follows_the_projects_graph_and_markers_for_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"version = 1
requires-python = ">=3.10"

[[package]]
name = "demo"
version = "0.1"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "alpha" }},
    {{ name = "x86only", marker = "platform_machine == 'x86_64'" }},
]
[package.optional-dependencies]
plot = [{{ name = "beta", extra = ["fast"] }}]
[package.dev-dependencies]
dev = [{{ name = "unused-dev" }}]

[[package]]
name = "alpha"
version = "1.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files.example/alpha-1.0-py3-none-any.whl", hash = "sha256:{SHA_A}", size = 10 }}]

[[package]]
name = "x86only"
version = "1.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files.example/x86only-1.0-py3-none-any.whl", hash = "sha256:{SHA_A}" }}]

[[package]]
name = "beta"
version = "2.0"
source = {{ registry = "https://pypi.org/simple" }}
[package.optional-dependencies]
fast = [{{ name = "gamma" }}]
[[package.wheels]]
url = "https://files.example/beta-2.0-py3-none-any.whl"
hash = "sha256:{SHA_B}"

[[package]]
name = "gamma"
version = "3.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [
    {{ url = "https://files.example/gamma-3.0-cp311-cp311-manylinux_2_17_aarch64.whl", hash = "sha256:{SHA_A}" }},
    {{ url = "https://files.example/gamma-3.0-py3-none-any.whl", hash = "sha256:{SHA_B}" }},
]

[[package]]
name = "unused-dev"
version = "1.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files.example/unused_dev-1.0-py3-none-any.whl", hash = "sha256:{SHA_A}" }}]
"#
    );
    let path = dir.path().join("uv.lock");
    let plain = pinned(&path, &text, &Selection::default());
    let names = |set: &PinnedSet, arch: &str| set.lock_for(&target(arch)).unwrap().packages();
    assert_eq!(names(&plain, "linux/amd64"), ["alpha==1.0", "x86only==1.0"]);
    assert_eq!(names(&plain, "linux/arm64"), ["alpha==1.0"]);

    let plot = Selection {
        extras: vec!["PLOT".into()],
        ..Selection::default()
    };
    let with_plot = pinned(&path, &text, &plot);
    assert_eq!(
        names(&with_plot, "linux/arm64"),
        ["alpha==1.0", "beta==2.0", "gamma==3.0"]
    );
    // gamma: the arm64 wheel on arm64, the pure one elsewhere.
    let arm = with_plot.lock_for(&target("linux/arm64")).unwrap();
    let gamma = arm
        .wheels
        .iter()
        .find(|w| w.name.as_str() == "gamma")
        .unwrap();
    assert!(gamma.filename.contains("aarch64"), "{}", gamma.filename);
    let amd = with_plot.lock_for(&target("linux/amd64")).unwrap();
    let gamma = amd
        .wheels
        .iter()
        .find(|w| w.name.as_str() == "gamma")
        .unwrap();
    assert_eq!(gamma.filename, "gamma-3.0-py3-none-any.whl");

    let err = with_plot
        .lock_for(&Target::new(
            PythonVersion::new(3, 9),
            "linux/amd64".parse().unwrap(),
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("requires-python \">=3.10\" excludes the target's Python 3.9"),
        "{err}"
    );
}

#[test]
fn pylock_paths_are_relative_to_the_lock_and_local_wheels_are_hashed_when_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("wheels")).unwrap();
    fs::write(
        dir.path().join("wheels/alpha-1.0-py3-none-any.whl"),
        b"wheel bytes",
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("proj")).unwrap();
    let path = dir.path().join("proj/pylock.toml");
    let text = "lock-version = \"1.0\"\n[[packages]]\nname = \"Alpha\"\nversion = \"1.0\"\nwheels = [{ path = \"../wheels/alpha-1.0-py3-none-any.whl\" }]\n[[packages]]\nname = \"win\"\nversion = \"1\"\nmarker = \"sys_platform == 'win32'\"\nwheels = [{ path = \"win-1-py3-none-any.whl\" }]\n";
    let set = pinned(&path, text, &Selection::default());
    let lock = set.lock_for(&target("linux/amd64")).unwrap();
    assert_eq!(lock.packages(), ["alpha==1.0"]);
    let wheel = &lock.wheels[0];
    let expected =
        url::Url::from_file_path(dir.path().join("wheels/alpha-1.0-py3-none-any.whl")).unwrap();
    assert_eq!(wheel.url, expected.as_str());
    assert_eq!(wheel.sha256, strata_oci::Digest::of(b"wheel bytes"));
    assert_eq!(wheel.size, Some(11));
}

#[test]
fn pyproject_selections_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pyproject.toml");
    fs::write(
        &path,
        "[project]\nname = \"p\"\ndependencies = [\"alpha>=1\"]\n[project.optional-dependencies]\nPlot = [\"beta\"]\n[dependency-groups]\nTest = [\"gamma\", {include-group = \"lint\"}]\nlint = [\"ruff==0.1\"]\n",
    )
    .unwrap();
    let names = |extras: &[&str], groups: &[&str]| {
        let selection = Selection {
            extras: extras.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            ..Selection::default()
        };
        match read_env(&path, &selection).unwrap() {
            EnvFile::Requirements { file, .. } => file
                .requirements
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(names(&[], &[]), ["alpha>=1"]);
    assert_eq!(
        names(&["plot"], &["test"]),
        ["alpha>=1", "beta", "gamma", "ruff==0.1"]
    );
    let requirements = dir.path().join("requirements.txt");
    fs::write(&requirements, "alpha\n").unwrap();
    let err = read_env(
        &requirements,
        &Selection {
            extras: vec!["x".into()],
            ..Selection::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("--extra x does not apply to this file"),
        "{err}"
    );
}

#[test]
fn uv_lock_wheel_paths_are_relative_to_a_local_registry() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("wheels")).unwrap();
    fs::write(
        dir.path().join("wheels/alpha-1.0-py3-none-any.whl"),
        b"alpha",
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("proj")).unwrap();
    let text = "version = 1\n[[package]]\nname = \"d\"\nversion = \"0\"\nsource = { virtual = \".\" }\ndependencies = [{ name = \"alpha\" }]\n\n[[package]]\nname = \"alpha\"\nversion = \"1.0\"\nsource = { registry = \"../wheels\" }\nwheels = [{ path = \"alpha-1.0-py3-none-any.whl\" }]\n";
    let set = pinned(
        &dir.path().join("proj/uv.lock"),
        text,
        &Selection::default(),
    );
    let lock = set.lock_for(&target("linux/amd64")).unwrap();
    let expected =
        url::Url::from_file_path(dir.path().join("wheels/alpha-1.0-py3-none-any.whl")).unwrap();
    assert_eq!(lock.wheels[0].url, expected.as_str());
    assert_eq!(lock.wheels[0].sha256, strata_oci::Digest::of(b"alpha"));
}

#[test]
fn a_pylock_for_other_environments_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("lock-version = \"1.0\"\nenvironments = [\"python_version == '3.11' and platform_machine == 'aarch64'\"]\n[[packages]]\nname = \"alpha\"\nversion = \"1.0\"\nwheels = [{{ url = \"https://files.example/alpha-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{SHA_A}\" }} }}]\n");
    let set = pinned(
        &dir.path().join("pylock.toml"),
        &text,
        &Selection::default(),
    );
    assert_eq!(
        set.lock_for(&target("linux/arm64")).unwrap().packages(),
        ["alpha==1.0"]
    );
    let err = set
        .lock_for(&target("linux/amd64"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pylock.toml: environments: the lock is for python_version == '3.11' and platform_machine == 'aarch64', not the target (cp311 manylinux_2_28 x86_64)"), "{err}");
}

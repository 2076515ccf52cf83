//! Resolution with the real uv (offline, against fixture wheels in a `--find-links` directory)
//! and the wheel cache. These tests need `uv` on PATH (or `STRATA_UV`); without it they fail.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_python::IndexCredentials;
use strata_python::Sources;
use strata_python::{FetchError, WheelCache};
use strata_python::{Lock, LockedWheel};
use strata_python::{PythonVersion, Target};
use strata_python::{ResolveError, Resolver};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn write_wheel(dir: &Path, name: &str, version: &str, tag: &str, requires: &[&str]) -> PathBuf {
    let dist = format!("{}-{version}", name.replace('-', "_"));
    let path = dir.join(format!("{dist}-{tag}.whl"));
    let requires: String = requires
        .iter()
        .map(|r| format!("Requires-Dist: {r}\n"))
        .collect();
    let files = [
        (
            format!("{dist}.dist-info/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}"),
        ),
        (
            format!("{dist}.dist-info/WHEEL"),
            format!(
                "Wheel-Version: 1.0\nGenerator: strata-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
            ),
        ),
        (
            format!("{}/__init__.py", name.replace('-', "_")),
            format!("VERSION = {version:?}\n"),
        ),
    ];
    let mut record: String = files.iter().map(|(n, _)| format!("{n},,\n")).collect();
    record.push_str(&format!("{dist}.dist-info/RECORD,,\n"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let record_entry = (format!("{dist}.dist-info/RECORD"), record);
    for (entry, content) in files.iter().chain([&record_entry]) {
        zip.start_file(entry.as_str(), options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn write_sdist(dir: &Path, name: &str, version: &str) {
    let file = std::fs::File::create(dir.join(format!("{name}-{version}.tar.gz"))).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let pkg_info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(pkg_info.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        format!("{name}-{version}/PKG-INFO"),
        pkg_info.as_bytes(),
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// A find-links directory: alpha needs beta; beta in two versions; gamma for two arches and
/// pure; armonly for aarch64 only; sdonly as an sdist only; delta needs a missing package.
fn fixture_links() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_wheel(d, "alpha", "1.0", "py3-none-any", &["beta>=1"]);
    write_wheel(d, "beta", "1.0", "py3-none-any", &[]);
    write_wheel(d, "beta", "2.0", "py3-none-any", &[]);
    write_wheel(d, "gamma", "1.0", "py3-none-any", &[]);
    write_wheel(
        d,
        "gamma",
        "1.0",
        "cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64",
        &[],
    );
    write_wheel(
        d,
        "gamma",
        "1.0",
        "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
        &[],
    );
    write_wheel(
        d,
        "armonly",
        "1.0",
        "cp311-cp311-manylinux_2_17_aarch64",
        &[],
    );
    write_wheel(d, "delta", "1.0", "py3-none-any", &["missingdep"]);
    write_sdist(d, "sdonly", "1.0");
    dir
}

fn offline(links: &Path) -> Sources {
    Sources {
        find_links: vec![links.to_string_lossy().into_owned()],
        no_index: true,
        ..Sources::default()
    }
}

fn target(platform: &str) -> Target {
    Target::new(PythonVersion::new(3, 11), platform.parse().unwrap())
}

struct Env {
    links: tempfile::TempDir,
    uv_cache: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            links: fixture_links(),
            uv_cache: tempfile::tempdir().unwrap(),
        }
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(self.uv_cache.path().to_path_buf())
    }

    fn resolve(&self, reqs: &str, constraints: &str) -> Result<Lock, ResolveError> {
        self.resolve_for(reqs, constraints, &target("linux/amd64"))
    }

    fn resolve_for(&self, reqs: &str, cons: &str, t: &Target) -> Result<Lock, ResolveError> {
        self.resolver().resolve(
            reqs,
            cons,
            &offline(self.links.path()),
            t,
            &no_credentials(),
        )
    }
}

fn no_credentials() -> IndexCredentials {
    IndexCredentials::default()
}

fn wheel<'a>(lock: &'a Lock, name: &str) -> &'a LockedWheel {
    lock.wheels
        .iter()
        .find(|w| w.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not in lock {:?}", lock.packages()))
}

// ---------------------------------------------------------------------------------------------
// Resolution

#[test]
fn resolves_transitive_dependencies_to_the_newest_version() {
    let env = Env::new();
    let lock = env.resolve("alpha\n", "").unwrap();
    assert_eq!(lock.packages(), ["alpha==1.0", "beta==2.0"]);
    let beta = wheel(&lock, "beta");
    assert_eq!(beta.filename, "beta-2.0-py3-none-any.whl");
    assert!(beta.url.starts_with("file://"), "{}", beta.url);
    let bytes = std::fs::read(env.links.path().join(&beta.filename)).unwrap();
    assert_eq!(beta.sha256, Digest::of(&bytes));
    assert_eq!(lock.target, target("linux/amd64"));
}

#[test]
fn pins_and_constraints_are_honoured() {
    let env = Env::new();
    let pinned = env.resolve("alpha\nbeta==1.0\n", "").unwrap();
    assert_eq!(pinned.packages(), ["alpha==1.0", "beta==1.0"]);
    let constrained = env.resolve("alpha\n", "beta<2\n").unwrap();
    assert_eq!(constrained.packages(), ["alpha==1.0", "beta==1.0"]);
    assert_eq!(pinned.digest(), constrained.digest());
}

#[test]
fn empty_requirements_give_an_empty_lock() {
    let env = Env::new();
    let lock = env.resolve("# nothing\n", "").unwrap();
    assert!(lock.wheels.is_empty());
}

#[test]
fn unknown_package_is_named() {
    let env = Env::new();
    let err = env.resolve("alpha\nnosuchpkg==1.0\n", "").unwrap_err();
    let ResolveError::UnknownPackage { name } = &err else {
        panic!("expected UnknownPackage, got {err:?}");
    };
    assert_eq!(name.as_str(), "nosuchpkg");
    assert!(err.to_string().contains("nosuchpkg"), "{err}");

    // A missing dependency is named too, not the package that needs it.
    let err = env.resolve("delta\n", "").unwrap_err();
    assert!(
        matches!(&err, ResolveError::UnknownPackage { name } if name.as_str() == "missingdep"),
        "{err:?}"
    );
}

#[test]
fn conflicting_pins_are_a_conflict() {
    let env = Env::new();
    let err = env
        .resolve("beta==1.0\nalpha\n", "beta==2.0\n")
        .unwrap_err();
    let ResolveError::Conflict { detail } = &err else {
        panic!("expected Conflict, got {err:?}");
    };
    assert!(detail.contains("beta"), "{detail}");
    let message = err.to_string();
    let tmp = std::env::temp_dir();
    assert!(
        !message.contains(tmp.to_string_lossy().as_ref()),
        "{message}"
    );
}

#[test]
fn sdist_only_package_has_no_wheel() {
    let env = Env::new();
    let err = env.resolve("sdonly\n", "").unwrap_err();
    let ResolveError::NoWheel { name, target, .. } = &err else {
        panic!("expected NoWheel, got {err:?}");
    };
    assert_eq!(name.as_str(), "sdonly");
    assert_eq!(target, "cp311 manylinux_2_28 x86_64");
    let message = err.to_string();
    assert!(
        message.contains("sdonly") && message.contains("x86_64"),
        "{message}"
    );
}

#[test]
fn wheels_for_another_arch_are_not_chosen() {
    let env = Env::new();
    let amd = env.resolve("gamma\n", "").unwrap();
    assert_eq!(
        wheel(&amd, "gamma").filename,
        "gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    );
    let arm = env
        .resolve_for("gamma\n", "", &target("linux/arm64"))
        .unwrap();
    assert_eq!(
        wheel(&arm, "gamma").filename,
        "gamma-1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
    );
    assert_ne!(amd.digest(), arm.digest());

    let err = env.resolve("armonly\n", "").unwrap_err();
    assert!(
        matches!(&err, ResolveError::NoWheel { name, .. } if name.as_str() == "armonly"),
        "{err:?}"
    );
}

#[test]
fn lock_digest_does_not_depend_on_where_the_wheels_are() {
    let env = Env::new();
    let first = env.resolve("alpha\ngamma\n", "").unwrap();
    let moved = tempfile::tempdir().unwrap();
    let other = moved.path().join("a dir with spaces");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(env.links.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    let second = env
        .resolver()
        .resolve(
            "alpha\ngamma\n",
            "",
            &offline(&other),
            &target("linux/amd64"),
            &no_credentials(),
        )
        .unwrap();
    assert_ne!(first.wheels[0].url, second.wheels[0].url);
    assert_eq!(first.digest(), second.digest());
    assert_eq!(Lock::from_json(&second.to_json()).unwrap(), second);
}

#[test]
fn missing_uv_is_reported() {
    let resolver = Resolver {
        uv: PathBuf::from("/nonexistent/strata-test/uv"),
        cache_dir: std::env::temp_dir(),
        build_cache: None,
    };
    let err = resolver
        .resolve(
            "alpha\n",
            "",
            &Sources::default(),
            &target("linux/amd64"),
            &no_credentials(),
        )
        .unwrap_err();
    assert!(matches!(err, ResolveError::UvNotFound { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// The wheel cache

fn cache_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn fetch_copies_and_verifies_local_wheels() {
    let env = Env::new();
    let lock = env.resolve("alpha\ngamma\n", "").unwrap();
    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().join("wheels"));
    let paths = cache.fetch_all(&lock.wheels, 2, &no_credentials()).unwrap();
    assert_eq!(paths.len(), lock.wheels.len());
    for (path, wheel) in paths.iter().zip(&lock.wheels) {
        let expected = root
            .path()
            .join("wheels/sha256")
            .join(wheel.sha256.hex())
            .join(&wheel.filename);
        assert_eq!(path, &expected);
        assert_eq!(Digest::of(&std::fs::read(path).unwrap()), wheel.sha256);
        assert!(cache.contains(&wheel.sha256));
    }
    // A second fetch is a hit and returns the same paths.
    assert_eq!(
        cache.fetch_all(&lock.wheels, 1, &no_credentials()).unwrap(),
        paths
    );
    assert!(cache_files(&root.path().join("wheels/tmp")).is_empty());
}

#[test]
fn tampered_source_is_rejected_and_not_cached() {
    let env = Env::new();
    let lock = env.resolve("beta==1.0\n", "").unwrap();
    let beta = wheel(&lock, "beta");
    let source = env.links.path().join(&beta.filename);
    let mut bytes = std::fs::read(&source).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&source, &bytes).unwrap();

    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().to_path_buf());
    let err = cache.fetch(beta, &no_credentials()).unwrap_err();
    let FetchError::HashMismatch {
        filename,
        expected,
        actual,
        source_url,
    } = &err
    else {
        panic!("expected HashMismatch, got {err:?}");
    };
    assert_eq!(filename, &beta.filename);
    assert_eq!(expected, &beta.sha256);
    assert_eq!(actual, &Digest::of(&bytes));
    assert_eq!(source_url, &beta.url);
    assert!(err.to_string().contains(&beta.filename), "{err}");
    assert!(!cache.contains(&beta.sha256));
    assert!(
        cache_files(root.path()).is_empty(),
        "{:?}",
        cache_files(root.path())
    );
}

#[test]
fn corrupt_cache_entry_is_detected_and_fetched_again() {
    let env = Env::new();
    let lock = env.resolve("beta==2.0\n", "").unwrap();
    let beta = wheel(&lock, "beta");
    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().to_path_buf());
    let path = cache.fetch(beta, &no_credentials()).unwrap();
    std::fs::write(&path, b"bit rot").unwrap();

    let again = cache.fetch(beta, &no_credentials()).unwrap();
    assert_eq!(again, path);
    assert_eq!(Digest::of(&std::fs::read(&again).unwrap()), beta.sha256);

    // When the source went bad as well, the corrupt entry is still gone afterwards.
    std::fs::write(&path, b"bit rot").unwrap();
    std::fs::write(env.links.path().join(&beta.filename), b"also bad").unwrap();
    let err = cache.fetch(beta, &no_credentials()).unwrap_err();
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{err:?}");
    assert!(!cache.contains(&beta.sha256));
}

#[test]
fn size_is_checked_when_known() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_wheel(dir.path(), "solo", "1.0", "py3-none-any", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let wheel = LockedWheel {
        name: strata_python::PackageName::new("solo").unwrap(),
        version: "1.0".into(),
        filename: "solo-1.0-py3-none-any.whl".into(),
        sha256: Digest::of(&bytes),
        size: Some(bytes.len() as u64 + 1),
        // A plain absolute path works as well as a file:// URL.
        url: path.to_string_lossy().into_owned(),
        built_from: None,
    };
    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().to_path_buf());
    let err = cache.fetch(&wheel, &no_credentials()).unwrap_err();
    assert!(matches!(err, FetchError::SizeMismatch { .. }), "{err:?}");
    assert!(!cache.contains(&wheel.sha256));
    let right_size = LockedWheel {
        size: Some(bytes.len() as u64),
        ..wheel
    };
    cache.fetch(&right_size, &no_credentials()).unwrap();
    assert!(cache.contains(&right_size.sha256));
}

/// Serves `body` for every request on 127.0.0.1 (`status` 200 or 404), `count` times.
fn serve(body: Vec<u8>, status: u16, count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reason = if status == 200 { "OK" } else { "Not Found" };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn fetch_downloads_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_wheel(dir.path(), "web", "1.0", "py3-none-any", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let base = serve(bytes.clone(), 200, 1);
    let wheel = LockedWheel {
        name: strata_python::PackageName::new("web").unwrap(),
        version: "1.0".into(),
        filename: "web-1.0-py3-none-any.whl".into(),
        sha256: Digest::of(&bytes),
        size: Some(bytes.len() as u64),
        url: format!("{base}/files/web-1.0-py3-none-any.whl"),
        built_from: None,
    };
    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().to_path_buf());
    let got = cache.fetch(&wheel, &no_credentials()).unwrap();
    assert_eq!(std::fs::read(got).unwrap(), bytes);

    let missing = LockedWheel {
        sha256: Digest::of(b"other"),
        url: format!("{}/nope.whl", serve(Vec::new(), 404, 1)),
        size: None,
        ..wheel
    };
    let err = cache.fetch(&missing, &no_credentials()).unwrap_err();
    assert!(matches!(err, FetchError::Http { .. }), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
    assert!(!cache.contains(&missing.sha256));
}

/// Serves `body` `count` times to requests whose `Authorization` is `Basic dTpw` (`u:p`),
/// answering 401 to the others; sends each request's `Authorization` value (or "") back.
fn serve_with_basic_auth(
    body: Vec<u8>,
    count: usize,
) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let auth = request
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default();
            let ok = auth == "Basic dTpw";
            let _ = seen.send(auth);
            let (status, body) = match ok {
                true => ("200 OK", body.as_slice()),
                false => ("401 Unauthorized", &b""[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (format!("http://{addr}"), received)
}

fn credentials_for(url_with_userinfo: &str) -> IndexCredentials {
    let mut url = url::Url::parse(url_with_userinfo).unwrap();
    let (origin, credential) = strata_python::take_userinfo(&mut url).unwrap();
    let mut credentials = IndexCredentials::default();
    credentials.insert_if_absent(origin, credential);
    credentials
}

#[test]
fn fetch_sends_credentials_only_to_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_wheel(dir.path(), "web", "1.0", "py3-none-any", &[]);
    let bytes = std::fs::read(&path).unwrap();
    let (base, seen) = serve_with_basic_auth(bytes.clone(), 3);
    let wheel = LockedWheel {
        name: strata_python::PackageName::new("web").unwrap(),
        version: "1.0".into(),
        filename: "web-1.0-py3-none-any.whl".into(),
        sha256: Digest::of(&bytes),
        size: Some(bytes.len() as u64),
        url: format!("{base}/files/web-1.0-py3-none-any.whl"),
        built_from: None,
    };
    let host = base.trim_start_matches("http://");
    let root = tempfile::tempdir().unwrap();
    let cache = WheelCache::new(root.path().to_path_buf());

    // Credentials for another port of the same host are not sent.
    let elsewhere = credentials_for("http://u:p@127.0.0.1:1/simple");
    let err = cache.fetch(&wheel, &elsewhere).unwrap_err();
    assert_eq!(seen.recv().unwrap(), "");
    assert!(
        matches!(
            &err,
            FetchError::Unauthorized {
                status: 401,
                credentials: None,
                ..
            }
        ),
        "{err:?}"
    );

    let wrong = credentials_for(&format!("http://u:WRONG-s3cr3t@{host}/simple"));
    let err = cache.fetch(&wheel, &wrong).unwrap_err();
    assert_ne!(seen.recv().unwrap(), "");
    let message = err.to_string();
    assert!(message.contains(&wheel.url), "{message}");
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("from the URL's user info"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
    assert!(!format!("{err:?}").contains("s3cr3t"));
    assert!(!cache.contains(&wheel.sha256));

    let right = credentials_for(&format!("http://u:p@{host}/simple"));
    let got = cache.fetch(&wheel, &right).unwrap();
    assert_eq!(seen.recv().unwrap(), "Basic dTpw");
    assert_eq!(std::fs::read(got).unwrap(), bytes);
}

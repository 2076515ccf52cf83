//! Index credentials are used, never kept or shown (issue 9, section 3): a private PEP 503
//! index on 127.0.0.1 that wants HTTP Basic credentials serves the fixture wheels; the token
//! given in the requirements file (literally or as `${VAR}`), in a netrc file or in a registry
//! auth file gets the build through, and shows up in no file under STRATA_HOME, no output of
//! build, explain, inspect or images at any verbosity, and no child's command line. A rotated
//! token gives the same spec digest (a cache hit). The same for a token in a Pipfile.lock,
//! a Poetry source, a uv.lock or pylock.toml URL, for the pylock.toml `strata lock` writes and
//! for an sdist built from the index, with layers gunzipped and TMPDIR scanned too.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use serde_json::Value;

const USER: &str = "ci-bot";

/// A PEP 503 simple index of a wheel directory that answers only requests carrying
/// `Basic USER:password`; the password can be changed (a rotation) while it runs.
struct PrivateIndex {
    port: u16,
    password: Arc<Mutex<String>>,
    /// Requests answered with content (authorised), and refused ones.
    served: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl PrivateIndex {
    fn start(wheels: &Path, password: &str) -> PrivateIndex {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let index = PrivateIndex {
            port,
            password: Arc::new(Mutex::new(password.to_string())),
            served: Arc::default(),
            refused: Arc::default(),
        };
        let (password, served, refused) = (
            index.password.clone(),
            index.served.clone(),
            index.refused.clone(),
        );
        let wheels = wheels.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (wheels, password) = (wheels.clone(), password.clone());
                let (served, refused) = (served.clone(), refused.clone());
                std::thread::spawn(move || {
                    let expected = format!("{USER}:{}", password.lock().unwrap());
                    let ok = answer(stream, &wheels, &expected);
                    let counter = if ok { &served } else { &refused };
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        index
    }

    /// The index URL, with `userinfo@` when given.
    fn url(&self, userinfo: &str) -> String {
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("http://{userinfo}{at}127.0.0.1:{}/simple", self.port)
    }

    fn rotate(&self, password: &str) {
        *self.password.lock().unwrap() = password.to_string();
    }
}

/// Answers one request (one per connection: `Connection: close`); true when authorised.
fn answer(stream: TcpStream, wheels: &Path, expected: &str) -> bool {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return false;
    }
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().to_string();
            }
        }
    }
    let wanted = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(expected)
    );
    let mut words = request_line.split_whitespace();
    // uv asks with HEAD whether a wheel can be read in ranges: the answer is the headers of
    // the GET (no `Accept-Ranges`), so it downloads the whole file.
    let head_only = words.next() == Some("HEAD");
    let path = words.next().unwrap_or("/");
    let mut stream = stream;
    if authorization != wanted {
        respond(
            &mut stream,
            "401 Unauthorized",
            "text/plain",
            b"credentials needed",
            "WWW-Authenticate: Basic realm=\"private index\"\r\n",
            head_only,
        );
        return false;
    }
    match route(path, wheels) {
        Some((content_type, body)) => {
            respond(&mut stream, "200 OK", content_type, &body, "", head_only)
        }
        None => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"no such page",
            "",
            head_only,
        ),
    }
    true
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    extra: &str,
    head_only: bool,
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let _ = stream.write_all(body);
    }
}

/// `/simple/NAME/` lists NAME's wheels with their sha256; `/files/FILE` serves one.
fn route(path: &str, wheels: &Path) -> Option<(&'static str, Vec<u8>)> {
    if let Some(file) = path.strip_prefix("/files/") {
        if file.contains('/') || file.contains("..") {
            return None;
        }
        return fs::read(wheels.join(file))
            .ok()
            .map(|b| ("application/octet-stream", b));
    }
    let project = path.strip_prefix("/simple/")?.trim_end_matches('/');
    let mut links = String::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(wheels)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name()?.to_str()?.to_string();
        // Wheels and sdists: a package published only as an sdist is built from it.
        let Some(stem) = name
            .strip_suffix(".whl")
            .or_else(|| name.strip_suffix(".tar.gz"))
        else {
            continue;
        };
        let dist = stem.split('-').next()?;
        if normalise(dist) != normalise(project) {
            continue;
        }
        let hash = sha256_hex(&fs::read(&entry).ok()?);
        links.push_str(&format!(
            "<a href=\"/files/{name}#sha256={hash}\">{name}</a>\n"
        ));
    }
    if links.is_empty() {
        return None;
    }
    let page = format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n");
    Some(("text/html", page.into_bytes()))
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

/// Scans every process's command line for the secrets until stopped: what `ps` shows anyone.
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArgvWatch {
    fn start(secrets: &[&str]) -> ArgvWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                for entry in fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(argv) = fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    if secrets.iter().any(|s| contains(&argv, s)) {
                        let shown = String::from_utf8_lossy(&argv).replace('\0', " ");
                        seen2.lock().unwrap().insert(shown);
                    }
                }
                std::thread::yield_now();
            }
        });
        ArgvWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// The command lines that held a secret.
    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` that holds one of the secrets, read as bytes.
fn files_holding(dir: &Path, secrets: &[&str]) -> Vec<PathBuf> {
    walkdir(dir)
        .into_iter()
        .filter(|path| {
            let bytes = fs::read(path).unwrap_or_default();
            secrets.iter().any(|s| contains(&bytes, s.as_bytes()))
        })
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(walkdir(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

fn assert_output_clean(what: &str, out: &Output, secrets: &[&str]) {
    for stream in [&out.stdout, &out.stderr] {
        for secret in secrets {
            assert!(
                !contains(stream, secret.as_bytes()),
                "{what} printed the token:\n{}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}

fn built(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        stderr(out),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A token no other text contains, unique per test and run.
fn token(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "tok{label}x{}x{nanos}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `strata ARGS` for a build against the private index: no find-links, no user files (a
/// private HOME, no auth files unless the test sets them).
fn strata(world: &World, args: &[&str]) -> Command {
    let mut command = world.command(args);
    let empty_home = world.dir.path().join("user-home");
    fs::create_dir_all(&empty_home).unwrap();
    command
        .env("HOME", &empty_home)
        .env_remove("NETRC")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("INDEX_TOKEN");
    command
}

fn build_args<'a>(requirements: &'a str, base: &'a str, verbosity: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        verbosity,
        "-r",
        requirements,
        "--base",
        base,
        "--json",
    ]
}

#[test]
fn an_index_token_reaches_no_file_output_or_command_line_and_a_rotation_keeps_the_spec() {
    let world = World::new();
    let (old, new) = (token("old"), token("new"));
    let secrets = [old.as_str(), new.as_str()];
    let index = PrivateIndex::start(&world.wheels, &old);
    let base = base_ref();
    let requirements = world.dir.path().join("requirements.txt");
    let reqs = requirements.to_str().unwrap();
    let watch = ArgvWatch::start(&secrets);

    // The token written into the file, as in the report.
    let literal = format!(
        "--index-url {}\nalpha==1.0.0\n",
        index.url(&format!("{USER}:{old}"))
    );
    fs::write(&requirements, literal).unwrap();
    let first_out = strata(&world, &build_args(reqs, &base, "-vvv"))
        .output()
        .unwrap();
    assert_output_clean("build -vvv", &first_out, &secrets);
    let first = built("the first build", &first_out);
    assert_eq!(first["cache"], "miss");
    assert!(index.served.load(Ordering::SeqCst) > 0);

    // Rotated: the server now wants the new token, which the file takes from the environment.
    index.rotate(&new);
    let from_env = format!(
        "--index-url {}\nalpha==1.0.0\n",
        index.url(&format!("{USER}:${{INDEX_TOKEN}}"))
    );
    fs::write(&requirements, from_env).unwrap();
    let again_out = strata(&world, &build_args(reqs, &base, "-vvv"))
        .env("INDEX_TOKEN", &new)
        .output()
        .unwrap();
    assert_output_clean("build -vvv after the rotation", &again_out, &secrets);
    let again = built("the build after the rotation", &again_out);
    assert_eq!(again["spec_digest"], first["spec_digest"]);
    assert_eq!(again["cache"], "hit");

    // A miss with the rotated token: uv and the wheel fetcher get it too.
    fs::write(
        &requirements,
        format!(
            "--index-url {}\nalpha==1.0.0\ngamma==0.3.0\n",
            index.url(&format!("{USER}:${{INDEX_TOKEN}}"))
        ),
    )
    .unwrap();
    let third_out = strata(&world, &build_args(reqs, &base, "-vvv"))
        .env("INDEX_TOKEN", &new)
        .output()
        .unwrap();
    assert_output_clean("build -vvv of a new spec", &third_out, &secrets);
    let third = built("a build with the rotated token", &third_out);
    assert_eq!(third["cache"], "miss");
    assert_ne!(third["spec_digest"], first["spec_digest"]);

    let tag = third["tag"].as_str().unwrap().to_string();
    let others: [(&str, Vec<&str>); 5] = [
        (
            "explain -vv",
            vec!["explain", "-vv", "-r", reqs, "--base", &base],
        ),
        (
            "explain --json",
            vec!["explain", "-r", reqs, "--base", &base, "--json"],
        ),
        ("inspect", vec!["inspect", "-vv", &tag]),
        ("inspect --json", vec!["inspect", &tag, "--json"]),
        ("images", vec!["images", "-vv"]),
    ];
    for (what, args) in others {
        let out = strata(&world, &args)
            .env("INDEX_TOKEN", &new)
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_output_clean(what, &out, &secrets);
    }
    let out = strata(&world, &["images", "--json"]).output().unwrap();
    assert_output_clean("images --json", &out, &secrets);

    let argv = watch.finish();
    assert!(argv.is_empty(), "command lines held the token: {argv:#?}");
    let files = files_holding(&world.home, &secrets);
    assert!(
        files.is_empty(),
        "files under STRATA_HOME hold the token: {files:#?}"
    );
    // The index URL (without credentials) is what the spec and the store keep.
    let db = fs::read(world.home.join("strata.db")).unwrap();
    assert!(
        !contains(&db, USER.as_bytes()),
        "strata.db holds the user name"
    );
}

#[test]
fn a_wrong_token_is_refused_naming_the_index_without_the_token() {
    let world = World::new();
    let (right, wrong) = (token("right"), token("wrong"));
    let index = PrivateIndex::start(&world.wheels, &right);
    let requirements = world.dir.path().join("requirements.txt");
    fs::write(
        &requirements,
        format!(
            "--index-url {}\nalpha==1.0.0\n",
            index.url(&format!("{USER}:{wrong}"))
        ),
    )
    .unwrap();
    let base = base_ref();
    // A store with an image in it: the refusal must leave it as it was.
    let plain = world.dir.path().join("plain.txt");
    fs::write(&plain, "alpha==1.0.0\n").unwrap();
    world.build_ok(&plain, &[]);
    let before = world.snapshot();
    let out = strata(
        &world,
        &build_args(requirements.to_str().unwrap(), &base, "-vv"),
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "a wrong token was accepted");
    assert_eq!(
        before,
        world.snapshot(),
        "the refused build changed the store"
    );
    assert_output_clean("a refused build", &out, &[&wrong, &right]);
    let message = stderr(&out);
    assert!(
        message.contains(&format!("127.0.0.1:{}", index.port)),
        "the error does not name the index: {message}"
    );
    assert!(
        message.contains("refused access") || message.contains("401"),
        "the error does not say access was refused: {message}"
    );
    assert!(index.refused.load(Ordering::SeqCst) > 0);
    let files = files_holding(&world.home, &[&wrong]);
    assert!(
        files.is_empty(),
        "files under STRATA_HOME hold the token: {files:#?}"
    );
}

#[test]
fn netrc_and_registry_auth_files_give_index_credentials() {
    let world = World::new();
    let secret = token("files");
    let index = PrivateIndex::start(&world.wheels, &secret);
    let requirements = world.dir.path().join("requirements.txt");
    fs::write(
        &requirements,
        format!("--index-url {}\nalpha==1.0.0\n", index.url("")),
    )
    .unwrap();
    let reqs = requirements.to_str().unwrap();
    let base = base_ref();

    // No credentials anywhere: refused, and said so, the store (with an image) as it was.
    let plain = world.dir.path().join("plain.txt");
    fs::write(&plain, "gamma==0.3.0\n").unwrap();
    world.build_ok(&plain, &[]);
    let before = world.snapshot();
    let out = strata(&world, &build_args(reqs, &base, "-v"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an index without credentials answered"
    );
    assert_eq!(
        before,
        world.snapshot(),
        "the refused build changed the store"
    );
    assert!(
        stderr(&out).contains("refused access"),
        "the error does not say access was refused: {}",
        stderr(&out)
    );

    // A netrc file named by NETRC.
    let netrc = world.dir.path().join("netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1\n  login {USER}\n  password {secret}\n"),
    )
    .unwrap();
    let watch = ArgvWatch::start(&[&secret]);
    let out = strata(&world, &build_args(reqs, &base, "-vvv"))
        .env("NETRC", &netrc)
        .output()
        .unwrap();
    assert_output_clean("build with netrc", &out, &[&secret]);
    assert_eq!(built("a build with netrc", &out)["cache"], "miss");

    // A registry auth file (as `skopeo login` writes it), in a fresh store so it is a miss.
    let other = world.with_home("auth-file");
    let auth = other.dir.path().join("auth.json");
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{secret}"));
    fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{encoded}"}}}}}}"#,
            index.port
        ),
    )
    .unwrap();
    let out = strata(&other, &build_args(reqs, &base, "-vvv"))
        .env("REGISTRY_AUTH_FILE", &auth)
        .output()
        .unwrap();
    assert_output_clean("build with an auth file", &out, &[&secret]);
    assert_eq!(built("a build with an auth file", &out)["cache"], "miss");

    let argv = watch.finish();
    assert!(argv.is_empty(), "command lines held the token: {argv:#?}");
    for home in [&world.home, &other.home] {
        let files = files_holding(home, &[&secret]);
        assert!(
            files.is_empty(),
            "files under {} hold the token: {files:#?}",
            home.display()
        );
    }
}

/// A directory of the test given to strata as TMPDIR: what strata and its children leave
/// there is scanned after the build.
fn tmpdir(world: &World) -> PathBuf {
    let dir = world.dir.path().join("tmp");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The blobs of the store that hold a secret once gunzipped: a layer's files are compressed,
/// so a plain scan of the store would not see a token in one.
fn layers_holding(home: &Path, secrets: &[&str]) -> Vec<PathBuf> {
    walkdir(&home.join("oci/blobs"))
        .into_iter()
        .filter(|path| {
            let mut plain = Vec::new();
            let mut gz = flate2::read::MultiGzDecoder::new(fs::File::open(path).unwrap());
            if std::io::Read::read_to_end(&mut gz, &mut plain).is_err() {
                return false;
            }
            secrets.iter().any(|s| contains(&plain, s.as_bytes()))
        })
        .collect()
}

/// Nothing kept: no file under STRATA_HOME (database, uv's cache, the wheel cache), no layer
/// once decompressed, no file left in `tmp` (TMPDIR), and no private netrc left there.
fn assert_nothing_kept(home: &Path, tmp: &Path, secrets: &[&str]) {
    let files = files_holding(home, secrets);
    assert!(
        files.is_empty(),
        "files under STRATA_HOME hold the token: {files:#?}"
    );
    let layers = layers_holding(home, secrets);
    assert!(layers.is_empty(), "layers hold the token: {layers:#?}");
    let left = files_holding(tmp, secrets);
    assert!(
        left.is_empty(),
        "files left in TMPDIR hold the token: {left:#?}"
    );
    let netrcs: Vec<String> = fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("strata-netrc-"))
        .collect();
    assert!(
        netrcs.is_empty(),
        "private netrc directories left in TMPDIR: {netrcs:?}"
    );
}

/// `explain`, `inspect` and `images` of a build from `file`, at every verbosity: none shows
/// a secret.
fn assert_views_clean(world: &World, file: &str, tag: &str, tmp: &Path, secrets: &[&str]) {
    let base = base_ref();
    let views: [(&str, Vec<&str>); 6] = [
        (
            "explain -vv",
            vec!["explain", "-vv", "-r", file, "--base", &base],
        ),
        (
            "explain --json",
            vec!["explain", "-r", file, "--base", &base, "--json"],
        ),
        ("inspect -vv", vec!["inspect", "-vv", tag]),
        ("inspect --json", vec!["inspect", tag, "--json"]),
        ("images -vv", vec!["images", "-vv"]),
        ("images --json", vec!["images", "--json"]),
    ];
    for (what, args) in views {
        let out = strata(world, &args).env("TMPDIR", tmp).output().unwrap();
        assert!(out.status.success(), "{what} of {file}: {}", stderr(&out));
        assert_output_clean(what, &out, secrets);
    }
}

/// The sha256 of a fixture wheel.
fn wheel_sha(world: &World, file: &str) -> String {
    sha256_hex(&fs::read(world.wheels.join(file)).unwrap())
}

const ALPHA: &str = "alpha-1.0.0-py3-none-any.whl";

/// A Pipfile.lock pinning alpha 1.0.0 from the index at `url`.
fn pipfile_lock(url: &str, sha: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "_meta": {
            "hash": {"sha256": "0"},
            "pipfile-spec": 6,
            "requires": {},
            "sources": [{"name": "private", "url": url, "verify_ssl": false}],
        },
        "default": {"alpha": {"hashes": [format!("sha256:{sha}")], "version": "==1.0.0", "index": "private"}},
        "develop": {},
    }))
    .unwrap()
}

/// A Poetry project whose `[[tool.poetry.source]]` (and its lock's package source) is `url`.
fn poetry_project(dir: &Path, url: &str, sha: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[tool.poetry]\nname = \"demo\"\nversion = \"0.1.0\"\n\n\
             [tool.poetry.dependencies]\npython = \"^3.11\"\nalpha = \"1.0.0\"\n\n\
             [[tool.poetry.source]]\nname = \"private\"\nurl = \"{url}\"\npriority = \"primary\"\n"
        ),
    )
    .unwrap();
    fs::write(
        dir.join("poetry.lock"),
        format!(
            "[[package]]\nname = \"alpha\"\nversion = \"1.0.0\"\ndescription = \"\"\noptional = false\n\
             python-versions = \">=3.8\"\nfiles = [\n    {{file = \"{ALPHA}\", hash = \"sha256:{sha}\"}},\n]\n\n\
             [package.source]\ntype = \"legacy\"\nurl = \"{url}\"\nreference = \"private\"\n\n\
             [metadata]\nlock-version = \"2.1\"\npython-versions = \"^3.11\"\ncontent-hash = \"0\"\n"
        ),
    )
    .unwrap();
}

/// A uv.lock of a virtual project needing alpha 1.0.0 from the registry `index`, its wheel at
/// `files`/ALPHA (a hand-edited lock may carry the token in both).
fn uv_lock(index: &str, files: &str, sha: &str) -> String {
    format!(
        "version = 1\nrequires-python = \">=3.11\"\n\n\
         [[package]]\nname = \"alpha\"\nversion = \"1.0.0\"\nsource = {{ registry = \"{index}\" }}\n\
         wheels = [\n    {{ url = \"{files}/{ALPHA}\", hash = \"sha256:{sha}\" }},\n]\n\n\
         [[package]]\nname = \"demo\"\nversion = \"0.1\"\nsource = {{ virtual = \".\" }}\n\
         dependencies = [\n    {{ name = \"alpha\" }},\n]\n"
    )
}

/// A PEP 751 pylock.toml with alpha 1.0.0 from the index `index`, its wheel at `files`/ALPHA.
fn pylock(index: &str, files: &str, sha: &str) -> String {
    format!(
        "lock-version = \"1.0\"\ncreated-by = \"hand\"\nrequires-python = \">=3.11\"\n\n\
         [[packages]]\nname = \"alpha\"\nversion = \"1.0.0\"\nindex = \"{index}\"\n\
         wheels = [\n    {{ name = \"{ALPHA}\", url = \"{files}/{ALPHA}\", hashes = {{ sha256 = \"{sha}\" }} }},\n]\n"
    )
}

#[test]
fn a_token_in_a_lock_or_project_file_reaches_no_store_output_temporary_file_or_command_line() {
    let world = World::new();
    let secret = token("formats");
    let secrets = [secret.as_str()];
    let index = PrivateIndex::start(&world.wheels, &secret);
    let sha = wheel_sha(&world, ALPHA);
    let with_token = index.url(&format!("{USER}:{secret}"));
    let files_url = with_token.replace("/simple", "/files");

    let dir = world.dir.path().join("formats");
    fs::create_dir_all(dir.join("pipenv")).unwrap();
    fs::write(
        dir.join("pipenv/Pipfile.lock"),
        pipfile_lock(&with_token, &sha),
    )
    .unwrap();
    poetry_project(&dir.join("poetry"), &with_token, &sha);
    fs::create_dir_all(dir.join("uv")).unwrap();
    fs::write(
        dir.join("uv/pyproject.toml"),
        "[project]\nname = \"demo\"\nversion = \"0.1\"\ndependencies = [\"alpha==1.0.0\"]\n",
    )
    .unwrap();
    fs::write(
        dir.join("uv/uv.lock"),
        uv_lock(&with_token, &files_url, &sha),
    )
    .unwrap();
    fs::create_dir_all(dir.join("pylock")).unwrap();
    fs::write(
        dir.join("pylock/pylock.toml"),
        pylock(&with_token, &files_url, &sha),
    )
    .unwrap();

    // The wheel URLs of uv.lock and pylock.toml lose their user info when read, and the
    // credentials with it (see the ignored test below): those builds get them from a netrc.
    let netrc = world.dir.path().join("netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1\n  login {USER}\n  password {secret}\n"),
    )
    .unwrap();
    let no_netrc = world.dir.path().join("no-netrc");
    let watch = ArgvWatch::start(&secrets);
    let cases = [
        ("Pipfile.lock", dir.join("pipenv/Pipfile.lock"), &no_netrc),
        ("poetry.lock", dir.join("poetry/poetry.lock"), &no_netrc),
        ("uv.lock", dir.join("uv/uv.lock"), &netrc),
        ("pylock.toml", dir.join("pylock/pylock.toml"), &netrc),
    ];
    for (what, file, netrc) in cases {
        // A store of its own per file: each build downloads from the index.
        let store = world.with_home(&format!("home-{what}"));
        let tmp = tmpdir(&store);
        let served = index.served.load(Ordering::SeqCst);
        let file = file.to_str().unwrap();
        let base = base_ref();
        let out = strata(&store, &build_args(file, &base, "-vvv"))
            .env("TMPDIR", &tmp)
            .env("NETRC", netrc)
            .output()
            .unwrap();
        assert_output_clean(&format!("build -vvv -r {what}"), &out, &secrets);
        let built = built(&format!("the build from {what}"), &out);
        assert_eq!(built["cache"], "miss", "{what}: {built}");
        assert!(
            index.served.load(Ordering::SeqCst) > served,
            "{what}: nothing was fetched from the private index"
        );
        assert_views_clean(&store, file, built["tag"].as_str().unwrap(), &tmp, &secrets);
        assert_nothing_kept(&store.home, &tmp, &secrets);
    }
    let argv = watch.finish();
    assert!(argv.is_empty(), "command lines held the token: {argv:#?}");
}

#[test]
fn the_pylock_strata_lock_writes_holds_no_token() {
    let world = World::new();
    let secret = token("lock");
    let secrets = [secret.as_str()];
    let index = PrivateIndex::start(&world.wheels, &secret);
    let tmp = tmpdir(&world);
    let requirements = world.dir.path().join("requirements.txt");
    fs::write(
        &requirements,
        format!(
            "--index-url {}\nbeta==2.0.0\n",
            index.url(&format!("{USER}:{secret}"))
        ),
    )
    .unwrap();
    let pylock = world.dir.path().join("pylock.toml");
    let watch = ArgvWatch::start(&secrets);
    let base = base_ref();
    let out = strata(
        &world,
        &[
            "lock",
            "-vvv",
            "-r",
            requirements.to_str().unwrap(),
            "--base",
            &base,
            "-o",
            pylock.to_str().unwrap(),
        ],
    )
    .env("TMPDIR", &tmp)
    .output()
    .unwrap();
    assert!(out.status.success(), "strata lock failed: {}", stderr(&out));
    assert_output_clean("lock -vvv", &out, &secrets);
    let written = fs::read_to_string(&pylock).unwrap();
    assert!(
        !written.contains(&secret) && !written.contains(USER),
        "the written pylock.toml holds the credentials:\n{written}"
    );
    assert!(
        written.contains(&format!("127.0.0.1:{}", index.port)),
        "the written pylock.toml does not name the index's files:\n{written}"
    );
    assert_nothing_kept(&world.home, &tmp, &secrets);

    // The committed lock builds with the credentials from a netrc file, and keeps none.
    let netrc = world.dir.path().join("netrc");
    fs::write(
        &netrc,
        format!("machine 127.0.0.1\n  login {USER}\n  password {secret}\n"),
    )
    .unwrap();
    let out = strata(&world, &build_args(pylock.to_str().unwrap(), &base, "-vvv"))
        .env("NETRC", &netrc)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_output_clean("build -vvv of the written pylock.toml", &out, &secrets);
    assert_eq!(
        built("the build of the written lock", &out)["cache"],
        "miss"
    );
    assert_nothing_kept(&world.home, &tmp, &secrets);
    let argv = watch.finish();
    assert!(argv.is_empty(), "command lines held the token: {argv:#?}");
}

#[test]
fn an_sdist_from_a_private_index_is_built_with_the_token_and_keeps_none() {
    let world = World::new();
    let secret = token("sdist");
    let secrets = [secret.as_str()];
    write_sdist(&world.wheels, "edgesdist", FIXTURE_BACKEND, &[]);
    let index = PrivateIndex::start(&world.wheels, &secret);
    let tmp = tmpdir(&world);
    let requirements = world.dir.path().join("requirements.txt");
    fs::write(
        &requirements,
        format!(
            "--index-url {}\nedgesdist==1.0\n",
            index.url(&format!("{USER}:{secret}"))
        ),
    )
    .unwrap();
    let reqs = requirements.to_str().unwrap();
    let base = base_ref();
    let watch = ArgvWatch::start(&secrets);
    let out = strata(&world, &build_args(reqs, &base, "-vvv"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_output_clean("build -vvv of an sdist", &out, &secrets);
    let built = built("the build of an sdist", &out);
    assert_eq!(built["cache"], "miss", "{built}");
    let record = walkdir(&world.home.join("wheels/built"));
    assert_eq!(record.len(), 1, "the sdist was not built: {record:?}");
    assert_views_clean(&world, reqs, built["tag"].as_str().unwrap(), &tmp, &secrets);
    assert_nothing_kept(&world.home, &tmp, &secrets);
    // The scan does read inside the layers: the built module's text is found there.
    assert!(
        !layers_holding(&world.home, &["edgesdist built from its sdist"]).is_empty(),
        "the layer scan found not even the sdist's module"
    );
    let argv = watch.finish();
    assert!(argv.is_empty(), "command lines held the token: {argv:#?}");
}

/// The token in a uv.lock's wheel URLs is taken out of the URL when the lock is read and
/// used for the download (a 401 without it), and kept nowhere.
#[test]
fn a_token_in_a_uv_lock_wheel_url_is_used() {
    let world = World::new();
    let secret = token("uvlock");
    let index = PrivateIndex::start(&world.wheels, &secret);
    let sha = wheel_sha(&world, ALPHA);
    let with_token = index.url(&format!("{USER}:{secret}"));
    let dir = world.dir.path().join("uv");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("uv.lock"),
        uv_lock(&with_token, &with_token.replace("/simple", "/files"), &sha),
    )
    .unwrap();
    let tmp = tmpdir(&world);
    let lock = dir.join("uv.lock");
    let out = strata(
        &world,
        &build_args(lock.to_str().unwrap(), &base_ref(), "-v"),
    )
    .env("TMPDIR", &tmp)
    .output()
    .unwrap();
    assert_output_clean("build from uv.lock", &out, &[&secret]);
    assert_eq!(built("the build from uv.lock", &out)["cache"], "miss");
    assert_nothing_kept(&world.home, &tmp, &[&secret]);
}

//! requirements.txt parsing and canonical spec digests, through the public API only.

use std::fs;
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_python::{
    parse_requirements_file, parse_requirements_str, parse_requirements_with_vars, EnvSpec,
    Requirement, SpecDigest, SpecError,
};
use strata_python::{PythonVersion, Target};

const HASH_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_HEX: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const HASH_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn base() -> Digest {
    Digest::of(b"base image")
}

fn target() -> Target {
    Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap())
}

/// Writes `files` (name, text) into a fresh directory and parses the first one.
fn spec_of(files: &[(&str, &str)]) -> EnvSpec {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), files);
    let file = parse_requirements_file(&dir.path().join(files[0].0)).unwrap();
    EnvSpec::new(file, base(), target())
}

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

fn digest_of(files: &[(&str, &str)]) -> SpecDigest {
    spec_of(files).digest()
}

fn parse_err(text: &str) -> String {
    parse_requirements_str(text, Path::new("requirements.txt"))
        .unwrap_err()
        .to_string()
}

const BASELINE: &str = "\
-i https://pypi.org/simple
--extra-index-url https://download.pytorch.org/whl/cpu
numpy>=1.24,<2
requests[security,socks]==2.31.0; python_version >= \"3.8\" and sys_platform == \"linux\"
torch==2.1.0 --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
scikit-learn~=1.3.0
-c constraints.txt
";
const CONSTRAINTS: &str = "urllib3<2\n";

fn baseline() -> Vec<(&'static str, &'static str)> {
    vec![
        ("requirements.txt", BASELINE),
        ("constraints.txt", CONSTRAINTS),
    ]
}

#[test]
fn parses_every_construct() {
    let spec = spec_of(&baseline());
    let lines: Vec<String> = spec.requirements.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        lines,
        [
            "numpy<2,>=1.24",
            "requests[security,socks]==2.31.0; python_version >= \"3.8\" and sys_platform == \"linux\"",
            "scikit-learn~=1.3.0",
            "torch==2.1.0",
        ]
    );
    assert_eq!(spec.requirements[3].hashes, [HASH_A, HASH_B]);
    assert_eq!(spec.constraints.len(), 1);
    assert_eq!(spec.constraints[0].to_string(), "urllib3<2");
    assert_eq!(
        spec.sources.index_url.as_deref(),
        Some("https://pypi.org/simple")
    );
    assert_eq!(
        spec.sources.extra_index_urls,
        ["https://download.pytorch.org/whl/cpu"]
    );
    assert!(!spec.sources.no_index);
    assert_eq!(
        spec.requirements_txt(),
        format!(
            "numpy<2,>=1.24\nrequests[security,socks]==2.31.0; python_version >= \"3.8\" and \
             sys_platform == \"linux\"\nscikit-learn~=1.3.0\ntorch==2.1.0 --hash={HASH_A} --hash={HASH_B}\n"
        )
    );
    assert_eq!(spec.constraints_txt(), "urllib3<2\n");
}

/// Where the wheels lie on this machine is not part of a spec (issue 11): directories and
/// `file://` URLs are for the resolver only; an `http(s)` find-links URL is a shared source
/// and changes the spec.
#[test]
fn local_find_links_are_not_part_of_the_spec() {
    let plain = spec_of(&[("r.txt", "--no-index\nalpha==1.0\n")]);
    let dir = spec_of(&[("r.txt", "--no-index\n-f /srv/wheels\nalpha==1.0\n")]);
    let other = spec_of(&[("r.txt", "--no-index\n--find-links=w\nalpha==1.0\n")]);
    let file_url = spec_of(&[("r.txt", "--no-index\n-f file:///srv/w\nalpha==1.0\n")]);
    assert_eq!(dir.digest(), plain.digest());
    assert_eq!(other.digest(), plain.digest());
    assert_eq!(file_url.digest(), plain.digest());
    assert_eq!(file_url.sources.local_find_links, ["file:///srv/w"]);
    let remote = spec_of(&[("r.txt", "--no-index\n-f https://h/w/\nalpha==1.0\n")]);
    assert_ne!(remote.digest(), plain.digest());
    assert_eq!(remote.sources.find_links, ["https://h/w"]);
}

#[test]
fn direct_urls_find_links_and_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "--no-index\n--find-links ./wheels/\n-f https://h.example/links/\n\
         pkg @ https://h.example/pkg-1.0-py3-none-any.whl#sha256={HASH_HEX} ; os_name == 'posix'\n\
         --find-links=../elsewhere\n"
    );
    write_all(dir.path(), &[("sub/requirements.txt", &text)]);
    let file = parse_requirements_file(&dir.path().join("sub/requirements.txt")).unwrap();
    let spec = EnvSpec::new(file, base(), target());
    assert!(spec.sources.no_index);
    let root = dir.path().to_str().unwrap();
    // Directories are for the resolver only; the URL is part of the spec.
    assert_eq!(
        spec.sources.local_find_links,
        [format!("{root}/elsewhere"), format!("{root}/sub/wheels")]
    );
    assert_eq!(spec.sources.find_links, ["https://h.example/links"]);
    let json = String::from_utf8(spec.canonical_bytes()).unwrap();
    assert!(!json.contains(root), "{json}");
    let all: Vec<&String> = spec.sources.all_find_links().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(
        spec.requirements[0].to_string(),
        format!(
            "pkg @ https://h.example/pkg-1.0-py3-none-any.whl#sha256={HASH_HEX} ; os_name == \"posix\""
        )
    );
    // What we hand to uv parses back to the same requirements.
    let again = parse_requirements_str(&spec.requirements_txt(), Path::new("x.txt")).unwrap();
    assert_eq!(again.requirements, spec.requirements);
}

#[test]
fn include_forms_and_constraint_inheritance() {
    let files = [
        ("requirements.txt", "-r a.txt\n--requirement b.txt\n--requirement=c.txt\n-rd.txt\n--constraint nested/cons.txt\n"),
        ("a.txt", "alpha\n"),
        ("b.txt", "beta\n"),
        ("c.txt", "gamma\n"),
        ("d.txt", "delta\n"),
        ("nested/cons.txt", "-r more.txt\nepsilon<2\n"),
        ("nested/more.txt", "zeta==1\n"),
    ];
    let spec = spec_of(&files);
    let names: Vec<&str> = spec.requirements.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "delta", "gamma"]);
    let constraints: Vec<String> = spec.constraints.iter().map(|r| r.to_string()).collect();
    assert_eq!(constraints, ["epsilon<2", "zeta==1"]);
}

#[test]
fn equivalent_files_share_a_digest() {
    let reference = digest_of(&baseline());
    let variants: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("reordered, cased, spaced, commented", vec![
            ("requirements.txt", "# my env\n\n  -c constraints.txt\nScikit_Learn ~= 1.3.0   # pinned\n\
              torch == 2.1.0 --hash=sha256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB \
              --hash sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\
              --extra-index-url=https://download.pytorch.org/whl/cpu/\n\
              REQUESTS [ SOCKS , Security ] == v2.31.0 ; sys_platform=='linux' and (python_version>='3.8')\n\
              NumPy < 2 , >= 1.24\n--index-url=https://PyPI.org/simple/\n"),
            ("constraints.txt", "URLLIB3 <2 # old\n"),
        ]),
        ("split via includes, duplicates, continuations", vec![
            ("requirements.txt", "-r base/common.txt\n-i https://pypi.org/simple\nnumpy>=1.24\nnumpy<2\nnumpy>=1.24\n\
              torch==2.1.0 \\\n  --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \\\n\
              --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n-c constraints.txt\n"),
            ("base/common.txt", "--extra-index-url https://download.pytorch.org/whl/cpu\n\
              requests[socks]==2.31.0; python_version >= \"3.8\" and sys_platform == \"linux\"\n\
              requests[security]==2.31.0; sys_platform == \"linux\" and python_version >= \"3.8\"\n\
              scikit.learn\\\n~=1.3.0\n"),
            ("constraints.txt", "urllib3<2\nurllib3<2\n"),
        ]),
    ];
    for (label, files) in variants {
        assert_eq!(digest_of(&files), reference, "{label}");
    }
}

#[test]
fn changes_of_meaning_change_the_digest() {
    let reference = spec_of(&baseline());
    let edit = |from: &str, to: &str| -> SpecDigest {
        assert!(BASELINE.contains(from), "{from}");
        let text = BASELINE.replacen(from, to, 1);
        digest_of(&[
            ("requirements.txt", &text),
            ("constraints.txt", CONSTRAINTS),
        ])
    };
    let changes = [
        ("version", edit(">=1.24", ">=1.25")),
        ("operator", edit(">=1.24", ">1.24")),
        ("trailing zero", edit("==2.1.0", "==2.1")),
        ("extra removed", edit("[security,socks]", "[socks]")),
        ("marker value", edit("\"3.8\"", "\"3.9\"")),
        ("marker and -> or", edit("\" and sys", "\" or sys")),
        ("package added", edit("numpy", "pandas\nnumpy")),
        ("package removed", edit("scikit-learn~=1.3.0\n", "")),
        ("hash removed", edit(&format!(" --hash={HASH_B}"), "")),
        ("index url", edit("pypi.org/simple", "pypi.org/other")),
        ("extra index url", edit("whl/cpu", "whl/cu121")),
        ("no index", edit("numpy", "--no-index\nnumpy")),
        (
            "constraint becomes requirement",
            edit("-c constraints.txt", "-r constraints.txt"),
        ),
        (
            "url instead of version",
            edit(
                "scikit-learn~=1.3.0",
                "scikit-learn @ https://h/scikit_learn-1.3.0-py3-none-any.whl",
            ),
        ),
    ];
    let mut seen = vec![reference.digest()];
    for (label, digest) in changes {
        assert!(!seen.contains(&digest), "{label} did not change the digest");
        seen.push(digest);
    }
    let constraint = digest_of(&[
        ("requirements.txt", BASELINE),
        ("constraints.txt", "urllib3<3\n"),
    ]);
    assert!(!seen.contains(&constraint), "constraint");
    seen.push(constraint);
    let mut other = reference.clone();
    other.base = Digest::of(b"other base");
    let mut python = reference.clone();
    python.target.python = PythonVersion::new(3, 12);
    let mut platform = reference.clone();
    platform.target.platform = "linux/arm64".parse().unwrap();
    for (label, spec) in [("base", other), ("python", python), ("platform", platform)] {
        assert!(!seen.contains(&spec.digest()), "{label}");
        seen.push(spec.digest());
    }
}

#[test]
fn digest_is_sha256_of_compact_canonical_json() {
    let spec = spec_of(&baseline());
    let bytes = spec.canonical_bytes();
    assert_eq!(spec.digest().0, Digest::of(&bytes));
    assert!(!bytes.contains(&b'\n') && !bytes.starts_with(b"{ "));
    let back: EnvSpec = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, spec);
    assert_eq!(spec_of(&baseline()).canonical_bytes(), bytes);
}

#[test]
fn malformed_lines_name_file_and_line() {
    let cases = [
        ("flask\n\nfoo>=\n", "requirements.txt:3: invalid requirement \"foo>=\": expected a version after \">=\""),
        ("foo===\n", "requirements.txt:1: invalid requirement \"foo===\": expected a version after \"===\""),
        ("# c\nfoo>=1.0 extra\n", "requirements.txt:2: invalid requirement \"foo>=1.0 extra\": unexpected text \"extra\" after version \"1.0\""),
        ("foo[bar\n", "requirements.txt:1: invalid requirement \"foo[bar\": unclosed extras: expected \"]\""),
        ("==1.0\n", "requirements.txt:1: invalid requirement \"==1.0\": expected a package name at the start"),
        ("a\nfoo; python_version >> '3'\n", "requirements.txt:2: invalid requirement \"foo; python_version >> '3'\": expected a marker variable or a quoted string after \">\", found \">\""),
        ("a\nfoo>=1,\\\n<2 x\n", "requirements.txt:2: invalid requirement \"foo>=1,<2 x\": unexpected text \"x\" after version \"2\""),
        ("foo; os_nam == 'nt'\n", "requirements.txt:1: invalid requirement \"foo; os_nam == 'nt'\": unknown marker variable \"os_nam\""),
        ("foo==1.0junk\n", "requirements.txt:1: invalid requirement \"foo==1.0junk\": invalid version \"1.0junk\": unexpected \"junk\""),
    ];
    for (text, want) in cases {
        assert_eq!(parse_err(text), want, "{text:?}");
    }
}

/// Lines uv refuses (or would misread) that strata must refuse itself, before uv runs, naming
/// the file (an included one here) and the line, and the token at fault.
#[test]
fn bad_lines_are_refused_with_file_line_and_token() {
    let sha = "0".repeat(64);
    let cases: Vec<(String, &str)> = vec![
        // Version specifiers.
        (
            "beta===<<1".into(),
            "===<<1: '<' cannot be part of a version",
        ),
        ("beta===1.0;0".into(), "unknown marker variable \"0\""),
        (
            "foo==1.0.0.".into(),
            "invalid version \"1.0.0.\": unexpected \".\"",
        ),
        ("foo>=1.0<2.0".into(), "unexpected \"<2.0\""),
        ("foo=1".into(), "expected a comparison operator"),
        ("foo==1.*.1".into(), "unexpected \".*.1\""),
        ("foo==*".into(), "invalid version \"*\""),
        ("foo!=1.0+abc.*".into(), "takes only release numbers"),
        ("foo==1.0+".into(), "invalid local version label"),
        ("foo~=1".into(), "~= needs at least two release numbers"),
        ("foo>=1.0.*".into(), "only allowed with == and !="),
        ("foo==1.0.post1.dev2a1".into(), "unexpected \"a1\""),
        ("foo == 1.0 . 1".into(), "unexpected text \". 1\""),
        // Names and extras.
        ("_foo".into(), "invalid package name \"_foo\""),
        ("==1.0".into(), "expected a package name at the start"),
        ("foo.".into(), "invalid package name \"foo.\""),
        ("foo[a,]".into(), "invalid extra name \"\""),
        ("foo[a b]".into(), "invalid extra name \"a b\""),
        // Markers.
        (
            "foo ; python_version > 3.8".into(),
            "unknown marker variable \"3.8\"",
        ),
        (
            "foo ; python_version ~= '3'".into(),
            "python_version ~= \"3\": ~=3: ~= needs at least two",
        ),
        (
            "foo ; python_version >= \"3.x\"".into(),
            "python_version >= \"3.x\": invalid version",
        ),
        (
            "foo ; extra == 'a b'".into(),
            "invalid extra name \"a b\" in marker",
        ),
        (
            "foo ; os_name == 'nt' or".into(),
            "expected a marker variable or a quoted string after \"or\"",
        ),
        (
            "foo==1.0 ; python_version<'3' extra".into(),
            "unexpected \"extra\" in marker",
        ),
        // Direct URLs.
        (
            "foo @ ftp://h/foo-1.0-py3-none-any.whl".into(),
            "unsupported scheme \"ftp\"",
        ),
        (
            "foo @ hg+https://h/repo".into(),
            "unsupported scheme \"hg+https\"",
        ),
        (
            "foo @ file:rel/foo-1.0-py3-none-any.whl".into(),
            "a file URL must be absolute",
        ),
        (
            "foo @ https://h/x.txt".into(),
            "does not end in a wheel or source archive",
        ),
        (
            "foo @ http://h/foo-1.0-py3-none-any.whl;python_version>'3'".into(),
            "needs a space before \";\"",
        ),
        (
            "foo @ https://h/foo.whl".into(),
            "invalid wheel file name \"foo.whl\"",
        ),
        (
            "bar @ https://h/foo-1.0-py3-none-any.whl".into(),
            "is package \"foo\", not \"bar\"",
        ),
        (
            "foo @ https://h/foo-1.0.zip#egg=bar".into(),
            "is package \"bar\", not \"foo\"",
        ),
        (
            "foo @ https://h/foo-1.0-py3-none-any.whl#sha256=zz".into(),
            "expected 64 hex digits",
        ),
        (
            format!("foo @ https://h/foo-1.0-py3-none-any.whl#md5={sha}"),
            "unsupported hash algorithm \"md5\"",
        ),
        ("foo @ not-a-url".into(), "invalid URL \"not-a-url\""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let included = dir.path().join("extra/more.txt");
    for (line, want) in &cases {
        write_all(
            dir.path(),
            &[
                ("requirements.txt", "flask\n-r extra/more.txt\n"),
                (
                    "extra/more.txt",
                    &format!("# pinned below\nclick==8.1.7\n{line}\n"),
                ),
            ],
        );
        let err = parse_requirements_file(&dir.path().join("requirements.txt"))
            .unwrap_err()
            .to_string();
        let at = format!("{}:3: invalid requirement {:?}: ", included.display(), line);
        assert!(err.starts_with(&at), "{line}: {err}");
        assert!(err.contains(want), "{line}: {err}");
    }
}

#[test]
fn unsupported_and_invalid_options_name_file_line_and_option() {
    let cases = [
        ("a\n-e ./pkg\n", "requirements.txt:2: local path \"./pkg\" cannot be installed: it does not exist"),
        ("a\n-e git+https://h/r\n", "requirements.txt:2: option \"-e\" is not supported: editable"),
        ("--editable=git+https://h/r\n", "requirements.txt:1: option \"--editable\" is not supported"),
        ("--pre\n", "requirements.txt:1: option \"--pre\" is not supported"),
        ("--trusted-host h\n", "requirements.txt:1: option \"--trusted-host\" is not supported: unknown option"),
        ("foo --install-option=x\n", "requirements.txt:1: option \"--install-option\" is not supported"),
        ("foo -r x.txt\n", "requirements.txt:1: option \"-r\" is not supported: file options must be on their own line"),
        ("./pkg[x]\n", "requirements.txt:1: local path \"./pkg[x]\" cannot be installed"),
        ("\n./pkg\n", "requirements.txt:2: local path \"./pkg\" cannot be installed: it does not exist"),
        ("pkg-1.0-py3-none-any.whl\n", "requirements.txt:1: local path \"pkg-1.0-py3-none-any.whl\" cannot be installed"),
        ("https://h/pkg.whl\n", "requirements.txt:1: \"https://h/pkg.whl\" is not supported: strata needs named requirements"),
        ("-r\n", "requirements.txt:1: invalid option \"-r\": expected a value after it"),
        ("foo --hash=md5:abc\n", "requirements.txt:1: invalid option \"--hash\": unsupported hash algorithm \"md5\""),
        ("foo --hash=sha256:abc\n", "requirements.txt:1: invalid option \"--hash\": \"sha256:abc\": expected 64 hex digits"),
        ("--index-url nope\n", "requirements.txt:1: invalid option \"--index-url\": invalid URL \"nope\""),
        ("-i https://a/simple\n-i https://b/simple\n", "requirements.txt:2: conflicting --index-url \"https://b/simple\": \"https://a/simple\" was given before"),
        ("--no-index=yes\n", "requirements.txt:1: invalid option \"--no-index\": takes no value"),
        ("-r https://h/r.txt\n", "requirements.txt:1: option \"-r\" is not supported: remote requirement files"),
    ];
    for (text, want) in cases {
        let got = parse_err(text);
        assert!(
            got.starts_with(want),
            "{text:?}:\n got  {got}\n want {want}"
        );
    }
}

#[test]
fn include_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_all(
        dir.path(),
        &[
            ("requirements.txt", "foo\n\n-r inc/missing.txt\n"),
            ("loop.txt", "a\n-r inc/back.txt\n"),
            ("inc/back.txt", "b\n-c ../loop.txt\n"),
            ("nested-bad.txt", "-r inc/bad.txt\n"),
            ("inc/bad.txt", "ok\nfoo>=\n"),
        ],
    );
    let err = parse_requirements_file(&dir.path().join("requirements.txt")).unwrap_err();
    assert!(
        matches!(&err, SpecError::MissingInclude { line: 3, include, .. } if include.ends_with("inc/missing.txt")),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("requirements.txt:3: cannot read included file")
            && msg.contains("inc/missing.txt"),
        "{msg}"
    );

    let err = parse_requirements_file(&dir.path().join("loop.txt")).unwrap_err();
    assert!(
        matches!(&err, SpecError::IncludeCycle { line: 2, file, .. } if file.ends_with("inc/back.txt")),
        "{err}"
    );

    let err = parse_requirements_file(&dir.path().join("nested-bad.txt")).unwrap_err();
    let want_file: PathBuf = dir.path().join("inc/bad.txt");
    assert!(
        matches!(&err, SpecError::Malformed { file, line: 2, .. } if *file == want_file),
        "{err}"
    );

    let err = parse_requirements_file(&dir.path().join("absent.txt")).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read requirements file"),
        "{err}"
    );
}

#[test]
fn requirement_parses_from_str() {
    let r: Requirement = "Foo.Bar[X] (>=1.0) ; extra == 'Test_Extra'"
        .parse()
        .unwrap();
    assert_eq!(r.to_string(), "foo-bar[x]>=1.0; extra == \"test-extra\"");
    let err = "foo>=".parse::<Requirement>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid requirement \"foo>=\": expected a version after \">=\""
    );
}

#[test]
fn duplicates_merge_by_name_marker_and_url() {
    let text = format!(
        "foo[a]>=1 --hash={HASH_B}\nFOO[b]<2 --hash={HASH_A}\nfoo ; os_name == 'nt'\n\
         foo @ https://h/foo-1.0-py3-none-any.whl\nfoo>=1\n"
    );
    let spec = spec_of(&[("requirements.txt", &text)]);
    let lines: Vec<String> = spec
        .requirements
        .iter()
        .map(|r| r.to_requirements_line())
        .collect();
    assert_eq!(
        lines,
        [
            format!("foo[a,b]<2,>=1 --hash={HASH_A} --hash={HASH_B}"),
            "foo @ https://h/foo-1.0-py3-none-any.whl".to_string(),
            "foo; os_name == \"nt\"".to_string(),
        ]
    );
}

/// Every prefix of some tricky inputs: the parser must answer (Ok or Err), never panic.
#[test]
fn truncated_inputs_never_panic() {
    let inputs = [
        "foo[ä, b]>=1.0a1.post2.dev3+Lo.cal ; (python_version >= '3.8' or os_name not in \"nt\") and extra == 'x'\n",
        "bär @ https://h/x.whl#sha256=ab ; os_name=='nt' --hash=sha256:AbC\\\n-r 'q\"x'\n",
        "--index-url=\u{e9}://x\n-f ../é\n=== ~= !== <>\n-\n--\n'\n\"\n\\\n#\n",
    ];
    for input in inputs {
        for (end, _) in input.char_indices() {
            let _ = parse_requirements_str(&input[..end], Path::new("fuzz.txt"));
        }
    }
}

/// The input of the known-answer test, on its own so that edits to the other tests' files
/// cannot move it.
const KNOWN_REQUIREMENTS: &str = "\
-i https://pypi.org/simple
--extra-index-url https://download.pytorch.org/whl/cpu
numpy>=1.24,<2
requests[security,socks]==2.31.0; python_version >= \"3.8\" and sys_platform == \"linux\"
torch==2.1.0 --hash=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa --hash=sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
scikit-learn~=1.3.0
-c constraints.txt
";
const KNOWN_CONSTRAINTS: &str = "urllib3<2\n";
const KNOWN_BASE: &str = "sha256:ac25ae413a4f5656838e1887e58917fa05d6a1964562bfa24f71b24286cb83d7";

/// The canonical spec of the known-answer input, as computed when this test was written.
const KNOWN_CANONICAL_JSON: &str = r#"{"version":2,"requirements":[{"name":"numpy","extras":[],"specifier":"<2,>=1.24","url":null,"marker":null,"hashes":[]},{"name":"requests","extras":["security","socks"],"specifier":"==2.31.0","url":null,"marker":"python_version >= \"3.8\" and sys_platform == \"linux\"","hashes":[]},{"name":"scikit-learn","extras":[],"specifier":"~=1.3.0","url":null,"marker":null,"hashes":[]},{"name":"torch","extras":[],"specifier":"==2.1.0","url":null,"marker":null,"hashes":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}],"constraints":[{"name":"urllib3","extras":[],"specifier":"<2","url":null,"marker":null,"hashes":[]}],"sources":{"index_url":"https://pypi.org/simple","extra_index_urls":["https://download.pytorch.org/whl/cpu"],"find_links":[],"no_index":false},"base":"sha256:ac25ae413a4f5656838e1887e58917fa05d6a1964562bfa24f71b24286cb83d7","target":{"python":"3.11","platform":"linux/amd64","glibc":[2,28]}}"#;

/// Its digest: the cache key of that environment (and its tag, `env-e86361e0a032704f`).
const KNOWN_SPEC_DIGEST: &str =
    "sha256:e86361e0a032704ff662d8b46e22b2a89ef8398d216fb15a485ead6c5f6c5cbd";

/// Known answer: one fixed requirements file, base digest, Python version and platform give
/// one fixed spec digest, computed as `strata build` computes it (`EnvSpec::new` of the parsed
/// file, the base's digest and the target, then `digest`).
///
/// The spec digest is every cache key: the local index, the `env-` tags, the annotations of
/// pushed images. If this test fails, the change just made gives every existing environment
/// a new key: every user's cache misses and every environment is rebuilt and pushed again.
/// Do not update these literals to make the test pass unless that is the intent; then bump
/// `SPEC_VERSION` with it and say so in the release notes.
///
/// Updated once, deliberately, for spec version 2 (issue 11): local find-links left the spec
/// and the image a spec names lost its spec annotations, so no version-1 key may answer with
/// a version-1 image; the `version` field was added for that.
#[test]
fn known_spec_digest_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    write_all(
        dir.path(),
        &[
            ("requirements.txt", KNOWN_REQUIREMENTS),
            ("constraints.txt", KNOWN_CONSTRAINTS),
        ],
    );
    let file = parse_requirements_file(&dir.path().join("requirements.txt")).unwrap();
    let base: Digest = KNOWN_BASE.parse().unwrap();
    let target = Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap());
    let spec = EnvSpec::new(file, base, target);
    // The canonical form first: when it differs, the diff says what changed.
    assert_eq!(
        String::from_utf8(spec.canonical_bytes()).unwrap(),
        KNOWN_CANONICAL_JSON,
        "the canonical spec changed: every cache key changes with it"
    );
    assert_eq!(
        spec.digest().to_string(),
        KNOWN_SPEC_DIGEST,
        "the spec digest changed: every cache key changes with it"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets: user info and `${VAR}` never reach the spec, its digest or an error message.

fn with_vars(
    text: &str,
    vars: &[(&str, &str)],
) -> Result<strata_python::RequirementsFile, SpecError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    parse_requirements_with_vars(text, Path::new("requirements.txt"), &lookup)
}

#[test]
fn user_info_is_not_part_of_the_spec() {
    let text = |token: &str| {
        format!(
            "-i https://ci-bot:{token}@pkgs.example/simple\n\
             --extra-index-url https://x:{token}@extra.example/simple/\n\
             -f https://bot:{token}@links.example/wheels\n\
             web @ https://bot:{token}@files.example/web-1.0-py3-none-any.whl\n"
        )
    };
    let parse = |token: &str| {
        let file = parse_requirements_str(&text(token), Path::new("r.txt")).unwrap();
        let credentials = file.credentials.clone();
        (EnvSpec::new(file, base(), target()), credentials)
    };
    let (first, credentials) = parse("OLD-s3cr3t");
    let (rotated, _) = parse("NEW-s3cr3t");
    assert_eq!(first.digest(), rotated.digest());
    let json = String::from_utf8(first.canonical_bytes()).unwrap();
    assert!(
        !json.contains("s3cr3t") && !json.contains("ci-bot"),
        "{json}"
    );
    assert_eq!(
        first.sources.index_url.as_deref(),
        Some("https://pkgs.example/simple")
    );
    assert_eq!(
        first.requirements[0].url.as_deref(),
        Some("https://files.example/web-1.0-py3-none-any.whl")
    );
    let origins: Vec<String> = credentials.iter().map(|(o, _)| o.to_string()).collect();
    assert_eq!(
        origins,
        [
            "https://extra.example",
            "https://files.example",
            "https://links.example",
            "https://pkgs.example"
        ]
    );
    let index = url::Url::parse("https://pkgs.example/simple/web/").unwrap();
    assert_eq!(
        credentials.for_url(&index).unwrap().password.expose(),
        "OLD-s3cr3t"
    );
}

#[test]
fn variables_are_expanded_as_pip_does() {
    let file = with_vars(
        "--index-url https://ci-bot:${INDEX_TOKEN}@pkgs.example/simple\nweb==${WEB_VERSION}\n",
        &[("INDEX_TOKEN", "s3cr3t"), ("WEB_VERSION", "1.0")],
    )
    .unwrap();
    assert_eq!(file.requirements[0].specifier, "==1.0");
    let index = url::Url::parse("https://pkgs.example/simple").unwrap();
    assert_eq!(
        file.credentials.for_url(&index).unwrap().password.expose(),
        "s3cr3t"
    );
    assert_eq!(
        file.sources.index_url.as_deref(),
        Some("https://pkgs.example/simple")
    );
}

#[test]
fn an_unset_variable_names_file_line_and_variable() {
    let err = with_vars("web\n-i https://u:${INDEX_TOKEN}@h/simple\n", &[]).unwrap_err();
    assert!(
        matches!(&err, SpecError::UnsetVariable { line: 2, variable, .. } if variable == "INDEX_TOKEN"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "requirements.txt:2: environment variable INDEX_TOKEN is not set (the line uses ${INDEX_TOKEN})"
    );
}

#[test]
fn errors_show_the_line_as_written_never_the_secret() {
    let cases = [
        // A bad marker after an expanded URL.
        "web @ https://u:${TOKEN}@h/web-1.0-py3-none-any.whl ; os_name ==\n",
        // A URL that does not parse.
        "-i https://u:${TOKEN}@[bad/simple\n",
        // An unknown option on a line holding a secret.
        "-i https://u:${TOKEN}@h/simple --pre\n",
    ];
    for text in cases {
        let err = with_vars(text, &[("TOKEN", "s3cr3t")]).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3t"), "{text:?}: {shown}");
        assert!(
            matches!(err, SpecError::Hidden { line: 1, .. }),
            "{text:?}: {err:?}"
        );
    }
    let err = with_vars("-i https://u:s3cr3t@[bad/simple\n", &[]).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("https://***@[bad/simple"), "{shown}");
    // A line without secrets keeps its typed error.
    let err = with_vars("-i https://[bad/simple\n", &[]).unwrap_err();
    assert!(matches!(err, SpecError::InvalidOption { .. }), "{err:?}");
}

//! The command line's conventions: shell completions, a man page, `--version` with the commit,
//! `strata config check` naming line and column, `NO_COLOR`, and a missing file said plainly.
//! Each runs the real binary.

use std::path::Path;
use std::process::{Command, Output};

const EXIT_BAD_INPUT: i32 = 3;

fn strata(args: &[&str]) -> Output {
    strata_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn strata_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("STRATA_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _strata"),
        ("zsh", "#compdef strata"),
        ("fish", "complete -c strata"),
    ] {
        let out = strata(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["build", "submit", "config", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let out = strata(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));
}

#[test]
fn man_page_renders_with_every_command() {
    let out = strata(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let roff = stdout(&out);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH strata"),
        "{roff}"
    );
    for command in ["build", "submit", "agent", "config", "completions", "man"] {
        assert!(roff.contains(command), "the page lacks {command}");
    }

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = strata(&["man", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in ["strata.1", "strata-build.1", "strata-config-check.1"] {
        assert!(pages.join(page).is_file(), "{page} not written");
    }

    // man(1) renders it, where installed (CI images often lack it).
    let Ok(rendered) = Command::new("man")
        .arg("-l")
        .arg(pages.join("strata.1"))
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .output()
    else {
        return;
    };
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    let text = stdout(&rendered);
    assert!(text.contains("SYNOPSIS"), "{text}");
    assert!(text.contains("Reproducible, layered OCI images"), "{text}");
}

#[test]
fn version_names_the_commit() {
    let out = strata(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version = stdout(&out);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o).trim().to_string());
    let commit = head.unwrap_or_else(|| "unknown commit".to_string());
    assert_eq!(
        version.trim(),
        format!("strata {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
}

/// `strata config check FILE` on `text`: its exit code and stderr.
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("strata.toml"), text).unwrap();
    let out = strata_in(dir.path(), &["config", "check"]);
    (out.status.code(), stdout(&out), stderr(&out))
}

#[test]
fn config_check_names_line_and_column() {
    let (code, out, err) =
        check("[build]\ncompression = \"zstd\"\n[gc]\ngrace = \"1h\"\n[tiers.cpu]\ncpus = 1\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "strata.toml: ok ([build], [gc], [tiers])");

    for (text, expected) in [
        // TOML syntax.
        ("[gc]\nkeep_days = 3\n[gc\n", "strata.toml:3:4: not valid TOML"),
        // A key no section has, at its place.
        (
            "[gc]\nkeep_days = 3\n  keep_dayz = 4\n",
            "strata.toml:3:3: invalid `gc.keep_dayz`: unknown field `keep_dayz`",
        ),
        // A misspelt section, which nothing would read.
        (
            "[build]\n\n[kubernets]\nregistry = \"r.example/ml\"\n",
            "strata.toml:3:2: unknown section `kubernets`",
        ),
        // A value of the wrong type, at the value.
        (
            "[build]\nbase = 3\n",
            "strata.toml:2:8: invalid `build.base`: invalid type: integer `3`, expected a string",
        ),
        // A value of the right type that does not hold, at its key.
        (
            "[gc]\nkeep_days = 1\ngrace = \"soon\"\n",
            "strata.toml:3:1: invalid `gc.grace`",
        ),
        (
            "[kubernetes]\nregistry = \"r.example/ml\"\n[kubernetes.queues.a]\n\nnamespace = \"Not_A_Label\"\n",
            "strata.toml:5:1: invalid `kubernetes.queues.a.namespace`",
        ),
    ] {
        let (code, out, err) = check(text);
        assert_eq!(code, Some(EXIT_BAD_INPUT), "{text}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(expected), "{text}\nexpected {expected:?} in: {err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = strata_in(dir.path(), &["config", "check", "other.toml"]);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT));
    assert_eq!(stderr(&out).trim(), "error: other.toml does not exist");
}

/// A log line at trace level: `strata detect` of an empty directory walks it.
fn traced(dir: &Path, no_colour: Option<&str>, through_a_terminal: bool) -> String {
    let strata = env!("CARGO_BIN_EXE_strata");
    let mut command = match through_a_terminal {
        // script(1) gives the command a pseudo-terminal, as a person's shell would.
        true => {
            let mut c = Command::new("script");
            c.args(["-qec", &format!("{strata} detect ."), "/dev/null"]);
            c
        }
        false => {
            let mut c = Command::new(strata);
            c.args(["detect", "."]);
            c
        }
    };
    command
        .current_dir(dir)
        .env("STRATA_LOG", "trace")
        .env("STRATA_HOME", dir.join("home"))
        .env_remove("NO_COLOR");
    if let Some(value) = no_colour {
        command.env("NO_COLOR", value);
    }
    let out = command.output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("TRACE"), "no log line to look at: {text}");
    text
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    const ESC: char = '\u{1b}';
    let piped = traced(dir.path(), None, false);
    assert!(
        !piped.contains(ESC),
        "colour written into a pipe: {piped:?}"
    );
    let terminal = traced(dir.path(), None, true);
    assert!(
        terminal.contains(ESC),
        "no colour on a terminal: {terminal:?}"
    );
    let no_colour = traced(dir.path(), Some("1"), true);
    assert!(
        !no_colour.contains(ESC),
        "NO_COLOR=1 ignored: {no_colour:?}"
    );
}

#[test]
fn a_missing_requirements_file_is_said_to_be_missing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for command in ["build", "explain"] {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                command,
                "-r",
                "requirement.txt",
                "--base",
                "oci:/nonexistent",
            ])
            .current_dir(dir.path())
            .env("STRATA_HOME", &home)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
        assert!(
            err.starts_with("error: requirement.txt does not exist\n"),
            "{command}: {err}"
        );
        assert!(!err.contains("os error"), "{command}: {err}");
        assert!(!err.contains("line shown"), "{command}: {err}");
        assert!(err.contains("hint: -r takes an environment file"), "{err}");
    }
}

/// `strata man | head -1`, `strata completions bash | grep -q ...`: a reader that closed the
/// pipe is not an error (exit 0, nothing on stderr), as for any Unix filter.
#[test]
fn printing_into_a_closed_pipe_is_not_an_error() {
    for args in [&["man"][..], &["completions", "bash"][..]] {
        // The reading end is closed before strata writes: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(writer)
            .output()
            .unwrap();
        assert!(out.status.success(), "strata {args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "strata {args:?}");
    }
}

/// `strata images | head -1` and the like (any command but `man` and `completions`, above): a
/// closed pipe ends strata quietly with the status SIGPIPE gives (141), never a panic (101)
/// and never a success it did not have (`verify` cut short must not read as passed).
#[test]
fn a_result_printed_into_a_closed_pipe_ends_quietly_with_sigpipes_status() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["images"][..], &["images", "--json"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_HOME", home.path())
            .env("NO_COLOR", "1")
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(141),
            "strata {args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out), "", "strata {args:?}");
    }
}

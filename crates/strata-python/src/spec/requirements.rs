//! requirements.txt files: logical lines, comments, options, `-r`/`-c` includes.
//!
//! Follows pip's file format where strata supports it, and refuses the rest with an error
//! naming file and line: a silently ignored option would build something the user did not ask
//! for.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{OptionError, SpecError, Unsupported};
use super::expand::{expand, Expanded};
use super::lines::{logical_lines, shell_split, split_requirement_options};
use super::local::local_requirement;
use super::pep508::parse_requirement;
use super::sources::{clean_path, normalise_find_links, normalise_url};
use super::{Requirement, Sources};
use crate::credentials::{redact_userinfo, take_userinfo, IndexCredentials};

/// A `--hash` value that is not a usable hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("{value:?} is not ALGORITHM:HEX, like sha256:<64 hex digits>")]
    NotAlgorithmHex { value: String },
    /// Not sha256, sha384 or sha512 (`md5`, `sha1`, ...).
    #[error("unsupported hash algorithm {algorithm:?}: use sha256")]
    UnsupportedAlgorithm { algorithm: String },
    /// The wrong number of digits for the algorithm, or a non-hex digit.
    #[error("{value:?}: expected {digits} hex digits after \"{algorithm}:\"")]
    BadDigest {
        value: String,
        algorithm: &'static str,
        digits: usize,
    },
}

/// What one requirements file (with its includes) says, before canonicalisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequirementsFile {
    pub requirements: Vec<Requirement>,
    /// From `-c`/`--constraint` files (and everything they include).
    pub constraints: Vec<Requirement>,
    /// URLs here have no user info: it went into `credentials`.
    pub sources: Sources,
    /// The user info of the file's URLs (index URLs, find-links, `name @ URL`), by origin.
    /// Never part of the spec.
    pub credentials: IndexCredentials,
    /// What the user should know but that does not stop the build (an `-e` installed as a
    /// regular package). Never part of the spec.
    pub warnings: Vec<String>,
}

/// Reads and parses a requirements file and everything it includes, expanding `${VAR}` from
/// the process environment.
pub fn parse_requirements_file(path: &Path) -> Result<RequirementsFile, SpecError> {
    let text = fs::read_to_string(path).map_err(|source| SpecError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse_requirements_str(&text, path)
}

/// Parses requirements text; `origin` names it in errors and anchors relative includes and
/// `--find-links` directories. `${VAR}` is expanded from the process environment.
pub fn parse_requirements_str(text: &str, origin: &Path) -> Result<RequirementsFile, SpecError> {
    parse_requirements_with_vars(text, origin, &|name| std::env::var(name).ok())
}

/// Like [`parse_requirements_str`], with `${VAR}` looked up by `vars`.
pub fn parse_requirements_with_vars(
    text: &str,
    origin: &Path,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<RequirementsFile, SpecError> {
    let mut parser = FileParser {
        out: RequirementsFile::default(),
        stack: vec![identity(origin)],
        vars,
    };
    parser.parse(text, origin, Mode::Requirements)?;
    Ok(parser.out)
}

/// Whether the lines being read are requirements or constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Requirements,
    Constraints,
}

struct FileParser<'v> {
    out: RequirementsFile,
    /// Identities of the files being read, outermost first, to detect include cycles.
    stack: Vec<PathBuf>,
    /// Where `${VAR}` values come from.
    vars: &'v dyn Fn(&str) -> Option<String>,
}

/// Where a line is, for error messages.
struct At<'a> {
    file: &'a Path,
    line: usize,
}

impl At<'_> {
    fn unsupported(&self, option: &str, reason: Unsupported) -> SpecError {
        SpecError::UnsupportedOption {
            file: self.file.to_path_buf(),
            line: self.line,
            option: option.to_string(),
            reason,
        }
    }

    fn invalid(&self, option: &str, source: impl Into<OptionError>) -> SpecError {
        SpecError::InvalidOption {
            file: self.file.to_path_buf(),
            line: self.line,
            option: option.to_string(),
            source: source.into(),
        }
    }
}

impl FileParser<'_> {
    fn parse(&mut self, text: &str, file: &Path, mode: Mode) -> Result<(), SpecError> {
        for line in logical_lines(text) {
            let at = At {
                file,
                line: line.number,
            };
            let expanded =
                expand(&line.content, self.vars).map_err(|variable| SpecError::UnsetVariable {
                    file: file.to_path_buf(),
                    line: line.number,
                    variable,
                })?;
            self.logical_line(&expanded.text, &at, mode)
                .map_err(|e| hide_secrets(e, &expanded, &at))?;
        }
        Ok(())
    }

    fn logical_line(&mut self, content: &str, at: &At, mode: Mode) -> Result<(), SpecError> {
        if content.starts_with('-') {
            return self.option_line(content, at, mode);
        }
        let requirement = requirement_line(content, at, &mut self.out.credentials)?;
        match mode {
            Mode::Requirements => self.out.requirements.push(requirement),
            Mode::Constraints => self.out.constraints.push(requirement),
        }
        Ok(())
    }

    /// A line of options such as `-r base.txt` or `--index-url https://... --no-index`.
    fn option_line(&mut self, content: &str, at: &At, mode: Mode) -> Result<(), SpecError> {
        let tokens = shell_split(content).map_err(|reason| at.invalid(content, reason))?;
        let mut tokens = tokens.into_iter();
        while let Some(token) = tokens.next() {
            let (name, inline) = split_option(&token);
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| tokens.next())
                    .ok_or_else(|| at.invalid(name, OptionError::MissingValue))
            };
            match name {
                "-r" | "--requirement" => self.include(&value()?, at, mode, name)?,
                "-c" | "--constraint" => self.include(&value()?, at, Mode::Constraints, name)?,
                "-i" | "--index-url" => self.index_url(&value()?, at, name)?,
                "--extra-index-url" => {
                    let url = normalise_url(&value()?, &mut self.out.credentials)
                        .map_err(|r| at.invalid(name, r))?;
                    self.out.sources.extra_index_urls.push(url);
                }
                "-f" | "--find-links" => {
                    let dir = base_dir(at.file);
                    let link = normalise_find_links(&value()?, &dir, &mut self.out.credentials)
                        .map_err(|r| at.invalid(name, r))?;
                    self.out.sources.add_find_links(link);
                }
                "-e" | "--editable" => self.editable(&value()?, at, mode, name)?,
                "--no-index" if inline.is_none() => self.out.sources.no_index = true,
                "--no-index" => return Err(at.invalid(name, OptionError::TakesNoValue)),
                _ => return Err(refuse(name, at)),
            }
        }
        Ok(())
    }

    /// `-e PATH`: the project at PATH, installed as a regular package (an image cannot link
    /// to the host's source tree), with a warning saying so. `-e URL` stays refused.
    fn editable(&mut self, path: &str, at: &At, mode: Mode, option: &str) -> Result<(), SpecError> {
        if path.contains("://") || path.contains('@') {
            return Err(at.unsupported(option, Unsupported::Editable));
        }
        let requirement =
            local_requirement(path, &base_dir(at.file)).map_err(|reason| SpecError::LocalPath {
                file: at.file.to_path_buf(),
                line: at.line,
                text: path.to_string(),
                reason,
            })?;
        self.out.warnings.push(format!(
            "{}:{}: {option} {path}: {} is installed as a regular package (built into a wheel), \
             not linked to its source on this machine; build again with --refresh after changing it",
            at.file.display(),
            at.line,
            requirement.name,
        ));
        match mode {
            Mode::Requirements => self.out.requirements.push(requirement),
            Mode::Constraints => self.out.constraints.push(requirement),
        }
        Ok(())
    }

    fn index_url(&mut self, raw: &str, at: &At, option: &str) -> Result<(), SpecError> {
        let url =
            normalise_url(raw, &mut self.out.credentials).map_err(|r| at.invalid(option, r))?;
        match &self.out.sources.index_url {
            Some(first) if *first != url => Err(SpecError::ConflictingIndexUrl {
                file: at.file.to_path_buf(),
                line: at.line,
                first: first.clone(),
                second: url,
            }),
            _ => {
                self.out.sources.index_url = Some(url);
                Ok(())
            }
        }
    }

    /// `-r`/`-c`: parse another file, relative to the including one.
    fn include(
        &mut self,
        target: &str,
        at: &At,
        mode: Mode,
        option: &str,
    ) -> Result<(), SpecError> {
        if target.contains("://") {
            return Err(at.unsupported(option, Unsupported::RemoteInclude));
        }
        let path = base_dir(at.file).join(target);
        let missing = |source| SpecError::MissingInclude {
            file: at.file.to_path_buf(),
            line: at.line,
            include: path.clone(),
            source,
        };
        let id = fs::canonicalize(&path).map_err(missing)?;
        if self.stack.contains(&id) {
            return Err(SpecError::IncludeCycle {
                file: at.file.to_path_buf(),
                line: at.line,
                include: path,
            });
        }
        let text = fs::read_to_string(&path).map_err(missing)?;
        self.stack.push(id);
        let result = self.parse(&text, &path, mode);
        self.stack.pop();
        result
    }
}

/// An error about a line whose expanded text holds a secret (a `${VAR}` value, or a URL's
/// user info): its message with the values put back as `${NAME}` and user info as `***`,
/// so that the error shows the line as written and never the secret. Other errors pass
/// unchanged, with their typed causes.
fn hide_secrets(error: SpecError, expanded: &Expanded, at: &At) -> SpecError {
    let has_userinfo = redact_userinfo(&expanded.text) != expanded.text;
    if expanded.values.is_empty() && !has_userinfo {
        return error;
    }
    SpecError::Hidden {
        file: at.file.to_path_buf(),
        line: at.line,
        message: redact_userinfo(&expanded.hide(&strata_errors::chain(&error))),
    }
}

/// A requirement with its per-line options (only `--hash`); a direct URL's user info goes to
/// `credentials`.
fn requirement_line(
    content: &str,
    at: &At,
    credentials: &mut IndexCredentials,
) -> Result<Requirement, SpecError> {
    let (spec, options) = split_requirement_options(content);
    let mut requirement = if looks_like_path(spec) {
        if spec.contains("://") {
            return Err(SpecError::UnsupportedPath {
                file: at.file.to_path_buf(),
                line: at.line,
                text: spec.to_string(),
            });
        }
        local_requirement(spec.trim(), &base_dir(at.file)).map_err(|reason| {
            SpecError::LocalPath {
                file: at.file.to_path_buf(),
                line: at.line,
                text: spec.trim().to_string(),
                reason,
            }
        })?
    } else {
        parse_requirement(spec).map_err(|source| SpecError::Malformed {
            file: at.file.to_path_buf(),
            line: at.line,
            text: spec.to_string(),
            source: Box::new(source),
        })?
    };
    let tokens = shell_split(options).map_err(|reason| at.invalid(options, reason))?;
    let mut tokens = tokens.into_iter();
    while let Some(token) = tokens.next() {
        let (name, inline) = split_option(&token);
        if name != "--hash" {
            return Err(refuse(name, at));
        }
        let raw = inline
            .or_else(|| tokens.next())
            .ok_or_else(|| at.invalid(name, OptionError::MissingHash))?;
        let hash = normalise_hash(&raw).map_err(|reason| at.invalid(name, reason))?;
        requirement.hashes.push(hash);
    }
    requirement.hashes.sort();
    requirement.hashes.dedup();
    requirement.url = requirement
        .url
        .map(|url| take_url_userinfo(url, credentials));
    Ok(requirement)
}

/// A direct URL (already parsed and written canonically) without its user info.
fn take_url_userinfo(url: String, credentials: &mut IndexCredentials) -> String {
    let Ok(mut parsed) = url::Url::parse(&url) else {
        return url;
    };
    if let Some((origin, credential)) = take_userinfo(&mut parsed) {
        credentials.insert_if_absent(origin, credential);
    }
    parsed.to_string()
}

/// `sha256:<64 hex>` (also sha384/sha512, which pip accepts), hex lowercased.
pub(super) fn normalise_hash(raw: &str) -> Result<String, HashError> {
    let (algorithm, hex) = raw
        .split_once(':')
        .ok_or_else(|| HashError::NotAlgorithmHex {
            value: raw.to_string(),
        })?;
    let (algorithm, digits) = match algorithm.to_ascii_lowercase().as_str() {
        "sha256" => ("sha256", 64),
        "sha384" => ("sha384", 96),
        "sha512" => ("sha512", 128),
        other => {
            return Err(HashError::UnsupportedAlgorithm {
                algorithm: other.to_string(),
            })
        }
    };
    if hex.len() != digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HashError::BadDigest {
            value: raw.to_string(),
            algorithm,
            digits,
        });
    }
    Ok(format!("{algorithm}:{}", hex.to_ascii_lowercase()))
}

/// The error for an option strata does not accept here, with the reason why.
fn refuse(option: &str, at: &At) -> SpecError {
    let reason = match option {
        "-e" | "--editable" => Unsupported::Editable,
        "--pre" => Unsupported::Pre,
        "--hash" => Unsupported::HashWithoutRequirement,
        "-r" | "--requirement" | "-c" | "--constraint" | "-i" | "--index-url"
        | "--extra-index-url" | "-f" | "--find-links" | "--no-index" => {
            Unsupported::FileOptionAfterRequirement
        }
        _ => Unsupported::Unknown,
    };
    at.unsupported(option, reason)
}

/// `--name=value` -> (`--name`, value); `-rfile` -> (`-r`, `file`); otherwise no inline value.
fn split_option(token: &str) -> (&str, Option<String>) {
    if token.starts_with("--") {
        return match token.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (token, None),
        };
    }
    match token.char_indices().nth(2) {
        Some((i, _)) if token.starts_with('-') => (&token[..i], Some(token[i..].to_string())),
        _ => (token, None),
    }
}

/// Local paths, archives and bare URLs, which pip accepts as unnamed requirements.
fn looks_like_path(spec: &str) -> bool {
    let first = spec
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '['))
        .next()
        .unwrap_or("");
    if first.starts_with(['.', '/', '~']) {
        return true;
    }
    if first.contains('@') {
        // `name@https://...`: a direct reference, checked by the PEP 508 parser.
        return false;
    }
    let lower = first.to_ascii_lowercase();
    let archive = [".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar"]
        .iter()
        .any(|ext| lower.ends_with(ext));
    first.contains(['/', '\\']) || archive
}

/// The directory relative includes and find-links of `file` are resolved against.
fn base_dir(file: &Path) -> PathBuf {
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A stable identity of a file for cycle detection, even if it does not exist on disk.
fn identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| match std::env::current_dir() {
        Ok(cwd) => clean_path(&cwd.join(path)),
        Err(_) => path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{RequirementError, SourceError};

    #[test]
    fn hashes_are_normalised() {
        let hex = "AB".repeat(32);
        assert_eq!(
            normalise_hash(&format!("SHA256:{hex}")),
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        );
        assert_eq!(
            normalise_hash(&format!("sha512:{}", "0".repeat(128))),
            Ok(format!("sha512:{}", "0".repeat(128)))
        );
    }

    #[test]
    fn says_what_is_wrong_with_a_hash() {
        let value = |s: &str| s.to_string();
        let cases = [
            (
                "sha256=abc",
                HashError::NotAlgorithmHex {
                    value: value("sha256=abc"),
                },
            ),
            (
                "MD5:abc",
                HashError::UnsupportedAlgorithm {
                    algorithm: value("md5"),
                },
            ),
            (
                "sha256:abc",
                HashError::BadDigest {
                    value: value("sha256:abc"),
                    algorithm: "sha256",
                    digits: 64,
                },
            ),
            (
                &format!("sha384:{}", "g".repeat(96)),
                HashError::BadDigest {
                    value: format!("sha384:{}", "g".repeat(96)),
                    algorithm: "sha384",
                    digits: 96,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_hash(input), Err(want), "{input:?}");
        }
    }

    /// The outer error keeps file, line and option, and carries the typed cause.
    #[test]
    fn option_errors_carry_their_cause() {
        let parse = |text: &str| parse_requirements_str(text, Path::new("r.txt")).unwrap_err();
        assert!(matches!(
            parse("foo --hash=md5:00\n"),
            SpecError::InvalidOption {
                line: 1,
                source: OptionError::Hash(HashError::UnsupportedAlgorithm { .. }),
                ..
            }
        ));
        assert!(matches!(
            parse("a\n-r 'x\n"),
            SpecError::InvalidOption {
                line: 2,
                source: OptionError::Quote(_),
                ..
            }
        ));
        assert!(matches!(
            parse("-i nope\n"),
            SpecError::InvalidOption {
                source: OptionError::Source(SourceError::BadUrl { .. }),
                ..
            }
        ));
        assert!(matches!(
            parse("-f\n"),
            SpecError::InvalidOption {
                source: OptionError::MissingValue,
                ..
            }
        ));
        assert!(matches!(
            parse("foo --hash\n"),
            SpecError::InvalidOption {
                source: OptionError::MissingHash,
                ..
            }
        ));
        assert!(matches!(
            parse("--no-index=1\n"),
            SpecError::InvalidOption {
                source: OptionError::TakesNoValue,
                ..
            }
        ));
        assert!(matches!(
            parse("-e git+https://h/r\n"),
            SpecError::UnsupportedOption {
                reason: Unsupported::Editable,
                ..
            }
        ));
        assert!(matches!(
            parse("-r https://h/r.txt\n"),
            SpecError::UnsupportedOption {
                reason: Unsupported::RemoteInclude,
                ..
            }
        ));
        assert!(matches!(
            parse("--hash=sha256:00\n"),
            SpecError::UnsupportedOption {
                reason: Unsupported::HashWithoutRequirement,
                ..
            }
        ));
        assert!(matches!(
            parse("foo -i https://h\n"),
            SpecError::UnsupportedOption {
                reason: Unsupported::FileOptionAfterRequirement,
                ..
            }
        ));
        assert!(matches!(
            parse("--user\n"),
            SpecError::UnsupportedOption {
                reason: Unsupported::Unknown,
                ..
            }
        ));
        assert!(matches!(
            parse("ok\nfoo>=\n"),
            SpecError::Malformed { line: 2, source, .. }
                if matches!(source.as_ref(), RequirementError::Specifier(_))
        ));
    }
}

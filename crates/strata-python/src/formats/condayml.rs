//! conda's `environment.yml`: the `pip:` section is the environment (read as requirement
//! lines, errors at the line of the YAML file), `python` chooses or checks the target's
//! Python, `pip` itself is implied; every other conda package is refused, all in one error,
//! since strata installs PyPI wheels only.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use super::error::FormatError;
use super::{syntax, EnvFile, RequiresPython};
use crate::spec::parse_requirements_str;
use crate::target::PythonVersion;

pub(super) fn read(file: &Path, text: &str) -> Result<EnvFile, FormatError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| syntax(file, e))?;
    let invalid = |key: &str, message: &str| FormatError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let [doc] = docs.as_slice() else {
        return Err(invalid("(document)", "expected one YAML document"));
    };
    let Some(dependencies) = doc["dependencies"].as_vec() else {
        return Err(invalid("dependencies", "missing, or not a list"));
    };
    let mut python = None;
    let mut pip = Vec::new();
    let mut conda_only = Vec::new();
    for item in dependencies {
        match item {
            Yaml::String(spec) => {
                let (name, version) = conda_spec(spec);
                match name.as_str() {
                    "python" => python = version,
                    "pip" => {}
                    _ => conda_only.push(spec.clone()),
                }
            }
            Yaml::Hash(map) => {
                for (key, value) in map {
                    if key.as_str() != Some("pip") {
                        return Err(invalid(
                            "dependencies",
                            &format!("{key:?}: only a `pip:` list may be a mapping"),
                        ));
                    }
                    let Some(lines) = value.as_vec() else {
                        return Err(invalid("dependencies.pip", "not a list"));
                    };
                    for line in lines {
                        let line = scalar(line).ok_or_else(|| {
                            invalid("dependencies.pip", "entries must be strings")
                        })?;
                        pip.push(line);
                    }
                }
            }
            other => {
                return Err(invalid(
                    "dependencies",
                    &format!("{other:?} is neither a package nor a `pip:` list"),
                ))
            }
        }
    }
    if !conda_only.is_empty() {
        return Err(FormatError::CondaOnly {
            file: file.to_path_buf(),
            packages: conda_only,
        });
    }
    let requirements = parse_requirements_str(&at_their_lines(text, &pip), file)?;
    let (requires_python, chosen) = match python {
        Some(spec) => python_pin(file, &spec)?,
        None => (None, None),
    };
    Ok(EnvFile::Requirements {
        file: requirements,
        requires_python,
        python: chosen,
    })
}

/// A YAML scalar as text (`- 1.0` is a number to YAML, a line to pip).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A conda match spec's package name and version part: `conda-forge::python=3.11=h1_0`
/// → (`python`, `=3.11`); `numpy >=1.26` → (`numpy`, `>=1.26`).
fn conda_spec(spec: &str) -> (String, Option<String>) {
    let spec = spec.rsplit("::").next().unwrap_or(spec).trim();
    let end = spec
        .find(['=', '<', '>', '!', '~', ' '])
        .unwrap_or(spec.len());
    let name = spec[..end].trim().to_ascii_lowercase();
    let version = spec[end..].trim();
    (name, (!version.is_empty()).then(|| version.to_string()))
}

/// conda's `python` pin as a PEP 440 specifier (`=3.11` means `3.11.*`; a build string after a
/// second `=` is dropped), and the `X.Y` it names when it names one: the target's Python
/// unless `--python` says otherwise.
fn python_pin(
    file: &Path,
    spec: &str,
) -> Result<(Option<RequiresPython>, Option<PythonVersion>), FormatError> {
    let spec = spec.trim();
    let specifier = if let Some(rest) = spec.strip_prefix("==") {
        format!("=={}", rest.split('=').next().unwrap_or(rest))
    } else if let Some(rest) = spec.strip_prefix('=') {
        let version = rest
            .split('=')
            .next()
            .unwrap_or(rest)
            .trim_end_matches(".*");
        format!("=={version}.*")
    } else if spec.starts_with(|c: char| c.is_ascii_digit()) {
        // `python 3.11`: conda reads a bare version like `=`.
        format!("=={}.*", spec.trim_end_matches(".*"))
    } else {
        spec.to_string()
    };
    let named = specifier
        .strip_prefix("==")
        .map(|v| v.trim_end_matches(".*"))
        .and_then(|v| {
            let mut parts = v.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some(PythonVersion::new(major, minor))
        });
    // A target knows `X.Y`, not the patch level: an exact pin is checked as `X.Y.*`.
    let specifier = match named {
        Some(version) => format!("=={version}.*"),
        None => specifier,
    };
    let requires = RequiresPython {
        file: file.to_path_buf(),
        specifier,
    };
    Ok((Some(requires), named))
}

/// The pip entries as a requirements text in which each sits at its line of the YAML file,
/// so that the requirements parser's errors name the line a user sees.
fn at_their_lines(yaml: &str, entries: &[String]) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<String> = vec![String::new(); lines.len()];
    let mut from = lines
        .iter()
        .position(|l| l.trim_start().trim_start_matches("- ").trim() == "pip:")
        .unwrap_or(0);
    let mut unplaced = Vec::new();
    for entry in entries {
        let found = lines[from..]
            .iter()
            .position(|l| l.contains(entry.as_str()))
            .map(|i| i + from);
        match found {
            Some(i) => {
                out[i] = entry.clone();
                from = i + 1;
            }
            None => unplaced.push(entry.clone()),
        }
    }
    out.extend(unplaced);
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conda_specs() {
        assert_eq!(
            conda_spec("conda-forge::python=3.11=h1_0"),
            ("python".into(), Some("=3.11=h1_0".into()))
        );
        assert_eq!(
            conda_spec("numpy >=1.26"),
            ("numpy".into(), Some(">=1.26".into()))
        );
        assert_eq!(conda_spec("pip"), ("pip".into(), None));
    }

    #[test]
    fn python_pins() {
        let file = Path::new("environment.yml");
        let pin = |spec: &str| {
            let (requires, named) = python_pin(file, spec).unwrap();
            (requires.unwrap().specifier, named.map(|p| p.to_string()))
        };
        assert_eq!(pin("=3.11"), ("==3.11.*".into(), Some("3.11".into())));
        assert_eq!(
            pin("=3.11.*=h1_0"),
            ("==3.11.*".into(), Some("3.11".into()))
        );
        assert_eq!(pin("==3.11.7"), ("==3.11.*".into(), Some("3.11".into())));
        assert_eq!(pin("3.12"), ("==3.12.*".into(), Some("3.12".into())));
        assert_eq!(pin(">=3.10"), (">=3.10".into(), None));
    }
}

//! The environment layer, last in the image: what makes the wheel layers a virtual
//! environment (pyvenv.cfg, the interpreter links) plus small extra files such as the lock.

use std::io::Write;

use strata_oci::LayerDescriptor;

use crate::layer::{FileContent, LayerBuilder, LayerError, NoSource};
use crate::scheme::InstallScheme;
use crate::InstallError;

/// Writes the environment layer. `base_interpreter` is the base image's absolute interpreter
/// path (`/usr/bin/python3.11`), `python_full_version` its `X.Y.Z` (or `X.Y` when it is
/// unknown), and `extra_files` are
/// paths relative to the venv with their contents.
pub fn env_layer(
    scheme: &InstallScheme,
    base_interpreter: &str,
    python_full_version: &str,
    extra_files: &[(String, Vec<u8>)],
    out: impl Write,
) -> Result<LayerDescriptor, InstallError> {
    scheme.validate()?;
    let home = interpreter_home(base_interpreter)?;
    check_full_version(scheme, python_full_version)?;
    let root = scheme.root();
    let wrap = |path: &str| {
        let path = path.to_string();
        move |source| InstallError::Write {
            what: format!("the environment layer, entry {path}"),
            source,
        }
    };
    let mut layer = LayerBuilder::new();
    let cfg = format!(
        "home = {home}\ninclude-system-site-packages = false\nversion = {python_full_version}\n"
    );
    let cfg_path = format!("{root}/pyvenv.cfg");
    layer
        .file(&cfg_path, false, FileContent::Bytes(cfg.into_bytes()))
        .map_err(wrap(&cfg_path))?;
    let bin = scheme.scripts();
    let links = [
        (format!("{bin}/python"), base_interpreter.to_string()),
        (format!("{bin}/python3"), "python".to_string()),
        (
            format!("{bin}/python{}", scheme.python),
            "python".to_string(),
        ),
        (format!("{root}/lib64"), "lib".to_string()),
    ];
    for (path, target) in &links {
        layer.symlink(path, target).map_err(wrap(path))?;
    }
    let site = scheme.site_packages();
    layer.dir(&site).map_err(wrap(&site))?;
    for (rel, bytes) in extra_files {
        let path = format!("{root}/{rel}");
        let result = if layer.contains(&path) {
            Err(LayerError::Duplicate { path: path.clone() })
        } else {
            layer.file(&path, false, FileContent::Bytes(bytes.clone()))
        };
        result.map_err(wrap(rel))?;
    }
    layer
        .write_compressed(&mut NoSource, out, scheme.compression)
        .map_err(|source| InstallError::Write {
            what: "the environment layer".to_string(),
            source,
        })
}

fn interpreter_home(interpreter: &str) -> Result<&str, InstallError> {
    let err =
        |reason: &str| InstallError::Scheme(format!("base interpreter {interpreter:?} {reason}"));
    if !interpreter.starts_with('/') || interpreter.ends_with('/') {
        return Err(err("must be an absolute file path"));
    }
    if interpreter.chars().any(|c| c.is_control()) {
        return Err(err("contains control characters"));
    }
    let (home, _) = interpreter
        .rsplit_once('/')
        .ok_or_else(|| err("has no directory"))?;
    Ok(if home.is_empty() { "/" } else { home })
}

/// `3.11.9` for a 3.11 scheme, or just `3.11` when the base image does not tell its patch
/// version; anything else would make a lying pyvenv.cfg. (`version` is informational: the
/// interpreter reads only `home` and `include-system-site-packages`; tools such as uv read
/// `version` as `X.Y[.Z]`.)
fn check_full_version(scheme: &InstallScheme, full: &str) -> Result<(), InstallError> {
    if full == scheme.python.to_string() {
        return Ok(());
    }
    let prefix = format!("{}.", scheme.python);
    let patch = full.strip_prefix(&prefix).unwrap_or_default();
    let valid = !patch.is_empty() && patch.chars().all(|c| c.is_ascii_alphanumeric() || c == '+');
    if !valid {
        return Err(InstallError::Scheme(format!(
            "Python version {full:?} is not a {} release",
            scheme.python
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_python::PythonVersion;

    #[test]
    fn home_is_the_interpreter_directory() {
        assert_eq!(interpreter_home("/usr/bin/python3.11").unwrap(), "/usr/bin");
        assert_eq!(interpreter_home("/python").unwrap(), "/");
        assert!(interpreter_home("python3").is_err());
    }

    #[test]
    fn full_version_must_match_the_scheme() {
        let s = InstallScheme::new(PythonVersion::new(3, 11));
        assert!(check_full_version(&s, "3.11.9").is_ok());
        assert!(check_full_version(&s, "3.11.0rc1").is_ok());
        assert!(check_full_version(&s, "3.11").is_ok());
        assert!(check_full_version(&s, "3.1").is_err());
        assert!(check_full_version(&s, "3.12.1").is_err());
        assert!(check_full_version(&s, "3.11.").is_err());
        assert!(check_full_version(&s, "3.11.1\nhome = /x").is_err());
    }
}

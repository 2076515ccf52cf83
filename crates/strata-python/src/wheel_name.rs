//! Wheel file names (PEP 427 / the binary distribution format spec):
//! `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`, where each tag part may be a
//! compressed set joined by `.` (`cp311.cp312`, `manylinux_2_17_x86_64.manylinux2014_x86_64`).

use std::fmt;

use crate::name::PackageName;

/// A parsed wheel file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WheelFilename {
    pub name: PackageName,
    pub version: String,
    /// The optional build tag; it starts with a digit.
    pub build: Option<String>,
    pub python_tags: Vec<String>,
    pub abi_tags: Vec<String>,
    pub platform_tags: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid wheel file name {filename:?}: {reason}")]
pub struct WheelNameError {
    pub filename: String,
    pub reason: &'static str,
}

impl WheelFilename {
    pub fn parse(filename: &str) -> Result<WheelFilename, WheelNameError> {
        let err = |reason| WheelNameError {
            filename: filename.to_string(),
            reason,
        };
        let stem = filename
            .strip_suffix(".whl")
            .ok_or_else(|| err("it does not end in .whl"))?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, build, tags) = match parts.as_slice() {
            [n, v, py, abi, plat] => (*n, *v, None, [*py, *abi, *plat]),
            [n, v, b, py, abi, plat] => (*n, *v, Some(*b), [*py, *abi, *plat]),
            _ => return Err(err("expected name-version[-build]-python-abi-platform.whl")),
        };
        let name = PackageName::new(name).map_err(|_| err("the package name is invalid"))?;
        if version.is_empty() {
            return Err(err("the version is empty"));
        }
        if let Some(b) = build {
            if !b.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(err("the build tag must start with a digit"));
            }
        }
        let [py, abi, plat] = tags.map(split_tag_set);
        if [&py, &abi, &plat].iter().any(|set| set.is_empty()) {
            return Err(err("a tag is empty"));
        }
        Ok(WheelFilename {
            name,
            version: version.to_string(),
            build: build.map(str::to_string),
            python_tags: py,
            abi_tags: abi,
            platform_tags: plat,
        })
    }

    /// Every `(python, abi, platform)` triple the compressed tag sets expand to.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
        self.python_tags.iter().flat_map(move |py| {
            self.abi_tags.iter().flat_map(move |abi| {
                self.platform_tags
                    .iter()
                    .map(move |plat| (py.as_str(), abi.as_str(), plat.as_str()))
            })
        })
    }
}

/// Splits a compressed tag set; an empty member makes the whole set invalid (returned empty).
fn split_tag_set(set: &str) -> Vec<String> {
    let tags: Vec<String> = set.split('.').map(str::to_string).collect();
    if tags.iter().any(|t| t.is_empty()) {
        return Vec::new();
    }
    tags
}

impl fmt::Display for WheelFilename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.name.as_dist_info_name(), self.version)?;
        if let Some(b) = &self.build {
            write!(f, "-{b}")?;
        }
        write!(
            f,
            "-{}-{}-{}.whl",
            self.python_tags.join("."),
            self.abi_tags.join("."),
            self.platform_tags.join(".")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pure_wheel() {
        let w = WheelFilename::parse("Foo_Bar-1.0.post1-py3-none-any.whl").unwrap();
        assert_eq!(w.name.as_str(), "foo-bar");
        assert_eq!(w.version, "1.0.post1");
        assert_eq!(w.build, None);
        assert_eq!(w.python_tags, ["py3"]);
        assert_eq!(w.abi_tags, ["none"]);
        assert_eq!(w.platform_tags, ["any"]);
    }

    #[test]
    fn parses_build_tags_and_compressed_sets() {
        let w = WheelFilename::parse(
            "numpy-2.0.0-1abc-cp311.cp312-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(w.build.as_deref(), Some("1abc"));
        assert_eq!(w.python_tags, ["cp311", "cp312"]);
        assert_eq!(
            w.platform_tags,
            ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]
        );
        assert_eq!(w.tags().count(), 4);
        assert_eq!(
            w.to_string(),
            "numpy-2.0.0-1abc-cp311.cp312-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "foo-1.0-py3-none-any.tar.gz",
            "foo-1.0-py3-none.whl",
            "foo-1.0-x-y-py3-none-any.whl",
            "foo-1.0-abc-py3-none-any.whl",
            "foo--py3-none-any.whl",
            "-1.0-py3-none-any.whl",
            "foo-1.0-py3..py2-none-any.whl",
            "foo-1.0-py3-none-.whl",
        ] {
            assert!(WheelFilename::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_names_the_file() {
        let e = WheelFilename::parse("foo.zip").unwrap_err();
        assert!(e.to_string().contains("foo.zip"), "{e}");
    }
}

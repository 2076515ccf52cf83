//! The top-level module names of each supported Python's standard library, embedded from
//! `data/stdlib/X.Y.txt` (written by `data/stdlib/generate.py`).

use std::collections::HashSet;

use strata_python::PythonVersion;

const LISTS: [(u8, &str); 7] = [
    (8, include_str!("../data/stdlib/3.8.txt")),
    (9, include_str!("../data/stdlib/3.9.txt")),
    (10, include_str!("../data/stdlib/3.10.txt")),
    (11, include_str!("../data/stdlib/3.11.txt")),
    (12, include_str!("../data/stdlib/3.12.txt")),
    (13, include_str!("../data/stdlib/3.13.txt")),
    (14, include_str!("../data/stdlib/3.14.txt")),
];

/// The versions with a list, for messages.
pub const SUPPORTED: &str = "3.8 to 3.14";

/// One version's standard library.
#[derive(Debug, Clone)]
pub struct Stdlib(HashSet<&'static str>);

impl Stdlib {
    /// The list of `version`, or `None` when there is none.
    pub fn of(version: PythonVersion) -> Option<Stdlib> {
        if version.major != 3 {
            return None;
        }
        let (_, text) = LISTS.iter().find(|(minor, _)| *minor == version.minor)?;
        Some(Stdlib(text.lines().filter(|l| !l.is_empty()).collect()))
    }

    /// Whether `top` (the first component of an import) is the standard library's.
    pub fn contains(&self, top: &str) -> bool {
        self.0.contains(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_follow_the_versions() {
        let v = |minor| Stdlib::of(PythonVersion::new(3, minor)).unwrap();
        assert!(v(11).contains("tomllib") && !v(10).contains("tomllib"));
        assert!(v(11).contains("distutils") && !v(12).contains("distutils"));
        for minor in 8..=14 {
            let lib = v(minor);
            for name in ["os", "sys", "json", "collections", "__future__", "_thread"] {
                assert!(lib.contains(name), "3.{minor} {name}");
            }
            for name in ["numpy", "yaml", "lib", "sklearn"] {
                assert!(!lib.contains(name), "3.{minor} {name}");
            }
        }
        assert!(Stdlib::of(PythonVersion::new(3, 7)).is_none());
        assert!(Stdlib::of(PythonVersion::new(2, 7)).is_none());
    }
}

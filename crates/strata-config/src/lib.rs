//! strata's configuration files: `strata.toml` in the project and `$STRATA_HOME/config.toml`.
//! Each crate reads its own section into its own type; this crate only finds the files,
//! layers them (the project's file wins, key by key) and names the file and key of an error.
//! Flags and `STRATA_*` variables are applied by the caller on top.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

mod duration;

pub use duration::{parse_duration, DurationError};

/// The file name looked for in the project directory.
pub const PROJECT_FILE: &str = "strata.toml";
/// The file name looked for in `$STRATA_HOME`.
pub const HOME_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{} does not exist", file.display())]
    Missing { file: PathBuf },
    #[error("cannot read {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{at}: not valid TOML: {detail}", file.display())]
    Syntax {
        file: PathBuf,
        at: Location,
        detail: String,
    },
    #[error("{}: invalid value for `{key}`: {detail}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        detail: String,
    },
    /// An unknown key, or a value of the wrong type, where the file says it.
    #[error("{}:{at}: invalid `{key}`: {detail}", file.display())]
    At {
        file: PathBuf,
        at: Location,
        key: String,
        detail: String,
    },
    /// A top-level table no part of strata reads (a typo of a section's name).
    #[error("{}:{at}: unknown section `{section}`; strata reads {}", file.display(), known.join(", "))]
    UnknownSection {
        file: PathBuf,
        at: Location,
        section: String,
        known: Vec<String>,
    },
}

/// A place in a file, 1-based, as editors count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` of `text` (columns count characters).
    pub fn of(text: &str, offset: usize) -> Location {
        let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The configuration files found, highest priority first.
#[derive(Debug, Clone, Default)]
pub struct Config {
    files: Vec<File>,
}

/// One file read: its text is kept to say where in it an error is.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl Config {
    /// Reads `PROJECT/strata.toml` and `HOME/config.toml` where they exist.
    pub fn load(project: &Path, home: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for file in [project.join(PROJECT_FILE), home.join(HOME_FILE)] {
            if let Some(file) = read_file(&file)? {
                config.files.push(file);
            }
        }
        Ok(config)
    }

    /// A configuration from one file only (tests, `--config`).
    pub fn from_file(file: &Path) -> Result<Config, ConfigError> {
        let file = read_file(file)?.ok_or_else(|| ConfigError::Missing {
            file: file.to_path_buf(),
        })?;
        Ok(Config { files: vec![file] })
    }

    /// The files that were read, highest priority first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// The file that sets `section.key` (the highest-priority one), for an error about a
    /// value that parsed but is not valid.
    pub fn origin(&self, section: &str, key: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| {
                f.table
                    .get(section)
                    .and_then(|s| s.as_table())
                    .is_some_and(|s| s.contains_key(key))
            })
            .map(|f| f.path.as_path())
    }

    /// Section `name` as `T`: keys of the higher-priority file replace those of the lower,
    /// then the merged table is checked against `T`. An error names the file that set the
    /// offending key and the key's full path (`gc.keep_days`).
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        let mut merged = toml::Table::new();
        let mut origin: Vec<(String, PathBuf)> = Vec::new();
        for File {
            path: file, table, ..
        } in self.files.iter().rev()
        {
            let Some(section) = table.get(name) else {
                continue;
            };
            let Some(section) = section.as_table() else {
                return Err(ConfigError::Invalid {
                    file: file.clone(),
                    key: name.to_string(),
                    detail: "expected a table".into(),
                });
            };
            for (key, value) in section {
                merged.insert(key.clone(), value.clone());
                origin.retain(|(k, _)| k != key);
                origin.push((key.clone(), file.clone()));
            }
        }
        if merged.is_empty() && origin.is_empty() {
            return Ok(T::default());
        }
        let value = toml::Value::Table(merged);
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let top = path.split(['.', '[']).next().unwrap_or("").to_string();
            let file = origin
                .iter()
                .find(|(k, _)| *k == top)
                .or(origin.last())
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            let key = if path.is_empty() || path == "." {
                name.to_string()
            } else {
                format!("{name}.{path}")
            };
            match self.locate::<T>(&file, name) {
                Some((at, detail)) => ConfigError::At {
                    file,
                    at,
                    key,
                    detail,
                },
                None => ConfigError::Invalid {
                    file,
                    key,
                    detail: e.into_inner().to_string(),
                },
            }
        })
    }

    /// Where in `file` its section `name` fails to be a `T`: the file's own text read again
    /// with toml's spans (the merged table has none). None when that file alone is fine, as
    /// when the error comes from combining files.
    fn locate<T: DeserializeOwned>(&self, file: &Path, name: &str) -> Option<(Location, String)> {
        let text = &self.files.iter().find(|f| f.path == file)?.text;
        let seed = OneSection::<T> {
            name,
            section: std::marker::PhantomData,
        };
        let error =
            serde::Deserializer::deserialize_map(toml::Deserializer::new(text), seed).err()?;
        let at = Location::of(text, error.span()?.start);
        Some((at, error.message().replace('\n', "; ")))
    }

    /// The sections (top-level tables) the files set, each once.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        let mut seen = std::collections::BTreeSet::new();
        self.files
            .iter()
            .flat_map(|f| f.table.keys())
            .map(String::as_str)
            .filter(move |k| seen.insert(*k))
    }

    /// An error about the value of dotted `key` (`kubernetes.queues.a.namespace`) that parsed
    /// but is not valid: at the key's line in the highest-priority file that sets it.
    pub fn invalid(&self, key: &str, detail: impl Into<String>) -> ConfigError {
        let detail = detail.into();
        let path: Vec<&str> = key.split('.').collect();
        for file in &self.files {
            let found = serde::Deserializer::deserialize_map(
                toml::Deserializer::new(&file.text),
                FindKey { path: &path },
            )
            .err()
            .and_then(|e| e.span());
            if let Some(span) = found {
                return ConfigError::At {
                    file: file.path.clone(),
                    at: Location::of(&file.text, span.start),
                    key: key.to_string(),
                    detail,
                };
            }
        }
        ConfigError::Invalid {
            file: self
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            key: key.to_string(),
            detail,
        }
    }

    /// Refuses a top-level table or key that is none of `known`: serde ignores what no
    /// section type asks for, so a misspelt `[kubernets]` would be silently unused.
    pub fn check_sections(&self, known: &[&str]) -> Result<(), ConfigError> {
        for file in &self.files {
            let Some(section) = file.table.keys().find(|k| !known.contains(&k.as_str())) else {
                continue;
            };
            let seed = KnownKeys { known };
            let at =
                serde::Deserializer::deserialize_map(toml::Deserializer::new(&file.text), seed)
                    .err()
                    .and_then(|e| e.span())
                    .map_or(Location { line: 1, column: 1 }, |span| {
                        Location::of(&file.text, span.start)
                    });
            return Err(ConfigError::UnknownSection {
                file: file.path.clone(),
                at,
                section: section.clone(),
                known: known.iter().map(ToString::to_string).collect(),
            });
        }
        Ok(())
    }
}

/// Walks a dotted key path; fails on the last key so that toml gives its span.
struct FindKey<'a> {
    path: &'a [&'a str],
}

/// The error message that marks "found" (the span is what counts).
const FOUND: &str = "strata: key found";

impl<'de> serde::de::DeserializeSeed<'de> for FindKey<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FindKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(MatchKey {
            name: first,
            last: rest.is_empty(),
        })? {
            if matched {
                map.next_value_seed(FindKey { path: rest })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// True when the key is `name`; an error (carrying the key's span) when it is the last one.
struct MatchKey<'a> {
    name: &'a str,
    last: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for MatchKey<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        let key = String::deserialize(deserializer)?;
        match (key == self.name, self.last) {
            (true, true) => Err(serde::de::Error::custom(FOUND)),
            (matched, _) => Ok(matched),
        }
    }
}

/// Deserializes only the top-level key `name` of a document, as a `T`; the rest is skipped.
struct OneSection<'a, T> {
    name: &'a str,
    section: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> serde::de::DeserializeSeed<'de> for OneSection<'_, T> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for OneSection<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                map.next_value::<T>()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Fails on the first top-level key not in `known`, so that toml names its place.
struct KnownKeys<'a> {
    known: &'a [&'a str],
}

impl<'de> serde::de::Visitor<'de> for KnownKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KnownKey { known: self.known })?.is_some() {
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

struct KnownKey<'a> {
    known: &'a [&'a str],
}

impl<'de> serde::de::DeserializeSeed<'de> for KnownKey<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let key = String::deserialize(deserializer)?;
        if self.known.contains(&key.as_str()) {
            return Ok(());
        }
        Err(serde::de::Error::custom(format!("unknown section `{key}`")))
    }
}

fn read_file(path: &Path) -> Result<Option<File>, ConfigError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            at: Location::of(&text, e.span().map_or(0, |span| span.start)),
            detail: e.message().replace('\n', "; "),
        })?;
    Ok(Some(File {
        path: path.to_path_buf(),
        text,
        table,
    }))
}

fn read_text(file: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io {
            file: file.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Gc {
        keep_days: Option<u32>,
        keep_newest: Option<u32>,
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn project_file_wins_key_by_key() {
        let project = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        write(project.path(), PROJECT_FILE, "[gc]\nkeep_days = 3\n");
        write(
            home.path(),
            HOME_FILE,
            "[gc]\nkeep_days = 30\nkeep_newest = 2\n",
        );
        let config = Config::load(project.path(), home.path()).unwrap();
        let gc: Gc = config.section("gc").unwrap();
        assert_eq!(
            gc,
            Gc {
                keep_days: Some(3),
                keep_newest: Some(2)
            }
        );
        let missing: Gc = config.section("other").unwrap();
        assert_eq!(missing, Gc::default());
        assert_eq!(
            config.origin("gc", "keep_days"),
            Some(project.path().join(PROJECT_FILE).as_path())
        );
        assert_eq!(
            config.origin("gc", "keep_newest"),
            Some(home.path().join(HOME_FILE).as_path())
        );
        assert_eq!(config.origin("gc", "other"), None);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let project = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        write(project.path(), PROJECT_FILE, "[gc]\nkeep_days = \"soon\"\n");
        let config = Config::load(project.path(), home.path()).unwrap();
        let err = config.section::<Gc>("gc").unwrap_err().to_string();
        assert!(err.contains("gc.keep_days"), "{err}");
        assert!(err.contains(PROJECT_FILE), "{err}");

        write(project.path(), PROJECT_FILE, "[gc]\nkeep_dayz = 1\n");
        let config = Config::load(project.path(), home.path()).unwrap();
        let err = config.section::<Gc>("gc").unwrap_err().to_string();
        assert!(err.contains("keep_dayz"), "{err}");

        write(project.path(), PROJECT_FILE, "[gc\n");
        let err = Config::load(project.path(), home.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    fn load(text: &str) -> (tempfile::TempDir, Config) {
        let project = tempfile::tempdir().unwrap();
        write(project.path(), PROJECT_FILE, text);
        let config = Config::from_file(&project.path().join(PROJECT_FILE)).unwrap();
        (project, config)
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let (_dir, config) = load("[build]\nx = 1\n\n[gc]\nkeep_days = 3\n  keep_dayz = 1\n");
        let err = config.section::<Gc>("gc").unwrap_err();
        let ConfigError::At { at, ref key, .. } = err else {
            panic!("{err}")
        };
        assert_eq!((at.line, at.column), (6, 3), "{err}");
        assert_eq!(key, "gc.keep_dayz");
        assert!(
            err.to_string()
                .contains(":6:3: invalid `gc.keep_dayz`: unknown field `keep_dayz`"),
            "{err}"
        );

        let (_dir, config) = load("[gc]\nkeep_newest = 1\nkeep_days = \"soon\"\n");
        let err = config.section::<Gc>("gc").unwrap_err();
        assert!(
            err.to_string().contains(":3:13: invalid `gc.keep_days`"),
            "{err}"
        );

        let project = tempfile::tempdir().unwrap();
        write(project.path(), PROJECT_FILE, "[gc]\nkeep_days = 1\n[gc\n");
        let err = Config::from_file(&project.path().join(PROJECT_FILE)).unwrap_err();
        assert!(
            err.to_string().contains("strata.toml:3:4: not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn unknown_sections_are_refused_with_their_line() {
        let (_dir, config) = load("[gc]\nkeep_days = 1\n\n[gcc]\nkeep_days = 2\n");
        assert!(config.check_sections(&["gc", "gcc"]).is_ok());
        let err = config.check_sections(&["gc", "build"]).unwrap_err();
        let ConfigError::UnknownSection {
            at, ref section, ..
        } = err
        else {
            panic!("{err}")
        };
        assert_eq!(section, "gcc");
        assert_eq!((at.line, at.column), (4, 2), "{err}");
        let (_dir, config) = load("top = 1\n");
        let err = config.check_sections(&["gc"]).unwrap_err().to_string();
        assert!(
            err.contains(":1:1: unknown section `top`; strata reads gc"),
            "{err}"
        );
    }

    #[test]
    fn a_value_error_names_the_line_of_its_key() {
        let (_dir, config) =
            load("[kubernetes]\nregistry = \"r\"\n[kubernetes.queues.a]\nnamespace = \"Bad_NS\"\n");
        let err = config.invalid("kubernetes.queues.a.namespace", "not a DNS label");
        assert!(
            err.to_string().contains(
                "strata.toml:4:1: invalid `kubernetes.queues.a.namespace`: not a DNS label"
            ),
            "{err}"
        );
        let err = config.invalid("kubernetes.queues.b.namespace", "x");
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    }

    #[test]
    fn a_location_counts_characters() {
        let text = "a = \"é\"\nb = 1";
        assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of(text, 7), Location { line: 1, column: 7 });
        assert_eq!(Location::of(text, 9), Location { line: 2, column: 1 });
        assert_eq!(Location::of(text, 99), Location { line: 2, column: 6 });
    }
}

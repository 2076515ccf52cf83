//! strata's configuration files: `strata.toml` in the project and `$STRATA_HOME/config.toml`.
//! Each crate reads its own section into its own type; this crate only finds the files,
//! layers them (the project's file wins, key by key) and names the file and key of an error.
//! Flags and `STRATA_*` variables are applied by the caller on top.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

mod duration;

pub use duration::{parse_duration, DurationError};

/// The file name looked for in the project directory.
pub const PROJECT_FILE: &str = "strata.toml";
/// The file name looked for in `$STRATA_HOME`.
pub const HOME_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid TOML: {detail}", file.display())]
    Syntax { file: PathBuf, detail: String },
    #[error("{}: invalid value for `{key}`: {detail}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        detail: String,
    },
}

/// The configuration files found, highest priority first.
#[derive(Debug, Clone, Default)]
pub struct Config {
    files: Vec<(PathBuf, toml::Table)>,
}

impl Config {
    /// Reads `PROJECT/strata.toml` and `HOME/config.toml` where they exist.
    pub fn load(project: &Path, home: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for file in [project.join(PROJECT_FILE), home.join(HOME_FILE)] {
            if let Some(table) = read_table(&file)? {
                config.files.push((file, table));
            }
        }
        Ok(config)
    }

    /// A configuration from one file only (tests, `--config`).
    pub fn from_file(file: &Path) -> Result<Config, ConfigError> {
        let table = read_table(file)?.ok_or_else(|| ConfigError::Io {
            file: file.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        Ok(Config {
            files: vec![(file.to_path_buf(), table)],
        })
    }

    /// The files that were read, highest priority first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// The file that sets `section.key` (the highest-priority one), for an error about a
    /// value that parsed but is not valid.
    pub fn origin(&self, section: &str, key: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(_, table)| {
                table
                    .get(section)
                    .and_then(|s| s.as_table())
                    .is_some_and(|s| s.contains_key(key))
            })
            .map(|(file, _)| file.as_path())
    }

    /// Section `name` as `T`: keys of the higher-priority file replace those of the lower,
    /// then the merged table is checked against `T`. An error names the file that set the
    /// offending key and the key's full path (`gc.keep_days`).
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        let mut merged = toml::Table::new();
        let mut origin: Vec<(String, PathBuf)> = Vec::new();
        for (file, table) in self.files.iter().rev() {
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
            ConfigError::Invalid {
                file,
                key,
                detail: e.into_inner().to_string(),
            }
        })
    }
}

fn read_table(file: &Path) -> Result<Option<toml::Table>, ConfigError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    text.parse::<toml::Table>()
        .map(Some)
        .map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            detail: e.to_string(),
        })
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
}

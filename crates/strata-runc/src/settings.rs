//! The `[launcher]` section of `strata.toml`: which host ids the jobs' user namespaces map
//! to.
//!
//! ```toml
//! [launcher]
//! id_range = "200000:65536"      # HOST_UID:SIZE or HOST_UID:HOST_GID:SIZE
//! # or, instead: the first subordinate range of a user in /etc/subuid and /etc/subgid
//! subid_user = "strata"
//! ```
//!
//! Neither: [`IdRange::DEFAULT`] (100000:65536).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_config::{Config, ConfigError};

use crate::idmap::IdRange;

/// The section's name in the configuration files.
pub const SECTION: &str = "launcher";

/// The resolved `[launcher]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LauncherSettings {
    /// The host ids jobs' user namespaces map to.
    pub ids: IdRange,
}

impl Default for LauncherSettings {
    fn default() -> Self {
        LauncherSettings {
            ids: IdRange::DEFAULT,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    id_range: Option<String>,
    subid_user: Option<String>,
}

/// Where subordinate ids are read from (`/etc/subuid`, `/etc/subgid` unless a test says
/// otherwise).
#[derive(Debug, Clone)]
pub struct SubidFiles {
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl Default for SubidFiles {
    fn default() -> Self {
        SubidFiles {
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

impl LauncherSettings {
    /// Reads `[launcher]`; subordinate ids from `/etc/subuid` and `/etc/subgid`.
    pub fn from_config(config: &Config) -> Result<LauncherSettings, ConfigError> {
        LauncherSettings::from_config_with(config, &SubidFiles::default())
    }

    /// Reads `[launcher]`, with subordinate ids from `files`. An error names the file that
    /// set the key, and the key.
    pub fn from_config_with(
        config: &Config,
        files: &SubidFiles,
    ) -> Result<LauncherSettings, ConfigError> {
        let section: Section = config.section(SECTION)?;
        let invalid = |key: &str, detail: String| ConfigError::Invalid {
            file: config
                .origin(SECTION, key)
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            key: format!("{SECTION}.{key}"),
            detail,
        };
        let ids = match (section.id_range, section.subid_user) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "id_range",
                    "set either `id_range` or `subid_user`, not both".into(),
                ))
            }
            (Some(text), None) => {
                IdRange::parse(&text).map_err(|e| invalid("id_range", e.to_string()))?
            }
            (None, Some(user)) => IdRange::from_subid(&user, &files.subuid, &files.subgid)
                .map_err(|e| invalid("subid_user", e.to_string()))?,
            (None, None) => IdRange::DEFAULT,
        };
        Ok(LauncherSettings { ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::from_file(&file).unwrap();
        (dir, config)
    }

    fn subid(dir: &Path, subuid: &str, subgid: &str) -> SubidFiles {
        let files = SubidFiles {
            subuid: dir.join("subuid"),
            subgid: dir.join("subgid"),
        };
        std::fs::write(&files.subuid, subuid).unwrap();
        std::fs::write(&files.subgid, subgid).unwrap();
        files
    }

    #[test]
    fn a_range_or_a_user_s_subordinate_ids_or_the_default() {
        let (dir, none) = config("");
        let files = subid(dir.path(), "strata:300000:65536\n", "strata:400000:4096\n");
        let ids = |c: &Config| LauncherSettings::from_config_with(c, &files).unwrap().ids;
        assert_eq!(ids(&none), IdRange::DEFAULT);
        let (_d, range) = config("[launcher]\nid_range = \"200000:210000:1000\"\n");
        assert_eq!(
            ids(&range),
            IdRange {
                uid: 200_000,
                gid: 210_000,
                size: 1000
            }
        );
        let (_d, user) = config("[launcher]\nsubid_user = \"strata\"\n");
        assert_eq!(
            ids(&user),
            IdRange {
                uid: 300_000,
                gid: 400_000,
                size: 4096
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let (dir, _) = config("");
        let files = subid(dir.path(), "alice:300000:65536\n", "alice:300000:65536\n");
        for (text, key, says) in [
            (
                "[launcher]\nid_range = \"0:65536\"\n",
                "launcher.id_range",
                "0:65536",
            ),
            ("[launcher]\nid_range = 5\n", "launcher.id_range", "string"),
            (
                "[launcher]\nsubid_user = \"bob\"\n",
                "launcher.subid_user",
                "no subordinate ids for bob",
            ),
            (
                "[launcher]\nid_range = \"200000:10\"\nsubid_user = \"alice\"\n",
                "launcher.id_range",
                "not both",
            ),
            ("[launcher]\nid_rang = \"1:1\"\n", "launcher", "id_rang"),
        ] {
            let (_d, c) = config(text);
            let err = LauncherSettings::from_config_with(&c, &files)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains("strata.toml"), "{text}: {err}");
        }
    }
}

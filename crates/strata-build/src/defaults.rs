//! `[build]` in `strata.toml`: the defaults a team sets once for every build of its
//! environments (`strata build`, `strata submit -r` and submits whose environment is
//! detected). Flags and `STRATA_BASE` win over them.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_config::{Config, ConfigError};

/// The `[build]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildDefaults {
    /// Base image: `oci:PATH[:TAG]` or `REGISTRY/REPO[:TAG|@DIGEST]`.
    pub base: Option<String>,
    /// Target Python version (X.Y).
    pub python: Option<String>,
    /// Directories or URLs of wheels; a relative directory is relative to the file that
    /// names it.
    #[serde(default)]
    pub find_links: Vec<String>,
    /// Use no package index (only `find_links`).
    #[serde(default)]
    pub no_index: bool,
    /// Layer compression: `gzip` (the default) or `zstd`.
    pub compression: Option<String>,
}

impl BuildDefaults {
    /// The merged `[build]` section, with relative `find_links` made absolute.
    pub fn from_config(config: &Config) -> Result<BuildDefaults, ConfigError> {
        let mut defaults: BuildDefaults = config.section("build")?;
        let dir = config
            .origin("build", "find_links")
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        if let Some(dir) = dir {
            defaults.find_links = defaults
                .find_links
                .into_iter()
                .map(|links| absolute_links(&dir, links))
                .collect();
        }
        if let Some(base) = &defaults.base {
            if let Some(dir) = config.origin("build", "base").and_then(Path::parent) {
                defaults.base = Some(absolute_oci_base(dir, base));
            }
        }
        Ok(defaults)
    }

    /// `flag`, else this section's base.
    pub fn base_or(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_string).or_else(|| self.base.clone())
    }

    /// The flags' wheel directories when any is given, else this section's.
    pub fn find_links_or(&self, flags: &[String]) -> Vec<String> {
        if flags.is_empty() {
            self.find_links.clone()
        } else {
            flags.to_vec()
        }
    }
}

/// `[cache]`: registries whose images answer builds (see `strata build --cache-from`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDefaults {
    /// `REGISTRY/REPO` looked up after the push target (if any) when no `--cache-from` is
    /// given.
    pub registry: Option<String>,
}

impl CacheDefaults {
    pub fn from_config(config: &Config) -> Result<CacheDefaults, ConfigError> {
        config.section("cache")
    }

    /// The flags' repositories when any is given, else this section's.
    pub fn registries_or(&self, flags: &[String]) -> Vec<String> {
        if flags.is_empty() {
            self.registry.iter().cloned().collect()
        } else {
            flags.to_vec()
        }
    }
}

/// A URL stays as it is; a relative directory is taken from `dir`.
fn absolute_links(dir: &Path, links: String) -> String {
    if links.contains("://") || Path::new(&links).is_absolute() {
        return links;
    }
    dir.join(links).display().to_string()
}

/// `oci:RELATIVE[:TAG]` is taken from `dir`; a registry reference stays as it is.
fn absolute_oci_base(dir: &Path, base: &str) -> String {
    let Some(rest) = base.strip_prefix("oci:") else {
        return base.to_string();
    };
    if Path::new(rest).is_absolute() {
        return base.to_string();
    }
    format!("oci:{}", PathBuf::from(dir).join(rest).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_file_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(
            &file,
            "[build]\nbase = \"oci:images/oci:3.11\"\nfind_links = [\"wheels\", \"https://h/w\", \"/abs\"]\nno_index = true\n",
        )
        .unwrap();
        let defaults = BuildDefaults::from_config(&Config::from_file(&file).unwrap()).unwrap();
        let base = format!("oci:{}/images/oci:3.11", dir.path().display());
        assert_eq!(defaults.base.as_deref(), Some(base.as_str()));
        let wheels = dir.path().join("wheels").display().to_string();
        assert_eq!(
            defaults.find_links,
            [wheels.as_str(), "https://h/w", "/abs"]
        );
        assert!(defaults.no_index);
        assert_eq!(defaults.base_or(Some("r/x:1")).as_deref(), Some("r/x:1"));
        assert_eq!(defaults.find_links_or(&["f".into()]), ["f"]);
    }

    #[test]
    fn cache_from_flags_replace_the_cache_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "[cache]\nregistry = \"r:5000/team/envs\"\n").unwrap();
        let cache = CacheDefaults::from_config(&Config::from_file(&file).unwrap()).unwrap();
        assert_eq!(cache.registries_or(&[]), ["r:5000/team/envs"]);
        assert_eq!(cache.registries_or(&["other/x".into()]), ["other/x"]);
        std::fs::write(&file, "[cache]\nregistries = \"r/x\"\n").unwrap();
        let err = CacheDefaults::from_config(&Config::from_file(&file).unwrap()).unwrap_err();
        assert!(err.to_string().contains("registries"), "{err}");
    }

    #[test]
    fn an_unknown_key_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "[build]\nbsae = \"x\"\n").unwrap();
        let err = BuildDefaults::from_config(&Config::from_file(&file).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("strata.toml") && text.contains("bsae"),
            "{text}"
        );
    }
}

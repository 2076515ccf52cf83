//! The `[server]` section of `strata.toml`: where the teams' images live.
//!
//! ```toml
//! [server]
//! registry = "registry.example.org/strata"   # REGISTRY/PREFIX: team T pushes to REGISTRY/PREFIX/T
//! ```
//!
//! A submit through the server names its image by digest in its team's repository (`strata
//! submit -r` pushes it there from the laptop); the agent pulls it from there. Without
//! `registry`, only images of the server's own store can be submitted.

use serde::Deserialize;
use strata_config::{Config, ConfigError};
use strata_registry::{ImageRef, RegistryRepo};

use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    registry: Option<String>,
}

/// The resolved `[server]` section.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// `REGISTRY/PREFIX`; a team's repository is `REGISTRY/PREFIX/TEAM`.
    pub registry: Option<RegistryRepo>,
}

impl ServerSettings {
    pub fn from_config(config: &Config) -> Result<ServerSettings, ConfigError> {
        let section: Section = config.section("server")?;
        let registry = match &section.registry {
            Some(text) => Some(
                text.parse::<RegistryRepo>()
                    .map_err(|e| config.invalid("server.registry", e.to_string()))?,
            ),
            None => None,
        };
        Ok(ServerSettings { registry })
    }

    /// The repository team `team` pushes its jobs' images to, if the server names a registry.
    pub fn team_repository(&self, team: &str) -> Result<Option<RegistryRepo>, ApiError> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        let repository = format!("{}/{team}", registry.repository);
        RegistryRepo::new(&registry.registry, &repository)
            .map(Some)
            .map_err(|e| {
                ApiError::internal(format!(
                    "team {team:?} has no repository under [server] registry {registry}: {e}"
                ))
            })
    }

    /// A submit's image as the server takes it: `None` for a name of the server's store (no
    /// '/': a tag, a digest, an environment name); for a registry reference, the image, which
    /// must be by digest and in the team's repository (or one under it).
    pub fn submitted_image(&self, image: &str, team: &str) -> Result<Option<ImageRef>, ApiError> {
        if !image.contains('/') {
            return Ok(None);
        }
        let bad = |detail: String| ApiError::bad_request(format!("image {image:?}: {detail}"));
        let parsed: ImageRef = image.parse().map_err(|e| {
            bad(format!(
                "neither an image of the server's store nor REGISTRY/REPO@sha256:... ({e})"
            ))
        })?;
        if parsed.reference.as_ref().and_then(|r| r.digest()).is_none() {
            return Err(bad(
                "a registry image is submitted by digest (REGISTRY/REPO@sha256:...), never by a tag that can move".into(),
            ));
        }
        let Some(team_repo) = self.team_repository(team)? else {
            return Err(bad(format!(
                "registry {} is not this server's: it names no team registry ([server] registry in its strata.toml), so only images of its own store run",
                parsed.repo.registry
            )));
        };
        let inside = parsed.repo.registry == team_repo.registry
            && (parsed.repo.repository == team_repo.repository
                || parsed
                    .repo
                    .repository
                    .starts_with(&format!("{}/", team_repo.repository)));
        if !inside {
            return Err(bad(format!(
                "{} is not team {team}'s registry repository {team_repo}: push the image there (strata submit -r does)",
                parsed.repo
            )));
        }
        Ok(Some(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(registry: Option<&str>) -> ServerSettings {
        ServerSettings {
            registry: registry.map(|r| r.parse().unwrap()),
        }
    }

    #[test]
    fn only_the_team_repository_by_digest() {
        let s = settings(Some("127.0.0.1:5000/strata"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let ok = format!("127.0.0.1:5000/strata/vision@{digest}");
        assert!(s.submitted_image(&ok, "vision").unwrap().is_some());
        let nested = format!("127.0.0.1:5000/strata/vision/jobs@{digest}");
        assert!(s.submitted_image(&nested, "vision").unwrap().is_some());
        // A name of the server's store.
        assert!(s.submitted_image("basic", "vision").unwrap().is_none());
        assert!(s.submitted_image(&digest, "vision").unwrap().is_none());
        for bad in [
            format!("127.0.0.1:5000/strata/nlp@{digest}"),
            format!("127.0.0.1:5000/strata/visionary@{digest}"),
            format!("evil.example.org/strata/vision@{digest}"),
            "127.0.0.1:5000/strata/vision:latest".to_string(),
            "127.0.0.1:5000/strata/vision@sha256:nothex".to_string(),
        ] {
            let err = s.submitted_image(&bad, "vision").unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.contains(&bad), "{}", err.message);
        }
        let none = settings(None);
        let err = none.submitted_image(&ok, "vision").unwrap_err();
        assert!(err.message.contains("127.0.0.1:5000"), "{}", err.message);
    }
}

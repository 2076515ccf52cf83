//! Retention policy: which environment images to keep. Read from the `[gc]` section of
//! `strata.toml` (see `strata-config`), overridden by flags.

use std::time::Duration;

use serde::Deserialize;

/// The `[gc]` section as written in a file. Unknown keys are errors that name the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    /// Keep images used (built, hit, pulled, launched) within this many days.
    pub keep_days: Option<u32>,
    /// Keep the newest K images of each environment name.
    pub keep_newest: Option<u32>,
    /// Keep images whose tag matches one of these patterns (`*` and `?` wildcards).
    pub keep_tags: Option<Vec<String>>,
    /// Blobs younger than this are never swept (e.g. "1h").
    pub grace: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("invalid gc.grace {0:?}: expected a duration such as 30m, 1h or 2d")]
    Grace(String),
    #[error("invalid tag pattern {0:?}: patterns are tag characters with * and ? wildcards")]
    Pattern(String),
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    pub keep_days: u32,
    pub keep_newest: u32,
    pub keep_tags: Vec<TagPattern>,
    pub grace: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            keep_days: 14,
            keep_newest: 3,
            keep_tags: Vec::new(),
            grace: Duration::from_secs(3600),
        }
    }
}

impl GcPolicy {
    /// The defaults overridden by what the section sets.
    pub fn from_section(section: &GcSection) -> Result<GcPolicy, PolicyError> {
        let mut policy = GcPolicy::default();
        if let Some(days) = section.keep_days {
            policy.keep_days = days;
        }
        if let Some(k) = section.keep_newest {
            policy.keep_newest = k;
        }
        if let Some(patterns) = &section.keep_tags {
            policy.keep_tags = patterns
                .iter()
                .map(|p| TagPattern::new(p))
                .collect::<Result<_, _>>()?;
        }
        if let Some(grace) = &section.grace {
            policy.grace = parse_grace(grace)?;
        }
        Ok(policy)
    }

    /// Whether a tag is kept by a pattern.
    pub fn keeps_tag(&self, tag: &str) -> bool {
        self.keep_tags.iter().any(|p| p.matches(tag))
    }
}

fn parse_grace(text: &str) -> Result<Duration, PolicyError> {
    strata_config::parse_duration(text).map_err(|_| PolicyError::Grace(text.to_string()))
}

/// A tag pattern with `*` (any run) and `?` (any one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern(String);

impl TagPattern {
    pub fn new(pattern: &str) -> Result<TagPattern, PolicyError> {
        let valid = !pattern.is_empty()
            && pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?'));
        if !valid {
            return Err(PolicyError::Pattern(pattern.to_string()));
        }
        Ok(TagPattern(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, tag: &str) -> bool {
        glob(self.0.as_bytes(), tag.as_bytes())
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with backtracking to the last `*`: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_shell_globs() {
        let p = TagPattern::new("release-*").unwrap();
        assert!(p.matches("release-1.2"));
        assert!(p.matches("release-"));
        assert!(!p.matches("env-release-1"));
        let q = TagPattern::new("v?.*").unwrap();
        assert!(q.matches("v1.0"));
        assert!(!q.matches("v10.0"));
        assert!(TagPattern::new("a/b").is_err());
        assert!(TagPattern::new("").is_err());
    }

    #[test]
    fn section_overrides_defaults() {
        let section = GcSection {
            keep_days: Some(7),
            keep_newest: None,
            keep_tags: Some(vec!["keep-*".into()]),
            grace: Some("30m".into()),
        };
        let policy = GcPolicy::from_section(&section).unwrap();
        assert_eq!(policy.keep_days, 7);
        assert_eq!(policy.keep_newest, 3);
        assert_eq!(policy.grace, Duration::from_secs(1800));
        assert!(policy.keeps_tag("keep-me"));
        let bad = GcSection {
            grace: Some("soon".into()),
            ..GcSection::default()
        };
        assert_eq!(
            GcPolicy::from_section(&bad),
            Err(PolicyError::Grace("soon".into()))
        );
    }
}

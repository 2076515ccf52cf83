//! Names that become Kubernetes namespaces: checked here, so a bad `--teams` value is refused
//! by strata with its own message rather than by the API server at apply time.

use std::fmt;
use std::str::FromStr;

/// Why a name cannot be a namespace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{name}` cannot be a Kubernetes namespace: use lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit")]
pub struct NameError {
    pub name: String,
}

/// A DNS-1123 label: a namespace, and the name of a team and of its queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Label {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Label, NameError> {
        if !strata_kube::is_dns_label(name) {
            return Err(NameError {
                name: name.to_string(),
            });
        }
        Ok(Label(name.to_string()))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_dns_1123() {
        for good in ["vision", "nlp-2", "a", "0team"] {
            assert_eq!(good.parse::<Label>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Vision",
            "team_a",
            "-a",
            "a-",
            "a.b",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<Label>().is_err(), "{bad:?} accepted");
        }
    }
}

//! What one registry handle remembers about logging in: its credentials, the auth files that
//! were searched (for the error when there were none), the bearer tokens it got per scope, and
//! whether the registry asked for Basic credentials (then they are sent up front).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Credentials;

/// Token servers that do not say how long a token lasts mean 60 seconds (distribution's token
/// spec).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is dropped this long before it expires, so it does not expire in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// What a request needs permission for; a bearer token is granted per repository and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
    Delete,
}

/// `repository:NAME:ACTIONS`, the token scope the distribution spec defines.
pub(crate) fn scope_for(repository: &str, access: Access) -> String {
    let actions = match access {
        Access::Pull => "pull",
        Access::Push => "pull,push",
        Access::Delete => "delete",
    };
    format!("repository:{repository}:{actions}")
}

/// Shared by the clones of a `Registry`, so a token got by one call serves the next.
#[derive(Debug)]
pub(crate) struct AuthSession {
    pub(crate) credentials: Credentials,
    /// The auth files looked at; empty when the caller gave the credentials.
    pub(crate) searched: Vec<PathBuf>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    basic_requested: AtomicBool,
}

struct CachedToken {
    token: String,
    expires: Instant,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl AuthSession {
    pub(crate) fn new(credentials: Credentials, searched: Vec<PathBuf>) -> AuthSession {
        AuthSession {
            credentials,
            searched,
            tokens: Mutex::new(HashMap::new()),
            basic_requested: AtomicBool::new(false),
        }
    }

    /// A token for `scope` that has not expired.
    pub(crate) fn token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.token.clone())
    }

    pub(crate) fn remember_token(&self, scope: &str, token: &Token) {
        let lifetime = token.lifetime.saturating_sub(EXPIRY_MARGIN);
        let cached = CachedToken {
            token: token.value.clone(),
            expires: Instant::now() + lifetime,
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(scope.to_string(), cached);
    }

    /// Once the registry asked for Basic credentials it will ask again: send them up front and
    /// save the 401 round trip.
    pub(crate) fn basic_requested(&self) -> bool {
        self.basic_requested.load(Ordering::Relaxed)
    }

    pub(crate) fn note_basic_requested(&self) {
        self.basic_requested.store(true, Ordering::Relaxed);
    }

    /// `FILE, FILE` or a note that none were searched, for the missing-credentials error.
    pub(crate) fn searched_text(&self) -> String {
        if self.searched.is_empty() {
            return "(no auth files were searched: the caller gave the credentials)".to_string();
        }
        let names: Vec<String> = self
            .searched
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        names.join(", ")
    }
}

/// A token server's answer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) lifetime: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Why a token server's answer holds no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token answer is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the token answer has neither \"token\" nor \"access_token\"")]
    NoToken,
}

/// Parses `{"token": ..., "expires_in": ...}`; OAuth-style servers say `access_token`.
pub(crate) fn parse_token(body: &[u8]) -> Result<Token, TokenError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(TokenError::NotJson)?;
    let value = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or(TokenError::NoToken)?;
    let lifetime = answer
        .expires_in
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok(Token { value, lifetime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_access_token_fields_and_default_lifetime() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.lifetime, Duration::from_secs(300));
        let t = parse_token(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.lifetime, DEFAULT_TOKEN_LIFETIME);
        assert!(matches!(
            parse_token(br#"{"expires_in":3,"token":""}"#),
            Err(TokenError::NoToken)
        ));
        let err = parse_token(b"<html>").unwrap_err();
        assert!(matches!(err, TokenError::NotJson(_)), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("the token answer is not JSON: "));
    }

    #[test]
    fn tokens_are_kept_per_scope_until_they_expire() {
        let session = AuthSession::new(Credentials::Anonymous, Vec::new());
        let pull = scope_for("team/env", Access::Pull);
        let push = scope_for("team/env", Access::Push);
        assert_eq!(push, "repository:team/env:pull,push");
        session.remember_token(
            &pull,
            &Token {
                value: "t1".into(),
                lifetime: Duration::from_secs(120),
            },
        );
        assert_eq!(session.token(&pull).as_deref(), Some("t1"));
        assert_eq!(session.token(&push), None);
        // Shorter than the margin: already as good as expired.
        session.remember_token(
            &push,
            &Token {
                value: "t2".into(),
                lifetime: Duration::from_secs(5),
            },
        );
        assert_eq!(session.token(&push), None);
    }

    #[test]
    fn debug_output_hides_tokens() {
        let t = Token {
            value: "secret-token".into(),
            lifetime: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}

//! Registry errors. Each one names the registry and what was being done, and carries the
//! registry's own error code and message when it sent one.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use strata_oci::{Digest, DigestParseError};

pub use crate::auth::AuthError;
pub use crate::reference::ReferenceError;
pub use crate::token::TokenError;

/// Credentials a registry refused, and what it said.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry} refused the credentials of user {username} ({origin}) while {action}: {answer}")]
pub struct Refusal {
    pub registry: String,
    pub username: String,
    /// `from FILE`, or `given by the caller`.
    pub origin: String,
    pub action: String,
    /// The registry's status, code and message.
    pub answer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// The auth files could not be used (unreadable, malformed, or a credential helper needed).
    #[error(transparent)]
    Auth(#[from] AuthError),

    /// The registry wants credentials and strata has none for it.
    #[error("registry {registry} requires credentials: none found in {searched} (`skopeo login {registry}` or `docker login {registry}` writes them); the registry refused {action}")]
    RequiresCredentials {
        registry: String,
        action: String,
        searched: String,
    },

    /// The registry (or its token server) turned the credentials down: wrong password, or a
    /// user without the permission. Boxed: it is the largest variant, and every `Result`
    /// carrying a `RegistryError` would pay for it.
    #[error(transparent)]
    CredentialsRefused(Box<Refusal>),

    #[error("could not connect to registry {registry} while {action}: {detail}")]
    Unreachable {
        registry: String,
        action: String,
        detail: String,
    },

    #[error("TLS with registry {registry} failed while {action}: {detail} (if {registry} serves plain HTTP, pass --insecure)")]
    Tls {
        registry: String,
        action: String,
        detail: String,
    },

    #[error("connection to registry {registry} failed while {action}: {detail}")]
    Connection {
        registry: String,
        action: String,
        detail: String,
    },

    /// A read did not finish, or a download made no progress, within the stall timeout: not
    /// retried, since a registry that stalls once mostly stalls again, and a build must not
    /// wait on its cache for ever.
    #[error("registry {registry} stopped answering while {action} (waited {} s; STRATA_REGISTRY_TIMEOUT sets how long, in seconds)", .waited.as_secs())]
    Stalled {
        registry: String,
        action: String,
        waited: Duration,
    },

    #[error("registry {registry} answered {} while {action}{}", render_status(*.status), render_body(.code.as_deref(), .message.as_deref()))]
    Http {
        registry: String,
        action: String,
        /// `None` when the HTTP library reported the registry's error body without its status.
        status: Option<u16>,
        code: Option<String>,
        message: Option<String>,
    },

    #[error("registry {registry} does not allow deletes (storage.delete.enabled): could not delete {repo}@{digest}")]
    DeletesDisabled {
        registry: String,
        repo: String,
        digest: Digest,
    },

    #[error(
        "digest mismatch for {what} from registry {registry}: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{action} ({path}): {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("registry {registry} sent an unexpected answer while {action}: {detail}")]
    Protocol {
        registry: String,
        action: String,
        detail: String,
    },

    /// A manifest answer whose Docker-Content-Digest header is not a digest.
    #[error("registry {registry} sent an unexpected answer while {action}: bad Docker-Content-Digest header: {source}")]
    BadDigestHeader {
        registry: String,
        action: String,
        #[source]
        source: DigestParseError,
    },

    /// The token server's answer holds no token.
    #[error("registry {registry} sent an unexpected answer while {action}: {source}")]
    Token {
        registry: String,
        action: String,
        #[source]
        source: TokenError,
    },

    #[error("{repo} is not in registry {registry}: use a client for {repo_registry}")]
    WrongRegistry {
        registry: String,
        repo: String,
        repo_registry: String,
    },

    #[error("could not set up the HTTP client for registry {registry}: {detail}")]
    Client { registry: String, detail: String },
}

impl RegistryError {
    /// Worth another try: the network or the registry may recover (connection failures, 5xx,
    /// 429). Client errors, digest mismatches and TLS failures will not get better.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Connection { .. } => true,
            RegistryError::Http {
                status: Some(s), ..
            } => *s >= 500 || *s == 429,
            _ => false,
        }
    }

    /// The registry's error code (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, ...), when it sent one.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            RegistryError::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the registry's answer carries `code` among its error codes (an answer can
    /// carry several, e.g. `DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN`).
    pub fn has_code(&self, code: &str) -> bool {
        self.registry_code()
            .is_some_and(|codes| codes.split("; ").any(|c| c == code))
    }

    /// The HTTP status the registry answered with, when known.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } => *status,
            _ => None,
        }
    }
}

fn render_status(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("HTTP {s}"),
        None => "an error".to_string(),
    }
}

fn render_body(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(": {c}: {m}"),
        (Some(c), None) => format!(": {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

/// The `{"errors": [{"code", "message", "detail"}]}` body the distribution spec defines;
/// several errors are joined with "; ". A string detail (the registry puts the digest of an
/// unknown blob there) is kept: it names the culprit. Repeated entries are dropped
/// (docker-registry 2.8 lists some twice).
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let mut entries: Vec<(String, String)> = Vec::new();
        for e in env.errors {
            let message = match e.detail.as_str() {
                Some(detail) if !detail.is_empty() => format!("{} ({detail})", e.message),
                _ => e.message,
            };
            if !entries.iter().any(|(c, m)| *c == e.code && *m == message) {
                entries.push((e.code, message));
            }
        }
        if !entries.is_empty() {
            let codes: Vec<&str> = entries.iter().map(|(c, _)| c.as_str()).collect();
            let messages: Vec<&str> = entries.iter().map(|(_, m)| m.as_str()).collect();
            return (
                Some(printable(&codes.join("; "), MAX_ANSWER_CHARS)),
                Some(printable(&messages.join("; "), MAX_ANSWER_CHARS)),
            );
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    // A proxy's HTML error page can be long; the start says enough.
    (None, Some(printable(text, MAX_ANSWER_CHARS)))
}

/// How much of a registry's error text an error message carries.
const MAX_ANSWER_CHARS: usize = 300;

/// The start of `text` from outside, fit for a terminal: control characters (escape
/// sequences, line breaks a registry could use to forge output) become spaces.
fn printable(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What kind of failure a transport error is, judged from its cause chain (the HTTP libraries
/// wrap the socket and TLS errors several layers deep).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// No TCP connection could be made (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The connection broke or timed out during a request.
    Broken,
}

pub(crate) fn classify_transport(
    err: &(dyn StdError + 'static),
    is_connect: bool,
    https: bool,
) -> TransportKind {
    // The causes only: the top error's text carries the URL, whose host may contain "tls".
    let text = err
        .source()
        .map(chain_text)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let tls_words = [
        "tls",
        "certificate",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
        "ssl",
    ];
    if https && tls_words.iter().any(|w| text.contains(w)) {
        return TransportKind::Tls;
    }
    if is_connect {
        return TransportKind::Connect;
    }
    TransportKind::Broken
}

impl RegistryError {
    /// What the user can do about it: log in, check the name, or check the address.
    pub fn hint(&self) -> &'static str {
        let not_found = ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"]
            .iter()
            .any(|code| self.has_code(code));
        match self {
            RegistryError::Auth(_)
            | RegistryError::RequiresCredentials { .. }
            | RegistryError::CredentialsRefused(_) => {
                "log in with `skopeo login HOST` or `docker login HOST`: strata reads the auth files they write"
            }
            // The registry said so: its address is right, the name is not there (a bare 404
            // may be another server, or a path prefix the registry is not under).
            _ if not_found => {
                "the registry has no such repository, tag or digest: check the name (`skopeo list-tags docker://REGISTRY/REPO` lists the tags)"
            }
            _ => "check the registry address and that it is running; plain HTTP needs a loopback host or --insecure",
        }
    }
}

/// The messages of an error and all its causes on one line (see [`strata_errors::causes`]).
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    strata_errors::causes(err).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_message_is_cut_short_and_cannot_drive_the_terminal() {
        let long = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"\u001b[2Jgone\nforged line {}"}}]}}"#,
            "x".repeat(5000)
        );
        let (code, message) = parse_error_body(long.as_bytes());
        assert_eq!(code.as_deref(), Some("DENIED"));
        let message = message.unwrap();
        assert_eq!(message.chars().count(), MAX_ANSWER_CHARS);
        assert!(message.starts_with(" [2Jgone forged line x"), "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[test]
    fn error_body_code_and_message_are_extracted() {
        let body = br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported.","detail":{}}]}"#;
        let (code, message) = parse_error_body(body);
        assert_eq!(code.as_deref(), Some("UNSUPPORTED"));
        assert_eq!(message.as_deref(), Some("The operation is unsupported."));
        assert_eq!(parse_error_body(b""), (None, None));
        assert_eq!(parse_error_body(b"oops").1.as_deref(), Some("oops"));
    }

    #[test]
    fn a_blob_named_in_the_detail_is_kept_and_repeats_are_dropped() {
        // What docker-registry 2.8 answered to a manifest PUT during concurrent pushes.
        let body = br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:37573d5d"},{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:37573d5d"}]}"#;
        let (code, message) = parse_error_body(body);
        assert_eq!(
            code.as_deref(),
            Some("DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN")
        );
        assert_eq!(
            message.as_deref(),
            Some("provided digest did not match uploaded content; blob unknown to registry (sha256:37573d5d)")
        );
        let e = RegistryError::Http {
            registry: "r".into(),
            action: "a".into(),
            status: Some(400),
            code,
            message,
        };
        assert!(e.has_code("MANIFEST_BLOB_UNKNOWN"));
        assert!(e.has_code("DIGEST_INVALID"));
        assert!(!e.has_code("BLOB_UNKNOWN"));
    }

    #[test]
    fn http_error_names_registry_action_status_and_code() {
        let e = RegistryError::Http {
            registry: "r:5000".into(),
            action: "pulling manifest team/env:v1".into(),
            status: Some(404),
            code: Some("MANIFEST_UNKNOWN".into()),
            message: Some("manifest unknown".into()),
        };
        assert_eq!(
            e.to_string(),
            "registry r:5000 answered HTTP 404 while pulling manifest team/env:v1: MANIFEST_UNKNOWN: manifest unknown"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn server_errors_and_connection_failures_are_transient() {
        let http = |s| RegistryError::Http {
            registry: "r".into(),
            action: "a".into(),
            status: Some(s),
            code: None,
            message: None,
        };
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        let unreachable = RegistryError::Unreachable {
            registry: "r".into(),
            action: "a".into(),
            detail: "refused".into(),
        };
        assert!(unreachable.is_transient());
    }
}

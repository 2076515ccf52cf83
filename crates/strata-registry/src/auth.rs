//! Where registry credentials come from: the auth files that `podman login`, `skopeo login`
//! and `docker login` write, searched the way containers-auth.json(5) and docker do.
//!
//! Credential helpers (`credHelpers`, `credsStore`) are not run: an entry that needs one is an
//! error naming the file, the host and the helper, so the user knows why strata cannot log in.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;

/// The auth files to search, in order. The first file with an entry for the registry wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSources {
    files: Vec<PathBuf>,
}

impl AuthSources {
    /// The files the process environment points at (see [`AuthSources::from_vars`]).
    pub fn from_env() -> AuthSources {
        AuthSources::from_vars(|name| std::env::var_os(name))
    }

    /// The files containers/image (podman, skopeo) and docker search, given a way to read
    /// environment variables: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`;
    /// then `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`. An explicit
    /// `REGISTRY_AUTH_FILE` replaces the runtime-dir file and `DOCKER_CONFIG` replaces
    /// `~/.docker`, as in those tools, so a user who points them elsewhere is not surprised by
    /// a stale default file.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> AuthSources {
        let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut files = Vec::new();
        match (set("REGISTRY_AUTH_FILE"), set("XDG_RUNTIME_DIR")) {
            (Some(file), _) => files.push(file),
            (None, Some(runtime)) => files.push(runtime.join("containers").join("auth.json")),
            (None, None) => {}
        }
        match (set("DOCKER_CONFIG"), set("HOME")) {
            (Some(dir), _) => files.push(dir.join("config.json")),
            (None, Some(home)) => files.push(home.join(".docker").join("config.json")),
            (None, None) => {}
        }
        AuthSources { files }
    }

    /// Exactly these files, in this order.
    pub fn files<P: Into<PathBuf>>(files: impl IntoIterator<Item = P>) -> AuthSources {
        AuthSources {
            files: files.into_iter().map(Into::into).collect(),
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.files
    }
}

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The clear text, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How strata authenticates to one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// A user name and password, sent as HTTP Basic credentials or to a token server.
    Basic {
        username: String,
        password: Password,
        /// The auth file they came from; `None` when the caller gave them directly.
        source: Option<PathBuf>,
    },
}

impl Credentials {
    /// Credentials given by the caller rather than read from a file.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: Password::new(password),
            source: None,
        }
    }

    /// The credentials for `registry` (`host[:port]`) in the files the environment names.
    pub fn lookup(registry: &str) -> Result<Credentials, AuthError> {
        Credentials::lookup_in(registry, &AuthSources::from_env())
    }

    /// The credentials for `registry` in the first of `sources` that has an entry for it;
    /// anonymous when none has. Missing files are skipped; unreadable or malformed ones are
    /// errors, because silently falling back to anonymous would hide the user's mistake.
    pub fn lookup_in(registry: &str, sources: &AuthSources) -> Result<Credentials, AuthError> {
        for path in sources.paths() {
            let Some(text) = read_if_present(path)? else {
                continue;
            };
            if let Some(found) = entry_for(registry, path, &text)? {
                return Ok(found);
            }
        }
        Ok(Credentials::Anonymous)
    }

    /// The user name, unless anonymous.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, .. } => Some(username),
        }
    }

    /// Where the credentials came from, for error messages: `from FILE` or `given by the
    /// caller`.
    pub fn origin(&self) -> String {
        match self {
            Credentials::Basic {
                source: Some(path), ..
            } => format!("from {}", path.display()),
            _ => "given by the caller".to_string(),
        }
    }
}

/// Why the auth files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("could not read the registry auth file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("malformed registry auth file {path}: {detail}")]
    Malformed { path: PathBuf, detail: String },

    #[error("the credentials for registry {registry} in {path} are kept by the credential helper `{helper}`, which strata does not run: log in with `skopeo login {registry}` (it writes them to the auth file) or set REGISTRY_AUTH_FILE to a file that has them")]
    HelperNeeded {
        path: PathBuf,
        registry: String,
        helper: String,
    },
}

fn read_if_present(path: &Path) -> Result<Option<String>, AuthError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The parts of containers-auth.json and docker's config.json that matter here; docker's
/// other settings are ignored.
#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: Option<HashMap<String, AuthEntry>>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<HashMap<String, String>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials `text` (the content of `path`) holds for `registry`, if any.
fn entry_for(registry: &str, path: &Path, text: &str) -> Result<Option<Credentials>, AuthError> {
    let malformed = |detail: String| AuthError::Malformed {
        path: path.to_path_buf(),
        detail,
    };
    // An empty file is what some tools leave after `logout`: nothing in it.
    if text.trim().is_empty() {
        return Ok(None);
    }
    let file: AuthFile = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let helper_needed = |helper: &str| AuthError::HelperNeeded {
        path: path.to_path_buf(),
        registry: registry.to_string(),
        helper: format!("docker-credential-{helper}"),
    };
    let helpers = file.cred_helpers.unwrap_or_default();
    if let Some((_, helper)) = find_key(&helpers, registry) {
        return Err(helper_needed(helper));
    }
    let auths = file.auths.unwrap_or_default();
    let Some((key, entry)) = find_key(&auths, registry) else {
        return Ok(None);
    };
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let (username, password) = decode_auth(encoded)
            .map_err(|what| malformed(format!("auths.\"{key}\".auth {what}")))?;
        return Ok(Some(from_file(username, password, path)));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(from_file(username.clone(), password.clone(), path)));
    }
    // `docker login` with a credential store leaves an empty entry: the secret is in the store.
    if let Some(store) = &file.creds_store {
        return Err(helper_needed(store));
    }
    Err(malformed(format!(
        "auths.\"{key}\" has neither \"auth\" nor \"username\" and \"password\""
    )))
}

fn from_file(username: String, password: String, path: &Path) -> Credentials {
    Credentials::Basic {
        username,
        password: Password(password),
        source: Some(path.to_path_buf()),
    }
}

/// `base64("user:password")` → (user, password). The error says what is wrong, never the value.
fn decode_auth(encoded: &str) -> Result<(String, String), &'static str> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "is not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 once decoded")?;
    let (user, password) = text
        .split_once(':')
        .ok_or("is not base64 of \"user:password\"")?;
    if user.is_empty() {
        return Err("has an empty user name");
    }
    Ok((user.to_string(), password.to_string()))
}

/// The entry whose key names `registry`: an exact key first, then one that normalises to it
/// (docker writes `https://index.docker.io/v1/`). Keys are tried in sorted order so the answer
/// does not depend on hash order.
fn find_key<'a, V>(map: &'a HashMap<String, V>, registry: &str) -> Option<(&'a str, &'a V)> {
    if let Some((k, v)) = map.get_key_value(registry) {
        return Some((k.as_str(), v));
    }
    let wanted = canonical_host(registry);
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .find(|k| normalize_key(k).is_some_and(|h| canonical_host(&h) == wanted))
        .and_then(|k| map.get_key_value(k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
}

/// The `host[:port]` an auth key names. URL keys (`https://host/v1/`, docker's style) lose
/// scheme and path; a bare key with a path is a containers-auth.json namespace entry
/// (`quay.io/team`), which a registry-wide lookup does not match.
fn normalize_key(key: &str) -> Option<String> {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    match stripped {
        Some(rest) => rest.split('/').next().map(str::to_string),
        None if key.contains('/') => None,
        None => Some(key.to_string()),
    }
}

/// Docker Hub goes by several names; auth files use any of them.
fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn basic(creds: &Credentials) -> (&str, &str) {
        match creds {
            Credentials::Basic {
                username, password, ..
            } => (username, password.expose()),
            Credentials::Anonymous => panic!("expected credentials, got anonymous"),
        }
    }

    #[test]
    fn sources_follow_the_environment_like_podman_and_docker() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = AuthSources::from_vars(env(&[
            ("REGISTRY_AUTH_FILE", "/a/auth.json"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("DOCKER_CONFIG", "/d"),
            ("HOME", "/home/u"),
        ]));
        assert_eq!(
            all.paths(),
            [
                PathBuf::from("/a/auth.json"),
                PathBuf::from("/d/config.json")
            ]
        );
        let defaults =
            AuthSources::from_vars(env(&[("XDG_RUNTIME_DIR", "/run/user/1"), ("HOME", "/h")]));
        assert_eq!(
            defaults.paths(),
            [
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/h/.docker/config.json")
            ]
        );
        // Empty variables count as unset.
        let empty = AuthSources::from_vars(env(&[("REGISTRY_AUTH_FILE", ""), ("HOME", "/h")]));
        assert_eq!(empty.paths(), [PathBuf::from("/h/.docker/config.json")]);
    }

    #[test]
    fn auth_field_username_fields_and_url_keys_are_understood() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"auths": {{
                "reg.example:5000": {{"auth": "{}"}},
                "https://other.example/v1/": {{"auth": "{}"}},
                "plain.example": {{"username": "u3", "password": "p3"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}
            }}, "psFormat": "table"}}"#,
            b64("u1:p:1"),
            b64("u2:p2"),
            b64("hub:hp")
        );
        let file = write(dir.path(), "config.json", &text);
        let sources = AuthSources::files([&file]);
        let one = Credentials::lookup_in("reg.example:5000", &sources).unwrap();
        // Only the first colon separates: passwords may contain colons.
        assert_eq!(basic(&one), ("u1", "p:1"));
        assert_eq!(one.origin(), format!("from {}", file.display()));
        let two = Credentials::lookup_in("other.example", &sources).unwrap();
        assert_eq!(basic(&two), ("u2", "p2"));
        let three = Credentials::lookup_in("plain.example", &sources).unwrap();
        assert_eq!(basic(&three), ("u3", "p3"));
        let hub = Credentials::lookup_in("docker.io", &sources).unwrap();
        assert_eq!(basic(&hub), ("hub", "hp"));
        // Another port is another registry.
        let none = Credentials::lookup_in("reg.example:5001", &sources).unwrap();
        assert_eq!(none, Credentials::Anonymous);
    }

    #[test]
    fn the_first_file_with_an_entry_wins_and_missing_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(
            dir.path(),
            "first.json",
            &format!(
                r#"{{"auths": {{"a.example": {{"auth": "{}"}}}}}}"#,
                b64("first:1")
            ),
        );
        let second = write(
            dir.path(),
            "second.json",
            &format!(
                r#"{{"auths": {{"a.example": {{"auth": "{}"}}, "b.example": {{"auth": "{}"}}}}}}"#,
                b64("second:2"),
                b64("second-b:2")
            ),
        );
        let sources = AuthSources::files([dir.path().join("missing.json"), first, second]);
        let a = Credentials::lookup_in("a.example", &sources).unwrap();
        assert_eq!(basic(&a).0, "first");
        let b = Credentials::lookup_in("b.example", &sources).unwrap();
        assert_eq!(basic(&b).0, "second-b");
    }

    #[test]
    fn namespace_keys_do_not_match_the_whole_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "auth.json",
            &format!(
                r#"{{"auths": {{"quay.example/team": {{"auth": "{}"}}}}}}"#,
                b64("t:p")
            ),
        );
        let found = Credentials::lookup_in("quay.example", &AuthSources::files([file])).unwrap();
        assert_eq!(found, Credentials::Anonymous);
    }

    #[test]
    fn credential_helpers_are_an_error_naming_file_host_and_helper() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "config.json",
            r#"{"auths": {"store.example": {}}, "credsStore": "desktop",
                "credHelpers": {"gcr.example": "gcloud"}}"#,
        );
        let sources = AuthSources::files([&file]);
        let err = Credentials::lookup_in("gcr.example", &sources).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AuthError::HelperNeeded { .. }), "{err:?}");
        for part in [
            &file.display().to_string(),
            "gcr.example",
            "docker-credential-gcloud",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        let err = Credentials::lookup_in("store.example", &sources).unwrap_err();
        assert!(
            err.to_string().contains("docker-credential-desktop"),
            "{err}"
        );
        // A credential store alone does not stop anonymous access to other registries.
        let other = Credentials::lookup_in("public.example", &sources).unwrap();
        assert_eq!(other, Credentials::Anonymous);
    }

    #[test]
    fn malformed_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("not-json.json", "{\"auths\": ".to_string(), "EOF"),
            (
                "bad-b64.json",
                r#"{"auths": {"r.example": {"auth": "%%%"}}}"#.to_string(),
                "auths.\"r.example\".auth is not base64",
            ),
            (
                "no-colon.json",
                format!(
                    r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                    b64("nocolon")
                ),
                "\"user:password\"",
            ),
            (
                "empty-entry.json",
                r#"{"auths": {"r.example": {}}}"#.to_string(),
                "neither",
            ),
            (
                "wrong-type.json",
                r#"{"auths": ["r.example"]}"#.to_string(),
                "invalid type",
            ),
        ];
        for (name, text, expected) in cases {
            let file = write(dir.path(), name, &text);
            let err =
                Credentials::lookup_in("r.example", &AuthSources::files([&file])).expect_err(name);
            let message = err.to_string();
            assert!(
                matches!(err, AuthError::Malformed { .. }),
                "{name}: {err:?}"
            );
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_and_an_empty_one_is_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as one.
        let err =
            Credentials::lookup_in("r.example", &AuthSources::files([dir.path()])).unwrap_err();
        assert!(matches!(err, AuthError::Read { .. }), "{err:?}");
        let empty = write(dir.path(), "empty.json", "  \n");
        let found = Credentials::lookup_in("r.example", &AuthSources::files([empty])).unwrap();
        assert_eq!(found, Credentials::Anonymous);
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let creds = Credentials::basic("alice", "s3cret-pw");
        let text = format!("{creds:?}");
        assert!(text.contains("alice"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    }
}

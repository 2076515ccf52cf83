//! Logging in for the registry calls, and the errors for a registry that will not let us in.
//!
//! A raw request goes out with what worked before (a cached token for its scope, or Basic
//! credentials once the registry asked for them). On a 401 the challenge says what to do:
//! `Basic` → send the credentials; `Bearer` → get a token from the realm (with the credentials,
//! or anonymously) and send that. The request is then sent once more; a second 401 is final.

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::auth::Credentials;
use crate::challenge::{challenge_of, Challenge};
use crate::client::{Registry, Scheme, Wait};
use crate::error::{Refusal, RegistryError};
use crate::reference::{split_host_port, RegistryRepo};
use crate::token::{parse_token, scope_for, Access, Token};

/// A token answer is a small JSON document; anything larger is not one.
const MAX_TOKEN_ANSWER: usize = 1024 * 1024;

impl Registry {
    /// Sends the request `build` makes (again, when the registry asks for credentials: a
    /// request cannot be replayed, so the caller says how to make it).
    pub(crate) async fn send_authorized(
        &self,
        action: &str,
        repo: &RegistryRepo,
        access: Access,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let (response, _) = self
            .send_authorized_with(Wait::Whole, action, repo, access, build)
            .await?;
        Ok(response)
    }

    /// [`Registry::send_authorized`], bounded as `wait` says, and the `Authorization` value
    /// the answer was got with, for a request that must follow with the same (an upload's
    /// PUT).
    pub(crate) async fn send_authorized_with(
        &self,
        wait: Wait,
        action: &str,
        repo: &RegistryRepo,
        access: Access,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(Response, Option<HeaderValue>), RegistryError> {
        let scope = scope_for(&repo.repository, access);
        let known = self.known_auth(&scope);
        let request = match &known {
            Some(value) => build().header(AUTHORIZATION, value.clone()),
            None => build(),
        };
        let first = self.send_waiting(wait, action, request).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok((first, known));
        }
        // A 401 from where a redirect led (a blob's storage host) is that host's: its
        // challenge is not the registry's, and gets no credentials.
        if !self.is_own_origin(first.url()) {
            return Ok((first, known));
        }
        let Some(challenge) = challenge_of(first.headers()) else {
            return Ok((first, known));
        };
        let Some(header) = self.answer_challenge(action, &challenge, &scope).await? else {
            return Ok((first, known));
        };
        let value = sensitive(&header).ok_or_else(|| {
            self.protocol_error(action, "the credentials cannot be sent in an HTTP header")
        })?;
        let again = self
            .send_waiting(wait, action, build().header(AUTHORIZATION, value.clone()))
            .await?;
        Ok((again, Some(value)))
    }

    /// Whether `url` is on the registry itself (scheme, host and port).
    pub(crate) fn is_own_origin(&self, url: &Url) -> bool {
        let own = Url::parse(&format!("{}://{}/", self.scheme().as_str(), self.host()));
        own.is_ok_and(|own| own.origin() == url.origin())
    }

    /// What the registry accepted before, so most requests need no 401 round trip.
    fn known_auth(&self, scope: &str) -> Option<HeaderValue> {
        if let Some(token) = self.session.token(scope) {
            return sensitive(&format!("Bearer {token}"));
        }
        match &self.session.credentials {
            Credentials::Basic {
                username, password, ..
            } if self.session.basic_requested() => {
                sensitive(&basic_header(username, password.expose()))
            }
            _ => None,
        }
    }

    /// The `Authorization` value that answers `challenge`, or `None` when there is nothing to
    /// answer with (Basic asked, no credentials): the 401 then stands.
    async fn answer_challenge(
        &self,
        action: &str,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        match challenge {
            Challenge::Basic => {
                let Credentials::Basic {
                    username, password, ..
                } = &self.session.credentials
                else {
                    return Ok(None);
                };
                self.session.note_basic_requested();
                Ok(Some(basic_header(username, password.expose())))
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                // The registry knows best which scope it wants; ours is the fallback.
                let wanted = asked.as_deref().unwrap_or(scope);
                let token = self
                    .fetch_token(action, realm, service.as_deref(), wanted)
                    .await?;
                self.session.remember_token(scope, &token);
                Ok(Some(format!("Bearer {}", token.value)))
            }
        }
    }

    /// Asks the token server at `realm` for a token, with the credentials when there are any.
    async fn fetch_token(
        &self,
        action: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let token_action = format!("{action} (getting a token from {realm})");
        let mut url = Url::parse(realm).map_err(|e| {
            self.protocol_error(&token_action, format!("bad token realm {realm:?}: {e}"))
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            // A challenge may ask for several scopes (a mount: the target's and the
            // source's), space-separated; the token protocol takes one parameter each.
            for scope in scope.split_whitespace() {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url.clone());
        if let Credentials::Basic {
            username, password, ..
        } = &self.session.credentials
        {
            self.check_realm(&url, &token_action)?;
            request = request.basic_auth(username, Some(password.expose()));
        }
        let response = self.send(&token_action, request).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&token_action, response).await);
        }
        let body = self
            .read_limited(&token_action, response, MAX_TOKEN_ANSWER)
            .await?;
        parse_token(&body).map_err(|source| RegistryError::Token {
            registry: self.host().to_string(),
            action: token_action,
            source,
        })
    }

    /// Where the credentials may go to get a token: a token server over HTTPS (Docker Hub's is
    /// on another host than its registry), or over plain HTTP only on the registry's own
    /// host when the registry is plain HTTP itself; never with a user name in its URL (which
    /// would make another host of it). The registry names the realm, so it is checked
    /// before anything secret is sent there.
    fn check_realm(&self, realm: &Url, action: &str) -> Result<(), RegistryError> {
        let refuse = |why: &str| {
            Err(self.protocol_error(
                action,
                format!(
                    "it names the token server {realm}, {why}: the credentials for {} were not sent",
                    self.host()
                ),
            ))
        };
        if !realm.username().is_empty() || realm.password().is_some() {
            return refuse("whose address carries a user name");
        }
        let registry_host = split_host_port(self.host()).map(|(host, _)| host).ok();
        let same_host = realm
            .host_str()
            .is_some_and(|h| registry_host.is_some_and(|r| r.eq_ignore_ascii_case(h)));
        match realm.scheme() {
            "https" => Ok(()),
            "http" if self.scheme() == Scheme::Http && same_host => Ok(()),
            "http" => refuse(
                "over plain HTTP on another host than the registry's, or from an HTTPS registry",
            ),
            _ => refuse("which is not an http(s) address"),
        }
    }

    /// The error for an answer that says we are not let in, or `None` for any other answer.
    /// A 401 means no or wrong credentials; a 403 with credentials means they are not good
    /// enough (a 403 without any is left as it is: it is not about logging in).
    pub(crate) fn auth_failure(
        &self,
        action: &str,
        status: Option<u16>,
        code: Option<&str>,
        message: Option<&str>,
    ) -> Option<RegistryError> {
        let has_code = |wanted: &str| code.is_some_and(|c| c.split("; ").any(|c| c == wanted));
        let unauthorized = status == Some(401) || (status.is_none() && has_code("UNAUTHORIZED"));
        let denied = status == Some(403) || (status.is_none() && has_code("DENIED"));
        let registry = self.host().to_string();
        match &self.session.credentials {
            Credentials::Anonymous if unauthorized => Some(RegistryError::RequiresCredentials {
                registry,
                action: action.to_string(),
                searched: self.session.searched_text(),
            }),
            creds @ Credentials::Basic { username, .. } if unauthorized || denied => {
                Some(RegistryError::CredentialsRefused(Box::new(Refusal {
                    registry,
                    username: username.clone(),
                    origin: creds.origin(),
                    action: action.to_string(),
                    answer: registry_answer(status, code, message),
                })))
            }
            _ => None,
        }
    }
}

/// An `Authorization` value, marked sensitive (never shown in a request's debug output);
/// `None` for one that cannot be a header's.
fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// `HTTP 401: UNAUTHORIZED: authentication required`, for the refused-credentials error.
fn registry_answer(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(s) = status {
        parts.push(format!("HTTP {s}"));
    }
    parts.extend(code.map(str::to_string));
    parts.extend(message.map(str::to_string));
    if parts.is_empty() {
        return "no further detail".to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(registry: &Registry, realm: &str) -> Option<String> {
        let url = Url::parse(realm).unwrap();
        registry
            .check_realm(&url, "testing")
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn credentials_go_only_to_a_realm_fit_for_them_and_a_refusal_names_it() {
        let creds = || Credentials::basic("alice", "s3cret");
        let local = Registry::with_credentials("127.0.0.1:5000", false, creds()).unwrap();
        let remote = Registry::with_credentials("registry.example.com", false, creds()).unwrap();
        // HTTPS anywhere (Docker Hub's token server is another host); plain HTTP only on the
        // plain-HTTP registry's own host, any port.
        assert_eq!(refused(&remote, "https://auth.example.net/token"), None);
        assert_eq!(refused(&local, "http://127.0.0.1:5001/token"), None);
        for (registry, realm) in [
            (&local, "http://localhost:5001/token"),
            (&remote, "http://registry.example.com/token"),
            (&remote, "https://user@auth.example.net/token"),
            (&local, "ftp://127.0.0.1/token"),
        ] {
            let err = refused(registry, realm).expect(realm);
            assert!(err.contains("were not sent"), "{err}");
            let shown = Url::parse(realm).unwrap().to_string();
            assert!(err.contains(&shown), "the refusal names the realm: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}

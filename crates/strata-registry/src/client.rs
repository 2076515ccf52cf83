//! The registry handle: which host, over which protocol, with which retry policy, and the
//! translation of transport and HTTP errors into [`RegistryError`].
//!
//! Every call is raw HTTP through `reqwest`, following the distribution spec. strata used
//! oci-client for blobs before; it asked `/v2/` again before every blob call on a registry
//! that needs no login (a round trip per blob: on a distant registry a third of an empty
//! runner's requests), and it has no DELETE, does not report a pulled manifest's media type,
//! and can panic when a registry omits the `Location` of a manifest pushed by digest.
//!
//! Credentials come from the auth files `skopeo login` and `docker login` write (see the auth
//! module); the authorized module logs in.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;

use crate::auth::{AuthSources, Credentials};
use crate::error::{
    chain_text, classify_transport, parse_error_body, RegistryError, TransportKind,
};
use crate::reference::{split_host_port, RegistryRepo};
use crate::token::AuthSession;

const USER_AGENT: &str = concat!("strata/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may go without the registry sending anything (see
/// [`Registry::with_stall_timeout`]), unless `STRATA_REGISTRY_TIMEOUT` says otherwise.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// An error answer is a small JSON document; past this much, the rest is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The stall timeout `STRATA_REGISTRY_TIMEOUT` (whole seconds) asks for, else the default.
fn stall_timeout_from_env() -> Result<Duration, String> {
    stall_timeout(std::env::var("STRATA_REGISTRY_TIMEOUT").ok().as_deref())
}

fn stall_timeout(setting: Option<&str>) -> Result<Duration, String> {
    let Some(text) = setting else {
        return Ok(STALL_TIMEOUT);
    };
    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "STRATA_REGISTRY_TIMEOUT={text:?} is not a whole number of seconds above 0"
        )),
    }
}

/// How requests reach the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// HTTPS unless the registry is on this machine or the user said `--insecure`: plain HTTP to
/// a remote host would let anyone on the path swap layers.
pub fn scheme_for(registry: &str, insecure: bool) -> Scheme {
    if insecure || is_loopback(registry) {
        Scheme::Http
    } else {
        Scheme::Https
    }
}

/// `localhost`, 127.0.0.0/8 or `[::1]`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let Ok((host, _port)) = split_host_port(registry) else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .is_some_and(|v6| v6.is_loopback())
}

/// The credentials `sources` hold for `registry`, remembering where they were searched (for
/// the error that says none were found).
fn session_from(registry: &str, sources: &AuthSources) -> Result<AuthSession, RegistryError> {
    let credentials = Credentials::lookup_in(registry, sources)?;
    Ok(AuthSession::new(credentials, sources.paths().to_vec()))
}

/// Transient failures (connection errors, 5xx, 429) are retried `attempts - 1` times, waiting
/// `initial_backoff`, then twice as long each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(200),
        }
    }
}

/// A client for one registry host.
#[derive(Clone)]
pub struct Registry {
    host: String,
    scheme: Scheme,
    pub(crate) session: Arc<AuthSession>,
    retry: RetryPolicy,
    /// How long a request may wait for the registry's next bytes.
    pub(crate) stall: Duration,
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("scheme", &self.scheme)
            .field("credentials", &self.session.credentials)
            .field("retry", &self.retry)
            .field("stall", &self.stall)
            .finish()
    }
}

/// How long a request may go unanswered: within the stall timeout, either the whole answer
/// or only its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A document: reads (GET, HEAD, a body-less POST) must arrive whole; a manifest PUT, a
    /// blob's PUT or a DELETE may take as long as the registry needs (hooks, slow storage).
    Whole,
    /// A blob download: the status and headers must arrive; the body may take as long as it
    /// keeps coming, which the caller watches.
    Head,
}

impl Registry {
    /// A client for `registry` (`host[:port]`): HTTPS, or plain HTTP for loopback hosts or
    /// when `insecure`; with the credentials the user's auth files hold for it (see
    /// [`AuthSources::from_env`]), anonymous when they hold none.
    pub fn new(registry: &str, insecure: bool) -> Result<Registry, RegistryError> {
        Registry::with_auth_sources(registry, insecure, &AuthSources::from_env())
    }

    /// Like [`Registry::new`], searching `sources` instead of the files the environment names.
    pub fn with_auth_sources(
        registry: &str,
        insecure: bool,
        sources: &AuthSources,
    ) -> Result<Registry, RegistryError> {
        let session = session_from(registry, sources)?;
        Registry::build(registry, scheme_for(registry, insecure), session)
    }

    /// A client that uses exactly `credentials`, searching no auth file.
    pub fn with_credentials(
        registry: &str,
        insecure: bool,
        credentials: Credentials,
    ) -> Result<Registry, RegistryError> {
        let session = AuthSession::new(credentials, Vec::new());
        Registry::build(registry, scheme_for(registry, insecure), session)
    }

    /// A client that uses `scheme` whatever the host, with the credentials of the user's auth
    /// files.
    pub fn with_scheme(registry: &str, scheme: Scheme) -> Result<Registry, RegistryError> {
        let session = session_from(registry, &AuthSources::from_env())?;
        Registry::build(registry, scheme, session)
    }

    fn build(
        registry: &str,
        scheme: Scheme,
        session: AuthSession,
    ) -> Result<Registry, RegistryError> {
        // Validates the host the same way repository names are validated.
        RegistryRepo::new(registry, "x")?;
        let client_error = |detail: String| RegistryError::Client {
            registry: registry.to_string(),
            detail,
        };
        if scheme == Scheme::Http && !is_loopback(registry) {
            if let Some(user) = session.credentials.username() {
                // Docker does the same for insecure registries, but the user should know.
                tracing::warn!(registry, user, "credentials will be sent over plain HTTP");
            }
        }
        let stall = stall_timeout_from_env().map_err(client_error)?;
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| client_error(chain_text(&e)))?;
        Ok(Registry {
            host: registry.to_string(),
            scheme,
            session: Arc::new(session),
            retry: RetryPolicy::default(),
            stall,
            http,
        })
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Registry {
        self.retry = retry;
        self
    }

    /// How long a request may go without the registry sending anything before it fails as
    /// [`RegistryError::Stalled`]: a whole manifest, tag page or token answer must arrive in
    /// that time, a blob download must make progress in it. Uploads are not bounded (a
    /// registry may take long to take a large blob in).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Registry {
        self.stall = stall;
        self
    }

    /// `host[:port]`, as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn credentials(&self) -> &Credentials {
        &self.session.credentials
    }

    /// `scheme://host/v2/<repository>/<rest>`.
    pub fn url(&self, repo: &RegistryRepo, rest: &str) -> String {
        format!(
            "{}://{}/v2/{}/{rest}",
            self.scheme.as_str(),
            self.host,
            repo.repository
        )
    }

    /// [`Registry::url`], parsed (to join a `Location` to, or add a query to).
    pub(crate) fn parsed_url(
        &self,
        repo: &RegistryRepo,
        rest: &str,
        action: &str,
    ) -> Result<reqwest::Url, RegistryError> {
        let url = self.url(repo, rest);
        reqwest::Url::parse(&url)
            .map_err(|e| self.protocol_error(action, format!("bad URL {url:?}: {e}")))
    }

    /// Refuses a repository of another registry: its requests would silently go to this one.
    pub(crate) fn check_repo(&self, repo: &RegistryRepo) -> Result<(), RegistryError> {
        if repo.registry == self.host {
            return Ok(());
        }
        Err(RegistryError::WrongRegistry {
            registry: self.host.clone(),
            repo: repo.to_string(),
            repo_registry: repo.registry.clone(),
        })
    }

    /// Runs `op` again after transient failures, with exponential backoff.
    pub(crate) async fn with_retry<T, F, Fut>(
        &self,
        action: &str,
        mut op: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let delay = self.retry.initial_backoff * 2u32.saturating_pow(attempt - 1);
                    tracing::warn!(registry = %self.host, %action, attempt, error = %e, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends a raw request; transport failures become [`RegistryError`]s naming `action`.
    pub(crate) async fn send(
        &self,
        action: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_waiting(Wait::Whole, action, request).await
    }

    /// [`Registry::send`], bounded as `wait` says.
    pub(crate) async fn send_waiting(
        &self,
        wait: Wait,
        action: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let (client, request) = request.build_split();
        let mut request = request.map_err(|e| self.transport_error(action, &e, false))?;
        // A body-less POST (opening an upload, a mount) is answered at once, like a read.
        let reads = matches!(*request.method(), Method::GET | Method::HEAD)
            || (*request.method() == Method::POST && request.body().is_none());
        match wait {
            Wait::Whole if reads => *request.timeout_mut() = Some(self.stall),
            Wait::Whole => {}
            Wait::Head => {
                let sent = tokio::time::timeout(self.stall, client.execute(request)).await;
                let Ok(sent) = sent else {
                    return Err(self.stalled(action));
                };
                return sent.map_err(|e| self.transport_error(action, &e, e.is_connect()));
            }
        }
        client
            .execute(request)
            .await
            .map_err(|e| self.transport_error(action, &e, e.is_connect()))
    }

    pub(crate) fn stalled(&self, action: &str) -> RegistryError {
        RegistryError::Stalled {
            registry: self.host.clone(),
            action: action.to_string(),
            waited: self.stall,
        }
    }

    /// The error for a response whose status says the registry refused `action`.
    pub(crate) async fn status_error(
        &self,
        action: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        let (status, code, message) = read_error_answer(response, self.stall).await;
        self.http_error(action, Some(status), code, message)
    }

    /// The error for a refusal that is not about the registry's credentials (an answer from
    /// another host): its status, code and message as they are.
    pub(crate) async fn answer_error(
        &self,
        action: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        let (status, code, message) = read_error_answer(response, self.stall).await;
        RegistryError::Http {
            registry: self.host.clone(),
            action: action.to_string(),
            status: Some(status),
            code,
            message,
        }
    }

    pub(crate) fn http_error(
        &self,
        action: &str,
        status: Option<u16>,
        code: Option<String>,
        message: Option<String>,
    ) -> RegistryError {
        if let Some(refused) =
            self.auth_failure(action, status, code.as_deref(), message.as_deref())
        {
            return refused;
        }
        RegistryError::Http {
            registry: self.host.clone(),
            action: action.to_string(),
            status,
            code,
            message,
        }
    }

    pub(crate) fn protocol_error(&self, action: &str, detail: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.host.clone(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn transport_error(
        &self,
        action: &str,
        err: &(dyn std::error::Error + 'static),
        is_connect: bool,
    ) -> RegistryError {
        let registry = self.host.clone();
        let action = action.to_string();
        // A connect timeout is reqwest's too: that registry is unreachable, not stalled.
        if !is_connect && is_timeout(err) {
            return self.stalled(&action);
        }
        let detail = chain_text(err);
        match classify_transport(err, is_connect, self.scheme == Scheme::Https) {
            TransportKind::Connect => RegistryError::Unreachable {
                registry,
                action,
                detail,
            },
            TransportKind::Tls => RegistryError::Tls {
                registry,
                action,
                detail,
            },
            TransportKind::Broken => RegistryError::Connection {
                registry,
                action,
                detail,
            },
        }
    }
}

/// An error answer's status, and the code and message of its body. A body that fails to
/// arrive, or stops coming for `stall` (a blob download's or an upload's answer has no other
/// bound), still leaves the status worth reporting; one larger than an error document is
/// cut (and the rest never read).
async fn read_error_answer(
    response: reqwest::Response,
    stall: Duration,
) -> (u16, Option<String>, Option<String>) {
    let status = response.status().as_u16();
    let body = tokio::time::timeout(stall, read_start(response, MAX_ERROR_BODY)).await;
    let (code, message) = parse_error_body(&body.unwrap_or_default());
    (status, code, message)
}

/// Reads a response's body into `body`, at most `limit` bytes; whether the registry had more
/// to send (the rest is never read). On an error `body` keeps what arrived before it.
pub(crate) async fn read_up_to(
    response: reqwest::Response,
    limit: usize,
    body: &mut Vec<u8>,
) -> Result<bool, reqwest::Error> {
    use futures_util::StreamExt;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(true);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(false)
}

/// At most `limit` bytes of a response's body: what arrived before an error, or nothing.
async fn read_start(response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = read_up_to(response, limit, &mut body).await;
    body
}

/// Whether a transport error is reqwest's timeout (the stall timeout of [`Registry::send`]).
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// rustls needs one process-wide crypto provider and strata compiles in only `ring` (no
/// second TLS backend): install it unless another part of the process already did.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_timeout_is_whole_seconds_above_zero_and_a_bad_one_is_named() {
        assert_eq!(stall_timeout(None), Ok(STALL_TIMEOUT));
        assert_eq!(stall_timeout(Some(" 5 ")), Ok(Duration::from_secs(5)));
        for bad in ["0", "1.5", "-3", "soon", ""] {
            let err = stall_timeout(Some(bad)).unwrap_err();
            assert!(
                err.contains("STRATA_REGISTRY_TIMEOUT") && err.contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn remote_hosts_get_https_unless_insecure() {
        assert_eq!(scheme_for("registry.example.com", false), Scheme::Https);
        assert_eq!(scheme_for("10.1.2.3:5000", false), Scheme::Https);
        assert_eq!(scheme_for("registry.example.com:443", true), Scheme::Http);
        // Looks local, but 128.0.0.1 is not loopback.
        assert_eq!(scheme_for("128.0.0.1:5000", false), Scheme::Https);
        assert_eq!(scheme_for("localhost.example.com", false), Scheme::Https);
    }

    #[test]
    fn loopback_hosts_get_http() {
        for host in [
            "127.0.0.1:5000",
            "127.8.9.10",
            "localhost",
            "LOCALHOST:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert_eq!(scheme_for(host, false), Scheme::Http, "{host}");
        }
    }

    #[test]
    fn urls_follow_the_scheme_decision_without_traffic() {
        let remote = Registry::new("registry.example.com:5000", false).unwrap();
        let repo: RegistryRepo = "registry.example.com:5000/team/env".parse().unwrap();
        assert_eq!(
            remote.url(&repo, "manifests/v1"),
            "https://registry.example.com:5000/v2/team/env/manifests/v1"
        );
        let insecure = Registry::new("registry.example.com:5000", true).unwrap();
        assert!(insecure.url(&repo, "tags/list").starts_with("http://"));
        let local = Registry::new("127.0.0.1:5000", false).unwrap();
        let local_repo: RegistryRepo = "127.0.0.1:5000/env".parse().unwrap();
        assert_eq!(
            local.url(&local_repo, "blobs/uploads/"),
            "http://127.0.0.1:5000/v2/env/blobs/uploads/"
        );
    }

    #[test]
    fn a_bad_registry_name_is_rejected_by_name() {
        let err = Registry::new("bad host", false).unwrap_err();
        assert!(err.to_string().contains("bad host"), "{err}");
    }
}

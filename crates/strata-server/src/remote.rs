//! The CLI's side of the API: a blocking client that answers with the types the local
//! commands print, so `strata jobs` prints the same whichever way it went.
//!
//! Where the server is: `STRATA_SERVER` and `STRATA_TOKEN`, else the file `strata login`
//! wrote (`$XDG_CONFIG_HOME/strata/login.json`, mode 0600). `STRATA_SERVER_CA` names a PEM
//! file of a CA to trust besides the system's (a team's own certificate).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_agent::{JobMetrics, JobOutputs, JobStatus, OutputsState};
use strata_queue::{CancelResult, JobView};
use url::Url;

use crate::api::{FINISHED_HEADER, IDEMPOTENCY_HEADER};
use crate::types::{
    CapacityResponse, ErrorBody, RegistryResponse, SubmitRequest, SubmitResponse, WhoAmI,
};

/// Times a submit whose answer was lost is sent again (same idempotency key).
const SUBMIT_RETRIES: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "invalid server address {0:?}: expected https://HOST[:PORT] (http:// only for localhost)"
    )]
    Address(String),
    #[error(
        "STRATA_SERVER is {0} but there is no token: set STRATA_TOKEN, or run `strata login {0}`"
    )]
    NoToken(String),
    #[error("login file {}: {detail}", path.display())]
    LoginFile { path: PathBuf, detail: String },
    #[error("CA certificate {}: {detail}", path.display())]
    Ca { path: PathBuf, detail: String },
    #[error("{server}: {source}")]
    Http {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{server} answered {status}: {message}")]
    Api {
        server: String,
        status: u16,
        message: String,
    },
    #[error("{server} answered something unexpected: {detail}")]
    Answer { server: String, detail: String },
    #[error("writing the log: {0}")]
    Write(#[source] std::io::Error),
    #[error("writing {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What `strata login` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Login {
    server: String,
    token: String,
}

/// A server and the token to call it with.
pub struct Remote {
    base: Url,
    token: String,
    http: reqwest::blocking::Client,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Remote")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Remote {
    pub fn new(server: &str, token: &str) -> Result<Remote, RemoteError> {
        let base = server_url(server)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder().timeout(None);
        if let Some(path) = std::env::var_os("STRATA_SERVER_CA") {
            let path = PathBuf::from(path);
            let ca_err = |detail: String| RemoteError::Ca {
                path: path.clone(),
                detail,
            };
            let pem = std::fs::read(&path).map_err(|e| ca_err(e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|source| RemoteError::Http {
            server: base.to_string(),
            source,
        })?;
        Ok(Remote {
            base,
            token: token.to_string(),
            http,
        })
    }

    /// The server to use, if any: `STRATA_SERVER` (with `STRATA_TOKEN` or the login file's
    /// token for that server), else the login file's.
    pub fn from_env() -> Result<Option<Remote>, RemoteError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let login = read_login()?;
        match (env("STRATA_SERVER"), env("STRATA_TOKEN")) {
            (Some(server), Some(token)) => Ok(Some(Remote::new(&server, &token)?)),
            (Some(server), None) => match login {
                Some(l) if same_server(&l.server, &server) => {
                    Ok(Some(Remote::new(&server, &l.token)?))
                }
                _ => Err(RemoteError::NoToken(server)),
            },
            (None, _) => match login {
                Some(l) => Ok(Some(Remote::new(&l.server, &l.token)?)),
                None => Ok(None),
            },
        }
    }

    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    /// Checks the token with the server, then keeps server and token in the login file.
    pub fn login(server: &str, token: &str) -> Result<(WhoAmI, PathBuf), RemoteError> {
        let remote = Remote::new(server, token)?;
        let who = remote.whoami()?;
        let path = login_path()?;
        write_private(
            &path,
            &serde_json::to_vec_pretty(&Login {
                server: remote.base.to_string(),
                token: token.to_string(),
            })
            .unwrap_or_default(),
        )
        .map_err(|e| RemoteError::LoginFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Ok((who, path))
    }

    /// Removes the login file; whether there was one.
    pub fn logout() -> Result<bool, RemoteError> {
        let path = login_path()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(RemoteError::LoginFile {
                path,
                detail: e.to_string(),
            }),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/api/v1/{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn http_err(&self, source: reqwest::Error) -> RemoteError {
        RemoteError::Http {
            server: self.server().to_string(),
            source,
        }
    }

    /// Sends, and turns an error answer into [`RemoteError::Api`] with the server's message.
    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, RemoteError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| self.http_err(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        Err(RemoteError::Api {
            server: self.server().to_string(),
            status: status.as_u16(),
            message,
        })
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<T, RemoteError> {
        let bytes = self.send(request)?.bytes().map_err(|e| self.http_err(e))?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Answer {
            server: self.server().to_string(),
            detail: e.to_string(),
        })
    }

    pub fn whoami(&self) -> Result<WhoAmI, RemoteError> {
        self.json(self.http.get(self.url("whoami", &[])))
    }

    pub fn views(&self, queue: Option<&str>, all: bool) -> Result<Vec<JobView>, RemoteError> {
        let mut query = vec![("all", if all { "true" } else { "false" })];
        if let Some(q) = queue {
            query.push(("queue", q));
        }
        self.json(self.http.get(self.url("jobs", &query)))
    }

    pub fn status(&self, id: &str) -> Result<JobStatus, RemoteError> {
        self.json(
            self.http
                .get(self.url(&format!("jobs/{}", segment(id)), &[])),
        )
    }

    pub fn cancel(&self, id: &str) -> Result<CancelResult, RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            result: CancelResult,
        }
        let answer: Answer = self.json(
            self.http
                .post(self.url(&format!("jobs/{}/cancel", segment(id)), &[])),
        )?;
        Ok(answer.result)
    }

    /// The log from `offset`, and whether the job had ended.
    pub fn log(&self, id: &str, offset: u64) -> Result<(Vec<u8>, bool), RemoteError> {
        let offset = offset.to_string();
        let url = self.url(&format!("jobs/{}/log", segment(id)), &[("offset", &offset)]);
        let response = self.send(self.http.get(url))?;
        let finished = response
            .headers()
            .get(FINISHED_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        let bytes = response.bytes().map_err(|e| self.http_err(e))?;
        Ok((bytes.to_vec(), finished))
    }

    /// Copies the log to `out` as it grows, until the job ends (the server streams it).
    pub fn follow_log(&self, id: &str, out: &mut dyn Write) -> Result<(), RemoteError> {
        let url = self.url(
            &format!("jobs/{}/log", segment(id)),
            &[("offset", "0"), ("follow", "true")],
        );
        let mut response = self.send(self.http.get(url))?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = response.read(&mut buf).map_err(RemoteError::Write)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(RemoteError::Write)?;
            out.flush().map_err(RemoteError::Write)?;
        }
    }

    /// What the job's `--output` directories held when it ended.
    pub fn outputs(&self, id: &str) -> Result<JobOutputs, RemoteError> {
        self.json(
            self.http
                .get(self.url(&format!("jobs/{}/outputs", segment(id)), &[])),
        )
    }

    /// Deletes the job's collected outputs; whether there were any.
    pub fn delete_outputs(&self, id: &str) -> Result<bool, RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            deleted: bool,
        }
        let answer: Answer = self.json(
            self.http
                .delete(self.url(&format!("jobs/{}/outputs", segment(id)), &[])),
        )?;
        Ok(answer.deleted)
    }

    /// Downloads the files of `outputs` into `to` (created if missing; files there of the
    /// same name are replaced), as `strata outputs --to` copies them locally. The server's
    /// listing is not trusted: a path that is not plain names below `to`, a symbolic link
    /// on the way, or a file longer than listed is refused. Returns how many were copied.
    pub fn download_outputs(&self, outputs: &JobOutputs, to: &Path) -> Result<usize, RemoteError> {
        if outputs.state != OutputsState::Collected {
            return Err(self.answer(outputs.unavailable().to_string()));
        }
        for file in &outputs.files {
            let relative =
                crate::download::relative(&file.path).map_err(|detail| self.answer(detail))?;
            let mut url = self.url(
                &format!("jobs/{}/outputs/files", segment(&outputs.job)),
                &[],
            );
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.extend(file.path.split('/'));
            }
            let response = self.send(self.http.get(url))?;
            crate::download::write(response, to, &relative, file.size).map_err(|e| match e {
                crate::download::Error::Io(source) => RemoteError::Output {
                    path: to.join(&relative),
                    source,
                },
                crate::download::Error::Longer => self.answer(format!(
                    "output file {:?} is longer than the {} bytes listed",
                    file.path, file.size
                )),
            })?;
        }
        Ok(outputs.files.len())
    }

    fn answer(&self, detail: String) -> RemoteError {
        RemoteError::Answer {
            server: self.server().to_string(),
            detail,
        }
    }

    pub fn metrics(
        &self,
        ids: &[String],
        name: Option<&str>,
    ) -> Result<Vec<JobMetrics>, RemoteError> {
        let jobs = ids.join(",");
        let mut query = vec![("jobs", jobs.as_str())];
        if let Some(n) = name {
            query.push(("name", n));
        }
        self.json(self.http.get(self.url("metrics", &query)))
    }

    /// Submits under a fresh `Idempotency-Key`, sent again as it was when the answer was
    /// lost on the way (a connection cut, a timeout): the server then answers the job the
    /// first attempt made, if it got that far, instead of making a second one.
    pub fn submit(&self, request: &SubmitRequest) -> Result<String, RemoteError> {
        let key = idempotency_key().map_err(|e| RemoteError::Answer {
            server: self.server().to_string(),
            detail: format!("no random bytes for an idempotency key: {e}"),
        })?;
        let mut attempts = 0;
        loop {
            let post = self
                .http
                .post(self.url("jobs", &[]))
                .header(IDEMPOTENCY_HEADER, &key)
                .json(request);
            match self.json::<SubmitResponse>(post) {
                Ok(answer) => return Ok(answer.id),
                Err(RemoteError::Http { .. }) if attempts < SUBMIT_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200 * attempts));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the caller's team pushes its jobs' images.
    pub fn registry(&self) -> Result<RegistryResponse, RemoteError> {
        self.json(self.http.get(self.url("registry", &[])))
    }

    pub fn capacity(&self) -> Result<CapacityResponse, RemoteError> {
        self.json(self.http.get(self.url("capacity", &[])))
    }

    pub fn images(&self) -> Result<serde_json::Value, RemoteError> {
        self.json(self.http.get(self.url("images", &[])))
    }
}

/// A key naming one `strata submit`: 16 random bytes, hex.
fn idempotency_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A job id as one path segment (a malformed one reaches the server as it is, escaped, and
/// the server says what is wrong with it).
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// `https://HOST[:PORT]`, or `http://` for a loopback host only.
fn server_url(server: &str) -> Result<Url, RemoteError> {
    let bad = || RemoteError::Address(server.to_string());
    let url = Url::parse(server).map_err(|_| bad())?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(bad()),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(bad()),
    }
}

fn same_server(a: &str, b: &str) -> bool {
    match (server_url(a), server_url(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// `$XDG_CONFIG_HOME/strata/login.json` (`~/.config/strata/login.json`).
pub fn login_path() -> Result<PathBuf, RemoteError> {
    let dir = dirs::config_dir().ok_or_else(|| RemoteError::LoginFile {
        path: PathBuf::from("~/.config/strata/login.json"),
        detail: "no config directory: set HOME or XDG_CONFIG_HOME".into(),
    })?;
    Ok(dir.join("strata").join("login.json"))
}

fn read_login() -> Result<Option<Login>, RemoteError> {
    let path = login_path()?;
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RemoteError::LoginFile {
                path,
                detail: e.to_string(),
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| RemoteError::LoginFile {
            path,
            detail: format!("{e} (strata logout removes it)"),
        })
}

/// Writes `bytes` to `path` readable by its owner only: created 0600 under a temporary name
/// in the same directory, then renamed over the old file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(".login.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(server_url("http://127.0.0.1:8080").is_ok());
        assert!(server_url("http://localhost:8080").is_ok());
        assert!(server_url("https://strata.example.org").is_ok());
        assert!(server_url("http://strata.example.org").is_err());
        assert!(server_url("ftp://127.0.0.1").is_err());
        assert!(server_url("strata.example.org").is_err());
    }
}

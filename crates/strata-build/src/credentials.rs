//! Credentials for package indexes, in the order pip and uv look for them: the user info of
//! the URL (already taken out of the spec by `strata-python`), then the netrc file (`$NETRC`,
//! else `~/.netrc`), then the registry auth files strata already reads for registries
//! (`$REGISTRY_AUTH_FILE` or containers' `auth.json`, docker's `config.json`), so one
//! `skopeo login` or `docker login` to a server that hosts both images and packages (Artifactory,
//! Nexus, GitLab, ...) serves both.
//!
//! Only the origins the build talks to are looked up; only `machine` entries of a netrc file
//! are used (its `default` entry would send one password to every host). A file that cannot
//! be read is a warning, not an error: index credentials are optional, and a broken docker
//! config must not stop builds from public indexes. An index that then refuses access says so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use strata_python::{CredentialSource, EnvSpec, IndexCredential, IndexCredentials, Origin};
use strata_python::{Lock, Secret};
use strata_registry::{AuthSources, Credentials};

/// Where index credentials are looked up besides URLs.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// The netrc file, if the environment names one or `~/.netrc` can be found.
    pub netrc: Option<PathBuf>,
    pub auth: AuthSources,
}

impl CredentialFiles {
    /// The files the process environment names.
    pub fn from_env() -> CredentialFiles {
        CredentialFiles::from_vars(|name| std::env::var_os(name))
    }

    /// `$NETRC`, else `$HOME/.netrc`; and the registry auth files (see
    /// [`AuthSources::from_vars`]).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> CredentialFiles {
        let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let netrc = set("NETRC").or_else(|| set("HOME").map(|home| home.join(".netrc")));
        CredentialFiles {
            netrc,
            auth: AuthSources::from_vars(var),
        }
    }
}

/// `explicit` (from URLs) completed from the files for every origin the spec names: its
/// index URLs, find-links URLs and direct `name @ URL` requirements.
pub fn for_spec(
    explicit: IndexCredentials,
    env: &EnvSpec,
    files: &CredentialFiles,
) -> IndexCredentials {
    let sources = &env.sources;
    let urls = sources
        .index_url
        .iter()
        .chain(&sources.extra_index_urls)
        .chain(sources.all_find_links())
        .chain(env.requirements.iter().filter_map(|r| r.url.as_ref()))
        .chain(env.constraints.iter().filter_map(|r| r.url.as_ref()));
    let mut credentials = explicit;
    complete(&mut credentials, urls.map(String::as_str), files);
    credentials
}

/// Adds credentials for the hosts a lock's wheels are downloaded from (a CDN next to the
/// index, say), where the files have some.
pub fn for_lock(credentials: &mut IndexCredentials, lock: &Lock, files: &CredentialFiles) {
    complete(
        credentials,
        lock.wheels.iter().map(|w| w.url.as_str()),
        files,
    );
}

fn complete<'a>(
    credentials: &mut IndexCredentials,
    urls: impl Iterator<Item = &'a str>,
    files: &CredentialFiles,
) {
    let mut netrc: Option<Option<netrc::Netrc>> = None;
    for url in urls {
        let Some(origin) = url::Url::parse(url).ok().as_ref().and_then(Origin::of) else {
            continue;
        };
        if credentials.has(&origin) {
            continue;
        }
        let from_netrc = files.netrc.as_deref().and_then(|path| {
            let parsed = netrc.get_or_insert_with(|| read_netrc(path));
            netrc_entry(parsed.as_ref()?, &origin, path)
        });
        if let Some(found) = from_netrc.or_else(|| auth_file_entry(&origin, &files.auth)) {
            tracing::debug!(%origin, source = %found.source, "index credentials");
            credentials.insert_if_absent(origin, found);
        }
    }
}

/// The netrc file at `path`; `None` when it is missing or unusable (with a warning for the
/// latter, naming the file and line but never a token of it).
fn read_netrc(path: &Path) -> Option<netrc::Netrc> {
    if !path.exists() {
        return None;
    }
    match netrc::Netrc::from_file(path) {
        Ok(parsed) => Some(parsed),
        Err(netrc::Error::Io(e)) => {
            tracing::warn!("cannot read the netrc file {}: {e}", path.display());
            None
        }
        Err(netrc::Error::Parsing { parser, .. }) => {
            // The parser's message quotes the token it stopped at, which may be a password:
            // only its line number is shown.
            let text = parser.to_string();
            let line = text
                .rsplit_once("(line ")
                .map(|(_, n)| n.trim_end_matches(')'))
                .unwrap_or("?");
            tracing::warn!(
                "ignoring the netrc file {}: it is malformed at line {line}",
                path.display()
            );
            None
        }
    }
}

fn netrc_entry(parsed: &netrc::Netrc, origin: &Origin, path: &Path) -> Option<IndexCredential> {
    let entry = parsed.hosts.get(&origin.host)?;
    Some(IndexCredential {
        username: entry.login.clone(),
        password: Secret::new(entry.password.clone()),
        source: CredentialSource::Netrc(path.to_path_buf()),
    })
}

/// The registry auth files' entry for the origin's `host[:port]`.
fn auth_file_entry(origin: &Origin, auth: &AuthSources) -> Option<IndexCredential> {
    match Credentials::lookup_in(&origin.authority(), auth) {
        Ok(Credentials::Basic {
            username,
            password,
            source,
        }) => Some(IndexCredential {
            username,
            password: Secret::new(password.expose()),
            source: CredentialSource::AuthFile(source.unwrap_or_default()),
        }),
        Ok(Credentials::Anonymous) => None,
        Err(e) => {
            tracing::warn!("no index credentials for {origin} from the registry auth files: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files(dir: &Path, netrc: &str, auth: &str) -> CredentialFiles {
        std::fs::write(dir.join("netrc"), netrc).unwrap();
        std::fs::write(dir.join("auth.json"), auth).unwrap();
        CredentialFiles {
            netrc: Some(dir.join("netrc")),
            auth: AuthSources::files([dir.join("auth.json")]),
        }
    }

    fn lookup(files: &CredentialFiles, url: &str) -> Option<(String, String, CredentialSource)> {
        let mut credentials = IndexCredentials::default();
        complete(&mut credentials, [url].into_iter(), files);
        let found = credentials.for_url(&url::Url::parse(url).unwrap())?;
        Some((
            found.username.clone(),
            found.password.expose().to_string(),
            found.source.clone(),
        ))
    }

    #[test]
    fn netrc_comes_before_the_auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let auth = r#"{"auths": {"both.example": {"username": "a", "password": "from-auth"},
                                  "reg.example:5000": {"username": "r", "password": "p5000"}}}"#;
        let f = files(
            dir.path(),
            "machine both.example login n password from-netrc\ndefault login d password dflt\n",
            auth,
        );
        let (user, password, source) = lookup(&f, "https://both.example/simple").unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("n", "from-netrc"));
        assert_eq!(source, CredentialSource::Netrc(dir.path().join("netrc")));
        let (_, password, source) = lookup(&f, "http://reg.example:5000/simple").unwrap();
        assert_eq!(password, "p5000");
        assert_eq!(
            source,
            CredentialSource::AuthFile(dir.path().join("auth.json"))
        );
        // netrc's `default` is not sent to every host; file: URLs have no origin.
        assert!(lookup(&f, "https://other.example/simple").is_none());
        assert!(lookup(&f, "file:///links").is_none());
    }

    #[test]
    fn broken_files_give_no_credentials_rather_than_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(
            dir.path(),
            "machine h login u password p\nbogus s3cr3t\n",
            "{",
        );
        assert!(lookup(&f, "https://h/simple").is_none());
    }

    #[test]
    fn netrc_follows_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let f = CredentialFiles::from_vars(vars(&[("NETRC", "/x/netrc"), ("HOME", "/h")]));
        assert_eq!(f.netrc, Some(PathBuf::from("/x/netrc")));
        let f = CredentialFiles::from_vars(vars(&[("HOME", "/h")]));
        assert_eq!(f.netrc, Some(PathBuf::from("/h/.netrc")));
    }
}

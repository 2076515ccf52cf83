//! Credentials for package indexes, kept apart from the spec.
//!
//! A URL's user info (`https://user:token@host/simple`) is taken out of it before the URL is
//! canonicalised, so a token never enters the spec, its digest, the store or any output, and
//! rotating it changes nothing that is cached. The credentials live only in memory, in
//! [`IndexCredentials`]: it has no `Serialize`, and its `Debug` shows hosts and user names,
//! never a password. They reach uv through a private netrc file ([`IndexCredentials::to_netrc`])
//! and the wheel fetcher through an `Authorization` header sent only to the same origin.

use std::collections::BTreeMap;
use std::fmt;

/// Where credentials apply: scheme, host and port, as browsers scope them. Credentials for
/// `https://h` are never sent to `http://h` or to `https://h:8443`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
}

impl Origin {
    /// The origin of an `http(s)` URL; `None` for `file:` and other schemes that have no host.
    pub fn of(url: &url::Url) -> Option<Origin> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Origin {
            scheme: url.scheme().to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }

    /// `host` or `host:port` when the port is not the scheme's default: how registry auth
    /// files name a server.
    pub fn authority(&self) -> String {
        let default = match self.scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        match self.port {
            Some(port) if Some(port) != default => format!("{}:{port}", self.host),
            _ => self.host.clone(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority())
    }
}

/// A password or token: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The clear text, only for what sends it (an `Authorization` header, uv's netrc file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password for one origin, and where they came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexCredential {
    pub username: String,
    pub password: Secret,
    pub source: CredentialSource,
}

/// Where a credential was found, so an error can say which one was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The user info of a URL in the requirements (or on the command line).
    Url,
    /// A netrc file.
    Netrc(std::path::PathBuf),
    /// A registry auth file (containers auth.json, docker config.json).
    AuthFile(std::path::PathBuf),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Url => f.write_str("from the URL's user info"),
            CredentialSource::Netrc(path) => write!(f, "from {}", path.display()),
            CredentialSource::AuthFile(path) => write!(f, "from {}", path.display()),
        }
    }
}

/// Credentials by origin. The first one found for an origin wins (URL user info, then the
/// files the build looks in), so a later, different credential cannot replace it silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexCredentials {
    by_origin: BTreeMap<Origin, IndexCredential>,
}

impl IndexCredentials {
    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }

    pub fn has(&self, origin: &Origin) -> bool {
        self.by_origin.contains_key(origin)
    }

    /// Keeps `credential` for `origin` unless one is known already.
    pub fn insert_if_absent(&mut self, origin: Origin, credential: IndexCredential) {
        self.by_origin.entry(origin).or_insert(credential);
    }

    /// The credential for the origin of `url`, if any.
    pub fn for_url(&self, url: &url::Url) -> Option<&IndexCredential> {
        self.by_origin.get(&Origin::of(url)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Origin, &IndexCredential)> {
        self.by_origin.iter()
    }

    /// A netrc file with one `machine` entry per host, for uv (which reads the file `NETRC`
    /// names). netrc has no notion of scheme or port: when two origins share a host, the first
    /// (in origin order) is written. Every token is quoted, so a password with spaces, quotes or
    /// `#` reads back as it was.
    pub fn to_netrc(&self) -> String {
        let mut written: Vec<&str> = Vec::new();
        let mut out = String::new();
        for (origin, credential) in &self.by_origin {
            if written.contains(&origin.host.as_str()) {
                continue;
            }
            written.push(&origin.host);
            out.push_str(&format!(
                "machine {} login {} password {}\n",
                netrc_quote(&origin.host),
                netrc_quote(&credential.username),
                netrc_quote(credential.password.expose()),
            ));
        }
        out
    }
}

/// A netrc token in double quotes, `"` and `\` escaped (the lexer of Python's netrc, which uv's
/// netrc reader follows).
fn netrc_quote(token: &str) -> String {
    let mut out = String::with_capacity(token.len() + 2);
    out.push('"');
    for c in token.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Takes the user info out of `url`, returning the credential it held (percent-decoded, as a
/// client would send it). A URL with a user name and no password gives a credential with an
/// empty password, as pip does.
pub fn take_userinfo(url: &mut url::Url) -> Option<(Origin, IndexCredential)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let username = percent_decode(url.username());
    let password = percent_decode(url.password().unwrap_or(""));
    // Both setters only fail on URLs that cannot have user info, which cannot reach here.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let origin = Origin::of(url)?;
    Some((
        origin,
        IndexCredential {
            username,
            password: Secret::new(password),
            source: CredentialSource::Url,
        },
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text.get(i + 1..i + 3);
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with the user info of every `scheme://user:pass@host` in it replaced by `***`: for
/// error messages that quote what a user wrote, which may not even parse as a URL.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let authority_start = start + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn user_info_is_taken_out_and_decoded() {
        let mut u = url("https://ci%2Dbot:to%40ken@Host.example:443/simple/");
        let (origin, credential) = take_userinfo(&mut u).unwrap();
        assert_eq!(u.as_str(), "https://host.example/simple/");
        assert_eq!(origin.to_string(), "https://host.example");
        assert_eq!(credential.username, "ci-bot");
        assert_eq!(credential.password.expose(), "to@ken");
        assert!(take_userinfo(&mut url("https://h/simple")).is_none());
    }

    #[test]
    fn origins_keep_scheme_and_port_apart() {
        let mut creds = IndexCredentials::default();
        let (origin, credential) = take_userinfo(&mut url("http://u:p@h:8080/simple")).unwrap();
        creds.insert_if_absent(origin, credential);
        assert!(creds.for_url(&url("http://h:8080/files/a.whl")).is_some());
        assert!(creds.for_url(&url("http://h/files/a.whl")).is_none());
        assert!(creds.for_url(&url("https://h:8080/files/a.whl")).is_none());
        assert!(creds.for_url(&url("file:///h/a.whl")).is_none());
    }

    #[test]
    fn the_first_credential_for_an_origin_wins() {
        let mut creds = IndexCredentials::default();
        for u in ["https://a:first@h/x", "https://b:second@h/y"] {
            let (origin, credential) = take_userinfo(&mut url(u)).unwrap();
            creds.insert_if_absent(origin, credential);
        }
        let kept = creds.for_url(&url("https://h/z")).unwrap();
        assert_eq!(kept.password.expose(), "first");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut creds = IndexCredentials::default();
        let (origin, credential) = take_userinfo(&mut url("https://u:s3cr3t@h/x")).unwrap();
        creds.insert_if_absent(origin, credential);
        let shown = format!("{creds:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn netrc_tokens_are_quoted() {
        let mut creds = IndexCredentials::default();
        let (origin, credential) =
            take_userinfo(&mut url("https://u:a%20%22b%5C@h:8443/x")).unwrap();
        creds.insert_if_absent(origin, credential);
        assert_eq!(
            creds.to_netrc(),
            "machine \"h\" login \"u\" password \"a \\\"b\\\\\"\n"
        );
    }

    #[test]
    fn user_info_is_redacted_in_free_text() {
        assert_eq!(
            redact_userinfo("bad https://u:tok@h/x and http://h2/y, ftp://t@[bad"),
            "bad https://***@h/x and http://h2/y, ftp://***@[bad"
        );
        assert_eq!(redact_userinfo("no urls"), "no urls");
    }
}

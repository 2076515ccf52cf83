//! Test support for bearer-token registries (the distribution token protocol):
//!
//! - [`TokenServer`]: a real token server for docker-registry's own `auth: token` mode. It
//!   checks Basic credentials and hands out ES256-signed JWTs granting the scopes asked for;
//!   the registry verifies them against the certificate bundle the server writes.
//! - [`TokenGate`]: a gate in front of an auth-less registry that plays both parts itself, for
//!   what the real registry cannot be made to do (revoking every token at once).
//!
//! One request per connection (`Connection: close`), `Content-Length` bodies only: what
//! strata's client sends. Needs the `base64`, `rcgen` and `ring` crates, and `http.rs` beside it.
#![allow(dead_code)]

#[path = "http.rs"]
mod http;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Request;

use base64::Engine;

pub const SERVICE: &str = "strata-test-gate";

/// Who may get a token.
#[derive(Debug, Clone)]
pub enum TokenPolicy {
    /// Only Basic `user:password`.
    User { user: String, password: String },
    /// Anyone, without credentials (what public registries do for pulls).
    Anyone,
}

pub struct TokenGate {
    server: http::Server,
    state: Arc<GateState>,
}

struct GateState {
    upstream: SocketAddr,
    policy: TokenPolicy,
    /// Token → the scope it was issued for.
    tokens: Mutex<HashMap<String, String>>,
    issued: AtomicUsize,
    refused_tokens: AtomicUsize,
    challenges: AtomicUsize,
    /// The scopes clients asked tokens for, in order.
    asked_scopes: Mutex<Vec<String>>,
}

impl TokenGate {
    pub fn start(upstream: &str, policy: TokenPolicy) -> TokenGate {
        let state = Arc::new(GateState {
            upstream: http::upstream_addr("gate", upstream),
            policy,
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicUsize::new(0),
            refused_tokens: AtomicUsize::new(0),
            challenges: AtomicUsize::new(0),
            asked_scopes: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&state);
        let server = http::Server::start("gate listener", move |client| serve(client, &s));
        TokenGate { server, state }
    }

    /// `127.0.0.1:PORT`: use it as the registry host.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// Tokens handed out so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Token requests turned down (bad or missing credentials).
    pub fn tokens_refused(&self) -> usize {
        self.state.refused_tokens.load(Ordering::SeqCst)
    }

    /// 401 challenges sent to registry requests.
    pub fn challenges(&self) -> usize {
        self.state.challenges.load(Ordering::SeqCst)
    }

    pub fn asked_scopes(&self) -> Vec<String> {
        self.state.asked_scopes.lock().unwrap().clone()
    }

    /// Forgets every token, as a token server does when they expire.
    pub fn revoke_all(&self) {
        self.state.tokens.lock().unwrap().clear();
    }
}

fn serve(mut client: TcpStream, state: &GateState) {
    let Some(request) = http::read_request(&mut client) else {
        return;
    };
    let answer = if request.target.starts_with("/token") {
        issue_token(&request, state)
    } else if token_grants(&request, state) {
        // Without its token: the registry itself has no auth.
        http::forward(state.upstream, &request, &["authorization"])
    } else {
        state.challenges.fetch_add(1, Ordering::SeqCst);
        challenge(&request)
    };
    http::answer(client, &answer);
}

fn issue_token(request: &Request, state: &GateState) -> Vec<u8> {
    let scope = query_param(&request.target, "scope").unwrap_or_default();
    state.asked_scopes.lock().unwrap().push(scope.clone());
    if let TokenPolicy::User { user, password } = &state.policy {
        if !has_basic_credentials(request, user, password) {
            state.refused_tokens.fetch_add(1, Ordering::SeqCst);
            return bad_credentials();
        }
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("gate-token-{n}");
    state.tokens.lock().unwrap().insert(token.clone(), scope);
    let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
    response(200, "OK", &[("Content-Type", "application/json")], &body)
}

/// Whether the request's `Authorization` is Basic `user:password`.
fn has_basic_credentials(request: &Request, user: &str, password: &str) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    request.header("authorization") == Some(expected.as_str())
}

fn bad_credentials() -> Vec<u8> {
    response(401, "Unauthorized", &[], r#"{"details":"bad credentials"}"#)
}

/// Whether the request carries a token issued for its repository and an action that covers
/// its method.
fn token_grants(request: &Request, state: &GateState) -> bool {
    let Some(token) = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let tokens = state.tokens.lock().unwrap();
    let Some(scope) = tokens.get(token) else {
        return false;
    };
    let Some((repo, _)) = repo_and_action(request) else {
        // `/v2/` itself: any valid token will do.
        return true;
    };
    scope.split(' ').any(|s| {
        let mut parts = s.rsplitn(2, ':');
        let actions = parts.next().unwrap_or("");
        let resource = parts.next().unwrap_or("");
        resource == format!("repository:{repo}")
            && actions
                .split(',')
                .any(|a| a == needed_action(&request.method) || a == "*")
    })
}

fn needed_action(method: &str) -> &'static str {
    match method {
        "GET" | "HEAD" => "pull",
        "DELETE" => "delete",
        _ => "push",
    }
}

/// The repository a `/v2/<name>/{manifests,blobs,tags}/...` request is about.
fn repo_and_action(request: &Request) -> Option<(String, &'static str)> {
    let path = request.target.split('?').next()?;
    let rest = path.strip_prefix("/v2/")?;
    let cut = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()?;
    Some((rest[..cut].to_string(), needed_action(&request.method)))
}

fn challenge(request: &Request) -> Vec<u8> {
    let realm = format!("http://{}/token", local_host(request));
    let mut value = format!(r#"Bearer realm="{realm}",service="{SERVICE}""#);
    if let Some((repo, action)) = repo_and_action(request) {
        let actions = if action == "push" {
            "pull,push"
        } else {
            action
        };
        value.push_str(&format!(r#",scope="repository:{repo}:{actions}""#));
    }
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    response(
        401,
        "Unauthorized",
        &[
            ("WWW-Authenticate", value.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn local_host(request: &Request) -> String {
    request.header("host").unwrap_or("127.0.0.1").to_string()
}

fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// A token server for docker-registry's `auth: token`: append [`TokenServer::registry_config`]
/// to the registry's configuration.
pub struct TokenServer {
    server: http::Server,
    bundle: std::path::PathBuf,
    state: Arc<JwtState>,
}

pub const ISSUER: &str = "strata-test-issuer";

struct JwtState {
    user: String,
    password: String,
    key: ring::signature::EcdsaKeyPair,
    /// libtrust's key ID of the public key: how the registry finds the key in its bundle.
    key_id: String,
    issued: AtomicUsize,
    refused: AtomicUsize,
}

impl TokenServer {
    /// Generates a P-256 key and a self-signed certificate for it (the registry's
    /// `rootcertbundle`, written into `dir`) and starts serving tokens to `user`.
    pub fn start(dir: &std::path::Path, user: &str, password: &str) -> TokenServer {
        let key_pair = rcgen::KeyPair::generate().expect("generate token signing key");
        let cert = rcgen::CertificateParams::new(vec!["strata-test-token".to_string()])
            .expect("certificate parameters")
            .self_signed(&key_pair)
            .expect("self-sign token certificate");
        let bundle = dir.join("token-bundle.pem");
        std::fs::write(&bundle, cert.pem()).expect("write token certificate bundle");
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("load token signing key");
        let state = Arc::new(JwtState {
            user: user.to_string(),
            password: password.to_string(),
            key,
            key_id: libtrust_key_id(&key_pair.public_key_der()),
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let s = Arc::clone(&state);
        let server = http::Server::start("token server", move |client| serve_jwt(client, &s));
        TokenServer {
            server,
            bundle,
            state,
        }
    }

    /// The `auth: token` section that makes a registry trust this server.
    pub fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.server.addr(),
            self.bundle.display()
        )
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    pub fn tokens_refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

fn serve_jwt(mut client: TcpStream, state: &JwtState) {
    let Some(request) = http::read_request(&mut client) else {
        return;
    };
    http::answer(client, &jwt_answer(&request, state));
}

fn jwt_answer(request: &Request, state: &JwtState) -> Vec<u8> {
    if !has_basic_credentials(request, &state.user, &state.password) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return bad_credentials();
    }
    let scopes = query_params(&request.target, "scope");
    let token = sign_jwt(state, &scopes);
    state.issued.fetch_add(1, Ordering::SeqCst);
    let body = format!(r#"{{"access_token":"{token}","expires_in":300}}"#);
    response(200, "OK", &[("Content-Type", "application/json")], &body)
}

/// An ES256 JWT granting every action of every `repository:NAME:ACTIONS` scope.
fn sign_jwt(state: &JwtState, scopes: &[String]) -> String {
    let access: Vec<String> = scopes
        .iter()
        .filter_map(|scope| {
            let (resource, actions) = scope.rsplit_once(':')?;
            let (kind, name) = resource.split_once(':')?;
            let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
            Some(format!(
                r#"{{"type":"{kind}","name":"{name}","actions":[{}]}}"#,
                actions.join(",")
            ))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = state.issued.load(Ordering::SeqCst);
    let header = format!(r#"{{"typ":"JWT","alg":"ES256","kid":"{}"}}"#, state.key_id);
    let claims = format!(
        r#"{{"iss":"{ISSUER}","sub":"{}","aud":"{SERVICE}","exp":{},"nbf":{},"iat":{now},"jti":"jwt-{n}","access":[{}]}}"#,
        state.user,
        now + 300,
        now.saturating_sub(10),
        access.join(",")
    );
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = state
        .key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .expect("sign token");
    format!("{signing_input}.{}", b64(signature.as_ref()))
}

/// libtrust's key ID: SHA-256 of the DER public key, first 240 bits, base32 in groups of four
/// (`ABCD:EFGH:...`). docker-registry looks up the `kid` of a token this way.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let encoded = base32(&digest.as_ref()[..30]);
    let groups: Vec<&str> = encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding (30 bytes encode to exactly 48 characters).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn query_params(target: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
        .collect()
}

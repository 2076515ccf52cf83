//! The client against registries that misbehave on purpose: std-only servers on 127.0.0.1
//! that send the client's credentials elsewhere, stop answering, answer with far more than
//! they should, or label a sound blob with a wrong digest header.

#[path = "support/http.rs"]
mod http;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use http::{read_request, Request, Server};
use strata_oci::{BlobDescriptor, Digest};
use strata_registry::{Credentials, Registry, RegistryError, RegistryRepo, RetryPolicy};

/// A server that answers every request with `answer(request, connection)`.
fn serve(
    what: &'static str,
    answer: impl Fn(Request, TcpStream) + Send + Sync + 'static,
) -> Server {
    Server::start(what, move |mut client| {
        if let Some(request) = read_request(&mut client) {
            answer(request, client);
        }
    })
}

/// A server that counts the requests it gets and answers each with an empty 200.
fn counting(what: &'static str) -> (Server, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let server = serve(what, move |_, client| {
        seen.fetch_add(1, Ordering::SeqCst);
        reply(client, "200 OK", &[], b"{}");
    });
    (server, count)
}

fn reply(mut client: TcpStream, status: &str, headers: &[String], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = client.write_all(head.as_bytes());
    let _ = client.write_all(body);
    let _ = client.shutdown(Shutdown::Both);
}

/// Answers with a header promising `declared` bytes and writes zeros until the client goes
/// away; reports how many body bytes it got out.
fn flood(mut client: TcpStream, status: &str, declared: u64, written: &mpsc::Sender<u64>) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nContent-Type: application/json\r\n\r\n"
    );
    let _ = client.write_all(head.as_bytes());
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0u64;
    while sent < declared && client.write_all(&chunk).is_ok() {
        sent += chunk.len() as u64;
    }
    let _ = written.send(sent);
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
    }
}

fn client(server: &Server, credentials: Credentials) -> (Registry, RegistryRepo) {
    let host = server.addr().to_string();
    let registry = Registry::with_credentials(&host, false, credentials)
        .unwrap()
        .with_retry_policy(fast_retry());
    let repo = format!("{host}/env").parse().unwrap();
    (registry, repo)
}

fn alice() -> Credentials {
    Credentials::basic("alice", "s3cret")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn blob_of(bytes: &[u8]) -> BlobDescriptor {
    BlobDescriptor {
        media_type: "application/octet-stream".into(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
    }
}

/// How much a flooding server got out before the client stopped reading: well under the
/// 512 MiB it offered when the client reads only what it needs (the rest is socket buffers).
fn bytes_flooded(written: &mpsc::Receiver<u64>) -> u64 {
    written
        .recv_timeout(Duration::from_secs(60))
        .expect("the flooding server never stopped: the client read on")
}

const FLOOD: u64 = 512 * 1024 * 1024;
const READ_AT_MOST: u64 = 32 * 1024 * 1024;

#[test]
fn a_next_page_of_tags_on_another_host_is_refused_and_nothing_is_sent_there() {
    let (elsewhere, reached) = counting("another host");
    let other_port = elsewhere.addr().port();
    for link in [
        format!("<http://localhost:{other_port}/v2/env/tags/list?last=a>; rel=\"next\""),
        // Pasted after `http://HOST:PORT` as text, this made `localhost` the host and the
        // registry's address a user name.
        format!("<@localhost:{other_port}/v2/env/tags/list?last=a>; rel=\"next\""),
    ] {
        let registry_server = serve("registry", move |request, client| {
            if request.target == "/v2/env/tags/list" {
                let body = br#"{"name":"env","tags":["a"]}"#;
                reply(client, "200 OK", &[format!("Link: {link}")], body);
            } else {
                reply(client, "404 Not Found", &[], b"");
            }
        });
        let (registry, repo) = client(&registry_server, alice());
        let listed = runtime().block_on(registry.list_tags(&repo));
        assert!(listed.is_err(), "{listed:?}");
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "a request went to the other host"
    );
}

#[test]
fn an_upload_the_registry_sends_to_another_host_goes_there_without_credentials() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let elsewhere = serve("upload service", move |request, client| {
        let authorization = request.header("authorization").map(str::to_string);
        log.lock()
            .unwrap()
            .push((request.target.clone(), authorization, request.body));
        reply(client, "201 Created", &[], b"");
    });
    let other = elsewhere.addr();
    let registry_server = serve("registry", move |request, client| {
        if request.header("authorization").is_none() {
            let challenge = "WWW-Authenticate: Basic realm=\"reg\"".to_string();
            return reply(client, "401 Unauthorized", &[challenge], b"");
        }
        if request.method == "POST" {
            let location = format!("Location: http://{other}/upload/1?_state=x");
            return reply(client, "202 Accepted", &[location], b"");
        }
        reply(client, "404 Not Found", &[], b"")
    });
    let (registry, repo) = client(&registry_server, alice());
    let pushed = runtime().block_on(registry.push_blob_bytes(&repo, b"{}"));
    assert!(pushed.is_ok(), "{pushed:?}");
    let seen = seen.lock().unwrap();
    let [(target, authorization, body)] = seen.as_slice() else {
        panic!("{seen:?}");
    };
    assert_eq!(authorization, &None, "the credentials went to another host");
    assert_eq!(body, b"{}");
    let digest = Digest::of(b"{}").to_string().replace(':', "%3A");
    assert_eq!(target, &format!("/upload/1?_state=x&digest={digest}"));
}

#[test]
fn an_absolute_next_page_link_names_the_refusal() {
    let registry_server = serve("registry", |_, client| {
        let link = "Link: <http://localhost:9/v2/env/tags/list?last=a>; rel=\"next\"".to_string();
        reply(client, "200 OK", &[link], br#"{"name":"env","tags":["a"]}"#);
    });
    let (registry, repo) = client(&registry_server, alice());
    let err = runtime().block_on(registry.list_tags(&repo)).unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("leads away"), "{err}");
}

#[test]
fn credentials_go_to_no_plain_http_token_server_on_another_host() {
    let (token_server, reached) = counting("token server");
    let realm = format!("http://localhost:{}/token", token_server.addr().port());
    let registry_server = serve("registry", move |_, client| {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\"");
        reply(client, "401 Unauthorized", &[challenge], b"");
    });
    let (registry, repo) = client(&registry_server, alice());
    let rt = runtime();
    let manifest = rt.block_on(registry.pull_manifest(&repo, &"v1".parse().unwrap()));
    let err = manifest.unwrap_err();
    assert!(err.to_string().contains("were not sent"), "{err}");
    // Blob calls too.
    let blob = rt.block_on(registry.pull_blob_bytes(&repo, &blob_of(b"x")));
    let err = blob.unwrap_err();
    assert!(err.to_string().contains("were not sent"), "{err}");
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the token server was asked"
    );
}

#[test]
fn a_registry_that_stops_answering_is_reported_stalled() {
    let silent = blob_of(&[8u8; 100]);
    let silent_path = format!("/blobs/{}", silent.digest);
    let registry_server = serve("stalling registry", move |request, client| {
        if request.target == "/v2/" {
            return reply(client, "200 OK", &[], b"{}");
        }
        if request.target.contains("/blobs/") && !request.target.ends_with(&silent_path) {
            // Headers and a tenth of the blob, then nothing.
            let mut client = client;
            let _ = client.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            thread::sleep(Duration::from_secs(30));
            return;
        }
        thread::sleep(Duration::from_secs(30));
        drop(client);
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let registry = registry.with_stall_timeout(Duration::from_millis(500));
    let rt = runtime();
    let manifest = rt.block_on(registry.pull_manifest(&repo, &"v1".parse().unwrap()));
    assert!(
        matches!(manifest, Err(RegistryError::Stalled { .. })),
        "{manifest:?}"
    );
    let blob = rt.block_on(registry.pull_blob_bytes(&repo, &blob_of(&[7u8; 100])));
    assert!(
        matches!(blob, Err(RegistryError::Stalled { .. })),
        "{blob:?}"
    );
    let message = blob.unwrap_err().to_string();
    assert!(message.contains("STRATA_REGISTRY_TIMEOUT"), "{message}");
    // A download whose answer never starts.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let blob = rt.block_on(registry.pull_blob_to_file(&repo, &silent, &dest));
    assert!(
        matches!(blob, Err(RegistryError::Stalled { .. })),
        "{blob:?}"
    );
    assert!(!dest.exists());
}

#[test]
fn a_slow_download_that_keeps_coming_is_not_stalled() {
    let content = [9u8; 100];
    let registry_server = serve("slow registry", |request, client| {
        if !request.target.contains("/blobs/") {
            return reply(client, "200 OK", &[], b"{}");
        }
        // Ten parts, each well within the stall timeout, the whole well past it.
        let mut client = client;
        let _ = client.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        for part in [9u8; 100].chunks(10) {
            thread::sleep(Duration::from_millis(150));
            if client
                .write_all(part)
                .and_then(|()| client.flush())
                .is_err()
            {
                return;
            }
        }
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let registry = registry.with_stall_timeout(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let pulled = runtime().block_on(registry.pull_blob_to_file(&repo, &blob_of(&content), &dest));
    assert!(pulled.is_ok(), "{pulled:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}

#[test]
fn an_error_answer_is_read_only_as_far_as_an_error_document_goes() {
    let (sender, written) = mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    let registry_server = serve("flooding registry", move |_, client| {
        let sender = sender.lock().unwrap().clone();
        flood(client, "404 Not Found", FLOOD, &sender);
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let manifest = runtime().block_on(registry.pull_manifest(&repo, &"v1".parse().unwrap()));
    assert!(
        matches!(
            manifest,
            Err(RegistryError::Http {
                status: Some(404),
                ..
            })
        ),
        "{manifest:?}"
    );
    drop(registry);
    let sent = bytes_flooded(&written);
    assert!(
        sent < READ_AT_MOST,
        "the client read {sent} bytes of an error answer"
    );
}

#[test]
fn a_token_answer_is_read_only_up_to_its_limit() {
    let (sender, written) = mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    let token_server = serve("flooding token server", move |_, client| {
        let sender = sender.lock().unwrap().clone();
        flood(client, "200 OK", FLOOD, &sender);
    });
    let realm = format!("http://{}/token", token_server.addr());
    let registry_server = serve("registry", move |_, client| {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\"");
        reply(client, "401 Unauthorized", &[challenge], b"");
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let manifest = runtime().block_on(registry.pull_manifest(&repo, &"v1".parse().unwrap()));
    let err = manifest.unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err:?}");
    drop(registry);
    let sent = bytes_flooded(&written);
    assert!(
        sent < READ_AT_MOST,
        "the client read {sent} bytes of a token answer"
    );
}

#[test]
fn a_sound_blob_under_a_wrong_digest_header_is_taken_as_sound() {
    let bytes = b"the blob's own bytes".to_vec();
    let blob = blob_of(&bytes);
    let wrong = Digest::of(b"another blob");
    let served = bytes.clone();
    let registry_server = serve("registry", move |request, client| {
        if request.target == "/v2/" {
            return reply(client, "200 OK", &[], b"{}");
        }
        let header = format!("Docker-Content-Digest: {wrong}");
        reply(client, "200 OK", &[header], &served);
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let rt = runtime();
    let pulled = rt.block_on(registry.pull_blob_bytes(&repo, &blob)).unwrap();
    assert_eq!(pulled, bytes);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    rt.block_on(registry.pull_blob_to_file(&repo, &blob, &dest))
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // Bytes that are not the blob asked for are refused, whatever the header says, and the
    // error names the digest asked for (not the header's) and the one the bytes have.
    let asked = BlobDescriptor {
        digest: Digest::of(b"another blob, of 20 B"),
        ..blob.clone()
    };
    let err = rt
        .block_on(registry.pull_blob_bytes(&repo, &asked))
        .unwrap_err();
    match err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, asked.digest);
            assert_eq!(actual, blob.digest);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_manifest_put_is_waited_for_past_the_stall_timeout() {
    let registry_server = serve("slow registry", |request, client| {
        if request.method == "PUT" {
            // Push hooks, slow storage: the answer comes after the stall timeout.
            thread::sleep(Duration::from_secs(2));
            let digest = format!("Docker-Content-Digest: {}", Digest::of(&request.body));
            return reply(client, "201 Created", &[digest], b"");
        }
        reply(client, "404 Not Found", &[], b"");
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let registry = registry.with_stall_timeout(Duration::from_millis(500));
    let manifest = br#"{"schemaVersion":2}"#;
    let pushed = runtime().block_on(registry.push_manifest(
        &repo,
        &"v1".parse().unwrap(),
        manifest,
        "application/vnd.oci.image.manifest.v1+json",
    ));
    assert_eq!(pushed.unwrap(), Digest::of(manifest));
}

#[test]
fn an_error_answer_whose_body_stops_is_not_waited_for() {
    let registry_server = serve("error then silence", |request, client| {
        if !request.target.contains("/blobs/") {
            return reply(client, "200 OK", &[], b"{}");
        }
        // An error's head, a tenth of its body, then nothing.
        let mut client = client;
        let _ = client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n{\"errors\":",
        );
        let _ = client.flush();
        thread::sleep(Duration::from_secs(20));
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let registry = registry.with_stall_timeout(Duration::from_millis(500));
    let blob = blob_of(&[7u8; 100]);
    let pulled = runtime().block_on(async {
        let pull = registry.pull_blob_bytes(&repo, &blob);
        tokio::time::timeout(Duration::from_secs(10), pull).await
    });
    let pulled = pulled.expect("hung past 10 s with a 500 ms stall timeout");
    assert!(
        matches!(
            pulled,
            Err(RegistryError::Http {
                status: Some(500),
                ..
            })
        ),
        "{pulled:?}"
    );
}

/// A registry that asks for Basic credentials, then redirects blob downloads to `location`.
fn redirecting_registry(location: String) -> Server {
    serve("registry", move |request, client| {
        if request.header("authorization").is_none() {
            let challenge = "WWW-Authenticate: Basic realm=\"r\"".to_string();
            return reply(client, "401 Unauthorized", &[challenge], b"");
        }
        let location = format!("Location: {location}");
        reply(client, "307 Temporary Redirect", &[location], b"");
    })
}

#[test]
fn credentials_do_not_follow_a_blob_redirect_to_another_host() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let content = b"redirected blob".to_vec();
    let body = content.clone();
    let storage = serve("storage", move |request, client| {
        let authorization = request.header("authorization").map(str::to_string);
        seen_tx.lock().unwrap().send(authorization).unwrap();
        reply(client, "200 OK", &[], &body);
    });
    let location = format!("http://localhost:{}/bucket/blob", storage.addr().port());
    let registry_server = redirecting_registry(location);
    let (registry, repo) = client(&registry_server, alice());
    let pulled = runtime().block_on(registry.pull_blob_bytes(&repo, &blob_of(&content)));
    assert_eq!(pulled.unwrap(), content);
    let authorization = seen_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(authorization, None);
}

#[test]
fn a_challenge_from_the_host_a_blob_is_redirected_to_gets_no_credentials() {
    let (token_server, asked) = counting("token server");
    // On the registry's host (another port), so that plain HTTP passes the realm check: an
    // https realm on any host would in real life.
    let realm = format!("http://127.0.0.1:{}/token", token_server.addr().port());
    let storage = serve("storage", move |_, client| {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"s\"");
        reply(client, "401 Unauthorized", &[challenge], b"");
    });
    let location = format!("http://localhost:{}/bucket/blob", storage.addr().port());
    let registry_server = redirecting_registry(location);
    let (registry, repo) = client(&registry_server, alice());
    let rt = runtime();
    for _ in 0..2 {
        let pulled = rt.block_on(registry.pull_blob_bytes(&repo, &blob_of(b"x")));
        assert!(pulled.is_err(), "{pulled:?}");
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "the storage host's realm was asked"
    );
}

/// A registry that wants a bearer token from its own `/token` (one that expires too soon to be
/// kept), takes uploads with a PUT answered `put_status`, and answers a mount with
/// `mount_status`; it records each request's target and whether it carried the token.
fn token_registry(
    put_status: &'static str,
    mount_status: &'static str,
) -> (Server, Arc<std::sync::Mutex<Vec<(String, String, bool)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = Server::start("token registry", move |mut client| {
        let Some(request) = read_request(&mut client) else {
            return;
        };
        let port = client.local_addr().unwrap().port();
        let authorized = request.header("authorization") == Some("Bearer short-lived");
        let entry = (request.method.clone(), request.target.clone(), authorized);
        log.lock().unwrap().push(entry);
        if request.target.starts_with("/token") {
            let token = br#"{"token":"short-lived","expires_in":5}"#;
            return reply(client, "200 OK", &[], token);
        }
        if !authorized {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"reg\",scope=\"repository:env:pull,push repository:other:pull\""
            );
            return reply(client, "401 Unauthorized", &[challenge], b"");
        }
        match request.method.as_str() {
            "POST" if request.target.contains("mount=") => reply(client, mount_status, &[], b""),
            "POST" => {
                let location = "Location: /v2/env/blobs/uploads/1?_state=s".to_string();
                reply(client, "202 Accepted", &[location], b"")
            }
            "PUT" => reply(client, put_status, &[], b""),
            _ => reply(client, "404 Not Found", &[], b""),
        }
    });
    (server, seen)
}

#[test]
fn an_upload_closes_with_the_credentials_it_was_opened_with() {
    let (server, seen) = token_registry("201 Created", "202 Accepted");
    let (registry, repo) = client(&server, alice());
    let pushed = runtime().block_on(registry.push_blob_bytes(&repo, b"{}"));
    assert!(pushed.is_ok(), "{pushed:?}");
    let seen = seen.lock().unwrap();
    let put: Vec<_> = seen.iter().filter(|(m, _, _)| m == "PUT").collect();
    assert_eq!(put.len(), 1, "{seen:?}");
    assert!(put[0].2, "the PUT went without the token: {seen:?}");
    // The challenge's two scopes (a mount's) went as two parameters.
    let token = seen
        .iter()
        .find(|(_, t, _)| t.starts_with("/token"))
        .unwrap();
    assert_eq!(token.1.matches("scope=").count(), 2, "{}", token.1);
}

#[test]
fn an_upload_closed_with_another_success_status_is_taken() {
    let (server, _) = token_registry("204 No Content", "202 Accepted");
    let (registry, repo) = client(&server, alice());
    let pushed = runtime().block_on(registry.push_blob_bytes(&repo, b"{}"));
    assert!(pushed.is_ok(), "{pushed:?}");
}

#[test]
fn a_mount_the_registry_refuses_is_a_declined_one() {
    for refusal in ["403 Forbidden", "404 Not Found"] {
        let (server, _) = token_registry("201 Created", refusal);
        let (registry, repo) = client(&server, alice());
        let from = format!("{}/other", server.addr()).parse().unwrap();
        let mounted = runtime().block_on(registry.mount_blob(&repo, &from, &Digest::of(b"{}")));
        assert!(matches!(mounted, Ok(false)), "{refusal}: {mounted:?}");
    }
}

#[test]
fn a_registry_that_never_answers_an_upload_is_reported_stalled() {
    let registry_server = serve("silent on POST", |request, client| {
        if request.method == "POST" {
            thread::sleep(Duration::from_secs(20));
        }
        drop(client);
    });
    let (registry, repo) = client(&registry_server, Credentials::Anonymous);
    let registry = registry.with_stall_timeout(Duration::from_millis(500));
    let pushed = runtime().block_on(async {
        let push = registry.push_blob_bytes(&repo, b"{}");
        tokio::time::timeout(Duration::from_secs(10), push).await
    });
    let pushed = pushed.expect("hung past 10 s with a 500 ms stall timeout");
    assert!(
        matches!(pushed, Err(RegistryError::Stalled { .. })),
        "{pushed:?}"
    );
}

#[test]
fn another_hosts_refusal_of_an_upload_is_not_a_refusal_of_the_credentials() {
    let elsewhere = serve("refusing upload service", |_, client| {
        let body = br#"{"errors":[{"code":"DENIED","message":"signature expired"}]}"#;
        reply(client, "403 Forbidden", &[], body);
    });
    let other = elsewhere.addr();
    let registry_server = serve("registry", move |request, client| {
        if request.header("authorization").is_none() {
            let challenge = "WWW-Authenticate: Basic realm=\"reg\"".to_string();
            return reply(client, "401 Unauthorized", &[challenge], b"");
        }
        let location = format!("Location: http://{other}/upload/1");
        reply(client, "202 Accepted", &[location], b"")
    });
    let (registry, repo) = client(&registry_server, alice());
    let pushed = runtime().block_on(registry.push_blob_bytes(&repo, b"{}"));
    let Err(RegistryError::Http {
        status: Some(403),
        code,
        action,
        ..
    }) = &pushed
    else {
        panic!("{pushed:?}");
    };
    assert_eq!(code.as_deref(), Some("DENIED"));
    assert!(action.contains(&other.to_string()), "{action}");
}

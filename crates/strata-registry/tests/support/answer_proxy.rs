//! Test support: an HTTP proxy on 127.0.0.1 in front of a registry that forwards each request
//! and, for the requests a rule picks, answers with an error of the test's choosing: instead of
//! forwarding (the registry never sees the request) or after forwarding (the registry did the
//! work, the client hears a refusal). Real registries refuse this way under races that a test
//! cannot time; the proxy makes those answers deterministic.
//!
//! One request per connection (every answer says `Connection: close`), `Content-Length` bodies
//! only: what strata's client sends. Std only, with `http.rs` beside it.
#![allow(dead_code)]

#[path = "http.rs"]
mod http;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The request a rule looks at (`method`, `target`: path and query as sent, percent-encoded).
pub use http::Request;

/// A made-up registry answer.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone)]
pub enum Answer {
    Forward,
    /// Answer without forwarding.
    Refuse(Refusal),
    /// Forward, drop the registry's answer, answer this instead.
    ForwardThenRefuse(Refusal),
    /// Forward, and pass on the registry's answer cut in the middle of its body (its
    /// `Content-Length` kept): a connection lost mid-download.
    ForwardTruncated,
    /// Keep the connection and answer nothing (for two minutes): a registry that stalls.
    Stall,
}

type Rule = dyn Fn(&Request) -> Answer + Send + Sync;

pub struct AnswerProxy {
    server: http::Server,
    refused: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl AnswerProxy {
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> AnswerProxy {
        let upstream = http::upstream_addr("proxy", upstream);
        let refused = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Rule> = Arc::new(rule);
        let (r, s) = (Arc::clone(&refused), Arc::clone(&seen));
        let server = http::Server::start("proxy listener", move |client| {
            serve(client, upstream, &*rule, &r, &s)
        });
        AnswerProxy {
            server,
            refused,
            seen,
        }
    }

    /// A proxy that forwards everything: to count and list a client's requests.
    pub fn forwarding(upstream: &str) -> AnswerProxy {
        AnswerProxy::start(upstream, |_| Answer::Forward)
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.server.addr().to_string()
    }

    /// How many requests got a made-up answer.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// `(method, target)` of every request received, in arrival order; takes them, so the
    /// next call lists only later ones. (Each connection carries one request: the proxy
    /// answers `Connection: close`.)
    pub fn take_requests(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A registry-style error body: `{"errors":[{"code","message","detail"}]}`.
pub fn error_body(code: &str, message: &str, detail: &str) -> String {
    format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":"{detail}"}}]}}"#)
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    rule: &Rule,
    refused: &AtomicUsize,
    seen: &Mutex<Vec<(String, String)>>,
) {
    let Some(request) = http::read_request(&mut client) else {
        return;
    };
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((request.method.clone(), request.target.clone()));
    let refusal = match rule(&request) {
        Answer::Forward => None,
        Answer::ForwardTruncated => {
            let response = http::forward(upstream, &request, &[]);
            refused.fetch_add(1, Ordering::SeqCst);
            http::answer(client, truncated(&response));
            return;
        }
        Answer::Refuse(r) => Some(r),
        Answer::Stall => {
            refused.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_secs(120));
            drop(client);
            return;
        }
        Answer::ForwardThenRefuse(r) => {
            // The registry's answer is read in full, so its work is done, then dropped.
            http::forward(upstream, &request, &[]);
            Some(r)
        }
    };
    let response = match refusal {
        None => http::forward(upstream, &request, &[]),
        Some(r) => {
            refused.fetch_add(1, Ordering::SeqCst);
            render(&r)
        }
    };
    http::answer(client, &response);
}

/// `response` with half its body: the head, then the first half of what follows it.
fn truncated(response: &[u8]) -> &[u8] {
    let head = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    &response[..head + (response.len() - head) / 2]
}

fn render(refusal: &Refusal) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} Refused\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        refusal.status,
        refusal.body.len(),
        refusal.body
    )
    .into_bytes()
}

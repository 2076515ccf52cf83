//! Test support: an HTTP proxy on 127.0.0.1 in front of a registry that forwards each request
//! and, for the requests a rule picks, answers with an error of the test's choosing: instead of
//! forwarding (the registry never sees the request) or after forwarding (the registry did the
//! work, the client hears a refusal). Real registries refuse this way under races that a test
//! cannot time; the proxy makes those answers deterministic.
//!
//! One request per connection (every answer says `Connection: close`), `Content-Length` bodies
//! only: what strata's client sends. Self-contained (std only).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The parts of a request a rule looks at.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (the query is percent-encoded: `digest=sha256%3A...`).
    pub target: String,
}

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
}

type Rule = dyn Fn(&Request) -> Answer + Send + Sync;

pub struct AnswerProxy {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl AnswerProxy {
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> AnswerProxy {
        let upstream: SocketAddr = upstream
            .parse()
            .unwrap_or_else(|e| panic!("proxy upstream {upstream:?}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy listener address");
        let refused = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let (r, s) = (Arc::clone(&refused), Arc::clone(&stopping));
        let accept_thread = thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (rule, refused) = (Arc::clone(&rule), Arc::clone(&r));
                thread::spawn(move || serve(client, upstream, &*rule, &refused));
            }
        });
        AnswerProxy {
            addr,
            refused,
            stopping,
            accept_thread: Some(accept_thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests got a made-up answer.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
    }
}

/// A registry-style error body: `{"errors":[{"code","message","detail"}]}`.
pub fn error_body(code: &str, message: &str, detail: &str) -> String {
    format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":"{detail}"}}]}}"#)
}

fn serve(mut client: TcpStream, upstream: SocketAddr, rule: &Rule, refused: &AtomicUsize) {
    let Some((request, head, body)) = read_request(&mut client) else {
        return;
    };
    let answer = rule(&request);
    let refusal = match answer {
        Answer::Forward => None,
        Answer::Refuse(r) => Some(r),
        Answer::ForwardThenRefuse(r) => {
            // The registry's answer is read in full, so its work is done, then dropped.
            forward(upstream, &head, &body);
            Some(r)
        }
    };
    let response = match refusal {
        None => forward(upstream, &head, &body),
        Some(r) => {
            refused.fetch_add(1, Ordering::SeqCst);
            render(&r)
        }
    };
    let _ = client.write_all(&response);
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads one request: its line, its head (headers re-sent upstream with `Connection: close`)
/// and its whole body, so a refusal never cuts a client still sending.
fn read_request(client: &mut TcpStream) -> Option<(Request, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let request = Request {
        method: first.next()?.to_string(),
        target: first.next()?.to_string(),
    };
    let mut head = String::new();
    let mut length = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        assert_ne!(
            name, "transfer-encoding",
            "chunked requests are not supported"
        );
        if name == "content-length" {
            length = value.trim().parse().ok()?;
        }
        if name != "connection" {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head = format!(
        "{} {} HTTP/1.1\r\n{head}Connection: close\r\n\r\n",
        request.method, request.target
    );
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some((request, head, body))
}

/// Sends the request upstream and returns the whole answer (the registry closes after it).
fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut response = Vec::new();
    if let Ok(mut server) = TcpStream::connect(upstream) {
        let sent = server
            .write_all(head.as_bytes())
            .and_then(|()| server.write_all(body));
        if sent.is_ok() {
            let _ = server.read_to_end(&mut response);
        }
    }
    response
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

//! Test support shared by the std-only HTTP servers of the tests (the answer proxy, the token
//! gate and token server): an accept loop that stops on drop, reading one request, and
//! forwarding it upstream.
//!
//! One request per connection (`Connection: close`), `Content-Length` bodies only: what
//! strata's client sends. Std only; include it next to its users with
//! `#[path = "http.rs"] mod http;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// A listener on 127.0.0.1 that serves each connection on its own thread; stops on drop.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a free port and hands every connection to `serve`; `what` names the server in
    /// panics.
    pub fn start(what: &str, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {what}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{what} address: {e}"));
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let serve = Arc::new(serve);
        let accept_thread = thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let serve = Arc::clone(&serve);
                thread::spawn(move || serve(client));
            }
        });
        Server {
            addr,
            stopping,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
    }
}

/// `upstream` (`host:port`) as an address; panics naming `what` if it is not one.
pub fn upstream_addr(what: &str, upstream: &str) -> SocketAddr {
    upstream
        .parse()
        .unwrap_or_else(|e| panic!("{what} upstream {upstream:?}: {e}"))
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (the query is percent-encoded: `digest=sha256%3A...`).
    pub target: String,
    /// Names and values trimmed, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request: its line, its headers and its whole body, so an answer never cuts a
/// client still sending.
pub fn read_request(client: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        assert!(
            !name.eq_ignore_ascii_case("transfer-encoding"),
            "chunked requests are not supported"
        );
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// Sends the request upstream with `Connection: close` and without the headers named in
/// `drop_headers`, and returns the whole answer (the upstream closes after it); empty if the
/// upstream cannot be reached.
pub fn forward(upstream: SocketAddr, request: &Request, drop_headers: &[&str]) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in &request.headers {
        let dropped = name.eq_ignore_ascii_case("connection")
            || drop_headers.iter().any(|d| name.eq_ignore_ascii_case(d));
        if !dropped {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut answer = Vec::new();
    if let Ok(mut server) = TcpStream::connect(upstream) {
        let sent = server
            .write_all(head.as_bytes())
            .and_then(|()| server.write_all(&request.body));
        if sent.is_ok() {
            let _ = server.read_to_end(&mut answer);
        }
    }
    answer
}

/// Writes `answer` to the client and closes the connection.
pub fn answer(mut client: TcpStream, answer: &[u8]) {
    let _ = client.write_all(answer);
    let _ = client.shutdown(Shutdown::Both);
}

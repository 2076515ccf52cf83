//! Test support: a real CNCF distribution registry (`docker-registry serve`) on 127.0.0.1, and a
//! fault-injecting TCP proxy to put in front of it.
//!
//! Self-contained (std and `tempfile` only) so any test crate of the workspace can include it:
//! `#[path = "../crates/strata-registry/tests/support/registry.rs"] mod registry;`
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const REGISTRY_BINARY: &str = "docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `docker-registry` process with its storage in a temporary directory; killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct TestRegistryOptions {
    /// `storage.delete.enabled`: whether `DELETE` of manifests and blobs is allowed.
    pub delete_enabled: bool,
}

impl Default for TestRegistryOptions {
    fn default() -> Self {
        TestRegistryOptions {
            delete_enabled: true,
        }
    }
}

impl TestRegistry {
    /// A registry that allows deletes.
    pub fn start() -> TestRegistry {
        TestRegistry::start_with(TestRegistryOptions::default())
    }

    /// A registry with `storage.delete.enabled: false`, as registries are by default.
    pub fn without_deletes() -> TestRegistry {
        TestRegistry::start_with(TestRegistryOptions {
            delete_enabled: false,
        })
    }

    pub fn start_with(options: TestRegistryOptions) -> TestRegistry {
        TestRegistry::start_with_config(options, "")
    }

    /// A registry whose configuration gets `extra` appended: top-level YAML sections such as
    /// `auth:` (a registry that answers `/v2/` with 401 counts as up).
    pub fn start_with_config(options: TestRegistryOptions, extra: &str) -> TestRegistry {
        // The free port is found by binding and releasing it; another process can grab it in
        // between, so a start that dies early is tried again on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            match TestRegistry::try_start(options, extra) {
                Ok(registry) => return registry,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start {REGISTRY_BINARY}: {last_error}");
    }

    fn try_start(options: TestRegistryOptions, extra: &str) -> Result<TestRegistry, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).map_err(|e| format!("mkdir {}: {e}", storage.display()))?;
        let config = dir.path().join("config.yml");
        let yaml = format!("{}{extra}", config_yaml(&storage, port, options));
        fs::write(&config, yaml).map_err(|e| format!("write {}: {e}", config.display()))?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn {REGISTRY_BINARY}: {e}"))?;
        let mut registry = TestRegistry { child, dir, port };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Polls `GET /v2/` until it answers 200, or fails with the registry's log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if get_v2_is_ok(self.port) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no answer on /v2/ within {START_TIMEOUT:?}: {}",
            self.log()
        ))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage root (`rootdirectory`).
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Total size of the files under the blob store: what the registry keeps on disk.
    pub fn storage_bytes(&self) -> u64 {
        dir_bytes(&self.storage_root().join("docker/registry/v2/blobs"))
    }

    /// What the registry wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's configuration file (what `serve` and `garbage-collect` read).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Stops the registry process; its storage stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `docker-registry garbage-collect` on the storage (stop the registry first: blob
    /// collection while uploads run can lose layers). Returns its output; panics on failure.
    pub fn garbage_collect(&self) -> String {
        let out = Command::new(REGISTRY_BINARY)
            .arg("garbage-collect")
            .arg(self.config_path())
            .output()
            .unwrap_or_else(|e| panic!("spawn {REGISTRY_BINARY} garbage-collect: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "garbage-collect failed: {text}");
        text
    }

    /// Starts the registry again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap_or_else(|e| panic!("open registry log: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("clone log: {e}"));
        self.child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REGISTRY_BINARY}: {e}"));
        if let Err(e) = self.wait_ready() {
            panic!("restarted {REGISTRY_BINARY}: {e}");
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(storage: &Path, port: u16, options: TestRegistryOptions) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: {delete}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
",
        root = storage.display(),
        delete = options.delete_enabled,
    )
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    Ok(port)
}

fn get_v2_is_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && (head.ends_with(b" 200") || head.ends_with(b" 401"))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// A TCP proxy on 127.0.0.1 that forwards both ways until the client has sent `cut_after`
/// bytes (across all connections); then it cuts every connection and drops new ones at once,
/// until [`FaultProxy::reset`]. Simulates a registry that dies in the middle of a push.
///
/// [`FaultProxy::cutting_each_connection`] instead cuts only a connection that has carried
/// more than its budget (a large upload), and lets the others through: deterministic about
/// which blobs land, whatever the timing.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept_thread: Option<JoinHandle<()>>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// `u64::MAX` means never cut.
    cut_after: AtomicU64,
    /// Whether `cut_after` counts per connection (and cuts only that one).
    per_connection: bool,
    client_bytes: AtomicU64,
    tripped: AtomicBool,
    stopping: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`), cutting after `cut_after` client bytes (`None`:
    /// never).
    pub fn start(upstream: &str, cut_after: Option<u64>) -> FaultProxy {
        FaultProxy::spawn(upstream, cut_after, false)
    }

    /// Proxies to `upstream`, cutting any connection once it has carried more than `budget`
    /// client bytes; other connections, and new ones, go through.
    pub fn cutting_each_connection(upstream: &str, budget: u64) -> FaultProxy {
        FaultProxy::spawn(upstream, Some(budget), true)
    }

    fn spawn(upstream: &str, cut_after: Option<u64>, per_connection: bool) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .parse()
            .unwrap_or_else(|e| panic!("proxy upstream {upstream:?}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy listener address");
        let state = Arc::new(ProxyState {
            upstream,
            cut_after: AtomicU64::new(cut_after.unwrap_or(u64::MAX)),
            per_connection,
            client_bytes: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accept_state = Arc::clone(&state);
        let accept_thread = thread::spawn(move || accept_loop(listener, accept_state));
        FaultProxy {
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Whether the cut happened.
    pub fn is_tripped(&self) -> bool {
        self.state.tripped.load(Ordering::SeqCst)
    }

    /// Client-to-server bytes forwarded since the start or the last reset.
    pub fn client_bytes(&self) -> u64 {
        self.state.client_bytes.load(Ordering::SeqCst)
    }

    /// Accepts connections again, with a new budget.
    pub fn reset(&self, cut_after: Option<u64>) {
        self.state.client_bytes.store(0, Ordering::SeqCst);
        self.state
            .cut_after
            .store(cut_after.unwrap_or(u64::MAX), Ordering::SeqCst);
        self.state.tripped.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.state.cut_all();
        // Wakes the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
    }
}

impl ProxyState {
    fn cut_all(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for c in connections.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn track(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.push(clone);
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<ProxyState>) {
    for incoming in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if state.tripped.load(Ordering::SeqCst) && !state.per_connection {
            // Refused: closed before a byte is read.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(state.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        state.track(&client);
        state.track(&server);
        let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let up_state = Arc::clone(&state);
        thread::spawn(move || pump_client_to_server(client_read, server, &up_state));
        thread::spawn(move || pump_server_to_client(server_read, client));
    }
}

fn pump_client_to_server(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    let mut this_connection = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before_all = state.client_bytes.fetch_add(n as u64, Ordering::SeqCst);
        let before = if state.per_connection {
            this_connection
        } else {
            before_all
        };
        this_connection += n as u64;
        let limit = state.cut_after.load(Ordering::SeqCst);
        let allowed = limit.saturating_sub(before).min(n as u64) as usize;
        if allowed > 0 && to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        if allowed < n {
            state.tripped.store(true, Ordering::SeqCst);
            if state.per_connection {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            } else {
                state.cut_all();
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_server_to_client(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

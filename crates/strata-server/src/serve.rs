//! Listening: plain HTTP on a loopback address only (tokens would cross the network in the
//! clear otherwise), TLS (rustls) with a certificate and key from PEM files anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::api::{router, AppState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid --listen {0:?}: expected IP:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8443")]
    Address(String),
    #[error("refusing plain HTTP on {0}, which is not a loopback address: tokens would cross the network in the clear; give --tls-cert and --tls-key")]
    PlainNotLoopback(SocketAddr),
    #[error("reading {}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server's store and configuration")]
    Open(#[source] strata_agent::ClientError),
    #[error(transparent)]
    Config(#[from] strata_config::ConfigError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// What `strata server` was asked for.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    /// Certificate chain and private key, PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub root: PathBuf,
    pub project: PathBuf,
}

/// Serves until the process ends; `ready` is told the bound address (port 0 picks one).
pub fn serve(
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr, bool),
) -> Result<(), ServeError> {
    let addr: SocketAddr = options
        .listen
        .parse()
        .map_err(|_| ServeError::Address(options.listen.clone()))?;
    if options.tls.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::PlainNotLoopback(addr));
    }
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    // Fail now, not at the first request, on a broken store or configuration.
    strata_agent::Client::open(&options.root, &options.project).map_err(ServeError::Open)?;
    let config = strata_config::Config::load(&options.project, &options.root)?;
    let settings = crate::settings::ServerSettings::from_config(&config)?;
    let state = AppState::new(options.root, options.project, settings, tls.is_some())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let bound = listener.local_addr()?;
        ready(bound, tls.is_some());
        let app = router(state);
        match tls {
            None => axum::serve(listener, app).await?,
            Some(acceptor) => serve_tls(listener, acceptor, app).await,
        }
        Ok(())
    })
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = |path: &Path, detail: String| ServeError::Pem {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert, "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: axum::Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // A failed handshake ends that connection only.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

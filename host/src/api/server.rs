//! [`serve`]: the accept loop — TCP_NODELAY, TLS when configured, a header timeout, and a
//! graceful drain bounded by a timeout.

use axum::Router;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How [`serve`] serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// A client that has not sent its request headers (and finished its TLS handshake) within
    /// this long is cut off; the body has its own timeout, [`super::ApiConfig::body_timeout`].
    pub header_timeout: Duration,
    /// After the shutdown signal, how long calls in flight may take to finish before the
    /// server stops anyway.
    pub drain_timeout: Duration,
    /// Serve HTTPS with this configuration ([`tls_config`]); plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Whether the server is draining: `/readyz` answers 503 from the shutdown signal on.
#[derive(Clone, Default)]
pub struct Draining(pub Arc<AtomicBool>);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why [`tls_config`] could not build a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain in {path}: {source}")]
    Certificates {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read a private key in {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from PEM files: the certificate chain (leaf first) and its
/// private key. HTTP/1.1 only, as the server speaks.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The drain did not finish within [`ServeOptions::drain_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("calls were still in flight after the drain timeout ({0:?}); they were cut off")]
pub struct DrainTimedOut(pub Duration);

/// Serve `router` on `listener` until `shutdown` resolves. Then no connection is accepted,
/// `/readyz` answers 503, and the connections finish what they are doing — for at most
/// [`ServeOptions::drain_timeout`], after which the error says the rest were cut off.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = Draining::default();
    let router = router.layer(axum::Extension(draining.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Requests and responses are small: send each segment at once instead of waiting for
        // the peer's ACK of the last one (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (router, watcher, timeout) =
            (router.clone(), graceful.watcher(), options.header_timeout);
        match acceptor.clone() {
            None => {
                tokio::spawn(connection(stream, router, watcher, timeout));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, router, watcher, timeout).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    draining.0.store(true, Ordering::Relaxed);
    drop(listener);
    match tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await {
        Ok(()) => Ok(()),
        Err(_) => Err(std::io::Error::other(DrainTimedOut(options.drain_timeout))),
    }
}

/// Serve HTTP/1.1 on one connection until it closes or the drain ends it.
async fn connection(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

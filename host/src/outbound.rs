//! The one HTTP client every outbound request of a guest goes through, whichever path it took
//! (`http.send` or wasi:http): policy check of the origin, DNS resolution, a second check of
//! every resolved address, connect with a timeout, TLS (webpki roots) for https, HTTP/1.1,
//! request and response size caps. Redirects are never followed: the guest sees the 3xx.

use crate::policy::{Origin, OutboundPolicy};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// Why an outbound request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
}

type Stream = Box<dyn Io>;
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Resolve `origin` and check every address against the policy. A name that resolves to any
/// refused address is refused as a whole (no partial answers for rebinding tricks).
async fn resolve(
    policy: &OutboundPolicy,
    origin: &Origin,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let addrs: Vec<SocketAddr> = match origin.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, origin.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((origin.host.as_str(), origin.port));
            tokio::time::timeout(policy.config.connect_timeout, lookup)
                .await
                .map_err(|_| OutboundError::Timeout)?
                .map_err(|e| {
                    OutboundError::Transport(format!("cannot resolve {}: {e}", origin.host))
                })?
                .collect()
        }
    };
    if addrs.is_empty() {
        return Err(OutboundError::Transport(format!(
            "{} has no addresses",
            origin.host
        )));
    }
    for addr in &addrs {
        policy
            .check_address(addr.ip())
            .map_err(|why| OutboundError::Denied(format!("{origin} resolves to {why}")))?;
    }
    Ok(addrs)
}

async fn connect(
    policy: &OutboundPolicy,
    origin: &Origin,
    addrs: &[SocketAddr],
) -> Result<Stream, OutboundError> {
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(policy.config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) => {
                last = Some(OutboundError::Transport(format!(
                    "cannot connect to {addr}: {e}"
                )))
            }
            Err(_) => last = Some(OutboundError::Timeout),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        last.unwrap_or(OutboundError::Transport("no address to connect to".into()))
    })?;
    if origin.scheme != "https" {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
        .map_err(|e| OutboundError::InvalidRequest(format!("bad TLS server name: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, tcp)
        .await
        .map_err(|e| OutboundError::Transport(format!("TLS with {origin}: {e}")))?;
    Ok(Box::new(tls))
}

/// A connected HTTP/1.1 exchange: the response, and the connection future that must be polled
/// (by whoever reads the body) for the exchange to make progress.
pub(crate) struct Exchange {
    pub response: http::Response<Limited<hyper::body::Incoming>>,
    pub connection: std::pin::Pin<Box<dyn Future<Output = Result<(), OutboundError>> + Send>>,
}

/// Send `request` if the policy allows it. The response body is capped at the policy's
/// `max_response_bytes`.
pub(crate) async fn send<B>(
    policy: &OutboundPolicy,
    mut request: http::Request<B>,
) -> Result<Exchange, OutboundError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let origin = Origin::of_uri(request.uri()).map_err(OutboundError::InvalidRequest)?;
    if let Err(why) = policy.check_origin(&origin) {
        return Err(OutboundError::Denied(why));
    }
    let addrs = resolve(policy, &origin).await?;
    let stream = connect(policy, &origin, &addrs).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| OutboundError::Transport(format!("HTTP handshake with {origin}: {e}")))?;

    let host = match (origin.scheme.as_str(), origin.port) {
        ("http", 80) | ("https", 443) => origin.host.clone(),
        _ => format!(
            "{}:{}",
            request.uri().host().unwrap_or(&origin.host),
            origin.port
        ),
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path
        .parse()
        .map_err(|e| OutboundError::InvalidRequest(format!("bad path: {e}")))?;
    if !request.headers().contains_key(http::header::HOST) {
        let value = http::HeaderValue::from_str(&host)
            .map_err(|e| OutboundError::InvalidRequest(format!("bad host: {e}")))?;
        request.headers_mut().insert(http::header::HOST, value);
    }

    let mut connection = Box::pin(async move {
        connection
            .await
            .map_err(|e| OutboundError::Transport(format!("connection: {e}")))
    });
    let limit = policy.config.max_response_bytes;
    // Drive the connection while waiting for the response head.
    let response = tokio::select! {
        response = sender.send_request(request) => {
            response.map_err(|e| OutboundError::Transport(format!("request to {origin}: {e}")))?
        }
        result = &mut connection => {
            result?;
            return Err(OutboundError::Transport(format!("{origin} closed the connection")));
        }
    };
    drop(sender);
    Ok(Exchange {
        response: response.map(|body| Limited::new(body, limit)),
        connection,
    })
}

/// Read the whole body of an exchange (driving its connection), within the size cap.
pub(crate) async fn read_body(
    exchange: Exchange,
    limit: usize,
) -> Result<(http::response::Parts, Bytes), OutboundError> {
    let (parts, body) = exchange.response.into_parts();
    let mut connection = exchange.connection;
    let collect = body.collect();
    tokio::pin!(collect);
    let mut connection_done = false;
    let collected = loop {
        tokio::select! {
            collected = &mut collect => break collected,
            result = &mut connection, if !connection_done => {
                connection_done = true;
                result?;
            }
        }
    };
    let body = collected.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            OutboundError::TooLarge(limit)
        } else {
            OutboundError::Transport(format!("reading the response: {e}"))
        }
    })?;
    Ok((parts, body.to_bytes()))
}

//! The one HTTP client every outbound request of a guest goes through, whichever path it took
//! (`http.send` or wasi:http): policy check of the origin, a connection slot from the call's
//! budget, the whole request body in hand (within its cap) before anything is sent, DNS
//! resolution, a second check of every resolved address, connect with a timeout, TLS (webpki
//! roots) for https, HTTP/1.1, the `host` header from the URL and no hop-by-hop headers, a
//! response size cap. Redirects are never followed: the guest sees the 3xx.

use crate::sandbox::limits::{ConnectionSlot, HostBudget};
use crate::sandbox::policy::{Origin, OutboundPolicy};
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
    #[error("the call already has as many outbound connections open as it may")]
    ConnectionLimit,
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

/// Headers a connector may not send: hop-by-hop headers and `host` (set from the URL). The
/// same list wasi:http refuses, so both HTTP paths agree.
pub(crate) fn forbidden_header(name: &http::HeaderName) -> bool {
    wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

/// A request the policy lets through, before it is sent: its origin and the connection slot it
/// holds while the connection is open.
pub(crate) struct Admitted {
    origin: Origin,
    slot: ConnectionSlot,
}

/// Check `uri` against the policy and take a connection slot from the call's budget. Done
/// before a request body is read, so no body of a refused request is ever buffered.
pub(crate) fn admit(
    policy: &OutboundPolicy,
    budget: &Arc<HostBudget>,
    uri: &http::Uri,
) -> Result<Admitted, OutboundError> {
    let origin = Origin::of_uri(uri).map_err(|e| OutboundError::InvalidRequest(e.0))?;
    policy
        .check_origin(&origin)
        .map_err(|refused| OutboundError::Denied(refused.to_string()))?;
    let slot = budget.connection().ok_or(OutboundError::ConnectionLimit)?;
    Ok(Admitted { origin, slot })
}

/// A connected HTTP/1.1 exchange: the response, and the connection future that must be polled
/// (by whoever reads the body) for the exchange to make progress. The connection holds its
/// slot of the call's budget until it ends or is dropped.
pub(crate) struct Exchange {
    pub response: http::Response<ResponseBody>,
    pub connection: Connection,
}

/// A response body as the guest reads it: streamed from the upstream within the size cap, or
/// whole (recorded or replayed).
pub(crate) type ResponseBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl Exchange {
    /// An exchange already complete: `head` and the whole `body`, no connection left.
    fn whole(head: http::response::Parts, body: Bytes) -> Self {
        let body = http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        Exchange {
            response: http::Response::from_parts(head, body),
            connection: Box::pin(std::future::ready(Ok(()))),
        }
    }
}

/// Send `request` as [`send`] does — unless the call is on a tape: replaying, the recording
/// answers and nothing is sent (a request it lacks is refused, and reported); recording, the
/// whole response is read (within its cap) and kept on the tape, redacted.
pub(crate) async fn exchange(
    policy: &OutboundPolicy,
    tape: Option<&crate::sandbox::tape::Tape>,
    admitted: Admitted,
    request: http::Request<Bytes>,
) -> Result<Exchange, OutboundError> {
    let Some(tape) = tape else {
        return send(policy, admitted, request).await;
    };
    if tape.replaying() {
        drop(admitted);
        let (head, body) = request.into_parts();
        return match tape.answer(&head, &body) {
            Some((head, body)) => Ok(Exchange::whole(head, body)),
            None => Err(OutboundError::Denied(format!(
                "{} {} is not in the recording",
                head.method,
                tape.redact(&head.uri.to_string())
            ))),
        };
    }
    let (head, body) = request.into_parts();
    let sent = send(
        policy,
        admitted,
        http::Request::from_parts(head.clone(), body.clone()),
    )
    .await?;
    let (response, response_body) = read_body(sent, policy.config.max_response_bytes).await?;
    tape.keep(&head, &body, &response, &response_body);
    Ok(Exchange::whole(response, response_body))
}

pub(crate) type Connection =
    std::pin::Pin<Box<dyn Future<Output = Result<(), OutboundError>> + Send>>;

/// Send `request` (its whole body in hand, within the policy's `max_request_bytes`): resolve,
/// check every address, connect, and wait for the response head. The response body is capped
/// at the policy's `max_response_bytes`.
///
/// The body is complete before anything is sent, so a request over the cap never reaches the
/// upstream, not even its headers. The `host` header is always the URL's.
pub(crate) async fn send(
    policy: &OutboundPolicy,
    admitted: Admitted,
    mut request: http::Request<Bytes>,
) -> Result<Exchange, OutboundError> {
    let Admitted { origin, slot } = admitted;
    if request.body().len() > policy.config.max_request_bytes {
        return Err(OutboundError::TooLarge(policy.config.max_request_bytes));
    }
    let addrs = resolve(policy, &origin).await?;
    let stream = connect(policy, &origin, &addrs).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| OutboundError::Transport(format!("HTTP handshake with {origin}: {e}")))?;

    let host = match (origin.scheme.as_str(), origin.port) {
        ("http", 80) | ("https", 443) => bracketed(&origin.host),
        (_, port) => format!("{}:{port}", bracketed(&origin.host)),
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path
        .parse()
        .map_err(|e| OutboundError::InvalidRequest(format!("bad path: {e}")))?;
    let headers = request.headers_mut();
    let refused: Vec<_> = headers
        .keys()
        .filter(|name| forbidden_header(name))
        .cloned()
        .collect();
    for name in refused {
        headers.remove(name);
    }
    let value = http::HeaderValue::from_str(&host)
        .map_err(|e| OutboundError::InvalidRequest(format!("bad host: {e}")))?;
    headers.insert(http::header::HOST, value);
    let request = request.map(http_body_util::Full::new);

    let mut connection: Connection = Box::pin(async move {
        let result = connection
            .await
            .map_err(|e| OutboundError::Transport(format!("connection: {e}")));
        drop(slot);
        result
    });
    let limit = policy.config.max_response_bytes;
    // Drive the connection while waiting for the response head. A server may close the
    // connection right after a complete response (HTTP/1.0, `Connection: close`): the
    // connection then ends first, and the response is still there to take.
    let mut response = std::pin::pin!(sender.send_request(request));
    let mut closed = false;
    let response = loop {
        tokio::select! {
            biased;
            response = &mut response => break response
                .map_err(|e| OutboundError::Transport(format!("request to {origin}: {e}")))?,
            result = &mut connection, if !closed => {
                result?;
                closed = true;
            }
        }
    };
    if closed {
        connection = Box::pin(std::future::ready(Ok(())));
    }
    drop(sender);
    Ok(Exchange {
        response: response.map(|body| Limited::new(body, limit).boxed_unsync()),
        connection,
    })
}

/// An IPv6 literal in brackets, as a `host` header writes it.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
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

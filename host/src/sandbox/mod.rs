//! What a guest may reach, and nothing more: the per-call [`Sandbox`] that is the data of every
//! `Store`, and the host side of the world's imports.
//!
//! - WASI is linked but grants nothing: no preopened directories, an empty environment, no
//!   arguments, empty stdin, sockets and name lookup refused, stdout discarded, stderr kept
//!   (bounded) so a trap can quote a panic message.
//! - `wasi:config/store` serves the call's configuration; `secrets.get` the instance's
//!   credentials ([`Secrets`] never prints its values).
//! - `log.log` goes to `tracing`, tagged with the connector, bounded per call.
//! - Outbound HTTP, through `http.send` and wasi:http alike, goes through one
//!   [`OutboundPolicy`] and one client (`outbound.rs`): declared ∩ granted origins,
//!   addresses re-checked after DNS, size caps, no redirects followed — or, for a call on a
//!   [`tape::Tape`], recorded (redacted) or answered from a recording without sending.

pub(crate) mod limits;
pub(crate) mod outbound;
pub(crate) mod policy;
pub mod tape;
pub(crate) mod turns;

pub use limits::{BODY_CHUNK_BYTES, FIELDS_BYTES, InvalidLimits, Limits, Resource};
pub use outbound::OutboundError;
pub use policy::{Origin, OriginPattern, OutboundConfig, OutboundPolicy, forbidden_address};
pub use turns::SHORT_CALL;

use crate::wit::gantry::connector::{http, log, secrets, types};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use limits::{HostBudget, StoreLimiter};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Most log lines one call may write; the rest are counted and dropped (as are lines past
/// [`Limits::log_bytes`]).
const MAX_LOG_LINES: usize = 256;
/// Longest log line kept; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// An instance's credentials. Values can be handed to a guest but never printed: `Debug` shows
/// only the keys.
#[derive(Clone, Default)]
pub struct Secrets(Arc<BTreeMap<String, String>>);

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self(Arc::new(values))
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    /// The values, for redaction only.
    pub(crate) fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// The secret keys present (never the values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys()).finish_non_exhaustive()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Secrets {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// What a call runs with besides its input: configuration, credentials and limits.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Values served by `wasi:config/store` (the connector's defaults overlaid by the install's).
    pub config: BTreeMap<String, String>,
    /// Values served by `secrets.get`.
    pub secrets: Secrets,
    /// Limits for this call; `None` uses the runtime's defaults.
    pub limits: Option<Limits>,
    /// Outbound origins granted to this call (`scheme://host[:port]`, `*` wildcards); a request
    /// must also match what the connector declares. Empty: no outbound HTTP.
    pub outbound: Vec<String>,
    /// Loopback, private or other special addresses this call may reach all the same (exact
    /// addresses, e.g. `127.0.0.1` for a local stand-in). The registry sets it from the
    /// operator's allowance for the organisation the call runs for. Empty by default.
    pub allow_private: Vec<std::net::IpAddr>,
    /// Record this call's outbound exchanges, or answer them from a recording.
    pub tape: Option<Arc<tape::Tape>>,
}

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    #[schema(value_type = String)]
    pub level: std::borrow::Cow<'static, str>,
    pub message: String,
}

/// The data of every `Store`: one call's sandbox.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: PolicyHooks,
    config: WasiConfigVariables,
    secrets: Secrets,
    pub(crate) limiter: StoreLimiter,
    /// Epoch ticks of guest execution left before the CPU deadline.
    pub(crate) cpu_ticks_left: u64,
    /// Ticks after which the call is a long runner and takes turns.
    pub(crate) long_after: u64,
    /// The slot this call holds while it executes a slice as a long runner.
    pub(crate) turn: crate::sandbox::turns::Turn,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) logs: Vec<LogLine>,
    log_bytes_left: usize,
    pub(crate) logs_dropped: usize,
    /// What host tasks outside the store draw on, shared with them.
    pub(crate) budget: Arc<HostBudget>,
}

impl Sandbox {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        connector: Arc<str>,
        digest: Arc<str>,
        call: u64,
        ctx: &CallContext,
        limits: Limits,
        cpu_ticks: u64,
        policy: Arc<OutboundPolicy>,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
        let mut wasi = WasiCtx::builder();
        // stdout is discarded (WASI's default sink); stderr is kept, bounded, for trap reports.
        wasi.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let mut config = WasiConfigVariables::new();
        for (k, v) in &ctx.config {
            config.insert(k, v);
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.handles as usize);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits::FIELDS_BYTES);
        let budget = Arc::new(HostBudget::new(&limits));
        Self {
            wasi: wasi.build(),
            table,
            http,
            http_hooks: PolicyHooks {
                policy,
                tape: ctx.tape.clone(),
                budget: budget.clone(),
                tag: Arc::new(CallTag {
                    connector,
                    digest,
                    call,
                }),
            },
            config,
            secrets: ctx.secrets.clone(),
            limiter: StoreLimiter::new(limits),
            cpu_ticks_left: cpu_ticks,
            long_after: 0,
            turn: crate::sandbox::turns::Turn::default(),
            stderr,
            logs: Vec::new(),
            log_bytes_left: limits.log_bytes,
            logs_dropped: 0,
            budget,
        }
    }

    /// Entries in the call's resource table now.
    pub(crate) fn handles(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// The call's log lines, with a last one saying how many were dropped, if any were.
    pub(crate) fn take_logs(&mut self) -> Vec<LogLine> {
        let mut logs = std::mem::take(&mut self.logs);
        if self.logs_dropped > 0 {
            logs.push(LogLine {
                level: "warn".into(),
                message: format!(
                    "{} more log lines dropped: a call keeps at most {MAX_LOG_LINES} lines and \
                     {} bytes of log",
                    self.logs_dropped,
                    self.limiter.limits().log_bytes
                ),
            });
        }
        logs
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Link everything the world imports into `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    wasmtime_wasi_config::add_to_linker(linker, |s: &mut Sandbox| WasiConfig::new(&s.config))?;
    types::add_to_linker::<_, HasSelf<Sandbox>>(linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<Sandbox>>(linker, |s| s)?;
    secrets::add_to_linker::<_, HasSelf<Sandbox>>(linker, |s| s)?;
    http::add_to_linker::<_, HasSelf<Sandbox>>(linker, |s| s)?;
    Ok(())
}

impl types::Host for Sandbox {}

impl log::Host for Sandbox {
    fn log(&mut self, level: types::Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if self.logs.len() >= MAX_LOG_LINES || message.len() > self.log_bytes_left {
            self.logs_dropped += 1;
            return Ok(());
        }
        self.log_bytes_left -= message.len();
        let tag = &self.http_hooks.tag;
        let (connector, digest, call) = (&*tag.connector, &*tag.digest, tag.call);
        let level = match level {
            types::Level::Trace => {
                tracing::trace!(target: "gantry::guest", connector, digest, call, "{message}");
                "trace"
            }
            types::Level::Debug => {
                tracing::debug!(target: "gantry::guest", connector, digest, call, "{message}");
                "debug"
            }
            types::Level::Info => {
                tracing::info!(target: "gantry::guest", connector, digest, call, "{message}");
                "info"
            }
            types::Level::Warn => {
                tracing::warn!(target: "gantry::guest", connector, digest, call, "{message}");
                "warn"
            }
            types::Level::Error => {
                tracing::error!(target: "gantry::guest", connector, digest, call, "{message}");
                "error"
            }
        };
        self.logs.push(LogLine {
            level: level.into(),
            message,
        });
        Ok(())
    }
}

impl secrets::Host for Sandbox {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.secrets.get(&key))
    }
}

impl http::Host for Sandbox {
    async fn send(
        &mut self,
        request: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        let policy = self.http_hooks.policy.clone();
        let tape = self.http_hooks.tape.clone();
        let origin = origin_text(Origin::of_url(&request.url));
        let result = match build_request(request, &policy) {
            Ok(req) => match outbound::admit(&policy, &self.budget, req.uri()) {
                Ok(admitted) => {
                    let limit = policy.config.max_response_bytes;
                    let exchange = async {
                        let exchange =
                            outbound::exchange(&policy, tape.as_deref(), admitted, req).await?;
                        outbound::read_body(exchange, limit).await
                    };
                    match tokio::time::timeout(policy.config.request_timeout, exchange).await {
                        Ok(result) => result,
                        Err(_) => Err(OutboundError::Timeout),
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok((parts, body)) => Ok(http::Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: body.to_vec(),
            }),
            Err(OutboundError::ConnectionLimit) => {
                // The call ran out of its connection budget: it fails as a whole.
                return Err(wasmtime::Error::msg(
                    OutboundError::ConnectionLimit.to_string(),
                ));
            }
            Err(e) => {
                self.http_hooks.tag.report(&origin, &e);
                Err(match e {
                    OutboundError::Denied(m) => http::HttpError::Denied(m),
                    OutboundError::InvalidRequest(m) => http::HttpError::InvalidRequest(m),
                    OutboundError::Timeout => http::HttpError::Timeout,
                    OutboundError::TooLarge(_) => http::HttpError::TooLarge,
                    OutboundError::Transport(m) => http::HttpError::Transport(m),
                    OutboundError::ConnectionLimit => unreachable!("handled above"),
                })
            }
        })
    }
}

/// The request `http.send` asked for, refused if its body is over the cap or it sets a header
/// wasi:http refuses too (`host`, hop-by-hop headers).
fn build_request(
    request: http::Request,
    policy: &OutboundPolicy,
) -> Result<::http::Request<Bytes>, OutboundError> {
    let invalid = |m: String| OutboundError::InvalidRequest(m);
    let body = request.body.unwrap_or_default();
    if body.len() > policy.config.max_request_bytes {
        return Err(OutboundError::TooLarge(policy.config.max_request_bytes));
    }
    let method = ::http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| invalid(format!("bad method `{}`", request.method.escape_debug())))?;
    let mut builder = ::http::Request::builder().method(method).uri(&request.url);
    for (name, value) in &request.headers {
        let header = ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("bad header name `{}`", name.escape_debug())))?;
        if outbound::forbidden_header(&header) {
            return Err(invalid(format!(
                "header `{header}` may not be set by a connector (the host sets it)"
            )));
        }
        builder = builder.header(header, value);
    }
    builder
        .body(Bytes::from(body))
        .map_err(|e| invalid(e.to_string()))
}

/// The origin of a request, for logs: never its path or query (they may hold keys).
fn origin_text(origin: Result<Origin, policy::InvalidOrigin>) -> String {
    origin.map_or_else(|e| format!("({e})"), |o| o.to_string())
}

/// Who a guest log line or an outbound report is about.
struct CallTag {
    connector: Arc<str>,
    digest: Arc<str>,
    call: u64,
}

impl CallTag {
    fn report(&self, origin: &str, error: &OutboundError) {
        let (connector, digest, call) = (&*self.connector, &*self.digest, self.call);
        match error {
            OutboundError::Denied(why) => {
                tracing::warn!(connector, digest, call, origin, reason = %why, "outbound request denied")
            }
            other => {
                tracing::info!(connector, digest, call, origin, error = %other, "outbound request failed")
            }
        }
    }
}

/// wasi:http hooks that send through the call's outbound policy and budget.
struct PolicyHooks {
    policy: Arc<OutboundPolicy>,
    tape: Option<Arc<tape::Tape>>,
    budget: Arc<HostBudget>,
    tag: Arc<CallTag>,
}

type HttpResult<T> = wasmtime_wasi_http::Result<T>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

impl WasiHttpHooks for PolicyHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        limits::BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: ::http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn Future<Output = HttpResult<(::http::Response<wasmtime_wasi_http::WasiBody>, IoFuture)>>
            + Send,
    > {
        use wasmtime_wasi_http::Error as E;
        let policy = self.policy.clone();
        let tape = self.tape.clone();
        let origin = origin_text(Origin::of_uri(request.uri()));
        let tag = self.tag.clone();
        let to_wasi = |e: OutboundError| match e {
            OutboundError::Denied(_) => E::HttpRequestDenied,
            OutboundError::InvalidRequest(_) => E::HttpRequestUriInvalid,
            OutboundError::Timeout => E::ConnectionTimeout,
            OutboundError::TooLarge(_) => E::HttpRequestBodySize(None),
            OutboundError::ConnectionLimit => E::ConnectionLimitReached,
            OutboundError::Transport(m) => E::InternalError(Some(m)),
        };
        // Checked now, before the body is read: a refused request buffers nothing.
        let admitted = outbound::admit(&policy, &self.budget, request.uri());
        Box::new(async move {
            let admitted = admitted
                .inspect_err(|e| tag.report(&origin, e))
                .map_err(to_wasi)?;
            let limit = policy.config.max_request_bytes;
            let declared = request
                .headers()
                .get(::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit as u64) {
                tag.report(&origin, &OutboundError::TooLarge(limit));
                return Err(E::HttpRequestBodySize(declared));
            }
            // The whole body, within its cap, before anything is sent: an upstream never sees
            // the start of a request that turns out to be too large.
            let (parts, body) = request.into_parts();
            let read = Limited::new(body, limit).collect();
            let body = match tokio::time::timeout(policy.config.request_timeout, read).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    tag.report(&origin, &OutboundError::TooLarge(limit));
                    return Err(E::HttpRequestBodySize(None));
                }
                Ok(Err(e)) => return Err(E::InternalError(Some(e.to_string()))),
                Err(_) => return Err(E::ConnectionTimeout),
            };
            let request = ::http::Request::from_parts(parts, body);
            let send = outbound::exchange(&policy, tape.as_deref(), admitted, request);
            let exchange = match tokio::time::timeout(policy.config.request_timeout, send).await {
                Ok(Ok(exchange)) => exchange,
                Ok(Err(e)) => {
                    tag.report(&origin, &e);
                    return Err(to_wasi(e));
                }
                Err(_) => return Err(E::ConnectionTimeout),
            };
            let response = exchange.response.map(|body| {
                body.map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        E::HttpResponseBodySize(None)
                    } else {
                        E::InternalError(Some(e.to_string()))
                    }
                })
                .boxed_unsync()
            });
            let connection = exchange.connection;
            let io: IoFuture = Box::new(async move {
                connection
                    .await
                    .map_err(|e| E::InternalError(Some(e.to_string())))
            });
            Ok((response, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_debug_shows_keys_only() {
        let secrets = Secrets::from([("api-key", "hunter2")]);
        let shown = format!("{secrets:?}");
        assert!(shown.contains("api-key"));
        assert!(!shown.contains("hunter2"));
        let ctx = CallContext {
            secrets,
            ..CallContext::default()
        };
        assert!(!format!("{ctx:?}").contains("hunter2"));
    }
}

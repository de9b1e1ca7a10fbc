//! What a guest may reach, and nothing more: the per-call [`Sandbox`] that is the data of every
//! `Store`, and the host side of the world's imports.
//!
//! - WASI is linked but grants nothing: no preopened directories, an empty environment, no
//!   arguments, empty stdin, sockets and name lookup refused, stdout discarded, stderr kept
//!   (bounded) so a trap can quote a panic message.
//! - `wasi:config/store` serves the call's configuration; `secrets.get` the instance's
//!   credentials ([`Secrets`] never prints its values).
//! - `log.log` goes to `tracing`, tagged with the connector, bounded per call.
//! - Outbound HTTP, through `http.send` and wasi:http alike, is refused: the outbound policy
//!   (allow-list, DNS re-check) plugs in here.

use crate::bindings::gantry::connector::{http, log, secrets, types};
use crate::limits::{Limits, StoreLimiter};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Most log lines one call may write; the rest are counted and dropped.
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
}

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The data of every `Store`: one call's sandbox.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: DenyOutbound,
    config: WasiConfigVariables,
    secrets: Secrets,
    pub(crate) limiter: StoreLimiter,
    /// Epoch ticks of guest execution left before the CPU deadline.
    pub(crate) cpu_ticks_left: u64,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: usize,
    connector: Arc<str>,
}

impl Sandbox {
    pub(crate) fn new(
        connector: Arc<str>,
        ctx: &CallContext,
        limits: Limits,
        cpu_ticks: u64,
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
        Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: DenyOutbound,
            config,
            secrets: ctx.secrets.clone(),
            limiter: StoreLimiter::new(limits),
            cpu_ticks_left: cpu_ticks,
            stderr,
            logs: Vec::new(),
            logs_dropped: 0,
            connector,
        }
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
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return Ok(());
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let connector = &*self.connector;
        let level = match level {
            types::Level::Trace => {
                tracing::trace!(target: "gantry::guest", connector, "{message}");
                "trace"
            }
            types::Level::Debug => {
                tracing::debug!(target: "gantry::guest", connector, "{message}");
                "debug"
            }
            types::Level::Info => {
                tracing::info!(target: "gantry::guest", connector, "{message}");
                "info"
            }
            types::Level::Warn => {
                tracing::warn!(target: "gantry::guest", connector, "{message}");
                "warn"
            }
            types::Level::Error => {
                tracing::error!(target: "gantry::guest", connector, "{message}");
                "error"
            }
        };
        self.logs.push(LogLine { level, message });
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
        // No outbound grants exist yet: every destination is refused.
        Ok(Err(http::HttpError::Denied(format!(
            "outbound HTTP is not granted to this connector ({} {})",
            request.method,
            origin_of(&request.url)
        ))))
    }
}

/// `scheme://host[:port]` of a URL, for messages; never the path or query (they may hold keys).
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    &url[..end]
}

/// wasi:http hooks that refuse every outgoing request.
struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: ::http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    ::http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
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

    #[test]
    fn origin_drops_path_and_query() {
        assert_eq!(
            origin_of("https://api.example.com/v2?key=s3cret"),
            "https://api.example.com"
        );
        assert_eq!(origin_of("http://h:8080"), "http://h:8080");
        assert_eq!(origin_of("no-scheme/path"), "no-scheme");
    }
}

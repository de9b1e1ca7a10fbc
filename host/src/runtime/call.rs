//! One call (lifetime: the call): a fresh `Store` with its own [`Sandbox`] and limits,
//! instantiated from the connector's `InstancePre`, run, and dropped — so nothing leaks between
//! calls or tenants, and an instance that overran its deadline is simply thrown away.
//!
//! Every way a call can fail is a [`CallError`] variant; a guest can trap, spin, exhaust its
//! memory or stack, but it cannot make the host panic.

use super::Connector;
use crate::json;
use crate::model::Digest;
use crate::runtime::Runtime;
use crate::sandbox::limits::{Limits, Resource};
use crate::sandbox::policy::{OriginPattern, OutboundPolicy};
use crate::sandbox::{CallContext, LogLine, Sandbox};
use crate::wit::{self as bindings, PluginPre};
use serde::Serialize;
use serde::de::IgnoredAny;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Why an operation failed, as the connector reported it (the WIT `connector-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum ConnectorError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("upstream failure: {0}")]
    Upstream(String),
    #[error("rate limited: {0}")]
    RateLimited(String),
    #[error("internal connector error: {0}")]
    Internal(String),
}

impl From<bindings::ConnectorError> for ConnectorError {
    fn from(e: bindings::ConnectorError) -> Self {
        use bindings::ConnectorError as E;
        match e {
            E::InvalidInput(m) => Self::InvalidInput(m),
            E::Unauthorized(m) => Self::Unauthorized(m),
            E::NotFound(m) => Self::NotFound(m),
            E::Upstream(m) => Self::Upstream(m),
            E::RateLimited(m) => Self::RateLimited(m),
            E::Internal(m) => Self::Internal(m),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("connector has no operation `{operation}` (it has: {})", available.join(", "))]
    UnknownOperation {
        operation: String,
        available: Vec<String>,
    },
    /// The input is not JSON, or not what the operation's input schema accepts.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error(transparent)]
    Guest(ConnectorError),
    #[error("the guest used more than its {limit:?} of CPU time")]
    CpuDeadline { limit: Duration },
    #[error(
        "the call took longer than its {limit:?} wall-clock deadline; the instance was discarded"
    )]
    Timeout { limit: Duration },
    #[error("the guest tried to use more than its {limit} bytes of memory")]
    MemoryLimit { limit: u64 },
    #[error("the guest exhausted its stack")]
    StackOverflow,
    #[error("the guest used more than its {limit} {resource}")]
    ResourceLimit { resource: Resource, limit: u64 },
    #[error("the output is {size} bytes; the limit is {limit}")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("the output is not a JSON document: {0}")]
    InvalidOutput(String),
    #[error("the guest trapped: {message}")]
    Trap {
        /// What went wrong, e.g. "wasm `unreachable` instruction executed".
        message: String,
        /// The end of what the guest wrote to stderr (a Rust panic message lands here).
        stderr: String,
        /// The guest's wasm backtrace, when there is one.
        backtrace: Option<String>,
    },
}

impl CallError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::UnknownOperation { .. } => "unknown-operation",
            CallError::InvalidInput(_) => "invalid-input",
            CallError::Guest(_) => "connector-error",
            CallError::CpuDeadline { .. } => "cpu-deadline",
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::StackOverflow => "stack-overflow",
            CallError::ResourceLimit { .. } => "resource-limit",
            CallError::OutputTooLarge { .. } => "output-too-large",
            CallError::InvalidOutput(_) => "invalid-output",
            CallError::Trap { .. } => "trap",
        }
    }
}

/// A successful call.
#[derive(Debug, Clone, Serialize)]
pub struct CallOutput {
    /// The JSON document the operation returned.
    pub output: String,
    /// The digest of the code that ran.
    pub digest: Digest,
    pub duration: Duration,
    /// Linear memory the call's store held at its end, over all memories.
    pub memory_bytes: u64,
    pub logs: Vec<LogLine>,
}

/// The CPU deadline ran out (raised from the epoch callback).
#[derive(Debug, thiserror::Error)]
#[error("CPU deadline exceeded")]
struct CpuDeadlineExceeded;

/// A host task found the call's budget exhausted (raised from the epoch callback).
#[derive(Debug, thiserror::Error)]
#[error("host resource budget exhausted")]
struct BudgetExhausted;

/// Most bytes of guest stderr quoted in a trap.
const STDERR_TAIL: usize = 2048;

/// Call ids, for logs.
static CALLS: AtomicU64 = AtomicU64::new(1);

fn new_store(
    runtime: &Runtime,
    label: Arc<str>,
    digest: Arc<str>,
    ctx: &CallContext,
    limits: Limits,
    declared_hosts: Arc<[OriginPattern]>,
) -> Store<Sandbox> {
    let tick = runtime.config().epoch_tick.max(Duration::from_millis(1));
    let ticks = (limits.cpu_time.as_nanos() / tick.as_nanos()).max(1) as u64;
    let policy = Arc::new(OutboundPolicy::for_call(
        declared_hosts,
        &ctx.outbound,
        &ctx.allow_private,
        runtime.outbound().clone(),
    ));
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let sandbox = Sandbox::new(label, digest, call, ctx, limits, ticks, policy);
    let mut sandbox = sandbox;
    // Ticks of CPU after which the call takes turns with other long runners.
    sandbox.long_after = ticks.saturating_sub(
        (crate::sandbox::turns::SHORT_CALL.as_nanos() / tick.as_nanos()).max(1) as u64,
    );
    let mut store = Store::new(runtime.engine(), sandbox);
    store.limiter(|s| &mut s.limiter);
    // Every tick the guest runs through counts one tick against the CPU budget and yields to
    // the executor, so a guest that computes shares its worker thread with every other task
    // instead of holding it until its deadline. `tokio::task::yield_now` puts the call at the
    // back of the queue; wasmtime's plain `Yield` wakes the task at once, which tokio runs
    // again first (its LIFO slot), starving what waits on the same worker. Past a short
    // call's CPU time the call also takes turns for cores (see `turns`).
    store.set_epoch_deadline(1);
    let turns = runtime.turns().clone();
    store.epoch_deadline_callback(move |mut cx| {
        let sandbox = cx.data_mut();
        sandbox.turn.end();
        if sandbox.cpu_ticks_left == 0 {
            return Err(CpuDeadlineExceeded.into());
        }
        if sandbox.budget.exhausted().is_some() {
            return Err(BudgetExhausted.into());
        }
        sandbox.cpu_ticks_left -= 1;
        let next: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
            if sandbox.cpu_ticks_left < sandbox.long_after {
                turns.next(&sandbox.turn)
            } else {
                Box::pin(tokio::task::yield_now())
            };
        Ok(UpdateDeadline::YieldCustom(1, next))
    });
    // A long runner that calls into the host (and may wait there on the network) gives its
    // slot back; it takes a turn again at its next tick.
    store.call_hook(|cx, hook| {
        if matches!(hook, wasmtime::CallHook::CallingHost) {
            cx.data().turn.end();
        }
        Ok(())
    });
    store
}

/// The error of a call that ran out of a host-side resource.
fn resource_limit(resource: Resource, limits: &Limits) -> CallError {
    let limit = match resource {
        Resource::Handles => limits.handles,
        Resource::Connections => limits.connections,
    };
    CallError::ResourceLimit {
        resource,
        limit: limit.into(),
    }
}

/// Turn a trap into the [`CallError`] that says what happened.
fn classify(error: wasmtime::Error, store: &mut Store<Sandbox>, limits: &Limits) -> CallError {
    if error.is::<CpuDeadlineExceeded>() {
        return CallError::CpuDeadline {
            limit: limits.cpu_time,
        };
    }
    if let Some(resource) = store.data().budget.exhausted() {
        return resource_limit(resource, limits);
    }
    if store.data().limiter.memory_refused() {
        return CallError::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    // A full resource table makes the host call that found it trap (or fail, and the guest
    // give up): either way the call ran out of handles.
    if store.data_mut().handles() >= limits.handles as usize {
        return resource_limit(Resource::Handles, limits);
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) {
        return CallError::StackOverflow;
    }
    let stderr = store.data().stderr.contents();
    let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
    let message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    CallError::Trap {
        message,
        stderr: String::from_utf8_lossy(tail).trim().to_string(),
        backtrace: error
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| bt.to_string()),
    }
}

/// Call `describe()` in a fresh sandbox.
pub(crate) async fn describe(
    runtime: &Runtime,
    digest: &Digest,
    pre: &PluginPre<Sandbox>,
    limits: Limits,
) -> Result<bindings::ConnectorInfo, CallError> {
    let label: Arc<str> = Arc::from("(describe)");
    let digest = Arc::from(digest.to_string());
    let mut store = new_store(
        runtime,
        label,
        digest,
        &CallContext::default(),
        limits,
        Arc::from([]),
    );
    let run = async {
        let plugin = pre.instantiate_async(&mut store).await?;
        plugin
            .gantry_connector_connector()
            .call_describe(&mut store)
            .await
    };
    match tokio::time::timeout(limits.wall_time, run).await {
        Err(_) => Err(CallError::Timeout {
            limit: limits.wall_time,
        }),
        Ok(Err(trap)) => Err(classify(trap, &mut store, &limits)),
        Ok(Ok(info)) => Ok(info),
    }
}

/// `Some(InvalidInput)` when `input` is not a JSON document.
///
/// The input is checked only after the connector refused it or gave back something that is not
/// JSON: a connector parses its input anyway, so checking it before every call would parse each
/// input twice (~2 µs per 10 KB), and when a call fails, input that is not JSON is the likeliest
/// cause and the clearest error.
fn not_json(input: &str) -> Option<CallError> {
    serde_json::from_str::<IgnoredAny>(input)
        .err()
        .map(|e| CallError::InvalidInput(format!("input is not a JSON document: {e}")))
}

/// Whether a call is refused before the guest runs when the operation is not declared or the
/// input does not fit its schema (always, but for conformance probes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strict {
    Yes,
    No,
}

/// Run `operation` on `input` in a fresh sandbox.
pub(crate) async fn invoke(
    runtime: &Runtime,
    connector: &Arc<Connector>,
    operation: &str,
    input: &str,
    ctx: &CallContext,
    strict: Strict,
) -> Result<CallOutput, CallError> {
    let started = Instant::now();
    let description = connector.description();
    if strict == Strict::Yes && description.operation(operation).is_none() {
        return Err(CallError::UnknownOperation {
            operation: operation.to_string(),
            available: description
                .operations
                .iter()
                .map(|op| op.name.clone())
                .collect(),
        });
    }
    // The input schema is enforced before the guest runs.
    if strict == Strict::Yes {
        connector
            .schemas()
            .check_input(operation, input)
            .map_err(CallError::InvalidInput)?;
    }
    let limits = ctx.limits.unwrap_or_else(|| runtime.default_limits());
    let mut store = CallStore(
        Some(new_store(
            runtime,
            connector.label().clone(),
            connector.digest_text().clone(),
            ctx,
            limits,
            connector.declared_hosts().clone(),
        )),
        runtime.background().clone(),
    );
    let budget = store.data().budget.clone();
    let run = async {
        let store: &mut Store<Sandbox> = &mut store;
        let plugin = connector.pre.instantiate_async(&mut *store).await?;
        plugin
            .gantry_connector_connector()
            .call_invoke(store, operation, input)
            .await
    };
    // A host task that exhausts the budget ends the call at once, even while the guest waits
    // on a host call (its instance is thrown away, as on a timeout).
    let run = async {
        tokio::select! {
            biased;
            result = run => Ok(result),
            resource = budget.exhaustion() => Err(resource),
        }
    };
    let output = match tokio::time::timeout(limits.wall_time, run).await {
        Err(_) => {
            return Err(CallError::Timeout {
                limit: limits.wall_time,
            });
        }
        Ok(Err(resource)) => return Err(resource_limit(resource, &limits)),
        Ok(Ok(result)) => result,
    };
    let output = match output {
        Err(trap) => return Err(classify(trap, &mut store, &limits)),
        Ok(_) if store.data().budget.exhausted().is_some() => {
            // The guest carried on after a host task found the budget exhausted (it saw an
            // error it ignored); the call fails all the same.
            let resource = store.data().budget.exhausted().expect("checked");
            return Err(resource_limit(resource, &limits));
        }
        Ok(Err(guest)) => return Err(not_json(input).unwrap_or(CallError::Guest(guest.into()))),
        Ok(Ok(output)) => output,
    };
    if output.len() > limits.output_bytes {
        return Err(CallError::OutputTooLarge {
            size: output.len(),
            limit: limits.output_bytes,
        });
    }
    if let Err(e) = json::check(&output) {
        return Err(not_json(input).unwrap_or(CallError::InvalidOutput(e.to_string())));
    }
    let sandbox = store.data_mut();
    Ok(CallOutput {
        output,
        digest: *connector.digest(),
        duration: started.elapsed(),
        memory_bytes: sandbox.limiter.memory_used(),
        logs: sandbox.take_logs(),
    })
}

/// Memory of a call's store past which it is dropped off the executor.
const BIG_STORE: u64 = 16 << 20;

/// A call's store. One that held much memory is dropped on a background thread of low
/// priority: giving its memory back to the pool (decommitting it) takes a few milliseconds of
/// kernel time that worker threads should spend on other calls.
struct CallStore(Option<Store<Sandbox>>, Arc<rayon::ThreadPool>);

impl std::ops::Deref for CallStore {
    type Target = Store<Sandbox>;
    fn deref(&self) -> &Store<Sandbox> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for CallStore {
    fn deref_mut(&mut self) -> &mut Store<Sandbox> {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for CallStore {
    fn drop(&mut self) {
        if let Some(store) = self.0.take()
            && store.data().limiter.memory_used() > BIG_STORE
        {
            self.1.spawn(move || drop(store));
        }
    }
}

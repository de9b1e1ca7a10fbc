//! The process-wide [`Runtime`]: one wasmtime `Engine` and one `Linker` (lifetime: the process),
//! the epoch ticker, the artifact cache, and [`Runtime::load`], which turns component bytes into
//! a [`Connector`] (lifetime: the digest).
//!
//! Loading verifies, compiles off the async executor under a time cap, checks the component
//! against Gantry's world, reads `describe()` once, and only then caches the artifact. A
//! connector stays loaded while something holds its `Arc`; the runtime itself keeps only weak
//! references, so a digest nothing binds and nothing runs is unloaded.

pub(crate) mod cache;
pub(crate) mod call;
mod connector;
pub(crate) mod schemas;

pub use call::{CallError, CallOutput, ConnectorError};
pub use connector::{Connector, Origin};

use crate::wit::PluginPre;
pub use cache::SETTLED;
use cache::{ArtifactCache, Verified};

use crate::model::Description;
use crate::model::Digest;
use crate::sandbox::limits::Limits;
use crate::sandbox::policy::OutboundConfig;
use crate::sandbox::turns::Turns;
use crate::sandbox::{CallContext, Sandbox};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// The pooling allocator, or on-demand with a logged warning where the pool cannot be
    /// reserved.
    #[default]
    Auto,
    /// The pooling allocator; fail if it cannot be reserved.
    Pooling,
    /// Allocate every instance on demand (slower, no up-front reservation).
    OnDemand,
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled artifacts are kept; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of artifacts the disk cache holds; the least recently used go past it.
    pub cache_max_bytes: u64,
    /// Limits of a call whose [`CallContext`] names none.
    pub limits: Limits,
    /// Interval of the epoch ticker: the resolution of CPU deadlines, and the longest slice a
    /// guest executes before it yields its worker thread.
    pub epoch_tick: Duration,
    /// Cores on which guests that have computed for long (past [`SHORT_CALL`](crate::sandbox::SHORT_CALL))
    /// take turns; the rest are always free for short calls. Default: all cores but one.
    pub long_runner_slots: usize,
    /// Longest a component may take to compile (waiting for a compile slot included).
    pub compile_timeout: Duration,
    /// Compiles that may run at once. A compile that overruns its timeout is abandoned but
    /// cannot be stopped (Cranelift has no cancellation): it keeps its slot until it ends, so
    /// abandoned compiles can never pile up beyond this many threads.
    pub max_compiles: usize,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    pub allocator: Allocator,
    /// Component instances that may be live at once (calls in flight, pooling allocator), and
    /// warm slots kept for as many modules. Each memory slot a call has used keeps up to
    /// [`memory_keep_resident`](Self::memory_keep_resident) of it resident for the next call,
    /// each table slot 16 KiB, so this also bounds that memory (2 × `memory_keep_resident` +
    /// 4 × 16 KiB an instance).
    pub max_instances: u32,
    /// Bytes of each linear-memory slot a call dirtied that stay resident for the next call
    /// of the same module: reset by copying them back from the module's memory image, where
    /// the rest are unmapped and faulted in again by the next call. Heavy components gain most
    /// (a JavaScript call 0.70 → 0.47 ms at 16 MiB: its pre-initialised heap is rewritten on
    /// every call); the price is memory kept between calls — up to this much for every warm
    /// slot, 2 × `max_instances` of them, that guests dirtied. Default 128 KiB.
    pub memory_keep_resident: usize,
    /// Largest single linear memory, in bytes; no connector's memory cap may exceed it.
    pub max_memory_bytes: u64,
    /// Operator settings of outbound HTTP (private addresses allowed, timeouts, size caps).
    pub outbound: OutboundConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            cache_max_bytes: 2 << 30,
            limits: Limits::default(),
            epoch_tick: Duration::from_millis(1),
            long_runner_slots: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).max(1)),
            compile_timeout: Duration::from_secs(60),
            max_compiles: 2,
            max_component_bytes: 32 << 20,
            allocator: Allocator::Auto,
            max_instances: 500,
            memory_keep_resident: 128 << 10,
            max_memory_bytes: 1 << 30,
            outbound: OutboundConfig::default(),
        }
    }
}

/// `Inspection::fits` as it always read: `{"Ok": description}` or `{"Err": "why"}`.
fn fit_as_text<S: serde::Serializer>(
    fits: &Result<Description, LoadError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    fits.as_ref()
        .map_err(ToString::to_string)
        .serialize(serializer)
}

fn engine_error(e: wasmtime::Error) -> RuntimeError {
    RuntimeError::Engine {
        message: format!("{e:#}"),
        source: e.into_boxed_dyn_error(),
    }
}

/// Why a runtime could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the wasmtime engine: {message}")]
    Engine {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot link the host interfaces: {message}")]
    Link {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot open the artifact cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Limits(#[from] crate::sandbox::limits::InvalidLimits),
}

/// Why bytes could not be loaded as a connector. Nothing is cached when loading fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("component is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error(
        "this is a core WebAssembly module, not a component; build the connector with \
         `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("compiling took longer than {0:?}")]
    CompileTimeout(Duration),
    #[error("every compile slot stayed busy for {0:?}; try again shortly")]
    CompilerBusy(Duration),
    #[error("component does not fit the gantry:connector/plugin world: {0}")]
    World(String),
    #[error("describe() failed: {0}")]
    Describe(String),
}

impl LoadError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "too-large",
            LoadError::NotWasm(_) => "not-wasm",
            LoadError::CoreModule => "core-module",
            LoadError::Invalid(_) => "invalid-component",
            LoadError::CompileTimeout(_) => "compile-timeout",
            LoadError::CompilerBusy(_) => "compiler-busy",
            LoadError::World(_) => "world-mismatch",
            LoadError::Describe(_) => "bad-describe",
        }
    }
}

/// Counters of a runtime's work since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeStats {
    /// Components compiled from source.
    pub compiled: u64,
    /// Time spent compiling them, in microseconds.
    pub compile_micros: u64,
    /// Components loaded from the artifact cache.
    pub cache_hits: u64,
    /// Of those, loaded on their seal: neither hashed whole nor described again.
    pub sealed_hits: u64,
    /// Components looked for in the artifact cache and not found (or rejected).
    pub cache_misses: u64,
    /// Bytes of artifacts the disk cache holds now.
    pub cache_bytes: u64,
    /// Connectors loaded now.
    pub loaded: usize,
    /// Compiles running now, abandoned ones (past their timeout) included.
    pub compiling: usize,
}

/// What a `.wasm` file is, imports and exports, and whether it fits the world.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub digest: Digest,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `describe()` when the component fits the world, or why it does not.
    #[serde(serialize_with = "fit_as_text")]
    pub fits: Result<Description, LoadError>,
}

impl Inspection {
    /// The imports the sandbox links but never grants (`wasi:filesystem`, `wasi:sockets`).
    pub fn never_granted(&self) -> Vec<&str> {
        self.imports
            .iter()
            .map(String::as_str)
            .filter(|name| connector::never_granted(name))
            .collect()
    }
}

/// The process-wide host: cheap to clone, every clone shares one engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    config: RuntimeConfig,
    cache: Option<ArtifactCache>,
    /// `config.outbound`, shared by every call's policy without copying it.
    outbound: Arc<OutboundConfig>,
    loaded: Mutex<HashMap<Digest, Weak<Connector>>>,
    /// One lock per digest being loaded, so concurrent loads of new bytes compile them once.
    loading: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    compiled: AtomicU64,
    compile_micros: AtomicU64,
    cache_hits: AtomicU64,
    sealed_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// One permit per compile that may run at once.
    compiles: Arc<tokio::sync::Semaphore>,
    /// Threads of low priority for work calls should not wait behind: compiles, and giving
    /// large memories back to the pool.
    background: Arc<rayon::ThreadPool>,
    /// The slots long-running guests take turns on.
    turns: Turns,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime with the given settings.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.limits.validate(config.max_memory_bytes)?;
        let engine = new_engine(&config)?;
        let mut linker = Linker::new(&engine);
        crate::sandbox::add_to_linker(&mut linker).map_err(|e| RuntimeError::Link {
            message: format!("{e:#}"),
            source: e.into_boxed_dyn_error(),
        })?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                ArtifactCache::open(dir, &engine, config.cache_max_bytes).map_err(|source| {
                    RuntimeError::Cache {
                        path: dir.clone(),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick).map_err(|e| {
            RuntimeError::Engine {
                message: format!("cannot start the epoch ticker: {e}"),
                source: Box::new(e),
            }
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                outbound: Arc::new(config.outbound.clone()),
                compiles: Arc::new(tokio::sync::Semaphore::new(config.max_compiles.max(1))),
                background: Arc::new(background_pool()?),
                turns: Turns::new(config.long_runner_slots),
                config,
                cache,
                loaded: Mutex::new(HashMap::new()),
                loading: Mutex::new(HashMap::new()),
                compiled: AtomicU64::new(0),
                compile_micros: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                sealed_hits: AtomicU64::new(0),
                cache_misses: AtomicU64::new(0),
                _ticker: ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            compile_micros: self.inner.compile_micros.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
            sealed_hits: self.inner.sealed_hits.load(Ordering::Relaxed),
            cache_misses: self.inner.cache_misses.load(Ordering::Relaxed),
            cache_bytes: self.inner.cache.as_ref().map_or(0, |c| c.bytes()),
            loaded: self.loaded().len(),
            compiling: self.inner.config.max_compiles.max(1)
                - self.inner.compiles.available_permits(),
        }
    }

    /// Digests of the connectors loaded now.
    pub fn loaded(&self) -> Vec<Digest> {
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loaded.retain(|_, weak| weak.strong_count() > 0);
        loaded.keys().copied().collect()
    }

    /// Whether the connector with `digest` is loaded now.
    pub fn is_loaded(&self, digest: &Digest) -> bool {
        self.loaded_connector(digest).is_some()
    }

    /// The connector with `digest`, if it is loaded now.
    pub fn loaded_connector(&self, digest: &Digest) -> Option<Arc<Connector>> {
        let loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loaded.get(digest).and_then(Weak::upgrade)
    }

    /// Load `bytes` as a connector: verify, compile (or take the cached artifact), check it
    /// against the world and read `describe()`. Loading the same bytes again while the first
    /// load is alive returns the same connector.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<Connector>, LoadError> {
        check_header(bytes, self.inner.config.max_component_bytes)?;
        let digest = Digest::of(bytes);
        let loaded = self.load_as(digest, bytes.len(), Some(bytes)).await?;
        Ok(loaded.expect("with its bytes, a load gives a connector or an error"))
    }

    /// The connector whose bytes (`size` of them) have `digest`, when it is loaded or its
    /// artifact is in the cache: loaded without reading, hashing or even having its bytes
    /// (what a restart's first call saves). `Ok(None)` when neither holds it: then
    /// [`load`](Self::load) its bytes.
    pub async fn load_cached(
        &self,
        digest: &Digest,
        size: usize,
    ) -> Result<Option<Arc<Connector>>, LoadError> {
        self.load_as(*digest, size, None).await
    }

    async fn load_as(
        &self,
        digest: Digest,
        size: usize,
        bytes: Option<&[u8]>,
    ) -> Result<Option<Arc<Connector>>, LoadError> {
        if let Some(loaded) = self.loaded_connector(&digest) {
            return Ok(Some(loaded));
        }
        let gate = self
            .inner
            .loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(digest)
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        // Whoever held the gate before us may have loaded it.
        if let Some(loaded) = self.loaded_connector(&digest) {
            return Ok(Some(loaded));
        }
        let result = self.load_new(digest, size, bytes).await;
        self.inner
            .loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest);
        result
    }

    async fn load_new(
        &self,
        digest: Digest,
        size: usize,
        bytes: Option<&[u8]>,
    ) -> Result<Option<Arc<Connector>>, LoadError> {
        let cached = crate::durable::off_executor(|| self.cached(&digest));
        let (component, origin, verified) = match (cached, bytes) {
            (Some((component, verified)), _) => (component, Origin::Cache, Some(verified)),
            (None, None) => return Ok(None),
            (None, Some(bytes)) => {
                if self.inner.cache.is_some() {
                    self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
                }
                let started = std::time::Instant::now();
                let component = self.compile(bytes).await?;
                let micros = started.elapsed().as_micros() as u64;
                self.inner
                    .compile_micros
                    .fetch_add(micros, Ordering::Relaxed);
                (component, Origin::Compiled, None)
            }
        };
        let pre = self.pre_instantiate(&component)?;
        // A sealed artifact's `describe()` answer is the one its first load read and checked.
        let hashed = match &verified {
            Some(Verified::Hashed(file)) => Some(*file),
            _ => None,
        };
        let (description, schemas) = match verified {
            Some(Verified::Sealed(description)) => {
                self.inner.sealed_hits.fetch_add(1, Ordering::Relaxed);
                let schemas =
                    schemas::Schemas::compile(&description).map_err(LoadError::Describe)?;
                (description, schemas)
            }
            _ => self.describe(&digest, &pre).await?,
        };

        if origin == Origin::Compiled {
            self.inner.compiled.fetch_add(1, Ordering::Relaxed);
            if let Some(cache) = &self.inner.cache {
                match component.serialize() {
                    Ok(artifact) => match cache.put(&digest, &artifact) {
                        Ok(()) => self.seal_when_settled(digest, &description),
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "cannot cache compiled artifact")
                        }
                    },
                    Err(e) => tracing::warn!(%digest, error = %e, "cannot serialize artifact"),
                }
            }
        } else {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            // Hashed whole and described: sealed, so that its next load is neither.
            if let (Some(cache), Some(hashed)) = (&self.inner.cache, hashed) {
                crate::durable::off_executor(|| cache.seal(&digest, &hashed, &description));
            }
        }

        let engine = &self.inner.engine;
        let kind = component.component_type();
        let imports = kind
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports = kind
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let connector = Arc::new(Connector::new(
            digest,
            size,
            description,
            schemas,
            pre,
            origin,
            (imports, exports),
        ));
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another task may have loaded the same digest meanwhile: keep the first.
        if let Some(existing) = loaded.get(&digest).and_then(Weak::upgrade) {
            return Ok(Some(existing));
        }
        loaded.insert(digest, Arc::downgrade(&connector));
        tracing::info!(%digest, name = %connector.description().name,
            version = %connector.description().version, ?origin, "connector loaded");
        Ok(Some(connector))
    }

    /// Once the artifact just cached for `digest` has settled, hash it whole again and seal it
    /// (in the background, unless the runtime is gone by then), so that even the first restart
    /// after a publish loads it on its seal.
    fn seal_when_settled(&self, digest: Digest, description: &Description) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, description) = (Arc::downgrade(&self.inner), description.clone());
        handle.spawn(async move {
            tokio::time::sleep(cache::SETTLED).await;
            let seal = move || {
                if let Some(cache) = inner.upgrade().as_ref().and_then(|i| i.cache.as_ref()) {
                    cache.verify_and_seal(&digest, &description);
                }
            };
            let _ = tokio::task::spawn_blocking(seal).await;
        });
    }

    /// `digest`'s component from the artifact cache, and how its artifact was verified.
    fn cached(&self, digest: &Digest) -> Option<(Component, Verified)> {
        let cache = self.inner.cache.as_ref()?;
        let cached = cache.get(digest)?;
        // SAFETY: `Component::deserialize_file` maps this file and runs it as native code.
        // `ArtifactCache::get` names it only when its MAC under the host's own key (kept 0600
        // in a directory only this user may write) verifies: bytes this host wrote from
        // `Component::serialize` of an engine with the same compatibility hash, for this
        // digest. Between that check and the mapping, only this user could replace the file
        // (files are only ever replaced whole, by rename). wasmtime re-checks its own header
        // and engine settings too.
        match unsafe { Component::deserialize_file(&self.inner.engine, &cached.path) } {
            Ok(component) => Some((component, cached.verified)),
            Err(e) => {
                tracing::warn!(%digest, error = %format!("{e:#}"), "cached artifact rejected; recompiling");
                None
            }
        }
    }

    async fn compile(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        let engine = self.inner.engine.clone();
        let bytes = bytes.to_vec();
        let limit = self.inner.config.compile_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let slot = tokio::time::timeout_at(deadline, self.inner.compiles.clone().acquire_owned())
            .await
            .map_err(|_| LoadError::CompilerBusy(limit))?
            .expect("the compile semaphore is never closed");
        // Compilation is CPU-bound and may take a while: keep it off the async executor, on
        // threads of low priority (calls come first). On timeout the caller gets its error at
        // once; the compile finishes in the background and its result is dropped — holding its
        // slot until then.
        let pool = self.inner.background.clone();
        let task = tokio::task::spawn_blocking(move || {
            let component = pool.install(|| Component::new(&engine, &bytes));
            drop(slot);
            component
        });
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(LoadError::CompileTimeout(limit)),
            Ok(Err(join)) => Err(LoadError::Invalid(format!("compiler failed: {join}"))),
            Ok(Ok(Err(e))) => Err(LoadError::Invalid(format!("{e:#}"))),
            Ok(Ok(Ok(component))) => Ok(component),
        }
    }

    fn pre_instantiate(&self, component: &Component) -> Result<PluginPre<Sandbox>, LoadError> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        PluginPre::new(pre).map_err(|e| LoadError::World(format!("{e:#}")))
    }

    async fn describe(
        &self,
        digest: &Digest,
        pre: &PluginPre<Sandbox>,
    ) -> Result<(Description, schemas::Schemas), LoadError> {
        let info = call::describe(self, digest, pre, self.inner.config.limits)
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        let description = Description::try_from(info).map_err(LoadError::Describe)?;
        let schemas = schemas::Schemas::compile(&description).map_err(LoadError::Describe)?;
        Ok((description, schemas))
    }

    /// Run `operation` of `connector` on the JSON document `input`, in a fresh sandbox. Input
    /// is checked against the operation's input schema before the guest runs
    /// ([`CallError::InvalidInput`] naming where it fails); the output is checked to be JSON.
    /// For an operation whose schema accepts anything (`{}`), input that is not JSON is
    /// reported as `InvalidInput` only when the connector refuses it or answers with something
    /// that is not JSON (a connector that accepts it is not second-guessed).
    pub async fn invoke(
        &self,
        connector: &Arc<Connector>,
        operation: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<call::CallOutput, CallError> {
        call::invoke(self, connector, operation, input, ctx, call::Strict::Yes).await
    }

    /// [`invoke`](Self::invoke) without the host's checks before the guest runs: an operation
    /// the connector does not declare, or input its schema refuses, reaches the guest — to see
    /// how the connector itself answers them (`gantry check`). Limits and policy are the same.
    pub async fn probe(
        &self,
        connector: &Arc<Connector>,
        operation: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<call::CallOutput, CallError> {
        call::invoke(self, connector, operation, input, ctx, call::Strict::No).await
    }

    /// Inspect `bytes` without loading them: digest, imports, exports, and whether (and why
    /// not) they fit the world. Nothing is cached.
    pub async fn inspect(&self, bytes: &[u8]) -> Result<Inspection, LoadError> {
        check_header(bytes, self.inner.config.max_component_bytes)?;
        let component = self.compile(bytes).await?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let imports = ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let digest = Digest::of(bytes);
        let fits = match self.pre_instantiate(&component) {
            Ok(pre) => self
                .describe(&digest, &pre)
                .await
                .map(|(description, _)| description),
            Err(e) => Err(e),
        };
        Ok(Inspection {
            digest,
            size: bytes.len(),
            imports,
            exports,
            fits,
        })
    }

    pub(crate) fn outbound(&self) -> &Arc<OutboundConfig> {
        &self.inner.outbound
    }

    pub(crate) fn default_limits(&self) -> Limits {
        self.inner.config.limits
    }

    pub(crate) fn turns(&self) -> &Turns {
        &self.inner.turns
    }

    pub(crate) fn background(&self) -> &Arc<rayon::ThreadPool> {
        &self.inner.background
    }
}

/// Background threads, as many as the cores, each at low priority: Cranelift compiles on them
/// (its parallel compilation runs in whichever rayon pool it is called from), so a publisher's
/// compile takes what calls leave over; large stores are dropped on them too.
fn background_pool() -> Result<rayon::ThreadPool, RuntimeError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("gantry-background-{i}"))
        .start_handler(|_| crate::sandbox::turns::lower_priority())
        .build()
        .map_err(|e| RuntimeError::Engine {
            message: format!("cannot start the compile threads: {e}"),
            source: Box::new(e),
        })
}

/// Refuse what cannot be a component before spending time compiling it.
fn check_header(bytes: &[u8], limit: usize) -> Result<(), LoadError> {
    if bytes.len() > limit {
        return Err(LoadError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm(
            "missing the `\\0asm` magic number".into(),
        ));
    }
    // Bytes 4..8 are version and layer: layer 0 is a core module, layer 1 a component.
    match bytes[6..8] {
        [0, 0] => Err(LoadError::CoreModule),
        [1, 0] => Ok(()),
        _ => Err(LoadError::NotWasm("unknown binary layer".into())),
    }
}

fn new_engine(config: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let mut base = Config::new();
    base.wasm_component_model(true)
        .epoch_interruption(true)
        // Concurrency support doubles the cost of a sync call and nearly triples call_async;
        // no connector needs component-model async yet.
        .concurrency_support(false)
        .max_wasm_stack(512 << 10);

    let mut pool = PoolingAllocationConfig::new();
    let n = config.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        // Keep some of each slot resident so reusing it does not fault pages back in. With
        // the kernel's PAGEMAP_SCAN (`pagemap_scan`) only dirty pages are reset (copied back
        // from the image), up to this many bytes of them; the rest are unmapped.
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(16 << 10)
        // Keep a warm slot per module for as many modules as may be live at once. With the
        // default (100), calls alternating among 100 loaded versions steal each other's slots
        // and re-map memory images: 4–5× a single version's call, 2–3× with this
        // (`gantry bench --loaded 1,100`).
        .max_unused_warm_slots(n)
        .pagemap_scan(Enabled::Auto);
    let mut pooled = base.clone();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    let on_demand = |base: &Config| {
        let mut c = base.clone();
        c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        Engine::new(&c).map_err(engine_error)
    };
    match config.allocator {
        Allocator::OnDemand => on_demand(&base),
        Allocator::Pooling => Engine::new(&pooled).map_err(engine_error),
        Allocator::Auto => match Engine::new(&pooled) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"),
                    "cannot reserve the pooling allocator; falling back to on-demand allocation");
                on_demand(&base)
            }
        },
    }
}

/// Advances the engine's epoch every tick until dropped; CPU deadlines count these ticks.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gantry-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(matches!(
            check_header(b"hello world", 1 << 20),
            Err(LoadError::NotWasm(_))
        ));
        assert_eq!(
            check_header(b"\0asm\x01\0\0\0", 1 << 20),
            Err(LoadError::CoreModule)
        );
        assert_eq!(check_header(b"\0asm\x0d\0\x01\0", 1 << 20), Ok(()));
        assert_eq!(
            check_header(&[0; 100], 10),
            Err(LoadError::TooLarge {
                size: 100,
                limit: 10
            })
        );
    }
}

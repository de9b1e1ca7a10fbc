//! The baseline a hand-rolled host gets from the same wasmtime: one engine with the pooling
//! allocator tuned like Gantry's, WASI linked, Gantry's own imports answered with nothing (no
//! config, no secrets, outbound HTTP refused, logs dropped), and a plain synchronous call — no
//! limits, no sandbox state, no input or output checks, and no CPU deadline unless asked for
//! ([`RawHost::with_cpu_deadline`]). Components that import wasi:http are not supported here.

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    // WASI comes from wasmtime-wasi; of the rest only Gantry's interfaces and wasi:config are
    // linked (below).
    wasmtime::component::bindgen!({ path: "../wit", world: "gantry:connector/plugin" });
}

use bindings::gantry::connector::{http, log, secrets, types};
use bindings::wasi::config::store as config;
use bindings::{Plugin, PluginPre};
use wasmtime::component::HasSelf;

/// What a store holds: an empty WASI context.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl State {
    fn new() -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, _level: types::Level, _message: String) {}
}

impl secrets::Host for State {
    fn get(&mut self, _key: String) -> Option<String> {
        None
    }
}

impl http::Host for State {
    fn send(&mut self, _request: http::Request) -> Result<http::Response, http::HttpError> {
        Err(http::HttpError::Denied(
            "no outbound HTTP in the raw host".into(),
        ))
    }
}

impl config::Host for State {
    fn get(&mut self, _key: String) -> Result<Option<String>, config::Error> {
        Ok(None)
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(Vec::new())
    }
}

fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    types::add_to_linker::<_, HasSelf<State>>(linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<State>>(linker, |s| s)?;
    secrets::add_to_linker::<_, HasSelf<State>>(linker, |s| s)?;
    http::add_to_linker::<_, HasSelf<State>>(linker, |s| s)?;
    config::add_to_linker::<_, HasSelf<State>>(linker, |s| s)
}

/// One engine and linker for every raw component.
pub struct RawHost {
    engine: Engine,
    linker: Linker<State>,
    cpu_deadline: bool,
}

impl RawHost {
    pub fn new() -> Result<Self> {
        Self::build(false)
    }

    /// The same host with wasmtime's epoch interruption on, the mechanism behind Gantry's CPU
    /// deadline (and any host's that must stop a guest spinning): the compiled code checks
    /// the epoch at every function entry and loop. The deadline itself never comes (nothing
    /// advances the epoch), so this measures only what the checks cost.
    pub fn with_cpu_deadline() -> Result<Self> {
        Self::build(true)
    }

    fn build(cpu_deadline: bool) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(1000)
            .total_core_instances(8000)
            .total_memories(2000)
            .total_tables(4000)
            .total_stacks(1000)
            .max_memory_size(1 << 30)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .max_unused_warm_slots(1000)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(cpu_deadline)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut linker = Linker::new(&engine);
        link(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(Self {
            engine,
            linker,
            cpu_deadline,
        })
    }

    /// Compile `bytes` and link them.
    pub fn load(&self, bytes: &[u8]) -> Result<RawComponent> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("compiling the component")?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(RawComponent {
            pre,
            cpu_deadline: self.cpu_deadline,
        })
    }
}

/// A component ready to instantiate.
pub struct RawComponent {
    pre: PluginPre<State>,
    cpu_deadline: bool,
}

impl RawComponent {
    fn store(&self) -> Store<State> {
        let mut store = Store::new(self.pre.engine(), State::new());
        if self.cpu_deadline {
            store.set_epoch_deadline(1);
        }
        store
    }

    /// A fresh store and instance per call, dropped after it.
    pub fn call_fresh(&self, operation: &str, input: &str) -> Result<String> {
        let mut store = self.store();
        let plugin = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        call(&plugin, &mut store, operation, input)
    }

    /// An instance kept alive for many calls.
    pub fn live(&self) -> Result<LiveInstance> {
        let mut store = self.store();
        let plugin = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(LiveInstance { store, plugin })
    }
}

/// One instance and its store, reused call after call (state leaks between calls: not what a
/// multi-tenant host may do, but the floor of what wasmtime costs).
pub struct LiveInstance {
    store: Store<State>,
    plugin: Plugin,
}

impl LiveInstance {
    pub fn call(&mut self, operation: &str, input: &str) -> Result<String> {
        call(&self.plugin, &mut self.store, operation, input)
    }
}

fn call(plugin: &Plugin, store: &mut Store<State>, operation: &str, input: &str) -> Result<String> {
    plugin
        .gantry_connector_connector()
        .call_invoke(store, operation, input)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?
        .map_err(|e| anyhow::anyhow!("the guest returned an error: {e:?}"))
}

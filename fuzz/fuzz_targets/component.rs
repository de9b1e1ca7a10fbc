//! Component bytes as a publisher sends them, loaded or inspected as the registry does: never
//! a panic, never a hang past the compile cap and the limits of `describe()`, and the host
//! still serves its next load. Two kinds of input:
//!
//! - any bytes behind a component's header, for the parser and the validator;
//! - a core module `wasm-smith` writes to the exact imports and exports of the connector world,
//!   or of a lean one with only the host's own imports (the shapes `wit-component` gives
//!   them), made a component by `wit-component`: it
//!   compiles, links against the sandbox and runs `describe()` and `invoke()` with arbitrary
//!   code — wild pointers and lengths in what it returns, traps, loops, calls of every import
//!   with whatever arguments.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use gantry_host::{CallContext, Limits, Runtime, RuntimeConfig};
use libfuzzer_sys::fuzz_target;
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve, WorldId};

/// Version 0x0d, layer 1: what `Runtime::load` reads as a component's header.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

struct Host {
    executor: tokio::runtime::Runtime,
    runtime: Runtime,
}

/// One runtime for the whole run, as a server has: what a load leaves behind (a compile past
/// its cap, a trapped instance) must not break the next one.
static HOST: LazyLock<Host> = LazyLock::new(|| {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = RuntimeConfig {
        compile_timeout: Duration::from_secs(5),
        max_instances: 16,
        max_memory_bytes: 64 << 20,
        limits: Limits {
            cpu_time: Duration::from_millis(20),
            wall_time: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let runtime = {
        let _inside = executor.enter();
        Runtime::new(config).unwrap()
    };
    Host { executor, runtime }
});

/// The package of the connector world, `plugin` (every import the host links) and `lean` (the
/// host's own imports only: far fewer trampolines to compile, so many more runs a second), and
/// a core module of each one's exact shape (imports and exports, no code).
struct Worlds {
    resolve: Resolve,
    shapes: [(WorldId, Vec<u8>); 2],
}

static WORLDS: LazyLock<Worlds> = LazyLock::new(|| {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit"))
        .unwrap();
    let lean = resolve
        .push_str(
            "lean.wit",
            "package gantry:fuzz;
             world lean {
                 import gantry:connector/log@0.1.0;
                 import gantry:connector/secrets@0.1.0;
                 import gantry:connector/http@0.1.0;
                 import wasi:config/store@0.2.0-rc.1;
                 export gantry:connector/connector@0.1.0;
             }",
        )
        .unwrap();
    let shape = |world| {
        let abi = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);
        (world, wit_component::dummy_module(&resolve, world, abi))
    };
    let shapes = [
        shape(resolve.select_world(&[package], Some("plugin")).unwrap()),
        shape(resolve.select_world(&[lean], Some("lean")).unwrap()),
    ];
    Worlds { resolve, shapes }
});

/// A component whose core module `wasm-smith` wrote to the world's shape.
fn shaped_component(u: &mut Unstructured) -> Result<Option<Vec<u8>>> {
    let Worlds { resolve, shapes } = &*WORLDS;
    let (world, shape) = u.choose(shapes)?;
    let mut config = wasm_smith::Config::arbitrary(u)?;
    config.module_shape = Some(shape.clone());
    // What the engine runs: no threads, GC, exceptions or other proposals it does not enable.
    config.threads_enabled = false;
    config.shared_everything_threads_enabled = false;
    config.gc_enabled = false;
    config.exceptions_enabled = false;
    config.custom_page_sizes_enabled = false;
    config.custom_descriptors_enabled = false;
    config.wide_arithmetic_enabled = false;
    config.memory64_enabled = false;
    config.max_memories = 1;
    // Code that cannot trap mostly returns: what `describe()` and `invoke()` answer then
    // (pointers, lengths, strings) is what the host has to read safely.
    config.disallow_traps = u.ratio(3, 4)?;
    config.max_funcs = config.max_funcs.min(50);
    config.max_instructions = config.max_instructions.min(200);
    let mut module = wasm_smith::Module::new(config, u)?.to_bytes();
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        *world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    // A module `wit-component` cannot make a component of tells nothing about the host.
    let encoded = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode());
    Ok(encoded.ok())
}

fn input(u: &mut Unstructured) -> Result<Option<(Vec<u8>, bool)>> {
    let inspect = u.arbitrary()?;
    let bytes = if u.arbitrary()? {
        shaped_component(u)?
    } else {
        let rest: &[u8] = u.arbitrary()?;
        Some([COMPONENT_HEADER, rest].concat())
    };
    Ok(bytes.map(|bytes| (bytes, inspect)))
}

// The runtime and the worlds' shapes are made before the first input, outside libFuzzer's
// per-input timeout.
fuzz_target!(init: (LazyLock::force(&HOST), LazyLock::force(&WORLDS)), |data: &[u8]| {
    let Ok(Some((bytes, inspect))) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let host = &*HOST;
    let runtime = &host.runtime;
    host.executor.block_on(async {
        if inspect {
            if let Ok(inspection) = runtime.inspect(&bytes).await {
                assert_eq!(inspection.size, bytes.len());
            }
            return;
        }
        let Ok(connector) = runtime.load(&bytes).await else {
            return;
        };
        // Loaded: the same bytes while it lives are the same connector, and every operation
        // it declares, and one it does not, answers within the limits.
        let again = runtime.load(&bytes).await.unwrap();
        assert!(Arc::ptr_eq(&connector, &again));
        let operations: Vec<String> = connector
            .description()
            .operations
            .iter()
            .take(3)
            .map(|operation| operation.name.clone())
            .chain(["no-such-operation".to_string()])
            .collect();
        for operation in operations {
            let _ = runtime
                .invoke(&connector, &operation, "{}", &CallContext::default())
                .await;
        }
    });
});

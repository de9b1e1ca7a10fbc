//! Extism (a reused plugin) next to Gantry's sandboxed fresh-instance call, a hand-rolled
//! wasmtime host and the native function, on the same inputs in one run.
//!
//! Run from the repository root: `cargo bench --manifest-path peers/extism/Cargo.toml`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gantry_bench::cases;
use gantry_bench::raw::RawHost;
use gantry_host::{CallContext, Runtime, RuntimeConfig};
use std::hint::black_box;

fn peers(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let plugin_bytes = gantry_extism_bench::extism_plugin();
    let mut plugin = extism::Plugin::new(
        extism::Manifest::new([extism::Wasm::data(plugin_bytes)]),
        [],
        false,
    )
    .expect("loading the Extism plugin");
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let raw = RawHost::new().unwrap();
    let ctx = CallContext::default();

    for case in cases::standard() {
        let bytes = gantry_extism_bench::gantry_connector(&case.connector);
        let connector = tokio.block_on(runtime.load(&bytes)).unwrap();
        let component = raw.load(&bytes).unwrap();
        let (op, input) = (case.operation.as_str(), case.input.as_str());
        // The plugin exports each operation as a function of the same name.
        let expected = (case.native.unwrap())(input);
        let got: String = plugin.call::<&str, &str>(op, input).unwrap().to_string();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&got).unwrap(),
            serde_json::from_str::<serde_json::Value>(&expected).unwrap(),
            "the Extism plugin does the same work"
        );

        let mut group = c.benchmark_group(&case.name);
        group.throughput(Throughput::Bytes(input.len() as u64));
        if let Some(native) = case.native {
            group.bench_function(BenchmarkId::from_parameter("native"), |b| {
                b.iter(|| black_box(native(black_box(input))))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("extism-reused-plugin"), |b| {
            b.iter(|| {
                let out: &str = plugin.call(op, black_box(input)).unwrap();
                black_box(out.len())
            })
        });
        group.bench_function(
            BenchmarkId::from_parameter("wasmtime-fresh-instance"),
            |b| b.iter(|| black_box(component.call_fresh(op, black_box(input)).unwrap())),
        );
        group.bench_function(BenchmarkId::from_parameter("gantry-invoke"), |b| {
            b.to_async(&tokio).iter(|| async {
                black_box(runtime.invoke(&connector, op, input, &ctx).await.unwrap())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, peers);
criterion_main!(benches);

//! Call latency of Gantry next to its baselines, on the same inputs in one run (issue 6):
//! for each case (echo 100 B, echo 10 KB, json-transform `pick` on ~1 KB) the native function,
//! a hand-rolled wasmtime host (live instance; fresh instance per call, without and with a CPU
//! deadline), Gantry's sandboxed `invoke` (and the same without its input-schema check), a call
//! of an instance through the registry, and the HTTP API on 127.0.0.1; then the per-call cost
//! with 1, 10 and 100 loaded versions (Gantry and the hand-rolled host), the hot swap, and the
//! cold paths.
//!
//! Run: `cargo bench --bench latency` (percentiles and calls/s: `gantry bench`).

#[path = "../tests/all/support.rs"]
mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gantry_bench::cases;
use gantry_bench::raw::RawHost;
use gantry_bench::scenario::{self, Deployment, HttpServer};
use gantry_host::CallContext;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn paths(c: &mut Criterion) {
    let tokio = tokio();
    let raw = RawHost::new().unwrap();
    let raw_with_deadline = RawHost::with_cpu_deadline().unwrap();
    let runtime = support::runtime();
    let ctx = CallContext::default();
    for case in cases::standard() {
        let bytes = support::connector(&case.connector);
        let (op, input) = (case.operation.as_str(), case.input.as_str());
        let component = raw.load(&bytes).unwrap();
        let with_deadline = raw_with_deadline.load(&bytes).unwrap();
        let mut live = component.live().unwrap();
        let connector = tokio.block_on(runtime.load(&bytes)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let deployment = tokio
            .block_on(Deployment::new(dir.path(), runtime.clone(), &bytes))
            .unwrap();
        let server = tokio.block_on(HttpServer::start(&deployment, op)).unwrap();

        let mut group = c.benchmark_group(&case.name);
        if let Some(native) = case.native {
            group.bench_function(BenchmarkId::from_parameter("native"), |b| {
                b.iter(|| black_box(native(black_box(input))))
            });
        }
        group.bench_function(BenchmarkId::from_parameter("wasmtime-live-instance"), |b| {
            b.iter(|| black_box(live.call(op, black_box(input)).unwrap()))
        });
        group.bench_function(
            BenchmarkId::from_parameter("wasmtime-fresh-instance"),
            |b| b.iter(|| black_box(component.call_fresh(op, black_box(input)).unwrap())),
        );
        group.bench_function(
            BenchmarkId::from_parameter("wasmtime-fresh-cpu-deadline"),
            |b| b.iter(|| black_box(with_deadline.call_fresh(op, black_box(input)).unwrap())),
        );
        group.bench_function(BenchmarkId::from_parameter("gantry-invoke"), |b| {
            b.to_async(&tokio).iter(|| async {
                black_box(runtime.invoke(&connector, op, input, &ctx).await.unwrap())
            })
        });
        // The same call without the host's input-schema check: the difference is its cost.
        group.bench_function(
            BenchmarkId::from_parameter("gantry-invoke-unchecked"),
            |b| {
                b.to_async(&tokio).iter(|| async {
                    black_box(runtime.probe(&connector, op, input, &ctx).await.unwrap())
                })
            },
        );
        group.bench_function(BenchmarkId::from_parameter("gantry-instance"), |b| {
            b.to_async(&tokio)
                .iter(|| async { black_box(deployment.invoke(op, input).await.unwrap()) })
        });
        group.bench_function(BenchmarkId::from_parameter("gantry-http"), |b| {
            b.to_async(&tokio)
                .iter(|| async { black_box(server.call(input).await.unwrap()) })
        });
        group.finish();
        tokio.block_on(server.stop()).unwrap();
    }
}

fn loaded_versions(c: &mut Criterion) {
    let tokio = tokio();
    let runtime = support::runtime();
    let case = &cases::standard()[0];
    let bytes = support::connector(&case.connector);
    let ctx = CallContext::default();
    let raw = RawHost::new().unwrap();
    let mut group = c.benchmark_group("loaded-versions");
    for count in [1, 10, 100] {
        let components: Vec<_> = (0..count)
            .map(|n| raw.load(&scenario::variant(&bytes, n as u64)).unwrap())
            .collect();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("wasmtime-fresh-instance", count), |b| {
            b.iter(|| {
                next = (next + 1) % components.len();
                black_box(
                    components[next]
                        .call_fresh(&case.operation, black_box(&case.input))
                        .unwrap(),
                )
            })
        });
        drop(components);
        let loaded = tokio
            .block_on(scenario::load_versions(runtime, &bytes, count))
            .unwrap();
        let next = AtomicU64::new(0);
        group.bench_function(BenchmarkId::new("gantry-invoke", count), |b| {
            b.to_async(&tokio).iter(|| async {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % loaded.len();
                black_box(
                    runtime
                        .invoke(&loaded[i], &case.operation, &case.input, &ctx)
                        .await
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

/// The product path of a hot swap: flow runs while the step is rebound between two digests.
fn hot_swap(c: &mut Criterion) {
    let tokio = tokio();
    let case = &cases::standard()[0];
    let bytes = support::connector(&case.connector);
    let dir = tempfile::tempdir().unwrap();
    let deployment = Arc::new(
        tokio
            .block_on(scenario::SwapDeployment::new(
                dir.path(),
                scenario::runtime_in(dir.path()).unwrap(),
                &bytes,
                &case.operation,
            ))
            .unwrap(),
    );
    let input = serde_json::value::RawValue::from_string(case.input.clone()).unwrap();
    let mut group = c.benchmark_group("hot-swap");
    for swapping in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = swapping.then(|| {
            let (deployment, stop) = (deployment.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = 1;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(2));
                    deployment.rebind(next).unwrap();
                    next = 1 - next;
                }
            })
        });
        let name = if swapping {
            "flow-run-rebind-every-2ms"
        } else {
            "flow-run-steady"
        };
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench
                .to_async(&tokio)
                .iter(|| async { assert!(black_box(deployment.run(&input).await)) })
        });
        stop.store(true, Ordering::Relaxed);
        if let Some(swapper) = swapper {
            swapper.join().unwrap();
        }
    }
    group.finish();
}

fn cold_paths(c: &mut Criterion) {
    let tokio = tokio();
    let case = &cases::standard()[0];
    let bytes = support::connector(&case.connector);
    let dir = tempfile::tempdir().unwrap();
    let deployment = tokio
        .block_on(Deployment::new(
            dir.path(),
            scenario::runtime_in(dir.path()).unwrap(),
            &bytes,
        ))
        .unwrap();
    let mut group = c.benchmark_group("cold");
    group.sample_size(10);
    let revision = AtomicU64::new(1_000_000);
    group.bench_function("publish-first-call", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let fresh = scenario::variant(&bytes, revision.fetch_add(1, Ordering::Relaxed));
                    tokio
                        .block_on(scenario::publish_then_call(
                            &deployment,
                            fresh,
                            &case.operation,
                            &case.input,
                        ))
                        .unwrap()
                })
                .sum()
        })
    });
    let instance = deployment.instance;
    drop(deployment);
    group.bench_function("restart-first-call", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    tokio
                        .block_on(scenario::restart_then_call(
                            dir.path(),
                            instance,
                            &case.operation,
                            &case.input,
                        ))
                        .unwrap()
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, paths, loaded_versions, hot_swap, cold_paths);
criterion_main!(benches);

//! Call latency of a sandboxed fresh-instance call: new store + sandbox + instantiate from
//! `InstancePre` + call + drop, through `Runtime::invoke`, and through a hot-swap binding.
//!
//! Run: `cargo bench --bench call`

#[path = "../tests/all/support.rs"]
mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use gantry_host::{Bindings, CallContext};
use std::hint::black_box;

fn call_latency(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = support::runtime();
    let echo = tokio
        .block_on(runtime.load(&support::connector("echo")))
        .unwrap();
    let transform = tokio
        .block_on(runtime.load(&support::connector("json-transform")))
        .unwrap();
    let ctx = CallContext::default();
    let bindings = Bindings::new();
    bindings.bind("echo", echo.clone());

    let mut group = c.benchmark_group("invoke");
    group.bench_function("echo", |b| {
        b.to_async(&tokio).iter(|| async {
            black_box(
                runtime
                    .invoke(&echo, "echo", r#"{"a":1}"#, &ctx)
                    .await
                    .unwrap(),
            )
        })
    });
    group.bench_function("echo-via-binding", |b| {
        b.to_async(&tokio).iter(|| async {
            black_box(
                bindings
                    .invoke(runtime, "echo", "echo", r#"{"a":1}"#, &ctx)
                    .await
                    .unwrap(),
            )
        })
    });
    let input = r#"{"template":"Hello {{user.name}}","data":{"user":{"name":"Ada"}}}"#;
    group.bench_function("json-transform-template", |b| {
        b.to_async(&tokio).iter(|| async {
            black_box(
                runtime
                    .invoke(&transform, "template", input, &ctx)
                    .await
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, call_latency);
criterion_main!(benches);

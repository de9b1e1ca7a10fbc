//! Hot swap: rebinding under load drops no call, every result comes from exactly one version,
//! calls in flight finish on the version they started on, and an unbound version is unloaded.

use crate::support::{connector, json, runtime};
use gantry_host::{Bindings, CallContext};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_under_load_drops_no_call() {
    let rt = runtime();
    let v1 = rt.load(&connector("echo")).await.unwrap();
    let v2 = rt.load(&connector("echo-v2")).await.unwrap();
    let bindings = Arc::new(Bindings::new());
    bindings.bind("echo", v1.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let (from_v1, from_v2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for task in 0..4 {
        let (bindings, stop) = (bindings.clone(), stop.clone());
        let (from_v1, from_v2) = (from_v1.clone(), from_v2.clone());
        callers.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let input = json!({"task": task, "call": calls}).to_string();
                let out = bindings
                    .invoke(runtime(), "echo", "echo", &input, &CallContext::default())
                    .await
                    .unwrap_or_else(|e| panic!("call failed during swap: {e}"));
                let output = json(&out.output);
                if output == json(&input) {
                    from_v1.fetch_add(1, Ordering::Relaxed);
                } else if output == json!({"version": "2.0.0", "echo": json(&input)}) {
                    from_v2.fetch_add(1, Ordering::Relaxed);
                } else {
                    panic!("result from neither version: {output}");
                }
                calls += 1;
            }
            calls
        }));
    }

    for i in 0..60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        bindings.bind("echo", if i % 2 == 0 { v2.clone() } else { v1.clone() });
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("a caller panicked");
    }
    assert!(total > 0);
    assert!(from_v1.load(Ordering::Relaxed) > 0 && from_v2.load(Ordering::Relaxed) > 0);
    assert_eq!(
        total as usize,
        from_v1.load(Ordering::Relaxed) + from_v2.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_on_the_version_it_started_on() {
    let rt = runtime();
    let v1 = rt.load(&connector("echo")).await.unwrap();
    let v2 = rt.load(&connector("echo-v2")).await.unwrap();
    let bindings = Arc::new(Bindings::new());
    bindings.bind("slow", v1.clone());

    let held_before = Arc::strong_count(&v1);
    let in_flight = {
        let bindings = bindings.clone();
        tokio::spawn(async move {
            bindings
                .invoke(
                    runtime(),
                    "slow",
                    "delay",
                    r#"{"ms":400}"#,
                    &CallContext::default(),
                )
                .await
        })
    };
    // Wait until the call has resolved its binding (it holds one more `Arc` of v1).
    while Arc::strong_count(&v1) == held_before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let previous = bindings.bind("slow", v2.clone()).unwrap();
    assert_eq!(previous.digest(), v1.digest());

    let after = bindings
        .invoke(rt, "slow", "echo", r#"{"a":1}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(
        after.digest,
        *v2.digest(),
        "a new call gets the new version"
    );

    let before = in_flight.await.unwrap().unwrap();
    assert_eq!(
        before.digest,
        *v1.digest(),
        "the call in flight stayed on v1"
    );
    assert_eq!(before.output, r#"{"ms":400}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_version_is_unloaded_when_its_last_call_ends() {
    let rt = crate::support::small_runtime(None);
    let bindings = Bindings::new();
    let v1 = rt.load(&connector("echo")).await.unwrap();
    let d1 = *v1.digest();
    bindings.bind("echo", v1);
    let v2 = rt.load(&connector("echo-v2")).await.unwrap();

    // A call holds v1 while it is rebound away.
    let held = bindings.resolve("echo").unwrap();
    bindings.bind("echo", v2);
    assert!(rt.is_loaded(&d1), "still running: stays loaded");
    rt.invoke(&held, "echo", "{}", &CallContext::default())
        .await
        .unwrap();
    drop(held);
    assert!(!rt.is_loaded(&d1), "nothing binds or runs it: unloaded");
    assert_eq!(rt.loaded().len(), 1);

    bindings.unbind("echo");
    assert!(rt.loaded().is_empty());
    assert!(
        bindings
            .invoke(&rt, "echo", "echo", "{}", &CallContext::default())
            .await
            .is_err()
    );
}

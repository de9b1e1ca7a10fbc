//! Hostile connectors are stopped by the limit they test, get a typed error, and leave the host
//! able to serve the next call.

use crate::support::{connector, json, runtime};
use gantry_host::{CallContext, CallError, Limits};
use std::time::{Duration, Instant};

fn with_limits(limits: Limits) -> CallContext {
    CallContext {
        limits: Some(limits),
        ..CallContext::default()
    }
}

/// After a hostile call, a normal call on the same runtime succeeds.
async fn host_still_serves() {
    let rt = runtime();
    let echo = rt.load(&connector("echo")).await.unwrap();
    let out = rt
        .invoke(&echo, "echo", r#"{"ok":true}"#, &CallContext::default())
        .await
        .unwrap();
    assert_eq!(out.output, r#"{"ok":true}"#);
}

async fn run(name: &str, ctx: &CallContext) -> CallError {
    let rt = runtime();
    let c = rt.load(&connector(name)).await.unwrap();
    rt.invoke(&c, "run", "{}", ctx).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_forever_stops_at_its_cpu_deadline() {
    let limits = Limits {
        cpu_time: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = Instant::now();
    let err = run("spin-forever", &with_limits(limits)).await;
    assert_eq!(
        err,
        CallError::CpuDeadline {
            limit: limits.cpu_time
        },
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_deadline_covers_host_calls() {
    // `delay` sleeps in the host (wasi:clocks), using no CPU: only the wall-clock deadline stops it.
    let limits = Limits {
        wall_time: Duration::from_millis(300),
        ..Limits::default()
    };
    let rt = runtime();
    let echo = rt.load(&connector("echo")).await.unwrap();
    let started = Instant::now();
    let err = rt
        .invoke(&echo, "delay", r#"{"ms":60000}"#, &with_limits(limits))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            limit: limits.wall_time
        }
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloc_bomb_stops_at_its_memory_cap() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let err = run("alloc-bomb", &with_limits(limits)).await;
    assert_eq!(err, CallError::MemoryLimit { limit: 32 << 20 }, "{err}");
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_on_stack_exhaustion() {
    let err = run("deep-recursion", &CallContext::default()).await;
    assert_eq!(err, CallError::StackOverflow, "{err}");
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_typed_trap_with_the_message() {
    let err = run("panic", &CallContext::default()).await;
    match &err {
        CallError::Trap { stderr, .. } => {
            assert!(stderr.contains("connector gave up on input {}"), "{err:?}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(err.code(), "trap");
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_refused() {
    let err = run("huge-output", &CallContext::default()).await;
    assert_eq!(
        err,
        CallError::OutputTooLarge {
            size: 16 << 20,
            limit: Limits::default().output_bytes
        }
    );
    host_still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoop_sees_no_files_no_environment_no_sockets() {
    // Even with a secret and config present, the process environment stays invisible.
    // SAFETY: setting a variable in this test process only; no other thread reads it.
    unsafe { std::env::set_var("GANTRY_TEST_SECRET_ENV", "do-not-leak") };
    let rt = runtime();
    let snoop = rt.load(&connector("snoop")).await.unwrap();
    let out = rt
        .invoke(&snoop, "run", "{}", &CallContext::default())
        .await
        .unwrap();
    let seen = json(&out.output);

    assert_eq!(seen["env"], serde_json::json!([]), "{seen:#}");
    assert_eq!(seen["args"], serde_json::json!([]), "{seen:#}");
    for (path, probe) in seen["files"].as_object().unwrap() {
        assert!(
            probe["read_dir"].get("error").is_some(),
            "{path} listed: {probe}"
        );
        assert!(probe["read"].get("error").is_some(), "{path} read: {probe}");
    }
    for probe in ["tcp_connect", "tcp_listen", "udp_bind", "dns"] {
        assert!(
            seen[probe].get("error").is_some(),
            "{probe}: {}",
            seen[probe]
        );
    }
    assert!(!out.output.contains("do-not-leak"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_per_call() {
    // The same connector under a tight and a generous memory cap.
    let rt = runtime();
    let echo = rt.load(&connector("echo")).await.unwrap();
    let tight = Limits {
        memory_bytes: 64 << 10,
        ..Limits::default()
    };
    let err = rt
        .invoke(&echo, "echo", "{}", &with_limits(tight))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "memory-limit", "{err}");
    assert!(
        rt.invoke(&echo, "echo", "{}", &CallContext::default())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bomb_stops_at_its_host_handle_cap() {
    // Each wasi:http `fields` lives in host memory; a guest that makes them without end is
    // stopped by the cap on handles, not by the CPU deadline after growing the host.
    // A CPU budget far beyond what the bomb needs to reach the cap, even on a loaded machine
    // (the deadline counts wall-clock ticks while the guest runs): the handles stop it.
    let generous = Limits {
        cpu_time: std::time::Duration::from_secs(120),
        wall_time: std::time::Duration::from_secs(180),
        ..Limits::default()
    };
    let ctx = CallContext {
        limits: Some(generous),
        ..CallContext::default()
    };
    let err = run("header-bomb", &ctx).await;
    assert_eq!(
        err,
        CallError::ResourceLimit {
            resource: gantry_host::sandbox::Resource::Handles,
            limit: Limits::default().handles.into()
        },
        "stopped by its handles, not its CPU time: {err}"
    );
    assert_eq!(err.code(), "resource-limit");
    // A tighter cap is the call's own.
    let tight = Limits {
        handles: 40,
        ..Limits::default()
    };
    let err = run("header-bomb", &with_limits(tight)).await;
    assert!(
        matches!(err, CallError::ResourceLimit { limit: 40, .. }),
        "{err}"
    );
    host_still_serves().await;
}

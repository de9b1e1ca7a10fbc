//! Hot swap on the product path: a flow step rebound under load drops no run, every run comes
//! from exactly one version, a run in flight finishes on the version it started on, and a
//! version nothing pins or runs any more is unloaded.

use crate::support::{connector, json, small_runtime};
use gantry_host::model::{PublishRequest, RunStatus, StepSpec, Visibility};
use gantry_host::registry::LoadedLimits;
use gantry_host::{Registry, RegistryConfig, Runtime};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A registry with echo 1.0.0 and echo 2.0.0 installed alongside, an instance of each, and a
/// flow whose one step (`call`, operation `operation`) is bound to the first.
struct TwoVersions {
    registry: Arc<Registry>,
    runtime: Runtime,
    flow: i64,
    v1: i64,
    v2: i64,
    _dir: tempfile::TempDir,
}

async fn two_versions(operation: &str, loaded: LoadedLimits) -> TwoVersions {
    let dir = tempfile::tempdir().unwrap();
    let runtime = small_runtime(None);
    let registry = Registry::open(
        RegistryConfig {
            data_dir: dir.path().to_path_buf(),
            loaded,
            ..RegistryConfig::default()
        },
        runtime.clone(),
    )
    .unwrap();
    registry.create_org("acme").unwrap();
    let mut instances = Vec::new();
    for (version, file) in [("1.0.0", "echo"), ("2.0.0", "echo-v2")] {
        registry
            .publish(
                "acme",
                "dev",
                PublishRequest {
                    name: "echo".into(),
                    version: version.into(),
                    visibility: Visibility::Private,
                    tags: Vec::new(),
                    bytes: connector(file),
                },
            )
            .await
            .unwrap();
        let install = registry
            .install("acme", "ops", "acme", "echo", version)
            .unwrap();
        let instance = registry
            .create_instance(
                "acme",
                "ops",
                install.id,
                version,
                BTreeMap::new(),
                BTreeMap::new(),
            )
            .unwrap();
        instances.push(instance.id);
    }
    let flow = registry
        .create_flow(
            "acme",
            "ops",
            "swap",
            vec![StepSpec {
                name: "call".into(),
                instance: instances[0],
                operation: operation.into(),
                input: json!("${input}"),
            }],
        )
        .unwrap();
    TwoVersions {
        registry: Arc::new(registry),
        runtime,
        flow: flow.id,
        v1: instances[0],
        v2: instances[1],
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_under_load_drops_no_run() {
    let t = two_versions("echo", LoadedLimits::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (from_v1, from_v2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callers = Vec::new();
    for task in 0..4 {
        let (registry, stop, flow) = (t.registry.clone(), stop.clone(), t.flow);
        let (from_v1, from_v2) = (from_v1.clone(), from_v2.clone());
        callers.push(tokio::spawn(async move {
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let input = json!({"task": task, "run": runs});
                let run = registry.run_flow("acme", flow, &input).await.unwrap();
                assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
                let output = run.output_value().unwrap();
                if output == input {
                    from_v1.fetch_add(1, Ordering::Relaxed);
                } else if output == json!({"version": "2.0.0", "echo": input}) {
                    from_v2.fetch_add(1, Ordering::Relaxed);
                } else {
                    panic!("result from neither version: {output}");
                }
                runs += 1;
            }
            runs
        }));
    }

    // At least 60 rebinds, and on until runs came from both versions (a loaded machine runs
    // fewer flows between two rebinds).
    let started = std::time::Instant::now();
    let mut i = 0;
    while i < 60 || from_v1.load(Ordering::Relaxed) == 0 || from_v2.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no runs came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let to = if i % 2 == 0 { t.v2 } else { t.v1 };
        t.registry
            .rebind_step("acme", "ops", t.flow, "call", Some(to))
            .unwrap();
        i += 1;
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
async fn a_run_in_flight_finishes_on_the_version_it_started_on() {
    let t = two_versions("delay", LoadedLimits::default()).await;
    let in_flight = {
        let (registry, flow) = (t.registry.clone(), t.flow);
        tokio::spawn(async move { registry.run_flow("acme", flow, json!({"ms": 400})).await })
    };
    // Wait until the run has resolved its step (echo 1.0.0 is loaded for it).
    let v1 = loop {
        if let Some(digest) = t.runtime.loaded().first().copied() {
            break digest;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rebound = t
        .registry
        .rebind_step("acme", "ops", t.flow, "call", Some(t.v2))
        .unwrap();
    let v2 = rebound.steps[0].digest;
    assert_ne!(v1, v2);

    let after = t
        .registry
        .run_flow("acme", t.flow, json!({"ms": 1}))
        .await
        .unwrap();
    assert_eq!(after.steps[0].digest, v2, "a new run gets the new version");
    assert_eq!(
        after.output_value(),
        Some(json!({"version": "2.0.0", "echo": {"ms": 1}}))
    );

    let before = in_flight.await.unwrap().unwrap();
    assert_eq!(before.status, RunStatus::Succeeded, "{:?}", before.error);
    assert_eq!(before.steps[0].digest, v1, "the run in flight stayed on v1");
    assert_eq!(
        json(before.output.as_ref().unwrap().get()),
        json!({"ms": 400})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_nothing_pins_or_runs_is_unloaded_when_its_last_call_ends() {
    // One connector kept loaded between calls: what a run has left is unloaded once another
    // is resolved and the run has ended.
    let one = LoadedLimits {
        max: 1,
        ..LoadedLimits::default()
    };
    let t = two_versions("delay", one).await;
    let v1 = t.registry.get_flow("acme", t.flow).unwrap().steps[0].digest;
    assert!(!t.runtime.is_loaded(&v1), "nothing called it yet");
    // v2 compiled up front, so that resolving it later takes no time.
    let _v2 = t.runtime.load(&connector("echo-v2")).await.unwrap();
    // A run holds v1 while the step is rebound away: it has resolved its step once v1 is
    // loaded.
    let in_flight = {
        let (registry, flow) = (t.registry.clone(), t.flow);
        tokio::spawn(async move { registry.run_flow("acme", flow, json!({"ms": 3000})).await })
    };
    while !t.runtime.is_loaded(&v1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.registry
        .rebind_step("acme", "ops", t.flow, "call", Some(t.v2))
        .unwrap();
    assert!(t.runtime.is_loaded(&v1), "still running: stays loaded");
    // The next run resolves v2, which pushes v1 out of the table.
    let next = t
        .registry
        .run_flow("acme", t.flow, json!({"ms": 1}))
        .await
        .unwrap();
    assert!(t.runtime.is_loaded(&v1), "still running: stays loaded");
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.steps[0].digest, v1);
    assert!(
        !t.runtime.is_loaded(&v1),
        "nothing pins or runs it: unloaded"
    );
    assert_eq!(t.runtime.loaded(), vec![next.steps[0].digest]);
}

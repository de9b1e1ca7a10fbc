//! Canary rebinds (issue 17) over a real server: a share of a step's runs on a candidate
//! instance, rolled back by itself when the candidate fails, promoted when it does not, and
//! still there after a restart.

use crate::support::{Server, connector, runtime};
use gantry_host::model::{Canary, Role};
use gantry_host::{ApiConfig, RegistryConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn upstream() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/items/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                axum::Json(json!({"id": id}))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn call(
    s: &Server,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    s.call(method, path, Some(token), body).await
}

async fn run(s: &Server, token: &str, flow: i64) -> Value {
    let path = format!("/v1/flows/{flow}/runs");
    call(s, token, Method::POST, &path, Some(json!({}))).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_rolls_back_and_a_healthy_one_is_promoted_across_a_restart() {
    let addr = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = || RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        private_addresses: [("acme".to_string(), vec!["127.0.0.1".parse().unwrap()])].into(),
        ..RegistryConfig::default()
    };
    let s = Server::start_with(config(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let (status, body) = s
        .publish(&admin, "rest-json", "1.0.0", "", connector("rest-json"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, install) = call(
        &s,
        &admin,
        Method::POST,
        "/v1/installs",
        Some(json!({"org": "acme", "name": "rest-json", "version": "1.0.0"})),
    )
    .await;
    let install = install["id"].as_i64().unwrap();
    call(
        &s,
        &admin,
        Method::PUT,
        &format!("/v1/installs/{install}/outbound"),
        Some(json!(["http://127.0.0.1:*"])),
    )
    .await;
    let mut instances = Vec::new();
    for (name, base) in [
        ("main", format!("http://{addr}")),
        ("broken", format!("http://127.0.0.1:{}", closed_port())),
        ("healthy", format!("http://{addr}")),
    ] {
        let (status, body) = call(
            &s,
            &admin,
            Method::POST,
            "/v1/instances",
            Some(json!({"install": install, "name": name, "config": {"base_url": base}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        instances.push(body["id"].as_i64().unwrap());
    }
    let [main, broken, healthy] = instances[..] else {
        unreachable!()
    };
    let (_, flow) = call(
        &s,
        &admin,
        Method::POST,
        "/v1/flows",
        Some(json!({"name": "items",
        "steps": [{"name": "fetch", "instance": main, "operation": "get",
                   "input": {"path": "/items/1"}}]})),
    )
    .await;
    let flow = flow["id"].as_i64().unwrap();
    let canary_path = format!("/v1/flows/{flow}/steps/fetch/canary");

    // Bad requests are refused with a reason.
    for (body, code) in [
        (
            json!({"candidate": {"instance": broken}, "percent": 0, "max_error_rate": 0.2, "min_runs": 4}),
            "invalid-input",
        ),
        (
            json!({"candidate": {"instance": broken}, "percent": 50, "max_error_rate": 2.0, "min_runs": 4}),
            "invalid-input",
        ),
        (
            json!({"candidate": {}, "percent": 50, "max_error_rate": 0.2, "min_runs": 4}),
            "invalid-input",
        ),
    ] {
        let (status, answer) = call(&s, &admin, Method::POST, &canary_path, Some(body)).await;
        assert_eq!(answer["error"]["code"], code, "{status} {answer}");
    }

    // A candidate that fails every call, at 50 %: rolled back after its 4 runs.
    let (status, started) = call(
        &s,
        &admin,
        Method::POST,
        &canary_path,
        Some(json!({
        "candidate": {"instance": broken}, "percent": 50, "max_error_rate": 0.2, "min_runs": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let started: Canary = serde_json::from_value(started).unwrap();
    let mut runs = Vec::new();
    for _ in 0..40 {
        runs.push(run(&s, &admin, flow).await);
    }
    let (_, canary) = call(&s, &admin, Method::GET, &canary_path, None).await;
    assert_eq!(canary["state"], "rolled-back", "{canary}");
    let canary: Canary = serde_json::from_value(canary).unwrap();
    assert_eq!((canary.candidate_runs, canary.candidate_errors), (4, 4));
    assert_eq!(canary.candidate_failed_runs, canary.candidate_run_ids);
    let last = *canary.candidate_run_ids.last().unwrap();
    for r in &runs {
        let id = r["id"].as_i64().unwrap();
        let arm = &r["steps"][0]["arm"];
        if id <= last {
            // Each run took the arm its id hashes to, and says so.
            let expected = format!("{:?}", started.arm(id)).to_lowercase();
            assert_eq!(arm, &json!(expected), "{r}");
            assert_eq!(r["status"] == "failed", expected == "candidate", "{r}");
        } else {
            assert!(
                arm.is_null() && r["status"] == "succeeded",
                "after the rollback: {r}"
            );
        }
    }
    let (_, log) = call(&s, &admin, Method::GET, "/v1/audit", None).await;
    let rollback = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "canary-rollback")
        .expect("the rollback is audited");
    assert_eq!(
        rollback["after"]["failed_runs"],
        json!(canary.candidate_run_ids)
    );
    assert_eq!(rollback["actor"], "gantry:canary");
    let (_, shown) = call(&s, &admin, Method::GET, &format!("/v1/flows/{flow}"), None).await;
    assert_eq!(shown["steps"][0]["instance"], main, "the step never moved");

    // A healthy candidate, decided across a restart.
    let (status, body) = call(
        &s,
        &admin,
        Method::POST,
        &canary_path,
        Some(json!({
        "candidate": {"instance": healthy}, "percent": 50, "max_error_rate": 0.2, "min_runs": 6})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, again) = call(
        &s,
        &admin,
        Method::POST,
        &canary_path,
        Some(json!({
        "candidate": {"instance": broken}, "percent": 50, "max_error_rate": 0.2, "min_runs": 6})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "one at a time: {again}"
    );
    for _ in 0..4 {
        run(&s, &admin, flow).await;
    }
    let (_, before) = call(&s, &admin, Method::GET, &canary_path, None).await;
    s.shutdown().await;
    let s = Server::start_with(config(), runtime().clone(), ApiConfig::default()).await;
    let (_, after) = call(&s, &admin, Method::GET, &canary_path, None).await;
    assert_eq!(before, after, "the canary survives the restart");
    assert_eq!(after["state"], "running");
    let mut promoted = false;
    for _ in 0..60 {
        run(&s, &admin, flow).await;
        let (_, now) = call(&s, &admin, Method::GET, &canary_path, None).await;
        if now["state"] == "promoted" {
            promoted = true;
            assert_eq!(now["candidate_runs"], 6);
            assert_eq!(now["candidate_errors"], 0);
            break;
        }
    }
    assert!(promoted);
    let (_, shown) = call(&s, &admin, Method::GET, &format!("/v1/flows/{flow}"), None).await;
    assert_eq!(
        shown["steps"][0]["instance"], healthy,
        "promoted: the step is rebound"
    );
    let r = run(&s, &admin, flow).await;
    assert!(
        r["steps"][0]["arm"].is_null() && r["status"] == "succeeded",
        "{r}"
    );
    let (_, log) = call(&s, &admin, Method::GET, "/v1/audit", None).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "canary-promote" && e["after"]["instance"] == healthy)
    );

    // Manual: a canary that waits for a request, rolled back on request instead.
    let (status, _) = call(
        &s,
        &admin,
        Method::POST,
        &canary_path,
        Some(json!({
        "candidate": {"instance": main}, "percent": 100, "max_error_rate": 0.0, "min_runs": 1,
        "auto_promote": false})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    run(&s, &admin, flow).await;
    let (_, passed) = call(&s, &admin, Method::GET, &canary_path, None).await;
    assert_eq!(passed["state"], "passed", "{passed}");
    let (status, ended) = call(
        &s,
        &admin,
        Method::POST,
        &format!("{canary_path}/rollback"),
        None,
    )
    .await;
    assert_eq!(
        (status, &ended["state"]),
        (StatusCode::OK, &json!("rolled-back"))
    );
    let (status, _) = call(
        &s,
        &admin,
        Method::POST,
        &format!("{canary_path}/promote"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing left to promote");
    // The CLI shows it.
    let (url, token) = (format!("http://{}", s.addr), admin.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--server", &url, "--token", &token])
            .args(["flow", "canary", &flow.to_string(), "fetch"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("at 100 %, rolled-back: candidate 1 runs, 0 failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.shutdown().await;
}

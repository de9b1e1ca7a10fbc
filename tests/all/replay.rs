//! Recording and replay (issue 17) over a real server: a flow that records its step runs
//! against a stand-in upstream on 127.0.0.1, replayed against candidates with nothing sent.

use crate::support::{Server, captured_logs, connector, error_code, runtime};
use gantry_host::model::Role;
use gantry_host::{ApiConfig, RegistryConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const CANARY: &str = "canary-api-key-93c1f0";

/// A stand-in REST API on 127.0.0.1 that counts the requests it gets: `/items/1` and
/// `/items/2` exist, everything else is 404. It echoes the authorization header it got, so a
/// recording that kept it would show the key.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/items/{id}",
        axum::routing::get(
            move |axum::extract::Path(id): axum::extract::Path<u32>,
                  headers: axum::http::HeaderMap| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    if id <= 2 {
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(
                                json!({"id": id, "name": format!("item {id}"), "seen_auth": auth}),
                            ),
                        )
                    } else {
                        (
                            axum::http::StatusCode::NOT_FOUND,
                            axum::Json(json!({"missing": id})),
                        )
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_step_replays_against_candidates_without_sending_anything() {
    let logs = captured_logs();
    let (addr, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        private_addresses: [("acme".to_string(), vec!["127.0.0.1".parse().unwrap()])].into(),
        ..RegistryConfig::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let call = |method: Method, path: String, body: Option<Value>| {
        let admin = admin.clone();
        let s = &s;
        async move { s.call(method, &path, Some(&admin), body).await }
    };
    for (version, sample) in [("1.0.0", "rest-json"), ("2.0.0", "rest-json-v2")] {
        let (status, body) = s
            .publish(&admin, "rest-json", version, "", connector(sample))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, install) = call(
        Method::POST,
        "/v1/installs".into(),
        Some(json!({"org": "acme", "name": "rest-json", "version": "1.0.0"})),
    )
    .await;
    let install = install["id"].as_i64().unwrap();
    let (status, _) = call(
        Method::PUT,
        format!("/v1/installs/{install}/outbound"),
        Some(json!(["http://127.0.0.1:*"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let instance = |name: &str, base: String| {
        call(
            Method::POST,
            "/v1/instances".into(),
            Some(json!({"install": install, "name": name,
                "config": {"base_url": base}, "secrets": {"api_key": CANARY}})),
        )
    };
    let (_, main) = instance("main", format!("http://{addr}")).await;
    let main = main["id"].as_i64().unwrap();
    let (_, elsewhere) = instance("elsewhere", format!("http://{addr}/v2")).await;
    let elsewhere = elsewhere["id"].as_i64().unwrap();

    // A flow that records: three runs, the third a 404 (1.0.0 makes that a `not-found` error).
    let (status, flow) = call(
        Method::POST,
        "/v1/flows".into(),
        Some(json!({"name": "items", "record": true, "steps": [
            {"name": "fetch", "instance": main, "operation": "get",
             "input": {"path": "${input.path}"}}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{flow}");
    assert_eq!(flow["record"], true);
    let flow = flow["id"].as_i64().unwrap();
    for path in ["/items/1", "/items/2", "/items/3"] {
        let (status, run) = call(
            Method::POST,
            format!("/v1/flows/{flow}/runs"),
            Some(json!({"path": path})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let (status, recordings) = call(
        Method::GET,
        format!("/v1/flows/{flow}/steps/fetch/recordings"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{recordings}");
    let recordings = recordings.as_array().unwrap();
    assert_eq!(recordings.len(), 3);
    let newest = &recordings[0];
    assert_eq!(newest["input"], json!({"path": "/items/3"}));
    let error = newest["error"].as_str().unwrap();
    assert!(
        error.starts_with("connector-error") && error.contains("HTTP 404"),
        "{error}"
    );
    let exchange = &recordings[1]["exchanges"][0];
    assert_eq!(exchange["method"], "GET");
    assert_eq!(exchange["url"], format!("http://{addr}/items/2"));
    assert_eq!(exchange["status"], 200);
    assert!(
        exchange["response_body"]["text"]
            .as_str()
            .unwrap()
            .contains("\"seen_auth\":\"Bearer [redacted]\""),
        "{exchange}"
    );

    // Replay against 2.0.0: items 1 and 2 the same, item 3 now answers (a diff); nothing sent.
    let replay = |candidate: Value| {
        call(
            Method::POST,
            format!("/v1/flows/{flow}/steps/fetch/replay"),
            Some(json!({"candidate": candidate, "count": 10})),
        )
    };
    let (status, report) = replay(json!({"version": "2.0.0"})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["candidate"], "rest-json@2.0.0");
    assert_eq!(
        report["totals"],
        json!({"inputs": 3, "same": 2, "different": 1, "errors": 0, "unmatched_requests": 0})
    );
    let third = &report["inputs"][0];
    assert_eq!(third["input"], json!({"path": "/items/3"}));
    assert_eq!(third["outcome"], "different");
    assert_eq!(third["output"]["status"], 404);
    assert!(
        third["diff"][0]["recorded"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 404")
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the upstream received nothing"
    );

    // The same version replays the same; an instance with another base URL calls URLs the
    // recordings lack: each is reported, and never sent.
    let (_, same) = replay(json!({"version": "1.0.0"})).await;
    assert_eq!(same["totals"]["same"], 3, "{same}");
    let (status, report) = replay(json!({"instance": elsewhere})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["totals"]["unmatched_requests"], 3, "{report}");
    assert_eq!(
        report["inputs"][1]["unmatched"],
        json!([format!("GET http://{addr}/v2/items/2")])
    );
    assert_eq!(report["inputs"][1]["outcome"], "error");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the upstream received nothing"
    );

    // The same through the CLI.
    let url = format!("http://{}", s.addr);
    let (admin_token, flow_id) = (admin.clone(), flow.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--server", &url, "--token", &admin_token])
            .args(["flow", "replay", &flow_id, "fetch", "--version", "2.0.0"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("on rest-json@2.0.0")
            && text.contains("2 same, 1 different, 0 errors, 0 unmatched request(s)")
            && text.contains("  : {\"error\""),
        "{text}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the upstream received nothing"
    );

    // Bad candidates are refused with a reason; nothing about the flow changed.
    for (candidate, code) in [
        (json!({}), "invalid-input"),
        (
            json!({"instance": main, "version": "2.0.0"}),
            "invalid-input",
        ),
        (json!({"version": "9.9.9"}), "not-found"),
    ] {
        let (status, body) = replay(candidate.clone()).await;
        assert_eq!(error_code(&body), code, "{candidate}: {status} {body}");
    }
    let (status, body) = call(
        Method::POST,
        format!("/v1/flows/{flow}/steps/fetch/replay"),
        Some(json!({"candidate": {"version": "2.0.0"}, "count": 0})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid-input")
    );
    let (_, shown) = call(Method::GET, format!("/v1/flows/{flow}"), None).await;
    assert_eq!(shown["steps"][0]["connector"], "acme/rest-json@1.0.0");

    // Recording off: the next run adds none.
    let (status, _) = call(
        Method::PUT,
        format!("/v1/flows/{flow}/record"),
        Some(json!({"record": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    call(
        Method::POST,
        format!("/v1/flows/{flow}/runs"),
        Some(json!({"path": "/items/1"})),
    )
    .await;
    let (_, after) = call(
        Method::GET,
        format!("/v1/flows/{flow}/steps/fetch/recordings"),
        None,
    )
    .await;
    assert_eq!(after.as_array().unwrap().len(), 3);

    // The key appears in no recording, no report, no log line.
    let everything = format!("{recordings:?} {report} {same}");
    assert!(!everything.contains(CANARY));
    assert!(!logs.text().contains(CANARY), "a log line shows the key");
    s.shutdown().await;
}

/// `gantry invoke` with `args`, off the async workers; (success, stdout, stderr).
async fn invoke(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("invoke")
            .args(&args)
            .env_remove("GANTRY_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_records_an_exchange_once_and_replays_it_offline() {
    let (addr, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(&secrets, json!({"api_key": CANARY}).to_string()).unwrap();
    let tape = dir.path().join("items-1.json");
    let wasm = |name: &str| {
        crate::support::sample_dir()
            .join(format!("{}.wasm", name.replace('-', "_")))
            .display()
            .to_string()
    };
    let args = |sample: &str, base: String, extra: &[&str]| {
        let mut args: Vec<String> = [
            wasm(sample).as_str(),
            "get",
            r#"{"path": "/items/1"}"#,
            "--config",
            &format!("base_url={base}"),
            "--secrets-file",
            secrets.to_str().unwrap(),
            "--allow-host",
            "http://127.0.0.1:*",
            "--allow-private",
            "127.0.0.1",
            "--no-cache",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let base = format!("http://{addr}");
    let (ok, out, err) = invoke(args(
        "rest-json",
        base.clone(),
        &["--record", tape.to_str().unwrap()],
    ))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("item 1") && err.contains("recorded 1 exchange(s)"),
        "{err}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let recorded = std::fs::read_to_string(&tape).unwrap();
    assert!(!recorded.contains(CANARY), "{recorded}");
    let recording: gantry_host::model::Recording = serde_json::from_str(&recorded).unwrap();
    assert_eq!(recording.exchanges[0].url, format!("{base}/items/1"));

    // Offline: the same output, nothing sent; another base URL is reported, not sent.
    let (ok, out, err) = invoke(args(
        "rest-json-v2",
        base.clone(),
        &["--replay", tape.to_str().unwrap()],
    ))
    .await;
    assert!(ok && out.contains("item 1"), "{err}");
    assert!(err.contains("replay: the same output as recorded"), "{err}");
    let (ok, _, err) = invoke(args(
        "rest-json",
        format!("{base}/v2"),
        &["--replay", tape.to_str().unwrap()],
    ))
    .await;
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "not in the recording (not sent): GET {base}/v2/items/1"
        )),
        "{err}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the upstream received nothing"
    );
}

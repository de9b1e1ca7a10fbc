//! The same connector — `rest-json` (Rust, wasi:http through `wstd`), `rest-js` (JavaScript,
//! `fetch()`), `rest-py` (Python, `http.send`) — held to the same behaviour tests: what it
//! declares, echo, bad input, unknown operations, config and secrets, and outbound calls to a
//! stand-in on 127.0.0.1 allowed and refused by the policy.

use crate::support::{connector, json, runtime, script_connector};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use gantry_host::runtime::ConnectorError;
use gantry_host::{CallContext, CallError, Connector};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const SAMPLES: [&str; 3] = ["rest-json", "rest-js", "rest-py"];

async fn load(name: &str) -> Arc<Connector> {
    let bytes = match name {
        "rest-json" => connector(name),
        _ => tokio::task::block_in_place(|| script_connector(name)),
    };
    runtime().load(&bytes).await.unwrap()
}

/// A stand-in API on 127.0.0.1 that records the requests it answers.
struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn stand_in() -> StandIn {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let app = Router::new()
        .route(
            "/headers",
            get(move |headers: HeaderMap| async move {
                s1.lock().unwrap().push("GET /headers".to_string());
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                axum::Json(json!({"authorization": auth}))
            }),
        )
        .route(
            "/items",
            post(move |headers: HeaderMap, body: String| async move {
                s2.lock().unwrap().push("POST /items".to_string());
                let kind = headers.get("content-type").and_then(|v| v.to_str().ok());
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"content-type": kind, "received": body})),
                )
            }),
        )
        .route(
            "/missing",
            get(move || async move {
                s3.lock().unwrap().push("GET /missing".to_string());
                StatusCode::NOT_FOUND
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn { addr, seen }
}

fn ctx(base: &str, grants: &[&str], scheme: Option<&str>) -> CallContext {
    let mut config = vec![("base_url".to_string(), base.to_string())];
    if let Some(scheme) = scheme {
        config.push(("auth_scheme".into(), scheme.into()));
    }
    CallContext {
        config: config.into_iter().collect(),
        secrets: gantry_host::sandbox::Secrets::new(
            [("api_key".to_string(), "k3y-for-tests".to_string())].into(),
        ),
        outbound: grants.iter().map(|g| g.to_string()).collect(),
        allow_private: vec!["127.0.0.1".parse().unwrap()],
        ..CallContext::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_declares_the_same_connector() {
    for name in SAMPLES {
        let c = load(name).await;
        let d = c.description();
        assert_eq!(d.name, name);
        assert_eq!(d.version.to_string(), "1.0.0", "{name}");
        let operations: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(operations, ["echo", "get", "post"], "{name}");
        let get = d.operation("get").unwrap();
        assert_eq!(get.input_schema["required"], json!(["path"]), "{name}");
        assert_eq!(
            get.output_schema["required"],
            json!(["status", "body"]),
            "{name}"
        );
        let config: Vec<(&str, Option<&str>, bool)> = d
            .config
            .iter()
            .map(|k| (k.name.as_str(), k.default_value.as_deref(), k.required))
            .collect();
        assert_eq!(
            config,
            [
                ("base_url", None, true),
                ("auth_header", Some("authorization"), false),
                ("auth_scheme", Some("Bearer"), false)
            ],
            "{name}"
        );
        let secrets: Vec<&str> = d.secrets.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(secrets, ["api_key"], "{name}");
        assert_eq!(d.outbound_hosts, ["*"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_echoes_and_refuses_what_it_should() {
    let rt = runtime();
    let none = CallContext::default();
    let document = json!({"text": "grüße", "list": [1, 2.5, null, {"deep": [true]}]});
    for name in SAMPLES {
        let c = load(name).await;
        let out = rt
            .invoke(&c, "echo", &document.to_string(), &none)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(json(&out.output), document, "{name}");

        // The host refuses before the guest runs: an undeclared operation, input that is not
        // JSON or not what the schema says (naming where).
        let err = rt.invoke(&c, "delete", "{}", &none).await.unwrap_err();
        assert_eq!(err.code(), "unknown-operation", "{name}: {err}");
        let err = rt.invoke(&c, "echo", "{oops", &none).await.unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidInput(m) if m.contains("not a JSON document")),
            "{name}: {err}"
        );
        let err = rt
            .invoke(&c, "get", r#"{"path": 7}"#, &none)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidInput(m) if m.starts_with("at `/path`")),
            "{name}: {err}"
        );
        let err = rt
            .invoke(&c, "get", r#"{"path": "x"}"#, &none)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidInput(m) if m.contains("^/")),
            "{name}: {err}"
        );

        // And the guest itself, reached past the host's checks, answers as the world says.
        let err = rt.probe(&c, "delete", "{}", &none).await.unwrap_err();
        assert!(
            matches!(err, CallError::Guest(ConnectorError::NotFound(_))),
            "{name}: {err}"
        );
        // (Input that is not JSON and refused by the guest is reported by the host.)
        let err = rt.probe(&c, "echo", "{oops", &none).await.unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidInput(m) if m.contains("not a JSON document")),
            "{name}: {err}"
        );
        let configured = ctx("http://127.0.0.1:9", &[], None);
        let err = rt
            .probe(&c, "get", r#"{"path": "x"}"#, &configured)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Guest(ConnectorError::InvalidInput(_))),
            "{name}: {err}"
        );
        // Config missing: the connector says so.
        let err = rt
            .invoke(&c, "get", r#"{"path": "/x"}"#, &none)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::Guest(ConnectorError::Internal(m)) if m.contains("base_url")),
            "{name}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_calls_out_only_where_it_is_granted() {
    let rt = runtime();
    let api = stand_in().await;
    let base = format!("http://{}", api.addr);
    let granted = ["http://127.0.0.1:*"];
    for name in SAMPLES {
        let c = load(name).await;
        let call = |operation: &'static str, input: Value, ctx: CallContext| {
            let c = c.clone();
            async move {
                rt.invoke(&c, operation, &input.to_string(), &ctx)
                    .await
                    .map(|out| json(&out.output))
            }
        };
        // The secret, with the configured scheme, reaches the granted API.
        let out = call(
            "get",
            json!({"path": "/headers"}),
            ctx(&base, &granted, None),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out,
            json!({"status": 200, "body": {"authorization": "Bearer k3y-for-tests"}}),
            "{name}"
        );
        let out = call(
            "get",
            json!({"path": "/headers"}),
            ctx(&base, &granted, Some("Token")),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out["body"]["authorization"], "Token k3y-for-tests",
            "{name}"
        );
        let out = call(
            "post",
            json!({"path": "/items", "body": {"n": 1, "tags": ["a"]}}),
            ctx(&base, &granted, None),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out,
            json!({"status": 201, "body": {"content-type": "application/json",
                "received": {"n": 1, "tags": ["a"]}}}),
            "{name}"
        );
        let err = call(
            "get",
            json!({"path": "/missing"}),
            ctx(&base, &granted, None),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, CallError::Guest(ConnectorError::NotFound(_))),
            "{name}: {err}"
        );

        // Not granted (another origin only, or nothing): refused before anything is sent.
        let before = api.seen.lock().unwrap().len();
        for grants in [&["https://api.example.com"][..], &[]] {
            let err = call("get", json!({"path": "/headers"}), ctx(&base, grants, None))
                .await
                .unwrap_err();
            assert!(
                matches!(err, CallError::Guest(ConnectorError::Upstream(_))),
                "{name}: {err}"
            );
        }
        // Granted, but 127.0.0.1 is not allowed for this call's organisation.
        let mut private = ctx(&base, &granted, None);
        private.allow_private.clear();
        let err = call("get", json!({"path": "/headers"}), private)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Guest(ConnectorError::Upstream(_))),
            "{name}: {err}"
        );
        assert_eq!(
            api.seen.lock().unwrap().len(),
            before,
            "{name}: nothing refused reached the API"
        );
    }
    assert_eq!(
        api.seen.lock().unwrap().len(),
        SAMPLES.len() * 4,
        "four calls of each language arrived"
    );
}

/// An 18 MB Python component publishes under the default upload cap, through the route that
/// reads name and version from `describe()`, compiled once (by the publish: the first call
/// runs what it compiled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_python_connector_publishes_over_http_compiled_once() {
    use crate::support::Server;
    use gantry_host::model::Role;
    use gantry_host::{ApiConfig, Runtime, RuntimeConfig};
    use reqwest::Method;

    let bytes = tokio::task::block_in_place(|| script_connector("rest-py"));
    assert!(bytes.len() > 16 << 20, "{} bytes", bytes.len());
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        max_instances: 16,
        compile_timeout: std::time::Duration::from_secs(600),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let s = Server::start(dir.path(), runtime.clone(), ApiConfig::default()).await;
    let (publisher, operator) = (
        s.token("acme", Role::Publisher),
        s.token("acme", Role::Operator),
    );
    let response = s
        .client
        .post(format!("http://{}/v1/connectors", s.addr))
        .bearer_auth(&publisher)
        .header("content-type", "application/wasm")
        .header("accept", "application/x-ndjson")
        .body(bytes)
        .send()
        .await
        .unwrap();
    // Watched: the stages as they go (the compile takes seconds), then the outcome.
    assert_eq!(response.status(), StatusCode::OK);
    let events: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["stage"] == "compiling"),
        "{events:?}"
    );
    let done = events.last().unwrap();
    assert_eq!(
        (&done["event"], &done["status"]),
        (&json!("done"), &json!(201))
    );
    let published = &done["published"];
    assert_eq!(published["version"]["name"], "rest-py");
    assert_eq!(runtime.stats().compiled, 1);

    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&operator),
            Some(json!({"org": "acme", "name": "rest-py", "version": published["version"]["version"]})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let r = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&operator),
            Some(json!({"install": r.1["id"], "name": "main", "secrets": {"api_key": "k"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let instance = r.1["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{instance}/invoke/echo"),
            Some(&operator),
            Some(json!({"heavy": true})),
        )
        .await;
    assert_eq!(
        (r.0, &r.1["output"]),
        (StatusCode::OK, &json!({"heavy": true}))
    );
    assert_eq!(runtime.stats().compiled, 1, "the first call compiled again");
}

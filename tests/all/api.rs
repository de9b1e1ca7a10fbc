//! The HTTP API through a real server on 127.0.0.1 with a real client (and `oneshot` for the
//! router alone): the seeds' stories, the auth matrix, bad input, limits and restarts.

use crate::support::{Server, connector, error_code, runtime, small_runtime};
use gantry_host::model::Role;
use gantry_host::{ApiConfig, Registry, RegistryConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_stories_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let (publisher, operator, admin) = (
        s.token("acme", Role::Publisher),
        s.token("acme", Role::Operator),
        s.token("acme", Role::Admin),
    );
    let ok = |r: &(StatusCode, Value), status: StatusCode| assert_eq!(r.0, status, "{}", r.1);

    // Choreo: publish public, immutable.
    let echo = connector("echo");
    let r = s
        .publish(
            &publisher,
            "echo",
            "1.0.0",
            "visibility=public&tags=demo",
            echo.clone(),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    assert_eq!(r.1["outcome"], "created");
    ok(
        &s.publish(
            &publisher,
            "echo",
            "1.0.0",
            "visibility=public",
            echo.clone(),
        )
        .await,
        StatusCode::OK,
    );
    let mut other = echo.clone();
    other.extend_from_slice(&[0, 3, 2, b'x', b'y']);
    let r = s
        .publish(&publisher, "echo", "1.0.0", "visibility=public", other)
        .await;
    assert_eq!((r.0, error_code(&r.1)), (StatusCode::CONFLICT, "conflict"));

    // Install, instance with a credential, flow, run.
    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&operator),
            Some(json!({"org": "acme", "name": "echo", "version": "1.0.0"})),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    let install = r.1["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::PUT,
            &format!("/v1/installs/{install}/customisations"),
            Some(&operator),
            Some(json!({"greeting": "hi"})),
        )
        .await;
    ok(&r, StatusCode::OK);
    assert!(r.1["modified_by"].as_str().unwrap().starts_with("token:"));
    let r = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&operator),
            Some(json!({"install": install, "name": "main", "secrets": {"token": "http-s3cret"}})),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    assert!(!r.1.to_string().contains("http-s3cret"));
    assert_eq!(r.1["secret_keys"], json!(["token"]));
    let instance = r.1["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::POST,
            "/v1/flows",
            Some(&operator),
            Some(json!({"name": "ctx",
        "steps": [{"name": "c", "instance": instance, "operation": "context", "input": {}}]})),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    let flow = r.1["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{flow}/runs"),
            Some(&operator),
            Some(json!({})),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    assert_eq!(r.1["output"], json!({"greeting": "hi", "token_length": 11}));
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{instance}/invoke/echo"),
            Some(&operator),
            Some(json!({"x": 1})),
        )
        .await;
    ok(&r, StatusCode::OK);
    assert_eq!(r.1["output"], json!({"x": 1}));

    // Patchworks: a new version, update_available, overwrite needs acknowledgement.
    ok(
        &s.publish(
            &publisher,
            "echo",
            "2.0.0",
            "visibility=public",
            connector("echo-v2"),
        )
        .await,
        StatusCode::CREATED,
    );
    let r = s
        .call(
            Method::GET,
            &format!("/v1/installs/{install}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(r.1["update_available"], "2.0.0");
    let r = s
        .call(
            Method::POST,
            &format!("/v1/installs/{install}/update"),
            Some(&admin),
            Some(json!({"version": "2.0.0", "mode": "overwrite"})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::CONFLICT, "acknowledgement-required")
    );
    let r = s.call(Method::POST, &format!("/v1/installs/{install}/update"), Some(&admin),
        Some(json!({"version": "2.0.0", "mode": "overwrite", "acknowledge_customisations_lost": true}))).await;
    ok(&r, StatusCode::OK);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{flow}/runs"),
            Some(&operator),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        r.1["output"],
        json!({"version": "2.0.0", "echo": {"greeting": "hello", "token_length": 11}})
    );

    // Deprecate the old version: listed as such; a new install of it is refused.
    let r = s
        .call(
            Method::POST,
            "/v1/connectors/echo/versions/1.0.0/state",
            Some(&publisher),
            Some(json!({"state": "deprecated"})),
        )
        .await;
    ok(&r, StatusCode::OK);
    let r = s
        .call(
            Method::GET,
            "/v1/marketplace?text=echo",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(r.1[0]["latest"]["version"], "2.0.0");
    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&operator),
            Some(json!({"org": "acme", "name": "echo", "version": "1.0.0"})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::CONFLICT, "deprecated")
    );

    // Choreo, private: republishing makes a new revision; a flow keeps its pin until rebound.
    let jt = connector("json-transform");
    ok(
        &s.publish(&publisher, "json-transform", "1.0.0", "", jt.clone())
            .await,
        StatusCode::CREATED,
    );
    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&operator),
            Some(json!({"org": "acme", "name": "json-transform", "version": "1.0.0"})),
        )
        .await;
    let jt_install = r.1["id"].clone();
    let r = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&operator),
            Some(json!({"install": jt_install, "name": "jt"})),
        )
        .await;
    let jt_instance = r.1["id"].clone();
    let r = s.call(Method::POST, "/v1/flows", Some(&operator), Some(json!({"name": "tpl", "steps": [{"name": "t",
        "instance": jt_instance, "operation": "template", "input": {"template": "Hi {{who}}", "data": "${input}"}}]}))).await;
    ok(&r, StatusCode::CREATED);
    let (tpl, first_pin) = (
        r.1["id"].as_i64().unwrap(),
        r.1["steps"][0]["digest"].clone(),
    );
    let mut rebuilt = jt.clone();
    rebuilt.extend_from_slice(&[0, 3, 2, b'r', b'2']);
    let r = s
        .publish(&publisher, "json-transform", "1.0.0", "", rebuilt)
        .await;
    ok(&r, StatusCode::CREATED);
    assert_eq!(
        (r.1["outcome"].clone(), r.1["version"]["revision"].clone()),
        (json!("new-revision"), json!(2))
    );
    let second_pin = r.1["version"]["digest"].clone();
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{tpl}/runs"),
            Some(&operator),
            Some(json!({"who": "Ada"})),
        )
        .await;
    assert_eq!(
        (r.1["steps"][0]["digest"].clone(), r.1["output"].clone()),
        (first_pin.clone(), json!({"text": "Hi Ada"}))
    );
    // A direct call runs what the install pins; the install shows the revision available.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{jt_instance}/invoke/template"),
            Some(&operator),
            Some(json!({"template": "Hi", "data": {}})),
        )
        .await;
    assert_eq!(r.1["digest"], first_pin, "{}", r.1);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/installs/{jt_install}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        (r.1["revision"].clone(), r.1["revision_available"].clone()),
        (json!(1), json!(2)),
        "{}",
        r.1
    );
    // Moving onto it is an explicit update of the same version, which rebinds the steps.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/installs/{jt_install}/update"),
            Some(&admin),
            Some(json!({"version": "1.0.0", "mode": "overwrite"})),
        )
        .await;
    ok(&r, StatusCode::OK);
    assert_eq!(r.1["revision"], json!(2), "{}", r.1);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/flows/{tpl}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(r.1["steps"][0]["digest"], second_pin);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{tpl}/runs"),
            Some(&operator),
            Some(json!({"who": "Bo"})),
        )
        .await;
    assert_eq!(
        (r.1["steps"][0]["digest"].clone(), r.1["output"].clone()),
        (second_pin, json!({"text": "Hi Bo"}))
    );
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{jt_instance}/invoke/template"),
            Some(&operator),
            Some(json!({"template": "{{x}}", "data": {}})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::UNPROCESSABLE_ENTITY, "connector-error")
    );

    let r = s.call(Method::GET, "/v1/audit", Some(&admin), None).await;
    ok(&r, StatusCode::OK);
    assert!(r.1.as_array().unwrap().len() >= 8);
    assert!(!r.1.to_string().contains("http-s3cret"));
    let r = s.call(Method::GET, "/metrics", Some(&admin), None).await;
    assert!(
        r.1.as_str()
            .unwrap()
            .contains("gantry_calls_total{connector=\"echo\",version=\"2.0.0\""),
        "{}",
        r.1
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let viewer = s.token("acme", Role::Viewer);
    let other = s.token("globex", Role::Admin);
    let reg = &s.registry;
    reg.publish(
        "acme",
        "t",
        gantry_host::model::PublishRequest {
            name: "echo".into(),
            version: "1.0.0".into(),
            visibility: gantry_host::model::Visibility::Private,
            tags: vec![],
            bytes: connector("echo"),
        },
    )
    .await
    .unwrap();
    let install = reg.install("acme", "t", "acme", "echo", "1.0.0").unwrap();
    let instance = reg
        .create_instance(
            "acme",
            "t",
            install.id,
            "i",
            Default::default(),
            Default::default(),
        )
        .unwrap();
    let flow = reg
        .create_flow(
            "acme",
            "t",
            "f",
            vec![gantry_host::model::StepSpec {
                name: "e".into(),
                instance: instance.id,
                operation: "echo".into(),
                input: json!({}),
            }],
        )
        .unwrap();
    let (i, n, f) = (install.id, instance.id, flow.id);

    // (method, path, body, role needed, whether another org gets 404 rather than an empty answer)
    let routes: Vec<(Method, String, Option<Value>, Role, bool)> = vec![
        (
            Method::GET,
            "/v1/marketplace".into(),
            None,
            Role::Viewer,
            false,
        ),
        (
            Method::GET,
            "/v1/connectors/acme/echo/versions".into(),
            None,
            Role::Viewer,
            true,
        ),
        (
            Method::POST,
            "/v1/connectors/echo/versions/1.0.0/state".into(),
            Some(json!({"state": "active"})),
            Role::Publisher,
            true,
        ),
        (
            Method::POST,
            "/v1/installs".into(),
            Some(json!({"org": "acme", "name": "echo", "version": "1.0.0"})),
            Role::Operator,
            true,
        ),
        (
            Method::GET,
            "/v1/installs".into(),
            None,
            Role::Viewer,
            false,
        ),
        (
            Method::GET,
            format!("/v1/installs/{i}"),
            None,
            Role::Viewer,
            true,
        ),
        (
            Method::PUT,
            format!("/v1/installs/{i}/customisations"),
            Some(json!({})),
            Role::Operator,
            true,
        ),
        (
            Method::PUT,
            format!("/v1/installs/{i}/outbound"),
            Some(json!([])),
            Role::Admin,
            true,
        ),
        (
            Method::POST,
            format!("/v1/installs/{i}/update"),
            Some(json!({"version": "1.0.0", "mode": "alongside"})),
            Role::Admin,
            true,
        ),
        (
            Method::POST,
            format!("/v1/installs/{i}/rebind"),
            Some(json!({"instance": n})),
            Role::Operator,
            true,
        ),
        (
            Method::POST,
            "/v1/instances".into(),
            Some(json!({"install": i, "name": "x"})),
            Role::Operator,
            true,
        ),
        (
            Method::GET,
            "/v1/instances".into(),
            None,
            Role::Viewer,
            false,
        ),
        (
            Method::GET,
            format!("/v1/instances/{n}"),
            None,
            Role::Viewer,
            true,
        ),
        (
            Method::POST,
            format!("/v1/instances/{n}/invoke/echo"),
            Some(json!({})),
            Role::Operator,
            true,
        ),
        (
            Method::POST,
            "/v1/flows".into(),
            Some(
                json!({"name": "g", "steps": [{"name": "e", "instance": n, "operation": "echo"}]}),
            ),
            Role::Operator,
            true,
        ),
        (Method::GET, "/v1/flows".into(), None, Role::Viewer, false),
        (
            Method::GET,
            format!("/v1/flows/{f}"),
            None,
            Role::Viewer,
            true,
        ),
        (
            Method::POST,
            format!("/v1/flows/{f}/runs"),
            Some(json!({})),
            Role::Operator,
            true,
        ),
        (
            Method::GET,
            format!("/v1/flows/{f}/runs"),
            None,
            Role::Viewer,
            true,
        ),
        (
            Method::POST,
            format!("/v1/flows/{f}/steps/e/rebind"),
            Some(json!({})),
            Role::Operator,
            true,
        ),
        (Method::GET, "/v1/audit".into(), None, Role::Admin, false),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"role": "viewer", "label": "x"})),
            Role::Admin,
            false,
        ),
    ];
    let forged = format!("gty_{}", "0".repeat(64));
    for (method, path, body, needed, hidden) in &routes {
        let r = s.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(
            (r.0, error_code(&r.1)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{method} {path} without a token"
        );
        let r = s
            .call(method.clone(), path, Some(&forged), body.clone())
            .await;
        assert_eq!(
            r.0,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a forged token"
        );
        if *needed != Role::Viewer {
            let r = s
                .call(method.clone(), path, Some(&viewer), body.clone())
                .await;
            assert_eq!(
                (r.0, error_code(&r.1)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{method} {path} as viewer"
            );
        }
        let r = s
            .call(method.clone(), path, Some(&other), body.clone())
            .await;
        if *hidden {
            assert_eq!(
                r.0,
                StatusCode::NOT_FOUND,
                "{method} {path} from another org: {}",
                r.1
            );
        } else {
            assert!(
                r.0.is_success(),
                "{method} {path} from another org: {}",
                r.1
            );
            assert!(
                !r.1.to_string().contains("\"org\":\"acme\""),
                "{method} {path} leaks acme: {}",
                r.1
            );
        }
        let r = s
            .call(method.clone(), path, Some(&admin), body.clone())
            .await;
        // The admin passes authentication and authorisation (the operation itself may still be
        // refused, e.g. updating an install to the version it is on).
        assert!(
            ![
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::NOT_FOUND
            ]
            .contains(&r.0),
            "{method} {path} as admin: {} {}",
            r.0,
            r.1
        );
    }
    // The role is checked before the body is read: a viewer learns nothing from validation.
    let r = s
        .client
        .post(format!("http://{}/v1/installs", s.addr))
        .bearer_auth(&viewer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_edge_limits_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        max_upload_bytes: 1 << 20,
        max_concurrent_calls: 1,
        ..ApiConfig::default()
    };
    let s = Server::start(dir.path(), runtime().clone(), config).await;
    let admin = s.token("acme", Role::Admin);
    let url = |p: &str| format!("http://{}{p}", s.addr);

    let r = s
        .client
        .post(url("/v1/installs"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.json().await.unwrap()), "bad-request");
    let r = s
        .client
        .post(url("/v1/installs"))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        error_code(&r.json().await.unwrap()),
        "unsupported-media-type"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&admin),
            Some(json!({"org": "acme", "name": "echo", "version": "1.0.0", "extra": 1})),
        )
        .await;
    assert_eq!(
        r.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field: {}",
        r.1
    );
    error_code(&r.1);
    let r = s.call(Method::GET, "/v1/nope", Some(&admin), None).await;
    assert_eq!((r.0, error_code(&r.1)), (StatusCode::NOT_FOUND, "no-route"));

    let r = s
        .client
        .post(url("/v1/connectors/echo/versions/1.0.0"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(connector("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .publish(&admin, "echo", "1.0.0", "", vec![0u8; 2 << 20])
        .await;
    assert_eq!(r.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.1);
    assert_eq!(error_code(&r.1), "too-large");
    let r = s
        .publish(&admin, "../echo", "1.0.0", "", connector("echo"))
        .await;
    assert_eq!(
        r.0,
        StatusCode::NOT_FOUND,
        "a path trick never reaches a handler: {}",
        r.1
    );
    let r = s.publish(&admin, "echo", "v1", "", connector("echo")).await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid-version")
    );
    let r = s
        .publish(
            &admin,
            "echo",
            "1.0.0",
            "visibility=secret",
            connector("echo"),
        )
        .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST);

    // One call in flight at most: the second gets 429.
    let instance = s.echo_instance(&admin, "acme").await;
    let slow = {
        let (client, path, token) = (
            s.client.clone(),
            url(&format!("/v1/instances/{instance}/invoke/delay")),
            admin.clone(),
        );
        tokio::spawn(async move {
            client
                .post(path)
                .bearer_auth(token)
                .json(&json!({"ms": 2000}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{instance}/invoke/echo"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::TOO_MANY_REQUESTS, "too-many-calls")
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{instance}/invoke/nope"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::NOT_FOUND, "unknown-operation")
    );
    s.shutdown().await;
}

/// The input reaches the connector as the client wrote it and the output comes back as the
/// connector wrote it: nothing is rounded or dropped on the way through a JSON `Value`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_credentials_replaces_every_secret_and_shows_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let viewer = s
        .registry
        .create_token("acme", "test", Role::Viewer, "viewer", None)
        .unwrap()
        .1;
    let instance = s.echo_instance(&admin, "acme").await;
    let path = format!("/v1/instances/{instance}/secrets");
    let token_length = || async {
        let (status, body) = s
            .call(
                Method::POST,
                &format!("/v1/instances/{instance}/invoke/context"),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["output"]["token_length"].clone()
    };
    assert_eq!(token_length().await, Value::Null, "no token yet");
    let (status, body) = s
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"token": "rotated-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["secret_keys"], json!(["token"]));
    assert!(!body.to_string().contains("rotated-1"), "never shown back");
    assert_eq!(token_length().await, json!(9), "the next call uses it");
    // Only what the version declares; a viewer may not; another organisation's is not found.
    let (status, body) = s
        .call(Method::PUT, &path, Some(&admin), Some(json!({"nope": "x"})))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid-input")
    );
    let (status, _) = s
        .call(
            Method::PUT,
            &path,
            Some(&viewer),
            Some(json!({"token": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = s.token("globex", Role::Admin);
    let (status, _) = s
        .call(
            Method::PUT,
            &path,
            Some(&other),
            Some(json!({"token": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        token_length().await,
        json!(9),
        "the refused ones changed nothing"
    );
    // Rotating to none: the audit log names the keys, never the values.
    let (status, _) = s
        .call(Method::PUT, &path, Some(&admin), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_length().await, Value::Null);
    let (_, log) = s.get("/v1/audit", &admin).await;
    let rotations: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rotate-secrets")
        .collect();
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[0]["after"], json!({"secret_keys": ["token"]}));
    assert!(!log.to_string().contains("rotated-1"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_passes_json_through_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let instance = s.echo_instance(&admin, "acme").await;
    let invoke = |body: &'static str| {
        s.client
            .post(format!(
                "http://{}/v1/instances/{instance}/invoke/echo",
                s.addr
            ))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // More digits than u64 or f64 hold, a number beyond f64's range, a lone surrogate escape
    // (which JavaScript's JSON.stringify writes): all valid JSON, none of it survives a `Value`.
    let input = r#"{"id": 123456789012345678901234567890, "pi": 3.14159265358979323846264338327950288, "big": 1e400, "s": "\ud800 half a pair"}"#;
    let response = invoke(input).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with(&format!(r#"{{"output":{input},"digest":"sha256:"#)),
        "the output is not the input as written: {text}"
    );

    // Bad JSON is still refused before any call.
    let response = invoke(r#"{"id": 1,}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response.json().await.unwrap()), "bad-request");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything_and_serves_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (token, flow) = {
        let s = Server::start(
            dir.path(),
            small_runtime(Some(cache.clone())),
            ApiConfig::default(),
        )
        .await;
        let admin = s.token("acme", Role::Admin);
        s.publish(
            &admin,
            "json-transform",
            "1.0.0",
            "",
            connector("json-transform"),
        )
        .await;
        let install = s
            .call(
                Method::POST,
                "/v1/installs",
                Some(&admin),
                Some(json!({"org": "acme", "name": "json-transform", "version": "1.0.0"})),
            )
            .await
            .1["id"]
            .clone();
        let instance = s
            .call(
                Method::POST,
                "/v1/instances",
                Some(&admin),
                Some(json!({"install": install, "name": "i"})),
            )
            .await
            .1["id"]
            .clone();
        let flow = s
            .call(
                Method::POST,
                "/v1/flows",
                Some(&admin),
                Some(
                    json!({"name": "greet", "steps": [{"name": "t", "instance": instance,
            "operation": "template", "input": {"template": "Hi {{who}}", "data": "${input}"}}]}),
                ),
            )
            .await
            .1["id"]
            .as_i64()
            .unwrap();
        s.shutdown().await;
        (admin, flow)
    };
    let runtime = small_runtime(Some(cache));
    let s = Server::start(dir.path(), runtime.clone(), ApiConfig::default()).await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{flow}/runs"),
            Some(&token),
            Some(json!({"who": "Ada"})),
        )
        .await;
    assert_eq!(r.1["output"], json!({"text": "Hi Ada"}), "{}", r.1);
    assert_eq!(
        runtime.stats().compiled,
        0,
        "the first call came from the precompiled cache"
    );
    assert_eq!(runtime.stats().cache_hits, 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_alone_answers_health_and_refuses_anonymous_calls() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(
        Registry::open(
            RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                faults: None,
                blobs: None,
                metadata: None,
                ..RegistryConfig::default()
            },
            runtime().clone(),
        )
        .unwrap(),
    );
    let router = gantry_host::router(registry, ApiConfig::default());
    let request = |uri: &str| {
        axum::http::Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = router.clone().oneshot(request("/healthz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = router.oneshot(request("/v1/flows")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        body_timeout: std::time::Duration::from_millis(500),
        ..ApiConfig::default()
    };
    let s = Server::start(dir.path(), runtime().clone(), config).await;
    let admin = s.token("acme", Role::Admin);
    let started = std::time::Instant::now();

    // Headers that never end: the connection is closed after the header timeout (500 ms here).
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server cut the slow client off")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.contains("408"), "{answer}");

    // A body that never ends: refused after the body timeout.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/installs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"org\""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server answered or closed in time")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));

    // The server still serves others.
    let r = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.0, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_calls_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    s.publish(&admin, "echo", "1.0.0", "", connector("echo"))
        .await;
    let install = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(&admin),
            Some(json!({"org": "acme", "name": "echo", "version": "1.0.0"})),
        )
        .await
        .1["id"]
        .clone();
    let instance = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&admin),
            Some(json!({"install": install, "name": "i"})),
        )
        .await
        .1["id"]
        .as_i64()
        .unwrap();
    let in_flight = {
        let (client, url, token) = (
            s.client.clone(),
            format!("http://{}/v1/instances/{instance}/invoke/delay", s.addr),
            admin.clone(),
        );
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"ms": 1500}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let addr = s.addr;
    s.shutdown().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["output"], json!({"ms": 1500}));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let (status, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/connectors/{name}/versions/{version}", "post"),
        ("/v1/connectors/{name}/versions/{version}", "delete"),
        ("/v1/connectors/{name}/versions/{version}/state", "post"),
        ("/v1/marketplace", "get"),
        ("/v1/connectors/{org}/{name}/versions", "get"),
        ("/v1/installs", "post"),
        ("/v1/installs", "get"),
        ("/v1/installs/{id}", "get"),
        ("/v1/installs/{id}/customisations", "put"),
        ("/v1/installs/{id}/outbound", "put"),
        ("/v1/installs/{id}/update", "post"),
        ("/v1/installs/{id}/rebind", "post"),
        ("/v1/instances", "post"),
        ("/v1/instances", "get"),
        ("/v1/instances/{id}", "get"),
        ("/v1/instances/{id}/invoke/{operation}", "post"),
        ("/v1/flows", "post"),
        ("/v1/flows", "get"),
        ("/v1/flows/{id}", "get"),
        ("/v1/flows/{id}/runs", "post"),
        ("/v1/flows/{id}/runs", "get"),
        ("/v1/flows/{id}/steps/{step}/rebind", "post"),
        ("/v1/audit", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/orgs", "post"),
        ("/v1/orgs", "get"),
        ("/v1/orgs/{org}/tokens", "post"),
        ("/v1/backup", "post"),
        ("/metrics", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is documented"
        );
    }
    // Every status a route of its kind can answer is documented.
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let answers = operation["responses"].as_object().unwrap();
            let mut expected = Vec::new();
            if path.contains('{') {
                expected.extend(["400", "404"]);
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["404", "413", "415", "422"]);
            }
            for status in expected {
                assert!(
                    answers.contains_key(status),
                    "{method} {path} documents {status}: {answers:?}"
                );
            }
        }
    }
    let before = &doc["components"]["schemas"]["AuditEntry"]["properties"]["before"];
    assert!(
        before.to_string().contains("null"),
        "an audit entry's `before` may be null: {before}"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "{r} resolves");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_allowance_is_one_organisations_only() {
    // An upstream on loopback, which the operator lets `acme`'s connectors reach.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(|| async { axum::Json(json!({"internal": "admin api"})) }),
    );
    tokio::spawn(async move { axum::serve(upstream, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        private_addresses: [("acme".to_string(), vec!["127.0.0.1".parse().unwrap()])].into(),
        ..RegistryConfig::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let mut outcomes = Vec::new();
    for org in ["acme", "mallory"] {
        // Each organisation's own admin publishes rest-json, installs it and grants loopback
        // to its install — all of which an organisation admin may do.
        let admin = s.token(org, Role::Admin);
        let r = s
            .publish(&admin, "rest-json", "1.0.0", "", connector("rest-json"))
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        let (_, install) = s
            .call(
                Method::POST,
                "/v1/installs",
                Some(&admin),
                Some(json!({"org": org, "name": "rest-json", "version": "1.0.0"})),
            )
            .await;
        let r = s
            .call(
                Method::PUT,
                &format!("/v1/installs/{}/outbound", install["id"]),
                Some(&admin),
                Some(json!(["http://127.0.0.1:*"])),
            )
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let (_, instance) = s
            .call(
                Method::POST,
                "/v1/instances",
                Some(&admin),
                Some(json!({"install": install["id"], "name": "loop",
                    "config": {"base_url": format!("http://{upstream_addr}")}})),
            )
            .await;
        outcomes.push(
            s.call(
                Method::POST,
                &format!("/v1/instances/{}/invoke/get", instance["id"]),
                Some(&admin),
                Some(json!({"path": "/status"})),
            )
            .await,
        );
    }
    let (acme, mallory) = (&outcomes[0], &outcomes[1]);
    assert_eq!(acme.0, StatusCode::OK, "{}", acme.1);
    assert_eq!(acme.1["output"]["body"]["internal"], "admin api");
    assert_eq!(mallory.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", mallory.1);
    assert_eq!(error_code(&mallory.1), "connector-error");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_name_uses_what_the_component_describes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let publisher = s.token("acme", Role::Publisher);
    let post = |query: &'static str, token: Option<String>, kind: &'static str, body: Vec<u8>| {
        let mut request = s
            .client
            .post(format!("http://{}/v1/connectors?{query}", s.addr))
            .header("content-type", kind)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let wasm = "application/wasm";

    let r = post(
        "tags=demo,http",
        Some(publisher.clone()),
        wasm,
        connector("echo"),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["outcome"], "created");
    let v = &r.1["version"];
    assert_eq!(
        (&v["org"], &v["name"], &v["version"], &v["visibility"]),
        (
            &json!("acme"),
            &json!("echo"),
            &json!("1.0.0"),
            &json!("private")
        )
    );
    assert_eq!(v["tags"], json!(["demo", "http"]));
    // The same bytes again: unchanged; public: a new revision.
    let r = post("", Some(publisher.clone()), wasm, connector("echo")).await;
    assert_eq!(
        (r.0, &r.1["outcome"]),
        (StatusCode::OK, &json!("unchanged"))
    );
    let r = post(
        "visibility=public",
        Some(publisher.clone()),
        wasm,
        connector("echo"),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["version"]["revision"], 2);

    // What the named route refuses, this one refuses too.
    let r = post("", None, wasm, connector("echo")).await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let viewer = s.token("acme", Role::Viewer);
    let r = post("", Some(viewer), wasm, connector("echo")).await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let r = post(
        "",
        Some(publisher.clone()),
        "application/json",
        connector("echo"),
    )
    .await;
    assert_eq!(r.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.1);
    let r = post(
        "",
        Some(publisher.clone()),
        wasm,
        b"\0asm not really".to_vec(),
    )
    .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    let r = post(
        "tags=Not%20A%20Tag",
        Some(publisher.clone()),
        wasm,
        connector("echo"),
    )
    .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    let r = post(
        "visibility=everyone",
        Some(publisher),
        wasm,
        connector("echo"),
    )
    .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::BAD_REQUEST, "bad-request")
    );
}

/// With `Accept: application/x-ndjson` a publish answers its stages as it goes, then its
/// outcome with the status the plain request would have had; it finishes even when the
/// publisher goes away before it does.
#[tokio::test(flavor = "multi_thread")]
async fn a_watched_publish_streams_its_stages_and_outlives_its_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let publisher = s.token("acme", Role::Publisher);
    let send = |path: &str, body: Vec<u8>, watch: bool| {
        let mut request = s
            .client
            .post(format!("http://{}{path}", s.addr))
            .bearer_auth(&publisher)
            .header("content-type", "application/wasm")
            .body(body);
        if watch {
            request = request.header("accept", "application/json, application/x-ndjson");
        }
        request.send()
    };
    let events = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };

    let bytes = connector("echo");
    let response = send("/v1/connectors", bytes.clone(), true).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = events(&response.text().await.unwrap());
    assert_eq!(lines[0], json!({"event": "received", "bytes": bytes.len()}));
    let mut stages: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|e| {
            assert_eq!(e["event"], "progress", "{e}");
            assert!(e["elapsed_ms"].is_u64(), "{e}");
            e["stage"].as_str().unwrap()
        })
        .collect();
    stages.dedup();
    assert_eq!(stages, ["compiling", "storing"], "{lines:?}");
    let done = lines.last().unwrap();
    assert_eq!(
        (
            &done["event"],
            &done["status"],
            &done["published"]["outcome"]
        ),
        (&json!("done"), &json!(201), &json!("created")),
        "{done}"
    );
    assert_eq!(done["published"]["version"]["name"], "echo");

    // Refused: the status and error the plain request answers, as the last event.
    let garbage = b"\0asm but not really".to_vec();
    let plain = send("/v1/connectors/echo/versions/9.0.0", garbage.clone(), false)
        .await
        .unwrap();
    let (status, body) = (plain.status(), plain.json::<Value>().await.unwrap());
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let watched = send("/v1/connectors/echo/versions/9.0.0", garbage, true)
        .await
        .unwrap();
    assert_eq!(watched.status(), StatusCode::OK);
    let lines = events(&watched.text().await.unwrap());
    assert_eq!(
        lines.last().unwrap(),
        &json!({"event": "failed", "status": 422, "error": body["error"]})
    );

    // The publisher reads the first event and goes away: the publish still completes.
    let mut response = send("/v1/connectors", connector("echo-v2"), true)
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(br#"{"event":"received""#), "{first:?}");
    drop(response);
    let viewer = s.token("acme", Role::Viewer);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let r = s
            .call(
                Method::GET,
                "/v1/connectors/acme/echo/versions",
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let versions: Vec<&Value> =
            r.1.as_array()
                .unwrap()
                .iter()
                .map(|v| &v["version"])
                .collect();
        if versions.contains(&&json!("2.0.0")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never published: {versions:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

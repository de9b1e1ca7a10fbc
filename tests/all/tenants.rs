//! Hostile tenants against a real server on 127.0.0.1: what one organisation (a publisher, an
//! operator, a viewer) does must not break, slow, reveal or steer anything of another's. One
//! test per finding of the security review, each with the hostile component it needs.

use crate::support::{Server, connector, error_code, runtime};
use gantry_host::model::Role;
use gantry_host::registry::FlowLimits;
use gantry_host::{ApiConfig, RegistryConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Install `pkg_org/name@version` into the token's organisation; the install's id.
async fn install(s: &Server, token: &str, org: &str, pkg: &str, version: &str) -> i64 {
    let (pkg_org, name) = pkg.split_once('/').unwrap();
    let r = s
        .call(
            Method::POST,
            "/v1/installs",
            Some(token),
            Some(json!({"org": pkg_org, "name": name, "version": version})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{org} installing {pkg}: {}", r.1);
    r.1["id"].as_i64().unwrap()
}

/// An instance of install `install`; its id.
async fn instance(s: &Server, token: &str, install: i64) -> i64 {
    let r = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(token),
            Some(json!({"install": install, "name": "main"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    r.1["id"].as_i64().unwrap()
}

/// A flow of `steps` steps, each echoing the one before (the first echoes the input).
async fn echo_flow(s: &Server, token: &str, instance: i64, steps: usize) -> (StatusCode, Value) {
    let steps: Vec<Value> = (0..steps)
        .map(|n| {
            let input = if n == 0 {
                "${input}".to_string()
            } else {
                format!("${{steps.s{}}}", n - 1)
            };
            json!({"name": format!("s{n}"), "instance": instance, "operation": "echo",
                "input": input})
        })
        .collect();
    s.call(
        Method::POST,
        "/v1/flows",
        Some(token),
        Some(json!({"name": format!("echo x{}", steps.len()), "steps": steps})),
    )
    .await
}

/// An object holding arrays `depth - 1` deep: `depth` levels in all (echo takes objects).
fn nested(depth: usize) -> String {
    format!(
        "{{\"d\":{}1{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_document_is_refused_before_it_is_stored_and_every_history_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let mallory = s.token("mallory", Role::Admin);
    let acme = s.token("acme", Role::Admin);

    // A schema nested 126 deep is refused at publish, so it never reaches a listing.
    let r = s
        .publish(
            &mallory,
            "deep-schema",
            "1.0.0",
            "visibility=public",
            connector("deep-schema"),
        )
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    assert_eq!(error_code(&r.1), "bad-describe");
    assert!(r.1.to_string().contains("nests 126 levels deep"), "{}", r.1);
    let r = s
        .call(Method::GET, "/v1/marketplace", Some(&acme), None)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    // A step output nested 125 deep fails its step instead of being kept in the run record.
    let echo = s.echo_instance(&acme, "acme").await;
    let (status, flow) = echo_flow(&s, &acme, echo, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{flow}");
    let runs = format!("/v1/flows/{}/runs", flow["id"]);
    let run = |input: String| {
        s.client
            .post(format!("http://{}{runs}", s.addr))
            .bearer_auth(&acme)
            .header("content-type", "application/json")
            .body(input)
            .send()
    };
    let r = run(nested(125)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let failed: Value = r.json().await.unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "invalid-output", "{failed}");
    // One 64 deep is kept, and the history (read by a client with serde_json's limit) stays
    // readable with both runs in it.
    let r = run(nested(64)).await.unwrap();
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let r = s.call(Method::GET, &runs, Some(&acme), None).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1.as_array().unwrap().len(), 2);
    // A step's input template is bounded the same way.
    let r = s
        .call(
            Method::POST,
            "/v1/flows",
            Some(&acme),
            Some(json!({"name": "deep", "steps": [{"name": "a", "instance": echo,
                "operation": "echo", "input": serde_json::from_str::<Value>(&nested(100)).unwrap()}]})),
        )
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    s.shutdown().await;
}

/// A data directory as Gantry before the fix left it after the review's attack: a public
/// version whose stored description nests past serde_json's default limit.
fn poison(dir: &Path) {
    let db = rusqlite::Connection::open(dir.join("gantry.db")).unwrap();
    let (digest, description): (String, String) = db
        .query_row(
            "SELECT digest, description FROM versions WHERE name = 'echo'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut deep: Value = serde_json::from_str(&description).unwrap();
    deep["operations"][0]["input_schema"] = {
        let text = nested(126);
        let mut de = serde_json::Deserializer::from_str(&text);
        de.disable_recursion_limit();
        serde::Deserialize::deserialize(&mut de).unwrap()
    };
    db.execute(
        "INSERT INTO versions (org, name, version, revision, digest, size, visibility, state, \
         publisher, published_at, description, tags) VALUES ('mallory', 'poisoned', '1.0.0', 1, \
         ?1, 1, 'public', 'active', 'token:1:x', 0, ?2, '[]')",
        rusqlite::params![digest, serde_json::to_string(&deep).unwrap()],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_poisoned_before_the_fix_is_readable_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
        let admin = s.token("mallory", Role::Admin);
        s.token("acme", Role::Viewer);
        let r = s
            .publish(&admin, "echo", "1.0.0", "", connector("echo"))
            .await;
        assert_eq!(r.0, StatusCode::CREATED);
        s.shutdown().await;
    }
    poison(dir.path());
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let acme = s.token("acme", Role::Viewer);
    let r = s
        .call(Method::GET, "/v1/marketplace", Some(&acme), None)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1[0]["name"], "poisoned");
    // Its publisher can block it again (that reads the row first).
    let mallory = s.token("mallory", Role::Publisher);
    let r = s
        .call(
            Method::POST,
            "/v1/connectors/poisoned/versions/1.0.0/state",
            Some(&mallory),
            Some(json!({"state": "blocked"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_listings_and_runs_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        flows: FlowLimits {
            steps: 4,
            run_bytes: 3 << 20,
            ..FlowLimits::default()
        },
        ..RegistryConfig::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let vendor = s.token("vendor", Role::Admin);
    let acme = s.token("acme", Role::Admin);

    // 16 MiB of describe() is refused before anything is stored.
    let r = s
        .publish(
            &vendor,
            "huge-describe",
            "1.0.0",
            "visibility=public",
            connector("huge-describe"),
        )
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    assert_eq!(error_code(&r.1), "bad-describe");

    // Listings leave schemas out and come in pages.
    for (name, file) in [
        ("echo", "echo"),
        ("json-transform", "json-transform"),
        ("worldbank", "worldbank"),
    ] {
        let r = s
            .publish(&vendor, name, "1.0.0", "visibility=public", connector(file))
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    }
    let r = s
        .call(Method::GET, "/v1/marketplace?limit=2", Some(&acme), None)
        .await;
    let names: Vec<&str> =
        r.1.as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
    assert_eq!(names, ["echo", "json-transform"], "{}", r.1);
    assert!(!r.1.to_string().contains("input_schema"), "{}", r.1);
    assert!(r.1[0]["latest"]["description"]["operations"][0]["name"].is_string());
    let r = s
        .call(
            Method::GET,
            "/v1/marketplace?limit=2&after=vendor/json-transform",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.1.as_array().unwrap().len(), 1, "{}", r.1);
    assert_eq!(r.1[0]["name"], "worldbank");
    let r = s.get("/v1/marketplace?after=worldbank", &acme).await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    assert!(r.1.to_string().contains("`org/name`"), "{}", r.1);
    for bad in ["limit=0", "limit=1001", "limit=-1"] {
        let r = s.get(&format!("/v1/marketplace?{bad}"), &acme).await;
        assert!(r.0.is_client_error(), "{bad}: {}", r.1);
    }
    let r = s.get("/v1/installs?limit=1001", &acme).await;
    assert!(r.1.to_string().contains("from 1 to 1000"), "{}", r.1);
    let r = s.get("/v1/marketplace?after=&tag=&limit=1000", &acme).await;
    assert_eq!(
        r.1.as_array().map(Vec::len),
        Some(3),
        "empty is no filter: {}",
        r.1
    );
    // Words match the starts of words, through the index; too many words are refused.
    let found = |r: &(StatusCode, Value)| -> Vec<String> {
        r.1.as_array()
            .unwrap_or_else(|| panic!("{}", r.1))
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = s.get("/v1/marketplace?text=WORLD", &acme).await;
    assert_eq!(found(&r), ["worldbank"]);
    let r = s
        .call(
            Method::GET,
            &format!("/v1/marketplace?text={}", ["w"; 17].join("+")),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    // A connector's versions come in pages, after a version.
    let r = s
        .get("/v1/connectors/vendor/echo/versions?after=1.0.0", &acme)
        .await;
    assert_eq!(r.1, json!([]));
    let r = s
        .get("/v1/connectors/vendor/echo/versions?after=one", &acme)
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    // The version itself has its schemas.
    let r = s
        .call(
            Method::GET,
            "/v1/connectors/vendor/echo/versions",
            Some(&acme),
            None,
        )
        .await;
    assert!(r.1[0]["description"]["operations"][0]["input_schema"].is_object());

    // A flow has at most `steps` steps; a run keeps at most `run_bytes` of outputs.
    let echo = instance(
        &s,
        &acme,
        install(&s, &acme, "acme", "vendor/echo", "1.0.0").await,
    )
    .await;
    let (status, body) = echo_flow(&s, &acme, echo, 5).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("at most 4 steps"), "{body}");
    let (_, flow) = echo_flow(&s, &acme, echo, 4).await;
    let input = json!({"payload": "x".repeat(1100 << 10)});
    let r = s
        .call(
            Method::POST,
            &format!("/v1/flows/{}/runs", flow["id"]),
            Some(&acme),
            Some(input),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    assert_eq!(r.1["status"], "failed");
    assert_eq!(r.1["error"]["code"], "run-too-large", "{}", r.1["error"]);
    assert_eq!(r.1["error"]["step"], "s2");
    assert_eq!(r.1["steps"].as_array().unwrap().len(), 3);
    // Lists come in pages too.
    let r = s
        .call(Method::GET, "/v1/audit?limit=1", Some(&acme), None)
        .await;
    assert_eq!(r.1.as_array().unwrap().len(), 1, "{}", r.1);
    let first = r.1[0]["id"].clone();
    let r = s
        .call(
            Method::GET,
            &format!("/v1/audit?limit=1&after={first}"),
            Some(&acme),
            None,
        )
        .await;
    assert!(r.1[0]["id"].as_i64() > first.as_i64(), "{}", r.1);
    let r = s
        .call(Method::GET, "/v1/audit?limit=x", Some(&acme), None)
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::BAD_REQUEST, "bad-request")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_is_no_identity_across_organisations() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let vendor = s.token("vendor", Role::Admin);
    let acme = s.token("acme", Role::Admin);
    let mallory = s.token("mallory", Role::Admin);
    let echo = connector("echo");

    // acme runs vendor's public echo in a flow.
    let r = s
        .publish(&vendor, "echo", "1.0.0", "visibility=public", echo.clone())
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    let i = instance(
        &s,
        &acme,
        install(&s, &acme, "acme", "vendor/echo", "1.0.0").await,
    )
    .await;
    let (_, flow) = echo_flow(&s, &acme, i, 1).await;
    let runs = format!("/v1/flows/{}/runs", flow["id"]);
    let status = |r: (StatusCode, Value)| r.1["status"].as_str().unwrap_or_default().to_string();

    // mallory publishes the very same bytes as its own echo, privately: it may delete its own
    // copy, and the answer says nothing of acme's steps pinned to those bytes.
    let r = s.publish(&mallory, "echo", "1.0.0", "", echo.clone()).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let r = s
        .call(
            Method::DELETE,
            "/v1/connectors/echo/versions/1.0.0",
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);

    // mallory's copy, republished and blocked, does not stop acme's flow...
    assert_eq!(
        s.publish(&mallory, "echo", "1.0.0", "", echo.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        s.publish(&mallory, "echo", "1.0.0", "visibility=public", echo.clone())
            .await
            .0,
        StatusCode::CREATED,
        "same bytes made public: a second revision"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/connectors/echo/versions/1.0.0/state",
            Some(&mallory),
            Some(json!({"state": "blocked"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(
        status(
            s.call(Method::POST, &runs, Some(&acme), Some(json!({})))
                .await
        ),
        "succeeded"
    );
    // ...and vendor's recall holds even while mallory's copy of the same bytes is active.
    s.call(
        Method::POST,
        "/v1/connectors/echo/versions/1.0.0/state",
        Some(&mallory),
        Some(json!({"state": "active"})),
    )
    .await;
    s.call(
        Method::POST,
        "/v1/connectors/echo/versions/1.0.0/state",
        Some(&vendor),
        Some(json!({"state": "blocked"})),
    )
    .await;
    let r = s
        .call(Method::POST, &runs, Some(&acme), Some(json!({})))
        .await;
    assert_eq!(r.1["status"], "failed");
    assert_eq!(r.1["error"]["code"], "blocked", "{}", r.1);
    assert!(r.1.to_string().contains("vendor/echo@1.0.0"), "{}", r.1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_listings_show_nothing_of_other_organisations() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let acme = s.token("acme", Role::Admin);
    let other = s.token("globex", Role::Viewer);
    let secret_project = s.echo_instance(&acme, "acme").await;
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{secret_project}/invoke/echo"),
            Some(&acme),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK);

    // No token, no metrics.
    let r = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    // acme sees its call; globex sees nothing of it.
    let mine = s.call(Method::GET, "/metrics", Some(&acme), None).await;
    assert!(
        mine.1.as_str().unwrap().contains("connector=\"echo\""),
        "{}",
        mine.1
    );
    let theirs = s.call(Method::GET, "/metrics", Some(&other), None).await;
    assert_eq!(theirs.0, StatusCode::OK);
    assert!(!theirs.1.as_str().unwrap().contains("echo"), "{}", theirs.1);

    // A public version shows its organisation as publisher to others, not a token's label.
    let publisher = s
        .registry
        .create_token("acme", "test", Role::Publisher, "ci-bot of jane@acme", None)
        .unwrap()
        .1;
    let r = s
        .publish(
            &publisher,
            "json-transform",
            "1.0.0",
            "visibility=public",
            connector("json-transform"),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    for path in [
        "/v1/marketplace",
        "/v1/connectors/acme/json-transform/versions",
    ] {
        let r = s.call(Method::GET, path, Some(&other), None).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        assert!(!r.1.to_string().contains("jane"), "{path}: {}", r.1);
        assert!(
            r.1.to_string().contains("\"publisher\":\"acme\""),
            "{path}: {}",
            r.1
        );
    }
    let r = s
        .call(
            Method::GET,
            "/v1/connectors/acme/json-transform/versions",
            Some(&acme),
            None,
        )
        .await;
    assert!(
        r.1.to_string().contains("jane"),
        "its own organisation sees who: {}",
        r.1
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_refused_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let viewer = s.token("acme", Role::Viewer);
    // A publish that says its body is 30 MiB and then sends one kilobyte of it.
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/connectors/echo/versions/1.0.0 HTTP/1.1\r\nhost: {}\r\n\
         authorization: Bearer {viewer}\r\ncontent-type: application/wasm\r\n\
         content-length: {}\r\n\r\n",
        s.addr,
        30u64 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0; 1024]).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the 403 comes without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("forbidden"), "{answer}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_metadata_never_makes_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let vendor = s.token("vendor", Role::Admin);
    let acme = s.token("acme", Role::Admin);
    let echo = connector("echo");
    assert_eq!(
        s.publish(&vendor, "echo", "1.0.0", "visibility=public", echo.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    let install = install(&s, &acme, "acme", "vendor/echo", "1.0.0").await;
    // Other bytes as `1.0.0+build.2` are other bytes for public 1.0.0: refused.
    let mut other = echo.clone();
    other.extend_from_slice(&[0, 3, 2, b'x', b'y']);
    let r = s
        .publish(&vendor, "echo", "1.0.0+build.2", "visibility=public", other)
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::CONFLICT, "conflict"),
        "{}",
        r.1
    );
    // The same bytes are the same version, and nothing is offered as an update.
    let r = s
        .publish(&vendor, "echo", "1.0.0+build.1", "visibility=public", echo)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["outcome"], "unchanged");
    let r = s
        .call(
            Method::GET,
            &format!("/v1/installs/{install}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.1["update_available"], Value::Null, "{}", r.1);
    let r = s
        .call(
            Method::GET,
            "/v1/connectors/vendor/echo/versions",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(r.1.as_array().unwrap().len(), 1, "{}", r.1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sandbox_never_grants_is_published_granting_nothing_unless_refused() {
    // By default a component importing wasi:filesystem and wasi:sockets is published (the
    // JavaScript and Python toolchains import them); the sandbox grants it nothing.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let r = s
        .publish(&admin, "snoop", "1.0.0", "", connector("snoop"))
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    s.shutdown().await;

    // An operator who wants none refuses them, naming each.
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        refuse_ungranted_imports: true,
        ..RegistryConfig::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let admin = s.token("acme", Role::Admin);
    let r = s
        .publish(&admin, "snoop", "1.0.0", "", connector("snoop"))
        .await;
    assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
    assert_eq!(error_code(&r.1), "ungranted-imports");
    let message = r.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("wasi:sockets/tcp"), "{message}");
    assert!(message.contains("wasi:filesystem/types"), "{message}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organisation_cannot_take_every_call_slot() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        max_concurrent_calls: 8,
        max_calls_per_org: 2,
        ..ApiConfig::default()
    };
    let s = std::sync::Arc::new(Server::start(dir.path(), runtime().clone(), config).await);
    let mallory = s.token("mallory", Role::Admin);
    let acme = s.token("acme", Role::Admin);
    let slow = s.echo_instance(&mallory, "mallory").await;
    let fast = s.echo_instance(&acme, "acme").await;
    // mallory fills its share with calls that take a while...
    let mut held = Vec::new();
    for _ in 0..2 {
        let (s, token) = (s.clone(), mallory.clone());
        held.push(tokio::spawn(async move {
            s.call(
                Method::POST,
                &format!("/v1/instances/{slow}/invoke/delay"),
                Some(&token),
                Some(json!({"ms": 1500})),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and its next call is refused, while acme's goes through.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{slow}/invoke/echo"),
            Some(&mallory),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::TOO_MANY_REQUESTS, "too-many-calls")
    );
    assert!(r.1.to_string().contains("its share"), "{}", r.1);
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{fast}/invoke/echo"),
            Some(&acme),
            Some(json!({"ok": true})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    for call in held {
        assert_eq!(call.await.unwrap().0, StatusCode::OK);
    }
    // Its places come back when its calls end.
    let r = s
        .call(
            Method::POST,
            &format!("/v1/instances/{slow}/invoke/echo"),
            Some(&mallory),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_grow_the_host_or_hoard_connections() {
    // An upstream on loopback that takes connections and never answers.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = upstream.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryConfig {
        data_dir: dir.path().to_path_buf(),
        private_addresses: [("mallory".to_string(), vec!["127.0.0.1".parse().unwrap()])].into(),
        ..RegistryConfig::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let mallory = s.token("mallory", Role::Admin);
    let mut invoke = Vec::new();
    for name in ["header-bomb", "conn-hog"] {
        let r = s
            .publish(&mallory, name, "1.0.0", "", connector(name))
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        let id = install(&s, &mallory, "mallory", &format!("mallory/{name}"), "1.0.0").await;
        let r = s
            .call(
                Method::PUT,
                &format!("/v1/installs/{id}/outbound"),
                Some(&mallory),
                Some(json!(["http://127.0.0.1:*"])),
            )
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        invoke.push(format!(
            "/v1/instances/{}/invoke/run",
            instance(&s, &mallory, id).await
        ));
    }
    // Header maps in host memory until the handle cap: a typed error, not a bigger server.
    let r = s
        .call(Method::POST, &invoke[0], Some(&mallory), Some(json!({})))
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::BAD_GATEWAY, "resource-limit")
    );
    // Fifty requests at once: the call ends at its sixth connection, long before a timeout.
    let started = std::time::Instant::now();
    let r = s
        .call(
            Method::POST,
            &invoke[1],
            Some(&mallory),
            Some(json!({"authority": upstream_addr.to_string(), "count": 50})),
        )
        .await;
    assert_eq!(
        (r.0, error_code(&r.1)),
        (StatusCode::BAD_GATEWAY, "resource-limit")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) <= 6);
    s.shutdown().await;
}

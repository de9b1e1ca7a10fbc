//! Organisations and tokens over the API: the platform operator creates organisations and
//! their first admin tokens; an organisation's admin creates, lists and revokes its own tokens;
//! a revoked or expired token is refused on its next request.

use crate::support::{Server, error_code, runtime};
use gantry_host::ApiConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn server() -> (Server, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), runtime().clone(), ApiConfig::default()).await;
    let (_, platform) = s.registry.create_platform_token("test", "root").unwrap();
    (s, dir, platform)
}

async fn new_org(s: &Server, platform: &str, id: &str) -> String {
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/orgs",
            Some(platform),
            Some(json!({"id": id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["org"]["id"], id);
    assert_eq!(body["admin"]["role"], "admin");
    assert_eq!(body["admin"]["org"], id);
    body["admin"]["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_platform_creates_organisations_and_acts_in_none() {
    let (s, _dir, platform) = server().await;
    let vendor = new_org(&s, &platform, "vendor").await;
    new_org(&s, &platform, "shop").await;

    let (status, body) = s
        .call(
            Method::POST,
            "/v1/orgs",
            Some(&platform),
            Some(json!({"id": "shop"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/orgs",
            Some(&platform),
            Some(json!({"id": "Bad Name"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) = s.call(Method::GET, "/v1/orgs", Some(&platform), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shop", "vendor"]);
    let (_, page) = s
        .call(Method::GET, "/v1/orgs?after=shop", Some(&platform), None)
        .await;
    assert_eq!(page.as_array().unwrap().len(), 1);

    // The new admin works in its organisation, and cannot do the platform's work.
    let (status, _) = s
        .call(Method::GET, "/v1/installs", Some(&vendor), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (Method::GET, "/v1/orgs", None),
        (Method::POST, "/v1/orgs", Some(json!({"id": "mine"}))),
        (
            Method::POST,
            "/v1/orgs/shop/tokens",
            Some(json!({"role": "admin", "label": "x"})),
        ),
    ] {
        let (status, body) = s.call(method, path, Some(&vendor), body).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&vendor),
            Some(json!({"role": "platform", "label": "up"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no way up: {body}"
    );

    // The platform reads and changes nothing inside an organisation.
    for path in [
        "/v1/installs",
        "/v1/instances",
        "/v1/flows",
        "/v1/marketplace",
    ] {
        let (status, _) = s.call(Method::GET, path, Some(&platform), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }

    // A lost admin token: the platform mints another.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/orgs/shop/tokens",
            Some(&platform),
            Some(json!({"role": "admin", "label": "second"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/orgs/nobody/tokens",
            Some(&platform),
            Some(json!({"role": "admin", "label": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Audited: in the platform's log and in the organisation's own.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", Some(&platform), None)
        .await;
    let actions: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("create-token", "token 1"),
            ("create-org", "organisation vendor"),
            ("create-org", "organisation shop")
        ]
    );
    let (_, log) = s.call(Method::GET, "/v1/audit", Some(&vendor), None).await;
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create-org", "create-token"]);
    assert!(
        log[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("platform:token:"),
        "{log}"
    );
    s.shutdown().await;
}

fn listed<'a>(tokens: &'a Value, id: &Value) -> &'a Value {
    tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == *id)
        .unwrap_or_else(|| panic!("token {id} not in {tokens}"))
}

#[tokio::test]
async fn an_admin_lists_and_revokes_its_tokens_and_a_revoked_one_is_refused() {
    let (s, _dir, platform) = server().await;
    let acme = new_org(&s, &platform, "acme").await;
    let globex = new_org(&s, &platform, "globex").await;

    let (status, ci) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&acme),
            Some(json!({"role": "publisher", "label": "ci", "expires_in_secs": 30 * 86_400})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    let secret = ci["token"].as_str().unwrap().to_string();
    let id = ci["id"].clone();
    let expires = ci["expires_at"].as_i64().unwrap();
    let created = ci["created_at"].as_i64().unwrap();
    assert!((expires - created - 30 * 86_400_000).abs() < 60_000, "{ci}");

    let (status, _) = s
        .call(Method::GET, "/v1/marketplace", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::OK, "the new token works");

    let response = s
        .client
        .get(format!("http://{}/v1/tokens", s.addr))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret[4..]), "never a secret: {text}");
    let tokens: Value = serde_json::from_str(&text).unwrap();
    let listed_ci = listed(&tokens, &id);
    assert_eq!(
        (
            &listed_ci["role"],
            &listed_ci["label"],
            &listed_ci["org"],
            &listed_ci["revoked_at"]
        ),
        (
            &json!("publisher"),
            &json!("ci"),
            &json!("acme"),
            &Value::Null
        )
    );
    assert_eq!(listed_ci["expires_at"], expires);
    assert!(
        listed_ci["last_used_at"].as_i64().unwrap() >= created,
        "{listed_ci}"
    );
    assert_eq!(
        tokens.as_array().unwrap().len(),
        2,
        "acme's admin and ci, no other's: {tokens}"
    );

    // Only admins manage tokens, and only their own organisation's.
    let (status, _) = s.call(Method::GET, "/v1/tokens", Some(&secret), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let path = format!("/v1/tokens/{id}");
    let (status, _) = s.call(Method::DELETE, &path, Some(&globex), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another organisation's token is not found"
    );
    let (status, _) = s.call(Method::DELETE, &path, Some(&platform), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor is it the platform's");

    let (status, revoked) = s.call(Method::DELETE, &path, Some(&acme), None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_i64());
    let (status, body) = s
        .call(Method::GET, "/v1/marketplace", Some(&secret), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, again) = s.call(Method::DELETE, &path, Some(&acme), None).await;
    assert_eq!(
        (status, &again["revoked_at"]),
        (StatusCode::OK, &revoked["revoked_at"])
    );

    let (_, log) = s.call(Method::GET, "/v1/audit", Some(&acme), None).await;
    let revocations: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "revoke-token")
        .collect();
    assert_eq!(revocations.len(), 1, "{log}");
    assert_eq!(revocations[0]["subject"], format!("token {id}"));

    let (status, body) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&acme),
            Some(json!({"role": "viewer", "label": "x", "expires_in_secs": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_refused_even_when_it_was_just_used() {
    let (s, _dir, platform) = server().await;
    let acme = new_org(&s, &platform, "acme").await;
    let asked = Instant::now();
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&acme),
            Some(json!({"role": "viewer", "label": "brief", "expires_in_secs": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    // Used once while valid (so the server has it cached), unless this machine was too slow
    // to get there within its two seconds.
    let (status, _) = s
        .call(Method::GET, "/v1/marketplace", Some(&token), None)
        .await;
    assert!(
        status == StatusCode::OK || asked.elapsed() >= Duration::from_secs(2),
        "{status}"
    );
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(asked.elapsed()) + Duration::from_millis(100),
    )
    .await;
    let (status, _) = s
        .call(Method::GET, "/v1/marketplace", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test]
async fn the_platform_manages_its_own_tokens() {
    let (s, _dir, platform) = server().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&platform),
            Some(json!({"role": "platform", "label": "ops"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["org"], Value::Null);
    let second = body["token"].as_str().unwrap().to_string();
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&platform),
            Some(json!({"role": "admin", "label": "ops"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "org tokens go through /v1/orgs/{{org}}/tokens"
    );
    let (_, tokens) = s.call(Method::GET, "/v1/tokens", Some(&second), None).await;
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");
    let first = &tokens[0]["id"];
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{first}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.call(Method::GET, "/v1/orgs", Some(&platform), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the revoked platform token"
    );
    let (status, _) = s.call(Method::GET, "/v1/orgs", Some(&second), None).await;
    assert_eq!(status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_for_the_store_and_for_draining() {
    use crate::registry::RemoteMetadata;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(RemoteMetadata {
        inner: gantry_host::store::SqliteStore::open(&dir.path().join("meta.db")).unwrap(),
        units: Default::default(),
        down: AtomicBool::new(false),
    });
    let registry = gantry_host::RegistryConfig {
        data_dir: dir.path().join("data"),
        metadata: Some(meta.clone()),
        ..Default::default()
    };
    let s = Server::start_with(registry, runtime().clone(), ApiConfig::default()).await;
    let (status, body) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ready")));
    meta.down.store(true, Ordering::SeqCst);
    let (status, body) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    let (status, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on the store"
    );
    meta.down.store(false, Ordering::SeqCst);
    let (status, _) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "back without a restart");
    s.shutdown().await;

    // While draining, /readyz says so (what `serve` sets from its shutdown signal on).
    use tower::ServiceExt;
    let registry = Arc::new(
        gantry_host::Registry::open(
            gantry_host::RegistryConfig {
                data_dir: dir.path().join("other"),
                ..Default::default()
            },
            runtime().clone(),
        )
        .unwrap(),
    );
    let draining = gantry_host::api::Draining(Arc::new(AtomicBool::new(true)));
    let router =
        gantry_host::router(registry, ApiConfig::default()).layer(axum::Extension(draining));
    let answer = router
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_flow_and_secret() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (s, dir, platform) = server().await;
    let admin = new_org(&s, &platform, "acme").await;
    let instance = s.echo_instance(&admin, "acme").await;
    // An instance with a credential, sealed under the data directory's key.
    let (_, with_secret) = s
        .call(
            Method::POST,
            "/v1/instances",
            Some(&admin),
            Some(json!({"install": 1, "name": "sealed", "secrets": {"token": "s3cret"}})),
        )
        .await;
    let sealed = with_secret["id"].as_i64().unwrap();
    let (status, flow) = s
        .call(
            Method::POST,
            "/v1/flows",
            Some(&admin),
            Some(json!({"name": "relay", "steps": [
                {"name": "one", "instance": instance, "operation": "echo", "input": "${input}"},
                {"name": "two", "instance": sealed, "operation": "echo", "input": "${steps.one}"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flow}");
    let flow = flow["id"].as_i64().unwrap();

    // Calls from two callers all through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let (client, addr, admin) = (s.client.clone(), s.addr, admin.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let answer = client
                        .post(format!("http://{addr}/v1/flows/{flow}/runs"))
                        .bearer_auth(&admin)
                        .json(&json!({"n": 1}))
                        .send()
                        .await;
                    match answer {
                        Ok(r)
                            if r.status() == StatusCode::CREATED
                                || r.status() == StatusCode::OK =>
                        {
                            ok.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    while ok.load(Ordering::SeqCst) < 5 {
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "runs fail before the backup"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to = dir.path().join("backup");
    let (status, backup) = s
        .call(
            Method::POST,
            "/v1/backup",
            Some(&platform),
            Some(json!({"to": to})),
        )
        .await;
    let during = ok.load(Ordering::SeqCst);
    while ok.load(Ordering::SeqCst) < during + 5 && failed.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(status, StatusCode::OK, "{backup}");
    assert_eq!(backup["blobs"], 1, "{backup}");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no call failed during the backup"
    );

    // Refused: not the platform, a relative path, a directory that exists.
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/backup",
            Some(&admin),
            Some(json!({"to": dir.path().join("b2")})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for to in [json!("relative/dir"), json!(to)] {
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/backup",
                Some(&platform),
                Some(json!({"to": to})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (_, log) = s
        .call(Method::GET, "/v1/audit", Some(&platform), None)
        .await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "backup"),
        "{log}"
    );
    s.shutdown().await;

    // The copy is a data directory: served, it runs the flow (unsealing the credential) with
    // the same tokens.
    let restored = Server::start(&to, runtime().clone(), ApiConfig::default()).await;
    let (status, run) = restored
        .call(
            Method::POST,
            &format!("/v1/flows/{flow}/runs"),
            Some(&admin),
            Some(json!({"restored": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["output"], json!({"restored": true}), "{run}");
    let (status, _) = restored
        .call(
            Method::POST,
            &format!("/v1/instances/{sealed}/invoke/echo"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    restored.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_scrapes_the_servers_series_and_no_connector_names() {
    let (s, _dir, platform) = server().await;
    let admin = new_org(&s, &platform, "acme").await;
    let instance = s.echo_instance(&admin, "acme").await;
    for _ in 0..3 {
        let (status, _) = s
            .call(
                Method::POST,
                &format!("/v1/instances/{instance}/invoke/echo"),
                Some(&admin),
                Some(json!({"a": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let scrape = |token: Option<&str>| {
        let mut request = s.client.get(format!("http://{}/metrics", s.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let answer = request.send().await.unwrap();
            (answer.status(), answer.text().await.unwrap())
        }
    };
    let (status, server) = scrape(Some(&platform)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        server.contains(r#"gantry_http_requests_total{route="/v1/instances/{id}/invoke/{operation}",status="200"} 3"#),
        "{server}"
    );
    assert!(server.contains("gantry_calls_in_flight 0"), "{server}");
    assert!(server.contains("gantry_connectors_loaded "), "{server}");
    let compiles = server
        .lines()
        .find_map(|l| l.strip_prefix("gantry_compiles_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{server}"));
    let hits = server
        .lines()
        .find_map(|l| l.strip_prefix("gantry_artifact_cache_hits_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{server}"));
    assert!(
        compiles + hits >= 1,
        "echo was loaded one way or the other: {server}"
    );
    assert!(!server.contains("echo"), "no connector named: {server}");
    assert!(!server.contains("acme"), "no organisation named: {server}");

    let (status, org) = scrape(Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(org.contains(r#"connector="echo""#), "{org}");
    assert!(
        !org.contains("gantry_http_requests_total"),
        "the server's series are the platform's: {org}"
    );
    let (status, _) = scrape(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[test]
fn a_tokens_last_use_is_written_when_flushed_and_survives_a_restart() {
    use gantry_host::model::{Page, Role};
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        gantry_host::Registry::open(
            gantry_host::RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                ..Default::default()
            },
            runtime().clone(),
        )
        .unwrap()
    };
    let registry = open();
    let (_, _, admin) = registry
        .create_organisation("test", "acme", "admin")
        .unwrap();
    let (info, secret) = registry
        .create_token("acme", "test", Role::Viewer, "ci", None)
        .unwrap();
    let last_used = |r: &gantry_host::Registry| {
        r.tokens(Some("acme"), &Page::default())
            .unwrap()
            .into_iter()
            .find(|t| t.id == info.id)
            .unwrap()
            .last_used_at
    };
    assert_eq!(last_used(&registry), None, "never used");
    assert!(registry.authenticate(&secret).unwrap().is_some());
    let used = last_used(&registry).expect("listed at once, before it is written");
    assert!(registry.authenticate(&admin).unwrap().is_some());
    registry.flush_token_use().unwrap();
    drop(registry);
    assert_eq!(last_used(&open()), Some(used), "written, and kept");
}

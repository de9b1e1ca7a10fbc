//! Several `gantry serve` nodes on one PostgreSQL database and one S3 bucket: what one node
//! publishes the others run; a rebind, a block or a revocation on one is followed by the
//! others' next calls within the documented bound; a node killed mid-publish leaves the others
//! the whole version or none of it; a database restart is ridden out.

use crate::services::{Cluster, S3_KEYS, postgres_schema, s3_bucket};
use crate::support::{Served, connector};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the tests give a change to reach another node: the documented bound (a lost
/// listening connection is noticed within 2 × the heartbeat) and room for a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

/// One node: a `gantry serve` on `database` and `blobs`, with its own data directory (artifact
/// cache), sealing secrets with `key` (the first node's, made on its first run, when `None`).
fn node(dir: &Path, database: &str, blobs: &str, key: Option<&Path>) -> Served {
    let mut args = vec![
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--no-demo",
        "--database",
        database,
        "--blobs",
        blobs,
    ];
    if let Some(key) = key {
        args.extend(["--secrets-key", key.to_str().unwrap()]);
    }
    Served::start_with_env(
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", S3_KEYS.0),
            ("AWS_SECRET_ACCESS_KEY", S3_KEYS.1),
            ("AWS_REGION", "us-east-1"),
        ],
    )
}

struct Api {
    client: Client,
}

impl Api {
    fn new() -> Self {
        Api {
            client: Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    async fn call(
        &self,
        node: &Served,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", node.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(
        &self,
        node: &Served,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> Value {
        let (status, body) = self.call(node, method, path, token, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn publish(
        &self,
        node: &Served,
        token: &str,
        name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> StatusCode {
        self.client
            .post(format!(
                "{}/v1/connectors/{name}/versions/{version}",
                node.url
            ))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// An organisation's admin token, made with the platform token.
    async fn org(&self, node: &Served, platform: &str, id: &str) -> String {
        let body = self
            .ok(node, Method::POST, "/v1/orgs", platform, json!({"id": id}))
            .await;
        body["admin"]["token"].as_str().unwrap().to_string()
    }

    /// Install `name@version` and make an instance of it; the instance's id.
    async fn instance(
        &self,
        node: &Served,
        admin: &str,
        org: &str,
        name: &str,
        version: &str,
    ) -> i64 {
        let install = self
            .ok(
                node,
                Method::POST,
                "/v1/installs",
                admin,
                json!({"org": org, "name": name, "version": version}),
            )
            .await;
        let instance = self
            .ok(
                node,
                Method::POST,
                "/v1/instances",
                admin,
                json!({"install": install["id"], "name": format!("{name}-{version}")}),
            )
            .await;
        instance["id"].as_i64().unwrap()
    }

    /// A flow `relay` of one step `e` echoing its input through `instance`; its id.
    async fn relay(&self, node: &Served, admin: &str, instance: i64) -> i64 {
        let steps =
            json!([{"name": "e", "instance": instance, "operation": "echo", "input": "${input}"}]);
        self.ok(
            node,
            Method::POST,
            "/v1/flows",
            admin,
            json!({"name": "relay", "steps": steps}),
        )
        .await["id"]
            .as_i64()
            .unwrap()
    }

    /// Block echo 1.0.0 of the admin's organisation.
    async fn block_echo(&self, node: &Served, admin: &str) {
        self.ok(
            node,
            Method::POST,
            "/v1/connectors/echo/versions/1.0.0/state",
            admin,
            json!({"state": "blocked"}),
        )
        .await;
    }

    async fn invoke(&self, node: &Served, token: &str, instance: i64) -> (StatusCode, Value) {
        self.call(
            node,
            Method::POST,
            &format!("/v1/instances/{instance}/invoke/echo"),
            token,
            Some(json!({"n": 1})),
        )
        .await
    }

    /// Poll `check` on `node` until it holds; how long that took (panics past [`BOUND`]).
    async fn until(&self, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !check().await {
            assert!(start.elapsed() < BOUND, "{what}: not within {BOUND:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    }
}

fn platform_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("platform.token"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_publishes_and_follow_each_others_changes() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (database, blobs) = (postgres_schema(), s3_bucket());
    let a = node(dirs.0.path(), &database, &blobs, None);
    let key = dirs.0.path().join("secrets.key");
    let b = node(dirs.1.path(), &database, &blobs, Some(&key));
    let api = Api::new();
    let platform = platform_token(dirs.0.path());
    assert!(
        !dirs.1.path().join("platform.token").exists(),
        "the second node finds the platform token the first made"
    );
    let admin = api.org(&b, &platform, "acme").await;

    // Published on A, installed, instantiated and called on B (its cache has never seen it).
    assert_eq!(
        api.publish(&a, &admin, "echo", "1.0.0", connector("echo"))
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        api.publish(&a, &admin, "echo", "2.0.0", connector("echo-v2"))
            .await,
        StatusCode::CREATED
    );
    let one = api.instance(&b, &admin, "acme", "echo", "1.0.0").await;
    let two = api.instance(&b, &admin, "acme", "echo", "2.0.0").await;
    let (status, out) = api.invoke(&b, &admin, one).await;
    assert_eq!(status, StatusCode::OK, "{out}");

    // A flow made on B runs on A; rebinding its step on A reaches B's next run.
    let flow = api.relay(&b, &admin, one).await;
    let run = |node| {
        let api = &api;
        let admin = &admin;
        async move {
            api.ok(
                node,
                Method::POST,
                &format!("/v1/flows/{flow}/runs"),
                admin,
                json!({"x": 1}),
            )
            .await
        }
    };
    assert_eq!(run(&a).await["steps"][0]["connector"], "acme/echo@1.0.0");
    assert_eq!(run(&b).await["steps"][0]["connector"], "acme/echo@1.0.0");
    api.ok(
        &a,
        Method::POST,
        &format!("/v1/flows/{flow}/steps/e/rebind"),
        &admin,
        json!({"instance": two}),
    )
    .await;
    let took = api
        .until("B runs the rebound step", async || {
            run(&b).await["steps"][0]["connector"] == "acme/echo@2.0.0"
        })
        .await;
    eprintln!("a rebind on A reached B's runs in {took:?}");

    // Blocked on A: B refuses its next calls.
    api.block_echo(&a, &admin).await;
    let took = api
        .until("B refuses the blocked version", async || {
            let (status, body) = api.invoke(&b, &admin, one).await;
            status == StatusCode::CONFLICT && body["error"]["code"] == "blocked"
        })
        .await;
    eprintln!("a block on A reached B's calls in {took:?}");

    // A token revoked on A is refused by B (which had it resolved and kept).
    let operator = api
        .ok(
            &a,
            Method::POST,
            "/v1/tokens",
            &admin,
            json!({"role": "operator", "label": "ci"}),
        )
        .await;
    let (id, token) = (
        operator["id"].as_i64().unwrap(),
        operator["token"].as_str().unwrap().to_string(),
    );
    let (status, _) = api.invoke(&b, &token, two).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            &a,
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            &admin,
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let took = api
        .until("B refuses the revoked token", async || {
            api.invoke(&b, &token, two).await.0 == StatusCode::UNAUTHORIZED
        })
        .await;
    eprintln!("a revocation on A reached B in {took:?}");

    for node in [&a, &b] {
        let (status, body) = api.call(node, Method::GET, "/readyz", &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A shared database is backed up with its own tools, not by one node.
    let (status, body) = api
        .call(
            &a,
            Method::POST,
            "/v1/backup",
            &platform,
            Some(json!({"to": "/tmp/gantry-nodes-backup"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("pg_dump"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_publish_leaves_the_whole_version_or_none() {
    let (database, blobs) = (postgres_schema(), s3_bucket());
    let dirs: Vec<_> = (0..9).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = node(dirs[0].path(), &database, &blobs, None);
    let key = dirs[0].path().join("secrets.key");
    let b = node(dirs[1].path(), &database, &blobs, Some(&key));
    let api = Api::new();
    let platform = platform_token(dirs[0].path());
    let mut seen = (0, 0);
    // Killed before the upload arrives, while it compiles, around the blob write and the
    // commit, and after: each time in an organisation of its own.
    for (n, delay_ms) in [0u64, 40, 80, 120, 170, 250, 600].into_iter().enumerate() {
        let org = format!("t{n}");
        let admin = api.org(&b, &platform, &org).await;
        let publish = {
            let (url, admin) = (a.url.clone(), admin.clone());
            tokio::spawn(async move {
                let _ = Client::new()
                    .post(format!("{url}/v1/connectors/echo/versions/1.0.0"))
                    .bearer_auth(admin)
                    .header("content-type", "application/wasm")
                    .body(connector("echo"))
                    .send()
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        a.child.kill().unwrap(); // SIGKILL: no drain, no clean-up
        let _ = a.child.wait();
        let _ = publish.await;
        // B sees the version whole (listed, and callable from the bytes in the bucket) or not
        // at all.
        let (status, listed) = api
            .call(
                &b,
                Method::GET,
                &format!("/v1/connectors/{org}/echo/versions"),
                &admin,
                None,
            )
            .await;
        let versions = listed.as_array().cloned().unwrap_or_default();
        match status {
            StatusCode::OK if !versions.is_empty() => {
                seen.0 += 1;
                let instance = api.instance(&b, &admin, &org, "echo", "1.0.0").await;
                let (status, body) = api.invoke(&b, &admin, instance).await;
                assert_eq!(status, StatusCode::OK, "{org}: {body}");
            }
            StatusCode::OK | StatusCode::NOT_FOUND => seen.1 += 1,
            other => panic!("{org}: {other}: {listed}"),
        }
        // The next A: a new process on the same stores.
        a = node(dirs[n + 2].path(), &database, &blobs, Some(&key));
    }
    eprintln!("killed mid-publish: {} whole, {} absent", seen.0, seen.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_ride_out_a_database_restart_under_load() {
    let cluster = Cluster::start();
    let blobs = s3_bucket();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dirs.0.path(), &cluster.url(), &blobs, None);
    let key = dirs.0.path().join("secrets.key");
    let b = node(dirs.1.path(), &cluster.url(), &blobs, Some(&key));
    let api = Api::new();
    let admin = api.org(&a, &platform_token(dirs.0.path()), "acme").await;
    assert_eq!(
        api.publish(&a, &admin, "echo", "1.0.0", connector("echo"))
            .await,
        StatusCode::CREATED
    );
    let instance = api.instance(&a, &admin, "acme", "echo", "1.0.0").await;
    let flow = api.relay(&a, &admin, instance).await;

    // Load on both nodes: calls (served from the pin table while it may be kept) and flow
    // runs (each recorded in the database). Every answer is a success or a clean 503.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused: [std::sync::Arc<std::sync::atomic::AtomicUsize>; 2] = Default::default();
    let load: Vec<_> = [a.url.clone(), b.url.clone()]
        .into_iter()
        .zip(refused.clone())
        .map(|(url, refused)| {
            let (stop, admin) = (stop.clone(), admin.clone());
            tokio::spawn(async move {
                let client = Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut answers = std::collections::BTreeMap::<u16, u32>::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for path in [
                        format!("/v1/instances/{instance}/invoke/echo"),
                        format!("/v1/flows/{flow}/runs"),
                    ] {
                        let response = client
                            .post(format!("{url}{path}"))
                            .bearer_auth(&admin)
                            .json(&json!({"n": 1}))
                            .send()
                            .await
                            .expect("the node answers");
                        let status = response.status();
                        let body = response.text().await.unwrap();
                        assert!(
                            status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
                            "{path}: {status} {body}"
                        );
                        *answers.entry(status.as_u16()).or_default() += 1;
                        if status == StatusCode::SERVICE_UNAVAILABLE {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.down();
    let ready = |node: &Served| {
        let url = format!("{}/readyz", node.url);
        let client = api.client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    };
    for node in [&a, &b] {
        api.until("readyz says the database is down", async || {
            ready(node).await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    }
    // Down until each node's load has been answered 503 (or 30 s: then a caller is stuck).
    let start = Instant::now();
    while refused
        .iter()
        .any(|r| r.load(std::sync::atomic::Ordering::Relaxed) == 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a node's callers got no answer while the database was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.up();
    let start = Instant::now();
    for node in [&a, &b] {
        loop {
            let run = api
                .call(
                    node,
                    Method::POST,
                    &format!("/v1/flows/{flow}/runs"),
                    &admin,
                    Some(json!({})),
                )
                .await;
            if run.0 == StatusCode::CREATED && ready(node).await == StatusCode::OK {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the node did not recover: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "both nodes recovered {:?} after the database came back",
        start.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let answers = task.await.unwrap();
        eprintln!("answers under the restart: {answers:?}");
    }

    // Each node hears the other again: a block on A reaches B.
    api.block_echo(&a, &admin).await;
    api.until(
        "B refuses the blocked version after the restart",
        async || api.invoke(&b, &admin, instance).await.0 == StatusCode::CONFLICT,
    )
    .await;
}

//! JSON bodies, path segments, query strings and tokens through the API's router, as a tenant
//! sends them: never a 5xx, every refusal a JSON error with a code, and no answer ever holding
//! a secret the fixture stored.
//!
//! One registry (a real SQLite file) for the whole run, as a server has: two organisations, the
//! `echo` sample published, installed, given an instance with a secret, and a flow over it.
//! Bodies are mostly the route's good body with fuzzed members, so that they reach the rules
//! behind the parser; the state they change stays changed for the next input. Not fuzzed here:
//! uploads (the `component` target), `POST /v1/backup` (it writes directories on the host's
//! machine), token revocation (it would lock the fuzzer out) and the console's forms.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use gantry_host::api::wire::path_segment;
use gantry_host::model::Role;
use gantry_host::{ApiConfig, Registry, RegistryConfig, Runtime, RuntimeConfig};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The instance's secret: no answer may ever contain it.
const SECRET: &str = "sk-fuzz-7f3a9c1e5b2d";

struct Fixture {
    executor: tokio::runtime::Runtime,
    router: axum::Router,
    /// Platform operator, acme's admin, acme's viewer, beta's admin.
    tokens: [String; 4],
    /// Ids of acme's install, instance and flow, then beta's install.
    ids: [i64; 4],
}

/// `method uri` through `router` with `token` and `body` of `content_type`: status and body.
async fn send(
    router: &axum::Router,
    (method, uri): (Method, &str),
    token: Option<&str>,
    (content_type, body): (&str, Vec<u8>),
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

/// `POST uri` with `body` as `token`, which must create something: its id.
async fn create(router: &axum::Router, token: &str, uri: &str, body: Value) -> i64 {
    let body = ("application/json", body.to_string().into_bytes());
    let (status, answer) = send(router, (Method::POST, uri), Some(token), body).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{uri}: {answer}");
    answer["id"].as_i64().unwrap()
}

/// acme's `echo` 1.0.0 (public), installed by acme and beta; acme's instance of it, with
/// [`SECRET`], and a recorded flow over it: the ids of acme's install, instance, flow and
/// beta's install.
async fn populate(router: &axum::Router, acme: &str, beta: &str, echo: Vec<u8>) -> [i64; 4] {
    let uri = "/v1/connectors/echo/versions/1.0.0?visibility=public";
    let upload = ("application/wasm", echo);
    let (status, answer) = send(router, (Method::POST, uri), Some(acme), upload).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let install = json!({"org": "acme", "name": "echo", "version": "1.0.0"});
    let acme_install = create(router, acme, "/v1/installs", install.clone()).await;
    let instance = json!({"install": acme_install, "name": "i", "secrets": {"token": SECRET}});
    let instance = create(router, acme, "/v1/instances", instance).await;
    let step = json!({"name": "e", "instance": instance, "operation": "echo", "input": "${input}"});
    let flow = json!({"name": "f", "steps": [step], "record": true});
    let flow = create(router, acme, "/v1/flows", flow).await;
    let beta_install = create(router, beta, "/v1/installs", install).await;
    [acme_install, instance, flow, beta_install]
}

/// A data directory of this process's own, in memory where there is a RAM disk (every change
/// is fsynced). libFuzzer ends a run with `exit`, which drops nothing: directories of runs that
/// have ended are removed here instead.
fn data_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(PREFIX) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(format!("{PREFIX}{}", std::process::id()));
    // Left by an ended run that had this process's id.
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const PREFIX: &str = "gantry-fuzz-api-";

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let echo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/sample-connectors/wasm32-wasip2/release/echo.wasm");
    let echo = std::fs::read(&echo)
        .unwrap_or_else(|e| panic!("{}: {e} (fuzz/run builds it)", echo.display()));
    let dir = data_dir();
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = {
        let _inside = executor.enter();
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: 16,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let config = RegistryConfig {
            data_dir: dir.clone(),
            ..RegistryConfig::default()
        };
        std::sync::Arc::new(Registry::open(config, runtime).unwrap())
    };
    let router = gantry_host::router(registry.clone(), ApiConfig::default());
    let tokens = [
        registry
            .create_platform_token("fuzz", "platform")
            .unwrap()
            .1,
        registry
            .create_organisation("fuzz", "acme", "admin")
            .unwrap()
            .2,
        registry
            .create_token("acme", "fuzz", Role::Viewer, "viewer", None)
            .unwrap()
            .1,
        registry
            .create_organisation("fuzz", "beta", "admin")
            .unwrap()
            .2,
    ];
    let ids = executor.block_on(populate(&router, &tokens[1], &tokens[3], echo));
    Fixture {
        executor,
        router,
        tokens,
        ids,
    }
});

#[derive(Arbitrary, Debug)]
enum Who {
    Platform,
    Admin,
    Viewer,
    OtherOrg,
    Nobody,
    Forged(String),
}

/// An id in a path: one of the fixture's, or any text.
#[derive(Arbitrary, Debug)]
enum Id {
    Known(u8),
    Number(i64),
    Text(String),
}

/// A name in a path (step, operation, organisation, connector, version).
#[derive(Arbitrary, Debug)]
enum Segment {
    Known(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Route {
    Orgs,
    OrgTokens(Segment),
    Tokens,
    State(Segment, Segment),
    Installs,
    Customise(Id),
    Outbound(Id),
    Update(Id),
    RebindInstall(Id),
    Instances,
    Secrets(Id),
    Invoke(Id, Segment),
    Flows,
    Run(Id),
    RebindStep(Id, Segment),
    Record(Id),
    Replay(Id, Segment),
    Canary(Id, Segment),
    Promote(Id, Segment),
    RollBack(Id, Segment),
    /// A listing or lookup, with a fuzzed query string.
    Get(u8, Id, Segment, Vec<(String, String)>),
}

/// A JSON value, recursive.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A fixture id or a name that exists.
    Known(u8),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    /// The route's good body, members replaced, added or removed.
    Edited(Vec<(Member, Option<Json>)>),
    Json(Json),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Member {
    Known(u8),
    Named(String),
}

#[derive(Arbitrary, Debug)]
struct Call {
    who: Who,
    route: Route,
    payload: Payload,
}

const NAMES: &[&str] = &[
    "acme",
    "beta",
    "echo",
    "1.0.0",
    "e",
    "context",
    "9.9.9",
    "public",
    "blocked",
    "deprecated",
    "active",
    "overwrite",
    "alongside",
    "viewer",
    "operator",
    "admin",
    "platform",
    "publisher",
    "token",
    "${input}",
    "${steps.e.output}",
    "customisations-lost",
];

fn name(known: u8) -> &'static str {
    NAMES[usize::from(known) % NAMES.len()]
}

impl Id {
    fn text(&self, f: &Fixture) -> String {
        match self {
            Id::Known(i) => f.ids[usize::from(*i) % f.ids.len()].to_string(),
            Id::Number(n) => n.to_string(),
            Id::Text(t) => path_segment(t),
        }
    }
}

impl Segment {
    fn text(&self) -> String {
        match self {
            Segment::Known(i) => path_segment(name(*i)),
            Segment::Text(t) => path_segment(t),
        }
    }
}

impl Json {
    fn value(&self, f: &Fixture) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(n) => json!(n),
            Json::Float(x) => json!(x),
            Json::Text(t) => json!(t),
            Json::Known(i) if i % 2 == 0 => json!(f.ids[usize::from(i / 2) % f.ids.len()]),
            Json::Known(i) => json!(name(*i)),
            Json::Array(items) => Value::Array(items.iter().map(|j| j.value(f)).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, j)| (k.clone(), j.value(f)))
                    .collect(),
            ),
        }
    }
}

/// The method, path and good body of `route`.
fn request(route: &Route, f: &Fixture) -> (Method, String, Value) {
    let [install, instance, _, _] = f.ids;
    let candidate = json!({"candidate": {"instance": instance, "version": "1.0.0"}});
    match route {
        Route::Orgs => (
            Method::POST,
            "/v1/orgs".into(),
            json!({"id": "gamma", "admin_label": "a"}),
        ),
        Route::OrgTokens(org) => (
            Method::POST,
            format!("/v1/orgs/{}/tokens", org.text()),
            json!({"role": "admin", "label": "x", "expires_in_secs": 60}),
        ),
        Route::Tokens => (
            Method::POST,
            "/v1/tokens".into(),
            json!({"role": "viewer", "label": "x"}),
        ),
        Route::State(name, version) => (
            Method::POST,
            format!(
                "/v1/connectors/{}/versions/{}/state",
                name.text(),
                version.text()
            ),
            json!({"state": "deprecated"}),
        ),
        Route::Installs => (
            Method::POST,
            "/v1/installs".into(),
            json!({"org": "acme", "name": "echo", "version": "1.0.0"}),
        ),
        Route::Customise(id) => (
            Method::PUT,
            format!("/v1/installs/{}/customisations", id.text(f)),
            json!({"greeting": "hi"}),
        ),
        Route::Outbound(id) => (
            Method::PUT,
            format!("/v1/installs/{}/outbound", id.text(f)),
            json!(["https://api.example.com"]),
        ),
        Route::Update(id) => (
            Method::POST,
            format!("/v1/installs/{}/update", id.text(f)),
            json!({"version": "1.0.0", "mode": "alongside", "acknowledge": []}),
        ),
        Route::RebindInstall(id) => (
            Method::POST,
            format!("/v1/installs/{}/rebind", id.text(f)),
            json!({"instance": instance}),
        ),
        Route::Instances => (
            Method::POST,
            "/v1/instances".into(),
            json!({"install": install, "name": "n", "config": {"greeting": "x"}, "secrets": {"token": "t"}}),
        ),
        Route::Secrets(id) => (
            Method::PUT,
            format!("/v1/instances/{}/secrets", id.text(f)),
            json!({"token": "t2"}),
        ),
        Route::Invoke(id, operation) => (
            Method::POST,
            format!("/v1/instances/{}/invoke/{}", id.text(f), operation.text()),
            json!({"message": "hi"}),
        ),
        Route::Flows => (
            Method::POST,
            "/v1/flows".into(),
            json!({"name": "g", "steps": [{"name": "a", "instance": instance, "operation": "echo",
                "input": {"x": "${input.x}"}}, {"name": "b", "instance": instance,
                "operation": "echo", "input": "${steps.a.output}"}]}),
        ),
        Route::Run(id) => (
            Method::POST,
            format!("/v1/flows/{}/runs", id.text(f)),
            json!({"x": 1}),
        ),
        Route::RebindStep(id, step) => (
            Method::POST,
            format!("/v1/flows/{}/steps/{}/rebind", id.text(f), step.text()),
            json!({"instance": instance}),
        ),
        Route::Record(id) => (
            Method::PUT,
            format!("/v1/flows/{}/record", id.text(f)),
            json!({"record": true}),
        ),
        Route::Replay(id, step) => (
            Method::POST,
            format!("/v1/flows/{}/steps/{}/replay", id.text(f), step.text()),
            json!({"candidate": {"instance": instance}, "count": 3}),
        ),
        Route::Canary(id, step) => {
            let mut body = candidate;
            body["percent"] = json!(50);
            body["max_error_rate"] = json!(0.1);
            body["min_runs"] = json!(5);
            let uri = format!("/v1/flows/{}/steps/{}/canary", id.text(f), step.text());
            (Method::POST, uri, body)
        }
        Route::Promote(id, step) => (
            Method::POST,
            format!(
                "/v1/flows/{}/steps/{}/canary/promote",
                id.text(f),
                step.text()
            ),
            json!({}),
        ),
        Route::RollBack(id, step) => (
            Method::POST,
            format!(
                "/v1/flows/{}/steps/{}/canary/rollback",
                id.text(f),
                step.text()
            ),
            json!({}),
        ),
        Route::Get(which, id, segment, query) => {
            let (id, segment) = (id.text(f), segment.text());
            let path = match which % 14 {
                0 => "/v1/marketplace".into(),
                1 => format!("/v1/connectors/{segment}/echo/versions"),
                2 => format!("/v1/connectors/acme/echo/versions/{segment}/usage"),
                3 => "/v1/installs".into(),
                4 => format!("/v1/installs/{id}"),
                5 => format!("/v1/installs/{id}/update-plan"),
                6 => format!("/v1/installs/{id}/usage"),
                7 => "/v1/instances".into(),
                8 => format!("/v1/flows/{id}/runs"),
                9 => format!("/v1/flows/{id}/steps/{segment}/recordings"),
                10 => format!("/v1/flows/{id}/steps/{segment}/canary"),
                11 => "/v1/audit".into(),
                12 => "/v1/tokens".into(),
                _ => "/v1/orgs".into(),
            };
            let query: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", path_segment(k), path_segment(v)))
                .collect();
            (
                Method::GET,
                format!("{path}?{}", query.join("&")),
                Value::Null,
            )
        }
    }
}

// The fixture is made before the first input, outside libFuzzer's per-input timeout.
fuzz_target!(init: LazyLock::force(&FIXTURE), |call: Call| {
    let f = &*FIXTURE;
    let (method, uri, mut good) = request(&call.route, f);
    let body = match &call.payload {
        _ if method == Method::GET => Vec::new(),
        Payload::Edited(edits) => {
            for (member, value) in edits {
                let Some(object) = good.as_object_mut() else {
                    break;
                };
                let key = match member {
                    Member::Known(i) if !object.is_empty() => object
                        .keys()
                        .nth(usize::from(*i) % object.len())
                        .unwrap()
                        .clone(),
                    Member::Known(i) => name(*i).to_string(),
                    Member::Named(key) => key.clone(),
                };
                match value {
                    Some(value) => object.insert(key, value.value(f)),
                    None => object.remove(&key),
                };
            }
            good.to_string().into_bytes()
        }
        Payload::Json(value) => value.value(f).to_string().into_bytes(),
        Payload::Raw(bytes) => bytes.clone(),
    };
    let token = match &call.who {
        Who::Platform => Some(f.tokens[0].as_str()),
        Who::Admin => Some(f.tokens[1].as_str()),
        Who::Viewer => Some(f.tokens[2].as_str()),
        Who::OtherOrg => Some(f.tokens[3].as_str()),
        Who::Nobody => None,
        Who::Forged(token) => Some(token.as_str()),
    };
    // A token that is no header value cannot be sent (the client library refuses it).
    if token.is_some_and(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).is_err()) {
        return;
    }
    let request = (method.clone(), uri.as_str());
    let body = ("application/json", body);
    let (status, answer) = f.executor.block_on(send(&f.router, request, token, body));
    let text = String::from_utf8_lossy(&answer);
    assert!(!status.is_server_error(), "{method} {uri}: {status} {text}");
    assert!(
        !text.contains(SECRET),
        "{method} {uri}: the secret in {text}"
    );
    if status.is_client_error() {
        let error: Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} not JSON ({e}): {text}"));
        assert!(
            error["error"]["code"].is_string(),
            "{method} {uri}: {status} {text}"
        );
    }
});

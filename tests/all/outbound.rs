//! Outbound HTTP under policy, through both paths: `worldbank` (the world's `http.send`) and
//! `rest-json` (wasi:http via `wstd`), against stand-in servers on 127.0.0.1.

use crate::support::{captured_logs, connector, json};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_host::runtime::ConnectorError;
use gantry_host::sandbox::OutboundConfig;
use gantry_host::{CallContext, CallError, Limits, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Requests a stand-in server has seen (method and path).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn record(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn countries() -> Vec<Value> {
    let country = |id: &str, iso2: &str, name: &str, region: &str, income: &str, capital: &str| {
        json!({"id": id, "iso2Code": iso2, "name": name,
               "region": {"id": "X", "iso2code": "X", "value": region},
               "adminregion": {"id": "", "iso2code": "", "value": ""},
               "incomeLevel": {"id": "X", "iso2code": "X", "value": income},
               "lendingType": {"id": "X", "iso2code": "X", "value": "Not classified"},
               "capitalCity": capital, "longitude": "-47.9292", "latitude": "-15.7801"})
    };
    vec![
        country(
            "ABW",
            "AW",
            "Aruba",
            "Latin America & Caribbean ",
            "High income",
            "Oranjestad",
        ),
        country(
            "BRA",
            "BR",
            "Brazil",
            "Latin America & Caribbean ",
            "Upper middle income",
            "Brasilia",
        ),
        country(
            "KEN",
            "KE",
            "Kenya",
            "Sub-Saharan Africa ",
            "Lower middle income",
            "Nairobi",
        ),
    ]
}

async fn country_list(
    State(seen): State<Seen>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    seen.record(format!(
        "GET /v2/country?page={}",
        q.get("page").cloned().unwrap_or_default()
    ));
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(50);
    let all = countries();
    let records: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    let pages = all.len().div_ceil(per_page);
    axum::Json(json!([{"page": page, "pages": pages, "per_page": per_page.to_string(), "total": all.len()}, records]))
        .into_response()
}

async fn country_one(State(seen): State<Seen>, Path(code): Path<String>) -> Response {
    seen.record(format!("GET /v2/country/{code}"));
    match countries()
        .into_iter()
        .find(|c| c["id"] == code.to_uppercase())
    {
        Some(c) => axum::Json(json!([{"page": 1, "pages": 1, "per_page": "50", "total": 1}, [c]]))
            .into_response(),
        None => axum::Json(json!([{"message": [{"id": "120", "key": "Invalid value",
            "value": "The provided parameter value is not valid"}]}]))
        .into_response(),
    }
}

async fn indicator(
    State(seen): State<Seen>,
    Path((code, ind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    seen.record(format!("GET /v2/country/{code}/indicator/{ind}"));
    let (from, to) = q
        .get("date")
        .and_then(|d| d.split_once(':'))
        .map(|(a, b)| (a.parse::<i32>().unwrap(), b.parse::<i32>().unwrap()))
        .unwrap_or((2000, 2002));
    let points: Vec<Value> = (from..=to)
        .rev()
        .map(|year| json!({"indicator": {"id": ind, "value": "GDP (current US$)"},
            "country": {"id": "BR", "value": "Brazil"}, "countryiso3code": code, "date": year.to_string(),
            "value": if year == 2001 { Value::Null } else { json!(1000.0 * year as f64) },
            "unit": "", "obs_status": "", "decimal": 0}))
        .collect();
    axum::Json(
        json!([{"page": 1, "pages": 1, "per_page": 50, "total": points.len(),
        "sourceid": "2", "lastupdated": "2026-10-01"}, points]),
    )
    .into_response()
}

/// A World Bank stand-in at `/v2`, plus broken variants and misbehaving endpoints.
fn stand_in(seen: Seen, redirect_to: Option<SocketAddr>) -> Router {
    let wb = Router::new()
        .route("/country", get(country_list))
        .route("/country/{code}", get(country_one))
        .route("/country/{code}/indicator/{ind}", get(indicator));
    let record = |seen: &Seen, path: &str| seen.record(format!("GET {path}"));
    let (s1, s2, s3, s4, s5, s6, s7) = (
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
        seen.clone(),
    );
    Router::new()
        .nest("/v2", wb.clone())
        .route(
            "/missing/v2/country/{c}",
            get(move || {
                record(&s1, "/missing");
                async { StatusCode::NOT_FOUND }
            }),
        )
        .route(
            "/broken/v2/country/{c}",
            get(move || {
                record(&s2, "/broken");
                async { StatusCode::INTERNAL_SERVER_ERROR }
            }),
        )
        .route(
            "/garbage/v2/country/{c}",
            get(move || {
                record(&s3, "/garbage");
                async { "<html>oops</html>" }
            }),
        )
        .route(
            "/hang",
            get(move || {
                record(&s4, "/hang");
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }
            }),
        )
        .route(
            "/endless/v2/country/{c}",
            get(move || {
                record(&s5, "/endless");
                async { endless() }
            }),
        )
        .route(
            "/headers",
            get(move |headers: HeaderMap| {
                record(&s6, "/headers");
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    axum::Json(json!({"authorization": auth}))
                }
            }),
        )
        .route(
            "/host",
            get(move |headers: HeaderMap| {
                record(&s7, "/host");
                async move {
                    let header = |name: &str| {
                        headers
                            .get_all(name)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .collect::<Vec<_>>()
                    };
                    axum::Json(
                        json!({"host": header("host"), "connection": header("connection"),
                        "proxy-authorization": header("proxy-authorization")}),
                    )
                }
            }),
        )
        .route(
            "/redirect",
            get(move || async move {
                let target = redirect_to
                    .map(|a| format!("http://{a}/secret"))
                    .unwrap_or_default();
                (StatusCode::FOUND, [("location", target)], "")
            }),
        )
        .with_state(seen)
}

fn endless() -> Response {
    Response::new(axum::body::Body::new(Repeat(bytes::Bytes::from(
        vec![b'x'; 64 << 10],
    ))))
}

/// A response body that never ends.
struct Repeat(bytes::Bytes);

impl http_body::Body for Repeat {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.0.clone()))))
    }
}

struct Server {
    addr: SocketAddr,
    seen: Seen,
}

async fn serve(redirect_to: Option<SocketAddr>) -> Server {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = stand_in(seen.clone(), redirect_to);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, seen }
}

/// A runtime with a 1 MiB response cap (the calls of [`ctx`] may reach 127.0.0.1, where the
/// stand-ins are).
fn loopback_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 32,
            outbound: OutboundConfig {
                max_response_bytes: 1 << 20,
                ..OutboundConfig::default()
            },
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn ctx(config: &[(&str, String)], secrets: &[(&str, &str)], grants: &[&str]) -> CallContext {
    CallContext {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        secrets: gantry_host::sandbox::Secrets::new(
            secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        limits: None,
        outbound: grants.iter().map(|g| g.to_string()).collect(),
        allow_private: vec!["127.0.0.1".parse().unwrap()],
        tape: None,
    }
}

async fn worldbank(
    rt: &Runtime,
    base: String,
    grants: &[&str],
    op: &str,
    input: Value,
) -> Result<Value, CallError> {
    let c = rt.load(&connector("worldbank")).await.unwrap();
    rt.invoke(
        &c,
        op,
        &input.to_string(),
        &ctx(&[("base_url", base)], &[], grants),
    )
    .await
    .map(|out| json(&out.output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worldbank_reads_real_shaped_answers() {
    let logs = captured_logs();
    let server = serve(None).await;
    let rt = loopback_runtime();
    let base = format!("http://{}/v2", server.addr);
    let grant = ["http://127.0.0.1:*"];

    let page1 = worldbank(
        rt,
        base.clone(),
        &grant,
        "countries",
        json!({"per_page": 2}),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            page1["page"].clone(),
            page1["pages"].clone(),
            page1["total"].clone(),
            page1["per_page"].clone()
        ),
        (json!(1), json!(2), json!(3), json!(2))
    );
    assert_eq!(page1["countries"][1]["name"], "Brazil");
    assert_eq!(page1["countries"][1]["region"], "Latin America & Caribbean");
    let page2 = worldbank(
        rt,
        base.clone(),
        &grant,
        "countries",
        json!({"page": 2, "per_page": 2}),
    )
    .await
    .unwrap();
    assert_eq!(page2["countries"].as_array().unwrap().len(), 1);
    assert_eq!(page2["countries"][0]["id"], "KEN");

    let brazil = worldbank(rt, base.clone(), &grant, "country", json!({"code": "bra"}))
        .await
        .unwrap();
    assert_eq!(brazil["capital"], "Brasilia");
    assert_eq!(brazil["income_level"], "Upper middle income");

    let gdp = worldbank(
        rt,
        base.clone(),
        &grant,
        "indicator",
        json!({"country": "BRA", "indicator": "NY.GDP.MKTP.CD", "date": "2000:2002"}),
    )
    .await
    .unwrap();
    assert_eq!(gdp["total"], 3);
    assert_eq!(
        gdp["indicator"],
        json!({"id": "NY.GDP.MKTP.CD", "name": "GDP (current US$)"})
    );
    assert_eq!(
        gdp["points"],
        json!([
        {"date": "2002", "value": 2002000.0}, {"date": "2001", "value": null}, {"date": "2000", "value": 2000000.0}])
    );

    let err = worldbank(rt, base.clone(), &grant, "country", json!({"code": "XYZ"}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Guest(ConnectorError::NotFound(_))),
        "{err}"
    );
    let err = worldbank(
        rt,
        base.clone(),
        &grant,
        "indicator",
        json!({"country": "BRA", "indicator": "X", "date": "20:1"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m.starts_with("at `/date`")),
        "{err}"
    );

    // The guest's log lines reach the host's log, tagged with connector, digest and call id.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("gantry::guest") && l.contains("GET country/BRA"))
        .expect("the guest's debug line was logged");
    assert!(line.contains("connector=\"worldbank@1.0.0\""), "{line}");
    assert!(
        line.contains("digest=\"sha256:") && line.contains("call="),
        "{line}"
    );

    let prefixed = |p: &str| format!("http://{}/{p}/v2", server.addr);
    let err = worldbank(
        rt,
        prefixed("missing"),
        &grant,
        "country",
        json!({"code": "BRA"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CallError::Guest(ConnectorError::NotFound(_))),
        "404: {err}"
    );
    let err = worldbank(
        rt,
        prefixed("broken"),
        &grant,
        "country",
        json!({"code": "BRA"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::Upstream(m)) if m.contains("500")),
        "500: {err}"
    );
    let err = worldbank(
        rt,
        prefixed("garbage"),
        &grant,
        "country",
        json!({"code": "BRA"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::Upstream(m)) if m.contains("not JSON")),
        "garbage: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_host_is_refused_logged_and_never_contacted() {
    let logs = captured_logs();
    let server = serve(None).await;
    let base = format!("http://{}/v2", server.addr);
    // Declared by the connector, but not granted to this call.
    let err = worldbank(
        loopback_runtime(),
        base.clone(),
        &[],
        "country",
        json!({"code": "BRA"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::Upstream(m)) if m.contains("not granted")),
        "{err}"
    );
    // Granted, but the operator does not allow this call loopback addresses.
    let c = loopback_runtime()
        .load(&connector("worldbank"))
        .await
        .unwrap();
    let strict = CallContext {
        allow_private: Vec::new(),
        ..ctx(&[("base_url", base)], &[], &["http://127.0.0.1:*"])
    };
    let err = loopback_runtime()
        .invoke(&c, "country", r#"{"code":"BRA"}"#, &strict)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::Upstream(m)) if m.contains("loopback")),
        "{err}"
    );
    assert!(
        server.seen.all().is_empty(),
        "nothing was sent: {:?}",
        server.seen.all()
    );
    assert!(
        logs.text().contains("outbound request denied"),
        "the host logs the denial"
    );
}

async fn rest(rt: &Runtime, base: String, grants: &[&str], path: &str) -> Result<Value, CallError> {
    rest_in(rt, base, grants, path, true).await
}

/// `rest-json`'s `get` of `path`; `loopback`: whether the call may reach 127.0.0.1.
async fn rest_in(
    rt: &Runtime,
    base: String,
    grants: &[&str],
    path: &str,
    loopback: bool,
) -> Result<Value, CallError> {
    let c = rt.load(&connector("rest-json")).await.unwrap();
    let mut context = ctx(
        &[("base_url", base)],
        &[("api_key", "k3y-for-tests")],
        grants,
    );
    if !loopback {
        context.allow_private.clear();
    }
    rt.invoke(&c, "get", &json!({"path": path}).to_string(), &context)
        .await
        .map(|out| json(&out.output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_http_through_wstd_works_under_the_same_policy() {
    let logs = captured_logs();
    let target = serve(None).await;
    let server = serve(Some(target.addr)).await;
    let rt = loopback_runtime();
    let base = format!("http://{}", server.addr);

    let out = rest(rt, base.clone(), &["http://127.0.0.1:*"], "/headers")
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"status": 200, "body": {"authorization": "Bearer k3y-for-tests"}})
    );

    // A redirect to another (ungranted) server is handed to the guest, not followed.
    let out = rest(
        rt,
        base.clone(),
        &[&format!("http://{}", server.addr)],
        "/redirect",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], 302);
    assert!(
        target.seen.all().is_empty(),
        "the redirect target saw nothing"
    );

    let refused = |result: Result<Value, CallError>| {
        let err = result.unwrap_err();
        assert!(
            matches!(err, CallError::Guest(ConnectorError::Upstream(_))),
            "{err}"
        );
    };
    refused(rest(rt, base.clone(), &[], "/headers").await);
    refused(
        rest(
            rt,
            "http://169.254.169.254".into(),
            &["*"],
            "/latest/meta-data/",
        )
        .await,
    );
    refused(
        rest(
            rt,
            format!("http://[::ffff:127.0.0.1]:{}", server.addr.port()),
            &["*"],
            "/headers",
        )
        .await,
    );
    // Loopback not allowed for this call: refused by name and by address.
    refused(
        rest_in(
            rt,
            format!("http://localhost:{}", server.addr.port()),
            &["*"],
            "/headers",
            false,
        )
        .await,
    );
    refused(
        rest_in(
            rt,
            format!("http://127.0.0.1:{}", server.addr.port()),
            &["*"],
            "/headers",
            false,
        )
        .await,
    );
    assert_eq!(
        server.seen.all(),
        vec!["GET /headers".to_string()],
        "only the granted call arrived"
    );
    assert!(
        !logs.text().contains("k3y-for-tests"),
        "the API key is in no log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_body_is_refused() {
    let server = serve(None).await;
    let rt = loopback_runtime();
    let c = rt.load(&connector("rest-json")).await.unwrap();
    let context = ctx(
        &[("base_url", format!("http://{}", server.addr))],
        &[],
        &["http://127.0.0.1:*"],
    );
    let input = json!({"path": "/headers", "body": "x".repeat(5 << 20)}).to_string();
    let err = rt.invoke(&c, "post", &input, &context).await.unwrap_err();
    assert!(
        matches!(err, CallError::Guest(ConnectorError::Upstream(_))),
        "{err}"
    );
    assert!(
        server.seen.all().is_empty(),
        "nothing arrived: {:?}",
        server.seen.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_endless_upstream_cannot_hold_the_call() {
    let server = serve(None).await;
    let rt = loopback_runtime();
    let grant = ["http://127.0.0.1:*"];

    let c = rt.load(&connector("rest-json")).await.unwrap();
    let mut context = ctx(
        &[("base_url", format!("http://{}", server.addr))],
        &[],
        &grant,
    );
    context.limits = Some(Limits {
        wall_time: Duration::from_millis(500),
        ..Limits::default()
    });
    let started = std::time::Instant::now();
    let err = rt
        .invoke(&c, "get", r#"{"path":"/hang"}"#, &context)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // http.send path: the response cap ends an endless body.
    let err = worldbank(
        rt,
        format!("http://{}/endless/v2", server.addr),
        &grant,
        "country",
        json!({"code": "BRA"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest(ConnectorError::Upstream(m)) if m.contains("too large")),
        "{err}"
    );
    // wasi:http path: the body stream fails at the cap.
    let c = rt.load(&connector("rest-json")).await.unwrap();
    let context = ctx(
        &[("base_url", format!("http://{}", server.addr))],
        &[],
        &grant,
    );
    let err = rt
        .invoke(&c, "get", r#"{"path":"/endless/v2/country/x"}"#, &context)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Guest(ConnectorError::Upstream(_))),
        "{err}"
    );

    // The host is healthy afterwards.
    let echo = rt.load(&connector("echo")).await.unwrap();
    assert!(
        rt.invoke(&echo, "echo", "{}", &CallContext::default())
            .await
            .is_ok()
    );
}

/// A call of `name`'s `operation` on `input`, allowed to reach 127.0.0.1 anywhere.
async fn loopback_call(name: &str, operation: &str, input: Value) -> Result<Value, CallError> {
    let rt = loopback_runtime();
    let c = rt.load(&connector(name)).await.unwrap();
    rt.invoke(
        &c,
        operation,
        &input.to_string(),
        &ctx(&[], &[], &["http://127.0.0.1:*"]),
    )
    .await
    .map(|out| json(&out.output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_refuse_a_guests_host_and_hop_by_hop_headers() {
    let server = serve(None).await;
    let url = format!("http://{}/host", server.addr);
    // http.send: every header wasi:http refuses is refused here too, and nothing is sent.
    for header in 0..4 {
        let out = loopback_call(
            "header-smuggler",
            "send",
            json!({"url": url, "header": header}),
        )
        .await
        .unwrap();
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("InvalidRequest") && error.contains("may not be set"),
            "header {header}: {out}"
        );
    }
    assert!(server.seen.all().is_empty(), "{:?}", server.seen.all());
    // Without them the request goes through, and the upstream sees the URL's host.
    let out = loopback_call("header-smuggler", "send", json!({"url": url}))
        .await
        .unwrap();
    assert_eq!(out["status"], 200, "{out}");
    let seen = json(out["body"].as_str().unwrap());
    assert_eq!(
        seen,
        json!({"host": [format!("127.0.0.1:{}", server.addr.port())], "connection": [],
            "proxy-authorization": []})
    );
    // wasi:http refuses the same headers.
    let out = loopback_call("header-smuggler", "wasi", json!({}))
        .await
        .unwrap();
    let refused: Vec<bool> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["refused"].as_bool().unwrap())
        .collect();
    assert_eq!(refused, vec![true; 4], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_at_most_its_share_of_connections() {
    // An upstream that accepts connections and never answers, keeping each one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let started = std::time::Instant::now();
    let err = loopback_call(
        "conn-hog",
        "run",
        json!({"authority": addr.to_string(), "count": 50}),
    )
    .await
    .unwrap_err();
    let cap = Limits::default().connections;
    assert_eq!(
        err,
        CallError::ResourceLimit {
            resource: gantry_host::sandbox::Resource::Connections,
            limit: cap.into()
        },
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call ends when it runs out, not at a timeout: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let streams = std::mem::take(&mut *held.lock().unwrap());
    // (Often none: the call ends before its first connections are made.)
    assert!(
        streams.len() <= cap as usize,
        "{} connections arrived; the cap is {cap}",
        streams.len()
    );
    // The call's connections were closed with it.
    for stream in streams {
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a connection of the failed call stayed open"
        );
    }
}

/// An upstream that answers each request with `body` and closes the connection right after,
/// as HTTP/1.0 servers and `Connection: close` answers do; `length`: whether it says how long
/// the body is (else the close ends it).
async fn closing_upstream(body: &'static str, length: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = if length {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}")
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_after_a_complete_response_is_read() {
    for length in [true, false] {
        let addr = closing_upstream(r#"{"ok":true}"#, length).await;
        for _ in 0..20 {
            // http.send
            let out = loopback_call(
                "header-smuggler",
                "send",
                json!({"url": format!("http://{addr}/")}),
            )
            .await
            .unwrap();
            assert_eq!(
                out,
                json!({"status": 200, "body": r#"{"ok":true}"#}),
                "{length}"
            );
            // wasi:http
            let out = rest(
                loopback_runtime(),
                format!("http://{addr}"),
                &["http://127.0.0.1:*"],
                "/",
            )
            .await
            .unwrap();
            assert_eq!(
                out,
                json!({"status": 200, "body": {"ok": true}}),
                "{length}"
            );
        }
    }
}

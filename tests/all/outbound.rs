//! Outbound HTTP under policy, through both paths: `worldbank` (the world's `http.send`) and
//! `rest-json` (wasi:http via `wstd`), against stand-in servers on 127.0.0.1.

use crate::support::{captured_logs, connector, json};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_host::{
    CallContext, CallError, ConnectorError, Limits, OutboundConfig, Runtime, RuntimeConfig,
};
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
    let (s1, s2, s3, s4, s5, s6) = (
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

/// A runtime whose operator allows 127.0.0.1 (the stand-ins), with a 1 MiB response cap.
fn loopback_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 32,
            outbound: OutboundConfig {
                allow_private: vec!["127.0.0.1".parse().unwrap()],
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
        secrets: gantry_host::Secrets::new(
            secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        limits: None,
        outbound: grants.iter().map(|g| g.to_string()).collect(),
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
        matches!(err, CallError::Guest(ConnectorError::InvalidInput(_))),
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
    // Granted, but the operator does not allow loopback addresses.
    let strict = crate::support::runtime();
    let err = worldbank(
        strict,
        base,
        &["http://127.0.0.1:*"],
        "country",
        json!({"code": "BRA"}),
    )
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
    let c = rt.load(&connector("rest-json")).await.unwrap();
    let context = ctx(
        &[("base_url", base)],
        &[("api_key", "k3y-for-tests")],
        grants,
    );
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
    let strict = crate::support::runtime();
    refused(
        rest(
            strict,
            format!("http://localhost:{}", server.addr.port()),
            &["*"],
            "/headers",
        )
        .await,
    );
    refused(
        rest(
            strict,
            format!("http://127.0.0.1:{}", server.addr.port()),
            &["*"],
            "/headers",
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

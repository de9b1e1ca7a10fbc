//! The HTTP API (`/v1`, JSON, bearer tokens) over a [`Registry`]: one axum [`Router`], one
//! [`ApiError`] shape (`{"error": {"code", "message"}}`) for every failure, `/healthz` and
//! Prometheus `/metrics`.
//!
//! Another organisation's private objects answer 404 exactly like missing ones (the registry
//! scopes every lookup). 5xx details are logged, never returned.

use crate::auth::{Principal, Role};
use crate::call::CallError;
use crate::capability::LogLine;
use crate::digest::Digest;
use crate::flow::{Flow, Run, StepSpec};
use crate::registry::{
    AuditEntry, Error as RegistryError, Install, Instance, Listing, Page, PublishRequest, Registry,
    Search, UpdateMode, VersionInfo, VersionState, Visibility,
};
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest component upload, in bytes (413 beyond it, before the body is read past it).
    pub max_upload_bytes: usize,
    /// Largest JSON body, in bytes.
    pub max_json_bytes: usize,
    /// Calls (invokes and flow runs) in flight at once; 429 beyond.
    pub max_concurrent_calls: usize,
    /// Calls in flight at once of any one organisation; 429 beyond.
    pub max_calls_per_org: usize,
    /// Longest a client may take to send a request body.
    pub body_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 32 << 20,
            max_json_bytes: 4 << 20,
            max_concurrent_calls: 64,
            max_calls_per_org: 16,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Every error the API returns: a status and a stable machine code with a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "internal error");
            "internal error; see the server log".to_string()
        } else {
            self.message
        };
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": message}})),
        )
            .into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_)
            | E::Deprecated(_)
            | E::Blocked(_)
            | E::AcknowledgementRequired(_)
            | E::PublicPermanent(_) => StatusCode::CONFLICT,
            E::InvalidName { .. }
            | E::InvalidVersion(_)
            | E::InvalidInput(_)
            | E::DescribeMismatch { .. }
            | E::UngrantedImports(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Load(crate::LoadError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            E::Load(crate::LoadError::CompilerBusy(_)) => StatusCode::TOO_MANY_REQUESTS,
            E::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Storage(_) | E::SecretsKey(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            _ => "bad-request",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too-large"
        } else {
            "bad-request"
        };
        ApiError::new(status, code, r.body_text())
    }
}

fn call_error(e: CallError) -> ApiError {
    let status = match &e {
        CallError::UnknownOperation { .. } => StatusCode::NOT_FOUND,
        CallError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        CallError::Guest(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CallError::CpuDeadline { .. } | CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let message = match &e {
        CallError::Guest(guest) => {
            serde_json::to_string(guest).unwrap_or_else(|_| guest.to_string())
        }
        other => other.to_string(),
    };
    ApiError {
        status,
        code: e.code(),
        message,
    }
}

/// The body of every error response.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not-found`, `conflict`, `acknowledgement-required`.
    code: String,
    message: String,
}

/// The OpenAPI document of this API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Gantry", description = "A WebAssembly host for integration connectors"),
    paths(metrics, publish, delete_version, set_state, marketplace, versions, install, installs,
        get_install, customise, grant_outbound, update, rebind_install, create_instance, instances,
        get_instance, invoke, create_flow, flows, get_flow, run_flow, runs, rebind_step, audit_log,
        create_token),
    components(schemas(ErrorBody, ErrorDetail, crate::connector::Description, crate::connector::Summary)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// JSON bodies, with rejections in the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct ApiJson<T>(T);

/// The caller, from `Authorization: Bearer <token>`, holding at least the role `R` names.
///
/// The role is checked here, with the request's head, before any extractor reads the body: a
/// token without the role gets its 403 without its upload being read.
struct Caller<R>(Principal, std::marker::PhantomData<R>);

/// The role a route needs, as a type ([`Caller`]'s parameter).
trait Needs {
    const ROLE: Role;
}

/// Marker types for [`Caller`]: the role each route needs.
struct Admin;
struct Publisher;
struct Operator;
struct Viewer;

impl Needs for Admin {
    const ROLE: Role = Role::Admin;
}
impl Needs for Publisher {
    const ROLE: Role = Role::Publisher;
}
impl Needs for Operator {
    const ROLE: Role = Role::Operator;
}
impl Needs for Viewer {
    const ROLE: Role = Role::Viewer;
}

impl<R: Needs> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let principal = state
            .registry
            .authenticate(token.trim())?
            .ok_or_else(unauthorized)?;
        if !principal.role.allows(R::ROLE) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {:?} role", R::ROLE).to_lowercase(),
            ));
        }
        Ok(Caller(principal, std::marker::PhantomData))
    }
}

/// Call counters and latency histograms for `/metrics`, by organisation: a scrape shows the
/// calling organisation's series only.
/// connector, version, digest, outcome.
type CallLabels = (String, String, String, &'static str);

#[derive(Default)]
struct Metrics {
    calls: Mutex<BTreeMap<String, BTreeMap<CallLabels, Histogram>>>,
}

const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A label value as the Prometheus text format writes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn record(
        &self,
        org: &str,
        connector: &str,
        version: &str,
        digest: &str,
        outcome: &'static str,
        seconds: f64,
    ) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let h = calls
            .entry(org.to_string())
            .or_default()
            .entry((connector.into(), version.into(), digest.into(), outcome))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The series of `org`'s calls.
    fn render(&self, org: &str) -> String {
        use std::fmt::Write;
        let all = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let empty = BTreeMap::new();
        let calls = all.get(org).unwrap_or(&empty);
        let mut out = String::new();
        out.push_str("# HELP gantry_calls_total Connector calls by outcome.\n# TYPE gantry_calls_total counter\n");
        let labels = |(c, v, d, o): &CallLabels| {
            format!(
                "connector=\"{}\",version=\"{}\",digest=\"{}\",outcome=\"{o}\"",
                label(c),
                label(v),
                label(d)
            )
        };
        for (key, h) in calls.iter() {
            let _ = writeln!(out, "gantry_calls_total{{{}}} {}", labels(key), h.count);
        }
        out.push_str("# HELP gantry_call_duration_seconds Connector call latency.\n# TYPE gantry_call_duration_seconds histogram\n");
        for (key, h) in calls.iter() {
            let labels = labels(key);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gantry_call_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    calls: Arc<Semaphore>,
    /// Calls in flight by organisation, and how many one organisation may have.
    per_org: Arc<Mutex<HashMap<String, usize>>>,
    max_per_org: usize,
    metrics: Arc<Metrics>,
}

/// A call's place among the calls in flight, overall and in its organisation's share.
struct CallPermit {
    _overall: tokio::sync::OwnedSemaphorePermit,
    org: String,
    per_org: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_org.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                per_org.remove(&self.org);
            }
        }
    }
}

impl AppState {
    /// A place for one more call of `org`: refused (429) when the server has as many calls in
    /// flight as it takes, or `org` has its share of them — so one organisation's slow or
    /// hostile calls cannot take every place.
    fn call_permit(&self, org: &str) -> Result<CallPermit, ApiError> {
        let busy = |message: String| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-calls", message)
        };
        let overall = self
            .calls
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("too many calls in flight; retry shortly".into()))?;
        let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
        let n = per_org.entry(org.to_string()).or_default();
        if *n >= self.max_per_org {
            return Err(busy(format!(
                "organisation {org} has {n} calls in flight, its share; retry shortly"
            )));
        }
        *n += 1;
        Ok(CallPermit {
            _overall: overall,
            org: org.to_string(),
            per_org: self.per_org.clone(),
        })
    }
}

/// The API's router.
pub fn router(registry: Arc<Registry>, config: ApiConfig) -> Router {
    let state = AppState {
        registry,
        calls: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
        per_org: Arc::new(Mutex::new(HashMap::new())),
        max_per_org: config.max_calls_per_org.max(1),
        metrics: Arc::new(Metrics::default()),
    };
    let publish = Router::new()
        .route(
            "/v1/connectors/{name}/versions/{version}",
            post(publish).delete(delete_version),
        )
        .layer(DefaultBodyLimit::max(config.max_upload_bytes));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { Json(<ApiDoc as utoipa::OpenApi>::openapi()) }),
        )
        .route(
            "/v1/connectors/{name}/versions/{version}/state",
            post(set_state),
        )
        .route("/v1/marketplace", get(marketplace))
        .route("/v1/connectors/{org}/{name}/versions", get(versions))
        .route("/v1/installs", post(install).get(installs))
        .route("/v1/installs/{id}", get(get_install))
        .route("/v1/installs/{id}/customisations", put(customise))
        .route("/v1/installs/{id}/outbound", put(grant_outbound))
        .route("/v1/installs/{id}/update", post(update))
        .route("/v1/installs/{id}/rebind", post(rebind_install))
        .route("/v1/instances", post(create_instance).get(instances))
        .route("/v1/instances/{id}", get(get_instance))
        .route("/v1/instances/{id}/invoke/{operation}", post(invoke))
        .route("/v1/flows", post(create_flow).get(flows))
        .route("/v1/flows/{id}", get(get_flow))
        .route("/v1/flows/{id}/runs", post(run_flow).get(runs))
        .route("/v1/flows/{id}/steps/{step}/rebind", post(rebind_step))
        .route("/v1/audit", get(audit_log))
        .route("/v1/tokens", post(create_token))
        .layer(DefaultBodyLimit::max(config.max_json_bytes))
        .merge(publish)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            config.body_timeout,
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no-route", "no such route") })
        .with_state(state)
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn created(value: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])), responses((status = 401, body = ErrorBody), (status = 200, description = "Prometheus text: the calling organisation's gantry_calls_total and gantry_call_duration_seconds by connector, version, digest, outcome")))]
async fn metrics(State(s): State<AppState>, caller: Caller<Viewer>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&caller.0.org),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    #[serde(default = "private")]
    visibility: Visibility,
    #[serde(default)]
    tags: Option<String>,
}

fn private() -> Visibility {
    Visibility::Private
}

#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}", tag = "connectors", security(("bearer" = [])), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component bytes"), params(("name" = String, Path), ("version" = String, Path), ("visibility" = Option<Visibility>, Query), ("tags" = Option<String>, Query, description = "Comma-separated")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, description = "Created or a new revision", body = Object), (status = 200, description = "Same bytes: unchanged", body = Object), (status = 409, description = "Public versions are immutable", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn publish(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = &caller.0;
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text()))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/wasm" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "publish the component bytes with `Content-Type: application/wasm`",
        ));
    }
    let bytes = body?;
    let tags = query
        .tags
        .map(|t| {
            t.split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let request = PublishRequest {
        name,
        version,
        visibility: query.visibility,
        tags,
        bytes: bytes.to_vec(),
    };
    let (outcome, info) = s.registry.publish(&p.org, &p.actor(), request).await?;
    let body = json!({"outcome": outcome, "version": info});
    match outcome {
        crate::PublishOutcome::Unchanged => ok(body),
        _ => created(body),
    }
}

#[utoipa::path(delete, path = "/v1/connectors/{name}/versions/{version}", tag = "connectors", security(("bearer" = [])), params(("name" = String, Path), ("version" = String, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 204, description = "Deleted"), (status = 409, description = "Pinned", body = ErrorBody)))]
async fn delete_version(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let p = &caller.0;
    s.registry
        .delete_version(&p.org, &p.actor(), &name, &version)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: VersionState,
}

#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}/state", tag = "connectors", security(("bearer" = [])), request_body = StateBody, params(("name" = String, Path), ("version" = String, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = VersionInfo)))]
async fn set_state(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
    body: Result<ApiJson<StateBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    ok(s.registry
        .set_state(&p.org, &p.actor(), &name, &version, body.state)?)
}

/// A query string, with rejections in the API's error shape.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text()))
}

/// `/v1/marketplace`'s query: the search and the page.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct MarketplaceQuery {
    text: Option<String>,
    tag: Option<String>,
    publisher: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/marketplace", tag = "connectors", security(("bearer" = [])), params(("text" = Option<String>, Query), ("tag" = Option<String>, Query), ("publisher" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "At most this many connectors (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this `org/name`")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Listing>)))]
async fn marketplace(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    q: Result<Query<MarketplaceQuery>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let q = query(q)?;
    let search = Search {
        text: q.text,
        tag: q.tag,
        publisher: q.publisher,
    };
    let page = Page {
        limit: q.limit,
        after: q.after,
    };
    ok(s.registry.search(&p.org, &search, &page)?)
}

#[utoipa::path(get, path = "/v1/connectors/{org}/{name}/versions", tag = "connectors", security(("bearer" = [])), params(("org" = String, Path), ("name" = String, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<VersionInfo>), (status = 404, body = ErrorBody)))]
async fn versions(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult {
    let p = &caller.0;
    ok(s.registry.versions(&p.org, &org, &name)?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    org: String,
    name: String,
    version: String,
}

#[utoipa::path(post, path = "/v1/installs", tag = "installs", security(("bearer" = [])), request_body = InstallBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Install), (status = 409, description = "Deprecated or blocked", body = ErrorBody)))]
async fn install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<InstallBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    created(
        s.registry
            .install(&p.org, &p.actor(), &body.org, &body.name, &body.version)?,
    )
}

#[utoipa::path(get, path = "/v1/installs", tag = "installs", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Install>)))]
async fn installs(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let page = query(page)?;
    ok(s.registry.installs(&p.org, &page)?)
}

#[utoipa::path(get, path = "/v1/installs/{id}", tag = "installs", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install), (status = 404, body = ErrorBody)))]
async fn get_install(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = &caller.0;
    ok(s.registry.get_install(&p.org, id)?)
}

#[utoipa::path(put, path = "/v1/installs/{id}/customisations", tag = "installs", security(("bearer" = [])), request_body = BTreeMap<String, String>, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install)))]
async fn customise(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<BTreeMap<String, String>>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    ok(s.registry.customise(&p.org, &p.actor(), id, body)?)
}

#[utoipa::path(put, path = "/v1/installs/{id}/outbound", tag = "installs", security(("bearer" = [])), request_body = Vec<String>, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install)))]
async fn grant_outbound(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<i64>,
    body: Result<ApiJson<Vec<String>>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    ok(s.registry.grant_outbound(&p.org, &p.actor(), id, body)?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Overwrite,
    Alongside,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    version: String,
    mode: Mode,
    #[serde(default)]
    acknowledge_customisations_lost: bool,
}

#[utoipa::path(post, path = "/v1/installs/{id}/update", tag = "installs", security(("bearer" = [])), request_body = UpdateBody, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install), (status = 409, description = "Customisations not acknowledged, or target deprecated", body = ErrorBody)))]
async fn update(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<i64>,
    body: Result<ApiJson<UpdateBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    let mode = match body.mode {
        Mode::Overwrite => UpdateMode::Overwrite {
            acknowledge_customisations_lost: body.acknowledge_customisations_lost,
        },
        Mode::Alongside => UpdateMode::Alongside,
    };
    ok(s.registry
        .update(&p.org, &p.actor(), id, &body.version, mode)?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RebindInstallBody {
    instance: i64,
}

#[utoipa::path(post, path = "/v1/installs/{id}/rebind", tag = "installs", security(("bearer" = [])), request_body = RebindInstallBody, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Object)))]
async fn rebind_install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<RebindInstallBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    let moved = s
        .registry
        .rebind_install(&p.org, &p.actor(), id, body.instance)?;
    ok(json!({"rebound_steps": moved}))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstanceBody {
    install: i64,
    name: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/v1/instances", tag = "instances", security(("bearer" = [])), request_body = InstanceBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Instance)))]
async fn create_instance(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<InstanceBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    created(s.registry.create_instance(
        &p.org,
        &p.actor(),
        body.install,
        &body.name,
        body.config,
        body.secrets,
    )?)
}

#[utoipa::path(get, path = "/v1/instances", tag = "instances", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Instance>)))]
async fn instances(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let page = query(page)?;
    ok(s.registry.instances(&p.org, &page)?)
}

#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Instance), (status = 404, body = ErrorBody)))]
async fn get_instance(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = &caller.0;
    ok(s.registry.get_instance(&p.org, id)?)
}

#[utoipa::path(post, path = "/v1/instances/{id}/invoke/{operation}", tag = "instances", security(("bearer" = [])), request_body = Object, params(("id" = i64, Path), ("operation" = String, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Object), (status = 422, description = "The connector's typed error", body = ErrorBody), (status = 429, body = ErrorBody), (status = 504, description = "CPU or wall-clock deadline", body = ErrorBody)))]
async fn invoke(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, operation)): Path<(i64, String)>,
    // The input goes to the connector as the client wrote it, and the output comes back as the
    // connector wrote it: through `Value`, a number beyond 64 bits or with more digits than an
    // f64 holds would be rounded, and an escape `Value` cannot hold (a lone surrogate) would
    // turn a whole output into `null`.
    input: Result<ApiJson<Box<RawValue>>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(input) = input?;
    let _permit = s.call_permit(&p.org)?;
    let started = std::time::Instant::now();
    let (description, digest, result) = s
        .registry
        .invoke_instance(&p.org, id, &operation, input.get())
        .await?;
    let (name, version) = (description.name.as_str(), description.version.to_string());
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(out) => {
            s.metrics.record(
                &p.org,
                name,
                &version,
                &out.digest.to_string(),
                "ok",
                seconds,
            );
            // `invoke` checked that the output is one JSON document. serde_json has no
            // unchecked way to make a `RawValue`, so this reads it once more (no allocation,
            // ~1.5 µs per 10 KB on a ~200 µs request) and cannot fail after that check.
            let output: &RawValue = serde_json::from_str(&out.output)
                .map_err(|e| call_error(CallError::InvalidOutput(e.to_string())))?;
            ok(InvokeResponse {
                output,
                digest: out.digest,
                duration_us: out.duration.as_micros() as u64,
                logs: &out.logs,
            })
        }
        Err(e) => {
            s.metrics.record(
                &p.org,
                name,
                &version,
                &digest.to_string(),
                e.code(),
                seconds,
            );
            Err(call_error(e))
        }
    }
}

/// What `invoke` answers. Serialised straight to the body (`json!` would parse `output` into a
/// `Value`, the very thing this avoids).
#[derive(serde::Serialize)]
struct InvokeResponse<'a> {
    output: &'a RawValue,
    digest: Digest,
    duration_us: u64,
    logs: &'a [LogLine],
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FlowBody {
    name: String,
    steps: Vec<StepSpec>,
}

#[utoipa::path(post, path = "/v1/flows", tag = "flows", security(("bearer" = [])), request_body = FlowBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Flow)))]
async fn create_flow(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<FlowBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    created(
        s.registry
            .create_flow(&p.org, &p.actor(), &body.name, body.steps)?,
    )
}

#[utoipa::path(get, path = "/v1/flows", tag = "flows", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Flow>)))]
async fn flows(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let page = query(page)?;
    ok(s.registry.flows(&p.org, &page)?)
}

#[utoipa::path(get, path = "/v1/flows/{id}", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Flow), (status = 404, body = ErrorBody)))]
async fn get_flow(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = &caller.0;
    ok(s.registry.get_flow(&p.org, id)?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/runs", tag = "flows", security(("bearer" = [])), request_body = Object, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Run), (status = 429, body = ErrorBody)))]
async fn run_flow(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    // Passed to the steps as written, like `invoke`'s input.
    input: Result<ApiJson<Box<RawValue>>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(input) = input?;
    let _permit = s.call_permit(&p.org)?;
    let run = s.registry.run_flow(&p.org, id, &*input).await?;
    for step in &run.steps {
        let outcome = step.error.as_ref().map_or("ok", |_| "error");
        let (name, version) = s.registry.label_of(&step.digest).unwrap_or_default();
        s.metrics.record(
            &p.org,
            &name,
            &version,
            &step.digest.to_string(),
            outcome,
            step.duration_us as f64 / 1e6,
        );
    }
    created(run)
}

#[utoipa::path(get, path = "/v1/flows/{id}/runs", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue with the runs before this run id (newest first)")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Run>)))]
async fn runs(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let page = query(page)?;
    ok(s.registry.runs(&p.org, id, &page)?)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RebindStepBody {
    #[serde(default)]
    instance: Option<i64>,
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/rebind", tag = "flows", security(("bearer" = [])), request_body = RebindStepBody, params(("id" = i64, Path), ("step" = String, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Flow), (status = 409, body = ErrorBody)))]
async fn rebind_step(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
    body: Result<ApiJson<RebindStepBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    ok(s.registry
        .rebind_step(&p.org, &p.actor(), id, &step, body.instance)?)
}

#[utoipa::path(get, path = "/v1/audit", tag = "ops", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<AuditEntry>)))]
async fn audit_log(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = &caller.0;
    let page = query(page)?;
    ok(s.registry.audit_log(&p.org, &page)?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    role: Role,
    label: String,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "ops", security(("bearer" = [])), request_body = TokenBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Object)))]
async fn create_token(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    body: Result<ApiJson<TokenBody>, ApiError>,
) -> ApiResult {
    let p = &caller.0;
    let ApiJson(body) = body?;
    let token = s
        .registry
        .create_token(&p.org, &p.actor(), body.role, &body.label)?;
    created(json!({"token": token, "role": body.role, "label": body.label}))
}

/// Serve `router` on `listener` until `shutdown` resolves; connections then finish what they
/// are doing. A client that has not sent its request headers within `header_timeout` is cut off
/// (the body has its own timeout, [`ApiConfig::body_timeout`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Requests and responses are small: send each segment at once instead of waiting for
        // the peer's ACK of the last one (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

//! What operators use: `/readyz`, `/metrics` and the audit log.

use super::{ApiResult, ok, query};
use crate::api::auth::{Caller, Manager, Scraper};
use crate::api::error::ErrorBody;
use crate::api::metrics::ServerGauges;
use crate::api::state::AppState;
use crate::model::{AuditEntry, Page};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "Prometheus text. An organisation's token: its gantry_calls_total and gantry_call_duration_seconds by connector, version, digest, outcome. A platform token: the server's HTTP requests by route template and status, calls in flight, compiles and their time, artifact-cache hits and misses, connectors loaded — naming no connector")))]
pub(crate) async fn metrics(State(s): State<AppState>, caller: Caller<Scraper>) -> Response {
    let text = match caller.0.scope() {
        Some(org) => s.metrics.render(org),
        None => s.metrics.render_server(&ServerGauges {
            calls_in_flight: s.max_calls - s.calls.available_permits(),
            runtime: s.registry.runtime().stats(),
        }),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[utoipa::path(get, path = "/v1/audit", tag = "ops", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue after this id")), responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "An organisation admin reads its organisation's log; the platform operator reads the platform's", body = Vec<AuditEntry>)))]
pub(crate) async fn audit_log(
    State(s): State<AppState>,
    caller: Caller<Manager>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| match p.scope() {
        Some(org) => r.audit_log(org, &page),
        None => r.platform_audit_log(&page),
    })
    .await?)
}

#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "Ready: the store answers"), (status = 503, description = "Draining, or the store does not answer", body = ErrorBody)))]
pub(crate) async fn readyz(
    State(s): State<AppState>,
    draining: Option<axum::Extension<crate::api::Draining>>,
) -> ApiResult {
    use axum::http::StatusCode;
    let unavailable = |message: String| {
        crate::api::error::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    };
    if draining.is_some_and(|d| d.is_draining()) {
        return Err(unavailable(
            "draining: finishing the calls in flight".into(),
        ));
    }
    match s.blocking(|r| r.check_store()).await {
        Ok(()) => ok(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            Err(unavailable("the store does not answer".into()))
        }
    }
}

#[utoipa::path(post, path = "/v1/backup", tag = "platform", security(("bearer" = [])), request_body = crate::api::wire::BackupRequest, responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, description = "Not an absolute path, or it exists", body = ErrorBody), (status = 200, description = "The copy: a data directory on the server's machine, which `gantry serve --data-dir` restores", body = crate::registry::Backup)))]
pub(crate) async fn backup(
    State(s): State<AppState>,
    caller: Caller<crate::api::auth::Platform>,
    body: Result<super::ApiJson<crate::api::wire::BackupRequest>, crate::api::error::ApiError>,
) -> ApiResult {
    let p = caller.0;
    let super::ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.backup(&p.actor(), std::path::Path::new(&body.to)))
            .await?,
    )
}

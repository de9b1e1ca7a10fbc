//! What operators use: `/metrics`, the audit log, tokens.

use super::{ApiJson, ApiResult, created, ok, query};
use crate::api::auth::{Admin, Caller, Viewer};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::model::Role;
use crate::model::{AuditEntry, Page};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])), responses((status = 401, body = ErrorBody), (status = 200, description = "Prometheus text: the calling organisation's gantry_calls_total and gantry_call_duration_seconds by connector, version, digest, outcome")))]
pub(crate) async fn metrics(State(s): State<AppState>, caller: Caller<Viewer>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&caller.0.org),
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/audit", tag = "ops", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<AuditEntry>)))]
pub(crate) async fn audit_log(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.audit_log(&p.org, &page)).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    role: Role,
    label: String,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "ops", security(("bearer" = [])), request_body = TokenBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Object)))]
pub(crate) async fn create_token(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    body: Result<ApiJson<TokenBody>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let token = s
        .registry
        .create_token(&p.org, &p.actor(), body.role, &body.label)?;
    created(json!({"token": token, "role": body.role, "label": body.label}))
}

//! What operators use: `/metrics`, the audit log, tokens.

use super::{ApiJson, ApiResult, created, ok, query};
use crate::api::auth::{Admin, Caller, Viewer};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::api::wire::{NewToken, TokenRequest};
use crate::model::{AuditEntry, Page};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

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

#[utoipa::path(post, path = "/v1/tokens", tag = "ops", security(("bearer" = [])), request_body = TokenRequest, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = NewToken)))]
pub(crate) async fn create_token(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let TokenRequest { role, label } = body;
    let (token, label) = s
        .blocking(move |r| {
            let token = r.create_token(&p.org, &p.actor(), role, &label)?;
            Ok::<_, crate::registry::Error>((token, label))
        })
        .await?;
    created(NewToken { token, role, label })
}

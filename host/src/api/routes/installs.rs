//! Installs: take a version in, customise it, grant it hosts, update it (overwrite or alongside), rebind its steps.

use super::{ApiJson, ApiResult, Path, created, ok, query};
use crate::api::auth::{Admin, Caller, Operator, Viewer};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::api::wire::{InstallRequest, RebindInstallRequest};
use crate::model::{Install, Page, Update};
use crate::registry::plan::UpdatePlan;
use crate::registry::usage::Usage;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::json;
use std::collections::BTreeMap;

#[utoipa::path(post, path = "/v1/installs", tag = "installs", security(("bearer" = [])), request_body = InstallRequest, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Install), (status = 409, description = "Deprecated or blocked", body = ErrorBody)))]
pub(crate) async fn install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<InstallRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    created(
        s.blocking(move |r| r.install(&p.org, &p.actor(), &body.org, &body.name, &body.version))
            .await?,
    )
}

#[utoipa::path(get, path = "/v1/installs", tag = "installs", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Install>)))]
pub(crate) async fn installs(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.installs(&p.org, &page)).await?)
}

#[utoipa::path(get, path = "/v1/installs/{id}", tag = "installs", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_install(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = caller.0;
    ok(s.blocking(move |r| r.get_install(&p.org, id)).await?)
}

#[utoipa::path(put, path = "/v1/installs/{id}/customisations", tag = "installs", security(("bearer" = [])), request_body = BTreeMap<String, String>, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install)))]
pub(crate) async fn customise(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<BTreeMap<String, String>>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.customise(&p.org, &p.actor(), id, body))
            .await?,
    )
}

#[utoipa::path(put, path = "/v1/installs/{id}/outbound", tag = "installs", security(("bearer" = [])), request_body = Vec<String>, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install)))]
pub(crate) async fn grant_outbound(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<i64>,
    body: Result<ApiJson<Vec<String>>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.grant_outbound(&p.org, &p.actor(), id, body))
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/installs/{id}/update", tag = "installs", security(("bearer" = [])), request_body = Update, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install), (status = 409, description = "Customisations not acknowledged, or target deprecated", body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<i64>,
    body: Result<ApiJson<Update>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(update) = body?;
    ok(
        s.blocking(move |r| r.update(&p.org, &p.actor(), id, &update))
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/installs/{id}/rebind", tag = "installs", security(("bearer" = [])), request_body = RebindInstallRequest, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Object)))]
pub(crate) async fn rebind_install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<RebindInstallRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let moved = s
        .blocking(move |r| r.rebind_install(&p.org, &p.actor(), id, body.instance))
        .await?;
    ok(json!({"rebound_steps": moved}))
}

/// `GET /v1/installs/{id}/update-plan`'s query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanQuery {
    version: String,
}

#[utoipa::path(get, path = "/v1/installs/{id}/update-plan", tag = "installs", security(("bearer" = [])), params(("id" = i64, Path), ("version" = String, Query, pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$", description = "The version the plan is for")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "What the update would do; nothing changes", body = UpdatePlan), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_plan(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
    q: Result<Query<PlanQuery>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let q = query(q)?;
    ok(s.blocking(move |r| r.update_plan(&p.org, id, &q.version))
        .await?)
}

#[utoipa::path(get, path = "/v1/installs/{id}/usage", tag = "installs", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "The instances under the install and the flow steps bound through it", body = Usage), (status = 404, body = ErrorBody)))]
pub(crate) async fn usage(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = caller.0;
    ok(s.blocking(move |r| r.install_usage(&p.org, id)).await?)
}

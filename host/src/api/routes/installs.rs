//! Installs: take a version in, customise it, grant it hosts, update it (overwrite or alongside), rebind its steps.

use super::{ApiJson, ApiResult, created, ok, query};
use crate::api::auth::{Admin, Caller, Operator, Viewer};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::model::{Install, Page, UpdateMode};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallBody {
    org: String,
    name: String,
    version: String,
}

#[utoipa::path(post, path = "/v1/installs", tag = "installs", security(("bearer" = [])), request_body = InstallBody, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Install), (status = 409, description = "Deprecated or blocked", body = ErrorBody)))]
pub(crate) async fn install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<InstallBody>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    created(
        s.blocking(move |r| r.install(&p.org, &p.actor(), &body.org, &body.name, &body.version))
            .await?,
    )
}

#[utoipa::path(get, path = "/v1/installs", tag = "installs", security(("bearer" = [])), params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Install>)))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    Overwrite,
    Alongside,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    version: String,
    mode: Mode,
    #[serde(default)]
    acknowledge_customisations_lost: bool,
}

#[utoipa::path(post, path = "/v1/installs/{id}/update", tag = "installs", security(("bearer" = [])), request_body = UpdateBody, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Install), (status = 409, description = "Customisations not acknowledged, or target deprecated", body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<AppState>,
    caller: Caller<Admin>,
    Path(id): Path<i64>,
    body: Result<ApiJson<UpdateBody>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let mode = match body.mode {
        Mode::Overwrite => UpdateMode::Overwrite {
            acknowledge_customisations_lost: body.acknowledge_customisations_lost,
        },
        Mode::Alongside => UpdateMode::Alongside,
    };
    ok(
        s.blocking(move |r| r.update(&p.org, &p.actor(), id, &body.version, mode))
            .await?,
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RebindInstallBody {
    instance: i64,
}

#[utoipa::path(post, path = "/v1/installs/{id}/rebind", tag = "installs", security(("bearer" = [])), request_body = RebindInstallBody, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Object)))]
pub(crate) async fn rebind_install(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<RebindInstallBody>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let moved = s
        .registry
        .rebind_install(&p.org, &p.actor(), id, body.instance)?;
    ok(json!({"rebound_steps": moved}))
}

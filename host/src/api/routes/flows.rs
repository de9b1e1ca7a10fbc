//! Flows: create, list, run, the run history, rebinding a step.

use super::{ApiJson, ApiResult, Path, created, ok, query};
use crate::api::auth::{Caller, Operator, Viewer};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::api::wire::{FlowRequest, RebindStepRequest, RecordRequest};
use crate::model::Canary;
use crate::model::{Flow, Page, Recording, Run};
use crate::registry::canary::CanaryRequest;
use crate::registry::replay::{ReplayReport, ReplayRequest};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::value::RawValue;

#[utoipa::path(post, path = "/v1/flows", tag = "flows", security(("bearer" = [])), request_body = FlowRequest, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "A flow of that name exists", body = ErrorBody), (status = 201, body = Flow)))]
pub(crate) async fn create_flow(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<FlowRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    created(
        s.blocking(move |r| {
            r.create_flow_recording(&p.org, &p.actor(), &body.name, body.steps, body.record)
        })
        .await?,
    )
}

#[utoipa::path(get, path = "/v1/flows", tag = "flows", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Flow>)))]
pub(crate) async fn flows(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.flows(&p.org, &page)).await?)
}

#[utoipa::path(get, path = "/v1/flows/{id}", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Flow), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_flow(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = caller.0;
    ok(s.blocking(move |r| r.get_flow(&p.org, id)).await?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/runs", tag = "flows", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "The run's input: any JSON document, passed to the steps as written"), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Run), (status = 429, body = ErrorBody)))]
pub(crate) async fn run_flow(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    // Passed to the steps as written, like `invoke`'s input.
    input: Result<ApiJson<Box<RawValue>>, ApiError>,
) -> ApiResult {
    let p = caller.0;
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

#[utoipa::path(get, path = "/v1/flows/{id}/runs", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue with the runs before this run id (newest first)")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Run>)))]
pub(crate) async fn runs(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.runs(&p.org, id, &page)).await?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/rebind", tag = "flows", security(("bearer" = [])), request_body = RebindStepRequest, params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Flow), (status = 409, body = ErrorBody)))]
pub(crate) async fn rebind_step(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
    body: Result<ApiJson<RebindStepRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.rebind_step(&p.org, &p.actor(), id, &step, body.instance))
            .await?,
    )
}

#[utoipa::path(put, path = "/v1/flows/{id}/record", tag = "flows", security(("bearer" = [])), request_body = RecordRequest, params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Flow), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_record(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<RecordRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.set_flow_record(&p.org, &p.actor(), id, body.record))
            .await?,
    )
}

#[utoipa::path(get, path = "/v1/flows/{id}/steps/{step}/recordings", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue with the recordings before this one (newest first)")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Recording>), (status = 404, body = ErrorBody)))]
pub(crate) async fn recordings(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path((id, step)): Path<(i64, String)>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.recordings(&p.org, id, &step, &page))
        .await?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/replay", tag = "flows", security(("bearer" = [])), request_body = ReplayRequest, params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = ReplayReport), (status = 404, body = ErrorBody), (status = 409, description = "The candidate version is blocked", body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn replay(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
    body: Result<ApiJson<ReplayRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let _permit = s.call_permit(&p.org)?;
    ok(s.registry.replay(&p.org, id, &step, &body).await?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/canary", tag = "flows", security(("bearer" = [])), request_body = CanaryRequest, params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Canary), (status = 404, body = ErrorBody), (status = 409, description = "The candidate version is deprecated or blocked", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn start_canary(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
    body: Result<ApiJson<CanaryRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    created(
        s.blocking(move |r| r.start_canary(&p.org, &p.actor(), id, &step, &body))
            .await?,
    )
}

#[utoipa::path(get, path = "/v1/flows/{id}/steps/{step}/canary", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Canary), (status = 404, body = ErrorBody)))]
pub(crate) async fn canary(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path((id, step)): Path<(i64, String)>,
) -> ApiResult {
    let p = caller.0;
    ok(s.blocking(move |r| r.canary(&p.org, id, &step)).await?)
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/canary/promote", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Canary), (status = 404, description = "No running canary", body = ErrorBody)))]
pub(crate) async fn promote_canary(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
) -> ApiResult {
    let p = caller.0;
    ok(
        s.blocking(move |r| r.promote_canary(&p.org, &p.actor(), id, &step))
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/flows/{id}/steps/{step}/canary/rollback", tag = "flows", security(("bearer" = [])), params(("id" = i64, Path), ("step" = String, Path, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,100}$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Canary), (status = 404, description = "No running canary", body = ErrorBody)))]
pub(crate) async fn roll_back_canary(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, step)): Path<(i64, String)>,
) -> ApiResult {
    let p = caller.0;
    ok(
        s.blocking(move |r| r.roll_back_canary(&p.org, &p.actor(), id, &step))
            .await?,
    )
}

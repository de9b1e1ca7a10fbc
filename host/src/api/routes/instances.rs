//! Instances (configuration and sealed credentials) and invoking an operation of one.

use super::{ApiJson, ApiResult, Path, created, ok, query};
use crate::api::auth::{Caller, Operator, Viewer};
use crate::api::error::{ApiError, ErrorBody, call_error};
use crate::api::state::AppState;
use crate::api::wire::{InstanceRequest, Invoked};
use crate::model::{Instance, Page};
use crate::runtime::call::CallError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

#[utoipa::path(post, path = "/v1/instances", tag = "instances", security(("bearer" = [])), request_body = InstanceRequest, responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, body = Instance)))]
pub(crate) async fn create_instance(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    body: Result<ApiJson<InstanceRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    created(
        s.blocking(move |r| {
            r.create_instance(
                &p.org,
                &p.actor(),
                body.install,
                &body.name,
                body.config,
                body.secrets,
            )
        })
        .await?,
    )
}

#[utoipa::path(get, path = "/v1/instances", tag = "instances", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue after this id")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Instance>)))]
pub(crate) async fn instances(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.instances(&p.org, &page)).await?)
}

#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Instance), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_instance(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = caller.0;
    ok(s.blocking(move |r| r.get_instance(&p.org, id)).await?)
}

#[utoipa::path(put, path = "/v1/instances/{id}/secrets", tag = "instances", security(("bearer" = [])), request_body(content = BTreeMap<String, String>, description = "Every secret of the instance, replacing the ones it has (write-only: never shown back)"), params(("id" = i64, Path)), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Instance), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn rotate_secrets(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path(id): Path<i64>,
    body: Result<ApiJson<BTreeMap<String, String>>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.rotate_secrets(&p.org, &p.actor(), id, body))
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/instances/{id}/invoke/{operation}", tag = "instances", security(("bearer" = [])), request_body(content = serde_json::Value, content_type = "application/json", description = "The operation's input: any JSON document, passed to the connector as written"), params(("id" = i64, Path), ("operation" = String, Path)), responses((status = 400, description = "invalid-input: the input does not fit the operation's input schema (checked before the connector runs) or is not JSON", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Invoked), (status = 422, description = "The connector's typed error", body = ErrorBody), (status = 429, body = ErrorBody), (status = 504, description = "CPU or wall-clock deadline", body = ErrorBody)))]
pub(crate) async fn invoke(
    State(s): State<AppState>,
    caller: Caller<Operator>,
    Path((id, operation)): Path<(i64, String)>,
    // The input goes to the connector as the client wrote it, and the output comes back as the
    // connector wrote it: through `Value`, a number beyond 64 bits or with more digits than an
    // f64 holds would be rounded, and an escape `Value` cannot hold (a lone surrogate) would
    // turn a whole output into `null`.
    input: Result<ApiJson<Box<RawValue>>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(input) = input?;
    let _permit = s.call_permit(&p.org)?;
    let started = std::time::Instant::now();
    let (connector, result) = s
        .registry
        .invoke_instance(&p.org, id, &operation, input.get())
        .await?;
    // Labels the connector computed once, when it was loaded: `name@version` and its digest.
    let (name, version) = connector
        .label()
        .rsplit_once('@')
        .unwrap_or((connector.label(), ""));
    let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
    s.metrics.record(
        &p.org,
        name,
        version,
        connector.digest_text(),
        outcome,
        started.elapsed().as_secs_f64(),
    );
    match result {
        Ok(out) => {
            // `invoke` checked that the output is one JSON document. serde_json has no
            // unchecked way to make a `RawValue`, so this reads it once more (no allocation,
            // ~1.5 µs per 10 KB on a ~200 µs request) and cannot fail after that check.
            let output: &RawValue = serde_json::from_str(&out.output)
                .map_err(|e| call_error(CallError::InvalidOutput(e.to_string())))?;
            ok(Invoked {
                output,
                digest: out.digest,
                duration_us: out.duration.as_micros() as u64,
                logs: Cow::Borrowed(&out.logs),
            })
        }
        Err(e) => Err(call_error(e)),
    }
}

//! Publishing, version states, the marketplace and a connector's versions.

use super::{ApiJson, ApiResult, Path, ok, query};
use crate::api::auth::{Caller, Publisher, Viewer};
use crate::api::error::{ApiError, ErrorBody, ErrorDetail};
use crate::api::state::AppState;
use crate::api::wire::{PublishEvent, Published, StateRequest};
use crate::model::{
    Listing, Page, PublishOutcome, PublishRequest, PublishStage, Search, VersionInfo, Visibility,
};
use crate::registry::Error as RegistryError;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishQuery {
    #[serde(default = "private")]
    visibility: Visibility,
    #[serde(default)]
    tags: Option<String>,
}

pub(crate) fn private() -> Visibility {
    Visibility::Private
}

/// Publish a component as `name@version` (its `describe()` must agree).
///
/// With `Accept: application/x-ndjson` the answer is 200 and one `PublishEvent` per line —
/// the upload received, the stage once a second, then the outcome with the status the plain
/// request would have answered — and the publish finishes even if the publisher goes away.
#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}", tag = "connectors", security(("bearer" = [])), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component bytes"), params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("version" = String, Path, pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$"), ("visibility" = Option<Visibility>, Query), ("tags" = Option<String>, Query, description = "Comma-separated")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, description = "Created or a new revision", body = Published), (status = 200, description = "Same bytes: unchanged", body = Published), (status = 409, description = "Public versions are immutable", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn publish(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = caller.0;
    let (query, bytes) = upload(query, &headers, body)?;
    let request = PublishRequest {
        name,
        version,
        visibility: query.visibility,
        tags: query.tags(),
        bytes: bytes.to_vec(),
    };
    let registry = s.registry.clone();
    let publish = async move |stage: &(dyn Fn(PublishStage) + Sync)| {
        let actor = p.actor();
        registry
            .publish_watched(&p.org, &actor, request, stage)
            .await
    };
    if wants_events(&headers) {
        return Ok(watched(bytes.len(), move |stage| async move {
            publish(&*stage).await
        }));
    }
    let (outcome, info) = publish(&|_| {}).await?;
    published(outcome, info)
}

/// Publish a component under the name and version its own `describe()` gives: the component is
/// compiled once, by the server, instead of once by the publisher to read them and again here.
///
/// With `Accept: application/x-ndjson` the answer is 200 and one `PublishEvent` per line, as
/// for the named route.
#[utoipa::path(post, path = "/v1/connectors", tag = "connectors", security(("bearer" = [])), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component bytes, published under the name and version its `describe()` gives"), params(("visibility" = Option<Visibility>, Query), ("tags" = Option<String>, Query, description = "Comma-separated")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 201, description = "Created or a new revision", body = Published), (status = 200, description = "Same bytes: unchanged", body = Published), (status = 409, description = "Public versions are immutable", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn publish_as_described(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let p = caller.0;
    let (query, bytes) = upload(query, &headers, body)?;
    let (registry, size, tags) = (s.registry.clone(), bytes.len(), query.tags());
    let publish = async move |stage: &(dyn Fn(PublishStage) + Sync)| {
        let actor = p.actor();
        registry
            .publish_as_described_watched(
                &p.org,
                &actor,
                query.visibility,
                tags,
                bytes.to_vec(),
                stage,
            )
            .await
    };
    if wants_events(&headers) {
        return Ok(watched(
            size,
            move |stage| async move { publish(&*stage).await },
        ));
    }
    let (outcome, info) = publish(&|_| {}).await?;
    published(outcome, info)
}

/// Whether the publisher asked to watch its publish go (`Accept: application/x-ndjson`).
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.split(';').next().unwrap_or("").trim() == NDJSON)
}

const NDJSON: &str = "application/x-ndjson";

/// A publish the publisher watches: it runs in a task of its own — so it finishes, or fails
/// whole, even if the publisher goes away — while the answer streams one [`PublishEvent`] per
/// line: the upload received, the stage at each change and once a second (which also keeps a
/// proxy from closing a quiet connection through a long compile), then the outcome with the
/// status the plain request would have answered.
fn watched<F>(
    bytes: usize,
    publish: impl FnOnce(Box<dyn Fn(PublishStage) + Send + Sync>) -> F,
) -> Response
where
    F: Future<Output = Result<(PublishOutcome, VersionInfo), RegistryError>> + Send + 'static,
{
    let (stage_tx, mut stages) = mpsc::unbounded_channel();
    let task = tokio::spawn(publish(Box::new(move |stage| {
        let _ = stage_tx.send(stage);
    })));
    let (lines, mut body) = mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        let start = Instant::now();
        let line = |event: &PublishEvent| {
            let mut line = serde_json::to_vec(event).expect("events serialise");
            line.push(b'\n');
            Ok(Bytes::from(line))
        };
        let _ = lines
            .send(line(&PublishEvent::Received {
                bytes: bytes as u64,
            }))
            .await;
        let mut task = std::pin::pin!(task);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let (mut current, mut open) = (None, true);
        loop {
            // Every stage is told, in order, before the outcome.
            tokio::select! {
                biased;
                stage = stages.recv(), if open => match stage {
                    Some(stage) => current = Some(stage),
                    // The publish has ended: its outcome is next, no stage again.
                    None => {
                        open = false;
                        continue;
                    }
                },
                outcome = &mut task => {
                    let _ = lines.send(line(&ended(outcome))).await;
                    return;
                }
                _ = tick.tick() => {}
            }
            let Some(stage) = current else { continue };
            let elapsed_ms = start.elapsed().as_millis() as u64;
            // A publisher that went away stops the events, not the publish.
            if lines
                .send(line(&PublishEvent::Progress { stage, elapsed_ms }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(futures::stream::poll_fn(move |cx| body.poll_recv(cx))),
    )
        .into_response()
}

/// The last event of a watched publish.
fn ended(
    outcome: Result<Result<(PublishOutcome, VersionInfo), RegistryError>, JoinError>,
) -> PublishEvent {
    let error = match outcome {
        Ok(Ok((outcome, version))) => {
            return PublishEvent::Done {
                status: status_of(outcome).as_u16(),
                published: Box::new(Published { outcome, version }),
            };
        }
        Ok(Err(e)) => ApiError::from(e),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the publish task failed: {e}"),
        ),
    };
    PublishEvent::Failed {
        status: error.status().as_u16(),
        error: ErrorDetail {
            code: error.code().to_string(),
            message: error.public_message().to_string(),
        },
    }
}

impl PublishQuery {
    fn tags(&self) -> Vec<String> {
        self.tags
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A publish's query and component bytes, refused unless sent as `application/wasm`.
fn upload(
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(PublishQuery, Bytes), ApiError> {
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
    Ok((query, body?))
}

fn published(outcome: PublishOutcome, info: VersionInfo) -> ApiResult {
    let body = Published {
        outcome,
        version: info,
    };
    Ok((status_of(outcome), Json(body)).into_response())
}

/// What a publish answers: 200 when the same bytes were already published, else 201.
fn status_of(outcome: PublishOutcome) -> StatusCode {
    match outcome {
        PublishOutcome::Unchanged => StatusCode::OK,
        _ => StatusCode::CREATED,
    }
}

#[utoipa::path(delete, path = "/v1/connectors/{name}/versions/{version}", tag = "connectors", security(("bearer" = [])), params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("version" = String, Path, pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 204, description = "Deleted"), (status = 409, description = "Pinned", body = ErrorBody)))]
pub(crate) async fn delete_version(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let p = caller.0;
    s.blocking(move |r| r.delete_version(&p.org, &p.actor(), &name, &version))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/connectors/{name}/versions/{version}/state", tag = "connectors", security(("bearer" = [])), request_body = StateRequest, params(("name" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("version" = String, Path, pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = VersionInfo)))]
pub(crate) async fn set_state(
    State(s): State<AppState>,
    caller: Caller<Publisher>,
    Path((name, version)): Path<(String, String)>,
    body: Result<ApiJson<StateRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    ok(
        s.blocking(move |r| r.set_state(&p.org, &p.actor(), &name, &version, body.state))
            .await?,
    )
}

/// `/v1/marketplace`'s query: the search and the page.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MarketplaceQuery {
    text: Option<String>,
    tag: Option<String>,
    publisher: Option<String>,
    #[serde(deserialize_with = "crate::model::query_limit")]
    limit: Option<usize>,
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/marketplace", tag = "connectors", security(("bearer" = [])), params(("text" = Option<String>, Query), ("tag" = Option<String>, Query), ("publisher" = Option<String>, Query), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many connectors (default 100, at most 1000)"), ("after" = Option<String>, Query, pattern = "^([a-z0-9][a-z0-9-]{0,62}/[a-z0-9][a-z0-9-]{0,62})?$", description = "Continue after this `org/name`")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<Listing>)))]
pub(crate) async fn marketplace(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    q: Result<Query<MarketplaceQuery>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let q = query(q)?;
    // An empty filter is no filter.
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let search = Search {
        text: q.text,
        tag: given(q.tag),
        publisher: given(q.publisher),
    };
    let page = Page {
        limit: q.limit,
        after: q.after,
    };
    ok(s.blocking(move |r| r.search(&p.org, &search, &page))
        .await?)
}

#[utoipa::path(get, path = "/v1/connectors/{org}/{name}/versions", tag = "connectors", security(("bearer" = [])), params(("org" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many versions (default 100, at most 1000)"), ("after" = Option<String>, Query, pattern = "^((0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?)?$", description = "Continue after this version")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<VersionInfo>), (status = 404, body = ErrorBody)))]
pub(crate) async fn versions(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path((org, name)): Path<(String, String)>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.versions(&p.org, &org, &name, &page))
        .await?)
}

/// `GET /v1/connectors/{org}/{name}/versions/{version}/usage`'s query.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UsageQuery {
    revision: Option<u32>,
}

#[utoipa::path(get, path = "/v1/connectors/{org}/{name}/versions/{version}/usage", tag = "connectors", security(("bearer" = [])), params(("org" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$"), ("version" = String, Path, pattern = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\\+[0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*)?$"), ("revision" = Option<u32>, Query, description = "Only what uses this revision")), responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "The caller's installs of the version, their instances and the flow steps bound through them", body = crate::registry::usage::Usage), (status = 404, body = ErrorBody)))]
pub(crate) async fn usage(
    State(s): State<AppState>,
    caller: Caller<Viewer>,
    Path((org, name, version)): Path<(String, String, String)>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let q = query(q)?;
    ok(
        s.blocking(move |r| r.version_usage(&p.org, &org, &name, &version, q.revision))
            .await?,
    )
}

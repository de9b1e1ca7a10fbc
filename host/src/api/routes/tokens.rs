//! Organisations (the platform operator's) and tokens (an organisation admin's own, or the
//! platform operator's own).

use super::{ApiJson, ApiResult, Path, created, ok, query};
use crate::api::auth::{Caller, Manager, Platform};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::api::wire::{NewOrg, NewToken, OrgRequest, TokenRequest};
use crate::model::{OrgInfo, Page, TokenInfo};
use crate::registry::Error;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;

/// The longest a token may be asked to last: a hundred years, in seconds.
const MAX_EXPIRY_SECS: u64 = 3_155_760_000;

/// When a token asked to expire in `secs` seconds expires.
fn expires_at(secs: Option<u64>) -> Result<Option<i64>, ApiError> {
    let Some(secs) = secs else { return Ok(None) };
    let now = crate::registry::now_ms();
    (1..=MAX_EXPIRY_SECS)
        .contains(&secs)
        .then(|| now + secs as i64 * 1000)
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                format!("expires_in_secs must be from 1 to {MAX_EXPIRY_SECS} (a hundred years), not {secs}"),
            )
        })
}

#[utoipa::path(post, path = "/v1/orgs", tag = "platform", security(("bearer" = [])), request_body = OrgRequest, responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "The organisation exists", body = ErrorBody), (status = 422, body = ErrorBody), (status = 201, description = "The organisation and its first admin token (shown once)", body = NewOrg)))]
pub(crate) async fn create_org(
    State(s): State<AppState>,
    caller: Caller<Platform>,
    body: Result<ApiJson<OrgRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(OrgRequest { id, admin_label }) = body?;
    let label = admin_label.unwrap_or_else(|| "admin".into());
    let (org, info, token) = s
        .blocking(move |r| r.create_organisation(&p.actor(), &id, &label))
        .await?;
    created(NewOrg {
        org,
        admin: NewToken { token, info },
    })
}

#[utoipa::path(get, path = "/v1/orgs", tag = "platform", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<String>, Query, pattern = "^([a-z0-9][a-z0-9-]{0,62})?$", description = "Continue after this organisation")), responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, body = Vec<OrgInfo>)))]
pub(crate) async fn orgs(
    State(s): State<AppState>,
    _caller: Caller<Platform>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let page = query(page)?;
    ok(s.blocking(move |r| r.organisations(&page)).await?)
}

#[utoipa::path(post, path = "/v1/orgs/{org}/tokens", tag = "platform", security(("bearer" = [])), request_body = TokenRequest, params(("org" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$")), responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 201, description = "A token of the organisation (shown once), e.g. an admin's when its first is lost", body = NewToken)))]
pub(crate) async fn mint_org_token(
    State(s): State<AppState>,
    caller: Caller<Platform>,
    Path(org): Path<String>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let expires = expires_at(body.expires_in_secs)?;
    let (info, token) = s
        .blocking(move |r| r.create_token(&org, &p.actor(), body.role, &body.label, expires))
        .await?;
    created(NewToken { token, info })
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = TokenRequest, responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 201, description = "A token of the caller's organisation, or for the platform operator a platform token (role `platform`); shown once", body = NewToken)))]
pub(crate) async fn create_token(
    State(s): State<AppState>,
    caller: Caller<Manager>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> ApiResult {
    let p = caller.0;
    let ApiJson(body) = body?;
    let expires = expires_at(body.expires_in_secs)?;
    let (info, token) = s
        .blocking(move |r| match p.scope() {
            Some(org) => r.create_token(org, &p.actor(), body.role, &body.label, expires),
            None if body.role == crate::model::Role::Platform && expires.is_none() => {
                r.create_platform_token(&p.actor(), &body.label)
            }
            None => Err(Error::InvalidInput(
                "the platform operator creates platform tokens (role `platform`, no expiry); \
                 an organisation's through /v1/orgs/{org}/tokens"
                    .into(),
            )),
        })
        .await?;
    created(NewToken { token, info })
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), params(("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100, at most 1000)"), ("after" = Option<i64>, Query, description = "Continue after this id")), responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 200, description = "The caller's organisation's tokens (the platform's, for the platform operator), revoked ones included — never a secret", body = Vec<TokenInfo>)))]
pub(crate) async fn tokens(
    State(s): State<AppState>,
    caller: Caller<Manager>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let p = caller.0;
    let page = query(page)?;
    ok(s.blocking(move |r| r.tokens(p.scope(), &page)).await?)
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 200, description = "The token, revoked: refused from its next request on", body = TokenInfo)))]
pub(crate) async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller<Manager>,
    Path(id): Path<i64>,
) -> ApiResult {
    let p = caller.0;
    ok(
        s.blocking(move |r| r.revoke_token(p.scope(), &p.actor(), id))
            .await?,
    )
}

//! The routes, one file per resource, and what they share: JSON bodies and query strings with
//! rejections in the API's error shape, and the `ok`/`created` answers.

pub(crate) mod connectors;
pub(crate) mod flows;
pub(crate) mod installs;
pub(crate) mod instances;
pub(crate) mod ops;
pub(crate) mod tokens;

use super::error::ApiError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

pub(crate) fn created(value: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// A query string, with rejections in the API's error shape.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text()))
}

/// JSON bodies, with rejections in the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(T);

/// Path parameters, with rejections (an id that is not a number, or overflows) in the API's
/// error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

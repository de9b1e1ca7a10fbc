//! Who is calling: [`Caller`], the bearer token's principal, holding at least the role its
//! type parameter names — checked with the request's head, before any body is read.

use super::error::ApiError;
use super::state::AppState;
use crate::model::{Principal, Role};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

/// The caller, from `Authorization: Bearer <token>`, holding at least the role `R` names.
///
/// The role is checked here, with the request's head, before any extractor reads the body: a
/// token without the role gets its 403 without its upload being read.
pub(crate) struct Caller<R>(pub(crate) Principal, std::marker::PhantomData<R>);

/// The role a route needs, as a type ([`Caller`]'s parameter).
pub(crate) trait Needs {
    const ROLE: Role;
}

/// Marker types for [`Caller`]: the role each route needs.
pub(crate) struct Admin;
pub(crate) struct Publisher;
pub(crate) struct Operator;
pub(crate) struct Viewer;

impl Needs for Admin {
    const ROLE: Role = Role::Admin;
}
impl Needs for Publisher {
    const ROLE: Role = Role::Publisher;
}
impl Needs for Operator {
    const ROLE: Role = Role::Operator;
}
impl Needs for Viewer {
    const ROLE: Role = Role::Viewer;
}

impl<R: Needs> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let token = token.trim();
        let principal = match state.registry.known_principal(token) {
            Some(principal) => principal,
            None => {
                let token = token.to_string();
                state
                    .blocking(move |r| r.authenticate(&token))
                    .await?
                    .ok_or_else(unauthorized)?
            }
        };
        if !principal.role.allows(R::ROLE) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {:?} role", R::ROLE).to_lowercase(),
            ));
        }
        Ok(Caller(principal, std::marker::PhantomData))
    }
}

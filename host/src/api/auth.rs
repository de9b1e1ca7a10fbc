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

/// Who a route lets in, as a type ([`Caller`]'s parameter).
pub(crate) trait Needs {
    /// What a refused caller is told it needs.
    const NEEDS: &'static str;
    fn permits(role: Role) -> bool;
}

/// Marker types for [`Caller`]: the role each route needs.
pub(crate) struct Admin;
pub(crate) struct Publisher;
pub(crate) struct Operator;
pub(crate) struct Viewer;
/// The platform operator.
pub(crate) struct Platform;
/// Whoever manages tokens and reads an audit log: an organisation's admin (its own) or the
/// platform operator (the platform's).
pub(crate) struct Manager;

macro_rules! needs_role {
    ($($marker:ident => $role:ident, $name:literal;)*) => {$(
        impl Needs for $marker {
            const NEEDS: &'static str = $name;
            fn permits(role: Role) -> bool {
                role.allows(Role::$role)
            }
        }
    )*};
}

needs_role! {
    Admin => Admin, "the admin role";
    Publisher => Publisher, "the publisher role";
    Operator => Operator, "the operator role";
    Viewer => Viewer, "the viewer role";
    Platform => Platform, "the platform role";
}

/// Whoever reads `/metrics`: an organisation's viewer (its calls) or the platform operator
/// (the server's series).
pub(crate) struct Scraper;

impl Needs for Scraper {
    const NEEDS: &'static str = "the viewer or the platform role";
    fn permits(role: Role) -> bool {
        role.allows(Role::Viewer) || role == Role::Platform
    }
}

impl Needs for Manager {
    const NEEDS: &'static str = "the admin or the platform role";
    fn permits(role: Role) -> bool {
        role.allows(Role::Admin) || role == Role::Platform
    }
}

impl Principal {
    /// The scope of a [`Manager`]: its organisation, or `None` for the platform.
    pub(crate) fn scope(&self) -> Option<&str> {
        (self.role != Role::Platform).then_some(self.org.as_str())
    }
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
        if let Some(org) = parts.extensions.get::<super::request_log::RequestOrg>() {
            let _ = org
                .0
                .set(principal.scope().unwrap_or("(platform)").to_string());
        }
        if !R::permits(principal.role) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs {}", R::NEEDS),
            ));
        }
        Ok(Caller(principal, std::marker::PhantomData))
    }
}

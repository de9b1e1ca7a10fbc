//! The web console: the seeds' pages (marketplace, publish, manage connectors, instances,
//! flows, audit) in a browser, served by the same router as the API and calling the same
//! registry. Server-rendered HTML ([`maud`] escapes every value it is given), no script: every
//! page reads and works without JavaScript.
//!
//! Sign-in exchanges an API token for a session cookie (`HttpOnly`, `SameSite=Strict`; the
//! store keeps its hash; it ends at logout, after [`SESSION_MS`](crate::registry::SESSION_MS),
//! or when its token is revoked). Every form carries the session's CSRF token and every post is
//! refused without it ([`Posted`]); the role decides which actions a page offers, and each
//! action checks it again, whatever the page offered.

mod manage;
mod market;
mod session;
mod work;

use super::auth::Needs;
use super::error::ApiError;
use super::state::AppState;
pub(crate) use super::wire::{kebab, when};
use crate::model::Role;
use crate::registry::{Error as RegistryError, SignedIn};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The console's routes (merged into the API's router).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/connectors") }))
        .route("/console.css", get(stylesheet))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/marketplace", get(market::marketplace))
        .route("/marketplace/{org}/{name}", get(market::connector))
        .route("/marketplace/{org}/{name}/install", post(market::install))
        .route("/publish", get(market::publish_page).post(market::publish))
        .route(
            "/marketplace/{org}/{name}/{version}/state",
            post(market::set_state),
        )
        .route("/connectors", get(manage::connectors))
        .route("/installs/{id}", get(manage::install))
        .route("/installs/{id}/customise", post(manage::customise))
        .route("/installs/{id}/outbound", post(manage::grant_outbound))
        .route(
            "/installs/{id}/update",
            get(manage::update_dialog).post(manage::update),
        )
        .route("/installs/{id}/rebind", post(manage::rebind_install))
        .route(
            "/instances",
            get(work::instances).post(work::create_instance),
        )
        .route("/instances/{id}", get(work::instance))
        .route("/instances/{id}/secrets", post(work::rotate_secrets))
        .route("/flows", get(work::flows).post(work::create_flow))
        .route("/flows/{id}", get(work::flow))
        .route("/flows/{id}/run", post(work::run_flow))
        .route("/flows/{id}/steps/{step}/rebind", post(work::rebind_step))
        .route("/audit", get(work::audit))
        .layer(axum::middleware::map_response(guarded))
}

/// Every console answer: no script and no framing (clickjacking), no caching of pages that
/// show an organisation's data, no guessing of types.
async fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// What a console handler answers: a page, a redirect, or an error page.
pub(crate) type Answer = Result<Response, Failure>;

/// An error shown as a page: its status, code and message, with a way back.
pub(crate) struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    who: Option<Box<SignedIn>>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            who: None,
        }
    }

    /// The same failure, shown to `who` (with the navigation of a signed-in page).
    pub(crate) fn to(mut self, who: &SignedIn) -> Self {
        self.who = Some(Box::new(who.clone()));
        self
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", message)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.code(), e.public_message())
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = html! {
            div.failure role="alert" {
                h2 { "Refused: " (self.code) }
                p.message { (self.message) }
            }
            p { a href="/connectors" { "Manage connectors" } " · " a href="/marketplace" { "Marketplace" } }
        };
        (self.status, page("Refused", self.who.as_deref(), body)).into_response()
    }
}

/// Refuse `who` unless its role permits `R`'s actions (the page did not offer them; a forged
/// post gets this).
pub(crate) fn require<R: Needs>(who: &SignedIn) -> Result<(), Failure> {
    if R::permits(who.principal.role) {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs {}", R::NEEDS),
        )
        .to(who))
    }
}

/// Whether `who`'s role includes `role`: what decides which actions a page shows.
pub(crate) fn may(who: &SignedIn, role: Role) -> bool {
    who.principal.role.allows(role)
}

/// A full page: the navigation (for a signed-in `who`), the title and `body`.
pub(crate) fn page(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gantry" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header {
                    a.brand href="/" { "Gantry" }
                    @if let Some(who) = who {
                        nav aria-label="Main" {
                            a href="/marketplace" { "Marketplace" }
                            @if may(who, Role::Publisher) { a href="/publish" { "Publish" } }
                            a href="/connectors" { "Manage connectors" }
                            a href="/instances" { "Instances" }
                            a href="/flows" { "Flows" }
                            @if may(who, Role::Admin) { a href="/audit" { "Audit" } }
                        }
                        form.signout method="post" action="/sign-out" {
                            (csrf(who))
                            span.who { (who.principal.org) " · " (kebab(&who.principal.role)) " · " (who.principal.label) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub(crate) fn csrf(who: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

/// Answer with `markup`, 200.
pub(crate) fn shown(markup: Markup) -> Answer {
    Ok(markup.into_response())
}

/// After a post: see `to` (303, so a reload does not post again).
pub(crate) fn see(to: &str) -> Answer {
    Ok(Redirect::to(to).into_response())
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        PreEscaped(include_str!("console.css")).0,
    )
        .into_response()
}

//! Signing in and out, and who a console request is: [`Seen`] for pages, [`Posted`] for forms
//! (session, role and CSRF token checked before the handler runs).

use super::{Answer, Failure, page, require, see};
use crate::api::auth::{Needs, Viewer};
use crate::api::state::AppState;
use crate::registry::{SESSION_MS, SignedIn};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use std::marker::PhantomData;

/// The session cookie; and the sign-in form's own cookie (a form token before any session).
const SESSION: &str = "gantry_session";
const SIGN_IN: &str = "gantry_sign_in";

/// A signed-in viewer of a page, holding at least the role `R` names.
pub(crate) struct Seen<R>(pub(crate) SignedIn, pub(crate) PhantomData<R>);

/// A form posted by a signed-in session holding the role `R` names, with the session's CSRF
/// token: its fields, by name.
pub(crate) struct Posted<R> {
    pub(crate) who: SignedIn,
    pub(crate) fields: Fields,
    cookie: String,
    _role: PhantomData<R>,
}

/// A posted form's fields, in order.
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`, if the form has it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed; empty when the form lacks it.
    pub(crate) fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default().trim()
    }

    /// The fields whose names start with `prefix`, the prefix taken off.
    pub(crate) fn prefixed<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .iter()
            .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }

    /// Every value of `name` (checkboxes).
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl From<Vec<(String, String)>> for Fields {
    fn from(fields: Vec<(String, String)>) -> Self {
        Self(fields)
    }
}

/// The value of cookie `name` in the request's headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session of a request's cookie, or where to go instead (sign in; 403).
async fn signed_in<R: Needs>(
    parts: &Parts,
    state: &AppState,
) -> Result<(SignedIn, String), Response> {
    let to_sign_in = || Redirect::to("/sign-in").into_response();
    let Some(value) = cookie(&parts.headers, SESSION).map(str::to_string) else {
        return Err(to_sign_in());
    };
    let cookie = value.clone();
    let found = state
        .blocking(move |r| r.session(&cookie))
        .await
        .map_err(|e| Failure::from(e).into_response())?;
    let who = found.ok_or_else(to_sign_in)?;
    if let Some(org) = parts
        .extensions
        .get::<crate::api::request_log::RequestOrg>()
    {
        let _ = org.0.set(who.principal.org.clone());
    }
    require::<R>(&who).map_err(IntoResponse::into_response)?;
    Ok((who, value))
}

impl<R: Needs> FromRequestParts<AppState> for Seen<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let (who, _) = signed_in::<R>(parts, state).await?;
        Ok(Seen(who, PhantomData))
    }
}

impl<R: Needs> FromRequest<AppState> for Posted<R> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let (who, cookie) = signed_in::<R>(&parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = Fields::parse(&body);
        if !same(fields.text("csrf"), &who.csrf) {
            return Err(forged(&who));
        }
        Ok(Posted {
            who,
            fields,
            cookie,
            _role: PhantomData,
        })
    }
}

/// The refusal of a post without its session's form token.
pub(crate) fn forged(who: &SignedIn) -> Response {
    Failure::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "the form's token is missing or not this session's; reload the page and try again",
    )
    .to(who)
    .into_response()
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// A `Set-Cookie` value: `name=value`, never readable by script, never sent cross-site, and
/// sent over HTTPS only when the server speaks TLS.
fn cookie_header(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> String {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}")
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness the form token is empty, and every sign-in post is refused.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    hex::encode(bytes)
}

fn sign_in_form(form_token: &str, problem: Option<&str>) -> maud::Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(problem) = problem {
                p.failure role="alert" { (problem) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="form" value=(form_token);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="gty_…" aria-describedby="token-help";
                p #token-help.help { "An API token of your organisation. The console keeps a session for 8 hours at most; the token itself is not stored in the browser." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The sign-in form, with a fresh form token in its own cookie.
pub(crate) async fn sign_in_page(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Response {
    let token = random_hex();
    let set = cookie_header(&state, SIGN_IN, &token, "/sign-in", 1800);
    ([(header::SET_COOKIE, set)], sign_in_form(&token, None)).into_response()
}

/// Exchange an API token for a session cookie.
pub(crate) async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let fields = Fields::parse(&body);
    let expected = cookie(&headers, SIGN_IN).unwrap_or_default();
    if expected.is_empty() || !same(fields.text("form"), expected) {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the sign-in form's token is missing or stale; open the sign-in page again",
        ));
    }
    let token = fields.text("token").to_string();
    let opened = state.blocking(move |r| r.open_session(&token)).await?;
    let Some((session, _)) = opened else {
        let again = random_hex();
        let set = cookie_header(&state, SIGN_IN, &again, "/sign-in", 1800);
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, set)],
            sign_in_form(&again, Some("That token is unknown, revoked or expired.")),
        )
            .into_response());
    };
    let set = cookie_header(&state, SESSION, &session, "/", SESSION_MS / 1000);
    let clear = cookie_header(&state, SIGN_IN, "", "/sign-in", 0);
    let mut response = see("/connectors")?;
    let headers = response.headers_mut();
    for value in [set, clear] {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// End the session: its cookie is forgotten by the browser and by the store.
pub(crate) async fn sign_out(
    axum::extract::State(state): axum::extract::State<AppState>,
    posted: Posted<Viewer>,
) -> Answer {
    let cookie = posted.cookie;
    state.blocking(move |r| r.close_session(&cookie)).await?;
    let clear = cookie_header(&state, SESSION, "", "/", 0);
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/sign-in")).into_response())
}

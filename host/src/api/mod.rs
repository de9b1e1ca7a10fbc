//! The HTTP API (`/v1`, JSON, bearer tokens) over a [`Registry`]: one axum [`Router`], one
//! [`ApiError`] shape (`{"error": {"code", "message"}}`) for every failure, `/healthz` and
//! Prometheus `/metrics`.
//!
//! Another organisation's private objects answer 404 exactly like missing ones (the registry
//! scopes every lookup). 5xx details are logged, never returned. A new route goes in the file
//! of its resource under `routes/`, into [`router`] and into the OpenAPI document
//! (`openapi.rs`).

mod auth;
mod console;
mod error;
mod metrics;
mod openapi;
mod request_log;
mod routes;
mod server;
mod state;
pub mod wire;

pub use error::ApiError;
pub use openapi::ApiDoc;
pub use server::{DrainTimedOut, Draining, ServeOptions, TlsError, serve, tls_config};

use crate::registry::Registry;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use metrics::Metrics;
use routes::{connectors, flows, installs, instances, ops, tokens};
use serde_json::json;
use state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest component upload, in bytes (413 beyond it, before the body is read past it).
    pub max_upload_bytes: usize,
    /// Largest JSON body, in bytes.
    pub max_json_bytes: usize,
    /// Calls (invokes and flow runs) in flight at once; 429 beyond.
    pub max_concurrent_calls: usize,
    /// Calls in flight at once of any one organisation; 429 beyond.
    pub max_calls_per_org: usize,
    /// Longest a client may take to send a request body.
    pub body_timeout: Duration,
    /// Mark the console's cookies `Secure` (sent over HTTPS only): set when serving TLS.
    pub secure_cookies: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 32 << 20,
            max_json_bytes: 4 << 20,
            max_concurrent_calls: 64,
            max_calls_per_org: 16,
            body_timeout: Duration::from_secs(30),
            secure_cookies: false,
        }
    }
}

/// The API's router.
pub fn router(registry: Arc<Registry>, config: ApiConfig) -> Router {
    let state = AppState {
        registry,
        calls: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
        max_calls: config.max_concurrent_calls.max(1),
        per_org: Arc::new(Mutex::new(HashMap::new())),
        max_per_org: config.max_calls_per_org.max(1),
        metrics: Arc::new(Metrics::default()),
        secure_cookies: config.secure_cookies,
    };
    let publish = Router::new()
        .route("/v1/connectors", post(connectors::publish_as_described))
        .route(
            "/v1/connectors/{name}/versions/{version}",
            post(connectors::publish).delete(connectors::delete_version),
        )
        .layer(DefaultBodyLimit::max(config.max_upload_bytes));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(|| async { Json(<ApiDoc as utoipa::OpenApi>::openapi()) }),
        )
        .route(
            "/v1/connectors/{name}/versions/{version}/state",
            post(connectors::set_state),
        )
        .route("/v1/marketplace", get(connectors::marketplace))
        .route(
            "/v1/connectors/{org}/{name}/versions",
            get(connectors::versions),
        )
        .route(
            "/v1/connectors/{org}/{name}/versions/{version}/usage",
            get(connectors::usage),
        )
        .route(
            "/v1/installs",
            post(installs::install).get(installs::installs),
        )
        .route("/v1/installs/{id}", get(installs::get_install))
        .route("/v1/installs/{id}/customisations", put(installs::customise))
        .route("/v1/installs/{id}/outbound", put(installs::grant_outbound))
        .route("/v1/installs/{id}/update", post(installs::update))
        .route("/v1/installs/{id}/update-plan", get(installs::update_plan))
        .route("/v1/installs/{id}/usage", get(installs::usage))
        .route("/v1/installs/{id}/rebind", post(installs::rebind_install))
        .route(
            "/v1/instances",
            post(instances::create_instance).get(instances::instances),
        )
        .route("/v1/instances/{id}", get(instances::get_instance))
        .route("/v1/instances/{id}/secrets", put(instances::rotate_secrets))
        .route(
            "/v1/instances/{id}/invoke/{operation}",
            post(instances::invoke),
        )
        .route("/v1/flows", post(flows::create_flow).get(flows::flows))
        .route("/v1/flows/{id}", get(flows::get_flow))
        .route(
            "/v1/flows/{id}/runs",
            post(flows::run_flow).get(flows::runs),
        )
        .route(
            "/v1/flows/{id}/steps/{step}/rebind",
            post(flows::rebind_step),
        )
        .route("/v1/flows/{id}/record", put(flows::set_record))
        .route(
            "/v1/flows/{id}/steps/{step}/recordings",
            get(flows::recordings),
        )
        .route("/v1/flows/{id}/steps/{step}/replay", post(flows::replay))
        .route(
            "/v1/flows/{id}/steps/{step}/canary",
            post(flows::start_canary).get(flows::canary),
        )
        .route(
            "/v1/flows/{id}/steps/{step}/canary/promote",
            post(flows::promote_canary),
        )
        .route(
            "/v1/flows/{id}/steps/{step}/canary/rollback",
            post(flows::roll_back_canary),
        )
        .route("/v1/audit", get(ops::audit_log))
        .route("/v1/backup", post(ops::backup))
        .route("/v1/orgs", post(tokens::create_org).get(tokens::orgs))
        .route("/v1/orgs/{org}/tokens", post(tokens::mint_org_token))
        .route("/v1/tokens", post(tokens::create_token).get(tokens::tokens))
        .route("/v1/tokens/{id}", delete(tokens::revoke_token))
        .layer(DefaultBodyLimit::max(config.max_json_bytes))
        .merge(publish)
        .merge(console::router().layer(DefaultBodyLimit::max(config.max_upload_bytes)))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            config.body_timeout,
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no-route", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_log::log_request,
        ))
        .with_state(state)
}

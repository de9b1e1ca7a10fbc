//! One log line per HTTP request (target `gantry::http`): method, route template, status,
//! duration, organisation and request id — never a token, a secret or a body. The request id
//! is the client's `x-request-id` when it is a sane one, else a new one; it is answered in
//! `x-request-id` and is a field of the request's span, so every line logged while serving the
//! request — a guest's log lines included — carries it.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::Instrument;

/// The organisation a request acted in, once its token is known ([`super::auth::Caller`]
/// fills it in).
#[derive(Clone, Default)]
pub(crate) struct RequestOrg(pub(crate) Arc<OnceLock<String>>);

const HEADER: &str = "x-request-id";

/// The client's request id if it is 1–64 characters of `[A-Za-z0-9._:-]` (anything else
/// could forge log lines or fill them), else a new random one.
fn request_id(header: Option<&HeaderValue>) -> String {
    let sane = |id: &&str| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if let Some(id) = header.and_then(|v| v.to_str().ok()).filter(sane) {
        return id.to_string();
    }
    // A random prefix per process and a counter: unique, and no system call per request.
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        u64::from_le_bytes(random)
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix:016x}{n:08x}")
}

pub(crate) async fn log_request(
    State(state): State<super::state::AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers().get(HEADER));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_string(), |p| p.as_str().to_string());
    let org = RequestOrg::default();
    request.extensions_mut().insert(org.clone());
    let span = tracing::info_span!(target: "gantry::http", "request", request_id = %id);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .record_request(&route, status, elapsed.as_secs_f64());
    let duration_us = elapsed.as_micros() as u64;
    let org = org.0.get().map_or("-", String::as_str);
    span.in_scope(|| {
        tracing::info!(target: "gantry::http", %method, route, status, duration_us, org, "request");
    });
    response
}

#[cfg(test)]
mod tests {
    use super::request_id;
    use axum::http::HeaderValue;

    #[test]
    fn a_sane_request_id_is_kept_and_anything_else_replaced() {
        let kept = HeaderValue::from_static("flow-run:42_a.b");
        assert_eq!(request_id(Some(&kept)), "flow-run:42_a.b");
        for bad in ["", "has space", "new\\nline", &"x".repeat(65)] {
            let header = HeaderValue::from_str(bad).ok();
            let id = request_id(header.as_ref());
            assert_ne!(id, bad);
            assert_eq!(id.len(), 24, "a new id: {id}");
        }
    }
}

//! What every route shares ([`AppState`]): the registry, the places for calls in flight (in all
//! and per organisation) and the metrics.

use super::error::ApiError;
use super::metrics::Metrics;
use crate::registry::Registry;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) calls: Arc<Semaphore>,
    /// How many places `calls` has.
    pub(crate) max_calls: usize,
    /// Calls in flight by organisation, and how many one organisation may have.
    pub(crate) per_org: Arc<Mutex<HashMap<String, usize>>>,
    pub(crate) max_per_org: usize,
    pub(crate) metrics: Arc<Metrics>,
    /// Whether the console's cookies are marked `Secure` (the server speaks TLS).
    pub(crate) secure_cookies: bool,
}

/// A call's place among the calls in flight, overall and in its organisation's share.
pub(crate) struct CallPermit {
    _overall: tokio::sync::OwnedSemaphorePermit,
    org: String,
    per_org: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_org.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                per_org.remove(&self.org);
            }
        }
    }
}

impl AppState {
    /// A place for one more call of `org`: refused (429) when the server has as many calls in
    /// flight as it takes, or `org` has its share of them — so one organisation's slow or
    /// hostile calls cannot take every place.
    pub(crate) fn call_permit(&self, org: &str) -> Result<CallPermit, ApiError> {
        let busy = |message: String| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-calls", message)
        };
        let overall = self
            .calls
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("too many calls in flight; retry shortly".into()))?;
        let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
        let n = per_org.entry(org.to_string()).or_default();
        if *n >= self.max_per_org {
            return Err(busy(format!(
                "organisation {org} has {n} calls in flight, its share; retry shortly"
            )));
        }
        *n += 1;
        Ok(CallPermit {
            _overall: overall,
            org: org.to_string(),
            per_org: self.per_org.clone(),
        })
    }

    /// Run `work` on the registry on a blocking thread: its store units do file I/O and
    /// fsyncs, which must not hold up a tokio worker (and the calls it runs).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Registry) -> T + Send + 'static,
    ) -> T {
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || work(&registry)).await {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

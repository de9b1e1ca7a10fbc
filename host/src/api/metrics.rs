//! `/metrics`' counters and latency histograms. Calls are kept by organisation: an
//! organisation's scrape shows its own series only. HTTP requests (by route template and
//! status) and the runtime's work are the server's: the platform operator's scrape shows those,
//! and they name no connector.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Call counters and latency histograms for `/metrics`, by organisation: a scrape shows the
/// calling organisation's series only.
/// connector, version, digest, outcome.
pub(crate) type CallLabels = (String, String, String, &'static str);

#[derive(Default)]
pub(crate) struct Metrics {
    calls: Mutex<BTreeMap<String, BTreeMap<CallLabels, Histogram>>>,
    /// Requests by route template, then status.
    http: Mutex<BTreeMap<String, BTreeMap<u16, Requests>>>,
}

/// Requests of one route and status: how many, and their total seconds.
type Requests = (u64, f64);

/// What the platform's scrape shows besides HTTP requests.
pub(crate) struct ServerGauges {
    pub(crate) calls_in_flight: usize,
    pub(crate) runtime: crate::runtime::RuntimeStats,
}

pub(crate) const BUCKETS: [f64; 10] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
pub(crate) struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A label value as the Prometheus text format writes it.
pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub(crate) fn record(
        &self,
        org: &str,
        connector: &str,
        version: &str,
        digest: &str,
        outcome: &'static str,
        seconds: f64,
    ) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let h = calls
            .entry(org.to_string())
            .or_default()
            .entry((connector.into(), version.into(), digest.into(), outcome))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Count one request of `route` answered with `status` after `seconds`.
    pub(crate) fn record_request(&self, route: &str, status: u16, seconds: f64) {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        // Allocates only for a route's first request.
        let by_status = match http.get_mut(route) {
            Some(by_status) => by_status,
            None => http.entry(route.to_string()).or_default(),
        };
        let entry = by_status.entry(status).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// The server's series: HTTP requests by route and status (429s among them), calls in
    /// flight, compiles and their time, the artifact cache, connectors loaded.
    pub(crate) fn render_server(&self, gauges: &ServerGauges) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# HELP gantry_http_requests_total HTTP requests by route template and status.\n# TYPE gantry_http_requests_total counter\n");
        let rows = || {
            http.iter()
                .flat_map(|(route, by)| by.iter().map(move |(status, n)| (route, status, n)))
        };
        for (route, status, (count, _)) in rows() {
            let _ = writeln!(
                out,
                "gantry_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                label(route)
            );
        }
        out.push_str("# HELP gantry_http_request_duration_seconds_total Time spent answering, by route template and status.\n# TYPE gantry_http_request_duration_seconds_total counter\n");
        for (route, status, (_, seconds)) in rows() {
            let _ = writeln!(
                out,
                "gantry_http_request_duration_seconds_total{{route=\"{}\",status=\"{status}\"}} {seconds}",
                label(route)
            );
        }
        let r = &gauges.runtime;
        let series: [(&str, &str, &str, String); 8] = [
            (
                "gantry_calls_in_flight",
                "gauge",
                "Calls (invokes and flow runs) running now.",
                gauges.calls_in_flight.to_string(),
            ),
            (
                "gantry_compiles_total",
                "counter",
                "Components compiled.",
                r.compiled.to_string(),
            ),
            (
                "gantry_compile_seconds_total",
                "counter",
                "Time spent compiling components.",
                (r.compile_micros as f64 / 1e6).to_string(),
            ),
            (
                "gantry_compiles_running",
                "gauge",
                "Compiles running now.",
                r.compiling.to_string(),
            ),
            (
                "gantry_artifact_cache_hits_total",
                "counter",
                "Components loaded from the artifact cache.",
                r.cache_hits.to_string(),
            ),
            (
                "gantry_artifact_cache_misses_total",
                "counter",
                "Components not found in the artifact cache (then compiled).",
                r.cache_misses.to_string(),
            ),
            (
                "gantry_artifact_cache_bytes",
                "gauge",
                "Bytes of precompiled artifacts on disk (bounded; the least recently used go first).",
                r.cache_bytes.to_string(),
            ),
            (
                "gantry_connectors_loaded",
                "gauge",
                "Connectors loaded now.",
                r.loaded.to_string(),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    /// The series of `org`'s calls.
    pub(crate) fn render(&self, org: &str) -> String {
        use std::fmt::Write;
        let all = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let empty = BTreeMap::new();
        let calls = all.get(org).unwrap_or(&empty);
        let mut out = String::new();
        out.push_str("# HELP gantry_calls_total Connector calls by outcome.\n# TYPE gantry_calls_total counter\n");
        let labels = |(c, v, d, o): &CallLabels| {
            format!(
                "connector=\"{}\",version=\"{}\",digest=\"{}\",outcome=\"{o}\"",
                label(c),
                label(v),
                label(d)
            )
        };
        for (key, h) in calls.iter() {
            let _ = writeln!(out, "gantry_calls_total{{{}}} {}", labels(key), h.count);
        }
        out.push_str("# HELP gantry_call_duration_seconds Connector call latency.\n# TYPE gantry_call_duration_seconds histogram\n");
        for (key, h) in calls.iter() {
            let labels = labels(key);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gantry_call_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gantry_call_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

//! `/metrics`' counters and latency histograms, kept by organisation: a scrape shows the
//! calling organisation's series only.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Call counters and latency histograms for `/metrics`, by organisation: a scrape shows the
/// calling organisation's series only.
/// connector, version, digest, outcome.
pub(crate) type CallLabels = (String, String, String, &'static str);

#[derive(Default)]
pub(crate) struct Metrics {
    calls: Mutex<BTreeMap<String, BTreeMap<CallLabels, Histogram>>>,
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

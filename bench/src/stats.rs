//! Latency samples and the closed-loop driver that collects them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run of calls measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub calls: usize,
    pub failures: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Wall-clock length of the measured window.
    pub elapsed: Duration,
}

impl Summary {
    /// Summarise per-call latencies (successes and failures alike) taken over `elapsed`.
    pub fn new(mut samples: Vec<Duration>, failures: usize, elapsed: Duration) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Self {
            calls: samples.len(),
            failures,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
            elapsed,
        }
    }

    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// How long to warm up and measure, and with how many concurrent callers.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub callers: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Run `callers` threads, each with its own call closure from `make`, calling back to back
/// for the warm-up and then the measured window. A call returns whether it succeeded.
pub fn closed_loop_threads<M, C>(load: Load, make: M) -> Summary
where
    M: Fn() -> C + Sync,
    C: FnMut() -> bool,
{
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..load.callers.max(1))
            .map(|_| {
                let make = &make;
                scope.spawn(move || caller(measure_from, end, Duration::ZERO, make()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    merge(results, load.duration)
}

/// The same on tokio tasks: `callers` tasks calling `call` back to back.
pub async fn closed_loop_tasks<F, Fut>(load: Load, call: F) -> Summary
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let tasks: Vec<_> = (0..load.callers.max(1))
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = 0;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let ok = call().await;
                    if t0 >= measure_from {
                        samples.push(t0.elapsed());
                        failures += usize::from(!ok);
                    }
                }
                (samples, failures)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("a caller task panicked"));
    }
    merge(results, load.duration)
}

/// One caller on the calling thread that idles for `gap` after each call — as a server's
/// thread waits between one client's requests — for the warm-up and then the measured window.
/// Only the calls are timed.
pub fn paced_loop<C: FnMut() -> bool>(load: Load, gap: Duration, call: C) -> Summary {
    let measure_from = Instant::now() + load.warmup;
    let end = measure_from + load.duration;
    merge(vec![caller(measure_from, end, gap, call)], load.duration)
}

/// One caller on this thread until `end`, idle for `gap` after each call: the latencies of the
/// calls started from `measure_from` on, and how many of those failed.
fn caller(
    measure_from: Instant,
    end: Instant,
    gap: Duration,
    mut call: impl FnMut() -> bool,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::new();
    let mut failures = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let ok = call();
        if t0 >= measure_from {
            samples.push(t0.elapsed());
            failures += usize::from(!ok);
        }
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    (samples, failures)
}

fn merge(results: Vec<(Vec<Duration>, usize)>, elapsed: Duration) -> Summary {
    let failures = results.iter().map(|(_, f)| f).sum();
    let samples = results.into_iter().flat_map(|(s, _)| s).collect();
    Summary::new(samples, failures, elapsed)
}

/// Format a duration for a table: µs below 10 ms, ms above.
pub fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        let s = Summary::new(samples, 2, Duration::from_secs(2));
        assert_eq!(s.calls, 100);
        assert_eq!(s.failures, 2);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p90, Duration::from_micros(90));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.max, Duration::from_micros(100));
        assert_eq!(s.per_second(), 50.0);
        let one = Summary::new(vec![Duration::from_micros(7)], 0, Duration::from_secs(1));
        let seven = Duration::from_micros(7);
        assert_eq!((one.p50, one.p99, one.max), (seven, seven, seven));
        assert_eq!(
            Summary::new(Vec::new(), 0, Duration::from_secs(1)).p99,
            Duration::ZERO
        );
    }
}

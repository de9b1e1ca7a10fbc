//! The latency report (`gantry bench`): every path of every case at 1 and N callers, the cold
//! paths, the hot swap and many loaded versions, with ratios to the baselines from the same run.

use crate::cases::{self, Case};
use crate::raw::{RawComponent, RawHost};
use crate::scenario::{self, Deployment, HttpServer};
use crate::stats::{Load, Summary, closed_loop_tasks, closed_loop_threads, fmt, paced_loop};
use anyhow::{Context, Result};
use gantry_host::{CallContext, Connector, Runtime};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What to measure and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// The standard cases (echo 100 B and 10 KB, `json-transform` pick on 1 KB), or one case of
    /// the user's own connector.
    pub cases: Vec<Case>,
    /// Where each case's connector bytes come from.
    pub connectors: Vec<(String, Vec<u8>)>,
    /// Concurrent callers of the "N callers" column.
    pub callers: usize,
    /// Measured window of each path, after a warm-up of a fifth of it.
    pub duration: Duration,
    /// Loaded-version counts to measure per-call cost at.
    pub loaded: Vec<usize>,
    /// How often the hot-swap run rebinds.
    pub swap_every: Duration,
    /// Repetitions of each cold path.
    pub cold_runs: usize,
}

impl Options {
    /// The standard cases on the sample connectors built in `samples` (the directory of
    /// `echo.wasm` and `json_transform.wasm`).
    pub fn standard(samples: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<(String, Vec<u8>)> {
            let path = samples.join(format!("{}.wasm", name.replace('-', "_")));
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (build the samples: cargo build --release --target wasm32-wasip2 \
                     --manifest-path sample-connectors/Cargo.toml)",
                    path.display()
                )
            })?;
            Ok((name.to_string(), bytes))
        };
        Ok(Self::with(
            cases::standard(),
            vec![read("echo")?, read("json-transform")?],
        ))
    }

    /// One case of a user's connector: `operation` on `input`.
    pub fn custom(path: PathBuf, operation: String, input: String) -> Result<Self> {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str::<serde_json::Value>(&input).context("the input is not JSON")?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "connector".into());
        let case = Case {
            name: format!("{name}.{operation}"),
            connector: name.clone(),
            operation,
            input,
            native: None,
        };
        Ok(Self::with(vec![case], vec![(name, bytes)]))
    }

    fn with(cases: Vec<Case>, connectors: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            cases,
            connectors,
            callers: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            duration: Duration::from_secs(1),
            loaded: vec![1, 10, 100],
            swap_every: Duration::from_millis(2),
            cold_runs: 5,
        }
    }

    pub(crate) fn bytes(&self, connector: &str) -> Result<&[u8]> {
        self.connectors
            .iter()
            .find(|(name, _)| name == connector)
            .map(|(_, bytes)| bytes.as_slice())
            .with_context(|| format!("no bytes for connector {connector}"))
    }

    pub(crate) fn load(&self, callers: usize) -> Load {
        Load {
            callers,
            warmup: self.duration / 5,
            duration: self.duration,
        }
    }
}

/// One path of one case, at one caller and at N.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: &'static str,
    pub one: Summary,
    pub many: Summary,
}

/// Everything the report measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub cases: Vec<CaseResults>,
    pub publish_first_call: Vec<Duration>,
    pub restart_first_call: Vec<Duration>,
    /// Steady and swapping windows, interleaved.
    pub hot_swap: Vec<SwapRound>,
    /// One caller, calls going round `count` loaded versions.
    pub loaded: Vec<Loaded>,
    /// Flow runs of one step, p50 without and with recording, one pair per round.
    pub recording: Vec<(Duration, Duration)>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// One case: every path at 1 and N callers, and Gantry against the hand-rolled host.
#[derive(Debug, Clone)]
pub struct CaseResults {
    pub case: Case,
    pub rows: Vec<Row>,
    /// Gantry in-process against wasmtime's fresh instance, alternating.
    pub versus_raw: Alternating,
    /// Calls/s of instance calls through the registry, 2 callers ÷ 1, one ratio per round of
    /// a 1-caller window and a 2-caller window back to back.
    pub registry_scaling: Vec<f64>,
    /// What the invoke route adds over HTTP, against the registry call it makes.
    pub http: Vec<HttpRound>,
}

/// One round of the HTTP overhead: `/healthz` and the invoke route over one keep-alive
/// connection, then the registry call in-process from one thread, back to back and paced.
#[derive(Debug, Clone)]
pub struct HttpRound {
    pub healthz: Summary,
    pub invoke: Summary,
    /// Registry calls back to back: every cache warm, the CPU never idle.
    pub back_to_back: Summary,
    /// Registry calls with the thread idle between them for the round's `/healthz` p50, as a
    /// server's thread is between one client's requests.
    pub paced: Summary,
}

impl HttpRound {
    /// What the invoke route adds beyond the server's floor: invoke p50 − `/healthz` p50.
    pub fn route(&self) -> Duration {
        self.invoke.p50.saturating_sub(self.healthz.p50)
    }

    fn failures(&self) -> usize {
        [self.healthz, self.invoke, self.back_to_back, self.paced]
            .iter()
            .map(|s| s.failures)
            .sum()
    }

    fn route_over(&self, call: &Summary) -> f64 {
        self.route().as_secs_f64() / call.p50.as_secs_f64().max(f64::EPSILON)
    }
}

/// Rounds of the HTTP overhead.
const HTTP_ROUNDS: u32 = 6;

/// One round of the hot swap: a window of calls without rebinds, then one with them.
#[derive(Debug, Clone)]
pub struct SwapRound {
    pub steady: Summary,
    pub swapping: Summary,
    pub rebinds: usize,
}

impl SwapRound {
    fn p99_ratio(&self) -> f64 {
        self.swapping.p99.as_secs_f64() / self.steady.p99.as_secs_f64().max(f64::EPSILON)
    }
}

/// Rounds of the hot swap: steady and swapping windows alternate, so a disturbance of the
/// machine (frequent on a shared box) lands in both kinds of window instead of skewing one.
const SWAP_ROUNDS: u32 = 4;
/// Rounds of the recording cost: runs without recording, then as many with it.
const RECORDING_ROUNDS: usize = 5;
/// Runs of each kind per round, at most (fewer in a short measurement: one per 10 ms of it).
const RECORDING_RUNS: usize = 200;

/// Calls going round `count` distinct versions of one connector: Gantry, and the hand-rolled
/// host on as many components (what the growth costs wasmtime itself).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub count: usize,
    pub calls: Alternating,
}

/// Gantry's calls and the hand-rolled host's, one caller each, in short windows taken in turn,
/// so that each ratio compares calls made moments apart. Measured in one long window each, a
/// machine that slowed down for a second or two (frequent on a shared box) swung the ratio:
/// from 0.8× to 1.3× for one call, from 1.0× to 1.8× going round 100 versions.
#[derive(Debug, Clone, Default)]
pub struct Alternating {
    pub rounds: Vec<Round>,
}

/// One round: a window of Gantry's calls, then one of the hand-rolled host's (`None` when it
/// could not load the component), and, where measured, one of the hand-rolled host with a CPU
/// deadline.
#[derive(Debug, Clone)]
pub struct Round {
    pub gantry: Summary,
    pub raw: Option<Summary>,
    pub raw_deadline: Option<Summary>,
}

/// Rounds of an [`Alternating`] measurement.
const ROUNDS: u32 = 16;

/// Rounds of the registry's calls/s with 1 and 2 callers.
const SCALING_ROUNDS: u32 = 8;

/// A side of an [`Alternating`] measurement: calls under a load.
type Side<'a> = Box<dyn FnMut(Load) -> Summary + 'a>;

impl Alternating {
    /// [`ROUNDS`] rounds; each side gets twice the usual window in all, in short windows with
    /// a short warm-up (the other sides' calls have just run).
    fn measure(
        options: &Options,
        mut gantry: Side,
        mut raw: Option<Side>,
        mut raw_deadline: Option<Side>,
    ) -> Self {
        let load = Load {
            callers: 1,
            warmup: options.duration / (ROUNDS * 5),
            duration: options.duration * 2 / ROUNDS,
        };
        let rounds = (0..ROUNDS)
            .map(|_| Round {
                gantry: gantry(load),
                raw: raw.as_mut().map(|raw| raw(load)),
                raw_deadline: raw_deadline.as_mut().map(|raw| raw(load)),
            })
            .collect();
        Self { rounds }
    }

    /// Each round's Gantry p50 ÷ the p50 of the baseline `base` picks.
    pub fn ratios(&self, base: Baseline) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| {
                let base = base(r)?.p50.as_secs_f64();
                Some(r.gantry.p50.as_secs_f64() / base.max(f64::EPSILON))
            })
            .collect()
    }

    pub fn gantry_p50(&self) -> Option<Duration> {
        median(self.rounds.iter().map(|r| r.gantry.p50))
    }

    pub fn raw_p50(&self) -> Option<Duration> {
        median(self.rounds.iter().filter_map(|r| Some(r.raw?.p50)))
    }

    /// `1.12× (1.08–1.17×)`: the median of the rounds' ratios to `base`, the figure the
    /// targets are about, and the middle half of them; `None` without that baseline.
    fn describe(&self, base: Baseline) -> Option<String> {
        let ratios = self.ratios(base);
        Some(format!(
            "{:.2}× ({})",
            median(ratios.iter().copied())?,
            middle_half(&ratios)
        ))
    }
}

/// Picks a baseline out of a [`Round`].
type Baseline = fn(&Round) -> Option<&Summary>;

fn raw(round: &Round) -> Option<&Summary> {
    round.raw.as_ref()
}

fn raw_deadline(round: &Round) -> Option<&Summary> {
    round.raw_deadline.as_ref()
}

pub const NATIVE: &str = "native fn";
pub const RAW_LIVE: &str = "wasmtime, live instance";
pub const RAW_FRESH: &str = "wasmtime, fresh instance";
pub const RAW_FRESH_DEADLINE: &str = "wasmtime, fresh + CPU deadline";
pub const GANTRY: &str = "gantry in-process";
pub const GANTRY_INSTANCE: &str = "gantry instance (registry)";
pub const GANTRY_HTTP: &str = "gantry over HTTP";

/// Measure everything in `options`, printing progress to `progress`.
pub fn measure(options: &Options, progress: &mut dyn Write) -> Result<Results> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let raw = RawHost::new()?;
    let raw_with_deadline = RawHost::with_cpu_deadline()?;
    let dir = tempfile::tempdir()?;
    let runtime = scenario::runtime_in(dir.path())?;
    let mut results = Results::default();

    for case in &options.cases {
        writeln!(progress, "measuring {} …", case.name)?;
        let bytes = options.bytes(&case.connector)?;
        let mut rows = Vec::new();
        let (op, input) = (case.operation.as_str(), case.input.as_str());
        // One call first: a case that fails is reported as such, not measured.
        let connector = tokio.block_on(runtime.load(bytes))?;
        tokio
            .block_on(runtime.invoke(&connector, op, input, &CallContext::default()))
            .with_context(|| format!("{}: the call fails", case.name))?;
        if let Some(native) = case.native {
            rows.push(row(NATIVE, options, |load| {
                closed_loop_threads(load, || {
                    move || {
                        black_box(native(black_box(input)));
                        true
                    }
                })
            }));
        }
        // The hand-rolled host, and the same with a CPU deadline.
        let components = raw
            .load(bytes)
            .and_then(|plain| Ok((plain, raw_with_deadline.load(bytes)?)))
            .map_err(|e| {
                results.notes.push(format!(
                    "{}: no hand-rolled wasmtime baseline ({e:#})",
                    case.name
                ))
            })
            .ok();
        if let Some((component, with_deadline)) = &components {
            rows.push(row(RAW_LIVE, options, |load| {
                closed_loop_threads(load, || {
                    let mut live = component.live().expect("instantiating");
                    move || live.call(op, input).is_ok()
                })
            }));
            rows.push(row(RAW_FRESH, options, |load| {
                raw_fresh_calls(component, op, input, load)
            }));
            rows.push(row(RAW_FRESH_DEADLINE, options, |load| {
                raw_fresh_calls(with_deadline, op, input, load)
            }));
        }
        let one = vec![connector];
        let gantry = |load| tokio.block_on(gantry_calls(&runtime, &one, op, input, load));
        rows.push(row(GANTRY, options, gantry));
        let fresh = |component| -> Side {
            Box::new(move |load| raw_fresh_calls(component, op, input, load))
        };
        let versus_raw = Alternating::measure(
            options,
            Box::new(gantry),
            components.as_ref().map(|(plain, _)| fresh(plain)),
            components
                .as_ref()
                .map(|(_, with_deadline)| fresh(with_deadline)),
        );

        let case_dir = tempfile::tempdir()?;
        let deployment =
            tokio.block_on(Deployment::new(case_dir.path(), runtime.clone(), bytes))?;
        let deployment = Arc::new(deployment);
        let registry_calls = |load| {
            let (deployment, op, input) = (
                deployment.clone(),
                Arc::<str>::from(op),
                Arc::<str>::from(input),
            );
            tokio.block_on(closed_loop_tasks(load, move || {
                let (deployment, op, input) = (deployment.clone(), op.clone(), input.clone());
                async move { deployment.invoke(&op, &input).await.is_ok() }
            }))
        };
        rows.push(row(GANTRY_INSTANCE, options, registry_calls));
        // How calls/s grow with a second caller, in rounds of short windows back to back, so
        // that the VM's slow spells fall on both sides of most ratios.
        let short = |callers| Load {
            callers,
            warmup: options.duration / 20,
            duration: options.duration / 4,
        };
        let registry_scaling = (0..SCALING_ROUNDS)
            .map(|_| {
                let one = registry_calls(short(1)).per_second();
                let two = registry_calls(short(2)).per_second();
                two / one.max(f64::EPSILON)
            })
            .collect();
        let server = Arc::new(tokio.block_on(HttpServer::start(&deployment, op))?);
        rows.push(row(GANTRY_HTTP, options, |load| {
            let (server, input) = (server.clone(), Arc::<str>::from(input));
            tokio.block_on(closed_loop_tasks(load, move || {
                let (server, input) = (server.clone(), input.clone());
                async move { server.call(&input).await.is_ok() }
            }))
        }));
        let http = http_rounds(options, &server, &deployment, op, input)?;
        if let Ok(server) = Arc::try_unwrap(server) {
            tokio.block_on(server.stop())?;
        }
        results.cases.push(CaseResults {
            case: case.clone(),
            rows,
            versus_raw,
            registry_scaling,
            http,
        });
    }

    let first = &options.cases[0];
    let bytes = options.bytes(&first.connector)?;
    let (op, input) = (first.operation.as_str(), first.input.as_str());

    writeln!(progress, "measuring the cold paths …")?;
    let cold_dir = tempfile::tempdir()?;
    let deployment = tokio.block_on(Deployment::new(
        cold_dir.path(),
        scenario::runtime_in(cold_dir.path())?,
        bytes,
    ))?;
    for n in 0..options.cold_runs {
        let fresh = scenario::variant(bytes, 1_000_000 + n as u64);
        results
            .publish_first_call
            .push(tokio.block_on(scenario::publish_then_call(&deployment, fresh, op, input))?);
    }
    // What a restart finds later than a few seconds after a publish: the artifact sealed by
    // the runtime that compiled it, once settled (loaded without hashing or `describe()`).
    std::thread::sleep(gantry_host::runtime::SETTLED + Duration::from_millis(500));
    let (data_dir, instance) = (deployment.data_dir.clone(), deployment.instance);
    drop(deployment);
    for _ in 0..options.cold_runs {
        results
            .restart_first_call
            .push(tokio.block_on(scenario::restart_then_call(&data_dir, instance, op, input))?);
    }

    writeln!(
        progress,
        "measuring the hot swap (flow runs under rebinds) …"
    )?;
    let swap_dir = tempfile::tempdir()?;
    let swap = Arc::new(tokio.block_on(scenario::SwapDeployment::new(
        swap_dir.path(),
        scenario::runtime_in(swap_dir.path())?,
        bytes,
        op,
    ))?);
    let load = Load {
        duration: options.duration / SWAP_ROUNDS,
        ..options.load(options.callers)
    };
    for _ in 0..SWAP_ROUNDS {
        let swap = |every| tokio.block_on(scenario::hot_swap(&swap, input, load, every));
        let (steady, _) = swap(None)?;
        let (swapping, rebinds) = swap(Some(options.swap_every))?;
        results.hot_swap.push(SwapRound {
            steady,
            swapping,
            rebinds,
        });
    }

    writeln!(progress, "measuring what recording costs a flow run …")?;
    let recording_dir = tempfile::tempdir()?;
    let recording = tokio.block_on(scenario::RecordingDeployment::new(
        recording_dir.path(),
        scenario::runtime_in(recording_dir.path())?,
        bytes,
        op,
    ))?;
    let input_raw = serde_json::value::RawValue::from_string(input.to_string())?;
    let runs = ((options.duration.as_millis() / 10) as usize).clamp(10, RECORDING_RUNS);
    for _ in 0..RECORDING_ROUNDS {
        let p50 = |recorded| -> Result<Duration> {
            let times = tokio.block_on(recording.runs(recorded, &input_raw, runs))?;
            Ok(median(times).unwrap_or_default())
        };
        let plain = p50(false)?;
        let recorded = p50(true)?;
        results.recording.push((plain, recorded));
    }

    for &count in &options.loaded {
        writeln!(progress, "measuring with {count} loaded versions …")?;
        let loaded = tokio.block_on(scenario::load_versions(&runtime, bytes, count))?;
        let components = (0..count)
            .map(|n| raw.load(&scenario::variant(bytes, n as u64)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| {
                results.notes.push(format!(
                    "{count} loaded versions: no hand-rolled wasmtime baseline ({e:#})"
                ))
            })
            .ok();
        let calls = Alternating::measure(
            options,
            Box::new(|load| tokio.block_on(gantry_calls(&runtime, &loaded, op, input, load))),
            components.as_ref().map(|components| -> Side {
                Box::new(move |load| {
                    closed_loop_threads(load, || {
                        let mut next = 0;
                        move || {
                            next = (next + 1) % components.len();
                            components[next].call_fresh(op, input).is_ok()
                        }
                    })
                })
            }),
            None,
        );
        results.loaded.push(Loaded { count, calls });
    }
    Ok(results)
}

fn row(path: &'static str, options: &Options, mut run: impl FnMut(Load) -> Summary) -> Row {
    let one = run(options.load(1));
    let many = run(options.load(options.callers));
    Row { path, one, many }
}

/// `Runtime::invoke` under `load`, each call on the next of `connectors` in turn.
async fn gantry_calls(
    runtime: &Runtime,
    connectors: &[Arc<Connector>],
    op: &str,
    input: &str,
    load: Load,
) -> Summary {
    let (runtime, connectors) = (runtime.clone(), Arc::<[Arc<Connector>]>::from(connectors));
    let (op, input) = (Arc::<str>::from(op), Arc::<str>::from(input));
    let ctx = Arc::new(CallContext::default());
    let next = AtomicUsize::new(0);
    closed_loop_tasks(load, move || {
        let i = next.fetch_add(1, Ordering::Relaxed) % connectors.len();
        let (runtime, connector, op, input, ctx) = (
            runtime.clone(),
            connectors[i].clone(),
            op.clone(),
            input.clone(),
            ctx.clone(),
        );
        async move { runtime.invoke(&connector, &op, &input, &ctx).await.is_ok() }
    })
    .await
}

/// The hand-rolled host's fresh-instance calls under `load`.
fn raw_fresh_calls(component: &RawComponent, op: &str, input: &str, load: Load) -> Summary {
    closed_loop_threads(load, || || component.call_fresh(op, input).is_ok())
}

/// The middle value (the upper one of an even count), or `None` for no values.
fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len() / 2).copied()
}

/// The range of the middle half of `ratios`: `1.02–1.17×`.
fn middle_half(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Of 16 rounds, the 5th to the 12th smallest.
    let n = sorted.len();
    match (
        sorted.get(n / 4),
        sorted.get((n * 3 / 4).saturating_sub(1).max(n / 4)),
    ) {
        (Some(low), Some(high)) => format!("{low:.2}–{high:.2}×"),
        _ => "-".into(),
    }
}

/// `1.02×, 0.97×, …`
fn list_ratios(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}×"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the invoke route adds over HTTP against the registry call it makes, in
/// [`HTTP_ROUNDS`] short rounds so that each ratio compares windows moments apart. The client
/// and the registry calls run on a thread of their own, the calls on a runtime of that thread,
/// timers included (a timer on a worker's driver would wake that worker on every call). The
/// two windows of registry calls differ only by the idle gap.
fn http_rounds(
    options: &Options,
    server: &HttpServer,
    deployment: &Deployment,
    op: &str,
    input: &str,
) -> Result<Vec<HttpRound>> {
    let round = Load {
        callers: 1,
        warmup: options.duration / (HTTP_ROUNDS * 5),
        duration: options.duration / HTTP_ROUNDS,
    };
    let rounds = || -> Result<Vec<HttpRound>> {
        let this_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let registry_call = || this_thread.block_on(deployment.invoke(op, input)).is_ok();
        let mut client = server.keep_alive()?;
        Ok((0..HTTP_ROUNDS)
            .map(|_| {
                let healthz =
                    paced_loop(round, Duration::ZERO, || client.healthz().unwrap_or(false));
                let invoke = paced_loop(round, Duration::ZERO, || {
                    client.invoke(input).unwrap_or(false)
                });
                HttpRound {
                    healthz,
                    invoke,
                    back_to_back: paced_loop(round, Duration::ZERO, registry_call),
                    paced: paced_loop(round, healthz.p50, registry_call),
                }
            })
            .collect())
    };
    std::thread::scope(|scope| scope.spawn(rounds).join())
        .map_err(|_| anyhow::anyhow!("the HTTP overhead's caller panicked"))?
}

/// The HTTP overhead: medians of the rounds.
fn print_http(rounds: &[HttpRound], out: &mut dyn Write) -> Result<()> {
    if rounds.is_empty() {
        return Ok(());
    }
    let p50 =
        |of: fn(&HttpRound) -> Duration| fmt(median(rounds.iter().map(of)).unwrap_or_default());
    writeln!(
        out,
        "over HTTP, one keep-alive connection, {} rounds (medians): /healthz p50 {}, invoke p50 \
         {}; the route adds {} beyond the server's floor; {} failed",
        rounds.len(),
        p50(|r| r.healthz.p50),
        p50(|r| r.invoke.p50),
        p50(HttpRound::route),
        rounds.iter().map(HttpRound::failures).sum::<usize>(),
    )?;
    let back_to_back: Vec<f64> = rounds
        .iter()
        .map(|r| r.route_over(&r.back_to_back))
        .collect();
    let paced: Vec<f64> = rounds.iter().map(|r| r.route_over(&r.paced)).collect();
    writeln!(
        out,
        "  ÷ the registry call back to back (p50 {}): {:.2}× (rounds: {})   target ≤ 1.3×",
        p50(|r| r.back_to_back.p50),
        median(back_to_back.iter().copied()).unwrap_or_default(),
        list_ratios(&back_to_back)
    )?;
    writeln!(
        out,
        "  ÷ the registry call paced, idle a /healthz p50 between calls (p50 {}): {:.2}× \
         (rounds: {})",
        p50(|r| r.paced.p50),
        median(paced.iter().copied()).unwrap_or_default(),
        list_ratios(&paced)
    )?;
    Ok(())
}

/// Print `results` as tables with ratios to the baselines.
pub fn print(options: &Options, results: &Results, out: &mut dyn Write) -> Result<()> {
    let n = options.callers;
    writeln!(
        out,
        "Gantry latency report: {} CPUs, {} callers in the ×{n} column, {} ms per window",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        n,
        options.duration.as_millis()
    )?;
    for CaseResults {
        case,
        rows,
        versus_raw,
        registry_scaling,
        http,
    } in &results.cases
    {
        let base = |path: &str| rows.iter().find(|r| r.path == path).map(|r| r.one.p50);
        let (fresh, live) = (base(RAW_FRESH), base(RAW_LIVE));
        writeln!(
            out,
            "\n{} — {}.{} on {} B of input",
            case.name,
            case.connector,
            case.operation,
            case.input.len()
        )?;
        writeln!(
            out,
            "{:<31} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>10} {:>6}",
            "path",
            "p50",
            "p90",
            "p99",
            "max",
            "calls/s ×1",
            format!("calls/s ×{n}"),
            "÷ fresh",
            "÷ live",
            "fails"
        )?;
        for r in rows {
            let ratio = |b: Option<Duration>| {
                b.map_or("-".into(), |b| {
                    format!("{:.2}×", r.one.p50.as_secs_f64() / b.as_secs_f64())
                })
            };
            writeln!(
                out,
                "{:<31} {:>10} {:>10} {:>10} {:>10} {:>12.0} {:>12.0} {:>10} {:>10} {:>6}",
                r.path,
                fmt(r.one.p50),
                fmt(r.one.p90),
                fmt(r.one.p99),
                fmt(r.one.max),
                r.one.per_second(),
                r.many.per_second(),
                ratio(fresh),
                ratio(live),
                r.one.failures + r.many.failures
            )?;
        }
        writeln!(
            out,
            "{} alternating rounds of 1 caller each (median of the rounds' p50 ratios, the \
             middle half of them in brackets):",
            versus_raw.rounds.len()
        )?;
        // The target is about echo 100 B against the plain hand-rolled host.
        let target = if case.input.len() <= 100 {
            "   target ≤ 1.25×"
        } else {
            ""
        };
        for (label, base, target) in [
            (RAW_FRESH, raw as Baseline, target),
            (RAW_FRESH_DEADLINE, raw_deadline, ""),
        ] {
            if let Some(ratio) = versus_raw.describe(base) {
                writeln!(out, "  {GANTRY} ÷ {label:<31} {ratio}{target}")?;
            }
        }
        let path = |name: &str| rows.iter().find(|r| r.path == name);
        if let (Some(registry), Some(in_process)) = (path(GANTRY_INSTANCE), path(GANTRY)) {
            writeln!(
                out,
                "  {GANTRY_INSTANCE} p50 ÷ {GANTRY} p50: {:.2}×   target ≤ 1.3×",
                registry.one.p50.as_secs_f64() / in_process.one.p50.as_secs_f64()
            )?;
            writeln!(
                out,
                "  {GANTRY_INSTANCE} calls/s ×2 ÷ ×1: median {:.2}× (rounds: {})   target ≥ 1.6×",
                median(registry_scaling.iter().copied()).unwrap_or_default(),
                list_ratios(registry_scaling)
            )?;
        }
        print_http(http, out)?;
    }
    let quantiles = |samples: &[Duration]| {
        let s = Summary::new(samples.to_vec(), 0, Duration::from_secs(1));
        format!("p50 {}, max {} ({} runs)", fmt(s.p50), fmt(s.max), s.calls)
    };
    writeln!(out, "\ncold paths ({})", options.cases[0].name)?;
    writeln!(
        out,
        "  publish → first call (compile):    {}",
        quantiles(&results.publish_first_call)
    )?;
    writeln!(
        out,
        "  restart → first call (cache):      {}   target < 5 ms",
        quantiles(&results.restart_first_call)
    )?;
    if !results.hot_swap.is_empty() {
        let rounds = &results.hot_swap;
        let rebinds: usize = rounds.iter().map(|r| r.rebinds).sum();
        writeln!(
            out,
            "\nhot swap: flow runs of one step ({}) from {n} callers, the step rebound between \
             two digests every {} ms: {rebinds} rebinds; {} rounds of a steady window then a \
             swapping one",
            options.cases[0].name,
            options.swap_every.as_millis(),
            rounds.len()
        )?;
        for (label, window) in [
            (
                "steady",
                rounds.iter().map(|r| &r.steady).collect::<Vec<_>>(),
            ),
            ("swapping", rounds.iter().map(|r| &r.swapping).collect()),
        ] {
            let median_of = |of: fn(&Summary) -> Duration| {
                median(window.iter().map(|s| of(s))).unwrap_or_default()
            };
            writeln!(
                out,
                "  {label:<9} median p50 {:>10}  p99 {:>10}  max {:>10}  {:>8} calls  {} failed",
                fmt(median_of(|s| s.p50)),
                fmt(median_of(|s| s.p99)),
                fmt(window.iter().map(|s| s.max).max().unwrap_or_default()),
                window.iter().map(|s| s.calls).sum::<usize>(),
                window.iter().map(|s| s.failures).sum::<usize>()
            )?;
        }
        let ratios: Vec<f64> = rounds.iter().map(SwapRound::p99_ratio).collect();
        writeln!(
            out,
            "  p99 swapping ÷ steady: median {:.2}× (rounds: {})   target ≤ 2×, zero failed",
            median(ratios.iter().copied()).unwrap_or_default(),
            list_ratios(&ratios)
        )?;
    }
    if !results.recording.is_empty() {
        let ratios: Vec<f64> = results
            .recording
            .iter()
            .map(|(plain, recorded)| recorded.as_secs_f64() / plain.as_secs_f64())
            .collect();
        writeln!(
            out,
            "\nrecording: flow runs of one step ({}), 1 caller, runs without then as many with \
             recording, {} rounds: p50 {} unrecorded, {} recorded; recorded ÷ unrecorded median \
             {:.2}× (rounds: {})",
            options.cases[0].name,
            results.recording.len(),
            fmt(median(results.recording.iter().map(|r| r.0)).unwrap_or_default()),
            fmt(median(results.recording.iter().map(|r| r.1)).unwrap_or_default()),
            median(ratios.iter().copied()).unwrap_or_default(),
            list_ratios(&ratios)
        )?;
    }
    if let Some(first) = results.loaded.first() {
        writeln!(
            out,
            "\nloaded versions ({}, 1 caller, calls going round them, fresh instance per call; \
             {ROUNDS} alternating rounds, ratios as above)",
            options.cases[0].name
        )?;
        let growth = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64()),
            _ => "-".into(),
        };
        for Loaded { count, calls } in &results.loaded {
            write!(
                out,
                "  {count:>4} loaded: gantry p50 {:>10} ({} the first)",
                fmt(calls.gantry_p50().unwrap_or_default()),
                growth(calls.gantry_p50(), first.calls.gantry_p50())
            )?;
            match calls.describe(raw) {
                Some(ratio) => writeln!(
                    out,
                    "   wasmtime p50 {:>10} ({} the first)   gantry ÷ wasmtime {ratio}",
                    fmt(calls.raw_p50().unwrap_or_default()),
                    growth(calls.raw_p50(), first.calls.raw_p50()),
                )?,
                None => writeln!(out)?,
            }
        }
    }
    for note in &results.notes {
        writeln!(out, "\nnote: {note}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p50(micros: u64) -> Summary {
        Summary::new(
            vec![Duration::from_micros(micros)],
            0,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_not_of_the_medians() {
        // Gantry 10% slower than the hand-rolled host in every round, while the machine's
        // speed swings from round to round.
        let rounds = [(11, 10), (22, 20), (33, 30), (110, 100), (44, 40)]
            .into_iter()
            .map(|(gantry, raw)| Round {
                gantry: p50(gantry),
                raw: Some(p50(raw)),
                raw_deadline: None,
            })
            .collect();
        let alternating = Alternating { rounds };
        let ratios = alternating.ratios(raw);
        assert_eq!(ratios.len(), 5);
        assert!(ratios.iter().all(|r| (r - 1.1).abs() < 1e-9), "{ratios:?}");
        assert_eq!(alternating.describe(raw).unwrap(), "1.10× (1.10–1.10×)");
        assert_eq!(alternating.describe(raw_deadline), None);
        assert_eq!(alternating.gantry_p50(), Some(Duration::from_micros(33)));
    }

    #[test]
    fn the_http_route_is_invoke_less_healthz_over_each_rounds_own_calls() {
        let round = |healthz, invoke, back_to_back, paced| HttpRound {
            healthz: p50(healthz),
            invoke: p50(invoke),
            back_to_back: p50(back_to_back),
            paced: p50(paced),
        };
        // Two rounds: a median is the upper middle one.
        let rounds = [round(80, 200, 30, 60), round(100, 160, 20, 30)];
        assert_eq!(rounds[0].route(), Duration::from_micros(120));
        assert!((rounds[0].route_over(&rounds[0].back_to_back) - 4.0).abs() < 1e-9);
        assert!((rounds[1].route_over(&rounds[1].paced) - 2.0).abs() < 1e-9);
        // A floor above the route (a slow spell in the /healthz window) is no negative cost.
        assert_eq!(round(90, 80, 30, 60).route(), Duration::ZERO);
        let mut out = Vec::new();
        print_http(&rounds, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("the route adds 120.0 µs beyond the server's floor; 0 failed"),
            "{out}"
        );
        assert!(
            out.contains("back to back (p50 30.0 µs): 4.00× (rounds: 4.00×, 3.00×)"),
            "{out}"
        );
        assert!(
            out.contains("(p50 60.0 µs): 2.00× (rounds: 2.00×, 2.00×)"),
            "{out}"
        );
    }

    #[test]
    fn medians_and_middle_halves() {
        assert_eq!(median([3, 1, 2]), Some(2));
        assert_eq!(median([4, 1, 3, 2]), Some(3));
        assert_eq!(median(Vec::<u32>::new()), None);
        assert_eq!(
            middle_half(&[1.0, 5.0, 2.0, 4.0, 3.0, 9.0, 0.5, 2.5]),
            "2.00–4.00×"
        );
        assert_eq!(middle_half(&[1.5]), "1.50–1.50×");
        assert_eq!(middle_half(&[]), "-");
    }
}

//! `gantry`: the command-line front of `gantry-host`. Parses arguments and calls the library;
//! nothing here decides anything the library does not.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gantry_host::model::Recording;
use gantry_host::sandbox::Secrets;
use gantry_host::sandbox::tape::{Tape, TapeLimits};
use gantry_host::{CallContext, CallError, Limits, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod author;
mod bench;
mod check;
mod client;
mod serve;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "A WebAssembly host for integration connectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: client::Remote,
    /// Log lines (on stderr) as text or as one JSON object each. What is logged: $GANTRY_LOG
    /// (default: warnings, and one line per HTTP request `gantry serve` answers).
    #[arg(
        long,
        global = true,
        env = "GANTRY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Show a component's digest, imports and exports, its describe(), and whether it fits
    /// Gantry's world (and why not).
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run one operation of a component in the sandbox and print its output.
    Invoke(Box<InvokeArgs>),
    /// Serve the HTTP API on the embedded defaults (SQLite + blobs in the data directory).
    Serve(Box<serve::ServeArgs>),
    /// Measure call latency (p50/p90/p99/max), throughput, cold starts, hot swap and many
    /// loaded versions against a native function and a hand-rolled wasmtime host.
    Bench(Box<bench::BenchArgs>),
    /// Write a new connector project (Rust, JavaScript or Python) from Gantry's templates.
    New(author::NewArgs),
    /// Build the connector project in the current directory into a component, with its own
    /// toolchain (cargo, componentize-js or componentize-py).
    Build(author::BuildArgs),
    /// Check a component before publishing: it fits the world, describe() is valid, every
    /// operation answers within limits and as declared. Exit code 1 when a check fails.
    Check(check::CheckArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Args)]
struct InvokeArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The operation to run, as listed by `gantry inspect`.
    operation: String,
    /// The input JSON document; `-` reads it from stdin.
    #[arg(default_value = "{}")]
    input: String,
    /// A configuration value served through wasi:config/store (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    /// A JSON object file of secrets for the call (never pass secrets on the command line).
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Grant an outbound origin, `scheme://host[:port]` with `*` wildcards (repeatable); the
    /// connector must also declare it.
    #[arg(long = "allow-host", value_name = "ORIGIN")]
    allow_hosts: Vec<String>,
    /// Let the connector reach this loopback/private address (repeatable), e.g. 127.0.0.1 for
    /// a local stand-in.
    #[arg(long = "allow-private", value_name = "IP")]
    allow_private: Vec<std::net::IpAddr>,
    /// CPU time limit, in milliseconds.
    #[arg(long, value_name = "MS")]
    cpu_ms: Option<u64>,
    /// Wall-clock limit, in milliseconds.
    #[arg(long, value_name = "MS")]
    wall_ms: Option<u64>,
    /// Memory limit for all of the call's memories, in MiB.
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Directory of the precompiled-artifact cache (default: the user cache directory).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Record the call — input, output, every outbound exchange, secrets redacted — to FILE
    /// (the format of a flow's recordings).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// Answer the call's outbound requests from a recording (nothing is sent; a request it
    /// lacks is refused and reported), and compare the output with the recorded one.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
}

pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| "warn,gantry::http=info".into());
    // Lines are written by a thread of their own: a request does not wait on stderr. The guard
    // flushes what is queued when main returns.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    if let Command::Bench(args) = cli.command {
        // The report runs its own thread pool and async runtime.
        return match bench::bench(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Inspect { file } => inspect(&file, cli.remote.json).await,
        Command::Invoke(args) => invoke(*args, cli.remote.json).await,
        Command::Serve(args) => serve::serve(*args).await,
        Command::Bench(_) => unreachable!("handled before the async runtime starts"),
        Command::New(args) => author::new(args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => {
            tokio::task::block_in_place(|| author::build(args)).map(|()| ExitCode::SUCCESS)
        }
        Command::Check(args) => check::check(args, cli.remote.json).await,
        Command::Client(command) => client::run(cli.remote, command)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// How long the CLI's own commands let a compile take: the user waits for it anyway, and a
/// heavy component (JavaScript, Python) on a busy machine takes far longer than a server's cap.
pub(crate) const CLI_COMPILE_TIMEOUT: Duration = Duration::from_secs(1800);

fn read_component(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

async fn inspect(path: &Path, json: bool) -> Result<ExitCode> {
    let bytes = read_component(path)?;
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        compile_timeout: CLI_COMPILE_TIMEOUT,
        ..RuntimeConfig::default()
    })?;
    let report = runtime
        .inspect(&bytes)
        .await
        .with_context(|| format!("inspecting {}", path.display()))?;
    let fits = report.fits.is_ok();
    if json {
        let value = serde_json::json!({
            "digest": report.digest,
            "size": report.size,
            "imports": report.imports,
            "never_granted": report.never_granted(),
            "exports": report.exports,
            "fits": fits,
            "describe": report.fits.as_ref().ok(),
            "error": report.fits.as_ref().err().map(ToString::to_string),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("file     {}", path.display());
        println!("digest   {}", report.digest);
        println!("size     {} bytes", report.size);
        println!("imports  ({})", report.imports.len());
        let never = report.never_granted();
        for name in &report.imports {
            if name.starts_with("wasi:filesystem/") {
                println!("  {name}  (no directory is granted: every open fails)");
            } else if never.contains(&name.as_str()) {
                println!(
                    "  {name}  (never granted: refused at publish unless the operator accepts it)"
                );
            } else {
                println!("  {name}");
            }
        }
        println!("exports  ({})", report.exports.len());
        for name in &report.exports {
            println!("  {name}");
        }
        match &report.fits {
            Ok(d) => {
                println!("fits     yes: gantry:connector/plugin@0.1.0");
                println!("name     {} {}", d.name, d.version);
                println!("about    {}", d.description);
                println!("operations");
                for op in &d.operations {
                    println!("  {:<16} {}", op.name, op.description);
                }
                for key in &d.config {
                    let default = key.default_value.as_deref().unwrap_or("-");
                    println!(
                        "config   {} (default {default}) {}",
                        key.name, key.description
                    );
                }
                for key in &d.secrets {
                    println!("secret   {} {}", key.name, key.description);
                }
                for host in &d.outbound_hosts {
                    println!("outbound {host}");
                }
            }
            Err(why) => println!("fits     no: {why}"),
        }
    }
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gantry").join("artifacts"))
}

async fn invoke(args: InvokeArgs, json: bool) -> Result<ExitCode> {
    let bytes = read_component(&args.file)?;
    let input = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the input document from stdin")?;
        text
    } else {
        args.input.clone()
    };
    let secrets = match &args.secrets_file {
        None => Secrets::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading secrets from {}", path.display()))?;
            let map: BTreeMap<String, String> = serde_json::from_str(&text)
                .with_context(|| format!("{} must be a JSON object of strings", path.display()))?;
            Secrets::new(map)
        }
    };
    let mut limits = Limits::default();
    if let Some(ms) = args.cpu_ms {
        limits.cpu_time = Duration::from_millis(ms);
    }
    if let Some(ms) = args.wall_ms {
        limits.wall_time = Duration::from_millis(ms);
    }
    if let Some(mib) = args.memory_mib {
        limits.memory_bytes = mib.saturating_mul(1 << 20);
    }
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let config = RuntimeConfig {
        cache_dir,
        limits,
        max_instances: 4,
        compile_timeout: CLI_COMPILE_TIMEOUT,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config).context("starting the runtime")?;

    let loading = Instant::now();
    let connector = runtime
        .load(&bytes)
        .await
        .with_context(|| format!("loading {}", args.file.display()))?;
    let load_time = loading.elapsed();
    let replayed = match &args.replay {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the recording {}", path.display()))?;
            let recording: Recording = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a recording", path.display()))?;
            Some(recording)
        }
    };
    let tape = match (&args.record, &replayed) {
        (Some(_), _) => Some(Arc::new(Tape::record(&secrets, TapeLimits::default()))),
        (_, Some(recording)) => Some(Arc::new(Tape::replay(
            recording.exchanges.clone(),
            &secrets,
        ))),
        _ => None,
    };
    let ctx = CallContext {
        config: args.config.into_iter().collect(),
        secrets,
        limits: None,
        outbound: args.allow_hosts.clone(),
        allow_private: args.allow_private.clone(),
        tape: tape.clone(),
    };
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let result = runtime
        .invoke(&connector, &args.operation, &input, &ctx)
        .await;
    if let (Some(tape), Some(path)) = (&tape, &args.record) {
        let outcome = match &result {
            Ok(out) => Ok(out.output.as_str()),
            Err(e) => Err(format!("{}: {e}", e.code())),
        };
        let recording = tape.recording(
            &args.operation,
            *connector.digest(),
            started_at,
            &input,
            outcome,
        );
        write_file(path, &serde_json::to_vec_pretty(&recording)?)?;
        eprintln!(
            "recorded {} exchange(s) to {}{}",
            recording.exchanges.len(),
            path.display(),
            recording
                .incomplete
                .as_deref()
                .map(|why| format!(" (incomplete: {why})"))
                .unwrap_or_default()
        );
    }
    if let (Some(tape), Some(recording)) = (&tape, &replayed) {
        for request in tape.played().unmatched {
            eprintln!("not in the recording (not sent): {request}");
        }
        let same = match (&result, &recording.output) {
            (Ok(out), Some(recorded)) => {
                let now: serde_json::Value = serde_json::from_str(&out.output)?;
                let then: serde_json::Value = serde_json::from_str(recorded.get())?;
                now == then
            }
            _ => false,
        };
        eprintln!(
            "{}",
            if same {
                "replay: the same output as recorded"
            } else {
                "replay: the output differs from the recording"
            }
        );
    }
    let label = format!(
        "{}@{} ({})",
        connector.description().name,
        connector.description().version,
        connector.digest()
    );
    match result {
        Ok(out) => {
            // The output exactly as the connector wrote it: through a `Value` a number beyond
            // f64 would be rounded and a lone surrogate escape refused (as the API and the
            // remote `instance invoke` already pass it).
            if json {
                #[derive(serde::Serialize)]
                struct Report<'a> {
                    output: &'a serde_json::value::RawValue,
                    digest: gantry_host::Digest,
                    duration_us: u64,
                    memory_bytes: u64,
                    logs: &'a [gantry_host::sandbox::LogLine],
                }
                let output: &serde_json::value::RawValue = serde_json::from_str(&out.output)?;
                let report = Report {
                    output,
                    digest: out.digest,
                    duration_us: out.duration.as_micros() as u64,
                    memory_bytes: out.memory_bytes,
                    logs: &out.logs,
                };
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", out.output);
                for line in &out.logs {
                    eprintln!("log {:<5} {}", line.level, line.message);
                }
                eprintln!(
                    "ok: {label} {} in {} (load {}, {:?})",
                    args.operation,
                    human(out.duration),
                    human(load_time),
                    connector.origin()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            report_call_error(&error, &label, json)?;
            Ok(ExitCode::from(1))
        }
    }
}

fn report_call_error(error: &CallError, label: &str, json: bool) -> Result<()> {
    let detail = match error {
        CallError::Guest(guest) => serde_json::to_value(guest)?,
        CallError::Trap { stderr, .. } if !stderr.is_empty() => {
            serde_json::json!({ "stderr": stderr })
        }
        _ => serde_json::Value::Null,
    };
    if json {
        let value = serde_json::json!({
            "error": { "code": error.code(), "message": error.to_string(), "detail": detail },
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        eprintln!("error [{}]: {error}", error.code());
        if let CallError::Trap { stderr, .. } = error
            && !stderr.is_empty()
        {
            eprintln!("guest stderr:\n{stderr}");
        }
        eprintln!("connector: {label}");
    }
    Ok(())
}

fn human(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

/// Write `bytes` to `path` whole or not at all: a temporary file beside it, renamed over it.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

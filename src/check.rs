//! `gantry check X.wasm`: the conformance run an author uses before publishing. Each check is
//! one line, `ok` or `FAIL` with why; the exit code is 1 when any failed (for CI).

use anyhow::{Context, Result};
use clap::Args;
use gantry_host::runtime::ConnectorError;
use gantry_host::{CallContext, CallError, CallOutput, Connector, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct CheckArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The input to call OPERATION with (repeatable). Default: the first of its input
    /// schema's `examples`, else `{}`.
    #[arg(long = "example", value_name = "OPERATION=JSON", value_parser = crate::parse_pair)]
    examples: Vec<(String, String)>,
}

/// One check's outcome.
#[derive(serde::Serialize)]
struct Outcome {
    check: String,
    ok: bool,
    detail: String,
}

#[derive(serde::Serialize)]
struct Report {
    file: PathBuf,
    digest: Option<String>,
    size: usize,
    /// Compiling the component and reading its describe(), in milliseconds.
    compile_ms: Option<f64>,
    /// Loading the precompiled artifact (what a restart costs), in milliseconds.
    load_ms: Option<f64>,
    checks: Vec<Outcome>,
    passed: bool,
}

impl Report {
    fn record(&mut self, check: impl Into<String>, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Outcome {
            check: check.into(),
            ok,
            detail,
        });
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

pub async fn check(args: CheckArgs, json: bool) -> Result<ExitCode> {
    let bytes = crate::read_component(&args.file)?;
    let mut report = Report {
        file: args.file.clone(),
        digest: None,
        size: bytes.len(),
        compile_ms: None,
        load_ms: None,
        checks: Vec::new(),
        passed: false,
    };
    run_checks(&args, &bytes, &mut report).await?;
    report.passed = report.checks.iter().all(|c| c.ok);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}  {} bytes  {}",
            report.file.display(),
            report.size,
            report.digest.as_deref().unwrap_or("")
        );
        if let (Some(compile), Some(load)) = (report.compile_ms, report.load_ms) {
            println!("compile {compile} ms, precompiled load {load} ms");
        }
        for c in &report.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<28} {}", c.check, c.detail);
        }
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        if failed == 0 {
            println!("passed: {} checks", report.checks.len());
        } else {
            println!("failed: {failed} of {} checks", report.checks.len());
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_checks(args: &CheckArgs, bytes: &[u8], report: &mut Report) -> Result<()> {
    // A cache of its own: the first load compiles, a second runtime loads the artifact.
    let cache = tempfile::tempdir().context("creating a temporary artifact cache")?;
    let runtime = || {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            max_instances: 4,
            compile_timeout: crate::CLI_COMPILE_TIMEOUT,
            ..RuntimeConfig::default()
        })
        .context("starting the runtime")
    };
    let compiling = Instant::now();
    let loaded = runtime()?.load(bytes).await;
    let compile = compiling.elapsed();
    let connector = match loaded {
        Ok(connector) => connector,
        Err(e) => {
            report.record(
                "loads and fits the world",
                Err(format!("{}: {e}", e.code())),
            );
            return Ok(());
        }
    };
    report.digest = Some(connector.digest().to_string());
    report.compile_ms = Some(millis(compile));
    report.record(
        "loads and fits the world",
        Ok(format!(
            "gantry:connector@0.1.0 ({} interfaces used)",
            connector.world().len()
        )),
    );
    // The calls run on a second runtime, from the artifact the first one cached.
    drop(connector);
    let rt = runtime()?;
    let loading = Instant::now();
    let connector = rt.load(bytes).await.context("loading the artifact again")?;
    report.load_ms = Some(millis(loading.elapsed()));

    let ungranted = connector.ungranted_imports();
    report.record(
        "never-granted imports",
        Ok(if ungranted.is_empty() {
            "none: no wasi:filesystem, no wasi:sockets".into()
        } else {
            format!(
                "{}: linked, but no directory or socket is ever granted (an operator may \
                 refuse them at publish)",
                ungranted.join(", ")
            )
        }),
    );

    let description = connector.description();
    report.record(
        "describe() is valid",
        gantry_host::model::validate_name("connector name", &description.name)
            .map(|()| {
                format!(
                    "{} {}: {} operation(s), schemas compile, hosts parse",
                    description.name,
                    description.version,
                    description.operations.len()
                )
            })
            .map_err(|e| e.to_string()),
    );
    if description.operations.is_empty() {
        report.record("has operations", Err("describe() declares none".into()));
        return Ok(());
    }

    // Calls run with the connector's config defaults, a stand-in for every secret, and no
    // outbound grant: an operation that needs the network answers with an error, in time.
    let ctx = CallContext {
        config: description
            .config
            .iter()
            .filter_map(|k| Some((k.name.clone(), k.default_value.clone()?)))
            .collect(),
        secrets: gantry_host::sandbox::Secrets::new(
            description
                .secrets
                .iter()
                .map(|k| (k.name.clone(), "gantry-check".to_string()))
                .collect(),
        ),
        ..CallContext::default()
    };
    for op in &description.operations {
        let input = args
            .examples
            .iter()
            .find(|(name, _)| *name == op.name)
            .map(|(_, input)| input.clone())
            .or_else(|| op.input_schema["examples"].get(0).map(|e| e.to_string()))
            .unwrap_or_else(|| "{}".into());
        let result = rt.invoke(&connector, &op.name, &input, &ctx).await;
        report.record(
            format!("`{}` answers", op.name),
            answered(&connector, &op.name, &input, result),
        );
    }

    let first = &description.operations[0].name;
    report.record(
        "unknown operation: not-found",
        match rt
            .probe(&connector, "gantry-check-no-such-operation", "{}", &ctx)
            .await
        {
            Err(CallError::Guest(ConnectorError::NotFound(_))) => Ok("not-found".into()),
            other => Err(format!("answered {}; expected not-found", outcome(&other))),
        },
    );
    report.record(
        "malformed input: invalid-input",
        match rt.probe(&connector, first, "{\"unclosed\": ", &ctx).await {
            Err(CallError::Guest(ConnectorError::InvalidInput(_)) | CallError::InvalidInput(_)) => {
                Ok(format!("`{first}` answered invalid-input"))
            }
            other => Err(format!(
                "`{first}` answered {} to input that is not JSON; expected invalid-input",
                outcome(&other)
            )),
        },
    );
    Ok(())
}

/// An operation's answer to its example: any answer of the connector's own within limits is
/// fine; output must fit the output schema.
fn answered(
    connector: &Arc<Connector>,
    operation: &str,
    input: &str,
    result: Result<CallOutput, CallError>,
) -> Result<String, String> {
    match result {
        Ok(out) => connector
            .check_output(operation, &out.output)
            .map(|()| {
                format!(
                    "{input} → output fits its schema ({} ms)",
                    millis(out.duration)
                )
            })
            .map_err(|e| format!("{input} → {e}")),
        Err(e @ (CallError::Guest(_) | CallError::InvalidInput(_))) => Ok(format!(
            "{input} → {} (no network is granted here)",
            short(&e)
        )),
        Err(e) => Err(format!("{input} → {}: {e}", e.code())),
    }
}

fn outcome(result: &Result<CallOutput, CallError>) -> String {
    match result {
        Ok(_) => "an output".into(),
        Err(e) => short(e),
    }
}

/// `invalid-input: why`, `not-found: why`, … or the call error's code and text.
fn short(e: &CallError) -> String {
    match e {
        CallError::Guest(guest) => {
            let kind = serde_json::to_value(guest)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{kind}: {}", guest_message(guest))
        }
        other => format!("{}: {other}", other.code()),
    }
}

fn guest_message(e: &ConnectorError) -> &str {
    match e {
        ConnectorError::InvalidInput(m)
        | ConnectorError::Unauthorized(m)
        | ConnectorError::NotFound(m)
        | ConnectorError::Upstream(m)
        | ConnectorError::RateLimited(m)
        | ConnectorError::Internal(m) => m,
    }
}

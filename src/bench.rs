//! `gantry bench`: the latency report of `gantry-bench`, on the sample connectors or on the
//! user's own connector.

use anyhow::{Result, ensure};
use clap::Args;
use gantry_bench::report::{self, Options};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct BenchArgs {
    /// Measure your own connector (.wasm) instead of the standard cases (needs --operation
    /// and --input).
    #[arg(long, value_name = "FILE", requires_all = ["operation", "input"])]
    connector: Option<PathBuf>,
    /// The operation of --connector to call.
    #[arg(long, requires = "connector")]
    operation: Option<String>,
    /// A file holding the input JSON document of --operation.
    #[arg(long, value_name = "FILE", requires = "connector")]
    input: Option<PathBuf>,
    /// Where the built sample connectors are (for the standard cases).
    #[arg(long, default_value = "sample-connectors/target/wasm32-wasip2/release")]
    samples: PathBuf,
    /// Concurrent callers of the "calls/s ×N" column (default: twice the CPUs).
    #[arg(long)]
    callers: Option<usize>,
    /// Measured window of each path, in milliseconds (after a warm-up of a fifth of it).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    duration_ms: u64,
    /// Numbers of loaded versions to measure the per-call cost at.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    loaded: Vec<usize>,
    /// Interval between rebinds in the hot-swap run, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2)]
    swap_every_ms: u64,
    /// Repetitions of each cold path (publish → first call, restart → first call).
    #[arg(long, default_value_t = 5)]
    cold_runs: usize,
    /// Instead of the latency report: the registry on this PostgreSQL
    /// (`postgres://user:password@host/db`) against SQLite, and two nodes on it against one.
    /// It works in a schema of its own, dropped at the end.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    // Flags first: a bad flag is reported before any file is read.
    if let Some(callers) = args.callers {
        ensure!((1..=1024).contains(&callers), "--callers must be 1 to 1024");
    }
    ensure!(args.duration_ms >= 10, "--duration-ms must be at least 10");
    ensure!(
        args.loaded.iter().all(|&n| (1..=1000).contains(&n)),
        "--loaded takes counts from 1 to 1000"
    );
    ensure!(
        args.swap_every_ms >= 1,
        "--swap-every-ms must be at least 1"
    );
    ensure!(args.cold_runs >= 1, "--cold-runs must be at least 1");
    let mut options = match (args.connector, args.operation, args.input) {
        (Some(connector), Some(operation), Some(input)) => {
            let input = std::fs::read_to_string(&input)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", input.display()))?;
            Options::custom(connector, operation, input)?
        }
        _ => Options::standard(&args.samples)?,
    };
    if let Some(callers) = args.callers {
        options.callers = callers;
    }
    options.duration = Duration::from_millis(args.duration_ms);
    options.loaded = args.loaded;
    options.swap_every = Duration::from_millis(args.swap_every_ms);
    options.cold_runs = args.cold_runs;

    if let Some(url) = &args.database {
        let results = gantry_bench::stores::measure(&options, url, &mut std::io::stderr())?;
        return gantry_bench::stores::print(&options, &results, &mut std::io::stdout());
    }
    let results = report::measure(&options, &mut std::io::stderr())?;
    report::print(&options, &results, &mut std::io::stdout())
}

//! `gantry bench --database postgres://…`: the registry on a shared PostgreSQL against the
//! embedded SQLite (a call through an instance, a flow run, each at one caller and at N), and
//! calls/s over HTTP of two nodes on that PostgreSQL against one.
//!
//! Everything is written to a schema of its own (`gantry_bench_<pid>`), dropped at the end.
//! The two nodes are two registries, each with its own HTTP server, in this one process: on a
//! machine of few cores they share the same cores, so the ratio shows what a second node costs
//! and whether the database serialises it, not the gain of a second machine.

use crate::report::Options;
use crate::scenario::{HttpServer, RecordingDeployment};
use crate::stats::{Load, Summary, closed_loop_tasks, fmt};
use anyhow::Result;
use gantry_host::store::{BlobStore, FsBlobStore, MetadataStore, PgStore};
use gantry_host::{Registry, RegistryConfig};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One path on both stores.
#[derive(Debug, Clone)]
pub struct StoreRow {
    pub path: &'static str,
    /// At one caller and at N, on SQLite then on PostgreSQL.
    pub sqlite: (Summary, Summary),
    pub postgres: (Summary, Summary),
}

/// What the comparison measured.
#[derive(Debug, Clone, Default)]
pub struct StoreResults {
    pub rows: Vec<StoreRow>,
    /// Rounds of calls/s over HTTP: all callers on one node, then spread over two.
    pub nodes: Vec<(f64, f64)>,
}

const NODE_ROUNDS: usize = 3;

/// Measure the first case of `options` on SQLite and on the PostgreSQL at `url`.
pub fn measure(options: &Options, url: &str, progress: &mut dyn Write) -> Result<StoreResults> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let case = &options.cases[0];
    let bytes = options.bytes(&case.connector)?;
    let (op, input) = (case.operation.as_str(), case.input.as_str());
    let input_raw: Arc<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string(input.to_string())?.into();
    let schema = format!("gantry_bench_{}", std::process::id());
    let measured = (|| -> Result<StoreResults> {
        let mut sides = Vec::new();
        for store in ["SQLite", "PostgreSQL"] {
            writeln!(progress, "measuring the registry on {store} …")?;
            let dir = tempfile::tempdir()?;
            let metadata: Option<Arc<dyn MetadataStore>> = match store {
                "SQLite" => None,
                _ => Some(Arc::new(PgStore::connect_in_schema(url, &schema)?)),
            };
            let config = RegistryConfig {
                data_dir: dir.path().to_path_buf(),
                metadata,
                ..RegistryConfig::default()
            };
            let runtime = crate::scenario::runtime_in(dir.path())?;
            let flows =
                Arc::new(tokio.block_on(RecordingDeployment::on(config, runtime, bytes, op))?);
            let calls = |load: Load| {
                let (flows, op, input) =
                    (flows.clone(), Arc::<str>::from(op), Arc::<str>::from(input));
                tokio.block_on(closed_loop_tasks(load, move || {
                    let (flows, op, input) = (flows.clone(), op.clone(), input.clone());
                    async move { flows.deployment.invoke(&op, &input).await.is_ok() }
                }))
            };
            let runs = |load: Load| {
                let (flows, input) = (flows.clone(), input_raw.clone());
                tokio.block_on(closed_loop_tasks(load, move || {
                    let (flows, input) = (flows.clone(), input.clone());
                    async move { flows.run(false, &input).await }
                }))
            };
            let both = |run: &dyn Fn(Load) -> Summary| {
                (run(options.load(1)), run(options.load(options.callers)))
            };
            sides.push([both(&calls), both(&runs)]);
        }
        // The two nodes start from an empty schema.
        PgStore::drop_schema(url, &schema)?;
        let rows = ["registry call", "flow run (stored)"]
            .into_iter()
            .enumerate()
            .map(|(n, path)| StoreRow {
                path,
                sqlite: sides[0][n],
                postgres: sides[1][n],
            })
            .collect();

        writeln!(progress, "measuring two nodes against one …")?;
        let nodes = tokio.block_on(two_nodes(options, url, &schema, bytes, op, input))?;
        Ok(StoreResults { rows, nodes })
    })();
    let _ = PgStore::drop_schema(url, &schema);
    measured
}

/// Rounds of calls/s over HTTP: every caller on node A, then callers alternating A and B.
async fn two_nodes(
    options: &Options,
    url: &str,
    schema: &str,
    bytes: &[u8],
    op: &str,
    input: &str,
) -> Result<Vec<(f64, f64)>> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dirs.0.path().join("shared"))?);
    let config = |dir: &std::path::Path| -> Result<RegistryConfig> {
        Ok(RegistryConfig {
            data_dir: dir.to_path_buf(),
            metadata: Some(Arc::new(PgStore::connect_in_schema(url, schema)?)),
            blobs: Some(blobs.clone()),
            secrets_key: Some(dirs.0.path().join("secrets.key")),
            ..RegistryConfig::default()
        })
    };
    let a = crate::scenario::Deployment::on(
        config(dirs.0.path())?,
        crate::scenario::runtime_in(dirs.0.path())?,
        bytes,
    )
    .await?;
    let b = Registry::open(
        config(dirs.1.path())?,
        crate::scenario::runtime_in(dirs.1.path())?,
    )?;
    let servers = Arc::new([
        HttpServer::serve(a.registry.clone(), a.instance, op).await?,
        HttpServer::serve(Arc::new(b), a.instance, op).await?,
    ]);
    let load = options.load(options.callers);
    let mut rounds = Vec::new();
    for _ in 0..NODE_ROUNDS {
        let mut per_second = [0.0; 2];
        for (nodes, out) in [1, 2].into_iter().zip(&mut per_second) {
            let (servers, input, next) = (
                servers.clone(),
                Arc::<str>::from(input),
                Arc::new(AtomicUsize::new(0)),
            );
            *out = closed_loop_tasks(load, move || {
                let (servers, input) = (servers.clone(), input.clone());
                let n = next.fetch_add(1, Ordering::Relaxed) % nodes;
                async move { servers[n].call(&input).await.is_ok() }
            })
            .await
            .per_second();
        }
        rounds.push((per_second[0], per_second[1]));
    }
    if let Ok(servers) = Arc::try_unwrap(servers) {
        for server in servers {
            server.stop().await?;
        }
    }
    Ok(rounds)
}

/// Print the comparison.
pub fn print(options: &Options, results: &StoreResults, out: &mut dyn Write) -> Result<()> {
    let case = &options.cases[0];
    let n = options.callers;
    writeln!(
        out,
        "Gantry on PostgreSQL against SQLite: {} — {}.{}, {} CPUs, {n} callers in the ×{n} columns, {} ms per window",
        case.name,
        case.connector,
        case.operation,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.duration.as_millis()
    )?;
    writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>7} {:>14} {:>14} {:>7}",
        "path", "SQLite p50", "PG p50", "PG÷SQL", "SQLite/s ×N", "PG/s ×N", "PG÷SQL"
    )?;
    for row in &results.rows {
        let (s1, sn) = row.sqlite;
        let (p1, pn) = row.postgres;
        writeln!(
            out,
            "{:<22} {:>12} {:>12} {:>6.2}× {:>14.0} {:>14.0} {:>6.2}×",
            row.path,
            fmt(s1.p50),
            fmt(p1.p50),
            p1.p50.as_secs_f64() / s1.p50.as_secs_f64().max(f64::EPSILON),
            sn.per_second(),
            pn.per_second(),
            pn.per_second() / sn.per_second().max(f64::EPSILON)
        )?;
        let failures = s1.failures + sn.failures + p1.failures + pn.failures;
        if failures > 0 {
            writeln!(out, "  ({failures} failed calls)")?;
        }
    }
    let ratios: Vec<String> = results
        .nodes
        .iter()
        .map(|(one, two)| {
            format!(
                "{one:.0} → {two:.0}/s ({:.2}×)",
                two / one.max(f64::EPSILON)
            )
        })
        .collect();
    writeln!(
        out,
        "\ntwo nodes ÷ one, calls over HTTP, {n} callers, one PostgreSQL, rounds: {}",
        ratios.join(", ")
    )?;
    writeln!(
        out,
        "(both nodes run in this process, on the same {} CPUs: a second machine's gain cannot \
         show here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    Ok(())
}

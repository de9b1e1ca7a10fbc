//! `gantry serve`: open the data directory, bootstrap an admin token on first run, seed the demo
//! organisation from the built sample connectors, and serve the HTTP API.

use anyhow::{Context, Result};
use gantry_host::{
    ApiConfig, PublishRequest, Registry, RegistryConfig, Role, Runtime, RuntimeConfig, StepSpec,
    Visibility,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory holding the database, blobs, secrets key and artifact cache.
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "gantry-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "GANTRY_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Where the built sample connectors are, for the demo organisation.
    #[arg(long, default_value = "sample-connectors/target/wasm32-wasip2/release")]
    samples: PathBuf,
    /// Do not seed the demo organisation.
    #[arg(long)]
    no_demo: bool,
    /// Largest component upload, in MiB.
    #[arg(long, env = "GANTRY_MAX_UPLOAD_MIB", default_value_t = 32)]
    max_upload_mib: usize,
    /// Calls in flight at once before the API answers 429.
    #[arg(long, env = "GANTRY_MAX_CONCURRENT_CALLS", default_value_t = 64)]
    max_concurrent_calls: usize,
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.data_dir.join("cache")),
        ..RuntimeConfig::default()
    })
    .context("starting the runtime")?;
    let registry = Registry::open(
        RegistryConfig {
            data_dir: args.data_dir.clone(),
            faults: None,
        },
        runtime,
    )
    .with_context(|| format!("opening the registry in {}", args.data_dir.display()))?;
    let registry = Arc::new(registry);

    let token_file = args.data_dir.join("admin.token");
    if !token_file.exists() {
        registry.create_org("demo")?;
        let token =
            registry.create_token("demo", "gantry serve", Role::Admin, "bootstrap admin")?;
        write_private(&token_file, &token)?;
        eprintln!(
            "first run: an admin token for organisation `demo` is in {}",
            token_file.display()
        );
        if !args.no_demo {
            match seed_demo(&registry, &args.samples).await {
                Ok(flow) => eprintln!(
                    "demo: published the sample connectors; flow {flow} greets whoever you name"
                ),
                Err(e) => {
                    eprintln!("demo: not seeded ({e:#}); build sample-connectors first to get it")
                }
            }
        }
    }

    let router = gantry_host::router(
        registry,
        ApiConfig {
            max_upload_bytes: args.max_upload_mib << 20,
            max_concurrent_calls: args.max_concurrent_calls,
            ..ApiConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    eprintln!("gantry listening on http://{}", listener.local_addr()?);
    gantry_host::serve(listener, router, Duration::from_secs(10), async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down; letting calls in flight finish");
    })
    .await
    .context("serving")
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Publish the sample connectors into `demo`, install `json-transform`, and create a flow that
/// greets `input.name`. Returns the flow's id.
async fn seed_demo(registry: &Registry, samples: &Path) -> Result<i64> {
    let actor = "gantry serve (demo)";
    for (file, name, version) in [
        ("json_transform.wasm", "json-transform", "1.0.0"),
        ("echo.wasm", "echo", "1.0.0"),
        ("echo_v2.wasm", "echo", "2.0.0"),
        ("worldbank.wasm", "worldbank", "1.0.0"),
    ] {
        let path = samples.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let request = PublishRequest {
            name: name.into(),
            version: version.into(),
            visibility: Visibility::Public,
            tags: vec!["sample".into()],
            bytes,
        };
        registry.publish("demo", actor, request).await?;
    }
    let install = registry.install("demo", actor, "demo", "json-transform", "1.0.0")?;
    let instance = registry.create_instance(
        "demo",
        actor,
        install.id,
        "default",
        BTreeMap::new(),
        BTreeMap::new(),
    )?;
    let flow = registry.create_flow(
        "demo",
        actor,
        "greet",
        vec![StepSpec {
            name: "greeting".into(),
            instance: instance.id,
            operation: "template".into(),
            input: serde_json::json!({"template": "Hello {{name}}!", "data": "${input}"}),
        }],
    )?;
    Ok(flow.id)
}

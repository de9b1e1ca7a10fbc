//! `gantry serve`: open the data directory, bootstrap an admin token on first run, seed the demo
//! organisation from the built sample connectors, and serve the HTTP API.

use anyhow::{Context, Result};
use gantry_host::model::{PublishRequest, StepSpec, Visibility};
use gantry_host::{ApiConfig, Registry, RegistryConfig, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML config file; flags and environment variables override what it says.
    #[arg(long, env = "GANTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory holding the database, blobs, secrets key and artifact cache [default: gantry-data].
    #[arg(long, env = "GANTRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep metadata in this PostgreSQL database (`postgres://user:password@host/db`), shared by
    /// every node, instead of `<data-dir>/gantry.db`.
    #[arg(long, env = "GANTRY_DATABASE")]
    database: Option<String>,
    /// Keep component bytes in this S3 bucket (`s3://bucket[/prefix]?endpoint=URL&region=R`,
    /// credentials from the AWS_* environment), shared by every node, instead of
    /// `<data-dir>/blobs`.
    #[arg(long, env = "GANTRY_BLOBS")]
    blobs: Option<String>,
    /// The key sealing instance secrets [default: <data-dir>/secrets.key]; every node sharing a
    /// database needs the same one.
    #[arg(long, env = "GANTRY_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "GANTRY_BIND")]
    bind: Option<SocketAddr>,
    /// Where the built sample connectors are, for the demo organisation.
    #[arg(long, default_value = "sample-connectors/target/wasm32-wasip2/release")]
    samples: PathBuf,
    /// Do not seed the demo organisation.
    #[arg(long)]
    no_demo: bool,
    /// Largest component upload, in MiB [default: 32].
    #[arg(long, env = "GANTRY_MAX_UPLOAD_MIB")]
    max_upload_mib: Option<usize>,
    /// Calls in flight at once before the API answers 429 [default: 64].
    #[arg(long, env = "GANTRY_MAX_CONCURRENT_CALLS")]
    max_concurrent_calls: Option<usize>,
    /// Calls in flight at once of any one organisation before the API answers 429 [default: 16].
    #[arg(long, env = "GANTRY_MAX_CALLS_PER_ORG")]
    max_calls_per_org: Option<usize>,
    /// Most MiB of precompiled artifacts kept on disk; the least recently used go past it
    /// [default: 2048].
    #[arg(long, env = "GANTRY_CACHE_MAX_MIB")]
    cache_max_mib: Option<u64>,
    /// KiB of each memory slot a call dirtied kept resident for the module's next call: more
    /// makes heavy (JavaScript, Python) calls faster and keeps more memory between calls, up
    /// to this much for each of 1,000 warm slots [default: 128].
    #[arg(long, env = "GANTRY_KEEP_RESIDENT_KIB")]
    keep_resident_kib: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "GANTRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "GANTRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long calls in flight may take to finish, in seconds
    /// [default: 30].
    #[arg(long, env = "GANTRY_DRAIN_TIMEOUT")]
    drain_timeout: Option<u64>,
}

/// The config file (`gantry serve --config gantry.toml`). Every key is optional.
///
/// ```toml
/// data_dir = "gantry-data"
/// database = "postgres://gantry@db.internal/gantry"  # shared metadata (several nodes)
/// blobs = "s3://gantry-components?region=eu-west-1"  # shared component bytes
/// secrets_key = "/run/secrets/gantry.key"             # the same key on every node
/// bind = "127.0.0.1:8080"
/// max_upload_mib = 32
/// max_concurrent_calls = 64
/// max_calls_per_org = 16
/// tls_cert = "cert.pem"               # serve HTTPS (with tls_key)
/// tls_key = "key.pem"
/// drain_timeout_ms = 30000            # on SIGTERM/Ctrl-C: how long calls may take to finish
/// header_timeout_ms = 10000
/// body_timeout_ms = 30000
/// max_compiles = 2                    # compiles at once
/// cache_max_mib = 2048                # precompiled artifacts on disk (least recently used go)
/// keep_resident_kib = 128             # of each memory slot, kept resident between calls
/// refuse_ungranted_imports = false    # refuse components importing wasi:filesystem/sockets
///
/// [limits]            # default per-call limits (gantry_host::Limits)
/// cpu_time = 5000
/// memory_bytes = 134217728
///
/// [outbound]          # operator settings of outbound HTTP (gantry_host::sandbox::OutboundConfig)
/// request_timeout = 20000
///
/// [private_addresses] # per organisation: private addresses its connectors may reach
/// demo = ["127.0.0.1"]
///
/// [flows]             # bounds of flows and runs (gantry_host::registry::FlowLimits)
/// steps = 64
/// run_bytes = 16777216
///
/// [loaded]            # connectors kept loaded between calls (gantry_host::registry::LoadedLimits)
/// max = 256
/// idle = 600000
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    blobs: Option<String>,
    secrets_key: Option<PathBuf>,
    bind: Option<SocketAddr>,
    max_upload_mib: Option<usize>,
    max_concurrent_calls: Option<usize>,
    max_calls_per_org: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    drain_timeout_ms: Option<u64>,
    cache_max_mib: Option<u64>,
    keep_resident_kib: Option<usize>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    limits: Option<gantry_host::Limits>,
    outbound: Option<gantry_host::sandbox::OutboundConfig>,
    #[serde(default)]
    private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    flows: Option<gantry_host::registry::FlowLimits>,
    loaded: Option<gantry_host::registry::LoadedLimits>,
    max_compiles: Option<usize>,
    #[serde(default)]
    refuse_ungranted_imports: bool,
    /// Before 0.2 such components were refused unless this was true: `false` still refuses.
    accept_ungranted_imports: Option<bool>,
}

/// Settings after merging flags and environment over the file over the defaults.
#[derive(Debug)]
struct Settings {
    data_dir: PathBuf,
    database: Option<String>,
    blobs: Option<String>,
    secrets_key: Option<PathBuf>,
    bind: SocketAddr,
    api: ApiConfig,
    header_timeout: Duration,
    drain_timeout: Duration,
    tls: Option<(PathBuf, PathBuf)>,
    limits: gantry_host::Limits,
    outbound: gantry_host::sandbox::OutboundConfig,
    private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    flows: gantry_host::registry::FlowLimits,
    loaded: gantry_host::registry::LoadedLimits,
    max_compiles: usize,
    refuse_ungranted_imports: bool,
    cache_max_bytes: u64,
    memory_keep_resident: usize,
}

fn settings(args: &ServeArgs, file: ServeConfig) -> Settings {
    let defaults = ApiConfig::default();
    Settings {
        data_dir: args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "gantry-data".into()),
        database: args.database.clone().or(file.database),
        blobs: args.blobs.clone().or(file.blobs),
        secrets_key: args.secrets_key.clone().or(file.secrets_key),
        bind: args
            .bind
            .or(file.bind)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        api: ApiConfig {
            max_upload_bytes: args
                .max_upload_mib
                .or(file.max_upload_mib)
                .map_or(defaults.max_upload_bytes, |m| m << 20),
            max_concurrent_calls: args
                .max_concurrent_calls
                .or(file.max_concurrent_calls)
                .unwrap_or(defaults.max_concurrent_calls),
            max_calls_per_org: args
                .max_calls_per_org
                .or(file.max_calls_per_org)
                .unwrap_or(defaults.max_calls_per_org),
            body_timeout: file
                .body_timeout_ms
                .map_or(defaults.body_timeout, Duration::from_millis),
            ..defaults
        },
        header_timeout: Duration::from_millis(file.header_timeout_ms.unwrap_or(10_000)),
        drain_timeout: args
            .drain_timeout
            .map(|s| s.saturating_mul(1000))
            .or(file.drain_timeout_ms)
            .map_or(Duration::from_secs(30), Duration::from_millis),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => file.tls_cert.zip(file.tls_key),
        },
        limits: file.limits.unwrap_or_default(),
        outbound: file.outbound.unwrap_or_default(),
        private_addresses: file.private_addresses,
        flows: file.flows.unwrap_or_default(),
        loaded: file.loaded.unwrap_or_default(),
        max_compiles: file
            .max_compiles
            .unwrap_or(RuntimeConfig::default().max_compiles),
        refuse_ungranted_imports: file.refuse_ungranted_imports
            || file.accept_ungranted_imports == Some(false),
        cache_max_bytes: args
            .cache_max_mib
            .or(file.cache_max_mib)
            .map_or(RuntimeConfig::default().cache_max_bytes, |m| {
                m.saturating_mul(1 << 20)
            }),
        memory_keep_resident: args
            .keep_resident_kib
            .or(file.keep_resident_kib)
            .map_or(RuntimeConfig::default().memory_keep_resident, |k| {
                k.saturating_mul(1 << 10)
            }),
    }
}

fn read_config(path: Option<&Path>) -> Result<ServeConfig> {
    let Some(path) = path else {
        return Ok(ServeConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid gantry config", path.display()))
}

/// Serve until SIGTERM or Ctrl-C and a drain; exit 1 when the drain timeout cut calls off.
pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let settings = settings(&args, read_config(args.config.as_deref())?);
    let data_dir = &settings.data_dir;
    // Only this user may read or write the data directory (the registry tightens an older,
    // looser one).
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(data_dir.join("cache")),
        cache_max_bytes: settings.cache_max_bytes,
        memory_keep_resident: settings.memory_keep_resident,
        limits: settings.limits,
        outbound: settings.outbound.clone(),
        max_compiles: settings.max_compiles,
        ..RuntimeConfig::default()
    })
    .context("starting the runtime")?;
    let (metadata, blobs) = shared_stores(&settings)?;
    let registry = Registry::open(
        RegistryConfig {
            data_dir: data_dir.clone(),
            metadata,
            blobs,
            secrets_key: settings.secrets_key.clone(),
            private_addresses: settings.private_addresses.clone(),
            flows: settings.flows,
            loaded: settings.loaded,
            refuse_ungranted_imports: settings.refuse_ungranted_imports,
            ..RegistryConfig::default()
        },
        runtime,
    )
    .with_context(|| format!("opening the registry in {}", data_dir.display()))?;
    let registry = Arc::new(registry);

    bootstrap(&registry, data_dir, &args).await?;
    // A token's last use is kept in memory and written once a minute (and when serving stops),
    // so that authenticating a request never writes.
    let flusher = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                flush_token_use(&registry).await;
            }
        })
    };
    let tls = match &settings.tls {
        Some((cert, key)) => Some(gantry_host::api::tls_config(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let options = gantry_host::ServeOptions {
        header_timeout: settings.header_timeout,
        drain_timeout: settings.drain_timeout,
        tls,
    };
    let api = gantry_host::ApiConfig {
        secure_cookies: options.tls.is_some(),
        ..settings.api.clone()
    };
    let router = gantry_host::router(registry.clone(), api);
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("binding {}", settings.bind))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    eprintln!("gantry listening on {scheme}://{}", listener.local_addr()?);
    // SIGTERM (docker stop, systemctl stop, Kubernetes) drains exactly as Ctrl-C does.
    let served = gantry_host::serve(listener, router, options, async move {
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!(
            "{signal}: shutting down; refusing new connections, letting calls in flight finish"
        );
    })
    .await
    .context("serving");
    flusher.abort();
    flush_token_use(&registry).await;
    match served {
        Err(e) if cut_off(&e) => {
            eprintln!("{}", e.root_cause());
            Ok(ExitCode::from(1))
        }
        served => served.map(|()| ExitCode::SUCCESS),
    }
}

/// The shared stores the settings name, if any (the embedded ones otherwise). The URLs are not
/// repeated in errors: they may hold a password.
#[allow(clippy::type_complexity)]
fn shared_stores(
    settings: &Settings,
) -> Result<(
    Option<Arc<dyn gantry_host::store::MetadataStore>>,
    Option<Arc<dyn gantry_host::store::BlobStore>>,
)> {
    use gantry_host::store::{PgStore, S3BlobStore};
    let metadata = match settings.database.as_deref() {
        None => None,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(Arc::new(PgStore::connect(url).context("connecting to the database")?) as Arc<_>)
        }
        Some(_) => anyhow::bail!("--database takes a postgres:// URL"),
    };
    let blobs = match settings.blobs.as_deref() {
        None => None,
        Some(url) if url.starts_with("s3://") => {
            Some(Arc::new(S3BlobStore::open(url).context("opening the blob store")?) as Arc<_>)
        }
        Some(_) => anyhow::bail!("--blobs takes an s3:// URL"),
    };
    Ok((metadata, blobs))
}

/// Whether serving ended with calls cut off by the drain timeout.
fn cut_off(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<gantry_host::api::DrainTimedOut>())
    })
}

async fn flush_token_use(registry: &Arc<Registry>) {
    let registry = registry.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || registry.flush_token_use()).await {
        tracing::warn!(error = %e, "cannot record when tokens were last used; will retry");
    }
}

/// First run: a platform token in `platform.token`; unless `--no-demo`, the demo organisation
/// with its admin token in `admin.token` and the sample flow. A data directory from before
/// platform tokens gets one on its next start.
async fn bootstrap(registry: &Registry, data_dir: &Path, args: &ServeArgs) -> Result<()> {
    let actor = "gantry serve";
    if !registry.has_platform_token()? {
        let file = data_dir.join("platform.token");
        let (_, token) = registry.create_platform_token(actor, "bootstrap platform")?;
        write_private(&file, &token)?;
        eprintln!(
            "first run: a platform token (creates organisations) is in {}",
            file.display()
        );
    }
    let file = data_dir.join("admin.token");
    if args.no_demo || file.exists() {
        return Ok(());
    }
    let (_, _, token) = match registry.create_organisation(actor, "demo", "bootstrap admin") {
        Ok(created) => created,
        // A demo organisation whose token file was removed: not seeded again.
        Err(gantry_host::registry::Error::NameTaken { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    write_private(&file, &token)?;
    eprintln!(
        "first run: an admin token for organisation `demo` is in {}",
        file.display()
    );
    match seed_demo(registry, &args.samples).await {
        Ok(flow) => {
            eprintln!("demo: published the sample connectors; flow {flow} greets whoever you name")
        }
        Err(e) => eprintln!("demo: not seeded ({e:#}); build sample-connectors first to get it"),
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: ServeConfig = toml::from_str(
            "bind = \"127.0.0.1:9000\"\nmax_upload_mib = 8\nbody_timeout_ms = 1500\n[private_addresses]\nacme = [\"127.0.0.1\"]\n[limits]\ncpu_time = 250\n",
        )
        .unwrap();
        let args = Wrap::parse_from(["x", "--max-upload-mib", "2"]).args;
        let s = settings(&args, file);
        assert_eq!(s.bind, "127.0.0.1:9000".parse().unwrap(), "from the file");
        assert_eq!(s.api.max_upload_bytes, 2 << 20, "the flag wins");
        assert_eq!(s.api.body_timeout, Duration::from_millis(1500));
        assert_eq!(s.limits.cpu_time, Duration::from_millis(250));
        assert_eq!(
            s.private_addresses["acme"],
            vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(s.data_dir, PathBuf::from("gantry-data"), "the default");
        assert_eq!(
            s.memory_keep_resident,
            RuntimeConfig::default().memory_keep_resident
        );
        let file: ServeConfig = toml::from_str("keep_resident_kib = 4096").unwrap();
        assert_eq!(settings(&args, file).memory_keep_resident, 4 << 20);
        let args = Wrap::parse_from(["x", "--keep-resident-kib", "16384"]).args;
        assert_eq!(
            settings(&args, ServeConfig::default()).memory_keep_resident,
            16 << 20
        );
        assert!(
            toml::from_str::<ServeConfig>("bnd = 1").is_err(),
            "unknown keys are refused"
        );
    }
}

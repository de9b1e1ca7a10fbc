//! Gantry set up the way each measured path needs it: a data directory with a connector
//! published, installed and instantiated; the HTTP API on 127.0.0.1; the cold paths; the hot
//! swap under load; many loaded versions.

use crate::stats::{Load, Summary, closed_loop_tasks};
use anyhow::{Context, Result, ensure};
use gantry_host::model::{PublishRequest, Role, RunStatus, StepSpec, Visibility};
use gantry_host::{ApiConfig, Connector, Registry, RegistryConfig, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The organisation and actor every scenario uses.
pub const ORG: &str = "bench";

/// A runtime whose artifact cache lives in `dir/cache`.
pub fn runtime_in(dir: &Path) -> Result<Runtime> {
    let defaults = RuntimeConfig::default();
    // As `gantry serve --keep-resident-kib` sets it, so its effect can be measured.
    let keep_resident = match std::env::var("GANTRY_KEEP_RESIDENT_KIB") {
        Ok(kib) => kib
            .parse::<usize>()
            .context("GANTRY_KEEP_RESIDENT_KIB is not a number of KiB")?
            .saturating_mul(1 << 10),
        Err(_) => defaults.memory_keep_resident,
    };
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        memory_keep_resident: keep_resident,
        ..defaults
    })?)
}

/// A registry in `dir` with `bytes` published (under the name and version its `describe()`
/// gives), installed, and one instance of it.
pub struct Deployment {
    pub registry: Arc<Registry>,
    pub data_dir: PathBuf,
    pub instance: i64,
    /// The install the instance is under.
    pub install: i64,
    /// The connector's name and version, as `describe()` gives them.
    pub name: String,
    pub version: String,
}

impl Deployment {
    pub async fn new(dir: &Path, runtime: Runtime, bytes: &[u8]) -> Result<Self> {
        Self::on(in_dir(dir), runtime, bytes).await
    }

    /// [`new`](Self::new) on the stores `config` names.
    pub async fn on(config: RegistryConfig, runtime: Runtime, bytes: &[u8]) -> Result<Self> {
        let dir = config.data_dir.clone();
        let registry = Registry::open(config, runtime)?;
        registry.create_org(ORG)?;
        // Held until the publish, which then finds it loaded instead of loading it again.
        let connector = registry.runtime().load(bytes).await?;
        let (name, version) = {
            let d = connector.description();
            (d.name.clone(), d.version.to_string())
        };
        // A stand-in value for every key the connector requires and gives no default for.
        let stand_in = |keys: Vec<String>| -> std::collections::BTreeMap<String, String> {
            keys.into_iter().map(|k| (k, "bench".to_string())).collect()
        };
        let d = connector.description();
        let config = stand_in(
            d.config
                .iter()
                .filter(|k| k.required && k.default_value.is_none())
                .map(|k| k.name.clone())
                .collect(),
        );
        let secrets = stand_in(
            d.secrets
                .iter()
                .filter(|k| k.required)
                .map(|k| k.name.clone())
                .collect(),
        );
        registry
            .publish(
                ORG,
                ORG,
                PublishRequest {
                    name: name.clone(),
                    version: version.clone(),
                    visibility: Visibility::Private,
                    tags: Vec::new(),
                    bytes: bytes.to_vec(),
                },
            )
            .await?;
        drop(connector);
        let install = registry.install(ORG, ORG, ORG, &name, &version)?;
        let instance = registry.create_instance(ORG, ORG, install.id, "bench", config, secrets)?;
        Ok(Self {
            registry: Arc::new(registry),
            data_dir: dir,
            instance: instance.id,
            install: install.id,
            name,
            version,
        })
    }

    /// Run `operation` of the instance through the registry (what the API does per call).
    pub async fn invoke(&self, operation: &str, input: &str) -> Result<gantry_host::CallOutput> {
        let (_, result) = self
            .registry
            .invoke_instance(ORG, self.instance, operation, input)
            .await?;
        Ok(result?)
    }
}

/// The embedded stores in `dir`.
pub fn in_dir(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        data_dir: dir.to_path_buf(),
        ..RegistryConfig::default()
    }
}

fn open_registry(dir: &Path, runtime: Runtime) -> Result<Registry> {
    Ok(Registry::open(in_dir(dir), runtime)?)
}

/// The HTTP API serving a deployment on 127.0.0.1, and a keep-alive client for it.
pub struct HttpServer {
    client: reqwest::Client,
    url: String,
    addr: std::net::SocketAddr,
    invoke_path: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    /// Serve `deployment` and prepare calls of `operation` on its instance.
    pub async fn start(deployment: &Deployment, operation: &str) -> Result<Self> {
        Self::serve(deployment.registry.clone(), deployment.instance, operation).await
    }

    /// Serve `registry` and prepare calls of `operation` on `instance`.
    pub async fn serve(registry: Arc<Registry>, instance: i64, operation: &str) -> Result<Self> {
        let token = registry
            .create_token(ORG, ORG, Role::Operator, "bench", None)?
            .1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = gantry_host::router(
            registry,
            ApiConfig {
                max_concurrent_calls: 4096,
                ..ApiConfig::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gantry_host::serve(
            listener,
            router,
            gantry_host::ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let invoke_path = format!("/v1/instances/{instance}/invoke/{operation}");
        Ok(Self {
            client: reqwest::Client::new(),
            url: format!("http://{addr}{invoke_path}"),
            addr,
            invoke_path,
            token,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// One request; `Ok` with the response body when the call succeeded.
    pub async fn call(&self, input: &str) -> Result<String> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(input.to_string())
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success(), "HTTP {status}: {body}");
        Ok(body)
    }

    /// A client of its own on one keep-alive connection to the server.
    pub fn keep_alive(&self) -> Result<KeepAlive> {
        KeepAlive::connect(self.addr, &self.token, &self.invoke_path)
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection, blocking, as `wrk -c1` is: a
/// request goes out in one write and its answer is read by its `Content-Length`, so that what
/// it times is the server, not a client library.
pub struct KeepAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    healthz: Vec<u8>,
    invoke_head: String,
    body: Vec<u8>,
}

impl KeepAlive {
    fn connect(addr: std::net::SocketAddr, token: &str, invoke_path: &str) -> Result<Self> {
        let writer = std::net::TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        let reader = std::io::BufReader::new(writer.try_clone()?);
        let headers = format!("Host: {addr}\r\nAuthorization: Bearer {token}\r\n");
        Ok(Self {
            reader,
            writer,
            healthz: format!("GET /healthz HTTP/1.1\r\n{headers}\r\n").into_bytes(),
            invoke_head: format!(
                "POST {invoke_path} HTTP/1.1\r\n{headers}Content-Type: application/json\r\n"
            ),
            body: Vec::new(),
        })
    }

    /// `GET /healthz`: whether it answered 200.
    pub fn healthz(&mut self) -> Result<bool> {
        use std::io::Write;
        self.writer.write_all(&self.healthz)?;
        Ok(self.answer()? == 200)
    }

    /// The operation on `input`: whether it answered 200.
    pub fn invoke(&mut self, input: &str) -> Result<bool> {
        use std::io::Write;
        let mut request = format!(
            "{}Content-Length: {}\r\n\r\n",
            self.invoke_head,
            input.len()
        );
        request.push_str(input);
        self.writer.write_all(request.as_bytes())?;
        Ok(self.answer()? == 200)
    }

    /// Read one answer: its status; the body is read and dropped.
    fn answer(&mut self) -> Result<u16> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            ensure!(self.reader.read_line(&mut line)? > 0, "connection closed");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(status)
    }
}

/// `bytes` with a custom section appended: the same component, but a new digest, so it is
/// stored and compiled anew (for cold starts and for many loaded versions).
pub fn variant(bytes: &[u8], n: u64) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"gantry-bench-variant";
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name);
    contents.extend_from_slice(&n.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// Publish → first call: publish `bytes` (a [`variant`] of the deployed connector) as a new
/// private revision of the deployed version (compiling it), move the install onto it (an
/// overwrite of the same version: installs run the revision they pin), then call the instance,
/// which now runs it. Returns the time to the result.
pub async fn publish_then_call(
    deployment: &Deployment,
    bytes: Vec<u8>,
    operation: &str,
    input: &str,
) -> Result<Duration> {
    let digest = gantry_host::Digest::of(&bytes);
    let started = Instant::now();
    deployment
        .registry
        .publish(
            ORG,
            ORG,
            PublishRequest {
                name: deployment.name.clone(),
                version: deployment.version.clone(),
                visibility: Visibility::Private,
                tags: Vec::new(),
                bytes,
            },
        )
        .await?;
    deployment.registry.update(
        ORG,
        ORG,
        deployment.install,
        &gantry_host::model::Update {
            version: deployment.version.clone(),
            mode: gantry_host::model::UpdateMode::Overwrite,
            acknowledge: Vec::new(),
            acknowledge_customisations_lost: false,
            carry_customisations: false,
        },
    )?;
    let output = deployment.invoke(operation, input).await?;
    let elapsed = started.elapsed();
    ensure!(
        output.digest == digest,
        "the call did not run the new revision"
    );
    Ok(elapsed)
}

/// Restart → first call: a new runtime (engine, pool, cache) and registry on an existing
/// data directory, then one call of `instance`. Returns the time to the first result.
pub async fn restart_then_call(
    data_dir: &Path,
    instance: i64,
    operation: &str,
    input: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let runtime = runtime_in(data_dir)?;
    let registry = open_registry(data_dir, runtime)?;
    let (_, result) = registry
        .invoke_instance(ORG, instance, operation, input)
        .await?;
    result.context("the first call after the restart failed")?;
    let elapsed = started.elapsed();
    ensure!(
        registry.runtime().stats().compiled == 0,
        "the restart compiled instead of loading the cached artifact"
    );
    Ok(elapsed)
}

/// The product path of a hot swap: a flow whose one step calls an instance, and two instances
/// to rebind it between — of the same connector, as published with other bytes by a second
/// organisation (so each has its own digest).
pub struct SwapDeployment {
    registry: Arc<Registry>,
    flow: i64,
    instances: [i64; 2],
}

impl SwapDeployment {
    pub async fn new(dir: &Path, runtime: Runtime, bytes: &[u8], operation: &str) -> Result<Self> {
        let first = Deployment::new(dir, runtime, bytes).await?;
        let registry = first.registry.clone();
        let other = "bench-other";
        registry.create_org(other)?;
        registry
            .publish(
                other,
                other,
                PublishRequest {
                    name: first.name.clone(),
                    version: first.version.clone(),
                    visibility: Visibility::Public,
                    tags: Vec::new(),
                    bytes: variant(bytes, 1),
                },
            )
            .await?;
        let install = registry.install(ORG, ORG, other, &first.name, &first.version)?;
        let second = registry.create_instance(
            ORG,
            ORG,
            install.id,
            "bench-other",
            Default::default(),
            Default::default(),
        )?;
        let flow = registry.create_flow(
            ORG,
            ORG,
            "hot swap",
            vec![StepSpec {
                name: "call".into(),
                instance: first.instance,
                operation: operation.into(),
                input: serde_json::Value::String("${input}".into()),
            }],
        )?;
        Ok(Self {
            registry,
            flow: flow.id,
            instances: [first.instance, second.id],
        })
    }

    /// Rebind the flow's step to instance `which` (0 or 1).
    pub fn rebind(&self, which: usize) -> Result<()> {
        self.registry
            .rebind_step(ORG, ORG, self.flow, "call", Some(self.instances[which]))?;
        Ok(())
    }

    /// Run the flow on `input`; whether the run succeeded.
    pub async fn run(&self, input: &serde_json::value::RawValue) -> bool {
        self.registry
            .run_flow(ORG, self.flow, input)
            .await
            .is_ok_and(|run| run.status == RunStatus::Succeeded)
    }
}

/// Two one-step flows over the same instance, one recording its step runs and one not: what
/// a recording costs a run.
pub struct RecordingDeployment {
    /// The deployment the flows call through.
    pub deployment: Deployment,
    registry: Arc<Registry>,
    flows: [i64; 2],
}

impl RecordingDeployment {
    pub async fn new(dir: &Path, runtime: Runtime, bytes: &[u8], operation: &str) -> Result<Self> {
        Self::on(in_dir(dir), runtime, bytes, operation).await
    }

    /// [`new`](Self::new) on the stores `config` names.
    pub async fn on(
        config: RegistryConfig,
        runtime: Runtime,
        bytes: &[u8],
        operation: &str,
    ) -> Result<Self> {
        let deployment = Deployment::on(config, runtime, bytes).await?;
        let registry = deployment.registry.clone();
        let mut flows = [0; 2];
        for (n, record) in [false, true].into_iter().enumerate() {
            let step = StepSpec {
                name: "call".into(),
                instance: deployment.instance,
                operation: operation.into(),
                input: serde_json::Value::String("${input}".into()),
            };
            flows[n] = registry
                .create_flow_recording(
                    ORG,
                    ORG,
                    &format!("recorded: {record}"),
                    vec![step],
                    record,
                )?
                .id;
        }
        Ok(Self {
            deployment,
            registry,
            flows,
        })
    }

    /// One run of the recording flow (`recorded`) or the plain one; whether it succeeded.
    pub async fn run(&self, recorded: bool, input: &serde_json::value::RawValue) -> bool {
        let flow = self.flows[usize::from(recorded)];
        self.registry
            .run_flow(ORG, flow, input)
            .await
            .is_ok_and(|run| run.status == RunStatus::Succeeded)
    }

    /// `runs` runs of the recording flow (`recorded`) or the plain one, one after another;
    /// each run's time.
    pub async fn runs(
        &self,
        recorded: bool,
        input: &serde_json::value::RawValue,
        runs: usize,
    ) -> Result<Vec<Duration>> {
        let flow = self.flows[usize::from(recorded)];
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let run = self.registry.run_flow(ORG, flow, input).await?;
            ensure!(run.status == RunStatus::Succeeded, "a run failed: {run:?}");
            times.push(started.elapsed());
        }
        Ok(times)
    }
}

/// Flow runs under `load`; with `swap_every`, a task rebinds the flow's step between the two
/// instances at that interval for the whole run. A run that does not succeed is a failure.
/// Returns what the callers saw and how many rebinds happened.
pub async fn hot_swap(
    deployment: &Arc<SwapDeployment>,
    input: &str,
    load: Load,
    swap_every: Option<Duration>,
) -> Result<(Summary, usize)> {
    let input: Arc<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string(input.to_string())?.into();
    // Every window starts on the first instance.
    deployment.rebind(0)?;
    let done = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = swap_every.map(|every| {
        let (deployment, done, swaps) = (deployment.clone(), done.clone(), swaps.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut next = 1;
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                deployment.rebind(next)?;
                next = 1 - next;
                swaps.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    });
    let callers = deployment.clone();
    let summary = closed_loop_tasks(load, move || {
        let (deployment, input) = (callers.clone(), input.clone());
        async move { deployment.run(&input).await }
    })
    .await;
    done.store(true, Ordering::Relaxed);
    if let Some(swapper) = swapper {
        swapper.await??;
    }
    Ok((summary, swaps.load(Ordering::Relaxed)))
}

/// Load `count` distinct variants of `bytes` (each its own digest and compiled code).
pub async fn load_versions(
    runtime: &Runtime,
    bytes: &[u8],
    count: usize,
) -> Result<Vec<Arc<Connector>>> {
    let mut loaded = Vec::with_capacity(count);
    for n in 0..count {
        loaded.push(runtime.load(&variant(bytes, n as u64)).await?);
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_appends_one_well_formed_custom_section() {
        let base = b"\0asm\x0d\0\x01\0".to_vec();
        let v = variant(&base, 7);
        assert_eq!(&v[..base.len()], &base[..]);
        let section = &v[base.len()..];
        assert_eq!(section[0], 0, "custom section id");
        assert_eq!(usize::from(section[1]), section.len() - 2, "declared size");
        assert_eq!(usize::from(section[2]), b"gantry-bench-variant".len());
        assert_ne!(variant(&base, 8), v);
    }
}

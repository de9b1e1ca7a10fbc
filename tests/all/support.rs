//! Shared test support: the sample connectors, built from source once per test run, and a
//! runtime shared by the tests that need no special settings.

#![allow(dead_code)]

use gantry_host::model::Role;
use gantry_host::{ApiConfig, Registry, RegistryConfig, Runtime, RuntimeConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// Root of the repository.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build every sample connector (once per process) and return the directory of the `.wasm`s.
pub fn sample_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target").join("sample-connectors");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root().join("sample-connectors").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            // Host flags (coverage, sanitizers, target-cpu) must not leak into guest builds.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("running cargo to build the sample connectors");
        assert!(status.success(), "building sample connectors failed");
        target.join("wasm32-wasip2").join("release")
    })
}

/// The bytes of sample connector `name` (as named in `sample-connectors/`).
pub fn connector(name: &str) -> Vec<u8> {
    let path = sample_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The bytes of the JavaScript or Python sample connector `name` (`rest-js`, `rest-py`), built
/// once per process by `gantry build` — npm and componentize-js, or a virtualenv with
/// componentize-py, installed in the sample's directory on first use.
pub fn script_connector(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let path = built
        .entry(name.to_string())
        .or_insert_with(|| {
            let out = root()
                .join("target")
                .join("sample-connectors")
                .join("scripts")
                .join(format!("{name}.wasm"));
            // Relative paths, as an author would type them.
            let status = Command::new(env!("CARGO_BIN_EXE_gantry"))
                .current_dir(root())
                .arg("build")
                .arg("--dir")
                .arg(Path::new("sample-connectors").join(name))
                .arg("--out")
                .arg(Path::new("target/sample-connectors/scripts").join(format!("{name}.wasm")))
                .status()
                .expect("running gantry build");
            assert!(status.success(), "gantry build of {name} failed");
            out
        })
        .clone();
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A runtime shared by all tests in this process, with its own artifact cache. Sharing it keeps
/// the pooling allocator's reservation to one per process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let cache = tempfile::tempdir().unwrap();
            let runtime = Runtime::new(RuntimeConfig {
                cache_dir: Some(cache.path().to_path_buf()),
                // The JavaScript and Python samples take 10–20 s to compile, at low priority:
                // far longer on a loaded machine.
                compile_timeout: std::time::Duration::from_secs(600),
                ..RuntimeConfig::default()
            })
            .unwrap();
            (runtime, cache)
        })
        .0
}

/// A runtime of its own with a small pool (for tests that need their own cache directory).
pub fn small_runtime(cache_dir: Option<PathBuf>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir,
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Parse a JSON string, for assertions.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Everything `tracing` emits in this test process at every level, from the first call on.
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install (once) a global TRACE-level subscriber that records every log line in memory. A
/// global one, because tracing caches per-callsite interest across threads.
pub fn captured_logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        CapturedLogs(buffer)
    })
}

/// Every file below `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A real `gantry serve` server on 127.0.0.1 over its own data directory, with a real client.
pub struct Server {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(dir: &Path, runtime: Runtime, config: ApiConfig) -> Self {
        let registry = RegistryConfig {
            data_dir: dir.to_path_buf(),
            ..RegistryConfig::default()
        };
        Self::start_with(registry, runtime, config).await
    }

    pub async fn start_with(registry: RegistryConfig, runtime: Runtime, config: ApiConfig) -> Self {
        let registry = Arc::new(Registry::open(registry, runtime).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = gantry_host::router(registry.clone(), config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gantry_host::serve(
                listener,
                router,
                gantry_host::ServeOptions {
                    header_timeout: std::time::Duration::from_millis(500),
                    ..Default::default()
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        Server {
            addr,
            registry,
            // A fresh connection per request: a server that answers without reading a body (413,
            // 404) closes that connection, and a pooled client could race it on the next POST.
            client: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    pub fn token(&self, org: &str, role: Role) -> String {
        self.registry.create_org(org).unwrap();
        self.registry
            .create_token(org, "test", role, &format!("{role:?}"), None)
            .unwrap()
            .1
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET path` with `token`.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Publish echo 1.0.0 (private to `org`), install it and make an instance; its id.
    pub async fn echo_instance(&self, admin: &str, org: &str) -> i64 {
        let r = self
            .publish(admin, "echo", "1.0.0", "", connector("echo"))
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        let install = self
            .call(
                Method::POST,
                "/v1/installs",
                Some(admin),
                Some(serde_json::json!({"org": org, "name": "echo", "version": "1.0.0"})),
            )
            .await
            .1["id"]
            .clone();
        self.call(
            Method::POST,
            "/v1/instances",
            Some(admin),
            Some(serde_json::json!({"install": install, "name": "i"})),
        )
        .await
        .1["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn publish(
        &self,
        token: &str,
        name: &str,
        version: &str,
        query: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!(
                "http://{}/v1/connectors/{name}/versions/{version}?{query}",
                self.addr
            ))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The machine code of an API error body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A real `gantry serve` process: the child, the URL it listens on, the stderr lines it printed
/// before saying so (`before`) and those it prints after (`lines`). Killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub url: String,
    pub before: Vec<String>,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Start `gantry serve ARGS --samples <the built samples>` and wait until it says where
    /// it listens.
    pub fn start(args: &[&str]) -> Served {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Served {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .envs(env.iter().copied())
            .arg("serve")
            .args(args)
            .arg("--samples")
            .arg(sample_dir())
            .env_remove("GANTRY_DATA_DIR")
            .env_remove("GANTRY_BIND")
            .env_remove("GANTRY_CONFIG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut before = Vec::new();
        let url = loop {
            let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(120)) else {
                panic!("gantry serve did not say where it listens: {before:?}");
            };
            if let Some(url) = line.strip_prefix("gantry listening on ") {
                break url.to_string();
            }
            before.push(line);
        };
        Served {
            child,
            url,
            before,
            lines,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// How the process exited, waiting for at most 30 s; panics, saying `why`, if it has not.
    pub async fn exit_status(&mut self, why: &str) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("gantry serve did not exit: {why}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The CLI's client commands: the lifecycle verbs against a running `gantry serve`, with
//! readable tables by default and `--json` for scripts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "GANTRY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// API token (default: $GANTRY_TOKEN, else the file given by --token-file).
    #[arg(long, global = true, env = "GANTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the API token.
    #[arg(long, global = true, default_value = "gantry-data/admin.token")]
    token_file: PathBuf,
    /// Print JSON instead of text or tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Publish a component; name and version default to what its describe() says.
    Publish {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        /// Publish to the marketplace (immutable) instead of privately.
        #[arg(long)]
        public: bool,
        /// Comma-separated tags.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Search the marketplace.
    Search { text: Option<String> },
    /// Every version of ORG/NAME with its state.
    Versions { connector: String },
    /// Set the state of one of your versions: NAME@VERSION active|deprecated|blocked.
    State { version: String, state: String },
    /// Install ORG/NAME@VERSION into your organisation.
    Install { package: String },
    /// Update an install to VERSION.
    Update {
        install: i64,
        version: String,
        /// Move the install (dropping customisations) and rebind its flows.
        #[arg(
            long,
            conflicts_with = "alongside",
            required_unless_present = "alongside"
        )]
        overwrite: bool,
        /// Install the new version next to the old one.
        #[arg(long)]
        alongside: bool,
        /// Confirm that the install's customisations will be lost.
        #[arg(long)]
        acknowledge_customisations_lost: bool,
    },
    /// Instances (configuration + credentials).
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Flows.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// The audit log of your organisation.
    Audit,
}

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create an instance; secrets come from a JSON file or stdin, never the command line.
    Create {
        #[arg(long)]
        install: i64,
        #[arg(long)]
        name: String,
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = crate::parse_pair)]
        config: Vec<(String, String)>,
        /// JSON object of secrets; `-` reads it from stdin.
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
    },
    /// Run one operation of an instance on the server.
    Invoke {
        instance: i64,
        operation: String,
        #[arg(default_value = "{}")]
        input: String,
    },
}

#[derive(Subcommand)]
pub enum FlowCommand {
    /// Create a flow from a JSON file: {"name": …, "steps": [{"name","instance","operation","input"}]}.
    Create { file: PathBuf },
    /// Run a flow on an input document.
    Run {
        flow: i64,
        #[arg(default_value = "{}")]
        input: String,
    },
    /// Rebind a step (to another instance, or to what its install runs now).
    Rebind {
        flow: i64,
        step: String,
        #[arg(long)]
        instance: Option<i64>,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(remote: &Remote) -> Result<Self> {
        let token = match &remote.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&remote.token_file)
                .with_context(|| {
                    format!(
                        "no --token or GANTRY_TOKEN, and cannot read {}",
                        remote.token_file.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: remote.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let text = self.send_text(request).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The body of a successful response as the server wrote it; an error response is the
    /// server's typed error.
    async fn send_text(&self, request: reqwest::RequestBuilder) -> Result<String> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let message = body["error"]["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_string);
            bail!("{status} [{code}] {message}");
        }
        Ok(text)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// POST a JSON document as written, and answer the response body as written.
    async fn post_raw(&self, path: &str, body: &RawValue) -> Result<String> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.get().to_string());
        self.send_text(request).await
    }
}

/// Print "… still working" dots on stderr while `work` runs longer than a moment.
async fn with_progress<T>(label: &str, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let mut shown = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(400));
    ticker.tick().await;
    loop {
        tokio::select! {
            result = &mut work => {
                if shown {
                    eprintln!(" done");
                }
                return result;
            }
            _ = ticker.tick() => {
                if !shown {
                    eprint!("{label}");
                    shown = true;
                }
                eprint!(".");
                let _ = std::io::stderr().flush();
            }
        }
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn split_version(text: &str) -> Result<(&str, &str)> {
    text.split_once('@')
        .with_context(|| format!("expected NAME@VERSION, got `{text}`"))
}

fn read_input(text: &str) -> Result<Value> {
    serde_json::from_str(&read_text(text)?).context("the input must be a JSON document")
}

/// `text`, or standard input for `-`.
fn read_text(text: &str) -> Result<String> {
    if text == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf)?;
        Ok(buf)
    } else {
        Ok(text.to_string())
    }
}

pub async fn run(remote: Remote, command: ClientCommand) -> Result<()> {
    let client = Client::new(&remote)?;
    let json_out = remote.json;
    let print_json =
        |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match command {
        ClientCommand::Publish {
            file,
            name,
            version,
            public,
            tags,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (name, version) = match (name, version) {
                (Some(n), Some(v)) => (n, v),
                (n, v) => {
                    let rt = gantry_host::Runtime::new(gantry_host::RuntimeConfig {
                        max_instances: 2,
                        ..Default::default()
                    })?;
                    let report = with_progress("reading describe()", rt.inspect(&bytes)).await?;
                    let d = report.fits.map_err(|why| {
                        anyhow::anyhow!("{} does not fit the world: {why}", file.display())
                    })?;
                    (n.unwrap_or(d.name), v.unwrap_or(d.version.to_string()))
                }
            };
            let visibility = if public { "public" } else { "private" };
            let url = format!(
                "{}/v1/connectors/{name}/versions/{version}?visibility={visibility}&tags={tags}",
                client.base
            );
            let request = client
                .http
                .post(url)
                .header("content-type", "application/wasm")
                .body(bytes);
            let label = format!("uploading and compiling {name}@{version}");
            let body = with_progress(&label, client.send(request)).await?;
            if json_out {
                print_json(&body);
            } else {
                let v = &body["version"];
                println!(
                    "{} {}/{}@{} revision {} {} ({})",
                    s(&body["outcome"]),
                    s(&v["org"]),
                    s(&v["name"]),
                    s(&v["version"]),
                    s(&v["revision"]),
                    s(&v["digest"]),
                    s(&v["visibility"])
                );
            }
        }
        ClientCommand::Search { text } => {
            let query = text
                .map(|t| format!("?text={}", t.replace(' ', "+")))
                .unwrap_or_default();
            let body = client.get(&format!("/v1/marketplace{query}")).await?;
            if json_out {
                print_json(&body);
            } else {
                let rows = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|l| {
                        let versions: Vec<String> = l["versions"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|v| {
                                format!(
                                    "{}{}",
                                    s(&v["version"]),
                                    if v["state"] == "active" {
                                        String::new()
                                    } else {
                                        format!(" ({})", s(&v["state"]))
                                    }
                                )
                            })
                            .collect();
                        vec![
                            format!("{}/{}", s(&l["org"]), s(&l["name"])),
                            s(&l["latest"]["version"]),
                            s(&l["latest"]["description"]["description"]),
                            versions.join(", "),
                        ]
                    })
                    .collect();
                table(&["connector", "latest", "description", "versions"], rows);
            }
        }
        ClientCommand::Versions { connector } => {
            let (org, name) = connector
                .split_once('/')
                .with_context(|| format!("expected ORG/NAME, got `{connector}`"))?;
            let body = client
                .get(&format!("/v1/connectors/{org}/{name}/versions"))
                .await?;
            if json_out {
                print_json(&body);
            } else {
                let rows = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|v| {
                        vec![
                            s(&v["version"]),
                            s(&v["revision"]),
                            s(&v["state"]),
                            s(&v["visibility"]),
                            s(&v["digest"]),
                            s(&v["publisher"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "version",
                        "rev",
                        "state",
                        "visibility",
                        "digest",
                        "publisher",
                    ],
                    rows,
                );
            }
        }
        ClientCommand::State { version, state } => {
            let (name, version) = split_version(&version)?;
            let body = client
                .post(
                    &format!("/v1/connectors/{name}/versions/{version}/state"),
                    json!({"state": state}),
                )
                .await?;
            if json_out {
                print_json(&body)
            } else {
                println!("{}@{} is {}", name, version, s(&body["state"]))
            }
        }
        ClientCommand::Install { package } => {
            let (org, rest) = package
                .split_once('/')
                .with_context(|| format!("expected ORG/NAME@VERSION, got `{package}`"))?;
            let (name, version) = split_version(rest)?;
            let body = client
                .post(
                    "/v1/installs",
                    json!({"org": org, "name": name, "version": version}),
                )
                .await?;
            if json_out {
                print_json(&body)
            } else {
                println!("install {} of {}/{}@{}", s(&body["id"]), org, name, version)
            }
        }
        ClientCommand::Update {
            install,
            version,
            overwrite,
            alongside: _,
            acknowledge_customisations_lost,
        } => {
            let mode = if overwrite { "overwrite" } else { "alongside" };
            let body = client
                .post(
                    &format!("/v1/installs/{install}/update"),
                    json!({"version": version, "mode": mode,
                "acknowledge_customisations_lost": acknowledge_customisations_lost}),
                )
                .await?;
            if json_out {
                print_json(&body)
            } else {
                println!(
                    "install {} now runs {}@{} ({mode})",
                    s(&body["id"]),
                    s(&body["name"]),
                    s(&body["version"])
                )
            }
        }
        ClientCommand::Instance(InstanceCommand::Create {
            install,
            name,
            config,
            secrets,
        }) => {
            let secrets: Value = match secrets {
                None => json!({}),
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        if std::io::stdin().is_terminal() {
                            eprintln!("paste the secrets JSON object, then Ctrl-D:");
                        }
                        let mut buf = String::new();
                        std::io::stdin().read_to_string(&mut buf)?;
                        buf
                    } else {
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?
                    };
                    serde_json::from_str(&text)
                        .context("secrets must be a JSON object of strings")?
                }
            };
            let config: serde_json::Map<String, Value> = config
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let body = client
                .post(
                    "/v1/instances",
                    json!({"install": install, "name": name, "config": config, "secrets": secrets}),
                )
                .await?;
            if json_out {
                print_json(&body)
            } else {
                println!(
                    "instance {} `{}` (secrets: {})",
                    s(&body["id"]),
                    name,
                    s(&body["secret_keys"])
                )
            }
        }
        ClientCommand::Instance(InstanceCommand::Invoke {
            instance,
            operation,
            input,
        }) => {
            // Input and output as written, like the API: a `Value` would round big numbers
            // and could not print an output holding a lone surrogate escape at all.
            let input: Box<RawValue> = serde_json::from_str(&read_text(&input)?)
                .context("the input must be a JSON document")?;
            let text = client
                .post_raw(
                    &format!("/v1/instances/{instance}/invoke/{operation}"),
                    &input,
                )
                .await?;
            if json_out {
                println!("{text}");
            } else {
                #[derive(serde::Deserialize)]
                struct Invoked {
                    output: Box<RawValue>,
                    digest: String,
                    duration_us: u64,
                }
                let invoked: Invoked = serde_json::from_str(&text)
                    .context("the server's answer is not an invoke result")?;
                println!("{}", invoked.output.get());
                eprintln!("{} in {} µs", invoked.digest, invoked.duration_us)
            }
        }
        ClientCommand::Flow(FlowCommand::Create { file }) => {
            let spec: Value = serde_json::from_str(
                &std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?,
            )
            .with_context(|| format!("{} is not JSON", file.display()))?;
            let body = client.post("/v1/flows", spec).await?;
            if json_out {
                print_json(&body);
            } else {
                println!("flow {} `{}`", s(&body["id"]), s(&body["name"]));
                let rows = body["steps"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|st| {
                        vec![
                            s(&st["name"]),
                            s(&st["instance"]),
                            s(&st["operation"]),
                            s(&st["digest"]),
                        ]
                    })
                    .collect();
                table(&["step", "instance", "operation", "pinned digest"], rows);
            }
        }
        ClientCommand::Flow(FlowCommand::Run { flow, input }) => {
            let body = client
                .post(&format!("/v1/flows/{flow}/runs"), read_input(&input)?)
                .await?;
            if json_out {
                print_json(&body);
            } else {
                let rows = body["steps"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|st| {
                        vec![
                            s(&st["name"]),
                            s(&st["digest"]),
                            format!("{} µs", s(&st["duration_us"])),
                            st["error"]["message"]
                                .as_str()
                                .map_or("ok".into(), str::to_string),
                        ]
                    })
                    .collect();
                table(&["step", "digest", "time", "result"], rows);
                println!("run {} {}", s(&body["id"]), s(&body["status"]));
                print_json(&body["output"]);
            }
        }
        ClientCommand::Flow(FlowCommand::Rebind {
            flow,
            step,
            instance,
        }) => {
            let body = client
                .post(
                    &format!("/v1/flows/{flow}/steps/{step}/rebind"),
                    json!({"instance": instance}),
                )
                .await?;
            if json_out {
                print_json(&body);
            } else {
                let pinned = body["steps"]
                    .as_array()
                    .and_then(|st| st.iter().find(|x| x["name"] == step.as_str()))
                    .map(|x| s(&x["digest"]));
                println!(
                    "flow {flow} step `{step}` now pinned to {}",
                    pinned.unwrap_or_default()
                );
            }
        }
        ClientCommand::Audit => {
            let body = client.get("/v1/audit").await?;
            if json_out {
                print_json(&body);
            } else {
                let rows = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|e| {
                        vec![
                            s(&e["id"]),
                            s(&e["at"]),
                            s(&e["actor"]),
                            s(&e["action"]),
                            s(&e["subject"]),
                        ]
                    })
                    .collect();
                table(&["id", "at (ms)", "actor", "action", "subject"], rows);
            }
        }
    }
    Ok(())
}

//! The CLI's client commands: the lifecycle verbs against a running `gantry serve`, with
//! readable tables by default and `--json` for scripts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gantry_host::api::wire::{
    BackupRequest, ErrorBody, FlowRequest, InstallRequest, InstanceRequest, Invoked, NewOrg,
    NewToken, OrgRequest, PublishEvent, Published, RebindInstallRequest, RebindStepRequest,
    RecordRequest, StateRequest, TokenRequest, kebab, path_segment, when,
};
use gantry_host::model::Canary;
use gantry_host::model::{
    AuditEntry, Flow, Install, Instance, Listing, OrgInfo, Page, PublishStage, Risk, Role, Run,
    TokenInfo, Update, UpdateMode, VersionInfo, VersionState,
};
use gantry_host::registry::Backup;
use gantry_host::registry::canary::CanaryRequest;
use gantry_host::registry::plan::UpdatePlan;
use gantry_host::registry::replay::{Candidate, ReplayReport, ReplayRequest};
use gantry_host::registry::usage::Usage;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

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
    /// Trust this CA certificate (PEM) for an HTTPS server, besides the system's and the
    /// Web PKI's roots (a private CA).
    #[arg(long, global = true, env = "GANTRY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of text or tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Publish a component; name and version default to what its describe() says.
    Publish {
        file: PathBuf,
        /// The name the component must describe (with --version; by default the server
        /// publishes it under the name and version its `describe()` gives).
        #[arg(long, requires = "version")]
        name: Option<String>,
        /// The version the component must describe (with --name).
        #[arg(long, requires = "name")]
        version: Option<String>,
        /// Publish to the marketplace (immutable) instead of privately.
        #[arg(long)]
        public: bool,
        /// Comma-separated tags.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Search the marketplace: connectors whose name, description or operations have words
    /// starting with each of TEXT's (every page of them).
    Search {
        text: Option<String>,
        /// Only connectors with a version tagged TAG.
        #[arg(long)]
        tag: Option<String>,
        /// Only connectors this organisation publishes.
        #[arg(long)]
        publisher: Option<String>,
    },
    /// Every version of ORG/NAME with its state.
    Versions { connector: String },
    /// Where used: the instances and flow steps under an install, or (within your
    /// organisation) under a version of a connector.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Set the state of one of your versions: NAME@VERSION active|deprecated|blocked.
    State {
        version: String,
        #[arg(value_parser = parse_state)]
        state: VersionState,
    },
    /// Install ORG/NAME@VERSION into your organisation.
    Install { package: String },
    /// Your organisation's installs, with the update each has available (or one install).
    Installs { id: Option<i64> },
    /// Delete one of your private versions: NAME@VERSION (a public one is never deleted).
    Delete { version: String },
    /// Set an install's customisations (KEY=VALUE, all of them: the rest are dropped).
    Customise {
        install: i64,
        #[arg(value_name = "KEY=VALUE", value_parser = crate::parse_pair)]
        values: Vec<(String, String)>,
    },
    /// Grant an install the outbound origins its connector may reach (all of them).
    Outbound {
        install: i64,
        /// e.g. https://api.example.com or https://*.example.com
        origins: Vec<String>,
    },
    /// Rebind every flow step through an install to INSTANCE.
    Rebind {
        install: i64,
        #[arg(long)]
        instance: i64,
    },
    /// The Prometheus text of /metrics (your organisation's calls; the server's, for the
    /// platform).
    Metrics,
    /// Update an install to VERSION (`--plan`: show what it would do, changing nothing).
    Update {
        install: i64,
        version: String,
        /// Show the update plan: customisations lost, steps moved, what the version changes,
        /// instances lacking credentials, new hosts, and the risks to acknowledge.
        #[arg(long, conflicts_with_all = ["overwrite", "alongside"])]
        plan: bool,
        /// Move the install (dropping customisations) and rebind its flows.
        #[arg(
            long,
            conflicts_with = "alongside",
            required_unless_present_any = ["alongside", "plan"]
        )]
        overwrite: bool,
        /// Install the new version next to the old one.
        #[arg(long)]
        alongside: bool,
        /// Confirm that the install's customisations will be lost.
        #[arg(long)]
        acknowledge_customisations_lost: bool,
        /// Accept these risks of the update plan (comma-separated: customisations-lost,
        /// breaking-changes, unknown-changes, new-outbound-hosts, downgrade).
        #[arg(long, value_delimiter = ',', value_parser = parse_risk)]
        acknowledge: Vec<Risk>,
        /// Alongside: give the new install the old one's customisations.
        #[arg(long, requires = "alongside")]
        carry_customisations: bool,
    },
    /// Instances (configuration + credentials).
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Flows.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// The audit log of your organisation (the platform's, with a platform token).
    Audit,
    /// Back the running server up into DEST, a new directory on the server's machine (with a
    /// platform token); `gantry serve --data-dir DEST` restores it.
    Backup { dest: String },
    /// Organisations (with a platform token).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Tokens of your organisation (the platform's, with a platform token).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organisation; prints its first admin token (shown once).
    Create {
        id: String,
        /// The label of its admin token.
        #[arg(long, default_value = "admin")]
        admin_label: String,
    },
    /// Every organisation.
    List,
    /// Mint another token of an organisation (e.g. when its admin token is lost).
    Token {
        org: String,
        #[command(flatten)]
        token: NewTokenArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it (shown once).
    Create(NewTokenArgs),
    /// Every token (id, role, label, created, last used, expires — never a secret).
    List,
    /// Revoke a token: it is refused from its next request on.
    Revoke { id: i64 },
}

#[derive(Args)]
pub struct NewTokenArgs {
    /// admin, publisher, operator or viewer (platform, for a platform token).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    #[arg(long)]
    label: String,
    /// Expire after this long: 90s, 45m, 12h, 30d (never, if absent).
    #[arg(long, value_parser = parse_expiry)]
    expires: Option<u64>,
}

impl NewTokenArgs {
    fn request(self) -> TokenRequest {
        TokenRequest {
            role: self.role,
            label: self.label,
            expires_in_secs: self.expires,
        }
    }
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
    /// Every instance, or one.
    List,
    /// One instance (its secrets are never shown, only their keys).
    Show { id: i64 },
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
    /// Every flow.
    List,
    /// One flow with its steps and their pins.
    Show { id: i64 },
    /// A flow's recorded runs, newest first.
    Runs { flow: i64 },
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
    /// Switch recording of a flow's step runs `on` or `off` (for replays).
    Record {
        flow: i64,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Replay a step's recorded inputs against a candidate (another instance, or a version of
    /// its connector): outbound requests are answered from the recordings, none sent.
    Replay {
        flow: i64,
        step: String,
        /// Run the inputs on this instance.
        #[arg(long, conflicts_with = "version", required_unless_present = "version")]
        instance: Option<i64>,
        /// Run the inputs on this version of the step's connector (on the step's instance).
        #[arg(long)]
        version: Option<String>,
        /// With --version: this revision (default: the newest).
        #[arg(long, requires = "version")]
        revision: Option<u32>,
        /// How many of the newest recordings.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// A step's canary: start one (--instance or --version, --percent, --max-error-rate,
    /// --min-runs), or show, --promote or --rollback the one it has.
    Canary {
        flow: i64,
        step: String,
        #[arg(long, conflicts_with_all = ["version", "promote", "rollback"])]
        instance: Option<i64>,
        #[arg(long, conflicts_with_all = ["promote", "rollback"])]
        version: Option<String>,
        #[arg(long, requires = "version")]
        revision: Option<u32>,
        /// Share of runs (1–100) the candidate takes.
        #[arg(long, default_value_t = 10)]
        percent: u8,
        /// Highest share of the candidate's runs that may fail (0–1).
        #[arg(long, default_value_t = 0.05)]
        max_error_rate: f64,
        /// Candidate runs before it is decided.
        #[arg(long, default_value_t = 20)]
        min_runs: u32,
        /// Wait for --promote instead of promoting by itself.
        #[arg(long)]
        manual: bool,
        #[arg(long, conflicts_with = "rollback")]
        promote: bool,
        #[arg(long)]
        rollback: bool,
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
        let mut http = reqwest::Client::builder().use_rustls_tls();
        if let Some(path) = &remote.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build().context("setting up the HTTP client")?,
            base: remote.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Send `request`; the answer as `T`, and as the server wrote it (what `--json` prints).
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(T, String)> {
        let text = self.send_text(request).await?;
        let value = serde_json::from_str(&text).with_context(|| {
            format!("the server's answer is not what this client expects: {text}")
        })?;
        Ok((value, text))
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
            return Err(server_error(status, &text));
        }
        Ok(text)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, String)> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(T, String)> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(T, String)> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<(T, String)> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// Every item of a paged list, following its pages (`after` = the last item's key).
    async fn all<T: DeserializeOwned>(
        &self,
        path: &str,
        key: impl Fn(&T) -> String,
    ) -> Result<Vec<T>> {
        self.all_where(path, &[], key).await
    }

    /// Every item of a paged list that `query` selects, following its pages.
    async fn all_where<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        key: impl Fn(&T) -> String,
    ) -> Result<Vec<T>> {
        let mut items: Vec<T> = Vec::new();
        loop {
            let mut request = self
                .http
                .get(format!("{}{path}", self.base))
                .query(query)
                .query(&[("limit", Page::MAX)]);
            if let Some(last) = items.last() {
                request = request.query(&[("after", key(last))]);
            }
            let (page, _): (Vec<T>, _) = self.send(request).await?;
            let full = page.len() >= Page::MAX;
            items.extend(page);
            if !full {
                return Ok(items);
            }
        }
    }

    /// Send a publish and watch it go (`Accept: application/x-ndjson`): its stages on stderr as
    /// the server reports them, then its outcome (an error as the server's typed error).
    async fn publish(
        &self,
        request: reqwest::RequestBuilder,
        label: &str,
    ) -> Result<(Published, String)> {
        let mut response = request
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let events = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
        if !response.status().is_success() || !events {
            // Refused before the publish began (401, 403, 413, 415, …).
            let status = response.status();
            let text = response.text().await?;
            return Err(server_error(status, &text));
        }
        let mut progress = Progress::new(label);
        let mut pending = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the server stopped answering during the publish")?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: PublishEvent = serde_json::from_slice(&line).with_context(|| {
                    format!(
                        "the server's answer is not what this client expects: {}",
                        String::from_utf8_lossy(&line)
                    )
                })?;
                match event {
                    PublishEvent::Received { bytes } => {
                        progress.show(&format!("uploaded {}", size(bytes)), true)
                    }
                    PublishEvent::Progress { stage, elapsed_ms } => {
                        let new_step = progress.stage.replace(stage) != Some(stage);
                        let seconds = elapsed_ms as f64 / 1e3;
                        progress.show(&format!("{} ({seconds:.1} s)", kebab(&stage)), new_step)
                    }
                    PublishEvent::Done { published, .. } => {
                        progress.finish();
                        let text = serde_json::to_string(&published)?;
                        return Ok((*published, text));
                    }
                    PublishEvent::Failed { status, error } => {
                        progress.finish();
                        let status = reqwest::StatusCode::from_u16(status)
                            .map_or(status.to_string(), |s| s.to_string());
                        bail!("{status} [{}] {}", error.code, error.message)
                    }
                }
            }
        }
        bail!("the server ended the publish's answer before saying how it ended")
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

/// An error response as the server's typed error.
fn server_error(status: reqwest::StatusCode, text: &str) -> anyhow::Error {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody { error }) => anyhow::anyhow!("{status} [{}] {}", error.code, error.message),
        Err(_) => anyhow::anyhow!("{status} {text}"),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// A long operation's progress on stderr: one line redrawn on a terminal; a line per step
/// otherwise (a CI log).
struct Progress<'a> {
    label: &'a str,
    terminal: bool,
    stage: Option<PublishStage>,
}

impl<'a> Progress<'a> {
    fn new(label: &'a str) -> Self {
        Self {
            label,
            terminal: std::io::stderr().is_terminal(),
            stage: None,
        }
    }

    /// Show `text`; off a terminal only when it starts a new step.
    fn show(&self, text: &str, new_step: bool) {
        if self.terminal {
            eprint!("\r\x1b[K{}: {text}", self.label);
            let _ = std::io::stderr().flush();
        } else if new_step {
            eprintln!("{}: {text}", self.label);
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprint!("\r\x1b[K");
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

fn split_version(text: &str) -> Result<(&str, &str)> {
    text.split_once('@')
        .with_context(|| format!("expected NAME@VERSION, got `{text}`"))
}

/// A JSON document from `text` (or standard input for `-`), kept as written.
fn read_input(text: &str) -> Result<Box<RawValue>> {
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

/// What a verb answers: the typed body, and the text the server wrote (for `--json`).
struct Answer<T> {
    body: T,
    text: String,
}

impl<T> From<(T, String)> for Answer<T> {
    fn from((body, text): (T, String)) -> Self {
        Self { body, text }
    }
}

impl<T> Answer<T> {
    /// Print the server's JSON as written with `--json`, else `human(&body)`.
    fn show(self, json: bool, human: impl FnOnce(T)) {
        if json {
            println!("{}", self.text);
        } else {
            human(self.body);
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// What uses install ID.
    Install { id: i64 },
    /// What uses ORG/NAME@VERSION (only revision N with --revision).
    Version {
        version: String,
        #[arg(long)]
        revision: Option<u32>,
    },
}

fn print_usage(usage: Usage) {
    for i in &usage.installs {
        println!(
            "install {}: {} (revision {})",
            i.install, i.connector, i.revision
        );
    }
    for i in &usage.instances {
        println!(
            "instance {} ({}) of install {}",
            i.instance, i.name, i.install
        );
    }
    for s in &usage.steps {
        println!(
            "flow {} step {} ({} on instance {}) pinned to {}{}",
            s.flow,
            s.step,
            s.operation,
            s.instance,
            s.connector.as_deref().unwrap_or("?"),
            s.revision
                .map(|r| format!(" revision {r}"))
                .unwrap_or_default()
        );
    }
    if usage.installs.is_empty() {
        println!("nothing uses it");
    }
}

pub async fn run(remote: Remote, command: ClientCommand) -> Result<()> {
    let client = Client::new(&remote)?;
    let json = remote.json;
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
            let visibility = if public { "public" } else { "private" };
            let (url, label) = match (name, version) {
                (Some(name), Some(version)) => (
                    format!("{}/v1/connectors/{name}/versions/{version}", client.base),
                    format!("publishing {name}@{version}"),
                ),
                // The server reads name and version from `describe()`: one compile, there.
                _ => (
                    format!("{}/v1/connectors", client.base),
                    format!("publishing {}", file.display()),
                ),
            };
            let request = client
                .http
                .post(url)
                .query(&[("visibility", visibility), ("tags", &tags)])
                .header("content-type", "application/wasm")
                .body(bytes);
            let answer: Answer<Published> = client.publish(request, &label).await?.into();
            answer.show(
                json,
                |Published {
                     outcome,
                     version: v,
                 }| {
                    println!(
                        "{} {} revision {} {} ({})",
                        kebab(&outcome),
                        v.reference(),
                        v.revision,
                        v.digest,
                        kebab(&v.visibility)
                    )
                },
            );
        }
        ClientCommand::Search {
            text,
            tag,
            publisher,
        } => {
            let query: Vec<(&str, &str)> =
                [("text", &text), ("tag", &tag), ("publisher", &publisher)]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_deref()?)))
                    .collect();
            let listings: Vec<Listing> = client
                .all_where("/v1/marketplace", &query, |l: &Listing| {
                    format!("{}/{}", l.org, l.name)
                })
                .await?;
            show_all(listings, json, |listings| {
                let rows = listings
                    .into_iter()
                    .map(|l| {
                        let versions: Vec<String> = l
                            .versions
                            .iter()
                            .map(|v| match v.state {
                                VersionState::Active => v.version.to_string(),
                                state => format!("{} ({})", v.version, kebab(&state)),
                            })
                            .collect();
                        vec![
                            format!("{}/{}", l.org, l.name),
                            l.latest.version.to_string(),
                            l.latest.description.description.clone(),
                            versions.join(", "),
                        ]
                    })
                    .collect();
                table(&["connector", "latest", "description", "versions"], rows);
            });
        }
        ClientCommand::Usage(UsageCommand::Install { id }) => {
            let answer: Answer<Usage> = client
                .get(&format!("/v1/installs/{id}/usage"))
                .await?
                .into();
            answer.show(json, print_usage);
        }
        ClientCommand::Usage(UsageCommand::Version { version, revision }) => {
            let (org, rest) = version
                .split_once('/')
                .with_context(|| format!("expected ORG/NAME@VERSION, got `{version}`"))?;
            let (name, version) = split_version(rest)?;
            let query = revision
                .map(|r| format!("?revision={r}"))
                .unwrap_or_default();
            let answer: Answer<Usage> = client
                .get(&format!(
                    "/v1/connectors/{org}/{name}/versions/{version}/usage{query}"
                ))
                .await?
                .into();
            answer.show(json, print_usage);
        }
        ClientCommand::Versions { connector } => {
            let (org, name) = connector
                .split_once('/')
                .with_context(|| format!("expected ORG/NAME, got `{connector}`"))?;
            let versions: Vec<VersionInfo> = client
                .all(
                    &format!("/v1/connectors/{org}/{name}/versions"),
                    |v: &VersionInfo| v.version.to_string(),
                )
                .await?;
            show_all(versions, json, |versions| {
                let rows = versions
                    .into_iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            v.revision.to_string(),
                            kebab(&v.state),
                            kebab(&v.visibility),
                            v.digest.to_string(),
                            v.publisher,
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
            });
        }
        ClientCommand::State { version, state } => {
            let (name, version) = split_version(&version)?;
            let answer: Answer<VersionInfo> = client
                .post(
                    &format!("/v1/connectors/{name}/versions/{version}/state"),
                    &StateRequest { state },
                )
                .await?
                .into();
            answer.show(json, |v| {
                println!("{name}@{version} is {}", kebab(&v.state))
            });
        }
        ClientCommand::Install { package } => {
            let (org, rest) = package
                .split_once('/')
                .with_context(|| format!("expected ORG/NAME@VERSION, got `{package}`"))?;
            let (name, version) = split_version(rest)?;
            let request = InstallRequest {
                org: org.into(),
                name: name.into(),
                version: version.into(),
            };
            let answer: Answer<Install> = client.post("/v1/installs", &request).await?.into();
            answer.show(json, |i| println!("install {} of {}", i.id, i.reference()));
        }
        ClientCommand::Installs { id: Some(id) } => {
            let answer: Answer<Install> = client.get(&format!("/v1/installs/{id}")).await?.into();
            answer.show(json, print_install);
        }
        ClientCommand::Delete { version } => {
            let (name, version) = split_version(&version)?;
            let path = format!("{}/v1/connectors/{name}/versions/{version}", client.base);
            client.send_text(client.http.delete(path)).await?;
            if !json {
                println!("deleted {name}@{version}");
            }
        }
        ClientCommand::Customise { install, values } => {
            let values: BTreeMap<String, String> = values.into_iter().collect();
            let path = format!("/v1/installs/{install}/customisations");
            let answer: Answer<Install> = client.put(&path, &values).await?.into();
            answer.show(json, print_install);
        }
        ClientCommand::Outbound { install, origins } => {
            let path = format!("/v1/installs/{install}/outbound");
            let answer: Answer<Install> = client.put(&path, &origins).await?.into();
            answer.show(json, print_install);
        }
        ClientCommand::Rebind { install, instance } => {
            let path = format!("/v1/installs/{install}/rebind");
            let request = RebindInstallRequest { instance };
            let answer: Answer<serde_json::Value> = client.post(&path, &request).await?.into();
            answer.show(json, |report| println!("{report}"));
        }
        ClientCommand::Metrics => {
            let path = format!("{}/metrics", client.base);
            print!("{}", client.send_text(client.http.get(path)).await?);
        }
        ClientCommand::Instance(InstanceCommand::List) => {
            let instances: Vec<Instance> = client
                .all("/v1/instances", |i: &Instance| i.id.to_string())
                .await?;
            show_all(instances, json, |instances| {
                let rows = instances
                    .into_iter()
                    .map(|i| {
                        vec![
                            i.id.to_string(),
                            i.name,
                            i.install_id.to_string(),
                            i.secret_keys.join(","),
                        ]
                    })
                    .collect();
                table(&["instance", "name", "install", "secrets"], rows);
            });
        }
        ClientCommand::Instance(InstanceCommand::Show { id }) => {
            let answer: Answer<serde_json::Value> =
                client.get(&format!("/v1/instances/{id}")).await?.into();
            answer.show(json, |instance| {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&instance).unwrap_or_default()
                )
            });
        }
        ClientCommand::Flow(FlowCommand::List) => {
            let flows: Vec<Flow> = client.all("/v1/flows", |f: &Flow| f.id.to_string()).await?;
            show_all(flows, json, |flows| {
                let rows = flows
                    .into_iter()
                    .map(|f| vec![f.id.to_string(), f.name, f.steps.len().to_string()])
                    .collect();
                table(&["flow", "name", "steps"], rows);
            });
        }
        ClientCommand::Flow(FlowCommand::Show { id }) => {
            let answer: Answer<Flow> = client.get(&format!("/v1/flows/{id}")).await?.into();
            answer.show(json, |flow| {
                println!("flow {} `{}`", flow.id, flow.name);
                let rows = flow
                    .steps
                    .into_iter()
                    .map(|s| {
                        vec![
                            s.name,
                            s.instance.to_string(),
                            s.operation,
                            s.digest.to_string(),
                        ]
                    })
                    .collect();
                table(&["step", "instance", "operation", "pinned to"], rows);
            });
        }
        ClientCommand::Flow(FlowCommand::Runs { flow }) => {
            let path = format!("/v1/flows/{flow}/runs");
            let runs: Vec<Run> = client.all(&path, |r: &Run| r.id.to_string()).await?;
            show_all(runs, json, |runs| {
                let rows = runs
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            kebab(&r.status),
                            when(Some(r.started_at)),
                            format!("{} µs", r.duration_us),
                        ]
                    })
                    .collect();
                table(&["run", "status", "started", "time"], rows);
            });
        }
        ClientCommand::Installs { id: None } => {
            let installs: Vec<Install> = client
                .all("/v1/installs", |i: &Install| i.id.to_string())
                .await?;
            show_all(installs, json, |installs| {
                let rows = installs
                    .into_iter()
                    .map(|i| {
                        let update = match (&i.update_available, i.revision_available) {
                            (Some(v), _) => format!("update available: {v}"),
                            (None, Some(r)) => format!("revision available: {r}"),
                            (None, None) => "-".into(),
                        };
                        vec![
                            i.id.to_string(),
                            format!("{} (revision {})", i.reference(), i.revision),
                            update,
                            i.customisations.len().to_string(),
                        ]
                    })
                    .collect();
                table(&["install", "connector", "update", "customisations"], rows);
            });
        }
        ClientCommand::Update {
            install,
            version,
            plan: true,
            ..
        } => {
            let answer: Answer<UpdatePlan> = client
                .get(&format!(
                    "/v1/installs/{install}/update-plan?version={version}"
                ))
                .await?
                .into();
            answer.show(json, print_plan);
        }
        ClientCommand::Update {
            install,
            version,
            overwrite,
            alongside: _,
            acknowledge_customisations_lost,
            acknowledge,
            carry_customisations,
            plan: false,
        } => {
            let mode = if overwrite {
                UpdateMode::Overwrite
            } else {
                UpdateMode::Alongside
            };
            let update = Update {
                version,
                mode,
                acknowledge,
                acknowledge_customisations_lost,
                carry_customisations,
            };
            let answer: Answer<Install> = client
                .post(&format!("/v1/installs/{install}/update"), &update)
                .await?
                .into();
            answer.show(json, |i| {
                println!(
                    "install {} now runs {}@{} ({})",
                    i.id,
                    i.name,
                    i.version,
                    kebab(&mode)
                )
            });
        }
        ClientCommand::Instance(InstanceCommand::Create {
            install,
            name,
            config,
            secrets,
        }) => {
            let secrets: BTreeMap<String, String> = match secrets {
                None => BTreeMap::new(),
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
            let request = InstanceRequest {
                install,
                name,
                config: config.into_iter().collect(),
                secrets,
            };
            let answer: Answer<Instance> = client.post("/v1/instances", &request).await?.into();
            answer.show(json, |i| {
                println!(
                    "instance {} `{}` (secrets: {})",
                    i.id,
                    i.name,
                    i.secret_keys.join(", ")
                )
            });
        }
        ClientCommand::Instance(InstanceCommand::Invoke {
            instance,
            operation,
            input,
        }) => {
            // Input and output as written, like the API: a `Value` would round big numbers
            // and could not print an output holding a lone surrogate escape at all.
            let input = read_input(&input)?;
            let text = client
                .post_raw(
                    &format!("/v1/instances/{instance}/invoke/{operation}"),
                    &input,
                )
                .await?;
            if json {
                println!("{text}");
            } else {
                let invoked: Invoked = serde_json::from_str(&text)
                    .context("the server's answer is not an invoke result")?;
                println!("{}", invoked.output.get());
                eprintln!("{} in {} µs", invoked.digest, invoked.duration_us)
            }
        }
        ClientCommand::Flow(FlowCommand::Create { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let request: FlowRequest = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a flow", file.display()))?;
            let answer: Answer<Flow> = client.post("/v1/flows", &request).await?.into();
            answer.show(json, |flow| {
                println!("flow {} `{}`", flow.id, flow.name);
                let rows = flow
                    .steps
                    .into_iter()
                    .map(|st| {
                        vec![
                            st.name,
                            st.instance.to_string(),
                            st.operation,
                            st.digest.to_string(),
                        ]
                    })
                    .collect();
                table(&["step", "instance", "operation", "pinned digest"], rows);
            });
        }
        ClientCommand::Flow(FlowCommand::Run { flow, input }) => {
            let text = client
                .post_raw(&format!("/v1/flows/{flow}/runs"), &read_input(&input)?)
                .await?;
            let run: Run =
                serde_json::from_str(&text).context("the server's answer is not a run")?;
            Answer { body: run, text }.show(json, |run| {
                let rows = run
                    .steps
                    .iter()
                    .map(|st| {
                        vec![
                            st.name.clone(),
                            st.digest.to_string(),
                            format!("{} µs", st.duration_us),
                            st.error.as_ref().map_or("ok".into(), |e| e.message.clone()),
                        ]
                    })
                    .collect();
                table(&["step", "digest", "time", "result"], rows);
                println!("run {} {}", run.id, kebab(&run.status));
                if let Some(output) = &run.output {
                    println!("{}", output.get());
                }
            });
        }
        ClientCommand::Flow(FlowCommand::Rebind {
            flow,
            step,
            instance,
        }) => {
            let answer: Answer<Flow> = client
                .post(
                    &format!("/v1/flows/{flow}/steps/{}/rebind", path_segment(&step)),
                    &RebindStepRequest { instance },
                )
                .await?
                .into();
            answer.show(json, |rebound| {
                let pinned = rebound.steps.iter().find(|s| s.name == step);
                println!(
                    "flow {flow} step `{step}` now pinned to {}",
                    pinned.map(|s| s.digest.to_string()).unwrap_or_default()
                );
            });
        }
        ClientCommand::Flow(FlowCommand::Record { flow, state }) => {
            let answer: Answer<Flow> = client
                .put(
                    &format!("/v1/flows/{flow}/record"),
                    &RecordRequest {
                        record: state == "on",
                    },
                )
                .await?
                .into();
            answer.show(json, |flow| {
                println!(
                    "flow {} records its step runs: {}",
                    flow.id,
                    if flow.record { "on" } else { "off" }
                );
            });
        }
        ClientCommand::Flow(FlowCommand::Replay {
            flow,
            step,
            instance,
            version,
            revision,
            count,
        }) => {
            let request = ReplayRequest {
                candidate: Candidate {
                    instance,
                    version,
                    revision,
                },
                count,
            };
            let path = format!("/v1/flows/{flow}/steps/{}/replay", path_segment(&step));
            let answer: Answer<ReplayReport> = client.post(&path, &request).await?.into();
            answer.show(json, print_replay);
        }
        ClientCommand::Flow(FlowCommand::Canary {
            flow,
            step,
            instance,
            version,
            revision,
            percent,
            max_error_rate,
            min_runs,
            manual,
            promote,
            rollback,
        }) => {
            let path = format!("/v1/flows/{flow}/steps/{}/canary", path_segment(&step));
            let answer: Answer<Canary> = if promote || rollback {
                let action = if promote { "promote" } else { "rollback" };
                client
                    .post(&format!("{path}/{action}"), &serde_json::json!({}))
                    .await?
                    .into()
            } else if instance.is_some() || version.is_some() {
                let request = CanaryRequest {
                    candidate: Candidate {
                        instance,
                        version,
                        revision,
                    },
                    percent,
                    max_error_rate,
                    min_runs,
                    auto_promote: !manual,
                };
                client.post(&path, &request).await?.into()
            } else {
                client.get(&path).await?.into()
            };
            answer.show(json, |c| {
                println!(
                    "flow {} step `{}`: canary of {} revision {} (instance {}) at {} %, {}: candidate {} runs, {} failed (bound {}, decided after {}); stable {} runs, {} failed",
                    c.flow,
                    c.step,
                    c.candidate,
                    c.candidate_revision,
                    c.candidate_instance,
                    c.percent,
                    kebab(&c.state),
                    c.candidate_runs,
                    c.candidate_errors,
                    c.max_error_rate,
                    c.min_runs,
                    c.stable_runs,
                    c.stable_errors
                );
            });
        }
        ClientCommand::Audit => {
            let answer: Answer<Vec<AuditEntry>> = client.get("/v1/audit").await?.into();
            answer.show(json, |entries| {
                let rows = entries
                    .into_iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            e.at.to_string(),
                            e.actor,
                            e.action,
                            e.subject,
                        ]
                    })
                    .collect();
                table(&["id", "at (ms)", "actor", "action", "subject"], rows);
            });
        }
        ClientCommand::Backup { dest } => {
            let request = BackupRequest { to: dest };
            let answer: Answer<Backup> = client.post("/v1/backup", &request).await?.into();
            answer.show(json, |b| {
                println!(
                    "backed up into {}: the database, {} blobs ({} bytes) and the secrets key, in {} ms",
                    b.to, b.blobs, b.blob_bytes, b.duration_ms
                );
            });
        }
        ClientCommand::Org(OrgCommand::Create { id, admin_label }) => {
            let request = OrgRequest {
                id,
                admin_label: Some(admin_label),
            };
            let answer: Answer<NewOrg> = client.post("/v1/orgs", &request).await?.into();
            answer.show(json, |created| {
                eprintln!("organisation {} created", created.org.id);
                print_new_token(&created.admin);
            });
        }
        ClientCommand::Org(OrgCommand::List) => {
            let orgs: Vec<OrgInfo> = client.all("/v1/orgs", |o: &OrgInfo| o.id.clone()).await?;
            show_all(orgs, json, |orgs| {
                let rows = orgs
                    .into_iter()
                    .map(|o| vec![o.id, when(Some(o.created_at))])
                    .collect();
                table(&["organisation", "created"], rows);
            });
        }
        ClientCommand::Org(OrgCommand::Token { org, token }) => {
            let path = format!("/v1/orgs/{org}/tokens");
            let answer: Answer<NewToken> = client.post(&path, &token.request()).await?.into();
            answer.show(json, |token| print_new_token(&token));
        }
        ClientCommand::Token(TokenCommand::Create(token)) => {
            let answer: Answer<NewToken> =
                client.post("/v1/tokens", &token.request()).await?.into();
            answer.show(json, |token| print_new_token(&token));
        }
        ClientCommand::Token(TokenCommand::List) => {
            let tokens: Vec<TokenInfo> = client
                .all("/v1/tokens", |t: &TokenInfo| t.id.to_string())
                .await?;
            show_all(tokens, json, |tokens| {
                let rows = tokens
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            kebab(&t.role),
                            t.label,
                            when(Some(t.created_at)),
                            when(t.last_used_at),
                            when(t.expires_at),
                            t.revoked_at.map_or("-".into(), |at| when(Some(at))),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "id",
                        "role",
                        "label",
                        "created",
                        "last used",
                        "expires",
                        "revoked",
                    ],
                    rows,
                );
            });
        }
        ClientCommand::Token(TokenCommand::Revoke { id }) => {
            let answer: Answer<TokenInfo> =
                client.delete(&format!("/v1/tokens/{id}")).await?.into();
            answer.show(json, |token| {
                println!(
                    "token {} (`{}`) revoked at {}",
                    token.id,
                    token.label,
                    when(token.revoked_at)
                );
            });
        }
    }
    Ok(())
}

/// Show what a paged list gathered: as JSON with `--json`, else `human(items)`.
fn show_all<T: serde::Serialize>(items: Vec<T>, json: bool, human: impl FnOnce(Vec<T>)) {
    if json {
        println!("{}", serde_json::to_string(&items).unwrap_or_default());
    } else {
        human(items);
    }
}

fn print_replay(report: ReplayReport) {
    let t = &report.totals;
    println!(
        "replayed {} recorded input(s) of flow {} step `{}` on {} ({}): {} same, {} different, {} errors, {} unmatched request(s)",
        t.inputs,
        report.flow,
        report.step,
        report.candidate,
        report.digest,
        t.same,
        t.different,
        t.errors,
        t.unmatched_requests
    );
    for r in &report.inputs {
        println!(
            "recording {} (run {}): {} — input {}",
            r.recording,
            r.run.map(|r| r.to_string()).unwrap_or("-".into()),
            kebab(&r.outcome),
            r.input.get()
        );
        for d in &r.diff {
            println!("  {}: {} -> {}", d.path, d.recorded, d.candidate);
        }
        if let Some(error) = &r.error {
            println!("  error: {error}");
        }
        for request in &r.unmatched {
            println!("  not in the recording (not sent): {request}");
        }
    }
}

fn print_plan(plan: UpdatePlan) {
    println!(
        "update plan for install {}: {} (revision {}) -> {} (revision {})",
        plan.install, plan.from, plan.from_revision, plan.to, plan.to_revision
    );
    let risks: Vec<String> = plan.risks.iter().map(kebab).collect();
    println!(
        "risks: {}",
        if risks.is_empty() {
            "none".to_string()
        } else {
            risks.join(", ")
        }
    );
    if !plan.customisations_lost.is_empty() {
        println!(
            "customisations an overwrite drops (set by {} at {}):",
            plan.customised_by.as_deref().unwrap_or("-"),
            when(plan.customised_at)
        );
        for (key, value) in &plan.customisations_lost {
            println!("  {key} = {value}");
        }
    }
    for s in &plan.steps {
        println!(
            "step {} of flow {} ({} on instance {}) moves{}",
            s.step,
            s.flow,
            s.operation,
            s.instance,
            if s.operation_removed {
                ": its operation is gone"
            } else {
                ""
            }
        );
    }
    for c in &plan.changes {
        println!("{}: {}: {}", kebab(&c.severity), c.subject, c.reason);
    }
    for i in &plan.instances_lacking {
        println!(
            "instance {} ({}) lacks {}",
            i.instance,
            i.name,
            i.missing.join(", ")
        );
    }
    for host in &plan.new_outbound_hosts {
        println!("new outbound host: {host}");
    }
    // The new version's world, each line marked against the installed one's: `+` new, `-` gone.
    if !plan.to_world.is_empty() {
        println!("world of {}:", plan.to);
        for line in &plan.to_world {
            let mark = if plan.from_world.contains(line) || plan.from_world.is_empty() {
                ' '
            } else {
                '+'
            };
            println!("  {mark} {line}");
        }
        for line in plan
            .from_world
            .iter()
            .filter(|l| !plan.to_world.contains(l))
        {
            println!("  - {line}");
        }
    }
}

fn print_install(i: Install) {
    println!("install {} of {}", i.id, i.reference());
    if let Some(v) = &i.update_available {
        println!("  update available: {v}");
    }
    if let Some(r) = i.revision_available {
        println!(
            "  revision available: {r} (it runs revision {})",
            i.revision
        );
    }
    for (key, value) in &i.customisations {
        println!("  customised {key} = {value}");
    }
    if let (Some(by), Some(at)) = (&i.modified_by, i.modified_at) {
        println!("  last customised by {by} at {}", when(Some(at)));
    }
    for origin in &i.outbound {
        println!("  may reach {origin}");
    }
}

fn print_new_token(token: &NewToken) {
    let info = &token.info;
    let scope = info.org.as_deref().unwrap_or("the platform");
    eprintln!(
        "token {} of {scope}, role {}, label `{}`, expires {} — shown once; keep it safe:",
        info.id,
        kebab(&info.role),
        info.label,
        when(info.expires_at)
    );
    println!("{}", token.token);
}

/// A role as written on the wire.
fn parse_role(text: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(text.into())).map_err(|_| {
        format!("`{text}` is not a role: admin, publisher, operator, viewer or platform")
    })
}

/// `90s`, `45m`, `12h`, `30d` (or plain seconds) as seconds.
fn parse_expiry(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a duration such as 90s, 45m, 12h or 30d");
    let (number, unit) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => (&text[..at], unit),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(bad)
}

/// A version state as written on the wire.
fn parse_state(text: &str) -> Result<VersionState, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("`{text}` is not a state: active, deprecated or blocked"))
}

fn parse_risk(text: &str) -> Result<Risk, String> {
    serde_json::from_value(serde_json::Value::String(text.into())).map_err(|_| {
        format!(
            "`{text}` is not a risk: customisations-lost, breaking-changes, unknown-changes, \
             missing-credentials, new-outbound-hosts or downgrade"
        )
    })
}

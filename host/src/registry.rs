//! The registry and the connector lifecycle: organisations, publishing (private revisions,
//! immutable public versions), version states, the marketplace, installs and their two update
//! modes, instances with sealed credentials, and the audit log. Flows live in [`crate::flow`].
//!
//! Everything is scoped by organisation: a private thing of another organisation is
//! [`Error::NotFound`], exactly like a missing one. Metadata is in a [`MetadataStore`] (SQLite
//! by default); component bytes in a [`BlobStore`]. A publish writes the blob and the row in
//! one write unit and cleans the blob up if the row does not commit, so a version is stored
//! whole or not at all; opening the registry sweeps blobs no row references.

use crate::blob::{BlobStore, FsBlobStore};
use crate::connector::{Connector, Description, Summary};
use crate::digest::Digest;
use crate::metadata::{Metadata, MetadataStore};
use crate::runtime::{LoadError, Runtime};
use crate::sqlite::SqliteStore;
use crate::vault::Vault;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// What went wrong in a registry operation. Nothing is stored when an operation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },
    #[error("invalid version `{0}`: versions are strict semver, e.g. 1.2.3")]
    InvalidVersion(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the component describes itself as {found}, but was published as {expected}")]
    DescribeMismatch { expected: String, found: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0} is deprecated: it runs for existing bindings but cannot be bound anew")]
    Deprecated(String),
    #[error("{0} is blocked and cannot run")]
    Blocked(String),
    #[error("{0}")]
    AcknowledgementRequired(String),
    #[error(
        "{0} is public: a public version is never deleted (its digest stays bound to it); \
         deprecate or block it instead"
    )]
    PublicPermanent(String),
    #[error(
        "the component imports {}, which Gantry never grants: build without them (e.g. no \
         std::fs or std::net in Rust), or ask the operator to accept components whose \
         toolchain imports them anyway", .0.join(", ")
    )]
    UngrantedImports(Vec<String>),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the secrets key: {0}")]
    SecretsKey(String),
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not-found",
            Error::Conflict(_) => "conflict",
            Error::InvalidName { .. } => "invalid-name",
            Error::InvalidVersion(_) => "invalid-version",
            Error::InvalidInput(_) => "invalid-input",
            Error::DescribeMismatch { .. } => "describe-mismatch",
            Error::Load(e) => e.code(),
            Error::Deprecated(_) => "deprecated",
            Error::Blocked(_) => "blocked",
            Error::AcknowledgementRequired(_) => "acknowledgement-required",
            Error::PublicPermanent(_) => "public-permanent",
            Error::UngrantedImports(_) => "ungranted-imports",
            Error::Storage(_) => "storage",
            Error::SecretsKey(_) => "secrets-key",
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("stored JSON: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who may see a published version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    /// Only the publishing organisation; may be republished (a new revision).
    Private,
    /// Every organisation, in the marketplace; immutable.
    Public,
}

/// Lifecycle state of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    Active,
    /// Runs for what is bound to it; refused for new bindings; flagged in listings.
    Deprecated,
    /// Refused at run time (a security recall).
    Blocked,
}

/// Where a fault is injected in a publish (for durability tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum FaultPoint {
    /// The blob is written, the row not yet inserted.
    AfterBlobWrite,
    /// The row is inserted, the transaction not yet committed.
    BeforeCommit,
}

/// Returns `true` to make the publish fail at that point (for durability tests).
#[doc(hidden)]
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// Settings of a [`Registry`].
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// Directory holding `gantry.db`, `blobs/` and `secrets.key`.
    pub data_dir: PathBuf,
    /// Fault injection, for tests; `None` in production.
    #[doc(hidden)]
    pub faults: Option<FaultHook>,
    /// Where component bytes go; `None` keeps them in `<data_dir>/blobs` ([`FsBlobStore`]). An
    /// object-store implementation of [`BlobStore`] plugs in here.
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Where metadata goes; `None` keeps it in `<data_dir>/gantry.db` ([`SqliteStore`]). A
    /// PostgreSQL implementation of [`MetadataStore`] plugs in here.
    pub metadata: Option<Arc<dyn MetadataStore>>,
    /// The operator's allowances of private addresses, by organisation: the connectors of an
    /// organisation may reach these loopback/private addresses (when an install grants the
    /// origin), and no other organisation's may.
    pub private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Bounds of flows and their runs.
    pub flows: crate::flow::FlowLimits,
    /// How many connectors the registry keeps loaded between calls, and for how long.
    pub loaded: LoadedLimits,
    /// Accept at publish components that import `wasi:filesystem` or `wasi:sockets`, which the
    /// sandbox never grants (some toolchains import them whatever the code does, e.g.
    /// componentize-py). Off by default: such an import is refused with `ungranted-imports`.
    pub accept_ungranted_imports: bool,
}

/// How many connectors a [`Registry`] keeps loaded between calls (compiled code and a warm
/// pool slot each), and for how long one nobody calls stays loaded. Past either, the least
/// recently used is dropped (its next call loads it again from the artifact cache, ~1 ms), so
/// a tenant calling many versions once cannot keep them all in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadedLimits {
    pub max: usize,
    #[serde(with = "crate::limits::millis")]
    pub idle: std::time::Duration,
}

impl Default for LoadedLimits {
    fn default() -> Self {
        Self {
            max: 256,
            idle: std::time::Duration::from_secs(600),
        }
    }
}

/// The connectors a registry keeps loaded, each with when it was last used.
pub(crate) struct Loaded {
    limits: LoadedLimits,
    entries: HashMap<Digest, (Arc<Connector>, std::time::Instant)>,
}

impl Loaded {
    fn new(limits: LoadedLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
        }
    }

    /// The connector for `digest`, if loaded; counts as a use.
    fn get(&mut self, digest: &Digest) -> Option<Arc<Connector>> {
        let (connector, used) = self.entries.get_mut(digest)?;
        *used = std::time::Instant::now();
        Some(connector.clone())
    }

    /// The connector for `digest`, if loaded (not a use).
    pub(crate) fn peek(&self, digest: &Digest) -> Option<&Arc<Connector>> {
        self.entries.get(digest).map(|(c, _)| c)
    }

    /// Keep `connector` loaded; drop what has been idle too long, then the least recently used
    /// beyond the limit.
    fn insert(&mut self, digest: Digest, connector: Arc<Connector>) {
        let now = std::time::Instant::now();
        let idle = self.limits.idle;
        self.entries
            .retain(|_, (_, used)| now.duration_since(*used) <= idle);
        self.entries.insert(digest, (connector, now));
        while self.entries.len() > self.limits.max.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| *d)
                .expect("not empty");
            self.entries.remove(&oldest);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Digest) -> bool) {
        self.entries.retain(|digest, _| keep(digest));
    }
}

/// A published version (one revision of it), with what it describes itself as: its whole
/// [`Description`], or the [`Summary`] a listing shows. `publisher` is the token label of
/// whoever published it; another organisation sees the publishing organisation's name there.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionInfo<D = Description> {
    pub org: String,
    pub name: String,
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    pub revision: u32,
    #[schema(value_type = String, example = "sha256:…")]
    pub digest: Digest,
    pub size: u64,
    pub visibility: Visibility,
    pub state: VersionState,
    pub publisher: String,
    pub published_at: i64,
    pub tags: Vec<String>,
    pub description: D,
}

impl<D> VersionInfo<D> {
    /// `org/name@version`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.org, self.name, self.version)
    }

    /// As `viewer` may see it: another organisation does not see who in the publishing
    /// organisation published it (a token label says more than a marketplace should).
    pub(crate) fn seen_by(mut self, viewer: &str) -> Self {
        if self.org != viewer {
            self.publisher = self.org.clone();
        }
        self
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PublishOutcome {
    /// A new version.
    Created,
    /// A private version republished with other bytes: a new revision.
    NewRevision,
    /// The same bytes were already published: nothing changed.
    Unchanged,
}

/// A request to publish component bytes as `name@version` of an organisation.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub name: String,
    pub version: String,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    pub bytes: Vec<u8>,
}

/// A connector in the marketplace: its newest version and every version's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Listing {
    pub org: String,
    pub name: String,
    pub latest: ListedVersion,
    pub versions: Vec<VersionSummary>,
}

/// A version as the marketplace lists it: a [`VersionInfo`] whose description leaves out the
/// operations' schemas (`GET /v1/connectors/{org}/{name}/versions` has them), so a listing
/// stays small whatever the connectors declare.
pub type ListedVersion = VersionInfo<Summary>;

/// A page of a list: at most `limit` items after the one named `after` (an id, or
/// `org/name` in the marketplace).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
pub struct Page {
    /// Most items to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Return the items after this one (for runs: before it, as they come newest first).
    pub after: Option<String>,
}

impl Page {
    pub const DEFAULT: usize = 100;
    pub const MAX: usize = 1000;

    /// The number of items to return.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT).clamp(1, Self::MAX)
    }

    /// `after` as an id (absent: from the start).
    pub fn after_id(&self) -> Result<Option<i64>> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| Error::InvalidInput(format!("`after` must be an id, not `{a}`")))
            })
            .transpose()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionSummary {
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    pub revision: u32,
    #[schema(value_type = String, example = "sha256:…")]
    pub digest: Digest,
    pub visibility: Visibility,
    pub state: VersionState,
    pub deprecated: bool,
}

/// A marketplace search; empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Search {
    /// Words matched against name, description and operation names.
    pub text: Option<String>,
    pub tag: Option<String>,
    pub publisher: Option<String>,
}

/// A package version taken into an organisation, with its customisations.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Install {
    pub id: i64,
    pub org: String,
    pub package_org: String,
    pub name: String,
    #[schema(value_type = String, example = "1.2.0")]
    pub version: semver::Version,
    /// Overlay on the connector's default config.
    pub customisations: BTreeMap<String, String>,
    pub modified_by: Option<String>,
    pub modified_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    /// Outbound origins granted to this install (`scheme://host[:port]`, `*` wildcards). A
    /// request must match one of these and one the connector declares.
    pub outbound: Vec<String>,
    /// The newest active version above this one, if any.
    #[schema(value_type = Option<String>)]
    pub update_available: Option<semver::Version>,
}

impl Install {
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.package_org, self.name, self.version)
    }
}

/// How an install moves to a newer version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum UpdateMode {
    /// Move the install; drop its customisations (which must be acknowledged when there are
    /// any); keep its instances; rebind every flow step bound through it.
    Overwrite {
        #[serde(default)]
        acknowledge_customisations_lost: bool,
    },
    /// Install the new version next to the old one; nothing existing changes.
    Alongside,
}

/// Configuration and credentials for an install: an "authenticated connection". Secrets are
/// write-only: only their keys are ever returned.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: i64,
    pub org: String,
    pub install_id: i64,
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub secret_keys: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// One entry of the audit log. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub org: String,
    pub actor: String,
    pub at: i64,
    pub action: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub before: Value,
    #[schema(value_type = Object)]
    pub after: Value,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Names of organisations, connectors and tags: lowercase ASCII letters, digits and `-`, 1 to
/// 63 characters, starting with a letter or digit.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > 63 {
        Some(format!("is {} characters long; at most 63", name.len()))
    } else if !name
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        Some("may hold only lowercase letters, digits and `-`".to_string())
    } else if name.starts_with('-') {
        Some("must start with a letter or digit".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            what,
            reason: format!("`{}` {reason}", name.escape_debug()),
        }),
        None => Ok(()),
    }
}

/// Labels of flows, steps and instances: 1 to 100 characters, no control characters.
pub fn validate_label(what: &'static str, label: &str) -> Result<()> {
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            what,
            reason: format!(
                "`{}` must be 1 to 100 characters without control characters",
                label.escape_debug()
            ),
        });
    }
    Ok(())
}

/// Strict semver, as `semver::Version` parses it (no `v` prefix, no missing parts), without
/// build metadata: semver says it plays no part in a version's identity or order, so
/// `1.0.0+build.7` *is* `1.0.0` — never a version of its own, never an update to it.
pub fn parse_version(version: &str) -> Result<semver::Version> {
    let mut parsed = semver::Version::parse(version)
        .map_err(|_| Error::InvalidVersion(version.escape_debug().to_string()))?;
    parsed.build = semver::BuildMetadata::EMPTY;
    Ok(parsed)
}

/// The key a version is stored under: `version` without build metadata (left as it is when it
/// is not semver at all, to be found missing).
fn version_key(version: &str) -> String {
    parse_version(version).map_or_else(|_| version.to_string(), |v| v.to_string())
}

/// The registry: metadata, blobs, sealed secrets, and the runtime that runs what it holds.
pub struct Registry {
    pub(crate) meta: Arc<dyn MetadataStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) vault: Vault,
    pub(crate) runtime: Runtime,
    faults: Option<FaultHook>,
    pub(crate) private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    pub(crate) flow_limits: crate::flow::FlowLimits,
    accept_ungranted_imports: bool,
    /// Connectors kept loaded for the calls to come.
    pub(crate) loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The setting that holds the fingerprint of the key sealing instance secrets.
const SECRETS_KEY_ID: &str = "secrets_key_id";

/// The vault over the key in `path`. A key is created only for a store that has sealed
/// nothing yet: if the store knows another key (or has instances but no record of one), a
/// missing or different key file is an error — a new key would leave every credential
/// unreadable.
fn open_vault(meta: &Arc<dyn MetadataStore>, path: &std::path::Path) -> Result<Vault> {
    let (known, instances) =
        meta.read(|m| Ok((m.setting(SECRETS_KEY_ID)?, m.instance_count()?)))?;
    if !path.exists() && (known.is_some() || instances > 0) {
        return Err(Error::SecretsKey(format!(
            "{} is missing, but {instances} instance(s) hold credentials sealed with it{}; \
             restore the file from a backup (a new key would leave them unreadable)",
            path.display(),
            known.map(|id| format!(" (key {id})")).unwrap_or_default()
        )));
    }
    let (vault, _) = Vault::open_or_create(path)?;
    match known {
        Some(id) if id != vault.key_id() => Err(Error::SecretsKey(format!(
            "{} is key {}, but the credentials were sealed with key {id}; restore the \
             right file",
            path.display(),
            vault.key_id()
        ))),
        Some(_) => Ok(vault),
        None => {
            meta.write(|m| m.set_setting(SECRETS_KEY_ID, vault.key_id()))?;
            Ok(vault)
        }
    }
}

/// The current revision of `pkg_org/name@version` if `viewer` may see it.
pub(crate) fn visible_version(
    m: &mut dyn Metadata,
    viewer: &str,
    pkg_org: &str,
    name: &str,
    version: &str,
) -> Result<VersionInfo> {
    let version = &version_key(version);
    match m.current_revision(pkg_org, name, version)? {
        Some(v) if v.org == viewer || v.visibility == Visibility::Public => Ok(v),
        _ => Err(Error::NotFound(format!(
            "connector {pkg_org}/{name}@{version}"
        ))),
    }
}

/// The version install `install` runs, if its organisation may still see it.
pub(crate) fn installed_version(m: &mut dyn Metadata, install: &Install) -> Result<VersionInfo> {
    visible_version(
        m,
        &install.org,
        &install.package_org,
        &install.name,
        &install.version.to_string(),
    )
}

/// Append an audit entry for `org`, now.
pub(crate) fn audit(
    m: &mut dyn Metadata,
    org: &str,
    actor: &str,
    action: &str,
    subject: &str,
    before: Value,
    after: Value,
) -> Result<()> {
    m.append_audit(&AuditEntry {
        id: 0,
        org: org.to_string(),
        actor: actor.to_string(),
        at: now_ms(),
        action: action.to_string(),
        subject: subject.to_string(),
        before,
        after,
    })
}

pub(crate) fn require_org(m: &mut dyn Metadata, org: &str) -> Result<()> {
    if m.org_exists(org)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("organisation {org}")))
    }
}

/// Install `id` of `org` with `update_available` worked out.
fn load_install(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Install> {
    let install = load_install_row(m, org, id)?;
    with_update_available(m, install)
}

fn with_update_available(m: &mut dyn Metadata, mut install: Install) -> Result<Install> {
    install.update_available = m
        .visible_versions(&install.org, &install.package_org, &install.name)?
        .into_iter()
        .filter(|v| v.state == VersionState::Active && v.version > install.version)
        .map(|v| v.version)
        .max();
    Ok(install)
}

/// An install without `update_available` (which reads every version of the connector): what
/// the call path needs.
pub(crate) fn load_install_row(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Install> {
    m.install(org, id)?
        .ok_or_else(|| Error::NotFound(format!("install {id}")))
}

pub(crate) fn load_instance(m: &mut dyn Metadata, org: &str, id: i64) -> Result<Instance> {
    m.instance(org, id)?
        .ok_or_else(|| Error::NotFound(format!("instance {id}")))
}

/// A new binding to `version` is allowed only while it is active.
pub(crate) fn check_bindable(version: &VersionInfo) -> Result<()> {
    match version.state {
        VersionState::Active => Ok(()),
        VersionState::Deprecated => Err(Error::Deprecated(version.reference())),
        VersionState::Blocked => Err(Error::Blocked(version.reference())),
    }
}

/// `keys` must all be config keys `package` declares.
fn check_config_keys<'a>(
    package: &VersionInfo,
    mut keys: impl Iterator<Item = &'a String>,
) -> Result<()> {
    match keys.find(|k| !package.description.config.iter().any(|c| &c.name == *k)) {
        Some(key) => Err(Error::InvalidInput(format!(
            "`{key}` is not a config key of {}",
            package.reference()
        ))),
        None => Ok(()),
    }
}

impl Registry {
    /// Open (creating if needed) the registry in `config.data_dir`.
    pub fn open(config: RegistryConfig, runtime: Runtime) -> Result<Self> {
        let dir = &config.data_dir;
        // Token hashes, sealed secrets and the key that opens them live here: only this
        // user may read or write it.
        crate::durable::private_dir(dir)?;
        crate::durable::tighten(dir, 0o700)?;
        let meta: Arc<dyn MetadataStore> = match config.metadata {
            Some(meta) => meta,
            None => Arc::new(SqliteStore::open(&dir.join("gantry.db"))?),
        };
        let blobs: Arc<dyn BlobStore> = match config.blobs {
            Some(blobs) => blobs,
            None => Arc::new(FsBlobStore::open(dir.join("blobs"))?),
        };
        let vault = open_vault(&meta, &dir.join("secrets.key"))?;
        let registry = Self {
            meta,
            blobs,
            vault,
            runtime,
            faults: config.faults,
            private_addresses: config.private_addresses,
            flow_limits: config.flows,
            accept_ungranted_imports: config.accept_ungranted_imports,
            loaded: Mutex::new(Loaded::new(config.loaded)),
        };
        registry.sweep_orphans()?;
        Ok(registry)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Remove blobs that no version row references (left by a crash between blob write and
    /// commit).
    fn sweep_orphans(&self) -> Result<()> {
        let stored = self.blobs.sweep()?;
        self.meta.write(|m| {
            for digest in &stored {
                if self.delete_blob_if_unreferenced(m, digest)? {
                    tracing::warn!(%digest, "removed an orphan blob");
                }
            }
            Ok(())
        })
    }

    /// Delete the blob of `digest` unless a version row still references it; `true` if deleted.
    /// Call inside a write unit, so no publish commits a row for it meanwhile.
    fn delete_blob_if_unreferenced(&self, m: &mut dyn Metadata, digest: &Digest) -> Result<bool> {
        let referenced = m.digest_referenced(digest)?;
        if !referenced {
            self.blobs.delete(digest)?;
        }
        Ok(!referenced)
    }

    /// Delete the blobs of `digests` that no row references any more (after the rows' removal
    /// committed: a crash in between leaves orphans, which opening sweeps).
    fn delete_unreferenced_blobs(&self, digests: &[Digest]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        self.meta.write(|m| {
            for digest in digests {
                self.delete_blob_if_unreferenced(m, digest)?;
            }
            Ok(())
        })
    }

    fn fault(&self, point: FaultPoint) -> Result<()> {
        match &self.faults {
            Some(hook) if hook(point) => {
                Err(Error::Storage(format!("injected fault at {point:?}")))
            }
            _ => Ok(()),
        }
    }

    // ----- organisations -------------------------------------------------------------------

    /// Create organisation `id` (idempotent).
    pub fn create_org(&self, id: &str) -> Result<()> {
        validate_name("organisation", id)?;
        self.meta.write(|m| m.create_org(id, now_ms()))
    }

    // ----- publishing ----------------------------------------------------------------------

    /// Publish `request.bytes` as `org/name@version`. The component must fit the world and its
    /// `describe()` must give the same name and version.
    pub async fn publish(
        &self,
        org: &str,
        actor: &str,
        request: PublishRequest,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        validate_name("connector name", &request.name)?;
        let version = parse_version(&request.version)?;
        for tag in &request.tags {
            validate_name("tag", tag)?;
        }
        self.meta.read(|m| require_org(m, org))?;
        let connector = self.runtime.load(&request.bytes).await?;
        let described = connector.description();
        let mut described_version = described.version.clone();
        described_version.build = semver::BuildMetadata::EMPTY;
        if described.name != request.name || described_version != version {
            return Err(Error::DescribeMismatch {
                expected: format!("{}@{}", request.name, version),
                found: format!("{}@{}", described.name, described.version),
            });
        }
        if !self.accept_ungranted_imports && !connector.ungranted_imports().is_empty() {
            return Err(Error::UngrantedImports(
                connector.ungranted_imports().to_vec(),
            ));
        }
        let result = self
            .meta
            .write(|m| self.publish_in(m, org, actor, &request, &version, &connector));
        if result.is_err() {
            // Nothing committed: remove the blob unless another row already uses it.
            let digest = connector.digest();
            if let Err(e) = self.delete_unreferenced_blobs(&[*digest]) {
                tracing::error!(%digest, error = %e, "cannot remove blob of a failed publish");
            }
        }
        result
    }

    fn publish_in(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        actor: &str,
        request: &PublishRequest,
        version: &semver::Version,
        connector: &Connector,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        let digest = *connector.digest();
        let existing = m.current_revision(org, &request.name, &version.to_string())?;
        let (outcome, revision) = match &existing {
            None => (PublishOutcome::Created, 1),
            Some(current) if current.digest == digest => {
                if current.visibility == Visibility::Public
                    || request.visibility == Visibility::Private
                {
                    return Ok((PublishOutcome::Unchanged, current.clone()));
                }
                // Same bytes, private → public: a new revision that is public.
                (PublishOutcome::NewRevision, current.revision + 1)
            }
            Some(current) if current.visibility == Visibility::Public => {
                return Err(Error::Conflict(format!(
                    "{} is public and immutable ({}); publish a new version instead",
                    current.reference(),
                    current.digest
                )));
            }
            Some(current) => (PublishOutcome::NewRevision, current.revision + 1),
        };

        self.blobs.put(&digest, &request.bytes)?;
        self.fault(FaultPoint::AfterBlobWrite)?;

        let info = VersionInfo {
            org: org.to_string(),
            name: request.name.clone(),
            version: version.clone(),
            revision,
            digest,
            size: request.bytes.len() as u64,
            visibility: request.visibility,
            state: existing.as_ref().map_or(VersionState::Active, |e| e.state),
            publisher: actor.to_string(),
            published_at: now_ms(),
            tags: request.tags.clone(),
            description: connector.description().clone(),
        };
        m.insert_version(&info)?;
        audit(
            m,
            org,
            actor,
            "publish",
            &info.reference(),
            existing.as_ref().map_or(Value::Null, |e| {
                serde_json::json!({"revision": e.revision, "digest": e.digest, "visibility": e.visibility})
            }),
            serde_json::json!({"revision": info.revision, "digest": info.digest, "visibility": info.visibility}),
        )?;
        self.fault(FaultPoint::BeforeCommit)?;
        Ok((outcome, info))
    }

    /// Set the state of every revision of `org/name@version` (the publisher's own only).
    pub fn set_state(
        &self,
        org: &str,
        actor: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<VersionInfo> {
        let version = &version_key(version);
        self.meta.write(|m| {
            let current = m
                .current_revision(org, name, version)?
                .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
            if current.state == state {
                return Ok(current);
            }
            m.set_version_state(org, name, version, state)?;
            audit(
                m,
                org,
                actor,
                "set-state",
                &current.reference(),
                serde_json::json!({"state": current.state}),
                serde_json::json!({"state": state}),
            )?;
            Ok(VersionInfo { state, ..current })
        })
    }

    /// Delete every revision of a private `org/name@version` (the publisher's own only),
    /// refused while any install or flow step pins it. A public version is never deleted: its
    /// digest stays bound to it for good, so nobody can republish other bytes under its name
    /// (deprecate or block it instead).
    pub fn delete_version(&self, org: &str, actor: &str, name: &str, version: &str) -> Result<()> {
        let version = &version_key(version);
        let digests = self.meta.write(|m| {
            let current = m
                .current_revision(org, name, version)?
                .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
            if current.visibility == Visibility::Public {
                return Err(Error::PublicPermanent(current.reference()));
            }
            let pins = m.version_pins(org, name, version)?;
            if pins.installs > 0 || pins.steps > 0 {
                return Err(Error::Conflict(format!(
                    "{} is pinned by {} install(s) and {} flow step(s)",
                    current.reference(),
                    pins.installs,
                    pins.steps
                )));
            }
            let digests = m.delete_version(org, name, version)?;
            audit(
                m,
                org,
                actor,
                "delete-version",
                &current.reference(),
                serde_json::json!({"digests": digests}),
                Value::Null,
            )?;
            Ok(digests)
        })?;
        self.delete_unreferenced_blobs(&digests)
    }

    /// Every version of `pkg_org/name` that `viewer` may see, oldest first.
    pub fn versions(&self, viewer: &str, pkg_org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        let mut versions = self
            .meta
            .read(|m| m.visible_versions(viewer, pkg_org, name))?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!("connector {pkg_org}/{name}")));
        }
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(versions.into_iter().map(|v| v.seen_by(viewer)).collect())
    }

    /// One version as `viewer` may see it.
    pub fn version(
        &self,
        viewer: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
    ) -> Result<VersionInfo> {
        self.meta
            .read(|m| visible_version(m, viewer, pkg_org, name, version))
            .map(|v| v.seen_by(viewer))
    }

    /// The marketplace as `viewer` sees it: public connectors and its own private ones, each with
    /// its newest non-blocked version and all versions' states, by `org/name`, one page of them.
    pub fn search(&self, viewer: &str, search: &Search, page: &Page) -> Result<Vec<Listing>> {
        let rows = self.meta.read(|m| m.visible_catalogue(viewer))?;
        let mut by_connector: BTreeMap<(String, String), Vec<ListedVersion>> = BTreeMap::new();
        for row in rows {
            by_connector
                .entry((row.org.clone(), row.name.clone()))
                .or_default()
                .push(row);
        }
        let words: Vec<String> = search
            .text
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let after = page.after.as_deref().unwrap_or_default();
        let mut listings = Vec::new();
        for ((org, name), mut versions) in by_connector {
            if listings.len() == page.limit() {
                break;
            }
            if !after.is_empty() && format!("{org}/{name}").as_str() <= after {
                continue;
            }
            versions.sort_by(|a, b| a.version.cmp(&b.version));
            let Some(latest) = versions
                .iter()
                .rev()
                .find(|v| v.state == VersionState::Active)
                .or_else(|| {
                    versions
                        .iter()
                        .rev()
                        .find(|v| v.state != VersionState::Blocked)
                })
                .or(versions.last())
                .cloned()
            else {
                continue;
            };
            let haystack = format!(
                "{} {} {}",
                latest.name,
                latest.description.description,
                latest
                    .description
                    .operations
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
            .to_lowercase();
            if !words.iter().all(|w| haystack.contains(w.as_str())) {
                continue;
            }
            if let Some(tag) = &search.tag
                && !versions.iter().any(|v| v.tags.contains(tag))
            {
                continue;
            }
            if let Some(publisher) = &search.publisher
                && latest.org != *publisher
            {
                continue;
            }
            listings.push(Listing {
                versions: versions
                    .iter()
                    .map(|v| VersionSummary {
                        version: v.version.clone(),
                        revision: v.revision,
                        digest: v.digest,
                        visibility: v.visibility,
                        state: v.state,
                        deprecated: v.state == VersionState::Deprecated,
                    })
                    .collect(),
                org,
                name,
                latest: latest.seen_by(viewer),
            });
        }
        Ok(listings)
    }

    // ----- installs ------------------------------------------------------------------------

    /// Take `pkg_org/name@version` into `org`. Deprecated and blocked versions are refused.
    pub fn install(
        &self,
        org: &str,
        actor: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
    ) -> Result<Install> {
        self.meta.write(|m| {
            require_org(m, org)?;
            let target = visible_version(m, org, pkg_org, name, version)?;
            check_bindable(&target)?;
            let id = m.insert_install(org, actor, &target, now_ms())?;
            audit(
                m,
                org,
                actor,
                "install",
                &format!("install {id}"),
                Value::Null,
                serde_json::json!({"package": target.reference(), "digest": target.digest}),
            )?;
            load_install(m, org, id)
        })
    }

    pub fn get_install(&self, org: &str, id: i64) -> Result<Install> {
        self.meta.read(|m| load_install(m, org, id))
    }

    /// One page of the installs of `org`, by id.
    pub fn installs(&self, org: &str, page: &Page) -> Result<Vec<Install>> {
        let after = page.after_id()?.unwrap_or(0);
        self.meta.read(|m| {
            m.installs(org, after, page.limit())?
                .into_iter()
                .map(|install| with_update_available(m, install))
                .collect()
        })
    }

    /// Set the install's customisations (an overlay on the connector's default config). Keys
    /// must be config keys the connector declares.
    pub fn customise(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        customisations: BTreeMap<String, String>,
    ) -> Result<Install> {
        self.meta.write(|m| {
            let install = load_install_row(m, org, id)?;
            let package = installed_version(m, &install)?;
            check_config_keys(&package, customisations.keys())?;
            m.set_customisations(org, id, &customisations, actor, now_ms())?;
            audit(
                m,
                org,
                actor,
                "customise",
                &format!("install {id}"),
                serde_json::to_value(&install.customisations)?,
                serde_json::to_value(&customisations)?,
            )?;
            load_install(m, org, id)
        })
    }

    /// Grant install `id` the outbound origins `hosts` (replacing earlier grants). Each must be
    /// `scheme://host[:port]` with optional `*` wildcards.
    pub fn grant_outbound(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        hosts: Vec<String>,
    ) -> Result<Install> {
        crate::policy::parse_patterns(&hosts).map_err(Error::InvalidInput)?;
        self.meta.write(|m| {
            let install = load_install_row(m, org, id)?;
            m.set_outbound(org, id, &hosts)?;
            audit(
                m,
                org,
                actor,
                "grant-outbound",
                &format!("install {id}"),
                serde_json::to_value(&install.outbound)?,
                serde_json::to_value(&hosts)?,
            )?;
            load_install(m, org, id)
        })
    }

    /// Update install `id` to `version` in `mode`. Returns the install that now runs the new
    /// version (the same one for overwrite, a new one for alongside).
    pub fn update(
        &self,
        org: &str,
        actor: &str,
        id: i64,
        version: &str,
        mode: UpdateMode,
    ) -> Result<Install> {
        let install = self
            .meta
            .write(|m| self.update_in(m, org, actor, id, version, mode))?;
        self.collect_garbage()?;
        Ok(install)
    }

    fn update_in(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        actor: &str,
        id: i64,
        version: &str,
        mode: UpdateMode,
    ) -> Result<Install> {
        let install = load_install_row(m, org, id)?;
        let target = visible_version(m, org, &install.package_org, &install.name, version)?;
        check_bindable(&target)?;
        if target.version == install.version {
            return Err(Error::InvalidInput(format!(
                "install {id} is already on {}",
                target.reference()
            )));
        }
        let result_id = match mode {
            UpdateMode::Alongside => {
                let new_id = m.insert_install(org, actor, &target, now_ms())?;
                audit(
                    m,
                    org,
                    actor,
                    "update-alongside",
                    &format!("install {new_id}"),
                    serde_json::json!({"install": id, "package": install.reference()}),
                    serde_json::json!({"install": new_id, "package": target.reference(), "digest": target.digest}),
                )?;
                new_id
            }
            UpdateMode::Overwrite {
                acknowledge_customisations_lost,
            } => {
                if !install.customisations.is_empty() && !acknowledge_customisations_lost {
                    return Err(Error::AcknowledgementRequired(format!(
                        "install {id} was customised by {}; overwriting drops its customisations \
                         ({}) — acknowledge that explicitly, or install alongside",
                        install.modified_by.as_deref().unwrap_or("someone"),
                        install
                            .customisations
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                m.move_install(org, id, &target.version)?;
                // Rebind every step bound through this install's instances, as part of the update.
                let rebound = crate::flow::rebind_install_steps(m, org, id, &target)?;
                audit(
                    m,
                    org,
                    actor,
                    "update-overwrite",
                    &format!("install {id}"),
                    serde_json::json!({"package": install.reference(), "customisations": install.customisations}),
                    serde_json::json!({"package": target.reference(), "digest": target.digest, "rebound_steps": rebound}),
                )?;
                id
            }
        };
        load_install(m, org, result_id)
    }

    // ----- instances -----------------------------------------------------------------------

    /// Create an instance of install `install_id` with its config and credentials.
    pub fn create_instance(
        &self,
        org: &str,
        actor: &str,
        install_id: i64,
        name: &str,
        config: BTreeMap<String, String>,
        secrets: BTreeMap<String, String>,
    ) -> Result<Instance> {
        validate_label("instance name", name)?;
        let plaintext = serde_json::to_string(&secrets)?;
        self.meta.write(|m| {
            let install = load_install_row(m, org, install_id)?;
            let package = installed_version(m, &install)?;
            check_config_keys(&package, config.keys())?;
            let described = &package.description;
            if let Some(key) = secrets
                .keys()
                .find(|k| !described.secrets.iter().any(|s| &s.name == *k))
            {
                return Err(Error::InvalidInput(format!(
                    "`{key}` is not a secret of {}",
                    package.reference()
                )));
            }
            if let Some(missing) = described
                .secrets
                .iter()
                .find(|s| s.required && !secrets.contains_key(&s.name))
            {
                return Err(Error::InvalidInput(format!(
                    "secret `{}` is required by {}",
                    missing.name,
                    package.reference()
                )));
            }
            let mut instance = Instance {
                id: 0,
                org: org.to_string(),
                install_id,
                name: name.to_string(),
                config: config.clone(),
                secret_keys: secrets.keys().cloned().collect(),
                created_by: actor.to_string(),
                created_at: now_ms(),
            };
            instance.id = m.insert_instance(&instance)?;
            // Sealed with the id, so the ciphertext opens only in this row.
            let sealed = self.vault.seal(org, instance.id, plaintext.as_bytes())?;
            m.set_sealed_secrets(org, instance.id, &sealed)?;
            audit(
                m,
                org,
                actor,
                "create-instance",
                &format!("instance {}", instance.id),
                Value::Null,
                serde_json::json!({"install": install_id, "name": name, "config": config, "secret_keys": instance.secret_keys}),
            )?;
            Ok(instance)
        })
    }

    pub fn get_instance(&self, org: &str, id: i64) -> Result<Instance> {
        self.meta.read(|m| load_instance(m, org, id))
    }

    /// One page of the instances of `org`, by id.
    pub fn instances(&self, org: &str, page: &Page) -> Result<Vec<Instance>> {
        let after = page.after_id()?.unwrap_or(0);
        self.meta.read(|m| m.instances(org, after, page.limit()))
    }

    /// The decrypted secrets of an instance, for a call only.
    pub(crate) fn open_secrets(
        &self,
        m: &mut dyn Metadata,
        org: &str,
        id: i64,
    ) -> Result<BTreeMap<String, String>> {
        let sealed = m
            .sealed_secrets(org, id)?
            .ok_or_else(|| Error::NotFound(format!("instance {id}")))?;
        let plaintext = self
            .vault
            .open(org, id, &sealed)
            .map_err(|e| Error::Storage(e.to_string()))?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| Error::Storage("sealed secrets are not a JSON object".into()))
    }

    // ----- audit ---------------------------------------------------------------------------

    /// One page of the audit log of `org`, oldest first.
    pub fn audit_log(&self, org: &str, page: &Page) -> Result<Vec<AuditEntry>> {
        let after = page.after_id()?.unwrap_or(0);
        self.meta.read(|m| m.audit_log(org, after, page.limit()))
    }

    // ----- garbage -------------------------------------------------------------------------

    /// Delete superseded private revisions nothing pins, their unreferenced blobs, and loaded
    /// connectors no step pins.
    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let (doomed, pinned) = self
            .meta
            .write(|m| Ok((m.delete_superseded_unpinned()?, m.pinned_digests()?)))?;
        self.delete_unreferenced_blobs(&doomed)?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|d| pinned.contains(d));
        Ok(())
    }

    /// The loaded connector for `digest`, loading its blob if needed.
    pub(crate) async fn connector(&self, digest: &Digest) -> Result<Arc<Connector>> {
        if let Some(c) = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
        {
            return Ok(c);
        }
        let bytes = self
            .blobs
            .get(digest)?
            .ok_or_else(|| Error::Storage(format!("the blob of {digest} is missing")))?;
        let connector = self.runtime.load(&bytes).await?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*digest, connector.clone());
        Ok(connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_path_tricks() {
        for bad in [
            "",
            "../etc",
            "a/b",
            "a\0b",
            "Upper",
            "-lead",
            &"x".repeat(64),
            "sp ace",
        ] {
            assert!(validate_name("connector name", bad).is_err(), "{bad:?}");
        }
        for good in ["echo", "json-transform", "a1", &"x".repeat(63)] {
            assert!(validate_name("connector name", good).is_ok(), "{good:?}");
        }
        assert!(validate_label("flow name", "Nightly sync").is_ok());
        assert!(validate_label("flow name", "bad\nname").is_err());
    }

    #[test]
    fn versions_are_strict_semver() {
        assert!(parse_version("1.2.3").is_ok());
        assert_eq!(
            parse_version("1.2.3+build.7").unwrap(),
            parse_version("1.2.3").unwrap(),
            "build metadata is not part of a version"
        );
        assert_eq!(version_key("1.2.3+build.7"), "1.2.3");
        assert!(parse_version("1.2.3-beta.1").is_ok());
        for bad in ["v1.2.3", "1.2", "latest", "1.2.3.4", ""] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }
}

//! The registry and the connector lifecycle: organisations, publishing (private revisions,
//! immutable public versions), version states, the marketplace, installs and their two update
//! modes, instances with sealed credentials, and the audit log. Flows live in [`crate::flow`].
//!
//! Everything is scoped by organisation: a private thing of another organisation is
//! [`Error::NotFound`], exactly like a missing one. Metadata is in SQLite (see
//! [`crate::store`]); component bytes in a [`BlobStore`]. A publish writes the blob and the row
//! under one lock and cleans the blob up if the row does not commit, so a version is stored
//! whole or not at all; opening the registry sweeps blobs no row references.

use crate::blob::{BlobStore, FsBlobStore};
use crate::connector::{Connector, Description};
use crate::digest::Digest;
use crate::runtime::{LoadError, Runtime};
use crate::vault::Vault;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    #[error("storage failure: {0}")]
    Storage(String),
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
            Error::Storage(_) => "storage",
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
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

fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => unreachable!("unit enums serialise as strings"),
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// Where a fault is injected in a publish (for durability tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The blob is written, the row not yet inserted.
    AfterBlobWrite,
    /// The row is inserted, the transaction not yet committed.
    BeforeCommit,
}

/// Returns `true` to make the publish fail at that point.
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>;

/// Settings of a [`Registry`].
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// Directory holding `gantry.db`, `blobs/` and `secrets.key`.
    pub data_dir: PathBuf,
    /// Fault injection, for tests; `None` in production.
    pub faults: Option<FaultHook>,
    /// Where component bytes go; `None` keeps them in `<data_dir>/blobs` ([`FsBlobStore`]). An
    /// object-store implementation of [`BlobStore`] plugs in here.
    pub blobs: Option<Arc<dyn BlobStore>>,
}

/// A published version (one revision of it).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
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
    pub description: Description,
}

impl VersionInfo {
    /// `org/name@version`.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.org, self.name, self.version)
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
    pub latest: VersionInfo,
    pub versions: Vec<VersionSummary>,
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

/// Strict semver, as `semver::Version` parses it (no `v` prefix, no missing parts).
pub fn parse_version(version: &str) -> Result<semver::Version> {
    semver::Version::parse(version)
        .map_err(|_| Error::InvalidVersion(version.escape_debug().to_string()))
}

/// The registry: metadata, blobs, sealed secrets, and the runtime that runs what it holds.
pub struct Registry {
    pub(crate) db: Mutex<Connection>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) vault: Vault,
    pub(crate) runtime: Runtime,
    faults: Option<FaultHook>,
    /// Connectors loaded for pinned digests, kept while something pins them.
    pub(crate) loaded: Mutex<HashMap<Digest, Arc<Connector>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

pub(crate) const VERSION_COLUMNS: &str = "org, name, version, revision, digest, size, visibility, \
    state, publisher, published_at, tags, description";

pub(crate) fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionInfo> {
    let conv = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let version: String = row.get(2)?;
    let digest: String = row.get(4)?;
    let tags: String = row.get(10)?;
    let description: String = row.get(11)?;
    Ok(VersionInfo {
        org: row.get(0)?,
        name: row.get(1)?,
        version: semver::Version::parse(&version).map_err(|e| conv(2, e.into()))?,
        revision: row.get(3)?,
        digest: digest
            .parse()
            .map_err(|e: crate::ParseDigestError| conv(4, e.into()))?,
        size: row.get(5)?,
        visibility: parse_enum(&row.get::<_, String>(6)?)?,
        state: parse_enum(&row.get::<_, String>(7)?)?,
        publisher: row.get(8)?,
        published_at: row.get(9)?,
        tags: serde_json::from_str(&tags).map_err(|e| conv(10, e.into()))?,
        description: serde_json::from_str(&description).map_err(|e| conv(11, e.into()))?,
    })
}

/// The current (newest) revision of `org/name@version`, whoever may see it.
pub(crate) fn current_revision(
    conn: &Connection,
    org: &str,
    name: &str,
    version: &str,
) -> rusqlite::Result<Option<VersionInfo>> {
    conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2 AND version = ?3 \
         ORDER BY revision DESC LIMIT 1"
    ))?
    .query_row(params![org, name, version], version_row)
    .optional()
}

/// The current revision of `pkg_org/name@version` if `viewer` may see it.
pub(crate) fn visible_version(
    conn: &Connection,
    viewer: &str,
    pkg_org: &str,
    name: &str,
    version: &str,
) -> Result<VersionInfo> {
    match current_revision(conn, pkg_org, name, version)? {
        Some(v) if v.org == viewer || v.visibility == Visibility::Public => Ok(v),
        _ => Err(Error::NotFound(format!(
            "connector {pkg_org}/{name}@{version}"
        ))),
    }
}

pub(crate) fn audit(
    tx: &Transaction<'_>,
    org: &str,
    actor: &str,
    action: &str,
    subject: &str,
    before: Value,
    after: Value,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (org, actor, at, action, subject, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![org, actor, now_ms(), action, subject, before.to_string(), after.to_string()],
    )?;
    Ok(())
}

fn install_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Install> {
    let version: String = row.get(4)?;
    let customisations: String = row.get(5)?;
    Ok(Install {
        id: row.get(0)?,
        org: row.get(1)?,
        package_org: row.get(2)?,
        name: row.get(3)?,
        version: semver::Version::parse(&version).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        customisations: serde_json::from_str(&customisations).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
        })?,
        modified_by: row.get(6)?,
        modified_at: row.get(7)?,
        created_by: row.get(8)?,
        created_at: row.get(9)?,
        outbound: serde_json::from_str(&row.get::<_, String>(10)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
        })?,
        update_available: None,
    })
}

const INSTALL_COLUMNS: &str = "id, org, pkg_org, name, version, customisations, modified_by, modified_at, created_by, created_at, outbound";

pub(crate) fn load_install(conn: &Connection, org: &str, id: i64) -> Result<Install> {
    let mut install = load_install_row(conn, org, id)?;
    install.update_available = newest_above(conn, org, &install)?;
    Ok(install)
}

/// An install without `update_available` (which reads every version of the connector): what
/// the call path needs.
pub(crate) fn load_install_row(conn: &Connection, org: &str, id: i64) -> Result<Install> {
    conn.prepare_cached(&format!(
        "SELECT {INSTALL_COLUMNS} FROM installs WHERE org = ?1 AND id = ?2"
    ))?
    .query_row(params![org, id], install_row)
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("install {id}")))
}

/// All versions of `pkg_org/name` that `viewer` may see (current revisions only).
pub(crate) fn visible_versions(
    conn: &Connection,
    viewer: &str,
    pkg_org: &str,
    name: &str,
) -> Result<Vec<VersionInfo>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM versions v WHERE org = ?1 AND name = ?2 \
         AND revision = (SELECT MAX(revision) FROM versions w \
                         WHERE w.org = v.org AND w.name = v.name AND w.version = v.version) \
         AND (org = ?3 OR visibility = 'public')"
    ))?;
    let mut versions = stmt
        .query_map(params![pkg_org, name, viewer], version_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(versions)
}

fn newest_above(
    conn: &Connection,
    viewer: &str,
    install: &Install,
) -> Result<Option<semver::Version>> {
    Ok(
        visible_versions(conn, viewer, &install.package_org, &install.name)?
            .into_iter()
            .filter(|v| v.state == VersionState::Active && v.version > install.version)
            .map(|v| v.version)
            .max(),
    )
}

/// A new binding to `version` is allowed only while it is active.
pub(crate) fn check_bindable(version: &VersionInfo) -> Result<()> {
    match version.state {
        VersionState::Active => Ok(()),
        VersionState::Deprecated => Err(Error::Deprecated(version.reference())),
        VersionState::Blocked => Err(Error::Blocked(version.reference())),
    }
}

impl Registry {
    /// Open (creating if needed) the registry in `config.data_dir`.
    pub fn open(config: RegistryConfig, runtime: Runtime) -> Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)?;
        let conn = crate::store::open(&dir.join("gantry.db"))?;
        let blobs: Arc<dyn BlobStore> = match config.blobs {
            Some(blobs) => blobs,
            None => Arc::new(FsBlobStore::open(dir.join("blobs"))?),
        };
        let vault = Vault::open_or_create(&dir.join("secrets.key"))?;
        let registry = Self {
            db: Mutex::new(conn),
            blobs,
            vault,
            runtime,
            faults: config.faults,
            loaded: Mutex::new(HashMap::new()),
        };
        registry.sweep_orphans()?;
        Ok(registry)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remove blobs that no version row references (left by a crash between blob write and
    /// commit).
    fn sweep_orphans(&self) -> Result<()> {
        let conn = self.db();
        for digest in self.blobs.sweep()? {
            if self.delete_blob_if_unreferenced(&conn, &digest)? {
                tracing::warn!(%digest, "removed an orphan blob");
            }
        }
        Ok(())
    }

    /// Delete the blob of `digest` unless a version row still references it; `true` if deleted.
    /// Call with the database lock held, so no publish commits a row for it meanwhile.
    fn delete_blob_if_unreferenced(&self, conn: &Connection, digest: &Digest) -> Result<bool> {
        let referenced: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
            [digest.to_string()],
            |r| r.get(0),
        )?;
        if !referenced {
            self.blobs.delete(digest)?;
        }
        Ok(!referenced)
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
        self.db().execute(
            "INSERT OR IGNORE INTO orgs (id, created_at) VALUES (?1, ?2)",
            params![id, now_ms()],
        )?;
        Ok(())
    }

    pub(crate) fn require_org(conn: &Connection, org: &str) -> Result<()> {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)",
            [org],
            |r| r.get(0),
        )?;
        if exists {
            Ok(())
        } else {
            Err(Error::NotFound(format!("organisation {org}")))
        }
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
        Self::require_org(&self.db(), org)?;
        let connector = self.runtime.load(&request.bytes).await?;
        let described = connector.description();
        if described.name != request.name || described.version != version {
            return Err(Error::DescribeMismatch {
                expected: format!("{}@{}", request.name, version),
                found: format!("{}@{}", described.name, described.version),
            });
        }
        let digest = *connector.digest();

        let mut conn = self.db();
        let result = self.publish_locked(&mut conn, org, actor, &request, &version, &connector);
        if result.is_err() {
            // Nothing committed: remove the blob unless another row already uses it.
            if let Err(e) = self.delete_blob_if_unreferenced(&conn, &digest) {
                tracing::error!(%digest, error = %e, "cannot remove blob of a failed publish");
            }
        }
        result
    }

    fn publish_locked(
        &self,
        conn: &mut Connection,
        org: &str,
        actor: &str,
        request: &PublishRequest,
        version: &semver::Version,
        connector: &Connector,
    ) -> Result<(PublishOutcome, VersionInfo)> {
        let digest = *connector.digest();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = current_revision(&tx, org, &request.name, &version.to_string())?;
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
        tx.execute(
            &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                info.org,
                info.name,
                info.version.to_string(),
                info.revision,
                info.digest.to_string(),
                info.size,
                text(&info.visibility),
                text(&info.state),
                info.publisher,
                info.published_at,
                serde_json::to_string(&info.tags)?,
                serde_json::to_string(&info.description)?,
            ],
        )?;
        audit(
            &tx,
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
        tx.commit()?;
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = current_revision(&tx, org, name, version)?
            .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
        if current.state == state {
            return Ok(current);
        }
        tx.execute(
            "UPDATE versions SET state = ?4 WHERE org = ?1 AND name = ?2 AND version = ?3",
            params![org, name, version, text(&state)],
        )?;
        audit(
            &tx,
            org,
            actor,
            "set-state",
            &current.reference(),
            serde_json::json!({"state": current.state}),
            serde_json::json!({"state": state}),
        )?;
        tx.commit()?;
        Ok(VersionInfo { state, ..current })
    }

    /// Delete every revision of `org/name@version` (the publisher's own only). Refused while
    /// any install or flow step pins it, whether it is private or public.
    pub fn delete_version(&self, org: &str, actor: &str, name: &str, version: &str) -> Result<()> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = current_revision(&tx, org, name, version)?
            .ok_or_else(|| Error::NotFound(format!("connector {org}/{name}@{version}")))?;
        let installs: i64 = tx.query_row(
            "SELECT COUNT(*) FROM installs WHERE pkg_org = ?1 AND name = ?2 AND version = ?3",
            params![org, name, version],
            |r| r.get(0),
        )?;
        let steps: i64 = tx.query_row(
            "SELECT COUNT(*) FROM steps WHERE digest IN \
             (SELECT digest FROM versions WHERE org = ?1 AND name = ?2 AND version = ?3)",
            params![org, name, version],
            |r| r.get(0),
        )?;
        if installs > 0 || steps > 0 {
            return Err(Error::Conflict(format!(
                "{} is pinned by {installs} install(s) and {steps} flow step(s)",
                current.reference()
            )));
        }
        let digests: Vec<String> = tx
            .prepare("SELECT digest FROM versions WHERE org = ?1 AND name = ?2 AND version = ?3")?
            .query_map(params![org, name, version], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute(
            "DELETE FROM versions WHERE org = ?1 AND name = ?2 AND version = ?3",
            params![org, name, version],
        )?;
        audit(
            &tx,
            org,
            actor,
            "delete-version",
            &current.reference(),
            serde_json::json!({"digests": digests}),
            Value::Null,
        )?;
        tx.commit()?;
        for digest in digests.iter().filter_map(|d| d.parse::<Digest>().ok()) {
            self.delete_blob_if_unreferenced(&conn, &digest)?;
        }
        Ok(())
    }

    /// Every version of `pkg_org/name` that `viewer` may see, oldest first.
    pub fn versions(&self, viewer: &str, pkg_org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        let versions = visible_versions(&self.db(), viewer, pkg_org, name)?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!("connector {pkg_org}/{name}")));
        }
        Ok(versions)
    }

    /// One version as `viewer` may see it.
    pub fn version(
        &self,
        viewer: &str,
        pkg_org: &str,
        name: &str,
        version: &str,
    ) -> Result<VersionInfo> {
        visible_version(&self.db(), viewer, pkg_org, name, version)
    }

    /// The marketplace as `viewer` sees it: public connectors and its own private ones, each with
    /// its newest non-blocked version and all versions' states.
    pub fn search(&self, viewer: &str, search: &Search) -> Result<Vec<Listing>> {
        let conn = self.db();
        let mut stmt = conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions v WHERE (org = ?1 OR visibility = 'public') \
             AND revision = (SELECT MAX(revision) FROM versions w \
                             WHERE w.org = v.org AND w.name = v.name AND w.version = v.version)"
        ))?;
        let rows = stmt
            .query_map([viewer], version_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut by_connector: BTreeMap<(String, String), Vec<VersionInfo>> = BTreeMap::new();
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
        let mut listings = Vec::new();
        for ((org, name), mut versions) in by_connector {
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
                && latest.publisher != *publisher
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
                latest,
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
        let mut conn = self.db();
        Self::require_org(&conn, org)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let target = visible_version(&tx, org, pkg_org, name, version)?;
        check_bindable(&target)?;
        let id = insert_install(&tx, org, actor, &target)?;
        audit(
            &tx,
            org,
            actor,
            "install",
            &format!("install {id}"),
            Value::Null,
            serde_json::json!({"package": target.reference(), "digest": target.digest}),
        )?;
        tx.commit()?;
        load_install(&conn, org, id)
    }

    pub fn get_install(&self, org: &str, id: i64) -> Result<Install> {
        load_install(&self.db(), org, id)
    }

    pub fn installs(&self, org: &str) -> Result<Vec<Install>> {
        let conn = self.db();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM installs WHERE org = ?1 ORDER BY id")?
            .query_map([org], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter()
            .map(|id| load_install(&conn, org, id))
            .collect()
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let install = load_install(&tx, org, id)?;
        let package = visible_version(
            &tx,
            org,
            &install.package_org,
            &install.name,
            &install.version.to_string(),
        )?;
        if let Some(key) = customisations
            .keys()
            .find(|k| !package.description.config.iter().any(|c| &c.name == *k))
        {
            return Err(Error::InvalidInput(format!(
                "`{key}` is not a config key of {}",
                package.reference()
            )));
        }
        tx.execute(
            "UPDATE installs SET customisations = ?3, modified_by = ?4, modified_at = ?5 WHERE org = ?1 AND id = ?2",
            params![org, id, serde_json::to_string(&customisations)?, actor, now_ms()],
        )?;
        audit(
            &tx,
            org,
            actor,
            "customise",
            &format!("install {id}"),
            serde_json::to_value(&install.customisations)?,
            serde_json::to_value(&customisations)?,
        )?;
        tx.commit()?;
        load_install(&conn, org, id)
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let install = load_install(&tx, org, id)?;
        tx.execute(
            "UPDATE installs SET outbound = ?3 WHERE org = ?1 AND id = ?2",
            params![org, id, serde_json::to_string(&hosts)?],
        )?;
        audit(
            &tx,
            org,
            actor,
            "grant-outbound",
            &format!("install {id}"),
            serde_json::to_value(&install.outbound)?,
            serde_json::to_value(&hosts)?,
        )?;
        tx.commit()?;
        load_install(&conn, org, id)
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let install = load_install(&tx, org, id)?;
        let target = visible_version(&tx, org, &install.package_org, &install.name, version)?;
        check_bindable(&target)?;
        if target.version == install.version {
            return Err(Error::InvalidInput(format!(
                "install {id} is already on {}",
                target.reference()
            )));
        }
        let result_id = match mode {
            UpdateMode::Alongside => {
                let new_id = insert_install(&tx, org, actor, &target)?;
                audit(
                    &tx,
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
                tx.execute(
                    "UPDATE installs SET version = ?3, customisations = '{}', modified_by = NULL, modified_at = NULL \
                     WHERE org = ?1 AND id = ?2",
                    params![org, id, target.version.to_string()],
                )?;
                // Rebind every step bound through this install's instances, as part of the update.
                let rebound = crate::flow::rebind_install_steps(&tx, org, id, &target)?;
                audit(
                    &tx,
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
        tx.commit()?;
        let install = load_install(&conn, org, result_id)?;
        drop(conn);
        self.collect_garbage()?;
        Ok(install)
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
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let install = load_install(&tx, org, install_id)?;
        let package = visible_version(
            &tx,
            org,
            &install.package_org,
            &install.name,
            &install.version.to_string(),
        )?;
        let described = &package.description;
        if let Some(key) = config
            .keys()
            .find(|k| !described.config.iter().any(|c| &c.name == *k))
        {
            return Err(Error::InvalidInput(format!(
                "`{key}` is not a config key of {}",
                package.reference()
            )));
        }
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
        let secret_keys: Vec<String> = secrets.keys().cloned().collect();
        let created_at = now_ms();
        tx.execute(
            "INSERT INTO instances (org, install_id, name, config, secret_keys, secrets, created_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, x'', ?6, ?7)",
            params![org, install_id, name, serde_json::to_string(&config)?, serde_json::to_string(&secret_keys)?, actor, created_at],
        )?;
        let id = tx.last_insert_rowid();
        let plaintext = serde_json::to_string(&secrets)?;
        let sealed = self.vault.seal(org, id, plaintext.as_bytes())?;
        tx.execute(
            "UPDATE instances SET secrets = ?2 WHERE id = ?1",
            params![id, sealed],
        )?;
        audit(
            &tx,
            org,
            actor,
            "create-instance",
            &format!("instance {id}"),
            Value::Null,
            serde_json::json!({"install": install_id, "name": name, "config": config, "secret_keys": secret_keys}),
        )?;
        tx.commit()?;
        Ok(Instance {
            id,
            org: org.to_string(),
            install_id,
            name: name.to_string(),
            config,
            secret_keys,
            created_by: actor.to_string(),
            created_at,
        })
    }

    pub fn get_instance(&self, org: &str, id: i64) -> Result<Instance> {
        load_instance(&self.db(), org, id)
    }

    pub fn instances(&self, org: &str) -> Result<Vec<Instance>> {
        let conn = self.db();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM instances WHERE org = ?1 ORDER BY id")?
            .query_map([org], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter()
            .map(|id| load_instance(&conn, org, id))
            .collect()
    }

    /// The decrypted secrets of an instance, for a call only.
    pub(crate) fn open_secrets(
        &self,
        conn: &Connection,
        org: &str,
        id: i64,
    ) -> Result<BTreeMap<String, String>> {
        let sealed: Vec<u8> = conn
            .prepare_cached("SELECT secrets FROM instances WHERE org = ?1 AND id = ?2")?
            .query_row(params![org, id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("instance {id}")))?;
        let plaintext = self
            .vault
            .open(org, id, &sealed)
            .map_err(|e| Error::Storage(e.to_string()))?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| Error::Storage("sealed secrets are not a JSON object".into()))
    }

    // ----- audit ---------------------------------------------------------------------------

    /// The audit log of `org`, oldest first.
    pub fn audit_log(&self, org: &str) -> Result<Vec<AuditEntry>> {
        let conn = self.db();
        let mut stmt = conn.prepare(
            "SELECT id, org, actor, at, action, subject, before, after FROM audit WHERE org = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([org], |r| {
                let before: String = r.get(6)?;
                let after: String = r.get(7)?;
                Ok(AuditEntry {
                    id: r.get(0)?,
                    org: r.get(1)?,
                    actor: r.get(2)?,
                    at: r.get(3)?,
                    action: r.get(4)?,
                    subject: r.get(5)?,
                    before: serde_json::from_str(&before).unwrap_or(Value::Null),
                    after: serde_json::from_str(&after).unwrap_or(Value::Null),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // ----- garbage -------------------------------------------------------------------------

    /// Delete superseded private revisions nothing pins, their unreferenced blobs, and loaded
    /// connectors no step pins.
    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let conn = self.db();
        let doomed: Vec<String> = conn
            .prepare(
                "SELECT v.digest FROM versions v WHERE v.revision < (SELECT MAX(revision) FROM versions w \
                   WHERE w.org = v.org AND w.name = v.name AND w.version = v.version) \
                 AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.digest = v.digest)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for digest in doomed {
            conn.execute(
                "DELETE FROM versions WHERE digest = ?1 AND revision < (SELECT MAX(revision) FROM versions w \
                   WHERE w.org = versions.org AND w.name = versions.name AND w.version = versions.version)",
                [&digest],
            )?;
            if let Ok(digest) = digest.parse::<Digest>() {
                self.delete_blob_if_unreferenced(&conn, &digest)?;
            }
        }
        let pinned: std::collections::HashSet<String> = conn
            .prepare("SELECT DISTINCT digest FROM steps")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|d, _| pinned.contains(&d.to_string()));
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
            return Ok(c.clone());
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

fn insert_install(
    tx: &Transaction<'_>,
    org: &str,
    actor: &str,
    target: &VersionInfo,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO installs (org, pkg_org, name, version, customisations, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6)",
        params![org, target.org, target.name, target.version.to_string(), actor, now_ms()],
    )?;
    Ok(tx.last_insert_rowid())
}

pub(crate) fn load_instance(conn: &Connection, org: &str, id: i64) -> Result<Instance> {
    conn.prepare_cached(
        "SELECT id, org, install_id, name, config, secret_keys, created_by, created_at \
         FROM instances WHERE org = ?1 AND id = ?2",
    )?
    .query_row(params![org, id], |r| {
        let config: String = r.get(4)?;
        let keys: String = r.get(5)?;
        Ok(Instance {
            id: r.get(0)?,
            org: r.get(1)?,
            install_id: r.get(2)?,
            name: r.get(3)?,
            config: serde_json::from_str(&config).unwrap_or_default(),
            secret_keys: serde_json::from_str(&keys).unwrap_or_default(),
            created_by: r.get(6)?,
            created_at: r.get(7)?,
        })
    })
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("instance {id}")))
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
        assert!(parse_version("1.2.3-beta.1").is_ok());
        for bad in ["v1.2.3", "1.2", "latest", "1.2.3.4", ""] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }
}

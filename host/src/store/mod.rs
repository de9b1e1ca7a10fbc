//! Where the lifecycle's state is kept, behind two traits: [`MetadataStore`] (organisations,
//! versions, installs, instances, flows, runs, tokens, settings and the audit log) and
//! [`BlobStore`] (component bytes, content-addressed). [`SqliteStore`] and [`FsBlobStore`] are
//! the embedded defaults; a PostgreSQL or object-store backend implements the same traits and
//! must pass the same conformance suite (`tests/all/store.rs`).
//!
//! A store answers plain lookups and writes. It holds no lifecycle rule: which revision is
//! current, who may see a version, what pins it and what may be deleted are decided by the
//! [registry](crate::registry), from what the store returns. The one thing a store derives is
//! its marketplace search index: after each change to a connector's versions it stores what
//! [`IndexEntry::of_connector`](crate::model::IndexEntry::of_connector) makes of them, so a search reads an index instead of every
//! version.

mod blob;
mod bridge;
mod codec;
mod memory;
mod postgres;
mod s3;
mod sqlite;

pub use blob::{BlobStore, FsBlobStore};
pub use memory::{MemoryBlobStore, MemoryStore};
pub use postgres::{HEARTBEAT, PgStore};
pub use s3::S3BlobStore;
pub use sqlite::SqliteStore;

use crate::model::{
    AuditEntry, Canary, Digest, Flow, Install, Instance, ListedVersion, OrgInfo, Recording, Run,
    Search, Session, Step, TokenInfo, VersionInfo, VersionState,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A failure of the store itself, or a unit its work aborted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed; nothing of the unit was written.
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend cannot be reached (a database or object store that is down or
    /// restarting): nothing of the unit was written, and trying again later may work.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The unit's work returned without finishing: nothing of it was written.
    #[error("the unit was aborted")]
    Aborted,
}

impl StoreError {
    /// A failure with no underlying error.
    pub fn failed(message: impl Into<String>) -> Self {
        StoreError::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by `source`.
    pub fn caused(
        message: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Failed {
            message: format!("{message}: {source}"),
            source: Some(Arc::new(source)),
        }
    }
}

impl StoreError {
    /// The backend cannot be reached, because of `source`.
    pub fn unavailable(
        message: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: format!("{message}: {source}"),
            source: Some(Arc::new(source)),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::caused("I/O", e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether a unit may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A write unit that only adds records (a flow run, its recordings) and decides nothing
    /// from what it reads: it need not be serialised with other writers (a store may still
    /// serialise it). It commits whole or not at all like any unit.
    Append,
}

/// A metadata backend.
///
/// Work is done in *units*: [`MetadataStore::unit`] hands `work` a [`Metadata`] view and
/// either commits everything it wrote (when it returns `Ok`) or nothing (when it returns
/// `Err`, [`StoreError::Aborted`] included). The contract a backend must keep:
/// - a unit sees one consistent state;
/// - [`Access::Write`] units are serialised with each other, so a read-check-write inside one
///   (a version's next revision, "is this blob still referenced?") cannot race another
///   writer — the registry relies on it to keep blobs and rows in step;
/// - `work` may be run more than once (a backend may retry a unit that lost a serialisation
///   conflict); only the last run's result counts.
///
/// [`Metadata`] methods return `Ok(None)` / empty lists for missing things; scoping by
/// organisation and the lifecycle rules live in the registry.
pub trait MetadataStore: Send + Sync {
    /// Run `work` as one unit of `access`.
    fn unit(
        &self,
        access: Access,
        work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
    ) -> Result<()>;

    /// Tell `watcher` whenever another process sharing this store commits a change of what
    /// calls resolve ([`Metadata::changed`]), and whether it can still tell. A store only one
    /// process uses (the default) never calls it.
    fn watch(&self, watcher: Watcher) {
        let _ = watcher;
    }

    /// Whether several processes share this store (each then has its own registry over it).
    fn shared(&self) -> bool {
        false
    }

    /// Write a consistent copy of everything to `path` (a new file), without stopping writers.
    /// A store with tools of its own for that (PostgreSQL's) says so instead.
    fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        let _ = path;
        Err(StoreError::failed(
            "this metadata store is backed up with its own tools",
        ))
    }
}

impl dyn MetadataStore + '_ {
    /// Run `work` in a read unit and return what it returns.
    pub fn read<T, E: From<StoreError>>(
        &self,
        work: impl FnMut(&mut dyn Metadata) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_unit(Access::Read, work)
    }

    /// Run `work` in a write unit: all its writes commit when it returns `Ok`, none otherwise.
    pub fn write<T, E: From<StoreError>>(
        &self,
        work: impl FnMut(&mut dyn Metadata) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_unit(Access::Write, work)
    }

    /// Run `work` in an [`Access::Append`] unit.
    pub fn append<T, E: From<StoreError>>(
        &self,
        work: impl FnMut(&mut dyn Metadata) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_unit(Access::Append, work)
    }

    /// Run `work` as a unit of `access`; an error of its own aborts the unit and is returned
    /// as it is.
    pub fn run_unit<T, E: From<StoreError>>(
        &self,
        access: Access,
        mut work: impl FnMut(&mut dyn Metadata) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut out = None;
        let unit = self.unit(access, &mut |m| match work(m) {
            Ok(value) => {
                out = Some(Ok(value));
                Ok(())
            }
            Err(e) => {
                out = Some(Err(e));
                Err(StoreError::Aborted)
            }
        });
        match (unit, out) {
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(StoreError::Aborted), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), _) => {
                Err(StoreError::failed("the metadata store did not run the unit").into())
            }
        }
    }
}

/// What a [`MetadataStore::watch`]er is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Another process committed a change (or the store may have missed some, having just
    /// started listening): what was resolved before may be stale.
    Changed,
    /// The store cannot hear of changes until it says [`Watch::Changed`] again: nothing
    /// resolved meanwhile may be kept.
    Lost,
}

/// Called with what a store hears of other processes' changes.
pub type Watcher = Arc<dyn Fn(Watch) + Send + Sync>;

/// A revision as garbage collection sees it: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionKey {
    pub org: String,
    pub name: String,
    pub version: String,
    pub revision: u32,
    pub digest: Digest,
}

/// A flow step as found through the instance it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundStep {
    pub flow: i64,
    pub name: String,
    pub operation: String,
    pub instance: i64,
    pub digest: Digest,
    /// The package the instance's install took in.
    pub package_org: String,
    pub package_name: String,
}

/// The statements of one unit. Times are milliseconds since the Unix epoch.
pub trait Metadata {
    /// This unit changes what calls resolve: when it commits, tell the other processes
    /// sharing the store ([`MetadataStore::watch`]). Nothing to do for a store only one process
    /// uses.
    fn changed(&mut self) -> Result<()> {
        Ok(())
    }

    // ----- organisations -----
    /// Create organisation `id` unless it exists.
    fn create_org(&mut self, id: &str, at: i64) -> Result<()>;
    fn org_exists(&mut self, id: &str) -> Result<bool>;
    /// Organisations with ids after `after` (by id; `""` from the start), at most `limit`.
    fn orgs(&mut self, after: &str, limit: usize) -> Result<Vec<OrgInfo>>;

    // ----- settings of the installation -----
    fn setting(&mut self, name: &str) -> Result<Option<String>>;
    fn set_setting(&mut self, name: &str, value: &str) -> Result<()>;
    /// Instances of every organisation (each holds sealed secrets).
    fn instance_count(&mut self) -> Result<u64>;

    // ----- versions -----
    fn insert_version(&mut self, version: &VersionInfo) -> Result<()>;
    /// Every revision of `org/name@version`.
    fn revisions(&mut self, org: &str, name: &str, version: &str) -> Result<Vec<VersionInfo>>;
    /// Every revision of every version of package `org/name`.
    fn package_revisions(&mut self, org: &str, name: &str) -> Result<Vec<VersionInfo>>;
    /// The revisions of package `org/name` that hold `digest`.
    fn revisions_with(
        &mut self,
        org: &str,
        name: &str,
        digest: &Digest,
    ) -> Result<Vec<VersionInfo>>;
    /// One page of the marketplace as `viewer` sees it: the connectors whose
    /// [`IndexEntry`](crate::model::IndexEntry) for `viewer`'s audience matches `search`, after `after` (`org`, `name`),
    /// by organisation then name, at most `limit`. A store answers from an index it keeps as
    /// versions change.
    fn search(
        &mut self,
        viewer: &str,
        search: &Search,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;
    /// Every revision of package `org/name` that `viewer` may see, as listed.
    fn listed_revisions(
        &mut self,
        viewer: &str,
        org: &str,
        name: &str,
    ) -> Result<Vec<ListedVersion>>;
    /// The keys of every revision of package `org/name`.
    fn revision_keys(&mut self, org: &str, name: &str) -> Result<Vec<RevisionKey>>;
    /// Set the state of every revision of `org/name@version`.
    fn set_version_state(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<()>;
    fn delete_revision(&mut self, key: &RevisionKey) -> Result<()>;
    /// Record the WIT world (the interfaces it exports and imports) of revision `revision` of
    /// `org/name@version`.
    fn set_world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
        world: &[String],
    ) -> Result<()>;
    /// The recorded world of a revision (empty when none was: published before Gantry kept
    /// it); `None` when there is no such revision.
    fn world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
    ) -> Result<Option<Vec<String>>>;
    /// Whether any version row holds `digest`.
    fn digest_referenced(&mut self, digest: &Digest) -> Result<bool>;

    // ----- installs (`update_available` and `revision_available` are left `None`: the
    // registry works them out) -----
    /// Install `version` (the revision it is) into `org`; returns the new install's id.
    fn insert_install(
        &mut self,
        org: &str,
        actor: &str,
        version: &VersionInfo,
        at: i64,
    ) -> Result<i64>;
    fn install(&mut self, org: &str, id: i64) -> Result<Option<Install>>;
    /// Installs of `org` with ids above `after`, by id, at most `limit`.
    fn installs(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Install>>;
    /// Installs (of every organisation) of package `org/name`.
    fn installs_of_package(&mut self, org: &str, name: &str) -> Result<Vec<Install>>;
    /// Set the customisations of install `id`, and who changed them when (`None`: nobody).
    fn set_customisations(
        &mut self,
        org: &str,
        id: i64,
        customisations: &BTreeMap<String, String>,
        modified: Option<(&str, i64)>,
    ) -> Result<()>;
    fn set_outbound(&mut self, org: &str, id: i64, origins: &[String]) -> Result<()>;
    /// Move install `id` to `version`'s revision `revision`.
    fn set_install_version(
        &mut self,
        org: &str,
        id: i64,
        version: &semver::Version,
        revision: u32,
    ) -> Result<()>;

    // ----- instances (secrets are stored sealed; this layer never sees them open) -----
    /// Insert `instance` (its `id` is ignored) with no secrets yet; returns the new id.
    fn insert_instance(&mut self, instance: &Instance) -> Result<i64>;
    /// Replace the sealed secrets of instance `id` and the names of the secrets they hold.
    fn set_sealed_secrets(
        &mut self,
        org: &str,
        id: i64,
        keys: &[String],
        sealed: &[u8],
    ) -> Result<()>;
    fn sealed_secrets(&mut self, org: &str, id: i64) -> Result<Option<Vec<u8>>>;
    fn instance(&mut self, org: &str, id: i64) -> Result<Option<Instance>>;
    /// Instances of `org` with ids above `after`, by id, at most `limit`.
    fn instances(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Instance>>;

    // ----- flows and runs -----
    fn flow_name_taken(&mut self, org: &str, name: &str) -> Result<bool>;
    /// Insert a flow with no steps; returns its id.
    fn insert_flow(&mut self, org: &str, name: &str, actor: &str, at: i64) -> Result<i64>;
    fn insert_step(&mut self, flow: i64, position: usize, step: &Step) -> Result<()>;
    fn flow(&mut self, org: &str, id: i64) -> Result<Option<Flow>>;
    /// Flows of `org` with ids above `after`, by id, at most `limit`.
    fn flows(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Flow>>;
    /// Steps of `org`'s flows that use an instance of install `install`.
    fn steps_through_install(&mut self, org: &str, install: i64) -> Result<Vec<BoundStep>>;
    /// Steps (of every organisation) bound through an install of package `org/name`.
    fn steps_through_package(&mut self, org: &str, name: &str) -> Result<Vec<BoundStep>>;
    /// Bind step `step` of flow `flow` to `instance`, pinned to `digest`.
    fn bind_step(&mut self, flow: i64, step: &str, instance: i64, digest: &Digest) -> Result<()>;
    /// Switch recording of flow `flow`'s step runs on or off.
    fn set_flow_record(&mut self, org: &str, flow: i64, record: bool) -> Result<()>;
    /// Keep `recording` (its `id` is ignored; it names its flow and step), and of that step's
    /// recordings only the newest `keep`; returns its id.
    fn insert_recording(&mut self, org: &str, recording: &Recording, keep: usize) -> Result<i64>;
    /// The newest recordings of step `step` of flow `flow` with ids below `before`, newest
    /// first, at most `limit`.
    fn recordings(
        &mut self,
        org: &str,
        flow: i64,
        step: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Recording>>;
    /// A new run id, for a run that needs it before it is recorded (its canary arms).
    fn reserve_run_id(&mut self) -> Result<i64>;
    /// The canary of step `step` of flow `flow`, running or decided, if it has had one.
    fn canary(&mut self, org: &str, flow: i64, step: &str) -> Result<Option<Canary>>;
    /// Every canary of flow `flow`'s steps.
    fn flow_canaries(&mut self, org: &str, flow: i64) -> Result<Vec<Canary>>;
    /// Keep `canary` as its step's (replacing the one before).
    fn put_canary(&mut self, org: &str, canary: &Canary) -> Result<()>;
    /// Record `run` with its `id` (one [`reserve_run_id`](Self::reserve_run_id) gave), or
    /// with a new one when it is 0; returns the id.
    fn insert_run(&mut self, org: &str, run: &Run) -> Result<i64>;
    /// Recorded runs of flow `flow` with ids below `before`, newest first, at most `limit`.
    fn runs(&mut self, org: &str, flow: i64, before: i64, limit: usize) -> Result<Vec<Run>>;

    // ----- tokens (only hashes are stored) -----
    /// Store `token` (its `id` and `last_used_at` are ignored) under `hash`; returns its id.
    fn insert_token(&mut self, token: &TokenInfo, hash: &str) -> Result<i64>;
    /// The token stored under `hash`, revoked and expired ones included.
    fn token(&mut self, hash: &str) -> Result<Option<TokenInfo>>;
    /// Token `id`.
    fn token_by_id(&mut self, id: i64) -> Result<Option<TokenInfo>>;
    /// Tokens of `org` (`None`: platform tokens) with ids above `after`, by id, at most
    /// `limit`.
    fn tokens(&mut self, org: Option<&str>, after: i64, limit: usize) -> Result<Vec<TokenInfo>>;
    /// Mark token `id` revoked at `at`.
    fn revoke_token(&mut self, id: i64, at: i64) -> Result<()>;
    /// Record when tokens were last used, `(id, at)`; an earlier time than the stored one is
    /// ignored.
    fn set_tokens_used(&mut self, used: &[(i64, i64)]) -> Result<()>;

    // ----- console sessions (only hashes are stored) -----
    /// Store `session` under `hash`, and drop every session that ended before `now`.
    fn insert_session(&mut self, hash: &str, session: &Session, now: i64) -> Result<()>;
    /// The session stored under `hash`, ended or not.
    fn session(&mut self, hash: &str) -> Result<Option<Session>>;
    fn delete_session(&mut self, hash: &str) -> Result<()>;

    // ----- audit -----
    /// Append `entry` (its `id` is ignored) to the log.
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// Entries of the audit log of `org` with ids above `after`, oldest first, at most `limit`.
    fn audit_log(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<AuditEntry>>;
}

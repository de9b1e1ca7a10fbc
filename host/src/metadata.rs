//! The metadata side of the store, behind a trait: organisations, versions, installs,
//! instances, flows, runs, tokens and the audit log. [`SqliteStore`](crate::SqliteStore) is the
//! embedded default; a PostgreSQL backend implements the same two traits.

use crate::auth::{Principal, Role};
use crate::digest::Digest;
use crate::flow::{Flow, Run, Step};
use crate::registry::{
    AuditEntry, Error, Install, Instance, ListedVersion, Result, VersionInfo, VersionState,
};
use std::collections::{BTreeMap, HashSet};

/// Whether a unit may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A metadata backend.
///
/// Work is done in *units*: [`MetadataStore::unit`] hands `work` a [`Metadata`] view and
/// either commits everything it wrote (when it returns `Ok`) or nothing. The contract a
/// backend must keep:
/// - a unit sees one consistent state;
/// - [`Access::Write`] units are serialised with each other, so a read-check-write inside one
///   (a version's next revision, "is this blob still referenced?") cannot race another
///   writer — the registry relies on it to keep blobs and rows in step;
/// - `work` may be run more than once (a backend may retry a unit that lost a serialisation
///   conflict); only the last run's result counts.
///
/// [`Metadata`] methods return [`Error::Storage`] for backend failures and `Ok(None)` / empty
/// lists for missing things; scoping by organisation and the lifecycle rules live in the
/// registry. Use it through [`read`](#method.read) and [`write`](#method.write) on
/// `dyn MetadataStore`.
pub trait MetadataStore: Send + Sync {
    /// Run `work` as one unit of `access`.
    fn unit(
        &self,
        access: Access,
        work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
    ) -> Result<()>;
}

impl dyn MetadataStore {
    /// Run `work` in a read unit and return what it returns.
    pub fn read<T>(&self, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> Result<T> {
        self.run(Access::Read, work)
    }

    /// Run `work` in a write unit: all its writes commit when it returns `Ok`, none otherwise.
    pub fn write<T>(&self, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> Result<T> {
        self.run(Access::Write, work)
    }

    fn run<T>(
        &self,
        access: Access,
        mut work: impl FnMut(&mut dyn Metadata) -> Result<T>,
    ) -> Result<T> {
        let mut out = None;
        self.unit(access, &mut |m| {
            out = Some(work(m)?);
            Ok(())
        })?;
        out.ok_or_else(|| Error::Storage("the metadata store did not run the unit".into()))
    }
}

/// A flow step as found through the instance it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundStep {
    pub flow: i64,
    pub name: String,
    pub operation: String,
    pub instance: i64,
    pub digest: Digest,
}

/// What pins a version: installs of it and flow steps bound to one of its revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    pub installs: u64,
    pub steps: u64,
}

/// The statements of one unit. Times are milliseconds since the Unix epoch.
pub trait Metadata {
    // ----- organisations -----
    /// Create organisation `id` unless it exists.
    fn create_org(&mut self, id: &str, at: i64) -> Result<()>;
    fn org_exists(&mut self, id: &str) -> Result<bool>;

    // ----- settings of the installation -----
    fn setting(&mut self, name: &str) -> Result<Option<String>>;
    fn set_setting(&mut self, name: &str, value: &str) -> Result<()>;
    /// Instances of every organisation (each holds sealed secrets).
    fn instance_count(&mut self) -> Result<u64>;

    // ----- versions -----
    /// The newest revision of `org/name@version`, whoever may see it.
    fn current_revision(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<VersionInfo>>;
    /// The newest revision of package `org/name` stored under `digest`.
    fn package_revision(
        &mut self,
        org: &str,
        name: &str,
        digest: &Digest,
    ) -> Result<Option<VersionInfo>>;
    /// Current revisions of every version of `org/name` that `viewer` may see (its own and
    /// public ones), in no particular order.
    fn visible_versions(&mut self, viewer: &str, org: &str, name: &str)
    -> Result<Vec<VersionInfo>>;
    /// Current revisions of every version of every connector `viewer` may see, as listed.
    fn visible_catalogue(&mut self, viewer: &str) -> Result<Vec<ListedVersion>>;
    fn insert_version(&mut self, version: &VersionInfo) -> Result<()>;
    /// Set the state of every revision of `org/name@version`.
    fn set_version_state(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<()>;
    fn version_pins(&mut self, org: &str, name: &str, version: &str) -> Result<Pins>;
    /// Delete every revision of `org/name@version`; returns their digests.
    fn delete_version(&mut self, org: &str, name: &str, version: &str) -> Result<Vec<Digest>>;
    /// Delete superseded revisions (not the newest of their version) that no step pins;
    /// returns their digests.
    fn delete_superseded_unpinned(&mut self) -> Result<Vec<Digest>>;
    /// Whether any version row holds `digest`.
    fn digest_referenced(&mut self, digest: &Digest) -> Result<bool>;
    /// Every digest a flow step is pinned to.
    fn pinned_digests(&mut self) -> Result<HashSet<Digest>>;

    // ----- installs (`update_available` is left `None`: the registry works it out) -----
    /// Install `version` into `org`; returns the new install's id.
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
    fn set_customisations(
        &mut self,
        org: &str,
        id: i64,
        customisations: &BTreeMap<String, String>,
        by: &str,
        at: i64,
    ) -> Result<()>;
    fn set_outbound(&mut self, org: &str, id: i64, origins: &[String]) -> Result<()>;
    /// Move install `id` to `version`, dropping its customisations.
    fn move_install(&mut self, org: &str, id: i64, version: &semver::Version) -> Result<()>;

    // ----- instances (secrets are stored sealed; this layer never sees them open) -----
    /// Insert `instance` (its `id` is ignored) with no secrets yet; returns the new id.
    fn insert_instance(&mut self, instance: &Instance) -> Result<i64>;
    fn set_sealed_secrets(&mut self, org: &str, id: i64, sealed: &[u8]) -> Result<()>;
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
    /// Bind step `step` of flow `flow` to `instance`, pinned to `digest`.
    fn bind_step(&mut self, flow: i64, step: &str, instance: i64, digest: &Digest) -> Result<()>;
    /// Record `run` (its `id` is ignored); returns the new id.
    fn insert_run(&mut self, org: &str, run: &Run) -> Result<i64>;
    /// Recorded runs of flow `flow` with ids below `before`, newest first, at most `limit`.
    fn runs(&mut self, org: &str, flow: i64, before: i64, limit: usize) -> Result<Vec<Run>>;

    // ----- tokens (only hashes are stored) -----
    /// Store a token's hash; returns the token's id.
    fn insert_token(
        &mut self,
        org: &str,
        role: Role,
        label: &str,
        hash: &str,
        at: i64,
    ) -> Result<i64>;
    fn token(&mut self, hash: &str) -> Result<Option<Principal>>;

    // ----- audit -----
    /// Append `entry` (its `id` is ignored) to the log.
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// Entries of the audit log of `org` with ids above `after`, oldest first, at most `limit`.
    fn audit_log(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<AuditEntry>>;
}

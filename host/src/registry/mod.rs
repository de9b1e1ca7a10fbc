//! The lifecycle: organisations, publishing (private revisions, immutable public versions),
//! version states, the marketplace, installs and their two update modes, instances with sealed
//! credentials, flows and their runs, tokens, and the audit log — the rules of the seeds,
//! applied to the [`model`](crate::model) over a [`store`](crate::store).
//!
//! One file per concern: `rules.rs` holds the rules every operation shares (visibility, the
//! current revision, what pins a version, what may be bound), `pins.rs` the table calls
//! resolve through, `resolve.rs` how a call is resolved, `gc.rs` what is deleted. Everything is scoped by organisation: a private thing of another
//! organisation is [`Error::NotFound`], exactly like a missing one. A publish writes the blob
//! before the metadata that references it and removes it if that does not commit, so a
//! version is stored whole or not at all; opening the registry sweeps blobs no row references.

mod backup;
pub mod canary;
pub mod compat;
mod error;
mod flows;
mod gc;
mod installs;
mod instances;
pub(crate) mod mapping;
mod pins;
pub mod plan;
mod publish;
pub mod replay;
mod resolve;
mod rules;
mod tokens;
pub mod usage;
mod vault;

pub use error::{Cause, Error, Result};
pub use flows::FlowLimits;
pub use mapping::{InvalidMapping, Scope, map_input};
pub use tokens::{SESSION_MS, SignedIn};

use crate::model::{AuditEntry, Page};
use crate::runtime::Runtime;
use crate::store::{BlobStore, FsBlobStore, Metadata, MetadataStore, SqliteStore};
pub use backup::Backup;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use vault::Vault;

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
    /// Where metadata goes; `None` keeps it in `<data_dir>/gantry.db` ([`SqliteStore`]).
    /// Several nodes share a [`PgStore`](crate::store::PgStore) here.
    pub metadata: Option<Arc<dyn MetadataStore>>,
    /// The key sealing instance secrets; `None`: `<data_dir>/secrets.key`. Nodes sharing a
    /// store must each have the same key.
    pub secrets_key: Option<PathBuf>,
    /// The operator's allowances of private addresses, by organisation: the connectors of an
    /// organisation may reach these loopback/private addresses (when an install grants the
    /// origin), and no other organisation's may.
    pub private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Bounds of flows and their runs.
    pub flows: FlowLimits,
    /// How many connectors the registry keeps loaded between calls, and for how long.
    pub loaded: LoadedLimits,
    /// Refuse at publish components that import `wasi:filesystem` or `wasi:sockets`
    /// (`ungranted-imports`). Off by default: the sandbox links them but grants nothing — no
    /// directory, no socket — and the JavaScript and Python toolchains import them whatever
    /// the code does.
    pub refuse_ungranted_imports: bool,
}

/// How many connectors a [`Registry`] keeps loaded between calls (compiled code and a warm
/// pool slot each), and for how long one nobody calls stays loaded. Past either, the least
/// recently used is dropped (its next call loads it again from the artifact cache, ~1 ms), so
/// a tenant calling many versions once cannot keep them all in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadedLimits {
    pub max: usize,
    #[serde(with = "crate::sandbox::limits::millis")]
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

/// Milliseconds since the Unix epoch: the time every record carries.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The registry: metadata, blobs, sealed secrets, and the runtime that runs what it holds.
pub struct Registry {
    pub(crate) meta: Arc<dyn MetadataStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) vault: Vault,
    pub(crate) runtime: Runtime,
    faults: Option<FaultHook>,
    pub(crate) private_addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
    pub(crate) flow_limits: FlowLimits,
    refuse_ungranted_imports: bool,
    /// What calls run, resolved once per change (here or, through the store's watch, on
    /// another node).
    pins: Arc<pins::PinTable>,
    /// When each token was last used, not yet written to the store (`tokens::flush_token_use`).
    token_use: std::sync::Mutex<BTreeMap<i64, i64>>,
    /// The file of the key sealing instance secrets (a backup copies it).
    secrets_key: PathBuf,
    /// Held while blobs are deleted, and by a backup from its snapshot until its blobs are
    /// copied: no blob the snapshot references goes meanwhile.
    blob_deletions: std::sync::Mutex<()>,
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
        meta.read(|m| Ok::<_, Error>((m.setting(SECRETS_KEY_ID)?, m.instance_count()?)))?;
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
        let secrets_key = config
            .secrets_key
            .clone()
            .unwrap_or_else(|| dir.join("secrets.key"));
        let vault = open_vault(&meta, &secrets_key)?;
        let pins = Arc::new(pins::PinTable::new(config.loaded));
        let watched = Arc::downgrade(&pins);
        meta.watch(Arc::new(move |watch| {
            if let Some(pins) = watched.upgrade() {
                pins.heard(watch);
            }
        }));
        let registry = Self {
            meta,
            blobs,
            vault,
            runtime,
            faults: config.faults,
            private_addresses: config.private_addresses,
            flow_limits: config.flows,
            refuse_ungranted_imports: config.refuse_ungranted_imports,
            pins,
            token_use: Default::default(),
            secrets_key,
            blob_deletions: Default::default(),
        };
        registry.sweep_orphans()?;
        Ok(registry)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Run `work` in a read unit.
    fn read<T>(&self, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> Result<T> {
        self.meta.read(work)
    }

    /// Run `work` in a write unit that changes nothing a call resolves (recording a run,
    /// collecting garbage).
    fn write<T>(&self, work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> Result<T> {
        self.meta.write(work)
    }

    /// Run `work` as one lifecycle change: a write unit, after whose commit every call
    /// resolves anew ([`pins`]) — on every node sharing the store. Every other write goes
    /// through here.
    fn change<T>(&self, mut work: impl FnMut(&mut dyn Metadata) -> Result<T>) -> Result<T> {
        let out = self.write(|m| {
            let out = work(m)?;
            m.changed()?;
            Ok(out)
        })?;
        self.pins.invalidate();
        Ok(out)
    }

    /// Run blocking store work (file I/O, fsyncs) from async code without holding up the
    /// executor ([`crate::durable::off_executor`]).
    fn off_executor<T>(&self, work: impl FnOnce() -> T) -> T {
        crate::durable::off_executor(work)
    }

    fn fault(&self, point: FaultPoint) -> Result<()> {
        match &self.faults {
            Some(hook) if hook(point) => {
                Err(Error::storage(format!("injected fault at {point:?}")))
            }
            _ => Ok(()),
        }
    }

    // ----- audit ---------------------------------------------------------------------------

    /// Whether the stores answer: one read unit of the metadata, one look at the blobs
    /// (`/readyz`).
    pub fn check_store(&self) -> Result<()> {
        self.read(|m| Ok(m.setting(SECRETS_KEY_ID).map(drop)?))?;
        Ok(self.blobs.check()?)
    }

    /// One page of the audit log of the platform's own actions (organisations created,
    /// platform tokens), oldest first.
    pub fn platform_audit_log(&self, page: &Page) -> Result<Vec<AuditEntry>> {
        self.audit_log(tokens::PLATFORM_LOG, page)
    }

    /// One page of the audit log of `org`, oldest first.
    pub fn audit_log(&self, org: &str, page: &Page) -> Result<Vec<AuditEntry>> {
        let after = page.after_id()?.unwrap_or(0);
        self.read(|m| Ok(m.audit_log(org, after, page.limit())?))
    }
}

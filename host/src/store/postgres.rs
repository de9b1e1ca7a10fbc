//! The shared metadata store: PostgreSQL, for several `gantry serve` nodes on one database.
//!
//! - **Driver and pool**: `tokio-postgres` with a `deadpool-postgres` pool, their connection
//!   tasks on the stores' own runtime ([`bridge`](super::bridge)).
//! - **Units**: a read unit is one `REPEATABLE READ, READ ONLY` transaction (one snapshot); a
//!   write unit is a transaction that first takes a transaction-scoped advisory lock, so write
//!   units of every node are serialised by the database itself, as the trait requires (a
//!   publish's "next revision", a GC's "is this blob still referenced?"). The lock is released
//!   by the commit or rollback — also when a node dies mid-unit, its connection closing.
//! - **Migrations** run under a session advisory lock, so nodes starting together migrate once;
//!   the schema version is kept in `gantry_schema`.
//! - **Changes**: a unit that changes what calls resolve ([`Metadata::changed`]) sends a
//!   `NOTIFY` with its commit; [`MetadataStore::watch`] listens on a connection of its own and
//!   tells the registry, which empties its pin table. While that connection is down the
//!   registry is told so and keeps nothing resolved, so no node serves a stale pin for longer
//!   than the heartbeat that notices a silent loss ([`HEARTBEAT`]).
//!
//! Everything lives in the connection's `search_path` schema (`public` unless the URL sets
//! `options=-csearch_path=…`), so one database can hold several registries.

use super::bridge::{self, wait};
use super::codec::{
    BOUND_STEPS, INSTALL_COLUMNS, INSTANCE_COLUMNS, LISTED_COLUMNS, TOKEN_COLUMNS, VERSION_COLUMNS,
    from_json, from_text, text, to_json,
};
use super::{
    Access, BoundStep, Metadata, MetadataStore, Result, RevisionKey, StoreError, Watch, Watcher,
};
use crate::model::{
    AuditEntry, Canary, Digest, Flow, IndexEntry, Install, Instance, ListedVersion, OrgInfo,
    Recording, Run, RunStatus, Search, Session, Step, Summary, TokenInfo, VersionInfo,
    VersionState, words,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Schema migrations, applied in order; the index + 1 is the schema version. Text that is
/// ordered or paged by (organisation ids, connector names) is `COLLATE "C"`: byte order, as
/// SQLite and the in-memory store order it, whatever the database's locale.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE orgs (
    id         TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE versions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org          TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    name         TEXT COLLATE "C" NOT NULL,
    version      TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    digest       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
    state        TEXT NOT NULL CHECK (state IN ('active', 'deprecated', 'blocked')),
    publisher    TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    description  TEXT NOT NULL,
    tags         TEXT NOT NULL,
    summary      TEXT NOT NULL,
    world        TEXT NOT NULL DEFAULT '[]',
    UNIQUE (org, name, version, revision)
);
CREATE INDEX versions_digest ON versions(digest);
CREATE TABLE installs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org            TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    pkg_org        TEXT COLLATE "C" NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    version        TEXT NOT NULL,
    revision       INTEGER NOT NULL,
    customisations TEXT NOT NULL,
    modified_by    TEXT,
    modified_at    BIGINT,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    outbound       TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX installs_org ON installs(org, id);
CREATE INDEX installs_package ON installs(pkg_org, name);
CREATE TABLE instances (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org         TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    install_id  BIGINT NOT NULL REFERENCES installs(id),
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    secret_keys TEXT NOT NULL,
    secrets     BYTEA NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX instances_org ON instances(org, id);
CREATE TABLE flows (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org        TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    record     BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (org, name)
);
CREATE TABLE steps (
    flow_id     BIGINT NOT NULL REFERENCES flows(id),
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    instance_id BIGINT NOT NULL REFERENCES instances(id),
    operation   TEXT NOT NULL,
    input       TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (flow_id, position)
);
CREATE INDEX steps_digest ON steps(digest);
CREATE INDEX steps_instance ON steps(instance_id);
CREATE SEQUENCE run_ids;
CREATE TABLE runs (
    id          BIGINT PRIMARY KEY,
    org         TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    flow_id     BIGINT NOT NULL REFERENCES flows(id),
    status      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX runs_flow ON runs(org, flow_id, id);
CREATE TABLE recordings (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org      TEXT COLLATE "C" NOT NULL,
    flow_id  BIGINT NOT NULL REFERENCES flows(id),
    step     TEXT NOT NULL,
    at       BIGINT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX recordings_step ON recordings(org, flow_id, step, id);
CREATE TABLE canaries (
    org      TEXT COLLATE "C" NOT NULL,
    flow_id  BIGINT NOT NULL REFERENCES flows(id),
    step     TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (org, flow_id, step)
);
CREATE TABLE tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org          TEXT COLLATE "C" REFERENCES orgs(id),
    role         TEXT NOT NULL
                 CHECK (role IN ('platform', 'admin', 'publisher', 'operator', 'viewer')),
    label        TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    CHECK ((role = 'platform') = (org IS NULL))
);
CREATE INDEX tokens_org ON tokens(org, id);
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    token_id   BIGINT NOT NULL REFERENCES tokens(id),
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE TABLE audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org     TEXT COLLATE "C" NOT NULL,
    actor   TEXT NOT NULL,
    at      BIGINT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL
);
CREATE INDEX audit_org ON audit(org, id);
-- The marketplace index: each connector's entry for its owner and for everyone else, its
-- words (as `model::words` splits them) for prefix search, its tags.
CREATE TABLE listings (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org      TEXT COLLATE "C" NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    audience TEXT NOT NULL CHECK (audience IN ('owner', 'public')),
    words    TSVECTOR NOT NULL,
    UNIQUE (org, name, audience)
);
CREATE INDEX listings_words ON listings USING GIN (words);
CREATE TABLE listing_tags (
    listing BIGINT NOT NULL REFERENCES listings(id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (listing, tag)
);
CREATE INDEX listing_tags_tag ON listing_tags(tag, listing);
"#];

/// How often the listening connection is checked: a change another node made is seen within
/// milliseconds while it is up; a connection lost without a word is noticed within this (plus
/// a timeout as long), and from then on nothing resolved is kept until it is back.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// Most connections a node opens to the database.
const POOL_SIZE: usize = 16;

/// The PostgreSQL [`MetadataStore`].
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The advisory lock serialising write units (derived from the schema, so registries in
    /// different schemas of one database do not wait for each other).
    write_lock: i64,
    /// The channel changes are announced on, and this store's own mark on them.
    channel: String,
    node: String,
    /// The task listening for other nodes' changes.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("PgStore")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(task) = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user:password@host:port/db`, with
    /// libpq's parameters), migrating its schema. Fails when the database cannot be reached.
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(parse(url)?)
    }

    /// [`connect`](Self::connect), keeping everything in `schema` (letters, digits and `_`),
    /// which is created if missing: several registries in one database.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        let mut config = parse(url)?;
        Self::create_schema(&config, schema)?;
        config.options(format!("-csearch_path={schema}"));
        Self::open(config)
    }

    /// Drop `schema` and everything in it (what [`connect_in_schema`](Self::connect_in_schema)
    /// made).
    pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
        let config = parse(url)?;
        Self::on_one_connection(
            &config,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", checked(schema)?),
        )
    }

    fn create_schema(config: &tokio_postgres::Config, schema: &str) -> Result<()> {
        Self::on_one_connection(
            config,
            &format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", checked(schema)?),
        )
    }

    fn on_one_connection(config: &tokio_postgres::Config, sql: &str) -> Result<()> {
        let config = config.clone();
        let sql = sql.to_string();
        bridge::run(async move {
            let (client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            let done = client.batch_execute(&sql).await;
            drop(client);
            let _ = driver.await;
            done
        })
        .map_err(pg_error)
    }

    fn open(mut config: tokio_postgres::Config) -> Result<Self> {
        if config.get_application_name().is_none() {
            config.application_name("gantry");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::caused("the PostgreSQL pool", e))?;
        let client = client(&pool)?;
        let pg = Pg {
            client: &client,
            channel: "",
            node: "",
        };
        migrate(&pg)?;
        let write_lock: i64 = pg
            .one("SELECT hashtext(current_schema())::BIGINT", &[], |r| {
                get(r, 0)
            })?
            .ok_or_else(|| StoreError::failed("no current schema"))?;
        drop(client);
        let mut node = [0u8; 8];
        getrandom::fill(&mut node).map_err(|e| StoreError::failed(e.to_string()))?;
        Ok(Self {
            pool,
            config,
            write_lock,
            channel: format!("gantry_changes_{:x}", write_lock as u64),
            node: hex::encode(node),
            listener: Mutex::new(None),
        })
    }
}

fn parse(url: &str) -> Result<tokio_postgres::Config> {
    url.parse()
        .map_err(|e| StoreError::caused("the PostgreSQL URL", e))
}

/// `schema` if it is a plain identifier.
fn checked(schema: &str) -> Result<&str> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(schema)
    } else {
        Err(StoreError::failed(format!(
            "schema `{schema}`: lower-case letters, digits and _ only"
        )))
    }
}

/// A connection from the pool.
fn client(pool: &Pool) -> Result<deadpool_postgres::Client> {
    wait(pool.get()).map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        e => StoreError::unavailable("no connection to PostgreSQL", e),
    })
}

fn migrate(pg: &Pg<'_>) -> Result<()> {
    const MIGRATION_LOCK: i64 = 0x6761_6e74_7279; // "gantry"
    pg.batch(&format!(
        "SELECT pg_advisory_lock({MIGRATION_LOCK}); \
         CREATE TABLE IF NOT EXISTS gantry_schema (version INTEGER NOT NULL); \
         INSERT INTO gantry_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM gantry_schema)"
    ))?;
    let migrated = (|| {
        let current: i32 = pg
            .one("SELECT version FROM gantry_schema", &[], |r| get(r, 0))?
            .unwrap_or(0);
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            pg.batch(&format!(
                "BEGIN; {sql}; UPDATE gantry_schema SET version = {}; COMMIT",
                index + 1
            ))
            .inspect_err(|_| {
                let _ = pg.batch("ROLLBACK");
            })?;
        }
        Ok(())
    })();
    let unlocked = pg.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    migrated.and(unlocked)
}

/// A driver error: [`StoreError::Unavailable`] when the database cannot be reached or went
/// away (a closed connection, an I/O error, a server shutting down or starting up).
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let lost = e.is_closed()
        || e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        })
        || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if lost {
        StoreError::unavailable("PostgreSQL", e)
    } else {
        StoreError::caused("PostgreSQL", e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        pg_error(e)
    }
}

impl MetadataStore for PgStore {
    fn unit(
        &self,
        access: Access,
        work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
    ) -> Result<()> {
        let client = client(&self.pool)?;
        let mut pg = Pg {
            client: &client,
            channel: &self.channel,
            node: &self.node,
        };
        match access {
            Access::Read => pg.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?,
            Access::Write => {
                // One round trip: the transaction and its lock.
                let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({})", self.write_lock);
                if let Err(e) = pg.batch(&begin) {
                    let _ = pg.batch("ROLLBACK");
                    return Err(e);
                }
            }
            Access::Append => pg.batch("BEGIN")?,
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut pg)));
        let commit = access != Access::Read && matches!(outcome, Ok(Ok(())));
        let ended = pg.batch(if commit { "COMMIT" } else { "ROLLBACK" });
        if ended.is_err() {
            // Whatever state it is in, this connection is not handed out again.
            drop(deadpool_postgres::Object::take(client));
        }
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => ended,
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn watch(&self, watcher: Watcher) {
        watcher(Watch::Lost);
        let config = self.config.clone();
        let channel = self.channel.clone();
        let node = self.node.clone();
        let task = bridge::handle().spawn(listen(config, channel, node, watcher));
        if let Some(old) = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task)
        {
            old.abort();
        }
    }
}

/// Listen for other nodes' changes until aborted: [`Watch::Changed`] for each, and when the
/// connection is (re)established (changes may have been missed); [`Watch::Lost`] when it
/// goes.
async fn listen(config: tokio_postgres::Config, channel: String, node: String, watcher: Watcher) {
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
            let notified = watcher.clone();
            let own = node.clone();
            let driver = tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) if n.payload() != own => {
                            notified(Watch::Changed)
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                drop(closed_tx);
            });
            let listening = client
                .batch_execute(&format!("LISTEN \"{channel}\""))
                .await
                .is_ok();
            if listening {
                watcher(Watch::Changed);
                loop {
                    tokio::select! {
                        _ = &mut closed => break,
                        _ = tokio::time::sleep(HEARTBEAT) => {}
                    }
                    let alive =
                        tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1"))
                            .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
            driver.abort();
            watcher(Watch::Lost);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ----- rows -----------------------------------------------------------------------------------

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r Row, index: usize) -> Result<T> {
    row.try_get(index)
        .map_err(|e| StoreError::caused(format!("column {index}"), e))
}

fn bad_column(index: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(format!("column {index}: {e}"))
}

fn json<T: for<'de> Deserialize<'de>>(row: &Row, index: usize) -> Result<T> {
    from_json(get::<&str>(row, index)?).map_err(|e| bad_column(index, e))
}

fn enum_text<T: for<'de> Deserialize<'de>>(row: &Row, index: usize) -> Result<T> {
    from_text(get(row, index)?).map_err(|e| bad_column(index, e))
}

fn semver(row: &Row, index: usize) -> Result<semver::Version> {
    semver::Version::parse(get(row, index)?).map_err(|e| bad_column(index, e))
}

fn digest(row: &Row, index: usize) -> Result<Digest> {
    get::<&str>(row, index)?
        .parse()
        .map_err(|e: crate::model::ParseDigestError| bad_column(index, e))
}

fn revision(row: &Row, index: usize) -> Result<u32> {
    Ok(get::<i32>(row, index)? as u32)
}

fn version_row<D: for<'de> Deserialize<'de>>(row: &Row) -> Result<VersionInfo<D>> {
    Ok(VersionInfo {
        org: get(row, 0)?,
        name: get(row, 1)?,
        version: semver(row, 2)?,
        revision: revision(row, 3)?,
        digest: digest(row, 4)?,
        size: get::<i64>(row, 5)? as u64,
        visibility: enum_text(row, 6)?,
        state: enum_text(row, 7)?,
        publisher: get(row, 8)?,
        published_at: get(row, 9)?,
        tags: json(row, 10)?,
        description: json(row, 11)?,
    })
}

fn install_row(row: &Row) -> Result<Install> {
    Ok(Install {
        id: get(row, 0)?,
        org: get(row, 1)?,
        package_org: get(row, 2)?,
        name: get(row, 3)?,
        version: semver(row, 4)?,
        customisations: json(row, 5)?,
        modified_by: get(row, 6)?,
        modified_at: get(row, 7)?,
        created_by: get(row, 8)?,
        created_at: get(row, 9)?,
        outbound: json(row, 10)?,
        revision: revision(row, 11)?,
        update_available: None,
        revision_available: None,
    })
}

fn instance_row(row: &Row) -> Result<Instance> {
    Ok(Instance {
        id: get(row, 0)?,
        org: get(row, 1)?,
        install_id: get(row, 2)?,
        name: get(row, 3)?,
        config: json(row, 4)?,
        secret_keys: json(row, 5)?,
        created_by: get(row, 6)?,
        created_at: get(row, 7)?,
    })
}

fn step_row(row: &Row) -> Result<Step> {
    Ok(Step {
        name: get(row, 0)?,
        instance: get(row, 1)?,
        operation: get(row, 2)?,
        input: json(row, 3)?,
        digest: digest(row, 4)?,
        connector: None,
        revision: None,
        out_of_date: false,
    })
}

fn bound_step_row(r: &Row) -> Result<BoundStep> {
    Ok(BoundStep {
        flow: get(r, 0)?,
        name: get(r, 1)?,
        operation: get(r, 2)?,
        instance: get(r, 3)?,
        digest: digest(r, 4)?,
        package_org: get(r, 5)?,
        package_name: get(r, 6)?,
    })
}

fn token_row(r: &Row) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: get(r, 0)?,
        org: get(r, 1)?,
        role: enum_text(r, 2)?,
        label: get(r, 3)?,
        created_by: get(r, 4)?,
        created_at: get(r, 5)?,
        last_used_at: get(r, 6)?,
        expires_at: get(r, 7)?,
        revoked_at: get(r, 8)?,
    })
}

fn audit_row(row: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: get(row, 0)?,
        org: get(row, 1)?,
        actor: get(row, 2)?,
        at: get(row, 3)?,
        action: get(row, 4)?,
        subject: get(row, 5)?,
        before: json(row, 6)?,
        after: json(row, 7)?,
    })
}

type FlowRow = (i64, String, String, i64, bool);

fn flow_row(row: &Row) -> Result<FlowRow> {
    Ok((
        get(row, 0)?,
        get(row, 1)?,
        get(row, 2)?,
        get(row, 3)?,
        get(row, 4)?,
    ))
}

// ----- the statements -------------------------------------------------------------------------

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// One unit's connection, inside its transaction, and where it announces a change.
struct Pg<'c> {
    client: &'c deadpool_postgres::Client,
    channel: &'c str,
    node: &'c str,
}

impl Pg<'_> {
    fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        wait(async {
            let statement = self.client.prepare_cached(sql).await?;
            self.client.query(&statement, params).await
        })
        .map_err(pg_error)
    }

    fn all<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.rows(sql, params)?.iter().map(map).collect()
    }

    fn one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.rows(sql, params)?.first().map(map).transpose()
    }

    fn exists(&self, sql: &str, params: Params<'_>) -> Result<bool> {
        Ok(self.one(sql, params, |r| get(r, 0))?.unwrap_or(false))
    }

    /// Run `sql`; returns how many rows it changed.
    fn run(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        wait(async {
            let statement = self.client.prepare_cached(sql).await?;
            self.client.execute(&statement, params).await
        })
        .map_err(pg_error)
    }

    /// Run an `INSERT … RETURNING id`; returns the new row's id.
    fn insert(&self, sql: &str, params: Params<'_>) -> Result<i64> {
        self.one(sql, params, |r| get(r, 0))?
            .ok_or_else(|| StoreError::failed("an insert returned no id"))
    }

    /// Run statements without parameters (the simple query protocol).
    fn batch(&self, sql: &str) -> Result<()> {
        wait(self.client.batch_execute(sql)).map_err(pg_error)
    }

    /// Make the marketplace index of connector `org/name` what its versions say now.
    fn reindex(&self, org: &str, name: &str) -> Result<()> {
        self.run(
            "DELETE FROM listings WHERE org = $1 AND name = $2",
            &[&org, &name],
        )?;
        let revisions = self.all(
            &format!("SELECT {LISTED_COLUMNS} FROM versions WHERE org = $1 AND name = $2"),
            &[&org, &name],
            version_row,
        )?;
        for entry in IndexEntry::of_connector(revisions) {
            let text = words(&format!(
                "{} {} {}",
                entry.title, entry.description, entry.operations
            ))
            .join(" ");
            let id = self.insert(
                "INSERT INTO listings (org, name, audience, words) \
                 VALUES ($1, $2, $3, to_tsvector('simple', $4)) RETURNING id",
                &[&entry.org, &entry.name, &entry.audience.as_str(), &text],
            )?;
            for tag in &entry.tags {
                self.run(
                    "INSERT INTO listing_tags (listing, tag) VALUES ($1, $2)",
                    &[&id, tag],
                )?;
            }
        }
        Ok(())
    }

    fn steps(&self, flow: i64) -> Result<Vec<Step>> {
        self.all(
            "SELECT name, instance_id, operation, input, digest FROM steps \
             WHERE flow_id = $1 ORDER BY position",
            &[&flow],
            step_row,
        )
    }

    fn with_steps(
        &self,
        org: &str,
        (id, name, created_by, created_at, record): FlowRow,
    ) -> Result<Flow> {
        Ok(Flow {
            id,
            org: org.to_string(),
            name,
            steps: self.steps(id)?,
            record,
            created_by,
            created_at,
        })
    }
}

impl Metadata for Pg<'_> {
    fn changed(&mut self) -> Result<()> {
        self.run("SELECT pg_notify($1, $2)", &[&self.channel, &self.node])
            .map(drop)
    }

    fn create_org(&mut self, id: &str, at: i64) -> Result<()> {
        self.run(
            "INSERT INTO orgs (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &at],
        )
        .map(drop)
    }

    fn org_exists(&mut self, id: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)", &[&id])
    }

    fn orgs(&mut self, after: &str, limit: usize) -> Result<Vec<OrgInfo>> {
        self.all(
            "SELECT id, created_at FROM orgs WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &(limit as i64)],
            |r| {
                Ok(OrgInfo {
                    id: get(r, 0)?,
                    created_at: get(r, 1)?,
                })
            },
        )
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>> {
        self.one(
            "SELECT value FROM settings WHERE name = $1",
            &[&name],
            |r| get(r, 0),
        )
    }

    fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        self.run(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&name, &value],
        )
        .map(drop)
    }

    fn instance_count(&mut self) -> Result<u64> {
        Ok(self
            .one("SELECT COUNT(*) FROM instances", &[], |r| get::<i64>(r, 0))?
            .unwrap_or(0) as u64)
    }

    fn insert_version(&mut self, v: &VersionInfo) -> Result<()> {
        self.run(
            &format!(
                "INSERT INTO versions ({VERSION_COLUMNS}, summary) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            &[
                &v.org,
                &v.name,
                &v.version.to_string(),
                &(v.revision as i32),
                &v.digest.to_string(),
                &(v.size as i64),
                &text(&v.visibility),
                &text(&v.state),
                &v.publisher,
                &v.published_at,
                &to_json(&v.tags)?,
                &to_json(&v.description)?,
                &to_json(&Summary::from(&v.description))?,
            ],
        )?;
        self.reindex(&v.org, &v.name)
    }

    fn revisions(&mut self, org: &str, name: &str, version: &str) -> Result<Vec<VersionInfo>> {
        self.all(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE org = $1 AND name = $2 \
                 AND version = $3"
            ),
            &[&org, &name, &version],
            version_row,
        )
    }

    fn package_revisions(&mut self, org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        self.all(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE org = $1 AND name = $2"),
            &[&org, &name],
            version_row,
        )
    }

    fn revisions_with(
        &mut self,
        org: &str,
        name: &str,
        digest: &Digest,
    ) -> Result<Vec<VersionInfo>> {
        self.all(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE org = $1 AND name = $2 \
                 AND digest = $3"
            ),
            &[&org, &name, &digest.to_string()],
            version_row,
        )
    }

    fn search(
        &mut self,
        viewer: &str,
        search: &Search,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        // The connectors' own entries for their owner, everyone else's public ones.
        let mut sql = String::from(
            "SELECT l.org, l.name FROM listings l WHERE ((l.audience = 'owner' AND l.org = $1) \
             OR (l.audience = 'public' AND l.org <> $1))",
        );
        let mut values: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(viewer.to_string())];
        let param = |values: &mut Vec<Box<dyn ToSql + Sync>>, value: Box<dyn ToSql + Sync>| {
            values.push(value);
            format!("${}", values.len())
        };
        if let Some((org, name)) = after {
            let (o, n) = (
                param(&mut values, Box::new(org.to_string())),
                param(&mut values, Box::new(name.to_string())),
            );
            sql.push_str(&format!(" AND (l.org, l.name) > ({o}, {n})"));
        }
        if let Some(publisher) = &search.publisher {
            let p = param(&mut values, Box::new(publisher.clone()));
            sql.push_str(&format!(" AND l.org = {p}"));
        }
        if let Some(tag) = &search.tag {
            let t = param(&mut values, Box::new(tag.clone()));
            sql.push_str(&format!(
                " AND l.id IN (SELECT listing FROM listing_tags WHERE tag = {t})"
            ));
        }
        let words = words(search.text.as_deref().unwrap_or_default());
        if !words.is_empty() {
            // Every word, as the start of a word (the words are letters and digits only).
            let query: Vec<String> = words.iter().map(|w| format!("{w}:*")).collect();
            let q = param(&mut values, Box::new(query.join(" & ")));
            sql.push_str(&format!(" AND l.words @@ to_tsquery('simple', {q})"));
        }
        let l = param(&mut values, Box::new(limit as i64));
        sql.push_str(&format!(" ORDER BY l.org, l.name LIMIT {l}"));
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        self.all(&sql, &params, |r| Ok((get(r, 0)?, get(r, 1)?)))
    }

    fn listed_revisions(
        &mut self,
        viewer: &str,
        org: &str,
        name: &str,
    ) -> Result<Vec<ListedVersion>> {
        self.all(
            &format!(
                "SELECT {LISTED_COLUMNS} FROM versions WHERE org = $1 AND name = $2 \
                 AND (org = $3 OR visibility = 'public')"
            ),
            &[&org, &name, &viewer],
            version_row,
        )
    }

    fn revision_keys(&mut self, org: &str, name: &str) -> Result<Vec<RevisionKey>> {
        self.all(
            "SELECT version, revision, digest FROM versions WHERE org = $1 AND name = $2",
            &[&org, &name],
            |r| {
                Ok(RevisionKey {
                    org: org.to_string(),
                    name: name.to_string(),
                    version: get(r, 0)?,
                    revision: revision(r, 1)?,
                    digest: digest(r, 2)?,
                })
            },
        )
    }

    fn set_version_state(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<()> {
        self.run(
            "UPDATE versions SET state = $4 WHERE org = $1 AND name = $2 AND version = $3",
            &[&org, &name, &version, &text(&state)],
        )?;
        self.reindex(org, name)
    }

    fn delete_revision(&mut self, key: &RevisionKey) -> Result<()> {
        self.run(
            "DELETE FROM versions WHERE org = $1 AND name = $2 AND version = $3 AND revision = $4",
            &[&key.org, &key.name, &key.version, &(key.revision as i32)],
        )?;
        self.reindex(&key.org, &key.name)
    }

    fn set_world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
        world: &[String],
    ) -> Result<()> {
        self.run(
            "UPDATE versions SET world = $5 \
             WHERE org = $1 AND name = $2 AND version = $3 AND revision = $4",
            &[&org, &name, &version, &(revision as i32), &to_json(&world)?],
        )
        .map(drop)
    }

    fn world(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        revision: u32,
    ) -> Result<Option<Vec<String>>> {
        self.one(
            "SELECT world FROM versions \
             WHERE org = $1 AND name = $2 AND version = $3 AND revision = $4",
            &[&org, &name, &version, &(revision as i32)],
            |r| json(r, 0),
        )
    }

    fn digest_referenced(&mut self, digest: &Digest) -> Result<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = $1)",
            &[&digest.to_string()],
        )
    }

    fn insert_install(
        &mut self,
        org: &str,
        actor: &str,
        version: &VersionInfo,
        at: i64,
    ) -> Result<i64> {
        self.insert(
            "INSERT INTO installs (org, pkg_org, name, version, revision, customisations, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $5, '{}', $6, $7) RETURNING id",
            &[
                &org,
                &version.org,
                &version.name,
                &version.version.to_string(),
                &(version.revision as i32),
                &actor,
                &at,
            ],
        )
    }

    fn install(&mut self, org: &str, id: i64) -> Result<Option<Install>> {
        self.one(
            &format!("SELECT {INSTALL_COLUMNS} FROM installs WHERE org = $1 AND id = $2"),
            &[&org, &id],
            install_row,
        )
    }

    fn installs(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Install>> {
        self.all(
            &format!(
                "SELECT {INSTALL_COLUMNS} FROM installs WHERE org = $1 AND id > $2 \
                 ORDER BY id LIMIT $3"
            ),
            &[&org, &after, &(limit as i64)],
            install_row,
        )
    }

    fn installs_of_package(&mut self, org: &str, name: &str) -> Result<Vec<Install>> {
        self.all(
            &format!(
                "SELECT {INSTALL_COLUMNS} FROM installs WHERE pkg_org = $1 AND name = $2 \
                 ORDER BY id"
            ),
            &[&org, &name],
            install_row,
        )
    }

    fn set_customisations(
        &mut self,
        org: &str,
        id: i64,
        customisations: &BTreeMap<String, String>,
        modified: Option<(&str, i64)>,
    ) -> Result<()> {
        let (by, at) = modified.unzip();
        self.run(
            "UPDATE installs SET customisations = $3, modified_by = $4, modified_at = $5 \
             WHERE org = $1 AND id = $2",
            &[&org, &id, &to_json(customisations)?, &by, &at],
        )
        .map(drop)
    }

    fn set_outbound(&mut self, org: &str, id: i64, origins: &[String]) -> Result<()> {
        self.run(
            "UPDATE installs SET outbound = $3 WHERE org = $1 AND id = $2",
            &[&org, &id, &to_json(&origins)?],
        )
        .map(drop)
    }

    fn set_install_version(
        &mut self,
        org: &str,
        id: i64,
        version: &semver::Version,
        revision: u32,
    ) -> Result<()> {
        self.run(
            "UPDATE installs SET version = $3, revision = $4 WHERE org = $1 AND id = $2",
            &[&org, &id, &version.to_string(), &(revision as i32)],
        )
        .map(drop)
    }

    fn insert_instance(&mut self, i: &Instance) -> Result<i64> {
        self.insert(
            "INSERT INTO instances (org, install_id, name, config, secret_keys, secrets, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $5, '', $6, $7) RETURNING id",
            &[
                &i.org,
                &i.install_id,
                &i.name,
                &to_json(&i.config)?,
                &to_json(&i.secret_keys)?,
                &i.created_by,
                &i.created_at,
            ],
        )
    }

    fn set_sealed_secrets(
        &mut self,
        org: &str,
        id: i64,
        keys: &[String],
        sealed: &[u8],
    ) -> Result<()> {
        self.run(
            "UPDATE instances SET secret_keys = $3, secrets = $4 WHERE org = $1 AND id = $2",
            &[&org, &id, &to_json(&keys)?, &sealed],
        )
        .map(drop)
    }

    fn sealed_secrets(&mut self, org: &str, id: i64) -> Result<Option<Vec<u8>>> {
        self.one(
            "SELECT secrets FROM instances WHERE org = $1 AND id = $2",
            &[&org, &id],
            |r| get(r, 0),
        )
    }

    fn instance(&mut self, org: &str, id: i64) -> Result<Option<Instance>> {
        self.one(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE org = $1 AND id = $2"),
            &[&org, &id],
            instance_row,
        )
    }

    fn instances(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Instance>> {
        self.all(
            &format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE org = $1 AND id > $2 \
                 ORDER BY id LIMIT $3"
            ),
            &[&org, &after, &(limit as i64)],
            instance_row,
        )
    }

    fn flow_name_taken(&mut self, org: &str, name: &str) -> Result<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM flows WHERE org = $1 AND name = $2)",
            &[&org, &name],
        )
    }

    fn insert_flow(&mut self, org: &str, name: &str, actor: &str, at: i64) -> Result<i64> {
        self.insert(
            "INSERT INTO flows (org, name, created_by, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
            &[&org, &name, &actor, &at],
        )
    }

    fn insert_step(&mut self, flow: i64, position: usize, step: &Step) -> Result<()> {
        self.run(
            "INSERT INTO steps (flow_id, position, name, instance_id, operation, input, digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &flow,
                &(position as i32),
                &step.name,
                &step.instance,
                &step.operation,
                &step.input.to_string(),
                &step.digest.to_string(),
            ],
        )
        .map(drop)
    }

    fn flow(&mut self, org: &str, id: i64) -> Result<Option<Flow>> {
        let row = self.one(
            "SELECT id, name, created_by, created_at, record FROM flows WHERE org = $1 AND id = $2",
            &[&org, &id],
            flow_row,
        )?;
        row.map(|row| self.with_steps(org, row)).transpose()
    }

    fn flows(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Flow>> {
        self.all(
            "SELECT id, name, created_by, created_at, record FROM flows WHERE org = $1 \
             AND id > $2 ORDER BY id LIMIT $3",
            &[&org, &after, &(limit as i64)],
            flow_row,
        )?
        .into_iter()
        .map(|row| self.with_steps(org, row))
        .collect()
    }

    fn steps_through_install(&mut self, org: &str, install: i64) -> Result<Vec<BoundStep>> {
        self.all(
            &format!(
                "{BOUND_STEPS} WHERE f.org = $1 AND n.org = $1 AND n.id = $2 \
                 ORDER BY s.flow_id, s.position"
            ),
            &[&org, &install],
            bound_step_row,
        )
    }

    fn steps_through_package(&mut self, org: &str, name: &str) -> Result<Vec<BoundStep>> {
        self.all(
            &format!(
                "{BOUND_STEPS} WHERE n.pkg_org = $1 AND n.name = $2 \
                 ORDER BY s.flow_id, s.position"
            ),
            &[&org, &name],
            bound_step_row,
        )
    }

    fn bind_step(&mut self, flow: i64, step: &str, instance: i64, digest: &Digest) -> Result<()> {
        self.run(
            "UPDATE steps SET instance_id = $3, digest = $4 WHERE flow_id = $1 AND name = $2",
            &[&flow, &step, &instance, &digest.to_string()],
        )
        .map(drop)
    }

    fn set_flow_record(&mut self, org: &str, flow: i64, record: bool) -> Result<()> {
        self.run(
            "UPDATE flows SET record = $3 WHERE org = $1 AND id = $2",
            &[&org, &flow, &record],
        )
        .map(drop)
    }

    fn insert_recording(&mut self, org: &str, r: &Recording, keep: usize) -> Result<i64> {
        let (Some(flow), Some(step)) = (r.flow, r.step.as_deref()) else {
            return Err(StoreError::failed(
                "a flow's recording names its flow and step",
            ));
        };
        let id = self.insert(
            "INSERT INTO recordings (org, flow_id, step, at, document) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&org, &flow, &step, &r.at, &to_json(r)?],
        )?;
        self.run(
            "DELETE FROM recordings WHERE org = $1 AND flow_id = $2 AND step = $3 AND id <= \
             (SELECT id FROM recordings WHERE org = $1 AND flow_id = $2 AND step = $3 \
              ORDER BY id DESC LIMIT 1 OFFSET $4)",
            &[&org, &flow, &step, &(keep as i64)],
        )?;
        Ok(id)
    }

    fn recordings(
        &mut self,
        org: &str,
        flow: i64,
        step: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Recording>> {
        self.all(
            "SELECT id, document FROM recordings WHERE org = $1 AND flow_id = $2 AND step = $3 \
             AND id < $4 ORDER BY id DESC LIMIT $5",
            &[&org, &flow, &step, &before, &(limit as i64)],
            |r| {
                let mut recording: Recording = json(r, 1)?;
                recording.id = get(r, 0)?;
                Ok(recording)
            },
        )
    }

    fn reserve_run_id(&mut self) -> Result<i64> {
        self.insert("SELECT nextval('run_ids')", &[])
    }

    fn canary(&mut self, org: &str, flow: i64, step: &str) -> Result<Option<Canary>> {
        self.one(
            "SELECT document FROM canaries WHERE org = $1 AND flow_id = $2 AND step = $3",
            &[&org, &flow, &step],
            |r| json(r, 0),
        )
    }

    fn flow_canaries(&mut self, org: &str, flow: i64) -> Result<Vec<Canary>> {
        self.all(
            "SELECT document FROM canaries WHERE org = $1 AND flow_id = $2 ORDER BY step",
            &[&org, &flow],
            |r| json(r, 0),
        )
    }

    fn put_canary(&mut self, org: &str, canary: &Canary) -> Result<()> {
        self.run(
            "INSERT INTO canaries (org, flow_id, step, document) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org, flow_id, step) DO UPDATE SET document = excluded.document",
            &[&org, &canary.flow, &canary.step, &to_json(canary)?],
        )
        .map(drop)
    }

    fn insert_run(&mut self, org: &str, run: &Run) -> Result<i64> {
        let status = match run.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        };
        let id = match run.id {
            0 => self.reserve_run_id()?,
            id => id,
        };
        self.run(
            "INSERT INTO runs (id, org, flow_id, status, started_at, duration_ms, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &org,
                &run.flow_id,
                &status,
                &run.started_at,
                &((run.duration_us / 1000) as i64),
                &to_json(run)?,
            ],
        )?;
        Ok(id)
    }

    fn runs(&mut self, org: &str, flow: i64, before: i64, limit: usize) -> Result<Vec<Run>> {
        self.all(
            "SELECT id, record FROM runs WHERE org = $1 AND flow_id = $2 AND id < $3 \
             ORDER BY id DESC LIMIT $4",
            &[&org, &flow, &before, &(limit as i64)],
            |r| {
                Ok(Run {
                    id: get(r, 0)?,
                    ..json(r, 1)?
                })
            },
        )
    }

    fn insert_token(&mut self, t: &TokenInfo, hash: &str) -> Result<i64> {
        self.insert(
            "INSERT INTO tokens (org, role, label, hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &t.org,
                &text(&t.role),
                &t.label,
                &hash,
                &t.created_by,
                &t.created_at,
                &t.expires_at,
            ],
        )
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenInfo>> {
        self.one(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
            &[&hash],
            token_row,
        )
    }

    fn token_by_id(&mut self, id: i64) -> Result<Option<TokenInfo>> {
        self.one(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
            &[&id],
            token_row,
        )
    }

    fn tokens(&mut self, org: Option<&str>, after: i64, limit: usize) -> Result<Vec<TokenInfo>> {
        self.all(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org IS NOT DISTINCT FROM $1 \
                 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&org, &after, &(limit as i64)],
            token_row,
        )
    }

    fn revoke_token(&mut self, id: i64, at: i64) -> Result<()> {
        self.run(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &at],
        )
        .map(drop)
    }

    fn set_tokens_used(&mut self, used: &[(i64, i64)]) -> Result<()> {
        for (id, at) in used {
            self.run(
                "UPDATE tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                &[id, at],
            )?;
        }
        Ok(())
    }

    fn insert_session(&mut self, hash: &str, session: &Session, now: i64) -> Result<()> {
        self.run("DELETE FROM sessions WHERE expires_at <= $1", &[&now])?;
        self.run(
            "INSERT INTO sessions (hash, token_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &hash,
                &session.token_id,
                &session.csrf,
                &session.created_at,
                &session.expires_at,
            ],
        )
        .map(drop)
    }

    fn session(&mut self, hash: &str) -> Result<Option<Session>> {
        self.one(
            "SELECT token_id, csrf, created_at, expires_at FROM sessions WHERE hash = $1",
            &[&hash],
            |r| {
                Ok(Session {
                    token_id: get(r, 0)?,
                    csrf: get(r, 1)?,
                    created_at: get(r, 2)?,
                    expires_at: get(r, 3)?,
                })
            },
        )
    }

    fn delete_session(&mut self, hash: &str) -> Result<()> {
        self.run("DELETE FROM sessions WHERE hash = $1", &[&hash])
            .map(drop)
    }

    fn append_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.run(
            "INSERT INTO audit (org, actor, at, action, subject, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &e.org,
                &e.actor,
                &e.at,
                &e.action,
                &e.subject,
                &e.before.to_string(),
                &e.after.to_string(),
            ],
        )
        .map(drop)
    }

    fn audit_log(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.all(
            "SELECT id, org, actor, at, action, subject, before, after FROM audit \
             WHERE org = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&org, &after, &(limit as i64)],
            audit_row,
        )
    }
}

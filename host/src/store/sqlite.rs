//! The embedded metadata store: one SQLite file in WAL mode with `synchronous=FULL`, its schema
//! and migrations (tracked in `PRAGMA user_version`), and the [`MetadataStore`] over it.
//!
//! One connection behind a mutex: a unit holds it from start to end in one transaction
//! (`IMMEDIATE` for a write unit), so writers are serialised as the trait requires.

use super::codec::{
    BOUND_STEPS, INSTALL_COLUMNS, INSTANCE_COLUMNS, LISTED_COLUMNS, TOKEN_COLUMNS, VERSION_COLUMNS,
    from_json, from_text, text, to_json,
};
use super::{Access, BoundStep, Metadata, MetadataStore, Result, RevisionKey, StoreError};
use crate::model::{
    AuditEntry, Canary, Description, Digest, Flow, IndexEntry, Install, Instance, ListedVersion,
    OrgInfo, Recording, Run, RunStatus, Search, Session, Step, Summary, TokenInfo, VersionInfo,
    VersionState, words,
};
use rusqlite::types::{Type, Value as SqlValue};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE versions (
    id           INTEGER PRIMARY KEY,
    org          TEXT NOT NULL REFERENCES orgs(id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    digest       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
    state        TEXT NOT NULL CHECK (state IN ('active', 'deprecated', 'blocked')),
    publisher    TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    description  TEXT NOT NULL,
    tags         TEXT NOT NULL,
    UNIQUE (org, name, version, revision)
);
CREATE INDEX versions_digest ON versions(digest);
CREATE TABLE installs (
    id             INTEGER PRIMARY KEY,
    org            TEXT NOT NULL REFERENCES orgs(id),
    pkg_org        TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    customisations TEXT NOT NULL,
    modified_by    TEXT,
    modified_at    INTEGER,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY,
    org         TEXT NOT NULL REFERENCES orgs(id),
    install_id  INTEGER NOT NULL REFERENCES installs(id),
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    secret_keys TEXT NOT NULL,
    secrets     BLOB NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE flows (
    id         INTEGER PRIMARY KEY,
    org        TEXT NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (org, name)
);
CREATE TABLE steps (
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    operation   TEXT NOT NULL,
    input       TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (flow_id, position)
);
CREATE INDEX steps_digest ON steps(digest);
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    org         TEXT NOT NULL REFERENCES orgs(id),
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    status      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    record      TEXT NOT NULL
);
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    org     TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL
);
CREATE INDEX audit_org ON audit(org, id);
"#,
    // 2: outbound origins granted to an install.
    "ALTER TABLE installs ADD COLUMN outbound TEXT NOT NULL DEFAULT '[]';",
    // 3: API tokens, stored as sha256 hashes.
    r#"
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    org        TEXT NOT NULL REFERENCES orgs(id),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'operator', 'viewer')),
    label      TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#,
    // 4: settings of the installation (the fingerprint of the secrets key).
    r#"
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // 5: what the marketplace shows of a version (its description without schemas), so a
    // listing reads a small column; filled in for older rows when the store opens.
    "ALTER TABLE versions ADD COLUMN summary TEXT NOT NULL DEFAULT '';",
    // 6: platform tokens (no organisation), and tokens that expire, are revoked and say when
    // they were last used.
    r#"
CREATE TABLE tokens_v6 (
    id           INTEGER PRIMARY KEY,
    org          TEXT REFERENCES orgs(id),
    role         TEXT NOT NULL
                 CHECK (role IN ('platform', 'admin', 'publisher', 'operator', 'viewer')),
    label        TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    CHECK ((role = 'platform') = (org IS NULL))
);
INSERT INTO tokens_v6 (id, org, role, label, hash, created_by, created_at)
    SELECT id, org, role, label, hash, '', created_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v6 RENAME TO tokens;
CREATE INDEX tokens_org ON tokens(org, id);
"#,
    // 7: the marketplace's search index: what each connector shows its owner and everyone
    // else (`IndexEntry`), its words in full-text search, its tags; filled in for older rows
    // when the store opens.
    r#"
CREATE TABLE listings (
    id       INTEGER PRIMARY KEY,
    org      TEXT NOT NULL,
    name     TEXT NOT NULL,
    audience TEXT NOT NULL CHECK (audience IN ('owner', 'public')),
    UNIQUE (org, name, audience)
);
CREATE TABLE listing_tags (
    listing INTEGER NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (listing, tag)
) WITHOUT ROWID;
CREATE INDEX listing_tags_tag ON listing_tags(tag, listing);
CREATE VIRTUAL TABLE listing_text USING fts5(title, description, operations, prefix = '2 3');
"#,
    // 8: installs pin the revision of their version they run (they ran the newest before).
    r#"
ALTER TABLE installs ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
UPDATE installs SET revision = COALESCE((SELECT MAX(v.revision) FROM versions v
    WHERE v.org = installs.pkg_org AND v.name = installs.name AND v.version = installs.version), 1);
"#,
    // 9: the WIT world each revision was built against (unknown for older rows).
    "ALTER TABLE versions ADD COLUMN world TEXT NOT NULL DEFAULT '[]';",
    // 10: console sessions, by the hash of their cookie.
    r#"
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token_id INTEGER NOT NULL REFERENCES tokens(id),
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions(expires_at);
"#,
    // 11: flows that record their step runs, and the recordings (a JSON document each).
    r#"
ALTER TABLE flows ADD COLUMN record INTEGER NOT NULL DEFAULT 0;
CREATE TABLE recordings (
    id       INTEGER PRIMARY KEY,
    org      TEXT NOT NULL,
    flow_id  INTEGER NOT NULL REFERENCES flows(id),
    step     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX recordings_step ON recordings(org, flow_id, step, id);
"#,
    // 12: run ids from a sequence (a canary's run knows its id before it runs), and canaries.
    r#"
CREATE TABLE run_seq (next INTEGER NOT NULL);
INSERT INTO run_seq (next) SELECT COALESCE(MAX(id), 0) + 1 FROM runs;
CREATE TABLE canaries (
    org      TEXT NOT NULL,
    flow_id  INTEGER NOT NULL REFERENCES flows(id),
    step     TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (org, flow_id, step)
) WITHOUT ROWID;
"#,
];

/// The SQLite [`MetadataStore`]: one writer connection, and a pool of read connections so a
/// read never waits behind a writer's fsync (WAL readers see the last commit).
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Write units waiting for the writer: while there are some, a unit leaves its
    /// transaction open for them (group commit).
    queued: AtomicUsize,
    /// What became of each batch whose units wait for its commit.
    outcomes: Mutex<HashMap<u64, Outcome>>,
    committed: Condvar,
    /// Idle read connections; a read unit takes one (or opens one when none is idle).
    readers: Mutex<Vec<Connection>>,
    /// Held for the store's life: one process per data directory.
    _lock: File,
}

/// How many idle read connections are kept.
const IDLE_READERS: usize = 4;

/// Most write units committed together.
const MAX_BATCH: usize = 64;

/// The writer connection and the transaction left open for the units queued behind it.
struct Writer {
    conn: Connection,
    /// The batch the open transaction belongs to (`None`: no transaction is open).
    batch: Option<u64>,
    next_batch: u64,
    /// Units of the open batch that finished and wait for its commit.
    pending: usize,
}

/// How a batch ended, and how many of its units have yet to read it.
struct Outcome {
    result: Result<()>,
    unread: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating and migrating) the database at `path`, which this store then holds
    /// exclusively: opening it from a second process (or a second time) fails until the first
    /// closes it. Other processes may still read the file, so an online backup
    /// (`sqlite3 gantry.db ".backup b.db"`, litestream) can copy it while Gantry runs.
    pub fn open(path: &Path) -> Result<Self> {
        let lock = lock(path)?;
        let writer = open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                conn: writer,
                batch: None,
                next_batch: 1,
                pending: 0,
            }),
            queued: AtomicUsize::new(0),
            outcomes: Mutex::new(HashMap::new()),
            committed: Condvar::new(),
            readers: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    fn reader(&self) -> Result<Connection> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => Ok(open_reader(&self.path)?),
        }
    }

    /// Run a write unit. Units are serialised on the writer connection, each in a savepoint
    /// of a transaction that stays open while other units are queued (up to [`MAX_BATCH`]):
    /// the last of them commits for all, so concurrent writers share one fsync. A unit
    /// returns only once its batch is committed (or failed: then nothing of it is kept); a
    /// unit whose work fails is rolled back to its savepoint at once and returns its error.
    fn write_unit(&self, work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>) -> Result<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let batch = match writer.batch {
            Some(batch) => batch,
            None => {
                writer.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                let batch = writer.next_batch;
                writer.next_batch += 1;
                writer.batch = Some(batch);
                batch
            }
        };
        let conn = &writer.conn;
        let run = |sql: &str| {
            conn.prepare_cached(sql)
                .and_then(|mut statement| statement.execute([]))
                .map(drop)
        };
        let outcome = run("SAVEPOINT unit").map_err(StoreError::from).map(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut Sql(conn))))
        });
        // Whether this unit's writes stay in the batch; `false` with `poisoned` when they
        // could not be undone, so the whole batch must go.
        let (kept, poisoned) = match &outcome {
            Ok(Ok(Ok(()))) => match run("RELEASE unit") {
                Ok(()) => (true, false),
                Err(_) => (false, true),
            },
            Ok(_) => {
                // Failed or panicked: undo this unit only.
                let undone = run("ROLLBACK TO unit").and_then(|()| run("RELEASE unit"));
                (false, undone.is_err())
            }
            Err(_) => (false, !conn.is_autocommit()),
        };
        if kept {
            writer.pending += 1;
        }
        if poisoned || self.queued.load(Ordering::SeqCst) == 0 || writer.pending >= MAX_BATCH {
            // Nobody queued behind (or the batch is full, or broken): end it now, for every
            // unit in it.
            let end = if writer.pending > 0 && !poisoned {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let mut result = writer
                .conn
                .prepare_cached(end)
                .and_then(|mut s| s.execute([]))
                .map(drop)
                .map_err(StoreError::from);
            if poisoned {
                result = Err(StoreError::failed(
                    "a unit of this batch could not be undone; nothing of the batch was kept",
                ));
            }
            if !writer.conn.is_autocommit() {
                let rolled_back = writer.conn.execute_batch("ROLLBACK");
                result = result.and(rolled_back.map_err(StoreError::from));
            }
            let waiting = writer.pending;
            writer.batch = None;
            writer.pending = 0;
            if waiting > 0 {
                self.outcomes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        batch,
                        Outcome {
                            result,
                            unread: waiting,
                        },
                    );
                self.committed.notify_all();
            }
        }
        drop(writer);
        match outcome {
            Err(e) => Err(e),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(()))) if !kept => Err(StoreError::failed("cannot release a savepoint")),
            Ok(Ok(Ok(()))) => self.wait_for(batch),
        }
    }

    /// Wait until `batch` is committed (or failed), and answer how it ended.
    fn wait_for(&self, batch: u64) -> Result<()> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = outcomes.get_mut(&batch) {
                outcome.unread -= 1;
                let result = outcome.result.clone();
                if outcome.unread == 0 {
                    outcomes.remove(&batch);
                }
                return result;
            }
            outcomes = self
                .committed
                .wait(outcomes)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
    }
}

/// Run a read unit on `conn`: one snapshot (a deferred transaction) ending in ROLLBACK, so
/// nothing it wrote by mistake is kept. The statements are cached: parsing `BEGIN` and
/// `COMMIT` anew showed in every call.
fn read_unit(
    conn: &Connection,
    work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
) -> Result<()> {
    if !conn.is_autocommit() {
        // A unit that panicked left its transaction open.
        conn.execute_batch("ROLLBACK")?;
    }
    conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
    let result = work(&mut Sql(conn));
    conn.prepare_cached("ROLLBACK")?.execute([])?;
    result
}

impl MetadataStore for SqliteStore {
    fn unit(
        &self,
        access: Access,
        work: &mut dyn FnMut(&mut dyn Metadata) -> Result<()>,
    ) -> Result<()> {
        match access {
            Access::Write | Access::Append => self.write_unit(work),
            Access::Read => {
                let conn = self.reader()?;
                let result = read_unit(&conn, work);
                self.give_back(conn);
                result
            }
        }
    }

    /// `VACUUM INTO` from a read-only connection of its own: one read transaction, so a
    /// consistent snapshot; in WAL mode writers carry on meanwhile. The copy is made durable
    /// before this returns.
    fn backup_to(&self, path: &Path) -> Result<()> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::failed("the backup path is not UTF-8"))?;
        conn.execute("VACUUM INTO ?1", [target])?;
        drop(conn);
        crate::durable::tighten(path, 0o600)
            .and_then(|()| File::open(path)?.sync_all())
            .map_err(|e| StoreError::caused("making the backup durable", e))
    }
}

/// Take the lock that makes `path` this process's: an exclusive lock on `<path>.lock`.
fn lock(path: &Path) -> Result<File> {
    let lock_path = path.with_extension("db.lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&lock_path)
        .map_err(|e| StoreError::caused(lock_path.display(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::failed(format!(
            "{} is in use by another process: one Gantry per data directory",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::caused(lock_path.display(), e)),
    }
}

/// Open the writer connection: create the file (0600), set WAL with `synchronous=FULL`, and
/// migrate the schema.
fn open(path: &Path) -> Result<Connection> {
    // The database holds token hashes and sealed secrets: only this user may read it. SQLite
    // gives its -wal and -shm files the database file's permissions.
    let private = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)?;
        crate::durable::tighten(path, 0o600)
    };
    private().map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("{}: {e}", path.display())),
        )
    })?;
    let mut conn = Connection::open(path)?;
    // A backup tool may hold a read lock briefly: wait for it rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    fill_summaries(&mut conn)?;
    fill_index(&mut conn)?;
    Ok(conn)
}

/// Open a read connection: it may only read.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// Write the marketplace summary of versions stored before it had a column.
fn fill_summaries(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let rows: Vec<(i64, Description)> = tx
        .prepare("SELECT id, description FROM versions WHERE summary = ''")?
        .query_map([], |r| Ok((r.get(0)?, json(r, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, description) in rows {
        let summary =
            serde_json::to_string(&Summary::from(&description)).map_err(|e| bad_column(1, e))?;
        tx.execute(
            "UPDATE versions SET summary = ?2 WHERE id = ?1",
            params![id, summary],
        )?;
    }
    tx.commit()
}

/// Index the connectors the marketplace index does not know: every one when the store had no
/// index yet (schema 6), any whose rows were written by other means since. A connector with
/// versions always has an entry for its owner.
fn fill_index(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction()?;
    let sql = Sql(&tx);
    let unindexed = sql.all(
        "SELECT DISTINCT org, name FROM versions v WHERE NOT EXISTS \
         (SELECT 1 FROM listings l WHERE l.org = v.org AND l.name = v.name)",
        [],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
    )?;
    for (org, name) in unindexed {
        sql.reindex(&org, &name)?;
    }
    tx.commit()?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::caused("SQLite", e)
    }
}

// ----- row conversions ----------------------------------------------------------------------

fn bad_column(
    index: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, e.into())
}

/// Column `index` of `row`, parsed from JSON ([`from_json`]).
fn json<T: for<'de> Deserialize<'de>>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text = row
        .get_ref(index)?
        .as_str()
        .map_err(|e| bad_column(index, e))?;
    from_json(text).map_err(|e| bad_column(index, e))
}

fn enum_text<T: for<'de> Deserialize<'de>>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    from_text(row.get(index)?).map_err(|e| bad_column(index, e))
}

fn semver(row: &Row<'_>, index: usize) -> rusqlite::Result<semver::Version> {
    semver::Version::parse(&row.get::<_, String>(index)?).map_err(|e| bad_column(index, e))
}

fn digest(row: &Row<'_>, index: usize) -> rusqlite::Result<Digest> {
    row.get::<_, String>(index)?
        .parse()
        .map_err(|e: crate::model::ParseDigestError| bad_column(index, e))
}

/// A version row, with the description of type `D` from the last column: the whole
/// [`Description`] ([`VERSION_COLUMNS`]) or the [`Summary`] ([`LISTED_COLUMNS`]).
fn version_row<D: for<'de> Deserialize<'de>>(row: &Row<'_>) -> rusqlite::Result<VersionInfo<D>> {
    Ok(VersionInfo {
        org: row.get(0)?,
        name: row.get(1)?,
        version: semver(row, 2)?,
        revision: row.get(3)?,
        digest: digest(row, 4)?,
        size: row.get(5)?,
        visibility: enum_text(row, 6)?,
        state: enum_text(row, 7)?,
        publisher: row.get(8)?,
        published_at: row.get(9)?,
        tags: json(row, 10)?,
        description: json(row, 11)?,
    })
}

fn install_row(row: &Row<'_>) -> rusqlite::Result<Install> {
    Ok(Install {
        id: row.get(0)?,
        org: row.get(1)?,
        package_org: row.get(2)?,
        name: row.get(3)?,
        version: semver(row, 4)?,
        customisations: json(row, 5)?,
        modified_by: row.get(6)?,
        modified_at: row.get(7)?,
        created_by: row.get(8)?,
        created_at: row.get(9)?,
        outbound: json(row, 10)?,
        revision: row.get(11)?,
        update_available: None,
        revision_available: None,
    })
}

fn instance_row(row: &Row<'_>) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: row.get(0)?,
        org: row.get(1)?,
        install_id: row.get(2)?,
        name: row.get(3)?,
        config: json(row, 4)?,
        secret_keys: json(row, 5)?,
        created_by: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn step_row(row: &Row<'_>) -> rusqlite::Result<Step> {
    Ok(Step {
        name: row.get(0)?,
        instance: row.get(1)?,
        operation: row.get(2)?,
        input: json(row, 3)?,
        digest: digest(row, 4)?,
        connector: None,
        revision: None,
        out_of_date: false,
    })
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        org: row.get(1)?,
        actor: row.get(2)?,
        at: row.get(3)?,
        action: row.get(4)?,
        subject: row.get(5)?,
        before: json(row, 6)?,
        after: json(row, 7)?,
    })
}

// ----- the statements -----------------------------------------------------------------------

/// One unit's view: the connection, or the transaction a write unit runs in.
struct Sql<'c>(&'c Connection);

impl Sql<'_> {
    fn all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_map(params, map)?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_row(params, map)
            .optional()?)
    }

    fn exists(&self, sql: &str, params: impl rusqlite::Params) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_row(params, |r| r.get(0))?)
    }

    /// Run `sql`; returns how many rows it changed.
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
        Ok(self.0.prepare_cached(sql)?.execute(params)?)
    }

    /// Run an `INSERT`; returns the new row's id.
    fn insert(&self, sql: &str, params: impl rusqlite::Params) -> Result<i64> {
        self.run(sql, params)?;
        Ok(self.0.last_insert_rowid())
    }

    /// Make the marketplace index of connector `org/name` what its versions say now.
    fn reindex(&self, org: &str, name: &str) -> Result<()> {
        let stale = self.all(
            "SELECT id FROM listings WHERE org = ?1 AND name = ?2",
            params![org, name],
            |r| r.get::<_, i64>(0),
        )?;
        for id in stale {
            self.run("DELETE FROM listing_text WHERE rowid = ?1", [id])?;
            self.run("DELETE FROM listing_tags WHERE listing = ?1", [id])?;
            self.run("DELETE FROM listings WHERE id = ?1", [id])?;
        }
        let revisions = self.all(
            &format!("SELECT {LISTED_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2"),
            params![org, name],
            version_row,
        )?;
        for entry in IndexEntry::of_connector(revisions) {
            let id = self.insert(
                "INSERT INTO listings (org, name, audience) VALUES (?1, ?2, ?3)",
                params![entry.org, entry.name, entry.audience.as_str()],
            )?;
            self.run(
                "INSERT INTO listing_text (rowid, title, description, operations) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, entry.title, entry.description, entry.operations],
            )?;
            for tag in &entry.tags {
                self.run(
                    "INSERT INTO listing_tags (tag, listing) VALUES (?1, ?2)",
                    params![tag, id],
                )?;
            }
        }
        Ok(())
    }

    fn steps(&self, flow: i64) -> Result<Vec<Step>> {
        self.all(
            "SELECT name, instance_id, operation, input, digest FROM steps \
             WHERE flow_id = ?1 ORDER BY position",
            [flow],
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

type FlowRow = (i64, String, String, i64, bool);

fn bound_step_row(r: &Row<'_>) -> rusqlite::Result<BoundStep> {
    Ok(BoundStep {
        flow: r.get(0)?,
        name: r.get(1)?,
        operation: r.get(2)?,
        instance: r.get(3)?,
        digest: digest(r, 4)?,
        package_org: r.get(5)?,
        package_name: r.get(6)?,
    })
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        org: r.get(1)?,
        role: enum_text(r, 2)?,
        label: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

fn flow_row(row: &Row<'_>) -> rusqlite::Result<FlowRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

impl Metadata for Sql<'_> {
    fn create_org(&mut self, id: &str, at: i64) -> Result<()> {
        self.run(
            "INSERT OR IGNORE INTO orgs (id, created_at) VALUES (?1, ?2)",
            params![id, at],
        )?;
        Ok(())
    }

    fn org_exists(&mut self, id: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)", [id])
    }

    fn orgs(&mut self, after: &str, limit: usize) -> Result<Vec<OrgInfo>> {
        self.all(
            "SELECT id, created_at FROM orgs WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit as i64],
            |r| {
                Ok(OrgInfo {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                })
            },
        )
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>> {
        self.one("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })
    }

    fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        self.run(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    fn instance_count(&mut self) -> Result<u64> {
        Ok(self
            .one("SELECT COUNT(*) FROM instances", [], |r| r.get(0))?
            .unwrap_or(0))
    }

    fn revisions(&mut self, org: &str, name: &str, version: &str) -> Result<Vec<VersionInfo>> {
        self.all(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2 \
                 AND version = ?3"
            ),
            params![org, name, version],
            version_row,
        )
    }

    fn package_revisions(&mut self, org: &str, name: &str) -> Result<Vec<VersionInfo>> {
        self.all(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2"),
            params![org, name],
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
                "SELECT {VERSION_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2 \
                 AND digest = ?3"
            ),
            params![org, name, digest.to_string()],
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
        // The connectors' own entries for their owner, everyone else's public ones; each
        // filter narrows the ordered walk of `listings`' (org, name, audience) index.
        let mut sql = String::from(
            "SELECT l.org, l.name FROM listings l WHERE ((l.audience = 'owner' AND l.org = ?1) \
             OR (l.audience = 'public' AND l.org <> ?1))",
        );
        let mut values: Vec<SqlValue> = vec![viewer.to_string().into()];
        if let Some((org, name)) = after {
            sql.push_str(" AND (l.org, l.name) > (?, ?)");
            values.extend([org.to_string().into(), name.to_string().into()]);
        }
        if let Some(publisher) = &search.publisher {
            sql.push_str(" AND l.org = ?");
            values.push(publisher.clone().into());
        }
        if let Some(tag) = &search.tag {
            sql.push_str(" AND l.id IN (SELECT listing FROM listing_tags WHERE tag = ?)");
            values.push(tag.clone().into());
        }
        let words = words(search.text.as_deref().unwrap_or_default());
        if !words.is_empty() {
            // Every word, as the start of a word (the words are letters and digits only).
            let query: Vec<String> = words.iter().map(|w| format!("\"{w}\"*")).collect();
            sql.push_str(
                " AND l.id IN (SELECT rowid FROM listing_text WHERE listing_text MATCH ?)",
            );
            values.push(query.join(" ").into());
        }
        sql.push_str(" ORDER BY l.org, l.name LIMIT ?");
        values.push((limit as i64).into());
        self.all(&sql, params_from_iter(values), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn listed_revisions(
        &mut self,
        viewer: &str,
        org: &str,
        name: &str,
    ) -> Result<Vec<ListedVersion>> {
        self.all(
            &format!(
                "SELECT {LISTED_COLUMNS} FROM versions WHERE org = ?1 AND name = ?2 \
                 AND (org = ?3 OR visibility = 'public')"
            ),
            params![org, name, viewer],
            version_row,
        )
    }

    fn revision_keys(&mut self, org: &str, name: &str) -> Result<Vec<RevisionKey>> {
        self.all(
            "SELECT version, revision, digest FROM versions WHERE org = ?1 AND name = ?2",
            params![org, name],
            |r| {
                Ok(RevisionKey {
                    org: org.to_string(),
                    name: name.to_string(),
                    version: r.get(0)?,
                    revision: r.get(1)?,
                    digest: digest(r, 2)?,
                })
            },
        )
    }

    fn insert_version(&mut self, v: &VersionInfo) -> Result<()> {
        self.run(
            &format!(
                "INSERT INTO versions ({VERSION_COLUMNS}, summary) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                v.org,
                v.name,
                v.version.to_string(),
                v.revision,
                v.digest.to_string(),
                v.size,
                text(&v.visibility),
                text(&v.state),
                v.publisher,
                v.published_at,
                to_json(&v.tags)?,
                to_json(&v.description)?,
                to_json(&Summary::from(&v.description))?,
            ],
        )?;
        self.reindex(&v.org, &v.name)
    }

    fn set_version_state(
        &mut self,
        org: &str,
        name: &str,
        version: &str,
        state: VersionState,
    ) -> Result<()> {
        self.run(
            "UPDATE versions SET state = ?4 WHERE org = ?1 AND name = ?2 AND version = ?3",
            params![org, name, version, text(&state)],
        )?;
        self.reindex(org, name)
    }

    fn delete_revision(&mut self, key: &RevisionKey) -> Result<()> {
        self.run(
            "DELETE FROM versions WHERE org = ?1 AND name = ?2 AND version = ?3 AND revision = ?4",
            params![key.org, key.name, key.version, key.revision],
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
            "UPDATE versions SET world = ?5 \
             WHERE org = ?1 AND name = ?2 AND version = ?3 AND revision = ?4",
            params![org, name, version, revision, to_json(&world)?],
        )?;
        Ok(())
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
             WHERE org = ?1 AND name = ?2 AND version = ?3 AND revision = ?4",
            params![org, name, version, revision],
            |r| json(r, 0),
        )
    }

    fn digest_referenced(&mut self, digest: &Digest) -> Result<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
            [digest.to_string()],
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
             created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, '{}', ?6, ?7)",
            params![
                org,
                version.org,
                version.name,
                version.version.to_string(),
                version.revision,
                actor,
                at
            ],
        )
    }

    fn install(&mut self, org: &str, id: i64) -> Result<Option<Install>> {
        self.one(
            &format!("SELECT {INSTALL_COLUMNS} FROM installs WHERE org = ?1 AND id = ?2"),
            params![org, id],
            install_row,
        )
    }

    fn installs(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Install>> {
        self.all(
            &format!(
                "SELECT {INSTALL_COLUMNS} FROM installs WHERE org = ?1 AND id > ?2 \
                 ORDER BY id LIMIT ?3"
            ),
            params![org, after, limit as i64],
            install_row,
        )
    }

    fn installs_of_package(&mut self, org: &str, name: &str) -> Result<Vec<Install>> {
        self.all(
            &format!(
                "SELECT {INSTALL_COLUMNS} FROM installs WHERE pkg_org = ?1 AND name = ?2 \
                 ORDER BY id"
            ),
            params![org, name],
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
            "UPDATE installs SET customisations = ?3, modified_by = ?4, modified_at = ?5 \
             WHERE org = ?1 AND id = ?2",
            params![org, id, to_json(customisations)?, by, at],
        )?;
        Ok(())
    }

    fn set_outbound(&mut self, org: &str, id: i64, origins: &[String]) -> Result<()> {
        self.run(
            "UPDATE installs SET outbound = ?3 WHERE org = ?1 AND id = ?2",
            params![org, id, to_json(&origins)?],
        )?;
        Ok(())
    }

    fn set_install_version(
        &mut self,
        org: &str,
        id: i64,
        version: &semver::Version,
        revision: u32,
    ) -> Result<()> {
        self.run(
            "UPDATE installs SET version = ?3, revision = ?4 WHERE org = ?1 AND id = ?2",
            params![org, id, version.to_string(), revision],
        )?;
        Ok(())
    }

    fn insert_instance(&mut self, i: &Instance) -> Result<i64> {
        self.insert(
            "INSERT INTO instances (org, install_id, name, config, secret_keys, secrets, created_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, x'', ?6, ?7)",
            params![
                i.org,
                i.install_id,
                i.name,
                to_json(&i.config)?,
                to_json(&i.secret_keys)?,
                i.created_by,
                i.created_at
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
            "UPDATE instances SET secret_keys = ?3, secrets = ?4 WHERE org = ?1 AND id = ?2",
            params![org, id, to_json(&keys)?, sealed],
        )?;
        Ok(())
    }

    fn sealed_secrets(&mut self, org: &str, id: i64) -> Result<Option<Vec<u8>>> {
        self.one(
            "SELECT secrets FROM instances WHERE org = ?1 AND id = ?2",
            params![org, id],
            |r| r.get(0),
        )
    }

    fn instance(&mut self, org: &str, id: i64) -> Result<Option<Instance>> {
        self.one(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE org = ?1 AND id = ?2"),
            params![org, id],
            instance_row,
        )
    }

    fn instances(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Instance>> {
        self.all(
            &format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE org = ?1 AND id > ?2 \
                 ORDER BY id LIMIT ?3"
            ),
            params![org, after, limit as i64],
            instance_row,
        )
    }

    fn flow_name_taken(&mut self, org: &str, name: &str) -> Result<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM flows WHERE org = ?1 AND name = ?2)",
            params![org, name],
        )
    }

    fn insert_flow(&mut self, org: &str, name: &str, actor: &str, at: i64) -> Result<i64> {
        self.insert(
            "INSERT INTO flows (org, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![org, name, actor, at],
        )
    }

    fn insert_step(&mut self, flow: i64, position: usize, step: &Step) -> Result<()> {
        self.run(
            "INSERT INTO steps (flow_id, position, name, instance_id, operation, input, digest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                flow,
                position,
                step.name,
                step.instance,
                step.operation,
                step.input.to_string(),
                step.digest.to_string()
            ],
        )?;
        Ok(())
    }

    fn flow(&mut self, org: &str, id: i64) -> Result<Option<Flow>> {
        let row = self.one(
            "SELECT id, name, created_by, created_at, record FROM flows WHERE org = ?1 AND id = ?2",
            params![org, id],
            flow_row,
        )?;
        row.map(|row| self.with_steps(org, row)).transpose()
    }

    fn flows(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<Flow>> {
        self.all(
            "SELECT id, name, created_by, created_at, record FROM flows WHERE org = ?1 AND id > ?2 \
             ORDER BY id LIMIT ?3",
            params![org, after, limit as i64],
            flow_row,
        )?
        .into_iter()
        .map(|row| self.with_steps(org, row))
        .collect()
    }

    fn steps_through_install(&mut self, org: &str, install: i64) -> Result<Vec<BoundStep>> {
        self.all(
            &format!(
                "{BOUND_STEPS} WHERE f.org = ?1 AND n.org = ?1 AND n.id = ?2 \
                 ORDER BY s.flow_id, s.position"
            ),
            params![org, install],
            bound_step_row,
        )
    }

    fn steps_through_package(&mut self, org: &str, name: &str) -> Result<Vec<BoundStep>> {
        self.all(
            &format!(
                "{BOUND_STEPS} WHERE n.pkg_org = ?1 AND n.name = ?2 \
                 ORDER BY s.flow_id, s.position"
            ),
            params![org, name],
            bound_step_row,
        )
    }

    fn bind_step(&mut self, flow: i64, step: &str, instance: i64, digest: &Digest) -> Result<()> {
        self.run(
            "UPDATE steps SET instance_id = ?3, digest = ?4 WHERE flow_id = ?1 AND name = ?2",
            params![flow, step, instance, digest.to_string()],
        )?;
        Ok(())
    }

    fn set_flow_record(&mut self, org: &str, flow: i64, record: bool) -> Result<()> {
        self.run(
            "UPDATE flows SET record = ?3 WHERE org = ?1 AND id = ?2",
            params![org, flow, record],
        )?;
        Ok(())
    }

    fn insert_recording(&mut self, org: &str, r: &Recording, keep: usize) -> Result<i64> {
        let (Some(flow), Some(step)) = (r.flow, r.step.as_deref()) else {
            return Err(StoreError::failed(
                "a flow's recording names its flow and step",
            ));
        };
        let id = self.insert(
            "INSERT INTO recordings (org, flow_id, step, at, document) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![org, flow, step, r.at, to_json(r)?],
        )?;
        self.run(
            "DELETE FROM recordings WHERE org = ?1 AND flow_id = ?2 AND step = ?3 AND id <= \
             (SELECT id FROM recordings WHERE org = ?1 AND flow_id = ?2 AND step = ?3 \
              ORDER BY id DESC LIMIT 1 OFFSET ?4)",
            params![org, flow, step, keep as i64],
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
            "SELECT id, document FROM recordings WHERE org = ?1 AND flow_id = ?2 AND step = ?3 \
             AND id < ?4 ORDER BY id DESC LIMIT ?5",
            params![org, flow, step, before, limit as i64],
            |r| {
                let mut recording: Recording = json(r, 1)?;
                recording.id = r.get(0)?;
                Ok(recording)
            },
        )
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
        self.insert(
            "INSERT INTO runs (id, org, flow_id, status, started_at, duration_ms, record) \
             VALUES (?7, ?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                org,
                run.flow_id,
                status,
                run.started_at,
                (run.duration_us / 1000) as i64,
                to_json(run)?,
                id
            ],
        )
    }

    fn reserve_run_id(&mut self) -> Result<i64> {
        let id: i64 = self
            .one("SELECT next FROM run_seq", [], |r| r.get(0))?
            .ok_or_else(|| StoreError::failed("no run sequence"))?;
        self.run("UPDATE run_seq SET next = next + 1", [])?;
        Ok(id)
    }

    fn canary(&mut self, org: &str, flow: i64, step: &str) -> Result<Option<Canary>> {
        self.one(
            "SELECT document FROM canaries WHERE org = ?1 AND flow_id = ?2 AND step = ?3",
            params![org, flow, step],
            |r| json(r, 0),
        )
    }

    fn flow_canaries(&mut self, org: &str, flow: i64) -> Result<Vec<Canary>> {
        self.all(
            "SELECT document FROM canaries WHERE org = ?1 AND flow_id = ?2 ORDER BY step",
            params![org, flow],
            |r| json(r, 0),
        )
    }

    fn put_canary(&mut self, org: &str, canary: &Canary) -> Result<()> {
        self.run(
            "INSERT INTO canaries (org, flow_id, step, document) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (org, flow_id, step) DO UPDATE SET document = excluded.document",
            params![org, canary.flow, canary.step, to_json(canary)?],
        )?;
        Ok(())
    }

    fn runs(&mut self, org: &str, flow: i64, before: i64, limit: usize) -> Result<Vec<Run>> {
        self.all(
            "SELECT id, record FROM runs WHERE org = ?1 AND flow_id = ?2 AND id < ?3 \
             ORDER BY id DESC LIMIT ?4",
            params![org, flow, before, limit as i64],
            |r| {
                Ok(Run {
                    id: r.get(0)?,
                    ..json(r, 1)?
                })
            },
        )
    }

    fn insert_token(&mut self, t: &TokenInfo, hash: &str) -> Result<i64> {
        self.insert(
            "INSERT INTO tokens (org, role, label, hash, created_by, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                t.org,
                text(&t.role),
                t.label,
                hash,
                t.created_by,
                t.created_at,
                t.expires_at
            ],
        )
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenInfo>> {
        self.one(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
            [hash],
            token_row,
        )
    }

    fn token_by_id(&mut self, id: i64) -> Result<Option<TokenInfo>> {
        self.one(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
            [id],
            token_row,
        )
    }

    fn tokens(&mut self, org: Option<&str>, after: i64, limit: usize) -> Result<Vec<TokenInfo>> {
        self.all(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org IS ?1 AND id > ?2 \
                 ORDER BY id LIMIT ?3"
            ),
            params![org, after, limit as i64],
            token_row,
        )
    }

    fn revoke_token(&mut self, id: i64, at: i64) -> Result<()> {
        self.run(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )?;
        Ok(())
    }

    fn set_tokens_used(&mut self, used: &[(i64, i64)]) -> Result<()> {
        for (id, at) in used {
            self.run(
                "UPDATE tokens SET last_used_at = ?2 \
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                params![id, at],
            )?;
        }
        Ok(())
    }

    fn insert_session(&mut self, hash: &str, session: &Session, now: i64) -> Result<()> {
        self.run("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        self.run(
            "INSERT INTO sessions (hash, token_id, csrf, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                hash,
                session.token_id,
                session.csrf,
                session.created_at,
                session.expires_at
            ],
        )?;
        Ok(())
    }

    fn session(&mut self, hash: &str) -> Result<Option<Session>> {
        self.one(
            "SELECT token_id, csrf, created_at, expires_at FROM sessions WHERE hash = ?1",
            [hash],
            |r| {
                Ok(Session {
                    token_id: r.get(0)?,
                    csrf: r.get(1)?,
                    created_at: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            },
        )
    }

    fn delete_session(&mut self, hash: &str) -> Result<()> {
        self.run("DELETE FROM sessions WHERE hash = ?1", [hash])?;
        Ok(())
    }

    fn append_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.run(
            "INSERT INTO audit (org, actor, at, action, subject, before, after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.org,
                e.actor,
                e.at,
                e.action,
                e.subject,
                e.before.to_string(),
                e.after.to_string()
            ],
        )?;
        Ok(())
    }

    fn audit_log(&mut self, org: &str, after: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.all(
            "SELECT id, org, actor, at, action, subject, before, after FROM audit \
             WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            params![org, after, limit as i64],
            audit_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Visibility;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let conn = open(&path).unwrap();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        open(&path).unwrap();
    }

    #[test]
    fn tokens_of_schema_5_keep_working_after_migration_6() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (index, sql) in MIGRATIONS[..5].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", index + 1).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO orgs VALUES ('demo', 1); \
                 INSERT INTO tokens (org, role, label, hash, created_at) \
                 VALUES ('demo', 'admin', 'bootstrap admin', 'h', 2);",
            )
            .unwrap();
        }
        let store: &dyn MetadataStore = &SqliteStore::open(&path).unwrap();
        let token = store
            .read(|m| m.token("h"))
            .unwrap()
            .expect("the token is kept");
        assert_eq!(
            (token.org.as_deref(), token.label.as_str(), token.created_at),
            (Some("demo"), "bootstrap admin", 2)
        );
        assert_eq!((token.expires_at, token.revoked_at), (None, None));
    }

    #[test]
    fn installs_of_schema_7_pin_the_revision_they_ran() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (index, sql) in MIGRATIONS[..7].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", index + 1).unwrap();
            }
            // Before schema 8 an install ran the newest revision of its version: 2 here.
            let doc = r#"{"name":"echo","version":"1.0.0","description":"","operations":[],"config":[],"secrets":[],"outbound_hosts":[]}"#;
            conn.execute_batch("INSERT INTO orgs VALUES ('acme', 1);")
                .unwrap();
            for revision in [1, 2] {
                conn.execute(
                    "INSERT INTO versions (org, name, version, revision, digest, size, \
                     visibility, state, publisher, published_at, description, tags, summary) \
                     VALUES ('acme', 'echo', '1.0.0', ?1, ?2, 1, 'private', 'active', 'p', 1, \
                     ?3, '[]', ?3)",
                    params![revision, Digest::of(&[revision]).to_string(), doc],
                )
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO installs (org, pkg_org, name, version, customisations, created_by, \
                 created_at) VALUES ('acme', 'acme', 'echo', '1.0.0', '{}', 'ops', 3);",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let revision: u32 = conn
            .query_row("SELECT revision FROM installs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(revision, 2);
    }

    #[test]
    fn versions_stored_before_the_index_are_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let found = |store: &dyn MetadataStore| {
            let search = Search {
                text: Some("ech".into()),
                ..Search::default()
            };
            store
                .read(|m| m.search("globex", &search, None, 10))
                .unwrap()
        };
        {
            let store: &dyn MetadataStore = &SqliteStore::open(&path).unwrap();
            let description: Description = serde_json::from_value(serde_json::json!({
                "name": "echo", "version": "1.0.0", "description": "Echoes its input",
                "operations": [], "config": [], "secrets": [], "outbound_hosts": []
            }))
            .unwrap();
            store
                .write(|m| {
                    m.create_org("acme", 1)?;
                    m.insert_version(&VersionInfo {
                        org: "acme".into(),
                        name: "echo".into(),
                        version: "1.0.0".parse().unwrap(),
                        revision: 1,
                        digest: Digest::of(b"echo"),
                        size: 4,
                        visibility: Visibility::Public,
                        state: VersionState::Active,
                        publisher: "ci".into(),
                        published_at: 1,
                        tags: Vec::new(),
                        description: description.clone(),
                    })
                })
                .unwrap();
            assert_eq!(found(store).len(), 1);
        }
        // As a store of schema 6 left it: versions, no index.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DELETE FROM listing_text; DELETE FROM listing_tags; DELETE FROM listings;",
            )
            .unwrap();
        let store: &dyn MetadataStore = &SqliteStore::open(&path).unwrap();
        assert_eq!(found(store), [("acme".to_string(), "echo".to_string())]);
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let refused = |path: &Path| {
            let err = SqliteStore::open(path).unwrap_err();
            assert!(
                err.to_string().contains("in use by another process"),
                "{err}"
            );
        };
        // The store that created the database holds it; so does one that reopens it.
        let creator = SqliteStore::open(&path).unwrap();
        refused(&path);
        drop(creator);
        let _reopened = SqliteStore::open(&path).unwrap();
        refused(&path);
    }

    #[test]
    fn a_read_does_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap());
        store.write(|m| m.create_org("acme", 1)).unwrap();
        let (read_done, wait_for_read) = std::sync::mpsc::channel();
        let (in_write, wait_for_write) = std::sync::mpsc::channel();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.write(|m| {
                    m.create_org("globex", 2)?;
                    in_write.send(()).unwrap();
                    // The write unit holds the write lock until the reader has finished.
                    wait_for_read
                        .recv_timeout(std::time::Duration::from_secs(10))
                        .map_err(|_| StoreError::failed("the read waited for the write"))
                })
            })
        };
        wait_for_write.recv().unwrap();
        let seen = store
            .read(|m| Ok::<_, StoreError>((m.org_exists("acme")?, m.org_exists("globex")?)))
            .unwrap();
        assert_eq!(
            seen,
            (true, false),
            "the last commit, not the write in progress"
        );
        read_done.send(()).unwrap();
        writer.join().unwrap().unwrap();
        assert!(store.read(|m| m.org_exists("globex")).unwrap());
    }

    #[test]
    fn another_process_can_back_it_up_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap());
        store.write(|m| m.create_org("acme", 1)).unwrap();
        // What `sqlite3 gantry.db "VACUUM INTO 'backup.db'"` does, from another connection.
        let backup = dir.path().join("backup.db");
        Connection::open(dir.path().join("gantry.db"))
            .unwrap()
            .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
            .unwrap();
        store.write(|m| m.create_org("globex", 1)).unwrap();
        drop(store);
        let copy = SqliteStore::open(&backup).unwrap();
        let copy: &dyn MetadataStore = &copy;
        assert!(copy.read(|m| m.org_exists("acme")).unwrap());
        assert!(!copy.read(|m| m.org_exists("globex")).unwrap());
    }

    #[test]
    fn concurrent_write_units_commit_together_and_alone_when_they_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..40 {
                        let org = format!("org-{t}-{n}");
                        let result = store.write(|m| {
                            m.create_org(&org, 1)?;
                            match n % 10 {
                                3 => Err(StoreError::failed("refused")),
                                7 => panic!("a bug in a unit"),
                                _ => Ok(()),
                            }
                        });
                        match n % 10 {
                            3 => assert!(result.is_err()),
                            _ => result.unwrap(),
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            // Each thread's panicking unit ends it: its later units never run.
            let _ = thread.join();
        }
        drop(store);
        // Everything that answered Ok is there after reopening; nothing of a failed unit is.
        let store = SqliteStore::open(&dir.path().join("gantry.db")).unwrap();
        let store: &dyn MetadataStore = &store;
        for t in 0..8 {
            for n in 0..7 {
                let exists = store
                    .read(|m| m.org_exists(&format!("org-{t}-{n}")))
                    .unwrap();
                assert_eq!(exists, n != 3, "org-{t}-{n}");
            }
            assert!(!store.read(|m| m.org_exists(&format!("org-{t}-7"))).unwrap());
        }
    }

    #[test]
    fn a_failed_write_unit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap());
        let failed: Result<()> = store.write(|m| {
            m.create_org("acme", 1)?;
            assert!(m.org_exists("acme")?, "a unit sees its own writes");
            Err(StoreError::failed("stop"))
        });
        assert!(matches!(failed, Err(StoreError::Failed { message, .. }) if message == "stop"));
        assert!(!store.read(|m| m.org_exists("acme")).unwrap());
        store.write(|m| m.create_org("acme", 1)).unwrap();
        assert!(store.read(|m| m.org_exists("acme")).unwrap());
    }

    #[test]
    fn a_unit_that_panicked_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(SqliteStore::open(&dir.path().join("gantry.db")).unwrap());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.write(|m| -> Result<()> {
                m.create_org("acme", 1)?;
                panic!("a bug in the middle of a unit")
            })
        }));
        assert!(panicked.is_err());
        assert!(!store.read(|m| m.org_exists("acme")).unwrap());
        store.write(|m| m.create_org("acme", 1)).unwrap();
        assert!(store.read(|m| m.org_exists("acme")).unwrap());
    }

    #[test]
    fn stored_enums_keep_their_text() {
        assert_eq!(text(&Visibility::Public), "public");
        assert_eq!(text(&VersionState::Deprecated), "deprecated");
        assert_eq!(text(&crate::model::Role::Operator), "operator");
    }
}
